//! How changes become durable: every metadata change is applied and queued as one unit
//! (`change`), commits write the queue to the log or a checkpoint (`sync`, `checkpoint`),
//! and `fsync`/`fdatasync` wait for the commit their data needs (see `commit` for the
//! group commit and the busy extents).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use stripefs_layout::ondisk::{Record, Superblock};

use super::Filesystem;
use super::commit::{Cut, Lsn};
use super::error::FsError;
use super::heap;
use super::journal::Journal;
use super::pieces::{self, Staged};
use crate::meta::Metadata;
use crate::meta::pieces::Touch;

impl Filesystem {
    /// Makes every metadata change made so far durable (and the data they point at): the
    /// log gets one entry with every queued change, after the data devices are flushed.
    /// Concurrent callers share one commit.
    pub fn sync(&self) -> Result<(), FsError> {
        let target = self.pending.lock().last();
        self.commits
            .commit_through(Some(target), || self.write_log())
    }

    /// How many metadata changes have been made since the filesystem was opened. Each
    /// operation that must survive a crash whole (create, rename, truncate, fallocate, …)
    /// makes at most one change, since a commit may land between any two: the crash
    /// harness checks that with this count.
    pub fn changes_made(&self) -> u64 {
        self.pending.lock().last()
    }

    /// Writes a checkpoint of the whole metadata (the log starts over).
    pub fn checkpoint(&self) -> Result<(), FsError> {
        self.commits.commit_through(None, || {
            let mut journal = self.journal.lock();
            self.write_checkpoint(&mut journal)
        })
    }

    /// One commit: the queued changes go to the log, or — when the log is full — into a
    /// checkpoint. Returns the last change it made durable.
    pub(super) fn write_log(&self) -> Result<Lsn, FsError> {
        let mut journal = self.journal.lock();
        if self.checkpoint_soon.swap(false, Ordering::AcqRel) {
            // The pieces changed since the last checkpoint hold much of the replicas' free
            // space (their new copies are kept free for it): a checkpoint gives it back.
            return self.write_checkpoint(&mut journal);
        }
        let cut = self.pending.lock().take();
        match journal.append(&self.devices, &self.pool, &cut.records) {
            Ok(true) => {
                self.settle(cut.through);
                Ok(cut.through)
            }
            Ok(false) => {
                self.pending.lock().restore(cut);
                self.write_checkpoint(&mut journal)
            }
            Err(e) => {
                self.pending.lock().restore(cut);
                Err(e)
            }
        }
    }

    /// Writes a checkpoint of the pieces changed since the last one and empties the queue,
    /// both cut at the same change (under the metadata lock, so no change falls between the
    /// pieces and the cut: a change in both would be replayed twice, one in neither would
    /// be lost).
    pub(super) fn write_checkpoint(&self, journal: &mut Journal) -> Result<Lsn, FsError> {
        let staged = {
            let meta = self.meta.read();
            self.stage_checkpoint(journal, &meta)
        };
        self.finish_checkpoint(journal, staged)
    }

    /// A checkpoint written by a change that found no room for its records (the caller holds
    /// the metadata, `meta`): the space kept for the changed pieces' new copies comes back
    /// once they are written. Refused (`busy`) if a commit holds the journal.
    fn checkpoint_within_change(&self, meta: &Metadata, busy: FsError) -> Result<(), FsError> {
        let Some(mut journal) = self.journal.try_lock() else {
            return Err(busy);
        };
        let staged = self.stage_checkpoint(&journal, meta);
        self.finish_checkpoint(&mut journal, staged).map(|_| ())
    }

    /// Cuts the queue and takes the changed pieces, at the same change, and stages them.
    fn stage_checkpoint(&self, journal: &Journal, meta: &Metadata) -> StagedCheckpoint {
        let cut = self.pending.lock().take();
        let mut pieces = self.pieces.lock();
        let dirty = pieces.take();
        let changed = pieces::encode_pieces(&pieces, meta, &dirty);
        drop(pieces);
        let staged = pieces::stage(journal, changed, &mut self.alloc.lock());
        (staged, cut, dirty)
    }

    /// Writes a staged checkpoint; on failure puts the cut and the pieces back.
    fn finish_checkpoint(
        &self,
        journal: &mut Journal,
        (staged, cut, dirty): StagedCheckpoint,
    ) -> Result<Lsn, FsError> {
        let result = staged.and_then(|staged| {
            journal.write_checkpoint(&self.devices, &self.pool, &staged)?;
            Ok(staged)
        });
        match result {
            Ok(staged) => {
                self.stored(&staged);
                self.settle(cut.through);
                drop(staged);
                heap::trim();
                Ok(cut.through)
            }
            Err(e) => {
                // Space taken for pieces that were not made durable stays taken until the
                // next mount: a header may have reached a device, so it cannot be reused.
                self.pending.lock().restore(cut);
                self.pieces.lock().restore(dirty);
                self.keep_metadata_room();
                Err(e)
            }
        }
    }

