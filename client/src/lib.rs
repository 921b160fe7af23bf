//! The client of a mounted stripefs: register your own memory against files on the mount and
//! read and write them straight into it, from your own process, with many requests in flight.
//!
//! ```no_run
//! use std::fs::File;
//! use stripefs_client::{Client, ClientBuffer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = File::open("/mnt/stripefs/data.bin")?;        // a file on the mount
//! let client = Client::connect("/mnt/stripefs/data.bin")?;  // finds the daemon from the path
//! let buffer = ClientBuffer::new(8 << 20)?;                 // sealed memfd, mapped here
//! let handle = client.register(&file, &buffer)?;            // once per (file, buffer)
//! let n = client.read(handle, 0, 0, 8 << 20)?;              // file offset, buffer offset, len
//! let mut head = [0u8; 16];
//! buffer.read_at(0, &mut head)?;
//! # let _ = n;
//! client.unregister(handle)?;
//! # Ok(()) }
//! ```
//!
//! How it works: [`Client::connect`] finds the daemon's Unix socket from the path (see
//! [`discover`]), and the daemon hands back a shared-memory ring and two eventfd doorbells.
//! [`Client::register`] passes the file descriptor and the buffer's memfd to the daemon
//! (SCM_RIGHTS); the daemon maps the same pages and attaches them to the devices behind the
//! file. Requests go through the ring: [`Client::submit`] queues many with at most one system
//! call; [`Client::wait`] blocks on the completion eventfd, [`Client::wait_polling`] spins,
//! [`Client::poll`] only looks. [`Client::read`] and [`Client::write`] are the blocking
//! one-request forms. Every method takes `&self`: threads may share one client.
//!
//! Access follows the descriptor's open mode (reads need it readable, writes writable); a
//! handle is valid only on the client that made it; dropping the client (or the process
//! dying) releases every registration it made.

mod buffer;
mod discover;
mod error;
pub mod ffi;
mod files;
#[doc(hidden)]
#[path = "../../fs/src/control/proto.rs"]
pub mod proto;
#[doc(hidden)]
#[path = "../../fs/src/control/ring.rs"]
pub mod ring;
#[doc(hidden)]
#[path = "../../fs/src/control/sys.rs"]
pub mod sys;
mod tickets;
mod trust;

pub use buffer::ClientBuffer;
pub use discover::discover;
pub use error::{ClientError, Errno};
pub use files::{FileHandle, FileInfo, FileRequest};
pub use proto::{DeviceStat, MigrateReply, RegistrationStat, StatReply};
pub use tickets::{Finished, Ticket};

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use parking_lot::{Condvar, Mutex};
use stripefs_mapping::Memory;

use proto::{Kind, RegisterReply, Reply};
use ring::{Cqe, Entry, Layout, NEED_WAKEUP, OP_READ, OP_WRITE, RingView, Sqe, WAITING};

/// Tags with this bit are the client's own (blocking calls); user tags must not have it.
const SYNC_TAG: u64 = 1 << 63;

/// An opaque registration handle, valid only on the client that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle(u64);

impl Handle {
    /// The handle's number (for the C API and for passing around).
    pub fn raw(self) -> u64 {
        self.0
    }

    /// A handle from its number. Using a number the daemon did not give this client fails
    /// with EBADF.
    pub fn from_raw(raw: u64) -> Handle {
        Handle(raw)
    }
}

/// Direction of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// File to buffer.
    Read,
    /// Buffer to file.
    Write,
}

/// One request: move `len` bytes between file offset `file_offset` and buffer offset
/// `buffer_offset` of the registration `handle`. `tag` (below 2^63) comes back in the
/// completion.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub handle: Handle,
    pub op: Op,
    pub file_offset: u64,
    pub buffer_offset: u64,
    pub len: u64,
    pub tag: u64,
}

impl Request {
    /// The ring entry of this request, tagged `tag`.
    fn sqe(&self, tag: u64) -> Sqe {
        Sqe {
            handle: self.handle.0,
            op: self.op.code(),
            flags: 0,
            file_offset: self.file_offset,
            buffer_offset: self.buffer_offset,
            len: self.len,
            tag,
        }
    }
}

