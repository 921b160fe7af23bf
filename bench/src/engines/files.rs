//! The filesystem the file engines read: a stripefs made on a point's devices, holding one
//! large file written through registered writes, opened in this process, and (for the FUSE
//! and cross-process engines) mounted with FUSE and served by the control endpoint.
//!
//! Making the filesystem (mkfs and writing the file) is done once per kind of device and
//! kept while nothing else writes to those devices: the other engines only read, except on
//! the write points, which invalidate it. Opening and mounting happen before each group of
//! file engines and are undone before any other engine runs, because the filesystem holds
//! its block devices exclusively (`O_EXCL`), as the stripefs engine does.
//!
//! Emulated NVMe devices keep their bytes in memory that is gone when they are closed, so
//! the filesystem's emulated devices are backed by files in /dev/shm instead (the same
//! emulation over the same kind of memory: shmem pages).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use stripefs_engine::DeviceSpec;
use stripefs_fs::control::{Server, ServerHandle, ServerOptions};
use stripefs_fs::filesystem::{self, Caller, Filesystem, MkfsOptions};
use stripefs_fs::meta;
use stripefs_fs::mount::{Mount, MountOptions};
use stripefs_mapping::Buffer;

use super::stripefs::BUSY_WAIT;
use super::{Deadline, RunSpec};
use crate::devices::{Devices, Kind, Target, is_root, wait_until_free};
use crate::stats::{Detail, Histogram, Measurement, ThreadTimes, Usage};
use crate::workload::{Access, Offsets};

/// The file every file engine reads.
pub const FILE_NAME: &str = "bench.dat";
/// Stripe unit of the file: the `stripefs mkfs` default, what a user gets.
pub const STRIPE_UNIT: u64 = 256 << 10;
/// Most threads issuing blocking reads through the FUSE mount.
pub const MAX_FILE_THREADS: usize = 32;
/// Threads serving the FUSE mount: enough for every reader thread to have its request
/// served at once.
const MOUNT_THREADS: usize = MAX_FILE_THREADS;
/// Share of the free space the file takes.
const FILL: f64 = 0.85;
/// Bytes written per registered write while filling the file.
const FILL_CHUNK: u64 = 16 << 20;

/// What an engine needs of the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Opened in this process.
    Open,
    /// Mounted with FUSE as well.
    Mount,
    /// Mounted and served by the control endpoint.
    Control,
}

/// A filesystem made on some devices, with its file written.
struct Prepared {
    count: usize,
    specs: Vec<DeviceSpec>,
    file_size: u64,
    ino: u64,
}

/// The filesystem, open now.
pub struct Opened {
    kind: Kind,
    count: usize,
    pub fs: Arc<Filesystem>,
    /// Inode of the file.
    pub ino: u64,
    /// Bytes of the file (a multiple of every block size used).
    pub file_size: u64,
    mount: Option<Mount>,
    server: Option<ServerHandle>,
    mountpoint: PathBuf,
}

impl Opened {
    /// The file's path on the mount.
    pub fn path(&self) -> PathBuf {
        self.mountpoint.join(FILE_NAME)
    }

    /// The control socket, when served.
    pub fn socket(&self) -> Option<&Path> {
        self.server.as_ref().map(ServerHandle::socket_path)
    }

    /// Commands the filesystem's devices have run so far.
    pub fn device_commands(&self) -> u64 {
        super::commands_run(self.fs.devices())
    }
}

/// The filesystems of a run (at most one open at a time).
#[derive(Default)]
pub struct Filesystems {
    prepared: BTreeMap<Kind, Prepared>,
    open: Option<Opened>,
    /// Mountpoint and control sockets.
    scratch: Option<tempfile::TempDir>,
    /// Backing files of emulated devices.
    shm: Option<tempfile::TempDir>,
}

impl Filesystems {
    pub fn new() -> Filesystems {
        Filesystems::default()
    }

