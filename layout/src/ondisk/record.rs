//! Metadata records: the changes the metadata log carries and the contents of a checkpoint.
//!
//! One record is `tag: u8, body_len: u32, body`, little-endian. The body holds the fields in
//! declaration order; a byte string is a `u32` length then the bytes, an `Option` a `u8`
//! flag (0 or 1) then the value, a [`Timestamp`] `secs: i64, nanos: u32`, an [`InodeKind`]
//! one byte, and a [`LayoutRecord`] `stripe_unit: u32, count: u32, devices: [u16; count]`.
//!
//! An inode record of a special file ([`InodeKind::Fifo`], [`InodeKind::Socket`],
//! [`InodeKind::CharDevice`], [`InodeKind::BlockDevice`]) ends with one more field,
//! `rdev: u32` (the device number as FUSE and `stat` carry it: `makedev(major, minor)`, zero
//! for FIFOs and sockets). Files, directories and symlinks never carry it, so their records
//! are byte for byte what they were before special files existed: a filesystem made before
//! then decodes unchanged, and a daemon from before then refuses only the new kinds (an
//! unknown `inode.kind`), never misreads them. The trailing field is required for the special
//! kinds and refused (as a body length mismatch) for the others.
//!
//! An inode record of a file that keeps preallocated blocks past its size
//! (`fallocate(FALLOC_FL_KEEP_SIZE)`) ends with one more byte, `prealloc: u8` = 1, after the
//! symlink target; every other file record ends without it, byte for byte as before, so
//! older filesystems decode unchanged. The byte is refused (as a bad field, or a body length
//! mismatch) on other kinds.
//!
//! Decoding parses the body into the record, then checks every field with the same
//! `validate` that callers may run before encoding.

use std::collections::HashSet;

use super::codec::{Put, Reader, check_field, len_u32};
use super::error::OnDiskError;
use crate::error::LayoutError;
use crate::geometry::{StripeLayout, StripeUnit};
use crate::offsets::DeviceIndex;

/// The longest directory entry or xattr name, in bytes.
pub const NAME_MAX: usize = 255;
/// The longest symlink target, in bytes.
pub const SYMLINK_MAX: usize = 4096;
/// The largest xattr value, in bytes.
pub const XATTR_VALUE_MAX: usize = 65536;
/// The largest permission bits an inode may hold (`0o7777`: rwx for all, setuid, setgid,
/// sticky).
pub const MODE_MAX: u32 = 0o7777;
/// Bytes before a record's body: the tag and the body length.
pub const RECORD_HEADER_LEN: usize = 5;
/// The fewest bytes an encoded [`Record::Inode`] takes, header included (no layout, no
/// symlink target): what a reader may divide a length by to bound the inodes in it.
pub const INODE_RECORD_MIN: u64 = RECORD_HEADER_LEN as u64 + 8 + 1 + 4 * 3 + 8 + 4 * 12 + 1 + 4;

/// Record tags. 0 is no record, so zero padding never decodes as one.
mod tag {
    pub(super) const INODE: u8 = 1;
    pub(super) const FREE_INODE: u8 = 2;
    pub(super) const LINK: u8 = 3;
    pub(super) const UNLINK: u8 = 4;
    pub(super) const EXTENT: u8 = 5;
    pub(super) const TRUNCATE_EXTENTS: u8 = 6;
    pub(super) const SET_XATTR: u8 = 7;
    pub(super) const REMOVE_XATTR: u8 = 8;
    pub(super) const REMOVE_EXTENTS: u8 = 9;
}

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InodeKind {
    /// A regular file.
    File = 1,
    /// A directory.
    Dir = 2,
    /// A symbolic link.
    Symlink = 3,
    /// A named pipe (FIFO).
    Fifo = 4,
    /// A unix domain socket.
    Socket = 5,
    /// A character device node.
    CharDevice = 6,
    /// A block device node.
    BlockDevice = 7,
}

