//! The FUSE front end: a thin adapter from `fuser` requests to [`Filesystem`] calls.
//!
//! Each handler calls the filesystem and replies with the result; an error becomes an errno
//! through [`FsError::errno`] and nowhere else. Policy that belongs to FUSE lives here and
//! only here:
//!
//! - **Files are served with `FOPEN_DIRECT_IO`**: no page cache, every read and write is a
//!   request to this process. Registered writes by other processes change files behind the
//!   kernel's back; with the page cache off, a read through the mount always returns what is
//!   on the devices, and the measured FUSE direct-I/O path is faster here than the cached
//!   one.
//! - **The kernel caches entries, attributes and directory listings for long** ([`TTL`],
//!   directory listings as said below; names that do not exist too): this process is
//!   the only writer of its namespace. Every change made through the mount is one the
//!   kernel makes itself and so knows of (it drops the attributes a write, link, unlink or
//!   rename touches, and a directory's cached listing when the directory changes). The one
//!   change made outside FUSE requests is a registered write through the control endpoint
//!   (size, blocks, times): the filesystem's invalidator hook has a dedicated thread send
//!   [`Notifier::inval_inode`] and waits for it (see [`Invalidations`]), so that `stat` sees
//!   the new size and `mmap`ed pages are dropped by the time the write returns. Without
//!   this, every `stat`, `find` and `rm -rf` pays a round trip to this process per entry
//!   once a short TTL has passed.
//! - **Permissions are checked by the kernel** (`default_permissions`): `access` and the
//!   mode checks of every operation never reach this adapter.
//! - **Directories are not opened**: `opendir` is answered `ENOSYS`, which tells the kernel
//!   never to send `OPENDIR` or `RELEASEDIR` again (one round trip less for each directory
//!   listed, two for `rm -rf`); it then caches every listing (`FOPEN_CACHE_DIR`) until it
//!   changes the directory. `readdir` continues from the position the kernel gives back,
//!   and positions are stable (`meta::dir`): entries removed meanwhile do not shift the
//!   stream (`rm -rf` of a large directory removes every entry), and each call costs what
//!   it returns, so a directory of thousands of entries is read in linear time.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, Notifier, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::filesystem::{
    Attr, Caller, CopyRange, Fallocate, FileType, Filesystem, FsError, KillSuidgid, RenameFlags,
    Seek, SetAttr, XattrFlags,
};

/// How long the kernel may cache attributes and directory entries (and that a name does not
/// exist): a day, as libfuse's `cache=always`. Safe because the kernel learns of every change
/// (see the module docs).
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// `st_blksize` shown to programs, which size their buffers by it (`cmp`, stdio, `cp`).
/// Without a page cache every `read` is a round trip to this process: 4 KiB reads run at a
/// few percent of 1 MiB ones. 1 MiB is the largest FUSE request the kernel sends by default.
pub const PREFERRED_IO_SIZE: u32 = 1 << 20;

/// The FUSE front end of a [`Filesystem`].
pub struct Fuse {
    fs: Arc<Filesystem>,
}

impl Fuse {
    pub fn new(fs: Arc<Filesystem>) -> Self {
        Fuse { fs }
    }

    /// The owner of a new inode in `parent`: the caller, or the directory's group when the
    /// directory is set-group-ID (as on ext4). The second value is `S_ISGID` when a new
    /// directory inherits that bit.
    fn caller(&self, req: &Request, parent: u64) -> (Caller, u32) {
        let mut who = Caller {
            uid: req.uid(),
            gid: req.gid(),
        };
        match self.fs.getattr(parent) {
            Ok(dir) if dir.mode & libc::S_ISGID != 0 => {
                who.gid = dir.gid;
                (who, libc::S_ISGID)
            }
            _ => (who, 0),
        }
    }
}

/// The errno for `e`: the only place where a filesystem error becomes a FUSE reply code.
/// Errors that a caller cannot explain from its own request (device failures, damaged
/// metadata) are also printed, since the errno alone loses the device and the range.
fn errno(op: &str, ino: u64, e: &FsError) -> Errno {
    let code = e.errno();
    let expected = matches!(e, FsError::PastEnd { .. });
    if matches!(code, libc::EIO | libc::EUCLEAN | libc::ENXIO | libc::ENODEV) && !expected {
        eprintln!("stripefs: {op} of inode {ino}: {e}");
    }
    Errno::from_i32(code)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: kind(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize.max(PREFERRED_IO_SIZE),
        flags: 0,
    }
}

