//! Page-aligned anonymous memory for the baseline engines (O_DIRECT needs aligned buffers;
//! io_uring fixed buffers need anonymous or shmem memory).

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// Size of the huge pages used with `--huge-pages` (x86-64's 2 MiB pages).
pub const HUGE_PAGE: usize = 2 << 20;

static HUGE_PAGES: AtomicBool = AtomicBool::new(false);

/// Whether the engines' I/O buffers are backed by huge pages (`--huge-pages`).
pub fn huge_pages() -> bool {
    HUGE_PAGES.load(Ordering::Relaxed)
}

/// Huge pages reserved for the run (`/proc/sys/vm/nr_hugepages`), given back on drop.
pub struct HugePageReservation {
    before: u64,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugePageReservation {
    /// Reserves at least `bytes` of huge pages and makes every engine use them.
    pub fn reserve(bytes: u64) -> Result<Self> {
        let read = || -> Result<u64> {
            let text = std::fs::read_to_string(NR_HUGEPAGES).context("reading nr_hugepages")?;
            text.trim().parse().context("parsing nr_hugepages")
        };
        let before = read()?;
        let wanted = bytes.div_ceil(HUGE_PAGE as u64);
        if before < wanted {
            std::fs::write(NR_HUGEPAGES, wanted.to_string())
                .context("reserving huge pages (writing /proc/sys/vm/nr_hugepages needs root)")?;
        }
        let reservation = HugePageReservation { before };
        let got = read()?;
        if got < wanted {
            bail!(
                "asked the kernel for {wanted} huge pages of 2 MiB and got {got} (memory too fragmented?)"
            );
        }
        HUGE_PAGES.store(true, Ordering::Relaxed);
        Ok(reservation)
    }
}

impl Drop for HugePageReservation {
    fn drop(&mut self) {
        HUGE_PAGES.store(false, Ordering::Relaxed);
        let _ = std::fs::write(NR_HUGEPAGES, self.before.to_string());
    }
}

/// A private anonymous mapping, prefaulted, freed on drop.
pub struct AlignedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only handed to the kernel by address or
// borrowed as a slice through `&mut self`, so moving it to another thread is sound.
unsafe impl Send for AlignedMem {}

impl AlignedMem {
    /// Maps `len` bytes (rounded up to a page; a huge page with `--huge-pages`), populated
    /// now so no page fault is measured.
    pub fn new(len: usize) -> io::Result<Self> {
        let (page, huge) = if huge_pages() {
            (HUGE_PAGE, libc::MAP_HUGETLB)
        } else {
            (4096, 0)
        };
        let len = len.max(1).next_multiple_of(page);
        // SAFETY: a fresh anonymous mapping placed by the kernel; no existing memory changes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | huge,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(AlignedMem { ptr, len })
    }

    /// Address of byte `offset` (clamped into the mapping).
    pub fn addr(&self, offset: usize) -> *mut u8 {
        let offset = offset.min(self.len - 1);
        // SAFETY: offset < len, so the pointer stays inside the mapping.
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// The whole mapping as an iovec (for io_uring buffer registration).
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.as_ptr().cast(),
            iov_len: self.len,
        }
    }

    /// The memory as a slice, for synchronous system calls.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, owned by `self`, and the
        // exclusive borrow of `self` prevents any other slice over it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedMem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping made in `new`; the kernel no longer uses it
        // (engines wait for every request before dropping their memory).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
