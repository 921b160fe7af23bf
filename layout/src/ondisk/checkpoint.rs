//! Checkpoints: the metadata as of one change, from which the log that follows replays.
//!
//! A checkpoint is one header block of [`CHECKPOINT_HEADER_LEN`] bytes, then the payload
//! from byte 4096, padded with zeros to a multiple of 4096. Version 1's payload is the whole
//! metadata as records back to back (read, no longer written); versions 2 and 3 hold a
//! [`PieceTable`] saying where each piece of the metadata is (see `pieces`): version 3's
//! entries also name how each piece is encoded (LZ4 or plain), version 2's pieces are all
//! plain (read, no longer written). Header
//! (little-endian; the rest of the block is zero):
//!
//! | offset | field | type |
//! | --- | --- | --- |
//! | 0 | magic `b"STRFSCKP"` | `[u8; 8]` |
//! | 8 | version ([`CHECKPOINT_VERSION`]) | `u32` |
//! | 12 | generation | `u64` |
//! | 20 | payload_len | `u64` |
//! | 28 | payload_crc: crc32c of the payload | `u32` |
//! | 32 | crc32c of bytes `[0, 32)` | `u32` |

use super::codec::{Reader, check_field, crc, need, round_up};
use super::error::OnDiskError;
use super::pieces::{
    PieceTable, decode_piece_table, decode_piece_table_v2, encode_piece_table,
    encode_piece_table_v2,
};
use super::record::{Record, decode_all, encode_all};

/// The first eight bytes of every checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"STRFSCKP";
/// The checkpoint format version this build writes: a table of pieces, each compressed or
/// plain.
pub const CHECKPOINT_VERSION: u32 = 3;
/// The version before, a table of plain pieces (still read).
pub const PLAIN_PIECES_CHECKPOINT_VERSION: u32 = 2;
/// The older version, whose payload is every record (still read).
pub const RECORDS_CHECKPOINT_VERSION: u32 = 1;
/// Bytes in the header block; the payload starts right after it.
pub const CHECKPOINT_HEADER_LEN: usize = 4096;

/// Bytes of the header that its checksum covers; the checksum follows them.
const HEADER_FIELDS_LEN: usize = 32;
/// Payloads are padded to a multiple of this.
const CHECKPOINT_BLOCK: u64 = 4096;

/// A checked checkpoint header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CheckpointHeader {
    /// The format version: [`RECORDS_CHECKPOINT_VERSION`],
    /// [`PLAIN_PIECES_CHECKPOINT_VERSION`] or [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The generation: the metadata log that follows this checkpoint carries it.
    pub generation: u64,
    /// Bytes of records in the payload, before padding.
    pub payload_len: u64,
    /// crc32c of the payload's `payload_len` bytes.
    pub payload_crc: u32,
}

impl CheckpointHeader {
    /// The payload's length once padded to a multiple of 4096.
    pub fn padded_payload_len(&self) -> u64 {
        // decode_checkpoint_header refuses a payload_len for which this overflows.
        round_up(self.payload_len, CHECKPOINT_BLOCK).unwrap_or(u64::MAX)
    }

    /// Bytes of the whole checkpoint: the header block and the padded payload.
    pub fn total_len(&self) -> u64 {
        (CHECKPOINT_HEADER_LEN as u64).saturating_add(self.padded_payload_len())
    }
}

/// The header's fields exactly as stored, before any check.
struct RawCheckpointHeader {
    magic: [u8; 8],
    version: u32,
    generation: u64,
    payload_len: u64,
    payload_crc: u32,
    header_crc: u32,
}

impl RawCheckpointHeader {
    fn read(r: &mut Reader<'_>) -> Result<Self, OnDiskError> {
        Ok(Self {
            magic: r.array()?,
            version: r.u32()?,
            generation: r.u64()?,
            payload_len: r.u64()?,
            payload_crc: r.u32()?,
            header_crc: r.u32()?,
        })
    }

    /// The header block: fields, their checksum, zeros.
    fn write(&self) -> Vec<u8> {
        let mut block = Vec::with_capacity(CHECKPOINT_HEADER_LEN);
        block.extend_from_slice(&self.magic);
        block.extend_from_slice(&self.version.to_le_bytes());
        block.extend_from_slice(&self.generation.to_le_bytes());
        block.extend_from_slice(&self.payload_len.to_le_bytes());
        block.extend_from_slice(&self.payload_crc.to_le_bytes());
        let header_crc = crc(&[&block]);
        block.extend_from_slice(&header_crc.to_le_bytes());
        block.resize(CHECKPOINT_HEADER_LEN, 0);
        block
    }

    /// Magic, then version (so a future format is named as such), then checksum.
    fn check_envelope(&self, block: &[u8]) -> Result<(), OnDiskError> {
        if self.magic != CHECKPOINT_MAGIC {
            return Err(OnDiskError::BadMagic {
                found: u64::from_le_bytes(self.magic),
            });
        }
        let known = [
            RECORDS_CHECKPOINT_VERSION,
            PLAIN_PIECES_CHECKPOINT_VERSION,
            CHECKPOINT_VERSION,
        ];
        if !known.contains(&self.version) {
            return Err(OnDiskError::UnsupportedVersion {
                found: self.version,
                supported: CHECKPOINT_VERSION,
            });
        }
        let found = crc(&[&block[..HEADER_FIELDS_LEN]]);
        if found != self.header_crc {
            return Err(OnDiskError::BadChecksum {
                expected: self.header_crc,
                found,
            });
        }
        Ok(())
    }
}

