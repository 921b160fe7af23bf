//! Registered requests: what a caller asks for, the per-request state that the device
//! reapers complete, and the outcome the caller collects.
//!
//! This is what devices and I/O contexts share: a device completes the commands of a
//! [`RequestSlot`], and the last one to finish hands the request over to its context's
//! [`ContextShared`]. Neither side's types are named here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use stripefs_mapping::{MapGuard, Mapping};

use crate::error::{Error, Op};
use crate::notify::EventFd;

/// One registered I/O: read or write `len` bytes at `offset` of the target, into or out of
/// the mapping's buffer at `buffer_offset`. `tag` comes back in the completion.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub op: Op,
    pub mapping: &'a Mapping,
    pub offset: u64,
    pub buffer_offset: u64,
    pub len: u64,
    pub tag: u64,
}

/// The outcome of one request: the bytes transferred, or the first error of any of its
/// device commands (naming the device and range).
#[derive(Debug)]
pub struct Completion {
    pub tag: u64,
    pub result: Result<u64, Error>,
}

/// A lock held shared while a request is in flight and let go when it completes. For the
/// filesystem layer: a file read holds the file's data lock so that a truncate or a write
/// cannot move the blocks it reads.
pub type FileHold = parking_lot::ArcRwLockReadGuard<parking_lot::RawRwLock, ()>;

/// The part of an I/O context that other threads reach: finished requests, and the
/// doorbell of its thread.
pub(crate) struct ContextShared {
    pub(crate) done: Mutex<Vec<u32>>,
    /// Set while the context's owner is blocked; a finisher then rings `wake`.
    pub(crate) waiting: AtomicBool,
    pub(crate) wake: EventFd,
}

impl ContextShared {
    /// Room for `depth` finished requests; fails if no eventfd can be had.
    pub(crate) fn new(depth: usize) -> Result<Self, std::io::Error> {
        Ok(ContextShared {
            done: Mutex::new(Vec::with_capacity(depth)),
            waiting: AtomicBool::new(false),
            wake: EventFd::new()?,
        })
    }

    /// Wakes the context's thread if it sleeps (or makes its next sleep return at once).
    pub(crate) fn wake(&self) {
        self.wake.signal();
    }
}

/// A request in flight, shared between the submitter and the device reapers.
pub(crate) struct RequestSlot {
    index: u32,
    ctx: Arc<ContextShared>,
    /// Device commands outstanding, plus one held by the submitter until all are queued.
    remaining: AtomicU32,
    error: Mutex<Option<Error>>,
    pub(crate) guard: Mutex<Option<MapGuard>>,
    /// For file requests: the file's data lock, held until the request completes.
    pub(crate) hold: Mutex<Option<FileHold>>,
    len: AtomicU64,
    tag: AtomicU64,
}

impl RequestSlot {
    /// Slot number `index` of the context `ctx`.
    pub(crate) fn new(index: u32, ctx: Arc<ContextShared>) -> Self {
        RequestSlot {
            index,
            ctx,
            remaining: AtomicU32::new(0),
            error: Mutex::new(None),
            guard: Mutex::new(None),
            hold: Mutex::new(None),
            len: AtomicU64::new(0),
            tag: AtomicU64::new(0),
        }
    }

    pub(crate) fn begin(&self, tag: u64, len: u64) {
        self.remaining.store(1, Ordering::Relaxed);
        *self.error.lock() = None;
        self.len.store(len, Ordering::Relaxed);
        self.tag.store(tag, Ordering::Relaxed);
    }

    /// Counts `n` more device commands.
    pub(crate) fn add_parts(&self, n: u32) {
        self.remaining.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a failure (the first one is kept).
    pub(crate) fn fail(&self, error: Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    /// One device command finished.
    pub(crate) fn complete_part(&self, result: Result<u64, Error>) {
        if let Err(e) = result {
            self.fail(e);
        }
        self.release();
    }

    pub(crate) fn release(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Unpin the mapping first: a migration waiting for this request may go on.
            drop(self.guard.lock().take());
            drop(self.hold.lock().take());
            self.ctx.done.lock().push(self.index);
            if self.ctx.waiting.load(Ordering::SeqCst) {
                self.ctx.wake.signal();
            }
        }
    }

    pub(crate) fn take_completion(&self) -> Completion {
        let result = match self.error.lock().take() {
            Some(e) => Err(e),
            None => Ok(self.len.load(Ordering::Relaxed)),
        };
        Completion {
            tag: self.tag.load(Ordering::Relaxed),
            result,
        }
    }
}