/// The entry of a name that does not exist: inode 0 (FUSE's negative entry).
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn kind(k: FileType) -> fuser::FileType {
    match k {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Dir => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Low bits cut from the longest `copy_file_range` answered at once (a page).
const BLOCK_MASK: u64 = 4095;

/// Files bypass the page cache (see the module docs).
const FILE_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

/// Capabilities asked of the kernel when it offers them: READDIRPLUS (one round trip for
/// `ls -l`), parallel lookups in one directory, asynchronous direct I/O (a large read or
/// write is cut into requests served in parallel), `mmap` of direct-I/O files, cached
/// symlink targets (a target never changes: a new target is a new inode), and clearing the
/// set-user-ID and set-group-ID bits here (`FUSE_HANDLE_KILLPRIV_V2`, see `setattr`
/// and `write` below): without it the kernel asks for the attributes before every
/// `chown` to compute the bits itself, a round trip per file of an untar.
const WANTED: [InitFlags; 7] = [
    InitFlags::FUSE_DO_READDIRPLUS,
    InitFlags::FUSE_READDIRPLUS_AUTO,
    InitFlags::FUSE_PARALLEL_DIROPS,
    InitFlags::FUSE_ASYNC_DIO,
    InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
    InitFlags::FUSE_CACHE_SYMLINKS,
    InitFlags::FUSE_HANDLE_KILLPRIV_V2,
];

impl fuser::Filesystem for Fuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in WANTED {
            if config.capabilities().contains(flag) {
                // Offered by the kernel, so accepted.
                let _ = config.add_capabilities(flag);
            }
        }
        // Room for the parallel requests of asynchronous direct I/O.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    /// A name that does not exist is answered as a negative entry (inode 0) valid for
    /// [`TTL`]: the kernel then answers the next lookup of it (a search along `PATH`, a
    /// build probing for headers) by itself, until it creates the name.
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(FsError::NotFound) => reply.entry(&TTL, &negative_entry(), Generation(0)),
            Err(e) => reply.error(errno("lookup", parent.0, &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno("getattr", ino.0, &e)),
        }
    }

    /// Under `FUSE_HANDLE_KILLPRIV_V2` the kernel leaves clearing the set-user-ID and
    /// set-group-ID bits to this process: on `chown` of a non-directory always (as the kernel
    /// does), and on a truncate by a caller without `CAP_FSETID`. The kernel says so for a
    /// truncate with `FATTR_KILL_SUIDGID`, which fuser 0.18 does not pass on; a caller
    /// other than root stands for "without `CAP_FSETID`".
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        let chown = set.uid.is_some() || set.gid.is_some();
        let kill = (chown || (set.size.is_some() && req.uid() != 0)).then(|| without_fsetid(req));
        match self.fs.setattr_killing(ino.0, &set, kill) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno("setattr", ino.0, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", ino.0, &e)),
        }
    }

    /// Regular files, FIFOs, sockets and character and block device nodes (with `rdev`),
    /// owned by the caller as `create` makes them. The kernel serves opens of the special
    /// ones itself (the pipe, the socket, the driver); stripefs only keeps the inode.
    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            0 => Some(FileType::File),
            _ => FileType::from_mode(mode)
                .filter(|k| !matches!(k, FileType::Dir | FileType::Symlink)),
        };
        let Some(kind) = kind else {
            let e = FsError::invalid(format!("mknod of file type {:#o}", mode & libc::S_IFMT));
            reply.error(errno("mknod", parent.0, &e));
            return;
        };
        let (who, _) = self.caller(req, parent.0);
        match self.fs.mknod(parent.0, name, kind, mode, rdev, who) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mknod", parent.0, &e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let (who, setgid) = self.caller(req, parent.0);
        match self.fs.mkdir(parent.0, name, mode | setgid, who) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mkdir", parent.0, &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", parent.0, &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", parent.0, &e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (who, _) = self.caller(req, parent.0);
        match self
            .fs
            .symlink(parent.0, link_name, target.as_os_str().as_bytes(), who)
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("symlink", parent.0, &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(fuser::RenameFlags::RENAME_WHITEOUT) {
            let e = FsError::NotSupported {
                what: "RENAME_WHITEOUT",
            };
            reply.error(errno("rename", parent.0, &e));
            return;
        }
        let flags = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        match self.fs.rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", parent.0, &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.fs.link(ino.0, newparent.0, newname) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("link", ino.0, &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open_file(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FILE_FLAGS),
            Err(e) => reply.error(errno("open", ino.0, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno("read", ino.0, &e)),
        }
    }

    /// A write by a caller without `CAP_FSETID` comes with `FUSE_WRITE_KILL_SUIDGID`
    /// (`FUSE_HANDLE_KILLPRIV_V2`): the set-user-ID and set-group-ID bits are cleared here.
    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let written = self.fs.write(ino.0, offset, data).and_then(|n| {
            if kill {
                // The kernel sets the flag only for a caller without CAP_FSETID.
                let kill = KillSuidgid {
                    caller_gid: Some(req.gid()),
                };
                self.fs.kill_suidgid(ino.0, kill)?;
            }
            Ok(n)
        });
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", ino.0, &e)),
        }
    }

    /// Nothing to do on `close`: writes reach the devices before they are answered (no page
    /// cache), and metadata is committed by `fsync`, the periodic committer and unmount,
    /// as on ext4. Answered `ENOSYS`, which tells the kernel never to send `FLUSH` again:
    /// a `close` then costs no round trip to this process.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.release_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("release", ino.0, &e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = if datasync {
            self.fs.fdatasync(ino.0)
        } else {
            self.fs.fsync(ino.0)
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", ino.0, &e)),
        }
    }

    /// `ENOSYS` for a directory: directories need no handle (positions are stable), and
    /// the kernel then stops sending `OPENDIR` and `RELEASEDIR` (see the module docs).
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind == FileType::Dir => reply.error(Errno::ENOSYS),
            Ok(_) => reply.error(errno("opendir", ino.0, &FsError::NotDir)),
            Err(e) => reply.error(errno("opendir", ino.0, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let filled = self.fs.readdir_with(ino.0, offset, |e, _| {
            reply.add(
                INodeNo(e.ino),
                e.next,
                kind(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match filled {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", ino.0, &e)),
        }
    }

    /// Entries with their attributes, taken under one lock of the metadata.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let filled = self.fs.readdir_with(ino.0, offset, |e, a| {
            reply.add(
                INodeNo(e.ino),
                e.next,
                OsStr::from_bytes(&e.name),
                &TTL,
                &file_attr(a),
                Generation(0),
            )
        });
        match filled {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdirplus", ino.0, &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsyncdir", ino.0, &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let flags = XattrFlags {
            create: flags & libc::XATTR_CREATE != 0,
            replace: flags & libc::XATTR_REPLACE != 0,
        };
        let set = no_system_xattr(name).and_then(|()| self.fs.setxattr(ino.0, name, value, flags));
        match set {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("setxattr", ino.0, &e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match no_system_xattr(name).and_then(|()| self.fs.getxattr(ino.0, name)) {
            Ok(value) => reply_xattr(reply, size, &value),
            Err(e) => reply.error(errno("getxattr", ino.0, &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut list = Vec::new();
                for n in names {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                reply_xattr(reply, size, &list);
            }
            Err(e) => reply.error(errno("listxattr", ino.0, &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match no_system_xattr(name).and_then(|()| self.fs.removexattr(ino.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("removexattr", ino.0, &e)),
        }
    }

    /// Not called under `default_permissions` (the kernel checks the mode bits); answers
    /// for the inode's existence otherwise.
    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno("access", ino.0, &e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result =
            Fallocate::from_mode(mode).and_then(|op| self.fs.fallocate(ino.0, offset, length, op));
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fallocate", ino.0, &e)),
        }
    }

    /// Only `SEEK_DATA` and `SEEK_HOLE` reach the daemon; the kernel does the others.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let whence = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            _ => {
                let e = FsError::invalid(format!("lseek whence {whence}"));
                return reply.error(errno("lseek", ino.0, &e));
            }
        };
        // A negative offset is before any data: ENXIO, as on ext4.
        let offset = u64::try_from(offset).unwrap_or(u64::MAX);
        match self.fs.seek(ino.0, offset, whence) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(errno("lseek", ino.0, &e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if !flags.is_empty() {
            let e = FsError::invalid("copy_file_range flags must be 0");
            return reply.error(errno("copy_file_range", ino_out.0, &e));
        }
        let copy = CopyRange {
            src: ino_in.0,
            src_offset: offset_in,
            dst: ino_out.0,
            dst_offset: offset_out,
            // The reply counts bytes in 32 bits; the caller loops for the rest.
            len: len.min(u64::from(u32::MAX) & !(BLOCK_MASK)),
        };
        match self.fs.copy_file_range(copy) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno("copy_file_range", ino_out.0, &e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (who, _) = self.caller(req, parent.0);
        let created = match self.fs.create(parent.0, name, mode, who) {
            Err(FsError::Exists) => return reply.error(lost_create(flags)),
            other => other,
        };
        let opened = created.and_then(|a| self.fs.open_file(a.ino));
        match opened {
            Ok(a) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(0),
                FILE_FLAGS,
            ),
            Err(e) => reply.error(errno("create", parent.0, &e)),
        }
    }
}

/// What a change by the caller of `req` clears of the set-user-ID and set-group-ID bits.
/// Whether it holds `CAP_FSETID` is not in the request: a caller other than root stands
/// for one without it.
fn without_fsetid(req: &Request) -> KillSuidgid {
    KillSuidgid {
        caller_gid: (req.uid() != 0).then(|| req.gid()),
    }
}

/// The answer to a `create` whose name appeared since the kernel's lookup (made by this
/// daemon for another mount or a registered-I/O client, say): not the file, which the
/// kernel would then take as created by this call, skipping its permission check and
/// `O_TRUNC`. `EEXIST` for `O_EXCL`; otherwise `ESTALE`, on which the kernel looks the name
/// up again (`do_filp_open` retries with `LOOKUP_REVAL`, which drops the negative dentry)
/// and opens the file it finds like any open: with its permission checks and `O_TRUNC`.
fn lost_create(flags: i32) -> Errno {
    Errno::from_i32(if flags & libc::O_EXCL != 0 {
        libc::EEXIST
    } else {
        libc::ESTALE
    })
}

/// Refuses the `system.` namespace. Without FUSE_POSIX_ACL the kernel passes
/// `system.posix_acl_access` through as a plain attribute; stored as one it would have no
/// effect, yet `cp -a` and `setfacl` would take it as applied (`cp -a` then skips its
/// `chmod`, and copies lose their group and other permission bits). Refused, they fall back
/// to the mode bits, which are all that stripefs keeps.
fn no_system_xattr(name: &OsStr) -> Result<(), FsError> {
    if name.as_bytes().starts_with(b"system.") {
        return Err(FsError::NotSupported {
            what: "system.* attributes (POSIX ACLs)",
        });
    }
    Ok(())
}

/// Replies to `getxattr`/`listxattr`: the size when asked for it (`size` 0), the value when
/// it fits, `ERANGE` when it does not.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    let Ok(len) = u32::try_from(value.len()) else {
        reply.error(Errno::E2BIG);
        return;
    };
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// Kernel cache invalidations, sent by a dedicated thread.
///
/// The filesystem calls its invalidator from whatever thread made the change (a registered
/// write). `inval_inode` writes to `/dev/fuse` and may wait for the kernel to drop pages that
/// a request in flight holds locked; sent from a request handler thread it could deadlock,
/// so it is never sent by the caller: the caller queues the inode for this thread, then waits
/// (at most [`INVALIDATION_WAIT`]) until it has been sent, so that when a registered write
/// returns, `stat` and `mmap`ed pages through the mount already show it. Inodes queued
/// while a notification is in flight are coalesced.
pub struct Invalidations {
    sender: Sender<(u64, SyncSender<()>)>,
}

/// The longest a caller of the hook waits for its invalidation to be sent.
pub const INVALIDATION_WAIT: Duration = Duration::from_secs(1);

impl Invalidations {
    /// Starts the notifier thread; it ends when every clone of the sender is dropped.
    pub fn start(notifier: Notifier) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stripefs inval".into())
            .spawn(move || notify_loop(&notifier, &receiver))?;
        Ok((Invalidations { sender }, thread))
    }

    /// The hook to give [`Filesystem::set_invalidator`].
    pub fn hook(&self) -> crate::filesystem::Invalidator {
        let sender = self.sender.clone();
        Box::new(move |ino| {
            let (done, sent) = std::sync::mpsc::sync_channel(1);
            // Fails only once the notifier thread has gone, after the mount has: nothing
            // is cached any more.
            if sender.send((ino, done)).is_ok() {
                let _ = sent.recv_timeout(INVALIDATION_WAIT);
            }
        })
    }
}

fn notify_loop(notifier: &Notifier, receiver: &Receiver<(u64, SyncSender<()>)>) {
    let mut inodes = HashSet::new();
    let mut waiting = Vec::new();
    while let Ok(first) = receiver.recv() {
        for (ino, done) in std::iter::once(first).chain(receiver.try_iter()) {
            inodes.insert(ino);
            waiting.push(done);
        }
        for ino in inodes.drain() {
            // ENOENT (not cached) is already ignored by fuser; after unmount the device is
            // gone and so is every cache.
            if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0)
                && e.raw_os_error() != Some(libc::ENODEV)
                && e.raw_os_error() != Some(libc::EBADF)
            {
                eprintln!("stripefs: invalidating the kernel's cache of inode {ino}: {e}");
            }
        }
        for done in waiting.drain(..) {
            let _ = done.try_send(());
        }
    }
}
