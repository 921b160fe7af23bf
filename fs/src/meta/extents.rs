//! The map of one file column's object onto its device: which object ranges are stored where.

use std::collections::BTreeMap;

/// A stored range: `len` bytes of the object at `object_offset` live at `device_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub object_offset: u64,
    pub device_offset: u64,
    pub len: u64,
}

/// One piece of an object range: stored somewhere, or a hole (reads as zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    Mapped(Extent),
    Hole { object_offset: u64, len: u64 },
}

/// One stored range as held: (object offset, device offset, length).
type Run = (u64, u64, u64);

/// Extent lists up to this long are held as a sorted slice; longer ones as a B-tree (the
/// unit tests use a short limit, so their random maps take every form).
const SMALL_MAX: usize = if cfg!(test) { 4 } else { 32 };

/// Non-overlapping extents of one column object, keyed by object offset.
///
/// Held compactly: nothing for an empty column, one run inline (the common small file,
/// no heap), a sorted boxed slice up to [`SMALL_MAX`] runs, a B-tree beyond.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentMap {
    repr: Repr,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Repr {
    #[default]
    Empty,
    One(Run),
    Small(Box<[Run]>),
    Tree(BTreeMap<u64, (u64, u64)>),
}

/// The runs of a map whose object offset lies in a range, in order.
enum Runs<'a> {
    Slice(std::slice::Iter<'a, Run>),
    Tree(std::collections::btree_map::Range<'a, u64, (u64, u64)>),
}

impl Iterator for Runs<'_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        match self {
            Runs::Slice(i) => i.next().copied(),
            Runs::Tree(i) => i.next().map(|(&s, &(d, l))| (s, d, l)),
        }
    }
}

impl DoubleEndedIterator for Runs<'_> {
    fn next_back(&mut self) -> Option<Run> {
        match self {
            Runs::Slice(i) => i.next_back().copied(),
            Runs::Tree(i) => i.next_back().map(|(&s, &(d, l))| (s, d, l)),
        }
    }
}

