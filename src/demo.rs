//! `stripefs demo`: the main job on an embedded default. Makes scratch devices, writes a known
//! pattern across a striped volume with registered writes, reads it all back with registered
//! reads (many in flight), moves the buffer mid-stream, and verifies every byte.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stripefs_engine::spec::format_size;

use anyhow::{Context, Result, bail};
use stripefs_engine::{
    Completion, DeviceQueue, DeviceSpec, IoContext, Op, Request, Volume, pattern,
};
use stripefs_layout::StripeUnit;
use stripefs_mapping::{Buffer, Mapping};

/// Settings of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of scratch devices to make (ignored with --device).
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Size of each scratch device.
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    pub device_size: u64,
    /// Stripe unit.
    #[arg(long, default_value = "128K", value_parser = parse_size)]
    pub stripe_unit: u64,
    /// Size of each request.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub request_size: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub queue_depth: usize,
    /// Make the scratch devices emulated NVMe namespaces with these extra settings
    /// (for example `bw=500M,lat=20us`).
    #[arg(long)]
    pub emulated: Option<String>,
    /// Use these devices instead of scratch ones (paths or emu: specs). Their contents are
    /// overwritten.
    #[arg(long = "device")]
    pub device: Vec<String>,
    /// Directory for the scratch devices (default: a new directory under /var/tmp).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    stripefs_engine::spec::parse_size(s).map_err(|e| e.to_string())
}

const SEED: u64 = 0x5354_5249_5045_4653;

pub fn run(args: &DemoArgs) -> Result<()> {
    let scratch = scratch_dir(args.dir.as_deref())?;
    let specs = device_specs(args, scratch.path())?;
    let devices = specs
        .iter()
        .map(|spec| DeviceQueue::open(spec).with_context(|| format!("opening device {spec}")))
        .collect::<Result<Vec<_>>>()?;
    let unit = StripeUnit::new(args.stripe_unit).context("--stripe-unit")?;
    let volume = Volume::striped(devices, unit).context("building the striped volume")?;
    let request = args.request_size;
    if request == 0 || !request.is_multiple_of(volume.block_size()) {
        bail!(
            "--request-size {request} must be a non-zero multiple of the block size {}",
            volume.block_size()
        );
    }
    let depth = args.queue_depth.clamp(1, 1 << 16);
    let total = volume.size() - volume.size() % request;
    if total == 0 {
        bail!(
            "the volume ({} bytes) is smaller than one request",
            volume.size()
        );
    }
    print_setup(&volume, scratch.path(), request, depth);

    let buffer = Buffer::new(request * depth as u64).context("allocating the buffer")?;
    let registered = Instant::now();
    let mapping = volume.register(&buffer).context("registering the buffer")?;
    println!(
        "registered a {} buffer against {} devices in {:?}: one mapping, {} attachments",
        format_size(buffer.len()),
        volume.devices().len(),
        registered.elapsed(),
        mapping.device_count()
    );

    let write = stream(
        &volume,
        &mapping,
        &buffer,
        Op::Write,
        total,
        request,
        depth,
        false,
    )?;
    volume.sync().context("flushing the devices")?;
    println!(
        "wrote    {} in {:>8.3?}  {:>8.1} MB/s",
        format_size(total),
        write.elapsed,
        mbps(total, write.elapsed)
    );
    let before = stats(&volume);
    let read = stream(
        &volume,
        &mapping,
        &buffer,
        Op::Read,
        total,
        request,
        depth,
        true,
    )?;
    println!(
        "read     {} in {:>8.3?}  {:>8.1} MB/s  (verified every byte)",
        format_size(total),
        read.elapsed,
        mbps(total, read.elapsed)
    );
    if let Some(m) = &read.migration {
        println!(
            "migrate  mid-stream: {} mapping(s) invalidated, drained in {:?}, pages moved in {:?}; I/O went on, mapping epoch now {}",
            m.mappings,
            m.drain,
            m.copy,
            mapping.epoch()
        );
    }
    print_devices(&volume, &before, read.elapsed);
    if read.mismatches > 0 {
        bail!(
            "{} request(s) read back data that differs from what was written",
            read.mismatches
        );
    }
    volume.unregister(&mapping)?;
    println!("ok: every byte read back equals what was written");
    Ok(())
}

struct Scratch {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn path(&self) -> &Path {
        self.dir.as_ref().map_or(&self.path, |d| d.path())
    }
}

fn scratch_dir(dir: Option<&Path>) -> Result<Scratch> {
    match dir {
        Some(path) => {
            std::fs::create_dir_all(path)
                .with_context(|| format!("creating {}", path.display()))?;
            Ok(Scratch {
                dir: None,
                path: path.to_path_buf(),
            })
        }
        None => {
            // /tmp is often tmpfs, which has no O_DIRECT: keep scratch devices on a disk.
            let dir = tempfile::Builder::new()
                .prefix("stripefs-demo-")
                .tempdir_in("/var/tmp")
                .context("creating a scratch directory under /var/tmp")?;
            Ok(Scratch {
                path: dir.path().to_path_buf(),
                dir: Some(dir),
            })
        }
    }
}

