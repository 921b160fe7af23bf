//! Special files through the mount: FIFOs passing bytes between a writer and a reader, a
//! unix socket bound on the mount and a client talking to it, character and block device
//! nodes (`/dev/null`'s 1,3 opened as a device on a `dev` mount; major/minor in `stat`),
//! `readdir`'s `d_type` of every file type, and rename, link, unlink, chmod and chown of
//! them; all of it again after a remount, and `stripefs fsck` clean.
//!
//! Needs root and /dev/fuse; without them each test prints `skipped: <reason>` (and fails
//! instead when `STRIPEFS_REQUIRE_FUSE` is set).

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use common::mount::MountedFs as Fixture;
use common::mount::{assert_errno, contents, cpath, stripefs};

/// Unmounts; fsck must find the filesystem clean and count `special` special files.
fn finish(mut fx: Fixture, special: usize) {
    fx.unmount_clean();
    let mut args = vec!["fsck"];
    args.extend(fx.images.iter().map(|p| p.to_str().expect("UTF-8")));
    let out = stripefs(&args);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("{special} special files")),
        "fsck should count {special} special files:\n{report}"
    );
}

fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> std::io::Result<()> {
    let c = cpath(path);
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a NUL-terminated path that lives for the call.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn mkfifo(path: &Path, mode: u32) -> std::io::Result<()> {
    let c = cpath(path);
    // SAFETY: `c` is a NUL-terminated path that lives for the call.
    if unsafe { libc::mkfifo(c.as_ptr(), mode) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn lstat(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
}

/// `st_mode`'s type bits of `path`.
fn format_of(path: &Path) -> u32 {
    lstat(path).mode() & libc::S_IFMT
}

fn major_minor(path: &Path) -> (u32, u32) {
    let rdev = lstat(path).rdev();
    (libc::major(rdev), libc::minor(rdev))
}

/// Sends `data` from a writer thread through the FIFO at `path` to this thread.
fn pass_through_fifo(path: &Path, data: &[u8]) {
    let writer = {
        let path = path.to_path_buf();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open the FIFO for writing");
            f.write_all(&data).expect("write into the FIFO");
        })
    };
    let mut got = Vec::new();
    OpenOptions::new()
        .read(true)
        .open(path)
        .expect("open the FIFO for reading")
        .read_to_end(&mut got)
        .expect("read from the FIFO");
    writer.join().expect("writer thread");
    assert!(
        got == data,
        "the FIFO passed {} bytes, not the {} written",
        got.len(),
        data.len()
    );
}

#[test]
fn fifo_passes_bytes_between_a_writer_and_a_reader() {
    let Some(mut fx) = Fixture::new("fifo", &[], &[]) else {
        return;
    };
    let fifo = fx.path("pipe");
    mkfifo(&fifo, 0o640).expect("mkfifo on the mount");
    assert_eq!(format_of(&fifo), libc::S_IFIFO);
    assert_eq!(lstat(&fifo).mode() & 0o7777, 0o640);
    assert!(lstat(&fifo).file_type().is_fifo());
    assert_errno(
        "mkfifo over an existing name",
        mkfifo(&fifo, 0o600),
        libc::EEXIST,
    );
    let data = contents(11, 300_000);
    pass_through_fifo(&fifo, &data);
    // Nothing was stored: the kernel's pipe carried the bytes.
    assert_eq!((lstat(&fifo).len(), lstat(&fifo).blocks()), (0, 0));
    // truncate(2) of a FIFO is refused, as on ext4.
    let c = cpath(&fifo);
    // SAFETY: `c` is a NUL-terminated path that lives for the call.
    let rc = unsafe { libc::truncate(c.as_ptr(), 10) };
    let result = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    assert_errno("truncate of a FIFO", result, libc::EINVAL);
    fx.remount();
    assert_eq!(format_of(&fifo), libc::S_IFIFO);
    pass_through_fifo(&fifo, &contents(12, 70_000));
    finish(fx, 1);
}

#[test]
fn unix_socket_bound_on_the_mount_talks_to_a_client() {
    let Some(mut fx) = Fixture::new("socket", &[], &[]) else {
        return;
    };
    let path = fx.path("srv.sock");
    let listener = UnixListener::bind(&path).expect("bind() on the mount");
    assert_eq!(format_of(&path), libc::S_IFSOCK);
    assert!(lstat(&path).file_type().is_socket());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut ask = [0u8; 5];
        conn.read_exact(&mut ask).expect("server read");
        assert_eq!(&ask, b"ping!");
        conn.write_all(b"pong from the mount")
            .expect("server write");
    });
    let mut client = UnixStream::connect(&path).expect("connect to the socket on the mount");
    client.write_all(b"ping!").expect("client write");
    let mut answer = String::new();
    client.read_to_string(&mut answer).expect("client read");
    assert_eq!(answer, "pong from the mount");
    server.join().expect("server thread");
    // The listener is gone; the socket inode stays, like on ext4.
    assert_errno(
        "connect with no listener",
        UnixStream::connect(&path),
        libc::ECONNREFUSED,
    );
    fx.remount();
    assert_eq!(format_of(&path), libc::S_IFSOCK);
    assert_errno(
        "bind over an existing socket inode",
        UnixListener::bind(&path),
        libc::EADDRINUSE,
    );
    // A new socket under a new name, bound after the remount.
    let again = fx.path("again.sock");
    let listener = UnixListener::bind(&again).expect("bind after remount");
    let mut c = UnixStream::connect(&again).expect("connect after remount");
    let (mut s, _) = listener.accept().expect("accept after remount");
    c.write_all(b"x").expect("write");
    let mut one = [0u8; 1];
    s.read_exact(&mut one).expect("read");
    assert_eq!(&one, b"x");
    drop((c, s, listener));
    finish(fx, 2);
}

