//! Pieces: the metadata split by inode number, each part stored on its own.
//!
//! A checkpoint of version 2 does not hold the metadata itself: its payload is a
//! [`PieceTable`] that says where each **piece** is. Piece `p` holds the records of the inodes
//! numbered `p * PIECE_INODES .. (p + 1) * PIECE_INODES` (their inode records first, then the
//! directory entries they hold, their extents and xattrs), back to back as in a log entry,
//! padded with zeros to a multiple of 4096. Pieces live in the data areas of the metadata
//! replica devices, a copy on each, allocated like file data; a checkpoint writes only the
//! pieces that changed since the one before (to fresh space, never over a piece in use), so
//! its cost follows what changed, not the size of the filesystem.
//!
//! Table payload (little-endian):
//!
//! | field | type |
//! | --- | --- |
//! | replicas | `u16` (1 to [`MAX_REPLICAS`]) |
//! | piece count | `u32` |
//! | per piece: id | `u64` (strictly increasing) |
//! | per piece: payload length | `u32` (not 0) |
//! | per piece: crc32c of the payload | `u32` |
//! | per piece, per replica: run count | `u16` (not 0) |
//! | per run: device offset, length | `u64`, `u64` (multiples of 4096, length not 0) |
//!
//! Each replica's runs, in order, hold the padded payload: their lengths add up to it.

use super::codec::{Put, Reader, check_field, crc, round_up};
use super::error::OnDiskError;
use super::record::{Record, decode_all, encode_all};

/// Inode numbers per piece.
pub const PIECE_INODES: u64 = 256;
/// The most replicas a table may name.
pub const MAX_REPLICAS: u16 = 8;
/// Pieces are padded to, and stored in runs of, multiples of this.
pub const PIECE_BLOCK: u64 = 4096;

/// The piece that holds the records of inode `ino`.
pub fn piece_of(ino: u64) -> u64 {
    ino / PIECE_INODES
}

/// Where one piece is, and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PieceEntry {
    /// The piece number.
    pub id: u64,
    /// Bytes of records, before padding.
    pub len: u32,
    /// crc32c of those bytes.
    pub crc: u32,
    /// Per replica (in the order of the metadata replica devices): the runs
    /// `(device offset, length)` that hold the padded payload, in order.
    pub replicas: Vec<Vec<(u64, u64)>>,
}

impl PieceEntry {
    /// The payload's length once padded: what each replica's runs hold.
    pub fn padded_len(&self) -> u64 {
        u64::from(self.len).next_multiple_of(PIECE_BLOCK)
    }
}

/// Where every piece of a checkpoint is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PieceTable {
    /// How many replicas each piece has.
    pub replicas: u16,
    /// The pieces, by increasing id.
    pub pieces: Vec<PieceEntry>,
}

/// A piece's payload: `records` back to back, padded to [`PIECE_BLOCK`]; with the length and
/// crc32c of the unpadded bytes (for its table entry).
pub fn encode_piece(records: &[Record]) -> (Vec<u8>, u32, u32) {
    let mut bytes = Vec::new();
    encode_all(records, &mut bytes);
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let sum = crc(&[&bytes]);
    bytes.resize(bytes.len().next_multiple_of(PIECE_BLOCK as usize), 0);
    (bytes, len, sum)
}

/// The records of a piece read back as `bytes` (its padded payload or more), checked
/// against its table entry. Never panics.
pub fn decode_piece(entry: &PieceEntry, bytes: &[u8]) -> Result<Vec<Record>, OnDiskError> {
    let len = entry.len as usize;
    super::codec::need(bytes, u64::from(entry.len))?;
    let found = crc(&[&bytes[..len]]);
    if found != entry.crc {
        return Err(OnDiskError::BadChecksum {
            expected: entry.crc,
            found,
        });
    }
    decode_all(&bytes[..len])
}

/// The table's payload bytes (unpadded).
pub fn encode_piece_table(table: &PieceTable) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u16(table.replicas);
    out.put_u32(u32::try_from(table.pieces.len()).unwrap_or(u32::MAX));
    for p in &table.pieces {
        out.put_u64(p.id);
        out.put_u32(p.len);
        out.put_u32(p.crc);
        for runs in &p.replicas {
            out.put_u16(u16::try_from(runs.len()).unwrap_or(u16::MAX));
            for &(offset, len) in runs {
                out.put_u64(offset);
                out.put_u64(len);
            }
        }
    }
    out
}

