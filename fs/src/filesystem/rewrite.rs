//! Rewriting a file's blocks as one change (copy-on-write): the new contents of the blocks
//! that change go to fresh space first; then one change drops the old blocks and records the
//! new ones, with the inode. Until that change is durable a crash shows the old blocks
//! (the fresh space belongs to nobody), after it the new ones: no state in between.
//!
//! `fallocate` (allocate, punch, zero) and `copy_file_range` are built on this: each decides,
//! block by block, whether a block keeps its storage, gets fresh storage holding new bytes,
//! or becomes a hole. The old blocks freed by the change are busy until it is durable (see
//! `commit`), so no new data lands on blocks the durable metadata still gives to the file.

use stripefs_engine::{Error, Op};
use stripefs_layout::FileOffset;
use stripefs_layout::ondisk::{InodeRecord, Record};

use super::Filesystem;
use super::bounce::BOUNCE_SIZE;
use super::data::{FilePiece, bounce_target, extent_records, resolve, round_up};
use super::error::FsError;
use super::format::{BLOCK_SIZE, stripe_layout};
use crate::meta::Inode;
use crate::meta::extents::{Extent, Piece};

/// What a rewrite does with one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// Left as it is (stored or a hole).
    Keep,
    /// Given fresh storage holding the block's new bytes; the old storage goes.
    Store,
    /// Becomes a hole; the old storage goes.
    Drop,
}

/// One window of blocks handed to a rewrite's editor.
pub(super) struct Blocks<'a> {
    /// The file offset of the first block.
    pub start: u64,
    /// The blocks' bytes: as stored (holes as zeros) when the old contents were asked for,
    /// zeros otherwise. The editor changes them.
    pub bytes: &'a mut [u8],
    /// Per block: whether it is stored now.
    pub mapped: &'a [bool],
    /// Per block: what to do with it (all `Keep` to start with).
    pub fates: &'a mut [Fate],
}

/// What a rewrite has done so far.
pub(super) struct Rewrite {
    ino: u64,
    /// Fresh space written, as (column, device, extent).
    fresh: Vec<(usize, usize, Extent)>,
    /// Block-aligned file ranges whose current storage the change drops.
    dropped: Vec<(u64, u64)>,
    /// A truncation the change makes, to this file size: every column's storage past it
    /// goes when the file shrinks (`true`) or holds blocks preallocated past its end.
    cut: Option<(u64, bool)>,
}

impl Rewrite {
    /// Makes the change truncate the file's storage at the file size `size`: every block
    /// past it goes when the file shrinks (`shrinks`) or holds blocks preallocated past its
    /// end (decided when the change is made, under the metadata lock).
    pub(super) fn cut_at(&mut self, size: u64, shrinks: bool) {
        self.cut = Some((size, shrinks));
    }
    /// Drops the storage of the block-aligned file range `a0..a1` (nothing is written).
    pub(super) fn drop_range(&mut self, a0: u64, a1: u64) {
        if a0 < a1 {
            self.dropped.push((a0, a1));
        }
    }
}

impl Filesystem {
    /// Runs `body` to build a rewrite of file `ino`, then makes it one change together with
    /// the inode as `edit` changes it. On any failure the fresh space is given back and the
    /// file is unchanged.
    pub(super) fn rewrite(
        &self,
        ino: u64,
        body: impl FnOnce(&mut Rewrite) -> Result<(), FsError>,
        edit: impl FnOnce(&mut InodeRecord),
    ) -> Result<(), FsError> {
        let mut rw = Rewrite {
            ino,
            fresh: Vec::new(),
            dropped: Vec::new(),
            cut: None,
        };
        if let Err(e) = body(&mut rw) {
            self.release_unrecorded(&rw.fresh);
            return Err(e);
        }
        let mut meta = self.meta.write();
        let records = match meta.get(ino) {
            Some(inode) => drop_records(inode, &rw.dropped).and_then(|mut records| {
                records.extend(extent_records(ino, &rw.fresh));
                records.extend(cut_records(inode, rw.cut)?);
                Ok(records)
            }),
            None => Err(FsError::NotFound),
        };
        let result =
            records.and_then(|records| self.change_with_inode(&mut meta, ino, records, edit));
        // Refused before anything was applied: the space is nobody's (as in `write_aligned`).
        if let Err(FsError::MetadataFull { .. } | FsError::NotFound | FsError::Invalid { .. }) =
            result
        {
            self.release_unrecorded(&rw.fresh);
        }
        result
    }

