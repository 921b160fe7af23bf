//! The metadata's pieces on the replica devices: placing a checkpoint's changed pieces in
//! fresh space, and reading them back at mount.
//!
//! A piece is written once, where nothing durable lives, and never written over: a
//! checkpoint stages the pieces that changed since the one before in space taken from the
//! replicas' data areas, and the space of the copies they replace is released only once the
//! new checkpoint is durable (the older checkpoint and its log need them until then).

use std::collections::BTreeSet;

use stripefs_engine::DeviceQueue;
use stripefs_layout::ondisk::{
    EncodedPiece, INODE_RECORD_MIN, PIECE_INODES, PieceEntry, PieceTable, Record, decode_piece,
    encode_piece,
};

use super::bounce::{BouncePool, read_device};
use super::error::FsError;
use super::journal::{Journal, Loaded};
use crate::meta::Metadata;
use crate::meta::alloc::Allocator;
use crate::meta::pieces::{DirtyPieces, ENTRY_PIECES, belongs};

/// A device range: (device index, offset, length).
pub(crate) type Space = (u16, u64, u64);

/// The next checkpoint's table and the pieces it needs written.
pub(crate) struct Staged {
    pub table: PieceTable,
    /// Each new piece's entry and its padded bytes.
    pub writes: Vec<(PieceEntry, Vec<u8>)>,
    /// The space of the copies the new table no longer names: free once it is durable.
    pub replaced: Vec<Space>,
    /// Pieces the new table drops (they hold no inode any more).
    pub removed: Vec<u64>,
}

/// A changed piece, encoded: `None` when it holds nothing any more (it is dropped).
pub(crate) type ChangedPiece = (u64, Option<EncodedPiece>);

/// Encodes `records` of piece `id` (none: the piece is gone).
pub(crate) fn encode_changed(id: u64, records: &[Record]) -> ChangedPiece {
    (id, (!records.is_empty()).then(|| encode_piece(records)))
}

/// Encodes pieces `ids` of `meta` as `dirty` lays them out, one at a time: only one piece's
/// records (one directory's, for entry pieces) exist at once, not every changed piece's.
pub(crate) fn encode_pieces(
    dirty: &DirtyPieces,
    meta: &Metadata,
    ids: &BTreeSet<u64>,
) -> Vec<ChangedPiece> {
    let mut changed = Vec::with_capacity(ids.len());
    dirty.each_piece(meta, ids, |id, records| {
        changed.push(encode_changed(id, &records));
    });
    changed
}

/// Stages `changed` pieces on top of the journal's current table, each copy in fresh space
/// of its replica device.
pub(crate) fn stage(
    journal: &Journal,
    changed: Vec<ChangedPiece>,
    alloc: &mut Allocator,
) -> Result<Staged, FsError> {
    let devices: Vec<usize> = journal.areas().iter().map(|a| a.device).collect();
    let mut table = journal.table().clone();
    let mut staged = Staged {
        table: PieceTable::default(),
        writes: Vec::new(),
        replaced: Vec::new(),
        removed: Vec::new(),
    };
    let mut taken: Vec<Space> = Vec::new();
    for (id, piece) in changed {
        let old = table.pieces.binary_search_by_key(&id, |p| p.id);
        if let Ok(i) = old {
            staged.replaced.extend(space_of(&table.pieces[i], &devices));
        }
        let Some(piece) = piece else {
            if let Ok(i) = old {
                table.pieces.remove(i);
                staged.removed.push(id);
            }
            continue;
        };
        let bytes = piece.bytes.as_slice();
        let mut replicas = Vec::with_capacity(devices.len());
        for &device in &devices {
            match alloc.allocate_kept(device, bytes.len() as u64, None) {
                Ok(runs) => {
                    taken.extend(runs.iter().map(|&(s, l)| (device as u16, s, l)));
                    replicas.push(runs);
                }
                Err(e) => {
                    for (d, s, l) in taken {
                        alloc.release(usize::from(d), s, l);
                    }
                    return Err(FsError::MetadataFull {
                        needed: bytes.len() as u64,
                        available: match e {
                            crate::meta::alloc::AllocError::NoSpace { free, .. } => free,
                            crate::meta::alloc::AllocError::Conflict { .. } => 0,
                        },
                    });
                }
            }
        }
        let entry = piece.entry(id, replicas);
        match old {
            Ok(i) => table.pieces[i] = entry.clone(),
            Err(i) => table.pieces.insert(i, entry.clone()),
        }
        staged.writes.push((entry, piece.bytes));
    }
    staged.table = table;
    Ok(staged)
}

/// Every device range the pieces of `table` take, on the replica `devices`.
pub(crate) fn table_space(table: &PieceTable, devices: &[usize]) -> Vec<Space> {
    table
        .pieces
        .iter()
        .flat_map(|p| space_of(p, devices))
        .collect()
}

fn space_of(entry: &PieceEntry, devices: &[usize]) -> Vec<Space> {
    entry
        .replicas
        .iter()
        .zip(devices)
        .flat_map(|(runs, &d)| runs.iter().map(move |&(s, l)| (d as u16, s, l)))
        .collect()
}

