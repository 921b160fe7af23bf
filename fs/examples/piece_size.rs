//! Bytes of stored metadata pieces per file.
//!
//! Builds the metadata of `N` files in 1000 directories (names like `f0123456`, the default
//! layout over four devices, 4 KiB each with one extent, or empty; times a few microseconds
//! apart, as creates through the mount), groups it into pieces as a checkpoint does, encodes
//! them with `encode_piece` and decodes them back, and reports the bytes stored per file (on
//! each replica) and the encoding and decoding speed.
//!
//! `cargo run --release -p stripefs-fs --example piece_size -- 1000000 4k`

use std::time::Instant;

use stripefs_fs::meta::pieces::DirtyPieces;
use stripefs_fs::meta::{self, Metadata, ROOT};
use stripefs_layout::ondisk::{
    EncodedPiece, InodeKind, LayoutRecord, PieceCodec, PieceEntry, Record, Timestamp, decode_piece,
    encode_all, encode_piece,
};

const DIRS: u64 = 1000;
const DEVICES: u16 = 4;

/// Applies `r` and marks the pieces it touches, as the daemon does.
fn apply(m: &mut Metadata, dirty: &mut DirtyPieces, r: Record) {
    let touch = dirty.plan(m, &r, 0);
    dirty.touch(touch, 0);
    m.apply(&r).expect("apply");
}

/// A clock that moves a few microseconds per call, like creates through the mount.
struct Clock(u64);

impl Clock {
    fn tick(&mut self) -> Timestamp {
        // xorshift for the sub-microsecond jitter
        self.0 += 5_000 + (self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48);
        Timestamp {
            secs: 1_790_000_000 + (self.0 / 1_000_000_000) as i64,
            nanos: (self.0 % 1_000_000_000) as u32,
        }
    }
}

fn build(n: u64, four_k: bool) -> (Metadata, DirtyPieces) {
    let mut clock = Clock(0);
    let mut m = Metadata::default();
    let mut dirty = DirtyPieces::new([]);
    let t = clock.tick();
    let root = meta::new_inode(ROOT, InodeKind::Dir, 0o755, 0, 0, t, None);
    apply(&mut m, &mut dirty, Record::Inode(root));
    let mut dirs = Vec::new();
    for d in 0..DIRS {
        let ino = m.next_ino();
        let r = meta::new_inode(ino, InodeKind::Dir, 0o755, 0, 0, clock.tick(), None);
        apply(&mut m, &mut dirty, Record::Inode(r));
        let name = format!("d{d:04}").into_bytes();
        apply(
            &mut m,
            &mut dirty,
            Record::Link {
                parent: ROOT,
                name,
                ino,
            },
        );
        dirs.push(ino);
    }
    let per_dir = n.div_ceil(DIRS);
    let mut device_end = [1u64 << 20; DEVICES as usize];
    for i in 0..n {
        let parent = dirs[(i / per_dir) as usize];
        let ino = m.next_ino();
        let first = (i % u64::from(DEVICES)) as u16;
        let layout = LayoutRecord {
            stripe_unit: 256 << 10,
            devices: (0..DEVICES).map(|k| (first + k) % DEVICES).collect(),
        };
        let t = clock.tick();
        let mut r = meta::new_inode(ino, InodeKind::File, 0o644, 0, 0, t, Some(layout));
        apply(&mut m, &mut dirty, Record::Inode(r.clone()));
        let name = format!("f{i:07}").into_bytes();
        apply(&mut m, &mut dirty, Record::Link { parent, name, ino });
        if four_k {
            let dev = &mut device_end[usize::from(first)];
            let extent = Record::Extent {
                ino,
                column: 0,
                object_offset: 0,
                device_offset: *dev,
                len: 4096,
            };
            apply(&mut m, &mut dirty, extent);
            *dev += 4096;
            r.size = 4096;
            r.mtime = clock.tick();
            r.ctime = r.mtime;
            apply(&mut m, &mut dirty, Record::Inode(r));
        }
    }
    (m, dirty)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let four_k = args.get(2).is_some_and(|a| a == "4k");
    let (m, mut dirty) = build(n, four_k);
    let ids = dirty.take();
    let pieces = dirty.records(&m, &ids);
    let mut raw = 0usize;
    for (_, records) in &pieces {
        let mut bytes = Vec::new();
        encode_all(records, &mut bytes);
        raw += bytes.len();
    }
    let start = Instant::now();
    let encoded: Vec<EncodedPiece> = pieces.iter().map(|(_, r)| encode_piece(r)).collect();
    let encode = start.elapsed().as_secs_f64();
    let entries: Vec<PieceEntry> = encoded
        .iter()
        .zip(&pieces)
        .map(|(p, (id, _))| p.entry(*id, vec![vec![(0, p.bytes.len() as u64)]]))
        .collect();
    let start = Instant::now();
    let mut decoded = 0;
    for (entry, piece) in entries.iter().zip(&encoded) {
        decoded += decode_piece(entry, &piece.bytes).expect("decode").len();
    }
    let decode = start.elapsed().as_secs_f64();
    let stored: u64 = encoded.iter().map(|p| u64::from(p.len)).sum();
    let padded: u64 = encoded.iter().map(|p| p.bytes.len() as u64).sum();
    let lz4 = encoded
        .iter()
        .filter(|p| p.codec == PieceCodec::Lz4)
        .count();
    let per = |b: u64| b as f64 / n as f64;
    println!(
        "{n} files ({}) in {DIRS} directories: {} pieces ({lz4} lz4), {decoded} records",
        if four_k { "4 KiB each" } else { "empty" },
        pieces.len(),
    );
    println!(
        "records {:.1} B/file; stored {:.1} B/file, padded to 4 KiB {:.1} B/file (per replica)",
        per(raw as u64),
        per(stored),
        per(padded)
    );
    println!(
        "encode_piece {:.2} s ({:.0} MB/s of records), decode_piece {:.2} s ({:.0} MB/s of records, records decoded too)",
        encode,
        raw as f64 / encode / 1e6,
        decode,
        raw as f64 / decode / 1e6
    );
}
