//! `fallocate`, `SEEK_DATA`/`SEEK_HOLE`, `copy_file_range` and `RENAME_EXCHANGE` through
//! the library API: exact bytes, sizes and stored blocks against a model, across reopen, and
//! fsck clean after each.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use stripefs_fs::filesystem::{
    CopyRange, Fallocate, FileType, Filesystem, FsError, RenameFlags, Seek,
};

use common::{Devices, ME, ROOT, assert_fsck_clean, data, formatted, name};

const B: u64 = 4096;
/// Stripe unit of these tests: 16 KiB over 3 devices, so ranges cross units often.
const UNIT: u64 = 16 << 10;

fn setup() -> (Devices, Arc<Filesystem>) {
    let d = formatted(3, 64 << 20, UNIT, 4 << 20);
    let fs = Filesystem::open(&d.specs).expect("open");
    (d, fs)
}

/// A file's bytes and which of its blocks are stored, as the filesystem should have them.
#[derive(Clone, Debug, Default)]
struct Model {
    bytes: Vec<u8>,
    stored: std::collections::BTreeSet<u64>,
}

impl Model {
    fn mark(&mut self, from: u64, to: u64) {
        for b in from / B..to.div_ceil(B) {
            self.stored.insert(b);
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset as usize..end].copy_from_slice(bytes);
        self.mark(offset, end as u64);
    }

    fn zero(&mut self, offset: u64, end: u64) {
        let e = (end as usize).min(self.bytes.len());
        if (offset as usize) < e {
            self.bytes[offset as usize..e].fill(0);
        }
    }

    fn block_is_zero(&self, b: u64) -> bool {
        let s = ((b * B) as usize).min(self.bytes.len());
        let e = (((b + 1) * B) as usize).min(self.bytes.len());
        self.bytes[s..e].iter().all(|&x| x == 0)
    }

    fn apply(&mut self, offset: u64, len: u64, op: Fallocate) {
        let end = offset + len;
        match op {
            Fallocate::Allocate { keep_size } => {
                if !keep_size && end as usize > self.bytes.len() {
                    self.bytes.resize(end as usize, 0);
                }
                self.mark(offset, end);
            }
            Fallocate::ZeroRange { keep_size } => {
                if !keep_size && end as usize > self.bytes.len() {
                    self.bytes.resize(end as usize, 0);
                }
                self.zero(offset, end);
                self.mark(offset, end);
            }
            Fallocate::PunchHole => {
                self.zero(offset, end);
                for b in offset / B..end.div_ceil(B) {
                    let whole = b * B >= offset && (b + 1) * B <= end;
                    if whole || self.block_is_zero(b) {
                        self.stored.remove(&b);
                    }
                }
            }
        }
    }

    fn blocks_512(&self) -> u64 {
        self.stored.len() as u64 * B / 512
    }
}

#[track_caller]
fn assert_matches(fs: &Filesystem, ino: u64, m: &Model, what: &str) {
    let attr = fs.getattr(ino).expect("getattr");
    assert_eq!(attr.size, m.bytes.len() as u64, "size after {what}");
    let got = fs.read(ino, 0, attr.size as u32 + 4096).expect("read");
    if got != m.bytes {
        let at = got.iter().zip(&m.bytes).position(|(a, b)| a != b);
        panic!("bytes after {what} differ (first at {at:?})");
    }
    assert_eq!(attr.blocks, m.blocks_512(), "st_blocks after {what}");
}

