//! The filesystem's metadata in memory: inodes, directories, layouts, extents, xattrs.
//!
//! Pure logic, no I/O. Every change is a metadata [`Record`]: the filesystem builds records,
//! applies them here, and appends the same records to the log, so replaying the log at mount
//! rebuilds exactly the state that was live.

pub mod alloc;
pub mod dir;
pub mod extents;
pub mod pieces;

use std::collections::{BTreeMap, HashMap};

use stripefs_layout::ondisk::{InodeKind, InodeRecord, LayoutRecord, Record, Timestamp};

use dir::DirEntries;
use extents::{Extent, ExtentMap};

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
}

/// One inode and everything hanging off it.
#[derive(Clone, Debug)]
pub struct Inode {
    pub record: InodeRecord,
    /// Directory entries (directories only).
    pub entries: DirEntries,
    /// Per column of the layout: where the column object is stored (files only).
    pub extents: Vec<ExtentMap>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Hard links (directories: "." and ".." of subdirectories count too).
    pub nlink: u32,
    /// The directory holding this one (directories only; the root is its own parent).
    pub parent: u64,
}

impl Inode {
    fn new(record: InodeRecord) -> Self {
        let columns = record.layout.as_ref().map_or(0, |l| l.devices.len());
        let is_file = record.kind == InodeKind::File;
        let nlink = match (record.kind, record.ino) {
            (InodeKind::Dir, ROOT) => 2,
            (InodeKind::Dir, _) => 1,
            _ => 0,
        };
        Inode {
            parent: record.ino,
            entries: DirEntries::default(),
            extents: if is_file {
                vec![ExtentMap::default(); columns]
            } else {
                Vec::new()
            },
            xattrs: BTreeMap::new(),
            nlink,
            record,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.record.kind == InodeKind::Dir
    }
}

/// Device ranges a record released: (device index, device offset, len).
pub type Freed = Vec<(u16, u64, u64)>;

/// Every inode, by number.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    inodes: HashMap<u64, Inode>,
    max_ino: u64,
}

impl Metadata {
    /// The inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    /// A number no inode has ever had in this metadata.
    pub fn next_ino(&self) -> u64 {
        self.max_ino + 1
    }

