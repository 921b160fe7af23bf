//! A `create` that loses a race: the kernel looked a name up and found nothing, then the
//! name appeared (made by the daemon itself: here a rename in the test process, which is
//! the daemon, as registered I/O or another mount of the filesystem could do), then the
//! kernel's CREATE arrives. The daemon must not answer with the file it finds, which the
//! kernel would take as created by this call (no permission check, no `O_TRUNC`): it answers
//! `ESTALE`, and the kernel looks the name up again and opens the file like any open.
//!
//! The opener (a child process, as another user or as root) opens fresh names with
//! `O_CREAT` one after the other and publishes which one it is about to open; the daemon
//! renames a prepared file (root's, mode 0600, 4 KiB of data) onto that name after a
//! varying delay, so that it lands before the lookup, between lookup and CREATE, or after.

mod common;

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mounted, Watchdog, as_user, child_task, ready, start_until_ready, task_parts};
use stripefs_fs::control::ServerOptions;
use stripefs_fs::filesystem::{Caller, RenameFlags};
use stripefs_fs::mount::MountOptions;

/// Names per run.
const NAMES: u64 = 1500;
const ROOT: Caller = Caller { uid: 0, gid: 0 };
/// A user other than root.
const OPENER: u32 = 60003;

/// The counter the opener publishes (the name it is about to open, plus one), in a small
/// shared file mapped by both processes.
struct Progress {
    counter: &'static AtomicU64,
}

impl Progress {
    fn map(path: &Path) -> Progress {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("progress file");
        // SAFETY: a fresh shared mapping of the first page of the file, placed by the kernel.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap progress");
        // SAFETY: the mapping is page-aligned, at least 8 bytes, never unmapped (it lives as
        // long as the test process), and only accessed atomically.
        let counter = unsafe { &*ptr.cast::<AtomicU64>() };
        Progress { counter }
    }

    fn get(&self) -> &AtomicU64 {
        self.counter
    }
}

/// Entry point of the child processes of this file (a no-op in a normal run).
#[test]
fn child_process_entry() {
    let Some(task) = child_task() else { return };
    match task_parts(&task).as_slice() {
        ["open", dir, progress, mode] => open_all(Path::new(dir), Path::new(progress), mode),
        other => panic!("unknown child task {other:?}"),
    }
}

/// Opens `dir/nI` for every I with O_CREAT (`mode` "perm": read-write, as a user who may
/// not open root's 0600 files; "trunc": O_TRUNC, as root), publishing I first; prints
/// what came of it.
fn open_all(dir: &Path, progress: &Path, mode: &str) {
    let progress = Progress::map(progress);
    ready();
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let (mut own, mut refused, mut opened, mut violations) = (0, 0, 0, Vec::new());
    let mut errors = Vec::new();
    for i in 0..NAMES {
        progress.get().store(i + 1, Ordering::SeqCst);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).mode(0o644);
        if mode == "trunc" {
            options.truncate(true);
        }
        match options.open(dir.join(format!("n{i}"))) {
            Ok(file) => {
                let meta = file.metadata().expect("fstat");
                let foreign = meta.size() > 0 || meta.uid() != me || meta.mode() & 0o777 == 0o600;
                match (foreign, mode) {
                    (false, _) => own += 1,
                    // Root may open root's file, but O_TRUNC must have emptied it.
                    (true, "trunc") if meta.size() == 0 => opened += 1,
                    (true, _) => violations.push(format!("n{i}: {meta:?}")),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => refused += 1,
            Err(e) => errors.push(format!("n{i}: {e}")),
        }
    }
    println!("own={own} refused={refused} opened={opened}");
    println!("violations={violations:?}");
    println!("errors={errors:?}");
}

/// Renames a prepared file onto each name the opener is about to open, after a delay that
/// sweeps 0..80 µs; returns how many landed (the others found the opener's file there).
fn race(
    m: &Mounted,
    dir: u64,
    stage: u64,
    progress: &Progress,
    child_done: impl Fn() -> bool,
) -> u64 {
    let mut landed = 0;
    let mut next = 0;
    let mut spin = 0u64;
    let start = Instant::now();
    while next < NAMES && !child_done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "race stuck at {next}"
        );
        let about = progress.get().load(Ordering::SeqCst);
        if about == 0 || about - 1 < next {
            std::hint::spin_loop();
            continue;
        }
        let i = about - 1;
        spin = (spin + 7) % 80;
        let until = Instant::now() + Duration::from_micros(spin);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        let name = format!("n{i}");
        let noreplace = RenameFlags {
            noreplace: true,
            ..RenameFlags::default()
        };
        if m.fs
            .rename(
                stage,
                OsStr::new(&format!("s{i}")),
                dir,
                OsStr::new(&name),
                noreplace,
            )
            .is_ok()
        {
            landed += 1;
        }
        next = i + 1;
    }
    landed
}

/// Runs one race with the opener as `uid` in `mode`; returns the opener's report.
fn run_race(m: &Mounted, uid: u32, mode: &str) -> String {
    let root = 1;
    let run = format!("{mode}-{uid}");
    let dir =
        m.fs.mkdir(root, OsStr::new(&run), 0o777, ROOT)
            .expect("mkdir")
            .ino;
    let stage_name = format!("stage-{run}");
    let stage =
        m.fs.mkdir(root, OsStr::new(&stage_name), 0o700, ROOT)
            .expect("mkdir")
            .ino;
    for i in 0..NAMES {
        let a =
            m.fs.create(stage, OsStr::new(&format!("s{i}")), 0o600, ROOT)
                .expect("create");
        m.fs.write(a.ino, 0, &[0x5a; 4096]).expect("write");
    }
    // The mkdir made in the daemon: let the kernel see the directory's mode as set.
    std::fs::set_permissions(m.path(&run), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let progress_path = m.dir.path().join(format!("progress-{run}"));
    std::fs::write(&progress_path, [0u8; 4096]).expect("progress file");
    std::fs::set_permissions(&progress_path, std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    let progress = Progress::map(&progress_path);
    let task = format!(
        "open:{}:{}:{mode}",
        m.path(&run).display(),
        progress_path.display()
    );
    let (mut opener, mut out) = start_until_ready(as_user(uid, &task));
    let done = std::sync::atomic::AtomicBool::new(false);
    let landed = std::thread::scope(|s| {
        let racer = s.spawn(|| race(m, dir, stage, &progress, || done.load(Ordering::SeqCst)));
        let status = opener.wait().expect("wait");
        done.store(true, Ordering::SeqCst);
        assert!(status.success(), "opener failed ({status})");
        racer.join().expect("racer")
    });
    let mut report = String::new();
    std::io::Read::read_to_string(&mut out, &mut report).expect("report");
    println!("{mode} as uid {uid}: {landed} renames landed; opener: {report}");
    report
}

#[test]
fn a_create_that_loses_a_race_opens_with_the_kernels_checks() {
    require_mount!();
    if common::require::skip(&[common::require::Requirement::Tool("setpriv")]) {
        return;
    }
    let _w = Watchdog::new("create race", Duration::from_secs(300));
    let mount = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let m = Mounted::with_options(2, 64 << 20, 64 << 10, &mount, ServerOptions::default());
    // Another user must never get a descriptor of root's 0600 file.
    let perm = run_race(&m, OPENER, "perm");
    // Root's O_TRUNC must empty the file it opens.
    let trunc = run_race(&m, 0, "trunc");
    for report in [&perm, &trunc] {
        assert!(report.contains("violations=[]"), "{report}");
        assert!(report.contains("errors=[]"), "{report}");
    }
    m.close_and_fsck();
}
