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

/// Non-overlapping extents of one column object, keyed by object offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentMap {
    map: BTreeMap<u64, (u64, u64)>,
}

impl ExtentMap {
    /// Adds a mapping for a range that is currently a hole; merges with the extent before it
    /// when both object and device ranges continue it.
    pub fn insert(&mut self, e: Extent) {
        if e.len == 0 {
            return;
        }
        if let Some((&start, &(dev, len))) = self.map.range(..e.object_offset).next_back()
            && start + len == e.object_offset
            && dev + len == e.device_offset
        {
            self.map.insert(start, (dev, len + e.len));
            return;
        }
        self.map.insert(e.object_offset, (e.device_offset, e.len));
    }

    /// Splits `object_offset..object_offset+len` into stored pieces and holes, in order.
    pub fn pieces(&self, object_offset: u64, len: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let end = object_offset + len;
        let mut at = object_offset;
        let first = self
            .map
            .range(..=object_offset)
            .next_back()
            .map_or(object_offset, |(&s, _)| s);
        for (&start, &(dev, elen)) in self.map.range(first..end) {
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
        let mut freed = Vec::new();
        let overlapping: Vec<(u64, (u64, u64))> = {
            let first = self
                .map
                .range(..=object_offset)
                .next_back()
                .map_or(object_offset, |(&s, _)| s);
            self.map
                .range(first..end)
                .map(|(&s, &v)| (s, v))
                .filter(|&(s, (_, l))| s + l > object_offset)
                .collect()
        };
        for (start, (dev, elen)) in overlapping {
            self.map.remove(&start);
            let eend = start + elen;
            if start < object_offset {
                self.map.insert(start, (dev, object_offset - start));
            }
            if eend > end {
                self.map.insert(end, (dev + (end - start), eend - end));
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
    }

    /// Every extent, in object order.
    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.map
            .iter()
            .map(|(&object_offset, &(device_offset, len))| Extent {
                object_offset,
                device_offset,
                len,
            })
    }

    /// The device offset just past the extent that ends at or before `object_offset`, if that
    /// extent ends exactly there: where continuing the object contiguously would go.
    pub fn device_end_at(&self, object_offset: u64) -> Option<u64> {
        let (&start, &(dev, len)) = self.map.range(..object_offset).next_back()?;
        (start + len == object_offset).then_some(dev + len)
    }

    /// The first stored object byte at or after `object_offset`, if any (`SEEK_DATA`).
    pub fn next_mapped(&self, object_offset: u64) -> Option<u64> {
        if let Some((&start, &(_, len))) = self.map.range(..=object_offset).next_back()
            && start + len > object_offset
        {
            return Some(object_offset);
        }
        self.map.range(object_offset..).next().map(|(&s, _)| s)
    }

    /// The first object byte at or after `object_offset` that is not stored (`SEEK_HOLE`):
    /// the end of the run of touching extents that holds `object_offset`, or itself.
    pub fn next_unmapped(&self, object_offset: u64) -> u64 {
        let mut at = object_offset;
        if let Some((&start, &(_, len))) = self.map.range(..=at).next_back()
            && start + len > at
        {
            at = start + len;
        }
        // Extents that continue the object on a different device range touch end to start.
        while let Some(&(_, len)) = self.map.get(&at) {
            at += len;
        }
        at
    }

    /// Bytes stored.
    pub fn stored_bytes(&self) -> u64 {
        self.map.values().map(|&(_, l)| l).sum()
    }

    /// The end of the highest mapped object byte (0 if empty).
    pub fn end(&self) -> u64 {
        self.map.iter().next_back().map_or(0, |(&s, &(_, l))| s + l)
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
        }
    }
}