#[test]
fn device_nodes_keep_major_minor_and_open_as_devices_on_a_dev_mount() {
    let Some(mut fx) = Fixture::new("devices", &[], &["-o", "dev"]) else {
        return;
    };
    let null = fx.path("null");
    mknod(&null, libc::S_IFCHR | 0o666, 1, 3).expect("mknod c 1 3");
    assert_eq!(format_of(&null), libc::S_IFCHR);
    assert_eq!(major_minor(&null), (1, 3));
    assert!(lstat(&null).file_type().is_char_device());
    let blk = fx.path("blk");
    mknod(&blk, libc::S_IFBLK | 0o600, 259, 70_000).expect("mknod b 259 70000");
    assert_eq!(format_of(&blk), libc::S_IFBLK);
    assert_eq!(major_minor(&blk), (259, 70_000));
    assert!(lstat(&blk).file_type().is_block_device());
    let use_null = |path: &Path| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the node as /dev/null");
        f.write_all(&contents(3, 100_000))
            .expect("write to /dev/null");
        let mut got = Vec::new();
        f.read_to_end(&mut got).expect("read /dev/null");
        assert!(got.is_empty(), "/dev/null read {} bytes", got.len());
    };
    use_null(&null);
    fx.remount();
    assert_eq!(major_minor(&null), (1, 3));
    assert_eq!(major_minor(&blk), (259, 70_000));
    assert_eq!(
        (format_of(&null), format_of(&blk)),
        (libc::S_IFCHR, libc::S_IFBLK)
    );
    use_null(&null);
    // Still empty: the data went to the driver.
    assert_eq!(lstat(&null).len(), 0);
    finish(fx, 2);
}

#[test]
fn device_nodes_do_not_open_on_a_nodev_mount() {
    let Some(fx) = Fixture::new("nodev", &[], &[]) else {
        return;
    };
    let null = fx.path("null");
    mknod(&null, libc::S_IFCHR | 0o666, 1, 3).expect("mknod c 1 3 (nodev still creates)");
    assert_eq!(major_minor(&null), (1, 3));
    assert_errno(
        "open of a device node on a nodev mount",
        OpenOptions::new().write(true).open(&null),
        libc::EACCES,
    );
    finish(fx, 1);
}

/// The type `readdir` reports (`d_type`; std does not stat when the entry carries it).
fn dir_types(dir: &Path) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            let t = e.file_type().expect("d_type");
            let kind = if t.is_file() {
                "file"
            } else if t.is_dir() {
                "dir"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_fifo() {
                "fifo"
            } else if t.is_socket() {
                "socket"
            } else if t.is_char_device() {
                "char"
            } else if t.is_block_device() {
                "block"
            } else {
                "unknown"
            };
            (e.file_name().to_string_lossy().into_owned(), kind)
        })
        .collect();
    out.sort();
    out
}

