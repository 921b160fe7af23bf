//! Importers and attachments: a device's long-lived mapping of a buffer's memory.

use std::sync::Arc;

use crate::memory::{CHUNK_MAX, Memory};

/// Why a device could not attach a buffer.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("device is offline")]
    Offline,
    #[error("device is closed")]
    Closed,
    #[error("no free buffer slots: {needed} needed, {free} free")]
    NoSlots { needed: usize, free: usize },
    #[error("registering {len} bytes at slot {slot} failed: {source}")]
    Register {
        slot: u16,
        len: u64,
        #[source]
        source: std::io::Error,
    },
}

/// What a device hands back when it attaches memory: the device slots that now describe it,
/// one per chunk of the memory's scatter-gather table. This is the user-space "DMA address".
#[derive(Debug)]
pub struct ImportToken {
    /// Device slot of each chunk, in chunk order.
    pub slots: Box<[u16]>,
}

/// A device that can attach (import) a buffer's memory for I/O. Device queues implement it by
/// registering the pages as io_uring fixed buffers on their own ring.
pub trait Importer: Send + Sync {
    /// The device's name, used in errors.
    fn name(&self) -> &str;
    /// Pins `memory` for I/O on this device and returns the slots that describe it.
    fn attach(&self, memory: &Memory) -> Result<ImportToken, ImportError>;
    /// Releases the slots of `token`. Called once no I/O uses them any more.
    fn detach(&self, token: &ImportToken);
    /// Someone waits for this device's I/O on a mapping to finish (a migration or an
    /// unregistration fencing it) until the matching [`Importer::end_urgent`]: complete
    /// commands promptly even if their submitters are busy. Default: nothing to do.
    fn begin_urgent(&self) {}
    /// Ends what [`Importer::begin_urgent`] began.
    fn end_urgent(&self) {}
}

/// One device's attachment of one piece of memory. Dropping it detaches the memory from the
/// device before the memory itself can be released (the attachment holds the memory alive).
pub struct Attachment {
    token: ImportToken,
    importer: Arc<dyn Importer>,
    // Declared last: dropped after `Drop::drop` has detached the slots.
    memory: Arc<Memory>,
}

/// Where a byte range of the buffer lives for the device: slot and address.
#[derive(Clone, Copy, Debug)]
pub struct FixedRegion {
    /// Device slot (io_uring fixed-buffer index).
    pub slot: u16,
    /// Address of the first byte in this process.
    pub addr: *mut u8,
    /// Bytes available in this slot from `addr` on.
    pub available: u64,
}

impl Attachment {
    /// Attaches `memory` to `importer`.
    pub fn new(importer: Arc<dyn Importer>, memory: Arc<Memory>) -> Result<Self, ImportError> {
        let token = importer.attach(&memory)?;
        Ok(Attachment {
            token,
            importer,
            memory,
        })
    }

    /// The device slot and address of buffer byte `offset`, and how many bytes from there on
    /// the same slot covers. `None` if `offset` is outside the memory.
    pub fn locate(&self, offset: u64) -> Option<FixedRegion> {
        let chunk = usize::try_from(offset / CHUNK_MAX).ok()?;
        let slot = *self.token.slots.get(chunk)?;
        let addr = self.memory.addr(offset, 0).ok()?;
        let chunk_end = ((chunk as u64) + 1) * CHUNK_MAX;
        let available = chunk_end.min(self.memory.len()) - offset;
        Some(FixedRegion {
            slot,
            addr,
            available,
        })
    }

    /// The memory this attachment maps.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        self.importer.name()
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("device", &self.importer.name())
            .field("slots", &self.token.slots)
            .field("memory", &self.memory.id())
            .finish()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.importer.detach(&self.token);
    }
}
