//! Metadata log entries: records appended after a checkpoint, replayed at mount.
//!
//! An entry is a 32-byte header, the payload (records back to back), and zeros up to a
//! multiple of [`LOG_BLOCK`], so each entry is written whole with direct I/O. Header
//! (little-endian):
//!
//! | offset | field | type |
//! | --- | --- | --- |
//! | 0 | magic [`LOG_MAGIC`] (`"SLOG"`) | `u32` |
//! | 4 | version ([`LOG_VERSION`]) | `u16` |
//! | 6 | flags (0) | `u16` |
//! | 8 | generation: the checkpoint this log follows | `u64` |
//! | 16 | seq: 1, 2, 3… within the generation | `u64` |
//! | 24 | payload_len | `u32` |
//! | 28 | crc32c of the header (this field zero) and the payload | `u32` |
//!
//! Replay reads entries with the generation and sequence number it expects next, and
//! stops at the first that is not there: a torn or stale entry is the end of the log, not
//! an error. Only an entry that checksums right but does not decode is corruption.

use super::codec::{Reader, crc, len_u32, round_up};
use super::error::OnDiskError;
use super::record::{Record, decode_all, encode_all};

/// Entries are padded to a multiple of this many bytes.
pub const LOG_BLOCK: usize = 4096;
/// The first four bytes of every entry (`"SLOG"` in little-endian order).
pub const LOG_MAGIC: u32 = 0x474F_4C53;
/// The entry format version this build reads and writes.
pub const LOG_VERSION: u16 = 1;
/// Bytes in an entry header.
pub const LOG_HEADER_LEN: usize = 32;

/// An entry header's fields exactly as stored, before any check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawLogHeader {
    magic: u32,
    version: u16,
    flags: u16,
    generation: u64,
    seq: u64,
    payload_len: u32,
    crc: u32,
}

impl RawLogHeader {
    /// Reads the header at the start of `bytes`, if there are enough of them.
    fn read(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes.get(..LOG_HEADER_LEN)?);
        Self::read_fields(&mut r).ok()
    }

    fn read_fields(r: &mut Reader<'_>) -> Result<Self, OnDiskError> {
        Ok(Self {
            magic: r.u32()?,
            version: r.u16()?,
            flags: r.u16()?,
            generation: r.u64()?,
            seq: r.u64()?,
            payload_len: r.u32()?,
            crc: r.u32()?,
        })
    }

    fn write(&self) -> [u8; LOG_HEADER_LEN] {
        let mut h = [0; LOG_HEADER_LEN];
        h[0..4].copy_from_slice(&self.magic.to_le_bytes());
        h[4..6].copy_from_slice(&self.version.to_le_bytes());
        h[6..8].copy_from_slice(&self.flags.to_le_bytes());
        h[8..16].copy_from_slice(&self.generation.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..28].copy_from_slice(&self.payload_len.to_le_bytes());
        h[28..32].copy_from_slice(&self.crc.to_le_bytes());
        h
    }

    /// The crc32c of this header with its crc field zeroed, followed by `payload`.
    fn compute_crc(&self, payload: &[u8]) -> u32 {
        let header = Self { crc: 0, ..*self }.write();
        crc(&[&header, payload])
    }

    /// Version and flags of an entry whose checksum is right.
    fn check_format(&self) -> Result<(), OnDiskError> {
        if self.version != LOG_VERSION {
            return Err(OnDiskError::UnsupportedVersion {
                found: self.version.into(),
                supported: LOG_VERSION.into(),
            });
        }
        if self.flags != 0 {
            return Err(OnDiskError::BadField {
                field: "log.flags",
                value: self.flags.into(),
            });
        }
        Ok(())
    }
}

/// Encodes one entry of `records`, padded with zeros to a multiple of [`LOG_BLOCK`].
///
/// # Panics
/// If the records take 4 GiB or more.
pub fn encode_entry(generation: u64, seq: u64, records: &[Record]) -> Vec<u8> {
    let mut entry = vec![0; LOG_HEADER_LEN];
    encode_all(records, &mut entry);
    let mut header = RawLogHeader {
        magic: LOG_MAGIC,
        version: LOG_VERSION,
        flags: 0,
        generation,
        seq,
        payload_len: len_u32(entry.len() - LOG_HEADER_LEN),
        crc: 0,
    };
    header.crc = header.compute_crc(&entry[LOG_HEADER_LEN..]);
    entry[..LOG_HEADER_LEN].copy_from_slice(&header.write());
    entry.resize(padded_len(entry.len()), 0);
    entry
}

/// Decodes the entry at the start of `bytes` if it is entry `seq` of `generation`.
///
/// Returns the records and the entry's padded length (where the next entry starts), or
/// `Ok(None)` if `bytes` does not start with that entry whole (wrong magic, generation or
/// sequence number, checksum mismatch, or fewer bytes than the padded entry): the end of
/// the log. Returns an error for an entry whose checksum is right but whose version,
/// flags or records are not: corruption that a torn write cannot explain. Never panics.
pub fn decode_entry(
    bytes: &[u8],
    generation: u64,
    seq: u64,
) -> Result<Option<(Vec<Record>, usize)>, OnDiskError> {
    let Some((header, payload, padded)) = find_entry(bytes, generation, seq) else {
        return Ok(None);
    };
    header.check_format()?;
    let records = decode_all(payload)?;
    Ok(Some((records, padded)))
}

/// The padded length of entry `seq` of `generation` if `bytes` starts with its header (at
/// least [`LOG_HEADER_LEN`] bytes; the payload and checksum are not looked at): how much of
/// the log a reader needs before [`decode_entry`] can tell whether the entry is whole.
pub fn entry_len(bytes: &[u8], generation: u64, seq: u64) -> Option<usize> {
    let header = RawLogHeader::read(bytes)?;
    let expected =
        header.magic == LOG_MAGIC && header.generation == generation && header.seq == seq;
    if !expected {
        return None;
    }
    let end = LOG_HEADER_LEN.checked_add(usize::try_from(header.payload_len).ok()?)?;
    usize::try_from(round_up(end as u64, LOG_BLOCK as u64)?).ok()
}

/// The header, payload and padded length of entry `seq` of `generation` at the start of
/// `bytes`, if it is there whole with a matching checksum.
fn find_entry(bytes: &[u8], generation: u64, seq: u64) -> Option<(RawLogHeader, &[u8], usize)> {
    let header = RawLogHeader::read(bytes)?;
    let expected =
        header.magic == LOG_MAGIC && header.generation == generation && header.seq == seq;
    if !expected {
        return None;
    }
    let end = LOG_HEADER_LEN.checked_add(usize::try_from(header.payload_len).ok()?)?;
    let padded = usize::try_from(round_up(end as u64, LOG_BLOCK as u64)?).ok()?;
    if padded > bytes.len() {
        return None;
    }
    let payload = &bytes[LOG_HEADER_LEN..end];
    (header.compute_crc(payload) == header.crc).then_some((header, payload, padded))
}

/// `len` rounded up to a multiple of [`LOG_BLOCK`].
fn padded_len(len: usize) -> usize {
    len.next_multiple_of(LOG_BLOCK)
}