/// `d_type` straight from getdents64, to be sure no stat is behind the answer.
fn raw_d_types(dir: &Path) -> Vec<(String, u8)> {
    let c = cpath(dir);
    let mut out = Vec::new();
    // SAFETY: `c` is a NUL-terminated path; the DIR stream is closed below, and every
    // dirent is read before the next readdir call.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir {}", dir.display());
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            if name != "." && name != ".." {
                out.push((name, (*e).d_type));
            }
        }
        libc::closedir(d);
    }
    out.sort();
    out
}

#[test]
fn every_file_type_in_readdir_and_namespace_operations() {
    let Some(mut fx) = Fixture::new("readdir types", &[], &[]) else {
        return;
    };
    let d = fx.path("d");
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::write(d.join("file"), b"data").expect("file");
    std::fs::create_dir(d.join("dir")).expect("dir");
    std::os::unix::fs::symlink("file", d.join("link")).expect("symlink");
    mkfifo(&d.join("fifo"), 0o644).expect("fifo");
    mknod(&d.join("sock"), libc::S_IFSOCK | 0o644, 0, 0).expect("mknod socket");
    mknod(&d.join("chr"), libc::S_IFCHR | 0o644, 4, 64).expect("mknod char");
    mknod(&d.join("blk"), libc::S_IFBLK | 0o644, 8, 16).expect("mknod block");
    let want = vec![
        ("blk".to_string(), "block"),
        ("chr".to_string(), "char"),
        ("dir".to_string(), "dir"),
        ("fifo".to_string(), "fifo"),
        ("file".to_string(), "file"),
        ("link".to_string(), "symlink"),
        ("sock".to_string(), "socket"),
    ];
    let raw_want = vec![
        ("blk".to_string(), libc::DT_BLK),
        ("chr".to_string(), libc::DT_CHR),
        ("dir".to_string(), libc::DT_DIR),
        ("fifo".to_string(), libc::DT_FIFO),
        ("file".to_string(), libc::DT_REG),
        ("link".to_string(), libc::DT_LNK),
        ("sock".to_string(), libc::DT_SOCK),
    ];
    assert_eq!(dir_types(&d), want);
    assert_eq!(raw_d_types(&d), raw_want);

    // chmod and chown work like on files.
    for name in ["fifo", "sock", "chr", "blk"] {
        let p = d.join(name);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::lchown(&p, Some(1234), Some(567)).expect("chown");
        let m = lstat(&p);
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o600, 1234, 567),
            "{name}"
        );
    }
    // link, rename over a file, unlink.
    std::fs::hard_link(d.join("fifo"), d.join("fifo2")).expect("link a FIFO");
    assert_eq!(lstat(&d.join("fifo")).nlink(), 2);
    std::fs::rename(d.join("chr"), d.join("file")).expect("rename a device over a file");
    assert_eq!(format_of(&d.join("file")), libc::S_IFCHR);
    assert_eq!(major_minor(&d.join("file")), (4, 64));
    std::fs::remove_file(d.join("sock")).expect("unlink a socket");
    std::fs::rename(d.join("blk"), fx.path("blk")).expect("rename across directories");
    std::fs::create_dir(d.join("into")).expect("mkdir");
    assert_errno(
        "rename a FIFO over a directory",
        std::fs::rename(d.join("fifo2"), d.join("into")),
        libc::EISDIR,
    );
    let after = |fx: &Fixture| {
        let d = fx.path("d");
        assert_eq!(
            dir_types(&d),
            vec![
                ("dir".to_string(), "dir"),
                ("fifo".to_string(), "fifo"),
                ("fifo2".to_string(), "fifo"),
                ("file".to_string(), "char"),
                ("into".to_string(), "dir"),
                ("link".to_string(), "symlink"),
            ]
        );
        assert_eq!(lstat(&d.join("fifo2")).ino(), lstat(&d.join("fifo")).ino());
        assert_eq!(lstat(&d.join("fifo")).nlink(), 2);
        let blk = fx.path("blk");
        assert_eq!(
            (format_of(&blk), major_minor(&blk)),
            (libc::S_IFBLK, (8, 16))
        );
        let m = lstat(&blk);
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1234, 567));
    };
    after(&fx);
    fx.remount();
    after(&fx);
    std::fs::remove_file(d.join("fifo")).expect("unlink one name of a FIFO");
    assert_eq!(lstat(&d.join("fifo2")).nlink(), 1);
    fx.remount();
    assert_eq!(format_of(&d.join("fifo2")), libc::S_IFIFO);
    // fifo2, file (a char device now) and blk.
    finish(fx, 3);
}
