//! The filesystem's metadata in memory: inodes, directories, layouts, extents, xattrs.
//!
//! Pure logic, no I/O. Every change is a metadata [`Record`]: the filesystem builds records,
//! applies them here, and appends the same records to the log, so replaying the log at mount
//! rebuilds exactly the state that was live.

pub mod alloc;
pub mod dir;
pub mod extents;
mod layouts;
pub mod pieces;

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashTable;
use stripefs_layout::ondisk::{InodeKind, InodeRecord, LayoutRecord, Record, Timestamp};

use dir::DirEntries;
use extents::{Extent, ExtentMap};
use layouts::Layouts;

/// The root directory's inode number.
pub const ROOT: u64 = 1;

/// Why a record cannot be applied (the metadata it refers to is not there).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("record refers to inode {ino}, which does not exist")]
    NoInode { ino: u64 },
    #[error("inode {ino} is not a directory")]
    NotDir { ino: u64 },
    #[error("directory {parent} has no entry {name:?}")]
    NoEntry { parent: u64, name: String },
    #[error("directory {parent} already has an entry {name:?}")]
    EntryExists { parent: u64, name: String },
    #[error("inode {ino} has no column {column}")]
    NoColumn { ino: u64, column: u16 },
    #[error("extent {object_offset}+{len} of inode {ino} column {column} overlaps a stored range")]
    Overlap {
        ino: u64,
        column: u16,
        object_offset: u64,
        len: u64,
    },
    #[error("an entry name of {len} bytes in directory {parent} is longer than any allowed")]
    NameTooLong { parent: u64, len: usize },
}

/// An inode's extended attributes, by name.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

static NO_XATTRS: Xattrs = BTreeMap::new();
static NO_ENTRIES: DirEntries = DirEntries::new();
static NO_EXTENTS: ExtentMap = ExtentMap::EMPTY;

/// One inode and everything hanging off it.
///
/// Held compactly (see DESIGN.md, "Metadata in memory"): the fields of its [`InodeRecord`]
/// inline, its layout shared with every inode that has the same one, and only what its kind
/// has (a file's extents, a directory's entries, a symlink's target) behind it;
/// [`Inode::record`] gives the record back as it was applied.
#[derive(Clone, Debug)]
pub struct Inode {
    ino: u64,
    size: u64,
    /// Seconds of atime, mtime, ctime, crtime.
    secs: [i64; 4],
    /// Nanoseconds of the same.
    nanos: [u32; 4],
    mode: u32,
    uid: u32,
    gid: u32,
    /// Hard links (directories: "." and ".." of subdirectories count too).
    nlink: u32,
    rdev: u32,
    kind: InodeKind,
    prealloc: bool,
    layout: Option<Arc<LayoutRecord>>,
    xattrs: Option<Box<Xattrs>>,
    body: Body,
}

/// What only some kinds of inode have.
#[derive(Clone, Debug)]
enum Body {
    None,
    /// A file: where its column objects are stored.
    File(Columns),
    Dir(Box<Dir>),
    /// A symlink's target.
    Symlink(Box<[u8]>),
}

#[derive(Clone, Debug)]
struct Dir {
    entries: DirEntries,
    /// The directory holding this one (the root is its own parent).
    parent: u64,
}

/// A file's extents, per column of its layout.
#[derive(Clone, Debug)]
enum Columns {
    /// No column holds anything.
    None,
    /// Only `column` may hold anything (a file within one stripe unit).
    One { column: u16, map: ExtentMap },
    /// Every column, by index.
    All(Box<[ExtentMap]>),
}