/// Encodes a version 1 checkpoint of `records`: header block, payload, zeros to a multiple
/// of 4096. (Only tests and older filesystems have them; this build writes tables.)
pub fn encode_checkpoint(generation: u64, records: &[Record]) -> Vec<u8> {
    let mut out = vec![0; CHECKPOINT_HEADER_LEN];
    encode_all(records, &mut out);
    seal(generation, RECORDS_CHECKPOINT_VERSION, out)
}

/// Encodes a checkpoint whose payload is `table`: header block, table, zeros.
pub fn encode_checkpoint_table(generation: u64, table: &PieceTable) -> Vec<u8> {
    let mut out = vec![0; CHECKPOINT_HEADER_LEN];
    out.extend_from_slice(&encode_piece_table(table));
    seal(generation, CHECKPOINT_VERSION, out)
}

/// Encodes a version 2 checkpoint of `table` (only tests and tools that make an older
/// filesystem need one): refuses a table with a piece that is not plain.
pub fn encode_checkpoint_table_v2(
    generation: u64,
    table: &PieceTable,
) -> Result<Vec<u8>, OnDiskError> {
    let mut out = vec![0; CHECKPOINT_HEADER_LEN];
    out.extend_from_slice(&encode_piece_table_v2(table)?);
    Ok(seal(generation, PLAIN_PIECES_CHECKPOINT_VERSION, out))
}

/// Writes the header for the payload that follows it in `out`, and pads.
fn seal(generation: u64, version: u32, mut out: Vec<u8>) -> Vec<u8> {
    let payload = &out[CHECKPOINT_HEADER_LEN..];
    let header = RawCheckpointHeader {
        magic: CHECKPOINT_MAGIC,
        version,
        generation,
        payload_len: payload.len() as u64,
        payload_crc: crc(&[payload]),
        header_crc: 0,
    };
    out[..CHECKPOINT_HEADER_LEN].copy_from_slice(&header.write());
    out.resize(out.len().next_multiple_of(CHECKPOINT_BLOCK as usize), 0);
    out
}

/// Decodes and checks the header block at the start of `bytes` (at least 4096 bytes).
///
/// Checks, in order: length, magic, version, header checksum, zero padding, and that the
/// padded checkpoint's length fits in a `u64`. Never panics.
pub fn decode_checkpoint_header(bytes: &[u8]) -> Result<CheckpointHeader, OnDiskError> {
    need(bytes, CHECKPOINT_HEADER_LEN as u64)?;
    let block = &bytes[..CHECKPOINT_HEADER_LEN];
    let raw = RawCheckpointHeader::read(&mut Reader::new(block))?;
    raw.check_envelope(block)?;
    let padding = &block[HEADER_FIELDS_LEN + 4..];
    let zero_padding = padding.iter().all(|&b| b == 0);
    check_field("checkpoint.padding", 0, zero_padding)?;
    let total = round_up(raw.payload_len, CHECKPOINT_BLOCK)
        .and_then(|p| p.checked_add(CHECKPOINT_HEADER_LEN as u64));
    check_field("checkpoint.payload_len", raw.payload_len, total.is_some())?;
    Ok(CheckpointHeader {
        version: raw.version,
        generation: raw.generation,
        payload_len: raw.payload_len,
        payload_crc: raw.payload_crc,
    })
}

/// Decodes the records of the checkpoint whose header is `header`.
///
/// `payload` is the checkpoint from byte 4096 on (what follows the header block); bytes
/// past `payload_len` (the padding) are ignored. Checks length and checksum, then every
/// record. Never panics.
pub fn decode_checkpoint_payload(
    header: CheckpointHeader,
    payload: &[u8],
) -> Result<Vec<Record>, OnDiskError> {
    check_field(
        "checkpoint.version",
        u64::from(header.version),
        header.version == RECORDS_CHECKPOINT_VERSION,
    )?;
    decode_all(checked_payload(header, payload)?)
}

/// Decodes the piece table of the (version 2 or 3) checkpoint whose header is `header`.
pub fn decode_checkpoint_table(
    header: CheckpointHeader,
    payload: &[u8],
) -> Result<PieceTable, OnDiskError> {
    match header.version {
        CHECKPOINT_VERSION => decode_piece_table(checked_payload(header, payload)?),
        PLAIN_PIECES_CHECKPOINT_VERSION => decode_piece_table_v2(checked_payload(header, payload)?),
        other => Err(OnDiskError::BadField {
            field: "checkpoint.version",
            value: other.into(),
        }),
    }
}

/// The payload's `payload_len` bytes, once their checksum matches.
fn checked_payload(header: CheckpointHeader, payload: &[u8]) -> Result<&[u8], OnDiskError> {
    need(payload, header.payload_len)?;
    // `need` passed, so payload_len fits in a usize.
    let payload = &payload[..header.payload_len as usize];
    let found = crc(&[payload]);
    if found != header.payload_crc {
        return Err(OnDiskError::BadChecksum {
            expected: header.payload_crc,
            found,
        });
    }
    Ok(payload)
}

/// Decodes a whole checkpoint: its header, then its payload from byte 4096.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<(CheckpointHeader, Vec<Record>), OnDiskError> {
    let header = decode_checkpoint_header(bytes)?;
    let records = decode_checkpoint_payload(header, &bytes[CHECKPOINT_HEADER_LEN..]).map_err(
        |e| match e {
            // Count from the checkpoint's start rather than the payload's.
            OnDiskError::Truncated { needed, available } => OnDiskError::Truncated {
                needed: needed.saturating_add(CHECKPOINT_HEADER_LEN as u64),
                available: available + CHECKPOINT_HEADER_LEN as u64,
            },
            other => other,
        },
    )?;
    Ok((header, records))
}
