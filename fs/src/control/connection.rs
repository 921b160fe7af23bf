//! One client connection: control messages, its registrations (handles), its ring, and the
//! workers that run its requests.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};
use stripefs_engine::{Completion, IoContext};
use stripefs_mapping::{Buffer, Mapping, MappingError, Memory};

use super::proto::{
    self, ACCESS_READ, ACCESS_WRITE, HelloReply, MigrateReply, REGISTER_DMABUF, RegisterReply,
    RegistrationStat, Reply, Request,
};
use super::ring::{Cqe, Layout, NEED_WAKEUP, OP_READ, OP_WRITE, RingView, Sqe, WAITING};
use super::server::ServerShared;
use super::sys::{self, PeerCred};
use crate::filesystem::{BLOCK_SIZE, FileRead, FsError};

/// Ring size when the client does not ask.
const DEFAULT_ENTRIES: u32 = 128;
/// Largest piece one worker call moves; longer requests are done in pieces (bounds the
/// bounce allocation of a misaligned request).
const MAX_PIECE: u64 = 64 << 20;

/// A live registration made through this connection.
struct Registration {
    ino: u64,
    mapping: Mapping,
    buffer: Buffer,
    access: u32,
    requests: AtomicU64,
}

/// Handles: slot index and generation, scrambled with a per-connection salt so that a handle
/// of another connection (or a guessed one) names nothing here.
struct HandleTable {
    salt: u64,
    slots: Vec<(u32, Option<Arc<Registration>>)>,
    free: Vec<usize>,
    live: usize,
}

