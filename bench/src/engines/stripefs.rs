//! stripefs registered I/O in-process: the devices striped into a `Volume` (stripe unit =
//! the block size, at least 128 KiB), one buffer registered once, and one thread keeping
//! `qd x devices` requests in flight through an `IoContext`, waiting for completions (or, in
//! the poll variant, spinning on `IoContext::poll`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use stripefs_fs::{
    Completion, DeviceQueue, DeviceSpec, IoContext, Op, QueueOptions, Request, Volume,
};
use stripefs_layout::StripeUnit;
use stripefs_mapping::Mapping;

use super::{Deadline, EngineResult, RunSpec, buffer_area, io_buffer};
use crate::devices::{Devices, Target};
use crate::stats::{Detail, Histogram, Measurement, ThreadTimes, Usage};
use crate::workload::{Offsets, Workload};

/// Smallest stripe unit used: small random requests do not need smaller units.
const MIN_UNIT: u64 = 128 << 10;
/// Longest wait for block devices that a closed ring still holds.
pub const BUSY_WAIT: Duration = Duration::from_secs(5);
/// The emulated devices' default maximum transfer (NVMe MDTS): requests are split at it.
const EMU_MDTS: u64 = 128 << 10;

pub fn run(spec: &RunSpec<'_>, poll: bool) -> EngineResult {
    let w = spec.workload;
    let devices = open_devices(spec.target, w)?;
    let unit = StripeUnit::new(w.bs.max(MIN_UNIT)).context("stripe unit")?;
    let volume = Volume::striped(devices, unit).context("building the volume")?;
    let depth = spec.total_depth();
    let area = match buffer_area(depth, w.bs, volume.devices().len()) {
        Ok(area) => area,
        Err(reason) => return Ok(Err(reason)),
    };
    let buffer = io_buffer(area)?;
    let mapping = volume.register(&buffer).context("registering the buffer")?;
    let run = Run {
        volume: &volume,
        mapping: &mapping,
        workload: w,
        area,
        offsets: Offsets::new(w.access, w.bs, volume.size() / w.bs * w.bs, 1),
        started: vec![Instant::now(); depth],
    };
    let result = run.measure(depth, spec.duration, poll);
    volume.unregister(&mapping).context("unregistering")?;
    Ok(Ok(result?))
}

/// Opens the target's devices with room for the workload's depth (split requests count).
pub fn open_devices(target: &Target, w: Workload) -> Result<Vec<DeviceQueue>> {
    match &target.devices {
        Devices::Paths(paths) => {
            crate::devices::wait_until_free(paths, BUSY_WAIT)?;
            let options = QueueOptions {
                queue_depth: w.qd.max(64),
            };
            paths
                .iter()
                .map(|p| {
                    DeviceQueue::open_path(p, &options)
                        .with_context(|| format!("opening {}", p.display()))
                })
                .collect()
        }
        Devices::Emulated(specs) => {
            let commands = w.qd as u64 * w.bs.div_ceil(EMU_MDTS);
            let qd = commands.clamp(64, 4096);
            specs
                .iter()
                .map(|s| {
                    let text = format!("{s},qd={qd}");
                    let spec: DeviceSpec = text.parse().with_context(|| format!("spec {text}"))?;
                    DeviceQueue::open(&spec).with_context(|| format!("opening {text}"))
                })
                .collect()
        }
    }
}

struct Run<'a> {
    volume: &'a Volume,
    mapping: &'a Mapping,
    workload: Workload,
    area: u64,
    offsets: Offsets,
    started: Vec<Instant>,
}

impl Run<'_> {
    fn measure(mut self, depth: usize, duration: Duration, poll: bool) -> Result<Measurement> {
        let mut ctx = IoContext::new(depth);
        let mut done: Vec<Completion> = Vec::with_capacity(depth);
        let mut hist = Histogram::default();
        let commands_before = self.device_commands();
        let (times, usage, start) = (ThreadTimes::now(), Usage::now()?, Instant::now());
        let deadline = Deadline::after(duration);
        for slot in 0..depth {
            self.submit(&mut ctx, slot)?;
        }
        let (mut ops, mut error) = (0u64, None);
        while ctx.in_flight() > 0 {
            done.clear();
            if poll {
                while ctx.poll(&mut done) == 0 {
                    std::hint::spin_loop();
                }
            } else {
                ctx.wait(1, &mut done);
            }
            for c in &done {
                let slot = c.tag as usize;
                hist.record(self.started[slot].elapsed());
                if let Err(e) = &c.result {
                    error.get_or_insert_with(|| anyhow!("request {slot}: {e}"));
                    continue;
                }
                ops += 1;
                if error.is_none() && !deadline.passed() && !crate::signal::interrupted() {
                    self.submit(&mut ctx, slot)?;
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let seconds = start.elapsed().as_secs_f64();
        let used = Usage::now()?.since(&usage);
        let mut m = Measurement::new(ops * self.workload.bs, ops, seconds, &used, &hist);
        m.detail = Some(Detail {
            thread_cpu: ThreadTimes::now().since(&times),
            voluntary_switches: used.voluntary_switches,
            involuntary_switches: used.involuntary_switches,
            device_commands: Some(self.device_commands() - commands_before),
        });
        Ok(m)
    }

    fn submit(&mut self, ctx: &mut IoContext, slot: usize) -> Result<()> {
        let bs = self.workload.bs;
        let offset = self.offsets.next_offset();
        self.started[slot] = Instant::now();
        let op = if self.workload.access.is_write() {
            Op::Write
        } else {
            Op::Read
        };
        ctx.submit(
            self.volume,
            Request {
                op,
                mapping: self.mapping,
                offset,
                buffer_offset: (slot as u64 * bs) % self.area,
                len: bs,
                tag: slot as u64,
            },
        )
        .with_context(|| format!("submitting {op} at {offset}"))
    }

    fn device_commands(&self) -> u64 {
        self.volume
            .devices()
            .iter()
            .map(|d| {
                let s = d.stats();
                s.reads + s.writes + s.errors
            })
            .sum()
    }
}
