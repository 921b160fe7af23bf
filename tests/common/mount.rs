//! Helpers of the mount tests: prerequisites (root, /dev/fuse, losetup), scratch devices
//! (files or loop devices), the `stripefs` command, a daemon guard that always unmounts and
//! reaps, trees of files with checksums, and errno assertions.
//!
//! Every guard cleans up in `Drop`, so a failing test leaves no mount, no daemon and no loop
//! device behind.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `stripefs` binary under test.
pub const STRIPEFS: &str = env!("CARGO_BIN_EXE_stripefs");

/// Why the mount tests cannot run here (FUSE, and loop devices if `loops`), if they cannot.
/// A requirement whose `STRIPEFS_REQUIRE_*` switch is set fails the test instead (see
/// [`super::require`]).
#[track_caller]
pub fn skip_reason(loops: bool) -> Option<String> {
    use super::require::{Requirement, missing};
    if loops {
        missing(&[Requirement::Fuse, Requirement::Loop])
    } else {
        missing(&[Requirement::Fuse])
    }
}

/// Makes this process the reaper of orphaned descendants, so the daemons that `stripefs
/// mount --daemon` leaves behind can be waited for (and their exit status checked).
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "prctl(PR_SET_CHILD_SUBREAPER): {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `stripefs ARGS`; panics with its output unless it exits 0.
#[track_caller]
pub fn stripefs(args: &[&str]) -> Output {
    let out = stripefs_may_fail(args);
    assert!(
        out.status.success(),
        "stripefs {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `stripefs ARGS` and returns what happened.
pub fn stripefs_may_fail(args: &[&str]) -> Output {
    Command::new(STRIPEFS)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {STRIPEFS}: {e}"))
}

/// Runs a command; panics with its output unless it exits 0.
#[track_caller]
pub fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------
// Last-resort cleanup
// ---------------------------------------------------------------------------------------

/// What is still mounted, running or attached, for [`cleanup_at_exit`].
#[derive(Default)]
struct Leftovers {
    mounts: Vec<PathBuf>,
    daemons: Vec<i32>,
    loops: Vec<PathBuf>,
}

static LEFTOVERS: Mutex<Leftovers> = Mutex::new(Leftovers {
    mounts: Vec::new(),
    daemons: Vec::new(),
    loops: Vec::new(),
});

fn leftovers() -> std::sync::MutexGuard<'static, Leftovers> {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no captured state.
        unsafe { libc::atexit(cleanup_at_exit) };
    });
    LEFTOVERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers a mount and the process serving it, for [`cleanup_at_exit`].
pub fn track(mountpoint: &Path, pid: i32) {
    let mut left = leftovers();
    left.mounts.push(mountpoint.to_path_buf());
    left.daemons.push(pid);
}

/// Forgets process `pid`: it has exited and been reaped.
pub fn untrack_process(pid: i32) {
    leftovers().daemons.retain(|&p| p != pid);
}

/// Forgets `mountpoint` if nothing is mounted there any more.
pub fn untrack_mount(mountpoint: &Path) {
    if !is_mounted(mountpoint) {
        leftovers().mounts.retain(|m| m != mountpoint);
    }
}

/// Runs at process exit, also when the watchdog ends a hung test with `exit` (which runs no
/// destructor): detaches every mount, kills every daemon and detaches every loop device that
/// a guard has not cleaned up yet.
extern "C" fn cleanup_at_exit() {
    let left = std::mem::take(&mut *LEFTOVERS.lock().unwrap_or_else(|p| p.into_inner()));
    for pid in &left.daemons {
        // SAFETY: kill touches no memory.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for m in &left.mounts {
        let _ = Command::new("umount").arg("-l").arg(m).output();
    }
    for d in &left.loops {
        let _ = Command::new("losetup").arg("-d").arg(d).output();
    }
}

// ---------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------

/// `n` sparse image files of `size` bytes in `dir`.
pub fn image_files(dir: &Path, n: usize, size: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("dev{i}.img"));
            let f = std::fs::File::create(&path)
                .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            f.set_len(size).expect("size the image");
            path
        })
        .collect()
}

/// Loop devices over image files (`losetup --find --show --direct-io=on`), detached on drop.
pub struct Loops {
    pub devices: Vec<PathBuf>,
}

impl Loops {
    pub fn attach(files: &[PathBuf]) -> Loops {
        let mut loops = Loops {
            devices: Vec::new(),
        };
        for file in files {
            let out = Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(file)
                .output()
                .expect("run losetup");
            assert!(
                out.status.success(),
                "losetup --find --show --direct-io=on {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(dev.starts_with("/dev/loop"), "losetup printed `{dev}`");
            leftovers().loops.push(PathBuf::from(&dev));
            loops.devices.push(PathBuf::from(dev));
        }
        loops
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        leftovers().loops.retain(|d| !self.devices.contains(d));
        for dev in &self.devices {
            match Command::new("losetup").arg("-d").arg(dev).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "losetup -d {} failed: {}",
                    dev.display(),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("losetup -d {}: {e}", dev.display()),
            }
        }
    }
}