    /// Rewrites the block-aligned range `a0..a1` window by window: `edit` sees each window's
    /// blocks (with their old bytes when `read_old`) and sets their fates; blocks to store
    /// get fresh space and their new bytes are written there now.
    pub(super) fn rewrite_range(
        &self,
        rw: &mut Rewrite,
        (a0, a1): (u64, u64),
        read_old: bool,
        mut edit: impl FnMut(Blocks<'_>) -> Result<(), FsError>,
    ) -> Result<(), FsError> {
        let bounce = self.pool.take()?;
        let target = bounce_target(&bounce.mapping);
        let window = BOUNCE_SIZE / BLOCK_SIZE * BLOCK_SIZE;
        let mut w0 = a0;
        while w0 < a1 {
            let w1 = a1.min(w0 + window);
            let pieces = resolve(&self.meta.read(), rw.ino, w0, w1 - w0)?;
            let count = ((w1 - w0) / BLOCK_SIZE) as usize;
            let mapped = mapped_blocks(&pieces, count);
            let mut bytes = vec![0u8; (w1 - w0) as usize];
            if read_old && mapped.contains(&true) {
                self.transfer(Op::Read, &pieces, target)?;
                bounce.buffer.read_at(0, &mut bytes).map_err(Error::from)?;
            }
            let mut fates = vec![Fate::Keep; count];
            edit(Blocks {
                start: w0,
                bytes: &mut bytes,
                mapped: &mapped,
                fates: &mut fates,
            })?;
            for (b0, b1) in runs(&fates, |f| f != Fate::Keep) {
                rw.drop_range(w0 + b0 as u64 * BLOCK_SIZE, w0 + b1 as u64 * BLOCK_SIZE);
            }
            let mut store = to_store(&pieces, &fates);
            if !store.is_empty() {
                bounce.buffer.write_at(0, &bytes).map_err(Error::from)?;
                let fresh = self.allocate_or_sync(rw.ino, &mut store)?;
                rw.fresh.extend(fresh);
                self.transfer(Op::Write, &store, target)?;
            }
            w0 = w1;
        }
        Ok(())
    }
}

/// Per block of a window: whether `pieces` store it.
fn mapped_blocks(pieces: &[FilePiece], count: usize) -> Vec<bool> {
    let mut mapped = vec![false; count];
    for p in pieces.iter().filter(|p| p.device_offset.is_some()) {
        let first = (p.request_offset / BLOCK_SIZE) as usize;
        let end = ((p.request_offset + p.len) / BLOCK_SIZE) as usize;
        for m in &mut mapped[first..end.min(count)] {
            *m = true;
        }
    }
    mapped
}

/// Runs of consecutive blocks whose fate passes `keep`, as block index ranges.
fn runs(fates: &[Fate], keep: impl Fn(Fate) -> bool) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &f) in fates.iter().enumerate() {
        if !keep(f) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == i => last.1 = i + 1,
            _ => out.push((i, i + 1)),
        }
    }
    out
}

/// The parts of `pieces` over blocks to store, as holes (to be given fresh space).
fn to_store(pieces: &[FilePiece], fates: &[Fate]) -> Vec<FilePiece> {
    let mut out = Vec::new();
    for (b0, b1) in runs(fates, |f| f == Fate::Store) {
        let (from, to) = (b0 as u64 * BLOCK_SIZE, b1 as u64 * BLOCK_SIZE);
        for p in pieces {
            let (s, e) = (
                p.request_offset.max(from),
                (p.request_offset + p.len).min(to),
            );
            if s < e {
                out.push(FilePiece {
                    device_offset: None,
                    ..p.part(s, e)
                });
            }
        }
    }
    out
}

/// The records that drop the storage of the block-aligned file ranges `dropped`: one
/// `RemoveExtents` per column run that holds something.
fn drop_records(inode: &Inode, dropped: &[(u64, u64)]) -> Result<Vec<Record>, FsError> {
    let ino = inode.ino();
    let Some(record) = inode.layout() else {
        return Ok(Vec::new());
    };
    let layout = stripe_layout(record)?;
    // Per column, object ranges merged where they touch.
    let mut ranges: Vec<Vec<(u64, u64)>> = vec![Vec::new(); inode.extents().len()];
    for &(a0, a1) in dropped {
        let segments = layout
            .segments(FileOffset(a0), a1 - a0)
            .map_err(|e| FsError::invalid(e.to_string()))?;
        for seg in segments {
            let Some(column) = ranges.get_mut(seg.column) else {
                continue;
            };
            let (s, e) = (seg.device_offset.0, seg.device_offset.0 + seg.len);
            match column.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => column.push((s, e)),
            }
        }
    }
    let mut records = Vec::new();
    for (column, list) in ranges.iter().enumerate() {
        for &(s, e) in list {
            let stored = inode.extents()[column]
                .pieces(s, e - s)
                .iter()
                .any(|p| matches!(p, Piece::Mapped(_)));
            if stored {
                records.push(Record::RemoveExtents {
                    ino,
                    column: column as u16,
                    object_offset: s,
                    len: e - s,
                });
            }
        }
    }
    Ok(records)
}

/// The records that truncate every column of `inode` at the file size of `cut` (see
/// [`Rewrite::cut_at`]): storage past the end of the block holding the last byte goes.
fn cut_records(inode: &Inode, cut: Option<(u64, bool)>) -> Result<Vec<Record>, FsError> {
    let Some((size, shrinks)) = cut else {
        return Ok(Vec::new());
    };
    let Some(record) = inode.layout() else {
        return Ok(Vec::new());
    };
    if !shrinks && !inode.prealloc() {
        return Ok(Vec::new());
    }
    let layout = stripe_layout(record)?;
    let mut records = Vec::new();
    for (column, map) in inode.extents().iter().enumerate() {
        let keep = round_up(layout.column_extent(size, column));
        if map.end() > keep {
            records.push(Record::TruncateExtents {
                ino: inode.ino(),
                column: column as u16,
                object_offset: keep,
            });
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_fates() {
        use Fate::{Drop, Keep, Store};
        let fates = [Store, Store, Keep, Drop, Store, Keep];
        assert_eq!(runs(&fates, |f| f != Keep), vec![(0, 2), (3, 5)]);
        assert_eq!(runs(&fates, |f| f == Store), vec![(0, 2), (4, 5)]);
        assert!(runs(&[Keep, Keep], |f| f != Keep).is_empty());
    }
}
