//! Making the files, from a few threads of this process through the mount, with checkpoints:
//! at each, what was made is made durable, then one more file is created, written (1 byte)
//! and `fsync`ed (the commit), the daemon's RSS is read, and the filesystem is unmounted and
//! mounted again (timed both ways).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Plan;
use crate::mounts::Mounted;
use crate::mounts::command::make_durable;

/// The directory under the mount that holds the files' directories.
pub const ROOT: &str = "files";
/// The directory of the files the commit probes make.
const PROBES: &str = "probes";

/// The directory of file `i` under the mount.
pub fn dir_of(mountpoint: &Path, plan: &Plan, i: u64) -> PathBuf {
    dir_path(mountpoint, (i % plan.dirs as u64) as usize)
}

/// Directory number `d` under the mount.
pub fn dir_path(mountpoint: &Path, d: usize) -> PathBuf {
    mountpoint.join(ROOT).join(format!("d{d:04}"))
}

/// The figures at one checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Checkpoint {
    /// Files made so far.
    pub files: u64,
    /// Files made per second since the previous checkpoint, making them durable included.
    pub create_rate: f64,
    /// Seconds of making them (making them durable included).
    pub create_seconds: f64,
    /// Of that time, the seconds of making them durable (`syncfs` + `fsync` of the root).
    pub sync_seconds: f64,
    /// Seconds of create + write of 1 byte + `fsync` of one more file (None: it failed, see
    /// `probe_error`).
    pub commit_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_error: Option<String>,
    /// VmRSS of the stripefs daemon before the unmount, bytes.
    pub rss: Option<u64>,
    /// Seconds of the unmount (stripefs: until the daemon has written its checkpoint and
    /// exited).
    pub unmount_seconds: f64,
    /// Seconds of the mount that follows.
    pub mount_seconds: f64,
    /// VmRSS of the new daemon right after the mount, bytes.
    pub rss_after_mount: Option<u64>,
    /// statfs of the mount before the unmount.
    pub space: Option<Space>,
}

/// What statfs says.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Space {
    pub bytes_total: u64,
    pub bytes_free: u64,
    pub inodes_free: u64,
}

/// Why a fill stopped before its target.
#[derive(Clone, Debug, Serialize)]
pub struct Stop {
    /// Files made when it stopped.
    pub files: u64,
    /// The step that failed ("create", "write", "sync", "checkpoint").
    pub step: String,
    /// The errno of the failure, if it was a system call's.
    pub errno: Option<i32>,
    /// Its symbolic name (ENOSPC…).
    pub errno_name: Option<String>,
    pub error: String,
}

impl Stop {
    /// In one line.
    pub fn describe(&self) -> String {
        format!(
            "stopped at {} files: {} failed ({}): {}",
            self.files,
            self.step,
            self.errno_name.as_deref().unwrap_or("no errno"),
            self.error
        )
    }
}

