//! What identifies a device across processes: a block device by its number, a file by its
//! filesystem and inode; how it is written in a daemon's state file.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use stripefs_engine::DeviceSpec;
use stripefs_engine::spec::Backing;

/// What identifies a device across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceId {
    /// A block device, by its device number.
    Block { rdev: u64 },
    /// A regular file, by the device it lives on and its inode.
    File { dev: u64, ino: u64 },
}

impl DeviceId {
    /// The identity of the block device or regular file at `path`; `None` for anything else
    /// (or nothing: the device layer reports it).
    pub(super) fn of(path: &Path) -> Option<DeviceId> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.file_type().is_block_device() {
            Some(DeviceId::Block { rdev: meta.rdev() })
        } else if meta.is_file() {
            Some(DeviceId::File {
                dev: meta.dev(),
                ino: meta.ino(),
            })
        } else {
            None
        }
    }

    pub(super) fn encode(&self) -> String {
        match *self {
            DeviceId::Block { rdev } => format!("block {}", majmin(rdev)),
            DeviceId::File { dev, ino } => format!("file {} {ino}", majmin(dev)),
        }
    }

    pub(super) fn decode(text: &str) -> Option<DeviceId> {
        let mut words = text.split(' ');
        let id = match (words.next()?, words.next()?) {
            ("block", mm) => DeviceId::Block {
                rdev: parse_majmin(mm)?,
            },
            ("file", mm) => DeviceId::File {
                dev: parse_majmin(mm)?,
                ino: words.next()?.parse().ok()?,
            },
            _ => return None,
        };
        Some(id)
    }
}

pub(super) fn majmin(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

fn parse_majmin(text: &str) -> Option<u64> {
    let (major, minor) = text.split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

/// The path that holds the data of `spec`, if any (not for an emulated device in memory).
pub(super) fn path_of(spec: &DeviceSpec) -> Option<PathBuf> {
    match spec {
        DeviceSpec::Path(p) => Some(p.clone()),
        DeviceSpec::Emulated(e) => match &e.backing {
            Backing::File(p) => Some(p.clone()),
            Backing::Memory => None,
        },
    }
}

/// The identities of the devices among `specs` that exist.
pub fn device_ids(specs: &[DeviceSpec]) -> Vec<DeviceId> {
    specs
        .iter()
        .filter_map(path_of)
        .filter_map(|p| DeviceId::of(&p))
        .collect()
}
