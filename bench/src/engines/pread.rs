//! The plain baseline: O_DIRECT pread/pwrite from a pool of threads (as many as requests in
//! flight, at most MAX_THREADS), each thread serving one device with one request at a time.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::uring::open_all;
use super::{Deadline, EngineResult, RunSpec};
use crate::devices::Devices;
use crate::memory::AlignedMem;
use crate::stats::{Detail, Histogram, Measurement, ThreadTimes, Usage, this_thread_ns};
use crate::workload::{Access, Offsets};

/// Most threads used: beyond this, 2 cores only thrash.
pub const MAX_THREADS: usize = 64;

/// Where the next sequential request of each device starts (shared by its threads).
struct Cursors {
    next: Vec<AtomicU64>,
    blocks: u64,
}

pub fn run(spec: &RunSpec<'_>) -> EngineResult {
    let Devices::Paths(paths) = &spec.target.devices else {
        return Ok(Err("needs device paths".into()));
    };
    let files = Arc::new(open_all(paths, spec.workload.access.is_write())?);
    let threads = spec.total_depth().clamp(1, MAX_THREADS);
    let cursors = Arc::new(Cursors {
        next: (0..files.len()).map(|_| AtomicU64::new(0)).collect(),
        blocks: (spec.region() / spec.workload.bs).max(1),
    });
    let (times, usage, start) = (ThreadTimes::now(), Usage::now()?, Instant::now());
    let deadline = Deadline::after(spec.duration);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (files, cursors, spec) = (files.clone(), cursors.clone(), worker_spec(spec, t));
            std::thread::Builder::new()
                .name(format!("pread {t}"))
                .spawn(move || worker(&files, &cursors, spec, deadline))
                .context("spawning a pread thread")
        })
        .collect::<Result<_>>()?;
    let mut hist = Histogram::default();
    let (mut ops, mut worker_ns) = (0, 0);
    for h in handles {
        let done = h
            .join()
            .map_err(|_| anyhow::anyhow!("a pread thread panicked"))??;
        ops += done.ops;
        worker_ns += done.cpu_ns;
        hist.merge(&done.hist);
    }
    let seconds = start.elapsed().as_secs_f64();
    let used = Usage::now()?.since(&usage);
    let mut m = Measurement::new(ops * spec.workload.bs, ops, seconds, &used, &hist);
    let mut thread_cpu = ThreadTimes::now().since(&times);
    thread_cpu.insert("pread".into(), worker_ns as f64 / 1e9);
    m.detail = Some(Detail {
        thread_cpu,
        voluntary_switches: used.voluntary_switches,
        involuntary_switches: used.involuntary_switches,
        device_commands: Some(ops),
    });
    Ok(Ok(m))
}

/// What one thread does: its device, and its own offsets for random access.
struct WorkerSpec {
    device: usize,
    access: Access,
    bs: u64,
    random: Offsets,
}

fn worker_spec(spec: &RunSpec<'_>, t: usize) -> WorkerSpec {
    let w = spec.workload;
    WorkerSpec {
        device: t % spec.target.count(),
        access: w.access,
        bs: w.bs,
        random: Offsets::new(w.access, w.bs, spec.region(), t as u64 + 1),
    }
}

/// What one thread did.
struct Done {
    ops: u64,
    hist: Histogram,
    cpu_ns: u64,
}

fn worker(
    files: &[File],
    cursors: &Cursors,
    mut spec: WorkerSpec,
    deadline: Deadline,
) -> Result<Done> {
    let cpu_start = this_thread_ns();
    let mut mem = AlignedMem::new(spec.bs as usize).context("allocating a buffer")?;
    let buf = &mut mem.as_mut_slice()[..spec.bs as usize];
    let file = &files[spec.device];
    let (mut ops, mut hist) = (0u64, Histogram::default());
    while !deadline.passed() && !crate::signal::interrupted() {
        let offset = match spec.access {
            Access::RandRead => spec.random.next_offset(),
            _ => {
                let block = cursors.next[spec.device].fetch_add(1, Ordering::Relaxed);
                (block % cursors.blocks) * spec.bs
            }
        };
        let started = Instant::now();
        let done = if spec.access.is_write() {
            file.write_at(buf, offset)
        } else {
            file.read_at(buf, offset)
        }
        .with_context(|| format!("device {} offset {offset}", spec.device))?;
        if done != buf.len() {
            bail!(
                "device {} offset {offset}: short transfer {done}",
                spec.device
            );
        }
        hist.record(started.elapsed());
        ops += 1;
    }
    Ok(Done {
        ops,
        hist,
        cpu_ns: this_thread_ns().saturating_sub(cpu_start),
    })
}
