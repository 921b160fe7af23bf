//! Hostile and mistaken clients: malformed control messages (a table, then a fuzz loop),
//! wrong descriptors, another connection's handle, an fd not on the mount, a read-only fd used
//! for a write, ring entries out of bounds, and a scribbled ring; the same for buffers and
//! files registered apart (their messages, and ring entries naming a file). Each gets its own
//! error; the daemon keeps serving everyone, and nothing crashes.

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Mounted, Watchdog, assert_same, data};
use stripefs_client::proto::{self, Kind, REPLY};
use stripefs_client::ring::{Entry, OP_READ, OP_WRITE, SQE_FILE, Sqe};
use stripefs_client::{
    Client, ClientBuffer, ClientError, Completion, FileHandle, Handle, Op, Request, sys,
};

const MIB: u64 = 1 << 20;

/// A connection speaking raw bytes.
struct Raw {
    fd: OwnedFd,
}

impl Raw {
    fn connect(socket: &Path) -> Raw {
        Raw {
            fd: sys::connect(socket).expect("connect"),
        }
    }

    /// Sends `bytes` with `fds`; returns the reply's (kind, seq, status), or `None` when the
    /// daemon closed the connection.
    fn ask(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Option<(u16, u32, i32)> {
        sys::send(self.fd.as_fd(), bytes, fds).ok()?;
        let mut buf = vec![0u8; proto::MAX_MESSAGE];
        let r = sys::recv(self.fd.as_fd(), &mut buf).ok()?;
        if r.eof {
            return None;
        }
        let reply = &buf[..r.len];
        let (header, body) = proto::decode_header(reply).expect("the daemon's reply decodes");
        let status = i32::from_le_bytes(body[..4].try_into().expect("status"));
        Some((header.kind, header.seq, status))
    }

    /// A Stat round trip works (the connection is alive and served).
    fn alive(&self) -> bool {
        let msg = proto::encode_request(77, &proto::Request::Stat);
        matches!(self.ask(&msg, &[]), Some((k, 77, 0)) if k == Kind::Stat as u16 | REPLY)
    }
}

fn header(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&proto::MAGIC.to_le_bytes());
    m.extend_from_slice(&proto::VERSION.to_le_bytes());
    m.extend_from_slice(&kind.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&((16 + body.len()) as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// Gives every page of a memfd's `len` bytes storage (the daemon refuses a buffer with
/// holes: it allocates nothing for a client).
fn back(fd: &OwnedFd, len: u64) {
    let page = vec![0u8; 4096];
    for at in (0..len).step_by(page.len()) {
        // SAFETY: pwrite from a live buffer of the length given into our own memfd.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                page.as_ptr().cast(),
                page.len(),
                at as libc::off_t,
            )
        };
        assert_eq!(n, page.len() as isize, "backing the memfd");
    }
}

fn memfd(len: u64, sealed: bool) -> OwnedFd {
    let name = c"hostile";
    // SAFETY: `name` is NUL-terminated; memfd_create touches no other memory.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own memfd.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) };
    assert_eq!(rc, 0);
    if sealed {
        // SAFETY: F_ADD_SEALS on our own memfd.
        let rc = unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            )
        };
        assert_eq!(rc, 0);
    }
    fd
}

