//! The shared-memory submission/completion ring between a client and the daemon.
//!
//! The daemon creates one sealed memfd per connection and passes it to the client, which maps
//! it too. Layout (offsets in bytes; counters are native-endian `u32` atomics, entries
//! little-endian):
//!
//! | offset | what | written by |
//! | --- | --- | --- |
//! | 0 | header: magic, version, entries, offsets (informational) | daemon, once |
//! | 128 | `sq_head`: submissions consumed | daemon |
//! | 192 | `sq_tail`: submissions published | client |
//! | 256 | `sq_flags`: [`NEED_WAKEUP`] | daemon |
//! | 320 | `cq_head`: completions consumed | client |
//! | 384 | `cq_tail`: completions published | daemon |
//! | 448 | `cq_flags`: [`WAITING`] | client |
//! | 4096 | submission entries, [`SQE_LEN`] bytes each | client |
//! | after | completion entries, [`CQE_LEN`] bytes each | daemon |
//!
//! Head and tail counters run freely (wrapping); entry `i` lives at index `i % entries`. Each
//! side keeps its own copy of the counters it writes and never reads them back from the shared
//! memory, and checks the counters the other side writes (`tail - head` may never exceed the
//! ring size), so scribbling on the ring can only make the scribbler's own requests fail.
//!
//! Compiled into both the daemon and the client library (through `#[path]`).

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use stripefs_mapping::Memory;

/// `"SFSR"` read as a little-endian `u32`.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"SFSR");
/// Largest ring (entries of the submission or the completion queue).
pub const MAX_ENTRIES: u32 = 4096;
/// Bytes of one submission entry (an [`Sqe`] and its [`Entry`] extension).
pub const SQE_LEN: usize = 64;
/// Bytes of one completion entry.
pub const CQE_LEN: usize = 16;
/// In `sq_flags`: the daemon is going to sleep; ring the submission doorbell after publishing.
pub const NEED_WAKEUP: u32 = 1;
/// In `cq_flags`: a client thread is going to sleep; ring the completion doorbell after
/// publishing.
pub const WAITING: u32 = 1;

/// Request operation: read from the file into the buffer.
pub const OP_READ: u32 = 1;
/// Request operation: write from the buffer to the file.
pub const OP_WRITE: u32 = 2;
/// Request flag: `handle` names a buffer registered against the mount and [`Entry::file`] a
/// file handle (without it, `handle` names a registration of one file and `file` is 0).
pub const SQE_FILE: u32 = 2;
/// Version of the ring layout (in its header).
pub const RING_VERSION: u32 = 2;

const SQ_HEAD: usize = 128;
const SQ_TAIL: usize = 192;
const SQ_FLAGS: usize = 256;
const CQ_HEAD: usize = 320;
const CQ_TAIL: usize = 384;
const CQ_FLAGS: usize = 448;
const ENTRIES: usize = 4096;
const PAGE: usize = 4096;

/// Where everything is in a ring of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub sqes: usize,
    pub cqes: usize,
    pub len: usize,
}

impl Layout {
    /// The layout of a ring with these sizes; `None` unless both are powers of two of at most
    /// [`MAX_ENTRIES`].
    pub fn new(sq_entries: u32, cq_entries: u32) -> Option<Layout> {
        let ok = |n: u32| n.is_power_of_two() && n <= MAX_ENTRIES;
        if !ok(sq_entries) || !ok(cq_entries) {
            return None;
        }
        let sqes = ENTRIES;
        let cqes = (sqes + sq_entries as usize * SQE_LEN).next_multiple_of(64);
        let len = (cqes + cq_entries as usize * CQE_LEN).next_multiple_of(PAGE);
        Some(Layout {
            sq_entries,
            cq_entries,
            sqes,
            cqes,
            len,
        })
    }
}

/// One request, as the client writes it into the submission queue.
///
/// | offset | field |
/// | --- | --- |
/// | 0 | `handle: u64` |
/// | 8 | `op: u32` ([`OP_READ`], [`OP_WRITE`]) |
/// | 12 | `flags: u32` (0) |
/// | 16 | `file_offset: u64` |
/// | 24 | `buffer_offset: u64` |
/// | 32 | `len: u64` |
/// | 40 | `tag: u64` (returned in the completion) |
/// | 48 | `file: u64` (a file handle with [`SQE_FILE`], else 0) |
/// | 56 | reserved `u64` (0) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sqe {
    pub handle: u64,
    pub op: u32,
    pub flags: u32,
    pub file_offset: u64,
    pub buffer_offset: u64,
    pub len: u64,
    pub tag: u64,
}

/// A whole submission entry: the request and the file it names when [`SQE_FILE`] is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub sqe: Sqe,
    pub file: u64,
    pub reserved: u64,
}

impl From<Sqe> for Entry {
    fn from(sqe: Sqe) -> Entry {
        Entry {
            sqe,
            file: 0,
            reserved: 0,
        }
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

impl Entry {
    pub fn to_bytes(&self) -> [u8; SQE_LEN] {
        let mut b = self.sqe.to_bytes();
        b[48..56].copy_from_slice(&self.file.to_le_bytes());
        b[56..64].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; SQE_LEN]) -> Entry {
        Entry {
            sqe: Sqe::from_bytes(b),
            file: le64(b, 48),
            reserved: le64(b, 56),
        }
    }
}

impl Sqe {
    /// The entry's bytes, with no file named.
    pub fn to_bytes(&self) -> [u8; SQE_LEN] {
        let mut b = [0u8; SQE_LEN];
        b[0..8].copy_from_slice(&self.handle.to_le_bytes());
        b[8..12].copy_from_slice(&self.op.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.file_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.buffer_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.len.to_le_bytes());
        b[40..48].copy_from_slice(&self.tag.to_le_bytes());
        b
    }

