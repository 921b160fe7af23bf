//! POSIX behaviour through the mount, with ordinary system calls and tools: rename (over an
//! existing file, flags), unlink of an open file, truncate down and up, sparse files, a large
//! directory, symlinks, hard links, extended attributes and the layout attribute, names too
//! long, permissions checked by the kernel, mmap and exec. Each test mounts its own
//! filesystem on four file-backed devices, and most check their result again after a
//! remount.
//!
//! Needs root and /dev/fuse; without them each test prints `skipped: <reason>` (and fails
//! instead when `STRIPEFS_REQUIRE_FUSE` is set).

mod common;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::mount::{
    assert_errno, contents, cpath, free_space, getxattr, listxattr, removexattr, setxattr,
};
use common::{MIB, assert_bytes};

use common::mount::MountedFs as Fixture;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both paths are NUL-terminated strings that live for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn rename_replaces_moves_and_honours_flags() {
    let Some(mut fx) = Fixture::new("rename", &[], &[]) else {
        return;
    };
    let (a, b, c) = (fx.path("a"), fx.path("b"), fx.path("c"));
    write(&a, &contents(1, 300_000));
    write(&b, &contents(2, 5000));
    write(&c, b"c");

    // Over an existing file: the target's old contents go, the source name goes.
    let open_a = File::open(&a).expect("open a");
    std::fs::rename(&a, &b).expect("rename a over b");
    assert_errno("stat a after rename", std::fs::metadata(&a), libc::ENOENT);
    assert_bytes("b after rename over it", &read(&b), &contents(1, 300_000));
    let mut via_fd = Vec::new();
    (&open_a)
        .read_to_end(&mut via_fd)
        .expect("read the renamed file through its fd");
    assert_bytes("open fd follows the rename", &via_fd, &contents(1, 300_000));
    drop(open_a);

    // Flags.
    assert_errno(
        "RENAME_NOREPLACE onto c",
        renameat2(&b, &c, libc::RENAME_NOREPLACE),
        libc::EEXIST,
    );
    match renameat2(&b, &c, libc::RENAME_EXCHANGE) {
        Ok(()) => {
            assert_eq!(read(&b), b"c", "exchanged");
            std::fs::rename(&c, fx.path("tmp")).expect("swap back 1");
            std::fs::rename(&b, &c).expect("swap back 2");
            std::fs::rename(fx.path("tmp"), &b).expect("swap back 3");
        }
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP),
            "RENAME_EXCHANGE: {e}"
        ),
    }
    assert_bytes(
        "b untouched by the flagged renames",
        &read(&b),
        &contents(1, 300_000),
    );
    assert_eq!(read(&c), b"c");
    renameat2(&c, &fx.path("c2"), libc::RENAME_NOREPLACE).expect("NOREPLACE to a free name");

    // Directories.
    std::fs::create_dir_all(fx.path("d1/sub")).expect("mkdir d1/sub");
    write(&fx.path("d1/sub/f"), b"inside");
    std::fs::rename(fx.path("d1"), fx.path("d2")).expect("rename a directory");
    assert_eq!(read(&fx.path("d2/sub/f")), b"inside");
    assert_errno(
        "dir into its own subdir",
        std::fs::rename(fx.path("d2"), fx.path("d2/sub/x")),
        libc::EINVAL,
    );
    std::fs::create_dir(fx.path("empty")).expect("mkdir empty");
    assert_errno(
        "file over a directory",
        std::fs::rename(&b, fx.path("empty")),
        libc::EISDIR,
    );
    assert_errno(
        "directory over a file",
        std::fs::rename(fx.path("empty"), &b),
        libc::ENOTDIR,
    );
    std::fs::create_dir(fx.path("full")).expect("mkdir full");
    write(&fx.path("full/x"), b"x");
    assert_errno(
        "dir over a non-empty dir",
        std::fs::rename(fx.path("d2"), fx.path("full")),
        libc::ENOTEMPTY,
    );
    std::fs::rename(fx.path("d2"), fx.path("empty")).expect("dir over an empty dir");
    std::fs::rename(&b, fx.path("full/b")).expect("across directories");

    fx.remount();
    let names: BTreeSet<_> = std::fs::read_dir(&fx.mnt)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
        .collect();
    assert_eq!(names, ["c2", "empty", "full"].map(String::from).into());
    assert_bytes(
        "full/b after remount",
        &read(&fx.path("full/b")),
        &contents(1, 300_000),
    );
    assert_eq!(read(&fx.path("empty/sub/f")), b"inside");
    fx.finish();
}

