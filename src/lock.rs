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

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use stripefs_fs::DeviceSpec;
use stripefs_fs::control::proto::SOCKET_DIR;
use stripefs_fs::spec::Backing;

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

/// What identifies a device across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceId {
    /// A block device, by its device number.
    Block { rdev: u64 },
    /// A regular file, by the device it lives on and its inode.
    File { dev: u64, ino: u64 },
}

impl DeviceId {
    /// The identity of the block device or regular file at `path`; `None` for anything else
    /// (or nothing: the device layer reports it).
    fn of(path: &Path) -> Option<DeviceId> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.file_type().is_block_device() {
            Some(DeviceId::Block { rdev: meta.rdev() })
        } else if meta.is_file() {
            Some(DeviceId::File {
                dev: meta.dev(),
                ino: meta.ino(),
            })
        } else {
            None
        }
    }

    fn encode(&self) -> String {
        match *self {
            DeviceId::Block { rdev } => format!("block {}", majmin(rdev)),
            DeviceId::File { dev, ino } => format!("file {} {ino}", majmin(dev)),
        }
    }

    fn decode(text: &str) -> Option<DeviceId> {
        let mut words = text.split(' ');
        let id = match (words.next()?, words.next()?) {
            ("block", mm) => DeviceId::Block {
                rdev: parse_majmin(mm)?,
            },
            ("file", mm) => DeviceId::File {
                dev: parse_majmin(mm)?,
                ino: words.next()?.parse().ok()?,
            },
            _ => return None,
        };
        Some(id)
    }
}

fn majmin(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

fn parse_majmin(text: &str) -> Option<u64> {
    let (major, minor) = text.split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

/// The path that holds the data of `spec`, if any (not for an emulated device in memory).
fn path_of(spec: &DeviceSpec) -> Option<PathBuf> {
    match spec {
        DeviceSpec::Path(p) => Some(p.clone()),
        DeviceSpec::Emulated(e) => match &e.backing {
            Backing::File(p) => Some(p.clone()),
            Backing::Memory => None,
        },
    }
}

/// The identities of the devices among `specs` that exist.
pub fn device_ids(specs: &[DeviceSpec]) -> Vec<DeviceId> {
    specs
        .iter()
        .filter_map(path_of)
        .filter_map(|p| DeviceId::of(&p))
        .collect()
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

/// The processes that hold `id`: the owner of a `flock` on a file (/proc/locks), the
/// processes that have a block device open (/proc/PID/fd).
fn holders(id: DeviceId) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    match id {
        DeviceId::File { dev, ino } => {
            // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; the device in hex.
            let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            for line in locks.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.get(1) == Some(&"FLOCK")
                    && words.get(5) == Some(&want.as_str())
                    && let Some(pid) = words.get(4).and_then(|p| p.parse().ok())
                {
                    pids.push(pid);
                }
            }
        }
        DeviceId::Block { rdev } => {
            for pid in processes() {
                let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                    continue;
                };
                let holds = fds.flatten().any(|fd| {
                    std::fs::metadata(fd.path())
                        .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
                });
                if holds {
                    pids.push(pid);
                }
            }
        }
    }
    pids.retain(|&p| p != me);
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The command line of `pid`, spaces between the arguments.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        "exited".into()
    } else {
        words.join(" ")
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat, clock ticks after boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

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
enum Standing {
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
    pid: u32,
    start: u64,
    phase: Phase,
    /// `major:minor` of the daemon's mount (`st_dev` of its root).
    mount: String,
    /// For messages only (escaped: no newline).
    mountpoint: String,
    devices: Vec<DeviceId>,
    /// When it was last written, and the file's inode (only for states read back).
    written: Option<SystemTime>,
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
    fn all() -> Vec<DaemonState> {
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
    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Whether the daemon (alive a moment ago) still has its mount.
    fn standing(&self) -> Standing {
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
    fn collect_garbage(ids: &[DeviceId]) {
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
