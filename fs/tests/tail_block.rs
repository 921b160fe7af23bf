//! The last partly written block of a file, kept by the POSIX write path so that the next
//! write does not read it back: appends in pieces that are not multiples of the block read
//! nothing from the devices, and whatever else writes the file (a registered write, a
//! truncate) makes the next append read the devices again, so that no byte is lost.

mod common;

use std::sync::Arc;

use stripefs_fs::filesystem::{self, Filesystem, MkfsOptions, SetAttr};
use stripefs_mapping::Buffer;

use common::{ME, ROOT, data, devices, name};

/// tar's record: not a multiple of the 4 KiB block.
const RECORD: usize = 10 << 10;

fn bytes_read(fs: &Filesystem) -> u64 {
    fs.devices().iter().map(|d| d.stats().bytes_read).sum()
}

/// Appends `bytes` in `RECORD`-sized writes from `offset`.
fn append(fs: &Filesystem, ino: u64, offset: u64, bytes: &[u8]) {
    for (i, piece) in bytes.chunks(RECORD).enumerate() {
        let at = offset + (i * RECORD) as u64;
        fs.write(ino, at, piece).expect("write");
    }
}

fn read_all(fs: &Filesystem, ino: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        let piece = fs
            .read(ino, out.len() as u64, (len - out.len()).min(1 << 20) as u32)
            .expect("read");
        assert!(!piece.is_empty(), "short file at {}", out.len());
        out.extend_from_slice(&piece);
    }
    out
}

fn open_fs() -> (common::Devices, Arc<Filesystem>) {
    let d = devices(2, 64 << 20);
    filesystem::mkfs(
        &d.specs,
        &MkfsOptions {
            stripe_unit: 64 << 10,
            ..MkfsOptions::default()
        },
    )
    .expect("mkfs");
    let fs = Filesystem::open(&d.specs).expect("open");
    (d, fs)
}

#[test]
fn appends_in_unaligned_pieces_read_nothing_back_and_read_back_exactly() {
    let (_d, fs) = open_fs();
    let f = fs.create(ROOT, name("a"), 0o644, ME).expect("create");
    let model = data(1, 300 * RECORD + 123);
    let before = bytes_read(&fs);
    append(&fs, f.ino, 0, &model);
    assert_eq!(
        bytes_read(&fs),
        before,
        "every partial block an append starts in was the one the previous append kept"
    );
    assert!(
        read_all(&fs, f.ino, model.len()) == model,
        "contents differ"
    );
}

#[test]
fn a_registered_write_into_the_kept_block_is_not_overwritten_by_the_next_append() {
    let (_d, fs) = open_fs();
    let f = fs.create(ROOT, name("b"), 0o644, ME).expect("create");
    let mut model = data(2, RECORD);
    append(&fs, f.ino, 0, &model);
    // The kept block is 8K..12K; a registered write changes 9000..9100 inside it.
    let patch = data(3, 100);
    let buffer = Buffer::new(1 << 20).expect("buffer");
    buffer.write_at(0, &patch).expect("fill");
    let mapping = fs.register(f.ino, &buffer).expect("register");
    fs.write_registered(&mapping, 9000, 0, 100)
        .expect("registered write");
    fs.unregister(&mapping).expect("unregister");
    model[9000..9100].copy_from_slice(&patch);
    let more = data(4, RECORD);
    append(&fs, f.ino, RECORD as u64, &more);
    model.extend_from_slice(&more);
    assert!(
        read_all(&fs, f.ino, model.len()) == model,
        "the registered write was lost"
    );
}

#[test]
fn a_truncate_into_the_kept_block_reads_zeros_after_the_next_append() {
    let (_d, fs) = open_fs();
    let f = fs.create(ROOT, name("c"), 0o644, ME).expect("create");
    let mut model = data(5, RECORD);
    append(&fs, f.ino, 0, &model);
    // Down to 9000 (inside the kept block 8K..12K), then an append from 10240 leaves
    // 9000..10240 as zeros.
    let set = SetAttr {
        size: Some(9000),
        ..SetAttr::default()
    };
    fs.setattr(f.ino, &set).expect("truncate");
    model.truncate(9000);
    model.resize(RECORD, 0);
    let more = data(6, RECORD);
    append(&fs, f.ino, RECORD as u64, &more);
    model.extend_from_slice(&more);
    assert!(
        read_all(&fs, f.ino, model.len()) == model,
        "bytes past the truncate are not zeros"
    );
}
