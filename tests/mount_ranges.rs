//! Ranges of files through the mount, with libc calls as programs make them: each
//! `fallocate` mode (exact bytes, sizes and `st_blocks`), unsupported modes (EOPNOTSUPP),
//! `SEEK_DATA`/`SEEK_HOLE` on sparse files, `copy_file_range` across stripe units and holes
//! (holes stay holes: the daemon copies, not the kernel's fallback), and `RENAME_EXCHANGE` of
//! a file with a directory; all of it again after a remount, and fsck clean.
//!
//! Needs root and /dev/fuse; without them each test prints `skipped: <reason>` (and fails
//! instead when `STRIPEFS_REQUIRE_FUSE` is set).

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::mount::MountedFs as Fixture;
use common::mount::{assert_errno, contents, cpath, run};

/// 16 KiB units over four devices: every range below crosses units.
const MKFS: [&str; 2] = ["--stripe-unit", "16K"];

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn fallocate(f: &File, mode: i32, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn seek(f: &File, offset: u64, whence: i32) -> std::io::Result<u64> {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset as i64, whence) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as u64)
}

fn copy_range(src: &File, so: u64, dst: &File, d_o: u64, len: u64) -> std::io::Result<u64> {
    let (mut so, mut d_o) = (so as i64, d_o as i64);
    // SAFETY: the offsets are locals that live for the call; the descriptors are open.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut so,
            dst.as_raw_fd(),
            &mut d_o,
            len as usize,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// Size and `st_blocks` of `path`, and whether its bytes are `want`.
#[track_caller]
fn assert_file(path: &Path, want: &[u8], blocks: u64, what: &str) {
    let meta = std::fs::metadata(path).expect("stat");
    assert_eq!(meta.len(), want.len() as u64, "size after {what}");
    assert_eq!(meta.blocks(), blocks, "st_blocks after {what}");
    let got = std::fs::read(path).expect("read");
    assert!(got == want, "bytes after {what} differ");
}

const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;

#[test]
fn fallocate_modes_give_exact_bytes_sizes_and_blocks() {
    let Some(mut fx) = Fixture::new("fallocate", &MKFS, &[]) else {
        return;
    };
    let path = fx.path("f");
    let f = open_rw(&path);
    let mut want = contents(1, 100_000);
    std::fs::write(&path, &want).expect("write");
    // 25 blocks of 4 KiB: 200 sectors.
    assert_file(&path, &want, 200, "write");
    // Default mode: blocks 48..62 allocated, size 250,000, the new part zeros.
    fallocate(&f, 0, 200_000, 50_000).expect("allocate");
    want.resize(250_000, 0);
    assert_file(&path, &want, 312, "allocate");
    // KEEP_SIZE past the end: blocks 73..76, size unchanged.
    fallocate(&f, KEEP, 300_000, 10_000).expect("allocate, keep size");
    assert_file(&path, &want, 336, "allocate, keep size");
    // Punch 5,000..70,000: whole blocks 2..17 freed, blocks 1 and 17 keep their other bytes.
    fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | KEEP, 5_000, 65_000).expect("punch");
    want[5_000..70_000].fill(0);
    assert_file(&path, &want, 216, "punch");
    // Zero 90,000..120,000: blocks 21..30 stored (25..30 new), reading zeros.
    want[90_000..120_000].fill(0);
    match fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 90_000, 30_000) {
        Ok(()) => {
            assert_file(&path, &want, 256, "zero range");
            // Past the end: the size grows to 260,000; with KEEP_SIZE it does not.
            fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 240_000, 20_000).expect("zero, grow");
            want.resize(260_000, 0);
            want[240_000..250_000].fill(0);
            assert_file(&path, &want, 256 + 16, "zero range past the end");
            fallocate(&f, libc::FALLOC_FL_ZERO_RANGE | KEEP, 400_000, 5_000)
                .expect("zero, keep size");
            assert_file(&path, &want, 256 + 16 + 16, "zero range, keep size");
        }
        // Kernels before FUSE passed ZERO_RANGE on refuse it themselves (the daemon's
        // ZERO_RANGE is covered by the library tests).
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            println!("this kernel's FUSE does not pass FALLOC_FL_ZERO_RANGE on");
            want = std::fs::read(&path).expect("read");
        }
        Err(e) => panic!("zero range: {e}"),
    }
    // Unsupported modes.
    for mode in [
        libc::FALLOC_FL_PUNCH_HOLE,
        libc::FALLOC_FL_COLLAPSE_RANGE,
        libc::FALLOC_FL_INSERT_RANGE,
        libc::FALLOC_FL_UNSHARE_RANGE,
    ] {
        assert_errno(
            &format!("fallocate mode {mode:#x}"),
            fallocate(&f, mode, 0, 4096),
            libc::EOPNOTSUPP,
        );
    }
    let blocks = std::fs::metadata(&path).expect("stat").blocks();
    drop(f);
    fx.remount();
    assert_file(&path, &want, blocks, "remount");
    fx.finish();
}

