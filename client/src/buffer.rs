//! The client's buffer: a sealed memfd mapped in this process, whose pages the daemon maps
//! too when the buffer is registered.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use stripefs_mapping::Memory;

use crate::error::ClientError;

const PAGE: u64 = 4096;

/// Memory to register against files: a sealed memfd (`F_SEAL_SHRINK | F_SEAL_GROW`), zeroed
/// and prefaulted, mapped in this process. Registered I/O moves data between the file and
/// these pages directly (the daemon maps the same pages). Cloning shares the buffer.
///
/// Devices and the daemon may write the pages at any time while requests are in flight, so
/// the buffer is never handed out as `&mut [u8]`: use the bounds-checked copies
/// ([`ClientBuffer::read_at`], [`ClientBuffer::write_at`], [`ClientBuffer::write_to_fd`]).
#[derive(Clone)]
pub struct ClientBuffer {
    pub(crate) inner: Arc<BufferInner>,
}

pub(crate) struct BufferInner {
    id: u64,
    len: u64,
    /// Backed by huge pages (and so are the pages of its migrations).
    huge_pages: bool,
    /// The current pages. Writers: a migration, for its whole duration.
    pub(crate) memory: RwLock<Arc<Memory>>,
    /// Connections (by client number) this buffer is registered on, one entry per handle.
    pub(crate) registered_on: Mutex<Vec<u64>>,
    /// Held across a registration (see [`ClientBuffer::registering`]).
    registering: Mutex<()>,
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl ClientBuffer {
    /// A new buffer of `len` bytes, rounded up to whole pages.
    pub fn new(len: u64) -> Result<Self, ClientError> {
        Self::with_huge_pages(len, false)
    }

    /// A new buffer of `len` bytes, backed by 2 MiB huge pages when `huge_pages` is set
    /// (`MFD_HUGETLB`; the system must have huge pages reserved). Physically contiguous
    /// memory lets the devices' block layer build larger requests.
    pub fn with_huge_pages(len: u64, huge_pages: bool) -> Result<Self, ClientError> {
        let len = round_up(len)?;
        let memory = Memory::create("stripefs-client-buffer", len, huge_pages)?;
        let len = memory.len();
        Ok(ClientBuffer {
            inner: Arc::new(BufferInner {
                id: next_id(),
                len,
                huge_pages,
                memory: RwLock::new(Arc::new(memory)),
                registered_on: Mutex::new(Vec::new()),
                registering: Mutex::new(()),
            }),
        })
    }

    /// New pages for a migration: the same length, a new sealed memfd.
    pub(crate) fn fresh_memory(&self) -> Result<Memory, ClientError> {
        Ok(Memory::create(
            "stripefs-client-buffer",
            self.inner.len,
            self.inner.huge_pages,
        )?)
    }

    /// Runs `register` (which sends the buffer's memfd to a daemon and, on success, records
    /// the registration in `registered_on`) with the memfd to send, one registration of the
    /// buffer at a time.
    ///
    /// A daemon maps a buffer's memfd once and seals it against new writable mappings
    /// (`F_SEAL_FUTURE_WRITE`, so that no hole can be punched in registered memory): once no
    /// daemon holds it any more (every registration of the buffer dropped), it cannot be
    /// mapped for I/O again. Registering such a buffer first moves it to fresh pages (its
    /// contents copied; [`ClientBuffer::as_ptr`] changes, as after a migration).
    pub(crate) fn registering<R>(
        &self,
        register: impl FnOnce(BorrowedFd<'_>) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        let _one = self.inner.registering.lock();
        if self.inner.registered_on.lock().is_empty() {
            let mut current = self.inner.memory.write();
            if current.is_write_sealed()? {
                let fresh = self.fresh_memory()?;
                fresh.copy_from(&current);
                *current = Arc::new(fresh);
            }
        }
        // Holding the view keeps a migration of this buffer from switching pages under us.
        let memory = self.inner.memory.read();
        register(memory.fd())
    }

    /// Length in bytes (a multiple of the page size).
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Always false: a buffer has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Process-unique number of this buffer.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Copies `dst.len()` bytes at `offset` out of the buffer.
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), ClientError> {
        Ok(self.inner.memory.read().read_at(offset, dst)?)
    }

    /// Copies `src` into the buffer at `offset`.
    pub fn write_at(&self, offset: u64, src: &[u8]) -> Result<(), ClientError> {
        Ok(self.inner.memory.read().write_at(offset, src)?)
    }

    /// Writes `len` bytes of the buffer at `offset` to `fd` with one `write(2)` straight from
    /// the shared pages; returns the bytes written (may be fewer, like `write`).
    pub fn write_to_fd(&self, fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<usize> {
        let memory = self.inner.memory.read();
        let src = memory
            .addr(offset, len as u64)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `src..src+len` is inside the mapping (checked by `addr`), which the read
        // guard keeps mapped for the call; write(2) only reads it.
        let n = unsafe { libc::write(fd.as_raw_fd(), src.cast(), len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Address of the first byte of the current pages in this process (for C). It changes
    /// when the buffer migrates; the old address is unmapped then.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner
            .memory
            .read()
            .addr(0, 0)
            .unwrap_or(std::ptr::null_mut())
    }
}

fn round_up(len: u64) -> Result<u64, ClientError> {
    if len == 0 {
        return Err(ClientError::invalid("a buffer needs at least one byte"));
    }
    len.checked_next_multiple_of(PAGE)
        .ok_or_else(|| ClientError::invalid("buffer length overflows"))
}

impl std::fmt::Debug for ClientBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuffer")
            .field("id", &self.inner.id)
            .field("len", &self.inner.len)
            .finish()
    }
}
