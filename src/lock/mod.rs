//! Exclusive use of a filesystem's devices, and waiting for a daemon that is finishing an
//! unmount of them.
//!
//! # Exclusive use
//!
//! A block device is opened `O_EXCL` (by the device layer), so two mounts, or a mount and a
//! mkfs or fsck, cannot share it; a regular file has no such guard, and two daemons serving
//! the same image files would overwrite each other's metadata. The commands that use a
//! filesystem's devices (mount, mkfs, fsck) call [`lock_devices`] first: it takes an
//! exclusive `flock` on every file device (and on the backing file of an emulated one),
//! held for as long as the command runs, and checks that every block device can be opened
//! `O_EXCL`.
//!
//! # Waiting for a daemon that is finishing an unmount
//!
//! A plain `umount MOUNTPOINT` (what fstab, systemd and scripts use) returns before the
//! daemon is done: for a `fuse` mount the kernel sends no `FUSE_DESTROY` and waits for
//! nothing (it does so only for `fuseblk` mounts, whose source must be a block device), so
//! the daemon learns of the unmount when its session ends, and then commits, writes its
//! final checkpoint and exits, holding the devices all along. `stripefs fsck` or `stripefs
//! mount` run right after `umount` would find them busy. So when a device is busy,
//! [`lock_devices`] looks at who holds it:
//!
//! - a stripefs daemon that is no longer mounted (it is finishing an unmount): it waits,
//!   saying so once on stderr, for up to [`wait_limit`] (60 s, or `STRIPEFS_DEVICE_WAIT`
//!   seconds), and then fails naming the device and the daemon;
//! - a stripefs daemon whose mount is live: it refuses at once, naming the mount and pid;
//! - anything else: it refuses at once, naming the holding process when it can see one.
//!
//! How a daemon is recognised: every daemon keeps a small state file next to its control
//! socket and pid file (`/run/stripefs/mnt-HASH.state`, see [`DaemonState`]) holding its pid
//! and start time, the device number of its own mount, the identities of its devices (block:
//! `st_rdev`; file: `st_dev` and inode) and its phase: `serving`, `detached` (a signal found
//! the mount busy and detached it lazily), `unmounting` (its FUSE session has ended) or
//! `exiting` (the final checkpoint is written; it is closing the devices). Why this, and not
//! something the kernel already shows:
//!
//! - The holder of a busy device can be found (the `flock` owner in /proc/locks, a process
//!   with the block device open in /proc/PID/fd), and /proc/PID/cmdline says it is `stripefs
//!   mount`, but nothing there says whether that daemon is still mounted: /proc/PID/mountinfo
//!   lists every mount of its namespace, not the one it serves, and its command line names the
//!   mountpoint relative to a working directory it has left. The state file records the
//!   device number of the daemon's own mount, which is what tells.
//! - The phase alone is not enough: for a moment after `umount` returns, the daemon has not
//!   yet seen its session end and still says `serving`. So `serving` (and `detached`) count
//!   as live only while the daemon's mount, by device number and of type fuse, is listed in
//!   /proc/PID/mountinfo: the daemon's own mount namespace, the one the unmount happened in.
//!   `unmounting` and `exiting` are never live.
//! - A pid alone could have been reused: the start time in /proc/PID/stat must match too.
//! - `umount` itself cannot be made to wait for a `fuse` mount, and `stripefs umount` already
//!   waits for the daemon to exit; making the commands that need the devices wait covers
//!   every way of unmounting (umount, umount -l, systemd, a signal to the daemon).
//!
//! A daemon cannot remove its own state file once its devices are closed (that happens as it
//! exits), so the file stays behind, marked `exiting`; the next command that takes those
//! devices removes it, and so does any command that takes devices once it is a few seconds
//! old. A device that is still busy for a few seconds after its daemon exited is waited for
//! as well: the kernel drops an exclusive claim when the last reference to the open device
//! goes, and io_uring may drop its references a moment after the process has gone.

mod daemon_state;
mod device_id;
mod procfs;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stripefs_engine::DeviceSpec;

use daemon_state::Standing;
pub use daemon_state::{DaemonState, Phase};
use device_id::{DeviceId, path_of};
use procfs::{command_line, holders};

/// How long [`lock_devices`] waits for a daemon that is finishing an unmount, unless
/// `STRIPEFS_DEVICE_WAIT` (seconds) says otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// How long a device may stay busy after the stripefs daemon that held it has exited.
const RELEASE_GRACE: Duration = Duration::from_secs(10);
/// How often a busy device is tried again.
const POLL: Duration = Duration::from_millis(20);

