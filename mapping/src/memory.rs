//! Memory shared with devices and other processes: a memfd mapped into this process.
//!
//! Such memory can be written at any time by a device (DMA through io_uring) or by another
//! process holding the fd, so it is never exposed as `&mut [u8]`: access is by bounds-checked
//! copies and by raw addresses handed to the kernel.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::MappingError;

/// The largest piece of memory one device slot can describe (io_uring caps one fixed buffer
/// at 1 GiB). A larger buffer is presented as several chunks, like a scatter-gather table.
pub const CHUNK_MAX: u64 = 1 << 30;

const PAGE: u64 = 4096;
const HUGE_PAGE: u64 = 2 << 20;

/// One entry of a memory's scatter-gather table.
#[derive(Clone, Copy, Debug)]
pub struct MemoryChunk {
    /// Offset of the chunk inside the memory.
    pub offset: u64,
    /// Length in bytes, at most [`CHUNK_MAX`].
    pub len: u64,
    /// Address of the chunk's first byte in this process.
    pub addr: *mut u8,
}

/// A page-aligned, mapped, sealed memfd.
#[derive(Debug)]
pub struct Memory {
    ptr: NonNull<u8>,
    len: u64,
    mapped_len: u64,
    fd: OwnedFd,
    id: u64,
    /// Mapped from a memfd received from elsewhere ([`Memory::from_memfd`]), not made here.
    foreign: bool,
}

// SAFETY: `Memory` owns a shared mapping that lives until drop; the pointer is never used to
// form Rust references, only for raw copies and addresses given to the kernel, so sharing it
// between threads cannot create aliasing `&mut`.
unsafe impl Send for Memory {}
// SAFETY: as above; every method takes `&self` and copies through raw pointers.
unsafe impl Sync for Memory {}

