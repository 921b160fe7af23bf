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

use std::sync::Arc;

use crash::concurrent::{self, ConcurrentRun, Promises};
use crash::images::{Replay, Variant};
use crash::workload::{self, MARK_DATASYNC, MARK_FSYNC, MARK_START, Run};
use crash::{DEVICE_SIZE, DEVICES};
use stripefs_engine::{DeviceQueue, DeviceSpec, WriteEvent};
use stripefs_fs::filesystem::Filesystem;

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
        report_line(w.name, run.events.len(), &tally, before, t0);
    }
    {
        let t0 = Instant::now();
        let dir = tempfile::tempdir_in(&root).expect("scratch dir");
        let (run_dir, check_dir) = (dir.path().join("run"), dir.path().join("check"));
        std::fs::create_dir_all(&run_dir).expect("run dir");
        std::fs::create_dir_all(&check_dir).expect("check dir");
        let run = concurrent::run(&run_dir, DEVICES, DEVICE_SIZE);
        let specs = workload::specs(&check_dir, DEVICES, DEVICE_SIZE);
        let before = (tally.checked, tally.violations.len());
        check_concurrent(&run, &specs, full, &mut tally);
        report_line(CONCURRENT_NAME, run.events.len(), &tally, before, t0);
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

/// Walks a recording: every marker goes to `mark`; at each chosen crash point (after a
/// write), `check` gets the images of every variant and returns why they are wrong, if
/// they are.
fn walk(
    name: &str,
    events: &[WriteEvent],
    base: &[Vec<u8>],
    full: bool,
    tally: &mut Tally,
    mut mark: impl FnMut(u64) -> String,
    mut check: impl FnMut(&[Vec<u8>]) -> Result<(), String>,
) {
    let writes: Vec<usize> = (0..events.len())
        .filter(|&e| matches!(events[e], WriteEvent::Write { .. }))
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
    let mut replay = Replay::new(base.to_vec());
    let mut context = String::new();
    for (e, event) in events.iter().enumerate() {
        replay.step(event);
        match event {
            WriteEvent::Mark(tag) => context = mark(*tag),
            WriteEvent::Write { .. } if chosen.contains(&e) => {
                for variant in variants(e as u64, replay.unflushed(), full) {
                    let (images, kept, torn) = replay.crash_images(variant);
                    tally.checked += 1;
                    if let Err(why) = check(&images) {
                        tally.violations.push(format!(
                            "[{name}] after event {e} ({variant:?}: kept {kept} of {} unflushed, {torn} torn; {context}): {why}",
                            replay.unflushed()
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Checks the chosen crash points of a sequential workload against its model.
fn check_run(name: &str, run: &Run, specs: &[DeviceSpec], full: bool, tally: &mut Tally) {
    let state = std::cell::Cell::new((0usize, 0usize));
    let datasynced = std::cell::RefCell::new(Vec::<(usize, u64)>::new());
    walk(
        name,
        &run.events,
        &run.base,
        full,
        tally,
        |tag| {
            let op = (tag >> 2) as usize;
            let (mut started, mut durable) = state.get();
            match tag & 3 {
                MARK_START => started = op + 1,
                MARK_FSYNC => durable = op + 1,
                MARK_DATASYNC => {
                    if let Some(&node) = run.datasync_nodes.get(&op) {
                        datasynced.borrow_mut().push((op + 1, node));
                    }
                }
                _ => {}
            }
            state.set((started, durable));
            format!("ops started {started}, durable through {durable}")
        },
        |images| {
            let (started, durable) = state.get();
            let fs = mount_image(specs, images)?;
            let tree = workload::read_tree(&fs)?;
            run.history
                .judge(&tree, durable, started, &datasynced.borrow())
                .map(drop)
        },
    );
}

/// Checks the chosen crash points of the concurrent workload: per-file promises.
fn check_concurrent(run: &ConcurrentRun, specs: &[DeviceSpec], full: bool, tally: &mut Tally) {
    let promises = std::cell::RefCell::new(Promises::default());
    walk(
        CONCURRENT_NAME,
        &run.events,
        &run.base,
        full,
        tally,
        |tag| {
            promises.borrow_mut().note(tag);
            String::new()
        },
        |images| promises.borrow().judge(&*mount_image(specs, images)?),
    );
}

const CONCURRENT_NAME: &str = "three threads fsyncing, log wraps";

fn report_line(name: &str, events: usize, tally: &Tally, before: (usize, usize), t0: Instant) {
    println!(
        "{:<45} {:>5} events {:>5} images checked {:>3} violations  {:.1?}",
        name,
        events,
        tally.checked - before.0,
        tally.violations.len() - before.1,
        t0.elapsed()
    );
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

/// Puts the images on the check devices, then: fsck (read-only) must be clean and mount
/// must succeed; returns the mounted filesystem.
fn mount_image(specs: &[DeviceSpec], images: &[Vec<u8>]) -> Result<Arc<Filesystem>, String> {
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
    Filesystem::open(specs).map_err(|e| format!("mount failed: {e}"))
}