impl Op {
    fn code(self) -> u32 {
        match self {
            Op::Read => OP_READ,
            Op::Write => OP_WRITE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// The outcome of one request: bytes transferred (short only at end of file), or an errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub tag: u64,
    pub result: Result<u64, Errno>,
}

/// What a registration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationInfo {
    pub handle: Handle,
    /// Inode number of the file.
    pub ino: u64,
    /// Bytes of the buffer requests may address.
    pub buffer_len: u64,
    pub readable: bool,
    pub writable: bool,
    /// Devices the daemon attached the buffer to.
    pub devices: u32,
}

/// How to connect.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Requests in flight at most (ring size; a power of two, at most 4096).
    pub entries: u32,
    /// Daemon threads running this client's requests (0: the daemon's default).
    pub workers: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            entries: 128,
            workers: 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    NonBlocking,
    Spin,
    Block,
}

#[derive(Clone, Debug)]
enum Broken {
    Disconnected,
    Protocol(String),
}

impl Broken {
    fn error(&self) -> ClientError {
        match self {
            Broken::Disconnected => ClientError::Disconnected,
            Broken::Protocol(what) => ClientError::Protocol { what: what.clone() },
        }
    }
}

/// Completions reaped from the ring and not yet handed out.
struct Reaped {
    ready: VecDeque<Completion>,
    sync: HashMap<u64, i64>,
    /// A thread is reaping (or sleeping on the doorbell) without the lock.
    leader: bool,
    /// Our copy of cq_head.
    cq_head: u32,
    broken: Option<Broken>,
}

struct Registered {
    buffer: ClientBuffer,
    info: RegistrationInfo,
}

/// A connection to the daemon serving a mount.
pub struct Client {
    id: u64,
    socket: OwnedFd,
    socket_path: PathBuf,
    connection: u64,
    control: Mutex<u32>,
    ring: RingView,
    entries: u32,
    sq_doorbell: OwnedFd,
    cq_doorbell: OwnedFd,
    /// Our copy of sq_tail; also serialises producers.
    sq_tail: Mutex<u32>,
    /// Requests submitted whose completion has not been reaped.
    in_flight: AtomicU32,
    reaped: Mutex<Reaped>,
    progress: Condvar,
    registrations: Mutex<HashMap<u64, Registered>>,
    /// Files opened with [`Client::open`], by handle.
    files: Mutex<HashMap<u64, FileInfo>>,
    next_sync: AtomicU64,
}

fn next_client_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Hello => "hello",
        Kind::Register => "register",
        Kind::Unregister => "unregister",
        Kind::Migrate => "migrate",
        Kind::Stat => "stat",
        Kind::RegisterBuffer => "register buffer",
        Kind::OpenFile => "open file",
        Kind::CloseFile => "close file",
    }
}

/// Sends one control request and waits for its reply.
fn call(
    socket: BorrowedFd<'_>,
    seq: u32,
    request: &proto::Request,
    fds: &[BorrowedFd<'_>],
) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
    let kind = request.kind();
    let message = proto::encode_request(seq, request);
    if let Err(e) = sys::send(socket, &message, fds) {
        return Err(match e.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => ClientError::Disconnected,
            _ => ClientError::io("sending a control message", e),
        });
    }
    let mut packet = vec![0u8; proto::MAX_MESSAGE];
    loop {
        let received = sys::recv(socket, &mut packet)
            .map_err(|e| ClientError::io("receiving a control message", e))?;
        if received.eof {
            return Err(ClientError::Disconnected);
        }
        if received.truncated {
            return Err(ClientError::Protocol {
                what: format!(
                    "reply to {} longer than {} bytes",
                    kind_name(kind),
                    packet.len()
                ),
            });
        }
        let (header, result) = proto::decode_reply(&packet[..received.len], kind).map_err(|e| {
            ClientError::Protocol {
                what: format!("reply to {}: {e}", kind_name(kind)),
            }
        })?;
        if header.seq != seq {
            continue; // a late reply to an earlier request
        }
        return match result {
            Err(errno) => Err(ClientError::Refused {
                op: kind_name(kind),
                errno: Errno(errno),
            }),
            Ok(_) if received.fds.len() != kind.reply_fds() => Err(ClientError::Protocol {
                what: format!(
                    "reply to {} carries {} descriptors, expected {}",
                    kind_name(kind),
                    received.fds.len(),
                    kind.reply_fds()
                ),
            }),
            Ok(reply) => Ok((reply, received.fds)),
        };
    }
}

