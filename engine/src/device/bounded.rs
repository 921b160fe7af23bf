//! Bounded waits: command timeouts, cancellation, and resubmission of short transfers.
//!
//! Every command carries the instant it expires (its batch's submission plus the device's
//! timeout). The reaper scans the in-flight table every [`DeviceShared::scan_period`] and
//! times out what has expired: the command's request fails at once with
//! [`Error::Timeout`], naming the device and the range, and an `ASYNC_CANCEL` naming the
//! command's exact user data (slot and generation, so it can never hit a later command that
//! reuses the slot) goes to the kernel. A waiter for the request, a migration or an
//! unregistration fencing its mapping, and the device's close all wait at most the timeout
//! (plus one scan period), whether or not the device ever answers.
//!
//! Why not a `LINK_TIMEOUT` linked to each command: that is a second entry, a second
//! completion and a kernel timer armed and cancelled per command on the hot path, for an
//! event that almost never happens; a deadline costs one clock reading per batch, and the
//! scan runs only while commands are in flight.
//!
//! # A timed-out command keeps its slot, and its memory stays safe
//!
//! Failing the request drops its mapping guard, so a migration or unregistration may go on
//! to detach the attachment (clearing the fixed-buffer slot) and release the memory, while
//! the kernel may still be reading or writing the command's pages: a cancellation does not
//! reach a command the block layer has already started. This is safe because:
//!
//! - The in-flight slot is not freed: the command stays in the table, with no request,
//!   until its completion arrives (whatever its result), and only then is the slot reused.
//!   It is counted in `SubmitState::stuck` meanwhile, so closing does not wait for it (a
//!   power cut does: it may still change the backing). No second command can be given its
//!   slot number or user data.
//! - The kernel does not reach the memory through our mapping: `READ_FIXED`/`WRITE_FIXED`
//!   resolve the fixed buffer when the kernel first issues the entry, within the
//!   `io_uring_enter` that submits it (punted work keeps what it resolved), into the pages
//!   it pinned when the buffer was registered, and the command holds a reference to that
//!   registration until it completes. Updating or clearing the fixed-buffer slot (detach)
//!   only drops the table's reference: the pages stay pinned until the last command using
//!   them completes, and a slot given to other memory later is not looked at again. So a
//!   late transfer lands in (or is taken from) pages that cannot have been freed and reused
//!   by anyone else, however late it comes.
//! - For that, a command must be in the kernel before it is given up: the scan submits
//!   whatever is still queued in the ring (a deferred batch) before it fails any request,
//!   and gives up nothing if that submission fails.
//! - What remains is that those pages may still be the caller's buffer (after an
//!   unregistration, or a timeout with no unregistration): a timed-out read may still write
//!   into the request's own buffer range later, and a timed-out write may still reach the
//!   device later. That is the contract of a failed request: its buffer range (for a read)
//!   or its device range (for a write) is undefined until the device is closed. Nothing
//!   outside the failed request's ranges is ever touched.
//! - The emulated hang (`hang=`) puts a command in the kernel that never completes on its
//!   own and touches no memory (a timeout op set a century ahead); its cancellation always
//!   succeeds, so the emulated device gets its slots back.
//!
//! Closing a device waits only for commands whose requests are live: timed-out commands
//! still in the kernel are left to it (dropping the ring makes the kernel cancel or wait
//! for them; it keeps its own pins until then).
//!
//! # Short transfers
//!
//! A completion that transferred some bytes but fewer than asked (as a device or the
//! emulated `short=` fault may) is not a failure: the command is resubmitted for the rest,
//! under the same slot and a new user data, and its request completes when all of it has
//! been transferred. A completion of zero bytes for a non-empty rest fails the request with
//! [`Error::ShortTransfer`] (no progress: end of a file, or a device refusing).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{DeviceShared, InFlight, ring};
use crate::error::Error;
use crate::request::RequestSlot;

/// Shortest and longest pause between two timeout scans.
const SCAN_MIN: Duration = Duration::from_millis(1);
const SCAN_MAX: Duration = Duration::from_millis(100);

impl DeviceShared {
    /// How often the reaper looks for expired commands: an eighth of the timeout, within
    /// 1–100 ms. A command fails at most that long after its timeout.
    pub(super) fn scan_period(&self) -> Duration {
        (self.timeout / 8).clamp(SCAN_MIN, SCAN_MAX)
    }

    /// Times out every command expired at `now` (its request fails, the command is
    /// cancelled and keeps its slot until the kernel answers); returns when to look again.
    pub(super) fn expire(&self, now: Instant) -> Instant {
        let mut next = now + self.scan_period();
        // Allocates only when something times out.
        let mut timed_out: Vec<(Arc<RequestSlot>, Error)> = Vec::new();
        let mut state = self.submit.lock();
        if state.free.len() + state.stuck as usize == self.depth as usize {
            return next;
        }
        // Every command must be in the kernel before any is given up: one still queued in
        // the ring would resolve its fixed buffer only later, when the attachment may be
        // gone and its slot given to other memory (see the module docs).
        if self.submit_queued().is_err() {
            return next;
        }
        let mut cancels = 0;
        for slot in self.inflight.iter() {
            let mut slot = slot.lock();
            let Some(command) = slot.as_mut() else {
                continue;
            };
            if command.request.is_some() && command.expires > now {
                next = next.min(command.expires);
                continue;
            }
            if let Some(request) = command.request.take() {
                timed_out.push((request, self.timeout_error(command)));
                state.stuck += 1;
            }
            if !command.cancelled {
                // A full ring leaves it for the next scan.
                command.cancelled = self.cancel(command.user_data);
                cancels += 1;
            }
        }
        if cancels > 0 {
            self.kick();
        }
        drop(state);
        for (request, error) in timed_out {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            request.complete_part(Err(error));
        }
        next
    }

    /// Submits every entry queued in the ring (an error if the kernel did not take them
    /// all). The caller holds the submission lock.
    fn submit_queued(&self) -> std::io::Result<()> {
        // SAFETY: the caller holds the submission lock.
        unsafe { ring::submit_all(&self.ring) }
    }

    /// Queues a cancellation of the command whose entry has `user_data`; false if the ring
    /// is full. The caller holds the submission lock.
    fn cancel(&self, user_data: u64) -> bool {
        let entry = ring::Entry::Cancel { target: user_data };
        // SAFETY: the caller holds the submission lock; a cancellation lends no memory.
        unsafe { ring::push(&self.ring, &entry, ring::CONTROL) }
    }

    fn timeout_error(&self, command: &InFlight) -> Error {
        Error::Timeout {
            device: self.name.clone(),
            op: command.op,
            offset: command.offset,
            len: command.len,
            timeout: self.timeout,
        }
    }

    /// Handles a transfer of `result` bytes that leaves part of a live command undone:
    /// resubmits the rest and returns `None`, or gives the command back if it is finished
    /// (all transferred, failed, timed out, or no progress made).
    pub(super) fn continue_short(
        &self,
        id: u32,
        mut command: InFlight,
        result: i32,
    ) -> Option<InFlight> {
        let Ok(moved) = u64::try_from(result) else {
            return Some(command);
        };
        let rest = command.len - command.done;
        if moved == 0 || moved >= rest || command.request.is_none() || command.injected.is_some() {
            return Some(command);
        }
        command.done += moved;
        self.counters.resubmitted.fetch_add(1, Ordering::Relaxed);
        let mut state = self.submit.lock();
        self.push(&mut state, id, command);
        drop(state);
        // Submitted at the end of the drain that handled the short completion.
        self.deferred.store(true, Ordering::Release);
        None
    }
}
