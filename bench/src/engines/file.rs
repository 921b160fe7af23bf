//! stripefs registered reads of a file, in-process: one buffer registered against the file
//! (`Filesystem::register`), and one thread keeping `devices x QD` reads in flight with
//! `Filesystem::submit_read` on an `IoContext`, as the volume engine does on the raw devices.
//! This is what the control endpoint's ring thread does for another process, so it is the
//! in-process reference of the cross-process engine.

use anyhow::Context;
use stripefs_fs::FileRead;

use super::closed_loop::{self, Collect};
use super::files::{Filesystems, Need};
use super::{EngineResult, RunSpec, buffer_area, io_buffer};
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
    let mut offsets = Offsets::new(w.access, w.bs, opened.file_size / w.bs * w.bs, 1);
    let (fs, mapping) = (&opened.fs, &mapping);
    let result = closed_loop::run(depth, w.bs, spec.duration, Collect::Wait, |ctx, slot| {
        let offset = offsets.next_offset();
        let read = FileRead {
            offset,
            buffer_offset: (slot as u64 * w.bs) % area,
            len: w.bs,
            tag: slot as u64,
        };
        fs.submit_read(ctx, mapping, read)
            .with_context(|| format!("submitting a read at {offset}"))
    });
    let commands = opened.device_commands() - commands;
    opened.fs.unregister(mapping).context("unregistering")?;
    let mut m = result?;
    if let Some(detail) = m.detail.as_mut() {
        detail.device_commands = Some(commands);
    }
    Ok(Ok(m))
}
