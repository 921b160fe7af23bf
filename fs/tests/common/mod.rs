//! Helpers shared by the filesystem's library tests: scratch device files that support
//! `O_DIRECT`, mkfs over them, a data pattern, and fsck of a device set.
//!
//! Every test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::PathBuf;

use stripefs_engine::{DeviceQueue, DeviceSpec, pattern};
use stripefs_fs::filesystem::{self, Caller, FsckReport, MkfsOptions};

pub const ROOT: u64 = 1;
pub const ME: Caller = Caller { uid: 0, gid: 0 };

/// Device files in a scratch directory (removed on drop).
pub struct Devices {
    pub dir: tempfile::TempDir,
    pub specs: Vec<DeviceSpec>,
    pub paths: Vec<PathBuf>,
}

/// `n` device files of `size` bytes under /var/tmp (which supports `O_DIRECT`).
pub fn devices(n: usize, size: u64) -> Devices {
    let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| dir.path().join(format!("d{i}.img")))
        .collect();
    for p in &paths {
        std::fs::File::create(p)
            .and_then(|f| f.set_len(size))
            .expect("device file");
    }
    let specs = paths.iter().map(|p| DeviceSpec::Path(p.clone())).collect();
    Devices { dir, specs, paths }
}

/// `n` device files of `size` bytes with a filesystem of stripe unit `unit` and
/// `metadata` bytes of metadata area per replica.
pub fn formatted(n: usize, size: u64, unit: u64, metadata: u64) -> Devices {
    let d = devices(n, size);
    let options = MkfsOptions {
        stripe_unit: unit,
        metadata_size: Some(metadata),
        ..MkfsOptions::default()
    };
    filesystem::mkfs(&d.specs, &options).expect("mkfs");
    d
}

pub fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `len` bytes of the pattern of `seed`.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pattern::fill(seed, 0, &mut v);
    v
}

/// The queues of `specs`, opened.
pub fn queues(specs: &[DeviceSpec]) -> Vec<DeviceQueue> {
    specs
        .iter()
        .map(|s| DeviceQueue::open(s).expect("open device"))
        .collect()
}

/// fsck of the filesystem on `specs` (not mounted).
pub fn fsck(specs: &[DeviceSpec]) -> FsckReport {
    filesystem::fsck(&queues(specs)).expect("fsck")
}

/// Panics with fsck's problems unless the filesystem on `specs` is clean.
#[track_caller]
pub fn assert_fsck_clean(specs: &[DeviceSpec]) {
    let report = fsck(specs);
    assert!(report.is_clean(), "fsck: {:?}", report.problems);
}