#[test]
fn each_fallocate_mode_gives_exact_bytes_sizes_and_blocks() {
    let (d, fs) = setup();
    let f = fs.create(ROOT, name("f"), 0o644, ME).expect("create").ino;
    let mut m = Model::default();
    let bytes = data(1, 100_000);
    fs.write(f, 0, &bytes).expect("write");
    m.write(0, &bytes);
    let steps: [(u64, u64, Fallocate, &str); 8] = [
        (
            200_000,
            50_000,
            Fallocate::Allocate { keep_size: false },
            "allocate past the end",
        ),
        (
            300_000,
            10_000,
            Fallocate::Allocate { keep_size: true },
            "allocate, keep size",
        ),
        (5_000, 65_000, Fallocate::PunchHole, "punch across units"),
        (
            90_000,
            30_000,
            Fallocate::ZeroRange { keep_size: false },
            "zero inside",
        ),
        (
            240_000,
            20_000,
            Fallocate::ZeroRange { keep_size: false },
            "zero past the end",
        ),
        (
            400_000,
            5_000,
            Fallocate::ZeroRange { keep_size: true },
            "zero, keep size",
        ),
        (4096, 4096, Fallocate::PunchHole, "punch one whole block"),
        (1, 10, Fallocate::PunchHole, "punch inside one block"),
    ];
    for (offset, len, op, what) in steps {
        fs.fallocate(f, offset, len, op).expect(what);
        m.apply(offset, len, op);
        assert_matches(&fs, f, &m, what);
    }
    // Stored past the end, from KEEP_SIZE: growing the file shows them as zeros.
    assert_eq!(fs.getattr(f).expect("getattr").size, 260_000);
    fs.shutdown().expect("shutdown");
    drop(fs);
    assert_fsck_clean(&d.specs);
    let fs = Filesystem::open(&d.specs).expect("reopen");
    assert_matches(&fs, f, &m, "reopen");
    drop(fs);
    // Repair keeps them too: they are meant.
    let report = stripefs_fs::filesystem::repair(&common::queues(&d.specs)).expect("repair");
    assert!(
        report.is_clean() && report.repaired.is_empty(),
        "{report:?}"
    );
    let fs = Filesystem::open(&d.specs).expect("reopen");
    assert_matches(&fs, f, &m, "repair");
    // A truncate drops the preallocated blocks past the end.
    let set = stripefs_fs::filesystem::SetAttr {
        size: Some(260_000),
        ..Default::default()
    };
    fs.setattr(f, &set).expect("truncate");
    m.stored.retain(|&b| b < 260_000u64.div_ceil(B));
    assert_matches(&fs, f, &m, "truncate");
    fs.shutdown().expect("shutdown");
    drop(fs);
    assert_fsck_clean(&d.specs);
}

#[test]
fn unsupported_fallocate_modes_are_refused() {
    for mode in [
        libc::FALLOC_FL_PUNCH_HOLE,
        libc::FALLOC_FL_COLLAPSE_RANGE,
        libc::FALLOC_FL_INSERT_RANGE,
        libc::FALLOC_FL_UNSHARE_RANGE,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
    ] {
        let e = Fallocate::from_mode(mode).expect_err("unsupported mode accepted");
        assert_eq!(e.errno(), libc::EOPNOTSUPP, "mode {mode:#x}");
    }
    assert_eq!(
        Fallocate::from_mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE).ok(),
        Some(Fallocate::PunchHole)
    );
    let (_d, fs) = setup();
    let f = fs.create(ROOT, name("f"), 0o644, ME).expect("create").ino;
    let e = fs
        .fallocate(f, 0, 0, Fallocate::PunchHole)
        .expect_err("len 0");
    assert_eq!(e.errno(), libc::EINVAL);
    let dir = fs.mkdir(ROOT, name("d"), 0o755, ME).expect("mkdir").ino;
    let e = fs
        .fallocate(dir, 0, 4096, Fallocate::Allocate { keep_size: false })
        .expect_err("directory");
    assert_eq!(e.errno(), libc::EISDIR);
}