    /// The filesystem on `target`'s devices, open (and mounted and served, as `need` says);
    /// Err(reason) when it cannot be had here.
    pub fn get(&mut self, target: &Target, need: Need) -> Result<Result<&Opened, String>> {
        if need >= Need::Mount
            && let Some(reason) = mount_unavailable()
        {
            return Ok(Err(reason));
        }
        let same = self
            .open
            .as_ref()
            .is_some_and(|o| o.kind == target.kind && o.count == target.count());
        if !same {
            self.close()?;
            self.open_fs(target)?;
        }
        let scratch = self.scratch_dir()?;
        let Some(open) = self.open.as_mut() else {
            bail!("the filesystem did not open");
        };
        if need >= Need::Mount && open.mount.is_none() {
            let mnt = scratch.join("mnt");
            std::fs::create_dir_all(&mnt).with_context(|| format!("mkdir {}", mnt.display()))?;
            let options = MountOptions {
                threads: MOUNT_THREADS,
                allow_other: is_root(),
                fsname: "stripefs-bench".into(),
                dev: false,
            };
            let mount = Mount::start(open.fs.clone(), &mnt, &options, || {})
                .with_context(|| format!("mounting on {}", mnt.display()))?;
            mount.check().context("checking the mount")?;
            open.mountpoint = mount.mountpoint().to_path_buf();
            open.mount = Some(mount);
        }
        if need >= Need::Control && open.server.is_none() {
            let options = ServerOptions {
                socket_dir: scratch.join("ctl"),
                ..ServerOptions::default()
            };
            let server = Server::start_with(open.fs.clone(), &open.mountpoint, options)
                .context("starting the control endpoint")?;
            open.server = Some(server);
        }
        Ok(Ok(open))
    }

    /// Forgets the filesystem on devices of `kind` (they are about to be overwritten).
    pub fn invalidate(&mut self, kind: Kind) -> Result<()> {
        if self.open.as_ref().is_some_and(|o| o.kind == kind) {
            self.close()?;
        }
        self.prepared.remove(&kind);
        Ok(())
    }

    /// Stops serving, unmounts and closes the open filesystem, so that its devices are free.
    pub fn close(&mut self) -> Result<()> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        if let Some(server) = open.server.take() {
            server.shutdown();
        }
        if let Some(mut mount) = open.mount.take() {
            mount
                .unmount()
                .context("unmounting the benchmark's filesystem")?;
            mount.wait().context("ending the FUSE session")?;
        }
        in_thread(|| open.fs.shutdown()).context("shutting the filesystem down")?;
        // The devices are closed (and free for exclusive opens) when the last reference goes.
        Arc::try_unwrap(open.fs)
            .map(drop)
            .map_err(|_| anyhow!("the filesystem is still in use after unmounting"))
    }

    fn scratch_dir(&mut self) -> Result<PathBuf> {
        if self.scratch.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("stripefs-bench-fs-")
                .tempdir_in("/var/tmp")
                .context("scratch dir in /var/tmp")?;
            self.scratch = Some(dir);
        }
        let dir = self.scratch.as_ref().map(|d| d.path().to_path_buf());
        dir.ok_or_else(|| anyhow!("no scratch dir"))
    }

    fn shm_dir(&mut self) -> Result<PathBuf> {
        if self.shm.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("stripefs-bench-fs-")
                .tempdir_in("/dev/shm")
                .context("scratch dir in /dev/shm")?;
            self.shm = Some(dir);
        }
        let dir = self.shm.as_ref().map(|d| d.path().to_path_buf());
        dir.ok_or_else(|| anyhow!("no scratch dir"))
    }

    /// Device specs of the filesystem on `target`: its paths, or its emulated devices backed
    /// by files in /dev/shm.
    fn specs(&mut self, target: &Target) -> Result<Vec<DeviceSpec>> {
        match &target.devices {
            Devices::Paths(paths) => Ok(paths.iter().cloned().map(DeviceSpec::Path).collect()),
            Devices::Emulated(specs) => {
                let dir = self.shm_dir()?;
                specs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let backing = dir.join(format!("{}{i}.img", target.kind.name()));
                        let Some(rest) = s.strip_prefix("emu:mem") else {
                            bail!("emulated spec {s} is not memory-backed");
                        };
                        let text = format!("emu:{}{rest}", backing.display());
                        text.parse().with_context(|| format!("spec {text}"))
                    })
                    .collect()
            }
        }
    }

    fn open_fs(&mut self, target: &Target) -> Result<()> {
        let count = target.count();
        let ready = self
            .prepared
            .get(&target.kind)
            .is_some_and(|p| p.count == count);
        if !ready {
            self.prepared.remove(&target.kind);
            let prepared = self.prepare(target)?;
            self.prepared.insert(target.kind, prepared);
        }
        let Some(p) = self.prepared.get(&target.kind) else {
            bail!("no filesystem prepared");
        };
        wait_free(&p.specs)?;
        let specs = &p.specs;
        let fs =
            in_thread(|| Filesystem::open(specs)).context("opening the benchmark's filesystem")?;
        self.open = Some(Opened {
            kind: target.kind,
            count,
            fs,
            ino: p.ino,
            file_size: p.file_size,
            mount: None,
            server: None,
            mountpoint: PathBuf::new(),
        });
        Ok(())
    }

    /// mkfs on the devices, then the file, written through registered writes (holes would
    /// read as zeros without touching the devices); closed again with a checkpoint.
    fn prepare(&mut self, target: &Target) -> Result<Prepared> {
        let specs = self.specs(target)?;
        make_filesystem(specs)
    }
}