    /// Number of inodes.
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    /// Whether there are no inodes at all (not even the root).
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }

    /// Every inode.
    pub fn iter(&self) -> impl Iterator<Item = &Inode> {
        self.inodes.values()
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
                    .insert(name.clone(), value.clone());
                Ok(Vec::new())
            }
            Record::RemoveXattr { ino, name } => {
                self.inode_mut(*ino)?.xattrs.remove(name);
                Ok(Vec::new())
            }
        }
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, MetaError> {
        self.inodes.get_mut(&ino).ok_or(MetaError::NoInode { ino })
    }

    fn put_inode(&mut self, r: &InodeRecord) -> Result<Freed, MetaError> {
        self.max_ino = self.max_ino.max(r.ino);
        match self.inodes.get_mut(&r.ino) {
            Some(existing) => {
                let columns = r.layout.as_ref().map_or(0, |l| l.devices.len());
                if existing.record.kind == InodeKind::File && existing.extents.len() != columns {
                    existing.extents = vec![ExtentMap::default(); columns];
                }
                existing.record = r.clone();
            }
            None => {
                self.inodes.insert(r.ino, Inode::new(r.clone()));
            }
        }
        Ok(Vec::new())
    }

    fn free_inode(&mut self, ino: u64) -> Result<Freed, MetaError> {
        let inode = self.inodes.remove(&ino).ok_or(MetaError::NoInode { ino })?;
        Ok(freed_all(&inode))
    }

    fn link(&mut self, parent: u64, name: &[u8], ino: u64) -> Result<(), MetaError> {
        let child_is_dir = self
            .inodes
            .get(&ino)
            .ok_or(MetaError::NoInode { ino })?
            .is_dir();
        let dir = self.inode_mut(parent)?;
        if !dir.is_dir() {
            return Err(MetaError::NotDir { ino: parent });
        }
        if !dir.entries.insert(name.to_vec(), ino) {
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
        if child_is_dir {
            child.parent = parent;
        }
        Ok(())
    }

    fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<(), MetaError> {
        let dir = self.inode_mut(parent)?;
        let ino = dir.entries.remove(name).ok_or_else(|| MetaError::NoEntry {
            parent,
            name: String::from_utf8_lossy(name).into_owned(),
        })?;
        let child = self.inode_mut(ino)?;
        child.nlink = child.nlink.saturating_sub(1);
        if child.is_dir()
            && let Some(dir) = self.inodes.get_mut(&parent)
        {
            dir.nlink = dir.nlink.saturating_sub(1);
        }
        Ok(())
    }

    fn column_mut(&mut self, ino: u64, column: u16) -> Result<&mut ExtentMap, MetaError> {
        self.inode_mut(ino)?
            .extents
            .get_mut(usize::from(column))
            .ok_or(MetaError::NoColumn { ino, column })
    }

    fn add_extent(
        &mut self,
        ino: u64,
        column: u16,
        object_offset: u64,
        device_offset: u64,
        len: u64,
    ) -> Result<(), MetaError> {
        let map = self.column_mut(ino, column)?;
        let overlaps = map
            .pieces(object_offset, len)
            .iter()
            .any(|p| matches!(p, extents::Piece::Mapped(_)));
        if overlaps {
            return Err(MetaError::Overlap {
                ino,
                column,
                object_offset,
                len,
            });
        }
        map.insert(Extent {
            object_offset,
            device_offset,
            len,
        });
        Ok(())
    }

    fn truncate_extents(
        &mut self,
        ino: u64,
        column: u16,
        object_offset: u64,
    ) -> Result<Freed, MetaError> {
        let device = self.device_of(ino, column)?;
        let freed = self.column_mut(ino, column)?.truncate(object_offset);
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
        let freed = self.column_mut(ino, column)?.remove(object_offset, len);
        Ok(freed
            .into_iter()
            .map(|e| (device, e.device_offset, e.len))
            .collect())
    }

    /// The device index that column `column` of `ino` lives on.
    pub fn device_of(&self, ino: u64, column: u16) -> Result<u16, MetaError> {
        self.inodes
            .get(&ino)
            .ok_or(MetaError::NoInode { ino })?
            .record
            .layout
            .as_ref()
            .and_then(|l| l.devices.get(usize::from(column)).copied())
            .ok_or(MetaError::NoColumn { ino, column })
    }

    /// Inodes that no directory entry reaches (crash leftovers of unlinked open files).
    pub fn orphans(&self) -> Vec<u64> {
        let mut orphans: Vec<u64> = self
            .inodes
            .values()
            .filter(|i| i.record.ino != ROOT && i.nlink == 0)
            .map(|i| i.record.ino)
            .collect();
        orphans.sort_unstable();
        orphans
    }

    /// Records that rebuild this metadata from nothing: inodes, then links (parents before
    /// children need no order: all inodes exist first), extents and xattrs.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        let mut out: Vec<Record> = inos
            .iter()
            .filter_map(|i| self.inodes.get(i))
            .map(|i| Record::Inode(i.record.clone()))
            .collect();
        for inode in inos.iter().filter_map(|i| self.inodes.get(i)) {
            held_records(inode, true, &mut out);
        }
        out
    }
}

/// The records of what `inode` holds, after its inode record: its directory entries (if
/// `entries`), extents and xattrs.
pub(crate) fn held_records(inode: &Inode, entries: bool, out: &mut Vec<Record>) {
    let ino = inode.record.ino;
    if entries {
        entry_records(inode, out);
    }
    for (column, map) in inode.extents.iter().enumerate() {
        for e in map.iter() {
            out.push(Record::Extent {
                ino,
                column: column as u16,
                object_offset: e.object_offset,
                device_offset: e.device_offset,
                len: e.len,
            });
        }
    }
    for (name, value) in &inode.xattrs {
        out.push(Record::SetXattr {
            ino,
            name: name.clone(),
            value: value.clone(),
        });
    }
}

/// The link records of a directory's entries.
pub(crate) fn entry_records(dir: &Inode, out: &mut Vec<Record>) {
    for (name, &child) in &dir.entries {
        out.push(Record::Link {
            parent: dir.record.ino,
            name: name.clone(),
            ino: child,
        });
    }
}

/// Every device range an inode stores.
pub fn freed_all(inode: &Inode) -> Freed {
    let devices = inode
        .record
        .layout
        .as_ref()
        .map(|l| l.devices.as_slice())
        .unwrap_or(&[]);
    inode
        .extents
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
