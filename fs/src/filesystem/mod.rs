//! The filesystem: devices with superblocks, metadata kept by a log, files striped over the
//! devices, the POSIX data path, and registration of buffers against files.
//!
//! Everything here returns `Result<_, FsError>` and knows nothing of FUSE: the FUSE adapter
//! (`crate::fuse`) only translates. Every metadata change is a list of records that is applied
//! to the in-memory metadata and queued for the log; `fsync` (or the periodic committer, or
//! unmount) writes the queue to the log on every metadata replica.

mod bounce;
mod commit;
mod copy;
mod data;
mod durability;
mod error;
mod exchange;
mod format;
mod fsck;
mod heap;
mod journal;
mod namespace;
mod pieces;
mod placement;
mod registered;
mod repair;
mod rewrite;
mod space;
mod tail;
mod xattr;

pub(crate) use bounce::BOUNCE_SIZE;
pub use copy::CopyRange;
pub use registered::{FileRead, OpenedFile};
pub use space::{Fallocate, Seek};
pub use xattr::{CONTROL_XATTR, LAYOUT_XATTR, XattrFlags, format_layout};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use stripefs_engine::{DeviceQueue, DeviceSpec};
use stripefs_layout::ondisk::{Record, Superblock, Timestamp};
use stripefs_mapping::Mapping;

use crate::meta::alloc::Allocator;
use crate::meta::pieces::DirtyPieces;
use crate::meta::{self, Metadata, ROOT};

pub use error::FsError;
pub use format::{BLOCK_SIZE, MkfsOptions, hex};
pub use fsck::{FsckReport, fsck};
pub use repair::{RepairReport, repair};

use bounce::BouncePool;
use commit::{CommitGate, Pending};
use journal::Journal;
use tail::DataLock;

/// Longest file name, in bytes.
pub const NAME_MAX: usize = 255;

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    /// A named pipe.
    Fifo,
    /// A unix domain socket.
    Socket,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
}

impl FileType {
    /// The kind an inode of this type is stored as.
    pub fn inode_kind(self) -> stripefs_layout::ondisk::InodeKind {
        use stripefs_layout::ondisk::InodeKind;
        match self {
            FileType::File => InodeKind::File,
            FileType::Dir => InodeKind::Dir,
            FileType::Symlink => InodeKind::Symlink,
            FileType::Fifo => InodeKind::Fifo,
            FileType::Socket => InodeKind::Socket,
            FileType::CharDevice => InodeKind::CharDevice,
            FileType::BlockDevice => InodeKind::BlockDevice,
        }
    }

    /// The type of a `mode` whose `S_IFMT` bits name one (`None` for zero or unknown bits).
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileType::File,
            libc::S_IFDIR => FileType::Dir,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Fifo,
            libc::S_IFSOCK => FileType::Socket,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            _ => return None,
        })
    }

    /// Whether this is a FIFO, socket or device node (no data kept by the filesystem).
    pub fn is_special(self) -> bool {
        self.inode_kind().is_special()
    }
}

/// The attributes of an inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileType,
    pub size: u64,
    /// 512-byte blocks stored.
    pub blocks: u64,
    /// Permission bits.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
    pub blksize: u32,
    /// A device node's device number (`makedev(major, minor)`); zero otherwise.
    pub rdev: u32,
}

/// Changes asked of `setattr`.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

/// Clearing of the set-user-ID and set-group-ID bits that a change brings (`chown`, a write
/// or truncate by a caller without `CAP_FSETID`): set-user-ID always, set-group-ID when the
/// group may execute, and also without group execute when `caller_gid` (the caller's
/// group, given when it lacks `CAP_FSETID`) is not the file's group. Supplementary groups
/// are not known here: a caller that is in the file's group only through one of them loses
/// that bit too (cleared rather than kept, when in doubt).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KillSuidgid {
    pub caller_gid: Option<u32>,
}

impl KillSuidgid {
    /// `mode` (permission bits) with the bits cleared, for a file of group `gid`.
    pub fn apply(self, mode: u32, gid: u32) -> u32 {
        let mut mode = mode & !libc::S_ISUID;
        let group_exec = mode & libc::S_IXGRP != 0;
        if group_exec || self.caller_gid.is_some_and(|g| g != gid) {
            mode &= !libc::S_ISGID;
        }
        mode
    }
}

