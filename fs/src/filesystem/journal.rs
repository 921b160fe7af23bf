//! The metadata log and its checkpoints, kept on every metadata replica device.
//!
//! A replica's metadata area holds two checkpoint slots and a log. A checkpoint of generation
//! `g` lives in slot `g % 2`: a table of where the metadata's pieces are (see `pieces`); the
//! log after it holds entries of generation `g` with sequence numbers 1, 2, 3… Mount takes the
//! newest valid checkpoint and replays its log up to the first entry that is missing or torn;
//! a commit that did not finish is simply not there.

use stripefs_engine::DeviceQueue;
use stripefs_layout::ondisk::{
    self, CHECKPOINT_HEADER_LEN, CheckpointHeader, LOG_BLOCK, PieceTable,
    RECORDS_CHECKPOINT_VERSION, Record, Superblock,
};

use super::bounce::{BouncePool, read_device, write_device};
use super::error::FsError;
use super::pieces::Staged;

/// Where the areas of one replica are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MetaArea {
    pub device: usize,
    pub offset: u64,
    pub len: u64,
}

impl MetaArea {
    pub(crate) fn slot_len(&self) -> u64 {
        (self.len / 4) / LOG_BLOCK as u64 * LOG_BLOCK as u64
    }

    fn slot_offset(&self, generation: u64) -> u64 {
        self.offset + (generation % 2) * self.slot_len()
    }

    fn log_offset(&self) -> u64 {
        self.offset + 2 * self.slot_len()
    }

    pub(crate) fn log_len(&self) -> u64 {
        self.len - 2 * self.slot_len()
    }
}

/// The replicas' metadata areas, from the superblocks.
pub(crate) fn areas(superblocks: &[Superblock]) -> Vec<MetaArea> {
    superblocks
        .iter()
        .enumerate()
        .filter(|(_, sb)| sb.meta_len > 0)
        .map(|(device, sb)| MetaArea {
            device,
            offset: sb.meta_offset,
            len: sb.meta_len,
        })
        .collect()
}

/// The log's write position and the generation it belongs to.
pub(crate) struct Journal {
    areas: Vec<MetaArea>,
    generation: u64,
    next_seq: u64,
    log_pos: u64,
    /// Where the current checkpoint's pieces are.
    table: PieceTable,
}

/// What mount found: the checkpoint (its table, in the journal; or, from a version 1
/// checkpoint, its records) and the log's records, in order.
pub(crate) struct Loaded {
    pub journal: Journal,
    /// A version 1 checkpoint's records; empty for a table (whose pieces `replay` reads).
    pub base: Vec<Record>,
    /// The log's records, in order.
    pub records: Vec<Record>,
    pub log_entries: u64,
    /// Checkpoints with a whole header that did not load (a newer one torn by a crash, or
    /// one replica's copy of this one), and why (for fsck). Slots never written are not
    /// listed.
    pub passed_over: Vec<String>,
}

impl Journal {
    /// A journal for a fresh filesystem whose first checkpoint has generation 1.
    pub(crate) fn fresh(areas: Vec<MetaArea>) -> Self {
        let replicas = areas.len() as u16;
        Journal {
            areas,
            generation: 0,
            next_seq: 1,
            log_pos: 0,
            table: PieceTable {
                replicas,
                pieces: Vec::new(),
            },
        }
    }

    /// The replicas' metadata areas, in the order of the table's copies.
    pub(crate) fn areas(&self) -> &[MetaArea] {
        &self.areas
    }

    /// Where the current checkpoint's pieces are.
    pub(crate) fn table(&self) -> &PieceTable {
        &self.table
    }