impl InodeKind {
    /// The kind stored as `byte`, if any.
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::File),
            2 => Some(Self::Dir),
            3 => Some(Self::Symlink),
            4 => Some(Self::Fifo),
            5 => Some(Self::Socket),
            6 => Some(Self::CharDevice),
            7 => Some(Self::BlockDevice),
            _ => None,
        }
    }

    /// Whether this kind is a special file (FIFO, socket or device node): no data, no
    /// layout, and an `rdev` field in its record.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Self::Fifo | Self::Socket | Self::CharDevice | Self::BlockDevice
        )
    }

    /// Whether this kind is a device node (the only kinds whose `rdev` may be non-zero).
    pub fn is_device(self) -> bool {
        matches!(self, Self::CharDevice | Self::BlockDevice)
    }
}

/// A point in time: seconds since the Unix epoch (negative before it) and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second, below 1 000 000 000.
    pub nanos: u32,
}

impl Timestamp {
    /// Nanoseconds in a second: `nanos` must stay below it.
    pub const NANOS_PER_SEC: u32 = 1_000_000_000;
}

/// A file's (or a directory's default) stripe layout as stored.
///
/// The stripe count is `devices.len()`, 1 to 256; the unit is a valid [`StripeUnit`]; no
/// device appears twice, and every device is below 256.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayoutRecord {
    /// The stripe unit in bytes.
    pub stripe_unit: u32,
    /// The devices, in column order.
    pub devices: Vec<u16>,
}

impl LayoutRecord {
    /// Checks the unit, the device count, the device numbers, and that none repeats.
    pub fn validate(&self) -> Result<(), OnDiskError> {
        let unit = self.stripe_unit;
        let unit_ok = StripeUnit::new(unit.into()).is_ok();
        check_field("layout.stripe_unit", unit.into(), unit_ok)?;
        let count = self.devices.len();
        let count_ok = (1..=StripeLayout::MAX_STRIPE_COUNT).contains(&count);
        check_field("layout.devices.len", count as u64, count_ok)?;
        let mut seen = HashSet::with_capacity(count);
        for &device in &self.devices {
            let fresh = seen.insert(device);
            let ok = fresh && usize::from(device) < StripeLayout::MAX_STRIPE_COUNT;
            check_field("layout.devices", device.into(), ok)?;
        }
        Ok(())
    }

    /// The layout as the geometry the data path uses.
    pub fn to_stripe_layout(&self) -> Result<StripeLayout, LayoutError> {
        let unit = StripeUnit::new(self.stripe_unit.into())?;
        let devices = self
            .devices
            .iter()
            .map(|&d| DeviceIndex(d.into()))
            .collect();
        StripeLayout::new(unit, devices)
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.stripe_unit);
        out.put_u32(len_u32(self.devices.len()));
        for &device in &self.devices {
            out.put_u16(device);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, OnDiskError> {
        let stripe_unit = r.u32()?;
        let count = r.u32()?;
        let count_ok = count as usize <= StripeLayout::MAX_STRIPE_COUNT;
        check_field("layout.devices.len", count.into(), count_ok)?;
        let devices = (0..count).map(|_| r.u16()).collect::<Result<_, _>>()?;
        Ok(Self {
            stripe_unit,
            devices,
        })
    }
}

impl TryFrom<&StripeLayout> for LayoutRecord {
    type Error = OnDiskError;

