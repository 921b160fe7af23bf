//! Pieces: the metadata split by inode number, each part stored on its own.
//!
//! A checkpoint of version 2 or 3 does not hold the metadata itself: its payload is a
//! [`PieceTable`] that says where each **piece** is. Piece `p` holds the records of the inodes
//! numbered `p * PIECE_INODES .. (p + 1) * PIECE_INODES` (their inode records first, then the
//! directory entries they hold, their extents and xattrs), back to back as in a log entry.
//! Pieces live in the data areas of the metadata replica devices, a copy on each, allocated
//! like file data; a checkpoint writes only the pieces that changed since the one before (to
//! fresh space, never over a piece in use), so its cost follows what changed, not the size
//! of the filesystem.
//!
//! A piece is stored as its records encoded by a [`PieceCodec`]: version 3 compresses them
//! as one LZ4 block (they shrink about fourfold: inode records of neighbouring files differ
//! in a few bytes), version 2 stores them as they are. The stored bytes are padded with
//! zeros to a multiple of 4096; their length and crc32c are in the table, so a torn or
//! damaged copy is refused before it is decompressed.
//!
//! Table payload (little-endian):
//!
//! | field | type |
//! | --- | --- |
//! | replicas | `u16` (1 to [`MAX_REPLICAS`]) |
//! | piece count | `u32` |
//! | per piece: id | `u64` (strictly increasing) |
//! | per piece: stored length | `u32` (not 0) |
//! | per piece: crc32c of the stored bytes | `u32` |
//! | per piece: codec (version 3 only) | `u8` ([`PieceCodec`]) |
//! | per piece: length of the records (version 3 only) | `u32` (plain: the stored length; LZ4: 1 to [`MAX_PIECE_RAW_LEN`]) |
//! | per piece, per replica: run count | `u16` (not 0) |
//! | per run: device offset, length | `u64`, `u64` (multiples of 4096, length not 0) |
//!
//! Each replica's runs, in order, hold the padded stored bytes: their lengths add up to it.

use std::borrow::Cow;

use super::codec::{Put, Reader, check_field, crc, round_up};
use super::error::OnDiskError;
use super::record::{Record, decode_all, encode_all};

/// Inode numbers per piece.
pub const PIECE_INODES: u64 = 256;
/// The most replicas a table may name.
pub const MAX_REPLICAS: u16 = 8;
/// Pieces are padded to, and stored in runs of, multiples of this.
pub const PIECE_BLOCK: u64 = 4096;
/// The most bytes of records a compressed piece may declare: a damaged table entry cannot
/// make a reader allocate more. (A piece is some 50 KB; one this large stays plain.)
pub const MAX_PIECE_RAW_LEN: u32 = 64 << 20;

/// How a piece's stored bytes hold its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PieceCodec {
    /// The records back to back, as in a log entry.
    Plain = 0,
    /// The records back to back, compressed as one LZ4 block (no frame, no size prefix:
    /// the table holds the length).
    Lz4 = 1,
}

impl PieceCodec {
    /// The codec stored as `byte`, if any.
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Plain),
            1 => Some(Self::Lz4),
            _ => None,
        }
    }

    /// The codec's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Lz4 => "lz4",
        }
    }
}

/// The piece that holds the records of inode `ino`.
pub fn piece_of(ino: u64) -> u64 {
    ino / PIECE_INODES
}

/// Where one piece is, and how to check and decode it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PieceEntry {
    /// The piece number.
    pub id: u64,
    /// Bytes stored, before padding.
    pub len: u32,
    /// crc32c of those bytes.
    pub crc: u32,
    /// How the stored bytes hold the records.
    pub codec: PieceCodec,
    /// Bytes of records once decoded (`len` for a plain piece).
    pub raw_len: u32,
    /// Per replica (in the order of the metadata replica devices): the runs
    /// `(device offset, length)` that hold the padded stored bytes, in order.
    pub replicas: Vec<Vec<(u64, u64)>>,
}

impl PieceEntry {
    /// The stored bytes' length once padded: what each replica's runs hold.
    pub fn padded_len(&self) -> u64 {
        u64::from(self.len).next_multiple_of(PIECE_BLOCK)
    }

    /// The records' length once padded: the most the piece takes if written again with the
    /// same records, whatever they compress to (a piece is stored plain when compressing
    /// does not make it smaller).
    pub fn raw_padded_len(&self) -> u64 {
        u64::from(self.raw_len).next_multiple_of(PIECE_BLOCK)
    }
}

