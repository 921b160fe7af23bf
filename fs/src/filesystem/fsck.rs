//! `fsck`: reads superblocks and metadata without changing anything, and reports every
//! inconsistency it finds.

use std::collections::{HashMap, HashSet};

use stripefs_engine::DeviceQueue;
use stripefs_layout::ondisk::{InodeKind, Record, Superblock};

use super::bounce::BouncePool;
use super::error::FsError;
use super::format::{self, BLOCK_SIZE, stripe_layout};
use super::journal::{self, Journal, Loaded};
use super::pieces::{self, Space};
use crate::meta::alloc::Allocator;
use crate::meta::{self, Metadata, ROOT};

/// What fsck found.
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    /// Every inconsistency, one line each. Empty means clean.
    pub problems: Vec<String>,
    /// Unlinked inodes left by a crash while open: not damage; mount frees them.
    pub orphans: usize,
    pub files: usize,
    pub directories: usize,
    pub symlinks: usize,
    /// FIFOs, sockets and device nodes.
    pub special_files: usize,
    pub bytes_stored: u64,
    pub checkpoint_generation: u64,
    pub log_entries: u64,
    /// Checkpoints passed over for an older valid one (a crash while one was written is not
    /// damage: mount uses the older one and its log).
    pub passed_over: Vec<String>,
}

impl FsckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the filesystem on `devices` (in mkfs order). Errors that prevent reading the
/// metadata at all (bad superblocks, wrong device set, no valid checkpoint) are returned as
/// `Err`; everything else is collected in the report.
pub fn fsck(devices: &[DeviceQueue]) -> Result<FsckReport, FsError> {
    let read = read_metadata(devices, u64::MAX - 1)?;
    let piece_space = read.piece_space();
    let mut report = FsckReport {
        checkpoint_generation: read.loaded.journal.generation(),
        log_entries: read.loaded.log_entries,
        passed_over: read.loaded.passed_over.clone(),
        problems: read.unapplied,
        ..FsckReport::default()
    };
    check_metadata(
        &read.meta,
        &piece_space,
        &read.superblocks,
        devices,
        &mut report,
    );
    Ok(report)
}

/// The metadata on the devices as mount would rebuild it, read without writing anything.
pub(super) struct ReadMetadata {
    pub pool: BouncePool,
    pub superblocks: Vec<Superblock>,
    pub loaded: Loaded,
    pub meta: Metadata,
    /// The records that did not apply, one line each.
    pub unapplied: Vec<String>,
}

/// Reads the superblocks, the newest whole checkpoint and its log, and applies the records.
pub(super) fn read_metadata(
    devices: &[DeviceQueue],
    pool_id: u64,
) -> Result<ReadMetadata, FsError> {
    let pool = BouncePool::new(pool_id, devices);
    let superblocks = format::check_device_set(devices, &pool)?;
    let loaded = Journal::load(devices, &pool, journal::areas(&superblocks))?;
    let mut meta = Metadata::default();
    let mut unapplied = Vec::new();
    pieces::replay(&loaded, devices, &pool, &mut meta, &mut |e, r| {
        unapplied.push(format!("metadata {} record ({e})", describe(r)));
        Ok(())
    })?;
    Ok(ReadMetadata {
        pool,
        superblocks,
        loaded,
        meta,
        unapplied,
    })
}

impl ReadMetadata {
    /// The space the checkpoint's pieces take on the replicas.
    pub(super) fn piece_space(&self) -> Vec<Space> {
        let replicas: Vec<usize> = self
            .loaded
            .journal
            .areas()
            .iter()
            .map(|a| a.device)
            .collect();
        pieces::table_space(self.loaded.journal.table(), &replicas)
    }
}

/// Every check of metadata loaded in memory, into `report`; `pieces` is the space the
/// metadata's pieces take.
pub(super) fn check_metadata(
    meta: &Metadata,
    pieces: &[Space],
    superblocks: &[Superblock],
    devices: &[DeviceQueue],
    report: &mut FsckReport,
) {
    check_tree(meta, report);
    check_layouts_and_sizes(meta, superblocks.len(), report);
    check_space(meta, pieces, superblocks, devices, report);
    count(meta, report);
}

/// An allocator whose free space is the data areas less every file's extents.
pub(super) fn allocator_of(meta: &Metadata, superblocks: &[Superblock]) -> Allocator {
    let areas: Vec<(u64, u64)> = superblocks
        .iter()
        .map(|sb| (sb.data_offset, sb.data_len))
        .collect();
    let mut alloc = Allocator::new(&areas);
    for (device, start, len) in meta.iter().flat_map(meta::freed_all) {
        // Overlaps are fsck's to report; here they are simply taken once.
        let _ = alloc.reserve(usize::from(device), start, len);
    }
    alloc
}

pub(super) fn describe(r: &Record) -> &'static str {
    match r {
        Record::Inode(_) => "inode",
        Record::FreeInode { .. } => "free inode",
        Record::Link { .. } => "link",
        Record::Unlink { .. } => "unlink",
        Record::Extent { .. } => "extent",
        Record::TruncateExtents { .. } => "truncate",
        Record::RemoveExtents { .. } => "remove extents",
        Record::SetXattr { .. } => "set xattr",
        Record::RemoveXattr { .. } => "remove xattr",
    }
}

