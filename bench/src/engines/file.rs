//! stripefs registered reads of a file, in-process: one buffer registered against the file
//! (`Filesystem::register`), and `min(devices x QD, 32)` threads each doing one blocking
//! `Filesystem::read_registered` at a time into its own slot of the buffer. This is what the
//! control endpoint's workers do for another process, so it is the in-process reference of
//! the cross-process engine (with as many threads as the daemon gives a client).

use anyhow::{Context, bail};
use stripefs_mapping::Buffer;

use super::files::{Filesystems, MAX_FILE_THREADS, Need, run_threads};
use super::{EngineResult, RunSpec, buffer_area};

pub fn run(spec: &RunSpec<'_>, filesystems: &mut Filesystems) -> EngineResult {
    let w = spec.workload;
    if w.access.is_write() {
        return Ok(Err("reads only".into()));
    }
    let fs = match filesystems.get(spec.target, Need::Open)? {
        Ok(fs) => fs,
        Err(reason) => return Ok(Err(reason)),
    };
    let threads = spec.total_depth().clamp(1, MAX_FILE_THREADS);
    let area = match buffer_area(threads, w.bs, spec.target.count()) {
        Ok(area) => area,
        Err(reason) => return Ok(Err(reason)),
    };
    let buffer = Buffer::new(area).context("allocating the buffer")?;
    let mapping = fs
        .fs
        .register(fs.ino, &buffer)
        .context("registering the buffer")?;
    let commands = fs.device_commands();
    let run = run_threads(spec, threads, fs.file_size, |t| {
        let slot = (t as u64 * w.bs) % area;
        let (fs, mapping) = (&fs.fs, &mapping);
        Ok(move |offset| {
            let n = fs.read_registered(mapping, offset, slot, w.bs)?;
            if n != w.bs {
                bail!("short read: {n} of {} bytes", w.bs);
            }
            Ok(())
        })
    });
    let commands = fs.device_commands() - commands;
    fs.fs.unregister(&mapping).context("unregistering")?;
    Ok(Ok(run?.measurement(w.bs, commands)))
}
