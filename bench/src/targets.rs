//! The targets of issue 5, each checked against this run's figures: pass, miss, or n/a when
//! the run did not measure it.

use serde::Serialize;

use crate::devices::Kind;
use crate::engines::EngineId;
use crate::results::PointResult;
use crate::stats::Measurement;
use crate::workload::{Access, Sweep};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Miss,
    /// This run did not measure it (fio missing, no root for FUSE, filtered out…).
    NotMeasured,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "MISS",
            Verdict::NotMeasured => "n/a (not measured)",
        }
    }
}

/// One target on one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub target: &'static str,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    pub detail: String,
}

const T1: &str = "registered sequential read >= 0.95 x fio";
const T2: &str = "registered 4K random read IOPS per core >= 0.9 x fio";
const T3: &str = "registered reads >= 2 x the FUSE read path";
const T4: &str = "cross-process registered reads >= 0.9 x in-process (128K, QD32)";
const T5: &str = "capped emulated NVMe: 8 devices >= 7.2 x 1 device";

/// Checks every target.
pub fn evaluate(results: &[PointResult]) -> Vec<Check> {
    let mut checks = sequential(results);
    checks.extend(random(results));
    checks.extend(versus_fuse(results));
    checks.extend(cross_process(results));
    checks.push(scaling(results));
    checks
}

fn judge(target: &'static str, ratio: Option<f64>, bar: f64, detail: String) -> Check {
    let verdict = match ratio {
        Some(r) if r >= bar => Verdict::Pass,
        Some(_) => Verdict::Miss,
        None => Verdict::NotMeasured,
    };
    Check {
        target,
        verdict,
        ratio,
        detail,
    }
}

/// The widest point (at most 4 devices) of each block-device kind in `sweep`, filtered.
fn headline(
    results: &[PointResult],
    sweep: Sweep,
    keep: impl Fn(&PointResult) -> bool,
) -> Vec<&PointResult> {
    let mut picked: Vec<&PointResult> = Vec::new();
    for r in results.iter().filter(|r| r.point.sweep == sweep && keep(r)) {
        let kind = r.point.kind;
        match picked.iter_mut().find(|p| p.point.kind == kind) {
            Some(p) if r.point.devices <= 4 && r.point.devices > p.point.devices => *p = r,
            Some(_) => {}
            None => picked.push(r),
        }
    }
    picked
}

fn sequential(results: &[PointResult]) -> Vec<Check> {
    let points = headline(results, Sweep::Scaling, |r| r.point.kind.has_paths());
    if points.is_empty() {
        return vec![judge(T1, None, 0.95, "no sequential-read point ran".into())];
    }
    points
        .into_iter()
        .map(|r| {
            let ratio = r.ratio(EngineId::Stripefs, EngineId::Fio);
            let detail = match (r.get(EngineId::Stripefs), r.get(EngineId::Fio)) {
                (Some(s), Some(f)) => format!(
                    "{}: stripefs {:.3} GB/s, fio {:.3} GB/s",
                    r.point.label(),
                    s.gbps(),
                    f.gbps()
                ),
                _ => format!("{}: stripefs or fio did not run", r.point.label()),
            };
            judge(T1, ratio, 0.95, detail)
        })
        .collect()
}

fn random(results: &[PointResult]) -> Vec<Check> {
    let points = headline(results, Sweep::Random, |r| {
        r.point.workload.access == Access::RandRead && r.point.workload.qd == 32
    });
    if points.is_empty() {
        return vec![judge(
            T2,
            None,
            0.9,
            "no random-read point at QD32 ran".into(),
        )];
    }
    points
        .into_iter()
        .map(|r| match (r.get(EngineId::Stripefs), r.get(EngineId::Fio)) {
            (Some(s), Some(f)) => {
                let ratio = s.iops_per_core() / f.iops_per_core().max(1e-9);
                let detail = format!(
                    "{}: stripefs {:.0} IOPS on {:.2} cores = {:.0}/core; fio {:.0} IOPS on {:.2} cores = {:.0}/core",
                    r.point.label(),
                    s.iops(),
                    s.cores(),
                    s.iops_per_core(),
                    f.iops(),
                    f.cores(),
                    f.iops_per_core()
                );
                judge(T2, Some(ratio), 0.9, detail)
            }
            _ => judge(
                T2,
                None,
                0.9,
                format!("{}: stripefs or fio did not run", r.point.label()),
            ),
        })
        .collect()
}

/// "GB/s" for sequential points, "IOPS" for random ones.
fn throughput(r: &PointResult, m: &Measurement) -> String {
    if r.point.workload.access == Access::RandRead {
        format!("{} IOPS", crate::report::count(m.iops()))
    } else {
        format!("{:.3} GB/s", m.gbps())
    }
}

