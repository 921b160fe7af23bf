//! The registered-I/O hot path allocates nothing: once a context and a mapping exist, a
//! stream of reads and writes (blocking and asynchronous) performs zero heap allocations in
//! any thread, the device reapers included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use stripefs_engine::{Completion, DeviceQueue, IoContext, Op, QueueOptions, Request, Volume};
use stripefs_layout::StripeUnit;
use stripefs_mapping::Buffer;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const UNIT: u64 = 64 << 10;
const REQ: u64 = 256 << 10;
const DEPTH: usize = 16;

fn run_stream(
    volume: &Volume,
    mapping: &stripefs_mapping::Mapping,
    ctx: &mut IoContext,
    out: &mut Vec<Completion>,
) {
    for round in 0..8u64 {
        for i in 0..DEPTH as u64 {
            let op = if round % 2 == 0 { Op::Write } else { Op::Read };
            let request = Request {
                op,
                mapping,
                offset: (round * DEPTH as u64 + i) * REQ % volume.size(),
                buffer_offset: i * REQ,
                len: REQ,
                tag: i,
            };
            ctx.submit(volume, request).expect("submit");
        }
        out.clear();
        ctx.wait(DEPTH, out);
        assert!(out.iter().all(|c| c.result.is_ok()), "a request failed");
        volume
            .read(mapping, round * REQ, 0, REQ)
            .expect("blocking read");
    }
}

#[test]
fn registered_io_allocates_nothing_per_request() {
    let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
    let devices = (0..3)
        .map(|i| {
            let path = dir.path().join(format!("d{i}.img"));
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(16 << 20))
                .expect("device file");
            DeviceQueue::open_path(
                &path,
                &QueueOptions {
                    queue_depth: 32,
                    ..QueueOptions::default()
                },
            )
            .expect("open")
        })
        .collect();
    let volume = Volume::striped(devices, StripeUnit::new(UNIT).expect("unit")).expect("volume");
    let buffer = Buffer::new(REQ * DEPTH as u64).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let mut ctx = IoContext::new(DEPTH);
    let mut out = Vec::with_capacity(DEPTH);

    run_stream(&volume, &mapping, &mut ctx, &mut out); // warm up lazily created state
    COUNTING.store(true, Ordering::SeqCst);
    run_stream(&volume, &mapping, &mut ctx, &mut out);
    COUNTING.store(false, Ordering::SeqCst);
    let requests = 8 * (DEPTH as u64 + 1);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations during {requests} requests"
    );
}