/// How long to wait for a daemon that is finishing an unmount: `STRIPEFS_DEVICE_WAIT`
/// seconds, default 60.
pub fn wait_limit() -> Duration {
    std::env::var("STRIPEFS_DEVICE_WAIT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_WAIT, Duration::from_secs)
}

/// Locks held until dropped.
pub struct DeviceLocks {
    _files: Vec<File>,
}

/// Takes every device among `specs` for this process: an exclusive lock on every regular
/// file, and a check that every block device can be opened exclusively. A device held by a
/// stripefs daemon that is finishing an unmount is waited for (see the module
/// documentation); any other holder makes it fail at once, naming the device and the holder.
pub fn lock_devices(specs: &[DeviceSpec]) -> Result<DeviceLocks> {
    let mut waiter = Waiter::new(wait_limit());
    let mut files = Vec::new();
    let mut ids = Vec::new();
    for path in specs.iter().filter_map(path_of) {
        // A file that does not exist yet (an emulated device creates it) cannot be in use.
        let Some(id) = DeviceId::of(&path) else {
            continue;
        };
        loop {
            match take(&path, id)? {
                Taken::Locked(file) => {
                    files.push(file);
                    break;
                }
                Taken::Free => break,
                Taken::Busy => waiter.busy(&path, id)?,
            }
        }
        ids.push(id);
    }
    DaemonState::collect_garbage(&ids);
    Ok(DeviceLocks { _files: files })
}

enum Taken {
    /// A regular file, locked while this is open.
    Locked(File),
    /// A block device that nobody holds exclusively (the device layer opens it `O_EXCL`).
    Free,
    /// Held by someone else.
    Busy,
}

fn take(path: &Path, id: DeviceId) -> Result<Taken> {
    match id {
        DeviceId::File { .. } => {
            let file = File::open(path).with_context(|| format!("device {}", path.display()))?;
            // SAFETY: flock on an open descriptor touches no memory.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Taken::Locked(file));
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(Taken::Busy);
            }
            Err(e).with_context(|| format!("locking device {}", path.display()))
        }
        DeviceId::Block { .. } => {
            // Read-only: closing it again makes no change event for udev to act on.
            let probe = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
                .open(path);
            match probe {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(Taken::Busy),
                // Any other failure is the device layer's to report, in its own words.
                _ => Ok(Taken::Free),
            }
        }
    }
}

/// The decisions of [`lock_devices`] about busy devices.
struct Waiter {
    limit: Duration,
    started: Instant,
    /// Daemons already announced on stderr.
    announced: Vec<u32>,
    /// When a daemon holding a device was last seen alive.
    last_daemon: Option<Instant>,
}

impl Waiter {
    fn new(limit: Duration) -> Waiter {
        Waiter {
            limit,
            started: Instant::now(),
            announced: Vec::new(),
            last_daemon: None,
        }
    }

    /// `path` is busy: returns after a pause if it is worth trying again, or fails saying
    /// who holds it.
    fn busy(&mut self, path: &Path, id: DeviceId) -> Result<()> {
        let records: Vec<DaemonState> = DaemonState::all()
            .into_iter()
            .filter(|r| r.devices.contains(&id))
            .collect();
        let mut gone = None;
        for record in &records {
            if !record.alive() {
                continue;
            }
            match record.standing() {
                Standing::Mounted => bail!(
                    "device {} is in use by the stripefs mount on {} (daemon pid {}); \
                     unmount it first",
                    path.display(),
                    record.mountpoint,
                    record.pid
                ),
                Standing::Leaving => {
                    self.wait_for(path, record)?;
                    return Ok(());
                }
                Standing::Gone => gone = Some(record),
            }
        }
        // No live daemon holds it. If one did a moment ago, the kernel may still be
        // releasing the device.
        let last_write = records.iter().filter_map(|r| r.written).max();
        let recent = |at: Instant| at.elapsed() < RELEASE_GRACE;
        let just_exited = self.last_daemon.is_some_and(recent)
            || gone.is_some()
            || last_write.is_some_and(|t| t.elapsed().is_ok_and(|e| e < RELEASE_GRACE));
        if just_exited && self.started.elapsed() < self.limit + RELEASE_GRACE {
            std::thread::sleep(POLL);
            return Ok(());
        }
        bail!("{}", busy_message(path, id))
    }

    /// Waits a little for `record`'s daemon, which is leaving, or fails if the limit is past.
    fn wait_for(&mut self, path: &Path, record: &DaemonState) -> Result<()> {
        self.last_daemon = Some(Instant::now());
        if !self.announced.contains(&record.pid) {
            self.announced.push(record.pid);
            eprintln!(
                "stripefs: waiting for the stripefs daemon (pid {}) that is finishing an \
                 unmount of {}: it still holds {}",
                record.pid,
                record.mountpoint,
                path.display()
            );
        }
        if self.started.elapsed() >= self.limit {
            let doing = match record.phase {
                Phase::Unmounting | Phase::Exiting => {
                    "its FUSE session has ended, but it is still writing its final checkpoint"
                }
                Phase::Serving | Phase::Detached => {
                    "its mount was detached (`umount -l`, or a signal while files were \
                     open): it serves the files still open there until they are closed"
                }
            };
            bail!(
                "device {} is still held by the stripefs daemon (pid {}) of {} after {} s: {doing}; \
                 wait for it to exit (STRIPEFS_DEVICE_WAIT sets how long to wait, in seconds) \
                 or stop it (kill {})",
                path.display(),
                record.pid,
                record.mountpoint,
                self.limit.as_secs(),
                record.pid
            );
        }
        std::thread::sleep(POLL);
        Ok(())
    }
}

/// Why `path` is busy, naming the holder when it can be seen.
fn busy_message(path: &Path, id: DeviceId) -> String {
    let holders = holders(id);
    if holders.is_empty() {
        return match id {
            DeviceId::Block { .. } => format!(
                "device {} is in use: opened exclusively by the kernel (a mounted filesystem, \
                 device-mapper, md, swap?) or by a process this user cannot see",
                path.display()
            ),
            DeviceId::File { .. } => format!(
                "device {} is in use: locked by a process this user cannot see",
                path.display()
            ),
        };
    }
    let named: Vec<String> = holders
        .iter()
        .map(|&pid| format!("pid {pid} ({})", command_line(pid)))
        .collect();
    format!(
        "device {} is in use by {}",
        path.display(),
        named.join(", ")
    )
}
