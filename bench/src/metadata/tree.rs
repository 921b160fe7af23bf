//! The tree the metadata sweep untars: made from a seed, so every run and every filesystem
//! gets the same names, sizes and bytes. Its shape is that of a source tree or a small
//! dataset: three levels of directories, many small files (log-uniform sizes, 64 B to
//! 64 KiB) and a few larger ones (128 KiB to 1 MiB) that hold most of the bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::mounts::command::run_quiet;

/// How big a tree to make.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Shape {
    /// Directories at each level below the tree's root (top, middle, bottom).
    pub fanout: [usize; 3],
    /// Regular files, spread over every directory.
    pub files: usize,
    /// Share of the files that are large, in thousandths.
    pub large_permille: u64,
}

impl Shape {
    /// About 9,400 entries and 270 MiB, like the tree of issue 11.
    pub const FULL: Shape = Shape {
        fanout: [10, 7, 9],
        files: 8_690,
        large_permille: 40,
    };
    /// About 640 entries and 20 MiB, for `--quick`.
    pub const QUICK: Shape = Shape {
        fanout: [2, 4, 6],
        files: 580,
        large_permille: 40,
    };
}

/// What a made tree holds (what the filesystem must show after the untar).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeStats {
    /// Directories and files, the tree's root excluded.
    pub entries: u64,
    pub dirs: u64,
    pub files: u64,
    /// Bytes of every file.
    pub bytes: u64,
}

/// The name of the tree's root directory inside the archive.
pub const ROOT_NAME: &str = "tree";

/// xorshift64*: deterministic and good enough for sizes and placements.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// The size of one file: log-uniform small, or uniform large.
fn file_size(rng: &mut Rng, large_permille: u64) -> u64 {
    if rng.range(0, 1000) < large_permille {
        return rng.range(128 << 10, (1 << 20) + 1);
    }
    // 2^(6 + u*10) for u uniform in [0, 1): 64 B to 64 KiB.
    let exponent = 6.0 + (rng.range(0, 1 << 20) as f64 / f64::from(1 << 20)) * 10.0;
    2f64.powf(exponent) as u64
}

/// Makes the tree under `parent/tree` and returns what it holds.
pub fn make(parent: &Path, shape: Shape) -> Result<TreeStats> {
    let root = parent.join(ROOT_NAME);
    let mut dirs: Vec<PathBuf> = vec![root.clone()];
    let mut level = vec![root.clone()];
    for (depth, &fanout) in shape.fanout.iter().enumerate() {
        let mut next = Vec::with_capacity(level.len() * fanout);
        for dir in &level {
            for i in 0..fanout {
                next.push(dir.join(format!("d{depth}-{i:02}")));
            }
        }
        dirs.extend(next.iter().cloned());
        level = next;
    }
    for dir in &dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let mut stats = TreeStats {
        dirs: dirs.len() as u64 - 1,
        ..TreeStats::default()
    };
    let mut rng = Rng(0x5EED_0000_0000_0011);
    let mut block = Vec::new();
    for i in 0..shape.files {
        let dir = &dirs[rng.range(0, dirs.len() as u64) as usize];
        let size = file_size(&mut rng, shape.large_permille);
        let path = dir.join(format!("f{i:05}.dat"));
        block.resize(size as usize, 0);
        stripefs_engine::pattern::fill(i as u64 + 1, 0, &mut block);
        std::fs::write(&path, &block).with_context(|| format!("writing {}", path.display()))?;
        stats.files += 1;
        stats.bytes += size;
    }
    stats.entries = stats.dirs + stats.files;
    Ok(stats)
}

/// Makes the tree in `scratch` and packs it into `scratch/tree.tar` (the tree itself is
/// removed again); returns the archive and what the tree holds.
pub fn archive(scratch: &Path, shape: Shape) -> Result<(PathBuf, TreeStats)> {
    let stats = make(scratch, shape)?;
    let tar = scratch.join("tree.tar");
    run_quiet(
        Command::new("tar")
            .arg("-C")
            .arg(scratch)
            .arg("-cf")
            .arg(&tar)
            .arg(ROOT_NAME),
    )
    .context("packing the metadata sweep's tree")?;
    let tree = scratch.join(ROOT_NAME);
    std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    Ok((tar, stats))
}

/// Writes `size` bytes of the test pattern to `path` (the large file copied in).
pub fn big_file(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut block = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let len = (size - at).min(block.len() as u64) as usize;
        stripefs_engine::pattern::fill(0xB16, at, &mut block[..len]);
        file.write_all(&block[..len])
            .with_context(|| format!("writing {}", path.display()))?;
        at += len as u64;
    }
    Ok(())
}

/// What the tree under `root` holds, by walking it with `lstat` (the sweep's stat phase,
/// and its check that the untar put everything there).
pub fn walk(root: &Path) -> Result<TreeStats> {
    let mut stats = TreeStats::default();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))?;
        for entry in entries {
            let path = entry.with_context(|| format!("{}", dir.display()))?.path();
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("lstat {}", path.display()))?;
            stats.entries += 1;
            if meta.is_dir() {
                stats.dirs += 1;
                pending.push(path);
            } else {
                stats.files += 1;
                stats.bytes += meta.len();
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_tree_is_the_same_every_time() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let made = make(a.path(), Shape::QUICK).expect("make");
        assert_eq!(made, make(b.path(), Shape::QUICK).expect("make again"));
        assert_eq!(made.dirs, 2 + 8 + 48);
        assert_eq!(made.files, 580);
        assert_eq!(walk(&a.path().join(ROOT_NAME)).expect("walk"), made);
        let files = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            let mut out = Vec::new();
            let mut dirs = vec![root.join(ROOT_NAME)];
            while let Some(dir) = dirs.pop() {
                for e in std::fs::read_dir(&dir).expect("read_dir") {
                    let path = e.expect("entry").path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else {
                        let rel = path.strip_prefix(root).expect("prefix").to_path_buf();
                        out.push((rel, std::fs::read(&path).expect("read")));
                    }
                }
            }
            out.sort();
            out
        };
        let (x, y) = (files(a.path()), files(b.path()));
        assert_eq!(x.len(), 580);
        assert!(x == y, "two trees made from the same seed differ");
    }
}
