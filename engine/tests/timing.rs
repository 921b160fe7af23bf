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

fn check(lat: &str, want: Duration, runs: usize) {
    let (median, p10, p90) = blocking_reads(lat, runs);
    println!(
        "lat={lat}: blocking 4 KiB reads over {runs} requests: median {median:?} \
         ({:+.1}%), p10 {p10:?}, p90 {p90:?}",
        (median.as_secs_f64() / want.as_secs_f64() - 1.0) * 100.0
    );
    assert!(median < Duration::from_millis(1), "median {median:?}");
    // Never early; late by the cost of a request plus a generous margin for a machine
    // shared with builds (on an idle one the median is within 10%).
    assert!(median >= want, "median {median:?} is below {want:?}");
    assert!(
        median <= want * 3 / 2,
        "median {median:?} is far above {want:?}"
    );
}

#[test]
fn twenty_microseconds_hold_for_a_blocking_waiter() {
    check("20us", Duration::from_micros(20), 2000);
}

#[test]
fn two_hundred_microseconds_hold_for_a_blocking_waiter() {
    check("200us", Duration::from_micros(200), 500);
}