    /// Stores a geometry; refuses a unit or a device number too large for the format.
    fn try_from(layout: &StripeLayout) -> Result<Self, OnDiskError> {
        let unit = layout.unit().bytes();
        let stripe_unit = u32::try_from(unit).map_err(|_| OnDiskError::BadField {
            field: "layout.stripe_unit",
            value: unit,
        })?;
        let devices = layout
            .devices()
            .iter()
            .map(|d| {
                u16::try_from(d.0).map_err(|_| OnDiskError::BadField {
                    field: "layout.devices",
                    value: d.0.into(),
                })
            })
            .collect::<Result<_, _>>()?;
        let record = Self {
            stripe_unit,
            devices,
        };
        record.validate()?;
        Ok(record)
    }
}

/// The whole state of one inode, as created or replaced by [`Record::Inode`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InodeRecord {
    /// The inode number.
    pub ino: u64,
    /// File, directory or symlink.
    pub kind: InodeKind,
    /// Permission bits only (at most [`MODE_MAX`]); the file type is `kind`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification of the contents.
    pub mtime: Timestamp,
    /// Last change of the inode.
    pub ctime: Timestamp,
    /// Creation.
    pub crtime: Timestamp,
    /// Files always have one; directories may (inherited by new files in them); symlinks
    /// never do.
    pub layout: Option<LayoutRecord>,
    /// A symlink's target (1 to [`SYMLINK_MAX`] bytes, no NUL); empty for other kinds.
    pub symlink_target: Vec<u8>,
    /// A device node's device number (`makedev(major, minor)` as FUSE passes it); zero for
    /// every other kind. Stored only for special kinds (see the module docs).
    pub rdev: u32,
    /// A file whose blocks may extend past its size: `fallocate` with `FALLOC_FL_KEEP_SIZE`
    /// gave it space beyond the end (which reads as zeros once the file grows over it).
    /// Without it, blocks past the end are damage (fsck reports them, repair releases
    /// them). Files only; stored only when set (see the module docs).
    pub prealloc: bool,
}

impl InodeRecord {
    /// Checks mode, timestamps, layout against kind, the symlink target, and that only a
    /// device node has an `rdev`.
    pub fn validate(&self) -> Result<(), OnDiskError> {
        let rdev_ok = self.rdev == 0 || self.kind.is_device();
        check_field("inode.rdev", self.rdev.into(), rdev_ok)?;
        let prealloc_ok = !self.prealloc || self.kind == InodeKind::File;
        check_field("inode.prealloc", self.prealloc.into(), prealloc_ok)?;
        check_field("inode.mode", self.mode.into(), self.mode <= MODE_MAX)?;
        check_nanos("inode.atime.nanos", self.atime)?;
        check_nanos("inode.mtime.nanos", self.mtime)?;
        check_nanos("inode.ctime.nanos", self.ctime)?;
        check_nanos("inode.crtime.nanos", self.crtime)?;
        self.check_layout()?;
        self.check_symlink_target()
    }

    fn check_layout(&self) -> Result<(), OnDiskError> {
        let present = self.layout.is_some();
        let allowed = match self.kind {
            InodeKind::File => present,
            InodeKind::Dir => true,
            InodeKind::Symlink
            | InodeKind::Fifo
            | InodeKind::Socket
            | InodeKind::CharDevice
            | InodeKind::BlockDevice => !present,
        };
        check_field("inode.layout", present.into(), allowed)?;
        self.layout.as_ref().map_or(Ok(()), LayoutRecord::validate)
    }

