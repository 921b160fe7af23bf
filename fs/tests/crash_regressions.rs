//! Crash regressions through the library API over real O_DIRECT device files: each test
//! "crashes" by dropping the filesystem without an unmount (what a `kill -9` leaves on the
//! devices) or by tearing what a crash could have torn, then mounts again.
//!
//! - Space freed by an unlink that is not durable is not reused: the file comes back whole.
//! - A torn newest checkpoint: mount takes the older one and its log.
//! - Concurrent writers and commits: fsck is clean after the crash (no extents past the end
//!   of a file) and every fsync'ed file is intact.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Devices, ME, ROOT, data, fsck, queues};
use stripefs_engine::DeviceSpec;
use stripefs_fs::filesystem::Filesystem;

fn devices(n: usize, size: u64, metadata: u64) -> Devices {
    common::formatted(n, size, 64 << 10, metadata)
}

fn create(fs: &Filesystem, parent: u64, n: &str, bytes: &[u8]) -> u64 {
    let ino = fs
        .create(parent, OsStr::new(n), 0o644, ME)
        .expect("create")
        .ino;
    fs.write(ino, 0, bytes).expect("write");
    ino
}

fn read_file(fs: &Filesystem, parent: u64, n: &str) -> Option<Vec<u8>> {
    let attr = fs.lookup(parent, OsStr::new(n)).ok()?;
    Some(fs.read(attr.ino, 0, attr.size as u32).expect("read"))
}

/// Overwrites the first `len` payload bytes of checkpoint `generation` on both replicas
/// (its header stays valid): a checkpoint torn by a crash, or damaged.
fn overwrite_checkpoint_payload(
    d: &Devices,
    sb: &stripefs_layout::ondisk::Superblock,
    generation: u64,
    len: usize,
) {
    let slot_len = (sb.meta_len / 4) / 4096 * 4096;
    for replica in &d.paths[..2] {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(replica)
            .expect("open replica");
        let payload = sb.meta_offset + (generation % 2) * slot_len + 4096;
        f.write_at(&vec![0xA5; len], payload).expect("overwrite");
    }
}

fn assert_fsck_clean(d: &Devices) {
    common::assert_fsck_clean(&d.specs);
}

#[test]
fn space_of_an_unlink_not_yet_durable_is_not_reused() {
    let d = devices(2, 64 << 20, 1 << 20);
    let a = data(1, 8 << 20);
    {
        let fs = Filesystem::open(&d.specs).expect("mount");
        let ino = create(&fs, ROOT, "a", &a);
        fs.fsync(ino).expect("fsync a");
        fs.fsync(ROOT).expect("fsync the directory");
        fs.unlink(ROOT, OsStr::new("a")).expect("unlink a");
        for i in 0..3 {
            create(&fs, ROOT, &format!("n{i}"), &data(100 + i, 8 << 20));
        }
        // Crash: no unmount, nothing committed since the unlink.
    }
    assert_fsck_clean(&d);
    let fs = Filesystem::open(&d.specs).expect("mount after the crash");
    let got = read_file(&fs, ROOT, "a").expect("a is back: its unlink was not durable");
    assert!(got == a, "a holds other bytes than its own after the crash");
}

#[test]
fn space_freed_is_reused_once_the_free_is_committed() {
    // The device holds one 24 MiB file; after it is unlinked, a second one fits only in its
    // space, which a commit frees (the allocator asks for one when it finds only busy space).
    let d = devices(1, 32 << 20, 1 << 20);
    let fs = Filesystem::open(&d.specs).expect("mount");
    let ino = create(&fs, ROOT, "big", &data(1, 24 << 20));
    fs.fsync(ino).expect("fsync");
    fs.unlink(ROOT, OsStr::new("big")).expect("unlink");
    let again = data(2, 24 << 20);
    create(&fs, ROOT, "again", &again);
    assert!(read_file(&fs, ROOT, "again").expect("again") == again);
}

#[test]
fn a_torn_newest_checkpoint_falls_back_to_the_older_one() {
    let d = devices(3, 64 << 20, 4 << 20);
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("f{i}"), data(i, 1000 + i as usize * 70_000)))
        .collect();
    {
        let fs = Filesystem::open(&d.specs).expect("mount");
        for (n, bytes) in &files {
            create(&fs, ROOT, n, bytes);
        }
        fs.shutdown().expect("unmount");
    }
    // Tear the newest checkpoint on both replicas: its header valid, its payload not (a
    // crash while it was written, with the header already on the media).
    let generation = fsck(&d.specs).checkpoint_generation;
    let sb = {
        let fs = Filesystem::open(&d.specs).expect("mount to read the superblock");
        let sb = fs.superblock().clone();
        // This mount wrote generation+1 over the other slot. Crash (drop without an
        // unmount) and tear that newest one, so that only the one before it is whole.
        drop(fs);
        sb
    };
    overwrite_checkpoint_payload(&d, &sb, generation + 1, 8192);
    let fs = Filesystem::open(&d.specs).expect("mount falls back to the older checkpoint");
    for (n, bytes) in &files {
        let got = read_file(&fs, ROOT, n).unwrap_or_else(|| panic!("{n} lost"));
        assert!(&got == bytes, "{n} differs after the fallback");
    }
}

