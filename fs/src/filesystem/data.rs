//! The file data path: resolving file ranges through the layout and the extents, the POSIX
//! read/write/truncate path through bounce buffers, and the pieces registered I/O
//! (`registered.rs`) is made of.

use stripefs_engine::plan::{self as engine, FanOut, Merged, Piece};
use stripefs_engine::{Error, Op};
use stripefs_layout::FileOffset;
use stripefs_layout::ondisk::{InodeKind, Record};
use stripefs_mapping::Mapping;

use super::bounce::BOUNCE_SIZE;
use super::error::FsError;
use super::format::{BLOCK_SIZE, stripe_layout};
use super::tail::Tail;
use super::{Filesystem, now};
use crate::meta::Metadata;
use crate::meta::extents::{self, Extent};

/// Largest file: offsets stay far from u64 overflow in every computation.
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// One piece of a file range: stored on a device, or a hole.
#[derive(Clone, Copy, Debug)]
pub(super) struct FilePiece {
    pub column: usize,
    pub device: usize,
    pub object_offset: u64,
    pub device_offset: Option<u64>,
    pub len: u64,
    /// Where the piece starts, from the start of the resolved range.
    pub request_offset: u64,
}

impl FilePiece {
    /// The part `from..to` of the piece (offsets from the start of the resolved range).
    pub(super) fn part(&self, from: u64, to: u64) -> FilePiece {
        let skip = from - self.request_offset;
        FilePiece {
            object_offset: self.object_offset + skip,
            device_offset: self.device_offset.map(|d| d + skip),
            len: to - from,
            request_offset: from,
            ..*self
        }
    }
}

/// Which attachment of a mapping serves a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AttachBy {
    /// Bounce buffers: attached to every device, attachment `i` is device `i`.
    Device,
    /// File registrations: attached to the file's layout, attachment `i` is column `i`.
    Column,
}

/// A range of a mapping's buffer.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) mapping: &'a Mapping,
    pub(super) by: AttachBy,
    pub(super) offset: u64,
}

pub(super) fn round_down(x: u64) -> u64 {
    x / BLOCK_SIZE * BLOCK_SIZE
}

pub(super) fn round_up(x: u64) -> u64 {
    x.div_ceil(BLOCK_SIZE) * BLOCK_SIZE
}

pub(super) fn resolve(
    meta: &Metadata,
    ino: u64,
    offset: u64,
    len: u64,
) -> Result<Vec<FilePiece>, FsError> {
    let inode = meta.get(ino).ok_or(FsError::NotFound)?;
    let record = inode.layout().ok_or(FsError::IsDir)?;
    let layout = stripe_layout(record)?;
    let mut out = Vec::new();
    let segments = layout
        .segments(FileOffset(offset), len)
        .map_err(|e| FsError::invalid(e.to_string()))?;
    for seg in segments {
        let map = inode.extents().get(seg.column).ok_or(FsError::Corrupt {
            device: String::new(),
            what: format!("inode {ino} has no extents for column {}", seg.column),
        })?;
        let device = usize::from(record.devices[seg.column]);
        for p in map.pieces(seg.device_offset.0, seg.len) {
            let (object_offset, device_offset, len) = match p {
                extents::Piece::Mapped(e) => (e.object_offset, Some(e.device_offset), e.len),
                extents::Piece::Hole { object_offset, len } => (object_offset, None, len),
            };
            out.push(FilePiece {
                column: seg.column,
                device,
                object_offset,
                device_offset,
                len,
                request_offset: seg.request_offset + (object_offset - seg.device_offset.0),
            });
        }
    }
    Ok(out)
}

impl Filesystem {
    /// Moves the pieces between the devices and `target`; holes read as zeros.
    pub(super) fn transfer(
        &self,
        op: Op,
        pieces: &[FilePiece],
        target: Target<'_>,
    ) -> Result<(), FsError> {
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        if total == 0 {
            return Ok(());
        }
        engine::run_plan(target.mapping, op, total, |fan| {
            self.plan(fan, op, pieces, target)
        })?;
        Ok(())
    }

