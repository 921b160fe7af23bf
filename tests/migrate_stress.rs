//! `migrate` (move_notify) and `unregister` racing with hundreds of registered requests in
//! flight on a striped volume of emulated NVMe devices (file-backed, `O_DIRECT`).
//!
//! Four threads each keep an I/O context of depth 64 full (256 requests in flight), while
//! another thread moves the buffer's pages over and over. Before each read its buffer
//! region is poisoned, so a read whose data went anywhere but the buffer's current pages
//! (old, released pages) shows up as poison; a read that completes Ok must hold exactly the
//! pattern of its range. Writes racing with migrations must land exactly. After
//! `unregister`, submissions fail with the revoked error and nothing hangs (a watchdog ends
//! the test binary with a failure if a test runs too long).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{KIB, MIB};
use stripefs_engine::{Error, IoContext, Op, Request, Volume};
use stripefs_layout::StripeUnit;
use stripefs_mapping::{Buffer, Mapping, MappingError, MappingState};

const DEVICES: usize = 4;
const THREADS: usize = 4;
const DEPTH: usize = 64;
const REGION: u64 = 64 * KIB;
const LBA: u64 = 4096;
const OLD: u64 = 0x57e5_5001;
const NEW: u64 = 0x57e5_5002;
const POISON: u8 = 0xA5;
/// Each reader completes at least this many requests, and keeps going until the migrator
/// has moved the buffer at least MIN_MIGRATIONS times.
const MIN_REQUESTS: u64 = 1500;
const MIN_MIGRATIONS: u64 = 40;

struct Setup {
    _dir: tempfile::TempDir,
    paths: Vec<std::path::PathBuf>,
    volume: Volume,
}

/// Four emulated devices of 8 MiB (4 KiB LBAs, 64 KiB mdts, queue depth 64: fewer slots than
/// the commands 256 requests make, so submitters also wait for device slots), 64 KiB units.
fn setup(fill: Option<u64>) -> Setup {
    let dir = common::scratch_dir();
    let paths = common::image_paths(dir.path(), DEVICES);
    let devices = common::open_emulated(&paths, |_| "size=8M,lba=4096,mdts=64K,qd=64".into());
    let volume =
        Volume::striped(devices, StripeUnit::new(64 * KIB).expect("unit")).expect("volume");
    if let Some(seed) = fill {
        common::fill_volume(&volume, seed);
    }
    Setup {
        _dir: dir,
        paths,
        volume,
    }
}

/// Sets the flag when dropped (also while unwinding).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Moves `buffer` until `stop` is set, at least `min` times; returns how many times.
fn migrator(buffer: &Buffer, stop: &AtomicBool, count: &AtomicU64) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let report = buffer.migrate().expect("migrate");
        assert!(report.mappings <= 1, "{report:?}");
        n += 1;
        count.store(n, Ordering::Release);
        std::thread::sleep(Duration::from_micros(300));
    }
    n
}

/// What one reader thread saw.
#[derive(Debug, Default)]
struct ReaderOutcome {
    completed: u64,
    max_in_flight: usize,
    revoked_at_submit: bool,
}

/// Keeps `DEPTH` random reads in flight in thread `t`'s regions of the buffer, checking each
/// completion, until `keep_going` says stop or a submission is refused as revoked.
fn reader(
    t: usize,
    volume: &Volume,
    mapping: &Mapping,
    buffer: &Buffer,
    completed_total: &AtomicU64,
    keep_going: &dyn Fn(u64) -> bool,
) -> ReaderOutcome {
    let mut rng = common::Rng::new(0x9e37_79b9 + t as u64);
    let mut ctx = IoContext::new(DEPTH);
    let mut regions: Vec<Option<(u64, u64)>> = vec![None; DEPTH];
    let base = (t * DEPTH) as u64 * REGION;
    let mut out = ReaderOutcome::default();
    let blocks = volume.size() / LBA;
    let poison = vec![POISON; REGION as usize];
    let mut stopping = false;
    loop {
        while !stopping && ctx.in_flight() < DEPTH {
            let slot = regions
                .iter()
                .position(Option::is_none)
                .expect("a free region");
            let len = (1 + rng.below(REGION / LBA)) * LBA;
            let offset = rng.below(blocks - len / LBA + 1) * LBA;
            let buffer_offset = base + slot as u64 * REGION;
            buffer
                .write_at(buffer_offset, &poison[..len as usize])
                .expect("poison");
            let submitted = ctx.submit(
                volume,
                Request {
                    op: Op::Read,
                    mapping,
                    offset,
                    buffer_offset,
                    len,
                    tag: slot as u64,
                },
            );
            match submitted {
                Ok(()) => regions[slot] = Some((offset, len)),
                Err(Error::Mapping(MappingError::Revoked { mapping: id })) => {
                    assert_eq!(id, mapping.id());
                    out.revoked_at_submit = true;
                    stopping = true;
                }
                Err(e) => panic!("thread {t}: read {offset}+{len} refused: {e}"),
            }
        }
        out.max_in_flight = out.max_in_flight.max(ctx.in_flight());
        let Some(c) = ctx.wait_one() else {
            break; // nothing in flight and no more submissions
        };
        let slot = c.tag as usize;
        let (offset, len) = regions[slot]
            .take()
            .expect("completion of a submitted request");
        let n = c.result.unwrap_or_else(|e| {
            panic!("thread {t}: read {offset}+{len} submitted before any revoke failed: {e}")
        });
        assert_eq!(n, len);
        let got = common::buffer_bytes(buffer, base + slot as u64 * REGION, len);
        common::assert_pattern(
            &format!(
                "thread {t}: read {offset}+{len} (buffer moved {} times)",
                buffer.migrations()
            ),
            OLD,
            offset,
            &got,
        );
        out.completed += 1;
        completed_total.fetch_add(1, Ordering::Relaxed);
        if !stopping && !keep_going(out.completed) {
            stopping = true;
        }
    }
    assert_eq!(ctx.in_flight(), 0);
    out
}

