//! Many files on four 1 GiB loop devices made with default options: the metadata grows into
//! the replicas' free space (it is not limited by a share fixed at mkfs), survives remounts
//! and checkpoints that write only what changed, and fsck finds it clean.
//!
//! 200,000 files in an optimized build (`cargo test --release --test many_files`, as CI
//! runs it), 20,000 in a debug build; `STRIPEFS_MANY_FILES=N` sets another count. Prints
//! the mount time, the time of a checkpoint after one create, and the process's RSS.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::mount::{Loops, image_files, mkfs, skip_reason};
use common::{assert_pattern, pattern, scratch_dir};
use stripefs_engine::DeviceSpec;
use stripefs_fs::filesystem::{Caller, fsck, open_devices};
use stripefs_fs::{Filesystem, meta::ROOT};

/// 200,000 files in 64 directories: 3,125 each, so every directory's entries move to an
/// entry piece (past 256) and are hashed into more of them (past 2,048).
const DIRS: usize = 64;
/// Every this many files gets 4 KiB of data.
const WITH_DATA: usize = 10;

fn count() -> usize {
    std::env::var("STRIPEFS_MANY_FILES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            20_000
        } else {
            200_000
        })
}

fn dir_name(d: usize) -> String {
    format!("d{d:03}")
}

fn file_name(i: usize) -> String {
    format!("file-{i:07}.bin")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn specs(devices: &[PathBuf]) -> Vec<DeviceSpec> {
    devices.iter().cloned().map(DeviceSpec::Path).collect()
}

fn open(devices: &[PathBuf]) -> (std::sync::Arc<Filesystem>, Duration) {
    let t = Instant::now();
    let fs = Filesystem::open(&specs(devices)).expect("mount");
    (fs, t.elapsed())
}

fn assert_fsck_clean(devices: &[PathBuf], files: usize) {
    let queues = open_devices(&specs(devices)).expect("open devices");
    let report = fsck(&queues).expect("fsck");
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    assert_eq!(report.files, files, "fsck counts every file");
}

fn lookup(fs: &Filesystem, parent: u64, name: &str) -> Option<u64> {
    fs.lookup(parent, OsStr::new(name)).ok().map(|a| a.ino)
}

/// Every directory lists exactly the files `alive` says, and the files with data hold it.
fn check_tree(fs: &Filesystem, n: usize, alive: impl Fn(usize) -> bool) {
    for d in 0..DIRS {
        let dir = lookup(fs, ROOT, &dir_name(d)).expect("directory");
        let mut names = BTreeSet::new();
        let mut offset = 0;
        loop {
            let entries = fs.readdir(dir, offset).expect("readdir");
            let Some(last) = entries.last() else { break };
            offset = last.next;
            names.extend(
                entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .filter(|n| n != "." && n != ".."),
            );
        }
        let mut want: BTreeSet<String> = (d..n)
            .step_by(DIRS)
            .filter(|&i| alive(i))
            .map(file_name)
            .collect();
        if d == 0 {
            want.insert("one-more".into());
        }
        assert!(names == want, "directory {} lists other names", dir_name(d));
    }
    for i in (0..n).filter(|&i| alive(i) && i % WITH_DATA == 0) {
        let dir = lookup(fs, ROOT, &dir_name(i % DIRS)).expect("directory");
        let ino = lookup(fs, dir, &file_name(i)).expect("file");
        let data = fs.read(ino, 0, 8192).expect("read");
        assert_eq!(data.len(), 4096, "{} is 4 KiB", file_name(i));
        assert_pattern(&file_name(i), i as u64, 0, &data);
    }
}

#[test]
fn many_files_grow_into_free_space_and_survive_remounts() {
    if let Some(why) = skip_reason(true) {
        eprintln!("skipped: {why}");
        return;
    }
    let n = count();
    let dir = scratch_dir();
    let loops = Loops::attach(&image_files(dir.path(), 4, 1 << 30));
    mkfs(&loops.devices, &[]);
    let me = Caller::default();

    let (fs, _) = open(&loops.devices);
    let t = Instant::now();
    let dirs: Vec<u64> = (0..DIRS)
        .map(|d| {
            fs.mkdir(ROOT, OsStr::new(&dir_name(d)), 0o755, me)
                .expect("mkdir")
                .ino
        })
        .collect();
    for i in 0..n {
        let f = fs
            .create(dirs[i % DIRS], OsStr::new(&file_name(i)), 0o644, me)
            .unwrap_or_else(|e| panic!("create file {i} of {n}: {e}"));
        if i % WITH_DATA == 0 {
            fs.write(f.ino, 0, &pattern(i as u64, 0, 4096))
                .expect("write");
        }
        if i % 10_000 == 9_999 {
            fs.sync().expect("sync");
        }
    }
    fs.sync().expect("sync");
    let made = t.elapsed();
    // One create after all of them: its commit costs what it costs in an empty filesystem,
    // and a checkpoint writes a piece or two, not everything.
    fs.create(dirs[0], OsStr::new("one-more"), 0o644, me)
        .expect("create");
    let t = Instant::now();
    fs.sync().expect("sync");
    let commit = t.elapsed();
    fs.checkpoint().expect("checkpoint");
    fs.create(dirs[0], OsStr::new("and-one-more"), 0o644, me)
        .expect("create");
    fs.unlink(dirs[0], OsStr::new("and-one-more"))
        .expect("unlink");
    let t = Instant::now();
    fs.checkpoint().expect("checkpoint");
    let checkpoint = t.elapsed();
    let rss = rss_kib();
    fs.shutdown().expect("unmount");
    drop(fs);

    assert_fsck_clean(&loops.devices, n + 1);
    let (fs, mount) = open(&loops.devices);
    eprintln!(
        "{n} files: made in {made:.2?}, commit of one create {commit:.2?}, checkpoint after one create {checkpoint:.2?}, mount {mount:.2?}, RSS {} MiB",
        rss / 1024
    );
    assert!(lookup(&fs, dirs[0], "one-more").is_some());
    check_tree(&fs, n, |_| true);

    // Every other file goes: whole pieces empty out and leave the table.
    for i in (0..n).filter(|i| i % 2 == 1) {
        fs.unlink(dirs[i % DIRS], OsStr::new(&file_name(i)))
            .unwrap_or_else(|e| panic!("unlink file {i}: {e}"));
    }
    fs.shutdown().expect("unmount");
    drop(fs);
    assert_fsck_clean(&loops.devices, n - n / 2 + 1);
    let (fs, _) = open(&loops.devices);
    check_tree(&fs, n, |i| i % 2 == 0);
    fs.shutdown().expect("unmount");
}
