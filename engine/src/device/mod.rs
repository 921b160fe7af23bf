//! Devices and their io_uring queues.
//!
//! A [`DeviceQueue`] owns one ring over one device (block device or file, opened `O_DIRECT`;
//! or an emulated NVMe namespace). Buffers are attached by registering their pages as fixed
//! buffers on the ring ([`Importer`]); I/O is `READ_FIXED`/`WRITE_FIXED`, submitted in batches
//! under a per-device lock (module `submit`). Completions are drained by the threads that
//! wait for them (they poll the rings they submitted to); one reaper thread per device
//! drains while no I/O context uses the device, and stands by otherwise (module `reaper`).
//! A command the device leaves unanswered past its timeout fails its request and is
//! cancelled, and a short transfer is resubmitted for the rest (module `bounded`).
//!
//! For crash-consistency tests, an emulated device can have a volatile write cache and
//! lose what was not flushed in a simulated power cut ([`DeviceQueue::power_cut`], module
//! `wcache`), and any device can record its writes and flushes ([`DeviceQueue::record_to`],
//! module `record`).

mod bounded;
mod emulation;
mod image;
mod observe;
mod probe;
mod reaper;
mod record;
mod ring;
mod submit;
mod watch;
mod wcache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_uring::IoUring;
use parking_lot::{Condvar, Mutex};
use stripefs_mapping::{Attachment, ImportError, ImportToken, Importer, Memory};

use crate::error::{Error, Op};
use crate::notify;
use crate::request::RequestSlot;
use crate::spec::{Backing, DeviceSpec, EmulatedSpec};

pub use emulation::{Faults, TimingModel};
pub use probe::DeviceKind;
pub use record::{WriteEvent, WriteLog};
pub use wcache::{PowerCut, PowerCutReport};

/// Fixed-buffer slots registered (sparse) on every ring: each holds up to 1 GiB.
const FIXED_SLOTS: u16 = 1024;
/// Of those, slots that only memory of this process may take: the filesystem's bounce
/// buffers (one per concurrent FUSE or unaligned request) and commits. Memory received from
/// clients ([`Memory::is_foreign`]) gets at most `FIXED_SLOTS - OWN_SLOTS`.
const OWN_SLOTS: u16 = 128;
/// Largest single command on a real device (the ring's length field is 32 bits).
const REAL_MAX_TRANSFER: u64 = 1 << 30;

/// How to open a device.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Commands in flight at most on this device.
    pub queue_depth: u32,
    /// How long a command may go unanswered before its request fails with
    /// [`Error::Timeout`] and the command is cancelled (at least 1 ms).
    pub timeout: Duration,
}

impl QueueOptions {
    /// The command timeout when none is given (30 s, as for emulated devices).
    pub const DEFAULT_TIMEOUT: Duration = EmulatedSpec::DEFAULT_TIMEOUT;
    /// The shortest command timeout accepted.
    pub const MIN_TIMEOUT: Duration = EmulatedSpec::MIN_TIMEOUT;
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            queue_depth: 64,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Counters of one device, as seen by its queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Commands that failed, timed-out ones included.
    pub errors: u64,
    /// Commands that timed out (the device did not answer within its timeout).
    pub timeouts: u64,
    /// Times a command that transferred less than asked was resubmitted for the rest.
    pub resubmitted: u64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    resubmitted: AtomicU64,
}

/// One piece of a request for one device: a contiguous device range and where it goes in
/// the buffer. Public for the filesystem layer, which plans file ranges into pieces itself.
#[derive(Clone, Copy, Debug)]
pub struct Piece {
    pub device_offset: u64,
    pub len: u64,
    pub buffer_offset: u64,
}

/// A command on the ring, from submission until its completion is handled.
struct InFlight {
    /// The request it is part of; `None` once the command timed out and its request was
    /// failed: the command keeps its slot until the kernel answers (see module `bounded`).
    request: Option<Arc<RequestSlot>>,
    op: Op,
    /// The device range of the whole command.
    offset: u64,
    len: u64,
    /// Bytes transferred so far: a short transfer is resubmitted for the rest.
    done: u64,
    /// The fixed-buffer slot holding the command's data, and the address (exposed
    /// provenance) of its first byte in this process.
    slot: u16,
    addr: usize,
    injected: Option<i32>,
    /// An emulated hang: the command is one that never completes on its own.
    hung: bool,
    /// When the timing model lets its completion be delivered.
    due: Option<Instant>,
    /// When the command times out.
    expires: Instant,
    /// The user data of its entry in the kernel (slot and generation).
    user_data: u64,
    /// Timed out and a cancellation queued for it.
    cancelled: bool,
    /// The write's pre-image, on a device with a write cache.
    cached: Option<wcache::Pending>,
}

