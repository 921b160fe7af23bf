//! Which piece of the metadata each change touches, the records a piece holds, and the
//! pieces changed since the last checkpoint (what the next one must write).
//!
//! Piece `p` holds inodes `p * PIECE_INODES ..` and everything they own: a directory's
//! entries belong to the directory, a file's extents and xattrs to the file. So every record
//! touches exactly one piece: its owner's.

use std::collections::{BTreeSet, HashMap};

use stripefs_layout::ondisk::{PIECE_BLOCK, PIECE_INODES, Record, piece_of};

use super::{Metadata, held_records};

/// The piece that `record` changes.
pub fn piece_touched(record: &Record) -> u64 {
    match record {
        Record::Inode(r) => piece_of(r.ino),
        Record::Link { parent, .. } | Record::Unlink { parent, .. } => piece_of(*parent),
        Record::FreeInode { ino }
        | Record::Extent { ino, .. }
        | Record::TruncateExtents { ino, .. }
        | Record::RemoveExtents { ino, .. }
        | Record::SetXattr { ino, .. }
        | Record::RemoveXattr { ino, .. } => piece_of(*ino),
    }
}

impl Metadata {
    /// The records of piece `piece`: its inodes' records first, then what they hold. Empty
    /// when no inode of the piece exists.
    pub fn piece_records(&self, piece: u64) -> Vec<Record> {
        let first = piece.saturating_mul(PIECE_INODES);
        let inodes: Vec<_> = (first..first.saturating_add(PIECE_INODES))
            .filter_map(|ino| self.get(ino))
            .collect();
        let mut out: Vec<Record> = inodes.iter().map(|i| Record::Inode(i.record())).collect();
        for inode in inodes {
            held_records(inode, &mut out);
        }
        out
    }

    /// Every piece that holds an inode.
    pub fn pieces(&self) -> BTreeSet<u64> {
        self.iter().map(|i| piece_of(i.ino())).collect()
    }
}

/// Bytes a record may add to its piece beyond its own encoding: removing the middle of an
/// extent leaves two, whose records are longer than the removal's.
const RECORD_SLACK: u64 = 64;

/// The pieces changed since the last checkpoint, and an upper bound of the bytes the next
/// checkpoint writes for them on each replica (so that space for it can be kept free).
#[derive(Debug, Default)]
pub struct DirtyPieces {
    dirty: BTreeSet<u64>,
    /// Padded bytes of each piece as the last checkpoint stored it.
    stored: HashMap<u64, u64>,
    bound: u64,
}

impl DirtyPieces {
    /// Pieces as a checkpoint stored them: `(id, padded bytes)`; nothing dirty.
    pub fn new(stored: impl IntoIterator<Item = (u64, u64)>) -> Self {
        DirtyPieces {
            stored: stored.into_iter().collect(),
            ..Self::default()
        }
    }

    /// What the bound would be once `records` are touched (their encoded `sizes` alike).
    pub fn bound_after(&self, records: &[Record], sizes: &[u64]) -> u64 {
        let mut bound = self.bound;
        let mut fresh = BTreeSet::new();
        for (r, &size) in records.iter().zip(sizes) {
            let piece = piece_touched(r);
            if !self.dirty.contains(&piece) && fresh.insert(piece) {
                bound += self.base(piece);
            }
            bound += size + RECORD_SLACK;
        }
        bound
    }

    /// Marks the piece `record` changes, which grows by at most `size` bytes.
    pub fn touch(&mut self, record: &Record, size: u64) {
        let piece = piece_touched(record);
        if self.dirty.insert(piece) {
            self.bound += self.base(piece);
        }
        self.bound += size + RECORD_SLACK;
    }

    /// Marks `piece` as changed without a record (a whole rewrite).
    pub fn mark(&mut self, piece: u64) {
        if self.dirty.insert(piece) {
            self.bound += self.base(piece);
        }
    }

    /// The bytes the pieces changed so far take once rewritten, at most.
    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// Pieces stored by the last checkpoint.
    pub fn stored_count(&self) -> usize {
        self.stored.len()
    }

    /// Pieces changed and not stored yet (they will be new entries of the table).
    pub fn new_count(&self) -> usize {
        self.dirty
            .iter()
            .filter(|p| !self.stored.contains_key(p))
            .count()
    }

    /// Takes the changed pieces for a checkpoint; nothing is changed afterwards.
    pub fn take(&mut self) -> BTreeSet<u64> {
        self.bound = 0;
        std::mem::take(&mut self.dirty)
    }

    /// Puts back pieces a failed checkpoint did not write.
    pub fn restore(&mut self, pieces: BTreeSet<u64>) {
        for p in pieces {
            self.mark(p);
        }
    }

    /// A checkpoint stored `piece` in `padded` bytes (0: the piece is gone).
    pub fn stored(&mut self, piece: u64, padded: u64) {
        if padded == 0 {
            self.stored.remove(&piece);
        } else {
            self.stored.insert(piece, padded);
        }
    }

    fn base(&self, piece: u64) -> u64 {
        self.stored.get(&piece).copied().unwrap_or(0) + PIECE_BLOCK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::new_inode;
    use stripefs_layout::ondisk::{InodeKind, Timestamp};

    fn inode(ino: u64, kind: InodeKind) -> Record {
        Record::Inode(new_inode(
            ino,
            kind,
            0o644,
            0,
            0,
            Timestamp::default(),
            None,
        ))
    }

    #[test]
    fn a_piece_holds_its_inodes_and_what_they_own() {
        let mut meta = Metadata::default();
        for r in [
            inode(1, InodeKind::Dir),
            inode(300, InodeKind::Symlink),
            Record::Link {
                parent: 1,
                name: b"far".to_vec(),
                ino: 300,
            },
        ] {
            meta.apply(&r).unwrap();
        }
        assert_eq!(meta.pieces(), BTreeSet::from([0, 1]));
        let p0 = meta.piece_records(0);
        assert_eq!(p0.len(), 2, "the root and its entry: {p0:?}");
        assert!(matches!(
            p0[1],
            Record::Link {
                parent: 1,
                ino: 300,
                ..
            }
        ));
        assert_eq!(meta.piece_records(1).len(), 1);
        assert!(meta.piece_records(7).is_empty());
    }

    #[test]
    fn the_bound_counts_each_piece_once_and_every_record() {
        let mut d = DirtyPieces::new([(0, 8192)]);
        let r = inode(3, InodeKind::File);
        assert_eq!(
            d.bound_after(&[r.clone(), r.clone()], &[100, 100]),
            8192 + 4096 + 328
        );
        d.touch(&r, 100);
        d.touch(&r, 100);
        assert_eq!(d.bound(), 8192 + 4096 + 328);
        assert_eq!(d.new_count(), 0);
        d.touch(&inode(600, InodeKind::File), 100);
        assert_eq!(d.new_count(), 1);
        let taken = d.take();
        assert_eq!(taken, BTreeSet::from([0, 2]));
        assert_eq!(d.bound(), 0);
        d.restore(taken);
        assert_eq!(d.bound(), 8192 + 4096 + 4096);
    }
}