impl HandleTable {
    fn new() -> Self {
        HandleTable {
            salt: RandomState::new().hash_one(std::time::Instant::now()),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    fn insert(&mut self, reg: Arc<Registration>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Some(reg);
        self.live += 1;
        ((u64::from(slot.0) << 32) | (index as u64 + 1)) ^ self.salt
    }

    fn locate(&self, handle: u64) -> Option<usize> {
        let raw = handle ^ self.salt;
        let index = usize::try_from(raw & 0xffff_ffff).ok()?.checked_sub(1)?;
        let generation = (raw >> 32) as u32;
        match self.slots.get(index) {
            Some((g, Some(_))) if *g == generation => Some(index),
            _ => None,
        }
    }

    fn get(&self, handle: u64) -> Option<Arc<Registration>> {
        self.locate(handle).and_then(|i| self.slots[i].1.clone())
    }

    fn remove(&mut self, handle: u64) -> Option<Arc<Registration>> {
        let index = self.locate(handle)?;
        let reg = self.slots[index].1.take();
        self.free.push(index);
        self.live -= 1;
        reg
    }

    fn drain(&mut self) -> Vec<Arc<Registration>> {
        self.free.clear();
        self.live = 0;
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(reg) = slot.1.take() {
                out.push(reg);
            }
            self.free.push(i);
        }
        out
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.slots.iter().filter_map(|s| s.1.as_ref())
    }
}

/// A client connection.
pub(crate) struct Connection {
    id: u64,
    cred: PeerCred,
    socket: OwnedFd,
    handles: RwLock<HandleTable>,
    /// The daemon's view of each of the client's memfds, by (st_dev, st_ino), so that one
    /// memfd registered against several files is one buffer (and migrates as one).
    buffers: Mutex<HashMap<(u64, u64), Buffer>>,
    ring: Mutex<Option<RingThreads>>,
}

impl Connection {
    pub(crate) fn new(id: u64, socket: OwnedFd) -> Self {
        let cred = sys::peer_cred(socket.as_fd()).unwrap_or_default();
        Connection {
            id,
            cred,
            socket,
            handles: RwLock::new(HandleTable::new()),
            buffers: Mutex::new(HashMap::new()),
            ring: Mutex::new(None),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Wakes the connection's thread so that it closes the connection.
    pub(crate) fn hang_up(&self) {
        sys::shutdown(self.socket.as_fd());
    }

    pub(crate) fn registration_stats(&self) -> Vec<RegistrationStat> {
        self.handles
            .read()
            .iter()
            .map(|r| RegistrationStat {
                mapping: r.mapping.id(),
                ino: r.ino,
                connection: self.id,
                pid: self.cred.pid,
                access: r.access,
                buffer_len: r.mapping.buffer_len(),
                requests: r.requests.load(Ordering::Relaxed),
                migrations: r.buffer.migrations() as u32,
            })
            .collect()
    }
}

/// Serves one connection until the client goes away (or the server stops), then releases
/// everything it had.
pub(crate) fn serve(server: &Arc<ServerShared>, conn: &Arc<Connection>) {
    let mut packet = vec![0u8; proto::MAX_MESSAGE];
    loop {
        let received = match sys::recv(conn.socket.as_fd(), &mut packet) {
            Ok(r) => r,
            Err(_) => break,
        };
        if received.eof {
            break;
        }
        let bytes = &packet[..received.len.min(packet.len())];
        let seq = proto::peek_seq(bytes);
        let (kind, result, reply_fds) = if received.truncated {
            (proto::KIND_ERROR, Err(libc::EMSGSIZE), Vec::new())
        } else if received.fds_truncated {
            (proto::KIND_ERROR, Err(libc::EINVAL), Vec::new())
        } else {
            match proto::decode_request(bytes) {
                Err(e) => {
                    let kind = match e {
                        proto::DecodeError::BodySize { kind, .. } => kind,
                        _ => proto::KIND_ERROR,
                    };
                    (kind, Err(e.errno()), Vec::new())
                }
                Ok((_, request)) => {
                    let kind = request.kind();
                    if received.fds.len() != kind.request_fds() {
                        (kind as u16, Err(libc::EINVAL), Vec::new())
                    } else {
                        match handle(server, conn, request, received.fds) {
                            Ok((reply, fds)) => (kind as u16, Ok(reply), fds),
                            Err(errno) => (kind as u16, Err(errno), Vec::new()),
                        }
                    }
                }
            }
        };
        if result.is_err() {
            server.refused.fetch_add(1, Ordering::Relaxed);
        }
        let message = proto::encode_reply(kind, seq, result.as_ref().map_err(|e| *e));
        let fds: Vec<_> = reply_fds.iter().map(AsFd::as_fd).collect();
        if sys::send(conn.socket.as_fd(), &message, &fds).is_err() {
            break;
        }
    }
    close(server, conn);
}

/// Releases a connection: the ring stops taking requests, running ones complete, queued ones
/// are cancelled, then every registration is unregistered.
fn close(server: &ServerShared, conn: &Connection) {
    if let Some(ring) = conn.ring.lock().take() {
        ring.stop();
    }
    let regs = conn.handles.write().drain();
    for reg in regs {
        let _ = server.fs.unregister(&reg.mapping);
    }
    conn.buffers.lock().clear();
}

type Handled = Result<(Reply, Vec<OwnedFd>), i32>;

fn handle(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    request: Request,
    fds: Vec<OwnedFd>,
) -> Handled {
    match request {
        Request::Hello {
            sq_entries,
            workers,
        } => hello(server, conn, sq_entries, workers),
        Request::Register { flags } => register(server, conn, flags, fds),
        Request::Unregister { handle } => {
            let reg = conn.handles.write().remove(handle).ok_or(libc::EBADF)?;
            let result = server.fs.unregister(&reg.mapping).map_err(|e| e.errno());
            forget_buffer_if_unused(conn, &reg.buffer);
            result.map(|()| (Reply::Unregister, Vec::new()))
        }
        Request::Migrate { handle } => migrate(server, conn, handle, fds),
        Request::Stat => Ok((Reply::Stat(server.stat()), Vec::new())),
    }
}

fn hello(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    entries: u32,
    workers: u32,
) -> Handled {
    let mut ring_slot = conn.ring.lock();
    if ring_slot.is_some() {
        return Err(libc::EISCONN);
    }
    let entries = if entries == 0 {
        DEFAULT_ENTRIES
    } else {
        entries
    };
    let layout = Layout::new(entries, entries).ok_or(libc::EINVAL)?;
    let workers = match workers {
        0 => server.options.default_workers,
        n => n,
    }
    .clamp(1, server.options.max_workers.max(1));
    let memory =
        Memory::create("stripefs-ring", layout.len as u64, false).map_err(|_| libc::ENOMEM)?;
    let memory = Arc::new(memory);
    let view = RingView::new(memory.clone(), layout).map_err(|_| libc::ENOMEM)?;
    view.write_header();
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let ring = Arc::new(RingState {
        view,
        sq_doorbell: sys::eventfd().map_err(errno)?,
        cq_doorbell: sys::eventfd().map_err(errno)?,
        stop: sys::eventfd().map_err(errno)?,
        stopping: AtomicBool::new(false),
        cq: Mutex::new(CqState {
            tail: 0,
            reserved: 0,
        }),
        jobs: Mutex::new(JobQueue {
            queue: VecDeque::new(),
            closed: false,
        }),
        jobs_ready: Condvar::new(),
    });
    let reply_fds = vec![
        memory.fd().try_clone_to_owned().map_err(errno)?,
        ring.sq_doorbell.try_clone().map_err(errno)?,
        ring.cq_doorbell.try_clone().map_err(errno)?,
    ];
    let mut threads = RingThreads {
        ring: ring.clone(),
        threads: Vec::new(),
    };
    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EAGAIN))
    };
    for w in 0..workers {
        let (server, conn, ring) = (server.clone(), conn.clone(), ring.clone());
        match spawn(
            format!("stripefs ctl {} w{w}", conn.id),
            Box::new(move || worker(&server, &ring)),
        ) {
            Ok(t) => threads.threads.push(t),
            Err(e) => {
                threads.stop();
                return Err(e);
            }
        }
    }
    {
        let (server, conn, ring) = (server.clone(), conn.clone(), ring.clone());
        match spawn(
            format!("stripefs ctl {} sq", conn.id),
            Box::new(move || submission_loop(&server, &conn, &ring)),
        ) {
            Ok(t) => threads.threads.push(t),
            Err(e) => {
                threads.stop();
                return Err(e);
            }
        }
    }
    *ring_slot = Some(threads);
    Ok((
        Reply::Hello(HelloReply {
            connection: conn.id,
            ring_len: layout.len as u64,
            sq_entries: layout.sq_entries,
            cq_entries: layout.cq_entries,
        }),
        reply_fds,
    ))
}

