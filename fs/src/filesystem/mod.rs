//! The filesystem: devices with superblocks, metadata kept by a log, files striped over the
//! devices, the POSIX data path, and registration of buffers against files.
//!
//! Everything here returns `Result<_, FsError>` and knows nothing of FUSE: the FUSE adapter
//! (`crate::fuse`) only translates. Every metadata change is a list of records that is applied
//! to the in-memory metadata and queued for the log; `fsync` (or the periodic committer, or
//! unmount) writes the queue to the log on every metadata replica.

mod bounce;
mod commit;
mod data;
mod error;
mod format;
mod fsck;
mod journal;
mod repair;
mod xattr;

pub use data::FileRead;
pub use xattr::{CONTROL_XATTR, LAYOUT_XATTR, XattrFlags, format_layout};

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use stripefs_layout::ondisk::{
    InodeKind, InodeRecord, LayoutRecord, Record, Superblock, Timestamp,
};
use stripefs_mapping::Mapping;

use crate::device::DeviceQueue;
use crate::meta::alloc::Allocator;
use crate::meta::{self, Inode, Metadata, ROOT};
use crate::spec::DeviceSpec;

pub use error::FsError;
pub use format::{BLOCK_SIZE, MkfsOptions, hex};
pub use fsck::{FsckReport, fsck};
pub use repair::{RepairReport, repair};

use bounce::BouncePool;
use commit::{CommitGate, Lsn, Pending};
use journal::Journal;

