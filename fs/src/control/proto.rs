//! The control protocol: small fixed-layout little-endian messages on a `SOCK_SEQPACKET` Unix
//! socket (one message per packet), with descriptors passed alongside (SCM_RIGHTS).
//!
//! Compiled into both the daemon (`stripefs_fs::control`) and the client library
//! (`stripefs-client`, through `#[path]`), so that both sides share one definition. It depends
//! on `std` and `libc` only. Decoding never panics: every length, count, reserved field and flag
//! is checked, and a bad message is a [`DecodeError`] that names what is wrong and its errno.
//!
//! Every message starts with a 16-byte header:
//!
//! | offset | field | |
//! | --- | --- | --- |
//! | 0 | `magic: u32` | [`MAGIC`] (`"SFSC"`) |
//! | 4 | `version: u16` | [`VERSION`] |
//! | 6 | `kind: u16` | request kind; a reply has [`REPLY`] set |
//! | 8 | `seq: u32` | chosen by the client, echoed in the reply |
//! | 12 | `len: u32` | whole message, header included; must equal the packet length |
//!
//! A request body has a fixed length per kind; every reply body starts with
//! `status: i32` (0, or a negative errno) and a reserved `u32`, followed, on success, by the
//! kind's payload. Unknown flags and non-zero reserved fields are refused, so that later
//! versions can give them a meaning.
//!
//! Version 2 registers buffers and files apart ([`Kind::RegisterBuffer`], [`Kind::OpenFile`],
//! [`Kind::CloseFile`]) and grows the ring entries to name a file besides the buffer
//! (see `ring.rs`); a version-1 peer is refused with EPROTONOSUPPORT.

/// `"SFSC"` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SFSC");
/// Protocol version spoken by this build.
pub const VERSION: u16 = 2;
/// Length of the message header.
pub const HEADER_LEN: usize = 16;
/// Longest message either side sends (a stat reply with every list full fits).
pub const MAX_MESSAGE: usize = 64 << 10;
/// Set in the kind of every reply.
pub const REPLY: u16 = 0x8000;
/// Kind of the reply to a message whose kind could not be read.
pub const KIND_ERROR: u16 = 0xFFFF;

/// Register flag: the buffer descriptor is a dma-buf (from `/dev/udmabuf`), not a memfd.
pub const REGISTER_DMABUF: u32 = 1;
/// Access bits of a registration (from the open mode of the file descriptor).
pub const ACCESS_READ: u32 = 1;
/// See [`ACCESS_READ`].
pub const ACCESS_WRITE: u32 = 2;

/// Longest device name in a stat reply (longer names are cut).
pub const STAT_NAME_LEN: usize = 64;
/// Most devices a stat reply lists.
pub const MAX_STAT_DEVICES: usize = 256;
/// Most registrations a stat reply lists (the total is given too).
pub const MAX_STAT_REGISTRATIONS: usize = 512;
const DEVICE_RECORD: usize = STAT_NAME_LEN + 5 * 8;
const REGISTRATION_RECORD: usize = 64;
const STAT_FIXED: usize = 32;

/// Directory of the control sockets of mounted filesystems.
pub const SOCKET_DIR: &str = "/run/stripefs";
/// Extended attribute of the mount root (and, if the mount offers it, of every inode) whose
/// value is the path of the control socket.
pub const CONTROL_XATTR: &str = "user.stripefs.control";

/// FNV-1a (64-bit) of `bytes`: stable across builds and easy to compute from C.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// File name of the control socket of the filesystem mounted at `canonical_mountpoint`
/// (already canonicalised): `mnt-<fnv1a64 of the path, 16 hex digits>.sock`.
pub fn socket_name(canonical_mountpoint: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!(
        "mnt-{:016x}.sock",
        fnv1a64(canonical_mountpoint.as_os_str().as_bytes())
    )
}