/// Reads piece `entry` from the first replica whose copy checks.
fn read_piece(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    journal: &Journal,
    entry: &PieceEntry,
) -> Result<Vec<Record>, FsError> {
    let mut problems = Vec::new();
    let mut bytes = vec![0u8; entry.padded_len() as usize];
    for (area, runs) in journal.areas().iter().zip(&entry.replicas) {
        let name = devices[area.device].name();
        let mut at = 0usize;
        let mut read = Ok(());
        for &(offset, len) in runs {
            let end = (at + len as usize).min(bytes.len());
            read = read_device(devices, pool, area.device, offset, &mut bytes[at..end]);
            if read.is_err() {
                break;
            }
            at = end;
        }
        match read {
            Err(e) => problems.push(format!("{name}: {e}")),
            Ok(()) => match decode_piece(entry, &bytes) {
                Ok(records) => return Ok(records),
                Err(e) => problems.push(format!("{name}: {e}")),
            },
        }
    }
    Err(FsError::Corrupt {
        device: journal
            .areas()
            .first()
            .map_or_else(String::new, |a| devices[a.device].name().to_string()),
        what: format!(
            "metadata piece {} of checkpoint {} is damaged on every replica ({})",
            entry.id,
            journal.generation(),
            problems.join("; ")
        ),
    })
}

/// Rebuilds `meta` from what mount found: the checkpoint (its pieces, or a version 1
/// checkpoint's records), then the log. Each record that does not apply is told to
/// `refused`, which decides whether to go on. Returns where the pieces are, with those the
/// log changed (or, from a version 1 checkpoint, every piece) marked: what the next
/// checkpoint must write.
pub(crate) fn replay(
    loaded: &Loaded,
    devices: &[DeviceQueue],
    pool: &BouncePool,
    meta: &mut Metadata,
    refused: &mut dyn FnMut(String, &Record) -> Result<(), FsError>,
) -> Result<DirtyPieces, FsError> {
    let journal = &loaded.journal;
    // Inode pieces from the highest down: a small directory's entries live with it, and a
    // child is nearly always numbered after its directory, so its inode is there already.
    // Then the entry pieces of large directories, whose inodes are all there. The few
    // entries whose child comes later wait until every piece is read.
    let mut waiting = Vec::new();
    let pieces = &journal.table().pieces;
    let split = pieces.partition_point(|p| p.id < ENTRY_PIECES);
    let order: Vec<&PieceEntry> = pieces[..split]
        .iter()
        .rev()
        .chain(&pieces[split..])
        .collect();
    meta.reserve(inodes_hint(&pieces[..split]));
    // One thread reads and decodes the pieces while this one applies them; the records it
    // has applied go back to be freed there too, off this thread's path.
    std::thread::scope(|scope| -> Result<(), FsError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Vec<Record>>();
        let reader = scope.spawn(move || {
            for entry in order {
                let read = read_piece(devices, pool, journal, entry).map(|r| (entry.id, r));
                let failed = read.is_err();
                if tx.send(read).is_err() || failed {
                    break;
                }
                while spent_rx.try_recv().is_ok() {}
            }
            drop(tx);
            for spent in spent_rx {
                drop(spent);
            }
        });
        for read in rx {
            let (id, records) = read?;
            for r in &records {
                if !belongs(id, r) {
                    refused(
                        format!("piece {id}: a record that belongs to another piece"),
                        r,
                    )?;
                    continue;
                }
                if let Record::Link { ino, .. } = r
                    && meta.get(*ino).is_none()
                {
                    waiting.push(r.clone());
                    continue;
                }
                apply(meta, r, || format!("piece {id}"), refused)?;
            }
            // The reader is gone only if it failed, which the next receive reports.
            let _ = spent_tx.send(records);
        }
        drop(spent_tx);
        reader.join().map_err(|_| FsError::Corrupt {
            device: String::new(),
            what: "the thread reading metadata pieces panicked".into(),
        })
    })?;
    for r in &waiting {
        apply(meta, r, || "a piece".into(), refused)?;
    }
    for (i, r) in loaded.base.iter().enumerate() {
        apply(meta, r, || format!("checkpoint record {i}"), refused)?;
    }
    let mut dirty = DirtyPieces::new(pieces.iter().map(|p| (p.id, p.raw_padded_len())));
    if !loaded.base.is_empty() {
        for p in dirty.all(meta) {
            dirty.mark(p);
        }
    }
    for (i, r) in loaded.records.iter().enumerate() {
        let touch = dirty.plan(meta, r, 0);
        dirty.touch(touch, 0);
        apply(meta, r, || format!("log record {i}"), refused)?;
    }
    Ok(dirty)
}

/// About how many inodes the inode pieces hold, never far above it: a piece holds at most
/// [`PIECE_INODES`] and each inode record takes at least [`INODE_RECORD_MIN`] bytes of the
/// piece's records (before compression).
fn inodes_hint(inode_pieces: &[PieceEntry]) -> usize {
    let by_count = inode_pieces.len() as u64 * PIECE_INODES;
    let by_bytes: u64 = inode_pieces
        .iter()
        .map(|p| u64::from(p.raw_len))
        .sum::<u64>()
        / INODE_RECORD_MIN;
    usize::try_from(by_count.min(by_bytes)).unwrap_or(0)
}

/// Applies `r`; `place` says where it came from, should it not apply.
fn apply(
    meta: &mut Metadata,
    r: &Record,
    place: impl FnOnce() -> String,
    refused: &mut dyn FnMut(String, &Record) -> Result<(), FsError>,
) -> Result<(), FsError> {
    match meta.apply(r) {
        Ok(_) => Ok(()),
        Err(e) => refused(format!("{}: {e}", place()), r),
    }
}
