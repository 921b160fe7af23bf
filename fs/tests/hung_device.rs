//! A device that stops answering (the emulated `hang` fault) does not hang the filesystem:
//! reads and writes that reach it fail within the device's timeout with an error naming it,
//! and a clean unmount (`shutdown`) ends within the timeout too, reporting the failure.

mod common;

use std::time::{Duration, Instant};

use common::{ME, ROOT, data, name};
use stripefs_engine::{DeviceSpec, Error};
use stripefs_fs::filesystem::{self, Filesystem, FsError, MkfsOptions};

const TIMEOUT: Duration = Duration::from_millis(300);
/// A scan period (timeout / 8) plus a loaded machine.
const SLACK: Duration = Duration::from_millis(700);

/// Checks that `result` failed with a timeout of `device`, in bounded time.
#[track_caller]
fn assert_timed_out<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, FsError>,
    took: Duration,
    device: &str,
) {
    println!("{what} with a hung device: {took:?}");
    match result {
        Err(FsError::Device(Error::Timeout { device: d, .. })) => assert_eq!(d, device),
        other => panic!("{what}: {other:?}"),
    }
    assert!(
        took >= TIMEOUT,
        "{what} failed before the timeout: {took:?}"
    );
    assert!(took < TIMEOUT + SLACK, "{what} took {took:?}");
}

#[test]
fn io_and_unmount_end_in_bounded_time_when_a_device_hangs() {
    let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
    let specs: Vec<DeviceSpec> = (0..3)
        .map(|i| {
            format!(
                "emu:{}/d{i}.img,size=40M,timeout=300ms",
                dir.path().display()
            )
            .parse()
            .expect("spec")
        })
        .collect();
    let options = MkfsOptions {
        stripe_unit: 64 << 10,
        metadata_size: Some(1 << 20),
        ..MkfsOptions::default()
    };
    filesystem::mkfs(&specs, &options).expect("mkfs");
    let fs = Filesystem::open(&specs).expect("mount");
    let file = fs.create(ROOT, name("f"), 0o644, ME).expect("create");
    let old = data(1, 1 << 20);
    fs.write(file.ino, 0, &old).expect("write");
    fs.fsync(file.ino).expect("fsync");

    let hung = fs.devices()[1].name().to_string();
    fs.devices()[1].faults().hang_after(0);
    let new = data(2, 1 << 20);
    let started = Instant::now();
    let written = fs.write(file.ino, 0, &new);
    assert_timed_out("a 1 MiB write", written, started.elapsed(), &hung);
    let started = Instant::now();
    let read = fs.read(file.ino, 0, 1 << 20);
    assert_timed_out("a 1 MiB read", read, started.elapsed(), &hung);
    // A read that stays on the other devices (the first stripe unit is on device 0) works;
    // the failed write may or may not have landed there.
    let unit = 64 << 10;
    let got = fs
        .read(file.ino, 0, unit as u32)
        .expect("read from device 0");
    assert!(
        got[..] == old[..unit] || got[..] == new[..unit],
        "the first unit holds neither the old nor the new data"
    );
    let started = Instant::now();
    let shutdown = fs.shutdown();
    assert_timed_out("unmount", shutdown, started.elapsed(), &hung);
    let started = Instant::now();
    drop(fs);
    assert!(
        started.elapsed() < SLACK,
        "closing took {:?}",
        started.elapsed()
    );
}