struct SubmitState {
    free: Vec<u32>,
    /// When the emulated transfer channel is next free.
    channel: Option<Instant>,
    /// Entries pushed so far (the generation in each command's user data).
    generation: u32,
    /// Timed-out commands still waiting for their completion: not free, yet not in use by
    /// any request either.
    stuck: u32,
}

pub(crate) struct DeviceShared {
    name: String,
    path: PathBuf,
    kind: DeviceKind,
    size: u64,
    block_size: u32,
    max_transfer: u64,
    depth: u32,
    /// How long a command may go unanswered.
    timeout: Duration,
    direct: bool,
    file: std::fs::File,
    ring: IoUring,
    submit: Mutex<SubmitState>,
    space: Condvar,
    inflight: Box<[Mutex<Option<InFlight>>]>,
    slots: Mutex<Vec<u16>>,
    timing: TimingModel,
    faults: Faults,
    counters: Counters,
    closed: AtomicBool,
    /// Completion side: drained by waiters and by the reaper, one at a time.
    cq: Mutex<reaper::CqState>,
    /// Registered with the ring: readable whenever a completion is posted (the reaper's
    /// wake-up while no I/O context is using the device).
    efd: notify::EventFd,
    /// I/O contexts with requests on this device: they drain its ring whenever they wait,
    /// so while there are any the reaper only stands by.
    pub(crate) active: AtomicU32,
    /// Waits that need this device's commands completed promptly (submitters sleeping for a
    /// free command slot, fences of a migration or unregistration): the reaper drains.
    urgent: AtomicU32,
    /// Wakes the reaper out of standby (urgent waits, closing).
    standby: notify::EventFd,
    /// Which waiting thread polls the ring.
    pub(crate) watch: watch::Watch,
    /// Entries are queued in the ring but not yet submitted (a busy device submits them at
    /// its next drain, many at once).
    deferred: AtomicBool,
    /// The volatile write cache (`wcache=on`), which also knows whether the power is cut.
    wcache: Option<wcache::WriteCache>,
    /// Where writes and flushes are recorded, once [`DeviceQueue::record_to`] was called.
    recorder: record::Recorder,
}

/// A device with its own io_uring queue. Dropping it waits for its in-flight commands.
pub struct DeviceQueue {
    shared: Arc<DeviceShared>,
    reaper: Option<JoinHandle<()>>,
}

impl DeviceQueue {
    /// Opens a device named by a spec (a path, or an emulated NVMe spec).
    pub fn open(spec: &DeviceSpec) -> Result<Self, Error> {
        match spec {
            DeviceSpec::Path(path) => Self::open_path(path, &QueueOptions::default()),
            DeviceSpec::Emulated(emu) => Self::open_emulated(emu),
        }
    }

    /// Opens a block device or regular file for direct I/O.
    pub fn open_path(path: &Path, options: &QueueOptions) -> Result<Self, Error> {
        let probed = probe::open(path, false)?;
        let config = Config {
            name: path.display().to_string(),
            path: path.to_path_buf(),
            max_transfer: REAL_MAX_TRANSFER,
            depth: options.queue_depth.clamp(1, 4096),
            timeout: options.timeout.max(QueueOptions::MIN_TIMEOUT),
            timing: TimingModel::default(),
            faults: Faults::default(),
            write_cache: false,
        };
        Self::start(probed, config)
    }

