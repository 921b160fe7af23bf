//! Space management of a file: `fallocate` (allocate, punch a hole, zero a range) and
//! `lseek`'s `SEEK_DATA`/`SEEK_HOLE`, all from the file's extents.
//!
//! **Allocated space reads as zeros because it holds zeros.** An extent has no "unwritten"
//! state: fresh blocks are zeroed on the devices before the change that records them is
//! queued, and a commit flushes the data devices before it writes the log, so no durable
//! extent ever points at stale bytes (another file's, or a deleted one's). The cost is
//! writing the zeros (a `fallocate` of 1 GiB writes 1 GiB); the gain is that every reader —
//! the POSIX path, registered reads that go straight from the devices into a program's
//! buffer, fsck, the crash harness — needs no second kind of extent, and the on-disk format
//! keeps one. Each operation is one change built by [`rewrite`](super::rewrite): blocks
//! whose contents change (punched or zeroed partial blocks, zeroed ranges) are rewritten to
//! fresh space, so a crash shows the file entirely before or entirely after.
//!
//! Blocks kept past the end of the file (`FALLOC_FL_KEEP_SIZE`) mark the inode `prealloc`,
//! which tells fsck they are meant; any truncate drops them and clears the mark.

use stripefs_layout::ondisk::InodeRecord;

use super::data::{MAX_FILE_SIZE, check_range, round_down, round_up};
use super::error::FsError;
use super::format::{BLOCK_SIZE, stripe_layout};
use super::rewrite::{Blocks, Fate, Rewrite};
use super::{Filesystem, now};
use stripefs_layout::DeviceOffset;

/// What `fallocate` is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallocate {
    /// Give the range storage (zeros where it was a hole); the size grows to cover it
    /// unless `keep_size`.
    Allocate { keep_size: bool },
    /// Make the range read as zeros, freeing whole blocks (the size never changes).
    PunchHole,
    /// Make the range read as zeros, with storage; the size grows unless `keep_size`.
    ZeroRange { keep_size: bool },
}

impl Fallocate {
    /// The operation a Linux `fallocate` mode asks for; `NotSupported` (EOPNOTSUPP) for
    /// the modes this filesystem does not do (collapse, insert, unshare, a hole punched
    /// without `FALLOC_FL_KEEP_SIZE`, unknown bits).
    pub fn from_mode(mode: i32) -> Result<Self, FsError> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => Ok(Fallocate::Allocate { keep_size }),
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => Ok(Fallocate::PunchHole),
            libc::FALLOC_FL_ZERO_RANGE => Ok(Fallocate::ZeroRange { keep_size }),
            _ => Err(FsError::NotSupported {
                what: "this fallocate mode (allocate, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE are supported)",
            }),
        }
    }
}

/// `lseek` positions found from the extents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The first byte at or after the offset that is stored (`SEEK_DATA`).
    Data,
    /// The first byte at or after the offset that is a hole, or the end (`SEEK_HOLE`).
    Hole,
}

