//! The one error type of the on-disk codecs.

/// Why bytes read from a device were refused as a superblock, record, log entry or checkpoint.
///
/// Each variant carries what was wrong (the value found, the value expected, the field), so
/// a caller can report it after adding its own context (device, offset) at the boundary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OnDiskError {
    /// The structure does not start with its magic number: not ours, or not written yet.
    /// `found` is the magic bytes read as a little-endian integer.
    #[error("bad magic number {found:#x}")]
    BadMagic {
        /// The magic bytes found, as a little-endian integer.
        found: u64,
    },
    /// The structure was written by a format version this code does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The one version this build reads and writes.
        supported: u32,
    },
    /// The stored checksum does not match the bytes: corruption or a torn write.
    #[error("checksum mismatch: stored {expected:#010x}, computed {found:#010x}")]
    BadChecksum {
        /// The crc32c stored with the bytes.
        expected: u32,
        /// The crc32c computed over the bytes read.
        found: u32,
    },
    /// The input ends before the structure does.
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the structure needs, counted from its start.
        needed: u64,
        /// Bytes that were available.
        available: u64,
    },
    /// A field holds a value the format does not allow.
    #[error("bad value {value} ({value:#x}) in field {field}")]
    BadField {
        /// The field, as named in the format (`record.field` inside a record).
        field: &'static str,
        /// The refused value (for a byte string: the offending byte or its position).
        value: u64,
    },
    /// A record starts with a tag that names no record type.
    #[error("unknown metadata record type {tag}")]
    BadRecordType {
        /// The tag byte found.
        tag: u8,
    },
    /// A record's declared body length does not match the fields it holds.
    #[error("record of type {tag} declares a {declared}-byte body but its fields take {used}")]
    BodyLength {
        /// The record's tag.
        tag: u8,
        /// The body length stored in the record header.
        declared: u64,
        /// The bytes its fields actually took.
        used: u64,
    },
    /// A compressed metadata piece declares more bytes of records than any piece may hold:
    /// refused before anything is allocated for them.
    #[error(
        "metadata piece {piece} declares {raw_len} bytes of records; at most {max} are allowed"
    )]
    PieceTooLarge {
        /// The piece.
        piece: u64,
        /// The uncompressed length its table entry declares.
        raw_len: u64,
        /// The most a compressed piece may declare.
        max: u64,
    },
    /// A metadata piece's stored bytes passed their checksum but do not decompress.
    #[error("metadata piece {piece} does not decompress ({codec}): {reason}")]
    PieceDecompress {
        /// The piece.
        piece: u64,
        /// The codec's name.
        codec: &'static str,
        /// What the decompressor reported.
        reason: String,
    },
    /// A metadata piece decompresses to another length than its table entry declares.
    #[error(
        "metadata piece {piece} decompresses to {found} bytes, its table entry says {declared}"
    )]
    PieceLength {
        /// The piece.
        piece: u64,
        /// The uncompressed length its table entry declares.
        declared: u64,
        /// The length found (at least this many, when the output would not fit).
        found: u64,
    },
    /// A directory entry or xattr name (or the superblock label) is longer than allowed.
    #[error("name of {len} bytes is longer than the {max} allowed")]
    NameTooLong {
        /// The name's length, in bytes.
        len: u64,
        /// The longest name allowed, in bytes.
        max: u64,
    },
    /// A name is empty, `.`, `..`, or holds a `/` or NUL byte.
    #[error("bad name \"{}\": {reason}", .name.escape_ascii())]
    BadName {
        /// The refused name.
        name: Vec<u8>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A symlink target or xattr value is longer than allowed.
    #[error("{field} of {len} bytes is longer than the {max} allowed")]
    ValueTooLong {
        /// The field (`symlink_target`, `xattr.value`).
        field: &'static str,
        /// Its length, in bytes.
        len: u64,
        /// The longest value allowed, in bytes.
        max: u64,
    },
    /// The superblock label is not NUL-padded UTF-8.
    #[error("label is not NUL-padded UTF-8")]
    BadLabel,
    /// A superblock region does not lie within `[4096, device_size)`.
    #[error(
        "{region} region [{offset}, +{len}) does not fit in [4096, {device_size}) of the device"
    )]
    BadRegion {
        /// `meta` or `data`.
        region: &'static str,
        /// The region's first byte on the device.
        offset: u64,
        /// The region's length in bytes.
        len: u64,
        /// The bytes of the device the filesystem uses.
        device_size: u64,
    },
    /// The metadata and data regions of a superblock overlap.
    #[error(
        "meta region [{meta_offset}, +{meta_len}) overlaps data region [{data_offset}, +{data_len})"
    )]
    RegionsOverlap {
        /// First byte of the metadata region.
        meta_offset: u64,
        /// Length of the metadata region.
        meta_len: u64,
        /// First byte of the data region.
        data_offset: u64,
        /// Length of the data region.
        data_len: u64,
    },
}