    /// Opens an emulated NVMe namespace.
    pub fn open_emulated(spec: &EmulatedSpec) -> Result<Self, Error> {
        let (path, mut probed) = match &spec.backing {
            Backing::File(path) => {
                prepare_backing_file(path, spec.size)?;
                (path.clone(), probe::open(path, true)?)
            }
            Backing::Memory => {
                let path = PathBuf::from("mem");
                (path.clone(), memory_backing(&path, spec.size)?)
            }
        };
        if !spec.lba.is_multiple_of(probed.block_size) {
            return Err(Error::Emulation {
                path,
                what: format!(
                    "lba {} is not a multiple of the backing's direct-I/O alignment {}",
                    spec.lba, probed.block_size
                ),
            });
        }
        probed.kind = DeviceKind::Emulated;
        probed.block_size = spec.lba;
        probed.size -= probed.size % u64::from(spec.lba);
        let faults = Faults::default();
        for range in &spec.fail_ranges {
            faults.fail_range(range.clone());
        }
        if let Some(n) = spec.fail_after {
            faults.fail_after(n);
        }
        if let Some(n) = spec.hang_after {
            faults.hang_after(n);
        }
        faults.short_transfers(spec.short);
        faults.set_offline(spec.offline);
        let config = Config {
            name: format!("emu:{}", path.display()),
            path,
            max_transfer: spec.mdts,
            depth: spec.queue_depth.clamp(1, 4096),
            timeout: spec.timeout.max(QueueOptions::MIN_TIMEOUT),
            timing: TimingModel {
                bandwidth: spec.bandwidth,
                latency: spec.latency,
            },
            faults,
            write_cache: spec.write_cache,
        };
        Self::start(probed, config)
    }

    fn start(probed: probe::Probed, config: Config) -> Result<Self, Error> {
        let name = config.name.clone();
        let ring_error = |what, source| Error::Ring {
            device: name.clone(),
            what,
            source,
        };
        let entries = (config.depth + 1).next_power_of_two();
        // Cooperative task running: a command's completion is posted by its submitter the
        // next time that thread enters the kernel (or at once if it sleeps), instead of an
        // interrupt per completion. The engine's threads enter the kernel to submit and to
        // wait, and `IoContext::poll` enters once when it finds nothing.
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .setup_coop_taskrun()
            .build(entries)
            .map_err(|e| ring_error("setup", e))?;
        ring.submitter()
            .register_buffers_sparse(u32::from(FIXED_SLOTS))
            .map_err(|e| ring_error("register_buffers_sparse", e))?;
        let efd = notify::EventFd::new().map_err(|e| ring_error("eventfd", e))?;
        let standby = notify::EventFd::new().map_err(|e| ring_error("eventfd", e))?;
        ring.submitter()
            .register_eventfd(efd.raw())
            .map_err(|e| ring_error("register_eventfd", e))?;
        let cq_entries = ring.params().cq_entries() as usize;
        let shared = Arc::new(DeviceShared {
            name: config.name,
            path: config.path,
            kind: probed.kind,
            size: probed.size,
            block_size: probed.block_size,
            max_transfer: config.max_transfer,
            depth: config.depth,
            timeout: config.timeout,
            direct: probed.direct,
            file: probed.file,
            ring,
            submit: Mutex::new(SubmitState {
                free: (0..config.depth).rev().collect(),
                channel: None,
                generation: 0,
                stuck: 0,
            }),
            space: Condvar::new(),
            inflight: (0..config.depth).map(|_| Mutex::new(None)).collect(),
            slots: Mutex::new((0..FIXED_SLOTS).rev().collect()),
            timing: config.timing,
            faults: config.faults,
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            cq: Mutex::new(reaper::CqState::new(cq_entries, config.depth as usize)),
            efd,
            active: AtomicU32::new(0),
            urgent: AtomicU32::new(0),
            standby,
            watch: watch::Watch::default(),
            deferred: AtomicBool::new(false),
            wcache: config.write_cache.then(wcache::WriteCache::default),
            recorder: record::Recorder::default(),
        });
        let reaper_shared = shared.clone();
        let reaper = std::thread::Builder::new()
            .name(format!("reaper {}", shared.name))
            .spawn(move || reaper::run(&reaper_shared))
            .map_err(|e| ring_error("spawn reaper thread", e))?;
        Ok(DeviceQueue {
            shared,
            reaper: Some(reaper),
        })
    }

    /// The device's name (its path, or `emu:PATH`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// What kind of device this is.
    pub fn kind(&self) -> DeviceKind {
        self.shared.kind
    }

    /// Usable size in bytes.
    pub fn size(&self) -> u64 {
        self.shared.size
    }

    /// Alignment required of offsets and lengths (logical block or LBA size).
    pub fn block_size(&self) -> u32 {
        self.shared.block_size
    }

    /// Largest command the device accepts; longer transfers are split.
    pub fn max_transfer(&self) -> u64 {
        self.shared.max_transfer
    }

    /// Commands in flight at most.
    pub fn queue_depth(&self) -> u32 {
        self.shared.depth
    }