/// Paths as the `&str` arguments of a command.
pub fn strs(paths: &[PathBuf]) -> Vec<&str> {
    paths
        .iter()
        .map(|p| p.to_str().expect("UTF-8 scratch paths"))
        .collect()
}

/// `stripefs mkfs EXTRA... DEVICES...`
#[track_caller]
pub fn mkfs(devices: &[PathBuf], extra: &[&str]) {
    let mut args = vec!["mkfs"];
    args.extend_from_slice(extra);
    args.extend(strs(devices));
    stripefs(&args);
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// Whether `path` is a mountpoint now (per /proc/self/mounts).
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_ref()))
}

/// A `stripefs mount --daemon`: unmounted and reaped on drop (with `umount -l` and SIGKILL
/// as last resorts), so that nothing outlives the test.
pub struct Daemon {
    pub mountpoint: PathBuf,
    pub pid: i32,
    pub log: PathBuf,
    devices: Vec<PathBuf>,
    reaped: bool,
}

impl Daemon {
    /// Mounts `devices` on `mountpoint` with `stripefs mount --daemon`; the command returns
    /// once the mount works.
    #[track_caller]
    pub fn mount(devices: &[PathBuf], mountpoint: &Path) -> Daemon {
        Daemon::mount_with(devices, mountpoint, &[])
    }

    /// [`Daemon::mount`] with more arguments of `stripefs mount` (`-o dev`, say).
    #[track_caller]
    pub fn mount_with(devices: &[PathBuf], mountpoint: &Path, extra: &[&str]) -> Daemon {
        become_subreaper();
        std::fs::create_dir_all(mountpoint).expect("create the mountpoint");
        let log = mountpoint.with_extension("log");
        let mut args = vec!["mount", "--daemon", "--log", log.to_str().expect("UTF-8")];
        args.extend_from_slice(extra);
        args.extend(strs(devices));
        args.push(mountpoint.to_str().expect("UTF-8"));
        let out = stripefs(&args);
        let daemon = Daemon::adopt(&out, mountpoint, devices);
        assert!(
            is_mounted(mountpoint),
            "`stripefs mount --daemon` returned but {} is not mounted",
            mountpoint.display()
        );
        daemon
    }