/// One fill: files of `file_bytes` up to the plan's target or the first failure.
#[derive(Clone, Debug, Serialize)]
pub struct Fill {
    pub file_bytes: u64,
    pub target: u64,
    /// Files made (created, and written whole).
    pub made: u64,
    pub checkpoints: Vec<Checkpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

/// Makes the directories, then files of `file_bytes` up to the last of `checkpoints`, taking
/// a checkpoint at each; the last one is taken where the fill ended (at the target, or where
/// it stopped), and leaves the filesystem freshly mounted.
pub fn fill(fs: &mut Mounted, plan: &Plan, checkpoints: &[u64], file_bytes: u64) -> Fill {
    let mut fill = Fill {
        file_bytes,
        target: checkpoints.last().copied().unwrap_or(0),
        made: 0,
        checkpoints: Vec::new(),
        stop: None,
    };
    if let Err(e) = make_dirs(fs.path(), plan) {
        fill.stop = Some(stop(0, "mkdir", &e));
        return fill;
    }
    for &n in checkpoints {
        if crate::signal::interrupted() {
            break;
        }
        let started = Instant::now();
        let from = fill.made;
        let made = make_files(fs.path(), plan, from, n, file_bytes);
        fill.made = from + made.count;
        if let Some((step, e)) = made.failure {
            fill.stop = Some(stop(fill.made, step, &e));
        }
        let sync = match make_durable(fs.path()) {
            Ok(s) => s,
            Err(e) => {
                fill.stop.get_or_insert_with(|| stop(fill.made, "sync", &e));
                break;
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let rate = made.count as f64 / seconds.max(1e-9);
        println!(
            "files: {} files ({:.0}/s since {from}{})",
            fill.made,
            rate,
            fill.stop
                .as_ref()
                .map_or(String::new(), |s| format!("; {}", s.describe()))
        );
        match checkpoint(fs, fill.made, (rate, seconds), sync) {
            Ok(c) => {
                println!(
                    "files:   commit {}, daemon RSS {}, unmount {:.2} s, mount {:.2} s",
                    c.commit_seconds
                        .map_or_else(|| "failed".into(), |s| format!("{:.2} ms", s * 1e3)),
                    c.rss
                        .map_or_else(|| "-".into(), |b| format!("{} MiB", b >> 20)),
                    c.unmount_seconds,
                    c.mount_seconds
                );
                fill.checkpoints.push(c);
            }
            Err(e) => {
                fill.stop
                    .get_or_insert_with(|| stop(fill.made, "checkpoint", &e));
                break;
            }
        }
        if fill.stop.is_some() {
            break;
        }
    }
    fill
}

fn make_dirs(mountpoint: &Path, plan: &Plan) -> Result<()> {
    for d in 0..plan.dirs {
        let dir = dir_path(mountpoint, d);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let probes = mountpoint.join(PROBES);
    std::fs::create_dir_all(&probes).with_context(|| format!("mkdir {}", probes.display()))?;
    make_durable(mountpoint)?;
    Ok(())
}

/// What one stretch of creates did.
struct Made {
    /// Files created and written whole.
    count: u64,
    /// The first failure: the step and the error.
    failure: Option<(&'static str, anyhow::Error)>,
}

/// Makes files `from..to` (file `i` by thread `i % threads`); every thread stops at the first
/// failure of any.
fn make_files(mountpoint: &Path, plan: &Plan, from: u64, to: u64, file_bytes: u64) -> Made {
    let count = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let failure: Mutex<Option<(&'static str, anyhow::Error)>> = Mutex::new(None);
    let block = vec![0x5Au8; file_bytes as usize];
    let threads = plan.threads.max(1) as u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (count, failed, failure, block) = (&count, &failed, &failure, &block);
            s.spawn(move || {
                let mut i = from + (t + threads - from % threads) % threads;
                while i < to && !failed.load(Ordering::Relaxed) {
                    let path = dir_of(mountpoint, plan, i).join(format!("f{i:07}"));
                    if let Err((step, e)) = make_file(&path, block) {
                        failed.store(true, Ordering::Relaxed);
                        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert((step, e));
                        return;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    i += threads;
                }
            });
        }
    });
    Made {
        count: count.into_inner(),
        failure: failure.into_inner().unwrap_or_else(|p| p.into_inner()),
    }
}

fn make_file(path: &Path, block: &[u8]) -> Result<(), (&'static str, anyhow::Error)> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            (
                "create",
                anyhow::Error::new(e).context(path.display().to_string()),
            )
        })?;
    if !block.is_empty() {
        file.write_all(block).map_err(|e| {
            (
                "write",
                anyhow::Error::new(e).context(path.display().to_string()),
            )
        })?;
    }
    Ok(())
}

/// The figures at `files` files, ending with the filesystem unmounted and mounted again.
fn checkpoint(
    fs: &mut Mounted,
    files: u64,
    (create_rate, create_seconds): (f64, f64),
    sync: f64,
) -> Result<Checkpoint> {
    let probe = fs.path().join(PROBES).join(format!("p{files:07}"));
    let (commit_seconds, probe_error) = match commit_probe(&probe) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let space = statfs(fs.path());
    let rss = fs.daemon_pid().and_then(rss_of);
    let started = Instant::now();
    fs.unmount()?;
    let unmount_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    fs.remount()?;
    let mount_seconds = started.elapsed().as_secs_f64();
    Ok(Checkpoint {
        files,
        create_rate,
        create_seconds,
        sync_seconds: sync,
        commit_seconds,
        probe_error,
        rss,
        unmount_seconds,
        mount_seconds,
        rss_after_mount: fs.daemon_pid().and_then(rss_of),
        space,
    })
}

/// Seconds of create + write of 1 byte + `fsync` of a new file.
fn commit_probe(path: &Path) -> Result<f64> {
    let started = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(b"x")
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("fsync of {}", path.display()))?;
    Ok(started.elapsed().as_secs_f64())
}

/// VmRSS of process `pid`, bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

fn statfs(path: &Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value that the call overwrites.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some(Space {
        bytes_total: st.f_blocks as u64 * frsize,
        bytes_free: st.f_bavail as u64 * frsize,
        inodes_free: st.f_favail as u64,
    })
}

/// A `Stop` from an error, with its errno if a system call's error is in its chain.
fn stop(files: u64, step: &str, e: &anyhow::Error) -> Stop {
    let errno = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error);
    Stop {
        files,
        step: step.into(),
        errno,
        errno_name: errno.map(errno_name),
        error: format!("{e:#}"),
    }
}

/// The symbolic name of `errno` (ENOSPC…), or its number.
pub fn errno_name(errno: i32) -> String {
    let known = [
        (libc::ENOSPC, "ENOSPC"),
        (libc::ENOENT, "ENOENT"),
        (libc::EIO, "EIO"),
        (libc::EDQUOT, "EDQUOT"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EFBIG, "EFBIG"),
        (libc::EMLINK, "EMLINK"),
        (libc::EROFS, "EROFS"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::EINVAL, "EINVAL"),
        (libc::EBUSY, "EBUSY"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == errno)
        .map_or_else(|| format!("errno {errno}"), |(_, name)| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_names_the_errno_in_the_chain() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("/mnt/files/d0001/f0000001");
        let s = stop(7, "write", &e);
        assert_eq!(s.errno, Some(libc::ENOSPC));
        assert_eq!(s.errno_name.as_deref(), Some("ENOSPC"));
        assert_eq!(s.files, 7);
        assert_eq!(errno_name(12345), "errno 12345");
    }

    #[test]
    fn the_rss_of_this_process_is_read() {
        let rss = rss_of(std::process::id()).expect("VmRSS of this process");
        assert!(rss > 0);
    }
}
