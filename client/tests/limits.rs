//! The control endpoint shared by several users: a user (uid 60001, through `setpriv`) runs
//! into each per-user limit and each call over a limit fails alone, while another user
//! (uid 60002) is served with exact data and sees only its own registrations in `stat`; a
//! 64 GiB sparse memfd is refused and the daemon's memory stays flat; a registered buffer's
//! owner cannot punch a hole in it; a client refuses a socket that is not the mount's.
//!
//! The test process is the daemon (mount and control server); the users are child processes
//! (this test binary run again as another uid).

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Mounted, Watchdog, as_user, assert_same, child_task, data, hold, ready, run_to_end,
    start_until_ready, task_parts,
};
use stripefs_client::proto::{self, Kind};
use stripefs_client::{Client, ClientBuffer, ClientError, ClientOptions, Errno, Op, Request, sys};
use stripefs_fs::control::{Limits, ServerOptions};
use stripefs_fs::mount::MountOptions;

const MIB: u64 = 1 << 20;
/// The user who runs into the limits.
const HOG: u32 = 60001;
/// Another user, who must be served meanwhile.
const OTHER: u32 = 60002;

/// The limits of these tests: small enough to reach in a few calls.
fn small_limits() -> Limits {
    Limits {
        registered_bytes: 8 * MIB,
        registrations: 3,
        connections: 3,
        requests: 16,
        bounce_bytes: 2 * MIB,
        workers: 2,
    }
}

fn mounted(limits: Limits) -> Mounted {
    let mount = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let server = ServerOptions {
        limits,
        ..ServerOptions::default()
    };
    Mounted::with_options(2, 64 * MIB, 64 << 10, &mount, server)
}

#[track_caller]
fn refused_with(result: Result<impl std::fmt::Debug, ClientError>, op: &str, errno: i32) {
    match result {
        Err(ClientError::Refused { op: o, errno: e }) if o == op && e == Errno(errno) => {}
        other => panic!("expected {op} refused with errno {errno}, got {other:?}"),
    }
}

/// Entry point of the child processes of this file (a no-op in a normal run).
#[test]
fn child_process_entry() {
    let Some(task) = child_task() else { return };
    match task_parts(&task).as_slice() {
        ["hog", path] => hog(Path::new(path)),
        ["other", path] => other_user(Path::new(path)),
        ["hostile-memory", path] => hostile_memory(Path::new(path)),
        ["plant", dir] => plant(Path::new(dir)),
        other => panic!("unknown child task {other:?}"),
    }
}