    /// The current checkpoint generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Reads the newest checkpoint that is whole (header and payload check) and its log,
    /// from the replica that has the most of it.
    ///
    /// A checkpoint torn by a crash (its header written, its payload not, or an old header
    /// over a payload half overwritten) fails its payload checksum: the next older valid
    /// checkpoint is used, whose log is intact because a generation's log is written only
    /// after its checkpoint is durable.
    pub(crate) fn load(
        devices: &[DeviceQueue],
        pool: &BouncePool,
        areas: Vec<MetaArea>,
    ) -> Result<Loaded, FsError> {
        let mut candidates = Vec::new();
        let mut problems = Vec::new();
        // Whole headers whose checkpoint did not load: torn by a crash (or damaged).
        let mut passed_over = Vec::new();
        for area in &areas {
            for slot in 0..2u64 {
                match read_header(devices, pool, area, area.offset + slot * area.slot_len()) {
                    Ok(h) if h.generation % 2 == slot => candidates.push((h, *area)),
                    Ok(h) => problems.push(format!(
                        "{} slot {slot}: checkpoint of generation {} in the wrong slot",
                        devices[area.device].name(),
                        h.generation
                    )),
                    Err(e) => {
                        problems.push(format!("{} slot {slot}: {e}", devices[area.device].name()))
                    }
                }
            }
        }
        let mut generations: Vec<u64> = candidates.iter().map(|(h, _)| h.generation).collect();
        generations.sort_unstable_by(|a, b| b.cmp(a));
        generations.dedup();
        for generation in generations {
            let mut best_load: Option<Loaded> = None;
            for (header, area) in candidates
                .iter()
                .filter(|(h, _)| h.generation == generation)
            {
                match load_replica(devices, pool, area, header, areas.len()) {
                    Ok((checkpoint, records, entries, log_pos)) => {
                        if best_load.as_ref().is_none_or(|b| entries > b.log_entries) {
                            let (base, table) = match checkpoint {
                                Checkpoint::Records(base) => {
                                    (base, Journal::fresh(areas.clone()).table)
                                }
                                Checkpoint::Table(table) => (Vec::new(), table),
                            };
                            best_load = Some(Loaded {
                                journal: Journal {
                                    areas: areas.clone(),
                                    generation,
                                    next_seq: entries + 1,
                                    log_pos,
                                    table,
                                },
                                base,
                                records,
                                log_entries: entries,
                                passed_over: passed_over.clone(),
                            });
                        }
                    }
                    Err(e) => {
                        passed_over.push(e.to_string());
                        problems.push(e.to_string());
                    }
                }
            }
            if let Some(loaded) = best_load {
                return Ok(loaded);
            }
            // A torn checkpoint has no log yet (its log is written only once it is durable
            // on every replica). One whose log exists was whole once and is damaged now:
            // falling back would silently drop the changes of that log.
            if let Some(area) = areas
                .iter()
                .find(|a| log_has_entries(devices, pool, a, generation))
            {
                return Err(FsError::Corrupt {
                    device: devices[area.device].name().to_string(),
                    what: format!(
                        "checkpoint generation {generation} is damaged on every replica although its log has entries (it was whole once); refusing to fall back to an older one, which would lose those changes ({})",
                        problems.join("; ")
                    ),
                });
            }
        }
        Err(FsError::Corrupt {
            device: areas
                .first()
                .map_or_else(String::new, |a| devices[a.device].name().to_string()),
            what: format!(
                "no valid metadata checkpoint on any replica ({})",
                problems.join("; ")
            ),
        })
    }

    /// Appends one entry with `records` to every replica's log, after flushing every device
    /// (the data the records point at must be durable before they are). Returns `false`,
    /// having written nothing, when the entry does not fit in the log: the caller then
    /// writes a checkpoint instead.
    pub(crate) fn append(
        &mut self,
        devices: &[DeviceQueue],
        pool: &BouncePool,
        records: &[Record],
    ) -> Result<bool, FsError> {
        if records.is_empty() {
            return Ok(true);
        }
        let entry = ondisk::encode_entry(self.generation, self.next_seq, records);
        let log_len = self.areas.iter().map(MetaArea::log_len).min().unwrap_or(0);
        if self.log_pos + entry.len() as u64 > log_len {
            return Ok(false);
        }
        flush(devices, 0..devices.len())?;
        for area in &self.areas {
            write_device(
                devices,
                pool,
                area.device,
                area.log_offset() + self.log_pos,
                &entry,
            )?;
        }
        flush(devices, self.areas.iter().map(|a| a.device))?;
        self.log_pos += entry.len() as u64;
        self.next_seq += 1;
        Ok(true)
    }