#[test]
fn seek_data_and_hole_follow_the_extents() {
    let (_d, fs) = setup();
    let f = fs
        .create(ROOT, name("sparse"), 0o644, ME)
        .expect("create")
        .ino;
    // Data at [64K, 80K) and [200K, 204K+100), size 300K: holes elsewhere.
    fs.write(f, 65_536, &data(2, 16_384)).expect("write");
    fs.write(f, 204_800, &data(3, 4_196)).expect("write");
    fs.fallocate(f, 300_000, 1, Fallocate::Allocate { keep_size: false })
        .expect("extend");
    let seek = |offset, whence| fs.seek(f, offset, whence);
    assert_eq!(seek(0, Seek::Data).ok(), Some(65_536));
    assert_eq!(seek(70_000, Seek::Data).ok(), Some(70_000));
    assert_eq!(seek(81_920, Seek::Data).ok(), Some(204_800));
    assert_eq!(seek(0, Seek::Hole).ok(), Some(0));
    assert_eq!(seek(65_536, Seek::Hole).ok(), Some(81_920));
    assert_eq!(seek(204_800, Seek::Hole).ok(), Some(212_992));
    // The block allocated at the end is data; the end itself is a hole.
    assert_eq!(seek(213_000, Seek::Data).ok(), Some(299_008));
    assert_eq!(seek(299_008, Seek::Hole).ok(), Some(300_001));
    for whence in [Seek::Data, Seek::Hole] {
        let e = seek(300_001, whence).expect_err("past the end");
        assert_eq!(e.errno(), libc::ENXIO);
    }
    // Data only past the end (KEEP_SIZE) is no data.
    let g = fs.create(ROOT, name("g"), 0o644, ME).expect("create").ino;
    fs.fallocate(g, 0, 10, Fallocate::Allocate { keep_size: false })
        .expect("size 10");
    fs.punch_all(g);
    fs.fallocate(g, 8192, 4096, Fallocate::Allocate { keep_size: true })
        .expect("keep size");
    let e = fs.seek(g, 0, Seek::Data).expect_err("no data");
    assert!(matches!(e, FsError::PastEnd { .. }), "{e}");
}

/// Punches the whole of a file.
trait PunchAll {
    fn punch_all(&self, ino: u64);
}

impl PunchAll for Filesystem {
    fn punch_all(&self, ino: u64) {
        self.fallocate(ino, 0, 1 << 20, Fallocate::PunchHole)
            .expect("punch");
    }
}

#[test]
fn copy_crosses_units_and_keeps_holes() {
    let (d, fs) = setup();
    let src = fs.create(ROOT, name("src"), 0o644, ME).expect("create").ino;
    let dst = fs.create(ROOT, name("dst"), 0o644, ME).expect("create").ino;
    let mut s = Model::default();
    let mut t = Model::default();
    // Source: data, a hole of 5 units, data; destination: old data everywhere.
    let a = data(4, 40_000);
    let b = data(5, 30_000);
    fs.write(src, 1_000, &a).expect("write");
    fs.write(src, 1_000 + 40_000 + 5 * UNIT, &b).expect("write");
    s.write(1_000, &a);
    s.write(1_000 + 40_000 + 5 * UNIT, &b);
    let old = data(6, 300_000);
    fs.write(dst, 0, &old).expect("write");
    t.write(0, &old);
    let len = s.bytes.len() as u64 + 5_000; // past the source's end: short copy
    // Aligned with the source modulo the block: holes stay whole blocks.
    let n = fs
        .copy_file_range(CopyRange {
            src,
            src_offset: 0,
            dst,
            dst_offset: 8_192,
            len,
        })
        .expect("copy");
    assert_eq!(n, s.bytes.len() as u64);
    copy_model(&s, 0, &mut t, 8_192, n);
    assert_matches(&fs, dst, &t, "aligned copy");
    // Not aligned: every byte lands one off a block boundary.
    let n = fs
        .copy_file_range(CopyRange {
            src,
            src_offset: 500,
            dst,
            dst_offset: 100_001,
            len: 150_000,
        })
        .expect("copy");
    assert_eq!(n, 150_000);
    copy_model(&s, 500, &mut t, 100_001, n);
    let got = fs.read(dst, 0, 1 << 20).expect("read");
    assert!(got == t.bytes, "unaligned copy differs");
    // Within one file, apart: allowed; overlapping: EINVAL.
    let n = fs
        .copy_file_range(CopyRange {
            src: dst,
            src_offset: 0,
            dst,
            dst_offset: 400_000,
            len: 50_000,
        })
        .expect("copy within a file");
    let snapshot = t.clone();
    copy_model(&snapshot, 0, &mut t, 400_000, n);
    let got = fs.read(dst, 0, 1 << 20).expect("read");
    assert!(got == t.bytes, "copy within a file differs");
    let e = fs
        .copy_file_range(CopyRange {
            src: dst,
            src_offset: 0,
            dst,
            dst_offset: 10_000,
            len: 20_000,
        })
        .expect_err("overlap");
    assert_eq!(e.errno(), libc::EINVAL);
    // Past the source's end: nothing.
    let n = fs
        .copy_file_range(CopyRange {
            src,
            src_offset: 1 << 20,
            dst,
            dst_offset: 0,
            len: 10,
        })
        .expect("copy past the end");
    assert_eq!(n, 0);
    fs.shutdown().expect("shutdown");
    drop(fs);
    assert_fsck_clean(&d.specs);
    let fs = Filesystem::open(&d.specs).expect("reopen");
    let got = fs.read(dst, 0, 1 << 20).expect("read");
    assert!(got == t.bytes, "copy differs after reopen");
}

