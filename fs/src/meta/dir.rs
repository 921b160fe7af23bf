//! A directory's entries: by name, and at stable positions for directory streams.
//!
//! Every entry gets a position when it is added (the next number of its directory, never
//! reused while the filesystem is open). A directory stream that continues from a position
//! sees every entry added before it was read and still there, whatever was removed
//! meanwhile: `rm -rf` of a large directory removes every entry while reading it, and the
//! kernel can resume any stream (telldir/seekdir, or its own cache of the listing) without
//! the daemon keeping one snapshot per open directory. Positions are not stored on the
//! devices: mount assigns them again (a directory stream does not outlive the mount).
//!
//! Held compactly (a million files cost what their names and numbers take, see DESIGN.md):
//! one array of entries in position order, the names back to back in one buffer, and a hash
//! table of entry indices for lookups by name. A removed entry leaves a hole in the array
//! until holes are half of it, then the array and the buffer are rewritten without them
//! (positions are kept in the entries, so streams go on from where they were).

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use hashbrown::HashTable;

/// The first position of an entry: 0 and 1 are "." and "..".
pub const FIRST_POSITION: u64 = 2;

/// The longest name an entry may have (names are validated to `NAME_MAX`, 255, before).
pub const LONGEST_NAME: usize = 0xffff;

/// A removed entry's `name`.
const REMOVED: u64 = u64::MAX;

/// One entry: the inode, the position, and where its name is (offset in the buffer << 16 |
/// length), or [`REMOVED`].
#[derive(Clone, Copy, Debug)]
struct Slot {
    ino: u64,
    position: u64,
    name: u64,
}

impl Slot {
    fn is_live(&self) -> bool {
        self.name != REMOVED
    }
}

fn name_of<'a>(names: &'a [u8], slot: &Slot) -> &'a [u8] {
    let at = (slot.name >> 16) as usize;
    let len = (slot.name & 0xffff) as usize;
    names.get(at..at + len).unwrap_or(&[])
}

/// The hash of a name: keyed at random once per process (names come from users).
fn hash(name: &[u8]) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(name)
}

/// The entries of one directory.
#[derive(Clone, Debug)]
pub struct DirEntries {
    /// Entries in position order (removed ones too, until the next compaction).
    slots: Vec<Slot>,
    /// The names of the entries, back to back.
    names: Vec<u8>,
    /// Indices into `slots` of the live entries, by the hash of their names.
    index: HashTable<u32>,
    /// Removed entries still in `slots`.
    removed: usize,
    next_position: u64,
}

impl Default for DirEntries {
    fn default() -> Self {
        Self::new()
    }
}

impl DirEntries {
    /// No entries.
    pub const fn new() -> Self {
        DirEntries {
            slots: Vec::new(),
            names: Vec::new(),
            index: HashTable::new(),
            removed: 0,
            next_position: FIRST_POSITION,
        }
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        let (slots, names) = (&self.slots, &self.names);
        self.index
            .find(hash(name), |&i| name_of(names, &slots[i as usize]) == name)
            .map(|&i| i as usize)
    }

    /// The inode `name` refers to.
    pub fn get(&self, name: &[u8]) -> Option<&u64> {
        self.find(name).map(|i| &self.slots[i].ino)
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.find(name).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.removed
    }

    /// (name, inode) in name order.
    pub fn iter(&self) -> std::vec::IntoIter<(&[u8], &u64)> {
        let mut all: Vec<(&[u8], &u64)> = self
            .slots
            .iter()
            .filter(|s| s.is_live())
            .map(|s| (name_of(&self.names, s), &s.ino))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// (name, inode) in no particular order (position order), without the sort of
    /// [`DirEntries::iter`].
    pub fn unordered(&self) -> impl Iterator<Item = (&[u8], &u64)> {
        self.slots
            .iter()
            .filter(|s| s.is_live())
            .map(|s| (name_of(&self.names, s), &s.ino))
    }

    /// The inodes, in name order.
    pub fn values(&self) -> impl Iterator<Item = &u64> {
        self.iter().map(|(_, ino)| ino)
    }

    /// (position, name, inode) of the entries at `position` and after, in position order.
    pub fn from_position(&self, position: u64) -> impl Iterator<Item = (u64, &[u8], u64)> {
        let position = position.max(FIRST_POSITION);
        let start = self.slots.partition_point(|s| s.position < position);
        self.slots[start..]
            .iter()
            .filter(|s| s.is_live())
            .map(|s| (s.position, name_of(&self.names, s), s.ino))
    }

    /// Adds `name` → `ino` at the next position; false (and nothing changed) if `name` is
    /// there already. `name` is at most [`LONGEST_NAME`] bytes (the caller checks).
    pub(crate) fn insert(&mut self, name: &[u8], ino: u64) -> bool {
        debug_assert!(name.len() <= LONGEST_NAME);
        if self.contains_key(name) {
            return false;
        }
        let at = self.next_position;
        self.next_position += 1;
        let Self {
            slots,
            names,
            index,
            ..
        } = self;
        let i = slots.len() as u32;
        let len = name.len().min(LONGEST_NAME);
        slots.push(Slot {
            ino,
            position: at,
            name: (names.len() as u64) << 16 | len as u64,
        });
        names.extend_from_slice(&name[..len]);
        index.insert_unique(hash(name), i, |&j| hash(name_of(names, &slots[j as usize])));
        true
    }

    /// Removes `name`; returns the inode it referred to.
    pub(crate) fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let Self {
            slots,
            names,
            index,
            ..
        } = self;
        let entry = index
            .find_entry(hash(name), |&i| name_of(names, &slots[i as usize]) == name)
            .ok()?;
        let (i, _) = entry.remove();
        let slot = &mut slots[i as usize];
        slot.name = REMOVED;
        let ino = slot.ino;
        self.removed += 1;
        if self.removed * 2 > self.slots.len() {
            self.compact();
        }
        Some(ino)
    }