fn mapping_errno(e: &MappingError) -> i32 {
    match e {
        MappingError::NotSealed { .. } => libc::EPERM,
        MappingError::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EINVAL),
        MappingError::EmptyBuffer
        | MappingError::BufferTooLarge { .. }
        | MappingError::OutOfBuffer { .. }
        | MappingError::HugePagesUnavailable { .. } => libc::EINVAL,
        MappingError::UdmabufUnavailable { .. } => libc::ENODEV,
        MappingError::Revoked { .. } => libc::EBADF,
        MappingError::Attach { .. } => libc::ENXIO,
    }
}

/// The access a descriptor grants, from its open mode; O_PATH descriptors grant none.
fn access_of(fd: &OwnedFd) -> Result<u32, i32> {
    let flags =
        sys::status_flags(fd.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF))?;
    if flags & libc::O_PATH != 0 {
        return Err(libc::EBADF);
    }
    Ok(match flags & libc::O_ACCMODE {
        libc::O_RDONLY => ACCESS_READ,
        libc::O_WRONLY => ACCESS_WRITE,
        libc::O_RDWR => ACCESS_READ | ACCESS_WRITE,
        _ => return Err(libc::EBADF),
    })
}

/// Checks a buffer descriptor's size and returns its identity.
fn buffer_identity(server: &ServerShared, fd: &OwnedFd) -> Result<((u64, u64), u64), i32> {
    let st = sys::fstat(fd.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EINVAL);
    }
    let len = u64::try_from(st.st_size).map_err(|_| libc::EINVAL)?;
    if len > server.options.max_buffer_len {
        return Err(libc::EFBIG);
    }
    Ok(((st.st_dev, st.st_ino), len))
}