    /// The daemon that a command which printed `daemon pid N` started on `mountpoint`
    /// (`stripefs mount --daemon`, or the `mount.stripefs` helper run by mount(8)); its log
    /// is `MOUNTPOINT.log` if it was asked to write one there.
    #[track_caller]
    pub fn adopt(out: &Output, mountpoint: &Path, devices: &[PathBuf]) -> Daemon {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid = stdout
            .split("daemon pid ")
            .nth(1)
            .and_then(|s| s.trim().trim_end_matches(')').parse::<i32>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no daemon pid in `{stdout}` ({})",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        track(mountpoint, pid);
        Daemon {
            mountpoint: mountpoint.to_path_buf(),
            pid,
            log: mountpoint.with_extension("log"),
            devices: devices.to_vec(),
            reaped: false,
        }
    }

    pub fn devices(&self) -> &[PathBuf] {
        &self.devices
    }

    /// `umount MOUNTPOINT` from outside; the daemon must then shut down and exit 0 within
    /// `limit`.
    #[track_caller]
    pub fn unmount(mut self) {
        run("umount", &[self.mountpoint.to_str().expect("UTF-8")], None);
        let status = self.wait(Duration::from_secs(20));
        assert_eq!(
            status,
            Some(0),
            "daemon {} did not exit 0 after umount; its log:\n{}",
            self.pid,
            self.log_text()
        );
        assert!(!is_mounted(&self.mountpoint));
        untrack_mount(&self.mountpoint);
    }

    /// A plain `umount MOUNTPOINT` (the system's umount, as fstab, systemd and scripts do),
    /// without waiting for the daemon: it may still be writing its final checkpoint and
    /// holding the devices when this returns. Reap it later with [`Daemon::expect_exit_0`].
    #[track_caller]
    pub fn umount_plain(&self) {
        run("umount", &[self.mountpoint.to_str().expect("UTF-8")], None);
        assert!(!is_mounted(&self.mountpoint));
        untrack_mount(&self.mountpoint);
    }

    /// After an unmount: the daemon must exit 0 within `limit`.
    #[track_caller]
    pub fn expect_exit_0(mut self, limit: Duration) {
        let status = self.wait(limit);
        assert_eq!(
            status,
            Some(0),
            "daemon {} did not exit 0 after the unmount; its log:\n{}",
            self.pid,
            self.log_text()
        );
    }

    /// Sends `signal`; the daemon must unmount, shut down and exit 0.
    #[track_caller]
    pub fn stop_with(mut self, signal: i32) {
        // SAFETY: kill with a pid of our descendant and a valid signal touches no memory.
        unsafe { libc::kill(self.pid, signal) };
        let status = self.wait(Duration::from_secs(20));
        assert_eq!(
            status,
            Some(0),
            "daemon {} did not exit 0 after signal {signal}; its log:\n{}",
            self.pid,
            self.log_text()
        );
        assert!(
            !is_mounted(&self.mountpoint),
            "still mounted after the daemon exited"
        );
        untrack_mount(&self.mountpoint);
    }

    /// SIGKILL, and wait until the daemon is gone. The dead mount stays (any access fails
    /// with ENOTCONN) until [`clear_mount`].
    pub fn kill9(mut self) {
        // SAFETY: as in `stop_with`.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let status = self.wait(Duration::from_secs(20));
        assert_eq!(status, Some(128 + libc::SIGKILL), "daemon not killed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the daemon to exit; its exit code (128+signal if killed), or `None` on
    /// timeout.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer; the daemon is our descendant and we
            // are its reaper.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if rc == self.pid {
                self.reaped = true;
                untrack_process(self.pid);
                return Some(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                });
            }
            if rc < 0 {
                // Not our child (no subreaper): fall back to watching /proc.
                if !Path::new(&format!("/proc/{}", self.pid)).exists() {
                    self.reaped = true;
                    untrack_process(self.pid);
                    return Some(0);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount").arg(&self.mountpoint).output();
        }
        if self.wait(Duration::from_secs(10)).is_none() {
            eprintln!("daemon {} still running: SIGKILL", self.pid);
            // SAFETY: as in `stop_with`.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.wait(Duration::from_secs(10));
        }
        clear_mount(&self.mountpoint);
        if std::thread::panicking() {
            eprintln!("daemon log {}:\n{}", self.log.display(), self.log_text());
        }
    }
}

/// Unmounts whatever is left at `path` (`umount`, then `umount -l`).
pub fn clear_mount(path: &Path) {
    for _ in 0..50 {
        if !is_mounted(path) {
            break;
        }
        let _ = Command::new("umount").arg(path).output();
        if !is_mounted(path) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if is_mounted(path) {
        let _ = Command::new("umount").arg("-l").arg(path).output();
    }
    untrack_mount(path);
}

// ---------------------------------------------------------------------------------------
// Data and checks
// ---------------------------------------------------------------------------------------

/// Deterministic contents for file `seed`: a random 64 KiB block, with the byte offset and
/// the seed stamped into every 4 KiB, so misplaced or stale blocks differ.
pub fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = super::Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut block = vec![0u8; 64 << 10];
    for chunk in block.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let at = out.len();
        let n = (len - at).min(block.len());
        out.extend_from_slice(&block[..n]);
    }
    for (i, page) in out.chunks_mut(4096).enumerate() {
        let stamp = (((i as u64) << 20) ^ seed).to_le_bytes();
        let n = page.len().min(8);
        page[..n].copy_from_slice(&stamp[..n]);
    }
    out
}

/// sha256 of every regular file under `root`, by path relative to `root` (with `sha256sum`).
pub fn checksums(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut files);
    let mut out = BTreeMap::new();
    for batch in files.chunks(200) {
        let mut cmd = Command::new("sha256sum");
        cmd.arg("-z").current_dir(root);
        for f in batch {
            cmd.arg(f);
        }
        let result = cmd.output().expect("run sha256sum");
        assert!(
            result.status.success(),
            "sha256sum under {} failed: {}",
            root.display(),
            String::from_utf8_lossy(&result.stderr)
        );
        for record in result.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let text = String::from_utf8_lossy(record);
            let (hash, name) = text.split_once("  ").expect("sha256sum output format");
            out.insert(PathBuf::from(name), hash.to_string());
        }
    }
    out
}

fn walk(root: &Path, rel: &Path, files: &mut Vec<PathBuf>) {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let kind = e.file_type().expect("file type");
        let path = rel.join(e.file_name());
        if kind.is_dir() {
            walk(root, &path, files);
        } else if kind.is_file() {
            files.push(path);
        }
    }
}

/// Asserts that `result` failed with `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(what: &str, result: std::io::Result<T>, errno: i32) {
    match result {
        Ok(v) => panic!(
            "{what}: succeeded with {v:?}, expected {}",
            std::io::Error::from_raw_os_error(errno)
        ),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(errno),
            "{what}: failed with {e}, expected {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
}

/// `path` as a C string.
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in paths")
}

