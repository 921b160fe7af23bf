//! Emulated NVMe devices (4 KiB LBAs, a 32 KiB maximum transfer so commands are split)
//! striped 4-way, with injected faults: a failing LBA range, failure after N commands, a
//! device going offline. Exactly the requests that touch the fault fail, with an error
//! naming the device (and the range); every other request completes with the right data.
//! Also: the bandwidth/latency model and memory-backed namespaces, for correctness only.

mod common;

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use common::{KIB, MIB, Req};
use stripefs_engine::{DeviceKind, Error, Op, Volume};
use stripefs_layout::StripeUnit;
use stripefs_mapping::{Buffer, ImportError, MappingError};

const DEVICES: usize = 4;
const UNIT: u64 = 64 * KIB;
const MDTS: u64 = 32 * KIB;
const LBA: u64 = 4096;
const SHIFT: u64 = 8 * KIB;
const OLD: u64 = 0x01d0_1d01;
const NEW: u64 = 0x0ae0_ae0a;
/// Request sizes: none a multiple of the unit, several longer than a stripe.
const SIZES: [u64; 6] = [196 * KIB, 4 * KIB, 260 * KIB, 68 * KIB, 36 * KIB, 516 * KIB];

/// Four backing files and the settings every device gets.
struct Bench {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
}

impl Bench {
    fn new() -> Bench {
        let dir = common::scratch_dir();
        let paths = common::image_paths(dir.path(), DEVICES);
        Bench { _dir: dir, paths }
    }

    fn base(&self) -> String {
        format!("size=8M,lba={LBA},mdts={MDTS},qd=16")
    }

    /// A volume over the four files; device `i` gets the extra settings `extra(i)`.
    fn volume(&self, extra: impl Fn(usize) -> String) -> Volume {
        let devices = common::open_emulated(&self.paths, |i| {
            let more = extra(i);
            if more.is_empty() {
                self.base()
            } else {
                format!("{},{more}", self.base())
            }
        });
        for (d, p) in devices.iter().zip(&self.paths) {
            assert_eq!(d.kind(), DeviceKind::Emulated);
            assert_eq!(d.name(), format!("emu:{}", p.display()));
            assert_eq!(u64::from(d.block_size()), LBA);
            assert_eq!(d.max_transfer(), MDTS);
        }
        let volume =
            Volume::striped(devices, StripeUnit::new(UNIT).expect("unit")).expect("volume");
        assert_eq!(volume.size(), DEVICES as u64 * 8 * MIB);
        assert_eq!(volume.block_size(), LBA);
        volume
    }

    /// A fault-free volume holding pattern OLD everywhere.
    fn filled(&self) -> Volume {
        let volume = self.volume(|_| String::new());
        common::fill_volume(&volume, OLD);
        volume
    }
}

/// The pieces request `r` puts on `column`.
fn pieces_on(r: &Req, column: usize) -> Vec<common::Piece> {
    common::model_pieces(UNIT, DEVICES, r.offset, r.len)
        .into_iter()
        .filter(|p| p.column == column)
        .collect()
}

fn overlaps(a: &Range<u64>, start: u64, len: u64) -> bool {
    a.start < start + len && start < a.end
}

/// Whether request `r` has bytes on `column` inside any of `ranges` (device offsets).
fn touches(r: &Req, column: usize, ranges: &[Range<u64>]) -> bool {
    pieces_on(r, column)
        .iter()
        .any(|p| ranges.iter().any(|f| overlaps(f, p.device_offset, p.len)))
}