/// One directory entry as `readdir` returns it; `next` is the offset to continue from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub next: u64,
    pub kind: FileType,
    pub name: Vec<u8>,
}

/// Filesystem-wide counters, as `statfs` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// Who is asking: the owner given to new inodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// How to treat an existing target in `rename`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

/// Called with an inode number whenever its data or size changed outside the POSIX path
/// (registered writes), so the mount can drop cached attributes.
pub type Invalidator = Box<dyn Fn(u64) + Send + Sync>;

/// A mounted (or opened) stripefs.
pub struct Filesystem {
    id: u64,
    devices: Vec<DeviceQueue>,
    superblocks: Vec<Superblock>,
    pool: BouncePool,
    meta: RwLock<Metadata>,
    alloc: Mutex<Allocator>,
    pending: Mutex<Pending>,
    commits: CommitGate,
    journal: Mutex<Journal>,
    open_files: Mutex<HashMap<u64, u32>>,
    data_locks: DashMap<u64, Arc<DataLock>>,
    registrations: DashMap<u64, (u64, Mapping)>,
    /// Files opened for registered I/O with buffers registered against the filesystem.
    opened: registered::OpenedFiles,
    next_first_device: AtomicUsize,
    invalidator: RwLock<Option<Invalidator>>,
    /// Where the mount's control endpoint listens (shown as an xattr on every inode).
    control_socket: RwLock<Option<std::path::PathBuf>>,
    closed: AtomicBool,
    /// Bytes a checkpoint's table may take (the smallest replica slot).
    meta_capacity: u64,
    /// The pieces of the metadata changed since the last checkpoint.
    pieces: Mutex<DirtyPieces>,
    /// Bytes of each replica kept for changes that only remove.
    meta_slack: u64,
    /// The next commit writes a checkpoint (to give back the space kept for its pieces).
    checkpoint_soon: AtomicBool,
}

/// Current time as a record timestamp.
pub(crate) fn now() -> Timestamp {
    to_timestamp(SystemTime::now())
}

fn to_timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            Timestamp {
                secs: -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0),
                nanos: if d.subsec_nanos() > 0 {
                    1_000_000_000 - d.subsec_nanos()
                } else {
                    0
                },
            }
        }
    }
}

fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(u64::from(t.nanos))
    }
}

/// Opens the devices named by `specs`.
pub fn open_devices(specs: &[DeviceSpec]) -> Result<Vec<DeviceQueue>, FsError> {
    specs
        .iter()
        .map(|s| DeviceQueue::open(s).map_err(FsError::from))
        .collect()
}

/// The superblocks [`mkfs`] would write on `specs`; writes nothing.
pub fn mkfs_plan(specs: &[DeviceSpec], options: &MkfsOptions) -> Result<Vec<Superblock>, FsError> {
    let devices = open_devices(specs)?;
    format::plan(&devices, options)
}

/// Writes a new filesystem on `specs`.
pub fn mkfs(specs: &[DeviceSpec], options: &MkfsOptions) -> Result<Vec<Superblock>, FsError> {
    let devices = open_devices(specs)?;
    format::mkfs(&devices, options)
}

impl Filesystem {
    /// Opens the filesystem on `specs` (given in mkfs order): checks the device set, loads
    /// the metadata (checkpoint + log), drops orphans, and writes a fresh checkpoint.
    pub fn open(specs: &[DeviceSpec]) -> Result<Arc<Self>, FsError> {
        let devices = open_devices(specs)?;
        Self::open_devices(devices)
    }