#[test]
fn unlinked_open_file_lives_until_closed() {
    let Some(mut fx) = Fixture::new("unlink_open", &[], &[]) else {
        return;
    };
    let path = fx.path("doomed");
    let data = contents(7, 6 * MIB as usize + 123);
    write(&path, &data);
    let (free_before, _) = free_space(&fx.mnt);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    std::fs::remove_file(&path).expect("unlink while open");
    assert_errno("stat after unlink", std::fs::metadata(&path), libc::ENOENT);
    assert_eq!(f.metadata().expect("fstat").nlink(), 0);
    let mut got = Vec::new();
    f.read_to_end(&mut got).expect("read the unlinked file");
    assert_bytes("unlinked file through its fd", &got, &data);
    f.write_all(b"more").expect("write to the unlinked file");
    f.seek(SeekFrom::Start(data.len() as u64)).expect("seek");
    let mut tail = [0u8; 4];
    f.read_exact(&mut tail).expect("read back");
    assert_eq!(&tail, b"more");
    // A new file may take the name meanwhile.
    write(&path, b"new");
    assert!(
        free_space(&fx.mnt).0 <= free_before,
        "the unlinked file's space is still held while it is open"
    );
    drop(f);
    // The kernel sends RELEASE after close(2) has returned: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (free_after, frsize) = loop {
        let (free, frsize) = free_space(&fx.mnt);
        if free.saturating_sub(free_before) * frsize >= 6 * MIB
            || std::time::Instant::now() > deadline
        {
            break (free, frsize);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        free_after.saturating_sub(free_before) * frsize >= 6 * MIB,
        "closing the last handle frees the data ({} -> {} blocks)",
        free_before,
        free_after
    );
    fx.remount();
    assert_eq!(read(&path), b"new");
    fx.finish();
}

#[test]
fn truncate_down_then_up_reads_zeros() {
    let Some(mut fx) = Fixture::new("truncate", &["--stripe-unit", "64K"], &[]) else {
        return;
    };
    let path = fx.path("t");
    let data = contents(3, 3 * MIB as usize + 4321);
    write(&path, &data);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    for &(down, up) in &[
        (1_000_000u64, 2_500_000u64),
        (65_536, 200_000),
        (4095, 4097),
        (0, 70_000),
    ] {
        f.set_len(down).expect("truncate down");
        assert_eq!(f.metadata().expect("fstat").len(), down);
        f.set_len(up).expect("truncate up");
        let mut got = vec![0u8; up as usize];
        f.read_exact_at(&mut got, 0).expect("read after truncate");
        let keep = down.min(data.len() as u64) as usize;
        assert_bytes("kept head", &got[..keep], &data[..keep]);
        assert!(
            got[keep..].iter().all(|&b| b == 0),
            "bytes {keep}..{up} after truncate {down} -> {up} are not all zero"
        );
        f.write_all_at(&data[..keep], 0).expect("restore the head");
    }
    // Truncate with the `truncate` tool, and O_TRUNC.
    let status = Command::new("truncate")
        .args(["-s", "10"])
        .arg(&path)
        .status()
        .expect("truncate");
    assert!(status.success());
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 10);
    drop(f);
    let g = fx.path("g");
    write(&g, &contents(4, 500_000));
    File::create(&g).expect("O_TRUNC");
    assert_eq!(std::fs::metadata(&g).expect("stat").len(), 0);
    // Grow by writing past the end: the gap reads as zeros.
    let h = fx.path("h");
    write(&h, b"head");
    OpenOptions::new()
        .write(true)
        .open(&h)
        .expect("open h")
        .write_all_at(b"tail", 300_000)
        .expect("write past the end");
    let got = read(&h);
    assert_eq!(got.len(), 300_004);
    assert_eq!(&got[..4], b"head");
    assert!(got[4..300_000].iter().all(|&b| b == 0), "gap not zero");

    fx.remount();
    assert_eq!(read(&path), [0u8; 10], "the last truncation left zeros");
    assert_eq!(read(&g).len(), 0);
    assert_eq!(read(&h), got);
    fx.finish();
}

