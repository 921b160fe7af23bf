//! The results of a run: every engine's outcome on every point.

use serde::Serialize;

use crate::engines::{EngineId, Outcome};
use crate::stats::Measurement;
use crate::workload::Point;

/// One engine on one point.
#[derive(Clone, Debug, Serialize)]
pub struct EngineRun {
    pub engine: EngineId,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Every engine on one point.
#[derive(Clone, Debug, Serialize)]
pub struct PointResult {
    #[serde(flatten)]
    pub point: Point,
    /// Why the point was not run at all (its devices could not be made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub runs: Vec<EngineRun>,
    /// CPU seconds the hypervisor took from this machine while the point ran (all CPUs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stolen_seconds: Option<f64>,
    /// Wall seconds the point took (set-up included).
    pub wall_seconds: f64,
}

impl PointResult {
    /// The measurement of `engine`, if it ran.
    pub fn get(&self, engine: EngineId) -> Option<&Measurement> {
        self.runs
            .iter()
            .find(|r| r.engine == engine)
            .and_then(|r| r.outcome.measured())
    }

    /// Throughput of `a` over throughput of `b` (the same as the ratio of IOPS: same sizes).
    pub fn ratio(&self, a: EngineId, b: EngineId) -> Option<f64> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        (b.gbps() > 0.0).then(|| a.gbps() / b.gbps())
    }

    /// Errors of this point.
    pub fn failures(&self) -> impl Iterator<Item = (EngineId, &str)> {
        self.runs.iter().filter_map(|r| match &r.outcome {
            Outcome::Failed { error } => Some((r.engine, error.as_str())),
            _ => None,
        })
    }
}
