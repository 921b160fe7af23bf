//! Four real loop devices (`losetup --direct-io=on`) striped in 64 KiB units, written and
//! read with registered I/O in requests whose sizes the unit does not divide, then checked
//! device by device with plain `O_DIRECT` reads against what the layout says each holds.
//!
//! Needs root and loop devices; without them it prints `skipped: <reason>` and passes,
//! unless `STRIPEFS_REQUIRE_LOOP` (or `STRIPEFS_REQUIRE_ROOT`) is set: then a missing
//! prerequisite fails the test.

mod common;

use std::path::Path;
use std::time::Duration;

use common::mount::Loops;
use common::{KIB, MIB, Req};
use stripefs_engine::{DeviceKind, DeviceQueue, Op, QueueOptions, Volume};
use stripefs_layout::StripeUnit;
use stripefs_mapping::Buffer;

const DEVICES: usize = 4;
const DEVICE_SIZE: u64 = 16 * MIB;
const UNIT: u64 = 64 * KIB;
const SEED: u64 = 0x100b_5717_1fe5;
/// Buffer offset = volume offset + SHIFT, so the two never coincide.
const SHIFT: u64 = 12 * KIB;

/// Whether the kernel runs loop device `dev` with direct I/O (`/sys/block/loopN/loop/dio`).
fn loop_uses_direct_io(dev: &Path) -> bool {
    let name = dev.file_name().expect("device name").to_string_lossy();
    std::fs::read_to_string(format!("/sys/block/{name}/loop/dio"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

#[test]
fn four_loop_devices_striped() {
    if common::require::skip(&[common::require::Requirement::Loop]) {
        return;
    }
    let _watchdog = common::Watchdog::new("four_loop_devices_striped", Duration::from_secs(60));
    let dir = common::scratch_dir();
    let files = common::image_paths(dir.path(), DEVICES);
    for f in &files {
        std::fs::File::create(f)
            .and_then(|file| file.set_len(DEVICE_SIZE))
            .expect("create sparse backing file");
    }
    // Declared before the volume, so the devices are detached after it is closed.
    let loops = Loops::attach(&files);
    for dev in &loops.devices {
        assert!(
            loop_uses_direct_io(dev),
            "{} does not run with direct I/O",
            dev.display()
        );
    }

    let layout = {
        let devices: Vec<DeviceQueue> = loops
            .devices
            .iter()
            .map(|d| {
                DeviceQueue::open_path(
                    d,
                    &QueueOptions {
                        queue_depth: 32,
                        ..QueueOptions::default()
                    },
                )
                .unwrap_or_else(|e| panic!("open {}: {e}", d.display()))
            })
            .collect();
        for (d, path) in devices.iter().zip(&loops.devices) {
            assert_eq!(d.kind(), DeviceKind::Block);
            assert_eq!(d.size(), DEVICE_SIZE);
            assert_eq!(d.name(), path.display().to_string());
            assert!(d.is_direct());
        }
        let volume =
            Volume::striped(devices, StripeUnit::new(UNIT).expect("unit")).expect("striped volume");
        assert_eq!(volume.size(), DEVICES as u64 * DEVICE_SIZE);
        assert!(
            4096 % volume.block_size() == 0,
            "block size {}",
            volume.block_size()
        );
        exercise(&volume);
        volume.layout().clone()
        // The volume (and with it the exclusive opens of the loop devices) closes here.
    };

    // Plain O_DIRECT reads of each device, byte for byte against the layout's placement.
    for (column, dev) in loops.devices.iter().enumerate() {
        let got = common::read_direct(dev, 0, DEVICE_SIZE);
        let want = common::expected_device_image(&layout, column, DEVICE_SIZE, SEED);
        common::assert_bytes(
            &format!("{} (column {column}) read directly", dev.display()),
            &got,
            &want,
        );
    }
}

/// Writes the pattern over the whole volume (blocking, then async), and reads it back twice
/// (blocking, then async with many requests in flight), checking every byte.
fn exercise(volume: &Volume) {
    let size = volume.size();
    let buffer = Buffer::new(size + SHIFT).expect("buffer");
    let mut chunk = vec![0u8; 4 * MIB as usize];
    for at in (0..size).step_by(chunk.len()) {
        common::fill(SEED, at, &mut chunk);
        buffer.write_at(at + SHIFT, &chunk).expect("write_at");
    }
    let mapping = volume.register(&buffer).expect("register");

    // Writes: sizes the 64 KiB unit does not divide, so requests start and end mid-unit.
    let writes = common::tile(
        0,
        size,
        &[
            196 * KIB,
            4 * KIB,
            260 * KIB,
            68 * KIB,
            MIB + 4 * KIB,
            12 * KIB,
        ],
        SHIFT,
    );
    let (blocking, queued) = writes.split_at(writes.len() / 3);
    for r in blocking {
        let n = volume
            .write(&mapping, r.offset, r.buffer_offset, r.len)
            .unwrap_or_else(|e| panic!("blocking write {r:?}: {e}"));
        assert_eq!(n, r.len);
    }
    common::run_async(volume, &mapping, Op::Write, queued, 64, |i, result| {
        let r = queued[i];
        assert_eq!(
            result.unwrap_or_else(|e| panic!("async write {r:?}: {e}")),
            r.len
        );
    });
    volume.sync().expect("sync");
    for d in volume.devices() {
        let s = d.stats();
        assert_eq!(s.bytes_written, DEVICE_SIZE, "{}: {s:?}", d.name());
        assert_eq!(s.errors, 0, "{}: {s:?}", d.name());
    }

    // Blocking reads into a wiped buffer.
    wipe(&buffer);
    for r in common::tile(0, size, &[196 * KIB], SHIFT) {
        let n = volume
            .read(&mapping, r.offset, r.buffer_offset, r.len)
            .unwrap_or_else(|e| panic!("blocking read {r:?}: {e}"));
        assert_eq!(n, r.len);
    }
    check_buffer(&buffer, size, "after blocking reads");

    // Async reads, 128 in flight, cut differently and starting mid-unit.
    wipe(&buffer);
    let mut reads = common::tile(
        4 * KIB,
        size,
        &[192 * KIB + 4 * KIB, 8 * KIB, 452 * KIB],
        SHIFT,
    );
    reads.push(Req {
        offset: 0,
        buffer_offset: SHIFT,
        len: 4 * KIB,
    });
    common::run_async(volume, &mapping, Op::Read, &reads, 128, |i, result| {
        let r = reads[i];
        assert_eq!(
            result.unwrap_or_else(|e| panic!("async read {r:?}: {e}")),
            r.len
        );
        let got = common::buffer_bytes(&buffer, r.buffer_offset, r.len);
        common::assert_pattern(&format!("async read {r:?}"), SEED, r.offset, &got);
    });
    check_buffer(&buffer, size, "after async reads");
    for d in volume.devices() {
        let s = d.stats();
        assert_eq!(s.bytes_read, 2 * DEVICE_SIZE, "{}: {s:?}", d.name());
        assert_eq!(s.errors, 0, "{}: {s:?}", d.name());
    }
    volume.unregister(&mapping).expect("unregister");
}

fn wipe(buffer: &Buffer) {
    buffer
        .write_at(0, &vec![0u8; buffer.len() as usize])
        .expect("wipe");
}

/// The buffer holds the pattern of the whole volume at SHIFT, and zeros before it.
fn check_buffer(buffer: &Buffer, size: u64, when: &str) {
    let all = common::buffer_bytes(buffer, 0, buffer.len());
    assert!(
        all[..SHIFT as usize].iter().all(|&b| b == 0),
        "{when}: bytes before the first request's buffer offset were written"
    );
    common::assert_pattern(
        &format!("buffer {when}"),
        SEED,
        0,
        &all[SHIFT as usize..(SHIFT + size) as usize],
    );
}