#[test]
fn reads_racing_migrations_land_in_current_pages() {
    let _watchdog = common::Watchdog::new("reads_racing_migrations", Duration::from_secs(60));
    let s = setup(Some(OLD));
    let buffer = Buffer::new((THREADS * DEPTH) as u64 * REGION).expect("buffer");
    let mapping = s.volume.register(&buffer).expect("register");
    let stop = AtomicBool::new(false);
    let migrations = AtomicU64::new(0);
    let completed = AtomicU64::new(0);
    let keep_going =
        |done: u64| done < MIN_REQUESTS || migrations.load(Ordering::Acquire) < MIN_MIGRATIONS;
    let (moved, outcomes) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let m = scope.spawn(|| migrator(&buffer, &stop, &migrations));
        let readers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (volume, mapping, buffer, completed) =
                    (&s.volume, &mapping, &buffer, &completed);
                let keep_going = &keep_going;
                scope.spawn(move || reader(t, volume, mapping, buffer, completed, keep_going))
            })
            .collect();
        let outcomes: Vec<ReaderOutcome> = readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect();
        stop.store(true, Ordering::Release);
        (m.join().expect("migrator"), outcomes)
    });
    for (t, o) in outcomes.iter().enumerate() {
        assert!(o.completed >= MIN_REQUESTS, "thread {t}: {o:?}");
        assert_eq!(o.max_in_flight, DEPTH, "thread {t}: {o:?}");
        assert!(!o.revoked_at_submit, "thread {t}: {o:?}");
    }
    assert!(moved >= MIN_MIGRATIONS);
    assert_eq!(buffer.migrations(), moved);
    println!(
        "{} reads checked, {moved} migrations, mapping epoch {}",
        completed.load(Ordering::Relaxed),
        mapping.epoch()
    );
    // Each remap is one epoch; reads re-mapped after many of the moves.
    let epoch = mapping.epoch();
    assert!(
        epoch > 1 && epoch <= moved + 1,
        "epoch {epoch} after {moved} migrations"
    );
    assert!(matches!(
        mapping.state(),
        MappingState::Mapped { .. } | MappingState::Invalidated
    ));
    // No request is left holding the mapping: a final migration drains at once, and the
    // mapping still reads correctly afterwards.
    buffer.migrate().expect("final migrate");
    assert_eq!(mapping.state(), MappingState::Invalidated);
    buffer
        .write_at(0, &vec![POISON; MIB as usize])
        .expect("poison");
    assert_eq!(s.volume.read(&mapping, 0, 0, MIB).expect("read"), MIB);
    common::assert_pattern(
        "after the last move",
        OLD,
        0,
        &common::buffer_bytes(&buffer, 0, MIB),
    );
    assert_eq!(mapping.epoch(), epoch + 1);
}

