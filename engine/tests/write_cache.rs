//! The volatile write cache of emulated devices (`wcache=on`), simulated power cuts, and the
//! write recorder, on real io_uring queues over backing files in /var/tmp.
//!
//! A power cut is checked by what the device holds after it is opened again from the same
//! spec ("power on"): the flushed writes, plus exactly what the policy kept of the others.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stripefs_engine::spec::{DeviceSpec, SpecError};
use stripefs_engine::{
    DeviceQueue, Error, IoContext, Op, PowerCut, PowerCutReport, QueueOptions, Request, Volume,
    WriteEvent, WriteLog,
};
use stripefs_mapping::Buffer;

const BLOCK: usize = 4096;
const SIZE: u64 = 1 << 20;

/// A scratch directory for backing files.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stripefs-wcache-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir in /var/tmp")
}

/// The spec of an emulated device over `path` with extra settings `extra`.
fn spec(path: &Path, extra: &str) -> DeviceSpec {
    let text = format!("emu:{},size=1M,lba=4096{extra}", path.display());
    text.parse().expect("spec")
}

/// A raw volume over the emulated device `emu:path,...extra`.
fn open(path: &Path, extra: &str) -> Volume {
    let device = DeviceQueue::open(&spec(path, extra)).expect("open device");
    Volume::raw(device).expect("volume")
}

fn device(volume: &Volume) -> &DeviceQueue {
    &volume.devices()[0]
}

/// `blocks` blocks whose block `i` is filled with `first + i`.
fn pattern(first: u8, blocks: usize) -> Vec<u8> {
    (0..blocks)
        .flat_map(|i| vec![first.wrapping_add(i as u8); BLOCK])
        .collect()
}

/// Writes `data` at `offset` with a registered write.
fn write(volume: &Volume, offset: u64, data: &[u8]) -> Result<u64, Error> {
    let buffer = Buffer::new(data.len() as u64).expect("buffer");
    buffer.write_at(0, data).expect("fill buffer");
    let mapping = volume.register(&buffer)?;
    volume.write(&mapping, offset, 0, data.len() as u64)
}

/// Reads `len` bytes at `offset` with a registered read.
fn read(volume: &Volume, offset: u64, len: usize) -> Vec<u8> {
    let buffer = Buffer::new(len as u64).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    volume
        .read(&mapping, offset, 0, len as u64)
        .expect("registered read");
    let mut out = vec![0u8; len];
    buffer.read_at(0, &mut out).expect("buffer read");
    out
}

/// Two writes, the first flushed and the second not, and an unflushed overwrite of half
/// the first; then a power cut with `policy`; returns the report and the device reopened.
fn cut_after_a_flushed_and_an_unflushed_write(
    path: &Path,
    policy: PowerCut,
) -> (PowerCutReport, Volume) {
    let volume = open(path, ",wcache=on");
    write(&volume, 0, &pattern(0xA0, 2)).expect("write A");
    volume.sync().expect("flush A");
    write(&volume, 64 << 10, &pattern(0xB0, 3)).expect("write B");
    write(&volume, 4096, &pattern(0xC0, 1)).expect("write C over A");
    // Reads see unflushed writes at once.
    assert_eq!(read(&volume, 64 << 10, 3 * BLOCK), pattern(0xB0, 3));
    assert_eq!(read(&volume, 4096, BLOCK), pattern(0xC0, 1));
    let report = device(&volume).power_cut(policy).expect("power cut");
    drop(volume);
    (report, open(path, ",wcache=on"))
}

#[test]
fn drop_all_keeps_only_flushed_writes() {
    let dir = scratch();
    let path = dir.path().join("d.img");
    let (report, volume) = cut_after_a_flushed_and_an_unflushed_write(&path, PowerCut::DropAll);
    assert_eq!(
        report,
        PowerCutReport {
            unflushed: 2,
            kept: 0,
            torn: 0
        }
    );
    assert_eq!(read(&volume, 0, 2 * BLOCK), pattern(0xA0, 2), "A, durable");
    assert_eq!(
        read(&volume, 64 << 10, 3 * BLOCK),
        vec![0; 3 * BLOCK],
        "B lost"
    );
}

