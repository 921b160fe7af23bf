//! `stripefs bench`: registered I/O measured against the limit of the devices (fio and our
//! own raw reader, in the same run, on the same devices) and against the baselines a user
//! would otherwise use (O_DIRECT pread, io_uring without fixed buffers, FUSE reads).
//!
//! Modules: `devices` makes scratch devices, `workload` plans the points, `engines` runs
//! each engine on a point, `stats` measures, `costs` times registration and remapping,
//! `targets` checks the goals of issue 5, `metadata` runs the metadata sweep against btrfs
//! (issue 11), `scale` the files sweep (issue 16), both on `mounts`, `report` and `plot` write the results; `loaders` runs the loading benchmark
//! of the Python package (`--loaders`).

mod costs;
mod devices;
mod engines;
mod loaders;
mod machine;
mod memory;
mod metadata;
mod mounts;
mod plot;
mod progress;
mod report;
mod results;
mod scale;
mod signal;
mod stats;
mod targets;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use devices::Kind;
pub use engines::EngineId;
pub use workload::Sweep;

use devices::{Lab, LabSettings, Target};
use engines::{Filesystems, Outcome, RunSpec};
use progress::Progress;
use report::{Report, Settings};
use results::{EngineRun, PointResult};
use workload::{Access, Point};

/// Settings of `stripefs bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A smoke test of a few seconds (for CI): few points, two devices, short runs. Speed is
    /// reported, never judged: the exit status is non-zero only if something fails.
    #[arg(long)]
    pub quick: bool,
    /// Seconds of each run of an engine on a point [default: 0.8, or 0.2 with --quick].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Runs of each engine on each point, in alternating order (engines forward, then
    /// backward…) so that drift of the shared disk hits every engine alike; the figures add
    /// them up [default: 2, or 1 with --quick].
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Device counts of the scaling curves.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub counts: Vec<usize>,
    /// Size of each scratch device (files, loop devices) [default: 256M, or 32M with --quick].
    #[arg(long, value_parser = parse_size)]
    pub device_size: Option<u64>,
    /// Size of each emulated NVMe namespace (memory) [default: 64M, or 16M with --quick].
    #[arg(long, value_parser = parse_size)]
    pub emu_size: Option<u64>,
    /// Bandwidth cap of each capped emulated namespace, in bytes per second.
    #[arg(long, default_value = "200M", value_parser = parse_size)]
    pub emu_bw: u64,
    /// Buffer registered to time registration and remapping [default: 1G, or 64M with --quick].
    #[arg(long, value_parser = parse_size)]
    pub cost_buffer: Option<u64>,
    /// Where the scratch files go (needs O_DIRECT: not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Only these kinds of devices.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<Kind>,
    /// Only these engines.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub engines: Vec<EngineId>,
    /// Only these sweeps (curves) of the plan.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub sweeps: Vec<Sweep>,
    /// Only points with these queue depths (per device).
    #[arg(long, value_delimiter = ',')]
    pub queue_depths: Vec<u32>,
    /// Skip timing registration and remapping.
    #[arg(long)]
    pub no_costs: bool,

    /// Put every engine's I/O buffers in 2 MiB huge pages (fio: --iomem=shmhuge): reserves
    /// huge pages for the run (root) and gives them back at the end. Physically contiguous
    /// buffers let the block layer build (and merge) larger device requests.
    #[arg(long)]
    pub huge_pages: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write SVG plots into this directory.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Write the summary as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Run only the loading benchmark: `python/bench.py` times the Python package loading a
    /// 1 GiB file and a multi-tensor safetensors file on a scratch mount, against the Rust
    /// client, `numpy.fromfile` and `safetensors.numpy.load_file` on the same files
    /// (needs `pip install ./python numpy safetensors`, root and FUSE).
    #[arg(long)]
    pub loaders: bool,
    /// The loading benchmark's script [default: python/bench.py of this source tree].
    #[arg(long, value_name = "PATH")]
    pub loaders_script: Option<PathBuf>,
    /// Internal: the Rust client's side of the loading benchmark (read these files whole).
    #[arg(long, hide = true, value_name = "FILE", num_args = 1..)]
    pub rust_load: Vec<PathBuf>,
    /// Internal: run as the client process of the cross-process engine (a JSON spec).
    #[arg(long, hide = true, value_name = "SPEC")]
    pub cross_process_client: Option<String>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    stripefs_engine::spec::parse_size(s).map_err(|e| e.to_string())
}