/// Checks that `error` is the I/O error of one command of request `r` on `column` (device
/// `name`) that overlaps one of `ranges`.
#[track_caller]
fn assert_range_error(
    error: &Error,
    r: &Req,
    op: Op,
    column: usize,
    name: &str,
    ranges: &[Range<u64>],
) {
    let Error::DeviceIo {
        device,
        op: got_op,
        offset,
        len,
        source,
    } = error
    else {
        panic!("request {r:?}: expected DeviceIo naming {name}, got {error:?}");
    };
    assert_eq!(device, name, "request {r:?}: {error}");
    assert_eq!(*got_op, op, "request {r:?}: {error}");
    assert_eq!(
        source.raw_os_error(),
        Some(libc::EIO),
        "request {r:?}: {error}"
    );
    assert!(
        *len > 0 && *len <= MDTS && offset % LBA == 0 && len % LBA == 0,
        "request {r:?}: a failed command is one LBA-aligned command of at most mdts: {error}"
    );
    assert!(
        ranges.iter().any(|f| overlaps(f, *offset, *len)),
        "request {r:?}: failed command {offset}+{len} overlaps no failed range {ranges:?}"
    );
    assert!(
        pieces_on(r, column)
            .iter()
            .any(|p| p.device_offset <= *offset && offset + len <= p.device_offset + p.len),
        "request {r:?}: failed command {offset}+{len} is not inside one of its pieces on column {column}"
    );
    let text = error.to_string();
    assert!(
        text.contains(name) && text.contains(&offset.to_string()),
        "message `{text}` should name the device and the offset"
    );
}

/// A buffer holding pattern `seed` at `offset + SHIFT` for the whole volume.
fn buffer_with(volume: &Volume, seed: u64) -> Buffer {
    let buffer = Buffer::new(volume.size() + SHIFT).expect("buffer");
    let mut chunk = vec![0u8; 4 * MIB as usize];
    for at in (0..volume.size()).step_by(chunk.len()) {
        common::fill(seed, at, &mut chunk);
        buffer.write_at(at + SHIFT, &chunk).expect("write_at");
    }
    buffer
}

#[test]
fn failed_lba_range_fails_only_requests_touching_it() {
    let _watchdog = common::Watchdog::new("failed_lba_range", Duration::from_secs(60));
    let bench = Bench::new();
    let volume = bench.filled();
    // Two overlapping plans, each cutting the whole volume differently, in separate halves
    // of the buffer (a failed read may leave part of its region written).
    let size = volume.size();
    let buffer = Buffer::new(2 * size + SHIFT).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let mut reads = common::tile(0, size, &SIZES, SHIFT);
    reads.extend(common::tile(
        0,
        size,
        &[132 * KIB, 24 * KIB, 1028 * KIB],
        size + SHIFT,
    ));

    // On column 2: one LBA at a unit's start, two LBAs mid-unit, a range across a unit
    // boundary, and the last LBA of the device.
    let column = 2;
    let ranges = [
        0..LBA,
        3 * MIB + 20 * KIB..3 * MIB + 28 * KIB,
        5 * MIB + 36 * KIB..5 * MIB + 40 * KIB,
        7 * MIB + 60 * KIB..7 * MIB + 68 * KIB,
        8 * MIB - LBA..8 * MIB,
    ];
    let victim = &volume.devices()[column];
    let name = victim.name().to_string();
    for r in &ranges {
        victim.faults().fail_range(r.clone());
    }

    let expected_failures = reads.iter().filter(|r| touches(r, column, &ranges)).count();
    assert!(
        expected_failures >= 10,
        "the plan should hit the ranges several times"
    );
    let mut failed = Vec::new();
    common::run_async(&volume, &mapping, Op::Read, &reads, 64, |i, result| {
        let r = reads[i];
        if touches(&r, column, &ranges) {
            let e = result.expect_err(&format!("request {r:?} touches a failed range"));
            assert_range_error(&e, &r, Op::Read, column, &name, &ranges);
            failed.push(r);
        } else {
            let n = result.unwrap_or_else(|e| panic!("request {r:?} touches no fault: {e}"));
            assert_eq!(n, r.len);
            let got = common::buffer_bytes(&buffer, r.buffer_offset, r.len);
            common::assert_pattern(&format!("read {r:?}"), OLD, r.offset, &got);
        }
    });
    assert_eq!(failed.len(), expected_failures);
    for (i, d) in volume.devices().iter().enumerate() {
        let errors = d.stats().errors;
        assert_eq!(errors > 0, i == column, "{}: {} errors", d.name(), errors);
    }

    // A blocking read into a failed range fails the same way.
    let r = Req {
        offset: common::model_volume_offset(UNIT, DEVICES, column, ranges[0].start),
        buffer_offset: 0,
        len: LBA,
    };
    let e = volume
        .read(&mapping, r.offset, r.buffer_offset, r.len)
        .expect_err("blocking read of a failed LBA");
    assert_range_error(&e, &r, Op::Read, column, &name, &ranges);

    // The fault is the device's, not the mapping's: once cleared, the same requests succeed.
    victim.faults().clear();
    for r in failed {
        assert_eq!(
            volume
                .read(&mapping, r.offset, r.buffer_offset, r.len)
                .expect("cleared"),
            r.len
        );
        let got = common::buffer_bytes(&buffer, r.buffer_offset, r.len);
        common::assert_pattern(&format!("re-read {r:?}"), OLD, r.offset, &got);
    }
}

