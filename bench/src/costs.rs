//! One-off costs: creating a buffer's pages, registering it against a multi-device volume,
//! and mapping it again after a migration (the `move_notify` path).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use stripefs_engine::Volume;
use stripefs_layout::StripeUnit;
use stripefs_mapping::Buffer;

use crate::devices::Target;
use crate::engines::open_devices;
use crate::workload::{Access, Workload};

/// Migrations measured (the median is reported).
const MIGRATIONS: usize = 3;

/// What registration and remapping cost.
#[derive(Clone, Debug, Serialize)]
pub struct Costs {
    pub kind: String,
    pub devices: usize,
    pub buffer_bytes: u64,
    /// Creating the buffer's pages (memfd, MAP_POPULATE), before any registration.
    pub page_creation_ms: f64,
    /// `Volume::register`: every device attaches (registers) the whole buffer.
    pub register_ms: f64,
    /// `Buffer::migrate`, whole (allocate new pages, invalidate and drain, copy).
    pub migrate_ms: f64,
    /// The part of a migration spent draining in-flight I/O and detaching.
    pub migrate_drain_ms: f64,
    /// The part spent copying the contents.
    pub migrate_copy_ms: f64,
    /// Mapping again after a migration (the first I/O's extra cost): attach on every device.
    pub remap_ms: f64,
    /// `Volume::unregister`.
    pub unregister_ms: f64,
}

/// The cost measurement, or why there is none.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CostsOutcome {
    Measured(Costs),
    /// Not possible here (not root): not an error.
    Skipped {
        reason: String,
    },
    Failed {
        error: String,
    },
}

/// Measures the costs on `target` with a buffer of `bytes`, unless the locked-memory limit
/// forbids registering it.
pub fn outcome(target: &Target, bytes: u64) -> CostsOutcome {
    let pinned = bytes.saturating_mul(target.count() as u64);
    if let Some(limit) = crate::stats::memlock_limit().filter(|&l| l < pinned) {
        return CostsOutcome::Skipped {
            reason: format!(
                "registering {bytes} bytes on {} devices needs more than RLIMIT_MEMLOCK ({limit} bytes): run as root",
                target.count()
            ),
        };
    }
    match measure(target, bytes) {
        Ok(c) => CostsOutcome::Measured(c),
        Err(e) => CostsOutcome::Failed {
            error: format!("{e:#}"),
        },
    }
}

/// Measures the costs on `target` with a buffer of `bytes`.
pub fn measure(target: &Target, bytes: u64) -> Result<Costs> {
    let w = Workload {
        access: Access::SeqRead,
        bs: 1 << 20,
        qd: 8,
    };
    let devices = open_devices(target, w)?;
    let unit = StripeUnit::new(w.bs).context("stripe unit")?;
    let volume = Volume::striped(devices, unit).context("building the volume")?;
    let t = Instant::now();
    let buffer = Buffer::new(bytes).context("allocating the buffer")?;
    let page_creation = t.elapsed();
    let t = Instant::now();
    let mapping = volume.register(&buffer).context("registering")?;
    let register = t.elapsed();
    volume
        .read(&mapping, 0, 0, w.bs)
        .context("a read after registering")?;
    let mut samples = Vec::with_capacity(MIGRATIONS);
    for _ in 0..MIGRATIONS {
        let report = buffer.migrate().context("migrating")?;
        let t = Instant::now();
        drop(mapping.acquire().context("mapping again")?);
        let remap = t.elapsed();
        volume
            .read(&mapping, 0, 0, w.bs)
            .context("a read after migrating")?;
        samples.push((report.total, report.drain, report.copy, remap));
    }
    let t = Instant::now();
    volume.unregister(&mapping).context("unregistering")?;
    let unregister = t.elapsed();
    let median = |f: fn(&(Duration, Duration, Duration, Duration)) -> Duration| {
        let mut v: Vec<Duration> = samples.iter().map(f).collect();
        v.sort();
        ms(v[v.len() / 2])
    };
    Ok(Costs {
        kind: target.kind.name().into(),
        devices: target.count(),
        buffer_bytes: bytes,
        page_creation_ms: ms(page_creation),
        register_ms: ms(register),
        migrate_ms: median(|s| s.0),
        migrate_drain_ms: median(|s| s.1),
        migrate_copy_ms: median(|s| s.2),
        remap_ms: median(|s| s.3),
        unregister_ms: ms(unregister),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
