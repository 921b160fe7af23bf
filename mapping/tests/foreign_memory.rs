//! Memory received from another process (`Memory::from_memfd`): mapped without allocating
//! anything, refused unless every page exists, and sealed so that no hole can be punched in
//! it afterwards.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use stripefs_mapping::{MappingError, Memory};

const PAGE: u64 = 4096;

/// A memfd of `len` bytes sealed against shrinking and growing, with nothing allocated.
fn sealed_memfd(len: u64) -> OwnedFd {
    // SAFETY: a plain memfd_create call with a valid C string.
    let raw =
        unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: memfd_create returned a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: resizing our own memfd.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) };
    assert_eq!(rc, 0);
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // SAFETY: adding seals to our own memfd.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(rc, 0);
    fd
}

/// Writes `len` bytes of `byte` at `offset` (which allocates those pages).
fn fill(fd: &OwnedFd, offset: u64, len: u64, byte: u8) {
    let data = vec![byte; len as usize];
    // SAFETY: pwrite from a valid local buffer into our own memfd.
    let n = unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            offset as libc::off_t,
        )
    };
    assert_eq!(
        n,
        len as isize,
        "pwrite: {}",
        std::io::Error::last_os_error()
    );
}

fn punch_hole(fd: &OwnedFd, offset: u64, len: u64) -> std::io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on our own memfd.
    let rc = unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_sparse_memfd_is_refused_without_allocating() {
    let fd = sealed_memfd(64 << 30);
    let before = rss_kib();
    match Memory::from_memfd(fd) {
        Err(MappingError::NotBacked { first_hole, len }) => {
            assert_eq!((first_hole, len), (0, 64 << 30));
        }
        other => panic!("expected NotBacked, got {other:?}"),
    }
    let after = rss_kib();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_partly_backed_memfd_is_refused_at_its_first_hole() {
    let fd = sealed_memfd(8 * PAGE);
    fill(&fd, 0, 3 * PAGE, 1);
    fill(&fd, 5 * PAGE, 3 * PAGE, 1);
    match Memory::from_memfd(fd) {
        Err(MappingError::NotBacked { first_hole, len }) => {
            assert_eq!((first_hole, len), (3 * PAGE, 8 * PAGE));
        }
        other => panic!("expected NotBacked, got {other:?}"),
    }
}

#[test]
fn pages_allocated_but_never_touched_count_as_holes() {
    let fd = sealed_memfd(4 * PAGE);
    // SAFETY: fallocate on our own memfd.
    let rc = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, 4 * PAGE as i64) };
    assert_eq!(rc, 0);
    assert!(matches!(
        Memory::from_memfd(fd),
        Err(MappingError::NotBacked { first_hole: 0, .. })
    ));
}

#[test]
fn a_memfd_whose_seals_are_sealed_is_refused() {
    let fd = sealed_memfd(2 * PAGE);
    fill(&fd, 0, 2 * PAGE, 1);
    // SAFETY: adding a seal to our own memfd.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SEAL) };
    assert_eq!(rc, 0);
    assert!(matches!(
        Memory::from_memfd(fd),
        Err(MappingError::CannotSeal { .. })
    ));
}

#[test]
fn a_backed_memfd_is_shared_and_can_no_longer_lose_pages() {
    let fd = sealed_memfd(4 * PAGE);
    fill(&fd, 0, 4 * PAGE, 7);
    let memory = Memory::from_memfd(fd.try_clone().expect("dup")).expect("backed memfd");
    let mut got = [0u8; 3];
    memory.read_at(PAGE, &mut got).expect("read");
    assert_eq!(got, [7, 7, 7]);
    let err = punch_hole(&fd, 0, PAGE).expect_err("the owner can no longer punch a hole");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    memory.write_at(2 * PAGE + 1, b"abc").expect("write");
    let mut back = [0u8; 3];
    // SAFETY: pread into a valid local buffer.
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            back.as_mut_ptr().cast(),
            3,
            2 * PAGE as i64 + 1,
        )
    };
    assert_eq!(n, 3);
    assert_eq!(&back, b"abc");
}

#[test]
fn memory_created_here_is_fully_backed_for_its_receiver() {
    let created = Memory::create("created", 5 * PAGE, false).expect("create");
    let fd = created.fd().try_clone_to_owned().expect("dup");
    let received = Memory::from_memfd(fd).expect("a created memory is backed");
    created.write_at(4 * PAGE, b"xy").expect("write");
    let mut got = [0u8; 2];
    received.read_at(4 * PAGE, &mut got).expect("read");
    assert_eq!(&got, b"xy");
}