/// What a client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Set up the connection: the reply carries the ring memfd and the two doorbells.
    Hello = 1,
    /// Register a file (descriptor 0, opened on the mount) against a buffer (descriptor 1).
    Register = 2,
    /// Drop a registration.
    Unregister = 3,
    /// Move a registration's buffer to new pages (descriptor 0: a sealed memfd).
    Migrate = 4,
    /// Device counters and live registrations.
    Stat = 5,
    /// Register a buffer (descriptor 0) against the whole mount: one attachment per device,
    /// usable with every file opened with [`Kind::OpenFile`].
    RegisterBuffer = 6,
    /// Open a file (descriptor 0, opened on the mount) for requests with buffers registered
    /// against the mount; access follows the descriptor's open mode.
    OpenFile = 7,
    /// Close a file handle.
    CloseFile = 8,
}

impl Kind {
    /// The kind with number `n`.
    pub fn from_u16(n: u16) -> Option<Kind> {
        Some(match n {
            1 => Kind::Hello,
            2 => Kind::Register,
            3 => Kind::Unregister,
            4 => Kind::Migrate,
            5 => Kind::Stat,
            6 => Kind::RegisterBuffer,
            7 => Kind::OpenFile,
            8 => Kind::CloseFile,
            _ => return None,
        })
    }

    /// Descriptors a request of this kind must carry.
    pub fn request_fds(self) -> usize {
        match self {
            Kind::Register => 2,
            Kind::Migrate | Kind::RegisterBuffer | Kind::OpenFile => 1,
            Kind::Hello | Kind::Unregister | Kind::Stat | Kind::CloseFile => 0,
        }
    }

    /// Descriptors a successful reply of this kind carries.
    pub fn reply_fds(self) -> usize {
        match self {
            Kind::Hello => 3,
            _ => 0,
        }
    }

    fn request_body(self) -> usize {
        match self {
            Kind::Hello => 16,
            Kind::Register
            | Kind::Unregister
            | Kind::Migrate
            | Kind::Stat
            | Kind::RegisterBuffer
            | Kind::OpenFile
            | Kind::CloseFile => 8,
        }
    }
}

/// A request from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `sq_entries`: requested ring size (a power of two, at most
    /// [`super::ring::MAX_ENTRIES`]); `workers`: threads the daemon should run requests on (0:
    /// the daemon's default).
    Hello {
        sq_entries: u32,
        workers: u32,
    },
    /// `flags`: [`REGISTER_DMABUF`] or 0.
    Register {
        flags: u32,
    },
    Unregister {
        handle: u64,
    },
    Migrate {
        handle: u64,
    },
    Stat,
    /// `flags`: [`REGISTER_DMABUF`] or 0.
    RegisterBuffer {
        flags: u32,
    },
    OpenFile,
    CloseFile {
        handle: u64,
    },
}

impl Request {
    /// The kind of this request.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Hello { .. } => Kind::Hello,
            Request::Register { .. } => Kind::Register,
            Request::Unregister { .. } => Kind::Unregister,
            Request::Migrate { .. } => Kind::Migrate,
            Request::Stat => Kind::Stat,
            Request::RegisterBuffer { .. } => Kind::RegisterBuffer,
            Request::OpenFile => Kind::OpenFile,
            Request::CloseFile { .. } => Kind::CloseFile,
        }
    }
}

/// The answer to a successful Hello (descriptors: ring memfd, submission doorbell, completion
/// doorbell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloReply {
    /// Number of this connection in the daemon (shown by stat).
    pub connection: u64,
    /// Length of the ring memfd.
    pub ring_len: u64,
    pub sq_entries: u32,
    pub cq_entries: u32,
}

/// The answer to a successful Register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterReply {
    /// Opaque; valid only on this connection.
    pub handle: u64,
    /// The file's inode number.
    pub ino: u64,
    /// Bytes of the buffer that requests may address.
    pub buffer_len: u64,
    /// [`ACCESS_READ`] | [`ACCESS_WRITE`], from the descriptor's open mode.
    pub access: u32,
    /// Devices the registration is attached to.
    pub devices: u32,
}

