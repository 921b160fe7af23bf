//! `repair` (what `stripefs fsck --repair` runs) over real O_DIRECT device files: each test
//! damages a filesystem the way a crash or a bug would, checks that fsck sees it, repairs,
//! and checks the result (fsck clean, files intact); damage that has no safe repair is
//! refused with the reason and nothing is written.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use common::{Devices, ME, ROOT, data, fsck, queues};
use stripefs_engine::DeviceQueue;
use stripefs_fs::filesystem::{Filesystem, FsckReport, repair};
use stripefs_layout::ondisk::{
    Record, Superblock, decode_checkpoint_header, decode_checkpoint_table, decode_piece,
    encode_checkpoint,
};

fn devices() -> Devices {
    common::formatted(3, 48 << 20, 64 << 10, 2 << 20)
}

fn open(d: &Devices) -> Vec<DeviceQueue> {
    queues(&d.specs)
}

fn check(d: &Devices) -> FsckReport {
    fsck(&d.specs)
}

/// Two files of known contents, unmounted cleanly.
fn populated() -> (Devices, Vec<(String, Vec<u8>)>) {
    let d = devices();
    let files = vec![
        ("a".to_string(), data(1, 300_000)),
        ("b".to_string(), data(2, 700_001)),
    ];
    let fs = Filesystem::open(&d.specs).expect("mount");
    for (n, bytes) in &files {
        let ino = fs
            .create(ROOT, OsStr::new(n), 0o644, ME)
            .expect("create")
            .ino;
        fs.write(ino, 0, bytes).expect("write");
    }
    fs.shutdown().expect("unmount");
    (d, files)
}

fn assert_files(d: &Devices, files: &[(String, Vec<u8>)]) {
    let fs = Filesystem::open(&d.specs).expect("mount after the repair");
    for (n, bytes) in files {
        let attr = fs.lookup(ROOT, OsStr::new(n)).expect("file");
        let got = fs.read(attr.ino, 0, attr.size as u32).expect("read");
        assert!(&got == bytes, "{n} differs after the repair");
    }
    fs.shutdown().expect("unmount");
}

fn superblock(path: &PathBuf) -> Superblock {
    let mut block = vec![0u8; 4096];
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut block, 0))
        .expect("read superblock");
    Superblock::decode(&block).expect("superblock")
}

fn slot_len(sb: &Superblock) -> u64 {
    (sb.meta_len / 4) / 4096 * 4096
}

/// Every record of the checkpoint whose slot is `slot`, read from its pieces on replica
/// `replica` (at `path`): inode records first, as a version 1 checkpoint holds them.
fn checkpoint_records(slot: &[u8], path: &PathBuf, replica: usize) -> Vec<Record> {
    let header = decode_checkpoint_header(slot).expect("checkpoint header");
    let table = decode_checkpoint_table(header, &slot[4096..]).expect("piece table");
    let f = std::fs::File::open(path).expect("open replica");
    let mut records: Vec<Record> = Vec::new();
    for entry in &table.pieces {
        let mut bytes = Vec::new();
        for &(offset, len) in &entry.replicas[replica] {
            let mut run = vec![0u8; len as usize];
            f.read_exact_at(&mut run, offset).expect("read piece");
            bytes.extend(run);
        }
        records.extend(decode_piece(entry, &bytes).expect("piece"));
    }
    let (mut inodes, rest): (Vec<Record>, Vec<Record>) = records
        .into_iter()
        .partition(|r| matches!(r, Record::Inode(_)));
    inodes.extend(rest);
    inodes
}

/// Reads the newest checkpoint, lets `edit` change its records, and writes the result as
/// the next generation on both replicas (as a buggy writer would have), in the older format
/// that holds the records themselves.
fn rewrite_checkpoint(d: &Devices, edit: impl Fn(&mut Vec<Record>)) {
    let generation = check(d).checkpoint_generation;
    for (replica, path) in d.paths[..2].iter().enumerate() {
        let sb = superblock(path);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open replica");
        let mut slot = vec![0u8; slot_len(&sb) as usize];
        f.read_exact_at(&mut slot, sb.meta_offset + (generation % 2) * slot_len(&sb))
            .expect("read checkpoint");
        let mut records = checkpoint_records(&slot, path, replica);
        edit(&mut records);
        let image = encode_checkpoint(generation + 1, &records);
        f.write_all_at(
            &image,
            sb.meta_offset + ((generation + 1) % 2) * slot_len(&sb),
        )
        .expect("write checkpoint");
    }
}

fn ino_of(records: &[Record], name: &str) -> u64 {
    records
        .iter()
        .find_map(|r| match r {
            Record::Link { name: n, ino, .. } if n == name.as_bytes() => Some(*ino),
            _ => None,
        })
        .expect("linked")
}