#[test]
fn concurrent_writers_and_commits_leave_a_clean_filesystem_after_a_crash() {
    let d = devices(3, 128 << 20, 1 << 20);
    let synced: Arc<Mutex<Vec<(u64, u64, usize)>>> = Arc::default();
    {
        let fs = Filesystem::open(&d.specs).expect("mount");
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..3u64 {
            let (fs, synced, stop) = (fs.clone(), synced.clone(), stop.clone());
            let dir = fs
                .mkdir(ROOT, OsStr::new(&format!("w{w}")), 0o755, ME)
                .expect("mkdir")
                .ino;
            threads.push(std::thread::spawn(move || {
                for i in 0u64..150 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Large writes go in several pieces; a commit may fall between them.
                    let len = 1000 + ((w * 31 + i * 7919) % 2_500_000) as usize;
                    let ino = create(&fs, dir, &format!("f{i}"), &data(w << 32 | i, len));
                    if i % 2 == 0 {
                        fs.fsync(ino).expect("fsync");
                        synced.lock().expect("lock").push((w, i, len));
                    }
                    if i % 5 == 4 {
                        fs.unlink(dir, OsStr::new(&format!("f{}", i - 3)))
                            .expect("unlink");
                        synced
                            .lock()
                            .expect("lock")
                            .retain(|&(x, j, _)| (x, j) != (w, i - 3));
                    }
                }
            }));
        }
        let committer = {
            let (fs, stop) = (fs.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    fs.sync().expect("commit");
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("writer");
        }
        committer.join().expect("committer");
        // Crash: no unmount.
    }
    assert_fsck_clean(&d);
    let fs = Filesystem::open(&d.specs).expect("mount after the crash");
    let synced = synced.lock().expect("lock").clone();
    assert!(!synced.is_empty());
    for (w, i, len) in synced {
        let dir = fs
            .lookup(ROOT, OsStr::new(&format!("w{w}")))
            .expect("dir")
            .ino;
        let got = read_file(&fs, dir, &format!("f{i}")).unwrap_or_else(|| panic!("w{w}/f{i} lost"));
        assert!(got == data(w << 32 | i, len), "w{w}/f{i} differs");
    }
}

#[test]
fn a_commit_between_the_pieces_of_a_large_write_leaves_no_extents_past_the_end() {
    // Writers make files of several bounce windows each (a commit can fall between two
    // pieces of one write); the only commits are this thread's, and right after each one
    // the devices are copied: what a crash just after that commit leaves (data writes in
    // flight may or may not be there). Each copy must be clean and mount.
    let d = devices(2, 48 << 20, 1 << 20);
    let snapshots = tempfile::tempdir_in("/var/tmp").expect("snapshot dir");
    let mut taken = Vec::new();
    {
        let fs = Filesystem::open(&d.specs).expect("mount");
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (fs, stop) = (fs.clone(), stop.clone());
                std::thread::spawn(move || {
                    for i in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let n = format!("w{w}f{}", i % 4);
                        let _ = fs.unlink(ROOT, OsStr::new(&n));
                        create(&fs, ROOT, &n, &data(i, 3 << 20));
                    }
                })
            })
            .collect();
        for k in 0..12 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            fs.sync().expect("commit");
            let dir = snapshots.path().join(format!("s{k}"));
            std::fs::create_dir(&dir).expect("snapshot dir");
            let specs: Vec<DeviceSpec> = d
                .paths
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let copy = dir.join(format!("d{i}.img"));
                    std::fs::copy(p, &copy).expect("copy device");
                    DeviceSpec::Path(copy)
                })
                .collect();
            taken.push(specs);
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer");
        }
    }
    for (k, specs) in taken.iter().enumerate() {
        let report = stripefs_fs::filesystem::fsck(&queues(specs)).expect("fsck");
        assert!(
            report.is_clean(),
            "crash after commit {k}: fsck {:?}",
            report.problems
        );
        Filesystem::open(specs).expect("mount after the crash");
    }
}

