//! Output: the per-point tables printed while the run goes, the closing summary (one line per
//! point, the costs, the targets), the JSON document and the Markdown summary.

use std::fmt::Write;

use serde::Serialize;

use crate::costs::CostsOutcome;
use crate::engines::{EngineId, Outcome};
use crate::machine::Machine;
use crate::metadata::MetadataOutcome;
use crate::results::PointResult;
use crate::scale::FilesOutcome;
use crate::stats::Measurement;
use crate::targets::{Check, Verdict};
use crate::workload::Sweep;
use stripefs_engine::spec::format_size;

/// Settings that shape the figures.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub seconds_per_run: f64,
    /// Times each engine runs on each point (alternating the engine order).
    pub repeat: usize,
    pub device_size: u64,
    pub emu_size: u64,
    pub emu_bandwidth: u64,
    pub cost_buffer: u64,
    /// I/O buffers in 2 MiB huge pages (`--huge-pages`) rather than 4 KiB pages.
    pub huge_pages: bool,
}

/// Everything a run produced (the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub settings: Settings,
    pub points: Vec<PointResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub costs: Option<CostsOutcome>,
    pub targets: Vec<Check>,
    /// The metadata sweep, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataOutcome>,
    /// The files sweep, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesOutcome>,
    pub wall_seconds: f64,
    /// CPU seconds the hypervisor took from this machine during the run (all CPUs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stolen_seconds: Option<f64>,
}

/// "hypervisor took 12% of the CPU time", when it took any noticeable share.
pub fn stolen_note(stolen: Option<f64>, wall: f64, cpus: usize) -> Option<String> {
    let share = stolen? / (wall * cpus.max(1) as f64).max(1e-9);
    (share >= 0.01).then(|| {
        format!(
            "the hypervisor took {:.0}% of this machine's CPU time ({:.1} CPU s stolen in {:.1} s)",
            share * 100.0,
            stolen.unwrap_or(0.0),
            wall
        )
    })
}

const HEADER: &str =
    "  engine            GB/s       IOPS  cores  CPU s/GiB    p50 us    p99 us  stripefs/this";

/// The table of one point.
pub fn point_table(r: &PointResult, cpus: usize) -> String {
    let mut s = format!("{}\n", r.point.label());
    if let Some(note) = stolen_note(r.stolen_seconds, r.wall_seconds, cpus) {
        let _ = writeln!(s, "  ({note})");
    }
    if let Some(reason) = &r.skipped {
        let _ = writeln!(s, "  skipped: {reason}");
        return s;
    }
    s.push_str(HEADER);
    s.push('\n');
    let ours = r.get(EngineId::Stripefs);
    for run in &r.runs {
        let name = run.engine.name();
        let _ = match &run.outcome {
            Outcome::Measured(m) => {
                let _ = writeln!(s, "  {name:<14}{}{}", figures(m), vs(ours, m, run.engine));
                match &m.detail {
                    Some(d) if !d.thread_cpu.is_empty() => {
                        writeln!(s, "  {:<14}  {}", "", d.per_request(m.ops))
                    }
                    _ => Ok(()),
                }
            }
            Outcome::Unavailable { reason } => writeln!(s, "  {name:<14}  n/a: {reason}"),
            Outcome::Failed { error } => writeln!(s, "  {name:<14}  ERROR: {error}"),
        };
    }
    s
}

fn figures(m: &Measurement) -> String {
    format!(
        "{:>8.3} {:>10} {:>6.2} {:>10.3} {:>9.0} {:>9.0}",
        m.gbps(),
        count(m.iops()),
        m.cores(),
        m.cpu_per_gib(),
        m.p50_us,
        m.p99_us
    )
}

fn vs(ours: Option<&Measurement>, m: &Measurement, engine: EngineId) -> String {
    match ours {
        Some(o) if engine != EngineId::Stripefs && m.gbps() > 0.0 => {
            format!("  {:>12.2}", o.gbps() / m.gbps())
        }
        _ => String::new(),
    }
}

