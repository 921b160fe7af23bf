//! Completing commands. Whoever waits for a request drains the rings it used (so a command's
//! completion is handled by the thread that submitted it, where io_uring runs its task work);
//! one reaper thread per device drains when no I/O context uses the device, and stands by
//! while some do (a safety drain every 20 ms, or at once while a submitter waits for a free
//! slot or a migration waits for I/O to finish), so every command completes even when its
//! submitter is busy elsewhere. The reaper also times out commands the device does not
//! answer (module `bounded`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{DeviceShared, InFlight, ring};
use crate::error::{Error, Op};
use crate::notify;

/// How often the reaper looks while I/O contexts drain for it: a safety net for a context
/// whose thread does not wait (its completions are not lost, only collected late).
const STANDBY_TICK: Duration = Duration::from_millis(20);
/// How often the reaper looks while nothing rings (closing and timeouts are looked at then).
const IDLE_TICK: Duration = Duration::from_millis(100);

/// Completion-side state of a device, owned by whoever drains.
pub(super) struct CqState {
    cqes: Vec<(u64, i32)>,
    /// Completions the timing model says are not due yet: (due, user data, result).
    held: BinaryHeap<Reverse<(Instant, u64, i32)>>,
    freed: Vec<u32>,
    /// Of `freed`, the slots of timed-out commands (counted in `SubmitState::stuck`).
    unstuck: u32,
}

impl CqState {
    pub(super) fn new(cq_entries: usize, depth: usize) -> Self {
        CqState {
            cqes: Vec::with_capacity(cq_entries),
            held: BinaryHeap::with_capacity(depth),
            freed: Vec::with_capacity(depth),
            unstuck: 0,
        }
    }
}

impl DeviceShared {
    /// Completes every command the ring has finished (and held ones now due); returns how
    /// many completed. Returns 0 at once if another thread is draining.
    pub(crate) fn drain(&self) -> usize {
        let Some(mut guard) = self.cq.try_lock() else {
            return 0;
        };
        let cq = &mut *guard;
        cq.cqes.clear();
        // SAFETY: the cq lock makes this thread the device's only completion reader.
        unsafe { ring::reap(&self.ring, &mut cq.cqes) };
        // Only emulated devices with a timing model hold completions back.
        let now = self.timing.is_active().then(Instant::now);
        let mut completed = 0;
        for i in 0..cq.cqes.len() {
            let (user_data, result) = cq.cqes[i];
            if ring::command_slot(user_data).is_none() {
                continue; // a cancellation's own completion
            }
            match (self.due(user_data), now) {
                (Some(due), Some(now)) if due > now => {
                    cq.held.push(Reverse((due, user_data, result)))
                }
                _ => completed += self.complete(user_data, result, cq),
            }
        }
        while let (Some(Reverse((due, user_data, result))), Some(now)) =
            (cq.held.peek().copied(), now)
        {
            if due > now {
                break;
            }
            cq.held.pop();
            completed += self.complete(user_data, result, cq);
        }
        if !cq.freed.is_empty() {
            let mut state = self.submit.lock();
            state.free.append(&mut cq.freed);
            state.stuck -= std::mem::take(&mut cq.unstuck);
            drop(state);
            self.space.notify_all();
        }
        drop(guard);
        self.kick_deferred();
        completed
    }

    /// When the timing model lets the completion of the command with `user_data` be
    /// delivered (only emulated devices with a timing model hold completions back).
    fn due(&self, user_data: u64) -> Option<Instant> {
        if !self.timing.is_active() {
            return None;
        }
        let slot = self.inflight.get(user_data as u32 as usize)?.lock();
        slot.as_ref().and_then(|c| c.due)
    }

