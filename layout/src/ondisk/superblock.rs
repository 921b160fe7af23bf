//! The superblock: one 4096-byte block at offset 0 of every device.
//!
//! Layout (little-endian, packed, at fixed offsets):
//!
//! | offset | field | type |
//! | --- | --- | --- |
//! | 0 | magic `b"STRIPEFS"` | `[u8; 8]` |
//! | 8 | version ([`FORMAT_VERSION`]) | `u32` |
//! | 12 | flags (0) | `u32` |
//! | 16 | fs_uuid | `[u8; 16]` |
//! | 32 | device_index | `u32` |
//! | 36 | device_count | `u32` |
//! | 40 | block_size | `u32` |
//! | 44 | default_stripe_unit | `u32` |
//! | 48 | default_stripe_count | `u32` |
//! | 52 | device_size | `u64` |
//! | 60 | meta_offset | `u64` |
//! | 68 | meta_len | `u64` |
//! | 76 | data_offset | `u64` |
//! | 84 | data_len | `u64` |
//! | 92 | created_secs | `u64` |
//! | 100 | label, NUL-padded UTF-8 | `[u8; 32]` |
//! | 132 | zero padding | |
//! | 4092 | crc32c of bytes `[0, 4092)` | `u32` |
//!
//! The bytes are first read into a [`RawSuperblock`] (what the block says, unchecked), then
//! checked into a [`Superblock`]; the checks live in [`Superblock::decode`] and
//! [`Superblock::validate`], nowhere else.

use super::codec::{Reader, check_field, crc, need};
use super::error::OnDiskError;
use crate::geometry::StripeUnit;

/// Size of the superblock in bytes: one block at offset 0 of every device.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// The first eight bytes of every superblock.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"STRIPEFS";
/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The longest label, in bytes of UTF-8.
pub const LABEL_MAX: usize = 32;
/// The most devices one filesystem may span.
pub const MAX_DEVICES: u32 = 256;
/// The smallest block size accepted.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// The largest block size accepted.
pub const MAX_BLOCK_SIZE: u32 = 65536;

/// Where the checksum sits: the last four bytes of the block.
const CRC_OFFSET: usize = SUPERBLOCK_SIZE - 4;

/// One device's superblock, checked: what mkfs writes and mount reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The filesystem's identity, the same on every device.
    pub fs_uuid: [u8; 16],
    /// This device's position in the filesystem, below `device_count`.
    pub device_index: u32,
    /// How many devices the filesystem spans, 1 to [`MAX_DEVICES`].
    pub device_count: u32,
    /// The allocation block size: a power of two from 512 to 65536.
    pub block_size: u32,
    /// The stripe unit of new files unless their directory says otherwise.
    pub default_stripe_unit: u32,
    /// The stripe count of new files unless their directory says otherwise.
    pub default_stripe_count: u32,
    /// Bytes of this device the filesystem uses, a multiple of `block_size`.
    pub device_size: u64,
    /// First byte of this device's metadata region.
    pub meta_offset: u64,
    /// Length of the metadata region; 0 if this device holds no metadata replica.
    pub meta_len: u64,
    /// First byte of this device's data region.
    pub data_offset: u64,
    /// Length of the data region.
    pub data_len: u64,
    /// When mkfs ran, in seconds since the Unix epoch.
    pub created_secs: u64,
    /// A name for the filesystem: at most [`LABEL_MAX`] bytes, no NUL.
    pub label: String,
}

/// The superblock's fields exactly as stored, before any check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSuperblock {
    /// Should be [`SUPERBLOCK_MAGIC`].
    pub magic: [u8; 8],
    /// Should be [`FORMAT_VERSION`].
    pub version: u32,
    /// Should be 0.
    pub flags: u32,
    /// See [`Superblock::fs_uuid`].
    pub fs_uuid: [u8; 16],
    /// See [`Superblock::device_index`].
    pub device_index: u32,
    /// See [`Superblock::device_count`].
    pub device_count: u32,
    /// See [`Superblock::block_size`].
    pub block_size: u32,
    /// See [`Superblock::default_stripe_unit`].
    pub default_stripe_unit: u32,
    /// See [`Superblock::default_stripe_count`].
    pub default_stripe_count: u32,
    /// See [`Superblock::device_size`].
    pub device_size: u64,
    /// See [`Superblock::meta_offset`].
    pub meta_offset: u64,
    /// See [`Superblock::meta_len`].
    pub meta_len: u64,
    /// See [`Superblock::data_offset`].
    pub data_offset: u64,
    /// See [`Superblock::data_len`].
    pub data_len: u64,
    /// See [`Superblock::created_secs`].
    pub created_secs: u64,
    /// The label bytes, NUL-padded.
    pub label: [u8; LABEL_MAX],
    /// Whether every byte between the label and the checksum is zero.
    pub padding_is_zero: bool,
    /// The stored crc32c of bytes `[0, 4092)`.
    pub crc: u32,
}

