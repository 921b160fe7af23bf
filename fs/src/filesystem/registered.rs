//! Registered I/O: a buffer registered against one file (attached along the file's layout,
//! one attachment per column) or against the whole filesystem (attached once to every device,
//! then usable with any file opened for registered I/O), and the reads and writes that go
//! between such a buffer and a file without a copy.
//!
//! A registration against the filesystem is what a data loader wants: one buffer, read from
//! many files, with no registration per file. Both kinds of mapping are fenced, migrated and
//! revoked alike (they are [`Mapping`]s of the same [`Buffer`]); deleting a file revokes the
//! mappings registered against it and closes its opened-file handles.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use stripefs_engine::plan::Urgent;
use stripefs_engine::{Error, IoContext, Op};
use stripefs_layout::ondisk::InodeKind;
use stripefs_mapping::{Buffer, Mapping};

use super::Filesystem;
use super::data::{AttachBy, Target, check_buffer, check_range, resolve, split};
use super::error::FsError;

/// The inode recorded for a buffer registered against the whole filesystem (no inode has
/// number 0).
pub(super) const EVERY_FILE: u64 = 0;

/// A regular file opened for registered I/O with buffers registered against the filesystem
/// ([`Filesystem::open_registered`]). Valid until [`Filesystem::close_registered`] or until
/// the file is deleted; after that, requests naming it fail with EBADF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedFile {
    id: u64,
    ino: u64,
}

impl OpenedFile {
    /// The file's inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }
}

/// The files opened for registered I/O, by opened-file number.
#[derive(Default)]
pub(super) struct OpenedFiles {
    files: DashMap<u64, u64>,
    next: AtomicU64,
}

impl OpenedFiles {
    /// Closes every opened handle of `ino` (the file is gone).
    pub(super) fn forget(&self, ino: u64) {
        self.files.retain(|_, i| *i != ino);
    }

    fn check(&self, file: &OpenedFile) -> Result<(), FsError> {
        match self.files.get(&file.id) {
            Some(ino) if *ino == file.ino => Ok(()),
            _ => Err(FsError::UnknownFile { file: file.id }),
        }
    }
}

/// A registered read of a file: `len` bytes at file `offset` into the mapping's buffer at
/// `buffer_offset`; `tag` comes back in the completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRead {
    pub offset: u64,
    pub buffer_offset: u64,
    pub len: u64,
    pub tag: u64,
}

/// Which file a request moves data of, and which attachments of the mapping serve it.
#[derive(Clone, Copy)]
struct Bound {
    ino: u64,
    by: AttachBy,
}