    /// Like [`Filesystem::open`], on devices already opened.
    pub fn open_devices(devices: Vec<DeviceQueue>) -> Result<Arc<Self>, FsError> {
        let id = fs_id();
        let pool = BouncePool::new(id, &devices);
        let superblocks = format::check_device_set(&devices, &pool)?;
        let loaded = Journal::load(&devices, &pool, journal::areas(&superblocks))?;
        let mut metadata = Metadata::default();
        let generation = loaded.journal.generation();
        let name = devices[0].name().to_string();
        let mut dirty = pieces::replay(&loaded, &devices, &pool, &mut metadata, &mut |e, _| {
            Err(FsError::Corrupt {
                device: name.clone(),
                what: format!("generation {generation}, {e}"),
            })
        })?;
        if metadata.get(ROOT).is_none_or(|r| !r.is_dir()) {
            return Err(FsError::Corrupt {
                device: devices[0].name().to_string(),
                what: "the root directory is missing".into(),
            });
        }
        for ino in metadata.orphans() {
            let free = Record::FreeInode { ino };
            let touch = dirty.plan(&metadata, &free, 0);
            dirty.touch(touch, 0);
            metadata.apply(&free)?;
        }
        let journal = loaded.journal;
        let alloc = build_allocator(&superblocks, &metadata, &journal, &devices)?;
        let meta_capacity = journal::areas(&superblocks)
            .iter()
            .map(journal::MetaArea::slot_len)
            .min()
            .unwrap_or(0);
        let fs = Arc::new(Filesystem {
            meta_capacity,
            pieces: Mutex::new(dirty),
            meta_slack: durability::metadata_slack(&superblocks),
            checkpoint_soon: AtomicBool::new(false),
            id,
            pool,
            superblocks,
            meta: RwLock::new(metadata),
            alloc: Mutex::new(alloc),
            pending: Mutex::new(Pending::default()),
            commits: CommitGate::default(),
            journal: Mutex::new(journal),
            open_files: Mutex::new(HashMap::new()),
            data_locks: DashMap::new(),
            registrations: DashMap::new(),
            opened: registered::OpenedFiles::default(),
            next_first_device: AtomicUsize::new(0),
            invalidator: RwLock::new(None),
            control_socket: RwLock::new(None),
            closed: AtomicBool::new(false),
            devices,
        });
        fs.checkpoint()?;
        Ok(fs)
    }

    /// Unique number of this mounted instance (the owner of its mappings).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The devices, in mkfs order.
    pub fn devices(&self) -> &[DeviceQueue] {
        &self.devices
    }

    /// The superblock of device 0 (shared fields: uuid, defaults, count).
    pub fn superblock(&self) -> &Superblock {
        &self.superblocks[0]
    }

    /// Sets the hook called when a file changes outside the POSIX path.
    pub fn set_invalidator(&self, f: Invalidator) {
        *self.invalidator.write() = Some(f);
    }

    /// Publishes the control endpoint's socket path: every inode then shows it as the
    /// attribute `user.stripefs.control`, so a program that knows only a path on the mount
    /// finds the endpoint.
    pub fn set_control_socket(&self, path: Option<std::path::PathBuf>) {
        *self.control_socket.write() = path;
    }

    fn invalidate(&self, ino: u64) {
        if let Some(f) = &*self.invalidator.read() {
            f(ino);
        }
    }