#[test]
fn a_damaged_checkpoint_whose_log_exists_is_not_silently_passed_over() {
    // A checkpoint whose log has entries was whole once: damage to it is not a torn write,
    // and falling back to the older checkpoint would drop that log's changes. Refused.
    let d = devices(3, 64 << 20, 4 << 20);
    let sb = {
        let fs = Filesystem::open(&d.specs).expect("mount");
        let ino = create(&fs, ROOT, "kept", &data(5, 100_000));
        fs.fsync(ino)
            .expect("fsync: a log entry of this mount's checkpoint");
        fs.superblock().clone()
    };
    let generation = fsck(&d.specs).checkpoint_generation;
    overwrite_checkpoint_payload(&d, &sb, generation, 4096);
    let err = match Filesystem::open(&d.specs) {
        Ok(_) => panic!("mounted over a damaged checkpoint, dropping its log"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("refusing to fall back"),
        "unclear refusal: {err}"
    );
}

#[test]
fn log_wraps_under_concurrent_changes_leave_a_mountable_filesystem() {
    // Commits fill a small log over and over; each time it is full a checkpoint takes its
    // place. Changes keep arriving meanwhile: one that fell between the cut of the queue and
    // the snapshot of the checkpoint would be in both, and replayed twice at mount ("entry
    // exists": unmountable). The snapshot and the cut must be taken at the same change.
    let d = devices(2, 32 << 20, 1 << 20);
    {
        let fs = Filesystem::open(&d.specs).expect("mount");
        let stop = Arc::new(AtomicBool::new(false));
        let makers: Vec<_> = (0..2u64)
            .map(|t| {
                let (fs, stop) = (fs.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let n = format!("t{t}-{}", i % 64);
                        let _ = fs.unlink(ROOT, OsStr::new(&n));
                        fs.create(ROOT, OsStr::new(&n), 0o644, ME).expect("create");
                        i += 1;
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            fs.sync().expect("commit");
        }
        stop.store(true, Ordering::Relaxed);
        for m in makers {
            m.join().expect("maker");
        }
        // Crash: no unmount.
    }
    assert_fsck_clean(&d);
    Filesystem::open(&d.specs).expect("mount after log wraps under concurrent changes");
}

#[test]
fn fdatasync_waits_only_for_the_metadata_its_data_needs() {
    let d = devices(2, 32 << 20, 1 << 20);
    let fs = Filesystem::open(&d.specs).expect("mount");
    let ino = create(&fs, ROOT, "f", &data(1, 200_000));
    let log_entries = || fsck(&d.specs).log_entries;
    // New blocks and a new size: fdatasync must commit them.
    let before = log_entries();
    fs.fdatasync(ino).expect("fdatasync");
    assert_eq!(
        log_entries(),
        before + 1,
        "fdatasync did not commit the new blocks"
    );
    // An overwrite in place and a chmod: the data needs no metadata, so no log entry.
    fs.write(ino, 4096, &data(2, 8192)).expect("overwrite");
    let chmod = stripefs_fs::filesystem::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    fs.setattr(ino, &chmod).expect("chmod");
    fs.fdatasync(ino).expect("fdatasync");
    assert_eq!(
        log_entries(),
        before + 1,
        "fdatasync waited for unrelated metadata"
    );
    // fsync does.
    fs.fsync(ino).expect("fsync");
    assert_eq!(log_entries(), before + 2);
}

#[test]
fn a_write_never_fails_for_space_that_a_commit_frees() {
    // One device with room for three of the files: each round unlinks the file it wrote
    // before and writes a new one, so almost all free space is busy (freed, not yet durable)
    // whenever a write needs it, while another thread commits all the time. A write that
    // finds no space must get the busy space back through a commit, even when another
    // thread's commit frees it first.
    let d = devices(1, 32 << 20, 1 << 20);
    let fs = Filesystem::open(&d.specs).expect("mount");
    let stop = Arc::new(AtomicBool::new(false));
    let committer = {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                fs.sync().expect("commit");
            }
        })
    };
    let bytes = data(9, 8 << 20);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut rounds = 0;
    while std::time::Instant::now() < deadline {
        let _ = fs.unlink(ROOT, OsStr::new("f"));
        let ino = fs
            .create(ROOT, OsStr::new("f"), 0o644, ME)
            .expect("create")
            .ino;
        if let Err(e) = fs.write(ino, 0, &bytes) {
            stop.store(true, Ordering::Relaxed);
            panic!(
                "round {rounds}: a write found no space although 3/4 of the device was freed: {e}"
            );
        }
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    committer.join().expect("committer");
    assert!(rounds > 3, "only {rounds} rounds");
}