    /// Rewrites the entries and names without the removed ones, in tight allocations.
    fn compact(&mut self) {
        let live = self.len();
        let bytes: usize = self
            .slots
            .iter()
            .filter(|s| s.is_live())
            .map(|s| (s.name & 0xffff) as usize)
            .sum();
        let mut slots = Vec::with_capacity(live);
        let mut names = Vec::with_capacity(bytes);
        for s in self.slots.iter().filter(|s| s.is_live()) {
            let name = name_of(&self.names, s);
            slots.push(Slot {
                name: (names.len() as u64) << 16 | name.len() as u64,
                ..*s
            });
            names.extend_from_slice(name);
        }
        let mut index = HashTable::with_capacity(live);
        for (i, s) in slots.iter().enumerate() {
            index.insert_unique(hash(name_of(&names, s)), i as u32, |&j: &u32| {
                hash(name_of(&names, &slots[j as usize]))
            });
        }
        self.slots = slots;
        self.names = names;
        self.index = index;
        self.removed = 0;
    }
}

impl<'a> IntoIterator for &'a DirEntries {
    type Item = (&'a [u8], &'a u64);
    type IntoIter = std::vec::IntoIter<Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(d: &DirEntries, from: u64) -> Vec<(u64, String, u64)> {
        d.from_position(from)
            .map(|(at, n, i)| (at, String::from_utf8_lossy(n).into_owned(), i))
            .collect()
    }

    #[test]
    fn positions_do_not_move_when_entries_go() {
        let mut d = DirEntries::default();
        for (i, n) in ["c", "a", "b", "d"].iter().enumerate() {
            assert!(d.insert(n.as_bytes(), 10 + i as u64));
        }
        assert!(!d.insert(b"a", 99), "a name is added once");
        assert_eq!(d.get(b"a"), Some(&11));
        // A stream read "c" and "a" (positions 2 and 3), then "c" and "b" went.
        assert_eq!(d.remove(b"c"), Some(10));
        assert_eq!(d.remove(b"b"), Some(12));
        assert_eq!(d.remove(b"b"), None);
        assert_eq!(names(&d, 4), vec![(5, "d".into(), 13)]);
        assert!(d.insert(b"e", 14));
        assert_eq!(
            names(&d, 0),
            vec![
                (3, "a".into(), 11),
                (5, "d".into(), 13),
                (6, "e".into(), 14)
            ]
        );
        let by_name: Vec<&[u8]> = d.iter().map(|(n, _)| n).collect();
        assert_eq!(by_name, vec![&b"a"[..], b"d", b"e"]);
        assert_eq!(d.len(), 3);
    }
}

#[cfg(test)]
mod model {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a map by name and a map by position: after random adds and removals
        /// (enough to compact many times), lookups, the name order, and every stream from
        /// every position agree.
        #[test]
        fn agrees_with_model(ops in proptest::collection::vec((0u8..40, any::<bool>()), 1..300)) {
            let mut d = DirEntries::default();
            let mut by_name: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
            let mut next = FIRST_POSITION;
            for (k, (n, add)) in ops.into_iter().enumerate() {
                let name = format!("entry-{n}").into_bytes();
                if add {
                    let fresh = !by_name.contains_key(&name);
                    prop_assert_eq!(d.insert(&name, k as u64), fresh);
                    if fresh {
                        by_name.insert(name, (k as u64, next));
                        next += 1;
                    }
                } else {
                    prop_assert_eq!(d.remove(&name), by_name.remove(&name).map(|(i, _)| i));
                }
                prop_assert_eq!(d.len(), by_name.len());
                prop_assert!(d.removed * 2 <= d.slots.len());
            }
            for n in 0u8..40 {
                let name = format!("entry-{n}").into_bytes();
                prop_assert_eq!(d.get(&name).copied(), by_name.get(&name).map(|&(i, _)| i));
            }
            let names: Vec<(Vec<u8>, u64)> = d.iter().map(|(n, &i)| (n.to_vec(), i)).collect();
            let expected: Vec<(Vec<u8>, u64)> = by_name.iter().map(|(n, &(i, _))| (n.clone(), i)).collect();
            prop_assert_eq!(names, expected);
            let mut by_position: Vec<(u64, Vec<u8>, u64)> =
                by_name.iter().map(|(n, &(i, at))| (at, n.clone(), i)).collect();
            by_position.sort();
            for from in 0..next + 2 {
                let stream: Vec<(u64, Vec<u8>, u64)> =
                    d.from_position(from).map(|(at, n, i)| (at, n.to_vec(), i)).collect();
                let expected: Vec<(u64, Vec<u8>, u64)> =
                    by_position.iter().filter(|e| e.0 >= from).cloned().collect();
                prop_assert_eq!(stream, expected);
            }
        }
    }
}