    /// When the next held completion is due (if the drain state is free to look at).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if !self.timing.is_active() {
            return None;
        }
        let cq = self.cq.try_lock()?;
        cq.held.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Whether no request has a command on the device (timed-out commands still in the
    /// kernel do not count: see module `bounded`).
    fn idle(&self) -> bool {
        let state = self.submit.lock();
        state.free.len() + state.stuck as usize == self.depth as usize
    }

    /// Handles the completion of the command whose entry had `user_data`: resubmits the
    /// rest of a short transfer, or completes the command's part of its request. Returns
    /// how many requests' commands completed (0 or 1).
    fn complete(&self, user_data: u64, result: i32, cq: &mut CqState) -> usize {
        let id = user_data as u32;
        let Some(slot) = self.inflight.get(id as usize) else {
            return 0;
        };
        let command = {
            let mut slot = slot.lock();
            // A completion for an earlier use of the slot cannot come (a slot is reused
            // only after its completion), but a stale one is ignored rather than misread.
            if slot.as_ref().is_none_or(|c| c.user_data != user_data) {
                return 0;
            }
            slot.take()
        };
        let Some(mut cmd) = command.and_then(|c| self.continue_short(id, c, result)) else {
            return 0;
        };
        cq.freed.push(id);
        let outcome = self.outcome(&cmd, result);
        // The write cache and the recorder see a write before its request completes.
        let outcome = self.observe_write(&mut cmd, outcome);
        let Some(request) = cmd.request.take() else {
            // Timed out earlier: its request already failed (and was counted).
            cq.unstuck += 1;
            return 0;
        };
        self.count(&cmd, outcome.is_ok());
        request.complete_part(outcome);
        1
    }

    fn outcome(&self, cmd: &InFlight, result: i32) -> Result<u64, Error> {
        let errno = cmd.injected.or((result < 0).then_some(-result));
        if let Some(errno) = errno {
            return Err(self.io_error(
                cmd.op,
                cmd.offset,
                cmd.len,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        let done = cmd.done + result as u64;
        if done != cmd.len {
            return Err(Error::ShortTransfer {
                device: self.name.clone(),
                op: cmd.op,
                offset: cmd.offset,
                expected: cmd.len,
                done,
            });
        }
        Ok(done)
    }

    fn count(&self, cmd: &InFlight, ok: bool) {
        let c = &self.counters;
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match cmd.op {
            Op::Read => {
                c.reads.fetch_add(1, Ordering::Relaxed);
                c.bytes_read.fetch_add(cmd.len, Ordering::Relaxed);
            }
            Op::Write => {
                c.writes.fetch_add(1, Ordering::Relaxed);
                c.bytes_written.fetch_add(cmd.len, Ordering::Relaxed);
            }
        }
    }
}

/// The reaper: drains whenever the ring rings and no I/O context uses the device; stands by
/// while some do.
pub(super) fn run(dev: &DeviceShared) {
    let mut watch = [
        notify::readable(dev.efd.raw()),
        notify::readable(dev.standby.raw()),
    ];
    let mut standby = [notify::readable(dev.standby.raw())];
    let mut next_scan = Instant::now();
    loop {
        if dev.closed.load(Ordering::Acquire) && dev.idle() {
            return;
        }
        dev.kick_deferred();
        let now = Instant::now();
        if now >= next_scan {
            next_scan = dev.expire(now);
        }
        let scan = next_scan.saturating_duration_since(now);
        let due = dev
            .next_due()
            .map_or(scan, |due| due.saturating_duration_since(now).min(scan));
        if dev.stands_by() {
            let tick = due.min(STANDBY_TICK);
            notify::wait_any(&mut standby, Some(tick));
            if standby[0].revents != 0 {
                dev.standby.clear();
            }
        } else {
            notify::wait_any(&mut watch, Some(due.min(IDLE_TICK)));
            // Cleared before draining, so a completion posted after the drain rings again.
            if watch[0].revents != 0 {
                dev.efd.clear();
            }
            if watch[1].revents != 0 {
                dev.standby.clear();
            }
            if dev.stands_by() {
                // A context took the device while we slept: the completion that woke us is
                // its to handle (draining it here would race with its waiter).
                continue;
            }
        }
        dev.drain();
    }
}

impl DeviceShared {
    /// Whether the reaper leaves draining to the I/O contexts using the device.
    fn stands_by(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
            && self.urgent.load(Ordering::Acquire) == 0
            && !self.closed.load(Ordering::Acquire)
    }
}