/// Huge pages reserved with `--huge-pages`: room for the largest buffers of every engine
/// (fio: queue depth x block size per job, up to 8 jobs).
const HUGE_RESERVATION: u64 = 2 << 30;

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(spec) = &args.cross_process_client {
        return engines::xproc::client_main(spec);
    }
    if !args.rust_load.is_empty() {
        return loaders::rust_load(&args.rust_load);
    }
    if args.loaders {
        return loaders::run_script(args);
    }
    signal::install();
    let started = Instant::now();
    let stolen = machine::stolen_seconds();
    let settings = settings(args)?;
    let _huge = if args.huge_pages {
        let reservation = memory::HugePageReservation::reserve(HUGE_RESERVATION)?;
        println!(
            "I/O buffers: 2 MiB huge pages ({} reserved for the run)",
            stripefs_engine::spec::format_size(HUGE_RESERVATION)
        );
        Some(reservation)
    } else {
        None
    };
    check_required(args)?;
    let machine = machine::Machine::probe();
    println!("{}", machine.summary());
    if machine.fio.is_none() {
        println!("fio is not installed: the fio limit is skipped (apt-get install -y fio)");
    }
    let (points, disk) = plan(args);
    let lab = make_lab(args, &settings, &points)?;
    let engines: Vec<EngineId> = EngineId::ALL
        .into_iter()
        .filter(|e| args.engines.is_empty() || args.engines.contains(e))
        .collect();
    let results = measure_all(&lab, &points, &engines, &settings);
    let costs = measure_costs(args, &lab, disk, &settings);
    drop(lab);
    let metadata = measure_metadata(args);
    let files = measure_files(args);
    let report = Report {
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        targets: targets::evaluate(&results),
        settings,
        points: results,
        costs,
        metadata,
        files,
        wall_seconds: started.elapsed().as_secs_f64(),
        stolen_seconds: stolen.zip(machine::stolen_seconds()).map(|(a, b)| b - a),
    };
    print!("{}", report::summary(&report));
    write_outputs(args, &report)?;
    println!("finished in {:.1} s", report.wall_seconds);
    conclude(&report)
}

fn settings(args: &BenchArgs) -> Result<Settings> {
    let q = args.quick;
    let seconds = args.seconds.unwrap_or(if q { 0.2 } else { 0.8 });
    let repeat = args.repeat.unwrap_or(if q { 1 } else { 2 });
    if !(1..=100).contains(&repeat) {
        bail!("--repeat must be between 1 and 100");
    }
    if !(seconds > 0.0 && seconds < 3600.0) {
        bail!("--seconds must be between 0 and 3600");
    }
    if args.counts.is_empty() || args.counts.iter().any(|&n| n == 0 || n > 64) {
        bail!("--counts must list device counts between 1 and 64");
    }
    Ok(Settings {
        quick: q,
        seconds_per_run: seconds,
        repeat,
        device_size: args
            .device_size
            .unwrap_or(if q { 32 << 20 } else { 256 << 20 }),
        emu_size: args.emu_size.unwrap_or(if q { 16 << 20 } else { 64 << 20 }),
        emu_bandwidth: args.emu_bw,
        cost_buffer: args
            .cost_buffer
            .unwrap_or(if q { 64 << 20 } else { 1 << 30 }),
        huge_pages: args.huge_pages,
    })
}

/// With `STRIPEFS_REQUIRE_LOOP` or `STRIPEFS_REQUIRE_FUSE` set (as `.ci/run` sets them),
/// what the run would skip for lack of loop devices or of a FUSE mount is an error instead,
/// as it is in the tests.
fn check_required(args: &BenchArgs) -> Result<()> {
    if required("STRIPEFS_REQUIRE_LOOP")
        && (args.kinds.is_empty() || args.kinds.iter().any(|k| k.needs_root()))
        && let Err(reason) = devices::loops_available()
    {
        bail!("STRIPEFS_REQUIRE_LOOP is set, but {reason}");
    }
    let mounts = |e: &EngineId| matches!(e, EngineId::Fuse | EngineId::CrossProcess);
    if required("STRIPEFS_REQUIRE_FUSE")
        && (args.engines.is_empty() || args.engines.iter().any(mounts))
        && let Some(reason) = engines::files::mount_unavailable()
    {
        bail!("STRIPEFS_REQUIRE_FUSE is set, but {reason}");
    }
    Ok(())
}

/// The points to run, and the disk-bound kind they use.
fn plan(args: &BenchArgs) -> (Vec<Point>, Kind) {
    let allowed = |k: Kind| args.kinds.is_empty() || args.kinds.contains(&k);
    let loops = devices::loops_available().is_ok();
    let disk = if loops && allowed(Kind::Loop) {
        Kind::Loop
    } else {
        Kind::File
    };
    let ram = (loops && allowed(Kind::RamLoop)).then_some(Kind::RamLoop);
    let mut points = workload::plan(args.quick, &args.counts, disk, ram);
    points.retain(|p| {
        allowed(p.kind)
            && (args.sweeps.is_empty() || args.sweeps.contains(&p.sweep))
            && (args.queue_depths.is_empty() || args.queue_depths.contains(&p.workload.qd))
    });
    (points, disk)
}

