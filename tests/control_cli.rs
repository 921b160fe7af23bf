//! `stripefs cat --registered` and `stripefs stat` against a mounted stripefs: first with the
//! mount served by this test process (the FUSE adapter and the control server in-process),
//! then with `stripefs mount --daemon`. `stripefs cat --registered FILE | sha256sum` must equal
//! `sha256sum FILE`; the throughput of `stripefs cat --registered` and of plain `cat` of the
//! same file through the mount is measured in one run and printed.
//!
//! Needs root and /dev/fuse; without them each test prints `skipped: <reason>` (and fails
//! instead when `STRIPEFS_REQUIRE_FUSE` is set).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mount::{Daemon, STRIPEFS, image_files, mkfs, skip_reason};
use common::{MIB, Watchdog};
use stripefs_engine::{DeviceSpec, pattern};
use stripefs_fs::control::{Server, ServerHandle};
use stripefs_fs::filesystem::{self, Filesystem, MkfsOptions};
use stripefs_fs::mount::{Mount, MountOptions};

/// A stripefs mounted by this process, with its control server.
struct InProcess {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    fs: Arc<Filesystem>,
    server: Option<ServerHandle>,
    mount: Option<Mount>,
}

impl InProcess {
    fn new(devices: usize, size: u64) -> InProcess {
        let dir = tempfile::Builder::new()
            .prefix("stripefs-control-cli-")
            .tempdir_in("/var/tmp")
            .expect("scratch dir");
        let specs: Vec<DeviceSpec> = image_files(dir.path(), devices, size)
            .into_iter()
            .map(DeviceSpec::Path)
            .collect();
        filesystem::mkfs(&specs, &MkfsOptions::default()).expect("mkfs");
        let fs = Filesystem::open(&specs).expect("open");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mountpoint");
        let mount = Mount::start(fs.clone(), &mnt, &MountOptions::default(), || {}).expect("mount");
        let mnt = mount.mountpoint().to_path_buf();
        let server = Server::start(fs.clone(), &mnt).expect("control server");
        InProcess {
            _dir: dir,
            mnt,
            fs,
            server: Some(server),
            mount: Some(mount),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        if let Some(mut mount) = self.mount.take()
            && mount.unmount().is_ok()
        {
            let _ = mount.wait();
        }
        let result = self.fs.shutdown();
        if !std::thread::panicking() {
            result.expect("filesystem shutdown");
        }
    }
}

fn write_pattern(path: &Path, seed: u64, len: usize) {
    let mut data = vec![0u8; len];
    pattern::fill(seed, 0, &mut data);
    std::fs::write(path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `bash -o pipefail -c SCRIPT` with `$STRIPEFS` set; panics with its stderr unless
/// it exits 0.
#[track_caller]
fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .env("STRIPEFS", STRIPEFS)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_of_cat_registered(file: &Path) -> String {
    sh(&format!(
        "\"$STRIPEFS\" cat --registered '{}' | sha256sum",
        file.display()
    ))
    .split_whitespace()
    .next()
    .unwrap_or_default()
    .to_string()
}

fn sha256(file: &Path) -> String {
    sh(&format!("sha256sum '{}'", file.display()))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Seconds to copy `file` to /dev/null with `program args... file`.
fn time_to_null(program: &str, args: &[&str], file: &Path) -> f64 {
    let null = File::create("/dev/null").expect("/dev/null");
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .arg(file)
        .stdout(Stdio::from(null))
        .status()
        .expect("run");
    assert!(status.success(), "{program} {args:?} failed: {status}");
    start.elapsed().as_secs_f64()
}

#[test]
fn cat_registered_matches_sha256sum_and_its_throughput_is_measured_next_to_cat() {
    if let Some(reason) = skip_reason(false) {
        eprintln!("skipped: {reason}");
        return;
    }
    let _w = Watchdog::new("cat --registered", Duration::from_secs(600));
    let m = InProcess::new(4, 320 * MIB);
    // Edge sizes, then one large file for the throughput.
    for (name, size) in [
        ("empty", 0usize),
        ("one", 1),
        ("block", 4096),
        ("odd", 5 * MIB as usize + 777),
        ("exact", 8 * MIB as usize),
    ] {
        let path = m.mnt.join(name);
        write_pattern(&path, size as u64 + 1, size);
        assert_eq!(
            sha256_of_cat_registered(&path),
            sha256(&path),
            "stripefs cat --registered {name} | sha256sum"
        );
    }
    // Several files in one command, like cat.
    let a = m.mnt.join("odd");
    let b = m.mnt.join("one");
    let joined = sh(&format!(
        "\"$STRIPEFS\" cat --registered '{}' '{}' | sha256sum; cat '{}' '{}' | sha256sum",
        a.display(),
        b.display(),
        a.display(),
        b.display()
    ));
    let sums: Vec<&str> = joined
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0], sums[1], "two files in one command");
    // `| head -c` closes the pipe early: cat stops quietly.
    sh(&format!(
        "\"$STRIPEFS\" cat --registered '{}' | head -c 1000 >/dev/null",
        a.display()
    ));

    let big = m.mnt.join("big");
    let size = 512 * MIB as usize;
    write_pattern(&big, 99, size);
    assert_eq!(
        sha256_of_cat_registered(&big),
        sha256(&big),
        "the large file"
    );
    let (mut registered, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        registered.push(time_to_null(STRIPEFS, &["cat", "--registered"], &big));
        plain.push(time_to_null("cat", &[], &big));
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mbs = |secs: f64| size as f64 / secs / 1e6;
    eprintln!(
        "throughput of a {} MiB file on a 4-device mount ({} build, best of 3): \
         stripefs cat --registered {:.0} MB/s, cat {:.0} MB/s (ratio {:.2})",
        size as u64 / MIB,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        mbs(best(&registered)),
        mbs(best(&plain)),
        best(&plain) / best(&registered),
    );
}

#[test]
fn stat_shows_device_counters_and_live_registrations() {
    if let Some(reason) = skip_reason(false) {
        eprintln!("skipped: {reason}");
        return;
    }
    let _w = Watchdog::new("stat", Duration::from_secs(120));
    let m = InProcess::new(3, 64 * MIB);
    let path = m.mnt.join("f");
    write_pattern(&path, 7, 3 * MIB as usize);
    let file = File::open(&path).expect("open");
    let client = stripefs_client::Client::connect(&path).expect("connect");
    let buffer = stripefs_client::ClientBuffer::new(MIB).expect("buffer");
    let handle = client.register(&file, &buffer).expect("register");
    client.read(handle, 0, 0, MIB).expect("read");
    let out = sh(&format!("\"$STRIPEFS\" stat '{}'", m.mnt.display()));
    for d in m.fs.devices() {
        assert!(
            out.contains(d.name()),
            "device {} missing:\n{out}",
            d.name()
        );
    }
    assert!(out.contains("registrations: 1"), "{out}");
    assert!(
        out.contains(&std::process::id().to_string()),
        "our pid missing:\n{out}"
    );
    client.unregister(handle).expect("unregister");
    let out = sh(&format!(
        "\"$STRIPEFS\" stat '{}'",
        m.mnt.join("f").display()
    ));
    assert!(out.contains("registrations: 0"), "{out}");
    // Not a stripefs mount: a clear error.
    let out = Command::new(STRIPEFS)
        .args(["stat", "/proc"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no stripefs control socket"), "{stderr}");
}

#[test]
fn with_the_mount_daemon_cat_registered_and_stat_work_from_other_processes() {
    if let Some(reason) = skip_reason(false) {
        eprintln!("skipped: {reason}");
        return;
    }
    let _w = Watchdog::new("mount --daemon", Duration::from_secs(300));
    let dir = tempfile::Builder::new()
        .prefix("stripefs-control-daemon-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    let devices = image_files(dir.path(), 3, 128 * MIB);
    mkfs(&devices, &[]);
    let mnt = dir.path().join("mnt");
    let daemon = Daemon::mount(&devices, &mnt);
    let path = mnt.join("data.bin");
    write_pattern(&path, 42, 24 * MIB as usize + 5);
    assert_eq!(
        sha256_of_cat_registered(&path),
        sha256(&path),
        "stripefs cat --registered | sha256sum through the mount daemon"
    );
    let out = sh(&format!("\"$STRIPEFS\" stat '{}'", mnt.display()));
    assert!(out.contains("registrations: 0"), "{out}");
    for d in &devices {
        assert!(out.contains(&d.display().to_string()), "{out}");
    }
    daemon.unmount();
}