#[test]
fn keep_all_keeps_every_write() {
    let dir = scratch();
    let path = dir.path().join("d.img");
    let (report, volume) = cut_after_a_flushed_and_an_unflushed_write(&path, PowerCut::KeepAll);
    assert_eq!(
        report,
        PowerCutReport {
            unflushed: 2,
            kept: 2,
            torn: 0
        }
    );
    let a_then_c = [pattern(0xA0, 1), pattern(0xC0, 1)].concat();
    assert_eq!(read(&volume, 0, 2 * BLOCK), a_then_c);
    assert_eq!(read(&volume, 64 << 10, 3 * BLOCK), pattern(0xB0, 3));
}

/// What became of one unflushed write, judged block by block after a power cut.
#[derive(Debug, PartialEq)]
enum Seen {
    Dropped,
    Kept,
    Torn,
}

/// Compares each block of `got` with the durable and the written contents.
fn judge(got: &[u8], durable: &[u8], written: &[u8]) -> Seen {
    let landed: Vec<bool> = got
        .chunks(BLOCK)
        .zip(durable.chunks(BLOCK).zip(written.chunks(BLOCK)))
        .map(|(g, (d, w))| {
            assert!(g == d || g == w, "a block is neither durable nor written");
            g == w
        })
        .collect();
    match landed.iter().filter(|&&l| l).count() {
        0 => Seen::Dropped,
        n if n == landed.len() => Seen::Kept,
        _ => Seen::Torn,
    }
}

#[test]
fn random_cuts_keep_whole_blocks_and_sometimes_tear() {
    let dir = scratch();
    let writes: [(u64, usize); 4] = [(0, 4), (64 << 10, 2), (128 << 10, 8), (512 << 10, 3)];
    let durable = |blocks| pattern(0x10, blocks);
    let written = |i: usize, blocks| pattern(0x40 + 0x20 * i as u8, blocks);
    let (mut kept, mut dropped, mut torn) = (0, 0, 0);
    for seed in 0..40u64 {
        let path = dir.path().join(format!("d{seed}.img"));
        let volume = open(&path, ",wcache=on");
        for &(offset, blocks) in &writes {
            write(&volume, offset, &durable(blocks)).expect("durable write");
        }
        volume.sync().expect("flush");
        for (i, &(offset, blocks)) in writes.iter().enumerate() {
            write(&volume, offset, &written(i, blocks)).expect("unflushed write");
        }
        let report = device(&volume)
            .power_cut(PowerCut::Random { seed })
            .expect("power cut");
        drop(volume);
        let volume = open(&path, ",wcache=on");
        let seen: Vec<Seen> = writes
            .iter()
            .enumerate()
            .map(|(i, &(offset, blocks))| {
                let got = read(&volume, offset, blocks * BLOCK);
                judge(&got, &durable(blocks), &written(i, blocks))
            })
            .collect();
        let count = |s: Seen| seen.iter().filter(|&x| *x == s).count();
        assert_eq!(report.unflushed, writes.len(), "seed {seed}");
        assert_eq!(report.torn, count(Seen::Torn), "seed {seed}: {seen:?}");
        assert_eq!(
            report.kept,
            count(Seen::Kept) + count(Seen::Torn),
            "seed {seed}"
        );
        assert!(report.torn <= 1, "seed {seed}");
        kept += count(Seen::Kept);
        dropped += count(Seen::Dropped);
        torn += count(Seen::Torn);
    }
    assert!(
        kept > 0 && dropped > 0 && torn > 0,
        "kept {kept}, dropped {dropped}, torn {torn}"
    );
}