    /// How long a command may go unanswered before its request fails with
    /// [`Error::Timeout`].
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Whether I/O bypasses the page cache (false only for memory-backed emulation).
    pub fn is_direct(&self) -> bool {
        self.shared.direct
    }

    /// The device's fault switches.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Counters since open.
    pub fn stats(&self) -> DeviceStats {
        let c = &self.shared.counters;
        DeviceStats {
            reads: c.reads.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            resubmitted: c.resubmitted.load(Ordering::Relaxed),
        }
    }

    /// The queue's shared state (for the engine's waiters).
    pub(crate) fn shared(&self) -> &Arc<DeviceShared> {
        &self.shared
    }

    /// This device as an importer of buffers.
    pub fn importer(&self) -> Arc<dyn Importer> {
        self.shared.clone()
    }

    /// Flushes the device's volatile cache (fdatasync): every write completed before the
    /// call is durable once it returns. A recording device logs the flush as it begins.
    pub fn sync(&self) -> Result<(), Error> {
        self.shared.flush()
    }

    /// From now on, every completed write and every flush of this device is appended to
    /// `log` as device `index` (replacing a log given earlier).
    pub fn record_to(&self, log: Arc<WriteLog>, index: usize) {
        self.shared.recorder.attach(log, index);
    }

    /// Simulates a power cut on a device with a write cache: the backing is put back to its
    /// durable contents plus what `policy` keeps of the unflushed writes (Random: each write
    /// kept with probability 1/2, applied in submission order, and at most one kept write
    /// torn: only a random subset of its lba blocks lands). Commands in flight are waited
    /// for first, and count as unflushed. Afterwards every command on this queue fails with
    /// `Error::DeviceOffline` (the machine is "off"); drop the queue and reopen the same spec
    /// to "power on" (use a file-backed emu device for that: `emu:/path,size=..,wcache=on`).
    ///
    /// A device without a write cache refuses with `Error::Emulation`; one already cut, with
    /// `Error::DeviceOffline`.
    pub fn power_cut(&self, policy: PowerCut) -> Result<PowerCutReport, Error> {
        self.shared.power_cut(policy)
    }

    /// Submits `pieces` of one request as one batch (one lock, one submit call), each split
    /// at the attachment's slot boundaries and at the device's maximum transfer. Failures are
    /// recorded on the request. Returns when the timing model lets the last of these
    /// commands complete, on an emulated device with one (a waiter's hint: the completions
    /// themselves may come before it and are held back).
    pub(crate) fn submit(
        &self,
        op: Op,
        pieces: impl Iterator<Item = Piece>,
        attachment: &Attachment,
        request: &Arc<RequestSlot>,
    ) -> Option<Instant> {
        self.shared.submit(op, pieces, attachment, request)
    }
}

/// While it lives, the devices' reapers drain at once instead of standing by: for a thread
/// about to block on something that completions it would otherwise collect itself must free.
/// Public for the filesystem layer (a file read that waits for a writer).
pub struct Urgent<'a>(&'a [DeviceQueue]);

impl<'a> Urgent<'a> {
    /// Makes the reapers of `devices` drain at once until the guard is dropped.
    pub fn new(devices: &'a [DeviceQueue]) -> Self {
        for d in devices {
            d.shared.begin_urgent();
        }
        Urgent(devices)
    }
}

impl Drop for Urgent<'_> {
    fn drop(&mut self) {
        for d in self.0 {
            d.shared.end_urgent();
        }
    }
}

struct Config {
    name: String,
    path: PathBuf,
    max_transfer: u64,
    depth: u32,
    timeout: Duration,
    timing: TimingModel,
    faults: Faults,
    write_cache: bool,
}

impl Drop for DeviceQueue {
    fn drop(&mut self) {
        self.shared.close();
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
    }
}

impl std::fmt::Debug for DeviceQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceQueue")
            .field("name", &self.shared.name)
            .field("kind", &self.shared.kind)
            .field("size", &self.shared.size)
            .field("block_size", &self.shared.block_size)
            .finish()
    }
}

