//! How changes become durable: every metadata change is applied and queued as one unit
//! (`change`), commits write the queue to the log or a checkpoint (`sync`, `checkpoint`),
//! and `fsync`/`fdatasync` wait for the commit their data needs (see `commit` for the
//! group commit and the busy extents).

use std::sync::atomic::Ordering;

use stripefs_layout::ondisk::Record;

use super::Filesystem;
use super::commit::Lsn;
use super::error::FsError;
use super::journal::Journal;
use crate::meta::Metadata;

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

    /// Writes a checkpoint of the metadata and empties the queue, both cut at the same
    /// change (under the metadata lock, so no change falls between the snapshot and the cut:
    /// a change in both would be replayed twice, one in neither would be lost).
    pub(super) fn write_checkpoint(&self, journal: &mut Journal) -> Result<Lsn, FsError> {
        let (snapshot, cut) = {
            let meta = self.meta.read();
            let cut = self.pending.lock().take();
            (meta.snapshot(), cut)
        };
        match journal.checkpoint(&self.devices, &self.pool, &snapshot) {
            Ok(()) => {
                self.settle(cut.through);
                Ok(cut.through)
            }
            Err(e) => {
                self.pending.lock().restore(cut);
                Err(e)
            }
        }
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
        self.reserve_metadata(meta, &records)?;
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
        if !grows {
            return Ok(());
        }
        let mut encoded = Vec::new();
        stripefs_layout::ondisk::encode_all(records, &mut encoded);
        let delta = encoded.len() as u64;
        let estimate = self.meta_estimate.fetch_add(delta, Ordering::Relaxed) + delta;
        // Leave room for the records of the change that are replaced (inode records), which
        // the estimate counts twice, by measuring exactly once the estimate gets close.
        if estimate <= self.meta_capacity / 10 * 9 {
            return Ok(());
        }
        let exact = checkpoint_size(&meta.snapshot());
        self.meta_estimate.store(exact + delta, Ordering::Relaxed);
        if exact + delta > self.meta_capacity {
            self.meta_estimate.store(exact, Ordering::Relaxed);
            return Err(FsError::MetadataFull {
                needed: exact + delta,
                available: self.meta_capacity,
            });
        }
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

/// Bytes a checkpoint of `records` takes on a device.
pub(super) fn checkpoint_size(records: &[Record]) -> u64 {
    let mut bytes = Vec::new();
    stripefs_layout::ondisk::encode_all(records, &mut bytes);
    CHECKPOINT_OVERHEAD + (bytes.len() as u64).next_multiple_of(4096)
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