/// Device counters and live registrations of the mount that holds `path_on_mount`, asked
/// without setting up a ring (what `stripefs stat` shows).
pub fn stat(path_on_mount: impl AsRef<Path>) -> Result<StatReply, ClientError> {
    let socket_path = discover(path_on_mount.as_ref())?;
    let owner = trust::mount_owner_of(path_on_mount.as_ref(), &socket_path)?;
    let socket = sys::connect(&socket_path).map_err(|source| ClientError::Connect {
        path: socket_path.clone(),
        source,
    })?;
    trust::check_peer(owner, path_on_mount.as_ref(), &socket_path, socket.as_fd())?;
    match call(socket.as_fd(), 1, &proto::Request::Stat, &[])?.0 {
        Reply::Stat(s) => Ok(s),
        _ => Err(ClientError::Protocol {
            what: "stat answered with another kind".into(),
        }),
    }
}

fn result_of(raw: i64) -> Result<u64, Errno> {
    if raw >= 0 {
        Ok(raw as u64)
    } else {
        Err(Errno(
            i32::try_from(raw.unsigned_abs()).unwrap_or(libc::EIO),
        ))
    }
}

impl Client {
    /// Connects to the daemon serving the mount that holds `path_on_mount` (any file or
    /// directory on it), found with [`discover`]. Before sending anything it checks that the
    /// path is on a stripefs mount and that the socket's peer is the uid owning that mount,
    /// or root ([`ClientError::Untrusted`] otherwise).
    pub fn connect(path_on_mount: impl AsRef<Path>) -> Result<Client, ClientError> {
        Self::connect_with(path_on_mount, ClientOptions::default())
    }

    /// Like [`Client::connect`], with options.
    pub fn connect_with(
        path_on_mount: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let path = path_on_mount.as_ref();
        let socket = discover(path)?;
        Self::connect_to(&socket, options, Some(path))
    }

    /// Connects to the control socket at `socket_path`.
    pub fn connect_socket(socket_path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Self::connect_socket_with(socket_path, ClientOptions::default())
    }

    /// Like [`Client::connect_socket`], with options.
    pub fn connect_socket_with(
        socket_path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        Self::connect_to(socket_path.as_ref(), options, None)
    }

    /// Connects to the control socket at `socket_path` for the mount that holds
    /// `path_on_mount`, after checking (before sending anything) that the socket is served by
    /// that mount's owner: see [`Client::connect`].
    pub fn connect_socket_for(
        socket_path: impl AsRef<Path>,
        path_on_mount: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        Self::connect_to(socket_path.as_ref(), options, Some(path_on_mount.as_ref()))
    }