    /// Issues the device commands (one batch per device) and zero fills of a transfer.
    pub(super) fn plan(
        &self,
        fan: &mut FanOut<'_>,
        op: Op,
        pieces: &[FilePiece],
        target: Target<'_>,
    ) {
        for (index, device) in self.devices.iter().enumerate() {
            let mut attachment = None;
            let stored = pieces.iter().filter(|p| p.device == index).filter_map(|p| {
                attachment = Some(match target.by {
                    AttachBy::Device => p.device,
                    AttachBy::Column => p.column,
                });
                p.device_offset.map(|d| Piece {
                    device_offset: d,
                    len: p.len,
                    buffer_offset: target.offset + p.request_offset,
                })
            });
            let batch: Vec<Piece> = Merged::new(stored).collect();
            if let Some(attachment) = attachment {
                fan.device(attachment, device, batch.into_iter());
            }
        }
        if op == Op::Read {
            for p in pieces.iter().filter(|p| p.device_offset.is_none()) {
                fan.zero(target.offset + p.request_offset, p.len);
            }
        }
    }

    /// Reads the block-aligned file range `a0..a1` into `target`.
    pub(super) fn read_aligned(
        &self,
        ino: u64,
        a0: u64,
        a1: u64,
        target: Target<'_>,
    ) -> Result<(), FsError> {
        let pieces = resolve(&self.meta.read(), ino, a0, a1 - a0)?;
        self.transfer(Op::Read, &pieces, target)
    }

    /// Writes the block-aligned file range `a0..a1` from `target`, allocating holes first.
    /// Once the data is on the devices, one change records the new extents together with
    /// the file's new size (at least `grow_to`, when given) and times, so that no crash can
    /// leave extents past the end of the file or a size whose blocks are not recorded.
    pub(super) fn write_aligned(
        &self,
        ino: u64,
        (a0, a1): (u64, u64),
        target: Target<'_>,
        grow_to: Option<u64>,
    ) -> Result<(), FsError> {
        let mut pieces = resolve(&self.meta.read(), ino, a0, a1 - a0)?;
        let fresh = match self.allocate_or_sync(ino, &mut pieces) {
            // A new file's device filled before its first write: it may start elsewhere.
            Err(FsError::NoSpace(e)) => {
                if !self.restart_elsewhere(ino)? {
                    return Err(FsError::NoSpace(e));
                }
                pieces = resolve(&self.meta.read(), ino, a0, a1 - a0)?;
                self.allocate_or_sync(ino, &mut pieces)?
            }
            other => other?,
        };
        if let Err(e) = self.transfer(Op::Write, &pieces, target) {
            self.release_unrecorded(&fresh);
            return Err(e);
        }
        let recorded = self.record_write(ino, &fresh, grow_to);
        // Refused before anything was applied: the space is nobody's. (A record that failed
        // to apply half way is a bug; then the space stays out of use rather than be given
        // twice.)
        if let Err(FsError::MetadataFull { .. } | FsError::NotFound) = recorded {
            self.release_unrecorded(&fresh);
        }
        recorded
    }