#[test]
fn a_clean_filesystem_needs_nothing() {
    let (d, files) = populated();
    let before = check(&d).checkpoint_generation;
    let report = repair(&open(&d)).expect("repair");
    assert!(
        report.is_clean() && report.repaired.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        check(&d).checkpoint_generation,
        before,
        "nothing was written"
    );
    assert_files(&d, &files);
}

#[test]
fn orphans_and_their_space_are_freed() {
    let d = devices();
    {
        let fs = Filesystem::open(&d.specs).expect("mount");
        let ino = fs
            .create(ROOT, OsStr::new("o"), 0o644, ME)
            .expect("create")
            .ino;
        fs.write(ino, 0, &data(3, 1 << 20)).expect("write");
        fs.open_file(ino).expect("open");
        fs.unlink(ROOT, OsStr::new("o")).expect("unlink while open");
        fs.sync().expect("commit");
        // Crash with the file still open.
    }
    let found = check(&d);
    assert!(found.is_clean() && found.orphans == 1, "{found:?}");
    let report = repair(&open(&d)).expect("repair");
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report
            .repaired
            .iter()
            .any(|r| r.contains("freed orphan") && r.contains("1048576 bytes")),
        "{report:?}"
    );
    let after = check(&d);
    assert!(
        after.is_clean() && after.orphans == 0 && after.bytes_stored == 0,
        "{after:?}"
    );
}

#[test]
fn extents_past_the_end_are_released() {
    let (d, files) = populated();
    // File b loses its size but keeps its extents (what a size and its extents logged apart
    // and a crash between them left).
    rewrite_checkpoint(&d, |records| {
        let b = ino_of(records, "b");
        for r in records.iter_mut() {
            if let Record::Inode(i) = r
                && i.ino == b
            {
                i.size = 100_000;
            }
        }
    });
    let found = check(&d);
    assert!(
        found.problems.iter().any(|p| p.contains("beyond")),
        "fsck does not see the extents past the end: {found:?}"
    );
    let report = repair(&open(&d)).expect("repair");
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report.repaired.iter().any(|r| r.contains("past its end")),
        "{report:?}"
    );
    assert!(check(&d).is_clean());
    let mut files = files;
    files[1].1.truncate(100_000);
    assert_files(&d, &files);
}

#[test]
fn a_torn_checkpoint_is_rewritten_from_the_older_one() {
    let (d, files) = populated();
    let generation = check(&d).checkpoint_generation;
    // A newer checkpoint whose header is valid but whose payload is not there.
    rewrite_checkpoint(&d, |_| {});
    for path in &d.paths[..2] {
        let sb = superblock(path);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        f.write_all_at(
            &[0x5A; 4096],
            sb.meta_offset + ((generation + 1) % 2) * slot_len(&sb) + 4096,
        )
        .expect("tear");
    }
    let found = check(&d);
    assert!(
        found.is_clean() && !found.passed_over.is_empty(),
        "{found:?}"
    );
    let report = repair(&open(&d)).expect("repair");
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report.repaired.iter().any(|r| r.contains("passing over")),
        "{report:?}"
    );
    let after = check(&d);
    assert!(after.passed_over.is_empty(), "still torn: {after:?}");
    assert_eq!(
        after.checkpoint_generation,
        generation + 1,
        "the torn slot is rewritten"
    );
    assert_files(&d, &files);
}

#[test]
fn space_claimed_by_two_files_is_refused_and_nothing_is_written() {
    let (d, _) = populated();
    rewrite_checkpoint(&d, |records| {
        let (a, b) = (ino_of(records, "a"), ino_of(records, "b"));
        let a_extent = records.iter().find_map(|r| match r {
            Record::Extent {
                ino,
                column,
                device_offset,
                ..
            } if *ino == a => Some((*column, *device_offset)),
            _ => None,
        });
        let (column, device_offset) = a_extent.expect("a has an extent");
        for r in records.iter_mut() {
            if let Record::Extent {
                ino,
                column: c,
                device_offset: off,
                ..
            } = r
                && *ino == b
                && *c == column
            {
                *off = device_offset;
                break;
            }
        }
    });
    let before = check(&d);
    assert!(!before.is_clean(), "fsck does not see the double claim");
    let report = repair(&open(&d)).expect("repair");
    assert!(!report.is_clean());
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.contains("overlaps") && r.contains("no safe repair")),
        "{report:?}"
    );
    assert_eq!(
        check(&d).checkpoint_generation,
        before.checkpoint_generation,
        "a refused repair wrote something"
    );
}