fn device_specs(args: &DemoArgs, dir: &Path) -> Result<Vec<DeviceSpec>> {
    if !args.device.is_empty() {
        return args
            .device
            .iter()
            .map(|s| {
                s.parse::<DeviceSpec>()
                    .with_context(|| format!("device {s}"))
            })
            .collect();
    }
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    (0..args.devices)
        .map(|i| {
            let path = dir.join(format!("dev{i}.img"));
            let text = match &args.emulated {
                Some(extra) if extra.is_empty() => {
                    format!("emu:{},size={}", path.display(), args.device_size)
                }
                Some(extra) => format!("emu:{},size={},{extra}", path.display(), args.device_size),
                None => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    file.set_len(args.device_size)
                        .with_context(|| format!("sizing {}", path.display()))?;
                    path.display().to_string()
                }
            };
            text.parse::<DeviceSpec>()
                .with_context(|| format!("device {text}"))
        })
        .collect()
}

struct StreamResult {
    elapsed: Duration,
    mismatches: u64,
    migration: Option<stripefs_mapping::MigrationReport>,
}

/// Streams the whole volume through the buffer: request k uses buffer slot k % depth.
#[allow(clippy::too_many_arguments)]
fn stream(
    volume: &Volume,
    mapping: &Mapping,
    buffer: &Buffer,
    op: Op,
    total: u64,
    request: u64,
    depth: usize,
    migrate_midway: bool,
) -> Result<StreamResult> {
    let mut ctx = IoContext::new(depth);
    let mut done: Vec<Completion> = Vec::with_capacity(depth);
    let mut scratch = vec![0u8; request as usize];
    // A buffer slot is reused only once the request that used it has completed; completions
    // come back in any order. The tag carries the request number and its slot.
    let mut free_slots: Vec<u64> = (0..depth as u64).rev().collect();
    let count = total / request;
    let (mut next, mut finished, mut mismatches) = (0u64, 0u64, 0u64);
    let mut migrator = None;
    let start = Instant::now();
    while finished < count {
        while next < count {
            let Some(slot) = free_slots.pop() else { break };
            if op == Op::Write {
                pattern::fill(SEED, next * request, &mut scratch);
                buffer.write_at(slot * request, &scratch)?;
            }
            let tag = next << 16 | slot;
            ctx.submit(
                volume,
                Request {
                    op,
                    mapping,
                    offset: next * request,
                    buffer_offset: slot * request,
                    len: request,
                    tag,
                },
            )
            .with_context(|| format!("submitting request {next}"))?;
            next += 1;
        }
        if migrate_midway && migrator.is_none() && next >= count / 2 {
            let moving = buffer.clone();
            migrator = Some(std::thread::spawn(move || moving.migrate()));
        }
        done.clear();
        ctx.wait(1, &mut done);
        for c in &done {
            let (number, slot) = (c.tag >> 16, c.tag & 0xffff);
            c.result
                .as_ref()
                .map_err(|e| anyhow::anyhow!("request {number} ({op}) failed: {e}"))?;
            if op == Op::Read {
                buffer.read_at(slot * request, &mut scratch)?;
                if let Some(at) = pattern::first_mismatch(SEED, number * request, &scratch) {
                    eprintln!("mismatch: volume offset {at} differs from what was written");
                    mismatches += 1;
                }
            }
            free_slots.push(slot);
            finished += 1;
        }
    }
    let elapsed = start.elapsed();
    let migration = match migrator {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("the migrating thread panicked"))?
                .context("migrating the buffer")?,
        ),
        None => None,
    };
    Ok(StreamResult {
        elapsed,
        mismatches,
        migration,
    })
}

fn print_setup(volume: &Volume, dir: &Path, request: u64, depth: usize) {
    println!(
        "volume: {} devices, stripe unit {}, {} usable, block size {} (scratch in {})",
        volume.devices().len(),
        format_size(volume.layout().unit().bytes()),
        format_size(volume.size()),
        volume.block_size(),
        dir.display()
    );
    for d in volume.devices() {
        println!(
            "  {:<40} {:?}, {}, lba {}",
            d.name(),
            d.kind(),
            format_size(d.size()),
            d.block_size()
        );
    }
    println!(
        "requests: {} each, {} in flight",
        format_size(request),
        depth
    );
}

fn stats(volume: &Volume) -> Vec<stripefs_engine::DeviceStats> {
    volume.devices().iter().map(DeviceQueue::stats).collect()
}

fn print_devices(volume: &Volume, before: &[stripefs_engine::DeviceStats], read_time: Duration) {
    println!(
        "{:<40} {:>12} {:>10} {:>12} {:>10}",
        "device", "read", "commands", "written", "read MB/s"
    );
    for (d, b) in volume.devices().iter().zip(before) {
        let s = d.stats();
        let read = s.bytes_read - b.bytes_read;
        println!(
            "{:<40} {:>12} {:>10} {:>12} {:>10.1}",
            d.name(),
            format_size(read),
            s.reads - b.reads,
            format_size(s.bytes_written),
            mbps(read, read_time)
        );
    }
}

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}