    /// Like [`allocate_holes`](Self::allocate_holes); when the devices are full, commits
    /// first and tries again: space freed by changes not yet durable comes back with a
    /// commit (one that another thread finishes meanwhile counts too: asking whether space
    /// is busy first would race with it). Nothing pending: the sync returns at once. Then,
    /// if the metadata replicas keep space for the next checkpoint's pieces, a checkpoint
    /// gives it back and the allocation is tried once more.
    pub(super) fn allocate_or_sync(
        &self,
        ino: u64,
        pieces: &mut Vec<FilePiece>,
    ) -> Result<Vec<(usize, usize, Extent)>, FsError> {
        match self.allocate_holes(ino, pieces) {
            Err(FsError::NoSpace(_)) => {
                self.sync()?;
                match self.allocate_holes(ino, pieces) {
                    Err(FsError::NoSpace(_)) if self.pieces_hold_space() => {
                        self.checkpoint()?;
                        self.allocate_holes(ino, pieces)
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// The change of a write: its new extents, the file's size (at least `grow_to`) and times.
    fn record_write(
        &self,
        ino: u64,
        fresh: &[(usize, usize, Extent)],
        grow_to: Option<u64>,
    ) -> Result<(), FsError> {
        let mut meta = self.meta.write();
        let records = extent_records(ino, fresh);
        self.change_with_inode(&mut meta, ino, records, |r| {
            let t = now();
            r.size = r.size.max(grow_to.unwrap_or(0));
            r.mtime = t;
            r.ctime = t;
        })
    }

    /// Applies `records` and the inode record of `ino` as `edit` changes it, as one change.
    pub(super) fn change_with_inode(
        &self,
        meta: &mut Metadata,
        ino: u64,
        mut records: Vec<Record>,
        edit: impl FnOnce(&mut stripefs_layout::ondisk::InodeRecord),
    ) -> Result<(), FsError> {
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        let mut r = inode.record();
        edit(&mut r);
        records.push(Record::Inode(r));
        self.change(meta, records)
    }

    /// Gives back space allocated for a write whose extents were never recorded.
    pub(super) fn release_unrecorded(&self, fresh: &[(usize, usize, Extent)]) {
        let mut alloc = self.alloc.lock();
        for (_, device, e) in fresh {
            alloc.release(*device, e.device_offset, e.len);
        }
    }

    /// Gives every hole in `pieces` device space (all or nothing); returns the new extents as
    /// (column, device, extent).
    fn allocate_holes(
        &self,
        ino: u64,
        pieces: &mut Vec<FilePiece>,
    ) -> Result<Vec<(usize, usize, Extent)>, FsError> {
        if pieces.iter().all(|p| p.device_offset.is_some()) {
            return Ok(Vec::new());
        }
        let goals: Vec<Option<u64>> = {
            let meta = self.meta.read();
            let inode = meta.get(ino).ok_or(FsError::NotFound)?;
            pieces
                .iter()
                .map(|p| {
                    inode
                        .extents()
                        .get(p.column)
                        .and_then(|m| m.device_end_at(p.object_offset))
                })
                .collect()
        };
        let mut alloc = self.alloc.lock();
        let mut fresh: Vec<(usize, usize, Extent)> = Vec::new();
        let mut out = Vec::with_capacity(pieces.len());
        for (p, goal) in pieces.iter().zip(goals) {
            if p.device_offset.is_some() {
                out.push(*p);
                continue;
            }
            let goal = goal.or_else(|| {
                fresh
                    .iter()
                    .rev()
                    .find(|(c, _, e)| *c == p.column && e.object_offset + e.len == p.object_offset)
                    .map(|(_, _, e)| e.device_offset + e.len)
            });
            let runs = match alloc.allocate(p.device, p.len, goal) {
                Ok(runs) => runs,
                Err(e) => {
                    for (_, device, e2) in &fresh {
                        alloc.release(*device, e2.device_offset, e2.len);
                    }
                    return Err(e.into());
                }
            };
            let mut done = 0;
            for (start, len) in runs {
                let piece = FilePiece {
                    object_offset: p.object_offset + done,
                    device_offset: Some(start),
                    len,
                    request_offset: p.request_offset + done,
                    ..*p
                };
                fresh.push((
                    p.column,
                    p.device,
                    Extent {
                        object_offset: piece.object_offset,
                        device_offset: start,
                        len,
                    },
                ));
                out.push(piece);
                done += len;
            }
        }
        *pieces = out;
        Ok(fresh)
    }

    pub(super) fn file_size(&self, ino: u64) -> Result<u64, FsError> {
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        match inode.kind() {
            InodeKind::File => Ok(inode.size()),
            InodeKind::Dir => Err(FsError::IsDir),
            InodeKind::Symlink
            | InodeKind::Fifo
            | InodeKind::Socket
            | InodeKind::CharDevice
            | InodeKind::BlockDevice => Err(FsError::invalid("not a regular file")),
        }
    }

    /// Reads up to `size` bytes at `offset` (short at end of file).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let lock = self.data_lock(ino);
        let _shared = lock.read();
        let file_size = self.file_size(ino)?;
        let end = offset.saturating_add(u64::from(size)).min(file_size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        self.read_bounced(ino, offset, &mut out)?;
        Ok(out)
    }

    /// Reads `out.len()` bytes at `offset` through bounce buffers.
    pub(super) fn read_bounced(
        &self,
        ino: u64,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), FsError> {
        let bounce = self.pool.take()?;
        let target = bounce_target(&bounce.mapping);
        for w in windows(offset, out.len() as u64) {
            self.read_aligned(ino, w.a0, w.a1, target)?;
            bounce
                .buffer
                .read_at(w.w0 - w.a0, &mut out[w.range(offset)])
                .map_err(Error::from)?;
        }
        Ok(())
    }

    /// Writes `data` at `offset`, extending the file if needed.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let lock = self.data_lock(ino);
        let (_exclusive, mut tail) = lock.write_keeping_tail();
        self.file_size(ino)?;
        check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(0);
        }
        self.write_bounced(ino, offset, data, true, Some(&mut tail))?;
        Ok(data.len() as u32)
    }

    /// Writes `data` at `offset` through bounce buffers (read-modify-write of partial
    /// blocks); with `grow`, the file grows to cover each piece as it is written. With
    /// `tail` (the POSIX write path), a partial first block that is the kept one is taken
    /// from it rather than read, and the partial last block written is kept (see `tail`).
    pub(super) fn write_bounced(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        grow: bool,
        mut tail: Option<&mut Option<Tail>>,
    ) -> Result<(), FsError> {
        let bounce = self.pool.take()?;
        let target = bounce_target(&bounce.mapping);
        let kept = tail.as_mut().and_then(|t| t.take());
        let mut last = None;
        for w in windows(offset, data.len() as u64) {
            match &kept {
                _ if w.w0 == w.a0 => {}
                Some(k) if k.offset == w.a0 => {
                    bounce.buffer.write_at(0, &k.bytes).map_err(Error::from)?;
                }
                _ => self.read_aligned(ino, w.a0, w.a0 + BLOCK_SIZE, target)?,
            }
            if w.w1 != w.a1 && (w.w0 == w.a0 || w.a1 - BLOCK_SIZE != w.a0) {
                let tail = Target {
                    offset: w.a1 - BLOCK_SIZE - w.a0,
                    ..target
                };
                self.read_aligned(ino, w.a1 - BLOCK_SIZE, w.a1, tail)?;
            }
            bounce
                .buffer
                .write_at(w.w0 - w.a0, &data[w.range(offset)])
                .map_err(Error::from)?;
            self.write_aligned(ino, (w.a0, w.a1), target, grow.then_some(w.w1))?;
            last = Some(w);
        }
        if let (Some(tail), Some(w)) = (tail, last)
            && w.w1 != w.a1
        {
            let mut bytes = vec![0u8; BLOCK_SIZE as usize].into_boxed_slice();
            let at = w.a1 - BLOCK_SIZE;
            bounce
                .buffer
                .read_at(at - w.a0, &mut bytes)
                .map_err(Error::from)?;
            *tail = Some(Tail { offset: at, bytes });
        }
        Ok(())
    }
}

/// The records of new extents, as (column, device, extent).
pub(super) fn extent_records(ino: u64, fresh: &[(usize, usize, Extent)]) -> Vec<Record> {
    fresh
        .iter()
        .map(|(column, _, e)| Record::Extent {
            ino,
            column: *column as u16,
            object_offset: e.object_offset,
            device_offset: e.device_offset,
            len: e.len,
        })
        .collect()
}

/// One bounce-buffer load of a bounced transfer: the bytes `w0..w1`, inside the
/// block-aligned `a0..a1` that is moved to or from the devices.
#[derive(Clone, Copy, Debug)]
struct Window {
    w0: u64,
    w1: u64,
    a0: u64,
    a1: u64,
}

impl Window {
    /// Where the window's bytes are in the caller's slice that starts at file `offset`.
    fn range(&self, offset: u64) -> std::ops::Range<usize> {
        (self.w0 - offset) as usize..(self.w1 - offset) as usize
    }
}

/// Cuts `offset..offset+len` into windows that each fit one bounce buffer.
fn windows(offset: u64, len: u64) -> impl Iterator<Item = Window> {
    let end = offset + len;
    let mut w0 = offset;
    std::iter::from_fn(move || {
        if w0 >= end {
            return None;
        }
        let a0 = round_down(w0);
        let w1 = end.min(a0 + BOUNCE_SIZE - 2 * BLOCK_SIZE);
        let window = Window {
            w0,
            w1,
            a0,
            a1: round_up(w1),
        };
        w0 = w1;
        Some(window)
    })
}

pub(super) fn bounce_target(mapping: &Mapping) -> Target<'_> {
    Target {
        mapping,
        by: AttachBy::Device,
        offset: 0,
    }
}

pub(super) fn check_range(offset: u64, len: u64) -> Result<u64, FsError> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_FILE_SIZE => Ok(end),
        _ => Err(FsError::TooLarge { offset, len }),
    }
}