#[test]
fn sparse_files_read_zeros_and_take_no_space() {
    let Some(mut fx) = Fixture::new("sparse", &[], &[]) else {
        return;
    };
    let path = fx.path("sparse");
    let far = (1u64 << 30) + 12_345;
    {
        let f = File::create(&path).expect("create");
        f.write_all_at(b"start", 0).expect("write start");
        f.write_all_at(b"end", far).expect("write far");
    }
    let check = |when: &str| {
        let m = std::fs::metadata(&path).expect("stat");
        assert_eq!(m.len(), far + 3, "{when}: size");
        assert!(
            m.blocks() * 512 < 4 * MIB,
            "{when}: {} blocks stored for a sparse file",
            m.blocks()
        );
        let f = File::open(&path).expect("open");
        for at in [5u64, 4096, 1 << 20, 300 << 20, (1 << 30) - 7, far - 4096] {
            let mut buf = vec![0xAAu8; 65_536.min((far - at) as usize)];
            f.read_exact_at(&mut buf, at).expect("read the hole");
            assert!(buf.iter().all(|&b| b == 0), "{when}: hole at {at} not zero");
        }
        let mut end = [0u8; 3];
        f.read_exact_at(&mut end, far).expect("read the end");
        assert_eq!(&end, b"end");
        let mut start = [0u8; 5];
        f.read_exact_at(&mut start, 0).expect("read the start");
        assert_eq!(&start, b"start");
        let mut past = [0u8; 16];
        assert_eq!(f.read_at(&mut past, far + 3).expect("read past the end"), 0);
    };
    check("mounted");
    fx.remount();
    check("after remount");
    fx.finish();
}

#[test]
fn large_directory_lists_and_removes_every_entry() {
    let Some(mut fx) = Fixture::new("large_dir", &[], &[]) else {
        return;
    };
    const N: usize = 3000;
    let dir = fx.path("big");
    std::fs::create_dir(&dir).expect("mkdir");
    let mut want = BTreeSet::new();
    for i in 0..N {
        let name = format!("entry-{i:05}-{}", "x".repeat(i % 40));
        File::create(dir.join(&name)).expect("create");
        want.insert(name);
    }
    let list = |what: &str| {
        let got: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
            .collect();
        assert_eq!(got.len(), N, "{what}: entries listed");
        assert!(got == want, "{what}: names differ");
    };
    list("mounted");
    let ls = Command::new("ls").arg("-f").arg(&dir).output().expect("ls");
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout).lines().count(),
        N + 2,
        "ls -f with . and .."
    );
    fx.remount();
    list("after remount");
    assert_eq!(std::fs::metadata(&dir).expect("stat").nlink(), 2);
    // remove_dir_all unlinks entries while it reads the directory.
    std::fs::remove_dir_all(&dir).expect("rm -r");
    assert_errno("stat removed dir", std::fs::metadata(&dir), libc::ENOENT);
    fx.remount();
    assert_eq!(std::fs::read_dir(&fx.mnt).expect("ls /").count(), 0);
    fx.finish();
}