    /// Writes checkpoint generation+1 to every replica: the pieces `staged` in fresh space,
    /// then the table that names them; the log starts over. Nothing the current checkpoint
    /// uses is written over, so a crash at any point leaves it and its log as they were.
    pub(crate) fn write_checkpoint(
        &mut self,
        devices: &[DeviceQueue],
        pool: &BouncePool,
        staged: &Staged,
    ) -> Result<(), FsError> {
        let generation = self.generation + 1;
        let image = ondisk::encode_checkpoint_table(generation, &staged.table);
        let available = self.areas.iter().map(MetaArea::slot_len).min().unwrap_or(0);
        if image.len() as u64 > available {
            return Err(FsError::MetadataFull {
                needed: image.len() as u64,
                available,
            });
        }
        // Data first (the pieces point at it), then every replica's pieces and table, then —
        // once they are durable — the headers that make them valid. A crash in between leaves
        // the older checkpoint (in the other slot), its pieces and its log as they were.
        flush(devices, 0..devices.len())?;
        for (entry, bytes) in &staged.writes {
            for (area, runs) in self.areas.iter().zip(&entry.replicas) {
                let mut at = 0usize;
                for &(offset, len) in runs {
                    let end = (at + len as usize).min(bytes.len());
                    write_device(devices, pool, area.device, offset, &bytes[at..end])?;
                    at = end;
                }
            }
        }
        let (header, payload) = image.split_at(CHECKPOINT_HEADER_LEN);
        for area in &self.areas {
            let at = area.slot_offset(generation);
            write_device(
                devices,
                pool,
                area.device,
                at + header.len() as u64,
                payload,
            )?;
        }
        flush(devices, self.areas.iter().map(|a| a.device))?;
        for area in &self.areas {
            write_device(
                devices,
                pool,
                area.device,
                area.slot_offset(generation),
                header,
            )?;
        }
        flush(devices, self.areas.iter().map(|a| a.device))?;
        self.generation = generation;
        self.next_seq = 1;
        self.log_pos = 0;
        self.table = staged.table.clone();
        Ok(())
    }
}

fn flush(devices: &[DeviceQueue], which: impl Iterator<Item = usize>) -> Result<(), FsError> {
    for i in which {
        if let Some(d) = devices.get(i) {
            d.sync()?;
        }
    }
    Ok(())
}

/// Whether the log of `area` starts with a whole entry of `generation` (or one that
/// checksums right and does not decode).
fn log_has_entries(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    area: &MetaArea,
    generation: u64,
) -> bool {
    match read_log(devices, pool, area, generation, Some(1)) {
        Ok((_, entries, _)) => entries > 0,
        Err(FsError::Corrupt { .. }) => true,
        Err(_) => false,
    }
}

/// Bytes of the log read from a device at a time.
const LOG_CHUNK: usize = 1 << 20;

