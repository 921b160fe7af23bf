//! The files sweep's tables: the curve of each fill (files against create rate, commit time,
//! daemon RSS, unmount and mount time), and the create, stat and unlink rates of stripefs
//! against btrfs raid0 with the goal of issue 16 (>= 0.5x).

use std::fmt::Write;

use stripefs_engine::spec::format_size;

use super::{Checkpoint, FilesOutcome, FilesResult, Fill, FsRun};
use crate::mounts::FsKind;

const CURVE_COLUMNS: [&str; 9] = [
    "files",
    "create/s",
    "of which sync",
    "commit (fsync 1 create)",
    "RSS before unmount",
    "unmount",
    "mount",
    "RSS after mount",
    "free (statfs)",
];

const RATIO_COLUMNS: [&str; 5] = ["phase", "stripefs", "btrfs raid0", "stripefs/btrfs", "goal"];

/// The goal of issue 16 for the create, stat and unlink rates.
const GOAL: f64 = 0.5;

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".into(),
        |b| format!("{:.0} MiB", b as f64 / 1048576.0),
    )
}

fn curve_cells(c: &Checkpoint) -> [String; 9] {
    [
        c.files.to_string(),
        format!("{:.0}", c.create_rate),
        format!("{:.2} s", c.sync_seconds),
        c.commit_seconds
            .map_or_else(|| "failed".into(), |s| format!("{:.2} ms", s * 1e3)),
        mib(c.rss),
        format!("{:.2} s", c.unmount_seconds),
        format!("{:.2} s", c.mount_seconds),
        mib(c.rss_after_mount),
        c.space.map_or_else(
            || "-".into(),
            |s| format!("{}, {} inodes", format_size(s.bytes_free), s.inodes_free),
        ),
    ]
}

/// Files per second of the whole fill (making them durable included).
fn fill_rate(f: &Fill) -> Option<f64> {
    let seconds: f64 = f.checkpoints.iter().map(|c| c.create_seconds).sum();
    let files = f.checkpoints.last()?.files;
    Some(files as f64 / seconds.max(1e-9))
}

/// The fills of the run, each with its title.
fn fills(r: &FilesResult) -> Vec<(String, &Fill)> {
    let mut out = Vec::new();
    for run in &r.runs {
        let name = run.fs.map_or("?", FsKind::name);
        if let Some(f) = &run.empty {
            out.push((format!("{name}, empty files"), f));
        }
        if let Some(f) = &run.sized {
            out.push((format!("{name}, files of {}", format_size(f.file_bytes)), f));
        }
    }
    out
}

fn ratio_cells(r: &FilesResult) -> Vec<[String; 5]> {
    let ours = r.run(FsKind::Stripefs);
    let theirs = r.run(FsKind::Btrfs);
    type Pick = fn(&FsRun) -> Option<f64>;
    let rows: [(&str, Pick); 3] = [
        ("create (empty files, with sync)", |run| {
            run.empty.as_ref().and_then(fill_rate)
        }),
        ("lstat (cold, listing each directory)", |run| {
            run.rates.map(|x| x.stat_rate())
        }),
        ("unlink + sync", |run| run.rates.map(|x| x.unlink_rate())),
    ];
    rows.iter()
        .map(|(name, pick)| {
            let a = ours.and_then(pick);
            let b = theirs.and_then(pick);
            let show = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{x:.0}/s"));
            let ratio = a.zip(b).map(|(a, b)| a / b.max(1e-9));
            let goal = match ratio {
                None => format!(">= {GOAL} (n/a)"),
                Some(x) if x >= GOAL => format!(">= {GOAL} pass"),
                Some(_) => format!(">= {GOAL} MISS"),
            };
            [
                name.to_string(),
                show(a),
                show(b),
                ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                goal,
            ]
        })
        .collect()
}

/// What was measured on what, in one line.
fn heading(r: &FilesResult) -> String {
    format!(
        "{} RAM-backed loop devices of {}; files spread over {} directories, made by {} threads \
         of the benchmark through the mount; up to {} files",
        r.plan.devices,
        format_size(r.plan.device_size),
        r.plan.dirs,
        r.plan.threads,
        r.plan.target()
    )
}