impl ExtentMap {
    /// An empty map (no stored range).
    pub const EMPTY: ExtentMap = ExtentMap { repr: Repr::Empty };

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        matches!(self.repr, Repr::Empty)
    }

    fn slice(&self) -> Option<&[Run]> {
        match &self.repr {
            Repr::Empty => Some(&[]),
            Repr::One(run) => Some(std::slice::from_ref(run)),
            Repr::Small(runs) => Some(runs),
            Repr::Tree(_) => None,
        }
    }

    /// The runs starting in `lo..hi` (`hi` exclusive; `inclusive_hi` makes it `lo..=hi`).
    fn runs(&self, lo: u64, hi: u64, inclusive_hi: bool) -> Runs<'_> {
        if !inclusive_hi && hi <= lo {
            return Runs::Slice([].iter());
        }
        match self.slice() {
            Some(runs) => {
                let a = runs.partition_point(|r| r.0 < lo);
                let b = if inclusive_hi {
                    runs.partition_point(|r| r.0 <= hi)
                } else {
                    runs.partition_point(|r| r.0 < hi)
                };
                Runs::Slice(runs[a..b.max(a)].iter())
            }
            None => match &self.repr {
                Repr::Tree(map) if inclusive_hi => Runs::Tree(map.range(lo..=hi)),
                Repr::Tree(map) => Runs::Tree(map.range(lo..hi)),
                _ => Runs::Slice([].iter()),
            },
        }
    }

    /// The last run starting at or before `at`.
    fn at_or_before(&self, at: u64) -> Option<Run> {
        self.runs(0, at, true).next_back()
    }

    /// The last run starting before `at`.
    fn before(&self, at: u64) -> Option<Run> {
        self.runs(0, at, false).next_back()
    }

    /// The run starting exactly at `at`.
    fn starting_at(&self, at: u64) -> Option<Run> {
        self.runs(at, at, true).next()
    }

    /// Changes the map as a B-tree, then holds the result in the smallest form.
    fn edit<R>(&mut self, f: impl FnOnce(&mut BTreeMap<u64, (u64, u64)>) -> R) -> R {
        let mut map = match std::mem::take(&mut self.repr) {
            Repr::Tree(map) => map,
            other => {
                let held = ExtentMap { repr: other };
                held.iter()
                    .map(|e| (e.object_offset, (e.device_offset, e.len)))
                    .collect()
            }
        };
        let out = f(&mut map);
        self.repr = match map.len() {
            0 => Repr::Empty,
            1 => match map.first_key_value() {
                Some((&s, &(d, l))) => Repr::One((s, d, l)),
                None => Repr::Empty,
            },
            n if n <= SMALL_MAX => Repr::Small(map.iter().map(|(&s, &(d, l))| (s, d, l)).collect()),
            _ => Repr::Tree(map),
        };
        out
    }

    /// Adds a mapping for a range that is currently a hole; merges with the extent before it
    /// when both object and device ranges continue it.
    pub fn insert(&mut self, e: Extent) {
        if e.len == 0 {
            return;
        }
        if let Some((start, dev, len)) = self.before(e.object_offset)
            && start + len == e.object_offset
            && dev + len == e.device_offset
        {
            // Grows the run in place: no change of form.
            match &mut self.repr {
                Repr::One(run) => run.2 += e.len,
                Repr::Small(runs) => {
                    if let Ok(i) = runs.binary_search_by_key(&start, |r| r.0) {
                        runs[i].2 += e.len;
                    }
                }
                Repr::Tree(map) => {
                    map.insert(start, (dev, len + e.len));
                }
                Repr::Empty => {}
            }
            return;
        }
        if let Repr::Empty = self.repr {
            self.repr = Repr::One((e.object_offset, e.device_offset, e.len));
            return;
        }
        self.edit(|map| {
            map.insert(e.object_offset, (e.device_offset, e.len));
        });
    }

    /// Splits `object_offset..object_offset+len` into stored pieces and holes, in order.
    pub fn pieces(&self, object_offset: u64, len: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let end = object_offset + len;
        let mut at = object_offset;
        let first = self
            .at_or_before(object_offset)
            .map_or(object_offset, |(s, _, _)| s);
        for (start, dev, elen) in self.runs(first, end, false) {
            let eend = start + elen;
            if eend <= at {
                continue;
            }
            if start > at {
                out.push(Piece::Hole {
                    object_offset: at,
                    len: start - at,
                });
                at = start;
            }
            let take = eend.min(end) - at;
            out.push(Piece::Mapped(Extent {
                object_offset: at,
                device_offset: dev + (at - start),
                len: take,
            }));
            at += take;
        }
        if at < end {
            out.push(Piece::Hole {
                object_offset: at,
                len: end - at,
            });
        }
        out
    }

    /// Removes every mapping at and beyond `object_offset`; returns the freed device ranges.
    pub fn truncate(&mut self, object_offset: u64) -> Vec<Extent> {
        self.remove(object_offset, u64::MAX - object_offset)
    }

    /// Removes the mappings inside `object_offset..object_offset+len`; returns the freed
    /// device ranges.
    pub fn remove(&mut self, object_offset: u64, len: u64) -> Vec<Extent> {
        let end = object_offset.saturating_add(len);
        let first = self
            .at_or_before(object_offset)
            .map_or(object_offset, |(s, _, _)| s);
        let overlapping: Vec<Run> = self
            .runs(first, end, false)
            .filter(|&(s, _, l)| s + l > object_offset)
            .collect();
        if overlapping.is_empty() {
            return Vec::new();
        }
        self.edit(|map| {
            let mut freed = Vec::new();
            for (start, dev, elen) in overlapping {
                map.remove(&start);
                let eend = start + elen;
                if start < object_offset {
                    map.insert(start, (dev, object_offset - start));
                }
                if eend > end {
                    map.insert(end, (dev + (end - start), eend - end));
                }
                let cut_start = start.max(object_offset);
                let cut_end = eend.min(end);
                freed.push(Extent {
                    object_offset: cut_start,
                    device_offset: dev + (cut_start - start),
                    len: cut_end - cut_start,
                });
            }
            freed
        })
    }

    /// Every extent, in object order.
    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.runs(0, u64::MAX, true)
            .map(|(object_offset, device_offset, len)| Extent {
                object_offset,
                device_offset,
                len,
            })
    }

    /// The device offset just past the extent that ends at or before `object_offset`, if that
    /// extent ends exactly there: where continuing the object contiguously would go.
    pub fn device_end_at(&self, object_offset: u64) -> Option<u64> {
        let (start, dev, len) = self.before(object_offset)?;
        (start + len == object_offset).then_some(dev + len)
    }

    /// The first stored object byte at or after `object_offset`, if any (`SEEK_DATA`).
    pub fn next_mapped(&self, object_offset: u64) -> Option<u64> {
        if let Some((start, _, len)) = self.at_or_before(object_offset)
            && start + len > object_offset
        {
            return Some(object_offset);
        }
        self.runs(object_offset, u64::MAX, true)
            .next()
            .map(|(s, _, _)| s)
    }

    /// The first object byte at or after `object_offset` that is not stored (`SEEK_HOLE`):
    /// the end of the run of touching extents that holds `object_offset`, or itself.
    pub fn next_unmapped(&self, object_offset: u64) -> u64 {
        let mut at = object_offset;
        if let Some((start, _, len)) = self.at_or_before(at)
            && start + len > at
        {
            at = start + len;
        }
        // Extents that continue the object on a different device range touch end to start.
        while let Some((_, _, len)) = self.starting_at(at) {
            at += len;
        }
        at
    }

    /// Bytes stored.
    pub fn stored_bytes(&self) -> u64 {
        match &self.repr {
            Repr::Empty => 0,
            Repr::One(run) => run.2,
            Repr::Small(runs) => runs.iter().map(|r| r.2).sum(),
            Repr::Tree(map) => map.values().map(|&(_, l)| l).sum(),
        }
    }

    /// The end of the highest mapped object byte (0 if empty).
    pub fn end(&self) -> u64 {
        self.runs(0, u64::MAX, true)
            .next_back()
            .map_or(0, |(s, _, l)| s + l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ext(o: u64, d: u64, l: u64) -> Extent {
        Extent {
            object_offset: o,
            device_offset: d,
            len: l,
        }
    }

    #[test]
    fn insert_merges_contiguous() {
        let mut m = ExtentMap::default();
        m.insert(ext(0, 1000, 10));
        m.insert(ext(10, 1010, 5));
        m.insert(ext(20, 2000, 5));
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![ext(0, 1000, 15), ext(20, 2000, 5)]
        );
    }

    #[test]
    fn pieces_and_holes() {
        let mut m = ExtentMap::default();
        m.insert(ext(10, 100, 10));
        assert_eq!(
            m.pieces(5, 20),
            vec![
                Piece::Hole {
                    object_offset: 5,
                    len: 5
                },
                Piece::Mapped(ext(10, 100, 10)),
                Piece::Hole {
                    object_offset: 20,
                    len: 5
                }
            ]
        );
        assert_eq!(m.pieces(12, 3), vec![Piece::Mapped(ext(12, 102, 3))]);
    }

    #[test]
    fn remove_splits() {
        let mut m = ExtentMap::default();
        m.insert(ext(0, 100, 30));
        assert_eq!(m.remove(10, 10), vec![ext(10, 110, 10)]);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![ext(0, 100, 10), ext(20, 120, 10)]
        );
        assert_eq!(m.truncate(5), vec![ext(5, 105, 5), ext(20, 120, 10)]);
        assert_eq!(m.end(), 5);
    }

    #[test]
    fn next_mapped_and_unmapped() {
        let mut m = ExtentMap::default();
        m.insert(ext(10, 100, 10));
        m.insert(ext(20, 500, 5));
        m.insert(ext(40, 900, 5));
        assert_eq!(m.next_mapped(0), Some(10));
        assert_eq!(m.next_mapped(12), Some(12));
        assert_eq!(m.next_mapped(25), Some(40));
        assert_eq!(m.next_mapped(45), None);
        assert_eq!(m.next_unmapped(0), 0);
        assert_eq!(m.next_unmapped(10), 25);
        assert_eq!(m.next_unmapped(24), 25);
        assert_eq!(m.next_unmapped(41), 45);
    }

    proptest! {
        /// Against a byte-per-offset model: after random inserts into holes and removals,
        /// `pieces` describes every offset exactly as the model does.
        #[test]
        fn agrees_with_model(ops in proptest::collection::vec((0u64..64, 1u64..16, any::<bool>()), 1..40)) {
            let mut m = ExtentMap::default();
            let mut model: Vec<Option<u64>> = vec![None; 96];
            let mut next_dev = 1000u64;
            for (start, len, insert) in ops {
                if insert {
                    // Insert only into holes, as the filesystem does.
                    for piece in m.pieces(start, len) {
                        if let Piece::Hole { object_offset, len } = piece {
                            m.insert(ext(object_offset, next_dev, len));
                            for i in 0..len {
                                model[(object_offset + i) as usize] = Some(next_dev + i);
                            }
                            next_dev += len + 7;
                        }
                    }
                } else {
                    let freed = m.remove(start, len);
                    let total: u64 = freed.iter().map(|e| e.len).sum();
                    let expected = (start..start + len).filter(|&o| model[o as usize].is_some()).count() as u64;
                    prop_assert_eq!(total, expected);
                    for i in start..start + len {
                        model[i as usize] = None;
                    }
                }
            }
            for piece in m.pieces(0, 96) {
                match piece {
                    Piece::Mapped(e) => for i in 0..e.len {
                        prop_assert_eq!(model[(e.object_offset + i) as usize], Some(e.device_offset + i));
                    },
                    Piece::Hole { object_offset, len } => for i in 0..len {
                        prop_assert_eq!(model[(object_offset + i) as usize], None);
                    },
                }
            }
            // The searches and sums, in whichever form the map is held.
            let mapped = |o: usize| model.get(o).copied().flatten().is_some();
            for o in 0..96usize {
                let data = (o..96).find(|&i| mapped(i)).map(|i| i as u64);
                prop_assert_eq!(m.next_mapped(o as u64), data);
                let hole = (o..).find(|&i| !mapped(i)).unwrap_or(96) as u64;
                prop_assert_eq!(m.next_unmapped(o as u64), hole);
                if let Some(end) = m.device_end_at(o as u64) {
                    prop_assert_eq!(o.checked_sub(1).and_then(|p| model[p]), Some(end - 1));
                }
            }
            let stored = model.iter().filter(|d| d.is_some()).count() as u64;
            prop_assert_eq!(m.stored_bytes(), stored);
            let end = model.iter().rposition(|d| d.is_some()).map_or(0, |p| p as u64 + 1);
            prop_assert_eq!(m.end(), end);
            prop_assert_eq!(m.is_empty(), stored == 0);
        }
    }
}
