//! How many heap bytes the in-memory metadata costs per file.
//!
//! Builds a [`Metadata`] from the records a filesystem has for `N` files spread over 1000
//! directories (names like `file-000123.bin`, the default layout over four devices rotating
//! its first device, as `create` gives them), empty or of 4 KiB (one extent in the first
//! column), and reports the heap it holds per file: bytes asked for, and bytes malloc hands
//! out for them (`malloc_usable_size` plus its 8-byte chunk header), counted by this
//! program's allocator; and the growth of VmRSS. Then it times name lookups and a full
//! readdir of every directory (for comparing two builds on one machine, not as a benchmark).
//!
//! `cargo run --release -p stripefs-fs --example meta_memory -- 1000000 4k`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use stripefs_fs::meta::{self, Metadata, ROOT};
use stripefs_layout::ondisk::{InodeKind, LayoutRecord, Record, Timestamp};

/// Counts what is live: bytes asked for, and bytes of the chunks malloc gave.
struct Counting;

static ASKED: AtomicI64 = AtomicI64::new(0);
static CHUNKS: AtomicI64 = AtomicI64::new(0);
/// The most `ASKED` has been since it was last reset.
static PEAK: AtomicI64 = AtomicI64::new(0);

fn chunk(ptr: *mut u8) -> i64 {
    // SAFETY: `ptr` was returned by the system allocator (malloc) and is still live.
    let usable = unsafe { libc::malloc_usable_size(ptr.cast()) };
    usable as i64 + 8
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let asked = ASKED.fetch_add(layout.size() as i64, Ordering::Relaxed);
            PEAK.fetch_max(asked + layout.size() as i64, Ordering::Relaxed);
            CHUNKS.fetch_add(chunk(p), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ASKED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(ptr), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn vm_rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn now() -> (i64, i64, i64) {
    (
        ASKED.load(Ordering::Relaxed),
        CHUNKS.load(Ordering::Relaxed),
        vm_rss(),
    )
}

const DIRS: u64 = 1000;
const DEVICES: u16 = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let four_k = args.get(2).is_some_and(|a| a == "4k");
    let t = Timestamp {
        secs: 1_790_000_000,
        nanos: 123,
    };
    let mut m = Metadata::default();
    let root = meta::new_inode(ROOT, InodeKind::Dir, 0o755, 0, 0, t, None);
    m.apply(&Record::Inode(root)).expect("root");
    let mut dirs = Vec::new();
    for d in 0..DIRS {
        let ino = m.next_ino();
        let r = meta::new_inode(ino, InodeKind::Dir, 0o755, 0, 0, t, None);
        m.apply(&Record::Inode(r)).expect("dir");
        let name = format!("dir-{d:04}").into_bytes();
        m.apply(&Record::Link {
            parent: ROOT,
            name,
            ino,
        })
        .expect("dir link");
        dirs.push(ino);
    }
    let per_dir = n.div_ceil(DIRS);
    let before = now();
    let mut device_end = [0u64; DEVICES as usize];
    let start = Instant::now();
    for i in 0..n {
        let parent = dirs[(i / per_dir) as usize];
        let ino = m.next_ino();
        let first = (i % u64::from(DEVICES)) as u16;
        let layout = LayoutRecord {
            stripe_unit: 256 << 10,
            devices: (0..DEVICES).map(|k| (first + k) % DEVICES).collect(),
        };
        let mut r = meta::new_inode(ino, InodeKind::File, 0o644, 1000, 1000, t, Some(layout));
        m.apply(&Record::Inode(r.clone())).expect("inode");
        let name = format!("file-{:06}.bin", i % per_dir).into_bytes();
        m.apply(&Record::Link { parent, name, ino }).expect("link");
        if four_k {
            let dev = &mut device_end[usize::from(first)];
            m.apply(&Record::Extent {
                ino,
                column: 0,
                object_offset: 0,
                device_offset: *dev,
                len: 4096,
            })
            .expect("extent");
            *dev += 4096;
            r.size = 4096;
            r.mtime.nanos += 1;
            m.apply(&Record::Inode(r)).expect("size");
        }
    }
    let build = start.elapsed();
    let after = now();
    let per = |a: i64, b: i64| (b - a) as f64 / n as f64;
    println!(
        "files {n} ({}) in {DIRS} directories: heap asked {:.1} B/file, malloc chunks {:.1} B/file, VmRSS +{:.1} B/file ({:.1} MiB); built in {:.2} s",
        if four_k { "4 KiB each" } else { "empty" },
        per(before.0, after.0),
        per(before.1, after.1),
        per(before.2, after.2),
        (after.2 - before.2) as f64 / f64::from(1 << 20),
        build.as_secs_f64()
    );
    println!(
        "sizes: Inode {} B, InodeRecord {} B, LayoutRecord {} B",
        std::mem::size_of::<meta::Inode>(),
        std::mem::size_of::<stripefs_layout::ondisk::InodeRecord>(),
        std::mem::size_of::<LayoutRecord>(),
    );
    // Lookups by name and readdir of every directory.
    let start = Instant::now();
    let mut found = 0u64;
    for i in 0..n {
        let parent = dirs[(i / per_dir) as usize];
        let name = format!("file-{:06}.bin", i % per_dir);
        let dir = m.get(parent).expect("dir");
        if let Some(&ino) = dir.entries().get(name.as_bytes())
            && m.get(ino).is_some()
        {
            found += 1;
        }
    }
    let lookups = start.elapsed();
    assert_eq!(found, n);
    let start = Instant::now();
    let mut listed = 0u64;
    for &d in &dirs {
        let dir = m.get(d).expect("dir");
        for (_, _, ino) in dir.entries().from_position(0) {
            if m.get(ino).is_some() {
                listed += 1;
            }
        }
    }
    let readdir = start.elapsed();
    assert_eq!(listed, n);
    let held = ASKED.load(Ordering::Relaxed);
    PEAK.store(held, Ordering::Relaxed);
    let start = Instant::now();
    let records = m.snapshot().len();
    let snapshot = start.elapsed();
    let transient = PEAK.load(Ordering::Relaxed) - held;
    println!(
        "lookup+get {:.0} ns/file, readdir+get {:.0} ns/file, snapshot ({records} records) {:.2} s, \
         its Vec<Record> {:.0} B/file more at its peak (Record is {} B)",
        lookups.as_nanos() as f64 / n as f64,
        readdir.as_nanos() as f64 / n as f64,
        snapshot.as_secs_f64(),
        transient as f64 / n as f64,
        std::mem::size_of::<Record>()
    );
    // The same records encoded one at a time, as a checkpoint could write them.
    PEAK.store(held, Ordering::Relaxed);
    let start = Instant::now();
    let mut bytes = Vec::new();
    m.each_record(|r| stripefs_layout::ondisk::encode_all(std::slice::from_ref(&r), &mut bytes));
    let encoded = start.elapsed();
    let transient = PEAK.load(Ordering::Relaxed) - held;
    println!(
        "each_record encoded: {:.0} B/file of records in {:.2} s, {:.0} B/file more at its peak",
        bytes.len() as f64 / n as f64,
        encoded.as_secs_f64(),
        transient as f64 / n as f64
    );
}