/// Longest file name, in bytes.
pub const NAME_MAX: usize = 255;

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    File,
    Dir,
    Symlink,
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
    data_locks: DashMap<u64, Arc<RwLock<()>>>,
    registrations: DashMap<u64, (u64, Mapping)>,
    next_first_device: AtomicUsize,
    invalidator: RwLock<Option<Invalidator>>,
    /// Where the mount's control endpoint listens (shown as an xattr on every inode).
    control_socket: RwLock<Option<std::path::PathBuf>>,
    closed: AtomicBool,
    /// Bytes a checkpoint may take (the smallest replica slot).
    meta_capacity: u64,
    /// Bytes the metadata would take as a checkpoint: exact after `measure`, plus the encoded
    /// size of every record applied since (an overestimate, corrected when it matters).
    meta_estimate: AtomicU64,
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
        for (i, r) in loaded.records.iter().enumerate() {
            metadata.apply(r).map_err(|e| FsError::Corrupt {
                device: devices[0].name().to_string(),
                what: format!(
                    "record {i} of generation {}: {e}",
                    loaded.journal.generation()
                ),
            })?;
        }
        if metadata.get(ROOT).is_none_or(|r| !r.is_dir()) {
            return Err(FsError::Corrupt {
                device: devices[0].name().to_string(),
                what: "the root directory is missing".into(),
            });
        }
        for ino in metadata.orphans() {
            metadata.apply(&Record::FreeInode { ino })?;
        }
        let alloc = build_allocator(&superblocks, &metadata, &devices)?;
        let meta_capacity = journal::areas(&superblocks)
            .iter()
            .map(journal::MetaArea::slot_len)
            .min()
            .unwrap_or(0);
        let meta_estimate = AtomicU64::new(checkpoint_size(&metadata.snapshot()));
        let fs = Arc::new(Filesystem {
            meta_capacity,
            meta_estimate,
            id,
            pool,
            superblocks,
            meta: RwLock::new(metadata),
            alloc: Mutex::new(alloc),
            pending: Mutex::new(Pending::default()),
            commits: CommitGate::default(),
            journal: Mutex::new(loaded.journal),
            open_files: Mutex::new(HashMap::new()),
            data_locks: DashMap::new(),
            registrations: DashMap::new(),
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

    /// Makes every metadata change made so far durable (and the data they point at): the
    /// log gets one entry with every queued change, after the data devices are flushed.
    /// Concurrent callers share one commit.
    pub fn sync(&self) -> Result<(), FsError> {
        let target = self.pending.lock().last();
        self.commits
            .commit_through(Some(target), || self.write_log())
    }

    /// Writes a checkpoint of the whole metadata (the log starts over).
    pub fn checkpoint(&self) -> Result<(), FsError> {
        self.commits.commit_through(None, || {
            let mut journal = self.journal.lock();
            self.write_checkpoint(&mut journal)
        })
    }

    /// One commit: the queued changes go to the log, or — when the log is full — into a
    /// checkpoint. Returns the last change it made durable.
    fn write_log(&self) -> Result<Lsn, FsError> {
        let mut journal = self.journal.lock();
        let cut = self.pending.lock().take();
        match journal.append(&self.devices, &self.pool, &cut.records) {
            Ok(true) => {
                self.settle(cut.through);
                Ok(cut.through)
            }
            Ok(false) => {
                self.pending.lock().restore(cut);
                self.write_checkpoint(&mut journal)
            }
            Err(e) => {
                self.pending.lock().restore(cut);
                Err(e)
            }
        }
    }

    /// Writes a checkpoint of the metadata and empties the queue, both cut at the same
    /// change (under the metadata lock, so no change falls between the snapshot and the cut:
    /// a change in both would be replayed twice, one in neither would be lost).
    fn write_checkpoint(&self, journal: &mut Journal) -> Result<Lsn, FsError> {
        let (snapshot, cut) = {
            let meta = self.meta.read();
            let cut = self.pending.lock().take();
            (meta.snapshot(), cut)
        };
        match journal.checkpoint(&self.devices, &self.pool, &snapshot) {
            Ok(()) => {
                self.settle(cut.through);
                Ok(cut.through)
            }
            Err(e) => {
                self.pending.lock().restore(cut);
                Err(e)
            }
        }
    }

    /// The changes through `durable` are on the log: the space they freed can be reused.
    fn settle(&self, durable: Lsn) {
        let free = self.pending.lock().settle(durable);
        if free.is_empty() {
            return;
        }
        let mut alloc = self.alloc.lock();
        for b in free {
            alloc.release(usize::from(b.device), b.start, b.len);
        }
    }

    /// Whether freed space waits for a commit (an allocation that failed may succeed after
    /// one).
    fn has_busy_space(&self) -> bool {
        self.pending.lock().has_busy()
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

    /// Applies `records` (one change, made durable as a whole) and queues them for the log.
    /// The space they free stays busy until the change is durable. Refused with
    /// `MetadataFull` (ENOSPC) when the metadata could no longer be checkpointed, so that
    /// nothing is acknowledged that cannot be made durable.
    fn change(&self, meta: &mut Metadata, records: Vec<Record>) -> Result<(), FsError> {
        self.reserve_metadata(meta, &records)?;
        let mut pending = self.pending.lock();
        let lsn = pending.begin();
        for r in records {
            if let Some(ino) = moves_data(meta, &r) {
                pending.touch_data(ino, lsn);
            }
            let freed = meta.apply(&r)?;
            pending.push(lsn, r, freed);
        }
        Ok(())
    }

    fn reserve_metadata(&self, meta: &Metadata, records: &[Record]) -> Result<(), FsError> {
        let grows = records.iter().any(|r| {
            !matches!(
                r,
                Record::FreeInode { .. }
                    | Record::Unlink { .. }
                    | Record::TruncateExtents { .. }
                    | Record::RemoveXattr { .. }
            )
        });
        if !grows {
            return Ok(());
        }
        let mut encoded = Vec::new();
        stripefs_layout::ondisk::encode_all(records, &mut encoded);
        let delta = encoded.len() as u64;
        let estimate = self.meta_estimate.fetch_add(delta, Ordering::Relaxed) + delta;
        // Leave room for the records of the change that are replaced (inode records), which
        // the estimate counts twice, by measuring exactly once the estimate gets close.
        if estimate <= self.meta_capacity / 10 * 9 {
            return Ok(());
        }
        let exact = checkpoint_size(&meta.snapshot());
        self.meta_estimate.store(exact + delta, Ordering::Relaxed);
        if exact + delta > self.meta_capacity {
            self.meta_estimate.store(exact, Ordering::Relaxed);
            return Err(FsError::MetadataFull {
                needed: exact + delta,
                available: self.meta_capacity,
            });
        }
        Ok(())
    }

    // ----- namespace -----

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let meta = self.meta.read();
        let ino = child(&meta, parent, name.as_bytes())?;
        self.attr_of(&meta, ino)
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let meta = self.meta.read();
        self.attr_of(&meta, ino)
    }

    fn attr_of(&self, meta: &Metadata, ino: u64) -> Result<Attr, FsError> {
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        Ok(attr(inode))
    }

    /// Changes mode, owner, size or times.
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Attr, FsError> {
        if let Some(size) = set.size {
            self.truncate(ino, size)?;
        }
        let mut meta = self.meta.write();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        let mut r = inode.record.clone();
        if let Some(mode) = set.mode {
            r.mode = mode & 0o7777;
        }
        if let Some(uid) = set.uid {
            r.uid = uid;
        }
        if let Some(gid) = set.gid {
            r.gid = gid;
        }
        if let Some(t) = set.atime {
            r.atime = to_timestamp(t);
        }
        if let Some(t) = set.mtime {
            r.mtime = to_timestamp(t);
        }
        r.ctime = now();
        self.change(&mut meta, vec![Record::Inode(r)])?;
        self.attr_of(&meta, ino)
    }

    /// Creates a regular file.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        who: Caller,
    ) -> Result<Attr, FsError> {
        self.make(parent, name, InodeKind::File, mode, who, Vec::new())
    }

    /// Creates a directory.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        who: Caller,
    ) -> Result<Attr, FsError> {
        self.make(parent, name, InodeKind::Dir, mode, who, Vec::new())
    }

    /// Creates a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &[u8],
        who: Caller,
    ) -> Result<Attr, FsError> {
        if target.is_empty() || target.len() > 4096 {
            return Err(FsError::invalid(format!(
                "symlink target of {} bytes (1 to 4096 allowed)",
                target.len()
            )));
        }
        self.make(
            parent,
            name,
            InodeKind::Symlink,
            0o777,
            who,
            target.to_vec(),
        )
    }

    fn make(
        &self,
        parent: u64,
        name: &OsStr,
        kind: InodeKind,
        mode: u32,
        who: Caller,
        target: Vec<u8>,
    ) -> Result<Attr, FsError> {
        let name = check_name(name.as_bytes())?;
        let mut meta = self.meta.write();
        let dir = directory(&meta, parent)?;
        if dir.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let layout = match kind {
            InodeKind::File => Some(self.layout_for_new_file(dir)),
            InodeKind::Dir => dir.record.layout.clone(),
            InodeKind::Symlink => None,
        };
        let ino = meta.next_ino();
        let t = now();
        let mut record = meta::new_inode(ino, kind, mode, who.uid, who.gid, t, layout);
        record.size = target.len() as u64;
        record.symlink_target = target;
        let mut parent_record = dir.record.clone();
        parent_record.mtime = t;
        parent_record.ctime = t;
        self.change(
            &mut meta,
            vec![
                Record::Inode(record),
                Record::Link {
                    parent,
                    name: name.to_vec(),
                    ino,
                },
                Record::Inode(parent_record),
            ],
        )?;
        self.attr_of(&meta, ino)
    }

    fn layout_for_new_file(&self, dir: &Inode) -> LayoutRecord {
        if let Some(l) = &dir.record.layout {
            return l.clone();
        }
        let first = self.next_first_device.fetch_add(1, Ordering::Relaxed);
        format::default_layout(self.superblock(), first % self.devices.len().max(1))
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        if inode.record.kind != InodeKind::Symlink {
            return Err(FsError::invalid("not a symbolic link"));
        }
        Ok(inode.record.symlink_target.clone())
    }

    /// Adds a hard link to `ino` (not a directory).
    pub fn link(&self, ino: u64, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let name = check_name(name.as_bytes())?;
        let mut meta = self.meta.write();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        if inode.is_dir() {
            return Err(FsError::NotSupported {
                what: "hard links to directories",
            });
        }
        let mut record = inode.record.clone();
        let dir = directory(&meta, parent)?;
        if dir.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let t = now();
        record.ctime = t;
        let mut parent_record = dir.record.clone();
        parent_record.mtime = t;
        parent_record.ctime = t;
        self.change(
            &mut meta,
            vec![
                Record::Link {
                    parent,
                    name: name.to_vec(),
                    ino,
                },
                Record::Inode(record),
                Record::Inode(parent_record),
            ],
        )?;
        self.attr_of(&meta, ino)
    }

    /// Removes a name of a file or symlink; the inode goes when its last name and last open
    /// handle are gone.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        self.remove(parent, name.as_bytes(), false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        self.remove(parent, name.as_bytes(), true)
    }

    fn remove(&self, parent: u64, name: &[u8], want_dir: bool) -> Result<(), FsError> {
        let mut meta = self.meta.write();
        let ino = child(&meta, parent, name)?;
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        match (want_dir, inode.is_dir()) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if !inode.entries.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        let t = now();
        let mut records = vec![Record::Unlink {
            parent,
            name: name.to_vec(),
        }];
        records.extend(self.touch_parent(&meta, parent, t));
        records.extend(self.drop_link(&meta, ino, t));
        self.change(&mut meta, records)?;
        self.after_free(&meta, ino);
        Ok(())
    }

    fn touch_parent(&self, meta: &Metadata, parent: u64, t: Timestamp) -> Option<Record> {
        let mut r = meta.get(parent)?.record.clone();
        r.mtime = t;
        r.ctime = t;
        Some(Record::Inode(r))
    }

    /// Records for losing one name of `ino`: its ctime, or its end.
    fn drop_link(&self, meta: &Metadata, ino: u64, t: Timestamp) -> Vec<Record> {
        let Some(inode) = meta.get(ino) else {
            return Vec::new();
        };
        let last = if inode.is_dir() {
            true
        } else {
            inode.nlink <= 1
        };
        if last && !self.is_open(ino) {
            return vec![Record::FreeInode { ino }];
        }
        let mut r = inode.record.clone();
        r.ctime = t;
        vec![Record::Inode(r)]
    }

    /// After an inode may have gone: revoke its registrations.
    fn after_free(&self, meta: &Metadata, ino: u64) {
        if meta.get(ino).is_some() {
            return;
        }
        self.data_locks.remove(&ino);
        self.registrations.retain(|_, (i, mapping)| {
            if *i == ino {
                mapping.revoke();
                false
            } else {
                true
            }
        });
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a compatible target.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), FsError> {
        if flags.exchange {
            return Err(FsError::NotSupported {
                what: "RENAME_EXCHANGE",
            });
        }
        let (name, new_name) = (name.as_bytes(), check_name(new_name.as_bytes())?);
        let mut meta = self.meta.write();
        let ino = child(&meta, parent, name)?;
        directory(&meta, new_parent)?;
        let source_is_dir = meta.get(ino).is_some_and(Inode::is_dir);
        if source_is_dir && is_ancestor(&meta, ino, new_parent) {
            return Err(FsError::invalid("cannot move a directory into itself"));
        }
        let target = meta
            .get(new_parent)
            .and_then(|d| d.entries.get(new_name).copied());
        let t = now();
        let mut records = Vec::new();
        if let Some(target) = target {
            if target == ino {
                return Ok(());
            }
            if flags.noreplace {
                return Err(FsError::Exists);
            }
            let target_inode = meta.get(target).ok_or(FsError::NotFound)?;
            match (source_is_dir, target_inode.is_dir()) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !target_inode.entries.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            records.push(Record::Unlink {
                parent: new_parent,
                name: new_name.to_vec(),
            });
            records.extend(self.drop_link(&meta, target, t));
        }
        records.push(Record::Unlink {
            parent,
            name: name.to_vec(),
        });
        records.push(Record::Link {
            parent: new_parent,
            name: new_name.to_vec(),
            ino,
        });
        if let Some(mut r) = meta.get(ino).map(|i| i.record.clone()) {
            r.ctime = t;
            records.push(Record::Inode(r));
        }
        records.extend(self.touch_parent(&meta, parent, t));
        if new_parent != parent {
            records.extend(self.touch_parent(&meta, new_parent, t));
        }
        self.change(&mut meta, records)?;
        if let Some(target) = target {
            self.after_free(&meta, target);
        }
        Ok(())
    }

    /// Entries of directory `ino` from position `offset` on ("." and ".." first).
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, FsError> {
        let meta = self.meta.read();
        let dir = directory(&meta, ino)?;
        let mut out = Vec::new();
        let dots = [(ino, b".".to_vec()), (dir.parent, b"..".to_vec())];
        let all =
            dots.into_iter()
                .map(|(i, n)| (i, n, FileType::Dir))
                .chain(dir.entries.iter().map(|(n, &i)| {
                    let kind = meta
                        .get(i)
                        .map_or(FileType::File, |c| file_type(c.record.kind));
                    (i, n.clone(), kind)
                }));
        for (position, (child, name, kind)) in all.enumerate().skip(offset as usize) {
            out.push(DirEntry {
                ino: child,
                next: position as u64 + 1,
                kind,
                name,
            });
        }
        Ok(out)
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
        // A small file costs about this much metadata (inode, name, an extent or two).
        const BYTES_PER_FILE: u64 = 256;
        let meta_free = self
            .meta_capacity
            .saturating_sub(self.meta_estimate.load(Ordering::Relaxed));
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
        let mut meta = self.meta.write();
        let orphan = meta
            .get(ino)
            .is_some_and(|i| i.nlink == 0 && i.record.ino != ROOT && !self.is_open(ino));
        if orphan {
            self.change(&mut meta, vec![Record::FreeInode { ino }])?;
            self.after_free(&meta, ino);
        }
        Ok(())
    }

    fn is_open(&self, ino: u64) -> bool {
        self.open_files.lock().get(&ino).is_some_and(|&n| n > 0)
    }

    /// Makes the file's data and metadata durable (with every other change made before:
    /// one log, one order).
    pub fn fsync(&self, ino: u64) -> Result<(), FsError> {
        self.getattr(ino)?;
        self.sync()
    }

    /// Makes the file's data durable, and the metadata needed to read it back (its size and
    /// where its blocks are); a change of times or mode alone is not waited for. When that
    /// metadata is durable already, only the file's devices are flushed.
    pub fn fdatasync(&self, ino: u64) -> Result<(), FsError> {
        let devices: Vec<usize> = {
            let meta = self.meta.read();
            let inode = meta.get(ino).ok_or(FsError::NotFound)?;
            match &inode.record.layout {
                Some(l) => l.devices.iter().map(|&d| usize::from(d)).collect(),
                None => Vec::new(),
            }
        };
        let target = self.pending.lock().data_lsn(ino);
        if target > self.commits.durable() {
            return self
                .commits
                .commit_through(Some(target), || self.write_log());
        }
        for d in devices {
            if let Some(device) = self.devices.get(d) {
                device.sync()?;
            }
        }
        Ok(())
    }

    fn data_lock(&self, ino: u64) -> Arc<RwLock<()>> {
        self.data_locks.entry(ino).or_default().clone()
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Bytes of a checkpoint's header block.
const CHECKPOINT_OVERHEAD: u64 = stripefs_layout::ondisk::CHECKPOINT_HEADER_LEN as u64;

/// Bytes a checkpoint of `records` takes on a device.
fn checkpoint_size(records: &[Record]) -> u64 {
    let mut bytes = Vec::new();
    stripefs_layout::ondisk::encode_all(records, &mut bytes);
    CHECKPOINT_OVERHEAD + (bytes.len() as u64).next_multiple_of(4096)
}

fn fs_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (1 << 61) | NEXT.fetch_add(1, Ordering::Relaxed)
}