fn register(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    flags: u32,
    fds: Vec<OwnedFd>,
) -> Handled {
    let mut fds = fds.into_iter();
    let (Some(file), Some(buffer_fd)) = (fds.next(), fds.next()) else {
        return Err(libc::EINVAL);
    };
    if flags & REGISTER_DMABUF != 0 {
        // The buffer model maps memfd pages; a dma-buf's pages cannot be pinned for io_uring
        // through its own mmap, so dma-buf descriptors are not imported (yet).
        return Err(if stripefs_mapping::udmabuf::available() {
            libc::EOPNOTSUPP
        } else {
            libc::ENODEV
        });
    }
    let st = sys::fstat(file.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF))?;
    let ino = server.files.identify(&st)?;
    let access = access_of(&file)?;
    drop(file);
    if conn.handles.read().live >= server.options.max_registrations {
        return Err(libc::EMFILE);
    }
    let (key, _) = buffer_identity(server, &buffer_fd)?;
    let buffer = {
        let mut buffers = conn.buffers.lock();
        match buffers.get(&key) {
            Some(b) => b.clone(),
            None => {
                let b = Buffer::from_memfd(buffer_fd).map_err(|e| mapping_errno(&e))?;
                buffers.insert(key, b.clone());
                b
            }
        }
    };
    let mapping = match server.fs.register(ino, &buffer) {
        Ok(m) => m,
        Err(e) => {
            forget_buffer_if_unused(conn, &buffer);
            return Err(e.errno());
        }
    };
    let reply = RegisterReply {
        handle: 0,
        ino,
        buffer_len: mapping.buffer_len(),
        access,
        devices: mapping.device_count() as u32,
    };
    let reg = Arc::new(Registration {
        ino,
        mapping,
        buffer,
        access,
        requests: AtomicU64::new(0),
    });
    let handle = conn.handles.write().insert(reg);
    Ok((
        Reply::Register(RegisterReply { handle, ..reply }),
        Vec::new(),
    ))
}

/// Drops the daemon's view of `buffer` when no registration of the connection uses it.
fn forget_buffer_if_unused(conn: &Connection, buffer: &Buffer) {
    let handles = conn.handles.read();
    if handles.iter().any(|r| r.buffer.id() == buffer.id()) {
        return;
    }
    conn.buffers.lock().retain(|_, b| b.id() != buffer.id());
}

fn migrate(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    handle: u64,
    fds: Vec<OwnedFd>,
) -> Handled {
    let fd = fds.into_iter().next().ok_or(libc::EINVAL)?;
    let reg = conn.handles.read().get(handle).ok_or(libc::EBADF)?;
    let (key, len) = buffer_identity(server, &fd)?;
    if len < reg.buffer.len() {
        return Err(libc::EINVAL);
    }
    let mut buffers = conn.buffers.lock();
    if buffers.contains_key(&key) {
        // Already one of this connection's buffers: two buffers would share pages.
        return Err(libc::EBUSY);
    }
    let memory = Memory::from_memfd(fd).map_err(|e| mapping_errno(&e))?;
    let report = reg
        .buffer
        .migrate_to(memory)
        .map_err(|e| mapping_errno(&e))?;
    buffers.retain(|_, b| b.id() != reg.buffer.id());
    buffers.insert(key, reg.buffer.clone());
    Ok((
        Reply::Migrate(MigrateReply {
            drain_ns: report.drain.as_nanos() as u64,
            copy_ns: report.copy.as_nanos() as u64,
            total_ns: report.total.as_nanos() as u64,
            mappings: report.mappings as u32,
        }),
        Vec::new(),
    ))
}

// ----- the ring -----

struct CqState {
    /// Our copy of cq_tail (never read back from the shared memory).
    tail: u32,
    /// Requests taken off the submission queue whose completion is not posted yet.
    reserved: u32,
}

struct Job {
    reg: Arc<Registration>,
    sqe: Sqe,
}

struct JobQueue {
    queue: VecDeque<Job>,
    closed: bool,
}