#[test]
fn writes_racing_migrations_land_exactly() {
    let _watchdog = common::Watchdog::new("writes_racing_migrations", Duration::from_secs(60));
    let s = setup(None);
    let volume = &s.volume;
    let size = volume.size();
    let buffer = Buffer::new((THREADS * DEPTH) as u64 * REGION).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let stop = AtomicBool::new(false);
    let migrations = AtomicU64::new(0);
    let moved = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let m = scope.spawn(|| migrator(&buffer, &stop, &migrations));
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (buffer, mapping, migrations) = (&buffer, &mapping, &migrations);
                scope.spawn(move || {
                    // Thread t writes its quarter of the volume, in random-sized requests,
                    // twice over (first pattern OLD, then NEW), so that the last write of
                    // every byte is known.
                    let quarter = size / THREADS as u64;
                    let mut rng = common::Rng::new(0xa11c_e000 + t as u64);
                    let base = (t * DEPTH) as u64 * REGION;
                    let mut ctx = IoContext::new(DEPTH);
                    let mut regions: Vec<Option<(u64, u64)>> = vec![None; DEPTH];
                    for seed in [OLD, NEW] {
                        let mut at = t as u64 * quarter;
                        let end = at + quarter;
                        while at < end || ctx.in_flight() > 0 {
                            while at < end && ctx.in_flight() < DEPTH {
                                let slot = regions.iter().position(Option::is_none).expect("free");
                                let len = ((1 + rng.below(REGION / LBA)) * LBA).min(end - at);
                                let bo = base + slot as u64 * REGION;
                                buffer
                                    .write_at(bo, &common::pattern(seed, at, len))
                                    .expect("write_at");
                                ctx.submit(
                                    volume,
                                    Request {
                                        op: Op::Write,
                                        mapping,
                                        offset: at,
                                        buffer_offset: bo,
                                        len,
                                        tag: slot as u64,
                                    },
                                )
                                .unwrap_or_else(|e| panic!("thread {t}: write {at}+{len}: {e}"));
                                regions[slot] = Some((at, len));
                                at += len;
                            }
                            let c = ctx.wait_one().expect("in flight");
                            let (offset, len) = regions[c.tag as usize].take().expect("submitted");
                            assert_eq!(
                                c.result.unwrap_or_else(|e| panic!(
                                    "thread {t}: write {offset}+{len}: {e}"
                                )),
                                len
                            );
                        }
                        // Let the first pass overlap a few migrations before the second.
                        while seed == OLD && migrations.load(Ordering::Acquire) < 5 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        stop.store(true, Ordering::Release);
        m.join().expect("migrator")
    });
    assert!(moved >= 5, "only {moved} migrations during the writes");
    volume.unregister(&mapping).expect("unregister");

    let content = common::read_volume(volume);
    common::assert_pattern("volume after racing writes", NEW, 0, &content);
    let written: u64 = volume
        .devices()
        .iter()
        .map(|d| d.stats().bytes_written)
        .sum();
    assert_eq!(written, 2 * size);

    // And the backing files themselves, read O_DIRECT, hold what the layout puts there.
    let layout = volume.layout().clone();
    let per_device = size / DEVICES as u64;
    drop(s.volume);
    for (column, path) in s.paths.iter().enumerate() {
        common::assert_bytes(
            &format!("backing file {}", path.display()),
            &common::read_direct(path, 0, per_device),
            &common::expected_device_image(&layout, column, per_device, NEW),
        );
    }
}

#[test]
fn unregister_mid_stream_fails_new_requests_and_hangs_nothing() {
    let _watchdog = common::Watchdog::new("unregister_mid_stream", Duration::from_secs(60));
    let s = setup(Some(OLD));
    let volume = &s.volume;
    let buffer = Buffer::new((THREADS * DEPTH) as u64 * REGION).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let stop = AtomicBool::new(false);
    let migrations = AtomicU64::new(0);
    let completed = AtomicU64::new(0);
    let keep_going = |_| true; // until the mapping is revoked
    let (outcomes, unregister_took) = std::thread::scope(|scope| {
        // Stops the migrator however this closure ends, so a failed assertion is reported
        // instead of the scope waiting forever for the migrator.
        let _stop = StopOnDrop(&stop);
        let m = scope.spawn(|| migrator(&buffer, &stop, &migrations));
        let readers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (mapping, buffer, completed) = (&mapping, &buffer, &completed);
                let keep_going = &keep_going;
                scope.spawn(move || reader(t, volume, mapping, buffer, completed, keep_going))
            })
            .collect();
        // Let the stream and the migrations get going, then pull the registration.
        while completed.load(Ordering::Relaxed) < 1000 || migrations.load(Ordering::Acquire) < 5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        volume.unregister(&mapping).expect("unregister");
        let took = start.elapsed();
        // Once unregister has returned, nothing of the mapping is in flight or can start.
        assert_eq!(mapping.state(), MappingState::Revoked);
        let outcomes: Vec<ReaderOutcome> = readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect();
        stop.store(true, Ordering::Release);
        m.join().expect("migrator");
        (outcomes, took)
    });
    for (t, o) in outcomes.iter().enumerate() {
        assert!(
            o.revoked_at_submit,
            "thread {t} never saw the revoke: {o:?}"
        );
        assert_eq!(o.max_in_flight, DEPTH, "thread {t}: {o:?}");
    }
    let total: u64 = outcomes.iter().map(|o| o.completed).sum();
    println!("{total} reads checked; unregister took {unregister_took:?}");
    assert!(
        unregister_took < Duration::from_secs(10),
        "unregister took {unregister_took:?}"
    );

    // Every way of using the stale mapping is refused, naming it, and touches nothing.
    buffer
        .write_at(0, &vec![POISON; MIB as usize])
        .expect("poison");
    let stats_before: Vec<_> = volume.devices().iter().map(|d| d.stats()).collect();
    match volume.read(&mapping, 0, 0, MIB) {
        Err(Error::Mapping(MappingError::Revoked { mapping: id })) => assert_eq!(id, mapping.id()),
        other => panic!("blocking read on a revoked mapping: {other:?}"),
    }
    match volume.write(&mapping, 0, 0, MIB) {
        Err(Error::Mapping(MappingError::Revoked { mapping: id })) => assert_eq!(id, mapping.id()),
        other => panic!("blocking write on a revoked mapping: {other:?}"),
    }
    let mut ctx = IoContext::new(4);
    let refused = ctx.submit(
        volume,
        Request {
            op: Op::Read,
            mapping: &mapping,
            offset: 0,
            buffer_offset: 0,
            len: LBA,
            tag: 7,
        },
    );
    assert!(matches!(
        refused,
        Err(Error::Mapping(MappingError::Revoked { .. }))
    ));
    assert_eq!(ctx.in_flight(), 0);
    assert!(ctx.wait_one().is_none());
    let stats_after: Vec<_> = volume.devices().iter().map(|d| d.stats()).collect();
    assert_eq!(
        stats_before, stats_after,
        "a revoked mapping reached a device"
    );
    assert!(
        common::buffer_bytes(&buffer, 0, MIB)
            .iter()
            .all(|&b| b == POISON),
        "a refused request wrote into the buffer"
    );
    // Moving the buffer after the revoke neither revives the mapping nor blocks.
    buffer.migrate().expect("migrate after revoke");
    assert_eq!(mapping.state(), MappingState::Revoked);

    // The buffer itself can be registered again and works.
    let again = volume.register(&buffer).expect("register again");
    assert_ne!(again.id(), mapping.id());
    assert_eq!(volume.read(&again, 4 * MIB, 0, MIB).expect("read"), MIB);
    common::assert_pattern(
        "new registration",
        OLD,
        4 * MIB,
        &common::buffer_bytes(&buffer, 0, MIB),
    );
}