fn check_tree(meta: &Metadata, report: &mut FsckReport) {
    match meta.get(ROOT) {
        Some(root) if root.is_dir() => {}
        _ => report.problems.push("the root directory is missing".into()),
    }
    let mut parents: HashMap<u64, usize> = HashMap::new();
    for dir in meta.iter().filter(|i| i.is_dir()) {
        for (name, &child) in dir.entries() {
            match meta.get(child) {
                None => report.problems.push(format!(
                    "directory {} entry {:?} points to missing inode {child}",
                    dir.ino(),
                    String::from_utf8_lossy(name)
                )),
                Some(c) if c.is_dir() => *parents.entry(child).or_default() += 1,
                Some(_) => {}
            }
        }
    }
    for (&dir, &n) in &parents {
        if n > 1 {
            report
                .problems
                .push(format!("directory {dir} has {n} parents"));
        }
    }
    // Every directory reachable from the root (no cycles, no detached subtrees).
    let mut seen = HashSet::from([ROOT]);
    let mut stack = vec![ROOT];
    while let Some(ino) = stack.pop() {
        if let Some(dir) = meta.get(ino) {
            for &child in dir.entries().values() {
                if meta.get(child).is_some_and(meta::Inode::is_dir) && seen.insert(child) {
                    stack.push(child);
                }
            }
        }
    }
    for dir in meta
        .iter()
        .filter(|i| i.is_dir() && i.nlink() > 0 && !seen.contains(&i.ino()))
    {
        report.problems.push(format!(
            "directory {} is not reachable from the root",
            dir.ino()
        ));
    }
    report.orphans = meta.orphans().len();
}

/// A FIFO, socket or device node keeps no data: no layout, no extents, size 0, and only a
/// device node has a device number.
fn check_special(inode: &meta::Inode, report: &mut FsckReport) {
    let r = &inode.record();
    let ino = r.ino;
    if r.layout.is_some() {
        report
            .problems
            .push(format!("special file {ino} ({:?}) has a layout", r.kind));
    }
    if inode.extents().iter().any(|m| m.end() > 0) {
        report
            .problems
            .push(format!("special file {ino} ({:?}) has extents", r.kind));
    }
    if r.size != 0 {
        report.problems.push(format!(
            "special file {ino} ({:?}) has size {}",
            r.kind, r.size
        ));
    }
    if r.rdev != 0 && !r.kind.is_device() {
        report.problems.push(format!(
            "{ino} ({:?}) has device number {:#x}",
            r.kind, r.rdev
        ));
    }
}

fn check_layouts_and_sizes(meta: &Metadata, device_count: usize, report: &mut FsckReport) {
    for inode in meta.iter() {
        let ino = inode.ino();
        if inode.kind().is_special() {
            check_special(inode, report);
            continue;
        }
        let Some(record) = inode.layout() else {
            if inode.kind() == InodeKind::File {
                report.problems.push(format!("file {ino} has no layout"));
            }
            continue;
        };
        if let Some(&d) = record
            .devices
            .iter()
            .find(|&&d| usize::from(d) >= device_count)
        {
            report.problems.push(format!(
                "inode {ino} layout names device {d}, the filesystem has {device_count}"
            ));
            continue;
        }
        let layout = match stripe_layout(record) {
            Ok(l) => l,
            Err(e) => {
                report.problems.push(format!("inode {ino}: {e}"));
                continue;
            }
        };
        // Blocks past the end are damage, unless fallocate kept them there on purpose.
        if inode.prealloc() {
            continue;
        }
        for (column, map) in inode.extents().iter().enumerate() {
            let limit = layout
                .column_extent(inode.size(), column)
                .div_ceil(BLOCK_SIZE)
                * BLOCK_SIZE;
            if map.end() > limit {
                report.problems.push(format!(
                    "file {ino} (size {}) stores column {column} up to {}, beyond {limit}",
                    inode.size(),
                    map.end()
                ));
            }
        }
    }
}

fn check_space(
    meta: &Metadata,
    pieces: &[Space],
    superblocks: &[stripefs_layout::ondisk::Superblock],
    devices: &[DeviceQueue],
    report: &mut FsckReport,
) {
    let areas: Vec<(u64, u64)> = superblocks
        .iter()
        .map(|sb| (sb.data_offset, sb.data_len))
        .collect();
    let mut alloc = Allocator::new(&areas);
    for &(device, start, len) in pieces {
        let d = usize::from(device);
        let name = devices
            .get(d)
            .map_or_else(|| format!("#{d}"), |q| q.name().to_string());
        if alloc.reserve(d, start, len).is_err() {
            report.problems.push(format!(
                "metadata piece copy {start}+{len} on {name} is outside the data area or overlaps another piece"
            ));
        }
    }
    for inode in meta.iter() {
        for (device, start, len) in meta::freed_all(inode) {
            report.bytes_stored += len;
            let d = usize::from(device);
            let name = devices
                .get(d)
                .map_or_else(|| format!("#{d}"), |q| q.name().to_string());
            let (area_start, area_len) = areas.get(d).copied().unwrap_or((0, 0));
            if start < area_start || start + len > area_start + area_len {
                report.problems.push(format!(
                    "inode {}: extent {start}+{len} on {name} is outside its data area {area_start}+{area_len}",
                    inode.ino()
                ));
            } else if alloc.reserve(d, start, len).is_err() {
                report.problems.push(format!(
                    "inode {}: extent {start}+{len} on {name} overlaps space owned by another extent or a metadata piece",
                    inode.ino()
                ));
            }
        }
    }
}

fn count(meta: &Metadata, report: &mut FsckReport) {
    for inode in meta.iter() {
        match inode.kind() {
            InodeKind::File => report.files += 1,
            InodeKind::Dir => report.directories += 1,
            InodeKind::Symlink => report.symlinks += 1,
            InodeKind::Fifo
            | InodeKind::Socket
            | InodeKind::CharDevice
            | InodeKind::BlockDevice => report.special_files += 1,
        }
    }
}
