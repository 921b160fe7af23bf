//! Helpers shared by the end-to-end tests: a deterministic data pattern, byte-exact
//! comparisons, an independent model of the stripe layout, scratch directories that support
//! `O_DIRECT`, emulated devices, direct reads of whole devices, a watchdog, and the checks of
//! what a test needs from the machine (`require`: root, loop devices, FUSE, tools).
//!
//! Every test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod mount;
pub mod require;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stripefs_engine::{DeviceQueue, DeviceSpec, Volume};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// The data pattern
// ---------------------------------------------------------------------------------------

/// The pattern word stored at byte offset `8 * word` of a target, for `seed`. Any two
/// 8-byte words of one target differ (with overwhelming probability), and so do the same
/// word under two seeds, so data that lands at the wrong offset, or is stale, is caught.
///
/// Written independently of the library's own pattern module, so that the tests do not
/// check the library against itself.
fn word(seed: u64, word: u64) -> u64 {
    let mut x = seed
        .wrapping_mul(0xD6E8_FEB8_6659_FD93)
        .wrapping_add(word.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x632B_E59B_D9B4_E019);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Fills `out` with the pattern of target offsets `offset..offset + out.len()`. Offsets and
/// lengths are multiples of 8 (every request in these tests is block-aligned).
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    assert!(offset.is_multiple_of(8) && out.len().is_multiple_of(8));
    let first = offset / 8;
    for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word(seed, first + i as u64).to_le_bytes());
    }
}

/// The pattern of `offset..offset + len`.
pub fn pattern(seed: u64, offset: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    fill(seed, offset, &mut v);
    v
}

/// Index of the first byte of `data` that differs from the pattern at `offset`.
pub fn pattern_mismatch(seed: u64, offset: u64, data: &[u8]) -> Option<usize> {
    assert!(offset.is_multiple_of(8) && data.len().is_multiple_of(8));
    let first = offset / 8;
    data.chunks_exact(8)
        .enumerate()
        .find(|(i, chunk)| **chunk != word(seed, first + *i as u64).to_le_bytes())
        .map(|(i, chunk)| {
            let want = word(seed, first + i as u64).to_le_bytes();
            i * 8
                + chunk
                    .iter()
                    .zip(want)
                    .position(|(a, b)| *a != b)
                    .unwrap_or(0)
        })
}

/// Panics, naming `what` and the first differing offset, unless `data` is exactly the
/// pattern of `offset..offset + data.len()`.
#[track_caller]
pub fn assert_pattern(what: &str, seed: u64, offset: u64, data: &[u8]) {
    if let Some(i) = pattern_mismatch(seed, offset, data) {
        let want = pattern(seed, offset + (i as u64 & !7), 8);
        panic!(
            "{what}: {} bytes at target offset {offset} differ from pattern seed {seed:#x}, \
             first at +{i} (target offset {}): got {:02x?}, want {:02x?}",
            data.len(),
            offset + i as u64,
            &data[i & !7..((i & !7) + 8).min(data.len())],
            want
        );
    }
}

/// Panics, naming `what`, the first differing index and the number of differing bytes,
/// unless `got == want` (without printing megabytes of data).
#[track_caller]
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
        let count = got.iter().zip(want).filter(|(a, b)| a != b).count();
        panic!(
            "{what}: {count} of {} bytes differ, first at index {first}: got {:#04x}, want {:#04x}",
            got.len(),
            got[first],
            want[first]
        );
    }
}

/// Reads `len` bytes of `buffer` at `offset` (a CPU copy from its current pages).
pub fn buffer_bytes(buffer: &stripefs_mapping::Buffer, offset: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    buffer
        .read_at(offset, &mut v)
        .expect("buffer read_at inside the buffer");
    v
}

// ---------------------------------------------------------------------------------------
// An independent model of striping
// ---------------------------------------------------------------------------------------

/// One per-device piece of a request, as the tests expect the layout to cut it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub column: usize,
    pub device_offset: u64,
    pub len: u64,
    pub request_offset: u64,
}

/// Cuts `offset..offset + len` of a volume striped round-robin over `columns` devices in
/// units of `unit` bytes: unit `u` lives on column `u % columns` at device offset
/// `(u / columns) * unit`.
pub fn model_pieces(unit: u64, columns: usize, offset: u64, len: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let u = at / unit;
        let within = at % unit;
        let n = (unit - within).min(end - at);
        out.push(Piece {
            column: (u % columns as u64) as usize,
            device_offset: (u / columns as u64) * unit + within,
            len: n,
            request_offset: at - offset,
        });
        at += n;
    }
    out
}

