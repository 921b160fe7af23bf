//! The engines measured on each point: the limit (fio, our raw reader), the baselines
//! (O_DIRECT pread, io_uring without fixed buffers, reads through the FUSE mount), and
//! stripefs registered reads (of the striped devices, of a file in-process, and of the file
//! from another process through the control endpoint). Every engine runs the same workload
//! on the same devices for the same time and reports the same figures.

mod closed_loop;
mod file;
pub(crate) mod files;
mod fio;
mod fuse;
mod pread;
mod stripefs;
mod uring;
pub(crate) mod xproc;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::devices::{Kind, Target};
use crate::stats::Measurement;
use crate::workload::Workload;

pub use files::Filesystems;
pub use fio::fio_version;
pub(crate) use stripefs::open_devices;

/// An engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineId {
    /// fio, io_uring engine, direct, fixed buffers, registered files: the limit.
    Fio,
    /// Our raw reader: io_uring READ_FIXED straight on the devices, one thread.
    Raw,
    /// io_uring READ without fixed buffers (O_DIRECT, no registration), one thread.
    Uring,
    /// O_DIRECT pread/pwrite from a pool of threads.
    Pread,
    /// stripefs registered reads through Volume + IoContext, one submitting thread.
    Stripefs,
    /// stripefs registered reads, completions collected by spinning (IoContext::poll).
    StripefsPoll,
    /// Buffered reads of a file through the FUSE mount, cold cache.
    Fuse,
    /// stripefs registered reads of the same file, in-process (Filesystem::submit_read).
    StripefsFile,
    /// stripefs registered reads of the same file from another process through the control
    /// endpoint.
    CrossProcess,
}

impl EngineId {
    /// Every engine, in table order.
    pub const ALL: [EngineId; 9] = [
        EngineId::Fio,
        EngineId::Raw,
        EngineId::Uring,
        EngineId::Pread,
        EngineId::Stripefs,
        EngineId::StripefsPoll,
        EngineId::Fuse,
        EngineId::StripefsFile,
        EngineId::CrossProcess,
    ];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            EngineId::Fio => "fio",
            EngineId::Raw => "raw",
            EngineId::Uring => "uring",
            EngineId::Pread => "pread",
            EngineId::Stripefs => "stripefs",
            EngineId::StripefsPoll => "stripefs-poll",
            EngineId::Fuse => "fuse",
            EngineId::StripefsFile => "stripefs-file",
            EngineId::CrossProcess => "cross-process",
        }
    }

    /// Whether the engine reads the file of a stripefs made on the devices (so it runs only
    /// on the points the plan marks, and needs the devices to itself).
    pub fn uses_files(self) -> bool {
        matches!(
            self,
            EngineId::Fuse | EngineId::StripefsFile | EngineId::CrossProcess
        )
    }

    /// Whether the engine takes part on devices of `kind`: path-based engines need paths;
    /// the stripefs engines run everywhere.
    pub fn runs_on(self, kind: Kind) -> bool {
        match self {
            EngineId::Fio | EngineId::Raw | EngineId::Uring | EngineId::Pread => kind.has_paths(),
            _ => true,
        }
    }

    /// Whether this engine is the limit or a baseline that stripefs is compared with.
    pub fn is_reference(self) -> bool {
        !matches!(
            self,
            EngineId::Stripefs
                | EngineId::StripefsPoll
                | EngineId::StripefsFile
                | EngineId::CrossProcess
        )
    }
}

/// What to run: a workload on a target, for a time.
#[derive(Clone, Debug)]
pub struct RunSpec<'a> {
    pub target: &'a Target,
    pub workload: Workload,
    pub duration: Duration,
}

impl RunSpec<'_> {
    /// Bytes of each device the workload covers (whole requests only).
    pub fn region(&self) -> u64 {
        let bs = self.workload.bs;
        self.target.device_size / bs * bs
    }

    /// Requests in flight in all (per-device depth times devices).
    pub fn total_depth(&self) -> usize {
        self.workload.qd as usize * self.target.count()
    }
}

/// The outcome of one engine on one point.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    Measured(Measurement),
    /// The engine cannot run here (not built yet, tool missing…): not an error.
    Unavailable {
        reason: String,
    },
    /// The engine ran and failed: an error of the run.
    Failed {
        error: String,
    },
}

impl Outcome {
    /// The measurement, if there is one.
    pub fn measured(&self) -> Option<&Measurement> {
        match self {
            Outcome::Measured(m) => Some(m),
            _ => None,
        }
    }
}

/// Runs `engine` on `spec`; the file engines use (and make) the filesystem in `files`.
pub fn run(engine: EngineId, spec: &RunSpec<'_>, files: &mut Filesystems) -> Outcome {
    let result = match engine {
        EngineId::Fio => fio::run(spec),
        EngineId::Raw => uring::run(spec, true),
        EngineId::Uring => uring::run(spec, false),
        EngineId::Pread => pread::run(spec),
        EngineId::Stripefs => stripefs::run(spec, false),
        EngineId::StripefsPoll => stripefs::run(spec, true),
        EngineId::Fuse => fuse::run(spec, files),
        EngineId::StripefsFile => file::run(spec, files),
        EngineId::CrossProcess => xproc::run(spec, files),
    };
    match result {
        Ok(Ok(m)) => Outcome::Measured(m),
        Ok(Err(reason)) => Outcome::Unavailable { reason },
        Err(e) => Outcome::Failed {
            error: format!("{e:#}"),
        },
    }
}

/// What an engine returns: a measurement, a reason it cannot run here, or an error.
pub(crate) type EngineResult = anyhow::Result<Result<Measurement, String>>;

/// Most buffer memory an engine uses; requests beyond it share memory (their data is never
/// looked at).
const BUFFER_CAP: u64 = 256 << 20;

/// The buffer area for `depth` requests of `bs` bytes, registered `registrations` times (once
/// per ring). Without root, io_uring counts every registration against RLIMIT_MEMLOCK, so the
/// area shrinks to fit; Err says why it cannot fit at all.
pub(crate) fn buffer_area(depth: usize, bs: u64, registrations: usize) -> Result<u64, String> {
    let limit = crate::stats::memlock_limit().filter(|_| registrations > 0);
    let cap = limit.map_or(BUFFER_CAP, |l| {
        (l / (registrations as u64 + 1)).min(BUFFER_CAP)
    });
    let area = (depth as u64 * bs).min(cap / bs * bs);
    match limit {
        Some(l) if area < bs => Err(format!(
            "registering {bs} bytes on {registrations} ring(s) exceeds RLIMIT_MEMLOCK ({l} bytes): run as root"
        )),
        _ => Ok(area.max(bs)),
    }
}

/// Commands `devices` have run so far (reads, writes and failures).
pub(crate) fn commands_run(devices: &[stripefs_engine::DeviceQueue]) -> u64 {
    devices
        .iter()
        .map(|d| {
            let s = d.stats();
            s.reads + s.writes + s.errors
        })
        .sum()
}

/// The registered buffer of a stripefs engine: 4 KiB pages, or huge pages with
/// `--huge-pages`.
pub(crate) fn io_buffer(len: u64) -> anyhow::Result<stripefs_mapping::Buffer> {
    let options = stripefs_mapping::BufferOptions {
        huge_pages: crate::memory::huge_pages(),
    };
    anyhow::Context::context(
        stripefs_mapping::Buffer::with_options(len, options),
        "allocating the buffer",
    )
}

/// When the measured window ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    pub fn after(duration: Duration) -> Deadline {
        Deadline(Instant::now() + duration)
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}
