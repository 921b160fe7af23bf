//! Which pieces of the metadata each change touches, the records a piece holds, and the
//! pieces changed since the last checkpoint (what the next one must write).
//!
//! Inode piece `p` holds inodes `p * PIECE_INODES ..` and everything they own: a file's
//! extents and xattrs, a small directory's entries. A directory with more than
//! [`INLINE_ENTRIES`] entries keeps them apart, hashed by name into `2^bits` entry pieces
//! of its own ([`entry_piece`]) of about a thousand entries each, so that a create in a
//! directory of a million entries rewrites a thousand of them, not the million. The number
//! of buckets doubles when they average more than 2048 entries and halves when they fall
//! under 128 (the whole directory is written again then, as a hash table grows); a
//! directory under 128 entries goes back inline.

use std::collections::{BTreeSet, HashMap};

use stripefs_layout::ondisk::{PIECE_BLOCK, PIECE_INODES, Record, piece_of};

use super::{Inode, Metadata, held_records};

/// Piece numbers from here on hold entries of large directories.
pub const ENTRY_PIECES: u64 = 1 << 63;
/// A directory with more entries than this keeps them in entry pieces.
pub const INLINE_ENTRIES: usize = 256;
/// Most buckets a directory's entries are hashed into: `2^MAX_BITS`.
const MAX_BITS: u8 = 15;
/// Directories numbered from here on keep their entries inline (their entry piece numbers
/// would not fit).
const MAX_SPILLED_DIR: u64 = 1 << 43;

/// The entry piece of bucket `bucket` of directory `dir` hashed into `2^bits` buckets.
pub fn entry_piece(dir: u64, bits: u8, bucket: u64) -> u64 {
    ENTRY_PIECES | dir << 20 | u64::from(bits) << 16 | bucket
}

/// The directory, bits and bucket of entry piece `id`.
fn parse_entry_piece(id: u64) -> Option<(u64, u8, u64)> {
    (id >= ENTRY_PIECES).then(|| {
        let rest = id - ENTRY_PIECES;
        (rest >> 20, ((rest >> 16) & 0xf) as u8, rest & 0xffff)
    })
}

/// Whether `record` is one that piece `piece` holds: an inode piece holds records of its
/// own inodes (links only of its own directories), an entry piece links of its directory
/// whose names hash into its bucket. A record in another piece would be read twice once its
/// own piece is written again: mount refuses it.
pub fn belongs(piece: u64, record: &Record) -> bool {
    match (parse_entry_piece(piece), record) {
        (Some((dir, bits, bucket)), Record::Link { parent, name, .. }) => {
            *parent == dir && bucket_of(name, bits) == bucket
        }
        (Some(_), _) => false,
        (None, Record::Inode(r)) => piece_of(r.ino) == piece,
        (None, Record::Link { parent: ino, .. })
        | (None, Record::Extent { ino, .. })
        | (None, Record::SetXattr { ino, .. }) => piece_of(*ino) == piece,
        // What a checkpoint never writes.
        (None, _) => false,
    }
}

/// The bucket of entry `name` among `2^bits` (FNV-1a: stable across runs and builds).
fn bucket_of(name: &[u8], bits: u8) -> u64 {
    let hash = name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash & ((1u64 << bits) - 1)
}

/// The smallest number of bits whose buckets hold `entries` at 1024 each.
fn bits_for(entries: usize) -> u8 {
    let mut bits = 0;
    while bits < MAX_BITS && entries > 1024 << bits {
        bits += 1;
    }
    bits
}

/// Where a directory's entries go after a change that leaves it with between `lo` and `hi`
/// entries, from where they are (`None`: inline).
fn target(now: Option<u8>, lo: usize, hi: usize, dir: u64) -> Option<u8> {
    if dir >= MAX_SPILLED_DIR {
        return None;
    }
    match now {
        None if hi > INLINE_ENTRIES => Some(bits_for(hi)),
        None => None,
        Some(bits) if hi > 2048 << bits => Some(bits_for(hi)),
        Some(0) if lo < 128 => None,
        Some(bits) if lo < 128 << bits => Some(bits_for(lo)),
        Some(bits) => Some(bits),
    }
}

/// Bytes a record may add to its piece beyond its own encoding: removing the middle of an
/// extent leaves two, whose records are longer than the removal's.
const RECORD_SLACK: u64 = 64;