/// The answer to a successful OpenFile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReply {
    /// Opaque; valid only on this connection.
    pub handle: u64,
    /// The file's inode number.
    pub ino: u64,
    /// [`ACCESS_READ`] | [`ACCESS_WRITE`], from the descriptor's open mode.
    pub access: u32,
}

/// The answer to a successful Migrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrateReply {
    pub drain_ns: u64,
    pub copy_ns: u64,
    pub total_ns: u64,
    /// Mappings that were invalidated (every registration of the buffer on the connection).
    pub mappings: u32,
}

/// Counters of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStat {
    pub name: String,
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub errors: u64,
}

/// One live registration of the filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationStat {
    /// Mapping number (unique in the daemon).
    pub mapping: u64,
    pub ino: u64,
    /// Control connection that made it, 0 if it was made inside the daemon.
    pub connection: u64,
    pub pid: u32,
    pub access: u32,
    pub buffer_len: u64,
    /// Requests completed through it.
    pub requests: u64,
    /// Times its buffer moved.
    pub migrations: u32,
}

/// The answer to a successful Stat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatReply {
    pub connections: u32,
    /// Requests completed through rings since the daemon started.
    pub requests: u64,
    /// Malformed messages and ring entries refused since the daemon started.
    pub refused: u64,
    pub devices: Vec<DeviceStat>,
    /// Live registrations in total (the list holds at most [`MAX_STAT_REGISTRATIONS`]).
    pub registrations_total: u32,
    pub registrations: Vec<RegistrationStat>,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Hello(HelloReply),
    Register(RegisterReply),
    Unregister,
    Migrate(MigrateReply),
    Stat(StatReply),
    /// Same fields as a Register reply; `ino` is 0 (every file of the mount).
    RegisterBuffer(RegisterReply),
    OpenFile(OpenReply),
    CloseFile,
}

impl Reply {
    /// The kind of request this answers.
    pub fn kind(&self) -> Kind {
        match self {
            Reply::Hello(_) => Kind::Hello,
            Reply::Register(_) => Kind::Register,
            Reply::Unregister => Kind::Unregister,
            Reply::Migrate(_) => Kind::Migrate,
            Reply::Stat(_) => Kind::Stat,
            Reply::RegisterBuffer(_) => Kind::RegisterBuffer,
            Reply::OpenFile(_) => Kind::OpenFile,
            Reply::CloseFile => Kind::CloseFile,
        }
    }
}

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header.
    Short {
        len: usize,
    },
    BadMagic {
        magic: u32,
    },
    BadVersion {
        version: u16,
    },
    /// The header's length disagrees with the packet's.
    Length {
        header: u32,
        packet: usize,
    },
    UnknownKind {
        kind: u16,
    },
    /// Wrong body length for the kind.
    BodySize {
        kind: u16,
        expected: usize,
        actual: usize,
    },
    /// A reserved field is not zero.
    Reserved {
        field: &'static str,
    },
    /// Flags this version does not know.
    Flags {
        field: &'static str,
        value: u32,
    },
    /// A count is out of bounds.
    Count {
        field: &'static str,
        value: u64,
    },
    /// A reply to a request kind other than the one asked.
    UnexpectedReply {
        kind: u16,
    },
}

