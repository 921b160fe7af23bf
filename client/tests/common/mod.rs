//! Helpers of the client tests: a stripefs on scratch devices in /var/tmp, mounted with FUSE
//! in this process and served by the control server; the test's own process plays the mount
//! daemon, and clients run in this process or in child processes (this test binary run again
//! with [`CHILD_ENV`] set, or the C example).
//!
//! Needs root and /dev/fuse; without them a test prints `skipped: <reason>` and returns
//! (it fails instead when `STRIPEFS_REQUIRE_FUSE` or `STRIPEFS_REQUIRE_ROOT` is set: the
//! checks are the workspace's, `tests/common/require.rs`).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stripefs_engine::{DeviceSpec, pattern};
use stripefs_fs::control::{Server, ServerHandle, ServerOptions};
use stripefs_fs::filesystem::{self, Filesystem, MkfsOptions};
use stripefs_fs::mount::{Mount, MountOptions};

/// The workspace's checks of what a test needs from the machine.
#[path = "../../../tests/common/require.rs"]
pub mod require;

/// Set in a child process: what the child should do (see the child entry of each test file).
pub const CHILD_ENV: &str = "STRIPEFS_CONTROL_TEST_CHILD";

/// Why these tests cannot run here (a FUSE mount), if they cannot; panics instead when that
/// is required (`STRIPEFS_REQUIRE_FUSE`, `STRIPEFS_REQUIRE_ROOT`).
#[track_caller]
pub fn skip_reason() -> Option<String> {
    require::missing(&[require::Requirement::Fuse])
}

/// Returns from the test with a printed reason when it cannot run here.
#[macro_export]
macro_rules! require_mount {
    () => {
        if common::require::skip(&[common::require::Requirement::Fuse]) {
            return;
        }
    };
}

/// A mounted stripefs with its control server. Dropping it stops the server, unmounts,
/// shuts the filesystem down, and checks it with fsck (panicking on any problem).
pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    pub fs: Arc<Filesystem>,
    pub specs: Vec<DeviceSpec>,
    pub server: Option<ServerHandle>,
    mount: Option<Mount>,
}

impl Mounted {
    /// `devices` scratch devices of `size` bytes, files striped by `unit`.
    pub fn new(devices: usize, size: u64, unit: u64) -> Mounted {
        Self::with_options(
            devices,
            size,
            unit,
            &MountOptions::default(),
            ServerOptions::default(),
        )
    }

    /// [`Mounted::new`] with explicit mount and control-server options. With `allow_other`
    /// the scratch directory is opened to every user (mode 0755), so that other users can
    /// reach the mount.
    pub fn with_options(
        devices: usize,
        size: u64,
        unit: u64,
        mount_options: &MountOptions,
        server_options: ServerOptions,
    ) -> Mounted {
        let dir = tempfile::Builder::new()
            .prefix("stripefs-control-")
            .tempdir_in("/var/tmp")
            .expect("scratch dir");
        let specs: Vec<DeviceSpec> = (0..devices)
            .map(|i| {
                let p = dir.path().join(format!("d{i}.img"));
                std::fs::File::create(&p)
                    .and_then(|f| f.set_len(size))
                    .expect("device file");
                DeviceSpec::Path(p)
            })
            .collect();
        filesystem::mkfs(
            &specs,
            &MkfsOptions {
                stripe_unit: unit,
                ..MkfsOptions::default()
            },
        )
        .expect("mkfs");
        let fs = Filesystem::open(&specs).expect("open");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mountpoint");
        if mount_options.allow_other {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("open the scratch directory");
        }
        let mount = Mount::start(fs.clone(), &mnt, mount_options, || {}).expect("mount");
        mount.check().expect("mount answers");
        let mnt = mount.mountpoint().to_path_buf();
        let server = Server::start_with(fs.clone(), &mnt, server_options).expect("control server");
        Mounted {
            dir,
            mnt,
            fs,
            specs,
            server: Some(server),
            mount: Some(mount),
        }
    }

    pub fn server(&self) -> &ServerHandle {
        self.server.as_ref().expect("server running")
    }