/// The model of a copy: bytes, and stored blocks (a destination block is stored when a
/// stored source byte lands in it or it holds anything but zeros).
fn copy_model(s: &Model, so: u64, t: &mut Model, to: u64, n: u64) {
    let bytes = s.bytes[so as usize..(so + n) as usize].to_vec();
    let end = to + n;
    let mut from_data = std::collections::BTreeSet::new();
    for i in 0..n {
        if s.stored.contains(&((so + i) / B)) {
            from_data.insert((to + i) / B);
        }
    }
    if t.bytes.len() < end as usize {
        t.bytes.resize(end as usize, 0);
    }
    t.bytes[to as usize..end as usize].copy_from_slice(&bytes);
    for b in to / B..end.div_ceil(B) {
        if from_data.contains(&b) || !t.block_is_zero(b) {
            t.stored.insert(b);
        } else {
            t.stored.remove(&b);
        }
    }
}

#[test]
fn exchange_swaps_a_file_and_a_directory() {
    let (d, fs) = setup();
    let a = fs.mkdir(ROOT, name("a"), 0o755, ME).expect("mkdir").ino;
    let b = fs.mkdir(ROOT, name("b"), 0o755, ME).expect("mkdir").ino;
    let file = fs.create(a, name("file"), 0o644, ME).expect("create").ino;
    let dir = fs.mkdir(b, name("dir"), 0o755, ME).expect("mkdir").ino;
    fs.mkdir(dir, name("sub"), 0o755, ME).expect("mkdir");
    let exchange = RenameFlags {
        exchange: true,
        ..RenameFlags::default()
    };
    fs.rename(a, name("file"), b, name("dir"), exchange)
        .expect("exchange");
    let check = |fs: &Filesystem| {
        assert_eq!(fs.lookup(a, name("file")).expect("a/file").ino, dir);
        assert_eq!(fs.lookup(b, name("dir")).expect("b/dir").ino, file);
        assert_eq!(
            fs.getattr(a).expect("a").nlink,
            3,
            "a gained a subdirectory"
        );
        assert_eq!(
            fs.getattr(b).expect("b").nlink,
            2,
            "b lost its subdirectory"
        );
        assert_eq!(fs.getattr(dir).expect("dir").nlink, 3);
        assert_eq!(fs.getattr(file).expect("file").nlink, 1);
        let dotdot = fs.readdir(dir, 0).expect("readdir");
        assert_eq!((dotdot[1].name.as_slice(), dotdot[1].ino), (&b".."[..], a));
        assert_eq!(fs.getattr(file).expect("file").kind, FileType::File);
    };
    check(&fs);
    // Missing target: ENOENT; a directory into itself: EINVAL.
    let e = fs
        .rename(a, name("file"), b, name("none"), exchange)
        .expect_err("no target");
    assert_eq!(e.errno(), libc::ENOENT);
    let e = fs
        .rename(ROOT, name("a"), dir, name("sub"), exchange)
        .expect_err("into itself");
    assert_eq!(e.errno(), libc::EINVAL);
    fs.shutdown().expect("shutdown");
    drop(fs);
    assert_fsck_clean(&d.specs);
    let fs = Filesystem::open(&d.specs).expect("reopen");
    check(&fs);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Random fallocates and copies against the byte model, then reopen and fsck.
    #[test]
    fn random_ranges_agree_with_the_model(ops in proptest::collection::vec(
        (0u8..6, 0u64..300_000, 1u64..90_000, 0u64..300_000), 1..12)) {
        let (d, fs) = setup();
        let f = fs.create(ROOT, name("f"), 0o644, ME).expect("create").ino;
        let g = fs.create(ROOT, name("g"), 0o644, ME).expect("create").ino;
        let mut m = Model::default();
        let source = data(9, 200_000);
        fs.write(g, 0, &source).expect("write");
        fs.fallocate(g, 50_000, 60_000, Fallocate::PunchHole).expect("punch");
        let mut gm = Model::default();
        gm.write(0, &source);
        gm.apply(50_000, 60_000, Fallocate::PunchHole);
        for (i, &(kind, offset, len, other)) in ops.iter().enumerate() {
            match kind {
                0 => {
                    let bytes = data(i as u64, len as usize);
                    fs.write(f, offset, &bytes).expect("write");
                    m.write(offset, &bytes);
                }
                1..=4 => {
                    let op = match kind {
                        1 => Fallocate::Allocate { keep_size: other % 2 == 0 },
                        2 => Fallocate::PunchHole,
                        _ => Fallocate::ZeroRange { keep_size: other % 2 == 0 },
                    };
                    fs.fallocate(f, offset, len, op).expect("fallocate");
                    m.apply(offset, len, op);
                }
                _ => {
                    let n = fs.copy_file_range(CopyRange { src: g, src_offset: other, dst: f, dst_offset: offset, len })
                        .expect("copy");
                    let want = len.min(200_000u64.saturating_sub(other));
                    prop_assert_eq!(n, want);
                    if n > 0 {
                        copy_model(&gm, other, &mut m, offset, n);
                    }
                }
            }
            let size = fs.getattr(f).expect("getattr").size;
            prop_assert_eq!(size, m.bytes.len() as u64);
            let got = fs.read(f, 0, size as u32).expect("read");
            prop_assert!(got == m.bytes, "bytes differ after op {} {:?}", i, ops[i]);
        }
        fs.shutdown().expect("shutdown");
        drop(fs);
        assert_fsck_clean(&d.specs);
        let fs = Filesystem::open(&d.specs).expect("reopen");
        let got = fs.read(f, 0, m.bytes.len() as u32).expect("read");
        prop_assert!(got == m.bytes, "bytes differ after reopen");
    }
}

