//! `stripefs fsck DEV...`: checks a filesystem that is not mounted and reports what is wrong
//! (reading only); `--repair` repairs what has one right answer and refuses the rest.

use anyhow::{Context, Result};
use stripefs_engine::DeviceSpec;
use stripefs_fs::filesystem::{self, FsckReport, RepairReport};

/// Arguments of `stripefs fsck`.
#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    /// The filesystem's devices, in mkfs order (paths or emu: specs), or `UUID=…`, or any
    /// one member device (the others are found).
    #[arg(required = true)]
    pub devices: Vec<String>,
    /// Another place to look for members (an image file, say) when the filesystem is named
    /// by `UUID=…` or by one member; repeatable.
    #[arg(long = "device", value_name = "PATH")]
    pub extra_devices: Vec<std::path::PathBuf>,
    /// Repair what can be repaired safely (a torn checkpoint with a whole older one,
    /// orphans and their space, extents past the end of a file, entries naming missing
    /// inodes), saying what was done; refuse, writing nothing, what cannot.
    #[arg(long)]
    pub repair: bool,
}

/// Runs fsck; returns whether the filesystem is clean (the caller exits 1 if not).
pub fn run(args: &FsckArgs) -> Result<bool> {
    let devices = crate::probe::resolve(&args.devices, &args.extra_devices)?;
    let specs = devices
        .iter()
        .map(|s| {
            s.parse::<DeviceSpec>()
                .with_context(|| format!("device {s}"))
        })
        .collect::<Result<Vec<_>>>()?;
    // Not while a mount uses them; a daemon finishing an unmount of them is waited for.
    let _locks = crate::lock::lock_devices(&specs)?;
    let devices = filesystem::open_devices(&specs).context("opening the devices")?;
    if args.repair {
        let report = filesystem::repair(&devices).context("the metadata cannot be read")?;
        print_repair(&report);
        return Ok(report.is_clean());
    }
    let report = filesystem::fsck(&devices).context("the metadata cannot be read")?;
    print(&report);
    Ok(report.is_clean())
}

fn print_repair(report: &RepairReport) {
    if report.repaired.is_empty() && report.refused.is_empty() {
        println!("nothing to repair: clean");
        return;
    }
    for r in &report.repaired {
        println!("repaired: {r}");
    }
    if report.is_clean() {
        println!(
            "clean (checkpoint generation {})",
            report.checkpoint_generation
        );
    } else {
        println!("{} problem(s) not repaired:", report.refused.len());
        for r in &report.refused {
            println!("  {r}");
        }
    }
}

fn print(report: &FsckReport) {
    println!(
        "checkpoint generation {}, {} log entries replayed",
        report.checkpoint_generation, report.log_entries
    );
    println!(
        "{} files, {} directories, {} symlinks, {} special files (FIFOs, sockets, device nodes), {} bytes stored",
        report.files,
        report.directories,
        report.symlinks,
        report.special_files,
        report.bytes_stored
    );
    if report.orphans > 0 {
        println!(
            "{} unlinked inode(s) left open at a crash: freed at the next mount (not damage)",
            report.orphans
        );
    }
    for p in &report.passed_over {
        println!(
            "passed over a checkpoint torn by a crash (not damage: mount uses the older one and its log; `--repair` rewrites it): {p}"
        );
    }
    if report.is_clean() {
        println!("clean");
    } else {
        println!("{} problem(s):", report.problems.len());
        for p in &report.problems {
            println!("  {p}");
        }
    }
}