#[test]
fn unregister_during_a_migration_waits_for_in_flight_io() {
    let _watchdog = common::Watchdog::new("unregister_during_migration", Duration::from_secs(60));
    let dir = common::scratch_dir();
    let paths = common::image_paths(dir.path(), 2);
    // Slow commands: a read stays in flight for 400 ms.
    let devices = common::open_emulated(&paths, |_| "size=1M,lba=4096,lat=400ms".into());
    let volume =
        Volume::striped(devices, StripeUnit::new(64 * KIB).expect("unit")).expect("volume");
    let buffer = Buffer::new(MIB).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let mut ctx = IoContext::new(1);
    let reads_done = || -> u64 { volume.devices().iter().map(|d| d.stats().reads).sum() };
    ctx.submit(
        &volume,
        Request {
            op: Op::Read,
            mapping: &mapping,
            offset: 0,
            buffer_offset: 0,
            len: LBA,
            tag: 1,
        },
    )
    .expect("submit");
    std::thread::scope(|scope| {
        // A migration starts and waits for the read to drain...
        let mover = scope.spawn(|| buffer.migrate().expect("migrate"));
        while mapping.state() != MappingState::Invalidated {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(reads_done(), 0, "the read should still be in flight");
        // ...and the application unregisters meanwhile. Unregister promises to wait for
        // the mapping's in-flight I/O: when it returns, the read must have finished.
        let start = Instant::now();
        volume.unregister(&mapping).expect("unregister");
        let took = start.elapsed();
        let done = reads_done();
        assert_eq!(mapping.state(), MappingState::Revoked);
        assert_eq!(
            done, 1,
            "unregister returned after {took:?} while the mapping's read (400 ms) was still \
             in flight on the devices: it did not wait for the I/O that a concurrent \
             migration was draining"
        );
        mover.join().expect("mover");
    });
    let c = ctx.wait_one().expect("completion");
    assert_eq!(c.result.expect("read"), LBA);
}
