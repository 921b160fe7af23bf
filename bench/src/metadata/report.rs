//! The metadata sweep's table: seconds per phase on each filesystem, the ratio stripefs over
//! btrfs (throughput: > 1 is faster), and the goal of issue 11 for that phase.

use std::fmt::Write;

use stripefs_engine::spec::format_size;

use super::phases::Times;
use super::{FsOutcome, MetadataOutcome, MetadataResult};
use crate::mounts::FsKind;

/// One row: a name, what it measures of [`Times`], whether it moves bytes of the large file
/// (then GB/s are shown too), and the goal.
struct Row {
    name: &'static str,
    seconds: fn(&Times) -> f64,
    big_file: bool,
    goal: Option<f64>,
}

const ROWS: [Row; 7] = [
    Row {
        name: "untar + sync",
        seconds: |t| t.untar + t.untar_sync,
        big_file: false,
        goal: Some(0.8),
    },
    Row {
        name: "  tar until it exits",
        seconds: |t| t.untar,
        big_file: false,
        goal: None,
    },
    Row {
        name: "find + du (cold)",
        seconds: |t| t.find_du,
        big_file: false,
        goal: Some(0.5),
    },
    Row {
        name: "lstat of every entry",
        seconds: |t| t.stat,
        big_file: false,
        goal: None,
    },
    Row {
        name: "rm -rf + sync",
        seconds: |t| t.rm,
        big_file: false,
        goal: Some(0.8),
    },
    Row {
        name: "cp in + sync",
        seconds: |t| t.cp,
        big_file: true,
        goal: Some(0.95),
    },
    Row {
        name: "cat (cold)",
        seconds: |t| t.cat,
        big_file: true,
        goal: Some(0.95),
    },
];

const COLUMNS: [&str; 5] = ["phase", "stripefs", "btrfs raid0", "stripefs/btrfs", "goal"];

/// The cells of every row.
fn cells(r: &MetadataResult) -> Vec<[String; 5]> {
    let (ours, theirs) = (r.times(FsKind::Stripefs), r.times(FsKind::Btrfs));
    let bytes = r.scale.big_file as f64;
    ROWS.iter()
        .map(|row| {
            let show = |t: Option<&Times>| match t {
                None => "-".to_string(),
                Some(t) if row.big_file => {
                    let s = (row.seconds)(t);
                    format!("{s:.3} s ({:.2} GB/s)", bytes / s.max(1e-9) / 1e9)
                }
                Some(t) => format!("{:.3} s", (row.seconds)(t)),
            };
            let ratio = ours
                .zip(theirs)
                .map(|(o, t)| (row.seconds)(t) / (row.seconds)(o).max(1e-9));
            let goal = match (row.goal, ratio) {
                (None, _) => String::new(),
                (Some(g), None) => format!(">= {g} (n/a)"),
                (Some(g), Some(x)) if x >= g => format!(">= {g} pass"),
                (Some(g), Some(_)) => format!(">= {g} MISS"),
            };
            [
                row.name.to_string(),
                show(ours),
                show(theirs),
                ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                goal,
            ]
        })
        .collect()
}

/// What was measured on what, in one line.
fn heading(r: &MetadataResult) -> String {
    format!(
        "{} RAM-backed loop devices of {}; a tree of {} entries ({} directories, {} files, {}); a {} file",
        r.scale.devices,
        format_size(r.scale.device_size),
        r.tree.entries,
        r.tree.dirs,
        r.tree.files,
        format_size(r.tree.bytes),
        format_size(r.scale.big_file)
    )
}

/// Notes under the table: the machine's load, baselines that did not run, failures.
fn notes(r: &MetadataResult) -> String {
    let mut s = String::new();
    if let Some((before, after)) = r.load {
        let _ = writeln!(
            s,
            "load average (1 min) {before:.2} before, {after:.2} after, on {} CPUs",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    for run in &r.runs {
        let _ = match &run.outcome {
            FsOutcome::Measured(_) => Ok(()),
            FsOutcome::Unavailable { reason } => writeln!(s, "{}: n/a: {reason}", run.fs.name()),
            FsOutcome::Failed { error } => writeln!(s, "{}: ERROR: {error}", run.fs.name()),
        };
    }
    s
}

/// The sweep for the terminal.
pub fn text(outcome: &MetadataOutcome) -> String {
    let mut s = String::from(
        "\nMetadata (issue 11; stripefs/btrfs = throughput ratio, > 1: stripefs faster)\n",
    );
    let r = match outcome {
        MetadataOutcome::Skipped { reason } => return s + &format!("  skipped: {reason}\n"),
        MetadataOutcome::Failed { error } => return s + &format!("  ERROR: {error}\n"),
        MetadataOutcome::Measured(r) => r,
    };
    let _ = writeln!(s, "{}", heading(r));
    let rows = cells(r);
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            rows.iter()
                .map(|c| c[i].len())
                .chain([COLUMNS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: &[String]| {
        let mut l = format!("  {:<w$}", c[0], w = widths[0]);
        for (i, cell) in c.iter().enumerate().skip(1) {
            let _ = write!(l, "  {cell:>w$}", w = widths[i]);
        }
        l.trim_end().to_string()
    };
    let head: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    let _ = writeln!(s, "{}", line(&head));
    for row in &rows {
        let _ = writeln!(s, "{}", line(row));
    }
    s + &notes(r)
}

/// The sweep in Markdown (for BENCHMARKS.md).
pub fn markdown(outcome: &MetadataOutcome) -> String {
    let r = match outcome {
        MetadataOutcome::Skipped { reason } => {
            return format!("#### metadata\n\nskipped: {reason}\n\n");
        }
        MetadataOutcome::Failed { error } => return format!("#### metadata\n\nERROR: {error}\n\n"),
        MetadataOutcome::Measured(r) => r,
    };
    let mut s = format!("#### metadata\n\n{}\n\n", heading(r));
    let _ = writeln!(s, "| {} |", COLUMNS.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(COLUMNS.len()));
    for row in cells(r) {
        let _ = writeln!(s, "| {} |", row.join(" | ").replace("  ", "&nbsp;&nbsp;"));
    }
    let notes = notes(r);
    if !notes.is_empty() {
        let _ = writeln!(s, "\n{notes}");
    }
    s.push('\n');
    s
}