/// What one record does to the pieces: the pieces it changes, and a directory whose entries
/// move (every piece they leave and every piece they go to is among `pieces`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touch {
    pub pieces: Vec<u64>,
    relayout: Option<(u64, Option<u8>)>,
}

/// Where the metadata's pieces are and which changed since the last checkpoint, with an
/// upper bound of the bytes the next checkpoint writes for them on each replica (so that
/// space for it can be kept free).
#[derive(Debug, Default)]
pub struct DirtyPieces {
    dirty: BTreeSet<u64>,
    /// Padded bytes of each piece as the last checkpoint stored it.
    stored: HashMap<u64, u64>,
    bound: u64,
    /// How many dirty pieces are not stored.
    fresh: usize,
    /// Directories whose entries are in entry pieces, and into how many bits they hash.
    spilled: HashMap<u64, u8>,
}

impl DirtyPieces {
    /// Pieces as a checkpoint stored them: `(id, padded bytes)`; nothing dirty. Where each
    /// large directory's entries are follows from its entry pieces.
    pub fn new(stored: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut pieces = DirtyPieces {
            stored: stored.into_iter().collect(),
            ..Self::default()
        };
        let mut layouts: HashMap<u64, BTreeSet<u8>> = HashMap::new();
        for &id in pieces.stored.keys() {
            if let Some((dir, bits, _)) = parse_entry_piece(id) {
                layouts.entry(dir).or_default().insert(bits);
            }
        }
        for (dir, bits) in layouts {
            // One layout per directory; were there several (never written so), the largest
            // is kept and the next checkpoint drops the others.
            if let Some(&most) = bits.last() {
                pieces.spilled.insert(dir, most);
                if bits.len() > 1 {
                    let stale: Vec<u64> = pieces
                        .stored
                        .keys()
                        .copied()
                        .filter(|&id| parse_entry_piece(id).is_some_and(|(d, _, _)| d == dir))
                        .collect();
                    for id in stale {
                        pieces.mark(id);
                    }
                }
            }
        }
        pieces
    }

    /// What `record` would do to the pieces, `meta` being the metadata before it and up to
    /// `nearby` other records of the same change applied.
    pub fn plan(&self, meta: &Metadata, record: &Record, nearby: usize) -> Touch {
        self.plan_within(meta, record, nearby + 1, nearby + 1)
    }

    /// What each of `records`, one change, would do to the pieces, `meta` being the
    /// metadata before it. A directory gains at most the change's links and loses at most
    /// its unlinks: a change that only removes never plans a directory's buckets to grow
    /// (which would count every bucket, and could leave a full filesystem unable to remove).
    pub fn plan_change(&self, meta: &Metadata, records: &[Record]) -> Vec<Touch> {
        let count = |f: fn(&Record) -> bool| records.iter().filter(|&r| f(r)).count();
        let added = count(|r| matches!(r, Record::Link { .. }));
        let removed = count(|r| matches!(r, Record::Unlink { .. }));
        records
            .iter()
            .map(|r| self.plan_within(meta, r, removed, added))
            .collect()
    }

    /// [`plan`](Self::plan) for a change that removes at most `removed` entries from a
    /// directory and adds at most `added`.
    fn plan_within(&self, meta: &Metadata, record: &Record, removed: usize, added: usize) -> Touch {
        match record {
            Record::Link { parent, name, .. } | Record::Unlink { parent, name } => {
                self.plan_entry(meta, *parent, name, removed, added)
            }
            Record::FreeInode { ino } => {
                let mut touch = Touch {
                    pieces: vec![piece_of(*ino)],
                    relayout: None,
                };
                if let Some(&bits) = self.spilled.get(ino) {
                    touch.pieces.extend(all_buckets(*ino, Some(bits)));
                    touch.relayout = Some((*ino, None));
                }
                touch
            }
            Record::Inode(r) => single(r.ino),
            Record::Extent { ino, .. }
            | Record::TruncateExtents { ino, .. }
            | Record::RemoveExtents { ino, .. }
            | Record::SetXattr { ino, .. }
            | Record::RemoveXattr { ino, .. } => single(*ino),
        }
    }

