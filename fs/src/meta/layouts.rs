//! Layouts held once: most inodes share one of a few layouts (the default, turned to start
//! on each device), so each inode keeps a shared reference, not its own copy.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use stripefs_layout::ondisk::LayoutRecord;

/// Every layout some inode has, once.
#[derive(Clone, Debug, Default)]
pub(super) struct Layouts {
    set: HashSet<Arc<LayoutRecord>, BuildHasherDefault<LayoutHasher>>,
}

impl Layouts {
    /// The shared copy of `layout` (made if no inode has it yet).
    pub(super) fn intern(&mut self, layout: &LayoutRecord) -> Arc<LayoutRecord> {
        if let Some(shared) = self.set.get(layout) {
            return shared.clone();
        }
        let shared = Arc::new(layout.clone());
        self.set.insert(shared.clone());
        shared
    }

    /// How many distinct layouts are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// Forgets a layout an inode no longer has, if no other inode has it either.
    pub(super) fn release(&mut self, layout: Option<Arc<LayoutRecord>>) {
        if let Some(l) = layout
            && Arc::strong_count(&l) == 2
        {
            self.set.remove(&*l);
        }
    }
}

/// Hashes a layout's few small integers by multiply and rotate: every inode loaded or made
/// interns its layout, and the default hasher (SipHash) cost a mount of a million files a
/// tenth of its time. Keys are layouts, not names: a user can make only so many distinct
/// ones, so collisions cannot be forced at scale.
#[derive(Clone, Copy, Debug, Default)]
struct LayoutHasher(u64);

impl Hasher for LayoutHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        let p = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15;
        (p as u64) ^ ((p >> 64) as u64)
    }
}

impl LayoutHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(unit: u32, devices: &[u16]) -> LayoutRecord {
        LayoutRecord {
            stripe_unit: unit,
            devices: devices.to_vec(),
        }
    }

    #[test]
    fn equal_layouts_are_shared_and_released_with_their_last_inode() {
        let mut l = Layouts::default();
        let a = l.intern(&layout(1 << 20, &[0, 1, 2, 3]));
        let b = l.intern(&layout(1 << 20, &[0, 1, 2, 3]));
        let c = l.intern(&layout(1 << 20, &[1, 2, 3, 0]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(l.set.len(), 2);
        l.release(Some(a));
        assert_eq!(l.set.len(), 2, "b still has it");
        l.release(Some(b));
        assert_eq!(l.set.len(), 1);
        l.release(Some(c));
        assert!(l.set.is_empty());
    }

    #[test]
    fn turned_layouts_hash_apart() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<LayoutHasher>::default();
        let hash = |l: &LayoutRecord| build.hash_one(l);
        let turns: HashSet<u64> = (0..8u16)
            .map(|first| {
                hash(&layout(
                    1 << 20,
                    &(0..8).map(|i| (first + i) % 8).collect::<Vec<_>>(),
                ))
            })
            .collect();
        assert_eq!(turns.len(), 8);
    }
}