impl Memory {
    /// Creates `len` bytes of zeroed, prefaulted memory backed by a new sealed memfd.
    ///
    /// Every page is allocated here, by the creator (`fallocate`, then touched through the
    /// mapping), so that the memory is charged to this process and a shortage is reported as
    /// an error now rather than as a fault later; a process receiving the memfd
    /// ([`Memory::from_memfd`]) then finds it fully backed.
    pub fn create(name: &str, len: u64, huge_pages: bool) -> Result<Self, MappingError> {
        if len == 0 {
            return Err(MappingError::EmptyBuffer);
        }
        let page = if huge_pages { HUGE_PAGE } else { PAGE };
        let mapped_len = len
            .checked_next_multiple_of(page)
            .ok_or(MappingError::BufferTooLarge { len, max: u64::MAX })?;
        let fd = memfd_create(name, huge_pages)?;
        // SAFETY: `fd` is a valid memfd we own; ftruncate only changes its size.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), mapped_len as libc::off_t) } != 0 {
            return Err(MappingError::os("ftruncate(memfd)"));
        }
        // SAFETY: `fd` is a valid memfd we own; fallocate only allocates its pages.
        if unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, mapped_len as libc::off_t) } != 0 {
            let source = std::io::Error::last_os_error();
            return Err(if huge_pages {
                MappingError::HugePagesUnavailable { source }
            } else {
                MappingError::Os {
                    op: "fallocate(memfd)",
                    source,
                }
            });
        }
        seal(&fd)?;
        // MAP_POPULATE touches every page: allocated pages only count as present (for
        // `SEEK_HOLE`, see `check_backed`) once they have been faulted in and zeroed.
        let ptr = map_shared(&fd, mapped_len, huge_pages, true)?;
        Ok(Memory {
            ptr,
            len,
            mapped_len,
            fd,
            id: crate::next_id(),
            foreign: false,
        })
    }

    /// Maps an existing memfd, typically one received from another process, without ever
    /// allocating memory for it:
    ///
    /// - it must already be sealed against shrinking and growing (`F_SEAL_SHRINK |
    ///   F_SEAL_GROW`), so its owner cannot truncate pages away from under registered I/O;
    /// - it is mapped without `MAP_POPULATE`, then sealed with `F_SEAL_FUTURE_WRITE`: the
    ///   mappings that exist (the owner's and this one) stay writable, but from now on no
    ///   hole can be punched in it (`fallocate(PUNCH_HOLE)` fails with `EPERM`), so pages
    ///   pinned for I/O stay the owner's pages and an access through this mapping can never
    ///   fault (no `SIGBUS` from a huge page that cannot come back, no page allocated here).
    ///   A memfd sealed with `F_SEAL_SEAL` cannot take that seal and is refused;
    /// - every page must then exist ([`MappingError::NotBacked`] otherwise): the owner
    ///   allocates and touches its pages before handing the memfd over.
    ///
    /// Because of that seal a memfd can be mapped this way only once (a second writable
    /// mapping is refused with `EPERM`): a process receiving the same memfd again shares
    /// the first [`Memory`] (see [`crate::Buffer::from_shared_memory`]).
    pub fn from_memfd(fd: OwnedFd) -> Result<Self, MappingError> {
        check_sealed(&fd)?;
        let len = fd_size(&fd)?;
        if len == 0 {
            return Err(MappingError::EmptyBuffer);
        }
        if len % PAGE != 0 {
            return Err(MappingError::OutOfBuffer {
                offset: 0,
                len,
                buffer_len: len - len % PAGE,
            });
        }
        let ptr = map_shared(&fd, len, false, false)?;
        // From here on `Drop` unmaps it if a check below refuses the memfd.
        let memory = Memory {
            ptr,
            len,
            mapped_len: len,
            fd,
            id: crate::next_id(),
            foreign: true,
        };
        forbid_holes(&memory.fd)?;
        check_backed(&memory.fd, len)?;
        Ok(memory)
    }

    /// Length in bytes that I/O may address.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: memory is never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Unique number of this piece of memory (changes when a buffer migrates).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the memory was received from another process ([`Memory::from_memfd`]) rather
    /// than made by this one: devices keep some of their buffer slots for memory of their
    /// own, so that foreign memory cannot take them all.
    pub fn is_foreign(&self) -> bool {
        self.foreign
    }

    /// Whether the memfd is sealed against new writable mappings (`F_SEAL_WRITE` or
    /// `F_SEAL_FUTURE_WRITE`): once a receiver has imported it ([`Memory::from_memfd`]), no
    /// other mapping of it can be made for I/O.
    pub fn is_write_sealed(&self) -> Result<bool, MappingError> {
        // SAFETY: F_GET_SEALS only reads the seals of the descriptor.
        let seals = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(MappingError::os("fcntl(F_GET_SEALS)"));
        }
        Ok(seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0)
    }

    /// The memfd behind the memory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The scatter-gather table: consecutive chunks of at most [`CHUNK_MAX`] bytes covering
    /// the mapped length.
    pub fn chunks(&self) -> impl Iterator<Item = MemoryChunk> + '_ {
        (0..self.mapped_len.div_ceil(CHUNK_MAX)).map(move |i| {
            let offset = i * CHUNK_MAX;
            MemoryChunk {
                offset,
                len: (self.mapped_len - offset).min(CHUNK_MAX),
                // SAFETY: offset < mapped_len, so the result stays inside the mapping.
                addr: unsafe { self.ptr.as_ptr().add(offset as usize) },
            }
        })
    }

    /// Address of byte `offset`, after checking that `offset..offset+len` is inside the memory.
    pub fn addr(&self, offset: u64, len: u64) -> Result<*mut u8, MappingError> {
        self.check(offset, len)?;
        // SAFETY: checked above: offset + len <= self.len <= mapped_len.
        Ok(unsafe { self.ptr.as_ptr().add(offset as usize) })
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the memory.
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<(), MappingError> {
        let src = self.addr(offset, dst.len() as u64)?;
        // SAFETY: `src..src+len` is inside our mapping (checked by `addr`); `dst` is a distinct
        // Rust buffer, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the memory starting at `offset`.
    pub fn write_at(&self, offset: u64, src: &[u8]) -> Result<(), MappingError> {
        let dst = self.addr(offset, src.len() as u64)?;
        // SAFETY: `dst..dst+len` is inside our mapping (checked by `addr`); `src` is a distinct
        // Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    /// Sets `len` bytes starting at `offset` to `byte`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<(), MappingError> {
        let dst = self.addr(offset, len)?;
        // SAFETY: `dst..dst+len` is inside our mapping (checked by `addr`).
        unsafe { std::ptr::write_bytes(dst, byte, len as usize) };
        Ok(())
    }

    /// Copies all of `other` (up to our length) into this memory: the page move of a migration.
    pub fn copy_from(&self, other: &Memory) {
        let n = self.len.min(other.len) as usize;
        // SAFETY: both mappings are at least `n` bytes long and are distinct mappings.
        unsafe { std::ptr::copy_nonoverlapping(other.ptr.as_ptr(), self.ptr.as_ptr(), n) };
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), MappingError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(MappingError::OutOfBuffer {
                offset,
                len,
                buffer_len: self.len,
            }),
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`mapped_len` describe the mapping made in `map_shared`; nothing can use
        // it after this point because every user holds an `Arc<Memory>`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped_len as usize) };
    }
}