/// Registered reads of the file against reads through the FUSE mount: throughput where the
/// devices are not disk-bound, CPU seconds per GiB where the disk is the bottleneck (both
/// read at the disk's speed there; see DESIGN.md, "Performance ground truth").
fn versus_fuse(results: &[PointResult]) -> Vec<Check> {
    let headline = |r: &&PointResult| {
        let qd = r.point.workload.qd;
        r.point.files
            && match r.point.sweep {
                Sweep::Scaling | Sweep::EmuMem => true,
                Sweep::Random | Sweep::QueueDepth => qd == 32,
                Sweep::Write | Sweep::EmuScaling | Sweep::Metadata | Sweep::Files => false,
            }
    };
    let points: Vec<&PointResult> = results.iter().filter(headline).collect();
    if points.is_empty() {
        return vec![judge(
            T3,
            None,
            2.0,
            "no point with the file engines ran".into(),
        )];
    }
    points
        .into_iter()
        .map(|r| {
            let label = r.point.label();
            let (Some(reg), Some(fuse)) = (r.get(EngineId::StripefsFile), r.get(EngineId::Fuse))
            else {
                return judge(
                    T3,
                    None,
                    2.0,
                    format!("{label}: stripefs-file or fuse did not run"),
                );
            };
            if r.point.kind.disk_bound() {
                let ratio = fuse.cpu_per_gib() / reg.cpu_per_gib().max(1e-12);
                let detail = format!(
                    "{label}: CPU per GiB (disk-bound): fuse {:.3} s, registered {:.3} s; throughput fuse {}, registered {}",
                    fuse.cpu_per_gib(),
                    reg.cpu_per_gib(),
                    throughput(r, fuse),
                    throughput(r, reg)
                );
                judge(T3, Some(ratio), 2.0, detail)
            } else {
                let ratio = reg.gbps() / fuse.gbps().max(1e-12);
                let detail = format!(
                    "{label}: throughput registered {}, fuse {}; CPU per GiB registered {:.3} s, fuse {:.3} s",
                    throughput(r, reg),
                    throughput(r, fuse),
                    reg.cpu_per_gib(),
                    fuse.cpu_per_gib()
                );
                judge(T3, Some(ratio), 2.0, detail)
            }
        })
        .collect()
}

/// Registered reads of the file from another process against the same in-process, at 128 KiB
/// and QD 32 per device.
fn cross_process(results: &[PointResult]) -> Vec<Check> {
    let points: Vec<&PointResult> = results
        .iter()
        .filter(|r| {
            let w = r.point.workload;
            r.point.files && w.access == Access::SeqRead && w.bs == 128 << 10 && w.qd == 32
        })
        .collect();
    if points.is_empty() {
        return vec![judge(
            T4,
            None,
            0.9,
            "no file point at 128K QD32 ran".into(),
        )];
    }
    points
        .into_iter()
        .map(|r| {
            let label = r.point.label();
            let (Some(x), Some(inp)) = (
                r.get(EngineId::CrossProcess),
                r.get(EngineId::StripefsFile),
            ) else {
                return judge(
                    T4,
                    None,
                    0.9,
                    format!("{label}: cross-process or stripefs-file did not run"),
                );
            };
            let mut detail = format!(
                "{label}: cross-process {:.3} GB/s ({:.3} CPU s/GiB, client + daemon), in-process {:.3} GB/s ({:.3} CPU s/GiB)",
                x.gbps(),
                x.cpu_per_gib(),
                inp.gbps(),
                inp.cpu_per_gib()
            );
            if let Some(v) = r.get(EngineId::Stripefs) {
                detail.push_str(&format!(
                    "; striped devices without the filesystem {:.3} GB/s",
                    v.gbps()
                ));
            }
            judge(T4, Some(x.gbps() / inp.gbps().max(1e-12)), 0.9, detail)
        })
        .collect()
}

fn scaling(results: &[PointResult]) -> Check {
    let at = |n| {
        results
            .iter()
            .find(|r| r.point.kind == Kind::EmuCapped && r.point.devices == n)
            .and_then(|r| r.get(EngineId::Stripefs))
    };
    match (at(1), at(8)) {
        (Some(one), Some(eight)) => {
            let ratio = eight.gbps() / one.gbps().max(1e-12);
            let detail = format!(
                "1 device {:.3} GB/s, 8 devices {:.3} GB/s",
                one.gbps(),
                eight.gbps()
            );
            judge(T5, Some(ratio), 7.2, detail)
        }
        _ => judge(
            T5,
            None,
            7.2,
            "the 1- and 8-device capped points did not both run".into(),
        ),
    }
}
