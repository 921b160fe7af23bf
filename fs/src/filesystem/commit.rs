//! Group commit: how metadata changes queued in memory become durable, and when the space
//! they free may be used again.
//!
//! Every change (a list of records applied to the metadata together) gets a sequence
//! number. A commit cuts the queue at a change boundary, flushes the data devices, and writes
//! the cut to the log (or a checkpoint that includes it); the changes up to the cut are then
//! durable. An `fsync` waits for a commit whose cut holds every change made before it:
//! concurrent callers share one commit, as in ext4's jbd2 or XFS's CIL — one thread writes
//! the log while the others wait, and a caller whose changes came after the cut in progress
//! starts the next one.
//!
//! Space that a change frees is *busy* (XFS's word) until that change is durable: handing
//! it out earlier would let new data overwrite blocks that the durable metadata still gives
//! to a file, so a crash would show that file with another file's bytes.

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex};
use stripefs_layout::ondisk::Record;

use super::error::FsError;
use crate::meta::Freed;

/// The sequence number of a change; 0 is "before the first change".
pub(crate) type Lsn = u64;

/// Space freed by a change that is not durable yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BusyExtent {
    pub lsn: Lsn,
    pub device: u16,
    pub start: u64,
    pub len: u64,
}

/// Changes applied in memory and not yet in the log, in order.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    records: Vec<Record>,
    /// The last change queued.
    last: Lsn,
    busy: Vec<BusyExtent>,
    /// Per inode, the last change to its size or to where its data is (what `fdatasync`
    /// must make durable; a change of times or mode alone does not count).
    data: HashMap<u64, Lsn>,
}

/// The records of the changes up to `through`, taken from the queue for one commit.
#[derive(Debug)]
pub(crate) struct Cut {
    pub records: Vec<Record>,
    pub through: Lsn,
}

impl Pending {
    /// Numbers a new change.
    pub(crate) fn begin(&mut self) -> Lsn {
        self.last += 1;
        self.last
    }

    /// The last change queued.
    pub(crate) fn last(&self) -> Lsn {
        self.last
    }

    /// Queues one record of change `lsn`, with the space applying it freed.
    pub(crate) fn push(&mut self, lsn: Lsn, record: Record, freed: Freed) {
        self.busy
            .extend(freed.into_iter().map(|(device, start, len)| BusyExtent {
                lsn,
                device,
                start,
                len,
            }));
        self.records.push(record);
    }

    /// Notes that change `lsn` moves or resizes the data of `ino`.
    pub(crate) fn touch_data(&mut self, ino: u64, lsn: Lsn) {
        self.data.insert(ino, lsn);
    }

    /// The last change to the data mapping or size of `ino` (0: none since mount).
    pub(crate) fn data_lsn(&self, ino: u64) -> Lsn {
        self.data.get(&ino).copied().unwrap_or(0)
    }

    /// Bytes freed by changes not yet durable.
    pub(crate) fn busy_bytes(&self) -> u64 {
        self.busy.iter().map(|b| b.len).sum()
    }

    /// Takes every queued record: the cut of one commit.
    pub(crate) fn take(&mut self) -> Cut {
        Cut {
            records: std::mem::take(&mut self.records),
            through: self.last,
        }
    }

    /// Puts back the records of a commit that failed, ahead of anything queued meanwhile.
    pub(crate) fn restore(&mut self, cut: Cut) {
        let later = std::mem::replace(&mut self.records, cut.records);
        self.records.extend(later);
    }

    /// Once the changes through `durable` are: the space they freed, now free to reuse.
    pub(crate) fn settle(&mut self, durable: Lsn) -> Vec<BusyExtent> {
        self.data.retain(|_, &mut lsn| lsn > durable);
        let (free, busy) = std::mem::take(&mut self.busy)
            .into_iter()
            .partition(|b| b.lsn <= durable);
        self.busy = busy;
        free
    }
}

/// Who is writing the log now, and how far the changes are durable.
#[derive(Debug, Default)]
pub(crate) struct CommitGate {
    state: Mutex<GateState>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    durable: Lsn,
    committing: bool,
}

impl CommitGate {
    /// The last change known durable.
    pub(crate) fn durable(&self) -> Lsn {
        self.state.lock().durable
    }

    /// Returns once the changes through `target` are durable: at once if they are, after the
    /// commit in progress if its cut holds them, or after running `commit` (which returns
    /// the change its cut went through). `target: None` always runs `commit` (a checkpoint).
    pub(crate) fn commit_through(
        &self,
        target: Option<Lsn>,
        mut commit: impl FnMut() -> Result<Lsn, FsError>,
    ) -> Result<(), FsError> {
        let mut state = self.state.lock();
        loop {
            if target.is_some_and(|t| state.durable >= t) {
                return Ok(());
            }
            if state.committing {
                self.finished.wait(&mut state);
                continue;
            }
            state.committing = true;
            drop(state);
            let result = commit();
            state = self.state.lock();
            state.committing = false;
            if let Ok(through) = result {
                state.durable = state.durable.max(through);
            }
            self.finished.notify_all();
            // A failed commit fails its caller; waiters retry with a commit of their own.
            result?;
            if target.is_none() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn free_inode(ino: u64) -> Record {
        Record::FreeInode { ino }
    }

    #[test]
    fn freed_space_waits_for_its_change() {
        let mut p = Pending::default();
        let a = p.begin();
        p.push(a, free_inode(5), vec![(0, 4096, 8192)]);
        let b = p.begin();
        p.push(b, free_inode(6), vec![(1, 0, 4096)]);
        assert!(p.settle(0).is_empty());
        let freed = p.settle(a);
        assert_eq!(freed.len(), 1);
        assert_eq!(
            (freed[0].device, freed[0].start, freed[0].len),
            (0, 4096, 8192)
        );
        assert_eq!(p.busy_bytes(), 4096);
        assert_eq!(p.settle(b).len(), 1);
        assert_eq!(p.busy_bytes(), 0);
    }

    #[test]
    fn a_failed_cut_goes_back_ahead_of_later_changes() {
        let mut p = Pending::default();
        let a = p.begin();
        p.push(a, free_inode(1), Vec::new());
        let cut = p.take();
        assert_eq!(cut.through, a);
        let b = p.begin();
        p.push(b, free_inode(2), Vec::new());
        p.restore(cut);
        let again = p.take();
        assert_eq!(again.records, vec![free_inode(1), free_inode(2)]);
        assert_eq!(again.through, b);
    }

    #[test]
    fn concurrent_waiters_share_commits_and_never_return_early() {
        let gate = Arc::new(CommitGate::default());
        let queued = Arc::new(AtomicU64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, queued, commits) = (gate.clone(), queued.clone(), commits.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = queued.fetch_add(1, Ordering::SeqCst) + 1;
                        gate.commit_through(Some(mine), || {
                            let cut = queued.load(Ordering::SeqCst);
                            commits.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(50));
                            Ok(cut)
                        })
                        .expect("commit");
                        assert!(
                            gate.durable() >= mine,
                            "returned before its change was durable"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(
            commits.load(Ordering::SeqCst) < 1600,
            "no commit was shared"
        );
    }

    #[test]
    fn a_failed_commit_fails_its_caller_and_the_next_caller_retries() {
        let gate = CommitGate::default();
        let err = gate.commit_through(Some(1), || Err(FsError::invalid("device gone")));
        assert!(err.is_err());
        assert_eq!(gate.durable(), 0);
        gate.commit_through(Some(1), || Ok(1)).expect("retry");
        assert_eq!(gate.durable(), 1);
    }
}