#[test]
fn symlinks_and_hard_links() {
    let Some(mut fx) = Fixture::new("links", &[], &[]) else {
        return;
    };
    let target = fx.path("target");
    write(&target, &contents(5, 70_000));
    std::os::unix::fs::symlink("target", fx.path("rel")).expect("symlink");
    std::os::unix::fs::symlink(&target, fx.path("abs")).expect("symlink");
    std::os::unix::fs::symlink("nowhere", fx.path("dangling")).expect("symlink");
    std::fs::create_dir(fx.path("dir")).expect("mkdir");
    std::os::unix::fs::symlink("dir", fx.path("dirlink")).expect("symlink to dir");
    assert_errno(
        "symlink over existing",
        std::os::unix::fs::symlink("x", fx.path("rel")),
        libc::EEXIST,
    );

    std::fs::hard_link(&target, fx.path("hard")).expect("link");
    std::fs::create_dir(fx.path("other")).expect("mkdir");
    std::fs::hard_link(&target, fx.path("other/hard2")).expect("link in another dir");
    assert_errno(
        "hard link to a directory",
        std::fs::hard_link(fx.path("dir"), fx.path("dirhard")),
        libc::EPERM,
    );
    assert_errno(
        "hard link over existing",
        std::fs::hard_link(&target, fx.path("rel")),
        libc::EEXIST,
    );

    let check = |fx: &Fixture, when: &str, nlink: u64| {
        assert_eq!(
            std::fs::read_link(fx.path("rel")).expect("readlink"),
            Path::new("target")
        );
        assert_eq!(
            std::fs::read_link(fx.path("abs")).expect("readlink"),
            target
        );
        assert_bytes(when, &read(&fx.path("rel")), &read(&fx.path("hard")));
        assert!(
            std::fs::symlink_metadata(fx.path("rel"))
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        assert_errno(
            "follow a dangling link",
            std::fs::metadata(fx.path("dangling")),
            libc::ENOENT,
        );
        assert!(
            std::fs::metadata(fx.path("dirlink"))
                .expect("stat via link")
                .is_dir()
        );
        let (m1, m2) = (
            std::fs::metadata(fx.path("hard")).expect("stat"),
            std::fs::metadata(fx.path("other/hard2")).expect("stat"),
        );
        assert_eq!(m1.ino(), m2.ino(), "{when}: hard links share the inode");
        assert_eq!(m1.nlink(), nlink, "{when}: link count");
    };
    check(&fx, "mounted", 3);
    // A write through one name shows through the others.
    OpenOptions::new()
        .write(true)
        .open(fx.path("other/hard2"))
        .expect("open")
        .write_all_at(b"CHANGED", 1000)
        .expect("write");
    assert_eq!(&read(&fx.path("hard"))[1000..1007], b"CHANGED");
    std::fs::remove_file(&target).expect("unlink one name");
    assert_eq!(std::fs::metadata(fx.path("hard")).expect("stat").nlink(), 2);
    assert_errno(
        "relative link now dangles",
        std::fs::metadata(fx.path("rel")),
        libc::ENOENT,
    );
    std::fs::hard_link(fx.path("hard"), &target).expect("link the name back");
    fx.remount();
    check(&fx, "after remount", 3);
    assert_eq!(&read(&target)[1000..1007], b"CHANGED");
    fx.finish();
}

/// The ACL `cp -a` writes for mode 0644: user::rw-, group::r--, other::r--.
const POSIX_ACL_644: &[u8] = &[
    2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0, 4, 0, 255,
    255, 255, 255,
];

#[test]
fn xattrs_and_the_layout_attribute() {
    let Some(mut fx) = Fixture::new("xattrs", &["--stripe-unit", "128K"], &[]) else {
        return;
    };
    let f = fx.path("f");
    write(&f, b"data");
    let layout = "user.stripefs.layout";

    // Ordinary attributes.
    setxattr(&f, "user.color", b"blue", 0).expect("setxattr");
    assert_eq!(getxattr(&f, "user.color").expect("getxattr"), b"blue");
    let big = contents(9, 4000);
    setxattr(&f, "user.big", &big, 0).expect("setxattr 4000 bytes");
    assert_eq!(getxattr(&f, "user.big").expect("getxattr"), big);
    assert_errno(
        "XATTR_CREATE on existing",
        setxattr(&f, "user.color", b"red", libc::XATTR_CREATE),
        libc::EEXIST,
    );
    assert_errno(
        "XATTR_REPLACE on missing",
        setxattr(&f, "user.none", b"x", libc::XATTR_REPLACE),
        libc::ENODATA,
    );
    setxattr(&f, "user.color", b"green", libc::XATTR_REPLACE).expect("replace");
    assert_errno("get missing", getxattr(&f, "user.none"), libc::ENODATA);
    setxattr(&f, "user.gone", b"1", 0).expect("setxattr");
    removexattr(&f, "user.gone").expect("removexattr");
    assert_errno(
        "remove missing",
        removexattr(&f, "user.gone"),
        libc::ENODATA,
    );
    let names: BTreeSet<String> = listxattr(&f).expect("listxattr").into_iter().collect();
    for n in ["user.color", "user.big", layout] {
        assert!(names.contains(n), "listxattr lacks {n}: {names:?}");
    }
    assert!(!names.contains("user.gone"));
    // A 1-byte buffer is too small: ERANGE.
    let (p, n) = (
        cpath(&f),
        std::ffi::CString::new("user.color").expect("name"),
    );
    let mut one = [0u8; 1];
    // SAFETY: both strings are NUL-terminated and `one` has 1 writable byte.
    let rc = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), one.as_mut_ptr().cast(), 1) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ERANGE)
    );
    // POSIX ACLs are not kept: refused, so tools fall back to the mode bits.
    assert_errno(
        "system.posix_acl_access",
        setxattr(&f, "system.posix_acl_access", POSIX_ACL_644, 0),
        libc::EOPNOTSUPP,
    );

    // The layout: read on any file and directory.
    let shown = String::from_utf8(getxattr(&f, layout).expect("layout of a file")).expect("UTF-8");
    assert!(
        shown.starts_with("stripe_unit=131072,stripe_count=4,devices="),
        "{shown}"
    );
    let root = String::from_utf8(getxattr(&fx.mnt, layout).expect("layout of /")).expect("UTF-8");
    assert!(root.contains("stripe_unit=131072"), "{root}");
    // Set on an empty file.
    let e = fx.path("e");
    File::create(&e).expect("create e");
    setxattr(&e, layout, b"stripe_unit=64K,stripe_count=2", 0).expect("layout of an empty file");
    let shown = String::from_utf8(getxattr(&e, layout).expect("layout")).expect("UTF-8");
    assert!(
        shown.starts_with("stripe_unit=65536,stripe_count=2,devices="),
        "{shown}"
    );
    write(&e, &contents(11, 1_000_000));
    assert_bytes(
        "file with its own layout",
        &read(&e),
        &contents(11, 1_000_000),
    );
    // Refused on a file with data, and for nonsense.
    assert_errno(
        "layout of a non-empty file",
        setxattr(&f, layout, b"stripe_count=1", 0),
        libc::EINVAL,
    );
    assert_errno(
        "stripe count too large",
        setxattr(&e, layout, b"stripe_count=9", 0),
        libc::EINVAL,
    );
    let empty2 = fx.path("e2");
    File::create(&empty2).expect("create e2");
    assert_errno(
        "not key=value",
        setxattr(&empty2, layout, b"bogus", 0),
        libc::EINVAL,
    );
    assert_errno(
        "bad unit",
        setxattr(&empty2, layout, b"stripe_unit=1000", 0),
        libc::EINVAL,
    );
    assert_errno(
        "unknown device",
        setxattr(&empty2, layout, b"devices=7", 0),
        libc::EINVAL,
    );
    // Set on a directory: new files in it take it.
    let d = fx.path("d");
    std::fs::create_dir(&d).expect("mkdir");
    setxattr(&d, layout, b"stripe_unit=256K,stripe_count=1", 0).expect("layout of a directory");
    write(&d.join("child"), &contents(12, 700_000));
    let child =
        String::from_utf8(getxattr(&d.join("child"), layout).expect("layout")).expect("UTF-8");
    assert!(
        child.starts_with("stripe_unit=262144,stripe_count=1,devices="),
        "{child}"
    );

    fx.remount();
    assert_eq!(getxattr(&f, "user.color").expect("after remount"), b"green");
    assert_eq!(getxattr(&f, "user.big").expect("after remount"), big);
    let shown = String::from_utf8(getxattr(&e, layout).expect("layout")).expect("UTF-8");
    assert!(
        shown.starts_with("stripe_unit=65536,stripe_count=2,devices="),
        "{shown}"
    );
    assert_bytes(
        "file with its own layout after remount",
        &read(&e),
        &contents(11, 1_000_000),
    );
    assert_bytes(
        "file in a striped-once dir",
        &read(&d.join("child")),
        &contents(12, 700_000),
    );
    fx.finish();
}