impl RawSuperblock {
    /// Reads the fields at their fixed offsets; checks nothing.
    pub fn read(block: &[u8; SUPERBLOCK_SIZE]) -> Self {
        let mut r = Reader::new(block);
        // The block is a fixed-size array longer than the fields: no read can fall short.
        Self::read_fields(&mut r, block).expect("fields fit in a superblock")
    }

    fn read_fields(r: &mut Reader<'_>, block: &[u8]) -> Result<Self, OnDiskError> {
        Ok(Self {
            magic: r.array()?,
            version: r.u32()?,
            flags: r.u32()?,
            fs_uuid: r.array()?,
            device_index: r.u32()?,
            device_count: r.u32()?,
            block_size: r.u32()?,
            default_stripe_unit: r.u32()?,
            default_stripe_count: r.u32()?,
            device_size: r.u64()?,
            meta_offset: r.u64()?,
            meta_len: r.u64()?,
            data_offset: r.u64()?,
            data_len: r.u64()?,
            created_secs: r.u64()?,
            label: r.array()?,
            padding_is_zero: block[r.position()..CRC_OFFSET].iter().all(|&b| b == 0),
            crc: u32::from_le_bytes(block[CRC_OFFSET..].try_into().expect("4 bytes")),
        })
    }

    /// Writes the fields at their fixed offsets, zero padding, and a fresh checksum
    /// (`crc` and `padding_is_zero` are ignored).
    pub fn write(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut fields = Vec::with_capacity(SUPERBLOCK_SIZE);
        fields.extend_from_slice(&self.magic);
        for v in [self.version, self.flags] {
            fields.extend_from_slice(&v.to_le_bytes());
        }
        fields.extend_from_slice(&self.fs_uuid);
        for v in [
            self.device_index,
            self.device_count,
            self.block_size,
            self.default_stripe_unit,
            self.default_stripe_count,
        ] {
            fields.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.device_size,
            self.meta_offset,
            self.meta_len,
            self.data_offset,
            self.data_len,
            self.created_secs,
        ] {
            fields.extend_from_slice(&v.to_le_bytes());
        }
        fields.extend_from_slice(&self.label);
        let mut block = [0; SUPERBLOCK_SIZE];
        block[..fields.len()].copy_from_slice(&fields);
        let crc = crc(&[&block[..CRC_OFFSET]]);
        block[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        block
    }

    /// Checks magic, then version, then checksum, in that order: a block of another
    /// filesystem reports [`OnDiskError::BadMagic`], and one of a future format reports
    /// [`OnDiskError::UnsupportedVersion`] even if that format checksums differently.
    fn check_envelope(&self, block: &[u8]) -> Result<(), OnDiskError> {
        if self.magic != SUPERBLOCK_MAGIC {
            return Err(OnDiskError::BadMagic {
                found: u64::from_le_bytes(self.magic),
            });
        }
        if self.version != FORMAT_VERSION {
            return Err(OnDiskError::UnsupportedVersion {
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        let found = crc(&[&block[..CRC_OFFSET]]);
        if found != self.crc {
            return Err(OnDiskError::BadChecksum {
                expected: self.crc,
                found,
            });
        }
        Ok(())
    }

    /// Turns checked-envelope fields into a [`Superblock`] and validates it.
    fn into_superblock(self) -> Result<Superblock, OnDiskError> {
        check_field("flags", self.flags.into(), self.flags == 0)?;
        if !self.padding_is_zero {
            return Err(OnDiskError::BadField {
                field: "padding",
                value: 0,
            });
        }
        let sb = Superblock {
            fs_uuid: self.fs_uuid,
            device_index: self.device_index,
            device_count: self.device_count,
            block_size: self.block_size,
            default_stripe_unit: self.default_stripe_unit,
            default_stripe_count: self.default_stripe_count,
            device_size: self.device_size,
            meta_offset: self.meta_offset,
            meta_len: self.meta_len,
            data_offset: self.data_offset,
            data_len: self.data_len,
            created_secs: self.created_secs,
            label: decode_label(&self.label)?,
        };
        sb.validate()?;
        Ok(sb)
    }
}

impl Superblock {
    /// Encodes the superblock into one block with its checksum.
    ///
    /// Fields are written as they are; a superblock that fails [`validate`](Self::validate)
    /// encodes to a block that [`decode`](Self::decode) refuses.
    ///
    /// # Panics
    /// If the label is longer than [`LABEL_MAX`] bytes or holds a NUL: it could not be read
    /// back as the same string. Check user input with [`validate`](Self::validate) first.
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        if let Err(e) = check_label(&self.label) {
            panic!("superblock label {:?} cannot be encoded: {e}", self.label);
        }
        let mut label = [0; LABEL_MAX];
        label[..self.label.len()].copy_from_slice(self.label.as_bytes());
        RawSuperblock {
            magic: SUPERBLOCK_MAGIC,
            version: FORMAT_VERSION,
            flags: 0,
            fs_uuid: self.fs_uuid,
            device_index: self.device_index,
            device_count: self.device_count,
            block_size: self.block_size,
            default_stripe_unit: self.default_stripe_unit,
            default_stripe_count: self.default_stripe_count,
            device_size: self.device_size,
            meta_offset: self.meta_offset,
            meta_len: self.meta_len,
            data_offset: self.data_offset,
            data_len: self.data_len,
            created_secs: self.created_secs,
            label,
            padding_is_zero: true,
            crc: 0,
        }
        .write()
    }

    /// Decodes and checks the superblock in the first [`SUPERBLOCK_SIZE`] bytes of `bytes`.
    ///
    /// Checks, in order: length, magic, version, checksum, then every field (see
    /// [`validate`](Self::validate)). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Superblock, OnDiskError> {
        need(bytes, SUPERBLOCK_SIZE as u64)?;
        let block: &[u8; SUPERBLOCK_SIZE] = bytes[..SUPERBLOCK_SIZE]
            .try_into()
            .expect("slice of SUPERBLOCK_SIZE bytes");
        let raw = RawSuperblock::read(block);
        raw.check_envelope(block)?;
        raw.into_superblock()
    }

    /// Checks the fields: device index and count, block size, default layout, regions
    /// (inside `[4096, device_size)` and apart), and label.
    pub fn validate(&self) -> Result<(), OnDiskError> {
        self.check_devices()?;
        self.check_block_and_layout()?;
        self.check_regions()?;
        check_label(&self.label)
    }

    fn check_devices(&self) -> Result<(), OnDiskError> {
        let count = self.device_count;
        check_field(
            "device_count",
            count.into(),
            (1..=MAX_DEVICES).contains(&count),
        )?;
        check_field(
            "device_index",
            self.device_index.into(),
            self.device_index < count,
        )
    }

    fn check_block_and_layout(&self) -> Result<(), OnDiskError> {
        let block = self.block_size;
        let block_ok =
            block.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block);
        check_field("block_size", block.into(), block_ok)?;
        let unit = self.default_stripe_unit;
        check_field(
            "default_stripe_unit",
            unit.into(),
            StripeUnit::new(unit.into()).is_ok(),
        )?;
        let count = self.default_stripe_count;
        check_field(
            "default_stripe_count",
            count.into(),
            (1..=self.device_count).contains(&count),
        )
    }

    fn check_regions(&self) -> Result<(), OnDiskError> {
        let size = self.device_size;
        let size_ok =
            size >= SUPERBLOCK_SIZE as u64 && size.is_multiple_of(u64::from(self.block_size));
        check_field("device_size", size, size_ok)?;
        self.check_region("meta", self.meta_offset, self.meta_len)?;
        self.check_region("data", self.data_offset, self.data_len)?;
        let meta_end = self.meta_offset + self.meta_len;
        let data_end = self.data_offset + self.data_len;
        let overlap = self.meta_len > 0
            && self.data_len > 0
            && self.meta_offset < data_end
            && self.data_offset < meta_end;
        if overlap {
            return Err(OnDiskError::RegionsOverlap {
                meta_offset: self.meta_offset,
                meta_len: self.meta_len,
                data_offset: self.data_offset,
                data_len: self.data_len,
            });
        }
        Ok(())
    }

    /// An empty region is always fine; a non-empty one lies in `[4096, device_size)`.
    fn check_region(&self, region: &'static str, offset: u64, len: u64) -> Result<(), OnDiskError> {
        let fits = offset >= SUPERBLOCK_SIZE as u64
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= self.device_size);
        if len == 0 || fits {
            return Ok(());
        }
        Err(OnDiskError::BadRegion {
            region,
            offset,
            len,
            device_size: self.device_size,
        })
    }
}

/// A label fits in [`LABEL_MAX`] bytes and holds no NUL (NUL is the padding).
fn check_label(label: &str) -> Result<(), OnDiskError> {
    if label.len() > LABEL_MAX {
        return Err(OnDiskError::NameTooLong {
            len: label.len() as u64,
            max: LABEL_MAX as u64,
        });
    }
    if label.contains('\0') {
        return Err(OnDiskError::BadLabel);
    }
    Ok(())
}

/// The label is UTF-8 up to the first NUL, and only NULs after it.
fn decode_label(bytes: &[u8; LABEL_MAX]) -> Result<String, OnDiskError> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(LABEL_MAX);
    if bytes[end..].iter().any(|&b| b != 0) {
        return Err(OnDiskError::BadLabel);
    }
    let label = std::str::from_utf8(&bytes[..end]).map_err(|_| OnDiskError::BadLabel)?;
    Ok(label.to_owned())
}