fn make_lab(args: &BenchArgs, s: &Settings, points: &[Point]) -> Result<Lab> {
    let mut kinds: Vec<Kind> = points.iter().map(|p| p.kind).collect();
    kinds.sort();
    kinds.dedup();
    let max_devices = points
        .iter()
        .filter(|p| p.kind.has_paths())
        .map(|p| p.devices)
        .max()
        .unwrap_or(1);
    let lab_settings = LabSettings {
        dir: args.dir.clone(),
        device_size: s.device_size,
        emu_size: s.emu_size,
        emu_bandwidth: s.emu_bandwidth,
        max_devices,
    };
    Lab::new(lab_settings, &kinds, &mut |msg| println!("{msg}")).context("making scratch devices")
}

/// Whether `engine` takes part in `point`.
fn applies(engine: EngineId, point: &Point) -> bool {
    let access = point.workload.access;
    engine.runs_on(point.kind)
        && match engine {
            EngineId::StripefsPoll => access == Access::RandRead,
            e if e.uses_files() => point.files && !access.is_write(),
            _ => true,
        }
}

fn measure_all(
    lab: &Lab,
    points: &[Point],
    engines: &[EngineId],
    s: &Settings,
) -> Vec<PointResult> {
    let runs: usize = points
        .iter()
        .map(|p| engines.iter().filter(|&&e| applies(e, p)).count())
        .sum::<usize>()
        * s.repeat;
    let mut progress = Progress::new(runs);
    let mut results = Vec::with_capacity(points.len());
    // Closed (unmounted) when dropped, before the lab's devices go.
    let mut files = Filesystems::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for point in points {
        if signal::interrupted() {
            break;
        }
        let (stolen, started) = (machine::stolen_seconds(), Instant::now());
        let mut result = match lab.target(point.kind, point.devices) {
            Ok(target) => measure_point(&target, point, engines, s, &mut progress, &mut files),
            Err(reason) => PointResult {
                point: *point,
                skipped: Some(reason),
                runs: Vec::new(),
                stolen_seconds: None,
                wall_seconds: 0.0,
            },
        };
        result.wall_seconds = started.elapsed().as_secs_f64();
        result.stolen_seconds = stolen.zip(machine::stolen_seconds()).map(|(a, b)| b - a);
        progress.clear();
        print!("{}", report::point_table(&result, cpus));
        results.push(result);
    }
    results
}

fn measure_point(
    target: &Target,
    point: &Point,
    engines: &[EngineId],
    s: &Settings,
    progress: &mut Progress,
    files: &mut Filesystems,
) -> PointResult {
    let spec = RunSpec {
        target,
        workload: point.workload,
        duration: Duration::from_secs_f64(s.seconds_per_run),
    };
    let engines: Vec<EngineId> = engines
        .iter()
        .copied()
        .filter(|&e| applies(e, point))
        .collect();
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); engines.len()];
    let mut file_error = None;
    if point.workload.access.is_write()
        && let Err(e) = files.invalidate(point.kind)
    {
        file_error = Some(e);
    }
    for round in 0..s.repeat {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..engines.len()).collect()
        } else {
            (0..engines.len()).rev().collect()
        };
        for i in order {
            if signal::interrupted() {
                break;
            }
            progress.step(&format!("{} {}", point.label(), engines[i].name()));
            // The filesystem holds its devices exclusively: closed before any other engine.
            if !engines[i].uses_files()
                && let Err(e) = files.close()
            {
                file_error.get_or_insert(e);
            }
            let outcome = match &file_error {
                Some(e) => Outcome::Failed {
                    error: format!("closing the benchmark's filesystem: {e:#}"),
                },
                None => engines::run(engines[i], &spec, files),
            };
            outcomes[i].push(outcome);
        }
    }
    if let Err(e) = files.close() {
        file_error.get_or_insert(e);
    }
    if let Some(e) = file_error {
        eprintln!(
            "stripefs bench: {}: closing the benchmark's filesystem: {e:#}",
            point.label()
        );
    }
    let runs = engines
        .into_iter()
        .zip(outcomes)
        .filter(|(_, o)| !o.is_empty())
        .map(|(engine, o)| EngineRun {
            engine,
            outcome: combine(o),
        })
        .collect();
    PointResult {
        point: *point,
        skipped: None,
        runs,
        stolen_seconds: None,
        wall_seconds: 0.0,
    }
}

