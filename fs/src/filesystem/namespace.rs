//! The namespace: lookups and attributes, creating, linking, unlinking and renaming names,
//! and listing directories. Each operation is one metadata change.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use stripefs_layout::ondisk::{InodeKind, InodeRecord, LayoutRecord, Record, Timestamp};

use super::error::FsError;
use super::format::BLOCK_SIZE;
use super::{
    Attr, Caller, DirEntry, FileType, Filesystem, KillSuidgid, NAME_MAX, RenameFlags, SetAttr,
    format, now, to_system_time, to_timestamp,
};
use crate::meta::{self, Inode, Metadata};

/// What a new inode holds besides its identity.
pub(super) enum Extra {
    None,
    /// A symlink's target.
    Target(Vec<u8>),
    /// A device node's device number (ignored for other kinds).
    Rdev(u32),
}

impl Filesystem {
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

    pub(super) fn attr_of(&self, meta: &Metadata, ino: u64) -> Result<Attr, FsError> {
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        Ok(attr(inode))
    }

    /// Changes mode, owner, size or times, as one change.
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Attr, FsError> {
        self.setattr_killing(ino, set, None)
    }

    /// [`setattr`](Self::setattr) that also clears the set-user-ID and set-group-ID bits of
    /// a non-directory as `kill` says (`chown`, or a truncate by a caller without
    /// `CAP_FSETID`), in the same change. An explicit `mode` wins.
    pub fn setattr_killing(
        &self,
        ino: u64,
        set: &SetAttr,
        kill: Option<KillSuidgid>,
    ) -> Result<Attr, FsError> {
        let edit = |r: &mut InodeRecord| {
            if let Some(mode) = set.mode {
                r.mode = mode & 0o7777;
            } else if let Some(kill) = kill
                && r.kind != InodeKind::Dir
            {
                r.mode = kill.apply(r.mode, r.gid);
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
        };
        match set.size {
            Some(size) => self.truncate(ino, size, edit)?,
            None => self.change_with_inode(&mut self.meta.write(), ino, Vec::new(), edit)?,
        }
        self.attr_of(&self.meta.read(), ino)
    }

    /// Clears the set-user-ID and set-group-ID bits of `ino` as `kill` says (a write by a
    /// caller without `CAP_FSETID`), as one change; nothing when none goes. The kernel keeps
    /// the mode it cached (a write tells it of new times and size only), so a cleared bit is
    /// followed by the invalidator.
    pub fn kill_suidgid(&self, ino: u64, kill: KillSuidgid) -> Result<(), FsError> {
        let set = {
            let meta = self.meta.read();
            let inode = meta.get(ino).ok_or(FsError::NotFound)?;
            kill.apply(inode.mode(), inode.gid()) != inode.mode()
        };
        if !set {
            return Ok(());
        }
        self.change_with_inode(&mut self.meta.write(), ino, Vec::new(), |r| {
            r.mode = kill.apply(r.mode, r.gid);
            r.ctime = now();
        })?;
        self.invalidate(ino);
        Ok(())
    }

    /// Creates a regular file.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        who: Caller,
    ) -> Result<Attr, FsError> {
        self.make(parent, name, InodeKind::File, mode, who, Extra::None)
    }