#[test]
fn allocated_space_reads_zeros_when_it_held_another_files_data() {
    // Small devices: the second file can only get the space the first one freed.
    let d = formatted(3, 8 << 20, UNIT, 1 << 20);
    let fs = Filesystem::open(&d.specs).expect("open");
    let old = fs.create(ROOT, name("old"), 0o644, ME).expect("create").ino;
    let chunk = data(7, 3 * UNIT as usize);
    let mut len = 0;
    while fs.write(old, len, &chunk).is_ok() {
        len += chunk.len() as u64;
    }
    // Every stripe but the last is the old file's: the new ones reuse its space.
    let len = len - chunk.len() as u64;
    fs.unlink(ROOT, name("old")).expect("unlink");
    fs.sync().expect("sync");
    for (i, op) in [
        Fallocate::Allocate { keep_size: false },
        Fallocate::ZeroRange { keep_size: false },
    ]
    .into_iter()
    .enumerate()
    {
        let f = fs
            .create(ROOT, name(&format!("new{i}")), 0o644, ME)
            .expect("create")
            .ino;
        fs.fallocate(f, 0, len, op).expect("fallocate");
        let attr = fs.getattr(f).expect("getattr");
        assert_eq!((attr.size, attr.blocks), (len, len / 512));
        let got = fs.read(f, 0, len as u32).expect("read");
        assert!(got.iter().all(|&b| b == 0), "{op:?}: stale bytes");
        fs.unlink(ROOT, name(&format!("new{i}"))).expect("unlink");
        fs.sync().expect("sync");
    }
    fs.shutdown().expect("shutdown");
    drop(fs);
    assert_fsck_clean(&d.specs);
}