/// Reads the log of `area` from its start, a chunk at a time, up to the first entry of
/// `generation` that is missing or torn (or `limit` entries): returns the records, the
/// number of entries and where the log ends. Reads no more of the log than it holds.
fn read_log(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    area: &MetaArea,
    generation: u64,
    limit: Option<u64>,
) -> Result<(Vec<Record>, u64, u64), FsError> {
    let log_len = area.log_len() as usize;
    let mut log: Vec<u8> = Vec::new();
    // Reads on until `log` holds `upto` bytes; false if the log area is shorter.
    let fill = |log: &mut Vec<u8>, upto: usize| -> Result<bool, FsError> {
        while log.len() < upto {
            if log.len() >= log_len {
                return Ok(false);
            }
            let at = log.len();
            let n = (upto - at).max(LOG_CHUNK).min(log_len - at);
            log.resize(at + n, 0);
            read_device(
                devices,
                pool,
                area.device,
                area.log_offset() + at as u64,
                &mut log[at..],
            )?;
        }
        Ok(true)
    };
    let mut records = Vec::new();
    let (mut pos, mut seq) = (0usize, 1u64);
    while limit.is_none_or(|l| seq <= l) && fill(&mut log, pos + LOG_BLOCK)? {
        let Some(len) = ondisk::entry_len(&log[pos..], generation, seq) else {
            break;
        };
        if !fill(&mut log, pos + len)? {
            break;
        }
        match ondisk::decode_entry(&log[pos..pos + len], generation, seq) {
            Ok(Some((entry, used))) => {
                records.extend(entry);
                pos += used;
                seq += 1;
            }
            Ok(None) => break,
            Err(e) => {
                return Err(FsError::Corrupt {
                    device: devices[area.device].name().to_string(),
                    what: format!("log entry {seq} at {pos}: {e}"),
                });
            }
        }
    }
    Ok((records, seq - 1, pos as u64))
}

fn read_header(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    area: &MetaArea,
    offset: u64,
) -> Result<CheckpointHeader, FsError> {
    let mut block = vec![0u8; LOG_BLOCK];
    read_device(devices, pool, area.device, offset, &mut block)?;
    ondisk::decode_checkpoint_header(&block).map_err(|source| FsError::Superblock {
        device: devices[area.device].name().to_string(),
        source,
    })
}

/// What a checkpoint's payload holds.
enum Checkpoint {
    /// Version 1: every record.
    Records(Vec<Record>),
    /// Versions 2 and 3: where the pieces are.
    Table(PieceTable),
}

/// Reads one replica's checkpoint payload and valid log; returns the checkpoint, the log's
/// records, the number of log entries and the log's end.
fn load_replica(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    area: &MetaArea,
    header: &CheckpointHeader,
    replicas: usize,
) -> Result<(Checkpoint, Vec<Record>, u64, u64), FsError> {
    let device = devices[area.device].name().to_string();
    let corrupt = |what: String| FsError::Corrupt {
        device: device.clone(),
        what,
    };
    let payload_len = header.payload_len.next_multiple_of(LOG_BLOCK as u64);
    if payload_len + LOG_BLOCK as u64 > area.slot_len() {
        return Err(corrupt(format!(
            "checkpoint payload of {payload_len} bytes overruns its slot"
        )));
    }
    let mut payload = vec![0u8; payload_len as usize];
    read_device(
        devices,
        pool,
        area.device,
        area.slot_offset(header.generation) + LOG_BLOCK as u64,
        &mut payload,
    )?;
    let checkpoint = if header.version != RECORDS_CHECKPOINT_VERSION {
        let table = ondisk::decode_checkpoint_table(*header, &payload)
            .map_err(|e| corrupt(format!("checkpoint {}: {e}", header.generation)))?;
        if usize::from(table.replicas) != replicas {
            return Err(corrupt(format!(
                "checkpoint {} names {} replicas of each piece, but the filesystem has {replicas} metadata devices",
                header.generation, table.replicas
            )));
        }
        Checkpoint::Table(table)
    } else {
        Checkpoint::Records(
            ondisk::decode_checkpoint_payload(*header, &payload)
                .map_err(|e| corrupt(format!("checkpoint {}: {e}", header.generation)))?,
        )
    };
    let (records, entries, end) = read_log(devices, pool, area, header.generation, None)?;
    Ok((checkpoint, records, entries, end))
}