/// Runs into every limit (see [`small_limits`]), checks that each call over one fails
/// alone with its errno, then holds everything until stdin closes.
fn hog(path: &Path) {
    let file = File::open(path).expect("hog: open");
    let want = data(5, 4 * MIB as usize);
    let one_worker = ClientOptions {
        workers: 1,
        ..ClientOptions::default()
    };
    let connect = || Client::connect_with(path, one_worker);
    let socket = stripefs_client::discover(path).expect("hog: discover");
    // Connections: three (two of them idle), and a fourth is answered EAGAIN though a
    // worker is left.
    let c1 = connect().expect("hog: first connection");
    let idle: Vec<_> = (0..2)
        .map(|_| sys::connect(&socket).expect("hog: idle connection"))
        .collect();
    let fourth = connect();
    let text = fourth
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("connections"), "hog: {text}");
    refused_with(fourth, "hello", libc::EAGAIN);
    drop(idle);
    let own_connections = |n: u32| {
        common::eventually("the daemon closes our connections", || {
            c1.stat().is_ok_and(|s| s.connections == n)
        })
    };
    own_connections(1);
    // Worker threads: two, and a third ring is refused though a connection is left.
    let c2 = connect().expect("hog: second connection");
    refused_with(connect(), "hello", libc::EAGAIN);
    own_connections(2);
    // Requests in flight: 64 reads published at once, 16 taken, 48 refused.
    let b1 = ClientBuffer::new(4 * MIB).expect("hog: buffer");
    let h1 = c1.register(&file, &b1).expect("hog: register 4 MiB");
    let requests: Vec<Request> = (0..64u64)
        .map(|i| Request {
            handle: h1,
            op: Op::Read,
            file_offset: i * 4096,
            buffer_offset: i * 4096,
            len: 4096,
            tag: i,
        })
        .collect();
    assert_eq!(c1.submit(&requests).expect("hog: submit"), 64);
    let mut done = Vec::new();
    while done.len() < 64 {
        c1.wait(1, &mut done).expect("hog: wait");
    }
    let served: Vec<u64> = done
        .iter()
        .filter(|c| c.result == Ok(4096))
        .map(|c| c.tag)
        .collect();
    let over = done
        .iter()
        .filter(|c| c.result == Err(Errno(libc::EAGAIN)))
        .count();
    assert_eq!((served.len(), over), (16, 48), "hog: {done:?}");
    for tag in served {
        let mut got = vec![0u8; 4096];
        b1.read_at(tag * 4096, &mut got).expect("hog: copy");
        let at = (tag * 4096) as usize;
        assert_same("hog: a read within the limit", &got, &want[at..at + 4096]);
    }
    // Bounce memory: a 1 MiB unaligned read needs more than 2 MiB of it; a small one fits.
    refused_with(c1.read(h1, 1, 0, MIB), "read", libc::EAGAIN);
    assert_eq!(
        c1.read(h1, 3, 0, 1000).expect("hog: small unaligned read"),
        1000
    );
    let mut got = vec![0u8; 1000];
    b1.read_at(0, &mut got).expect("hog: copy");
    assert_same("hog: unaligned read", &got, &want[3..1003]);
    // Registered bytes: 4 + 2 MiB fit in 8, 4 more do not.
    let b2 = ClientBuffer::new(2 * MIB).expect("hog: buffer");
    c2.register(&file, &b2).expect("hog: register 2 MiB");
    let b3 = ClientBuffer::new(4 * MIB).expect("hog: buffer");
    refused_with(c2.register(&file, &b3), "register", libc::EDQUOT);
    // Registrations: a third (of a buffer already counted) fits, a fourth does not.
    c2.register(&file, &b2).expect("hog: third registration");
    refused_with(c1.register(&file, &b1), "register", libc::EDQUOT);
    // What is held still works.
    assert_eq!(c1.read(h1, 0, 0, MIB).expect("hog: read"), MIB);
    ready();
    hold();
}

/// Another user, while the hog holds all it may: served with exact data; `stat` shows it
/// its own connection and registration only.
fn other_user(path: &Path) {
    let file = File::open(path).expect("other: open");
    let want = data(5, 4 * MIB as usize);
    let client = Client::connect(path).expect("other: connect");
    let buffer = ClientBuffer::new(4 * MIB).expect("other: buffer");
    let handle = client.register(&file, &buffer).expect("other: register");
    assert_eq!(
        client.read(handle, 0, 0, 4 * MIB).expect("other: read"),
        4 * MIB
    );
    let mut got = vec![0u8; want.len()];
    buffer.read_at(0, &mut got).expect("other: copy");
    assert_same("other: read", &got, &want);
    // Unaligned reads bounce within this user's own allowance.
    assert_eq!(
        client.read(handle, 5, 0, 100_000).expect("other: read"),
        100_000
    );
    buffer.read_at(0, &mut got[..100_000]).expect("other: copy");
    assert_same("other: unaligned read", &got[..100_000], &want[5..100_005]);
    let stat = client.stat().expect("other: stat");
    assert_eq!(stat.connections, 1, "other: {stat:?}");
    assert_eq!(stat.registrations_total, 1, "other: {stat:?}");
    assert!(
        stat.registrations
            .iter()
            .all(|r| r.connection == client.connection() && r.pid == std::process::id()),
        "other: {stat:?}"
    );
}

#[test]
fn each_limit_fails_alone_and_another_user_is_served() {
    require_mount!();
    if common::require::skip(&[common::require::Requirement::Tool("setpriv")]) {
        return;
    }
    let _w = Watchdog::new("per-user limits", Duration::from_secs(180));
    let m = mounted(small_limits());
    let path = m.path("f");
    std::fs::write(&path, data(5, 4 * MIB as usize)).expect("write");
    let task = format!("hog:{}", path.display());
    let (mut hog, _out) = start_until_ready(as_user(HOG, &task));
    let all = m.server().stat();
    assert_eq!(all.connections, 2, "root sees every connection: {all:?}");
    assert_eq!(
        all.registrations_total, 3,
        "root sees every registration: {all:?}"
    );
    run_to_end(as_user(OTHER, &format!("other:{}", path.display())));
    drop(hog.stdin.take());
    assert!(hog.wait().expect("wait").success(), "the hog failed");
    m.wait_for_no_connections(Duration::from_secs(10));
    // Everything the hog held was given back: it may connect and register again.
    run_to_end(as_user(OTHER, &format!("other:{}", path.display())));
    m.close_and_fsck();
}

