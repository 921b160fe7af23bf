//! stripefs registered reads of a file, in-process: one buffer registered against the file
//! (`Filesystem::register`), and one thread keeping `devices x QD` reads in flight with
//! `Filesystem::submit_read` on an `IoContext`, as the volume engine does on the raw devices.
//! This is what the control endpoint's ring thread does for another process, so it is the
//! in-process reference of the cross-process engine.

use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use stripefs_fs::{Completion, FileRead, Filesystem, IoContext};
use stripefs_mapping::Mapping;

use super::files::{Filesystems, Need};
use super::{Deadline, EngineResult, RunSpec, buffer_area, io_buffer};
use crate::stats::{Detail, Histogram, Measurement, ThreadTimes, Usage};
use crate::workload::Offsets;

pub fn run(spec: &RunSpec<'_>, filesystems: &mut Filesystems) -> EngineResult {
    let w = spec.workload;
    if w.access.is_write() {
        return Ok(Err("reads only".into()));
    }
    let opened = match filesystems.get(spec.target, Need::Open)? {
        Ok(fs) => fs,
        Err(reason) => return Ok(Err(reason)),
    };
    let depth = spec.total_depth();
    let area = match buffer_area(depth, w.bs, spec.target.count()) {
        Ok(area) => area,
        Err(reason) => return Ok(Err(reason)),
    };
    let buffer = io_buffer(area)?;
    let mapping = opened
        .fs
        .register(opened.ino, &buffer)
        .context("registering the buffer")?;
    let commands = opened.device_commands();
    let mut reads = Reads {
        fs: &opened.fs,
        mapping: &mapping,
        bs: w.bs,
        area,
        offsets: Offsets::new(w.access, w.bs, opened.file_size / w.bs * w.bs, 1),
        started: vec![Instant::now(); depth],
    };
    let result = reads.measure(spec, depth);
    let commands = opened.device_commands() - commands;
    opened.fs.unregister(&mapping).context("unregistering")?;
    let mut m = result?;
    if let Some(detail) = m.detail.as_mut() {
        detail.device_commands = Some(commands);
    }
    Ok(Ok(m))
}

struct Reads<'a> {
    fs: &'a Filesystem,
    mapping: &'a Mapping,
    bs: u64,
    area: u64,
    offsets: Offsets,
    started: Vec<Instant>,
}

impl Reads<'_> {
    fn measure(&mut self, spec: &RunSpec<'_>, depth: usize) -> Result<Measurement> {
        let mut ctx = IoContext::try_new(depth).context("creating an I/O context")?;
        let mut done: Vec<Completion> = Vec::with_capacity(depth);
        let mut hist = Histogram::default();
        let (times, usage, start) = (ThreadTimes::now(), Usage::now()?, Instant::now());
        let deadline = Deadline::after(spec.duration);
        for slot in 0..depth {
            self.submit(&mut ctx, slot)?;
        }
        let (mut ops, mut error) = (0u64, None);
        while ctx.in_flight() > 0 {
            done.clear();
            ctx.wait(1, &mut done);
            for c in &done {
                let slot = c.tag as usize;
                hist.record(self.started[slot].elapsed());
                match &c.result {
                    Ok(n) if *n == self.bs => ops += 1,
                    Ok(n) => {
                        error.get_or_insert_with(|| anyhow!("short read: {n} of {}", self.bs));
                    }
                    Err(e) => {
                        error.get_or_insert_with(|| anyhow!("read {slot}: {e}"));
                    }
                }
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
        let mut m = Measurement::new(ops * self.bs, ops, seconds, &used, &hist);
        m.detail = Some(Detail {
            thread_cpu: ThreadTimes::now().since(&times),
            voluntary_switches: used.voluntary_switches,
            involuntary_switches: used.involuntary_switches,
            device_commands: None,
        });
        Ok(m)
    }

    fn submit(&mut self, ctx: &mut IoContext, slot: usize) -> Result<()> {
        let offset = self.offsets.next_offset();
        self.started[slot] = Instant::now();
        let read = FileRead {
            offset,
            buffer_offset: (slot as u64 * self.bs) % self.area,
            len: self.bs,
            tag: slot as u64,
        };
        self.fs
            .submit_read(ctx, self.mapping, read)
            .with_context(|| format!("submitting a read at {offset}"))
    }
}