    fn check_symlink_target(&self) -> Result<(), OnDiskError> {
        let target = &self.symlink_target;
        check_len("inode.symlink_target", target.len(), SYMLINK_MAX)?;
        let is_symlink = self.kind == InodeKind::Symlink;
        let ok = target.is_empty() != is_symlink;
        check_field("inode.symlink_target.len", target.len() as u64, ok)?;
        match target.iter().position(|&b| b == 0) {
            Some(at) => check_field("inode.symlink_target.nul_at", at as u64, false),
            None => Ok(()),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_u64(self.ino);
        out.put_u8(self.kind as u8);
        out.put_u32(self.mode);
        out.put_u32(self.uid);
        out.put_u32(self.gid);
        out.put_u64(self.size);
        for t in [self.atime, self.mtime, self.ctime, self.crtime] {
            out.put_i64(t.secs);
            out.put_u32(t.nanos);
        }
        match &self.layout {
            None => out.put_u8(0),
            Some(layout) => {
                out.put_u8(1);
                layout.write(out);
            }
        }
        out.put_bytes32(&self.symlink_target);
        if self.kind.is_special() {
            out.put_u32(self.rdev);
        }
        if self.prealloc {
            out.put_u8(1);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, OnDiskError> {
        let mut record = Self {
            ino: r.u64()?,
            kind: read_kind(r)?,
            mode: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            size: r.u64()?,
            atime: read_timestamp(r)?,
            mtime: read_timestamp(r)?,
            ctime: read_timestamp(r)?,
            crtime: read_timestamp(r)?,
            layout: read_layout_option(r)?,
            symlink_target: r.bytes32()?.to_vec(),
            rdev: 0,
            prealloc: false,
        };
        if record.kind.is_special() {
            record.rdev = r.u32()?;
        }
        if record.kind == InodeKind::File && r.remaining() > 0 {
            match r.u8()? {
                1 => record.prealloc = true,
                flag => {
                    return Err(OnDiskError::BadField {
                        field: "inode.prealloc",
                        value: flag.into(),
                    });
                }
            }
        }
        Ok(record)
    }
}

/// One change to the metadata, or one piece of a checkpoint's snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// Creates or replaces the whole inode.
    Inode(InodeRecord),
    /// Frees an inode number (its entries, extents and xattrs are already gone).
    FreeInode {
        /// The inode freed.
        ino: u64,
    },
    /// Adds a directory entry.
    Link {
        /// The directory.
        parent: u64,
        /// The entry's name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`.
        name: Vec<u8>,
        /// The inode the entry names.
        ino: u64,
    },
    /// Removes a directory entry.
    Unlink {
        /// The directory.
        parent: u64,
        /// The entry's name.
        name: Vec<u8>,
    },
    /// Maps `[object_offset, +len)` of the file's column object to `[device_offset, +len)`
    /// on that column's device.
    Extent {
        /// The file.
        ino: u64,
        /// The column (position in the file's layout), below 256.
        column: u16,
        /// First byte in the column object.
        object_offset: u64,
        /// First byte on the device.
        device_offset: u64,
        /// Length in bytes, above 0; neither end overflows.
        len: u64,
    },
    /// Drops the column's mappings at and beyond `object_offset`.
    TruncateExtents {
        /// The file.
        ino: u64,
        /// The column, below 256.
        column: u16,
        /// Where the dropped part begins in the column object.
        object_offset: u64,
    },
    /// Drops the column's mappings inside `[object_offset, +len)`: the range becomes a hole
    /// (punched holes, ranges rewritten to new space).
    RemoveExtents {
        /// The file.
        ino: u64,
        /// The column, below 256.
        column: u16,
        /// First byte dropped in the column object.
        object_offset: u64,
        /// Bytes dropped, above 0; the end does not overflow.
        len: u64,
    },
    /// Sets an extended attribute.
    SetXattr {
        /// The inode.
        ino: u64,
        /// The attribute's name: 1 to 255 bytes, no NUL.
        name: Vec<u8>,
        /// The value: at most [`XATTR_VALUE_MAX`] bytes.
        value: Vec<u8>,
    },
    /// Removes an extended attribute.
    RemoveXattr {
        /// The inode.
        ino: u64,
        /// The attribute's name.
        name: Vec<u8>,
    },
}

impl Record {
    /// Appends the record (`tag, body_len, body`) to `out`.
    ///
    /// Fields are written as they are: a record that fails [`validate`](Self::validate)
    /// encodes to bytes that [`decode`](Self::decode) refuses.
    ///
    /// # Panics
    /// If the body or one of its byte strings is 4 GiB or longer.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.tag());
        let len_at = out.len();
        out.put_u32(0);
        let body_start = out.len();
        self.write_body(out);
        let body_len = len_u32(out.len() - body_start);
        out[len_at..body_start].copy_from_slice(&body_len.to_le_bytes());
    }

    /// Decodes and checks the record at the start of `input`; returns it and the bytes it
    /// took. Never panics.
    pub fn decode(input: &[u8]) -> Result<(Record, usize), OnDiskError> {
        let mut r = Reader::new(input);
        let tag = r.u8()?;
        if !(tag::INODE..=tag::REMOVE_EXTENTS).contains(&tag) {
            return Err(OnDiskError::BadRecordType { tag });
        }
        let declared = r.u32()?;
        let body = r.take(usize::try_from(declared).unwrap_or(usize::MAX))?;
        let mut b = Reader::at(body, RECORD_HEADER_LEN as u64);
        let record = Self::read_body(tag, &mut b)?;
        if b.remaining() != 0 {
            return Err(OnDiskError::BodyLength {
                tag,
                declared: declared.into(),
                used: b.position() as u64,
            });
        }
        record.validate()?;
        Ok((record, r.position()))
    }

    /// Checks every field (see the variants' docs).
    pub fn validate(&self) -> Result<(), OnDiskError> {
        match self {
            Record::Inode(inode) => inode.validate(),
            Record::FreeInode { .. } => Ok(()),
            Record::Link { name, .. } | Record::Unlink { name, .. } => validate_name(name),
            Record::Extent {
                column,
                object_offset,
                device_offset,
                len,
                ..
            } => check_extent(*column, *object_offset, *device_offset, *len),
            Record::TruncateExtents { column, .. } => check_column(*column),
            Record::RemoveExtents {
                column,
                object_offset,
                len,
                ..
            } => {
                check_column(*column)?;
                check_field("remove_extents.len", *len, *len > 0)?;
                let ok = object_offset.checked_add(*len).is_some();
                check_field("remove_extents.object_offset", *object_offset, ok)
            }
            Record::SetXattr { name, value, .. } => {
                validate_xattr_name(name)?;
                check_len("xattr.value", value.len(), XATTR_VALUE_MAX)
            }
            Record::RemoveXattr { name, .. } => validate_xattr_name(name),
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Record::Inode(_) => tag::INODE,
            Record::FreeInode { .. } => tag::FREE_INODE,
            Record::Link { .. } => tag::LINK,
            Record::Unlink { .. } => tag::UNLINK,
            Record::Extent { .. } => tag::EXTENT,
            Record::TruncateExtents { .. } => tag::TRUNCATE_EXTENTS,
            Record::RemoveExtents { .. } => tag::REMOVE_EXTENTS,
            Record::SetXattr { .. } => tag::SET_XATTR,
            Record::RemoveXattr { .. } => tag::REMOVE_XATTR,
        }
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            Record::Inode(inode) => inode.write(out),
            Record::FreeInode { ino } => out.put_u64(*ino),
            Record::Link { parent, name, ino } => {
                out.put_u64(*parent);
                out.put_bytes32(name);
                out.put_u64(*ino);
            }
            Record::Unlink { parent, name } => {
                out.put_u64(*parent);
                out.put_bytes32(name);
            }
            Record::Extent {
                ino,
                column,
                object_offset,
                device_offset,
                len,
            } => {
                out.put_u64(*ino);
                out.put_u16(*column);
                out.put_u64(*object_offset);
                out.put_u64(*device_offset);
                out.put_u64(*len);
            }
            Record::TruncateExtents {
                ino,
                column,
                object_offset,
            } => {
                out.put_u64(*ino);
                out.put_u16(*column);
                out.put_u64(*object_offset);
            }
            Record::RemoveExtents {
                ino,
                column,
                object_offset,
                len,
            } => {
                out.put_u64(*ino);
                out.put_u16(*column);
                out.put_u64(*object_offset);
                out.put_u64(*len);
            }
            Record::SetXattr { ino, name, value } => {
                out.put_u64(*ino);
                out.put_bytes32(name);
                out.put_bytes32(value);
            }
            Record::RemoveXattr { ino, name } => {
                out.put_u64(*ino);
                out.put_bytes32(name);
            }
        }
    }