/// A sealed memfd of `len` bytes with nothing allocated.
fn sparse_memfd(len: u64) -> OwnedFd {
    // SAFETY: memfd_create with a NUL-terminated name.
    let raw = unsafe {
        libc::memfd_create(
            c"hostile".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate of our own memfd.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) };
    assert_eq!(rc, 0);
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // SAFETY: F_ADD_SEALS on our own memfd.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(rc, 0);
    fd
}

/// Registers `memfd` against `file` with a bare Register message; the errno of the refusal
/// (0 if it was accepted).
fn register_raw(socket: &Path, file: &File, memfd: &OwnedFd) -> i32 {
    let s = sys::connect(socket).expect("connect");
    let message = proto::encode_request(1, &proto::Request::Register { flags: 0 });
    sys::send(s.as_fd(), &message, &[file.as_fd(), memfd.as_fd()]).expect("send");
    let mut packet = vec![0u8; proto::MAX_MESSAGE];
    let received = sys::recv(s.as_fd(), &mut packet).expect("recv");
    match proto::decode_reply(&packet[..received.len], Kind::Register) {
        Ok((_, Ok(_))) => 0,
        Ok((_, Err(errno))) => errno,
        Err(e) => panic!("reply does not decode: {e}"),
    }
}

/// The descriptor of this process's (only) client buffer memfd.
fn client_buffer_memfd() -> OwnedFd {
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let entry = entry.expect("fd entry");
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target
            .to_string_lossy()
            .starts_with("/memfd:stripefs-client-buffer")
        {
            let fd: i32 = entry.file_name().to_string_lossy().parse().expect("fd");
            // SAFETY: dup of a descriptor this process holds open.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            assert!(dup >= 0);
            // SAFETY: F_DUPFD returned a new descriptor that nothing else owns.
            return unsafe { OwnedFd::from_raw_fd(dup) };
        }
    }
    panic!("no client buffer memfd in /proc/self/fd");
}

/// Hostile memory: a 64 GiB sparse memfd, a half-backed one, one whose seals are sealed
/// (each refused with its errno); then a good buffer whose owner cannot punch a hole in it
/// any more, and which is still served.
fn hostile_memory(path: &Path) {
    let file = File::open(path).expect("hostile: open");
    let socket = stripefs_client::discover(path).expect("hostile: discover");
    assert_eq!(
        register_raw(&socket, &file, &sparse_memfd(64 << 30)),
        libc::EFAULT
    );
    let half = sparse_memfd(8 * MIB);
    let bytes = vec![1u8; 4 * MIB as usize];
    // SAFETY: pwrite from a valid buffer into our own memfd.
    let n = unsafe { libc::pwrite(half.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, bytes.len() as isize);
    assert_eq!(register_raw(&socket, &file, &half), libc::EFAULT);
    let sealed = sparse_memfd(4096);
    // SAFETY: pwrite from a valid buffer into our own memfd.
    let n = unsafe { libc::pwrite(sealed.as_raw_fd(), bytes.as_ptr().cast(), 4096, 0) };
    assert_eq!(n, 4096);
    // SAFETY: F_ADD_SEALS on our own memfd.
    let rc = unsafe { libc::fcntl(sealed.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SEAL) };
    assert_eq!(rc, 0);
    assert_eq!(register_raw(&socket, &file, &sealed), libc::EPERM);
    // A good buffer: once registered, a hole punched in it is refused to its owner.
    let client = Client::connect(path).expect("hostile: connect");
    let buffer = ClientBuffer::new(MIB).expect("hostile: buffer");
    let handle = client.register(&file, &buffer).expect("hostile: register");
    let memfd = client_buffer_memfd();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on our own memfd.
    let rc = unsafe { libc::fallocate(memfd.as_raw_fd(), mode, 0, MIB as i64) };
    let err = std::io::Error::last_os_error();
    assert_eq!((rc, err.raw_os_error()), (-1, Some(libc::EPERM)));
    assert_eq!(client.read(handle, 0, 0, MIB).expect("hostile: read"), MIB);
    let mut got = vec![0u8; MIB as usize];
    buffer.read_at(0, &mut got).expect("hostile: copy");
    assert_same("hostile: read", &got, &data(6, MIB as usize));
}

/// Resident memory of this process (the daemon), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn hostile_memory_is_refused_and_the_daemon_allocates_nothing() {
    require_mount!();
    if common::require::skip(&[common::require::Requirement::Tool("setpriv")]) {
        return;
    }
    let _w = Watchdog::new("hostile memory", Duration::from_secs(120));
    // Registered bytes are not what stops these: the memory checks are.
    let m = mounted(Limits {
        registered_bytes: 1 << 40,
        ..Limits::default()
    });
    let path = m.path("f");
    std::fs::write(&path, data(6, MIB as usize)).expect("write");
    let before = rss_kib();
    run_to_end(as_user(HOG, &format!("hostile-memory:{}", path.display())));
    let after = rss_kib();
    println!("daemon VmRSS: {before} KiB before the hostile registrations, {after} KiB after");
    assert!(
        after < before + 32 * 1024,
        "the daemon's RSS grew from {before} KiB to {after} KiB"
    );
    // The hog has exited; its connection's end reaches the daemon a moment later.
    common::eventually("the hog's registrations are released", || {
        m.fs.registrations().is_empty()
    });
    m.close_and_fsck();
}