impl Filesystem {
    /// `fallocate` of `len` bytes at `offset` of file `ino`, as one change.
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, op: Fallocate) -> Result<(), FsError> {
        if len == 0 {
            return Err(FsError::invalid("fallocate of 0 bytes"));
        }
        let end = check_range(offset, len)?;
        let lock = self.data_lock(ino);
        let _exclusive = lock.write();
        let size = self.file_size(ino)?;
        let (a0, a1) = (round_down(offset), round_up(end));
        let keep_size = match op {
            Fallocate::Allocate { keep_size } | Fallocate::ZeroRange { keep_size } => keep_size,
            Fallocate::PunchHole => true,
        };
        let body = |rw: &mut Rewrite| match op {
            Fallocate::Allocate { .. } => self.rewrite_range(rw, (a0, a1), false, fill_holes),
            Fallocate::PunchHole => self.clear_range(rw, offset, end, false),
            Fallocate::ZeroRange { .. } => self.clear_range(rw, offset, end, true),
        };
        let edit = |r: &mut InodeRecord| {
            let t = now();
            r.ctime = t;
            if !keep_size && end > r.size {
                r.size = end;
            }
            if op != Fallocate::PunchHole {
                // Blocks kept past the end from now on are meant (fsck accepts them).
                r.prealloc |= a1 > round_up(r.size);
            }
            let changes_bytes = !matches!(op, Fallocate::Allocate { .. });
            if r.size != size || changes_bytes {
                r.mtime = t;
            }
        };
        self.rewrite(ino, body, edit)
    }

    /// Sets the size, as one change: space past the new end is released (preallocated
    /// blocks too, as on ext4), and a partial last block gets a fresh copy whose bytes past
    /// the end are zeros, so that growing the file later reads zeros there. The copy is
    /// written before the change (copy-on-write, see `rewrite`): zeroing the block in place
    /// would destroy bytes the durable state still shows if a crash came first. `edit`
    /// makes the rest of a `setattr` part of the same change.
    pub(crate) fn truncate(
        &self,
        ino: u64,
        new_size: u64,
        edit: impl FnOnce(&mut InodeRecord),
    ) -> Result<(), FsError> {
        if new_size > MAX_FILE_SIZE {
            return Err(FsError::TooLarge {
                offset: new_size,
                len: 0,
            });
        }
        let lock = self.data_lock(ino);
        let _exclusive = lock.write();
        let size = self.file_size(ino)?;
        let body = |rw: &mut Rewrite| {
            rw.cut_at(new_size, new_size < size);
            if new_size < size && !new_size.is_multiple_of(BLOCK_SIZE) {
                let last = round_down(new_size);
                self.rewrite_range(rw, (last, last + BLOCK_SIZE), true, |b| {
                    b.bytes[(new_size - b.start) as usize..].fill(0);
                    if b.mapped[0] {
                        b.fates[0] = Fate::Store;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        };
        self.rewrite(ino, body, |r| {
            let t = now();
            r.size = new_size;
            r.prealloc = false;
            r.mtime = t;
            r.ctime = t;
            edit(r);
        })
    }

    /// Makes `offset..end` read as zeros: partial blocks at either end are rewritten with
    /// zeros over the range; whole blocks in between are dropped, or with `store` given
    /// fresh zeroed storage (a punched partial block that is all zeros becomes a hole).
    fn clear_range(
        &self,
        rw: &mut Rewrite,
        offset: u64,
        end: u64,
        store: bool,
    ) -> Result<(), FsError> {
        let zero_part = |b: Blocks<'_>| {
            let from = offset.saturating_sub(b.start) as usize;
            let to = (end - b.start).min(b.bytes.len() as u64) as usize;
            b.bytes[from..to].fill(0);
            let all_zero = b.bytes.iter().all(|&x| x == 0);
            b.fates[0] = match (store, b.mapped[0], all_zero) {
                (true, _, _) => Fate::Store,
                (false, false, _) => Fate::Keep,
                (false, true, true) => Fate::Drop,
                (false, true, false) => Fate::Store,
            };
            Ok(())
        };
        let head = round_down(offset);
        let tail = round_down(end - 1);
        let (i0, i1) = (round_up(offset), round_down(end));
        if offset != head {
            self.rewrite_range(rw, (head, head + BLOCK_SIZE), true, zero_part)?;
        }
        if end != round_up(end) && (tail != head || offset == head) {
            self.rewrite_range(rw, (tail, tail + BLOCK_SIZE), true, zero_part)?;
        }
        if i0 < i1 {
            if store {
                self.rewrite_range(rw, (i0, i1), false, |b| {
                    b.fates.fill(Fate::Store);
                    Ok(())
                })?;
            } else {
                rw.drop_range(i0, i1);
            }
        }
        Ok(())
    }

    /// `SEEK_DATA` or `SEEK_HOLE` from `offset`: the position, or `PastEnd` (ENXIO) when
    /// `offset` is at or past the end, or no data follows it. Every file ends in a hole
    /// (its end), as on Linux.
    pub fn seek(&self, ino: u64, offset: u64, whence: Seek) -> Result<u64, FsError> {
        let lock = self.data_lock(ino);
        let _shared = lock.read();
        let size = self.file_size(ino)?;
        if offset >= size {
            return Err(FsError::PastEnd { offset, size });
        }
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        let Some(record) = inode.layout() else {
            return Err(FsError::invalid("a file without a layout"));
        };
        let layout = stripe_layout(record)?;
        // Within a column, file offsets grow with object offsets: the first match of each
        // column is its candidate, and the answer is the smallest candidate.
        let mut best = u64::MAX;
        for (column, map) in inode.extents().iter().enumerate() {
            let from = layout.column_extent(offset, column);
            let found = match whence {
                Seek::Data => map.next_mapped(from),
                Seek::Hole => Some(map.next_unmapped(from)),
            };
            if let Some(object) = found
                && let Ok(at) = layout.file_offset(column, DeviceOffset(object))
            {
                best = best.min(at.0);
            }
        }
        match whence {
            Seek::Data if best >= size => Err(FsError::PastEnd { offset, size }),
            Seek::Data => Ok(best.max(offset)),
            Seek::Hole => Ok(best.clamp(offset, size)),
        }
    }
}

/// The editor of an allocation: holes get fresh (zeroed) storage, stored blocks stay.
fn fill_holes(b: Blocks<'_>) -> Result<(), FsError> {
    for (fate, &mapped) in b.fates.iter_mut().zip(b.mapped) {
        if !mapped {
            *fate = Fate::Store;
        }
    }
    Ok(())
}
