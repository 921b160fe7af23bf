//! stripefs registered I/O in-process: the devices striped into a `Volume` (stripe unit =
//! the block size, at least 128 KiB), one buffer registered once, and one thread keeping
//! `qd x devices` requests in flight through an `IoContext`, waiting for completions (or, in
//! the poll variant, spinning on `IoContext::poll`).

use std::time::Duration;

use anyhow::{Context, Result};
use stripefs_engine::{DeviceQueue, DeviceSpec, Op, QueueOptions, Request, Volume};
use stripefs_layout::StripeUnit;

use super::closed_loop::{self, Collect};
use super::{EngineResult, RunSpec, buffer_area, commands_run, io_buffer};
use crate::devices::{Devices, Target};
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
    let collect = if poll { Collect::Poll } else { Collect::Wait };
    let op = if w.access.is_write() {
        Op::Write
    } else {
        Op::Read
    };
    let mut offsets = Offsets::new(w.access, w.bs, volume.size() / w.bs * w.bs, 1);
    let commands = commands_run(volume.devices());
    let result = closed_loop::run(depth, w.bs, spec.duration, collect, |ctx, slot| {
        let offset = offsets.next_offset();
        let request = Request {
            op,
            mapping: &mapping,
            offset,
            buffer_offset: (slot as u64 * w.bs) % area,
            len: w.bs,
            tag: slot as u64,
        };
        ctx.submit(&volume, request)
            .with_context(|| format!("submitting {op} at {offset}"))
    });
    let commands = commands_run(volume.devices()) - commands;
    volume.unregister(&mapping).context("unregistering")?;
    let mut m = result?;
    if let Some(detail) = m.detail.as_mut() {
        detail.device_commands = Some(commands);
    }
    Ok(Ok(m))
}

/// Opens the target's devices with room for the workload's depth (split requests count).
pub fn open_devices(target: &Target, w: Workload) -> Result<Vec<DeviceQueue>> {
    match &target.devices {
        Devices::Paths(paths) => {
            crate::devices::wait_until_free(paths, BUSY_WAIT)?;
            let options = QueueOptions {
                queue_depth: w.qd.max(64),
                ..QueueOptions::default()
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
