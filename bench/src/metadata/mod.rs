//! The `metadata` sweep (issue 11): what people do with a filesystem besides reading one
//! large file — untar a tree of small files, `find` and `du` it, `stat` everything, `rm -rf`
//! it, copy a large file in and read it back — on stripefs mounted over RAM-backed loop
//! devices, and on btrfs raid0 (data raid0, metadata raid1) over the same devices in the
//! same run, as the baseline. Ratios are stripefs's throughput over btrfs's (> 1: stripefs
//! is faster), checked against the goals of issue 11.
//!
//! Modules: `tree` makes the tree and its archive, `phases` runs the timed phases, `report`
//! writes the table; the devices, filesystems and commands are `crate::mounts`.

mod phases;
mod report;
mod tree;

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub use report::{markdown, text};

use crate::mounts::{FsKind, command, load_average, ram_devices};
use phases::{Inputs, Times};
use tree::{Shape, TreeStats};

/// The sweep's size.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Scale {
    pub devices: usize,
    pub device_size: u64,
    pub tree: Shape,
    /// Bytes of the large file.
    pub big_file: u64,
}

impl Scale {
    /// The full sweep, or the small one of `--quick` (a few seconds).
    pub fn new(quick: bool) -> Scale {
        if quick {
            Scale {
                devices: 2,
                device_size: 256 << 20,
                tree: Shape::QUICK,
                big_file: 64 << 20,
            }
        } else {
            Scale {
                devices: 4,
                device_size: 768 << 20,
                tree: Shape::FULL,
                big_file: 1 << 30,
            }
        }
    }
}

/// One filesystem's part of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct FsRun {
    pub fs: FsKind,
    #[serde(flatten)]
    pub outcome: FsOutcome,
}

/// How one filesystem's part went.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum FsOutcome {
    Measured(Times),
    Unavailable { reason: String },
    Failed { error: String },
}

/// The sweep's results (part of the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct MetadataResult {
    pub scale: Scale,
    /// What the tree holds.
    pub tree: TreeStats,
    pub runs: Vec<FsRun>,
    /// The 1-minute load average of the machine when the sweep started and when it ended
    /// (other programs running show here: the figures are then noisy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<(f64, f64)>,
}

impl MetadataResult {
    /// The times of `fs`, if it was measured.
    pub fn times(&self, fs: FsKind) -> Option<&Times> {
        self.runs.iter().find_map(|r| match &r.outcome {
            FsOutcome::Measured(t) if r.fs == fs => Some(t),
            _ => None,
        })
    }

    /// Errors of the sweep.
    pub fn failures(&self) -> impl Iterator<Item = String> + '_ {
        self.runs.iter().filter_map(|r| match &r.outcome {
            FsOutcome::Failed { error } => Some(format!("metadata {}: {error}", r.fs.name())),
            _ => None,
        })
    }
}

/// How the sweep went.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum MetadataOutcome {
    Measured(MetadataResult),
    Skipped { reason: String },
    Failed { error: String },
}

/// Runs the sweep at `scale`. `require_btrfs`: a missing `mkfs.btrfs` is an error (CI)
/// rather than a skipped baseline.
pub fn run(scale: Scale, require_btrfs: bool) -> MetadataOutcome {
    if let Some(reason) = crate::mounts::unavailable() {
        return MetadataOutcome::Skipped { reason };
    }
    match measure(scale, require_btrfs) {
        Ok(result) => MetadataOutcome::Measured(result),
        Err(e) => MetadataOutcome::Failed {
            error: format!("{e:#}"),
        },
    }
}

fn measure(scale: Scale, require_btrfs: bool) -> Result<MetadataResult> {
    let btrfs = command::installed("mkfs.btrfs");
    if !btrfs && require_btrfs {
        bail!("mkfs.btrfs is not installed (apt-get install -y btrfs-progs)");
    }
    let (_lab, devices) = ram_devices(scale.devices, scale.device_size, "metadata")?;
    let scratch = tempfile::Builder::new()
        .prefix("stripefs-bench-meta-")
        .tempdir_in("/dev/shm")
        .context("scratch dir in /dev/shm")?;
    let mountpoint = tempfile::Builder::new()
        .prefix("stripefs-bench-meta-mnt-")
        .tempdir_in("/var/tmp")
        .context("mountpoint in /var/tmp")?;
    println!("metadata: making the tree and the large file in /dev/shm");
    let (archive, tree) = tree::archive(scratch.path(), scale.tree)?;
    let big_file = scratch.path().join("big.dat");
    tree::big_file(&big_file, scale.big_file)?;
    let inputs = Inputs {
        archive,
        tree,
        big_file,
        big_bytes: scale.big_file,
    };
    let load_before = load_average();
    let mut runs = Vec::new();
    for fs in [FsKind::Stripefs, FsKind::Btrfs] {
        if crate::signal::interrupted() {
            break;
        }
        let outcome = if fs == FsKind::Btrfs && !btrfs {
            let reason = "mkfs.btrfs is not installed (apt-get install -y btrfs-progs)";
            println!("metadata: skipping btrfs: {reason}");
            FsOutcome::Unavailable {
                reason: reason.into(),
            }
        } else {
            println!("metadata: {}", fs.name());
            match phases::run(fs, &devices, mountpoint.path(), &inputs) {
                Ok(t) => FsOutcome::Measured(t),
                Err(e) => FsOutcome::Failed {
                    error: format!("{e:#}"),
                },
            }
        };
        runs.push(FsRun { fs, outcome });
    }
    let load = load_before.zip(load_average());
    Ok(MetadataResult {
        scale,
        tree,
        runs,
        load,
    })
}