    /// A checkpoint stored `staged`: the copies it replaced are free, and the pieces'
    /// sizes are what the next bound starts from.
    fn stored(&self, staged: &Staged) {
        {
            let mut pieces = self.pieces.lock();
            for (entry, _) in &staged.writes {
                pieces.stored(entry.id, entry.raw_padded_len());
            }
            for &id in &staged.removed {
                pieces.stored(id, 0);
            }
        }
        {
            let mut alloc = self.alloc.lock();
            for &(device, start, len) in &staged.replaced {
                alloc.release(usize::from(device), start, len);
            }
        }
        self.keep_metadata_room();
    }

    /// Keeps free, on every replica device, the space the next checkpoint may take.
    pub(super) fn keep_metadata_room(&self) {
        let bound = self.pieces.lock().bound();
        let mut alloc = self.alloc.lock();
        let mut least_free = u64::MAX;
        for device in self.replica_devices() {
            alloc.keep(device, bound + self.meta_slack + CHANGE_ROOM);
            least_free = least_free.min(alloc.free(device));
        }
        // Past an eighth of the free space (at most 64 MiB, at least 1 MiB), the next
        // commit is a checkpoint.
        let threshold = (least_free / 8).clamp(1 << 20, 64 << 20);
        if bound > threshold {
            self.checkpoint_soon.store(true, Ordering::Release);
        }
    }

    /// Whether the space kept for the next checkpoint's pieces is worth getting back with a
    /// checkpoint (an allocation that failed).
    pub(super) fn pieces_hold_space(&self) -> bool {
        self.pieces.lock().bound() > 0
    }

    /// The metadata replica devices.
    pub(super) fn replica_devices(&self) -> Vec<usize> {
        (0..self.superblocks.len())
            .filter(|&d| self.superblocks[d].meta_len > 0)
            .collect()
    }

    /// Bytes of metadata that can still be added before the replicas are full.
    pub(super) fn metadata_room(&self) -> u64 {
        let bound = self.pieces.lock().bound();
        let alloc = self.alloc.lock();
        self.replica_devices()
            .into_iter()
            .map(|d| alloc.free(d).saturating_sub(bound + self.meta_slack))
            .min()
            .unwrap_or(0)
    }

    /// The changes through `durable` are on the log: the space they freed can be reused.
    pub(super) fn settle(&self, durable: Lsn) {
        let free = self.pending.lock().settle(durable);
        if free.is_empty() {
            return;
        }
        let mut alloc = self.alloc.lock();
        for b in free {
            alloc.release(usize::from(b.device), b.start, b.len);
        }
    }

    /// Applies `records` (one change, made durable as a whole) and queues them for the log.
    /// The space they free stays busy until the change is durable. Refused with
    /// `MetadataFull` (ENOSPC) when the metadata could no longer be checkpointed, so that
    /// nothing is acknowledged that cannot be made durable.
    pub(super) fn change(&self, meta: &mut Metadata, records: Vec<Record>) -> Result<(), FsError> {
        match self.reserve_metadata(meta, &records) {
            Err(full @ FsError::MetadataFull { .. }) if self.pieces_hold_space() => {
                self.checkpoint_within_change(meta, full)?;
                self.reserve_metadata(meta, &records)?;
            }
            other => other?,
        }
        let mut pending = self.pending.lock();
        let lsn = pending.begin();
        for r in records {
            if let Some(ino) = moves_data(meta, &r) {
                pending.touch_data(ino, lsn);
            }
            let freed = meta.apply(&r)?;
            pending.push(lsn, r, freed);
        }
        Ok(())
    }

