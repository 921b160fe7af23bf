//! `fsck --repair`: fixes what can be fixed without guessing, says what it did, and refuses
//! (writing nothing) what it cannot.
//!
//! Repairable, because the right state is not in doubt:
//! - a checkpoint torn by a crash while an older one and its log are whole: the metadata is
//!   rebuilt from those and written as a new checkpoint;
//! - orphans (files unlinked while open at a crash) and the space they hold: freed;
//! - extents past the end of a file (no read can reach them): released;
//! - directory entries that name an inode that does not exist: removed.
//!
//! Refused, with the reason: log records that do not apply, extents outside the data area or
//! claimed by two files, layouts naming devices the filesystem does not have, directories
//! cut off from the root or with two parents — deciding which side is right would be a guess.

use stripefs_engine::DeviceQueue;
use stripefs_layout::ondisk::Record;

use super::error::FsError;
use super::format::{BLOCK_SIZE, stripe_layout};
use super::fsck::{self, FsckReport, ReadMetadata};
use super::pieces;
use crate::meta::pieces::DirtyPieces;
use crate::meta::{Metadata, freed_all};

/// What `repair` did.
#[derive(Clone, Debug, Default)]
pub struct RepairReport {
    /// Each repair made, one line each.
    pub repaired: Vec<String>,
    /// Problems left alone, with why; when any is here, nothing was written.
    pub refused: Vec<String>,
    /// The checkpoint generation the metadata is at afterwards.
    pub checkpoint_generation: u64,
}

impl RepairReport {
    /// Whether the filesystem is consistent now (nothing refused).
    pub fn is_clean(&self) -> bool {
        self.refused.is_empty()
    }
}

/// Repairs the filesystem on `devices` (in mkfs order, not mounted). Errors that prevent
/// reading the metadata at all (bad superblocks, wrong device set, no valid checkpoint on
/// any replica) are returned as `Err`, with nothing written.
pub fn repair(devices: &[DeviceQueue]) -> Result<RepairReport, FsError> {
    let read = fsck::read_metadata(devices, u64::MAX - 2)?;
    let piece_space = read.piece_space();
    let ReadMetadata {
        pool,
        superblocks,
        mut loaded,
        mut meta,
        unapplied,
    } = read;
    let mut report = RepairReport {
        checkpoint_generation: loaded.journal.generation(),
        ..RepairReport::default()
    };
    if !loaded.passed_over.is_empty() {
        report.repaired.push(format!(
            "rebuilt the metadata from checkpoint generation {} and its {} log entries, passing over: {}",
            loaded.journal.generation(),
            loaded.log_entries,
            loaded.passed_over.join("; ")
        ));
    }
    report.refused.extend(unapplied.into_iter().map(|u| {
        format!("{u}: the record does not apply; which of the records is right cannot be told")
    }));
    if !report.refused.is_empty() {
        return Ok(report);
    }
    let fixes = [
        remove_dangling_entries(&meta),
        free_orphans(&meta),
        release_extents_past_the_end(&meta),
    ];
    for (record, why) in fixes.into_iter().flatten() {
        meta.apply(&record)?;
        report.repaired.push(why);
    }
    let mut left = FsckReport::default();
    fsck::check_metadata(&meta, &piece_space, &superblocks, devices, &mut left);
    if !left.problems.is_empty() {
        report.refused.extend(
            left.problems
                .into_iter()
                .map(|p| format!("{p}: no safe repair")),
        );
        let planned = std::mem::take(&mut report.repaired);
        if !planned.is_empty() {
            report.refused.push(format!(
                "nothing was written, not even the repairs that were possible: {}",
                planned.join("; ")
            ));
        }
        return Ok(report);
    }
    if report.repaired.is_empty() {
        return Ok(report);
    }
    // Every piece is written again, to space that neither the files nor the pieces of the
    // current checkpoint use; the pieces the table names but no inode is in any more go.
    let replicas: Vec<usize> = loaded.journal.areas().iter().map(|a| a.device).collect();
    let mut alloc = fsck::allocator_of(&meta, &superblocks);
    for (d, s, l) in pieces::table_space(loaded.journal.table(), &replicas) {
        alloc
            .reserve(usize::from(d), s, l)
            .map_err(|e| FsError::Corrupt {
                device: devices[usize::from(d)].name().to_string(),
                what: format!("a metadata piece's space: {e}"),
            })?;
    }
    let layout = DirtyPieces::new(
        loaded
            .journal
            .table()
            .pieces
            .iter()
            .map(|p| (p.id, p.raw_padded_len())),
    );
    let mut ids = layout.all(&meta);
    ids.extend(loaded.journal.table().pieces.iter().map(|p| p.id));
    let changed = pieces::encode_pieces(&layout, &meta, &ids);
    let staged = pieces::stage(&loaded.journal, changed, &mut alloc)?;
    loaded.journal.write_checkpoint(devices, &pool, &staged)?;
    report.checkpoint_generation = loaded.journal.generation();
    report.repaired.push(format!(
        "wrote checkpoint generation {} (the log starts over)",
        report.checkpoint_generation
    ));
    Ok(report)
}

/// A fix: the record that makes it, and what it does in words.
type Fix = (Record, String);

fn remove_dangling_entries(meta: &Metadata) -> Vec<Fix> {
    let mut fixes = Vec::new();
    for dir in meta.iter().filter(|i| i.is_dir()) {
        for (name, &child) in dir.entries() {
            if meta.get(child).is_none() {
                fixes.push((
                    Record::Unlink {
                        parent: dir.ino(),
                        name: name.to_vec(),
                    },
                    format!(
                        "removed entry {:?} of directory {}: it named inode {child}, which does not exist",
                        String::from_utf8_lossy(name),
                        dir.ino()
                    ),
                ));
            }
        }
    }
    fixes
}

fn free_orphans(meta: &Metadata) -> Vec<Fix> {
    meta.orphans()
        .into_iter()
        .map(|ino| {
            let bytes: u64 = meta
                .get(ino)
                .map(|i| freed_all(i).iter().map(|(_, _, len)| len).sum())
                .unwrap_or(0);
            (
                Record::FreeInode { ino },
                format!("freed orphan inode {ino} (unlinked, left open at a crash): {bytes} bytes"),
            )
        })
        .collect()
}

fn release_extents_past_the_end(meta: &Metadata) -> Vec<Fix> {
    let mut fixes = Vec::new();
    // Preallocated blocks past the end (fallocate with KEEP_SIZE) are kept.
    for inode in meta.iter().filter(|i| !i.prealloc()) {
        let Some(record) = inode.layout() else {
            continue;
        };
        let Ok(layout) = stripe_layout(record) else {
            continue;
        };
        for (column, map) in inode.extents().iter().enumerate() {
            let keep = layout
                .column_extent(inode.size(), column)
                .div_ceil(BLOCK_SIZE)
                * BLOCK_SIZE;
            if map.end() > keep {
                fixes.push((
                    Record::TruncateExtents {
                        ino: inode.ino(),
                        column: column as u16,
                        object_offset: keep,
                    },
                    format!(
                        "released column {column} of file {} past its end (size {}): {} bytes stored beyond {keep}",
                        inode.ino(),
                        inode.size(),
                        map.end() - keep
                    ),
                ));
            }
        }
    }
    fixes
}