#[test]
fn a_cut_device_is_offline_until_reopened() {
    let dir = scratch();
    let path = dir.path().join("d.img");
    let volume = open(&path, ",wcache=on");
    let buffer = Buffer::new(BLOCK as u64).expect("buffer");
    let mapping = volume.register(&buffer).expect("register");
    volume.write(&mapping, 0, 0, BLOCK as u64).expect("write");
    device(&volume)
        .power_cut(PowerCut::KeepAll)
        .expect("power cut");
    let offline = |r: Result<(), Error>, what: &str| {
        assert!(
            matches!(r, Err(Error::DeviceOffline { .. })),
            "{what} after a power cut: {r:?}"
        )
    };
    offline(
        volume.write(&mapping, 0, 0, BLOCK as u64).map(drop),
        "write",
    );
    offline(volume.read(&mapping, 0, 0, BLOCK as u64).map(drop), "read");
    offline(volume.sync(), "flush");
    offline(
        device(&volume).power_cut(PowerCut::DropAll).map(drop),
        "second power cut",
    );
    drop(mapping);
    drop(volume);
    let volume = open(&path, ",wcache=on");
    write(&volume, 0, &pattern(1, 1)).expect("write after power on");
    assert_eq!(read(&volume, 0, BLOCK), pattern(1, 1));
}

