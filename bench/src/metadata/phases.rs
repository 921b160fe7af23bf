//! The timed phases of the metadata sweep on one filesystem: untar the tree, `find` + `du`
//! of it from cold caches, `lstat` of every entry, `rm -rf`, a large file copied in with
//! `cp`, and read back with `cat` from cold caches. Writing phases count the time to make
//! their work durable (`syncfs` + `fsync`): stripefs writes data straight to the devices
//! and a kernel filesystem into its page cache, so the time until `tar` or `cp` exits alone
//! would compare different things.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::tree::{self, ROOT_NAME, TreeStats};
use crate::mounts::command::{make_durable, timed};
use crate::mounts::{FsKind, Mounted};

/// What every filesystem is given.
pub struct Inputs {
    /// The tree's tar archive.
    pub archive: PathBuf,
    /// What the tree holds.
    pub tree: TreeStats,
    /// The large file copied in.
    pub big_file: PathBuf,
    pub big_bytes: u64,
}

/// Seconds of each phase on one filesystem.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Times {
    /// `tar -xf` until it exits.
    pub untar: f64,
    /// Then making the tree durable.
    pub untar_sync: f64,
    /// `find TREE` then `du -s TREE`, after a remount.
    pub find_du: f64,
    /// `lstat` of every entry (right after `find` + `du`).
    pub stat: f64,
    /// `rm -rf TREE`, then making that durable.
    pub rm: f64,
    /// `cp` of the large file in, then making it durable.
    pub cp: f64,
    /// `cat` of the large file to /dev/null, after a remount.
    pub cat: f64,
}

/// Makes `kind` on `devices`, mounts it at `mountpoint` and runs every phase.
pub fn run(kind: FsKind, devices: &[PathBuf], mountpoint: &Path, inputs: &Inputs) -> Result<Times> {
    kind.mkfs(devices)?;
    let mut fs = Mounted::mount(kind, devices, mountpoint)?;
    let mut t = Times::default();
    let mnt = fs.path().to_path_buf();
    let tree_dir = mnt.join(ROOT_NAME);
    t.untar = timed(
        Command::new("tar")
            .arg("-xf")
            .arg(&inputs.archive)
            .arg("-C")
            .arg(&mnt),
    )?;
    t.untar_sync = make_durable(&mnt)?;
    fs.remount()?;
    t.find_du = timed(Command::new("find").arg(&tree_dir))?;
    t.find_du += timed(Command::new("du").arg("-s").arg(&tree_dir))?;
    let started = Instant::now();
    let seen = tree::walk(&tree_dir)?;
    t.stat = started.elapsed().as_secs_f64();
    if seen != inputs.tree {
        bail!(
            "{}: the untarred tree holds {seen:?}, the archive {:?}",
            kind.name(),
            inputs.tree
        );
    }
    t.rm = timed(Command::new("rm").arg("-rf").arg(&tree_dir))?;
    t.rm += make_durable(&mnt)?;
    let big = mnt.join("big.dat");
    t.cp = timed(Command::new("cp").arg(&inputs.big_file).arg(&big))?;
    t.cp += make_durable(&mnt)?;
    fs.remount()?;
    t.cat = timed(Command::new("cat").arg(&big))?;
    let len = std::fs::metadata(&big)
        .with_context(|| format!("{}", big.display()))?
        .len();
    if len != inputs.big_bytes {
        bail!(
            "{}: the copied file has {len} bytes, not {}",
            kind.name(),
            inputs.big_bytes
        );
    }
    fs.unmount()?;
    Ok(t)
}
