//! Crashes of a real mount (`kill -9` of the daemon), as a user would try them:
//! - four writers creating files with write + fsync, and unlinking some, on a small metadata
//!   area so that the log wraps many times: every file whose fsync returned comes back with
//!   exactly its bytes;
//! - a file fsync'ed, then unlinked without fsync while new files are written: after the
//!   crash it is back (its unlink was not durable) with its own bytes, not the new files'.
//!
//! Needs root and /dev/fuse; without them each test prints `skipped: <reason>` (and fails
//! instead when `STRIPEFS_REQUIRE_FUSE` is set).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mount::{Daemon, assert_fsck_clean, clear_mount, contents, write_synced};
use common::{MIB, Watchdog, assert_bytes};

fn setup(
    name: &'static str,
    size: u64,
    mkfs_args: &[&str],
) -> Option<(Watchdog, tempfile::TempDir, Vec<PathBuf>)> {
    common::mount::setup(name, size, mkfs_args, Duration::from_secs(120))
}

/// The size of file `i` of writer `w`: 0 to 40 KiB, unaligned.
fn size_of(w: u64, i: u64) -> usize {
    ((w * 7 + i * 7919) % 40_000) as usize
}

fn seed(w: u64, i: u64) -> u64 {
    w << 32 | i
}

#[test]
fn kill_9_with_four_fsyncing_writers_and_log_wraps() {
    let Some((_w, scratch, images)) = setup("four writers", 256 * MIB, &["--metadata-size", "1M"])
    else {
        return;
    };
    let mnt = scratch.path().join("mnt");
    let daemon = Daemon::mount(&images, &mnt);
    // Per writer: files whose fsync returned and that were not unlinked afterwards.
    let kept: Vec<Arc<Mutex<BTreeSet<u64>>>> = (0..4).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (kept, stop) = (kept[w as usize].clone(), stop.clone());
            let dir = mnt.join(format!("w{w}"));
            std::fs::create_dir(&dir).expect("mkdir");
            std::thread::spawn(move || {
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let path = dir.join(format!("f{i:05}"));
                    if write_synced(&path, &contents(seed(w, i), size_of(w, i))).is_err() {
                        return;
                    }
                    kept.lock().expect("lock").insert(i);
                    // Every third file, unlink an older one (not fsync'ed: it may come back).
                    if i % 3 == 2 {
                        let old = i - 2;
                        kept.lock().expect("lock").remove(&old);
                        if std::fs::remove_file(dir.join(format!("f{old:05}"))).is_err() {
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = || {
        kept.iter()
            .map(|k| k.lock().expect("lock").len())
            .sum::<usize>()
    };
    while total() < 1200 {
        assert!(Instant::now() < deadline, "the writers made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    clear_mount(&mnt);
    assert_fsck_clean(&images);
    let daemon = Daemon::mount(&images, &mnt);
    let mut checked = 0;
    for (w, kept) in kept.iter().enumerate() {
        for &i in kept.lock().expect("lock").iter() {
            let path = mnt.join(format!("w{w}")).join(format!("f{i:05}"));
            let got = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("fsync'ed file {} lost: {e}", path.display()));
            assert_bytes(
                &format!("fsync'ed file {}", path.display()),
                &got,
                &contents(seed(w as u64, i), size_of(w as u64, i)),
            );
            checked += 1;
        }
    }
    println!("{checked} fsync'ed files intact after kill -9 with four writers");
    daemon.unmount();
    assert_fsck_clean(&images);
}

#[test]
fn kill_9_after_an_unlink_keeps_the_fsynced_file_bytes() {
    let Some((_w, scratch, images)) = setup("unlink then reuse", 64 * MIB, &[]) else {
        return;
    };
    let mnt = scratch.path().join("mnt");
    let daemon = Daemon::mount(&images, &mnt);
    let a = contents(1, 8 * MIB as usize);
    write_synced(&mnt.join("a"), &a).expect("write a");
    std::fs::File::open(&mnt)
        .and_then(|d| d.sync_all())
        .expect("fsync the directory");
    std::fs::remove_file(mnt.join("a")).expect("unlink a");
    for i in 0..4u64 {
        std::fs::write(
            mnt.join(format!("n{i}")),
            contents(100 + i, 4 * MIB as usize),
        )
        .expect("write a new file");
    }
    daemon.kill9();
    clear_mount(&mnt);
    assert_fsck_clean(&images);
    let daemon = Daemon::mount(&images, &mnt);
    // The unlink was not durable, so `a` may be back; if it is, with its own bytes.
    if let Ok(got) = std::fs::read(mnt.join("a")) {
        assert_bytes("a, fsync'ed then unlinked without fsync", &got, &a);
        println!("a came back with its own bytes");
    }
    for i in 0..4u64 {
        if let Ok(got) = std::fs::read(mnt.join(format!("n{i}"))) {
            assert!(
                got.is_empty() || got == contents(100 + i, 4 * MIB as usize)[..got.len()],
                "n{i} holds bytes that were never written to it"
            );
        }
    }
    daemon.unmount();
}

#[test]
fn fsck_repair_frees_an_orphan_left_by_kill_9() {
    let Some((_w, scratch, images)) = setup("fsck --repair", 64 * MIB, &[]) else {
        return;
    };
    let mnt = scratch.path().join("mnt");
    let daemon = Daemon::mount(&images, &mnt);
    write_synced(&mnt.join("o"), &contents(3, 3 * MIB as usize)).expect("write");
    let open = std::fs::File::open(mnt.join("o")).expect("open");
    std::fs::remove_file(mnt.join("o")).expect("unlink while open");
    std::fs::File::open(&mnt)
        .and_then(|d| d.sync_all())
        .expect("fsync the directory: the unlink is durable");
    daemon.kill9();
    drop(open);
    clear_mount(&mnt);
    let devices = common::mount::strs(&images);
    let out = common::mount::stripefs(&[&["fsck", "--repair"], &devices[..]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("repaired: freed orphan")
            && text.contains("3145728 bytes")
            && text.contains("clean"),
        "fsck --repair did not say what it did:\n{text}"
    );
    let out = common::mount::stripefs(&[&["fsck"], &devices[..]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("clean") && !text.contains("left open") && text.contains(" 0 bytes stored"),
        "the orphan is still there after the repair:\n{text}"
    );
}
