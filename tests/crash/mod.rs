//! The crash-point harness: workloads, the reference model and the crash images.

pub mod concurrent;
pub mod images;
pub mod model;
pub mod workload;

use stripefs_fs::MkfsOptions;
use workload::{Op, Workload};

/// Devices of every workload, and their size.
pub const DEVICES: usize = 4;
pub const DEVICE_SIZE: u64 = 8 << 20;

fn mkfs() -> MkfsOptions {
    MkfsOptions {
        stripe_unit: 16 << 10,
        metadata_size: Some(1 << 20),
        ..MkfsOptions::default()
    }
}

fn write(path: &'static str, offset: u64, len: usize, seed: u64) -> Op {
    Op::Write {
        path,
        offset,
        len,
        seed,
    }
}

/// Every workload the harness runs.
pub fn workloads() -> Vec<Workload> {
    vec![
        create_write_fsync(),
        overwrite(),
        append(),
        rename_over(),
        unlink_then_reuse(),
        truncate_down_and_up(),
        hard_links(),
        special_files(),
        ranges_and_exchange(),
        xattrs_and_layouts(),
        log_wrap(),
        unmount_checkpoint(),
        metadata_growth(),
    ]
}

fn create_write_fsync() -> Workload {
    use Op::*;
    Workload {
        name: "create/write/fsync",
        mkfs: mkfs(),
        ops: vec![
            Mkdir("d"),
            Create("d/a"),
            write("d/a", 0, 64 << 10, 1),
            Fsync("d/a"),
            Fsync("d"),
            Create("d/b"),
            write("d/b", 0, 200_000, 2),
            Fsync("d"),
            Create("c"),
            write("c", 4096, 70_000, 3),
            Sync,
            Create("e"),
            write("e", 0, 100, 4),
        ],
    }
}

fn overwrite() -> Workload {
    use Op::*;
    Workload {
        name: "overwrite",
        mkfs: mkfs(),
        ops: vec![
            Create("f"),
            write("f", 0, 128 << 10, 1),
            Fsync("f"),
            write("f", 8192, 16 << 10, 2),
            Fsync("f"),
            write("f", 3000, 5000, 3),
            Fdatasync("f"),
            write("f", 100_000, 40_000, 4),
            write("f", 0, 4096, 5),
        ],
    }
}

fn append() -> Workload {
    use Op::*;
    let mut ops = vec![Create("log")];
    for i in 0..8u64 {
        ops.push(write("log", i * 3000, 3000, 10 + i));
        if i % 2 == 1 {
            ops.push(Fsync("log"));
        }
        if i == 4 {
            ops.push(Fdatasync("log"));
        }
    }
    Workload {
        name: "append",
        mkfs: mkfs(),
        ops,
    }
}

fn rename_over() -> Workload {
    use Op::*;
    Workload {
        name: "rename over an existing file",
        mkfs: mkfs(),
        ops: vec![
            Create("a"),
            write("a", 0, 50_000, 1),
            Fsync("a"),
            Fsync(""),
            Create("a.tmp"),
            write("a.tmp", 0, 90_000, 2),
            Fsync("a.tmp"),
            Rename("a.tmp", "a"),
            Fsync(""),
            Create("a.tmp"),
            write("a.tmp", 0, 30_000, 3),
            Rename("a.tmp", "a"),
            Mkdir("sub"),
            Rename("a", "sub/a"),
        ],
    }
}

fn unlink_then_reuse() -> Workload {
    use Op::*;
    Workload {
        name: "unlink then reuse of the space",
        mkfs: mkfs(),
        ops: vec![
            Create("a"),
            write("a", 0, 1 << 20, 1),
            Fsync("a"),
            Fsync(""),
            Unlink("a"),
            Create("b"),
            write("b", 0, 1 << 20, 2),
            Create("c"),
            write("c", 0, 512 << 10, 3),
            Fsync("c"),
            Unlink("b"),
            Create("d"),
            write("d", 0, 1 << 20, 4),
        ],
    }
}

