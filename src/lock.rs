//! Exclusive use of devices that are regular files.
//!
//! A block device is opened `O_EXCL`, so two mounts (or a mount and a mkfs) cannot share it;
//! a regular file has no such guard, and two daemons serving the same image files would
//! overwrite each other's metadata. The commands that write a filesystem take an exclusive
//! `flock` on every file device (and on the backing file of an emulated one) for as long as
//! they run.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use stripefs_fs::DeviceSpec;
use stripefs_fs::spec::Backing;

/// Locks held until dropped.
pub struct DeviceLocks {
    _files: Vec<File>,
}

/// Takes an exclusive lock on every regular file among `specs`; fails naming the first one
/// that another process holds.
pub fn lock_devices(specs: &[DeviceSpec]) -> Result<DeviceLocks> {
    let mut files = Vec::new();
    for path in specs.iter().filter_map(file_of) {
        // A file that does not exist yet (an emulated device creates it) cannot be in use.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let file = File::open(&path).with_context(|| format!("device {}", path.display()))?;
        lock(&file, &path)?;
        files.push(file);
    }
    Ok(DeviceLocks { _files: files })
}

fn file_of(spec: &DeviceSpec) -> Option<PathBuf> {
    match spec {
        DeviceSpec::Path(p) => Some(p.clone()),
        DeviceSpec::Emulated(e) => match &e.backing {
            Backing::File(p) => Some(p.clone()),
            Backing::Memory => None,
        },
    }
}

fn lock(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock on an open descriptor touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        bail!(
            "device {} is in use by another stripefs process (a mount, mkfs or fsck)",
            path.display()
        );
    }
    Err(e).with_context(|| format!("locking device {}", path.display()))
}