/// 1234567 -> "1.23M", 12345 -> "12.3k".
pub fn count(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn ratio(r: &PointResult, other: EngineId) -> String {
    r.ratio(EngineId::Stripefs, other)
        .map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

fn opt<T>(
    m: Option<&Measurement>,
    f: impl Fn(&Measurement) -> T,
    fmt: impl Fn(T) -> String,
) -> String {
    m.map_or_else(|| "-".into(), |m| fmt(f(m)))
}

/// One summary line per point: columns of [`SUMMARY_COLUMNS`].
fn summary_cells(r: &PointResult) -> Vec<String> {
    let (ours, fio) = (r.get(EngineId::Stripefs), r.get(EngineId::Fio));
    let gbps = |m: Option<&Measurement>| opt(m, Measurement::gbps, |v| format!("{v:.3}"));
    let random = r.point.workload.access == crate::workload::Access::RandRead;
    let headline = |m: Option<&Measurement>| {
        if random {
            opt(m, Measurement::iops, count)
        } else {
            gbps(m)
        }
    };
    vec![
        r.point.label(),
        headline(fio),
        headline(r.get(EngineId::Raw)),
        headline(ours),
        ratio(r, EngineId::Fio),
        ratio(r, EngineId::Raw),
        ratio(r, EngineId::Uring),
        ratio(r, EngineId::Pread),
        opt(fio, Measurement::cpu_per_gib, |v| format!("{v:.3}")),
        opt(ours, Measurement::cpu_per_gib, |v| format!("{v:.3}")),
        opt(fio, |m| m.p99_us, |v| format!("{v:.0}")),
        opt(ours, |m| m.p99_us, |v| format!("{v:.0}")),
    ]
}

const SUMMARY_COLUMNS: [&str; 12] = [
    "point",
    "fio",
    "raw",
    "stripefs",
    "/fio",
    "/raw",
    "/uring",
    "/pread",
    "cpu/GiB fio",
    "cpu/GiB sfs",
    "p99 fio",
    "p99 sfs",
];

/// One line per point with the file engines: columns of [`FILE_COLUMNS`].
fn file_cells(r: &PointResult) -> Vec<String> {
    let random = r.point.workload.access == crate::workload::Access::RandRead;
    let headline = |e: EngineId| {
        let m = r.get(e);
        if random {
            opt(m, Measurement::iops, count)
        } else {
            opt(m, Measurement::gbps, |v| format!("{v:.3}"))
        }
    };
    let over = |a: EngineId, b: EngineId| {
        r.ratio(a, b)
            .map_or_else(|| "-".into(), |x| format!("{x:.2}"))
    };
    let cpu = |e: EngineId| opt(r.get(e), Measurement::cpu_per_gib, |v| format!("{v:.3}"));
    let p99 = |e: EngineId| opt(r.get(e), |m| m.p99_us, |v| format!("{v:.0}"));
    let (fuse, file, xproc) = (
        EngineId::Fuse,
        EngineId::StripefsFile,
        EngineId::CrossProcess,
    );
    vec![
        r.point.label(),
        headline(fuse),
        headline(file),
        headline(xproc),
        headline(EngineId::Stripefs),
        over(file, fuse),
        over(xproc, file),
        over(file, EngineId::Stripefs),
        cpu(fuse),
        cpu(file),
        cpu(xproc),
        p99(fuse),
        p99(file),
        p99(xproc),
    ]
}

const FILE_COLUMNS: [&str; 14] = [
    "point",
    "fuse",
    "sfs-file",
    "xproc",
    "stripefs",
    "file/fuse",
    "xproc/file",
    "file/sfs",
    "cpu/GiB fuse",
    "cpu/GiB file",
    "cpu/GiB xproc",
    "p99 fuse",
    "p99 file",
    "p99 xproc",
];

/// Points where the file engines ran.
fn file_points(points: &[PointResult]) -> impl Iterator<Item = &PointResult> {
    points.iter().filter(|r| {
        r.skipped.is_none()
            && r.runs
                .iter()
                .any(|run| run.engine.uses_files() && run.outcome.measured().is_some())
    })
}

/// `rows` under `columns`, aligned: the first column to the left, the others to the right.
fn aligned(columns: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([columns[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = if i == 0 {
                write!(l, "{c:<w$}", w = widths[i])
            } else {
                write!(l, "  {c:>w$}", w = widths[i])
            };
        }
        l
    };
    let head: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let mut s = String::new();
    let _ = writeln!(s, "{}", line(&head));
    for r in rows {
        let _ = writeln!(s, "{}", line(r));
    }
    s
}

/// The closing summary for the terminal.
pub fn summary(report: &Report) -> String {
    let mut s = String::new();
    let rows: Vec<Vec<String>> = report
        .points
        .iter()
        .filter(|r| r.skipped.is_none())
        .map(summary_cells)
        .collect();
    if !rows.is_empty() {
        s.push_str(
            "\nSummary (GB/s; IOPS for random reads; /X = stripefs over X; CPU s per GiB; p99 in us)\n",
        );
        s.push_str(&aligned(&SUMMARY_COLUMNS, &rows));
    }
    let rows: Vec<Vec<String>> = file_points(&report.points).map(file_cells).collect();
    if !rows.is_empty() {
        s.push_str(
            "\nThe file of a stripefs on the same devices: through FUSE (fuse), registered in-process\n(sfs-file), registered from another process (xproc); stripefs = the striped devices\nwithout the filesystem. a/b = throughput of a over b; xproc CPU = client + daemon.\n",
        );
        s.push_str(&aligned(&FILE_COLUMNS, &rows));
    }
    s.push_str(&costs_text(report));
    if let Some(m) = &report.metadata {
        s.push_str(&crate::metadata::text(m));
    }
    if let Some(f) = &report.files {
        s.push_str(&crate::scale::text(f));
    }
    s.push_str(&targets_text(&report.targets));
    s.push_str(&stolen_text(report));
    s
}

fn stolen_text(report: &Report) -> String {
    let cpus = report.machine.cpus;
    let mut s = match stolen_note(report.stolen_seconds, report.wall_seconds, cpus) {
        Some(note) => format!("\nDuring the run, {note}.\n"),
        None => return String::new(),
    };
    let noisy: Vec<String> = report
        .points
        .iter()
        .filter_map(|r| {
            let share = r.stolen_seconds? / (r.wall_seconds * cpus.max(1) as f64).max(1e-9);
            (share >= 0.05).then(|| format!("{} ({:.0}%)", r.point.label(), share * 100.0))
        })
        .collect();
    if !noisy.is_empty() {
        let _ = writeln!(s, "Points that lost 5% or more: {}", noisy.join(", "));
    }
    s
}

fn costs_text(report: &Report) -> String {
    let mut s = String::new();
    let c = match &report.costs {
        None => return s,
        Some(CostsOutcome::Skipped { reason }) => {
            let _ = writeln!(s, "\nRegistration costs: skipped: {reason}");
            return s;
        }
        Some(CostsOutcome::Failed { error }) => {
            let _ = writeln!(s, "\nRegistration costs: ERROR: {error}");
            return s;
        }
        Some(CostsOutcome::Measured(c)) => c,
    };
    {
        let _ = writeln!(
            s,
            "\nRegistration ({} buffer against {} {} devices): pages created in {:.1} ms, registered in {:.1} ms, unregistered in {:.1} ms",
            format_size(c.buffer_bytes),
            c.devices,
            c.kind,
            c.page_creation_ms,
            c.register_ms,
            c.unregister_ms
        );
        let _ = writeln!(
            s,
            "Migration (median of 3): migrate {:.1} ms (drain {:.2} ms, copy {:.1} ms); remap on next I/O {:.2} ms",
            c.migrate_ms, c.migrate_drain_ms, c.migrate_copy_ms, c.remap_ms
        );
    }
    s
}

fn targets_text(checks: &[Check]) -> String {
    let mut s = String::from("\nTargets (issue 5)\n");
    for c in checks {
        let ratio = c.ratio.map_or_else(String::new, |r| format!(" {r:.3}x"));
        let _ = writeln!(
            s,
            "  [{}]{ratio}  {} -- {}",
            c.verdict.word(),
            c.target,
            c.detail
        );
    }
    s
}

/// The Markdown summary (for BENCHMARKS.md).
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let m = &report.machine;
    let _ = writeln!(
        s,
        "Machine: {}\n\nCommand: `{}`\n",
        m.summary(),
        report.command
    );
    for sweep in [
        Sweep::Scaling,
        Sweep::QueueDepth,
        Sweep::Random,
        Sweep::Write,
        Sweep::EmuScaling,
        Sweep::EmuMem,
    ] {
        let rows: Vec<Vec<String>> = report
            .points
            .iter()
            .filter(|r| r.point.sweep == sweep && r.skipped.is_none())
            .map(summary_cells)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "#### {}\n", sweep.name());
        let _ = writeln!(s, "| {} |", SUMMARY_COLUMNS.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(SUMMARY_COLUMNS.len()));
        for r in rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s.push('\n');
    }
    let rows: Vec<Vec<String>> = file_points(&report.points).map(file_cells).collect();
    if !rows.is_empty() {
        let _ = writeln!(
            s,
            "#### the file: fuse, registered in-process, cross-process\n"
        );
        let _ = writeln!(s, "| {} |", FILE_COLUMNS.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(FILE_COLUMNS.len()));
        for r in rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s.push('\n');
    }
    if let Some(m) = &report.metadata {
        s.push_str(&crate::metadata::markdown(m));
    }
    if let Some(f) = &report.files {
        s.push_str(&crate::scale::markdown(f));
    }
    s.push_str("```\n");
    s.push_str(costs_text(report).trim_start());
    s.push_str(&targets_text(&report.targets));
    s.push_str(&stolen_text(report));
    s.push_str("```\n");
    s
}

/// Whether any target check is a miss (for the closing line).
pub fn misses(checks: &[Check]) -> usize {
    checks.iter().filter(|c| c.verdict == Verdict::Miss).count()
}