fn truncate_down_and_up() -> Workload {
    use Op::*;
    Workload {
        name: "truncate down and up",
        mkfs: mkfs(),
        ops: vec![
            Create("f"),
            write("f", 0, 300_000, 1),
            Fsync("f"),
            Truncate("f", 10_000),
            write("f", 200_000, 8192, 2),
            Truncate("f", 500_000),
            Fsync("f"),
            Truncate("f", 0),
            write("f", 0, 20_000, 3),
            Truncate("f", 70_001),
            Fdatasync("f"),
            Truncate("f", 4097),
        ],
    }
}

fn hard_links() -> Workload {
    use Op::*;
    Workload {
        name: "hard links",
        mkfs: mkfs(),
        ops: vec![
            Create("f"),
            write("f", 0, 40_000, 1),
            Mkdir("d"),
            Link("f", "d/g"),
            Fsync("f"),
            Unlink("f"),
            write("d/g", 40_000, 10_000, 2),
            Fsync("d/g"),
            Link("d/g", "h"),
            Rename("d/g", "i"),
            Unlink("h"),
            Fsync("i"),
            Mkdir("e"),
            Fsync(""),
            Rmdir("e"),
            Rmdir("d"),
        ],
    }
}

/// `makedev(major, minor)` as FUSE carries it (small numbers).
const fn dev(major: u32, minor: u32) -> u32 {
    (major << 8) | minor
}

fn special_files() -> Workload {
    use Op::*;
    use stripefs_fs::filesystem::FileType;
    Workload {
        name: "special files (mknod)",
        mkfs: mkfs(),
        ops: vec![
            Mkdir("d"),
            Mknod("d/fifo", FileType::Fifo, 0),
            Mknod("d/null", FileType::CharDevice, dev(1, 3)),
            Fsync("d"),
            Mknod("sock", FileType::Socket, 0),
            Mknod("d/blk", FileType::BlockDevice, dev(7, 0)),
            Create("f"),
            write("f", 0, 20_000, 1),
            Fsync("f"),
            Rename("d/null", "f"),
            Link("d/fifo", "fifo2"),
            Unlink("sock"),
            Fsync("d"),
            SetXattr("d/blk", "user.test.a", b"1"),
            Unlink("d/fifo"),
            Rename("d/blk", "blk"),
            Sync,
            Mknod("late", FileType::Fifo, 0),
        ],
    }
}

/// `fallocate` in every mode, `copy_file_range` (between files, within one, across units
/// and holes) and `RENAME_EXCHANGE` of a file with a directory.
fn ranges_and_exchange() -> Workload {
    use Op::*;
    use stripefs_fs::filesystem::Fallocate as F;
    let copy = |src, src_offset, dst, dst_offset, len| Copy {
        src,
        src_offset,
        dst,
        dst_offset,
        len,
    };
    Workload {
        name: "fallocate, copy_file_range, RENAME_EXCHANGE",
        mkfs: mkfs(),
        ops: vec![
            Mkdir("d"),
            Create("d/a"),
            write("d/a", 0, 100_000, 1),
            Fsync("d/a"),
            Fallocate("d/a", 150_000, 40_000, F::Allocate { keep_size: false }),
            Fallocate("d/a", 200_000, 30_000, F::Allocate { keep_size: true }),
            Fsync("d/a"),
            Fallocate("d/a", 5_000, 60_000, F::PunchHole),
            Fallocate("d/a", 70_000, 20_000, F::ZeroRange { keep_size: false }),
            Create("b"),
            write("b", 0, 50_000, 2),
            copy("d/a", 1_000, "b", 30_001, 120_000),
            Fsync("b"),
            Mkdir("e"),
            Mkdir("e/sub"),
            Exchange("b", "e"),
            Fdatasync("e"),
            Fallocate("e", 100_000, 10_000, F::ZeroRange { keep_size: true }),
            copy("e", 0, "e", 200_000, 50_000),
            Sync,
            Exchange("d/a", "b/sub"),
            Fallocate("b/sub", 180_000, 30_000, F::ZeroRange { keep_size: false }),
            Fsync("b/sub"),
            Remount,
            Fallocate("b/sub", 0, 4096, F::PunchHole),
            copy("e", 16_384, "b/sub", 65_536, 70_000),
        ],
    }
}