#[test]
fn failed_range_from_spec_fails_only_writes_touching_it() {
    let _watchdog = common::Watchdog::new("failed_range_writes", Duration::from_secs(60));
    let bench = Bench::new();
    drop(bench.filled());

    let column = 1;
    // `fail=` may repeat: a range of three LBAs mid-unit, and one LBA at a unit's start.
    let ranges = [
        2 * MIB + 4 * KIB..2 * MIB + 16 * KIB,
        6 * MIB..6 * MIB + LBA,
    ];
    let volume = bench.volume(|i| {
        if i == column {
            ranges
                .iter()
                .map(|r| format!("fail={}-{}", r.start, r.end))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        }
    });
    let name = volume.devices()[column].name().to_string();
    let buffer = buffer_with(&volume, NEW);
    let mapping = volume.register(&buffer).expect("register");
    let writes = common::tile(0, volume.size(), &SIZES, SHIFT);
    let mut ok = vec![false; writes.len()];
    common::run_async(&volume, &mapping, Op::Write, &writes, 48, |i, result| {
        let r = writes[i];
        if touches(&r, column, &ranges) {
            let e = result.expect_err(&format!("write {r:?} touches the failed range"));
            assert_range_error(&e, &r, Op::Write, column, &name, &ranges);
        } else {
            assert_eq!(
                result.unwrap_or_else(|e| panic!("write {r:?} touches no fault: {e}")),
                r.len
            );
            ok[i] = true;
        }
    });
    assert!(
        ok.iter().filter(|ok| !**ok).count() >= 2,
        "each failed range should have failed a write"
    );
    volume.devices()[column].faults().clear();

    // Successful writes landed whole; the failed range kept the old data; the rest of a
    // failed write is, LBA by LBA, either old or new (its other commands may have run).
    let content = common::read_volume(&volume);
    for (r, ok) in writes.iter().zip(&ok) {
        let got = &content[r.offset as usize..(r.offset + r.len) as usize];
        if *ok {
            common::assert_pattern(&format!("write {r:?}"), NEW, r.offset, got);
            continue;
        }
        for (i, block) in got.chunks(LBA as usize).enumerate() {
            let at = r.offset + i as u64 * LBA;
            let piece = common::model_pieces(UNIT, DEVICES, at, LBA)[0];
            let (col, dev_off) = (piece.column, piece.device_offset);
            let in_range = col == column && ranges.iter().any(|f| f.contains(&dev_off));
            let old = common::pattern_mismatch(OLD, at, block).is_none();
            let new = common::pattern_mismatch(NEW, at, block).is_none();
            assert!(
                if in_range { old } else { old || new },
                "failed write {r:?}: LBA at volume offset {at} (column {col}, device offset \
                 {dev_off}, in failed range: {in_range}) holds neither the old nor the new data \
                 it may hold (old: {old}, new: {new})"
            );
        }
    }
}

