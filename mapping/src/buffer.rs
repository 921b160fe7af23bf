//! The exporter: a buffer whose memory other parties attach, and which may move.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::error::MappingError;
use crate::mapping::MappingShared;
use crate::memory::Memory;

/// How to allocate a buffer.
#[derive(Clone, Debug, Default)]
pub struct BufferOptions {
    /// Back the buffer with huge pages (`MFD_HUGETLB`); fails with a clear error when the
    /// system has none reserved.
    pub huge_pages: bool,
}

/// What a [`Buffer::migrate`] did and what it cost.
#[derive(Clone, Debug)]
pub struct MigrationReport {
    /// Mappings that were invalidated.
    pub mappings: usize,
    /// Time spent waiting for in-flight I/O on the old pages to finish.
    pub drain: Duration,
    /// Time spent moving the contents to the new pages.
    pub copy: Duration,
    /// Whole migration, allocation included.
    pub total: Duration,
}

/// A buffer: memory with a file descriptor, registered against targets through
/// [`crate::Mapping`]. Cloning shares the same buffer.
#[derive(Clone)]
pub struct Buffer {
    pub(crate) shared: Arc<BufferShared>,
}

pub(crate) struct BufferShared {
    id: u64,
    len: u64,
    options: BufferOptions,
    /// The current pages. Readers: remaps and CPU copies. Writer: a migration, for its whole
    /// duration, so that nobody attaches or copies into pages that are being moved.
    pub(crate) memory: RwLock<Arc<Memory>>,
    mappings: Mutex<Vec<Weak<MappingShared>>>,
    migrations: AtomicU64,
}

impl Buffer {
    /// Allocates a zeroed, prefaulted buffer of `len` bytes backed by a sealed memfd.
    pub fn new(len: u64) -> Result<Self, MappingError> {
        Self::with_options(len, BufferOptions::default())
    }

    /// Allocates a buffer with explicit options.
    pub fn with_options(len: u64, options: BufferOptions) -> Result<Self, MappingError> {
        let memory = Memory::create("stripefs-buffer", len, options.huge_pages)?;
        Ok(Self::from_memory(memory, options))
    }

    /// Wraps a memfd received from elsewhere (sealed against shrink and grow).
    pub fn from_memfd(fd: OwnedFd) -> Result<Self, MappingError> {
        Ok(Self::from_memory(
            Memory::from_memfd(fd)?,
            BufferOptions::default(),
        ))
    }

    /// A buffer over memory mapped already (for example memory received from another
    /// process and shared by several buffers: see [`Memory::from_memfd`], which can map a
    /// memfd only once).
    pub fn from_shared_memory(memory: Arc<Memory>) -> Self {
        Self::from_memory(memory, BufferOptions::default())
    }

    fn from_memory(memory: impl Into<Arc<Memory>>, options: BufferOptions) -> Self {
        let memory = memory.into();
        Buffer {
            shared: Arc::new(BufferShared {
                id: crate::next_id(),
                len: memory.len(),
                options,
                memory: RwLock::new(memory),
                mappings: Mutex::new(Vec::new()),
                migrations: AtomicU64::new(0),
            }),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.shared.len
    }

    /// Always false: a buffer has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Unique number of this buffer.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// How many times the buffer's pages have moved.
    pub fn migrations(&self) -> u64 {
        self.shared.migrations.load(Ordering::Relaxed)
    }

    /// Copies bytes out of the buffer (CPU access; registered I/O may run concurrently).
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), MappingError> {
        self.shared.memory.read().read_at(offset, dst)
    }

    /// Copies bytes into the buffer.
    pub fn write_at(&self, offset: u64, src: &[u8]) -> Result<(), MappingError> {
        self.shared.memory.read().write_at(offset, src)
    }

