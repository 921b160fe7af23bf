//! The two filesystems of the sweeps on a mount, made and mounted the way a user would: stripefs
//! with this program's own `mkfs`, `mount --daemon` and `umount` commands (a daemon process
//! serving the FUSE mount, with its default threads and commit interval), and btrfs with
//! data raid0 and metadata raid1 (`mkfs.btrfs -d raid0 -m raid1`) over the same devices.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::command::{run_output, run_quiet};
use crate::devices::wait_until_free;

/// Which filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsKind {
    Stripefs,
    /// btrfs, data raid0, metadata raid1.
    Btrfs,
}

impl FsKind {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Stripefs => "stripefs",
            FsKind::Btrfs => "btrfs raid0",
        }
    }

    /// Writes a new filesystem of this kind on `devices` (their contents are lost).
    pub fn mkfs(self, devices: &[PathBuf]) -> Result<()> {
        // A stripefs daemon that has just exited may still hold its devices for a moment.
        wait_until_free(devices, Duration::from_secs(10))?;
        let mut cmd = match self {
            FsKind::Stripefs => {
                let mut c = stripefs()?;
                c.args(["mkfs", "--force", "--label", "stripefs-bench"]);
                c
            }
            FsKind::Btrfs => {
                let mut c = Command::new("mkfs.btrfs");
                c.args(["-f", "-q", "-d", "raid0", "-m", "raid1"]);
                c
            }
        };
        run_quiet(cmd.args(devices))
            .with_context(|| format!("making {} on the devices", self.name()))
    }
}

/// Seconds `stripefs umount` waits for the daemon to write its checkpoint and exit.
const UNMOUNT_TIMEOUT: &str = "1800";

/// The `stripefs` program (this one).
fn stripefs() -> Result<Command> {
    let exe = std::env::current_exe().context("finding this program")?;
    Ok(Command::new(exe))
}

/// A mounted filesystem, unmounted when dropped.
pub struct Mounted {
    kind: FsKind,
    devices: Vec<PathBuf>,
    mountpoint: PathBuf,
    mounted: bool,
    /// The pid of the stripefs daemon serving the mount (as `mount --daemon` printed it).
    daemon: Option<u32>,
    /// Where the stripefs daemon appends its messages (`mount --log`), if anywhere.
    log: Option<PathBuf>,
}

impl Mounted {
    /// Mounts the filesystem of `kind` on `devices` at `mountpoint`.
    pub fn mount(kind: FsKind, devices: &[PathBuf], mountpoint: &Path) -> Result<Mounted> {
        let mut m = Mounted {
            kind,
            devices: devices.to_vec(),
            mountpoint: mountpoint.to_path_buf(),
            mounted: false,
            daemon: None,
            log: None,
        };
        m.attach()?;
        Ok(m)
    }

    /// Like [`Mounted::mount`], with the stripefs daemon's messages appended to `log` (this
    /// mount's and every remount's).
    pub fn mount_logged(
        kind: FsKind,
        devices: &[PathBuf],
        mountpoint: &Path,
        log: &Path,
    ) -> Result<Mounted> {
        let mut m = Mounted {
            kind,
            devices: devices.to_vec(),
            mountpoint: mountpoint.to_path_buf(),
            mounted: false,
            daemon: None,
            log: Some(log.to_path_buf()),
        };
        m.attach()?;
        Ok(m)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The pid of the stripefs daemon serving the mount (None for btrfs, or when unmounted).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.filter(|_| self.mounted)
    }

    /// Unmounts and mounts again: nothing of the filesystem stays in the kernel's caches
    /// (pages, entries, attributes).
    pub fn remount(&mut self) -> Result<()> {
        self.unmount()?;
        self.attach()
    }

    /// Unmounts (for stripefs: waits until the daemon has written its checkpoint and exited).
    pub fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut cmd = match self.kind {
            FsKind::Stripefs => {
                let mut c = stripefs()?;
                // A checkpoint of a million files may take minutes: wait for it (the default
                // gives up after 60 s).
                c.args(["umount", "--timeout", UNMOUNT_TIMEOUT]);
                c
            }
            FsKind::Btrfs => Command::new("umount"),
        };
        if let Err(e) = run_quiet(cmd.arg(&self.mountpoint)) {
            // `stripefs umount` may fail after the kernel has let go of the mount (the daemon
            // too slow to exit): then there is nothing left to unmount later.
            if !is_mount_point(&self.mountpoint) {
                self.mounted = false;
                self.daemon = None;
            }
            return Err(e).with_context(|| format!("unmounting {}", self.kind.name()));
        }
        self.mounted = false;
        self.daemon = None;
        Ok(())
    }

    fn attach(&mut self) -> Result<()> {
        let mut cmd = match self.kind {
            FsKind::Stripefs => {
                wait_until_free(&self.devices, Duration::from_secs(10))?;
                let mut c = stripefs()?;
                c.args(["mount", "--daemon"]);
                if let Some(log) = &self.log {
                    c.arg("--log").arg(log);
                }
                c.args(&self.devices);
                c
            }
            FsKind::Btrfs => {
                // Naming every member lets the kernel assemble the filesystem without a
                // `btrfs device scan`.
                let mut options = OsString::from("noatime");
                for d in &self.devices {
                    options.push(",device=");
                    options.push(d);
                }
                let Some(first) = self.devices.first() else {
                    bail!("no devices to mount btrfs from");
                };
                let mut c = Command::new("mount");
                c.args(["-t", "btrfs", "-o"]).arg(options).arg(first);
                c
            }
        };
        let said = run_output(cmd.arg(&self.mountpoint))
            .with_context(|| format!("mounting {}", self.kind.name()))?;
        self.mounted = true;
        self.daemon = daemon_pid(&said);
        Ok(())
    }
}

/// Whether something is mounted on `path` (it and its parent are on different devices).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = path.parent() else {
        return true;
    };
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        // A mount whose daemon is gone answers ENOTCONN: still mounted.
        _ => true,
    }
}

/// The daemon's pid in what `stripefs mount --daemon` printed ("… (daemon pid N)").
fn daemon_pid(said: &str) -> Option<u32> {
    let (_, rest) = said.split_once("(daemon pid ")?;
    rest.split(')').next()?.trim().parse().ok()
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("stripefs bench: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::daemon_pid;

    #[test]
    fn the_daemon_pid_is_read_from_what_mount_printed() {
        assert_eq!(
            daemon_pid("stripefs: mounted on /mnt/x (daemon pid 4242)\n"),
            Some(4242)
        );
        assert_eq!(daemon_pid(""), None);
        assert_eq!(
            daemon_pid("stripefs: mounted on /mnt/x (daemon pid )"),
            None
        );
    }
}