#[test]
fn fail_after_n_commands() {
    let _watchdog = common::Watchdog::new("fail_after", Duration::from_secs(60));
    let bench = Bench::new();
    drop(bench.filled());

    // From the spec: device 1 serves 5 commands, then fails every one. Single-LBA reads are
    // one command each, so the count is exact.
    let volume = bench.volume(|i| {
        if i == 1 {
            "fail_after=5".into()
        } else {
            String::new()
        }
    });
    let name1 = volume.devices()[1].name().to_string();
    let buffer = Buffer::new(MIB).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    for i in 0..10u64 {
        let on0 = i * LBA; // column 0, device offset i * LBA
        let n = volume
            .read(&mapping, on0, 0, LBA)
            .expect("column 0 has no fault");
        assert_eq!(n, LBA);
        common::assert_pattern("column 0", OLD, on0, &common::buffer_bytes(&buffer, 0, LBA));

        let on1 = UNIT + i * LBA; // column 1, device offset i * LBA
        let result = volume.read(&mapping, on1, LBA, LBA);
        if i < 5 {
            assert_eq!(result.expect("within the first 5 commands"), LBA);
            common::assert_pattern(
                "column 1",
                OLD,
                on1,
                &common::buffer_bytes(&buffer, LBA, LBA),
            );
        } else {
            match result {
                Err(Error::DeviceIo {
                    device,
                    op: Op::Read,
                    offset,
                    len,
                    source,
                }) => {
                    assert_eq!(device, name1);
                    assert_eq!((offset, len), (i * LBA, LBA));
                    assert_eq!(source.raw_os_error(), Some(libc::EIO));
                }
                other => panic!("read {i} of column 1 after 5 commands: got {other:?}"),
            }
        }
    }

    // At run time on another device: fail_after(0) fails everything on column 3 at once.
    volume.devices()[1].faults().clear();
    let name3 = volume.devices()[3].name().to_string();
    volume.devices()[3].faults().fail_after(0);
    let big = Buffer::new(volume.size() + SHIFT).expect("buffer");
    let big_mapping = volume.register(&big).expect("register");
    let reads = common::tile(0, volume.size(), &SIZES, SHIFT);
    let mut failures = 0;
    common::run_async(&volume, &big_mapping, Op::Read, &reads, 64, |i, result| {
        let r = reads[i];
        if pieces_on(&r, 3).is_empty() {
            assert_eq!(result.unwrap_or_else(|e| panic!("{r:?}: {e}")), r.len);
            let got = common::buffer_bytes(&big, r.buffer_offset, r.len);
            common::assert_pattern(&format!("read {r:?}"), OLD, r.offset, &got);
        } else {
            failures += 1;
            let everything = 0..u64::MAX;
            let e = result.expect_err(&format!("{r:?} touches column 3"));
            let ranges = std::slice::from_ref(&everything);
            assert_range_error(&e, &r, Op::Read, 3, &name3, ranges);
        }
    });
    assert!(failures > 0 && failures < reads.len());
    volume.devices()[3].faults().clear();
    let all = [Req {
        offset: 0,
        buffer_offset: SHIFT,
        len: volume.size(),
    }];
    common::run_async(&volume, &big_mapping, Op::Read, &all, 1, |_, result| {
        assert_eq!(result.expect("faults cleared"), volume.size());
    });
    let got = common::buffer_bytes(&big, SHIFT, volume.size());
    common::assert_pattern("whole volume after clear", OLD, 0, &got);
}