/// One outcome from the repetitions: the first failure or unavailability, else the sum.
fn combine(outcomes: Vec<Outcome>) -> Outcome {
    let mut measured = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        match o {
            Outcome::Measured(m) => measured.push(m),
            other => return other,
        }
    }
    Outcome::Measured(stats::Measurement::combine(&measured))
}

fn measure_costs(
    args: &BenchArgs,
    lab: &Lab,
    disk: Kind,
    s: &Settings,
) -> Option<costs::CostsOutcome> {
    if args.no_costs || signal::interrupted() {
        return None;
    }
    let allowed = args.engines.is_empty() || args.engines.contains(&EngineId::Stripefs);
    let target = (1..=4).rev().find_map(|n| lab.target(disk, n).ok())?;
    allowed.then(|| costs::outcome(&target, s.cost_buffer))
}

/// The metadata sweep, unless `--sweeps` or `--kinds` leave it out (it runs on RAM-backed
/// loop devices of its own).
fn measure_metadata(args: &BenchArgs) -> Option<metadata::MetadataOutcome> {
    let wanted = (args.sweeps.is_empty() || args.sweeps.contains(&Sweep::Metadata))
        && (args.kinds.is_empty() || args.kinds.contains(&Kind::RamLoop));
    if !wanted || signal::interrupted() {
        return None;
    }
    let outcome = metadata::run(
        metadata::Scale::new(args.quick),
        required("STRIPEFS_REQUIRE_TOOLS"),
    );
    if let metadata::MetadataOutcome::Skipped { reason } = &outcome
        && required("STRIPEFS_REQUIRE_LOOP")
    {
        return Some(metadata::MetadataOutcome::Failed {
            error: format!(
                "STRIPEFS_REQUIRE_LOOP is set, but the metadata sweep was skipped: {reason}"
            ),
        });
    }
    Some(outcome)
}

/// The files sweep, only when `--sweeps` names it (it takes minutes and 4 GiB of memory).
fn measure_files(args: &BenchArgs) -> Option<scale::FilesOutcome> {
    if !args.sweeps.contains(&Sweep::Files) || signal::interrupted() {
        return None;
    }
    let outcome = scale::run(
        scale::Plan::new(args.quick),
        required("STRIPEFS_REQUIRE_TOOLS"),
    );
    if let scale::FilesOutcome::Skipped { reason } = &outcome
        && required("STRIPEFS_REQUIRE_LOOP")
    {
        return Some(scale::FilesOutcome::Failed {
            error: format!(
                "STRIPEFS_REQUIRE_LOOP is set, but the files sweep was skipped: {reason}"
            ),
        });
    }
    Some(outcome)
}

/// Whether the switch `name` (`STRIPEFS_REQUIRE_…`) is set.
fn required(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

fn write_outputs(args: &BenchArgs, report: &Report) -> Result<()> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report).context("encoding JSON")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report::markdown(report))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plots {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, chart) in plot::charts(&report.points, report.settings.emu_bandwidth) {
            let path = dir.join(name);
            std::fs::write(&path, chart.svg())
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// The failures of the metadata sweep, if it ran.
fn metadata_failures(outcome: Option<&metadata::MetadataOutcome>) -> Vec<String> {
    match outcome {
        Some(metadata::MetadataOutcome::Failed { error }) => vec![format!("metadata: {error}")],
        Some(metadata::MetadataOutcome::Measured(r)) => r.failures().collect(),
        _ => Vec::new(),
    }
}

/// Fails the command if any measurement failed or the run was interrupted; speed never does.
fn conclude(report: &Report) -> Result<()> {
    let failures: Vec<String> = report
        .points
        .iter()
        .flat_map(|r| {
            r.failures()
                .map(move |(e, msg)| format!("{} {}: {msg}", r.point.label(), e.name()))
        })
        .chain(match &report.costs {
            Some(costs::CostsOutcome::Failed { error }) => Some(format!("costs: {error}")),
            _ => None,
        })
        .chain(metadata_failures(report.metadata.as_ref()))
        .chain(match &report.files {
            Some(scale::FilesOutcome::Failed { error }) => vec![format!("files: {error}")],
            Some(scale::FilesOutcome::Measured(r)) => r.failures(),
            _ => Vec::new(),
        })
        .collect();
    if signal::interrupted() {
        bail!("interrupted");
    }
    if !failures.is_empty() {
        bail!(
            "{} measurement(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    let misses = report::misses(&report.targets);
    if misses > 0 {
        println!("{misses} target(s) missed (reported, not an error)");
    }
    Ok(())
}