/// The volume offset held at `device_offset` of `column` (the inverse of the model).
pub fn model_volume_offset(unit: u64, columns: usize, column: usize, device_offset: u64) -> u64 {
    ((device_offset / unit) * columns as u64 + column as u64) * unit + device_offset % unit
}

/// What device `column` of a volume holds, for its first `len` bytes, when the volume's
/// content is the pattern `seed` everywhere. Also checks, unit by unit, that the library's
/// layout agrees with the model.
pub fn expected_device_image(
    volume_layout: &stripefs_layout::StripeLayout,
    column: usize,
    len: u64,
    seed: u64,
) -> Vec<u8> {
    let unit = volume_layout.unit().bytes();
    let columns = volume_layout.stripe_count();
    let mut image = vec![0u8; len as usize];
    for (i, chunk) in image.chunks_mut(unit as usize).enumerate() {
        let device_offset = i as u64 * unit;
        let volume_offset = model_volume_offset(unit, columns, column, device_offset);
        let by_layout = volume_layout
            .file_offset(column, stripefs_layout::DeviceOffset(device_offset))
            .expect("device offset inside the layout");
        assert_eq!(
            by_layout.0, volume_offset,
            "layout and model disagree on column {column} device offset {device_offset}"
        );
        fill(seed, volume_offset, chunk);
    }
    image
}

// ---------------------------------------------------------------------------------------
// Scratch space, devices, direct reads
// ---------------------------------------------------------------------------------------

/// A temporary directory on a file system that supports `O_DIRECT` (not tmpfs): `/var/tmp`,
/// else `/tmp`, else the target directory.
pub fn scratch_dir() -> tempfile::TempDir {
    let candidates = [
        PathBuf::from("/var/tmp"),
        PathBuf::from("/tmp"),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    ];
    for base in &candidates {
        let Ok(dir) = tempfile::Builder::new()
            .prefix("stripefs-e2e-")
            .tempdir_in(base)
        else {
            continue;
        };
        if supports_direct_io(dir.path()) {
            return dir;
        }
    }
    panic!("no scratch directory with O_DIRECT support among {candidates:?}");
}

/// Whether files in `dir` can be opened `O_DIRECT`.
pub fn supports_direct_io(dir: &Path) -> bool {
    let probe = dir.join(".odirect-probe");
    let ok = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Opens a device from a spec text; panics with the spec and the error if it fails.
#[track_caller]
pub fn open_spec(spec: &str) -> DeviceQueue {
    let parsed: DeviceSpec = spec
        .parse()
        .unwrap_or_else(|e| panic!("spec `{spec}` should parse: {e}"));
    DeviceQueue::open(&parsed).unwrap_or_else(|e| panic!("opening `{spec}` failed: {e}"))
}

/// The spec of an emulated device on file `path` with extra settings `opts` (may be empty).
pub fn emu_spec(path: &Path, opts: &str) -> String {
    if opts.is_empty() {
        format!("emu:{}", path.display())
    } else {
        format!("emu:{},{opts}", path.display())
    }
}

/// The paths `dir/d0.img`.. `dir/d{n-1}.img`.
pub fn image_paths(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("d{i}.img"))).collect()
}

/// Opens one emulated device per path, each with settings `opts(index)`.
pub fn open_emulated(paths: &[PathBuf], opts: impl Fn(usize) -> String) -> Vec<DeviceQueue> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| open_spec(&emu_spec(p, &opts(i))))
        .collect()
}

/// Writes pattern `seed` over the whole volume with large blocking registered writes.
pub fn fill_volume(volume: &Volume, seed: u64) {
    let chunk = (4 * MIB).min(volume.size());
    let buffer = stripefs_mapping::Buffer::new(chunk).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let mut scratch = vec![0u8; chunk as usize];
    let mut at = 0;
    while at < volume.size() {
        let n = chunk.min(volume.size() - at);
        fill(seed, at, &mut scratch[..n as usize]);
        buffer
            .write_at(0, &scratch[..n as usize])
            .expect("write_at");
        assert_eq!(volume.write(&mapping, at, 0, n).expect("fill write"), n);
        at += n;
    }
    volume.unregister(&mapping).expect("unregister");
}