#[test]
fn offline_device_fails_only_requests_touching_it() {
    let _watchdog = common::Watchdog::new("offline", Duration::from_secs(60));
    let bench = Bench::new();
    let volume = bench.filled();
    let buffer = Buffer::new(volume.size() + SHIFT).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let column = 0;
    let name = volume.devices()[column].name().to_string();
    volume.devices()[column].faults().set_offline(true);

    let reads = common::tile(0, volume.size(), &SIZES, SHIFT);
    let mut failures = 0;
    common::run_async(&volume, &mapping, Op::Read, &reads, 64, |i, result| {
        let r = reads[i];
        if pieces_on(&r, column).is_empty() {
            assert_eq!(result.unwrap_or_else(|e| panic!("{r:?}: {e}")), r.len);
            let got = common::buffer_bytes(&buffer, r.buffer_offset, r.len);
            common::assert_pattern(&format!("read {r:?}"), OLD, r.offset, &got);
        } else {
            failures += 1;
            match result {
                Err(Error::DeviceOffline { device }) => assert_eq!(device, name),
                other => panic!("{r:?} touches offline {name}: got {other:?}"),
            }
        }
    });
    assert!(failures > 0 && failures < reads.len());

    // Back online: everything reads again, through the same mapping.
    volume.devices()[column].faults().set_offline(false);
    let whole = Req {
        offset: 0,
        buffer_offset: SHIFT,
        len: volume.size(),
    };
    buffer
        .write_at(SHIFT, &vec![0u8; volume.size() as usize])
        .expect("wipe");
    assert_eq!(
        volume
            .read(&mapping, whole.offset, whole.buffer_offset, whole.len)
            .expect("online again"),
        whole.len
    );
    let got = common::buffer_bytes(&buffer, SHIFT, volume.size());
    common::assert_pattern("whole volume online again", OLD, 0, &got);
}

#[test]
fn device_offline_from_spec_refuses_registration_until_online() {
    let _watchdog = common::Watchdog::new("offline_spec", Duration::from_secs(60));
    let bench = Bench::new();
    drop(bench.filled());
    let volume = bench.volume(|i| {
        if i == 2 {
            "offline".into()
        } else {
            String::new()
        }
    });
    let name = volume.devices()[2].name().to_string();
    let buffer = Buffer::new(MIB).expect("buffer");
    match volume.register(&buffer) {
        Err(Error::Mapping(MappingError::Attach {
            device,
            source: ImportError::Offline,
        })) => assert_eq!(device, name),
        other => panic!("registering with {name} offline: got {other:?}"),
    }
    volume.devices()[2].faults().set_offline(false);
    let mapping = volume.register(&buffer).expect("register once online");
    assert_eq!(volume.read(&mapping, 0, 0, MIB).expect("read"), MIB);
    common::assert_pattern("first MiB", OLD, 0, &common::buffer_bytes(&buffer, 0, MIB));
}

#[test]
fn device_offline_during_a_migration_recovers_when_back() {
    let _watchdog = common::Watchdog::new("offline_migrate", Duration::from_secs(60));
    let bench = Bench::new();
    let volume = bench.filled();
    let buffer = Buffer::new(MIB).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let name = volume.devices()[1].name().to_string();
    volume.devices()[1].faults().set_offline(true);
    buffer.migrate().expect("migrate");
    // Column 0 still works (the mapping maps again, without the offline device).
    assert_eq!(volume.read(&mapping, 0, 0, UNIT).expect("column 0"), UNIT);
    common::assert_pattern("column 0", OLD, 0, &common::buffer_bytes(&buffer, 0, UNIT));
    // Column 1 fails naming the device.
    match volume.read(&mapping, UNIT, UNIT, UNIT) {
        Err(Error::DeviceOffline { device } | Error::NotAttached { device }) => {
            assert_eq!(device, name)
        }
        other => panic!("reading offline {name}: got {other:?}"),
    }
    volume.devices()[1].faults().set_offline(false);
    let result = volume.read(&mapping, UNIT, UNIT, UNIT);
    assert_eq!(
        result
            .unwrap_or_else(|e| panic!("{name} is back online, but the mapping still fails: {e}")),
        UNIT
    );
    common::assert_pattern(
        "column 1",
        OLD,
        UNIT,
        &common::buffer_bytes(&buffer, UNIT, UNIT),
    );
}

