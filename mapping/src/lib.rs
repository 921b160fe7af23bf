//! The buffer model of stripefs.
//!
//! A [`Buffer`] is the exporter: memory with a file descriptor (a memfd, or a dma-buf from
//! `/dev/udmabuf` where the kernel has it) that other parties can share. An [`Importer`] (a
//! device queue) attaches the buffer's memory, which yields an [`Attachment`]: the device's
//! long-lived "DMA mapping" of the buffer. A [`Mapping`] is the opaque object a registration
//! returns: one buffer, one attachment per device the target spans, and the state machine of
//! `move_notify` (mapped → invalidated → mapped again, or revoked) with in-flight I/O fencing.
//!
//! This crate knows nothing of files, layouts or io_uring: a device is only an [`Importer`].

mod attachment;
mod buffer;
mod error;
mod mapping;
mod memory;
pub mod udmabuf;

pub use attachment::{Attachment, FixedRegion, ImportError, ImportToken, Importer};
pub use buffer::{Buffer, BufferOptions, MigrationReport};
pub use error::MappingError;
pub use mapping::{MapGuard, Mapping, MappingState};
pub use memory::{CHUNK_MAX, Memory, MemoryChunk};

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide unique identifiers for buffers, memories and mappings, so that a stale or
/// foreign object can be recognised by number.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