impl Filesystem {
    /// Registers `buffer` against file `ino`: the file's devices (its layout, in column
    /// order) each attach it; one mapping stands for all of them.
    pub fn register(&self, ino: u64, buffer: &Buffer) -> Result<Mapping, FsError> {
        let devices = self.devices_of(ino)?;
        let importers = devices
            .iter()
            .map(|&d| {
                self.devices
                    .get(usize::from(d))
                    .map(crate::device::DeviceQueue::importer)
                    .ok_or(FsError::Corrupt {
                        device: format!("#{d}"),
                        what: format!("inode {ino} names a device the filesystem does not have"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mapping = Mapping::register(buffer, self.id, importers).map_err(Error::from)?;
        self.registrations
            .insert(mapping.id(), (ino, mapping.clone()));
        // The layout of an empty file may change (set by a user, or a new file moved off a
        // full device) while the buffer was being attached, which is done without holding
        // the metadata; such a change refuses a file once it is registered. Looked at again
        // now that the registration is visible: a change either saw it and was refused, or
        // came before and shows here.
        if self.devices_of(ino).ok().as_ref() != Some(&devices) {
            self.registrations.remove(&mapping.id());
            mapping.revoke();
            return Err(FsError::invalid(
                "the file's layout changed while it was being registered; register it again",
            ));
        }
        Ok(mapping)
    }

    /// Whether a buffer is registered against file `ino` (a file whose layout must then not
    /// change). Asked under the metadata lock: see [`Filesystem::register`].
    pub(super) fn is_registered(&self, ino: u64) -> bool {
        self.registrations.iter().any(|r| r.value().0 == ino)
    }

    /// The devices of regular file `ino`'s layout, in column order.
    fn devices_of(&self, ino: u64) -> Result<Vec<u16>, FsError> {
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        if inode.kind() != InodeKind::File {
            return Err(FsError::invalid("only regular files can be registered"));
        }
        Ok(inode
            .layout()
            .map(|l| l.devices.clone())
            .unwrap_or_default())
    }

    /// Registers `buffer` against the whole filesystem: every device attaches it once, and
    /// the one mapping serves any file opened with [`Filesystem::open_registered`].
    pub fn register_buffer(&self, buffer: &Buffer) -> Result<Mapping, FsError> {
        let importers = self.devices.iter().map(|d| d.importer()).collect();
        let mapping = Mapping::register(buffer, self.id, importers).map_err(Error::from)?;
        self.registrations
            .insert(mapping.id(), (EVERY_FILE, mapping.clone()));
        Ok(mapping)
    }

    /// Opens regular file `ino` for registered I/O with buffers registered against the
    /// filesystem.
    pub fn open_registered(&self, ino: u64) -> Result<OpenedFile, FsError> {
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        if inode.kind() != InodeKind::File {
            return Err(FsError::invalid(
                "only regular files can be opened for registered I/O",
            ));
        }
        let id = self.opened.next.fetch_add(1, Ordering::Relaxed) + 1;
        // Under the metadata lock: a delete of the file cannot slip between the check and this.
        self.opened.files.insert(id, ino);
        Ok(OpenedFile { id, ino })
    }

    /// Closes an opened file; requests naming it fail from now on.
    pub fn close_registered(&self, file: &OpenedFile) -> Result<(), FsError> {
        self.opened.check(file)?;
        self.opened.files.remove(&file.id);
        Ok(())
    }

    /// Unregisters a mapping of this filesystem.
    pub fn unregister(&self, mapping: &Mapping) -> Result<(), FsError> {
        match self.registrations.remove(&mapping.id()) {
            Some((_, (_, m))) => {
                m.revoke();
                Ok(())
            }
            None => Err(FsError::UnknownMapping {
                mapping: mapping.id(),
            }),
        }
    }

    /// The file a mapping is registered against (0 for a buffer registered against the
    /// whole filesystem).
    pub fn registered_file(&self, mapping: &Mapping) -> Result<u64, FsError> {
        self.registrations
            .get(&mapping.id())
            .map(|r| r.value().0)
            .ok_or(FsError::UnknownMapping {
                mapping: mapping.id(),
            })
    }

    /// Live registrations: (mapping, inode; 0 for the whole filesystem) (for `stat`).
    pub fn registrations(&self) -> Vec<(u64, u64)> {
        self.registrations
            .iter()
            .map(|r| (*r.key(), r.value().0))
            .collect()
    }

    /// The file a request moves data of: the mapping's own file (`file` absent, or naming
    /// that same file), or an opened file with a mapping registered against the filesystem.
    fn bind(&self, mapping: &Mapping, file: Option<&OpenedFile>) -> Result<Bound, FsError> {
        let registered = self.registered_file(mapping)?;
        match file {
            None if registered == EVERY_FILE => Err(FsError::invalid(
                "a buffer registered against the filesystem needs a file to read or write",
            )),
            None => Ok(Bound {
                ino: registered,
                by: AttachBy::Column,
            }),
            Some(f) => {
                self.opened.check(f)?;
                match registered {
                    EVERY_FILE => Ok(Bound {
                        ino: f.ino,
                        by: AttachBy::Device,
                    }),
                    ino if ino == f.ino => Ok(Bound {
                        ino,
                        by: AttachBy::Column,
                    }),
                    _ => Err(FsError::UnknownMapping {
                        mapping: mapping.id(),
                    }),
                }
            }
        }
    }

    /// Reads up to `len` bytes at file `offset` into the mapping's buffer at `buffer_offset`;
    /// returns the bytes read (short at end of file). Block-aligned middles go straight from
    /// the devices into the buffer; unaligned heads and tails go through a bounce buffer.
    pub fn read_registered(
        &self,
        mapping: &Mapping,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        let bound = self.bind(mapping, None)?;
        self.read_bound(mapping, bound, offset, buffer_offset, len)
    }

    /// [`Filesystem::read_registered`] of an opened file, into a buffer registered against
    /// the filesystem (or against that file).
    pub fn read_file(
        &self,
        mapping: &Mapping,
        file: &OpenedFile,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        let bound = self.bind(mapping, Some(file))?;
        self.read_bound(mapping, bound, offset, buffer_offset, len)
    }

    fn read_bound(
        &self,
        mapping: &Mapping,
        Bound { ino, by }: Bound,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        check_buffer(mapping, buffer_offset, len)?;
        let lock = self.data_lock(ino);
        let _shared = lock.read();
        let size = self.file_size(ino)?;
        let n = len.min(size.saturating_sub(offset));
        if n == 0 {
            return Ok(0);
        }
        let buffer = mapping.buffer();
        for part in split(offset, buffer_offset, n) {
            if part.direct {
                let target = Target {
                    mapping,
                    by,
                    offset: part.buffer_offset,
                };
                self.read_aligned(ino, part.offset, part.offset + part.len, target)?;
            } else {
                let mut bytes = vec![0u8; part.len as usize];
                self.read_bounced(ino, part.offset, &mut bytes)?;
                buffer
                    .write_at(part.buffer_offset, &bytes)
                    .map_err(Error::from)?;
            }
        }
        Ok(n)
    }

    /// Starts a registered read on `ctx` and returns at once: the asynchronous form of
    /// [`Filesystem::read_registered`], for keeping many reads of a file in flight from one
    /// thread. The completion (tagged `tag`) reports the bytes read, short at end of file.
    ///
    /// The block-aligned middle goes from the devices into the buffer while this returns;
    /// an unaligned head or tail (and a request whose file and buffer offsets differ modulo
    /// the block) is read through a bounce buffer before this returns. Until the completion,
    /// the file's blocks cannot move (truncates and writes of the file wait).
    pub fn submit_read(
        &self,
        ctx: &mut IoContext,
        mapping: &Mapping,
        read: FileRead,
    ) -> Result<(), FsError> {
        let bound = self.bind(mapping, None)?;
        self.submit_bound(ctx, mapping, bound, read)
    }

    /// [`Filesystem::submit_read`] of an opened file, into a buffer registered against the
    /// filesystem (or against that file).
    pub fn submit_file_read(
        &self,
        ctx: &mut IoContext,
        mapping: &Mapping,
        file: &OpenedFile,
        read: FileRead,
    ) -> Result<(), FsError> {
        let bound = self.bind(mapping, Some(file))?;
        self.submit_bound(ctx, mapping, bound, read)
    }

    fn submit_bound(
        &self,
        ctx: &mut IoContext,
        mapping: &Mapping,
        Bound { ino, by }: Bound,
        read: FileRead,
    ) -> Result<(), FsError> {
        let FileRead {
            offset,
            buffer_offset,
            len,
            tag,
        } = read;
        check_buffer(mapping, buffer_offset, len)?;
        if ctx.in_flight() >= ctx.depth() {
            return Err(Error::ContextFull { depth: ctx.depth() }.into());
        }
        let lock = self.data_lock(ino);
        let hold = match lock.try_read_arc() {
            Some(hold) => hold,
            None => {
                // A writer holds or waits for the lock. It may be waiting for reads of this
                // thread still in flight, which this thread cannot collect while it blocks:
                // the devices' reapers do, meanwhile.
                let _urgent = Urgent::new(&self.devices);
                lock.read_arc()
            }
        };
        let size = self.file_size(ino)?;
        let n = len.min(size.saturating_sub(offset));
        let mut direct = None;
        for part in split(offset, buffer_offset, n) {
            if part.direct {
                direct = Some(part);
            } else {
                let mut bytes = vec![0u8; part.len as usize];
                self.read_bounced(ino, part.offset, &mut bytes)?;
                mapping
                    .buffer()
                    .write_at(part.buffer_offset, &bytes)
                    .map_err(Error::from)?;
            }
        }
        let pieces = match direct {
            Some(part) => resolve(&self.meta.read(), ino, part.offset, part.len)?,
            None => Vec::new(),
        };
        let target = Target {
            mapping,
            by,
            offset: direct.map_or(0, |p| p.buffer_offset),
        };
        ctx.submit_with(mapping, Op::Read, tag, n, Some(hold), |fan| {
            self.plan(fan, Op::Read, &pieces, target)
        })?;
        Ok(())
    }

    /// Writes `len` bytes from the mapping's buffer at `buffer_offset` to file `offset`,
    /// allocating and extending as needed; returns `len`.
    pub fn write_registered(
        &self,
        mapping: &Mapping,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        let bound = self.bind(mapping, None)?;
        self.write_bound(mapping, bound, offset, buffer_offset, len)
    }

    /// [`Filesystem::write_registered`] to an opened file, from a buffer registered against
    /// the filesystem (or against that file).
    pub fn write_file(
        &self,
        mapping: &Mapping,
        file: &OpenedFile,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        let bound = self.bind(mapping, Some(file))?;
        self.write_bound(mapping, bound, offset, buffer_offset, len)
    }

    fn write_bound(
        &self,
        mapping: &Mapping,
        Bound { ino, by }: Bound,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, FsError> {
        check_buffer(mapping, buffer_offset, len)?;
        check_range(offset, len)?;
        {
            let lock = self.data_lock(ino);
            let _exclusive = lock.write();
            self.file_size(ino)?;
            let buffer = mapping.buffer();
            for part in split(offset, buffer_offset, len) {
                if part.direct {
                    let target = Target {
                        mapping,
                        by,
                        offset: part.buffer_offset,
                    };
                    let end = part.offset + part.len;
                    self.write_aligned(ino, (part.offset, end), target, Some(end))?;
                } else {
                    let mut bytes = vec![0u8; part.len as usize];
                    buffer
                        .read_at(part.buffer_offset, &mut bytes)
                        .map_err(Error::from)?;
                    self.write_bounced(ino, part.offset, &bytes, true, None)?;
                }
            }
        }
        self.invalidate(ino);
        Ok(len)
    }
}