/// Notes: where fills stopped, the machine's load, what did not run or failed.
fn notes(r: &FilesResult) -> String {
    let mut s = String::new();
    for (title, f) in fills(r) {
        match &f.stop {
            Some(stop) => {
                let _ = writeln!(s, "{title}: {}", stop.describe());
            }
            None if f.made < f.target => {
                let _ = writeln!(s, "{title}: interrupted at {} files", f.made);
            }
            None => {}
        }
    }
    let sized_rates = |k| r.run(k).and_then(|run| run.rates).map(|x| x.files);
    if let (Some(a), Some(b)) = (sized_rates(FsKind::Stripefs), sized_rates(FsKind::Btrfs))
        && a != b
    {
        let _ = writeln!(
            s,
            "the rates compare {a} files on stripefs with {b} on btrfs"
        );
    }
    if let Some((before, after)) = r.load {
        let _ = writeln!(
            s,
            "load average (1 min) {before:.2} before, {after:.2} after, on {} CPUs; {:.0} s in all",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            r.wall_seconds
        );
    }
    for run in &r.runs {
        let name = run.fs.map_or("?", FsKind::name);
        if let Some(reason) = &run.unavailable {
            let _ = writeln!(s, "{name}: n/a: {reason}");
        }
        if let Some(e) = &run.error {
            let _ = writeln!(s, "{name}: ERROR: {e}");
        }
    }
    s
}

fn aligned<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|c| c[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: &[String]| {
        let mut l = format!("  {:<w$}", c[0], w = widths[0]);
        for (i, cell) in c.iter().enumerate().skip(1) {
            let _ = write!(l, "  {cell:>w$}", w = widths[i]);
        }
        l.trim_end().to_string() + "\n"
    };
    let head: Vec<String> = head.iter().map(|c| c.to_string()).collect();
    let mut s = line(&head);
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(N));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// The sweep for the terminal.
pub fn text(outcome: &FilesOutcome) -> String {
    let mut s =
        String::from("\nFiles (issue 16; stripefs/btrfs = rate ratio, > 1: stripefs faster)\n");
    let r = match outcome {
        FilesOutcome::Skipped { reason } => return s + &format!("  skipped: {reason}\n"),
        FilesOutcome::Failed { error } => return s + &format!("  ERROR: {error}\n"),
        FilesOutcome::Measured(r) => r,
    };
    let _ = writeln!(s, "{}", heading(r));
    for (title, f) in fills(r) {
        let rows: Vec<_> = f.checkpoints.iter().map(curve_cells).collect();
        let _ = writeln!(s, "{title}:");
        s.push_str(&aligned(&CURVE_COLUMNS, &rows));
    }
    s.push_str(&aligned(&RATIO_COLUMNS, &ratio_cells(r)));
    s + &notes(r)
}

/// The sweep in Markdown (for BENCHMARKS.md).
pub fn markdown(outcome: &FilesOutcome) -> String {
    let r = match outcome {
        FilesOutcome::Skipped { reason } => return format!("#### files\n\nskipped: {reason}\n\n"),
        FilesOutcome::Failed { error } => return format!("#### files\n\nERROR: {error}\n\n"),
        FilesOutcome::Measured(r) => r,
    };
    let mut s = format!("#### files\n\n{}\n\n", heading(r));
    for (title, f) in fills(r) {
        let rows: Vec<_> = f.checkpoints.iter().map(curve_cells).collect();
        let _ = writeln!(s, "{title}:\n\n{}", table(&CURVE_COLUMNS, &rows));
    }
    s.push_str(&table(&RATIO_COLUMNS, &ratio_cells(r)));
    let notes = notes(r);
    if !notes.is_empty() {
        let _ = writeln!(s, "\n{}", notes.trim_end().replace('\n', "  \n"));
    }
    s.push('\n');
    s
}