    /// A path on the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// Waits until the server has no connection left (the daemon noticed clients going).
    pub fn wait_for_no_connections(&self, limit: Duration) {
        let start = Instant::now();
        while self.server().connections() > 0 {
            assert!(
                start.elapsed() < limit,
                "{} connection(s) still open after {limit:?}",
                self.server().connections()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Mounted {
    /// Stops the server, unmounts, and shuts the filesystem down (commit and checkpoint).
    fn teardown(&mut self) -> Option<Result<(), filesystem::FsError>> {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let mount = self.mount.take()?;
        let mut mount = mount;
        if mount.unmount().is_ok() {
            let _ = mount.wait();
        } else {
            drop(mount);
        }
        Some(self.fs.shutdown())
    }

    /// Tears down, then checks the devices with fsck; panics on any problem.
    pub fn close_and_fsck(mut self) {
        if let Some(result) = self.teardown() {
            result.expect("filesystem shutdown");
        }
        let devices = filesystem::open_devices(&self.specs).expect("open devices for fsck");
        let report = filesystem::fsck(&devices).expect("fsck");
        assert!(
            report.is_clean(),
            "fsck found problems: {:#?}",
            report.problems
        );
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let shutdown = self.teardown();
        let leftover = self.fs.registrations();
        if std::thread::panicking() {
            return;
        }
        if let Some(result) = shutdown {
            result.expect("filesystem shutdown");
        }
        assert!(
            leftover.is_empty(),
            "registrations left after shutdown: {leftover:?}"
        );
    }
}

/// Waits up to 10 s for `f` to hold; panics naming `what` otherwise.
#[track_caller]
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `len` bytes of the library's pattern for `seed`.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pattern::fill(seed, 0, &mut v);
    v
}

/// Index of the first differing byte, if any.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

/// Panics naming the first differing offset unless `got == want`.
#[track_caller]
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: differs at byte {i} (got {} bytes, want {})",
            got.len(),
            want.len()
        );
    }
}

/// This test binary run again as a child process executing only test `entry`, with
/// [`CHILD_ENV`] set to `task`.
pub fn child(entry: &str, task: &str) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args([entry, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, task)
        .stdin(Stdio::null());
    cmd
}

/// Printed by a child once it holds what it should.
pub const READY: &str = "STRIPEFS-CHILD-READY";

/// This test binary as user `uid` (and group, through `setpriv`), running child task `task`
/// of the file's `child_process_entry`; stdin and stdout piped.
pub fn as_user(uid: u32, task: &str) -> Command {
    let inner = child("child_process_entry", task);
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Starts `cmd` and waits for its READY line; panics with what it printed otherwise. The
/// caller waits for the child it gets.
#[allow(clippy::zombie_processes)]
pub fn start_until_ready(mut cmd: Command) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut process = cmd.spawn().expect("spawn setpriv");
    let mut out = BufReader::new(process.stdout.take().expect("stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).expect("child stdout") == 0 {
            let status = process.wait().expect("wait");
            panic!("child ended ({status}) before it was ready:\n{seen}");
        }
        if line.trim() == READY {
            return (process, out);
        }
        seen.push_str(&line);
    }
}

/// Runs `cmd` to its end; panics with its output unless it succeeds.
pub fn run_to_end(mut cmd: Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("run setpriv");
    assert!(
        out.status.success(),
        "child failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

pub fn ready() {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{READY}").expect("stdout");
    out.flush().expect("flush");
}

/// Waits until the parent closes our stdin.
pub fn hold() {
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// The task of this process if it is a child, `None` in the parent.
pub fn child_task() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Splits a child task `verb:a:b:...` at colons.
pub fn task_parts(task: &str) -> Vec<&str> {
    task.split(':').collect()
}

/// A process-wide deadline: aborts the test binary if a test hangs.
pub struct Watchdog {
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    pub fn new(what: &'static str, limit: Duration) -> Watchdog {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < limit {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("watchdog: {what} still running after {limit:?}; aborting");
            std::process::abort();
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Path helper for `OsStr` arguments.
pub fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}
