//! The submission path: a request's pieces cut into commands (at the attachment's slot
//! boundaries and the device's maximum transfer), each given an in-flight slot, the faults
//! and the timing the device decides for it, and its ring entry; submitted as one batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use stripefs_mapping::{Attachment, FixedRegion, Importer};

use super::{DeviceShared, InFlight, Piece, SubmitState, ring};
use crate::error::{Error, Op};
use crate::request::RequestSlot;

/// One command of a request, as the submission path cuts it.
struct Command {
    op: Op,
    offset: u64,
    len: u64,
    region: FixedRegion,
    /// When the batch it belongs to was submitted.
    now: Instant,
}

impl DeviceShared {
    /// See [`DeviceQueue::submit`](super::DeviceQueue::submit).
    pub(super) fn submit(
        &self,
        op: Op,
        pieces: impl Iterator<Item = Piece>,
        attachment: &Attachment,
        request: &Arc<RequestSlot>,
    ) -> Option<Instant> {
        if self.faults.is_offline() {
            request.fail(Error::DeviceOffline {
                device: self.name.clone(),
            });
            return None;
        }
        let mut state = self.submit.lock();
        // Checked under the lock: once `close` has run, the reaper may exit when idle, so
        // nothing may be queued after it.
        if self.closed.load(Ordering::Acquire) {
            request.fail(Error::DeviceClosed {
                device: self.name.clone(),
            });
            return None;
        }
        // Also under the lock: a power cut waits for what is in flight once it has set this.
        if self.is_powered_off() {
            request.fail(Error::DeviceOffline {
                device: self.name.clone(),
            });
            return None;
        }
        // An idle device starts at once; a busy one submits at its next completion, in a batch.
        let busy = state.free.len() + (state.stuck as usize) < self.depth as usize;
        // One clock reading for the batch: its commands' timeouts and timing model.
        let now = Instant::now();
        let mut queued = 0usize;
        let mut last_due = None;
        for piece in pieces {
            let mut done = 0;
            while done < piece.len {
                let buffer_offset = piece.buffer_offset + done;
                let Some(region) = attachment.locate(buffer_offset) else {
                    request.fail(Error::DeviceIo {
                        device: self.name.clone(),
                        op,
                        offset: piece.device_offset + done,
                        len: piece.len - done,
                        source: std::io::Error::from_raw_os_error(libc::EFAULT),
                    });
                    break;
                };
                let len = (piece.len - done)
                    .min(self.max_transfer)
                    .min(region.available);
                let id = self.take_slot(&mut state, &mut queued);
                let offset = piece.device_offset + done;
                let command = Command {
                    op,
                    offset,
                    len,
                    region,
                    now,
                };
                last_due = last_due.max(self.queue(&mut state, id, command, request));
                queued += 1;
                done += len;
            }
        }
        drop(state);
        if queued > 0 {
            if busy {
                self.deferred.store(true, Ordering::Release);
            } else {
                self.kick();
            }
        }
        last_due
    }

    /// Submits entries whose submission was deferred.
    pub(crate) fn kick_deferred(&self) {
        if self.deferred.load(Ordering::Acquire) && self.deferred.swap(false, Ordering::AcqRel) {
            self.kick();
        }
    }

    /// Takes a free in-flight slot, submitting what is queued and waiting while all are busy.
    fn take_slot(
        &self,
        state: &mut parking_lot::MutexGuard<'_, SubmitState>,
        queued: &mut usize,
    ) -> u32 {
        loop {
            if let Some(id) = state.free.pop() {
                return id;
            }
            // Everything queued must be in the kernel before we sleep for a free slot: our
            // own entries, and entries other requests deferred to a next completion.
            self.deferred.store(false, Ordering::Release);
            self.kick();
            *queued = 0;
            // The contexts that would drain may all be this thread: have the reaper drain.
            self.begin_urgent();
            self.space.wait(state);
            self.end_urgent();
        }
    }

    /// Queues one command of `request` as in-flight slot `id`, with the faults and the
    /// timing the device decides for it; returns when the timing model lets it complete.
    fn queue(
        &self,
        state: &mut SubmitState,
        id: u32,
        c: Command,
        request: &Arc<RequestSlot>,
    ) -> Option<Instant> {
        // A hung device answers nothing, and touches nothing either.
        let hung = self.faults.hangs();
        let mut injected = (!hung)
            .then(|| self.faults.check(c.offset, c.len))
            .flatten();
        let cached = (!hung)
            .then(|| self.pre_image(c.op, c.offset, c.len, &mut injected))
            .flatten();
        let due = (!hung && self.timing.is_active())
            .then(|| self.timing.schedule(&mut state.channel, c.now, c.len));
        request.add_parts(1);
        let command = InFlight {
            request: Some(request.clone()),
            op: c.op,
            offset: c.offset,
            len: c.len,
            done: 0,
            slot: c.region.slot,
            addr: c.region.addr.expose_provenance(),
            injected,
            hung,
            due,
            expires: c.now + self.timeout,
            user_data: 0,
            cancelled: false,
            cached,
        };
        self.push(state, id, command);
        due
    }

    /// Puts `command` on the ring as in-flight slot `id`, under a fresh user data.
    pub(super) fn push(&self, state: &mut SubmitState, id: u32, mut command: InFlight) {
        state.generation = state.generation.wrapping_add(1);
        command.user_data = ring::command_data(id, state.generation);
        let user_data = command.user_data;
        let entry = self.entry(&command);
        *self.inflight[id as usize].lock() = Some(command);
        // SAFETY: we hold the submission lock; the request in the in-flight table holds the
        // mapping guard, which keeps the command's fixed-buffer region attached and mapped
        // until the completion (or, once the command times out, the kernel's own pin of the
        // registered pages does: see module `bounded`).
        let pushed = unsafe { ring::push(&self.ring, &entry, user_data) };
        if pushed {
            return;
        }
        // Cannot happen: the ring has more entries than the queue depth. Complete the
        // command as failed rather than lose it.
        state.free.push(id);
        let command = self.inflight[id as usize].lock().take();
        if let Some(InFlight {
            request: Some(request),
            op,
            offset,
            len,
            ..
        }) = command
        {
            let busy = std::io::Error::from_raw_os_error(libc::EBUSY);
            request.complete_part(Err(self.io_error(op, offset, len, busy)));
        }
    }

    /// The ring entry for what is left of `command`.
    fn entry(&self, command: &InFlight) -> ring::Entry {
        if command.hung {
            return ring::Entry::Hang;
        }
        if command.injected.is_some() {
            return ring::Entry::Nop;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        let offset = command.offset + command.done;
        let addr = std::ptr::with_exposed_provenance_mut(command.addr + command.done as usize);
        // At most the device's maximum transfer (at most 1 GiB), so it fits.
        let len = self.faults.transfer(command.len - command.done) as u32;
        let slot = command.slot;
        match command.op {
            Op::Read => ring::Entry::Read {
                fd,
                offset,
                addr,
                len,
                slot,
            },
            Op::Write => ring::Entry::Write {
                fd,
                offset,
                addr,
                len,
                slot,
            },
        }
    }

    pub(super) fn kick(&self) {
        // A failed submit leaves the entries queued; the reaper's next enter submits them.
        let _ = ring::submit(&self.ring);
    }
}