#[test]
fn bandwidth_and_latency_model_keeps_data_correct() {
    let _watchdog = common::Watchdog::new("bandwidth_latency", Duration::from_secs(60));
    let bench = Bench::new();
    let volume = bench.volume(|i| format!("bw={}M,lat={}us", 100 + 50 * i, 100 * (i + 1)));
    let buffer = buffer_with(&volume, NEW);
    let mapping = volume.register(&buffer).expect("register");
    // A quarter of the volume: 8 MiB written and read, 2 MiB per device.
    let end = volume.size() / 4;
    let writes = common::tile(0, end, &SIZES, SHIFT);
    common::run_async(&volume, &mapping, Op::Write, &writes, 32, |i, result| {
        assert_eq!(result.expect("write"), writes[i].len);
    });
    buffer
        .write_at(0, &vec![0u8; buffer.len() as usize])
        .expect("wipe");
    let reads = common::tile(0, end, &[132 * KIB, 20 * KIB], SHIFT);
    common::run_async(&volume, &mapping, Op::Read, &reads, 32, |i, result| {
        let r = reads[i];
        assert_eq!(result.expect("read"), r.len);
        let got = common::buffer_bytes(&buffer, r.buffer_offset, r.len);
        common::assert_pattern(&format!("read {r:?}"), NEW, r.offset, &got);
    });
    assert_eq!(
        volume.read(&mapping, 0, 0, 4 * LBA).expect("blocking"),
        4 * LBA
    );
    common::assert_pattern(
        "blocking read",
        NEW,
        0,
        &common::buffer_bytes(&buffer, 0, 4 * LBA),
    );
    let total: u64 = volume
        .devices()
        .iter()
        .map(|d| d.stats().bytes_written)
        .sum();
    assert_eq!(total, end);
}

#[test]
fn memory_backed_namespaces() {
    let _watchdog = common::Watchdog::new("memory_backed", Duration::from_secs(60));
    // Two memory namespaces striped.
    let devices: Vec<_> = (0..2)
        .map(|_| common::open_spec("emu:mem,size=16M,lba=4096,mdts=64K,qd=32"))
        .collect();
    for d in &devices {
        assert_eq!(d.name(), "emu:mem");
        assert_eq!(d.kind(), DeviceKind::Emulated);
        assert_eq!(d.size(), 16 * MIB);
        assert!(!d.is_direct());
    }
    let volume = Volume::striped(devices, StripeUnit::new(UNIT).expect("unit")).expect("volume");
    assert_eq!(volume.size(), 32 * MIB);
    let buffer = buffer_with(&volume, NEW);
    let mapping = volume.register(&buffer).expect("register");
    let writes = common::tile(0, volume.size(), &SIZES, SHIFT);
    common::run_async(&volume, &mapping, Op::Write, &writes, 64, |i, result| {
        assert_eq!(result.expect("write"), writes[i].len);
    });
    buffer
        .write_at(0, &vec![0u8; buffer.len() as usize])
        .expect("wipe");
    let reads = common::tile(0, volume.size(), &[100 * KIB, 8 * KIB], SHIFT);
    common::run_async(&volume, &mapping, Op::Read, &reads, 64, |i, result| {
        assert_eq!(result.expect("read"), reads[i].len);
    });
    let got = common::buffer_bytes(&buffer, SHIFT, volume.size());
    common::assert_pattern("memory-backed striped volume", NEW, 0, &got);

    // One memory namespace with 512-byte LBAs as a raw volume: 512-byte granularity works.
    let raw = Volume::raw(common::open_spec("emu:mem,size=8M,lba=512,mdts=4K")).expect("raw");
    assert_eq!((raw.size(), raw.block_size()), (8 * MIB, 512));
    let small = Buffer::new(64 * KIB).expect("buffer");
    small
        .write_at(0, &common::pattern(NEW, 1536, 6656))
        .expect("write_at");
    let m = raw.register(&small).expect("register");
    assert_eq!(raw.write(&m, 1536, 0, 6656).expect("write"), 6656);
    assert_eq!(raw.read(&m, 1536, 8192, 6656).expect("read"), 6656);
    common::assert_pattern(
        "raw 512",
        NEW,
        1536,
        &common::buffer_bytes(&small, 8192, 6656),
    );
    // mdts 4K: the 6.5 KiB transfer took two commands each way.
    assert_eq!(raw.devices()[0].stats().writes, 2);
    assert_eq!(raw.devices()[0].stats().reads, 2);
}

