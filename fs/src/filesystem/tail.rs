//! Per-file data locks, and the last block the POSIX write path wrote to each open file.
//!
//! Programs write files in pieces that are not multiples of the 4 KiB block (`tar` writes
//! 10 KiB records). Every write reaches the devices before it is answered, so a write that
//! starts inside a block must first read that block back (read-modify-write). When that
//! block is the last one the previous write wrote — a file written front to back — its bytes
//! are at hand: the POSIX write path keeps the last, partly written block of each file and
//! starts the next write from it instead of reading it from the device.
//!
//! The kept block is exactly what the devices hold as long as nobody else writes to the
//! file, and every writer takes the file's data lock exclusively: [`DataLock::write`]
//! forgets the block (truncate, registered writes, and any writer added later, get that by
//! default); only the POSIX write path keeps it ([`DataLock::write_keeping_tail`]). It is
//! forgotten when the file's last handle is released, and the data lock itself goes then if
//! no request holds it (the next one makes a new one), so memory follows open files.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use stripefs_engine::plan::FileHold;

/// One block of a file as it is on the devices.
pub(crate) struct Tail {
    /// File offset of the block (a multiple of the block size).
    pub offset: u64,
    pub bytes: Box<[u8]>,
}

/// The data lock of one file: readers share it, writers hold it alone. The kept block is
/// only touched under the lock held exclusively.
#[derive(Default)]
pub(crate) struct DataLock {
    lock: Arc<RwLock<()>>,
    tail: Mutex<Option<Tail>>,
}

impl DataLock {
    /// Shared: reads, which change nothing.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read()
    }

    /// Shared and owned, for a registered read in flight; `None` if a writer holds or waits.
    pub(crate) fn try_read_arc(&self) -> Option<FileHold> {
        self.lock.try_read_arc()
    }

    /// Shared and owned, waiting for writers.
    pub(crate) fn read_arc(&self) -> FileHold {
        self.lock.read_arc()
    }

    /// Exclusive, forgetting the kept block (the holder may change it).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, ()> {
        let guard = self.lock.write();
        *self.tail.lock() = None;
        guard
    }

    /// Exclusive, with the kept block: only for the POSIX write path, which uses it and
    /// leaves the one its write ends in.
    pub(crate) fn write_keeping_tail(
        &self,
    ) -> (RwLockWriteGuard<'_, ()>, MutexGuard<'_, Option<Tail>>) {
        let guard = self.lock.write();
        (guard, self.tail.lock())
    }

    /// Drops the kept block (the file's last handle is gone).
    pub(crate) fn forget_tail(&self) {
        drop(self.write());
    }

    /// Whether no request holds the lock itself (a registered read in flight holds it
    /// beyond its `DataLock`).
    pub(crate) fn is_idle(&self) -> bool {
        Arc::strong_count(&self.lock) == 1
    }
}