/// Runs `f` on a thread of its own, which ends when `f` returns. Every blocking I/O of the
/// filesystem (mkfs, open, checkpoints, the POSIX and registered data paths) goes through a
/// per-thread I/O context that keeps a strong reference to each device the thread has used
/// until the thread ends; on a short-lived thread, closing the filesystem really closes its
/// devices (their descriptors, rings and exclusive claims), so that the next engine can open
/// them.
fn in_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// mkfs on `specs`, then the file (each on a thread of its own, see [`in_thread`]).
fn make_filesystem(specs: Vec<DeviceSpec>) -> Result<Prepared> {
    let options = MkfsOptions {
        stripe_unit: STRIPE_UNIT,
        label: "stripefs-bench".into(),
        ..MkfsOptions::default()
    };
    wait_free(&specs)?;
    in_thread(|| filesystem::mkfs(&specs, &options)).context("mkfs on the benchmark's devices")?;
    wait_free(&specs)?;
    let (file_size, ino) = in_thread(|| write_file(&specs))?;
    Ok(Prepared {
        count: specs.len(),
        specs,
        file_size,
        ino,
    })
}

/// Creates the file and fills it; returns its size and inode.
fn write_file(specs: &[DeviceSpec]) -> Result<(u64, u64)> {
    let fs = Filesystem::open(specs).context("opening the new filesystem")?;
    let st = fs.statfs();
    let free = st.bfree * u64::from(st.bsize);
    let row = STRIPE_UNIT * specs.len() as u64;
    let file_size = (free as f64 * FILL) as u64 / row * row;
    if file_size == 0 {
        bail!("no room for the benchmark's file ({free} bytes free)");
    }
    let attr = fs
        .create(meta::ROOT, OsStr::new(FILE_NAME), 0o644, Caller::default())
        .context("creating the benchmark's file")?;
    // Without root, registration counts against RLIMIT_MEMLOCK (once per device).
    let limit = crate::stats::memlock_limit().map_or(FILL_CHUNK, |l| {
        (l / (specs.len() as u64 + 2)) / (1 << 20) * (1 << 20)
    });
    let chunk = FILL_CHUNK.min(limit).max(1 << 20).min(file_size);
    let buffer = Buffer::new(chunk).context("allocating the fill buffer")?;
    let mut block = vec![0u8; chunk as usize];
    stripefs_engine::pattern::fill(attr.ino, 0, &mut block);
    buffer.write_at(0, &block).context("filling the buffer")?;
    let mapping = fs.register(attr.ino, &buffer).context("registering")?;
    let mut at = 0;
    while at < file_size {
        let len = chunk.min(file_size - at);
        fs.write_registered(&mapping, at, 0, len)
            .with_context(|| format!("writing the benchmark's file at {at}"))?;
        at += len;
    }
    fs.unregister(&mapping).context("unregistering")?;
    fs.shutdown().context("closing the new filesystem")?;
    Ok((file_size, attr.ino))
}

impl Drop for Filesystems {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            eprintln!("stripefs bench: {e:#}");
        }
    }
}

/// Waits until the block devices among `specs` are free (see [`wait_until_free`]).
fn wait_free(specs: &[DeviceSpec]) -> Result<()> {
    let paths: Vec<PathBuf> = specs
        .iter()
        .filter_map(|s| match s {
            DeviceSpec::Path(p) => Some(p.clone()),
            DeviceSpec::Emulated(_) => None,
        })
        .collect();
    wait_until_free(&paths, BUSY_WAIT)
}

/// Why the filesystem cannot be mounted here, if it cannot.
pub(crate) fn mount_unavailable() -> Option<String> {
    if !is_root() {
        Some("needs root (mounting FUSE with mount(2))".into())
    } else if !Path::new("/dev/fuse").exists() {
        Some("no /dev/fuse (modprobe fuse)".into())
    } else {
        None
    }
}