fn xattrs_and_layouts() -> Workload {
    use Op::*;
    Workload {
        name: "xattrs and layouts",
        mkfs: mkfs(),
        ops: vec![
            Mkdir("n"),
            SetLayout("n", "stripe_unit=8K,stripe_count=2"),
            Create("n/x"),
            write("n/x", 0, 300_000, 1),
            SetXattr("n/x", "user.test.a", b"one"),
            Fsync("n/x"),
            SetXattr("n/x", "user.test.b", &[7u8; 2000]),
            RemoveXattr("n/x", "user.test.a"),
            Create("y"),
            SetLayout("y", "stripe_unit=32K,stripe_count=3,devices=3:1:0"),
            write("y", 0, 100_000, 2),
            Symlink("n/s", "x"),
            Fsync("y"),
            SetXattr("n", "user.test.dir", b"d"),
            Create("n/z"),
            write("n/z", 0, 20_000, 3),
        ],
    }
}

/// Many small fsyncs: the log (512 KiB here) fills and a checkpoint takes its place,
/// several times.
fn log_wrap() -> Workload {
    use Op::*;
    const NAMES: [&str; 6] = ["w0", "w1", "w2", "w3", "w4", "w5"];
    static VALUE: [u8; 3500] = [0x5a; 3500];
    let mut ops = Vec::new();
    for i in 0..200usize {
        let name = NAMES[i % NAMES.len()];
        if i >= NAMES.len() {
            ops.push(Unlink(name));
        }
        ops.push(Create(name));
        ops.push(write(name, 0, 4096 + (i % 3) * 3000, 100 + i as u64));
        ops.push(SetXattr(name, "user.test.v", &VALUE));
        ops.push(Fsync(name));
    }
    Workload {
        name: "many small fsyncs that wrap the log",
        mkfs: mkfs(),
        ops,
    }
}

fn unmount_checkpoint() -> Workload {
    use Op::*;
    Workload {
        name: "checkpoint at unmount and mount",
        mkfs: mkfs(),
        ops: vec![
            Mkdir("d"),
            Create("d/a"),
            write("d/a", 0, 100_000, 1),
            Create("b"),
            write("b", 0, 10_000, 2),
            Remount,
            Unlink("b"),
            write("d/a", 50_000, 100_000, 3),
            Create("c"),
            write("c", 0, 1 << 20, 4),
            Remount,
            Truncate("d/a", 1000),
            Fsync("d/a"),
        ],
    }
}

/// A name that lives as long as the workload (workload paths are `&'static str`).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The metadata grows over several pieces (256 inodes each) and shrinks again: checkpoints
/// (the log wraps) write only the pieces that changed, to fresh space, and release the copies
/// they replace; a directory grows past 256 entries (its entries move to an entry piece of
/// their own), then shrinks back inline; a whole inode piece empties and leaves the table,
/// and file data takes the space the pieces held. (Hashing a directory into more entry
/// pieces past 2048 entries is the same kind of checkpoint; `tests/many_files.rs` does it.)
fn metadata_growth() -> Workload {
    use Op::*;
    const FILES: usize = 700;
    const LARGE: usize = 600;
    let path = |i: usize| {
        let dir = if i < LARGE { "big" } else { "small" };
        leak(format!("{dir}/f{i:04}"))
    };
    let mut ops = vec![Mkdir("big"), Mkdir("small"), Mkdir("other")];
    for i in 0..FILES {
        ops.push(Create(path(i)));
        if i % 37 == 0 {
            ops.push(write(path(i), 0, 4096, 1000 + i as u64));
        }
        if i % 100 == 99 {
            ops.push(Fsync(path(i)));
        }
    }
    // The root is inode 1, the directories 2 to 4: files 251 to 506 are inodes 256 to 511,
    // all of inode piece 1, which empties; "big" falls under 128 entries and goes inline.
    for i in 100..580 {
        ops.push(Unlink(path(i)));
    }
    ops.push(Sync);
    ops.push(Create("other/data"));
    ops.push(write("other/data", 0, 3 << 20, 7));
    ops.push(Fsync("other/data"));
    ops.push(Remount);
    for i in FILES..FILES + 40 {
        ops.push(Create(path(i)));
    }
    ops.push(Fsync(path(FILES)));
    Workload {
        name: "metadata growth: pieces, large directories",
        mkfs: mkfs(),
        ops,
    }
}
