//! The state file of a mount daemon: who it is, which mount and devices are its, and what it
//! is doing; written by the daemon, read by the commands that need its devices.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use stripefs_engine::DeviceSpec;
use stripefs_fs::control::proto::SOCKET_DIR;

use super::RELEASE_GRACE;
use super::device_id::{DeviceId, device_ids, majmin};
use super::procfs::start_time;

/// What a daemon is doing, as it says in its state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Mounted and serving (unless its mount is gone from its namespace: then it is about
    /// to notice the unmount).
    Serving,
    /// A signal found the mount busy and detached it lazily: it serves the files still open
    /// there until they are closed, then shuts down.
    Detached,
    /// Its FUSE session has ended: it commits and writes its final checkpoint.
    Unmounting,
    /// The final checkpoint is written; it is closing the devices and exiting.
    Exiting,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Detached => "detached",
            Phase::Unmounting => "unmounting",
            Phase::Exiting => "exiting",
        }
    }

    fn parse(text: &str) -> Option<Phase> {
        [
            Phase::Serving,
            Phase::Detached,
            Phase::Unmounting,
            Phase::Exiting,
        ]
        .into_iter()
        .find(|p| p.name() == text)
    }
}

/// Whether a live daemon still counts as mounted.
pub(super) enum Standing {
    Mounted,
    Leaving,
    /// It exited meanwhile.
    Gone,
}

/// The state file of a mount daemon: who it is, which mount and devices are its, and what
/// it is doing. Written by the daemon (tmp file and rename, so readers see whole files), read
/// by [`lock_devices`].
///
/// ```text
/// pid 4242
/// start 1234567
/// phase serving
/// mount 0:61
/// mountpoint /var/tmp/sfs/mnt
/// device block 7:3
/// device file 259:1 1835011
/// ```
pub struct DaemonState {
    /// The state file.
    file: PathBuf,
    pub(super) pid: u32,
    start: u64,
    pub(super) phase: Phase,
    /// `major:minor` of the daemon's mount (`st_dev` of its root).
    mount: String,
    /// For messages only (escaped: no newline).
    pub(super) mountpoint: String,
    pub(super) devices: Vec<DeviceId>,
    /// When it was last written, and the file's inode (only for states read back).
    pub(super) written: Option<SystemTime>,
    inode: Option<u64>,
}

impl DaemonState {
    /// The state of this process serving `mountpoint` (canonical), whose root has device
    /// number `mount_dev`, on `specs`. Nothing is written until [`DaemonState::set`].
    pub fn new(mountpoint: &Path, mount_dev: u64, specs: &[DeviceSpec]) -> Result<DaemonState> {
        let pid = std::process::id();
        Ok(DaemonState {
            file: state_file(mountpoint),
            pid,
            start: start_time(pid).context("reading this process's start time")?,
            phase: Phase::Serving,
            mount: majmin(mount_dev),
            mountpoint: mountpoint
                .to_string_lossy()
                .replace('\\', "\\\\")
                .replace('\n', "\\n"),
            devices: device_ids(specs),
            written: None,
            inode: None,
        })
    }

    /// Records `phase` in the state file.
    pub fn set(&mut self, phase: Phase) -> std::io::Result<()> {
        self.phase = phase;
        let mut text = format!(
            "pid {}\nstart {}\nphase {}\nmount {}\nmountpoint {}\n",
            self.pid,
            self.start,
            phase.name(),
            self.mount,
            self.mountpoint
        );
        for d in &self.devices {
            text.push_str(&format!("device {}\n", d.encode()));
        }
        let tmp = self.file.with_extension(format!("state.{}", self.pid));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.file)
    }

    /// Where the state file is.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Every state file in the socket directory.
    pub(super) fn all() -> Vec<DaemonState> {
        let Ok(dir) = std::fs::read_dir(SOCKET_DIR) else {
            return Vec::new();
        };
        dir.flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "state"))
            .filter_map(|p| DaemonState::read(&p))
            .collect()
    }

    fn read(file: &Path) -> Option<DaemonState> {
        let mut text = String::new();
        let mut opened = File::open(file).ok()?;
        std::io::Read::read_to_string(&mut opened, &mut text).ok()?;
        let meta = opened.metadata().ok()?;
        let (mut pid, mut start, mut phase, mut mount, mut mountpoint) =
            (None, None, None, None, None);
        let mut devices = Vec::new();
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "pid" => pid = value.parse().ok(),
                "start" => start = value.parse().ok(),
                "phase" => phase = Phase::parse(value),
                "mount" => mount = Some(value.to_string()),
                "mountpoint" => mountpoint = Some(value.to_string()),
                "device" => devices.push(DeviceId::decode(value)?),
                _ => {}
            }
        }
        Some(DaemonState {
            file: file.to_path_buf(),
            pid: pid?,
            start: start?,
            phase: phase?,
            mount: mount?,
            mountpoint: mountpoint?,
            devices,
            written: meta.modified().ok(),
            inode: Some(meta.ino()),
        })
    }

    /// Whether the daemon that wrote this is still running (not a reused pid).
    pub(super) fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Whether the daemon (alive a moment ago) still has its mount.
    pub(super) fn standing(&self) -> Standing {
        if matches!(self.phase, Phase::Unmounting | Phase::Exiting) {
            return Standing::Leaving;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)) else {
            // Gone, or not ours to read: then it cannot be told to be leaving.
            return if self.alive() {
                Standing::Mounted
            } else {
                Standing::Gone
            };
        };
        // "36 25 0:61 / /mnt rw,... shared:1 - fuse.stripefs stripefs rw,..."
        let mounted = info.lines().any(|line| {
            let mut halves = line.splitn(2, " - ");
            let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
                return false;
            };
            left.split(' ').nth(2) == Some(self.mount.as_str()) && right.starts_with("fuse")
        });
        if mounted {
            Standing::Mounted
        } else {
            Standing::Leaving
        }
    }

    /// Removes the state files of daemons that have exited, once they are of no more use:
    /// those naming any of `ids` (this process holds them now), and those written more than
    /// [`RELEASE_GRACE`] ago.
    pub(super) fn collect_garbage(ids: &[DeviceId]) {
        for record in DaemonState::all() {
            let old = record
                .written
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|e| e > RELEASE_GRACE);
            if record.alive() || !(old || record.devices.iter().any(|d| ids.contains(d))) {
                continue;
            }
            // Not if a new daemon on the same mountpoint has just replaced the file.
            let same = std::fs::metadata(&record.file).is_ok_and(|m| Some(m.ino()) == record.inode);
            if same {
                let _ = std::fs::remove_file(&record.file);
            }
        }
    }
}

/// Where the daemon serving `mountpoint` (canonical) keeps its state: next to its control
/// socket and pid file.
pub fn state_file(mountpoint: &Path) -> PathBuf {
    crate::umount::pid_file(mountpoint).with_extension("state")
}