/// The value of extended attribute `name` of `path`.
pub fn getxattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let p = cpath(path);
    let n = CString::new(name).expect("attribute name");
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks for the size.
    let size = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: `buf` has `buf.len()` writable bytes.
    let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// Sets extended attribute `name` of `path` (`flags`: 0, XATTR_CREATE or XATTR_REPLACE).
pub fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> std::io::Result<()> {
    let p = cpath(path);
    let n = CString::new(name).expect("attribute name");
    // SAFETY: both strings are NUL-terminated; `value` is readable for its length.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes extended attribute `name` of `path`.
pub fn removexattr(path: &Path, name: &str) -> std::io::Result<()> {
    let p = cpath(path);
    let n = CString::new(name).expect("attribute name");
    // SAFETY: both strings are NUL-terminated.
    if unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Names of the extended attributes of `path`.
pub fn listxattr(path: &Path) -> std::io::Result<Vec<String>> {
    let p = cpath(path);
    // SAFETY: the string is NUL-terminated; a null buffer of size 0 asks for the size.
    let size = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: `buf` has `buf.len()` writable bytes.
    let got = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// `statvfs(path)`: (free blocks, block size).
pub fn free_space(path: &Path) -> (u64, u64) {
    let p = cpath(path);
    // SAFETY: statvfs is plain data; zeroed is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated, `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(p.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    (st.f_bfree, st.f_frsize)
}

/// Writes `data` to a new file at `path` and fsyncs it.
pub fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Panics naming every key whose value differs between `got` and `want` (and only those).
#[track_caller]
pub fn assert_same_map<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) {
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("{k:?}: got {g:?}, want {w:?}")),
            None => diffs.push(format!("{k:?}: missing")),
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(k)) {
        diffs.push(format!("{k:?}: unexpected"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} entries differ:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}

/// `stripefs fsck DEVICES`: panics with its report unless the filesystem is clean.
#[track_caller]
pub fn assert_fsck_clean(devices: &[PathBuf]) {
    let mut args = vec!["fsck"];
    args.extend(strs(devices));
    let out = stripefs_may_fail(&args);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("clean"),
        "fsck is not clean ({}):\n{report}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The start of a test on a mount: skips (or fails, when required) where FUSE is missing;
/// otherwise a watchdog of `limit`, a scratch directory and four image files of `size`
/// bytes made into a filesystem with `mkfs_args`.
pub fn setup(
    name: &'static str,
    size: u64,
    mkfs_args: &[&str],
    limit: std::time::Duration,
) -> Option<(super::Watchdog, tempfile::TempDir, Vec<PathBuf>)> {
    if let Some(reason) = skip_reason(false) {
        println!("skipped: {reason}");
        return None;
    }
    let watchdog = super::Watchdog::new(name, limit);
    let scratch = super::scratch_dir();
    let images = image_files(scratch.path(), 4, size);
    mkfs(&images, mkfs_args);
    Some((watchdog, scratch, images))
}

/// A filesystem on four 64 MiB file-backed devices (made with `mkfs_args`), mounted by a
/// daemon with `mount_args`; unmounted and cleared on drop.
pub struct MountedFs {
    // Fields drop in order: the daemon before the scratch directory.
    daemon: Option<Daemon>,
    pub images: Vec<PathBuf>,
    pub mnt: PathBuf,
    mount_args: Vec<String>,
    _watchdog: super::Watchdog,
    _scratch: tempfile::TempDir,
}

impl MountedFs {
    /// `None` (the test skips) where FUSE is missing, unless required.
    pub fn new(name: &'static str, mkfs_args: &[&str], mount_args: &[&str]) -> Option<MountedFs> {
        if let Some(reason) = skip_reason(false) {
            println!("skipped: {reason}");
            return None;
        }
        let watchdog = super::Watchdog::new(name, Duration::from_secs(90));
        let scratch = super::scratch_dir();
        let images = image_files(scratch.path(), 4, 64 * super::MIB);
        mkfs(&images, mkfs_args);
        let mnt = scratch.path().join("mnt");
        let daemon = Daemon::mount_with(&images, &mnt, mount_args);
        Some(MountedFs {
            daemon: Some(daemon),
            images,
            mnt,
            mount_args: mount_args.iter().map(|a| a.to_string()).collect(),
            _watchdog: watchdog,
            _scratch: scratch,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `umount` (the daemon must exit 0), then mount again.
    pub fn remount(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.unmount();
        }
        let args: Vec<&str> = self.mount_args.iter().map(String::as_str).collect();
        self.daemon = Some(Daemon::mount_with(&self.images, &self.mnt, &args));
    }

    /// Unmounts; fsck must find the filesystem clean.
    pub fn finish(mut self) {
        self.unmount_clean();
    }

    /// Unmounts (the devices stay until drop); fsck must find the filesystem clean.
    pub fn unmount_clean(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.unmount();
        }
        assert_fsck_clean(&self.images);
    }
}