struct RingState {
    view: RingView,
    sq_doorbell: OwnedFd,
    cq_doorbell: OwnedFd,
    stop: OwnedFd,
    stopping: AtomicBool,
    cq: Mutex<CqState>,
    jobs: Mutex<JobQueue>,
    jobs_ready: Condvar,
}

struct RingThreads {
    ring: Arc<RingState>,
    threads: Vec<JoinHandle<()>>,
}

impl RingThreads {
    /// Stops taking requests, cancels queued ones, lets running ones complete, and waits.
    fn stop(mut self) {
        self.ring.stopping.store(true, Ordering::Release);
        sys::ring_doorbell(self.ring.stop.as_fd());
        // The ring thread may be sleeping on its reads in flight and the client's doorbell.
        sys::ring_doorbell(self.ring.sq_doorbell.as_fd());
        {
            let mut jobs = self.ring.jobs.lock();
            jobs.closed = true;
            self.ring.jobs_ready.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl RingState {
    /// Space for completions not yet promised: the ring size less requests in progress and
    /// completions the client has not consumed. `None` if the client's cq_head is impossible.
    fn room(&self, cq: &CqState) -> Option<u32> {
        let head = self.view.cq_head().load(Ordering::Acquire);
        let unconsumed = cq.tail.wrapping_sub(head);
        let entries = self.view.layout().cq_entries;
        if unconsumed > entries {
            return None;
        }
        Some(
            entries
                .saturating_sub(unconsumed)
                .saturating_sub(cq.reserved),
        )
    }

    /// Posts the completion of a request taken off the ring, and rings the client's doorbell
    /// if a thread of it sleeps.
    fn complete(&self, tag: u64, result: i64) {
        self.complete_all(std::iter::once(Cqe { tag, result }));
    }

    /// Posts completions together: one tail update and at most one doorbell for all.
    fn complete_all(&self, cqes: impl Iterator<Item = Cqe>) {
        {
            let mut cq = self.cq.lock();
            for cqe in cqes {
                self.view.write_cqe(cq.tail, &cqe);
                cq.tail = cq.tail.wrapping_add(1);
                cq.reserved = cq.reserved.saturating_sub(1);
            }
            self.view.cq_tail().store(cq.tail, Ordering::Release);
        }
        // Pairs with the client's store of WAITING and its re-check of cq_tail.
        fence(Ordering::SeqCst);
        if self.view.cq_flags().load(Ordering::Relaxed) & WAITING != 0 {
            sys::ring_doorbell(self.cq_doorbell.as_fd());
        }
    }
}

/// Reads the ring thread runs itself, on its own I/O context: aligned reads go from the
/// devices into the client's buffer with no other thread involved. Everything else (writes,
/// unaligned reads, which bounce and may block) goes to the workers.
struct DirectReads {
    ctx: IoContext,
    /// By context tag: the registration (for its counter) and the client's tag.
    pending: Vec<Option<(Arc<Registration>, u64)>>,
    free: Vec<usize>,
    done: Vec<Completion>,
}

impl DirectReads {
    fn new(entries: u32) -> Option<Self> {
        let depth = entries as usize;
        Some(DirectReads {
            ctx: IoContext::try_new(depth).ok()?,
            pending: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            done: Vec::with_capacity(depth),
        })
    }

    /// Whether the ring thread runs this (checked) request itself.
    fn takes(sqe: &Sqe) -> bool {
        let block = BLOCK_SIZE;
        sqe.op == OP_READ
            && sqe.file_offset.is_multiple_of(block)
            && sqe.buffer_offset.is_multiple_of(block)
            && sqe.len.is_multiple_of(block)
    }

    /// Starts the read; a read refused at once completes at once with its errno.
    fn start(&mut self, server: &ServerShared, ring: &RingState, reg: Arc<Registration>, sqe: Sqe) {
        let Some(index) = self.free.pop() else {
            // Cannot happen (the context is as deep as the ring); refuse rather than block.
            return ring.complete(sqe.tag, -i64::from(libc::EAGAIN));
        };
        let read = FileRead {
            offset: sqe.file_offset,
            buffer_offset: sqe.buffer_offset,
            len: sqe.len,
            tag: index as u64,
        };
        match server.fs.submit_read(&mut self.ctx, &reg.mapping, read) {
            Ok(()) => self.pending[index] = Some((reg, sqe.tag)),
            Err(e) => {
                self.free.push(index);
                finish(server, ring, &reg, sqe.tag, -i64::from(e.errno()));
            }
        }
    }

    /// Posts the completions of finished reads, all at once.
    fn post(&mut self, server: &ServerShared, ring: &RingState) {
        if self.done.is_empty() {
            return;
        }
        let (pending, free) = (&mut self.pending, &mut self.free);
        let cqes = self.done.drain(..).filter_map(|c| {
            let index = c.tag as usize;
            let (reg, tag) = pending.get_mut(index).and_then(Option::take)?;
            free.push(index);
            count(server, &reg);
            let result = match c.result {
                Ok(n) => n as i64,
                Err(e) => -i64::from(FsError::from(e).errno()),
            };
            Some(Cqe { tag, result })
        });
        ring.complete_all(cqes);
    }

    fn reap(&mut self, server: &ServerShared, ring: &RingState) {
        if self.ctx.in_flight() > 0 {
            self.ctx.poll(&mut self.done);
            self.post(server, ring);
        }
    }

    /// Sleeps until a read finishes or the client rings; posts what finished.
    fn wait(&mut self, server: &ServerShared, ring: &RingState) {
        self.ctx
            .wait_or_readable(ring.sq_doorbell.as_fd(), &mut self.done);
        self.post(server, ring);
    }

    /// Lets every read in flight finish and posts it (the connection is closing).
    fn finish_all(&mut self, server: &ServerShared, ring: &RingState) {
        while self.ctx.in_flight() > 0 {
            self.ctx.wait(1, &mut self.done);
            self.post(server, ring);
        }
    }
}

/// Counts a finished request and posts its completion.
fn finish(server: &ServerShared, ring: &RingState, reg: &Registration, tag: u64, result: i64) {
    count(server, reg);
    ring.complete(tag, result);
}

/// Counts a finished request, for its registration and for the server.
fn count(server: &ServerShared, reg: &Registration) {
    reg.requests.fetch_add(1, Ordering::Relaxed);
    server.requests.fetch_add(1, Ordering::Relaxed);
}

/// Takes requests off the submission queue while there is room for their completions, checks
/// them, and runs aligned reads itself or queues the rest for the workers; sleeps on the
/// doorbell (and the reads in flight) when there is nothing to do.
fn submission_loop(server: &ServerShared, conn: &Connection, ring: &RingState) {
    let mut direct = DirectReads::new(ring.view.layout().cq_entries);
    serve_ring(server, conn, ring, &mut direct);
    if let Some(direct) = direct.as_mut() {
        direct.finish_all(server, ring);
    }
}

fn serve_ring(
    server: &ServerShared,
    conn: &Connection,
    ring: &RingState,
    direct: &mut Option<DirectReads>,
) {
    let entries = ring.view.layout().sq_entries;
    let mut head: u32 = 0;
    loop {
        if ring.stopping.load(Ordering::Acquire) {
            return;
        }
        if let Some(d) = direct.as_mut() {
            d.reap(server, ring);
        }
        let tail = ring.view.sq_tail().load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        if pending > entries {
            return violation(server, conn, ring);
        }
        let room = {
            let mut cq = ring.cq.lock();
            let Some(room) = ring.room(&cq) else {
                return violation(server, conn, ring);
            };
            let n = pending.min(room);
            cq.reserved += n;
            n
        };
        if room > 0 {
            for _ in 0..room {
                let sqe = ring.view.read_sqe(head);
                head = head.wrapping_add(1);
                dispatch(server, conn, ring, direct, sqe);
            }
            ring.view.sq_head().store(head, Ordering::Release);
            continue;
        }
        // Nothing to take: sleep until the client rings (it does when NEED_WAKEUP is set,
        // after publishing requests or consuming completions) or a read of ours finishes.
        ring.view.sq_flags().store(NEED_WAKEUP, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let tail = ring.view.sq_tail().load(Ordering::Acquire);
        let can_take = tail != head && ring.room(&ring.cq.lock()).is_some_and(|r| r > 0);
        if !can_take {
            match direct.as_mut() {
                Some(d) if d.ctx.in_flight() > 0 => d.wait(server, ring),
                _ => {
                    let _ = sys::poll(
                        &[
                            (ring.sq_doorbell.as_fd(), libc::POLLIN),
                            (ring.stop.as_fd(), libc::POLLIN),
                        ],
                        -1,
                    );
                }
            }
            sys::drain_doorbell(ring.sq_doorbell.as_fd());
        }
        ring.view.sq_flags().store(0, Ordering::SeqCst);
    }
}

/// The client broke the ring's rules: refuse further requests and close the connection.
fn violation(server: &ServerShared, conn: &Connection, ring: &RingState) {
    server.refused.fetch_add(1, Ordering::Relaxed);
    ring.stopping.store(true, Ordering::Release);
    conn.hang_up();
}

/// Checks one request (a private copy of the entry) and queues it, or completes it at once
/// with the errno that refuses it.
fn dispatch(
    server: &ServerShared,
    conn: &Connection,
    ring: &RingState,
    direct: &mut Option<DirectReads>,
    sqe: Sqe,
) {
    match check(conn, &sqe) {
        Ok(reg) => {
            if let Some(d) = direct.as_mut().filter(|_| DirectReads::takes(&sqe)) {
                return d.start(server, ring, reg, sqe);
            }
            let mut jobs = ring.jobs.lock();
            jobs.queue.push_back(Job { reg, sqe });
            ring.jobs_ready.notify_one();
        }
        Err(errno) => {
            server.refused.fetch_add(1, Ordering::Relaxed);
            ring.complete(sqe.tag, -i64::from(errno));
        }
    }
}

fn check(conn: &Connection, sqe: &Sqe) -> Result<Arc<Registration>, i32> {
    if sqe.flags != 0 {
        return Err(libc::EINVAL);
    }
    let need = match sqe.op {
        OP_READ => ACCESS_READ,
        OP_WRITE => ACCESS_WRITE,
        _ => return Err(libc::EINVAL),
    };
    let reg = conn.handles.read().get(sqe.handle).ok_or(libc::EBADF)?;
    if reg.access & need == 0 {
        return Err(libc::EBADF);
    }
    match sqe.buffer_offset.checked_add(sqe.len) {
        Some(end) if end <= reg.mapping.buffer_len() => {}
        _ => return Err(libc::EFAULT),
    }
    if sqe.file_offset.checked_add(sqe.len).is_none() {
        return Err(libc::EINVAL);
    }
    Ok(reg)
}

fn worker(server: &ServerShared, ring: &RingState) {
    loop {
        let job = {
            let mut jobs = ring.jobs.lock();
            loop {
                if let Some(job) = jobs.queue.pop_front() {
                    break Some(job);
                }
                if jobs.closed {
                    break None;
                }
                ring.jobs_ready.wait(&mut jobs);
            }
        };
        let Some(job) = job else { return };
        let result = if ring.stopping.load(Ordering::Acquire) {
            -i64::from(libc::ECANCELED)
        } else {
            run(server, &job)
        };
        finish(server, ring, &job.reg, job.sqe.tag, result);
    }
}

/// Runs one checked request: bytes transferred, or a negative errno if nothing was.
fn run(server: &ServerShared, job: &Job) -> i64 {
    let Sqe {
        op,
        file_offset,
        buffer_offset,
        len,
        ..
    } = job.sqe;
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(MAX_PIECE);
        let result = if op == OP_WRITE {
            server.fs.write_registered(
                &job.reg.mapping,
                file_offset + done,
                buffer_offset + done,
                n,
            )
        } else {
            server.fs.read_registered(
                &job.reg.mapping,
                file_offset + done,
                buffer_offset + done,
                n,
            )
        };
        match result {
            Ok(k) => {
                done += k;
                if k < n {
                    break;
                }
            }
            Err(e) if done == 0 => return -i64::from(e.errno()),
            Err(_) => break,
        }
    }
    done as i64
}
