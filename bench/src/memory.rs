//! Page-aligned anonymous memory for the baseline engines (O_DIRECT needs aligned buffers;
//! io_uring fixed buffers need anonymous or shmem memory).

use std::io;
use std::ptr::NonNull;

/// A private anonymous mapping, prefaulted, freed on drop.
pub struct AlignedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only handed to the kernel by address or
// borrowed as a slice through `&mut self`, so moving it to another thread is sound.
unsafe impl Send for AlignedMem {}

impl AlignedMem {
    /// Maps `len` bytes (rounded up to a page), populated now so no page fault is measured.
    pub fn new(len: usize) -> io::Result<Self> {
        let len = len.max(1).next_multiple_of(4096);
        // SAFETY: a fresh anonymous mapping placed by the kernel; no existing memory changes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
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