impl DecodeError {
    /// The errno reported for this error.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::Short { .. }
            | DecodeError::Length { .. }
            | DecodeError::BodySize { .. }
            | DecodeError::Reserved { .. }
            | DecodeError::Count { .. }
            | DecodeError::UnexpectedReply { .. } => libc::EBADMSG,
            DecodeError::BadMagic { .. } => libc::EPROTO,
            DecodeError::BadVersion { .. } => libc::EPROTONOSUPPORT,
            DecodeError::UnknownKind { .. } => libc::EOPNOTSUPP,
            DecodeError::Flags { .. } => libc::EINVAL,
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short { len } => {
                write!(f, "message of {len} bytes is shorter than a header")
            }
            DecodeError::BadMagic { magic } => write!(f, "bad magic {magic:#010x}"),
            DecodeError::BadVersion { version } => {
                write!(f, "protocol version {version} (this side speaks {VERSION})")
            }
            DecodeError::Length { header, packet } => {
                write!(f, "header says {header} bytes, the packet has {packet}")
            }
            DecodeError::UnknownKind { kind } => write!(f, "unknown message kind {kind:#06x}"),
            DecodeError::BodySize {
                kind,
                expected,
                actual,
            } => write!(
                f,
                "message kind {kind:#06x} needs a {expected}-byte body, got {actual}"
            ),
            DecodeError::Reserved { field } => write!(f, "reserved field {field} is not zero"),
            DecodeError::Flags { field, value } => write!(f, "unknown {field} {value:#x}"),
            DecodeError::Count { field, value } => write!(f, "{field} {value} is out of bounds"),
            DecodeError::UnexpectedReply { kind } => {
                write!(f, "reply of kind {kind:#06x} to a different request")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// The decoded header of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub seq: u32,
}

/// Little-endian reader over a byte slice; reading past the end yields zeros and is caught
/// by the length checks that come first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.bytes.get(self.at..self.at.saturating_add(N)) {
            out.copy_from_slice(src);
        }
        self.at = self.at.saturating_add(N);
        out
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    fn reserved32(&mut self, field: &'static str) -> Result<(), DecodeError> {
        match self.u32() {
            0 => Ok(()),
            _ => Err(DecodeError::Reserved { field }),
        }
    }
}

/// Little-endian writer of one message.
struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    fn message(kind: u16, seq: u32) -> Self {
        let mut w = Writer {
            bytes: Vec::with_capacity(64),
        };
        w.u32(MAGIC);
        w.u16(VERSION);
        w.u16(kind);
        w.u32(seq);
        w.u32(0); // length, set by `finish`
        w
    }

    fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = (self.bytes.len() as u32).to_le_bytes();
        self.bytes[12..16].copy_from_slice(&len);
        self.bytes
    }
}

/// Checks magic, version and length; returns the header and the body.
pub fn decode_header(packet: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    if packet.len() < HEADER_LEN {
        return Err(DecodeError::Short { len: packet.len() });
    }
    let mut r = Reader::new(packet);
    let magic = r.u32();
    let version = r.u16();
    let kind = r.u16();
    let seq = r.u32();
    let len = r.u32();
    if magic != MAGIC {
        return Err(DecodeError::BadMagic { magic });
    }
    if version != VERSION {
        return Err(DecodeError::BadVersion { version });
    }
    if len as usize != packet.len() {
        return Err(DecodeError::Length {
            header: len,
            packet: packet.len(),
        });
    }
    Ok((Header { kind, seq }, &packet[HEADER_LEN..]))
}

