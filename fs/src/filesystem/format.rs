//! Making a filesystem (mkfs) and checking, at mount, that the devices given are exactly the
//! devices of one filesystem, in order.

use std::time::{SystemTime, UNIX_EPOCH};

use stripefs_engine::DeviceQueue;
use stripefs_layout::ondisk::{InodeKind, LayoutRecord, Record, SUPERBLOCK_SIZE, Superblock};
use stripefs_layout::{StripeLayout, StripeUnit};

use super::bounce::{BouncePool, read_device, write_device};
use super::error::FsError;
use super::journal::{self, Journal};
use super::pieces;
use crate::meta::alloc::Allocator;
use crate::meta::{self, ROOT};

/// Filesystem block size: allocation unit and alignment of the data path.
pub const BLOCK_SIZE: u64 = 4096;
/// Where the metadata area of a replica starts, and the data area of the other devices.
const AREA_START: u64 = 1 << 20;

/// Choices made at mkfs.
#[derive(Clone, Debug)]
pub struct MkfsOptions {
    /// Default stripe unit of new files.
    pub stripe_unit: u64,
    /// Default stripe count of new files (at most the number of devices; `None`: all).
    pub stripe_count: Option<u32>,
    /// Size of the metadata area on each replica (`None`: a share of the device).
    pub metadata_size: Option<u64>,
    /// A name for the filesystem.
    pub label: String,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            stripe_unit: 256 << 10,
            stripe_count: None,
            metadata_size: None,
            label: String::new(),
        }
    }
}

/// Writes a new, empty filesystem over `devices` (their contents are lost).
pub fn mkfs(devices: &[DeviceQueue], options: &MkfsOptions) -> Result<Vec<Superblock>, FsError> {
    let superblocks = plan(devices, options)?;
    let pool = BouncePool::new(u64::MAX, devices);
    let areas = journal::areas(&superblocks);
    for area in &areas {
        zero(devices, &pool, area.device, area.offset, area.len)?;
    }
    let mut journal = Journal::fresh(areas);
    let data: Vec<(u64, u64)> = superblocks
        .iter()
        .map(|sb| (sb.data_offset, sb.data_len))
        .collect();
    let mut alloc = Allocator::new(&data);
    let root = pieces::encode_changed(stripefs_layout::ondisk::piece_of(ROOT), &[root_record()]);
    let staged = pieces::stage(&journal, vec![root], &mut alloc)?;
    journal.write_checkpoint(devices, &pool, &staged)?;
    for (i, sb) in superblocks.iter().enumerate() {
        write_device(devices, &pool, i, 0, &sb.encode())?;
        devices[i].sync()?;
    }
    Ok(superblocks)
}