    /// Creates a directory.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        who: Caller,
    ) -> Result<Attr, FsError> {
        self.make(parent, name, InodeKind::Dir, mode, who, Extra::None)
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
            Extra::Target(target.to_vec()),
        )
    }

    /// Creates a node of any type but a directory or symlink: a regular file, a FIFO, a
    /// socket, or a character or block device with device number `rdev` (ignored for the
    /// others). Special files keep no data: the kernel serves them (see `open_file`).
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
        rdev: u32,
        who: Caller,
    ) -> Result<Attr, FsError> {
        let rdev = match kind {
            FileType::File | FileType::Fifo | FileType::Socket => 0,
            FileType::CharDevice | FileType::BlockDevice => rdev,
            FileType::Dir | FileType::Symlink => {
                return Err(FsError::invalid(
                    "mknod makes files, FIFOs, sockets and device nodes",
                ));
            }
        };
        self.make(
            parent,
            name,
            kind.inode_kind(),
            mode,
            who,
            Extra::Rdev(rdev),
        )
    }

    pub(super) fn make(
        &self,
        parent: u64,
        name: &OsStr,
        kind: InodeKind,
        mode: u32,
        who: Caller,
        extra: Extra,
    ) -> Result<Attr, FsError> {
        let name = check_name(name.as_bytes())?;
        let mut meta = self.meta.write();
        let dir = directory(&meta, parent)?;
        if dir.entries().contains_key(name) {
            return Err(FsError::Exists);
        }
        let layout = match kind {
            InodeKind::File => Some(self.layout_for_new_file(dir)),
            InodeKind::Dir => dir.layout().cloned(),
            InodeKind::Symlink
            | InodeKind::Fifo
            | InodeKind::Socket
            | InodeKind::CharDevice
            | InodeKind::BlockDevice => None,
        };
        let ino = meta.next_ino();
        let t = now();
        let mut record = meta::new_inode(ino, kind, mode, who.uid, who.gid, t, layout);
        match extra {
            Extra::None => {}
            Extra::Target(target) => {
                record.size = target.len() as u64;
                record.symlink_target = target;
            }
            Extra::Rdev(rdev) if kind.is_device() => record.rdev = rdev,
            Extra::Rdev(_) => {}
        }
        let mut parent_record = dir.record();
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

    pub(super) fn layout_for_new_file(&self, dir: &Inode) -> LayoutRecord {
        if let Some(l) = dir.layout() {
            return l.clone();
        }
        format::default_layout(self.superblock(), self.first_device_for_new_file())
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        if inode.kind() != InodeKind::Symlink {
            return Err(FsError::invalid("not a symbolic link"));
        }
        Ok(inode.symlink_target().to_vec())
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
        let mut record = inode.record();
        let dir = directory(&meta, parent)?;
        if dir.entries().contains_key(name) {
            return Err(FsError::Exists);
        }
        let t = now();
        record.ctime = t;
        let mut parent_record = dir.record();
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

    pub(super) fn remove(&self, parent: u64, name: &[u8], want_dir: bool) -> Result<(), FsError> {
        let mut meta = self.meta.write();
        let ino = child(&meta, parent, name)?;
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        match (want_dir, inode.is_dir()) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if !inode.entries().is_empty() => return Err(FsError::NotEmpty),
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

    pub(super) fn touch_parent(
        &self,
        meta: &Metadata,
        parent: u64,
        t: Timestamp,
    ) -> Option<Record> {
        let mut r = meta.get(parent)?.record();
        r.mtime = t;
        r.ctime = t;
        Some(Record::Inode(r))
    }

    /// Records for losing one name of `ino`: its ctime, or its end.
    pub(super) fn drop_link(&self, meta: &Metadata, ino: u64, t: Timestamp) -> Vec<Record> {
        let Some(inode) = meta.get(ino) else {
            return Vec::new();
        };
        let last = if inode.is_dir() {
            true
        } else {
            inode.nlink() <= 1
        };
        if last && !self.is_open(ino) {
            return vec![Record::FreeInode { ino }];
        }
        let mut r = inode.record();
        r.ctime = t;
        vec![Record::Inode(r)]
    }

    /// After an inode may have gone: revoke its registrations.
    pub(super) fn after_free(&self, meta: &Metadata, ino: u64) {
        if meta.get(ino).is_some() {
            return;
        }
        self.data_locks.remove(&ino);
        self.opened.forget(ino);
        self.registrations.retain(|_, (i, mapping)| {
            if *i == ino {
                mapping.revoke();
                false
            } else {
                true
            }
        });
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a compatible target (or,
    /// with `exchange`, swapping the two: see `exchange`).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), FsError> {
        if flags.exchange {
            return self.rename_exchange(parent, name, new_parent, new_name);
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
            .and_then(|d| d.entries().get(new_name).copied());
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
                (true, true) if !target_inode.entries().is_empty() => {
                    return Err(FsError::NotEmpty);
                }
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
        if let Some(mut r) = meta.get(ino).map(|i| i.record()) {
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
        let mut out = Vec::new();
        self.readdir_with(ino, offset, |e, _| {
            out.push(e.clone());
            false
        })?;
        Ok(out)
    }

    /// Calls `add` with the entries of directory `ino` from position `offset` on ("." and
    /// ".." first), each with its attributes, until `add` returns true (a full reply).
    /// Positions are stable (see `meta::dir`): a stream continued from an entry's `next`
    /// misses nothing that was there and is still there, whatever was removed meanwhile,
    /// and a call costs what it returns, not the size of the directory.
    pub fn readdir_with(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, &Attr) -> bool,
    ) -> Result<(), FsError> {
        let meta = self.meta.read();
        let dir = directory(&meta, ino)?;
        let dots = [(0, &b"."[..], ino), (1, &b".."[..], dir.parent())];
        let dots = dots.into_iter().filter(|&(at, _, _)| at >= offset);
        for (at, name, child) in dots.chain(dir.entries().from_position(offset)) {
            // Every entry names an inode (apply refuses a link to a missing one).
            let Some(inode) = meta.get(child) else {
                continue;
            };
            let a = attr(inode);
            let entry = DirEntry {
                ino: child,
                next: at + 1,
                kind: a.kind,
                name: name.to_vec(),
            };
            if add(&entry, &a) {
                break;
            }
        }
        Ok(())
    }
}

pub(super) fn check_name(name: &[u8]) -> Result<&[u8], FsError> {
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

pub(super) fn directory(meta: &Metadata, ino: u64) -> Result<&Inode, FsError> {
    let inode = meta.get(ino).ok_or(FsError::NotFound)?;
    if !inode.is_dir() {
        return Err(FsError::NotDir);
    }
    Ok(inode)
}

pub(super) fn child(meta: &Metadata, parent: u64, name: &[u8]) -> Result<u64, FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong {
            len: name.len(),
            max: NAME_MAX,
        });
    }
    directory(meta, parent)?
        .entries()
        .get(name)
        .copied()
        .ok_or(FsError::NotFound)
}

/// Whether `ancestor` is `ino` or one of its parents.
pub(super) fn is_ancestor(meta: &Metadata, ancestor: u64, mut ino: u64) -> bool {
    for _ in 0..4096 {
        if ino == ancestor {
            return true;
        }
        match meta.get(ino) {
            Some(i) if i.parent() != ino => ino = i.parent(),
            _ => return false,
        }
    }
    true
}

pub(super) fn file_type(kind: InodeKind) -> FileType {
    match kind {
        InodeKind::File => FileType::File,
        InodeKind::Dir => FileType::Dir,
        InodeKind::Symlink => FileType::Symlink,
        InodeKind::Fifo => FileType::Fifo,
        InodeKind::Socket => FileType::Socket,
        InodeKind::CharDevice => FileType::CharDevice,
        InodeKind::BlockDevice => FileType::BlockDevice,
    }
}

pub(super) fn attr(inode: &Inode) -> Attr {
    let stored: u64 = inode.extents().iter().map(|m| m.stored_bytes()).sum();
    Attr {
        ino: inode.ino(),
        kind: file_type(inode.kind()),
        size: inode.size(),
        blocks: stored / 512,
        mode: inode.mode(),
        nlink: inode.nlink(),
        uid: inode.uid(),
        gid: inode.gid(),
        atime: to_system_time(inode.atime()),
        mtime: to_system_time(inode.mtime()),
        ctime: to_system_time(inode.ctime()),
        crtime: to_system_time(inode.crtime()),
        blksize: BLOCK_SIZE as u32,
        rdev: inode.rdev(),
    }
}