    /// Runs `f` with the memfd of the current pages (to share the buffer with another process).
    pub fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
        f(self.shared.memory.read().fd())
    }

    /// Moves the buffer to new pages, keeping its contents: the exporter side of
    /// `move_notify`. Every mapping of the buffer is invalidated and waits for its in-flight
    /// I/O to finish before the contents are copied and the old pages released; the next I/O
    /// on each mapping attaches the new pages.
    pub fn migrate(&self) -> Result<MigrationReport, MappingError> {
        let start = Instant::now();
        // Allocated before anything is invalidated: I/O keeps flowing meanwhile.
        let new = Memory::create(
            "stripefs-buffer",
            self.len(),
            self.shared.options.huge_pages,
        )?;
        let mut report = self.migrate_to(new)?;
        report.total = start.elapsed();
        Ok(report)
    }

    /// Moves the buffer to `memory`, pages the caller provides (for example a memfd that a
    /// client process created and will switch its own view to), keeping the contents: like
    /// [`Buffer::migrate`], every mapping is invalidated and its in-flight I/O drained, then
    /// the contents are copied and the buffer switches to `memory`; the next I/O on each
    /// mapping attaches the new pages. `memory` must be at least as long as the buffer (its
    /// extra bytes are never addressed).
    pub fn migrate_to(
        &self,
        memory: impl Into<Arc<Memory>>,
    ) -> Result<MigrationReport, MappingError> {
        let memory = memory.into();
        let start = Instant::now();
        if memory.len() < self.len() {
            return Err(MappingError::OutOfBuffer {
                offset: 0,
                len: self.len(),
                buffer_len: memory.len(),
            });
        }
        let mut current = self.shared.memory.write();
        let mappings = self.shared.live_mappings();
        let drain_start = Instant::now();
        for mapping in &mappings {
            mapping.invalidate();
        }
        let drain = drain_start.elapsed();
        let copy_start = Instant::now();
        memory.copy_from(&current);
        let copy = copy_start.elapsed();
        *current = memory;
        self.shared.migrations.fetch_add(1, Ordering::Relaxed);
        Ok(MigrationReport {
            mappings: mappings.len(),
            drain,
            copy,
            total: start.elapsed(),
        })
    }
}

impl BufferShared {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn add_mapping(&self, mapping: Weak<MappingShared>) {
        let mut mappings = self.mappings.lock();
        mappings.retain(|m| m.strong_count() > 0);
        mappings.push(mapping);
    }

    fn live_mappings(&self) -> Vec<Arc<MappingShared>> {
        let mut mappings = self.mappings.lock();
        mappings.retain(|m| m.strong_count() > 0);
        mappings.iter().filter_map(Weak::upgrade).collect()
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("id", &self.id())
            .field("len", &self.len())
            .field("migrations", &self.migrations())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn inode(fd: BorrowedFd<'_>) -> u64 {
        // SAFETY: `st` is plain data that fstat fills in.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is a valid descriptor and `st` a writable stat struct.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        st.st_ino
    }

    #[test]
    fn migrate_to_moves_contents_to_the_given_pages_and_aliases_them() {
        let buffer = Buffer::new(3 * 4096).expect("buffer");
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 + 3) as u8).collect();
        buffer.write_at(0, &data).expect("write");
        let given = Memory::create("given", 3 * 4096, false).expect("memory");
        let given_inode = inode(given.fd());
        // A second view of the given pages, as the process that created them keeps.
        let view = Memory::from_memfd(given.fd().try_clone_to_owned().expect("dup")).expect("view");

        let report = buffer.migrate_to(given).expect("migrate_to");
        assert_eq!(report.mappings, 0);
        assert_eq!(buffer.migrations(), 1);
        assert_eq!(
            buffer.with_fd(inode),
            given_inode,
            "the buffer now uses the given memfd"
        );
        let mut seen = vec![0u8; data.len()];
        view.read_at(0, &mut seen).expect("read view");
        assert!(seen == data, "contents were copied into the given pages");

        // The buffer and the other view alias the same pages from now on.
        view.write_at(100, b"from the other side")
            .expect("write view");
        let mut back = [0u8; 19];
        buffer.read_at(100, &mut back).expect("read buffer");
        assert_eq!(&back, b"from the other side");
    }

    #[test]
    fn migrate_to_refuses_memory_shorter_than_the_buffer() {
        let buffer = Buffer::new(2 * 4096).expect("buffer");
        buffer.write_at(0, b"kept").expect("write");
        let short = Memory::create("short", 4096, false).expect("memory");
        let err = buffer.migrate_to(short).expect_err("too short");
        assert!(
            matches!(
                err,
                MappingError::OutOfBuffer {
                    len: 8192,
                    buffer_len: 4096,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(buffer.migrations(), 0);
        let mut back = [0u8; 4];
        buffer.read_at(0, &mut back).expect("read");
        assert_eq!(&back, b"kept");
    }
}
