//! The life of a mount: foreground mounts ended by SIGINT and SIGTERM (also while busy),
//! `--daemon` ended by SIGTERM, a plain `umount` followed at once by fsck and a new mount
//! (which wait for the exiting daemon, but only so long for one that does not let go),
//! kill -9 of the daemon during writes (every fsync'ed file intact after a remount), a full
//! filesystem (ENOSPC, and nothing corrupted), and mounts refused with an error that names
//! the device (and the mount holding it).
//!
//! Needs root and /dev/fuse, and loop devices for the tests that use them; without them each
//! test prints `skipped: <reason>` (and fails instead when `STRIPEFS_REQUIRE_FUSE`, or for
//! loop devices `STRIPEFS_REQUIRE_LOOP`, is set).

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mount::{
    Daemon, Loops, STRIPEFS, assert_errno, assert_fsck_clean, assert_same_map, checksums,
    clear_mount, contents, free_space, image_files, is_mounted, mkfs, skip_reason,
    stripefs_may_fail, strs, track, untrack_mount, untrack_process, write_synced,
};
use common::{MIB, Watchdog, assert_bytes};

/// `stripefs mount` in the foreground, as a child; killed and cleared on drop.
struct Foreground {
    child: Child,
    mnt: PathBuf,
}

impl Foreground {
    fn start(devices: &[PathBuf], mnt: &Path) -> Foreground {
        std::fs::create_dir_all(mnt).expect("mkdir mnt");
        let child = Command::new(STRIPEFS)
            .arg("mount")
            .args(strs(devices))
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stripefs mount");
        track(mnt, child.id() as i32);
        let mut fg = Foreground {
            child,
            mnt: mnt.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(mnt) {
            if let Ok(Some(status)) = fg.child.try_wait() {
                panic!("stripefs mount exited with {status} before mounting");
            }
            assert!(Instant::now() < deadline, "no mount after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        fg
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with our child's pid and a valid signal touches no memory.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the command to exit; asserts exit 0 and no mount left.
    fn expect_clean_exit(mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                untrack_process(self.child.id() as i32);
                untrack_mount(&self.mnt);
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                assert!(
                    status.success(),
                    "stripefs mount exited with {status}: {err}"
                );
                assert!(err.contains("unmounted"), "no goodbye in: {err}");
                assert!(!is_mounted(&self.mnt), "still mounted after exit");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stripefs mount still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        untrack_process(self.child.id() as i32);
        clear_mount(&self.mnt);
    }
}

fn setup(
    name: &'static str,
    size: u64,
    mkfs_args: &[&str],
) -> Option<(Watchdog, tempfile::TempDir, Vec<PathBuf>)> {
    common::mount::setup(name, size, mkfs_args, Duration::from_secs(90))
}

#[test]
fn foreground_mount_ends_cleanly_on_signals() {
    let Some((_w, scratch, images)) = setup("foreground", 64 * MIB, &[]) else {
        return;
    };
    let mnt = scratch.path().join("mnt");

    let fg = Foreground::start(&images, &mnt);
    std::fs::write(mnt.join("kept"), b"written in the foreground").expect("write");
    fg.signal(libc::SIGINT);
    fg.expect_clean_exit(Duration::from_secs(20));

    // Busy: SIGTERM detaches; the command serves the open file until it is closed.
    let mut fg = Foreground::start(&images, &mnt);
    assert_eq!(
        std::fs::read(mnt.join("kept")).expect("read"),
        b"written in the foreground"
    );
    let mut open = File::create(mnt.join("open")).expect("create");
    fg.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&mnt) {
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not detach a busy mount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    open.write_all(b"still served")
        .expect("write to a file open on a detached mount");
    std::thread::sleep(Duration::from_millis(200));
    assert!(fg.running(), "the command stopped with a file still open");
    drop(open);
    fg.expect_clean_exit(Duration::from_secs(20));

    // The daemon ends on SIGTERM too, and everything was kept.
    let daemon = Daemon::mount(&images, &mnt);
    assert_eq!(
        std::fs::read(mnt.join("open")).expect("read"),
        b"still served"
    );
    daemon.stop_with(libc::SIGTERM);
    assert_fsck_clean(&images);
}

#[test]
fn kill_9_during_writes_keeps_every_fsynced_file() {
    let Some((_w, scratch, images)) = setup("kill9", 128 * MIB, &["--stripe-unit", "64K"]) else {
        return;
    };
    let mnt = scratch.path().join("mnt");
    let daemon = Daemon::mount(&images, &mnt);
    std::fs::create_dir(mnt.join("synced")).expect("mkdir");
    std::fs::create_dir(mnt.join("loose")).expect("mkdir");
    // A file unlinked while open at the crash: the next mount frees it.
    let orphan_data = contents(77, 8 * MIB as usize);
    write_synced(&mnt.join("orphan"), &orphan_data).expect("write the orphan");
    let orphan = File::open(mnt.join("orphan")).expect("open the orphan");
    std::fs::remove_file(mnt.join("orphan")).expect("unlink the orphan");

    let size_of = |i: u64| ((i * 7919) % 700_000) as usize;
    let synced = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (synced, stop, dir) = (synced.clone(), stop.clone(), mnt.join("synced"));
        std::thread::spawn(move || {
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let path = dir.join(format!("f{i:05}"));
                if write_synced(&path, &contents(i, size_of(i))).is_err() {
                    return;
                }
                synced.lock().expect("lock").push(i);
            }
        })
    };
    // Meanwhile, writes and renames that nobody fsyncs.
    let churn = {
        let (stop, dir) = (stop.clone(), mnt.join("loose"));
        std::thread::spawn(move || {
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let tmp = dir.join(format!("tmp{i}"));
                if std::fs::write(&tmp, contents(1_000_000 + i, 300_000)).is_err() {
                    return;
                }
                if std::fs::rename(&tmp, dir.join(format!("g{}", i % 50))).is_err() {
                    return;
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while synced.lock().expect("lock").len() < 40 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    churn.join().expect("churn");
    drop(orphan);
    clear_mount(&mnt);
    let synced = synced.lock().expect("lock").clone();
    // What the crash left is consistent before any mount repairs it; the orphan is noted.
    let out = stripefs_may_fail(&[&["fsck"], &strs(&images)[..]].concat());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("clean"),
        "fsck after kill -9:\n{report}"
    );
    assert!(
        report.contains("left open at a crash"),
        "the orphan is not reported:\n{report}"
    );

    let daemon = Daemon::mount(&images, &mnt);
    for &i in &synced {
        let path = mnt.join("synced").join(format!("f{i:05}"));
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("fsync'ed file {i} lost: {e}"));
        assert_bytes(
            &format!("fsync'ed file {i}"),
            &got,
            &contents(i, size_of(i)),
        );
    }
    // Whatever else survived is readable, and the filesystem takes new writes.
    for e in std::fs::read_dir(mnt.join("loose")).expect("ls loose") {
        let path = e.expect("entry").path();
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    write_synced(&mnt.join("after"), b"after the crash").expect("write after the crash");
    println!("{} fsync'ed files intact after kill -9", synced.len());
    daemon.unmount();
    let out = stripefs_may_fail(&[&["fsck"], &strs(&images)[..]].concat());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !report.contains("left open"),
        "the mount did not free the orphan:\n{report}"
    );
    let daemon = Daemon::mount(&images, &mnt);
    assert_eq!(
        std::fs::read(mnt.join("after")).expect("read"),
        b"after the crash"
    );
    daemon.unmount();
}

#[test]
fn full_filesystem_says_enospc_and_keeps_earlier_files() {
    // 4 devices of 24 MiB with 2 MiB metadata areas: about 88 MiB of data.
    let Some((_w, scratch, images)) = setup(
        "enospc",
        24 * MIB,
        &["--metadata-size", "2M", "--stripe-unit", "64K"],
    ) else {
        return;
    };
    let mnt = scratch.path().join("mnt");
    let daemon = Daemon::mount(&images, &mnt);
    let (a, b) = (
        contents(1, 20 * MIB as usize),
        contents(2, 20 * MIB as usize + 99),
    );
    write_synced(&mnt.join("a"), &a).expect("write a");
    write_synced(&mnt.join("b"), &b).expect("write b");

    // Fill it.
    let chunk = contents(3, MIB as usize);
    let mut c = File::create(mnt.join("c")).expect("create c");
    let mut written = 0u64;
    let error = loop {
        match c.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(
            written < 200 * MIB,
            "wrote {written} bytes to an 88 MiB filesystem"
        );
    };
    assert_eq!(
        error.raw_os_error(),
        Some(libc::ENOSPC),
        "filling up: {error}"
    );
    assert!(written > 20 * MIB, "only {written} bytes fitted");
    let (free, frsize) = free_space(&mnt);
    assert!(
        free * frsize < 8 * MIB,
        "{} bytes still free when full",
        free * frsize
    );
    assert_errno(
        "another file's data",
        std::fs::write(mnt.join("d"), &chunk),
        libc::ENOSPC,
    );
    drop(c);
    assert_eq!(
        std::fs::metadata(mnt.join("c")).expect("stat c").len(),
        written
    );

    daemon.unmount();
    let daemon = Daemon::mount(&images, &mnt);
    assert_bytes(
        "a after ENOSPC and remount",
        &std::fs::read(mnt.join("a")).expect("read a"),
        &a,
    );
    assert_bytes(
        "b after ENOSPC and remount",
        &std::fs::read(mnt.join("b")).expect("read b"),
        &b,
    );
    let c = std::fs::read(mnt.join("c")).expect("read c");
    assert_eq!(c.len() as u64, written, "c keeps every byte acknowledged");
    for (i, piece) in c.chunks(MIB as usize).enumerate() {
        assert_bytes(&format!("c chunk {i}"), piece, &chunk[..piece.len()]);
    }
    // Freed space is usable again.
    std::fs::remove_file(mnt.join("c")).expect("rm c");
    let e = contents(5, 30 * MIB as usize);
    write_synced(&mnt.join("e"), &e).expect("write after freeing space");
    daemon.unmount();
    let daemon = Daemon::mount(&images, &mnt);
    assert_bytes("e", &std::fs::read(mnt.join("e")).expect("read e"), &e);
    daemon.unmount();
    assert_fsck_clean(&images);
}

#[test]
fn bad_mounts_are_refused_naming_the_device() {
    let Some((_w, scratch, images)) = setup("bad_mounts", 32 * MIB, &[]) else {
        return;
    };
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    let name = |i: usize| images[i].to_str().expect("UTF-8").to_string();

    // Devices in use by a mount: a second mount and a mkfs are refused.
    let daemon = Daemon::mount(&images, &mnt);
    let mnt2 = scratch.path().join("mnt2");
    std::fs::create_dir(&mnt2).expect("mkdir mnt2");
    let mut twice = vec!["mount", "--daemon"];
    twice.extend(strs(&images));
    twice.push(mnt2.to_str().expect("UTF-8"));
    let out = stripefs_may_fail(&twice);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a second mount of the same devices: {err}"
    );
    assert!(err.contains(&name(0)) && err.contains("in use"), "{err}");
    assert!(!is_mounted(&mnt2));
    let out = stripefs_may_fail(&["mkfs", &name(3)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "mkfs of a mounted device: {err}"
    );
    assert!(err.contains(&name(3)) && err.contains("in use"), "{err}");
    daemon.unmount();

    let refuse = |args: &[String], expect: &[&str]| {
        let mut all = vec!["mount".to_string(), "--daemon".into()];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = stripefs_may_fail(&refs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "`stripefs {}` should fail: {err}",
            refs.join(" ")
        );
        for e in expect {
            assert!(
                err.contains(e),
                "`stripefs {}`: error `{err}` lacks `{e}`",
                refs.join(" ")
            );
        }
        assert!(!is_mounted(&mnt), "a refused mount left a mount behind");
    };
    let m = mnt.to_str().expect("UTF-8").to_string();
    // Reordered, missing, duplicated.
    refuse(
        &[name(1), name(0), name(2), name(3), m.clone()],
        &[&name(1), "order"],
    );
    refuse(
        &[name(0), name(1), name(2), m.clone()],
        &["missing device #3"],
    );
    refuse(
        &[name(0), name(1), name(1), name(3), m.clone()],
        &[&name(1)],
    );
    // A device of another filesystem.
    let other_dir = scratch.path().join("other");
    std::fs::create_dir(&other_dir).expect("mkdir other");
    let other = image_files(&other_dir, 1, 32 * MIB).remove(0);
    mkfs(std::slice::from_ref(&other), &[]);
    let o = other.to_str().expect("UTF-8").to_string();
    refuse(
        &[name(0), name(1), name(2), o.clone(), m.clone()],
        &[&o, "another filesystem"],
    );
    // A device that does not exist, and a mountpoint that is not a directory.
    let missing = scratch
        .path()
        .join("nope.img")
        .to_str()
        .expect("UTF-8")
        .to_string();
    refuse(
        &[name(0), name(1), name(2), missing.clone(), m.clone()],
        &[&missing],
    );
    refuse(
        &[name(0), name(1), name(2), name(3), name(0)],
        &["not a directory"],
    );
    // A corrupted superblock.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&images[2])
        .expect("open image");
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5A; 512], 0).expect("corrupt");
    drop(f);
    refuse(
        &[name(0), name(1), name(2), name(3), m.clone()],
        &[&name(2)],
    );
    clear_mount(&mnt);
}

/// What scripts do: a plain `umount MNT` (the system's umount, which for a FUSE mount returns
/// before the daemon has written its final checkpoint and let go of the devices), then at
/// once `stripefs fsck DEVS` and `stripefs mount DEVS MNT`, ten times over real loop devices
/// (opened `O_EXCL`, so a daemon still holding them makes the next open fail with EBUSY
/// unless the command waits for it). Every file, including the one written unsynced just
/// before each unmount, must come back with its checksum.
#[test]
fn plain_umount_then_fsck_and_mount_at_once() {
    if let Some(reason) = skip_reason(true) {
        println!("skipped: {reason}");
        return;
    }
    let _w = Watchdog::new("plain umount", Duration::from_secs(400));
    let scratch = common::scratch_dir();
    let images = image_files(scratch.path(), 4, 128 * MIB);
    let loops = Loops::attach(&images);
    let devs = loops.devices.clone();
    mkfs(&devs, &["--stripe-unit", "64K"]);
    let mnt = scratch.path().join("mnt");
    let fsck_args = [&["fsck"], &strs(&devs)[..]].concat();

    let mut daemon = Daemon::mount(&devs, &mnt);
    std::fs::create_dir(mnt.join("dir")).expect("mkdir");
    let sizes = [
        MIB as usize + 17,
        3 * MIB as usize,
        64 << 10,
        0,
        777,
        2 * MIB as usize - 5,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let name = if i % 2 == 0 {
            format!("f{i}")
        } else {
            format!("dir/f{i}")
        };
        std::fs::write(mnt.join(name), contents(i as u64, size)).expect("write");
    }

    let mut waited = 0;
    for round in 0..10 {
        // Written without fsync: only the unmount's final commit makes it durable.
        let name = format!("round{round}");
        std::fs::write(
            mnt.join(&name),
            contents(100 + round, 300_000 + round as usize),
        )
        .expect("write");
        let want = checksums(&mnt);

        daemon.umount_plain();
        let out = stripefs_may_fail(&fsck_args);
        let report = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && report.contains("clean"),
            "round {round}: fsck right after a plain umount ({}):\n{report}{err}",
            out.status
        );
        if err.contains("waiting for the stripefs daemon") {
            waited += 1;
        }
        let next = Daemon::mount(&devs, &mnt);
        std::mem::replace(&mut daemon, next).expect_exit_0(Duration::from_secs(20));
        assert_same_map(&format!("round {round}"), &checksums(&mnt), &want);
    }
    println!("fsck waited for the exiting daemon in {waited} of 10 rounds");
    daemon.unmount();
    assert_fsck_clean(&devs);
}

/// Loop devices held by a live mount: fsck, mkfs and a second mount are refused at once (no
/// waiting), with an error naming the device and the mount that holds it.
#[test]
fn devices_of_a_live_mount_are_refused_at_once_naming_the_mount() {
    if let Some(reason) = skip_reason(true) {
        println!("skipped: {reason}");
        return;
    }
    let _w = Watchdog::new("live mount refused", Duration::from_secs(120));
    let scratch = common::scratch_dir();
    let images = image_files(scratch.path(), 3, 64 * MIB);
    let loops = Loops::attach(&images);
    let devs = loops.devices.clone();
    mkfs(&devs, &[]);
    let mnt = scratch.path().join("mnt");
    let daemon = Daemon::mount(&devs, &mnt);
    let mnt2 = scratch.path().join("mnt2");
    std::fs::create_dir(&mnt2).expect("mkdir mnt2");
    let fsck_args = [&["fsck"], &strs(&devs)[..]].concat();
    let mount_args = [
        &["mount", "--daemon"],
        &strs(&devs)[..],
        &[mnt2.to_str().expect("UTF-8")],
    ]
    .concat();
    // Held by a live mount: refused at once, naming the device and the mount.
    let started = Instant::now();
    let dev0 = devs[0].to_str().expect("UTF-8");
    for (what, args) in [("fsck", &fsck_args), ("a second mount", &mount_args)] {
        let out = stripefs_may_fail(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what} of mounted devices: {err}"
        );
        assert!(
            err.contains(dev0)
                && err.contains("in use")
                && err.contains(&*mnt.to_string_lossy())
                && err.contains(&format!("pid {}", daemon.pid)),
            "{what} of mounted devices: {err}"
        );
        assert!(
            !err.contains("waiting"),
            "{what} waited for a live mount: {err}"
        );
    }
    assert!(!is_mounted(&mnt2));
    let out = stripefs_may_fail(&["mkfs", devs[2].to_str().expect("UTF-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "mkfs of a mounted device: {err}"
    );
    assert!(
        err.contains(devs[2].to_str().expect("UTF-8")) && err.contains("in use"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusing a live mount's devices took {:?}",
        started.elapsed()
    );

    daemon.unmount();
    assert_fsck_clean(&devs);
}

/// A daemon whose mount was detached lazily (`umount -l`) while a file was open there keeps
/// serving that file, and so keeps the devices: fsck waits for it only as long as
/// `STRIPEFS_DEVICE_WAIT` says, then fails naming the device, the daemon and why. Once the
/// file is closed the daemon exits, and fsck (waiting for it if need be) finds it clean.
#[test]
fn a_daemon_that_does_not_let_go_fails_the_wait_naming_it() {
    if let Some(reason) = skip_reason(true) {
        println!("skipped: {reason}");
        return;
    }
    let _w = Watchdog::new("bounded wait", Duration::from_secs(120));
    let scratch = common::scratch_dir();
    let images = image_files(scratch.path(), 2, 64 * MIB);
    let loops = Loops::attach(&images);
    let devs = loops.devices.clone();
    mkfs(&devs, &[]);
    let mnt = scratch.path().join("mnt");
    let daemon = Daemon::mount(&devs, &mnt);
    let data = contents(9, 5 * MIB as usize);
    std::fs::write(mnt.join("kept"), &data).expect("write");
    let open = File::open(mnt.join("kept")).expect("open");
    common::mount::run("umount", &["-l", mnt.to_str().expect("UTF-8")], None);
    untrack_mount(&mnt);

    let fsck_args = [&["fsck"], &strs(&devs)[..]].concat();
    let started = Instant::now();
    let out = Command::new(STRIPEFS)
        .args(&fsck_args)
        .env("STRIPEFS_DEVICE_WAIT", "2")
        .output()
        .expect("run stripefs fsck");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "fsck while the daemon serves: {err}"
    );
    assert!(
        err.contains("waiting for the stripefs daemon")
            && err.contains(devs[0].to_str().expect("UTF-8"))
            && err.contains(&format!("pid {}", daemon.pid))
            && err.contains("after 2 s")
            && err.contains("detached"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "the bounded wait took {took:?}"
    );

    // Closing the file ends the session: the daemon shuts down and fsck waits for it.
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut &open, &mut back).expect("read the open file");
    assert_bytes("the file served on the detached mount", &back, &data);
    drop(open);
    assert_fsck_clean(&devs);
    daemon.expect_exit_0(Duration::from_secs(20));
}