fn prepare_backing_file(path: &Path, size: Option<u64>) -> Result<(), Error> {
    let emu_error = |what: String| Error::Emulation {
        path: path.to_path_buf(),
        what,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(size.is_some())
        .truncate(false)
        .open(path)
        .map_err(|e| emu_error(format!("cannot open backing file: {e}")))?;
    if let Some(size) = size {
        let current = file
            .metadata()
            .map_err(|e| emu_error(format!("cannot stat backing file: {e}")))?
            .len();
        if current < size {
            file.set_len(size)
                .map_err(|e| emu_error(format!("cannot size backing file to {size}: {e}")))?;
        }
    }
    Ok(())
}

fn memory_backing(path: &Path, size: Option<u64>) -> Result<probe::Probed, Error> {
    let size = size.ok_or_else(|| Error::Emulation {
        path: path.to_path_buf(),
        what: "a memory backing needs size=".into(),
    })?;
    let memory =
        Memory::create("stripefs-emu-namespace", size, false).map_err(|e| Error::Emulation {
            path: path.to_path_buf(),
            what: format!("cannot allocate {size} bytes of memory: {e}"),
        })?;
    let fd = memory
        .fd()
        .try_clone_to_owned()
        .map_err(|e| Error::Emulation {
            path: path.to_path_buf(),
            what: format!("cannot duplicate memfd: {e}"),
        })?;
    Ok(probe::Probed {
        file: std::fs::File::from(fd),
        kind: DeviceKind::Emulated,
        size,
        block_size: 1,
        direct: false,
    })
}

impl DeviceShared {
    /// Enters the kernel once, which runs this thread's pending completion work (with
    /// cooperative task running the kernel does not interrupt a running thread for it).
    pub(crate) fn enter_kernel(&self) {
        ring::run_task_work(&self.ring);
    }

    fn close(&self) {
        let _state = self.submit.lock();
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.efd.signal();
        self.standby.signal();
    }

    fn io_error(&self, op: Op, offset: u64, len: u64, source: std::io::Error) -> Error {
        Error::DeviceIo {
            device: self.name.clone(),
            op,
            offset,
            len,
            source,
        }
    }
}

impl DeviceShared {
    /// The ring's descriptor: readable while its completion queue holds entries (level
    /// triggered, so waiters need not reset anything).
    pub(crate) fn ring_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.ring)
    }
}

impl Importer for DeviceShared {
    fn name(&self) -> &str {
        &self.name
    }

    fn attach(&self, memory: &Memory) -> Result<ImportToken, ImportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ImportError::Closed);
        }
        if self.faults.is_offline() || self.is_powered_off() {
            return Err(ImportError::Offline);
        }
        let chunks: Vec<_> = memory.chunks().collect();
        let mut free = self.slots.lock();
        // Memory from other processes (registered through the control endpoint) may not
        // take the slots kept for the filesystem's own I/O (bounce buffers, commits).
        let kept = if memory.is_foreign() {
            usize::from(OWN_SLOTS)
        } else {
            0
        };
        let usable = free.len().saturating_sub(kept);
        if usable < chunks.len() {
            return Err(ImportError::NoSlots {
                needed: chunks.len(),
                free: usable,
            });
        }
        let mut taken = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let Some(slot) = free.pop() else { break };
            // SAFETY: the chunk is mapped until the attachment that owns this token is
            // dropped, and that drop clears the slot (detach) before releasing the memory.
            if let Err(source) = unsafe { ring::set_slot(&self.ring, slot, chunk.addr, chunk.len) }
            {
                free.push(slot);
                for &s in &taken {
                    // SAFETY: clearing a slot lends no memory.
                    let _ = unsafe { ring::set_slot(&self.ring, s, std::ptr::null_mut(), 0) };
                    free.push(s);
                }
                return Err(ImportError::Register {
                    slot,
                    len: chunk.len,
                    source,
                });
            }
            taken.push(slot);
        }
        Ok(ImportToken {
            slots: taken.into_boxed_slice(),
        })
    }

    fn begin_urgent(&self) {
        if self.urgent.fetch_add(1, Ordering::AcqRel) == 0 {
            self.standby.signal();
        }
    }

    fn end_urgent(&self) {
        self.urgent.fetch_sub(1, Ordering::AcqRel);
    }

    fn detach(&self, token: &ImportToken) {
        let mut free = self.slots.lock();
        for &slot in token.slots.iter() {
            // SAFETY: clearing a slot lends no memory; no I/O uses it any more (the mapping
            // fence guarantees it before the attachment is dropped).
            let _ = unsafe { ring::set_slot(&self.ring, slot, std::ptr::null_mut(), 0) };
            free.push(slot);
        }
    }
}