    /// Commits queued metadata changes every `period` until the filesystem is closed.
    pub fn start_committer(self: &Arc<Self>, period: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("stripefs commit".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(period);
                    let Some(fs) = weak.upgrade() else { return };
                    if fs.closed.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = fs.sync() {
                        eprintln!("stripefs: periodic metadata commit failed: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!(
                "stripefs: cannot start the metadata committer ({e}); changes are committed on fsync and unmount"
            );
        }
    }

    /// Commits, checkpoints and stops the committer: a clean unmount.
    pub fn shutdown(&self) -> Result<(), FsError> {
        self.closed.store(true, Ordering::Release);
        for entry in self.registrations.iter() {
            entry.value().1.revoke();
        }
        self.registrations.clear();
        // The log first: should the checkpoint be torn by a crash, mount falls back to the
        // previous checkpoint and this log, and loses nothing.
        self.sync()?;
        self.checkpoint()
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> StatFs {
        // Lock order is metadata, then allocator (`change` frees space while it holds the
        // metadata): never wait for the metadata while holding the allocator.
        let files = self.meta.read().len() as u64;
        // Space freed by changes not yet durable counts as free: it is, as soon as the next
        // commit (which an allocation that needs it forces). Pending before allocator, as
        // in `change`.
        let (blocks, bfree) = {
            let pending = self.pending.lock();
            let alloc = self.alloc.lock();
            let n = self.devices.len();
            let blocks = (0..n).map(|d| alloc.capacity(d)).sum::<u64>() / BLOCK_SIZE;
            let free = (0..n).map(|d| alloc.free(d)).sum::<u64>() + pending.busy_bytes();
            (blocks, (free / BLOCK_SIZE).min(blocks))
        };
        // A small file costs about this much metadata (inode, name, an extent or two, once
        // its piece is compressed: 40-56 B measured), on every metadata replica.
        const BYTES_PER_FILE: u64 = 64;
        let meta_free = self.metadata_room();
        StatFs {
            blocks,
            bfree,
            files: files + meta_free / BYTES_PER_FILE,
            ffree: meta_free / BYTES_PER_FILE,
            bsize: BLOCK_SIZE as u32,
            namelen: NAME_MAX as u32,
        }
    }

    // ----- open files -----

    /// Counts an open handle (an unlinked file lives until its last handle is released).
    pub fn open_file(&self, ino: u64) -> Result<Attr, FsError> {
        let attr = self.getattr(ino)?;
        if attr.kind.is_special() {
            return Err(FsError::SpecialFile);
        }
        *self.open_files.lock().entry(ino).or_insert(0) += 1;
        Ok(attr)
    }

    /// Releases an open handle.
    pub fn release_file(&self, ino: u64) -> Result<(), FsError> {
        {
            let mut open = self.open_files.lock();
            match open.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return Ok(());
                }
                Some(_) => {
                    open.remove(&ino);
                }
                None => return Ok(()),
            }
        }
        let lock = self.data_locks.get(&ino).map(|l| l.clone());
        if let Some(lock) = lock {
            lock.forget_tail();
        }
        // Nobody uses the file's data lock now (a request would hold a clone of it, or of
        // its lock): it goes, so that memory follows open files, not every file ever opened.
        self.data_locks
            .remove_if(&ino, |_, l| Arc::strong_count(l) == 1 && l.is_idle());
        // Nearly every release is of a file that still has a name: a shared look settles it,
        // without waiting behind (or holding up) the creates and writes of other files.
        let unlinked = |meta: &Metadata| meta.get(ino).is_some_and(|i| i.nlink() == 0);
        if !unlinked(&self.meta.read()) {
            return Ok(());
        }
        let mut meta = self.meta.write();
        let orphan = unlinked(&meta) && ino != ROOT && !self.is_open(ino);
        if orphan {
            self.change(&mut meta, vec![Record::FreeInode { ino }])?;
            self.after_free(&meta, ino);
        }
        Ok(())
    }

    fn is_open(&self, ino: u64) -> bool {
        self.open_files.lock().get(&ino).is_some_and(|&n| n > 0)
    }

    fn data_lock(&self, ino: u64) -> Arc<DataLock> {
        self.data_locks.entry(ino).or_default().clone()
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

fn fs_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (1 << 61) | NEXT.fetch_add(1, Ordering::Relaxed)
}

fn build_allocator(
    superblocks: &[Superblock],
    meta: &Metadata,
    journal: &Journal,
    devices: &[DeviceQueue],
) -> Result<Allocator, FsError> {
    let areas: Vec<(u64, u64)> = superblocks
        .iter()
        .map(|sb| (sb.data_offset, sb.data_len))
        .collect();
    let mut alloc = Allocator::new(&areas);
    let replicas: Vec<usize> = journal.areas().iter().map(|a| a.device).collect();
    let pieces = pieces::table_space(journal.table(), &replicas);
    for (device, start, len) in meta.iter().flat_map(meta::freed_all).chain(pieces) {
        alloc
            .reserve(usize::from(device), start, len)
            .map_err(|e| FsError::Corrupt {
                device: devices
                    .get(usize::from(device))
                    .map_or_else(|| format!("#{device}"), |d| d.name().to_string()),
                what: e.to_string(),
            })?;
    }
    Ok(alloc)
}

#[cfg(test)]
mod tests {
    use super::KillSuidgid;

    #[test]
    fn set_id_bits_go_as_linux_clears_them() {
        let root = KillSuidgid { caller_gid: None };
        let in_group = KillSuidgid {
            caller_gid: Some(7),
        };
        let outside = KillSuidgid {
            caller_gid: Some(8),
        };
        // Group may execute: both bits go, whoever asks.
        for k in [root, in_group, outside] {
            assert_eq!(k.apply(0o6755, 7), 0o755);
        }
        // Without group execute, set-group-ID goes only for a caller outside the group.
        assert_eq!(root.apply(0o6745, 7), 0o2745);
        assert_eq!(in_group.apply(0o6745, 7), 0o2745);
        assert_eq!(outside.apply(0o6745, 7), 0o745);
        // Nothing set: nothing changes.
        assert_eq!(outside.apply(0o1777, 7), 0o1777);
    }
}
