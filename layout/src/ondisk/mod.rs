//! The on-disk format: superblock, metadata records, log entries and checkpoints.
//!
//! Pure encoding and decoding, no I/O. Every structure is little-endian and checksummed
//! with crc32c. Each decoder takes untrusted bytes, never panics, and either returns a value
//! that passed every check or an [`OnDiskError`] that says what was wrong; the checks live
//! in the decoders (and the `validate` methods they share with writers), nowhere else.
//!
//! - [`Superblock`]: one 4096-byte block at offset 0 of every device.
//! - [`Record`]: one change to the metadata (an inode, a directory entry, an extent…).
//! - Log entries ([`encode_entry`], [`decode_entry`]): records appended after a checkpoint,
//!   each entry padded to [`LOG_BLOCK`]; a torn entry is the end of the log.
//! - Checkpoints ([`encode_checkpoint`], [`decode_checkpoint_header`],
//!   [`decode_checkpoint_payload`], [`decode_checkpoint_table`]): where the metadata's
//!   pieces are ([`PieceTable`]; each piece's records LZ4-compressed or plain; version 1:
//!   the whole metadata as records).

mod checkpoint;
mod codec;
mod error;
mod log;
mod pieces;
mod record;
mod superblock;

pub use checkpoint::{
    CHECKPOINT_HEADER_LEN, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, CheckpointHeader,
    PLAIN_PIECES_CHECKPOINT_VERSION, RECORDS_CHECKPOINT_VERSION, decode_checkpoint,
    decode_checkpoint_header, decode_checkpoint_payload, decode_checkpoint_table,
    encode_checkpoint, encode_checkpoint_table, encode_checkpoint_table_v2,
};
pub use error::OnDiskError;
pub use log::{
    LOG_BLOCK, LOG_HEADER_LEN, LOG_MAGIC, LOG_VERSION, decode_entry, encode_entry, entry_len,
};
pub use pieces::{
    EncodedPiece, MAX_PIECE_RAW_LEN, MAX_REPLICAS, PIECE_BLOCK, PIECE_INODES, PieceCodec,
    PieceEntry, PieceTable, decode_piece, decode_piece_table, decode_piece_table_v2, encode_piece,
    encode_piece_table, encode_piece_table_v2, piece_of,
};
pub use record::{
    INODE_RECORD_MIN, InodeKind, InodeRecord, LayoutRecord, MODE_MAX, NAME_MAX, RECORD_HEADER_LEN,
    Record, SYMLINK_MAX, Timestamp, XATTR_VALUE_MAX, decode_all, encode_all, validate_name,
    validate_xattr_name,
};
pub use superblock::{
    FORMAT_VERSION, LABEL_MAX, MAX_BLOCK_SIZE, MAX_DEVICES, MIN_BLOCK_SIZE, RawSuperblock,
    SUPERBLOCK_MAGIC, SUPERBLOCK_SIZE, Superblock,
};