/// Empties the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`), so that reads start
/// cold. Needs root; without it nothing is dropped.
pub fn drop_caches() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("writing /proc/sys/vm/drop_caches")
}

/// The outcome of a run of blocking requests from threads.
pub struct ThreadedRun {
    pub ops: u64,
    pub hist: Histogram,
    pub seconds: f64,
    pub usage: Usage,
    /// CPU per thread group (the request threads are `reader`).
    pub thread_cpu: BTreeMap<String, f64>,
}

impl ThreadedRun {
    /// The measurement of `bs`-byte requests, with `commands` device commands run.
    pub fn measurement(self, bs: u64, commands: u64) -> Measurement {
        let mut m = Measurement::new(
            self.ops * bs,
            self.ops,
            self.seconds,
            &self.usage,
            &self.hist,
        );
        m.detail = Some(Detail {
            thread_cpu: self.thread_cpu,
            voluntary_switches: self.usage.voluntary_switches,
            involuntary_switches: self.usage.involuntary_switches,
            device_commands: Some(commands),
        });
        m
    }
}

/// Runs `threads` threads for the spec's duration, each doing one blocking request of the
/// workload's block size at a time within `region` bytes of the file: sequential requests
/// take the next block of one shared stream, random ones are uniform. `make(t)` builds thread
/// `t`'s request function (in the thread), which is given the offset.
pub fn run_threads<M, G>(
    spec: &RunSpec<'_>,
    threads: usize,
    region: u64,
    make: M,
) -> Result<ThreadedRun>
where
    M: Fn(usize) -> Result<G> + Sync,
    G: FnMut(u64) -> Result<()>,
{
    let w = spec.workload;
    let blocks = (region / w.bs).max(1);
    let cursor = AtomicU64::new(0);
    // Finished threads wait until the figures are taken, so that their CPU time (and that of
    // their io_uring workers, which end with them) is still in /proc.
    // (threads finished, figures taken)
    let gate = (Mutex::new((0usize, false)), Condvar::new());
    let (times, usage, start) = (ThreadTimes::now(), Usage::now()?, Instant::now());
    let deadline = Deadline::after(spec.duration);
    let (results, seconds, usage, thread_cpu) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (make, cursor, gate) = (&make, &cursor, &gate);
                std::thread::Builder::new()
                    .name(format!("reader {t}"))
                    .spawn_scoped(scope, move || -> Result<(u64, Histogram)> {
                        let result = (|| {
                            let mut io = make(t)?;
                            let mut random = Offsets::new(w.access, w.bs, region, t as u64 + 1);
                            let (mut ops, mut hist) = (0u64, Histogram::default());
                            while !deadline.passed() && !crate::signal::interrupted() {
                                let offset = if w.access == Access::RandRead {
                                    random.next_offset()
                                } else {
                                    cursor.fetch_add(1, Ordering::Relaxed) % blocks * w.bs
                                };
                                let started = Instant::now();
                                io(offset).with_context(|| format!("offset {offset}"))?;
                                hist.record(started.elapsed());
                                ops += 1;
                            }
                            Ok((ops, hist))
                        })();
                        let (lock, changed) = gate;
                        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                        state.0 += 1;
                        changed.notify_all();
                        while !state.1 {
                            state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
                        }
                        result
                    })
                    .context("spawning a reader thread")
            })
            .collect();
        let spawned = handles.iter().filter(|h| h.is_ok()).count();
        let (lock, changed) = &gate;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        while state.0 < spawned {
            state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let seconds = start.elapsed().as_secs_f64();
        let usage = Usage::now().map(|u| u.since(&usage));
        let thread_cpu = ThreadTimes::now().since(&times);
        state.1 = true;
        changed.notify_all();
        drop(state);
        let results: Vec<Result<(u64, Histogram)>> = handles
            .into_iter()
            .map(|h| h?.join().map_err(|_| anyhow!("a reader thread panicked"))?)
            .collect();
        (results, seconds, usage, thread_cpu)
    });
    let (mut ops, mut hist) = (0, Histogram::default());
    for r in results {
        let (o, h) = r?;
        ops += o;
        hist.merge(&h);
    }
    Ok(ThreadedRun {
        ops,
        hist,
        seconds,
        usage: usage?,
        thread_cpu,
    })
}