/// Reads the whole volume with large blocking registered reads.
pub fn read_volume(volume: &Volume) -> Vec<u8> {
    let chunk = (4 * MIB).min(volume.size());
    let buffer = stripefs_mapping::Buffer::new(chunk).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let mut out = vec![0u8; volume.size() as usize];
    let mut at = 0;
    while at < volume.size() {
        let n = chunk.min(volume.size() - at);
        assert_eq!(volume.read(&mapping, at, 0, n).expect("read back"), n);
        buffer
            .read_at(0, &mut out[at as usize..(at + n) as usize])
            .expect("read_at");
        at += n;
    }
    volume.unregister(&mapping).expect("unregister");
    out
}

/// Reads `len` bytes at `offset` of `path` with `O_DIRECT` (no page cache on the way).
pub fn read_direct(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    const ALIGN: usize = 4096;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} O_DIRECT: {e}", path.display()));
    assert!(offset.is_multiple_of(ALIGN as u64) && len.is_multiple_of(ALIGN as u64));
    let chunk = MIB as usize;
    let mut raw = vec![0u8; chunk + ALIGN];
    let start = raw.as_ptr().align_offset(ALIGN);
    let mut out = Vec::with_capacity(len as usize);
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(chunk as u64) as usize;
        let aligned = &mut raw[start..start + n];
        file.read_exact_at(aligned, offset + at)
            .unwrap_or_else(|e| {
                panic!(
                    "O_DIRECT read of {} at {}: {e}",
                    path.display(),
                    offset + at
                )
            });
        out.extend_from_slice(aligned);
        at += n as u64;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------------------

/// Ends the whole test process with a failure if it is not dropped within `limit`: a hung
/// request or wait must fail the suite, not stall it.
pub struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(name: &'static str, limit: Duration) -> Self {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            let (lock, cvar) = &*flag;
            let mut finished = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*finished {
                let now = Instant::now();
                if now >= deadline {
                    eprintln!(
                        "watchdog: test `{name}` still running after {limit:?}: \
                         a request or a wait hangs; failing the test binary"
                    );
                    std::process::exit(101);
                }
                finished = cvar
                    .wait_timeout(finished, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.done;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A small deterministic random number generator (xorshift64*), so a failing run can be
/// replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

// ---------------------------------------------------------------------------------------
// Request plans
// ---------------------------------------------------------------------------------------

/// One planned request: `len` bytes at volume `offset`, at `buffer_offset` in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Req {
    pub offset: u64,
    pub buffer_offset: u64,
    pub len: u64,
}

/// Cuts `start..end` into consecutive requests whose lengths cycle through `sizes` (the last
/// one clipped at `end`); each request's buffer offset is its volume offset plus `shift`.
pub fn tile(start: u64, end: u64, sizes: &[u64], shift: u64) -> Vec<Req> {
    let mut out = Vec::new();
    let mut at = start;
    let mut i = 0;
    while at < end {
        let len = sizes[i % sizes.len()].min(end - at);
        out.push(Req {
            offset: at,
            buffer_offset: at + shift,
            len,
        });
        at += len;
        i += 1;
    }
    out
}

/// Runs `requests` through one I/O context of `depth`, keeping it full, and calls
/// `done(index, result)` as each completes (in completion order).
pub fn run_async(
    volume: &Volume,
    mapping: &stripefs_mapping::Mapping,
    op: stripefs_engine::Op,
    requests: &[Req],
    depth: usize,
    mut done: impl FnMut(usize, Result<u64, stripefs_engine::Error>),
) {
    let mut ctx = stripefs_engine::IoContext::new(depth);
    let mut next = 0;
    let mut completed = 0;
    let mut max_in_flight = 0;
    while completed < requests.len() {
        while next < requests.len() && ctx.in_flight() < depth {
            let r = requests[next];
            ctx.submit(
                volume,
                stripefs_engine::Request {
                    op,
                    mapping,
                    offset: r.offset,
                    buffer_offset: r.buffer_offset,
                    len: r.len,
                    tag: next as u64,
                },
            )
            .unwrap_or_else(|e| panic!("submitting {op} request {next} {r:?} refused: {e}"));
            next += 1;
        }
        max_in_flight = max_in_flight.max(ctx.in_flight());
        let c = ctx.wait_one().expect("requests are in flight");
        done(c.tag as usize, c.result);
        completed += 1;
    }
    assert_eq!(ctx.in_flight(), 0);
    assert_eq!(
        max_in_flight,
        depth.min(requests.len()),
        "the context should have been filled"
    );
}