/// Plants a socket in `dir` (and a file naming it in `user.stripefs.control`), then reports
/// what the one client that connects sends.
fn plant(dir: &Path) {
    let socket = dir.join("planted.sock");
    let listener = sys::listen(&socket, 4).expect("plant: listen");
    let bait = dir.join("bait");
    std::fs::write(&bait, b"bait").expect("plant: bait");
    let name = std::ffi::CString::new("user.stripefs.control").expect("name");
    let at = std::ffi::CString::new(bait.to_str().expect("UTF-8")).expect("path");
    let value = socket.to_str().expect("UTF-8");
    // SAFETY: NUL-terminated strings and a valid value buffer, for the call.
    let rc = unsafe {
        libc::setxattr(
            at.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "plant: setxattr: {}",
        std::io::Error::last_os_error()
    );
    ready();
    hold();
    // Every connection made meanwhile waits in the backlog.
    while sys::poll(&[(listener.as_fd(), libc::POLLIN)], 0).expect("poll")[0] != 0 {
        let conn = sys::accept(listener.as_fd()).expect("plant: accept");
        let mut packet = vec![0u8; proto::MAX_MESSAGE];
        let received = sys::recv(conn.as_fd(), &mut packet).expect("plant: recv");
        println!(
            "RECEIVED {} bytes, {} descriptors",
            received.len,
            received.fds.len()
        );
    }
}

#[test]
fn a_client_refuses_a_socket_that_is_not_the_mounts() {
    require_mount!();
    if common::require::skip(&[common::require::Requirement::Tool("setpriv")]) {
        return;
    }
    let _w = Watchdog::new("planted socket", Duration::from_secs(120));
    let m = mounted(Limits::default());
    let path = m.path("f");
    std::fs::write(&path, data(7, 4096)).expect("write");
    let dir = tempfile::Builder::new()
        .prefix("stripefs-plant-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
    }
    let (mut planter, mut out) =
        start_until_ready(as_user(HOG, &format!("plant:{}", dir.path().display())));
    // A path off the mount whose attribute names the planted socket.
    let bait: PathBuf = dir.path().join("bait");
    match Client::connect(&bait) {
        Err(ClientError::Untrusted { why, .. }) => {
            assert!(why.contains("not on a FUSE mount"), "{why}")
        }
        other => panic!("expected the bait to be refused, got {:?}", other.err()),
    }
    // The planted socket offered as the mount's: served by another uid than the mount's.
    let planted = dir.path().join("planted.sock");
    match Client::connect_socket_for(&planted, &path, ClientOptions::default()) {
        Err(ClientError::Untrusted { why, .. }) => {
            assert!(why.contains(&format!("uid {HOG}")), "{why}")
        }
        other => panic!(
            "expected the planted socket to be refused, got {:?}",
            other.err()
        ),
    }
    drop(planter.stdin.take());
    let mut report = String::new();
    out.read_to_string(&mut report).expect("planter output");
    assert!(planter.wait().expect("wait").success(), "planter: {report}");
    // The bait was refused before connecting; the planted socket was connected to (to
    // read its peer's credentials) and given nothing.
    assert_eq!(
        report.matches("RECEIVED").count(),
        1,
        "connections to the planted socket: {report}"
    );
    assert!(
        report.contains("RECEIVED 0 bytes, 0 descriptors"),
        "the client sent something to the planted socket: {report}"
    );
    // The real socket is accepted.
    let client = Client::connect(&path).expect("the mount's own socket");
    drop(client);
    m.close_and_fsck();
}

#[test]
fn client_buffers_cannot_take_the_slots_kept_for_the_filesystem() {
    require_mount!();
    let _w = Watchdog::new("device slots", Duration::from_secs(180));
    let m = mounted(Limits::default());
    let path = m.path("f");
    let want = data(8, MIB as usize);
    std::fs::write(&path, &want).expect("write");
    let file = File::open(&path).expect("open");
    // Root is not limited per user: only the devices' slots stop it. Each registration
    // attaches the buffer to both devices, one slot on each.
    let client = Client::connect(&path).expect("connect");
    let buffer = ClientBuffer::new(64 << 10).expect("buffer");
    let mut handles = Vec::new();
    let refusal = loop {
        match client.register(&file, &buffer) {
            Ok(h) => handles.push(h),
            Err(e) => break e,
        }
        assert!(
            handles.len() <= 1024,
            "more registrations than device slots"
        );
    };
    assert_eq!(refusal.errno(), libc::ENOSPC, "{refusal}");
    assert!(refusal.to_string().contains("slot"), "{refusal}");
    assert!(
        (800..=1024 - 128).contains(&handles.len()),
        "{} registrations before the slots ran out",
        handles.len()
    );
    // The filesystem's own I/O still has its slots: reads, writes and commits through the
    // mount, from several threads at once.
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let m = &m;
            let want = &want;
            s.spawn(move || {
                let name = m.path(&format!("w{t}"));
                let bytes = data(9 + t, 300_000);
                std::fs::write(&name, &bytes).expect("write through the mount");
                File::open(&name).expect("open").sync_all().expect("fsync");
                assert_same("read back", &std::fs::read(&name).expect("read"), &bytes);
                assert_same("read", &std::fs::read(m.path("f")).expect("read"), want);
            });
        }
    });
    // A registered read on a registration made before still works, and slots given back
    // are usable again (beyond those the filesystem's bounce buffers took meanwhile).
    let h = handles[0];
    assert_eq!(
        client.read(h, 0, 0, 64 << 10).expect("registered read"),
        64 << 10
    );
    let mut got = vec![0u8; 64 << 10];
    buffer.read_at(0, &mut got).expect("copy");
    assert_same("registered read", &got, &want[..64 << 10]);
    for h in handles.drain(handles.len() - 64..) {
        client.unregister(h).expect("unregister");
    }
    handles.push(client.register(&file, &buffer).expect("register again"));
    drop(client);
    m.wait_for_no_connections(Duration::from_secs(10));
    m.close_and_fsck();
}