/// A piece encoded for storing: what its table entry says of it, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedPiece {
    /// The stored bytes, padded to a multiple of [`PIECE_BLOCK`].
    pub bytes: Vec<u8>,
    /// Bytes stored, before padding.
    pub len: u32,
    /// crc32c of those bytes.
    pub crc: u32,
    /// How they hold the records.
    pub codec: PieceCodec,
    /// Bytes of records once decoded.
    pub raw_len: u32,
}

impl EncodedPiece {
    /// The table entry of piece `id` stored in `replicas`.
    pub fn entry(&self, id: u64, replicas: Vec<Vec<(u64, u64)>>) -> PieceEntry {
        PieceEntry {
            id,
            len: self.len,
            crc: self.crc,
            codec: self.codec,
            raw_len: self.raw_len,
            replicas,
        }
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

/// A piece holding `records`: compressed as LZ4 when that makes it smaller (and its records
/// are at most [`MAX_PIECE_RAW_LEN`]), plain otherwise.
pub fn encode_piece(records: &[Record]) -> EncodedPiece {
    let mut raw = Vec::new();
    encode_all(records, &mut raw);
    let raw_len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    let packed = (raw_len <= MAX_PIECE_RAW_LEN)
        .then(|| lz4_flex::block::compress(&raw))
        .filter(|packed| packed.len() < raw.len());
    let (mut bytes, codec) = match packed {
        Some(packed) => (packed, PieceCodec::Lz4),
        None => (raw, PieceCodec::Plain),
    };
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let crc = crc(&[&bytes]);
    bytes.resize(bytes.len().next_multiple_of(PIECE_BLOCK as usize), 0);
    EncodedPiece {
        bytes,
        len,
        crc,
        codec,
        raw_len,
    }
}

/// The records of a piece read back as `bytes` (its padded stored bytes or more), checked
/// against its table entry: length and checksum of the stored bytes first, then the
/// decompressed length, then every record. Never panics; allocates at most
/// [`MAX_PIECE_RAW_LEN`] beyond the records.
pub fn decode_piece(entry: &PieceEntry, bytes: &[u8]) -> Result<Vec<Record>, OnDiskError> {
    super::codec::need(bytes, u64::from(entry.len))?;
    let stored = &bytes[..entry.len as usize];
    let found = crc(&[stored]);
    if found != entry.crc {
        return Err(OnDiskError::BadChecksum {
            expected: entry.crc,
            found,
        });
    }
    let raw = match entry.codec {
        PieceCodec::Plain => Cow::Borrowed(stored),
        PieceCodec::Lz4 => Cow::Owned(decompress_lz4(entry, stored)?),
    };
    decode_all(&raw)
}

/// The `raw_len` bytes that `stored` decompresses to, or why not.
fn decompress_lz4(entry: &PieceEntry, stored: &[u8]) -> Result<Vec<u8>, OnDiskError> {
    if entry.raw_len > MAX_PIECE_RAW_LEN {
        return Err(OnDiskError::PieceTooLarge {
            piece: entry.id,
            raw_len: entry.raw_len.into(),
            max: MAX_PIECE_RAW_LEN.into(),
        });
    }
    let declared = entry.raw_len as usize;
    let mut raw = vec![0u8; declared];
    match lz4_flex::block::decompress_into(stored, &mut raw) {
        Ok(n) if n == declared => Ok(raw),
        Ok(n) => Err(length_mismatch(entry, n as u64)),
        Err(lz4_flex::block::DecompressError::OutputTooSmall { expected, .. }) => {
            Err(length_mismatch(entry, expected as u64))
        }
        Err(e) => Err(OnDiskError::PieceDecompress {
            piece: entry.id,
            codec: entry.codec.name(),
            reason: e.to_string(),
        }),
    }
}

fn length_mismatch(entry: &PieceEntry, found: u64) -> OnDiskError {
    OnDiskError::PieceLength {
        piece: entry.id,
        declared: entry.raw_len.into(),
        found,
    }
}

/// Which table layout: version 2's entries have no codec nor records length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TableFormat {
    /// Checkpoint version 2: every piece plain.
    Plain,
    /// Checkpoint version 3: each entry names its codec and records length.
    Coded,
}

/// The table's payload bytes (unpadded), as checkpoint version 3 holds it.
pub fn encode_piece_table(table: &PieceTable) -> Vec<u8> {
    encode_table(table, TableFormat::Coded)
}

/// The table's payload bytes as checkpoint version 2 held it (for tests and tools that
/// make an older filesystem): refuses a table with a piece that is not plain, which that
/// version cannot name.
pub fn encode_piece_table_v2(table: &PieceTable) -> Result<Vec<u8>, OnDiskError> {
    if let Some(p) = table.pieces.iter().find(|p| p.codec != PieceCodec::Plain) {
        return Err(OnDiskError::BadField {
            field: "piece.codec",
            value: p.codec as u64,
        });
    }
    Ok(encode_table(table, TableFormat::Plain))
}

fn encode_table(table: &PieceTable, format: TableFormat) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u16(table.replicas);
    out.put_u32(u32::try_from(table.pieces.len()).unwrap_or(u32::MAX));
    for p in &table.pieces {
        out.put_u64(p.id);
        out.put_u32(p.len);
        out.put_u32(p.crc);
        if format == TableFormat::Coded {
            out.put_u8(p.codec as u8);
            out.put_u32(p.raw_len);
        }
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

/// Decodes and checks a table payload of checkpoint version 3. Never panics, never
/// allocates more than the input can hold.
pub fn decode_piece_table(bytes: &[u8]) -> Result<PieceTable, OnDiskError> {
    decode_table(bytes, TableFormat::Coded)
}

/// Decodes and checks a table payload of checkpoint version 2 (every piece plain).
pub fn decode_piece_table_v2(bytes: &[u8]) -> Result<PieceTable, OnDiskError> {
    decode_table(bytes, TableFormat::Plain)
}

fn decode_table(bytes: &[u8], format: TableFormat) -> Result<PieceTable, OnDiskError> {
    let mut r = Reader::new(bytes);
    let replicas = r.u16()?;
    check_field(
        "pieces.replicas",
        u64::from(replicas),
        (1..=MAX_REPLICAS).contains(&replicas),
    )?;
    let count = r.u32()?;
    // Every piece takes at least 16 bytes (21 with its codec) plus one run per replica.
    let fixed = if format == TableFormat::Coded { 21 } else { 16 };
    let smallest = fixed + usize::from(replicas) * 18;
    check_field(
        "pieces.count",
        u64::from(count),
        (count as usize).saturating_mul(smallest) <= r.remaining(),
    )?;
    let mut pieces: Vec<PieceEntry> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let entry = decode_entry(&mut r, replicas, format)?;
        if let Some(last) = pieces.last() {
            check_field("piece.id", entry.id, entry.id > last.id)?;
        }
        pieces.push(entry);
    }
    check_field("pieces.trailing", r.remaining() as u64, r.remaining() == 0)?;
    Ok(PieceTable { replicas, pieces })
}

fn decode_entry(
    r: &mut Reader<'_>,
    replicas: u16,
    format: TableFormat,
) -> Result<PieceEntry, OnDiskError> {
    let id = r.u64()?;
    let len = r.u32()?;
    check_field("piece.len", u64::from(len), len > 0)?;
    let crc = r.u32()?;
    let (codec, raw_len) = match format {
        TableFormat::Plain => (PieceCodec::Plain, len),
        TableFormat::Coded => decode_codec(r, id, len)?,
    };
    let padded = round_up(u64::from(len), PIECE_BLOCK).unwrap_or(u64::MAX);
    let mut copies = Vec::with_capacity(usize::from(replicas));
    for _ in 0..replicas {
        copies.push(decode_runs(r, padded)?);
    }
    Ok(PieceEntry {
        id,
        len,
        crc,
        codec,
        raw_len,
        replicas: copies,
    })
}

/// A version 3 entry's codec and records length, checked against its stored `len`.
fn decode_codec(r: &mut Reader<'_>, id: u64, len: u32) -> Result<(PieceCodec, u32), OnDiskError> {
    let byte = r.u8()?;
    let codec = PieceCodec::from_u8(byte).ok_or(OnDiskError::BadField {
        field: "piece.codec",
        value: byte.into(),
    })?;
    let raw_len = r.u32()?;
    match codec {
        PieceCodec::Plain => check_field("piece.raw_len", raw_len.into(), raw_len == len)?,
        PieceCodec::Lz4 if raw_len > MAX_PIECE_RAW_LEN => {
            return Err(OnDiskError::PieceTooLarge {
                piece: id,
                raw_len: raw_len.into(),
                max: MAX_PIECE_RAW_LEN.into(),
            });
        }
        PieceCodec::Lz4 => check_field("piece.raw_len", raw_len.into(), raw_len > 0)?,
    }
    Ok((codec, raw_len))
}

/// One replica's runs, which must add up to `padded` bytes.
fn decode_runs(r: &mut Reader<'_>, padded: u64) -> Result<Vec<(u64, u64)>, OnDiskError> {
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
    Ok(runs)
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
                    codec: PieceCodec::Plain,
                    raw_len: 100,
                    replicas: vec![vec![(4096, 4096)], vec![(8192, 4096)]],
                },
                PieceEntry {
                    id: 9,
                    len: 5000,
                    crc: 8,
                    codec: PieceCodec::Lz4,
                    raw_len: 20000,
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
    fn v2_table_round_trips_plain_pieces_only() {
        let mut t = table();
        assert!(matches!(
            encode_piece_table_v2(&t),
            Err(OnDiskError::BadField {
                field: "piece.codec",
                value: 1
            })
        ));
        t.pieces[1].codec = PieceCodec::Plain;
        t.pieces[1].raw_len = t.pieces[1].len;
        let bytes = encode_piece_table_v2(&t).expect("plain pieces");
        assert_eq!(decode_piece_table_v2(&bytes), Ok(t.clone()));
        // The two layouts are told apart by the checkpoint's version, not by the bytes.
        assert!(decode_piece_table(&bytes).is_err());
        assert!(decode_piece_table_v2(&encode_piece_table(&t)).is_err());
    }

    #[test]
    fn table_refuses_bad_codecs() {
        let mut t = table();
        t.pieces[1].raw_len = MAX_PIECE_RAW_LEN + 1;
        assert_eq!(
            decode_piece_table(&encode_piece_table(&t)),
            Err(OnDiskError::PieceTooLarge {
                piece: 9,
                raw_len: u64::from(MAX_PIECE_RAW_LEN) + 1,
                max: MAX_PIECE_RAW_LEN.into()
            })
        );
        let mut t = table();
        t.pieces[0].raw_len = 101;
        assert!(matches!(
            decode_piece_table(&encode_piece_table(&t)),
            Err(OnDiskError::BadField {
                field: "piece.raw_len",
                ..
            })
        ));
        let mut bytes = encode_piece_table(&table());
        // replicas (2) + count (4) + id, len, crc (16): the first piece's codec byte.
        bytes[22] = 7;
        assert_eq!(
            decode_piece_table(&bytes),
            Err(OnDiskError::BadField {
                field: "piece.codec",
                value: 7
            })
        );
    }

    fn entry_of(piece: &EncodedPiece) -> PieceEntry {
        piece.entry(3, vec![vec![(0, piece.bytes.len() as u64)]])
    }

    /// Many alike records: what compresses.
    fn inodes(n: u64) -> Vec<Record> {
        (1..=n).map(|ino| Record::FreeInode { ino }).collect()
    }

    #[test]
    fn piece_checks_its_crc() {
        let records = vec![Record::FreeInode { ino: 5 }];
        let piece = encode_piece(&records);
        assert_eq!(piece.codec, PieceCodec::Plain);
        assert_eq!(piece.bytes.len() % 4096, 0);
        let entry = entry_of(&piece);
        assert_eq!(decode_piece(&entry, &piece.bytes), Ok(records));
        let mut torn = piece.bytes;
        torn[0] ^= 1;
        assert!(matches!(
            decode_piece(&entry, &torn),
            Err(OnDiskError::BadChecksum { .. })
        ));
    }

    #[test]
    fn alike_records_compress_and_round_trip() {
        let records = inodes(1000);
        let piece = encode_piece(&records);
        assert_eq!(piece.codec, PieceCodec::Lz4);
        assert_eq!(piece.raw_len, 13 * 1000);
        assert!(piece.len < piece.raw_len / 2, "{} bytes", piece.len);
        assert_eq!(decode_piece(&entry_of(&piece), &piece.bytes), Ok(records));
    }

    #[test]
    fn compressed_piece_checks_its_length() {
        let piece = encode_piece(&inodes(1000));
        let mut entry = entry_of(&piece);
        entry.raw_len -= 1;
        assert!(matches!(
            decode_piece(&entry, &piece.bytes),
            Err(OnDiskError::PieceLength {
                piece: 3,
                declared: 12999,
                ..
            })
        ));
        entry.raw_len += 2;
        assert_eq!(
            decode_piece(&entry, &piece.bytes),
            Err(OnDiskError::PieceLength {
                piece: 3,
                declared: 13001,
                found: 13000
            })
        );
        entry.raw_len = MAX_PIECE_RAW_LEN + 1;
        assert!(matches!(
            decode_piece(&entry, &piece.bytes),
            Err(OnDiskError::PieceTooLarge { piece: 3, .. })
        ));
    }

    #[test]
    fn damaged_compressed_bytes_are_an_error() {
        // Garbage whose checksum is right: the crc does not protect against a bad writer.
        let garbage = vec![0xf0u8; 64];
        let entry = PieceEntry {
            id: 4,
            len: 64,
            crc: crc(&[&garbage]),
            codec: PieceCodec::Lz4,
            raw_len: 1000,
            replicas: vec![vec![(0, 4096)]],
        };
        assert!(matches!(
            decode_piece(&entry, &garbage),
            Err(OnDiskError::PieceDecompress { piece: 4, .. })
        ));
    }
}