fn memfd_create(name: &str, huge_pages: bool) -> Result<OwnedFd, MappingError> {
    let cname = CString::new(name.replace('\0', "_")).unwrap_or_default();
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if huge_pages {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        return Err(MappingError::os("memfd_create"));
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const REQUIRED_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

fn seal(fd: &OwnedFd) -> Result<(), MappingError> {
    // SAFETY: F_ADD_SEALS on a memfd we own; no memory is involved.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS) } != 0 {
        return Err(MappingError::os("fcntl(F_ADD_SEALS)"));
    }
    Ok(())
}

fn check_sealed(fd: &OwnedFd) -> Result<(), MappingError> {
    // SAFETY: F_GET_SEALS only reads the seals of the descriptor.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(MappingError::os("fcntl(F_GET_SEALS) (is it a memfd?)"));
    }
    let missing = REQUIRED_SEALS & !seals;
    if missing != 0 {
        return Err(MappingError::NotSealed { missing });
    }
    if seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
        return Err(MappingError::WriteSealed { seals });
    }
    Ok(())
}

/// Seals `fd` with `F_SEAL_FUTURE_WRITE` after it has been mapped writable: no later hole
/// punch, no new writable mapping or `write(2)`, while existing mappings keep working.
/// Measured on Linux 6.18: with the seal, `fallocate(PUNCH_HOLE)` fails with `EPERM`, a new
/// `PROT_WRITE` shared mapping and `pwrite` fail with `EPERM`, stores through the mappings
/// made before still reach the same pages, and `fallocate(0)` inside the size still works.
/// `F_SEAL_WRITE` would also forbid the punch, but cannot be added while writable mappings
/// exist, and the daemon's mapping must be writable (reads land in it).
fn forbid_holes(fd: &OwnedFd) -> Result<(), MappingError> {
    // SAFETY: F_ADD_SEALS only changes the seals of the file.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_FUTURE_WRITE) } != 0 {
        return Err(MappingError::CannotSeal {
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `f_type` of hugetlbfs, where `MFD_HUGETLB` memfds live.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// Checks that every page of the memfd's `len` bytes exists, so that pinning them for I/O
/// allocates nothing.
///
/// On shmem (ordinary memfds) `lseek(SEEK_HOLE)` from 0 is exact: it reports as a hole every
/// page that is absent, and also a page allocated by `fallocate` but never touched (not yet
/// "uptodate"), while a swapped-out page counts as data (it is the owner's, charged to the
/// owner). `st_blocks` would be fooled by pages allocated beyond the size before it was
/// sealed. On hugetlbfs `SEEK_HOLE` knows nothing of holes (the whole file reads as data),
/// so there `st_blocks` is used: hugetlbfs counts each huge page in the file.
fn check_backed(fd: &OwnedFd, len: u64) -> Result<(), MappingError> {
    // SAFETY: `sfs` is plain data that fstatfs fills in.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `sfs` is a valid, writable statfs struct.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } != 0 {
        return Err(MappingError::os("fstatfs(memfd)"));
    }
    let backed = if sfs.f_type as i64 == HUGETLBFS_MAGIC {
        (fd_stat(fd)?.st_blocks as u64).saturating_mul(512).min(len)
    } else {
        // SAFETY: lseek on a descriptor we hold; it moves only that description's offset.
        let hole = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(MappingError::os("lseek(memfd, SEEK_HOLE)"));
        }
        (hole as u64).min(len)
    };
    if backed < len {
        return Err(MappingError::NotBacked {
            first_hole: backed,
            len,
        });
    }
    Ok(())
}

fn fd_stat(fd: &OwnedFd) -> Result<libc::stat, MappingError> {
    // SAFETY: `st` is plain data that fstat fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(MappingError::os("fstat(memfd)"));
    }
    Ok(st)
}

fn fd_size(fd: &OwnedFd) -> Result<u64, MappingError> {
    Ok(fd_stat(fd)?.st_size as u64)
}

/// Maps `len` bytes of `fd` shared and writable; `populate` faults every page in now
/// (only for memory this process created and allocated itself).
fn map_shared(
    fd: &OwnedFd,
    len: u64,
    huge_pages: bool,
    populate: bool,
) -> Result<NonNull<u8>, MappingError> {
    let populate = if populate { libc::MAP_POPULATE } else { 0 };
    // SAFETY: a fresh shared mapping of `len` bytes of `fd`, placed by the kernel; no existing
    // memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | populate,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        return Err(if huge_pages {
            MappingError::HugePagesUnavailable { source: err }
        } else {
            MappingError::Os {
                op: "mmap(memfd)",
                source: err,
            }
        });
    }
    NonNull::new(ptr.cast()).ok_or_else(|| MappingError::os("mmap returned null"))
}