impl Columns {
    /// The map of `column` (below `count`, the layout's columns), made if need be.
    fn get_mut(&mut self, column: u16, count: usize) -> &mut ExtentMap {
        let widen = match self {
            Columns::None => {
                *self = Columns::One {
                    column,
                    map: ExtentMap::default(),
                };
                false
            }
            Columns::One { column: c, map } if *c != column => {
                if map.is_empty() {
                    *c = column;
                    false
                } else {
                    true
                }
            }
            Columns::One { .. } | Columns::All(_) => false,
        };
        if widen && let Columns::One { column: c, map } = self {
            let mut all = vec![ExtentMap::default(); count].into_boxed_slice();
            if let Some(slot) = all.get_mut(usize::from(*c)) {
                *slot = std::mem::take(map);
            }
            *self = Columns::All(all);
        }
        match self {
            Columns::One { map, .. } => map,
            Columns::All(all) => {
                let last = all.len().saturating_sub(1);
                &mut all[usize::from(column).min(last)]
            }
            Columns::None => unreachable!("made above"),
        }
    }

    /// Holds the maps in the smallest form again after a removal.
    fn shrink(&mut self) {
        match self {
            Columns::One { map, .. } if map.is_empty() => *self = Columns::None,
            Columns::All(all) => {
                let mut held = all.iter().enumerate().filter(|(_, m)| !m.is_empty());
                match (held.next(), held.next()) {
                    (None, _) => *self = Columns::None,
                    (Some((c, _)), None) => {
                        let column = c as u16;
                        let map = std::mem::take(&mut all[c]);
                        *self = Columns::One { column, map };
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// The extent maps of a file's columns, in column order (empty for other kinds).
#[derive(Clone, Copy, Debug)]
pub struct ExtentColumns<'a> {
    columns: Option<&'a Columns>,
    count: usize,
}

impl<'a> ExtentColumns<'a> {
    /// Number of columns.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The map of `column`, if the layout has that column.
    pub fn get(&self, column: usize) -> Option<&'a ExtentMap> {
        if column >= self.count {
            return None;
        }
        Some(match self.columns {
            Some(Columns::One { column: c, map }) if usize::from(*c) == column => map,
            Some(Columns::All(all)) => all.get(column).unwrap_or(&NO_EXTENTS),
            _ => &NO_EXTENTS,
        })
    }

    /// Every column's map, in column order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a ExtentMap> + use<'a> {
        let this = *self;
        (0..self.count).map(move |c| this.get(c).unwrap_or(&NO_EXTENTS))
    }
}

impl std::ops::Index<usize> for ExtentColumns<'_> {
    type Output = ExtentMap;

    /// The map of `column`; panics past the last column, as a slice does.
    fn index(&self, column: usize) -> &ExtentMap {
        assert!(column < self.count, "column {column} of {}", self.count);
        self.get(column).unwrap_or(&NO_EXTENTS)
    }
}

impl Inode {
    fn new(record: &InodeRecord, layout: Option<Arc<LayoutRecord>>) -> Self {
        let nlink = match (record.kind, record.ino) {
            (InodeKind::Dir, ROOT) => 2,
            (InodeKind::Dir, _) => 1,
            _ => 0,
        };
        let mut inode = Inode {
            ino: record.ino,
            size: 0,
            secs: [0; 4],
            nanos: [0; 4],
            mode: 0,
            uid: 0,
            gid: 0,
            nlink,
            rdev: 0,
            kind: record.kind,
            prealloc: false,
            layout,
            xattrs: None,
            body: Body::new(record),
        };
        inode.set_fields(record);
        inode
    }

    /// Takes the plain fields of `r` (not the layout, not what hangs off the body).
    fn set_fields(&mut self, r: &InodeRecord) {
        self.size = r.size;
        let times = [r.atime, r.mtime, r.ctime, r.crtime];
        self.secs = times.map(|t| t.secs);
        self.nanos = times.map(|t| t.nanos);
        self.mode = r.mode;
        self.uid = r.uid;
        self.gid = r.gid;
        self.rdev = r.rdev;
        self.prealloc = r.prealloc;
    }

    /// The inode record as last applied.
    pub fn record(&self) -> InodeRecord {
        InodeRecord {
            ino: self.ino,
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            atime: self.time(0),
            mtime: self.time(1),
            ctime: self.time(2),
            crtime: self.time(3),
            layout: self.layout().cloned(),
            symlink_target: self.symlink_target().to_vec(),
            rdev: self.rdev,
            prealloc: self.prealloc,
        }
    }

    fn time(&self, which: usize) -> Timestamp {
        Timestamp {
            secs: self.secs[which],
            nanos: self.nanos[which],
        }
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    pub fn kind(&self) -> InodeKind {
        self.kind
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Permission bits.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    pub fn atime(&self) -> Timestamp {
        self.time(0)
    }

    pub fn mtime(&self) -> Timestamp {
        self.time(1)
    }

    pub fn ctime(&self) -> Timestamp {
        self.time(2)
    }

    pub fn crtime(&self) -> Timestamp {
        self.time(3)
    }

    /// A device node's device number (zero for other kinds).
    pub fn rdev(&self) -> u32 {
        self.rdev
    }

    /// Whether a file keeps preallocated blocks past its size.
    pub fn prealloc(&self) -> bool {
        self.prealloc
    }

    /// The layout (files always; directories may; other kinds never).
    pub fn layout(&self) -> Option<&LayoutRecord> {
        self.layout.as_deref()
    }

    /// A symlink's target (empty for other kinds).
    pub fn symlink_target(&self) -> &[u8] {
        match &self.body {
            Body::Symlink(target) => target,
            _ => &[],
        }
    }

    /// Hard links (directories: "." and ".." of subdirectories count too).
    pub fn nlink(&self) -> u32 {
        self.nlink
    }

    /// The directory holding this one (directories only; the root is its own parent; other
    /// kinds answer their own number).
    pub fn parent(&self) -> u64 {
        match &self.body {
            Body::Dir(d) => d.parent,
            _ => self.ino,
        }
    }

    /// Directory entries (empty for other kinds).
    pub fn entries(&self) -> &DirEntries {
        match &self.body {
            Body::Dir(d) => &d.entries,
            _ => &NO_ENTRIES,
        }
    }

    /// Per column of the layout: where the column object is stored (files only).
    pub fn extents(&self) -> ExtentColumns<'_> {
        match &self.body {
            Body::File(columns) => ExtentColumns {
                columns: Some(columns),
                count: self.column_count(),
            },
            _ => ExtentColumns {
                columns: None,
                count: 0,
            },
        }
    }

    /// Extended attributes.
    pub fn xattrs(&self) -> &Xattrs {
        self.xattrs.as_deref().unwrap_or(&NO_XATTRS)
    }

    /// Columns a file's extents are kept for: its layout's (none for other kinds).
    fn column_count(&self) -> usize {
        match (&self.body, &self.layout) {
            (Body::File(_), Some(l)) => l.devices.len(),
            _ => 0,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == InodeKind::Dir
    }
}

impl Body {
    fn new(record: &InodeRecord) -> Self {
        match record.kind {
            InodeKind::File => Body::File(Columns::None),
            InodeKind::Dir => Body::Dir(Box::new(Dir {
                entries: DirEntries::new(),
                parent: record.ino,
            })),
            InodeKind::Symlink => Body::Symlink(record.symlink_target.clone().into_boxed_slice()),
            InodeKind::Fifo
            | InodeKind::Socket
            | InodeKind::CharDevice
            | InodeKind::BlockDevice => Body::None,
        }
    }
}

/// Device ranges a record released: (device index, device offset, len).
pub type Freed = Vec<(u16, u64, u64)>;

/// A hash of an inode number for the index (numbers are dense: a multiply spreads them).
fn ino_hash(ino: u64) -> u64 {
    let p = u128::from(ino) * 0x9e37_79b9_7f4a_7c15;
    (p as u64) ^ ((p >> 64) as u64)
}

/// Every inode, by number.
///
/// The inodes live in one array (a freed slot is reused); a hash table of slot indices finds
/// one by number; identical layouts are held once.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    slots: Vec<Option<Inode>>,
    /// Slots of `slots` that hold no inode.
    free: Vec<u32>,
    /// Indices into `slots`, by [`ino_hash`] of their inode's number.
    index: HashTable<u32>,
    /// Every layout some inode has, once.
    layouts: Layouts,
    max_ino: u64,
}

impl Metadata {
    fn slot(&self, ino: u64) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(ino_hash(ino), |&i| {
                slots[i as usize].as_ref().is_some_and(|n| n.ino == ino)
            })
            .map(|&i| i as usize)
    }

    /// Makes room for `inodes` more inodes at once (a mount that knows about how many it
    /// will load), instead of growing the array and the index step by step.
    pub fn reserve(&mut self, inodes: usize) {
        self.slots.reserve(inodes);
        let slots = &self.slots;
        self.index.reserve(inodes, |&j| {
            slots[j as usize].as_ref().map_or(0, |n| ino_hash(n.ino))
        });
    }

    /// The inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.slots[self.slot(ino)?].as_ref()
    }

    /// A number no inode has ever had in this metadata.
    pub fn next_ino(&self) -> u64 {
        self.max_ino + 1
    }

    /// Number of inodes.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no inodes at all (not even the root).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every inode.
    pub fn iter(&self) -> impl Iterator<Item = &Inode> {
        self.slots.iter().flatten()
    }

    /// Applies one record; returns the device ranges it released.
    pub fn apply(&mut self, record: &Record) -> Result<Freed, MetaError> {
        match record {
            Record::Inode(r) => self.put_inode(r),
            Record::FreeInode { ino } => self.free_inode(*ino),
            Record::Link { parent, name, ino } => {
                self.link(*parent, name, *ino).map(|()| Vec::new())
            }
            Record::Unlink { parent, name } => self.unlink(*parent, name).map(|()| Vec::new()),
            Record::Extent {
                ino,
                column,
                object_offset,
                device_offset,
                len,
            } => self
                .add_extent(*ino, *column, *object_offset, *device_offset, *len)
                .map(|()| Vec::new()),
            Record::TruncateExtents {
                ino,
                column,
                object_offset,
            } => self.truncate_extents(*ino, *column, *object_offset),
            Record::RemoveExtents {
                ino,
                column,
                object_offset,
                len,
            } => self.remove_extents(*ino, *column, *object_offset, *len),
            Record::SetXattr { ino, name, value } => {
                self.inode_mut(*ino)?
                    .xattrs
                    .get_or_insert_default()
                    .insert(name.clone(), value.clone());
                Ok(Vec::new())
            }
            Record::RemoveXattr { ino, name } => {
                let inode = self.inode_mut(*ino)?;
                if let Some(xattrs) = &mut inode.xattrs {
                    xattrs.remove(name);
                    if xattrs.is_empty() {
                        inode.xattrs = None;
                    }
                }
                Ok(Vec::new())
            }
        }
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, MetaError> {
        let i = self.slot(ino).ok_or(MetaError::NoInode { ino })?;
        self.slots[i].as_mut().ok_or(MetaError::NoInode { ino })
    }

    fn put_inode(&mut self, r: &InodeRecord) -> Result<Freed, MetaError> {
        self.max_ino = self.max_ino.max(r.ino);
        let Some(i) = self.slot(r.ino) else {
            let layout = r.layout.as_ref().map(|l| self.layouts.intern(l));
            let inode = Inode::new(r, layout);
            let i = match self.free.pop() {
                Some(i) => {
                    self.slots[i as usize] = Some(inode);
                    i
                }
                None => {
                    self.slots.push(Some(inode));
                    (self.slots.len() - 1) as u32
                }
            };
            let slots = &self.slots;
            self.index.insert_unique(ino_hash(r.ino), i, |&j| {
                slots[j as usize].as_ref().map_or(0, |n| ino_hash(n.ino))
            });
            return Ok(Vec::new());
        };
        let same_layout = self.slots[i]
            .as_ref()
            .is_some_and(|n| n.layout.as_deref() == r.layout.as_ref());
        let new_layout = match (&r.layout, same_layout) {
            (_, true) => None,
            (Some(l), false) => Some(self.layouts.intern(l)),
            (None, false) => None,
        };
        let Some(existing) = self.slots[i].as_mut() else {
            return Ok(Vec::new());
        };
        let old_layout = if same_layout {
            None
        } else {
            let columns = existing.column_count();
            let old = std::mem::replace(&mut existing.layout, new_layout);
            if existing.kind == InodeKind::File && existing.column_count() != columns {
                existing.body = Body::File(Columns::None);
            }
            old
        };
        if existing.kind != r.kind {
            existing.kind = r.kind;
            existing.body = Body::new(r);
        } else if existing.symlink_target() != r.symlink_target.as_slice() {
            existing.body = Body::new(r);
        }
        existing.set_fields(r);
        self.layouts.release(old_layout);
        Ok(Vec::new())
    }

    fn free_inode(&mut self, ino: u64) -> Result<Freed, MetaError> {
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(ino_hash(ino), |&i| {
                slots[i as usize].as_ref().is_some_and(|n| n.ino == ino)
            })
            .map_err(|_| MetaError::NoInode { ino })?;
        let (i, _) = entry.remove();
        let inode = self.slots[i as usize]
            .take()
            .ok_or(MetaError::NoInode { ino })?;
        self.free.push(i);
        let freed = freed_all(&inode);
        self.layouts.release(inode.layout);
        Ok(freed)
    }

    fn link(&mut self, parent: u64, name: &[u8], ino: u64) -> Result<(), MetaError> {
        let child_is_dir = self.get(ino).ok_or(MetaError::NoInode { ino })?.is_dir();
        if name.len() > dir::LONGEST_NAME {
            return Err(MetaError::NameTooLong {
                parent,
                len: name.len(),
            });
        }
        let dir = self.inode_mut(parent)?;
        let Body::Dir(d) = &mut dir.body else {
            return Err(MetaError::NotDir { ino: parent });
        };
        if !d.entries.insert(name, ino) {
            return Err(MetaError::EntryExists {
                parent,
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
        if child_is_dir {
            dir.nlink += 1;
        }
        let child = self.inode_mut(ino)?;
        child.nlink += 1;
        if let Body::Dir(d) = &mut child.body {
            d.parent = parent;
        }
        Ok(())
    }

    fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<(), MetaError> {
        let dir = self.inode_mut(parent)?;
        let removed = match &mut dir.body {
            Body::Dir(d) => d.entries.remove(name),
            _ => None,
        };
        let ino = removed.ok_or_else(|| MetaError::NoEntry {
            parent,
            name: String::from_utf8_lossy(name).into_owned(),
        })?;
        let child = self.inode_mut(ino)?;
        child.nlink = child.nlink.saturating_sub(1);
        if child.is_dir()
            && let Ok(dir) = self.inode_mut(parent)
        {
            dir.nlink = dir.nlink.saturating_sub(1);
        }
        Ok(())
    }

    /// The columns of file `ino`, checking that it has `column`.
    fn columns_mut(&mut self, ino: u64, column: u16) -> Result<(&mut Columns, usize), MetaError> {
        let inode = self.inode_mut(ino)?;
        let count = inode.column_count();
        match &mut inode.body {
            Body::File(columns) if usize::from(column) < count => Ok((columns, count)),
            _ => Err(MetaError::NoColumn { ino, column }),
        }
    }

    fn add_extent(
        &mut self,
        ino: u64,
        column: u16,
        object_offset: u64,
        device_offset: u64,
        len: u64,
    ) -> Result<(), MetaError> {
        let (columns, count) = self.columns_mut(ino, column)?;
        let map = columns.get_mut(column, count);
        let overlaps = map
            .pieces(object_offset, len)
            .iter()
            .any(|p| matches!(p, extents::Piece::Mapped(_)));
        let result = if overlaps {
            Err(MetaError::Overlap {
                ino,
                column,
                object_offset,
                len,
            })
        } else {
            map.insert(Extent {
                object_offset,
                device_offset,
                len,
            });
            Ok(())
        };
        columns.shrink();
        result
    }

    fn truncate_extents(
        &mut self,
        ino: u64,
        column: u16,
        object_offset: u64,
    ) -> Result<Freed, MetaError> {
        let device = self.device_of(ino, column)?;
        let (columns, count) = self.columns_mut(ino, column)?;
        let freed = columns.get_mut(column, count).truncate(object_offset);
        columns.shrink();
        Ok(freed
            .into_iter()
            .map(|e| (device, e.device_offset, e.len))
            .collect())
    }

    fn remove_extents(
        &mut self,
        ino: u64,
        column: u16,
        object_offset: u64,
        len: u64,
    ) -> Result<Freed, MetaError> {
        let device = self.device_of(ino, column)?;
        let (columns, count) = self.columns_mut(ino, column)?;
        let freed = columns.get_mut(column, count).remove(object_offset, len);
        columns.shrink();
        Ok(freed
            .into_iter()
            .map(|e| (device, e.device_offset, e.len))
            .collect())
    }

    /// The device index that column `column` of `ino` lives on.
    pub fn device_of(&self, ino: u64, column: u16) -> Result<u16, MetaError> {
        self.get(ino)
            .ok_or(MetaError::NoInode { ino })?
            .layout()
            .and_then(|l| l.devices.get(usize::from(column)).copied())
            .ok_or(MetaError::NoColumn { ino, column })
    }

    /// Inodes that no directory entry reaches (crash leftovers of unlinked open files).
    pub fn orphans(&self) -> Vec<u64> {
        let mut orphans: Vec<u64> = self
            .iter()
            .filter(|i| i.ino != ROOT && i.nlink == 0)
            .map(|i| i.ino)
            .collect();
        orphans.sort_unstable();
        orphans
    }

    /// Records that rebuild this metadata from nothing: inodes, then links (parents before
    /// children need no order: all inodes exist first), extents and xattrs.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        self.each_record(|r| out.push(r));
        out
    }

    /// The records of [`Metadata::snapshot`], in the same order, one at a time: they can be
    /// encoded as they come instead of all held (at a million files the whole list is some
    /// 1 GB; the metadata itself some 200 MB).
    pub fn each_record(&self, mut f: impl FnMut(Record)) {
        let mut inodes: Vec<&Inode> = self.iter().collect();
        inodes.sort_unstable_by_key(|i| i.ino);
        for inode in &inodes {
            f(Record::Inode(inode.record()));
        }
        for inode in inodes {
            each_held_record(inode, true, &mut f);
        }
    }
}

/// The records of what `inode` holds, after its inode record: its directory entries (if
/// `entries`), extents and xattrs.
pub(crate) fn held_records(inode: &Inode, entries: bool, out: &mut Vec<Record>) {
    each_held_record(inode, entries, |r| out.push(r));
}

/// The link records of a directory's entries, in name order.
fn each_entry_record(dir: &Inode, mut f: impl FnMut(Record)) {
    for (name, &child) in dir.entries() {
        f(Record::Link {
            parent: dir.ino,
            name: name.to_vec(),
            ino: child,
        });
    }
}

/// The records of [`held_records`], one at a time.
fn each_held_record(inode: &Inode, entries: bool, mut f: impl FnMut(Record)) {
    let ino = inode.ino;
    if entries {
        each_entry_record(inode, &mut f);
    }
    for (column, map) in inode.extents().iter().enumerate() {
        for e in map.iter() {
            f(Record::Extent {
                ino,
                column: column as u16,
                object_offset: e.object_offset,
                device_offset: e.device_offset,
                len: e.len,
            });
        }
    }
    for (name, value) in inode.xattrs() {
        f(Record::SetXattr {
            ino,
            name: name.clone(),
            value: value.clone(),
        });
    }
}

/// Every device range an inode stores.
pub fn freed_all(inode: &Inode) -> Freed {
    let devices = inode.layout().map(|l| l.devices.as_slice()).unwrap_or(&[]);
    inode
        .extents()
        .iter()
        .zip(devices)
        .flat_map(|(map, &dev)| map.iter().map(move |e| (dev, e.device_offset, e.len)))
        .collect()
}

/// A new inode record with the given identity and times set to `now`.
pub fn new_inode(
    ino: u64,
    kind: InodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    now: Timestamp,
    layout: Option<LayoutRecord>,
) -> InodeRecord {
    InodeRecord {
        ino,
        kind,
        mode: mode & 0o7777,
        uid,
        gid,
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        layout,
        symlink_target: Vec::new(),
        rdev: 0,
        prealloc: false,
    }
}

#[cfg(test)]
mod tests;