    /// Connects to `socket_path`; when it was found from `path_on_mount`, first checks that
    /// the socket belongs to that mount's daemon (see [`trust`]).
    fn connect_to(
        socket_path: &Path,
        options: ClientOptions,
        path_on_mount: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let socket_path = socket_path.to_path_buf();
        let owner = path_on_mount
            .map(|path| trust::mount_owner_of(path, &socket_path).map(|uid| (path, uid)))
            .transpose()?;
        let socket = sys::connect(&socket_path).map_err(|source| ClientError::Connect {
            path: socket_path.clone(),
            source,
        })?;
        if let Some((path, uid)) = owner {
            trust::check_peer(uid, path, &socket_path, socket.as_fd())?;
        }
        let hello = proto::Request::Hello {
            sq_entries: options.entries,
            workers: options.workers,
        };
        let (reply, fds) = call(socket.as_fd(), 1, &hello, &[])?;
        let Reply::Hello(h) = reply else {
            return Err(ClientError::Protocol {
                what: "hello answered with another kind".into(),
            });
        };
        let layout = Layout::new(h.sq_entries, h.cq_entries)
            .filter(|l| l.cq_entries >= l.sq_entries && l.len as u64 == h.ring_len)
            .ok_or_else(|| ClientError::Protocol {
                what: format!(
                    "ring of {} submission and {} completion entries in {} bytes",
                    h.sq_entries, h.cq_entries, h.ring_len
                ),
            })?;
        let mut fds = fds.into_iter();
        let (Some(ring_fd), Some(sq_doorbell), Some(cq_doorbell)) =
            (fds.next(), fds.next(), fds.next())
        else {
            return Err(ClientError::Protocol {
                what: "hello reply without its descriptors".into(),
            });
        };
        let memory = Arc::new(Memory::from_memfd(ring_fd)?);
        let ring = RingView::new(memory, layout).map_err(|e| ClientError::Protocol {
            what: format!("ring memfd: {e}"),
        })?;
        Ok(Client {
            id: next_client_id(),
            socket,
            socket_path,
            connection: h.connection,
            control: Mutex::new(1),
            entries: layout.sq_entries,
            ring,
            sq_doorbell,
            cq_doorbell,
            sq_tail: Mutex::new(0),
            in_flight: AtomicU32::new(0),
            reaped: Mutex::new(Reaped {
                ready: VecDeque::new(),
                sync: HashMap::new(),
                leader: false,
                cq_head: 0,
                broken: None,
            }),
            progress: Condvar::new(),
            registrations: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            next_sync: AtomicU64::new(1),
        })
    }

