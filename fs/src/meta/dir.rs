//! A directory's entries: by name, and at stable positions for directory streams.
//!
//! Every entry gets a position when it is added (the next number of its directory, never
//! reused while the filesystem is open). A directory stream that continues from a position
//! sees every entry added before it was read and still there, whatever was removed
//! meanwhile: `rm -rf` of a large directory removes every entry while reading it, and the
//! kernel can resume any stream (telldir/seekdir, or its own cache of the listing) without
//! the daemon keeping one snapshot per open directory. Positions are not stored on the
//! devices: mount assigns them again (a directory stream does not outlive the mount).

use std::collections::BTreeMap;

/// The first position of an entry: 0 and 1 are "." and "..".
pub const FIRST_POSITION: u64 = 2;

/// The entries of one directory.
#[derive(Clone, Debug)]
pub struct DirEntries {
    /// Name → (inode, position).
    by_name: BTreeMap<Vec<u8>, (u64, u64)>,
    /// Position → name.
    by_position: BTreeMap<u64, Vec<u8>>,
    next_position: u64,
}

impl Default for DirEntries {
    fn default() -> Self {
        DirEntries {
            by_name: BTreeMap::new(),
            by_position: BTreeMap::new(),
            next_position: FIRST_POSITION,
        }
    }
}

impl DirEntries {
    /// The inode `name` refers to.
    pub fn get(&self, name: &[u8]) -> Option<&u64> {
        self.by_name.get(name).map(|(ino, _)| ino)
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// (name, inode) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &u64)> {
        self.by_name.iter().map(|(name, (ino, _))| (name, ino))
    }

    /// The inodes, in name order.
    pub fn values(&self) -> impl Iterator<Item = &u64> {
        self.by_name.values().map(|(ino, _)| ino)
    }

    /// (position, name, inode) of the entries at `position` and after, in position order.
    pub fn from_position(&self, position: u64) -> impl Iterator<Item = (u64, &[u8], u64)> {
        self.by_position
            .range(position.max(FIRST_POSITION)..)
            .filter_map(|(&at, name)| {
                let &(ino, _) = self.by_name.get(name)?;
                Some((at, name.as_slice(), ino))
            })
    }

    /// Adds `name` → `ino` at the next position; false (and nothing changed) if `name` is
    /// there already.
    pub(crate) fn insert(&mut self, name: Vec<u8>, ino: u64) -> bool {
        if self.by_name.contains_key(&name) {
            return false;
        }
        let at = self.next_position;
        self.next_position += 1;
        self.by_position.insert(at, name.clone());
        self.by_name.insert(name, (ino, at));
        true
    }

    /// Removes `name`; returns the inode it referred to.
    pub(crate) fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let (ino, at) = self.by_name.remove(name)?;
        self.by_position.remove(&at);
        Some(ino)
    }
}

impl<'a> IntoIterator for &'a DirEntries {
    type Item = (&'a Vec<u8>, &'a u64);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
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
            assert!(d.insert(n.as_bytes().to_vec(), 10 + i as u64));
        }
        assert!(!d.insert(b"a".to_vec(), 99), "a name is added once");
        assert_eq!(d.get(b"a"), Some(&11));
        // A stream read "c" and "a" (positions 2 and 3), then "c" and "b" went.
        assert_eq!(d.remove(b"c"), Some(10));
        assert_eq!(d.remove(b"b"), Some(12));
        assert_eq!(d.remove(b"b"), None);
        assert_eq!(names(&d, 4), vec![(5, "d".into(), 13)]);
        assert!(d.insert(b"e".to_vec(), 14));
        assert_eq!(
            names(&d, 0),
            vec![
                (3, "a".into(), 11),
                (5, "d".into(), 13),
                (6, "e".into(), 14)
            ]
        );
        let by_name: Vec<&Vec<u8>> = d.iter().map(|(n, _)| n).collect();
        assert_eq!(by_name, vec![b"a", b"d", b"e"]);
        assert_eq!(d.len(), 3);
    }
}