#[test]
fn malformed_and_refused_control_messages_each_get_their_error() {
    require_mount!();
    let _w = Watchdog::new("malformed table", Duration::from_secs(120));
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    std::fs::write(m.path("f"), data(1, 100_000)).expect("write");
    std::fs::create_dir(m.path("dir")).expect("mkdir");
    let on_mount = File::open(m.path("f")).expect("open");
    let dir = File::open(m.path("dir")).expect("open dir");
    let o_path = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(m.path("f"))
        .expect("O_PATH open");
    let host_path = m.dir.path().join("host.txt");
    std::fs::write(&host_path, b"not on the mount").expect("host file");
    let host = File::open(&host_path).expect("open host file");
    let sealed = memfd(MIB, true);
    let unsealed = memfd(MIB, false);
    let huge = memfd(1 << 40, true);
    let socket = m.server().socket_path().to_path_buf();
    let raw = Raw::connect(&socket);
    assert!(raw.alive());

    let hello = |entries: u32, flags: u32| {
        let mut b = Vec::new();
        for v in [entries, 0, flags, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        header(Kind::Hello as u16, 5, &b)
    };
    let register = |flags: u32| {
        let mut b = flags.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        header(Kind::Register as u16, 5, &b)
    };
    let handle_msg = |kind: Kind, handle: u64| header(kind as u16, 5, &handle.to_le_bytes());
    let mut bad_magic = register(0);
    bad_magic[0] ^= 0xFF;
    let mut bad_version = register(0);
    bad_version[4] = 9;
    let mut bad_length = register(0);
    bad_length[12] = 99;
    let mut stat_reserved = header(Kind::Stat as u16, 5, &[0; 8]);
    stat_reserved[20] = 1;
    let udmabuf = stripefs_mapping::udmabuf::available();

    let (f, d, p, h) = (on_mount.as_fd(), dir.as_fd(), o_path.as_fd(), host.as_fd());
    let (s, u, big) = (sealed.as_fd(), unsealed.as_fd(), huge.as_fd());
    let cases: Vec<(&str, Vec<u8>, Vec<BorrowedFd<'_>>, i32)> = vec![
        ("three bytes", vec![1, 2, 3], vec![], libc::EBADMSG),
        ("bad magic", bad_magic, vec![], libc::EPROTO),
        ("bad version", bad_version, vec![], libc::EPROTONOSUPPORT),
        (
            "length disagrees with the packet",
            bad_length,
            vec![],
            libc::EBADMSG,
        ),
        (
            "unknown kind",
            header(0x77, 5, &[0; 8]),
            vec![],
            libc::EOPNOTSUPP,
        ),
        (
            "hello body too short",
            header(Kind::Hello as u16, 5, &[0; 4]),
            vec![],
            libc::EBADMSG,
        ),
        (
            "hello with unknown flags",
            hello(64, 1),
            vec![],
            libc::EINVAL,
        ),
        (
            "hello ring not a power of two",
            hello(3, 0),
            vec![],
            libc::EINVAL,
        ),
        ("hello ring too large", hello(8192, 0), vec![], libc::EINVAL),
        (
            "register with unknown flags",
            register(4),
            vec![f, s],
            libc::EINVAL,
        ),
        (
            "register without descriptors",
            register(0),
            vec![],
            libc::EINVAL,
        ),
        (
            "register with one descriptor",
            register(0),
            vec![f],
            libc::EINVAL,
        ),
        (
            "register with three descriptors",
            register(0),
            vec![f, s, s],
            libc::EINVAL,
        ),
        (
            "stat with a descriptor",
            header(Kind::Stat as u16, 5, &[0; 8]),
            vec![f],
            libc::EINVAL,
        ),
        (
            "stat with a reserved field set",
            stat_reserved,
            vec![],
            libc::EBADMSG,
        ),
        ("fd not on this mount", register(0), vec![h, s], libc::EXDEV),
        ("descriptors swapped", register(0), vec![s, f], libc::EXDEV),
        ("a directory", register(0), vec![d, s], libc::EISDIR),
        ("an O_PATH descriptor", register(0), vec![p, s], libc::EBADF),
        ("an unsealed memfd", register(0), vec![f, u], libc::EPERM),
        (
            "a regular file as the buffer",
            register(0),
            vec![f, h],
            libc::EINVAL,
        ),
        (
            "a buffer over the size limit",
            register(0),
            vec![f, big],
            libc::EFBIG,
        ),
        (
            "a dma-buf buffer",
            register(proto::REGISTER_DMABUF),
            vec![f, s],
            if udmabuf {
                libc::EOPNOTSUPP
            } else {
                libc::ENODEV
            },
        ),
        (
            "unregister of an unknown handle",
            handle_msg(Kind::Unregister, 12345),
            vec![],
            libc::EBADF,
        ),
        (
            "migrate of an unknown handle",
            handle_msg(Kind::Migrate, 12345),
            vec![s],
            libc::EBADF,
        ),
        (
            "oversized message",
            header(Kind::Stat as u16, 5, &vec![0; proto::MAX_MESSAGE]),
            vec![],
            libc::EMSGSIZE,
        ),
    ];
    for (name, bytes, fds, errno) in &cases {
        let reply = raw.ask(bytes, fds);
        let Some((_, seq, status)) = reply else {
            panic!("{name}: the daemon closed the connection");
        };
        assert_eq!(status, -errno, "{name}: status {status}, want -{errno}");
        if bytes.len() >= 16 {
            assert_eq!(seq, 5, "{name}: the reply echoes the sequence number");
        }
        assert!(raw.alive(), "{name}: connection no longer served");
    }
    // A second hello on one connection.
    let ok = raw.ask(&hello(8, 0), &[]).expect("hello");
    assert_eq!(ok.2, 0);
    assert_eq!(
        raw.ask(&hello(8, 0), &[]).expect("second hello").2,
        -libc::EISCONN
    );
    // A zero-length message is a goodbye: that connection closes, others are unaffected.
    let other = Raw::connect(&socket);
    assert_eq!(raw.ask(&[], &[]), None);
    assert!(other.alive());
    assert!(m.server().stat().refused >= cases.len() as u64);
}

/// xorshift64*: deterministic noise for the fuzz loop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn fuzzed_control_messages_never_stop_the_daemon() {
    require_mount!();
    let _w = Watchdog::new("fuzz", Duration::from_secs(300));
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    let want = data(2, 300_000);
    std::fs::write(m.path("f"), &want).expect("write");
    let file = File::open(m.path("f")).expect("open");
    let host_path = m.dir.path().join("host.txt");
    std::fs::write(&host_path, b"host").expect("host file");
    let host = File::open(&host_path).expect("open host");
    let sealed = memfd(64 << 10, true);
    let socket = m.server().socket_path().to_path_buf();
    let templates: Vec<Vec<u8>> = [
        proto::Request::Hello {
            sq_entries: 16,
            workers: 1,
        },
        proto::Request::Register { flags: 0 },
        proto::Request::Unregister { handle: 1 },
        proto::Request::Migrate { handle: 1 },
        proto::Request::Stat,
        proto::Request::RegisterBuffer { flags: 0 },
        proto::Request::OpenFile,
        proto::Request::CloseFile { handle: 1 },
    ]
    .iter()
    .map(|r| proto::encode_request(9, r))
    .collect();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut raw = Raw::connect(&socket);
    let mut replies = 0;
    for i in 0..3000 {
        let mut msg = templates[rng.below(templates.len() as u64) as usize].clone();
        match rng.below(5) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(msg.len() as u64) as usize;
                    msg[at] ^= 1 << rng.below(8);
                }
            }
            1 => msg.truncate(rng.below(msg.len() as u64) as usize),
            2 => msg.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            3 => {
                let len = rng.below(200) as usize;
                msg = (0..len).map(|_| rng.next() as u8).collect();
            }
            _ => {
                let at = 16 + rng.below((msg.len() - 16) as u64) as usize;
                msg[at] = rng.next() as u8;
            }
        }
        if msg.is_empty() {
            msg.push(0);
        }
        let pool = [file.as_fd(), host.as_fd(), sealed.as_fd()];
        let fds: Vec<BorrowedFd<'_>> = (0..rng.below(4))
            .map(|_| pool[rng.below(3) as usize])
            .collect();
        match raw.ask(&msg, &fds) {
            Some((kind, _, _)) => {
                assert!(kind & REPLY != 0, "message {i}: reply kind {kind:#x}");
                replies += 1;
            }
            None => raw = Raw::connect(&socket),
        }
        if i % 500 == 0 {
            assert!(
                Raw::connect(&socket).alive(),
                "message {i}: daemon stopped answering"
            );
        }
    }
    assert!(replies > 2900, "only {replies} replies");
    drop(raw);
    // A well-behaved client is served as if nothing happened.
    let client = Client::connect(&m.mnt).expect("connect");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    let handle = client.register(&file, &buffer).expect("register");
    assert_eq!(client.read(handle, 0, 0, MIB).expect("read"), 300_000);
    let mut got = vec![0u8; 300_000];
    buffer.read_at(0, &mut got).expect("copy");
    assert_same("read after the fuzz", &got, &want);
}

