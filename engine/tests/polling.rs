//! A thread that only polls (never blocks in `wait`) collects its own completions: `poll`
//! drains the device rings itself instead of leaving them to the reapers, whose standby drain
//! comes every 20 ms.

use std::time::{Duration, Instant};

use stripefs_engine::{DeviceQueue, DeviceSpec, IoContext, Op, Request, Volume, pattern};
use stripefs_layout::StripeUnit;
use stripefs_mapping::Buffer;

#[test]
fn polling_alone_collects_completions_promptly_with_exact_data() {
    let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
    let devices: Vec<DeviceQueue> = (0..2)
        .map(|i| {
            let path = dir.path().join(format!("d{i}.img"));
            let spec: DeviceSpec = format!("emu:{},size=8M", path.display())
                .parse()
                .expect("spec");
            DeviceQueue::open(&spec).expect("open")
        })
        .collect();
    let volume =
        Volume::striped(devices, StripeUnit::new(64 << 10).expect("unit")).expect("volume");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mut want = vec![0u8; 1 << 20];
    pattern::fill(5, 0, &mut want);
    buffer.write_at(0, &want).expect("fill");
    let mapping = volume.register(&buffer).expect("register");
    volume.write(&mapping, 0, 0, 1 << 20).expect("write");
    buffer.write_at(0, &vec![0u8; 1 << 20]).expect("clear");

    let mut ctx = IoContext::new(4);
    let mut done = Vec::new();
    let mut latencies = Vec::new();
    for i in 0..64u64 {
        let started = Instant::now();
        let request = Request {
            op: Op::Read,
            mapping: &mapping,
            offset: i * 16384,
            buffer_offset: i * 16384,
            len: 16384,
            tag: i,
        };
        ctx.submit(&volume, request).expect("submit");
        done.clear();
        while ctx.poll(&mut done) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "request {i} never completed"
            );
            std::hint::spin_loop();
        }
        latencies.push(started.elapsed());
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].tag, i);
        assert_eq!(done[0].result.as_ref().ok(), Some(&16384));
    }
    let mut got = vec![0u8; 1 << 20];
    buffer.read_at(0, &mut got).expect("copy out");
    assert!(got == want, "polled reads returned the written bytes");
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < Duration::from_millis(10),
        "median poll-only latency {median:?}: completions waited for a reaper"
    );
}