fn build_allocator(
    superblocks: &[Superblock],
    meta: &Metadata,
    devices: &[DeviceQueue],
) -> Result<Allocator, FsError> {
    let areas: Vec<(u64, u64)> = superblocks
        .iter()
        .map(|sb| (sb.data_offset, sb.data_len))
        .collect();
    let mut alloc = Allocator::new(&areas);
    for (device, start, len) in meta.iter().flat_map(meta::freed_all) {
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

fn check_name(name: &[u8]) -> Result<&[u8], FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong {
            len: name.len(),
            max: NAME_MAX,
        });
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::InvalidName {
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(name)
}

fn directory(meta: &Metadata, ino: u64) -> Result<&Inode, FsError> {
    let inode = meta.get(ino).ok_or(FsError::NotFound)?;
    if !inode.is_dir() {
        return Err(FsError::NotDir);
    }
    Ok(inode)
}

fn child(meta: &Metadata, parent: u64, name: &[u8]) -> Result<u64, FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong {
            len: name.len(),
            max: NAME_MAX,
        });
    }
    directory(meta, parent)?
        .entries
        .get(name)
        .copied()
        .ok_or(FsError::NotFound)
}

/// Whether `ancestor` is `ino` or one of its parents.
fn is_ancestor(meta: &Metadata, ancestor: u64, mut ino: u64) -> bool {
    for _ in 0..4096 {
        if ino == ancestor {
            return true;
        }
        match meta.get(ino) {
            Some(i) if i.parent != ino => ino = i.parent,
            _ => return false,
        }
    }
    true
}