    /// The request part of an entry's bytes.
    pub fn from_bytes(b: &[u8; SQE_LEN]) -> Sqe {
        Sqe {
            handle: le64(b, 0),
            op: le32(b, 8),
            flags: le32(b, 12),
            file_offset: le64(b, 16),
            buffer_offset: le64(b, 24),
            len: le64(b, 32),
            tag: le64(b, 40),
        }
    }
}

/// One completion: the request's tag and its result (bytes transferred, or a negative errno).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cqe {
    pub tag: u64,
    pub result: i64,
}

impl Cqe {
    pub fn to_bytes(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        b[0..8].copy_from_slice(&self.tag.to_le_bytes());
        b[8..16].copy_from_slice(&self.result.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; CQE_LEN]) -> Cqe {
        Cqe {
            tag: le64(b, 0),
            result: le64(b, 8) as i64,
        }
    }
}

/// A mapped ring. Only raw copies and atomics touch the shared memory: the other side can
/// write any byte of it at any time.
pub struct RingView {
    memory: Arc<Memory>,
    base: *mut u8,
    layout: Layout,
}

// SAFETY: the view only reads and writes the shared memory through atomics and volatile
// copies of whole entries (never through references to plain data), and `memory` (Send+Sync)
// keeps the mapping alive; the raw base pointer is just its address.
unsafe impl Send for RingView {}
// SAFETY: as above; every method takes `&self` and is safe to call from several threads
// (callers serialise producers and consumers of each queue themselves).
unsafe impl Sync for RingView {}

impl RingView {
    /// A view of `memory` as a ring of `layout`; fails if the memory is too small.
    pub fn new(memory: Arc<Memory>, layout: Layout) -> Result<RingView, std::io::Error> {
        let base = memory
            .addr(0, layout.len as u64)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(RingView {
            memory,
            base,
            layout,
        })
    }

    /// Writes the informational header (daemon, at setup).
    pub fn write_header(&self) {
        let mut h = [0u8; 32];
        h[0..4].copy_from_slice(&RING_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&RING_VERSION.to_le_bytes());
        h[8..12].copy_from_slice(&self.layout.sq_entries.to_le_bytes());
        h[12..16].copy_from_slice(&self.layout.cq_entries.to_le_bytes());
        h[16..24].copy_from_slice(&(self.layout.sqes as u64).to_le_bytes());
        h[24..32].copy_from_slice(&(self.layout.cqes as u64).to_le_bytes());
        let _ = self.memory.write_at(0, &h);
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn counter(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= PAGE && offset.is_multiple_of(4));
        // SAFETY: `offset` is one of the fixed counter offsets, all inside the first page of
        // the mapping (len >= 4096) and 4-byte aligned (the mapping is page-aligned);
        // AtomicU32 has the size and alignment of u32, and the memory lives as long as
        // `self` (we hold the Arc). Every access from this process is atomic.
        unsafe { &*self.base.add(offset).cast::<AtomicU32>() }
    }

    pub fn sq_head(&self) -> &AtomicU32 {
        self.counter(SQ_HEAD)
    }

    pub fn sq_tail(&self) -> &AtomicU32 {
        self.counter(SQ_TAIL)
    }

    pub fn sq_flags(&self) -> &AtomicU32 {
        self.counter(SQ_FLAGS)
    }

    pub fn cq_head(&self) -> &AtomicU32 {
        self.counter(CQ_HEAD)
    }

    pub fn cq_tail(&self) -> &AtomicU32 {
        self.counter(CQ_TAIL)
    }

    pub fn cq_flags(&self) -> &AtomicU32 {
        self.counter(CQ_FLAGS)
    }

    fn sqe_ptr(&self, index: u32) -> *mut [u8; SQE_LEN] {
        let slot = (index & (self.layout.sq_entries - 1)) as usize;
        // SAFETY: slot < sq_entries, so the entry lies inside sqes..cqes <= len.
        unsafe { self.base.add(self.layout.sqes + slot * SQE_LEN).cast() }
    }

    fn cqe_ptr(&self, index: u32) -> *mut [u8; CQE_LEN] {
        let slot = (index & (self.layout.cq_entries - 1)) as usize;
        // SAFETY: slot < cq_entries, so the entry lies inside cqes..len.
        unsafe { self.base.add(self.layout.cqes + slot * CQE_LEN).cast() }
    }

    /// Copies submission entry `index` out of the ring (the copy is then checked, never the
    /// shared bytes, which may change under us).
    pub fn read_sqe(&self, index: u32) -> Entry {
        // SAFETY: the pointer is inside the mapping (see sqe_ptr); a byte array has no
        // alignment or validity requirement, and a volatile copy tolerates concurrent writes
        // by the other process.
        Entry::from_bytes(&unsafe { self.sqe_ptr(index).read_volatile() })
    }

    /// Writes submission entry `index`.
    pub fn write_sqe(&self, index: u32, entry: &Entry) {
        // SAFETY: as in read_sqe.
        unsafe { self.sqe_ptr(index).write_volatile(entry.to_bytes()) };
    }

    /// Copies completion entry `index` out of the ring.
    pub fn read_cqe(&self, index: u32) -> Cqe {
        // SAFETY: as in read_sqe, for the completion entries.
        Cqe::from_bytes(&unsafe { self.cqe_ptr(index).read_volatile() })
    }

    /// Writes completion entry `index`.
    pub fn write_cqe(&self, index: u32, cqe: &Cqe) {
        // SAFETY: as in read_cqe.
        unsafe { self.cqe_ptr(index).write_volatile(cqe.to_bytes()) };
    }
}