    /// Counts `records` into the next checkpoint's pieces, once the replicas are known to
    /// have room for them: refused with `MetadataFull` (ENOSPC) otherwise, so that nothing
    /// is acknowledged that cannot be made durable. A change that only removes may use the
    /// slack kept for it, so that a full filesystem can always be emptied.
    pub(super) fn reserve_metadata(
        &self,
        meta: &Metadata,
        records: &[Record],
    ) -> Result<(), FsError> {
        let grows = records.iter().any(|r| {
            !matches!(
                r,
                Record::FreeInode { .. }
                    | Record::Unlink { .. }
                    | Record::TruncateExtents { .. }
                    | Record::RemoveExtents { .. }
                    | Record::RemoveXattr { .. }
            )
        });
        let mut pieces = self.pieces.lock();
        let touched: Vec<(Touch, u64)> = pieces
            .plan_change(meta, records)
            .into_iter()
            .zip(records.iter().map(encoded_len))
            .collect();
        let bound = pieces.bound_after(&touched);
        let needed = if grows {
            bound + self.meta_slack
        } else {
            bound
        };
        let free = {
            let alloc = self.alloc.lock();
            self.replica_devices()
                .into_iter()
                .map(|d| alloc.free(d))
                .min()
                .unwrap_or(0)
        };
        let entries = (pieces.stored_count() + pieces.new_count() + records.len()) as u64;
        let table = CHECKPOINT_OVERHEAD + entries * TABLE_ENTRY_BOUND;
        let (needed, available) = if free < needed {
            (needed, free)
        } else if grows && table > self.meta_capacity {
            (table, self.meta_capacity)
        } else {
            (0, 0)
        };
        if needed > 0 {
            if pieces.bound() > 0 {
                // Part of that space comes back with the next checkpoint.
                self.checkpoint_soon.store(true, Ordering::Release);
            }
            return Err(FsError::MetadataFull { needed, available });
        }
        for (touched, size) in touched {
            pieces.touch(touched, size);
        }
        drop(pieces);
        self.keep_metadata_room();
        Ok(())
    }

    /// Makes the file's data and metadata durable (with every other change made before:
    /// one log, one order).
    pub fn fsync(&self, ino: u64) -> Result<(), FsError> {
        self.getattr(ino)?;
        self.sync()
    }

    /// Makes the file's data durable, and the metadata needed to read it back (its size and
    /// where its blocks are); a change of times or mode alone is not waited for. When that
    /// metadata is durable already, only the file's devices are flushed.
    pub fn fdatasync(&self, ino: u64) -> Result<(), FsError> {
        let devices: Vec<usize> = {
            let meta = self.meta.read();
            let inode = meta.get(ino).ok_or(FsError::NotFound)?;
            match inode.layout() {
                Some(l) => l.devices.iter().map(|&d| usize::from(d)).collect(),
                None => Vec::new(),
            }
        };
        let target = self.pending.lock().data_lsn(ino);
        if target > self.commits.durable() {
            return self
                .commits
                .commit_through(Some(target), || self.write_log());
        }
        for d in devices {
            if let Some(device) = self.devices.get(d) {
                device.sync()?;
            }
        }
        Ok(())
    }
}

/// Bytes of a checkpoint's header block.
pub(super) const CHECKPOINT_OVERHEAD: u64 = stripefs_layout::ondisk::CHECKPOINT_HEADER_LEN as u64;

/// Bytes a piece's table entry takes at most with two replicas of two runs each (most take
/// one run; the table's size is checked exactly when it is written): id, length, crc,
/// codec and records length, then the runs.
const TABLE_ENTRY_BOUND: u64 = 21 + 2 * (2 + 2 * 16);

/// A checkpoint's table and pieces staged, the queue's cut and the pieces it takes.
type StagedCheckpoint = (Result<Staged, FsError>, Cut, BTreeSet<u64>);

/// Bytes of each replica that data allocations leave beyond what the next checkpoint needs
/// and the slack: room for the records of the change that uses the data.
const CHANGE_ROOM: u64 = 256 << 10;

/// Bytes of each replica kept beyond what the next checkpoint needs, for changes that only
/// remove (and their checkpoint), so that a full filesystem can always be emptied: 4 MiB, or
/// 1/32 of the smallest replica data area if that is less.
pub(super) fn metadata_slack(superblocks: &[Superblock]) -> u64 {
    let smallest = superblocks
        .iter()
        .filter(|sb| sb.meta_len > 0)
        .map(|sb| sb.data_len)
        .min()
        .unwrap_or(0);
    (smallest / 32).min(4 << 20) / 4096 * 4096
}

/// Bytes `record` takes encoded.
fn encoded_len(record: &Record) -> u64 {
    let mut bytes = Vec::new();
    record.encode(&mut bytes);
    bytes.len() as u64
}

/// The inode whose data mapping or size `record` changes, if it does (read before it is
/// applied).
pub(super) fn moves_data(meta: &Metadata, record: &Record) -> Option<u64> {
    match record {
        Record::Extent { ino, .. }
        | Record::TruncateExtents { ino, .. }
        | Record::RemoveExtents { ino, .. } => Some(*ino),
        Record::Inode(r) => match meta.get(r.ino) {
            Some(old) if old.size() == r.size && old.layout() == r.layout.as_ref() => None,
            _ => Some(r.ino),
        },
        _ => None,
    }
}