/// The superblocks [`mkfs`] would write over `devices` (a new uuid each call); writes nothing.
pub fn plan(devices: &[DeviceQueue], options: &MkfsOptions) -> Result<Vec<Superblock>, FsError> {
    let count = devices.len() as u32;
    if count == 0 {
        return Err(FsError::invalid("mkfs needs at least one device"));
    }
    let unit = StripeUnit::new(options.stripe_unit)
        .map_err(|e| FsError::invalid(format!("stripe unit: {e}")))?;
    let stripe_count = options.stripe_count.unwrap_or(count);
    if stripe_count == 0 || stripe_count > count {
        return Err(FsError::invalid(format!(
            "stripe count {stripe_count} must be between 1 and the number of devices ({count})"
        )));
    }
    if options.label.len() > stripefs_layout::ondisk::LABEL_MAX || options.label.contains('\0') {
        return Err(FsError::invalid(format!(
            "label {:?} must be at most {} bytes without NUL",
            options.label,
            stripefs_layout::ondisk::LABEL_MAX
        )));
    }
    let uuid = new_uuid();
    let replicas = count.min(2) as usize;
    let superblocks = devices
        .iter()
        .enumerate()
        .map(|(i, d)| superblock_for(d, i, count, unit, stripe_count, i < replicas, uuid, options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(superblocks)
}

#[allow(clippy::too_many_arguments)]
fn superblock_for(
    device: &DeviceQueue,
    index: usize,
    count: u32,
    unit: StripeUnit,
    stripe_count: u32,
    replica: bool,
    uuid: [u8; 16],
    options: &MkfsOptions,
) -> Result<Superblock, FsError> {
    let size = device.size() / BLOCK_SIZE * BLOCK_SIZE;
    if u64::from(device.block_size()) > BLOCK_SIZE {
        return Err(FsError::DeviceSet {
            device: device.name().into(),
            what: format!(
                "block size {} is larger than the filesystem block {BLOCK_SIZE}",
                device.block_size()
            ),
        });
    }
    let meta_len = if replica {
        // The area holds the log and two checkpoint tables, not the metadata (which grows
        // into the data area): a table entry of 57 bytes names a piece of 256 inodes, so a
        // quarter of 1/64 of the device names about size / 60 inodes (15 million files on
        // four 1 GiB devices). More would only take room from data.
        let default = (size / 64).clamp(8 << 20, 256 << 20);
        options
            .metadata_size
            .unwrap_or(default)
            .next_multiple_of(1 << 20)
    } else {
        0
    };
    let data_offset = (AREA_START + meta_len).next_multiple_of(1 << 20);
    if size < data_offset + (1 << 20) {
        return Err(FsError::DeviceSet {
            device: device.name().into(),
            what: format!(
                "{size} bytes is too small (at least {} needed)",
                data_offset + (1 << 20)
            ),
        });
    }
    Ok(Superblock {
        fs_uuid: uuid,
        device_index: index as u32,
        device_count: count,
        block_size: BLOCK_SIZE as u32,
        default_stripe_unit: unit.bytes() as u32,
        default_stripe_count: stripe_count,
        device_size: size,
        meta_offset: if replica { AREA_START } else { 0 },
        meta_len,
        data_offset,
        data_len: size - data_offset,
        created_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        label: options.label.clone(),
    })
}

/// The root directory keeps no layout of its own: new files take the filesystem default.
fn root_record() -> Record {
    Record::Inode(meta::new_inode(
        ROOT,
        InodeKind::Dir,
        0o755,
        0,
        0,
        super::now(),
        None,
    ))
}

fn zero(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    device: usize,
    offset: u64,
    len: u64,
) -> Result<(), FsError> {
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        write_device(devices, pool, device, offset + done, &zeros[..n as usize])?;
        done += n;
    }
    Ok(())
}

fn new_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if let Ok(bytes) = std::fs::read("/proc/sys/kernel/random/uuid") {
        let hex: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(u8::is_ascii_hexdigit)
            .collect();
        for (i, pair) in hex.chunks(2).take(16).enumerate() {
            let s = std::str::from_utf8(pair).unwrap_or("0");
            uuid[i] = u8::from_str_radix(s, 16).unwrap_or(0);
        }
    }
    if uuid == [0; 16] {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        uuid = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    uuid
}

/// Reads every device's superblock and checks they form one filesystem, in the given order.
pub fn check_device_set(
    devices: &[DeviceQueue],
    pool: &BouncePool,
) -> Result<Vec<Superblock>, FsError> {
    let mut superblocks = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        let mut block = vec![0u8; SUPERBLOCK_SIZE];
        read_device(devices, pool, i, 0, &mut block)?;
        let sb = Superblock::decode(&block).map_err(|source| FsError::Superblock {
            device: d.name().to_string(),
            source,
        })?;
        superblocks.push(sb);
    }
    let Some(first) = superblocks.first() else {
        return Err(FsError::invalid("no devices given"));
    };
    let (uuid, count) = (first.fs_uuid, first.device_count as usize);
    for (i, (sb, d)) in superblocks.iter().zip(devices).enumerate() {
        let set_error = |what: String| FsError::DeviceSet {
            device: d.name().to_string(),
            what,
        };
        if sb.fs_uuid != uuid {
            return Err(set_error(format!(
                "belongs to another filesystem ({}) than {} ({})",
                hex(&sb.fs_uuid),
                devices[0].name(),
                hex(&uuid)
            )));
        }
        if let Some(j) = superblocks[..i]
            .iter()
            .position(|o| o.device_index == sb.device_index)
        {
            return Err(set_error(format!(
                "is device #{} of the filesystem, like {} (the same device given twice?)",
                sb.device_index,
                devices[j].name()
            )));
        }
        if sb.device_index as usize != i {
            return Err(set_error(format!(
                "is device #{} of the filesystem but was given as #{i}: give the devices in their mkfs order",
                sb.device_index
            )));
        }
        if sb.device_size > d.size() {
            return Err(set_error(format!(
                "is {} bytes, smaller than the {} the filesystem was made with",
                d.size(),
                sb.device_size
            )));
        }
    }
    if devices.len() != count {
        let missing = (devices.len()..count)
            .map(|i| format!("#{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(FsError::DeviceSet {
            device: devices[0].name().to_string(),
            what: if devices.len() < count {
                format!(
                    "the filesystem has {count} devices but {} were given; missing device {missing}",
                    devices.len()
                )
            } else {
                format!(
                    "the filesystem has {count} devices but {} were given",
                    devices.len()
                )
            },
        });
    }
    Ok(superblocks)
}

/// The default layout of new files: `count` devices starting at `first`, round-robin.
pub(crate) fn default_layout(sb: &Superblock, first: usize) -> LayoutRecord {
    let n = sb.device_count as usize;
    let count = (sb.default_stripe_count as usize).clamp(1, n);
    LayoutRecord {
        stripe_unit: sb.default_stripe_unit,
        devices: (0..count).map(|i| ((first + i) % n) as u16).collect(),
    }
}

/// The layout arithmetic of a layout record.
pub(crate) fn stripe_layout(layout: &LayoutRecord) -> Result<StripeLayout, FsError> {
    let unit = StripeUnit::new(u64::from(layout.stripe_unit))
        .map_err(|e| FsError::invalid(format!("layout: {e}")))?;
    StripeLayout::new(
        unit,
        layout
            .devices
            .iter()
            .map(|&d| stripe_layout_index(d))
            .collect(),
    )
    .map_err(|e| FsError::invalid(format!("layout: {e}")))
}

fn stripe_layout_index(d: u16) -> stripefs_layout::DeviceIndex {
    stripefs_layout::DeviceIndex(u32::from(d))
}

/// A uuid as hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