#[test]
fn tiny_queue_depth_and_transfer_size() {
    let _watchdog = common::Watchdog::new("tiny_queue", Duration::from_secs(60));
    let bench = Bench::new();
    // One command at a time per device, 4 KiB each, with latency: a 516 KiB request is
    // 129 commands that each wait for the previous one's slot.
    let devices = common::open_emulated(&bench.paths[..2], |_| {
        "size=4M,lba=4096,mdts=4K,qd=1,lat=20us".into()
    });
    assert!(devices.iter().all(|d| d.queue_depth() == 1));
    let volume = Volume::striped(devices, StripeUnit::new(UNIT).expect("unit")).expect("volume");
    let buffer = buffer_with(&volume, NEW);
    let mapping = volume.register(&buffer).expect("register");
    let end = 2 * MIB;
    let writes = common::tile(0, end, &SIZES, SHIFT);
    common::run_async(&volume, &mapping, Op::Write, &writes, 16, |i, result| {
        assert_eq!(result.expect("write"), writes[i].len);
    });
    let commands: u64 = volume.devices().iter().map(|d| d.stats().writes).sum();
    assert_eq!(commands, end / LBA, "one command per 4 KiB");
    buffer
        .write_at(0, &vec![0u8; buffer.len() as usize])
        .expect("wipe");
    let reads = common::tile(0, end, &[516 * KIB, 12 * KIB], SHIFT);
    common::run_async(&volume, &mapping, Op::Read, &reads, 16, |i, result| {
        assert_eq!(result.expect("read"), reads[i].len);
    });
    let got = common::buffer_bytes(&buffer, SHIFT, end);
    common::assert_pattern("through queue depth 1", NEW, 0, &got);
}

#[test]
fn dropping_the_volume_waits_for_requests_in_flight() {
    let _watchdog = common::Watchdog::new("drop_in_flight", Duration::from_secs(60));
    let bench = Bench::new();
    drop(bench.filled());
    // Slow devices, so the requests are still in flight when the volume goes.
    let volume = bench.volume(|_| "bw=50M,lat=2ms".into());
    let buffer = Buffer::new(volume.size() + SHIFT).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    let reads = common::tile(0, 4 * MIB, &SIZES, SHIFT);
    let mut ctx = stripefs_engine::IoContext::new(reads.len());
    for (i, r) in reads.iter().enumerate() {
        ctx.submit(
            &volume,
            stripefs_engine::Request {
                op: Op::Read,
                mapping: &mapping,
                offset: r.offset,
                buffer_offset: r.buffer_offset,
                len: r.len,
                tag: i as u64,
            },
        )
        .expect("submit");
    }
    drop(volume);
    // Every request was finished by the devices before they closed; none is lost.
    let mut done = Vec::new();
    assert_eq!(ctx.wait(reads.len(), &mut done), reads.len());
    for c in done {
        let r = reads[c.tag as usize];
        assert_eq!(c.result.unwrap_or_else(|e| panic!("{r:?}: {e}")), r.len);
        let got = common::buffer_bytes(&buffer, r.buffer_offset, r.len);
        common::assert_pattern(&format!("read {r:?}"), OLD, r.offset, &got);
    }
    assert!(ctx.wait_one().is_none());
    // The buffer can still move, and the mapping detaches cleanly from the closed devices.
    buffer.migrate().expect("migrate after the volume closed");
    drop(mapping);
    drop(buffer);
}
