//! The targets of issue 5, each checked against this run's figures: pass, miss, or n/a when
//! the part it depends on is not built yet or the run did not measure it.

use serde::Serialize;

use crate::devices::Kind;
use crate::engines::EngineId;
use crate::results::PointResult;
use crate::workload::{Access, Sweep};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Miss,
    /// The part the target measures does not exist yet.
    NotBuilt,
    /// This run did not measure it (fio missing, --quick, filtered out…).
    NotMeasured,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "MISS",
            Verdict::NotBuilt => "n/a (not built yet)",
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
    checks.push(Check {
        target: T3,
        verdict: Verdict::NotBuilt,
        ratio: None,
        detail: "the FUSE mount does not exist yet".into(),
    });
    checks.push(Check {
        target: T4,
        verdict: Verdict::NotBuilt,
        ratio: None,
        detail: "the control endpoint does not exist yet".into(),
    });
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