    fn plan_entry(
        &self,
        meta: &Metadata,
        dir: u64,
        name: &[u8],
        removed: usize,
        added: usize,
    ) -> Touch {
        let n = meta.get(dir).map_or(0, |d| d.entries().len());
        let now = self.spilled.get(&dir).copied();
        let next = target(now, n.saturating_sub(removed), n + added, dir);
        let mut pieces = vec![piece_of(dir)];
        if next == now {
            if let Some(bits) = now {
                pieces.push(entry_piece(dir, bits, bucket_of(name, bits)));
            }
            return Touch {
                pieces,
                relayout: None,
            };
        }
        pieces.extend(all_buckets(dir, now));
        pieces.extend(all_buckets(dir, next));
        Touch {
            pieces,
            relayout: Some((dir, next)),
        }
    }

    /// What the bound would be once `touches` (each by a record of the encoded size
    /// alike) are marked.
    pub fn bound_after(&self, touches: &[(Touch, u64)]) -> u64 {
        let mut bound = self.bound;
        let mut fresh = BTreeSet::new();
        for (touch, size) in touches {
            for &piece in &touch.pieces {
                if !self.dirty.contains(&piece) && fresh.insert(piece) {
                    bound += self.base(piece);
                }
                bound += size + RECORD_SLACK;
            }
        }
        bound
    }

    /// Marks what a record changes, which grows each piece by at most `size` bytes.
    pub fn touch(&mut self, touch: Touch, size: u64) {
        for piece in touch.pieces {
            self.mark(piece);
            self.bound += size + RECORD_SLACK;
        }
        match touch.relayout {
            Some((dir, Some(bits))) => {
                self.spilled.insert(dir, bits);
            }
            Some((dir, None)) => {
                self.spilled.remove(&dir);
            }
            None => {}
        }
    }

