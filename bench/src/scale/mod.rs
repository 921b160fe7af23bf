//! The `files` sweep (issue 16): how stripefs behaves as it fills up with files. Through the
//! mount, with plain `std::fs` calls from a few threads of this process, empty files are made
//! in a thousand directories up to a million; at checkpoints on the way it records the create
//! rate since the last one, what an `fsync` after one create costs, the daemon's RSS, and how
//! long an unmount and a mount take at that size. Then every file is `lstat`ed (after that
//! remount: cold caches) and unlinked. The same create, stat and unlink phases run on btrfs
//! raid0 (data raid0, metadata raid1) over the same RAM-backed loop devices in the same run,
//! as the baseline; last, a fresh stripefs is filled with 4 KiB files until a million or until
//! a create or write fails (ENOSPC is expected near the end: a million 4 KiB files are 95% of
//! four 1 GiB devices before any metadata), and where it stopped and with which errno is
//! recorded.
//!
//! Modules: `fill` makes the files and takes the checkpoints, `walk` stats and unlinks them,
//! `report` writes the tables; the devices, filesystems and commands are `crate::mounts`.

mod fill;
mod report;
mod walk;

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub use fill::{Checkpoint, Fill};
pub use report::{markdown, text};
pub use walk::Rates;

use crate::mounts::{FsKind, Mounted, command, load_average, ram_devices};

/// Where the stripefs daemons of the sweep append their messages (kept after the run: what
/// a failing daemon said is there).
pub const DAEMON_LOG: &str = "/var/tmp/stripefs-bench-files-daemon.log";

/// The sweep's size.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub devices: usize,
    pub device_size: u64,
    /// Directories the files are spread over (file `i` goes to directory `i % dirs`).
    pub dirs: usize,
    /// Threads of this process making, stating and unlinking files.
    pub threads: usize,
    /// Numbers of empty files at which the checkpoints are taken; the last is the target.
    pub checkpoints: Vec<u64>,
    /// The same for the sized files (only where the fill ends: each checkpoint of a large
    /// filesystem costs minutes).
    pub sized_checkpoints: Vec<u64>,
    /// Bytes of each file of the second stripefs fill.
    pub sized_file: u64,
}

impl Plan {
    /// The full sweep (a million files on four 1 GiB devices, several minutes), or the small
    /// one of `--quick` (a few seconds).
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                devices: 2,
                device_size: 256 << 20,
                dirs: 100,
                threads: 2,
                checkpoints: vec![10_000, 20_000],
                sized_checkpoints: vec![20_000],
                sized_file: 4096,
            }
        } else {
            Plan {
                devices: 4,
                device_size: 1 << 30,
                dirs: 1000,
                threads: 2,
                checkpoints: vec![100_000, 250_000, 500_000, 1_000_000],
                sized_checkpoints: vec![1_000_000],
                sized_file: 4096,
            }
        }
    }

    /// The number of files each fill aims at.
    pub fn target(&self) -> u64 {
        self.checkpoints.last().copied().unwrap_or(0)
    }
}

/// One filesystem's part of the sweep.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsRun {
    pub fs: Option<FsKind>,
    /// Empty files up to the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty: Option<Fill>,
    /// `lstat` and unlink of the empty files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
    /// Files of `Plan::sized_file` bytes up to the target or the first failure (stripefs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sized: Option<Fill>,
    /// Why this filesystem did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// What failed (the figures above are what was measured before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The sweep's results (part of the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct FilesResult {
    pub plan: Plan,
    pub runs: Vec<FsRun>,
    /// The 1-minute load average when the sweep started and when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<(f64, f64)>,
    pub wall_seconds: f64,
}

impl FilesResult {
    /// The run of `fs`, if it took place.
    pub fn run(&self, fs: FsKind) -> Option<&FsRun> {
        self.runs
            .iter()
            .find(|r| r.fs == Some(fs) && r.unavailable.is_none())
    }

    /// Errors of the sweep: anything that failed, and a fill of empty files that stopped
    /// short, or a fill of sized files that stopped on anything but ENOSPC.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.runs {
            let name = r.fs.map_or("?", FsKind::name);
            if let Some(e) = &r.error {
                out.push(format!("files {name}: {e}"));
            }
            if let Some(stop) = r.empty.as_ref().and_then(|f| f.stop.as_ref()) {
                out.push(format!("files {name}, empty files: {}", stop.describe()));
            }
            if let Some(stop) = r.sized.as_ref().and_then(|f| f.stop.as_ref())
                && stop.errno != Some(libc::ENOSPC)
            {
                out.push(format!("files {name}, sized files: {}", stop.describe()));
            }
        }
        out
    }
}