/// Best-effort sequence number of a packet that may be malformed (0 if it has no header).
pub fn peek_seq(packet: &[u8]) -> u32 {
    packet
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Encodes a request.
pub fn encode_request(seq: u32, request: &Request) -> Vec<u8> {
    let mut w = Writer::message(request.kind() as u16, seq);
    match *request {
        Request::Hello {
            sq_entries,
            workers,
        } => {
            w.u32(sq_entries);
            w.u32(workers);
            w.u32(0); // flags
            w.u32(0);
        }
        Request::Register { flags } | Request::RegisterBuffer { flags } => {
            w.u32(flags);
            w.u32(0);
        }
        Request::Unregister { handle }
        | Request::Migrate { handle }
        | Request::CloseFile { handle } => w.u64(handle),
        Request::Stat | Request::OpenFile => w.u64(0),
    }
    w.finish()
}

/// Decodes a request.
pub fn decode_request(packet: &[u8]) -> Result<(Header, Request), DecodeError> {
    let (header, body) = decode_header(packet)?;
    let kind = Kind::from_u16(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    if body.len() != kind.request_body() {
        return Err(DecodeError::BodySize {
            kind: header.kind,
            expected: kind.request_body(),
            actual: body.len(),
        });
    }
    let mut r = Reader::new(body);
    let request = match kind {
        Kind::Hello => {
            let sq_entries = r.u32();
            let workers = r.u32();
            let flags = r.u32();
            if flags != 0 {
                return Err(DecodeError::Flags {
                    field: "hello flags",
                    value: flags,
                });
            }
            r.reserved32("hello reserved")?;
            Request::Hello {
                sq_entries,
                workers,
            }
        }
        Kind::Register => Request::Register {
            flags: register_flags(&mut r, ("register flags", "register reserved"))?,
        },
        Kind::RegisterBuffer => Request::RegisterBuffer {
            flags: register_flags(
                &mut r,
                ("register buffer flags", "register buffer reserved"),
            )?,
        },
        Kind::OpenFile => {
            r.reserved32("open file flags")?;
            r.reserved32("open file reserved")?;
            Request::OpenFile
        }
        Kind::CloseFile => Request::CloseFile { handle: r.u64() },
        Kind::Unregister => Request::Unregister { handle: r.u64() },
        Kind::Migrate => Request::Migrate { handle: r.u64() },
        Kind::Stat => {
            r.reserved32("stat reserved")?;
            r.reserved32("stat reserved")?;
            Request::Stat
        }
    };
    Ok((header, request))
}

/// The flags and reserved word of a Register or RegisterBuffer body (`fields`: their names
/// in errors).
fn register_flags(
    r: &mut Reader<'_>,
    fields: (&'static str, &'static str),
) -> Result<u32, DecodeError> {
    let flags = r.u32();
    if flags & !REGISTER_DMABUF != 0 {
        return Err(DecodeError::Flags {
            field: fields.0,
            value: flags,
        });
    }
    r.reserved32(fields.1)?;
    Ok(flags)
}

fn put_name(w: &mut Writer, name: &str) {
    let mut field = [0u8; STAT_NAME_LEN];
    let bytes = name.as_bytes();
    let n = bytes.len().min(STAT_NAME_LEN);
    field[..n].copy_from_slice(&bytes[..n]);
    w.bytes.extend_from_slice(&field);
}

/// Encodes a reply to request `kind` (`Err(errno)` for a refusal; `kind` may be
/// [`KIND_ERROR`] when the request's kind could not be read).
pub fn encode_reply(kind: u16, seq: u32, reply: Result<&Reply, i32>) -> Vec<u8> {
    let mut w = Writer::message(kind | REPLY, seq);
    match reply {
        Err(errno) => {
            w.i32(-errno.abs());
            w.u32(0);
        }
        Ok(reply) => {
            w.i32(0);
            w.u32(0);
            match reply {
                Reply::Hello(h) => {
                    w.u64(h.connection);
                    w.u64(h.ring_len);
                    w.u32(h.sq_entries);
                    w.u32(h.cq_entries);
                }
                Reply::Register(r) | Reply::RegisterBuffer(r) => {
                    w.u64(r.handle);
                    w.u64(r.ino);
                    w.u64(r.buffer_len);
                    w.u32(r.access);
                    w.u32(r.devices);
                }
                Reply::Unregister | Reply::CloseFile => {}
                Reply::OpenFile(o) => {
                    w.u64(o.handle);
                    w.u64(o.ino);
                    w.u32(o.access);
                    w.u32(0);
                }
                Reply::Migrate(m) => {
                    w.u64(m.drain_ns);
                    w.u64(m.copy_ns);
                    w.u64(m.total_ns);
                    w.u32(m.mappings);
                    w.u32(0);
                }
                Reply::Stat(s) => {
                    let devices = &s.devices[..s.devices.len().min(MAX_STAT_DEVICES)];
                    let regs =
                        &s.registrations[..s.registrations.len().min(MAX_STAT_REGISTRATIONS)];
                    w.u32(s.connections);
                    w.u32(devices.len() as u32);
                    w.u32(s.registrations_total);
                    w.u32(regs.len() as u32);
                    w.u64(s.requests);
                    w.u64(s.refused);
                    for d in devices {
                        put_name(&mut w, &d.name);
                        w.u64(d.reads);
                        w.u64(d.writes);
                        w.u64(d.bytes_read);
                        w.u64(d.bytes_written);
                        w.u64(d.errors);
                    }
                    for r in regs {
                        w.u64(r.mapping);
                        w.u64(r.ino);
                        w.u64(r.connection);
                        w.u64(r.buffer_len);
                        w.u64(r.requests);
                        w.u32(r.pid);
                        w.u32(r.access);
                        w.u32(r.migrations);
                        w.u32(0);
                        w.u64(0);
                    }
                }
            }
        }
    }
    w.finish()
}

/// Decodes the reply to a request of kind `asked`: `Ok(Err(errno))` is a refusal (positive
/// errno), `Err` a malformed reply.
pub fn decode_reply(
    packet: &[u8],
    asked: Kind,
) -> Result<(Header, Result<Reply, i32>), DecodeError> {
    let (header, body) = decode_header(packet)?;
    if header.kind != asked as u16 | REPLY && header.kind != KIND_ERROR | REPLY {
        return Err(DecodeError::UnexpectedReply { kind: header.kind });
    }
    if body.len() < 8 {
        return Err(DecodeError::BodySize {
            kind: header.kind,
            expected: 8,
            actual: body.len(),
        });
    }
    let mut r = Reader::new(body);
    let status = r.i32();
    r.reserved32("reply reserved")?;
    if status != 0 || header.kind == KIND_ERROR | REPLY {
        if body.len() != 8 {
            return Err(DecodeError::BodySize {
                kind: header.kind,
                expected: 8,
                actual: body.len(),
            });
        }
        let errno = if status < 0 {
            status.saturating_neg()
        } else {
            libc::EPROTO
        };
        return Ok((header, Err(errno)));
    }
    let payload = body.len() - 8;
    let expect = |expected: usize| {
        if payload == expected {
            Ok(())
        } else {
            Err(DecodeError::BodySize {
                kind: header.kind,
                expected: expected + 8,
                actual: body.len(),
            })
        }
    };
    let reply = match asked {
        Kind::Hello => {
            expect(24)?;
            Reply::Hello(HelloReply {
                connection: r.u64(),
                ring_len: r.u64(),
                sq_entries: r.u32(),
                cq_entries: r.u32(),
            })
        }
        Kind::Register | Kind::RegisterBuffer => {
            expect(32)?;
            let reply = RegisterReply {
                handle: r.u64(),
                ino: r.u64(),
                buffer_len: r.u64(),
                access: r.u32(),
                devices: r.u32(),
            };
            if asked == Kind::Register {
                Reply::Register(reply)
            } else {
                Reply::RegisterBuffer(reply)
            }
        }
        Kind::Unregister => {
            expect(0)?;
            Reply::Unregister
        }
        Kind::CloseFile => {
            expect(0)?;
            Reply::CloseFile
        }
        Kind::OpenFile => {
            expect(24)?;
            let o = OpenReply {
                handle: r.u64(),
                ino: r.u64(),
                access: r.u32(),
            };
            r.reserved32("open file reply reserved")?;
            if o.access & !(ACCESS_READ | ACCESS_WRITE) != 0 || o.access == 0 {
                return Err(DecodeError::Flags {
                    field: "open file access",
                    value: o.access,
                });
            }
            Reply::OpenFile(o)
        }
        Kind::Migrate => {
            expect(32)?;
            let m = MigrateReply {
                drain_ns: r.u64(),
                copy_ns: r.u64(),
                total_ns: r.u64(),
                mappings: r.u32(),
            };
            r.reserved32("migrate reserved")?;
            Reply::Migrate(m)
        }
        Kind::Stat => Reply::Stat(decode_stat(&mut r, payload, header.kind)?),
    };
    Ok((header, Ok(reply)))
}

fn decode_stat(r: &mut Reader<'_>, payload: usize, kind: u16) -> Result<StatReply, DecodeError> {
    if payload < STAT_FIXED {
        return Err(DecodeError::BodySize {
            kind,
            expected: STAT_FIXED + 8,
            actual: payload + 8,
        });
    }
    let connections = r.u32();
    let devices = r.u32() as usize;
    let registrations_total = r.u32();
    let listed = r.u32() as usize;
    let requests = r.u64();
    let refused = r.u64();
    if devices > MAX_STAT_DEVICES {
        return Err(DecodeError::Count {
            field: "stat devices",
            value: devices as u64,
        });
    }
    if listed > MAX_STAT_REGISTRATIONS || listed as u64 > u64::from(registrations_total) {
        return Err(DecodeError::Count {
            field: "stat registrations",
            value: listed as u64,
        });
    }
    let expected = STAT_FIXED + devices * DEVICE_RECORD + listed * REGISTRATION_RECORD;
    if payload != expected {
        return Err(DecodeError::BodySize {
            kind,
            expected: expected + 8,
            actual: payload + 8,
        });
    }
    let mut out = StatReply {
        connections,
        requests,
        refused,
        registrations_total,
        ..StatReply::default()
    };
    for _ in 0..devices {
        let name: [u8; STAT_NAME_LEN] = r.take();
        let end = name.iter().position(|&b| b == 0).unwrap_or(STAT_NAME_LEN);
        out.devices.push(DeviceStat {
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
            reads: r.u64(),
            writes: r.u64(),
            bytes_read: r.u64(),
            bytes_written: r.u64(),
            errors: r.u64(),
        });
    }
    for _ in 0..listed {
        let reg = RegistrationStat {
            mapping: r.u64(),
            ino: r.u64(),
            connection: r.u64(),
            buffer_len: r.u64(),
            requests: r.u64(),
            pid: r.u32(),
            access: r.u32(),
            migrations: r.u32(),
        };
        r.reserved32("stat registration reserved")?;
        if r.u64() != 0 {
            return Err(DecodeError::Reserved {
                field: "stat registration reserved",
            });
        }
        out.registrations.push(reg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::Hello {
                sq_entries: 64,
                workers: 3,
            },
            Request::Register { flags: 0 },
            Request::Register {
                flags: REGISTER_DMABUF,
            },
            Request::Unregister { handle: u64::MAX },
            Request::Migrate { handle: 7 },
            Request::Stat,
            Request::RegisterBuffer { flags: 0 },
            Request::OpenFile,
            Request::CloseFile { handle: 3 },
        ];
        for (seq, req) in all.iter().enumerate() {
            let bytes = encode_request(seq as u32, req);
            let (header, back) = decode_request(&bytes).expect("decode");
            assert_eq!(header.seq, seq as u32);
            assert_eq!(&back, req);
        }
    }

    #[test]
    fn replies_round_trip() {
        let stat = StatReply {
            connections: 2,
            requests: 99,
            refused: 3,
            devices: vec![DeviceStat {
                name: "x".repeat(100),
                reads: 1,
                writes: 2,
                bytes_read: 3,
                bytes_written: 4,
                errors: 5,
            }],
            registrations_total: 1,
            registrations: vec![RegistrationStat {
                mapping: 1,
                ino: 2,
                connection: 3,
                pid: 4,
                access: ACCESS_READ,
                buffer_len: 4096,
                requests: 6,
                migrations: 7,
            }],
        };
        let all = [
            Reply::Hello(HelloReply {
                connection: 1,
                ring_len: 8192,
                sq_entries: 64,
                cq_entries: 64,
            }),
            Reply::Register(RegisterReply {
                handle: 5,
                ino: 6,
                buffer_len: 4096,
                access: 3,
                devices: 2,
            }),
            Reply::Unregister,
            Reply::Migrate(MigrateReply {
                drain_ns: 1,
                copy_ns: 2,
                total_ns: 3,
                mappings: 1,
            }),
            Reply::Stat(stat),
            Reply::RegisterBuffer(RegisterReply {
                handle: 8,
                ino: 0,
                buffer_len: 1 << 20,
                access: 3,
                devices: 4,
            }),
            Reply::OpenFile(OpenReply {
                handle: 9,
                ino: 12,
                access: ACCESS_READ,
            }),
            Reply::CloseFile,
        ];
        for reply in &all {
            let bytes = encode_reply(reply.kind() as u16, 9, Ok(reply));
            let (_, back) = decode_reply(&bytes, reply.kind()).expect("decode");
            let mut want = reply.clone();
            if let Reply::Stat(s) = &mut want {
                s.devices[0].name.truncate(STAT_NAME_LEN);
            }
            assert_eq!(back, Ok(want));
            let refused = encode_reply(reply.kind() as u16, 9, Err(libc::EBADF));
            assert_eq!(
                decode_reply(&refused, reply.kind()).expect("decode").1,
                Err(libc::EBADF)
            );
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_request_decodes_or_errs() {
        let bytes = encode_request(
            1,
            &Request::Hello {
                sq_entries: 64,
                workers: 2,
            },
        );
        for n in 0..bytes.len() {
            assert!(
                decode_request(&bytes[..n]).is_err(),
                "{n}-byte prefix accepted"
            );
        }
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let _ = decode_request(&b);
        }
    }
}

#[cfg(test)]
mod v2_tests {
    use super::*;

    #[test]
    fn new_requests_check_their_flags_and_reserved_fields() {
        let mut bytes = encode_request(1, &Request::RegisterBuffer { flags: 0 });
        bytes[HEADER_LEN] = 4;
        assert_eq!(
            decode_request(&bytes),
            Err(DecodeError::Flags {
                field: "register buffer flags",
                value: 4
            })
        );
        let mut bytes = encode_request(1, &Request::OpenFile);
        bytes[HEADER_LEN + 5] = 1;
        assert_eq!(
            decode_request(&bytes),
            Err(DecodeError::Reserved {
                field: "open file reserved"
            })
        );
        let mut bytes = encode_request(1, &Request::CloseFile { handle: 1 });
        bytes.push(0);
        let n = bytes.len() as u32;
        bytes[12..16].copy_from_slice(&n.to_le_bytes());
        assert_eq!(
            decode_request(&bytes),
            Err(DecodeError::BodySize {
                kind: Kind::CloseFile as u16,
                expected: 8,
                actual: 9
            })
        );
    }

    #[test]
    fn version_1_peers_are_refused_by_name() {
        let mut bytes = encode_request(1, &Request::OpenFile);
        bytes[4..6].copy_from_slice(&1u16.to_le_bytes());
        let e = decode_request(&bytes).expect_err("version 1");
        assert_eq!(e, DecodeError::BadVersion { version: 1 });
        assert_eq!(e.errno(), libc::EPROTONOSUPPORT);
    }

    #[test]
    fn an_open_reply_with_impossible_access_is_refused() {
        let reply = Reply::OpenFile(OpenReply {
            handle: 1,
            ino: 2,
            access: 8,
        });
        let bytes = encode_reply(Kind::OpenFile as u16, 1, Ok(&reply));
        assert_eq!(
            decode_reply(&bytes, Kind::OpenFile),
            Err(DecodeError::Flags {
                field: "open file access",
                value: 8
            })
        );
    }
}
