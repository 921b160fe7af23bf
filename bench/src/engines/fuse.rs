//! The baseline a user would otherwise have: reading the file through the FUSE mount with
//! `pread`, buffered (no `O_DIRECT`), after dropping the page cache. The mount serves files
//! with `FOPEN_DIRECT_IO`, so every read is a request to the FUSE threads, which read the
//! devices through the filesystem's bounce buffers and copy the data into the reply.
//! Concurrency: `min(devices x QD, 32)` threads, each with one read in flight; the mount has
//! 32 FUSE threads.

use std::os::unix::fs::FileExt;

use anyhow::{Context, bail};

use super::files::{Filesystems, MAX_FILE_THREADS, Need, drop_caches, run_threads};
use super::{EngineResult, RunSpec};

pub fn run(spec: &RunSpec<'_>, filesystems: &mut Filesystems) -> EngineResult {
    let w = spec.workload;
    if w.access.is_write() {
        return Ok(Err("reads only".into()));
    }
    let fs = match filesystems.get(spec.target, Need::Mount)? {
        Ok(fs) => fs,
        Err(reason) => return Ok(Err(reason)),
    };
    let path = fs.path();
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    drop_caches()?;
    let threads = spec.total_depth().clamp(1, MAX_FILE_THREADS);
    let bs = w.bs as usize;
    let commands = fs.device_commands();
    let run = run_threads(spec, threads, fs.file_size, |_| {
        let mut buf = vec![0u8; bs];
        let file = &file;
        Ok(move |offset| {
            let n = file.read_at(&mut buf, offset)?;
            if n != bs {
                bail!("short read: {n} of {bs} bytes");
            }
            Ok(())
        })
    })?;
    Ok(Ok(run.measurement(w.bs, fs.device_commands() - commands)))
}