#[test]
fn power_cut_needs_a_write_cache() {
    let dir = scratch();
    let emulated = open(&dir.path().join("e.img"), "");
    let path = dir.path().join("f.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("device file");
    let plain = DeviceQueue::open_path(&path, &QueueOptions::default()).expect("open file");
    for d in [device(&emulated), &plain] {
        match d.power_cut(PowerCut::DropAll) {
            Err(e @ Error::Emulation { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("no volatile write cache") && message.contains("wcache=on"),
                    "{message}"
                );
            }
            other => panic!("power cut of {} without a cache: {other:?}", d.name()),
        }
    }
    // Refused, the device keeps working.
    write(&emulated, 0, &pattern(7, 1)).expect("write after a refused cut");
    assert_eq!(read(&emulated, 0, BLOCK), pattern(7, 1));
}

/// A write of `len` bytes from a registered buffer, started and left in flight.
fn start_write(ctx: &mut IoContext, volume: &Volume, mapping: &stripefs_mapping::Mapping) {
    let request = Request {
        op: Op::Write,
        mapping,
        offset: 0,
        buffer_offset: 0,
        len: BLOCK as u64,
        tag: 1,
    };
    ctx.submit(volume, request).expect("submit");
}

#[test]
fn a_write_in_flight_during_a_flush_stays_unflushed() {
    let dir = scratch();
    let path = dir.path().join("d.img");
    // Completions are held back 200 ms, so the flush starts while the write is in flight.
    let volume = open(&path, ",wcache=on,lat=200ms");
    let buffer = Buffer::new(BLOCK as u64).expect("buffer");
    buffer.write_at(0, &pattern(0x5A, 1)).expect("fill");
    let mapping = volume.register(&buffer).expect("register");
    let mut ctx = IoContext::new(4);
    start_write(&mut ctx, &volume, &mapping);
    volume.sync().expect("flush");
    let mut done = Vec::new();
    ctx.wait(1, &mut done);
    assert!(done[0].result.is_ok(), "{:?}", done[0].result);
    let report = device(&volume)
        .power_cut(PowerCut::DropAll)
        .expect("power cut");
    assert_eq!(report.unflushed, 1);
    drop((mapping, volume));
    let volume = open(&path, ",wcache=on");
    assert_eq!(read(&volume, 0, BLOCK), vec![0; BLOCK]);
}

#[test]
fn a_power_cut_waits_for_writes_in_flight() {
    let dir = scratch();
    let path = dir.path().join("d.img");
    let volume = open(&path, ",wcache=on,lat=100ms");
    let buffer = Buffer::new(BLOCK as u64).expect("buffer");
    buffer.write_at(0, &pattern(0x6B, 1)).expect("fill");
    let mapping = volume.register(&buffer).expect("register");
    let mut ctx = IoContext::new(4);
    start_write(&mut ctx, &volume, &mapping);
    let report = device(&volume)
        .power_cut(PowerCut::DropAll)
        .expect("power cut");
    assert_eq!(
        report.unflushed, 1,
        "the write in flight counts as unflushed"
    );
    let mut done = Vec::new();
    ctx.wait(1, &mut done);
    assert!(done[0].result.is_ok(), "{:?}", done[0].result);
    drop((mapping, volume));
    let volume = open(&path, ",wcache=on");
    assert_eq!(read(&volume, 0, BLOCK), vec![0; BLOCK]);
}

fn write_event(device: usize, offset: u64, data: Vec<u8>) -> WriteEvent {
    WriteEvent::Write {
        device,
        offset,
        data: Arc::from(data),
    }
}

#[test]
fn two_devices_record_into_one_log() {
    let dir = scratch();
    // Device 0 is emulated with a cache and splits commands at 64K; device 1 is a plain file.
    let emulated = open(&dir.path().join("e.img"), ",mdts=64K,wcache=on");
    let path: PathBuf = dir.path().join("f.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("device file");
    let plain = Volume::raw(DeviceQueue::open_path(&path, &QueueOptions::default()).expect("open"))
        .expect("volume");
    write(&emulated, 0, &pattern(9, 1)).expect("write before recording");
    let log = WriteLog::new();
    device(&emulated).record_to(log.clone(), 0);
    device(&plain).record_to(log.clone(), 1);
    assert!(log.is_empty());

    log.mark(1);
    write(&emulated, 8192, &pattern(0x20, 2)).expect("write");
    write(&plain, 4096, &pattern(0x30, 1)).expect("write");
    emulated.sync().expect("flush");
    log.mark(2);
    write(&plain, 0, &pattern(0x40, 1)).expect("write");
    write(&emulated, 128 << 10, &pattern(0x50, 20)).expect("a write split in two commands");
    plain.sync().expect("flush");
    device(&plain).faults().fail_range(0..4096);
    assert!(
        write(&plain, 0, &pattern(0x60, 1)).is_err(),
        "injected fault"
    );
    log.mark(3);

    let split = pattern(0x50, 20);
    let want = vec![
        WriteEvent::Mark(1),
        write_event(0, 8192, pattern(0x20, 2)),
        write_event(1, 4096, pattern(0x30, 1)),
        WriteEvent::Flush { device: 0 },
        WriteEvent::Mark(2),
        write_event(1, 0, pattern(0x40, 1)),
        write_event(0, 128 << 10, split[..64 << 10].to_vec()),
        write_event(0, 192 << 10, split[64 << 10..].to_vec()),
        WriteEvent::Flush { device: 1 },
        WriteEvent::Mark(3),
    ];
    assert_eq!(log.events(), want);
    assert_eq!(log.len(), want.len());
}

#[test]
fn wcache_in_specs() {
    let parse = |s: &str| s.parse::<DeviceSpec>();
    let cache = |s: &str| match parse(s) {
        Ok(DeviceSpec::Emulated(spec)) => spec.write_cache,
        other => panic!("{s}: {other:?}"),
    };
    assert!(cache("emu:/x,size=1M,wcache=on"));
    assert!(!cache("emu:/x,size=1M,wcache=off"));
    assert!(!cache("emu:/x,size=1M"));
    match parse("emu:/x,wcache=maybe") {
        Err(e @ SpecError::BadValue { .. }) => assert_eq!(
            e.to_string(),
            "emulated device spec `emu:/x,wcache=maybe`: bad wcache `maybe`: expected on or off"
        ),
        other => panic!("{other:?}"),
    }
}
