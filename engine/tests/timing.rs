//! Emulated timing holds for a blocking waiter: `lat=20us` makes a blocking read take
//! 20 µs (not the millisecond a poll() timeout would round it to), and `lat=200us` 200 µs.
//!
//! A behaviour check of the emulation on a shared, loaded machine: the median of many
//! requests must be within a band around the latency (it is printed), and far below 1 ms.

use std::time::{Duration, Instant};

use stripefs_engine::{DeviceQueue, DeviceSpec, Volume, pattern};
use stripefs_mapping::Buffer;

const LEN: u64 = 4096;
const WARM_UP: usize = 50;

/// Median, 10th and 90th percentile of `runs` blocking 4 KiB reads on a memory device with
/// latency `lat`; checks the data of every read.
fn blocking_reads(lat: &str, runs: usize) -> (Duration, Duration, Duration) {
    let spec: DeviceSpec = format!("emu:mem,size=8M,lat={lat}").parse().expect("spec");
    let volume = Volume::raw(DeviceQueue::open(&spec).expect("open")).expect("volume");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mut data = vec![0u8; 1 << 20];
    pattern::fill(7, 0, &mut data);
    buffer.write_at(0, &data).expect("fill");
    let mapping = volume.register(&buffer).expect("register");
    volume.write(&mapping, 0, 0, 1 << 20).expect("write");
    let mut took = Vec::with_capacity(runs);
    let mut got = vec![0u8; LEN as usize];
    for i in 0..WARM_UP + runs {
        let at = (i as u64 % 256) * LEN;
        buffer.write_at(at, &got).expect("clear");
        let started = Instant::now();
        let n = volume.read(&mapping, at, at, LEN).expect("read");
        let elapsed = started.elapsed();
        assert_eq!(n, LEN);
        buffer.read_at(at, &mut got).expect("buffer");
        assert_eq!(pattern::first_mismatch(7, at, &got), None, "read {i}");
        if i >= WARM_UP {
            took.push(elapsed);
        }
    }
    took.sort();
    let at = |q: usize| took[(took.len() - 1) * q / 100];
    (at(50), at(10), at(90))
}

/// How late a series may be. An optimized build must hold the latency within half of it,
/// or within [`WAKE_UP_NOISE`] when that is more (on a quiet machine `lat=20us` measures
/// within 10%, `lat=200us` within 1%); `.ci/run` runs this test in release. An unoptimized
/// build spends tens of µs per request on its own, so there a series may be late by what a
/// request without emulated latency costs (measured in the same run), and a quarter more.
fn allowed(want: Duration) -> Duration {
    if cfg!(debug_assertions) {
        let (base, _, _) = blocking_reads("0us", 500);
        (want + base) * 5 / 4
    } else {
        (want * 3 / 2).max(want + WAKE_UP_NOISE)
    }
}

/// What this VM adds to a short wait on a bad hour, measured: `lat=20us` reads whose p10 is
/// 20.5 µs had medians of 28–36 µs for an hour (two thread wake-ups' worth; the hypervisor,
/// not the emulation, which the p10 and `lat=200us` show to be exact).
const WAKE_UP_NOISE: Duration = Duration::from_micros(20);

/// Measures up to three times and judges the best median: a build or another test on this
/// 2-core machine can make one series late as a whole, which says nothing of the emulation;
/// a series whose median is early, or that is never within the band, fails.
fn check(lat: &str, want: Duration, runs: usize) {
    let mut best = Duration::MAX;
    for attempt in 1..=3 {
        let (median, p10, p90) = blocking_reads(lat, runs);
        println!(
            "lat={lat} (series {attempt}): blocking 4 KiB reads over {runs} requests: median \
             {median:?} ({:+.1}%), p10 {p10:?}, p90 {p90:?}",
            (median.as_secs_f64() / want.as_secs_f64() - 1.0) * 100.0
        );
        // Never early, and never the millisecond a poll() timeout would round it up to.
        assert!(median >= want, "median {median:?} is below {want:?}");
        assert!(median < Duration::from_millis(1), "median {median:?}");
        best = best.min(median);
        let limit = allowed(want);
        if best <= limit {
            println!("  within {limit:?}");
            return;
        }
        println!("  above {limit:?}; measuring again");
    }
    panic!("best median {best:?} of three series is far above {want:?}");
}

/// Both latencies in one test, one after the other: run side by side they would share the
/// two cores and measure each other.
#[test]
fn emulated_latency_holds_for_a_blocking_waiter() {
    check("20us", Duration::from_micros(20), 2000);
    check("200us", Duration::from_micros(200), 500);
}