pub(super) fn check_buffer(mapping: &Mapping, buffer_offset: u64, len: u64) -> Result<(), FsError> {
    let buffer_len = mapping.buffer_len();
    if buffer_offset
        .checked_add(len)
        .is_none_or(|e| e > buffer_len)
    {
        return Err(Error::OutOfBuffer {
            offset: buffer_offset,
            len,
            buffer_len,
        }
        .into());
    }
    Ok(())
}

/// A part of a registered request: direct (block-aligned in the file and in the buffer) or
/// bounced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) offset: u64,
    pub(super) buffer_offset: u64,
    pub(super) len: u64,
    pub(super) direct: bool,
}

/// Splits a request into an unaligned head, a block-aligned middle and an unaligned tail.
/// When file and buffer offsets are not congruent modulo the block, all of it is bounced.
pub(super) fn split(offset: u64, buffer_offset: u64, len: u64) -> Vec<Part> {
    let end = offset + len;
    let part = |from: u64, to: u64, direct| Part {
        offset: from,
        buffer_offset: buffer_offset + (from - offset),
        len: to - from,
        direct,
    };
    if offset % BLOCK_SIZE != buffer_offset % BLOCK_SIZE {
        return vec![part(offset, end, false)];
    }
    let m0 = round_up(offset).min(end);
    let m1 = round_down(end).max(m0);
    [
        part(offset, m0, false),
        part(m0, m1, true),
        part(m1, end, false),
    ]
    .into_iter()
    .filter(|p| p.len > 0)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_heads_and_tails() {
        assert_eq!(
            split(100, 100, 10000),
            vec![
                Part {
                    offset: 100,
                    buffer_offset: 100,
                    len: 3996,
                    direct: false
                },
                Part {
                    offset: 4096,
                    buffer_offset: 4096,
                    len: 4096,
                    direct: true
                },
                Part {
                    offset: 8192,
                    buffer_offset: 8192,
                    len: 1908,
                    direct: false
                },
            ]
        );
        assert_eq!(
            split(0, 4096, 8192),
            vec![Part {
                offset: 0,
                buffer_offset: 4096,
                len: 8192,
                direct: true
            }]
        );
        assert_eq!(
            split(1, 0, 10),
            vec![Part {
                offset: 1,
                buffer_offset: 0,
                len: 10,
                direct: false
            }]
        );
        assert_eq!(
            split(10, 10, 5),
            vec![Part {
                offset: 10,
                buffer_offset: 10,
                len: 5,
                direct: false
            }]
        );
    }
}