/// The inode whose data mapping or size `record` changes, if it does (read before it is
/// applied).
fn moves_data(meta: &Metadata, record: &Record) -> Option<u64> {
    match record {
        Record::Extent { ino, .. } | Record::TruncateExtents { ino, .. } => Some(*ino),
        Record::Inode(r) => match meta.get(r.ino) {
            Some(old) if old.record.size == r.size && old.record.layout == r.layout => None,
            _ => Some(r.ino),
        },
        _ => None,
    }
}

fn file_type(kind: InodeKind) -> FileType {
    match kind {
        InodeKind::File => FileType::File,
        InodeKind::Dir => FileType::Dir,
        InodeKind::Symlink => FileType::Symlink,
    }
}

fn attr(inode: &Inode) -> Attr {
    let r: &InodeRecord = &inode.record;
    let stored: u64 = inode.extents.iter().map(|m| m.stored_bytes()).sum();
    Attr {
        ino: r.ino,
        kind: file_type(r.kind),
        size: r.size,
        blocks: stored / 512,
        mode: r.mode,
        nlink: inode.nlink,
        uid: r.uid,
        gid: r.gid,
        atime: to_system_time(r.atime),
        mtime: to_system_time(r.mtime),
        ctime: to_system_time(r.ctime),
        crtime: to_system_time(r.crtime),
        blksize: BLOCK_SIZE as u32,
    }
}