    fn read_body(tag: u8, r: &mut Reader<'_>) -> Result<Record, OnDiskError> {
        Ok(match tag {
            tag::INODE => Record::Inode(InodeRecord::read(r)?),
            tag::FREE_INODE => Record::FreeInode { ino: r.u64()? },
            tag::LINK => Record::Link {
                parent: r.u64()?,
                name: r.bytes32()?.to_vec(),
                ino: r.u64()?,
            },
            tag::UNLINK => Record::Unlink {
                parent: r.u64()?,
                name: r.bytes32()?.to_vec(),
            },
            tag::EXTENT => Record::Extent {
                ino: r.u64()?,
                column: r.u16()?,
                object_offset: r.u64()?,
                device_offset: r.u64()?,
                len: r.u64()?,
            },
            tag::TRUNCATE_EXTENTS => Record::TruncateExtents {
                ino: r.u64()?,
                column: r.u16()?,
                object_offset: r.u64()?,
            },
            tag::REMOVE_EXTENTS => Record::RemoveExtents {
                ino: r.u64()?,
                column: r.u16()?,
                object_offset: r.u64()?,
                len: r.u64()?,
            },
            tag::SET_XATTR => Record::SetXattr {
                ino: r.u64()?,
                name: r.bytes32()?.to_vec(),
                value: r.bytes32()?.to_vec(),
            },
            tag::REMOVE_XATTR => Record::RemoveXattr {
                ino: r.u64()?,
                name: r.bytes32()?.to_vec(),
            },
            _ => return Err(OnDiskError::BadRecordType { tag }),
        })
    }
}

