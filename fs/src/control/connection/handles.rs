//! The registrations (and opened files) a connection made, named by handles that mean
//! nothing elsewhere.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use stripefs_mapping::{Buffer, Mapping};

use super::super::limits::Charge;
use crate::filesystem::OpenedFile;

/// A live registration made through this connection.
pub(super) struct Registration {
    pub(super) ino: u64,
    pub(super) mapping: Mapping,
    pub(super) buffer: Buffer,
    pub(super) access: u32,
    pub(super) requests: AtomicU64,
    /// This registration, counted against its user's registrations until the last request
    /// using it is done.
    pub(super) _charge: Charge,
}

/// A file opened through this connection for requests with buffers registered against the
/// mount.
pub(super) struct FileEntry {
    pub(super) opened: OpenedFile,
    /// `ACCESS_READ` | `ACCESS_WRITE` (proto.rs), from the descriptor's open mode.
    pub(super) access: u32,
}

/// Handles: slot index and generation, scrambled with a per-connection salt so that a handle
/// of another connection (or a guessed one) names nothing here. Each table has its own salt,
/// so a handle of one table (registrations, files) names nothing in the other.
pub(super) struct HandleTable<T = Registration> {
    pub(super) salt: u64,
    pub(super) slots: Vec<(u32, Option<Arc<T>>)>,
    pub(super) free: Vec<usize>,
    pub(super) live: usize,
}

impl<T> HandleTable<T> {
    pub(super) fn new() -> Self {
        HandleTable {
            salt: RandomState::new().hash_one(std::time::Instant::now()),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    pub(super) fn insert(&mut self, reg: Arc<T>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Some(reg);
        self.live += 1;
        ((u64::from(slot.0) << 32) | (index as u64 + 1)) ^ self.salt
    }

    fn locate(&self, handle: u64) -> Option<usize> {
        let raw = handle ^ self.salt;
        let index = usize::try_from(raw & 0xffff_ffff).ok()?.checked_sub(1)?;
        let generation = (raw >> 32) as u32;
        match self.slots.get(index) {
            Some((g, Some(_))) if *g == generation => Some(index),
            _ => None,
        }
    }

    pub(super) fn get(&self, handle: u64) -> Option<Arc<T>> {
        self.locate(handle).and_then(|i| self.slots[i].1.clone())
    }

    pub(super) fn remove(&mut self, handle: u64) -> Option<Arc<T>> {
        let index = self.locate(handle)?;
        let reg = self.slots[index].1.take();
        self.free.push(index);
        self.live -= 1;
        reg
    }

    pub(super) fn drain(&mut self) -> Vec<Arc<T>> {
        self.free.clear();
        self.live = 0;
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(reg) = slot.1.take() {
                out.push(reg);
            }
            self.free.push(i);
        }
        out
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.slots.iter().filter_map(|s| s.1.as_ref())
    }
}