#[test]
fn a_buffer_released_by_the_daemon_can_be_registered_again() {
    require_mount!();
    let _w = Watchdog::new("register again", Duration::from_secs(120));
    let m = mounted(Limits::default());
    let path = m.path("f");
    let want = data(10, MIB as usize);
    std::fs::write(&path, &want).expect("write");
    let file = File::open(&path).expect("open");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    buffer.write_at(5, b"kept").expect("write");
    let read_all = |client: &Client| {
        let h = client.register(&file, &buffer).expect("register");
        let mut kept = [0u8; 4];
        buffer.read_at(5, &mut kept).expect("copy");
        assert_eq!(&kept, b"kept", "the contents move with the buffer");
        assert_eq!(client.read(h, 0, 0, MIB).expect("read"), MIB);
        let mut got = vec![0u8; MIB as usize];
        buffer.read_at(0, &mut got).expect("copy");
        assert_same("registered read", &got, &want);
        buffer.write_at(5, b"kept").expect("write");
        h
    };
    let first = Client::connect(&path).expect("connect");
    let h = read_all(&first);
    // Unregistered: the daemon has let the pages go, and sealed them; again on the same
    // connection, then on another one once the first is gone.
    first.unregister(h).expect("unregister");
    read_all(&first);
    drop(first);
    m.wait_for_no_connections(Duration::from_secs(10));
    let second = Client::connect(&path).expect("connect");
    read_all(&second);
    drop(second);
    m.wait_for_no_connections(Duration::from_secs(10));
    m.close_and_fsck();
}
