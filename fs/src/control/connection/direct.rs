//! Aligned reads that the ring thread runs itself.

use std::os::fd::AsFd;
use std::sync::Arc;

use stripefs_engine::{Completion, IoContext};

use super::super::ring::{Cqe, OP_READ, Sqe};
use super::super::server::ServerShared;
use super::handles::Registration;
use super::rings::{Job, RingState, count, finish};
use crate::filesystem::{BLOCK_SIZE, FileRead, FsError};

/// Whether a request's file offset, buffer offset and length are whole blocks: the devices
/// then move its data straight to or from the client's buffer, with no bounce.
pub(super) fn block_aligned(sqe: &Sqe) -> bool {
    let block = BLOCK_SIZE;
    sqe.file_offset.is_multiple_of(block)
        && sqe.buffer_offset.is_multiple_of(block)
        && sqe.len.is_multiple_of(block)
}

/// Reads the ring thread runs itself, on its own I/O context: aligned reads go from the
/// devices into the client's buffer with no other thread involved. Everything else (writes,
/// unaligned reads, which bounce and may block) goes to the workers.
pub(super) struct DirectReads {
    pub(super) ctx: IoContext,
    /// By context tag: the registration (for its counter) and the client's tag.
    pub(super) pending: Vec<Option<(Arc<Registration>, u64)>>,
    pub(super) free: Vec<usize>,
    pub(super) done: Vec<Completion>,
}

impl DirectReads {
    pub(super) fn new(entries: u32) -> Option<Self> {
        let depth = entries as usize;
        Some(DirectReads {
            ctx: IoContext::try_new(depth).ok()?,
            pending: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            done: Vec::with_capacity(depth),
        })
    }

    /// Whether the ring thread runs this (checked) request itself.
    pub(super) fn takes(sqe: &Sqe) -> bool {
        sqe.op == OP_READ && block_aligned(sqe)
    }

    /// Starts the read; a read refused at once completes at once with its errno.
    pub(super) fn start(
        &mut self,
        server: &ServerShared,
        ring: &RingState,
        Job { reg, file, sqe }: Job,
    ) {
        let Some(index) = self.free.pop() else {
            // Cannot happen (the context is as deep as the ring); refuse rather than block.
            return ring.complete(sqe.tag, -i64::from(libc::EAGAIN));
        };
        let read = FileRead {
            offset: sqe.file_offset,
            buffer_offset: sqe.buffer_offset,
            len: sqe.len,
            tag: index as u64,
        };
        let submitted = match &file {
            Some(f) => server
                .fs
                .submit_file_read(&mut self.ctx, &reg.mapping, &f.opened, read),
            None => server.fs.submit_read(&mut self.ctx, &reg.mapping, read),
        };
        match submitted {
            Ok(()) => self.pending[index] = Some((reg, sqe.tag)),
            Err(e) => {
                self.free.push(index);
                finish(server, ring, &reg, sqe.tag, -i64::from(e.errno()));
            }
        }
    }

    /// Posts the completions of finished reads, all at once.
    fn post(&mut self, server: &ServerShared, ring: &RingState) {
        if self.done.is_empty() {
            return;
        }
        let (pending, free) = (&mut self.pending, &mut self.free);
        let cqes = self.done.drain(..).filter_map(|c| {
            let index = c.tag as usize;
            let (reg, tag) = pending.get_mut(index).and_then(Option::take)?;
            free.push(index);
            count(server, &reg);
            let result = match c.result {
                Ok(n) => n as i64,
                Err(e) => -i64::from(FsError::from(e).errno()),
            };
            Some(Cqe { tag, result })
        });
        ring.complete_all(cqes);
    }

    pub(super) fn reap(&mut self, server: &ServerShared, ring: &RingState) {
        if self.ctx.in_flight() > 0 {
            self.ctx.poll(&mut self.done);
            self.post(server, ring);
        }
    }

    /// Sleeps until a read finishes or the client rings; posts what finished.
    pub(super) fn wait(&mut self, server: &ServerShared, ring: &RingState) {
        self.ctx
            .wait_or_readable(ring.sq_doorbell.as_fd(), &mut self.done);
        self.post(server, ring);
    }

    /// Lets every read in flight finish and posts it (the connection is closing).
    pub(super) fn finish_all(&mut self, server: &ServerShared, ring: &RingState) {
        while self.ctx.in_flight() > 0 {
            self.ctx.wait(1, &mut self.done);
            self.post(server, ring);
        }
    }
}