    /// The control socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// This connection's number in the daemon (as `stripefs stat` shows it).
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// Requests in flight at most.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Requests submitted and not yet reaped.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    fn call(
        &self,
        request: &proto::Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
        let mut seq = self.control.lock();
        *seq = seq.wrapping_add(1);
        call(self.socket.as_fd(), *seq, request, fds)
    }

    /// Registers `buffer` against `file` (opened on the mount): reads through the handle need
    /// `file` opened for reading, writes need it opened for writing. The daemon attaches the
    /// buffer to every device the file spans.
    pub fn register(&self, file: &impl AsFd, buffer: &ClientBuffer) -> Result<Handle, ClientError> {
        let (reply, _) = buffer.registering(|memfd| {
            let reply = self.call(
                &proto::Request::Register { flags: 0 },
                &[file.as_fd(), memfd],
            )?;
            buffer.inner.registered_on.lock().push(self.id);
            Ok(reply)
        })?;
        let Reply::Register(reply) = reply else {
            return Err(ClientError::Protocol {
                what: "register answered with another kind".into(),
            });
        };
        Ok(self.remember(buffer, reply))
    }

    /// Records a registration the daemon made (for [`Client::registration`], migrate and
    /// drop) and returns its handle.
    fn remember(&self, buffer: &ClientBuffer, reply: RegisterReply) -> Handle {
        let info = RegistrationInfo {
            handle: Handle(reply.handle),
            ino: reply.ino,
            buffer_len: reply.buffer_len,
            readable: reply.access & proto::ACCESS_READ != 0,
            writable: reply.access & proto::ACCESS_WRITE != 0,
            devices: reply.devices,
        };
        self.registrations.lock().insert(
            reply.handle,
            Registered {
                buffer: buffer.clone(),
                info,
            },
        );
        info.handle
    }

    /// What registration `handle` is.
    pub fn registration(&self, handle: Handle) -> Option<RegistrationInfo> {
        self.registrations.lock().get(&handle.0).map(|r| r.info)
    }

    /// Drops a registration. Requests on it that are already running complete; later ones
    /// fail with EBADF.
    pub fn unregister(&self, handle: Handle) -> Result<(), ClientError> {
        let result = self.call(&proto::Request::Unregister { handle: handle.0 }, &[]);
        if let Some(r) = self.registrations.lock().remove(&handle.0) {
            let mut on = r.buffer.inner.registered_on.lock();
            if let Some(i) = on.iter().position(|&c| c == self.id) {
                on.swap_remove(i);
            }
        }
        result.map(|_| ())
    }

    /// Moves the buffer of registration `handle` to new pages while requests may be in
    /// flight (the `move_notify` of dma-buf): the client makes a new sealed memfd, the daemon
    /// invalidates every registration of the buffer, waits for their running I/O, copies the
    /// contents and switches to the new pages, and then this client switches its own view.
    /// Requests complete normally; the next ones attach the new pages. Refused (EBUSY) when
    /// the buffer is registered through another client too.
    pub fn migrate(&self, handle: Handle) -> Result<MigrateReply, ClientError> {
        let buffer = self
            .registrations
            .lock()
            .get(&handle.0)
            .map(|r| r.buffer.clone())
            .ok_or(ClientError::UnknownHandle { handle: handle.0 })?;
        if buffer
            .inner
            .registered_on
            .lock()
            .iter()
            .any(|&c| c != self.id)
        {
            return Err(ClientError::BufferShared);
        }
        let mut view = buffer.inner.memory.write();
        let fresh = buffer.fresh_memory()?;
        let (reply, _) = self.call(&proto::Request::Migrate { handle: handle.0 }, &[fresh.fd()])?;
        let Reply::Migrate(report) = reply else {
            return Err(ClientError::Protocol {
                what: "migrate answered with another kind".into(),
            });
        };
        *view = Arc::new(fresh);
        Ok(report)
    }

    /// Device counters and live registrations of the whole mount.
    pub fn stat(&self) -> Result<StatReply, ClientError> {
        match self.call(&proto::Request::Stat, &[])?.0 {
            Reply::Stat(s) => Ok(s),
            _ => Err(ClientError::Protocol {
                what: "stat answered with another kind".into(),
            }),
        }
    }

    // ----- the ring -----

    /// Queues requests; returns how many were queued (fewer than asked when the ring is
    /// full: reap completions, then submit the rest). Costs at most one system call (none
    /// while the daemon is busy taking requests).
    pub fn submit(&self, requests: &[Request]) -> Result<usize, ClientError> {
        if let Some(r) = requests.iter().find(|r| r.tag & SYNC_TAG != 0) {
            return Err(ClientError::invalid(format!(
                "tag {:#x} has bit 63 set (reserved)",
                r.tag
            )));
        }
        self.submit_sqes(requests.iter().map(|r| Entry::from(r.sqe(r.tag))))
    }

    /// Queues raw ring entries as they are (tests of the daemon's checks).
    #[doc(hidden)]
    pub fn submit_raw(&self, sqes: &[Sqe]) -> Result<usize, ClientError> {
        self.submit_sqes(sqes.iter().map(|&s| Entry::from(s)))
    }

    /// Queues whole raw ring entries, file field included (tests of the daemon's checks).
    #[doc(hidden)]
    pub fn submit_raw_entries(&self, entries: &[Entry]) -> Result<usize, ClientError> {
        self.submit_sqes(entries.iter().copied())
    }

    /// The ring (tests that scribble on it).
    #[doc(hidden)]
    pub fn ring(&self) -> &RingView {
        &self.ring
    }

    /// Rings the submission doorbell unconditionally (tests that scribble on the ring).
    #[doc(hidden)]
    pub fn kick(&self) {
        sys::ring_doorbell(self.sq_doorbell.as_fd());
    }

    fn submit_sqes(
        &self,
        sqes: impl ExactSizeIterator<Item = Entry>,
    ) -> Result<usize, ClientError> {
        if let Some(b) = &self.reaped.lock().broken {
            return Err(b.error());
        }
        let want = u32::try_from(sqes.len()).unwrap_or(u32::MAX);
        if want == 0 {
            return Ok(0);
        }
        let mut current = self.in_flight.load(Ordering::Acquire);
        let n = loop {
            let n = want.min(self.entries.saturating_sub(current));
            if n == 0 {
                return Err(ClientError::Busy { in_flight: current });
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break n,
                Err(c) => current = c,
            }
        };
        {
            let mut tail = self.sq_tail.lock();
            for sqe in sqes.take(n as usize) {
                self.ring.write_sqe(*tail, &sqe);
                *tail = tail.wrapping_add(1);
            }
            self.ring.sq_tail().store(*tail, Ordering::Release);
        }
        // Pairs with the daemon's store of NEED_WAKEUP and its re-check of sq_tail.
        fence(Ordering::SeqCst);
        if self.ring.sq_flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0 {
            sys::ring_doorbell(self.sq_doorbell.as_fd());
        }
        Ok(n as usize)
    }

    /// Waits (sleeping on the completion doorbell) until at least `min` completions are
    /// ready, or nothing more is in flight, and moves every ready completion to `out`;
    /// returns how many were moved.
    pub fn wait(&self, min: usize, out: &mut Vec<Completion>) -> Result<usize, ClientError> {
        self.wait_into(min, usize::MAX, Mode::Block, out)
    }

    /// Like [`Client::wait`], but spins instead of sleeping (lowest latency, one core busy).
    pub fn wait_polling(
        &self,
        min: usize,
        out: &mut Vec<Completion>,
    ) -> Result<usize, ClientError> {
        self.wait_into(min, usize::MAX, Mode::Spin, out)
    }

    /// Moves the completions that are ready now to `out`, without waiting or system calls.
    pub fn poll(&self, out: &mut Vec<Completion>) -> Result<usize, ClientError> {
        self.poll_into(usize::MAX, out)
    }

    pub(crate) fn poll_into(
        &self,
        max: usize,
        out: &mut Vec<Completion>,
    ) -> Result<usize, ClientError> {
        let mut st = self.reaped.lock();
        // While another thread reaps (perhaps asleep on the doorbell), take what it left.
        if !st.leader {
            let mut cqes = Vec::new();
            let outcome = self.reap(st.cq_head, Mode::NonBlocking, &mut cqes);
            self.absorb(&mut st, cqes, outcome);
        }
        if st.ready.is_empty()
            && let Some(b) = &st.broken
        {
            return Err(b.error());
        }
        let n = st.ready.len().min(max);
        out.extend(st.ready.drain(..n));
        Ok(n)
    }

    pub(crate) fn wait_into(
        &self,
        min: usize,
        max: usize,
        mode: Mode,
        out: &mut Vec<Completion>,
    ) -> Result<usize, ClientError> {
        self.drive(mode, |st, in_flight| {
            if st.ready.len() < min && in_flight > 0 {
                return None;
            }
            let n = st.ready.len().min(max);
            out.extend(st.ready.drain(..n));
            Some(n)
        })
    }

    /// Runs `f` under the completion lock until it returns `Some`, reaping the ring in
    /// between (one thread at a time reaps; the others wait for it).
    fn drive<T>(
        &self,
        mode: Mode,
        mut f: impl FnMut(&mut Reaped, u32) -> Option<T>,
    ) -> Result<T, ClientError> {
        let mut st = self.reaped.lock();
        loop {
            if let Some(v) = f(&mut st, self.in_flight.load(Ordering::Acquire)) {
                return Ok(v);
            }
            if let Some(b) = &st.broken {
                return Err(b.error());
            }
            if st.leader {
                self.progress.wait(&mut st);
                continue;
            }
            st.leader = true;
            let head = st.cq_head;
            drop(st);
            // Reaping and sleeping happen without the lock; cq_head is ours while leader.
            let mut cqes = Vec::new();
            let outcome = self.reap(head, mode, &mut cqes);
            st = self.reaped.lock();
            st.leader = false;
            self.absorb(&mut st, cqes, outcome);
            self.progress.notify_all();
        }
    }

    /// Files reaped completions: the blocking calls' by tag, the others in order.
    fn absorb(&self, st: &mut Reaped, cqes: Vec<Cqe>, outcome: Result<(), Broken>) {
        st.cq_head = st.cq_head.wrapping_add(cqes.len() as u32);
        self.in_flight
            .fetch_sub(cqes.len() as u32, Ordering::AcqRel);
        for c in cqes {
            if c.tag & SYNC_TAG != 0 {
                st.sync.insert(c.tag, c.result);
            } else {
                st.ready.push_back(Completion {
                    tag: c.tag,
                    result: result_of(c.result),
                });
            }
        }
        if let Err(b) = outcome {
            st.broken = Some(b);
        }
    }

    /// Collects the completions after `head` into `out`, waiting for at least one unless
    /// `mode` is NonBlocking. Consuming completions frees ring space, so a daemon asleep on
    /// a full ring is woken.
    fn reap(&self, head: u32, mode: Mode, out: &mut Vec<Cqe>) -> Result<(), Broken> {
        let entries = self.ring.layout().cq_entries;
        let mut spins = 0u32;
        loop {
            let tail = self.ring.cq_tail().load(Ordering::Acquire);
            let available = tail.wrapping_sub(head);
            if available > entries {
                return Err(Broken::Protocol(format!(
                    "completion queue tail {tail} is {available} entries past head {head}"
                )));
            }
            if available > 0 {
                let mut index = head;
                for _ in 0..available {
                    out.push(self.ring.read_cqe(index));
                    index = index.wrapping_add(1);
                }
                self.ring.cq_head().store(index, Ordering::Release);
                fence(Ordering::SeqCst);
                if self.ring.sq_flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
                    && self.ring.sq_head().load(Ordering::Acquire) != *self.sq_tail.lock()
                {
                    sys::ring_doorbell(self.sq_doorbell.as_fd());
                }
                return Ok(());
            }
            match mode {
                Mode::NonBlocking => return Ok(()),
                Mode::Spin => {
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(64) {
                        std::thread::yield_now();
                    }
                    if spins.is_multiple_of(65536) && self.hung_up(0) {
                        return Err(Broken::Disconnected);
                    }
                    std::hint::spin_loop();
                }
                Mode::Block => {
                    self.ring.cq_flags().store(WAITING, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    if self.ring.cq_tail().load(Ordering::Acquire) == head {
                        let events = sys::poll(
                            &[
                                (self.cq_doorbell.as_fd(), libc::POLLIN),
                                (self.socket.as_fd(), libc::POLLRDHUP),
                            ],
                            -1,
                        )
                        .map_err(|_| Broken::Disconnected)?;
                        sys::drain_doorbell(self.cq_doorbell.as_fd());
                        let gone = events.get(1).is_some_and(|e| {
                            e & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
                        });
                        if gone && self.ring.cq_tail().load(Ordering::Acquire) == head {
                            self.ring.cq_flags().store(0, Ordering::SeqCst);
                            return Err(Broken::Disconnected);
                        }
                    }
                    self.ring.cq_flags().store(0, Ordering::SeqCst);
                }
            }
        }
    }

    fn hung_up(&self, timeout_ms: i32) -> bool {
        sys::poll(&[(self.socket.as_fd(), libc::POLLRDHUP)], timeout_ms)
            .map(|e| e.first().is_some_and(|e| *e != 0))
            .unwrap_or(true)
    }

    fn blocking(
        &self,
        op: Op,
        handle: Handle,
        file_offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, ClientError> {
        let request = Request {
            handle,
            op,
            file_offset,
            buffer_offset,
            len,
            tag: 0,
        };
        let ticket = self.start_entries(std::iter::once(Entry::from(request.sqe(0))))?[0];
        self.finish(ticket)
    }

    /// Reads up to `len` bytes at `file_offset` into the buffer at `buffer_offset`; returns
    /// the bytes read (short only at end of file). Blocks.
    pub fn read(
        &self,
        handle: Handle,
        file_offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, ClientError> {
        self.blocking(Op::Read, handle, file_offset, buffer_offset, len)
    }

    /// Writes `len` bytes from the buffer at `buffer_offset` to `file_offset` (the file grows
    /// as needed); returns `len`. Blocks.
    pub fn write(
        &self,
        handle: Handle,
        file_offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, ClientError> {
        self.blocking(Op::Write, handle, file_offset, buffer_offset, len)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for (_, r) in self.registrations.lock().drain() {
            r.buffer
                .inner
                .registered_on
                .lock()
                .retain(|&c| c != self.id);
        }
        // Closing the socket (when the fields drop) makes the daemon release everything.
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket_path)
            .field("connection", &self.connection)
            .field("entries", &self.entries)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}
