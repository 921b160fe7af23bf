//! The state of a connection's shared-memory ring: its doorbells, its completion queue, the
//! jobs waiting for workers, and the threads that serve it.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::super::limits::{Charge, Resource, UserUsage};
use super::super::ring::{Cqe, RingView, Sqe, WAITING};
use super::super::server::ServerShared;
use super::super::sys;
use super::handles::{FileEntry, Registration};

pub(super) struct CqState {
    /// Our copy of cq_tail (never read back from the shared memory).
    pub(super) tail: u32,
    /// Requests taken off the submission queue whose completion is not posted yet.
    pub(super) reserved: u32,
}

/// A checked request: its registration (or buffer), the file it names (with [`SQE_FILE`]),
/// and the request.
///
/// [`SQE_FILE`]: super::super::ring::SQE_FILE
pub(super) struct Job {
    pub(super) reg: Arc<Registration>,
    pub(super) file: Option<Arc<FileEntry>>,
    pub(super) sqe: Sqe,
}

pub(super) struct JobQueue {
    pub(super) queue: VecDeque<Job>,
    pub(super) closed: bool,
}

pub(super) struct RingState {
    pub(super) view: RingView,
    pub(super) sq_doorbell: OwnedFd,
    pub(super) cq_doorbell: OwnedFd,
    pub(super) stop: OwnedFd,
    pub(super) stopping: AtomicBool,
    pub(super) cq: Mutex<CqState>,
    pub(super) jobs: Mutex<JobQueue>,
    pub(super) jobs_ready: Condvar,
    /// The connection's user: requests taken off this ring count against its requests in
    /// flight until their completions are posted.
    pub(super) user: Arc<UserUsage>,
    /// Requests counted against the user and not completed yet (given back on drop, should
    /// a completion never be posted).
    pub(super) counted: AtomicU64,
}

pub(super) struct RingThreads {
    pub(super) ring: Arc<RingState>,
    pub(super) threads: Vec<JoinHandle<()>>,
    /// The worker threads, counted against the user's.
    pub(super) _workers: Charge,
}

impl RingThreads {
    /// Stops taking requests, cancels queued ones, lets running ones complete, and waits.
    pub(super) fn stop(mut self) {
        self.ring.stopping.store(true, Ordering::Release);
        sys::ring_doorbell(self.ring.stop.as_fd());
        // The ring thread may be sleeping on its reads in flight and the client's doorbell.
        sys::ring_doorbell(self.ring.sq_doorbell.as_fd());
        {
            let mut jobs = self.ring.jobs.lock();
            jobs.closed = true;
            self.ring.jobs_ready.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl RingState {
    /// Space for completions not yet promised: the ring size less requests in progress and
    /// completions the client has not consumed. `None` if the client's cq_head is impossible.
    pub(super) fn room(&self, cq: &CqState) -> Option<u32> {
        let head = self.view.cq_head().load(Ordering::Acquire);
        let unconsumed = cq.tail.wrapping_sub(head);
        let entries = self.view.layout().cq_entries;
        if unconsumed > entries {
            return None;
        }
        Some(
            entries
                .saturating_sub(unconsumed)
                .saturating_sub(cq.reserved),
        )
    }

    /// Counts `n` requests taken off the ring against the user's requests in flight;
    /// returns how many of them are within the limit (the others must be completed at once
    /// with `EAGAIN`). All `n` are given back as their completions are posted.
    pub(super) fn admit(&self, n: u32) -> u32 {
        self.counted.fetch_add(u64::from(n), Ordering::AcqRel);
        self.user.take_up_to(Resource::Requests, u64::from(n)) as u32
    }

    /// Posts the completion of a request taken off the ring, and rings the client's doorbell
    /// if a thread of it sleeps.
    pub(super) fn complete(&self, tag: u64, result: i64) {
        self.complete_all(std::iter::once(Cqe { tag, result }));
    }

    /// Posts completions together: one tail update and at most one doorbell for all.
    pub(super) fn complete_all(&self, cqes: impl Iterator<Item = Cqe>) {
        let mut posted = 0u64;
        {
            let mut cq = self.cq.lock();
            for cqe in cqes {
                self.view.write_cqe(cq.tail, &cqe);
                cq.tail = cq.tail.wrapping_add(1);
                cq.reserved = cq.reserved.saturating_sub(1);
                posted += 1;
            }
            self.view.cq_tail().store(cq.tail, Ordering::Release);
        }
        self.uncount(posted);
        // Pairs with the client's store of WAITING and its re-check of cq_tail.
        fence(Ordering::SeqCst);
        if self.view.cq_flags().load(Ordering::Relaxed) & WAITING != 0 {
            sys::ring_doorbell(self.cq_doorbell.as_fd());
        }
    }
}

impl RingState {
    /// Gives back up to `n` requests counted against the user.
    fn uncount(&self, n: u64) {
        let given = self
            .counted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            })
            .map_or(0, |before| before.min(n));
        self.user.give_back(Resource::Requests, given);
    }
}

impl Drop for RingState {
    fn drop(&mut self) {
        self.uncount(u64::MAX);
    }
}

/// Counts a finished request and posts its completion.
pub(super) fn finish(
    server: &ServerShared,
    ring: &RingState,
    reg: &Registration,
    tag: u64,
    result: i64,
) {
    count(server, reg);
    ring.complete(tag, result);
}

/// Counts a finished request, for its registration and for the server.
pub(super) fn count(server: &ServerShared, reg: &Registration) {
    reg.requests.fetch_add(1, Ordering::Relaxed);
    server.requests.fetch_add(1, Ordering::Relaxed);
}