/// Decodes and checks a table payload. Never panics, never allocates more than the input
/// can hold.
pub fn decode_piece_table(bytes: &[u8]) -> Result<PieceTable, OnDiskError> {
    let mut r = Reader::new(bytes);
    let replicas = r.u16()?;
    check_field(
        "pieces.replicas",
        u64::from(replicas),
        (1..=MAX_REPLICAS).contains(&replicas),
    )?;
    let count = r.u32()?;
    // Every piece takes at least 16 bytes plus one run per replica.
    let smallest = 16 + usize::from(replicas) * 18;
    check_field(
        "pieces.count",
        u64::from(count),
        (count as usize).saturating_mul(smallest) <= r.remaining(),
    )?;
    let mut pieces: Vec<PieceEntry> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let entry = decode_entry(&mut r, replicas)?;
        if let Some(last) = pieces.last() {
            check_field("piece.id", entry.id, entry.id > last.id)?;
        }
        pieces.push(entry);
    }
    check_field("pieces.trailing", r.remaining() as u64, r.remaining() == 0)?;
    Ok(PieceTable { replicas, pieces })
}

fn decode_entry(r: &mut Reader<'_>, replicas: u16) -> Result<PieceEntry, OnDiskError> {
    let id = r.u64()?;
    let len = r.u32()?;
    check_field("piece.len", u64::from(len), len > 0)?;
    let crc = r.u32()?;
    let padded = round_up(u64::from(len), PIECE_BLOCK).unwrap_or(u64::MAX);
    let mut copies = Vec::with_capacity(usize::from(replicas));
    for _ in 0..replicas {
        let n = r.u16()?;
        check_field(
            "piece.runs",
            u64::from(n),
            n > 0 && usize::from(n) * 16 <= r.remaining(),
        )?;
        let mut runs = Vec::with_capacity(usize::from(n));
        let mut total = 0u64;
        for _ in 0..n {
            let offset = r.u64()?;
            let run = r.u64()?;
            check_field("piece.run.offset", offset, offset % PIECE_BLOCK == 0)?;
            check_field(
                "piece.run.len",
                run,
                run > 0 && run % PIECE_BLOCK == 0 && offset.checked_add(run).is_some(),
            )?;
            total = total.saturating_add(run);
            runs.push((offset, run));
        }
        check_field("piece.runs.len", total, total == padded)?;
        copies.push(runs);
    }
    Ok(PieceEntry {
        id,
        len,
        crc,
        replicas: copies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PieceTable {
        PieceTable {
            replicas: 2,
            pieces: vec![
                PieceEntry {
                    id: 0,
                    len: 100,
                    crc: 7,
                    replicas: vec![vec![(4096, 4096)], vec![(8192, 4096)]],
                },
                PieceEntry {
                    id: 9,
                    len: 5000,
                    crc: 8,
                    replicas: vec![vec![(0, 4096), (16384, 4096)], vec![(65536, 8192)]],
                },
            ],
        }
    }

    #[test]
    fn table_round_trips() {
        let t = table();
        assert_eq!(decode_piece_table(&encode_piece_table(&t)), Ok(t));
    }

    #[test]
    fn table_refuses_bad_fields() {
        let mut t = table();
        t.pieces[1].id = 0;
        assert_eq!(
            decode_piece_table(&encode_piece_table(&t)),
            Err(OnDiskError::BadField {
                field: "piece.id",
                value: 0
            })
        );
        let mut t = table();
        t.pieces[1].replicas[1] = vec![(65536, 4096)];
        assert_eq!(
            decode_piece_table(&encode_piece_table(&t)),
            Err(OnDiskError::BadField {
                field: "piece.runs.len",
                value: 4096
            })
        );
        let mut bytes = encode_piece_table(&table());
        bytes.push(0);
        assert!(matches!(
            decode_piece_table(&bytes),
            Err(OnDiskError::BadField {
                field: "pieces.trailing",
                ..
            })
        ));
        assert!(decode_piece_table(&[0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn piece_checks_its_crc() {
        let records = vec![Record::FreeInode { ino: 5 }];
        let (bytes, len, sum) = encode_piece(&records);
        assert_eq!(bytes.len() % 4096, 0);
        let entry = PieceEntry {
            id: 0,
            len,
            crc: sum,
            replicas: vec![vec![(0, 4096)]],
        };
        assert_eq!(decode_piece(&entry, &bytes), Ok(records));
        let mut torn = bytes;
        torn[0] ^= 1;
        assert!(matches!(
            decode_piece(&entry, &torn),
            Err(OnDiskError::BadChecksum { .. })
        ));
    }
}
