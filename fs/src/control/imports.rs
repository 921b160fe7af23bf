//! The client memory the daemon has mapped, by file: a memfd can be mapped for I/O only once
//! (the import seals it against new writable mappings, see
//! [`Memory::from_memfd`]), so a memfd registered again (through another connection, or as a
//! migration target) shares the mapping made the first time.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use stripefs_mapping::{MappingError, Memory};

/// Imported memory by the memfd's (st_dev, st_ino); an entry lives as long as some buffer
/// uses the memory (the mapping holds the file, so its inode number cannot be reused
/// meanwhile).
#[derive(Default)]
pub(crate) struct Imports {
    by_file: Mutex<HashMap<(u64, u64), Weak<Memory>>>,
}

impl Imports {
    /// The memory of memfd `fd` (identified by `key`): the mapping made already, or a new one.
    pub(crate) fn import(&self, key: (u64, u64), fd: OwnedFd) -> Result<Arc<Memory>, MappingError> {
        let mut by_file = self.by_file.lock();
        if let Some(memory) = by_file.get(&key).and_then(Weak::upgrade) {
            return Ok(memory);
        }
        let memory = Arc::new(Memory::from_memfd(fd)?);
        by_file.retain(|_, m| m.strong_count() > 0);
        by_file.insert(key, Arc::downgrade(&memory));
        Ok(memory)
    }
}
