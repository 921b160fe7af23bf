//! Crash consistency at every crash point (CrashMonkey/ACE style, without device-mapper).
//!
//! Each workload runs on a real filesystem over emulated devices backed by files; every
//! device write and flush is recorded in order, with markers for where each operation
//! started and which fsyncs returned. Then, for crash points after the recorded writes, the
//! device images are built as a crash would leave them — everything the devices had (kill -9
//! of the daemon), only what was flushed (a power cut that drops the volatile cache), and
//! random subsets of the unflushed writes with one torn — and each image is checked:
//! fsck clean, mount succeeds, and the tree read back is a state the workload passed through
//! since its last fsync, with every byte as that state (or a later one in flight) has it.
//!
//! `cargo test --release --test crash_points -- --nocapture` ends with the line
//! `crash points: N checked, V violations`. By default a bounded sample of crash points is
//! checked; `STRIPEFS_CRASH_FULL=1` checks every crash point with more random variants.

mod crash;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crash::images::{Replay, Variant};
use crash::workload::{self, MARK_DATASYNC, MARK_FSYNC, MARK_START, Run};
use crash::{DEVICE_SIZE, DEVICES};
use stripefs_fs::filesystem::Filesystem;
use stripefs_fs::{DeviceQueue, DeviceSpec, WriteEvent};

/// How many crash points of one workload the default run checks at most.
const SAMPLED_POINTS: usize = 40;
/// Random variants per crash point in the full sweep.
const FULL_RANDOM_VARIANTS: u64 = 6;

/// Where crash images are written: memory if the machine has a tmpfs at /dev/shm.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        PathBuf::from("/var/tmp")
    }
}

struct Tally {
    checked: usize,
    violations: Vec<String>,
}

#[test]
fn crash_points() {
    let full = std::env::var_os("STRIPEFS_CRASH_FULL").is_some();
    let root = scratch_root();
    let mut tally = Tally {
        checked: 0,
        violations: Vec::new(),
    };
    for w in crash::workloads() {
        let t0 = Instant::now();
        let dir = tempfile::tempdir_in(&root).expect("scratch dir");
        let run_dir = dir.path().join("run");
        let check_dir = dir.path().join("check");
        std::fs::create_dir_all(&run_dir).expect("run dir");
        std::fs::create_dir_all(&check_dir).expect("check dir");
        let run = workload::run(&w, &run_dir, DEVICES, DEVICE_SIZE);
        let specs = workload::specs(&check_dir, DEVICES, DEVICE_SIZE);
        let before = (tally.checked, tally.violations.len());
        check_run(w.name, &run, &specs, full, &mut tally);
        println!(
            "{:<45} {:>5} events {:>5} images checked {:>3} violations  {:.1?}",
            w.name,
            run.events.len(),
            tally.checked - before.0,
            tally.violations.len() - before.1,
            t0.elapsed()
        );
    }
    for v in tally.violations.iter().take(20) {
        println!("VIOLATION {v}");
    }
    println!(
        "crash points: {} checked, {} violations",
        tally.checked,
        tally.violations.len()
    );
    assert!(
        tally.violations.is_empty(),
        "{} crash images violate the durability promise (first: {})",
        tally.violations.len(),
        tally.violations[0]
    );
}

/// Walks the recording and checks the chosen crash points.
fn check_run(name: &str, run: &Run, specs: &[DeviceSpec], full: bool, tally: &mut Tally) {
    let writes: Vec<usize> = (0..run.events.len())
        .filter(|&e| matches!(run.events[e], WriteEvent::Write { .. }))
        .collect();
    let stride = if full {
        1
    } else {
        writes.len().div_ceil(SAMPLED_POINTS).max(1)
    };
    let chosen: std::collections::BTreeSet<usize> = writes
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i + 1 == writes.len())
        .map(|(_, &e)| e)
        .collect();
    let mut replay = Replay::new(run.base.clone());
    let (mut started, mut durable) = (0usize, 0usize);
    let mut datasynced: Vec<(usize, u64)> = Vec::new();
    for (e, event) in run.events.iter().enumerate() {
        replay.step(event);
        match event {
            WriteEvent::Mark(tag) => {
                let op = (tag >> 2) as usize;
                match tag & 3 {
                    MARK_START => started = op + 1,
                    MARK_FSYNC => durable = op + 1,
                    MARK_DATASYNC => {
                        if let Some(&node) = run.datasync_nodes.get(&op) {
                            datasynced.push((op + 1, node));
                        }
                    }
                    _ => {}
                }
            }
            WriteEvent::Write { .. } if chosen.contains(&e) => {
                for variant in variants(e as u64, replay.unflushed(), full) {
                    let (images, kept, torn) = replay.crash_images(variant);
                    tally.checked += 1;
                    if let Err(why) =
                        check_image(specs, &images, run, durable, started, &datasynced)
                    {
                        tally.violations.push(format!(
                            "[{name}] after event {e} ({variant:?}: kept {kept} of {} unflushed, {torn} torn; ops started {started}, durable through {durable}): {why}",
                            replay.unflushed()
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

fn variants(point: u64, unflushed: usize, full: bool) -> Vec<Variant> {
    let mut v = vec![Variant::All];
    if unflushed > 0 {
        v.push(Variant::None);
    }
    if unflushed > 1 {
        let n = if full { FULL_RANDOM_VARIANTS } else { 1 };
        v.extend((0..n).map(|k| Variant::Random(point * 1000 + k)));
    }
    v
}

/// Puts the images on the check devices, then: fsck (read-only) must be clean, mount must
/// succeed, and the tree must be one the workload passed through.
fn check_image(
    specs: &[DeviceSpec],
    images: &[Vec<u8>],
    run: &Run,
    durable: usize,
    started: usize,
    datasynced: &[(usize, u64)],
) -> Result<(), String> {
    for (spec, image) in specs.iter().zip(images) {
        std::fs::write(workload::backing(spec), image).map_err(|e| format!("image: {e}"))?;
    }
    {
        let devices: Vec<DeviceQueue> = specs
            .iter()
            .map(|s| DeviceQueue::open(s).map_err(|e| format!("open: {e}")))
            .collect::<Result<_, _>>()?;
        let report =
            stripefs_fs::filesystem::fsck(&devices).map_err(|e| format!("fsck failed: {e}"))?;
        if !report.is_clean() {
            return Err(format!("fsck found problems: {:?}", report.problems));
        }
    }
    let fs = Filesystem::open(specs).map_err(|e| format!("mount failed: {e}"))?;
    let tree = workload::read_tree(&fs)?;
    run.history
        .judge(&tree, durable, started, datasynced)
        .map(drop)
}