    /// Marks `piece` as changed without a record (a whole rewrite).
    pub fn mark(&mut self, piece: u64) {
        if self.dirty.insert(piece) {
            self.bound += self.base(piece);
            if !self.stored.contains_key(&piece) {
                self.fresh += 1;
            }
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
        self.fresh
    }

    /// Takes the changed pieces for a checkpoint; nothing is changed afterwards.
    pub fn take(&mut self) -> BTreeSet<u64> {
        self.bound = 0;
        self.fresh = 0;
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
        let dirty = self.dirty.contains(&piece);
        let was = if padded == 0 {
            self.stored.remove(&piece).is_some()
        } else {
            self.stored.insert(piece, padded).is_some()
        };
        let is = padded > 0;
        // A piece dirtied again while its checkpoint was written counts as new only if it
        // is not stored.
        if dirty && was && !is {
            self.fresh += 1;
        } else if dirty && !was && is {
            self.fresh = self.fresh.saturating_sub(1);
        }
    }

    fn base(&self, piece: u64) -> u64 {
        self.stored.get(&piece).copied().unwrap_or(0) + PIECE_BLOCK
    }

    /// The records of each of `pieces`, in the same order: an inode piece's inode records
    /// first, then what they hold; an entry piece's links. Empty for a piece that holds
    /// nothing (any more).
    pub fn records(&self, meta: &Metadata, pieces: &BTreeSet<u64>) -> Vec<(u64, Vec<Record>)> {
        let mut out = Vec::with_capacity(pieces.len());
        self.each_piece(meta, pieces, |id, records| out.push((id, records)));
        out
    }

    /// Like [`DirtyPieces::records`], handing each piece to `f` as it is built, so that a
    /// caller that encodes them holds one piece's records at a time (one directory's, for
    /// entry pieces), not every changed piece's.
    pub fn each_piece(
        &self,
        meta: &Metadata,
        pieces: &BTreeSet<u64>,
        mut f: impl FnMut(u64, Vec<Record>),
    ) {
        let mut buckets: HashMap<u64, Vec<u64>> = HashMap::new();
        for &piece in pieces {
            match parse_entry_piece(piece) {
                Some((dir, _, _)) => buckets.entry(dir).or_default().push(piece),
                None => f(piece, self.inode_piece(meta, piece)),
            }
        }
        for (dir, ids) in buckets {
            for (id, records) in self.entry_pieces(meta, dir, &ids) {
                f(id, records);
            }
        }
    }

    fn inode_piece(&self, meta: &Metadata, piece: u64) -> Vec<Record> {
        let first = piece.saturating_mul(PIECE_INODES);
        let inodes: Vec<&Inode> = (first..first.saturating_add(PIECE_INODES))
            .filter_map(|ino| meta.get(ino))
            .collect();
        let mut out: Vec<Record> = inodes.iter().map(|i| Record::Inode(i.record())).collect();
        for inode in inodes {
            let inline = !self.spilled.contains_key(&inode.ino());
            held_records(inode, inline, &mut out);
        }
        out
    }

    /// The records of entry pieces `ids` of directory `dir`, its entries read once.
    fn entry_pieces(&self, meta: &Metadata, dir: u64, ids: &[u64]) -> Vec<(u64, Vec<Record>)> {
        let mut out: Vec<(u64, Vec<Record>)> = ids.iter().map(|&id| (id, Vec::new())).collect();
        let (Some(&bits), Some(inode)) = (self.spilled.get(&dir), meta.get(dir)) else {
            return out;
        };
        let wanted: HashMap<u64, usize> = ids
            .iter()
            .enumerate()
            .filter(|&(_, &id)| parse_entry_piece(id).is_some_and(|(_, b, _)| b == bits))
            .map(|(i, &id)| (id, i))
            .collect();
        if wanted.is_empty() {
            return out;
        }
        // Entries in name order within each piece, without sorting the whole directory.
        for (name, &child) in inode.entries().unordered() {
            let id = entry_piece(dir, bits, bucket_of(name, bits));
            if let Some(&i) = wanted.get(&id) {
                out[i].1.push(Record::Link {
                    parent: dir,
                    name: name.to_vec(),
                    ino: child,
                });
            }
        }
        for (_, records) in &mut out {
            records.sort_unstable_by(|a, b| match (a, b) {
                (Record::Link { name: x, .. }, Record::Link { name: y, .. }) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            });
        }
        out
    }

    /// Every piece that holds something.
    pub fn all(&self, meta: &Metadata) -> BTreeSet<u64> {
        let mut pieces: BTreeSet<u64> = meta.iter().map(|i| piece_of(i.ino())).collect();
        for (&dir, &bits) in &self.spilled {
            pieces.extend(all_buckets(dir, Some(bits)));
        }
        pieces
    }
}

fn single(ino: u64) -> Touch {
    Touch {
        pieces: vec![piece_of(ino)],
        relayout: None,
    }
}

/// Every entry piece of `dir` hashed into `bits` (none inline).
fn all_buckets(dir: u64, bits: Option<u8>) -> Vec<u64> {
    bits.map_or_else(Vec::new, |bits| {
        (0..1u64 << bits)
            .map(|b| entry_piece(dir, bits, b))
            .collect()
    })
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

    fn link(ino: u64) -> Record {
        Record::Link {
            parent: 1,
            name: format!("f{ino}").into_bytes(),
            ino,
        }
    }

    fn links(pieces: &[(u64, Vec<Record>)]) -> usize {
        pieces
            .iter()
            .flat_map(|(_, r)| r)
            .filter(|r| matches!(r, Record::Link { .. }))
            .count()
    }

    /// Applies `record` as the filesystem does: marks what it touches, then applies it.
    fn change(meta: &mut Metadata, dirty: &mut DirtyPieces, record: Record) {
        let touch = dirty.plan(meta, &record, 0);
        dirty.touch(touch, 50);
        meta.apply(&record).unwrap();
    }

    #[test]
    fn entry_pieces_name_their_directory_and_bucket() {
        let id = entry_piece(77, 3, 5);
        assert_eq!(parse_entry_piece(id), Some((77, 3, 5)));
        assert_eq!(parse_entry_piece(12), None);
    }

    #[test]
    fn a_record_belongs_to_its_owner_piece_only() {
        assert!(belongs(1, &inode(300, InodeKind::File)));
        assert!(!belongs(0, &inode(300, InodeKind::File)));
        let entry = Record::Link {
            parent: 7,
            name: b"x".to_vec(),
            ino: 9,
        };
        let bucket = bucket_of(b"x", 2);
        assert!(belongs(entry_piece(7, 2, bucket), &entry));
        assert!(!belongs(entry_piece(7, 2, (bucket + 1) % 4), &entry));
        assert!(!belongs(entry_piece(8, 2, bucket), &entry));
        assert!(belongs(0, &entry), "inline in its directory's piece");
        assert!(!belongs(0, &Record::FreeInode { ino: 3 }));
    }

    #[test]
    fn a_piece_holds_its_inodes_and_what_they_own() {
        let mut meta = Metadata::default();
        let mut dirty = DirtyPieces::default();
        for r in [
            inode(1, InodeKind::Dir),
            inode(300, InodeKind::Symlink),
            link(300),
        ] {
            change(&mut meta, &mut dirty, r);
        }
        assert_eq!(dirty.all(&meta), BTreeSet::from([0, 1]));
        let got = dirty.records(&meta, &BTreeSet::from([0, 1, 7]));
        assert_eq!(got[0].1.len(), 2, "the root and its entry: {got:?}");
        assert!(matches!(
            got[0].1[1],
            Record::Link {
                parent: 1,
                ino: 300,
                ..
            }
        ));
        assert_eq!(got[1].1.len(), 1);
        assert!(got[2].1.is_empty());
    }

    #[test]
    fn a_large_directory_spreads_its_entries_and_comes_back_inline() {
        let mut meta = Metadata::default();
        let mut dirty = DirtyPieces::default();
        change(&mut meta, &mut dirty, inode(1, InodeKind::Dir));
        let files = 3000u64;
        for ino in 2..2 + files {
            change(&mut meta, &mut dirty, inode(ino, InodeKind::File));
            change(&mut meta, &mut dirty, link(ino));
        }
        let bits = *dirty.spilled.get(&1).expect("spilled");
        assert_eq!(
            bits, 2,
            "past 2048 entries in one bucket: four buckets of at most 1024"
        );
        let all = dirty.all(&meta);
        let got = dirty.records(&meta, &all);
        assert_eq!(links(&got), files as usize, "every entry once");
        let inline: usize = links(&dirty.records(&meta, &BTreeSet::from([0])));
        assert_eq!(inline, 0, "none inline");
        // One more create touches the directory's inode piece and one bucket.
        change(&mut meta, &mut dirty, inode(1_000_000, InodeKind::File));
        dirty.take();
        change(&mut meta, &mut dirty, link(1_000_000));
        assert_eq!(dirty.dirty.len(), 2, "{:?}", dirty.dirty);
        // Emptied: back inline, and its entry pieces hold nothing.
        for ino in (2..2 + files).chain([1_000_000]) {
            let name = format!("f{ino}").into_bytes();
            change(&mut meta, &mut dirty, Record::Unlink { parent: 1, name });
        }
        assert!(!dirty.spilled.contains_key(&1));
        let old = all_buckets(1, Some(2)).into_iter().collect();
        assert_eq!(links(&dirty.records(&meta, &old)), 0);
    }

    #[test]
    fn the_bound_counts_each_piece_once_and_every_record() {
        let mut d = DirtyPieces::new([(0, 8192)]);
        let t = single(3);
        assert_eq!(
            d.bound_after(&[(t.clone(), 100), (t.clone(), 100)]),
            8192 + 4096 + 328
        );
        d.touch(t.clone(), 100);
        d.touch(t, 100);
        assert_eq!(d.bound(), 8192 + 4096 + 328);
        assert_eq!(d.new_count(), 0);
        d.touch(single(600), 100);
        assert_eq!(d.new_count(), 1);
        let taken = d.take();
        assert_eq!(taken, BTreeSet::from([0, 2]));
        assert_eq!(d.bound(), 0);
        d.restore(taken);
        assert_eq!(d.bound(), 8192 + 4096 + 4096);
    }

    #[test]
    fn a_change_that_only_removes_never_plans_growth() {
        let mut meta = Metadata::default();
        let mut dirty = DirtyPieces::default();
        change(&mut meta, &mut dirty, inode(1, InodeKind::Dir));
        // 2048 entries: one bucket, full; one more would hash them into more.
        for ino in 2..2 + 2048 {
            change(&mut meta, &mut dirty, inode(ino, InodeKind::File));
            change(&mut meta, &mut dirty, link(ino));
        }
        assert_eq!(dirty.spilled.get(&1), Some(&0));
        let unlink = Record::Unlink {
            parent: 1,
            name: b"f2".to_vec(),
        };
        let planned = dirty.plan_change(&meta, std::slice::from_ref(&unlink));
        assert_eq!(planned[0].relayout, None, "{planned:?}");
        assert_eq!(planned[0].pieces.len(), 2, "its inode piece and its bucket");
        // With a link in the same change (a rename), growth is planned.
        let planned = dirty.plan_change(&meta, &[unlink, link(5000)]);
        assert!(planned[1].relayout.is_some(), "{planned:?}");
    }

    #[test]
    fn layouts_come_back_from_the_stored_pieces() {
        let d = DirtyPieces::new([(0, 4096), (entry_piece(9, 2, 1), 4096)]);
        assert_eq!(d.spilled.get(&9), Some(&2));
        assert!(d.dirty.is_empty());
    }
}