#[test]
fn names_too_long_are_refused() {
    let Some(fx) = Fixture::new("names", &[], &[]) else {
        return;
    };
    let max = "n".repeat(255);
    let long = "n".repeat(256);
    write(&fx.path(&max), b"255 bytes is fine");
    assert_eq!(read(&fx.path(&max)), b"255 bytes is fine");
    assert_errno("create", File::create(fx.path(&long)), libc::ENAMETOOLONG);
    assert_errno(
        "mkdir",
        std::fs::create_dir(fx.path(&long)),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "stat",
        std::fs::metadata(fx.path(&long)),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "symlink",
        std::os::unix::fs::symlink("x", fx.path(&long)),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "link",
        std::fs::hard_link(fx.path(&max), fx.path(&long)),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "rename",
        std::fs::rename(fx.path(&max), fx.path(&long)),
        libc::ENAMETOOLONG,
    );
    assert!(
        std::fs::metadata(fx.path(&max)).is_ok(),
        "the source survives a refused rename"
    );
    fx.finish();
}

/// Runs `sh -c SCRIPT` as user and group 65534 (nobody).
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("run setpriv")
}

#[test]
fn permissions_are_checked_by_the_kernel() {
    // Other users reach the mount only with allow_other (off unless asked).
    let Some(fx) = Fixture::new("permissions", &[], &["-o", "allow_other"]) else {
        return;
    };
    if common::require::skip(&[common::require::Requirement::Tool("setpriv")]) {
        fx.finish();
        return;
    }
    let secret = fx.path("secret");
    write(&secret, b"root only");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let public = fx.path("public");
    write(&public, b"everyone");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let shared = fx.path("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let q = |p: &Path| p.to_str().expect("UTF-8").to_string();
    let out = as_nobody(&format!("cat {}", q(&secret)));
    assert!(!out.status.success(), "nobody read a 0600 root file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = as_nobody(&format!("cat {}", q(&public)));
    assert_eq!(out.stdout, b"everyone", "nobody reads a 0644 file");
    let out = as_nobody(&format!("echo x >> {}", q(&public)));
    assert!(!out.status.success(), "nobody wrote a 0644 root file");
    let out = as_nobody(&format!("touch {}", q(&fx.path("rootdir-file"))));
    assert!(
        !out.status.success(),
        "nobody created a file in a 0755 root directory"
    );
    let out = as_nobody(&format!("chmod 666 {}", q(&public)));
    assert!(!out.status.success(), "nobody chmodded a root file");
    // Files nobody creates belong to nobody.
    let mine = shared.join("mine");
    let out = as_nobody(&format!("echo hi > {}", q(&mine)));
    assert!(
        out.status.success(),
        "nobody writes in a 0777 dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = std::fs::metadata(&mine).expect("stat");
    assert_eq!(
        (m.uid(), m.gid()),
        (65534, 65534),
        "owner of a file nobody created"
    );
    // Set-group-ID directories pass their group on.
    let sgid = fx.path("sgid");
    std::fs::create_dir(&sgid).expect("mkdir");
    std::os::unix::fs::chown(&sgid, None, Some(4242)).expect("chgrp");
    std::fs::set_permissions(&sgid, std::fs::Permissions::from_mode(0o2777)).expect("chmod g+s");
    write(&sgid.join("f"), b"x");
    std::fs::create_dir(sgid.join("sub")).expect("mkdir in sgid dir");
    assert_eq!(std::fs::metadata(sgid.join("f")).expect("stat").gid(), 4242);
    let sub = std::fs::metadata(sgid.join("sub")).expect("stat");
    assert_eq!(sub.gid(), 4242);
    assert_ne!(
        sub.mode() & libc::S_ISGID,
        0,
        "subdirectory inherits S_ISGID"
    );
    fx.finish();
}

/// The set-user-ID and set-group-ID bits go as on a local filesystem (the daemon clears them,
/// `FUSE_HANDLE_KILLPRIV_V2`): on `chown` of a file (not of a directory), on a write and a
/// truncate by a user without `CAP_FSETID`, and not on a write or truncate by root; `stat`
/// right after shows it (the kernel's cached mode is dropped after a write cleared a bit).
#[test]
fn set_id_bits_are_cleared_as_on_a_local_filesystem() {
    let Some(mut fx) = Fixture::new("setid", &[], &["-o", "allow_other"]) else {
        return;
    };
    if common::require::skip(&[common::require::Requirement::Tool("setpriv")]) {
        fx.finish();
        return;
    }
    let f = fx.path("f");
    let q = f.to_str().expect("UTF-8").to_string();
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    write(&f, b"");
    chmod(&f, 0o6755);
    std::os::unix::fs::chown(&f, Some(65534), None).expect("chown");
    assert_eq!(
        mode(&f),
        0o755,
        "chown clears both bits (group may execute)"
    );
    chmod(&f, 0o6755);
    OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut h| h.write_all(b"r"))
        .expect("root appends");
    assert_eq!(mode(&f), 0o6755, "a write by root keeps them");
    let out = as_nobody(&format!("printf n >> {q}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&f), 0o755, "a write by the owner, nobody, clears them");
    chmod(&f, 0o6745);
    let out = as_nobody(&format!("printf n >> {q}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        mode(&f),
        0o745,
        "set-group-ID without group execute goes too: nobody is not in the file's group"
    );
    chmod(&f, 0o6755);
    let out = as_nobody(&format!("truncate -s 1 {q}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&f), 0o755, "a truncate by nobody clears them");
    assert_eq!(std::fs::metadata(&f).expect("stat").len(), 1);
    chmod(&f, 0o6755);
    File::options()
        .write(true)
        .open(&f)
        .and_then(|h| h.set_len(0))
        .expect("root truncates");
    assert_eq!(mode(&f), 0o6755, "a truncate by root keeps them");
    chmod(&f, 0o2745);
    std::os::unix::fs::chown(&f, Some(0), None).expect("chown");
    assert_eq!(
        mode(&f),
        0o2745,
        "chown by root keeps set-group-ID without group execute"
    );
    let d = fx.path("d");
    std::fs::create_dir(&d).expect("mkdir");
    chmod(&d, 0o6755);
    std::os::unix::fs::chown(&d, Some(65534), None).expect("chown");
    assert_eq!(mode(&d), 0o6755, "chown of a directory keeps them");
    fx.remount();
    assert_eq!(mode(&f), 0o2745);
    assert_eq!(mode(&d), 0o6755);
    fx.finish();
}

#[test]
fn statfs_mknod_mmap_and_exec() {
    let Some(fx) = Fixture::new("misc", &[], &[]) else {
        return;
    };
    let (free, frsize) = free_space(&fx.mnt);
    assert!(
        free * frsize > 200 * MIB && free * frsize <= 256 * MIB,
        "free space {}",
        free * frsize
    );
    let df = Command::new("df").arg(&fx.mnt).output().expect("df");
    assert!(df.status.success());

    // mknod of a regular file (FIFOs, sockets and device nodes: tests/mount_special_files.rs).
    let reg = cpath(&fx.path("regular"));
    // SAFETY: the path is NUL-terminated.
    let rc = unsafe { libc::mknod(reg.as_ptr(), libc::S_IFREG | 0o640, 0) };
    assert_eq!(rc, 0, "mknod S_IFREG");
    let m = std::fs::metadata(fx.path("regular")).expect("stat");
    assert!(m.is_file() && m.mode() & 0o777 == 0o640);

    // mmap of a direct-I/O file, read and written.
    let path = fx.path("mapped");
    write(&path, &contents(21, 65_536));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    // SAFETY: a fresh shared mapping of 64 KiB of an open file; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            65_536,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(
        map,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is 64 KiB long and lives until munmap below.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), 65_536) };
    assert_bytes("mmap read", bytes, &contents(21, 65_536));
    bytes[100..105].copy_from_slice(b"MMAPD");
    // SAFETY: `map` is the mapping made above.
    unsafe {
        assert_eq!(libc::msync(map, 65_536, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(map, 65_536), 0);
    }
    drop(f);
    assert_eq!(
        &read(&path)[100..105],
        b"MMAPD",
        "mmap write reaches the file"
    );

    // exec of a program stored on stripefs.
    let prog = fx.path("true");
    std::fs::copy("/bin/true", &prog).expect("copy /bin/true");
    let status = Command::new(&prog).status().expect("exec from stripefs");
    assert!(status.success());
    fx.finish();
}
