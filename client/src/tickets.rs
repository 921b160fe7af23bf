//! Requests whose completions are kept apart for whoever holds their [`Ticket`], instead of
//! being handed to the next [`Client::wait`]: what the blocking calls use, and what futures
//! (one request each) and per-thread batches on one shared client need.

use super::ring::{Entry, OP_WRITE};
use super::{Client, ClientError, Mode, Op, SYNC_TAG, result_of};

/// The claim on the completion of one request started with [`Client::start_files`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    tag: u64,
    op: Op,
}

/// A ticket whose request completed, and its outcome (bytes transferred, or why not).
pub type Finished = (Ticket, Result<u64, ClientError>);

impl Ticket {
    fn outcome(self, raw: i64) -> Result<u64, ClientError> {
        result_of(raw).map_err(|errno| ClientError::Refused {
            op: self.op.name(),
            errno,
        })
    }
}

impl Client {
    /// Queues `entries` with tags of their own, waiting for ring space as needed.
    pub(crate) fn start_entries(
        &self,
        entries: impl Iterator<Item = Entry>,
    ) -> Result<Vec<Ticket>, ClientError> {
        let mut tickets = Vec::new();
        let entries: Vec<Entry> = entries
            .map(|mut e| {
                e.sqe.tag = SYNC_TAG
                    | self
                        .next_sync
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let op = if e.sqe.op == OP_WRITE {
                    Op::Write
                } else {
                    Op::Read
                };
                tickets.push(Ticket { tag: e.sqe.tag, op });
                e
            })
            .collect();
        let mut at = 0;
        while at < entries.len() {
            match self.submit_sqes(entries[at..].iter().copied()) {
                Ok(n) => at += n,
                Err(ClientError::Busy { .. }) => {
                    self.drive(Mode::Block, |_, in_flight| {
                        (in_flight < self.entries).then_some(())
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(tickets)
    }

    /// Waits for the request of `ticket` and returns its bytes transferred.
    /// Fails with [`ClientError::UnknownTicket`] if its outcome was taken already.
    pub fn finish(&self, ticket: Ticket) -> Result<u64, ClientError> {
        let raw = self.drive(Mode::Block, |st, in_flight| {
            match st.sync.remove(&ticket.tag) {
                Some(raw) => Some(Some(raw)),
                // Everything submitted is reaped: this ticket's outcome will never come.
                None => (in_flight == 0).then_some(None),
            }
        })?;
        match raw {
            Some(raw) => ticket.outcome(raw),
            None => Err(ClientError::UnknownTicket),
        }
    }

    /// The outcome of `ticket`'s request if it has completed (no waiting, no system call).
    pub fn try_finish(&self, ticket: Ticket) -> Result<Option<u64>, ClientError> {
        let mut st = self.reaped.lock();
        if !st.leader {
            let mut cqes = Vec::new();
            let outcome = self.reap(st.cq_head, Mode::NonBlocking, &mut cqes);
            self.absorb(&mut st, cqes, outcome);
        }
        match st.sync.remove(&ticket.tag) {
            Some(raw) => ticket.outcome(raw).map(Some),
            None => match &st.broken {
                Some(b) => Err(b.error()),
                None => Ok(None),
            },
        }
    }

    /// Waits until at least `min` of `tickets` (all of them if fewer) have completed, and
    /// returns every one that has, with its outcome. Tickets whose outcome was taken already
    /// are never returned (the wait ends when nothing is in flight).
    pub fn finish_some(
        &self,
        tickets: &[Ticket],
        min: usize,
    ) -> Result<Vec<Finished>, ClientError> {
        let min = min.min(tickets.len());
        let mut done = Vec::new();
        let mut open: Vec<Ticket> = tickets.to_vec();
        self.drive(Mode::Block, |st, in_flight| {
            open.retain(|t| match st.sync.remove(&t.tag) {
                Some(raw) => {
                    done.push((*t, raw));
                    false
                }
                None => true,
            });
            (done.len() >= min || in_flight == 0).then_some(())
        })?;
        Ok(done
            .into_iter()
            .map(|(t, raw)| (t, t.outcome(raw)))
            .collect())
    }
}