/// How the sweep went.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum FilesOutcome {
    Measured(FilesResult),
    Skipped { reason: String },
    Failed { error: String },
}

/// Runs the sweep. `require_btrfs`: a missing `mkfs.btrfs` is an error (CI) rather than a
/// skipped baseline.
pub fn run(plan: Plan, require_btrfs: bool) -> FilesOutcome {
    if let Some(reason) = crate::mounts::unavailable() {
        return FilesOutcome::Skipped { reason };
    }
    match measure(plan, require_btrfs) {
        Ok(result) => FilesOutcome::Measured(result),
        Err(e) => FilesOutcome::Failed {
            error: format!("{e:#}"),
        },
    }
}

fn measure(plan: Plan, require_btrfs: bool) -> Result<FilesResult> {
    let started = std::time::Instant::now();
    let btrfs = command::installed("mkfs.btrfs");
    if !btrfs && require_btrfs {
        bail!("mkfs.btrfs is not installed (apt-get install -y btrfs-progs)");
    }
    let (_lab, devices) = ram_devices(plan.devices, plan.device_size, "files")?;
    let mountpoint = tempfile::Builder::new()
        .prefix("stripefs-bench-files-mnt-")
        .tempdir_in("/var/tmp")
        .context("mountpoint in /var/tmp")?;
    // A fresh log for this run's daemons.
    let _ = std::fs::remove_file(DAEMON_LOG);
    println!("files: the stripefs daemons' messages go to {DAEMON_LOG}");
    let load_before = load_average();
    let mut runs = Vec::new();
    // Empty files on stripefs, then on btrfs, then 4 KiB files on a fresh stripefs.
    for (fs, sized) in [
        (FsKind::Stripefs, false),
        (FsKind::Btrfs, false),
        (FsKind::Stripefs, true),
    ] {
        if crate::signal::interrupted() {
            break;
        }
        if fs == FsKind::Btrfs && !btrfs {
            let reason = "mkfs.btrfs is not installed (apt-get install -y btrfs-progs)";
            println!("files: skipping btrfs: {reason}");
            runs.push(FsRun {
                fs: Some(fs),
                unavailable: Some(reason.into()),
                ..FsRun::default()
            });
            continue;
        }
        let what = if sized {
            format!("{} B files", plan.sized_file)
        } else {
            "empty files".into()
        };
        println!("files: {}, {what}", fs.name());
        let mut run = FsRun {
            fs: Some(fs),
            ..FsRun::default()
        };
        if let Err(e) = one_fs(fs, sized, &plan, &devices, mountpoint.path(), &mut run) {
            run.error = Some(format!("{e:#}"));
        }
        // The 4 KiB fill is stripefs's second run: one entry per filesystem in the table.
        match runs.iter_mut().find(|r: &&mut FsRun| r.fs == Some(fs)) {
            Some(first) if sized => {
                first.sized = run.sized;
                if let Some(e) = run.error {
                    first.error = Some(match first.error.take() {
                        Some(before) => format!("{before}; {e}"),
                        None => e,
                    });
                }
            }
            _ => runs.push(run),
        }
    }
    let load = load_before.zip(load_average());
    Ok(FilesResult {
        plan,
        runs,
        load,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Makes `fs` on `devices` and runs one part: empty files then stat and unlink, or (`sized`)
/// the fill with sized files. What was measured is kept in `run` even if a later step fails.
fn one_fs(
    fs: FsKind,
    sized: bool,
    plan: &Plan,
    devices: &[std::path::PathBuf],
    mountpoint: &std::path::Path,
    run: &mut FsRun,
) -> Result<()> {
    fs.mkfs(devices)?;
    let log = std::path::Path::new(DAEMON_LOG);
    let mut mounted = match fs {
        FsKind::Stripefs => Mounted::mount_logged(fs, devices, mountpoint, log)?,
        FsKind::Btrfs => Mounted::mount(fs, devices, mountpoint)?,
    };
    let fill = if sized {
        fill::fill(&mut mounted, plan, &plan.sized_checkpoints, plan.sized_file)
    } else {
        fill::fill(&mut mounted, plan, &plan.checkpoints, 0)
    };
    let made = fill.made;
    let stopped = fill.stop.is_some();
    if sized {
        run.sized = Some(fill);
    } else {
        run.empty = Some(fill);
    }
    if sized || stopped {
        return mounted.unmount();
    }
    // The last checkpoint remounted the filesystem: the stat phase starts from cold caches.
    run.rates = Some(walk::stat_and_unlink(&mounted, plan, made)?);
    mounted.unmount()
}