#[test]
fn seek_data_and_hole_on_sparse_files() {
    let Some(mut fx) = Fixture::new("seek", &MKFS, &[]) else {
        return;
    };
    let path = fx.path("sparse");
    let f = open_rw(&path);
    use std::os::unix::fs::FileExt;
    f.write_all_at(&contents(2, 16_384), 65_536).expect("write");
    f.write_all_at(&contents(3, 4_196), 204_800).expect("write");
    f.set_len(300_001).expect("extend");
    let check = |f: &File| {
        let expect = [
            (0, libc::SEEK_DATA, 65_536),
            (70_000, libc::SEEK_DATA, 70_000),
            (81_920, libc::SEEK_DATA, 204_800),
            (0, libc::SEEK_HOLE, 0),
            (65_536, libc::SEEK_HOLE, 81_920),
            (204_800, libc::SEEK_HOLE, 212_992),
            (213_000, libc::SEEK_HOLE, 213_000),
        ];
        for (offset, whence, at) in expect {
            assert_eq!(
                seek(f, offset, whence).ok(),
                Some(at),
                "{whence} from {offset}"
            );
        }
        assert_errno(
            "SEEK_DATA after the last data",
            seek(f, 213_000, libc::SEEK_DATA),
            libc::ENXIO,
        );
        assert_errno(
            "SEEK_HOLE at the end",
            seek(f, 300_001, libc::SEEK_HOLE),
            libc::ENXIO,
        );
    };
    check(&f);
    drop(f);
    fx.remount();
    check(&File::open(&path).expect("open"));
    fx.finish();
}

#[test]
fn copy_file_range_crosses_units_and_keeps_holes() {
    let Some(mut fx) = Fixture::new("copy_file_range", &MKFS, &[]) else {
        return;
    };
    let (src_path, dst_path) = (fx.path("src"), fx.path("dst"));
    let src = open_rw(&src_path);
    let dst = open_rw(&dst_path);
    use std::os::unix::fs::FileExt;
    // Source: 40,000 bytes at 1,000, a hole of five units, 30,000 bytes.
    let (a, b) = (contents(4, 40_000), contents(5, 30_000));
    let b_at = 1_000 + 40_000 + 5 * 16_384;
    src.write_all_at(&a, 1_000).expect("write");
    src.write_all_at(&b, b_at).expect("write");
    let mut source = vec![0u8; b_at as usize + b.len()];
    source[1_000..41_000].copy_from_slice(&a);
    source[b_at as usize..].copy_from_slice(&b);
    let mut want = contents(6, 300_000);
    dst.write_all_at(&want, 0).expect("write");
    // Aligned modulo the block: past the source's end, so short.
    let n = copy_range(&src, 0, &dst, 8_192, 200_000).expect("copy");
    assert_eq!(n, source.len() as u64);
    want[8_192..8_192 + source.len()].copy_from_slice(&source);
    // The source hole's whole blocks, 45,056..122,880, are a hole at +8,192.
    assert_eq!(seek(&dst, 40_000, libc::SEEK_HOLE).ok(), Some(53_248));
    assert_eq!(seek(&dst, 53_248, libc::SEEK_DATA).ok(), Some(131_072));
    // Not aligned: each byte lands one past a block boundary.
    let n = copy_range(&src, 500, &dst, 100_001, 150_000).expect("copy");
    assert_eq!(n, 150_000);
    want[100_001..250_001].copy_from_slice(&source[500..150_500]);
    assert_file(&dst_path, &want, blocks_of(&dst_path), "copies");
    // One file: apart is fine, overlapping is EINVAL.
    let n = copy_range(&dst, 0, &dst, 260_000, 30_000).expect("copy within the file");
    assert_eq!(n, 30_000);
    let head = want[..30_000].to_vec();
    want[260_000..290_000].copy_from_slice(&head);
    assert_errno(
        "overlapping copy",
        copy_range(&dst, 0, &dst, 10_000, 20_000),
        libc::EINVAL,
    );
    drop((src, dst));
    fx.remount();
    let got = std::fs::read(&dst_path).expect("read");
    assert!(got == want, "destination differs after remount");
    // `cp` (coreutils 9 copies with copy_file_range and SEEK_HOLE): same bytes, same holes.
    let copy = fx.path("src.cp");
    let (from, to) = (src_path.to_str(), copy.to_str());
    run("cp", &[from.expect("UTF-8"), to.expect("UTF-8")], None);
    assert!(
        std::fs::read(&copy).expect("read") == source,
        "cp's copy differs"
    );
    assert_eq!(
        blocks_of(&copy),
        blocks_of(&src_path),
        "cp's copy is not as sparse"
    );
    assert!(blocks_of(&copy) * 512 < source.len() as u64);
    fx.finish();
}

fn blocks_of(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks()
}

#[test]
fn rename_exchange_of_a_file_and_a_directory() {
    let Some(mut fx) = Fixture::new("rename exchange", &[], &[]) else {
        return;
    };
    let (a, b) = (fx.path("a"), fx.path("b"));
    std::fs::create_dir(&a).expect("mkdir");
    std::fs::create_dir(&b).expect("mkdir");
    std::fs::write(a.join("file"), b"file bytes").expect("write");
    std::fs::create_dir_all(b.join("dir/sub")).expect("mkdir");
    let (from, to) = (cpath(&a.join("file")), cpath(&b.join("dir")));
    // SAFETY: both paths are NUL-terminated strings that live for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
    let check = || {
        let nlink = |p: &Path| std::fs::metadata(p).expect("stat").nlink();
        assert!(a.join("file").is_dir() && b.join("dir").is_file());
        assert_eq!(std::fs::read(b.join("dir")).expect("read"), b"file bytes");
        assert!(a.join("file/sub").is_dir());
        assert_eq!((nlink(&a), nlink(&b)), (3, 2), "parents' link counts");
        assert_eq!(nlink(&a.join("file")), 3);
        let parent = std::fs::metadata(a.join("file/..")).expect("stat ..").ino();
        assert_eq!(parent, std::fs::metadata(&a).expect("stat").ino(), "..");
    };
    check();
    fx.remount();
    check();
    fx.finish();
}