fn sqe(handle: Handle, op: u32, file_offset: u64, buffer_offset: u64, len: u64, tag: u64) -> Sqe {
    Sqe {
        handle: handle.raw(),
        op,
        flags: 0,
        file_offset,
        buffer_offset,
        len,
        tag,
    }
}

fn complete_all(client: &Client, sqes: &[Sqe]) -> Vec<Completion> {
    assert_eq!(client.submit_raw(sqes).expect("submit"), sqes.len());
    let mut done = Vec::new();
    while done.len() < sqes.len() {
        client
            .wait(sqes.len() - done.len(), &mut done)
            .expect("wait");
    }
    done.sort_by_key(|c| c.tag);
    done
}

#[test]
fn bad_requests_on_the_ring_fail_alone_and_handles_do_not_cross_connections() {
    require_mount!();
    let _w = Watchdog::new("ring checks", Duration::from_secs(120));
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    let want = data(3, 2 * MIB as usize);
    std::fs::write(m.path("f"), &want).expect("write");
    let read_only = File::open(m.path("f")).expect("open read-only");
    let write_only = OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .expect("open write-only");
    let a = Client::connect(&m.mnt).expect("client a");
    let b = Client::connect(&m.mnt).expect("client b");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    let ha = a.register(&read_only, &buffer).expect("register read-only");
    let hw = a
        .register(&write_only, &buffer)
        .expect("register write-only");
    let hb = b.register(&read_only, &buffer).expect("register on b");
    let done = complete_all(
        &a,
        &[
            sqe(ha, OP_READ, 0, 0, 4096, 0),           // fine
            sqe(ha, OP_WRITE, 0, 0, 4096, 1),          // read-only fd used for a write
            sqe(hw, OP_READ, 0, 0, 4096, 2),           // write-only fd used for a read
            sqe(hb, OP_READ, 0, 0, 4096, 3),           // b's handle on a's connection
            sqe(ha, OP_READ, 0, MIB - 100, 4096, 4),   // past the end of the buffer
            sqe(ha, OP_READ, 0, u64::MAX - 10, 20, 5), // buffer range overflows
            sqe(ha, OP_READ, u64::MAX - 10, 0, 20, 6), // file range overflows
            sqe(ha, 9, 0, 0, 4096, 7),                 // unknown op
            Sqe {
                flags: 1,
                ..sqe(ha, OP_READ, 0, 0, 4096, 8) // unknown flags
            },
            sqe(Handle::from_raw(0), OP_READ, 0, 0, 4096, 9),
            sqe(ha, OP_READ, 0, 0, 0, 10), // zero length: nothing to do
            sqe(ha, OP_READ, 0, 4096, MIB - 4096, 11), // fine, to the last byte
        ],
    );
    let results: Vec<_> = done.iter().map(|c| c.result.map_err(|e| e.0)).collect();
    assert_eq!(
        results,
        vec![
            Ok(4096),
            Err(libc::EBADF),
            Err(libc::EBADF),
            Err(libc::EBADF),
            Err(libc::EFAULT),
            Err(libc::EFAULT),
            Err(libc::EINVAL),
            Err(libc::EINVAL),
            Err(libc::EINVAL),
            Err(libc::EBADF),
            Ok(0),
            Ok(MIB - 4096),
        ]
    );
    // The same through the blocking API and the other control requests.
    let e = a
        .write(ha, 0, 0, 4096)
        .expect_err("write through a read-only fd");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    let e = b.read(ha, 0, 0, 4096).expect_err("a's handle on b");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    let e = b.unregister(ha).expect_err("unregister a's handle on b");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    let e = b.migrate(ha).expect_err("migrate a's handle on b");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    let tagged = b.submit(&[Request {
        handle: hb,
        op: Op::Read,
        file_offset: 0,
        buffer_offset: 0,
        len: 1,
        tag: 1 << 63,
    }]);
    assert!(
        matches!(tagged, Err(ClientError::Invalid { .. })),
        "{tagged:?}"
    );
    // An fd not on the mount.
    let host_path = m.dir.path().join("host.bin");
    std::fs::write(&host_path, b"x").expect("host file");
    let e = a
        .register(&File::open(&host_path).expect("open"), &buffer)
        .expect_err("host file");
    assert_eq!(e.errno(), libc::EXDEV, "{e}");
    // Both clients still work, and the bytes are right.
    assert_eq!(a.read(ha, 0, 0, MIB).expect("read a"), MIB);
    assert_eq!(b.read(hb, MIB, 0, MIB).expect("read b"), MIB);
    let mut got = vec![0u8; MIB as usize];
    buffer.read_at(0, &mut got).expect("copy");
    assert_same("b's read", &got, &want[MIB as usize..]);
}