/// Appends every record to `out`, in order.
pub fn encode_all(records: &[Record], out: &mut Vec<u8>) {
    for record in records {
        record.encode(out);
    }
}

/// Decodes records back to back until `input` ends; any bad record fails the whole.
pub fn decode_all(input: &[u8]) -> Result<Vec<Record>, OnDiskError> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let (record, used) = Record::decode(&input[pos..])?;
        records.push(record);
        pos += used;
    }
    Ok(records)
}

/// Checks a directory entry name: 1 to [`NAME_MAX`] bytes, no `/` or NUL, not `.` or `..`.
pub fn validate_name(name: &[u8]) -> Result<(), OnDiskError> {
    validate_xattr_name(name)?;
    let reason = if name == b"." || name == b".." {
        "reserved name"
    } else if name.contains(&b'/') {
        "contains '/'"
    } else {
        return Ok(());
    };
    Err(OnDiskError::BadName {
        name: name.to_vec(),
        reason,
    })
}

/// Checks an xattr name: 1 to [`NAME_MAX`] bytes, no NUL.
pub fn validate_xattr_name(name: &[u8]) -> Result<(), OnDiskError> {
    if name.len() > NAME_MAX {
        return Err(OnDiskError::NameTooLong {
            len: name.len() as u64,
            max: NAME_MAX as u64,
        });
    }
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains(&0) {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(OnDiskError::BadName {
        name: name.to_vec(),
        reason,
    })
}

fn check_nanos(field: &'static str, t: Timestamp) -> Result<(), OnDiskError> {
    check_field(field, t.nanos.into(), t.nanos < Timestamp::NANOS_PER_SEC)
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), OnDiskError> {
    if len > max {
        return Err(OnDiskError::ValueTooLong {
            field,
            len: len as u64,
            max: max as u64,
        });
    }
    Ok(())
}

fn check_column(column: u16) -> Result<(), OnDiskError> {
    let ok = usize::from(column) < StripeLayout::MAX_STRIPE_COUNT;
    check_field("column", column.into(), ok)
}

fn check_extent(
    column: u16,
    object_offset: u64,
    device_offset: u64,
    len: u64,
) -> Result<(), OnDiskError> {
    check_column(column)?;
    check_field("extent.len", len, len > 0)?;
    let object_ok = object_offset.checked_add(len).is_some();
    check_field("extent.object_offset", object_offset, object_ok)?;
    let device_ok = device_offset.checked_add(len).is_some();
    check_field("extent.device_offset", device_offset, device_ok)
}

fn read_kind(r: &mut Reader<'_>) -> Result<InodeKind, OnDiskError> {
    let byte = r.u8()?;
    InodeKind::from_u8(byte).ok_or(OnDiskError::BadField {
        field: "inode.kind",
        value: byte.into(),
    })
}

fn read_timestamp(r: &mut Reader<'_>) -> Result<Timestamp, OnDiskError> {
    Ok(Timestamp {
        secs: r.i64()?,
        nanos: r.u32()?,
    })
}

fn read_layout_option(r: &mut Reader<'_>) -> Result<Option<LayoutRecord>, OnDiskError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(LayoutRecord::read(r)?)),
        flag => Err(OnDiskError::BadField {
            field: "inode.layout.flag",
            value: flag.into(),
        }),
    }
}