#[test]
fn a_scribbled_ring_closes_only_that_connection() {
    require_mount!();
    let _w = Watchdog::new("scribbled ring", Duration::from_secs(120));
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    std::fs::write(m.path("f"), data(4, MIB as usize)).expect("write");
    let file = File::open(m.path("f")).expect("open");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    let good = Client::connect(&m.mnt).expect("good client");
    let hg = good.register(&file, &buffer).expect("register");
    for what in ["sq_tail", "cq_head"] {
        let bad = Client::connect(&m.mnt).expect("bad client");
        let hb = bad.register(&file, &buffer).expect("register");
        assert_eq!(bad.read(hb, 0, 0, 4096).expect("read"), 4096);
        let ring = bad.ring();
        match what {
            "sq_tail" => {
                let head = ring.sq_head().load(std::sync::atomic::Ordering::Acquire);
                ring.sq_tail().store(
                    head.wrapping_add(100_000),
                    std::sync::atomic::Ordering::Release,
                );
                bad.kick();
            }
            _ => {
                ring.cq_head()
                    .store(0x8000_0000, std::sync::atomic::Ordering::Release);
                let _ = bad.submit(&[Request {
                    handle: hb,
                    op: Op::Read,
                    file_offset: 0,
                    buffer_offset: 0,
                    len: 4096,
                    tag: 1,
                }]);
                bad.kick();
            }
        }
        // The daemon hangs up on the scribbler: its next control request finds it gone.
        let start = std::time::Instant::now();
        loop {
            match bad.stat() {
                Err(ClientError::Disconnected) => break,
                Err(e) if e.errno() == libc::ENOTCONN || e.errno() == libc::ECONNRESET => break,
                _ if start.elapsed() > Duration::from_secs(10) => {
                    panic!("{what}: the daemon did not close the scribbler's connection")
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        drop(bad);
        assert_eq!(
            good.read(hg, 0, 0, MIB).expect("good client still served"),
            MIB
        );
    }
    good.unregister(hg).expect("unregister");
    common::eventually("the scribblers' registrations are released", || {
        m.fs.registrations().is_empty()
    });
}

/// Raw control messages of buffers and files registered apart, each with its error.
#[test]
fn malformed_buffer_and_file_messages_each_get_their_error() {
    require_mount!();
    let _w = Watchdog::new("buffer and file messages", Duration::from_secs(120));
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    std::fs::write(m.path("f"), data(1, 100_000)).expect("write");
    std::fs::create_dir(m.path("dir")).expect("mkdir");
    let on_mount = File::open(m.path("f")).expect("open");
    let dir = File::open(m.path("dir")).expect("open dir");
    let o_path = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(m.path("f"))
        .expect("O_PATH open");
    let host_path = m.dir.path().join("host.txt");
    std::fs::write(&host_path, b"not on the mount").expect("host file");
    let host = File::open(&host_path).expect("open host file");
    let (sealed, unsealed, huge) = (memfd(MIB, true), memfd(MIB, false), memfd(1 << 40, true));
    back(&sealed, MIB);
    let raw = Raw::connect(m.server().socket_path());
    let flags_msg = |kind: Kind, flags: u32, reserved: u32| {
        let mut b = flags.to_le_bytes().to_vec();
        b.extend_from_slice(&reserved.to_le_bytes());
        header(kind as u16, 5, &b)
    };
    let buffer = |flags| flags_msg(Kind::RegisterBuffer, flags, 0);
    let open = || flags_msg(Kind::OpenFile, 0, 0);
    let (f, d, p, h) = (on_mount.as_fd(), dir.as_fd(), o_path.as_fd(), host.as_fd());
    let (s, u, big) = (sealed.as_fd(), unsealed.as_fd(), huge.as_fd());
    let cases: Vec<(&str, Vec<u8>, Vec<BorrowedFd<'_>>, i32)> = vec![
        (
            "buffer with unknown flags",
            buffer(4),
            vec![s],
            libc::EINVAL,
        ),
        (
            "buffer with a reserved field set",
            flags_msg(Kind::RegisterBuffer, 0, 1),
            vec![s],
            libc::EBADMSG,
        ),
        (
            "buffer without a descriptor",
            buffer(0),
            vec![],
            libc::EINVAL,
        ),
        (
            "buffer with two descriptors",
            buffer(0),
            vec![s, s],
            libc::EINVAL,
        ),
        ("buffer unsealed", buffer(0), vec![u], libc::EPERM),
        ("buffer a regular file", buffer(0), vec![h], libc::EINVAL),
        (
            "buffer a file on the mount",
            buffer(0),
            vec![f],
            libc::EINVAL,
        ),
        (
            "buffer over the size limit",
            buffer(0),
            vec![big],
            libc::EFBIG,
        ),
        (
            "buffer body too short",
            header(Kind::RegisterBuffer as u16, 5, &[0; 4]),
            vec![s],
            libc::EBADMSG,
        ),
        ("open without a descriptor", open(), vec![], libc::EINVAL),
        (
            "open with two descriptors",
            open(),
            vec![f, f],
            libc::EINVAL,
        ),
        (
            "open with flags",
            flags_msg(Kind::OpenFile, 1, 0),
            vec![f],
            libc::EBADMSG,
        ),
        ("open a file not on the mount", open(), vec![h], libc::EXDEV),
        ("open a memfd", open(), vec![s], libc::EXDEV),
        ("open a directory", open(), vec![d], libc::EISDIR),
        ("open an O_PATH descriptor", open(), vec![p], libc::EBADF),
        (
            "close an unknown file handle",
            header(Kind::CloseFile as u16, 5, &12345u64.to_le_bytes()),
            vec![],
            libc::EBADF,
        ),
        (
            "close with a descriptor",
            header(Kind::CloseFile as u16, 5, &1u64.to_le_bytes()),
            vec![f],
            libc::EINVAL,
        ),
        (
            "close body too long",
            header(Kind::CloseFile as u16, 5, &[0; 16]),
            vec![],
            libc::EBADMSG,
        ),
    ];
    for (name, bytes, fds, errno) in &cases {
        let Some((_, seq, status)) = raw.ask(bytes, fds) else {
            panic!("{name}: the daemon closed the connection");
        };
        assert_eq!(status, -errno, "{name}: status {status}, want -{errno}");
        assert_eq!(seq, 5, "{name}: the reply echoes the sequence number");
        assert!(raw.alive(), "{name}: connection no longer served");
    }
    // The well-formed ones work on the same connection.
    let ok = raw.ask(&open(), &[f]).expect("open");
    assert_eq!(ok.2, 0, "open of a file on the mount");
    let ok = raw.ask(&buffer(0), &[s]).expect("register buffer");
    assert_eq!(ok.2, 0, "register a sealed memfd");
    assert!(m.fs.registrations().len() == 1);
}

/// An entry naming a file and a buffer (flag 2, the file handle at byte 48).
fn file_sqe(buffer: Handle, file: u64, op: u32, file_offset: u64, len: u64, tag: u64) -> Entry {
    Entry {
        sqe: Sqe {
            flags: SQE_FILE,
            ..sqe(buffer, op, file_offset, 0, len, tag)
        },
        file,
        reserved: 0,
    }
}

#[test]
fn bad_file_requests_on_the_ring_fail_alone_and_fuzzed_ones_never_stop_the_daemon() {
    require_mount!();
    let _w = Watchdog::new("file requests", Duration::from_secs(180));
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    let want = data(3, 2 * MIB as usize);
    std::fs::write(m.path("f"), &want).expect("write");
    let a = Client::connect(&m.mnt).expect("client a");
    let b = Client::connect(&m.mnt).expect("client b");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    let read_only = File::open(m.path("f")).expect("open");
    let ba = a.register_buffer(&buffer).expect("register buffer");
    let fa = a.open(&read_only).expect("open").raw();
    let ra = a
        .register(&read_only, &buffer)
        .expect("registration of the file");
    let fb = b.open(&read_only).expect("open on b").raw();
    let entries = [
        file_sqe(ba, fa, OP_READ, 0, 4096, 0),                   // fine
        file_sqe(ba, fa, OP_WRITE, 0, 4096, 1),                  // read-only file written
        file_sqe(ba, fb, OP_READ, 0, 4096, 2),                   // b's file handle on a
        file_sqe(ba, 0, OP_READ, 0, 4096, 3),                    // no file handle
        file_sqe(Handle::from_raw(fa), fa, OP_READ, 0, 4096, 4), // a file handle as the buffer
        file_sqe(ba, ba.raw(), OP_READ, 0, 4096, 5),             // a buffer handle as the file
        Entry {
            reserved: 1,
            ..file_sqe(ba, fa, OP_READ, 0, 4096, 6) // reserved field set
        },
        Entry {
            file: fa,
            ..Entry::from(sqe(ra, OP_READ, 0, 0, 4096, 7)) // a file without the flag
        },
        Entry::from(sqe(ba, OP_READ, 0, 0, 4096, 8)), // a buffer without a file
        Entry {
            sqe: Sqe {
                flags: SQE_FILE | 1,
                ..sqe(ba, OP_READ, 0, 0, 4096, 9) // unknown flag beside it
            },
            file: fa,
            reserved: 0,
        },
        file_sqe(ba, fa, OP_READ, 0, MIB + 1, 10), // past the end of the buffer
        file_sqe(ba, fa, OP_READ, u64::MAX - 10, 20, 11), // file range overflows
        file_sqe(ra, fa, OP_READ, 0, 4096, 12),    // the file's own registration: fine
        file_sqe(ba, fa, OP_READ, MIB, MIB, 13),   // fine, to the last byte
    ];
    assert_eq!(
        a.submit_raw_entries(&entries).expect("submit"),
        entries.len()
    );
    let mut done: Vec<Completion> = Vec::new();
    while done.len() < entries.len() {
        a.wait(entries.len() - done.len(), &mut done).expect("wait");
    }
    done.sort_by_key(|c| c.tag);
    let results: Vec<_> = done.iter().map(|c| c.result.map_err(|e| e.0)).collect();
    assert_eq!(
        results,
        vec![
            Ok(4096),
            Err(libc::EBADF),
            Err(libc::EBADF),
            Err(libc::EBADF),
            Err(libc::EBADF),
            Err(libc::EBADF),
            Err(libc::EINVAL),
            Err(libc::EINVAL),
            Err(libc::EINVAL),
            Err(libc::EINVAL),
            Err(libc::EFAULT),
            Err(libc::EINVAL),
            Ok(4096),
            Ok(MIB),
        ]
    );
    // Fuzz: random bits in valid entries; each completes (with a result or an errno).
    let mut rng = Rng(0xF11E_5EED_0000_0007);
    let template = file_sqe(ba, fa, OP_READ, 0, 4096, 0);
    for round in 0..20 {
        let batch: Vec<Entry> = (0..32u64)
            .map(|i| {
                let mut bytes = template.to_bytes();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
                let mut e = Entry::from_bytes(&bytes);
                e.sqe.tag = i;
                e
            })
            .collect();
        assert_eq!(a.submit_raw_entries(&batch).expect("submit"), batch.len());
        let mut done = Vec::new();
        while done.len() < batch.len() {
            a.wait(batch.len() - done.len(), &mut done)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
    // Still served, bytes right.
    assert_eq!(
        a.read_file(FileHandle::from_raw(fa), ba, MIB, 0, MIB)
            .expect("read"),
        MIB
    );
    let mut got = vec![0u8; MIB as usize];
    buffer.read_at(0, &mut got).expect("copy");
    assert_same("after the fuzz", &got, &want[MIB as usize..]);
}
