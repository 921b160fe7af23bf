//! The stat and unlink phases: every directory of the files is listed and each entry
//! `lstat`ed (the directories shared among the threads), then every file is unlinked and
//! that made durable.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::Plan;
use super::fill::dir_path;
use crate::mounts::Mounted;
use crate::mounts::command::make_durable;

/// Seconds of the stat and unlink phases over `files` files.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rates {
    pub files: u64,
    /// Listing every directory and `lstat` of every entry, from cold caches.
    pub stat_seconds: f64,
    /// Unlinking every file, then making that durable.
    pub unlink_seconds: f64,
}

impl Rates {
    pub fn stat_rate(&self) -> f64 {
        self.files as f64 / self.stat_seconds.max(1e-9)
    }

    pub fn unlink_rate(&self) -> f64 {
        self.files as f64 / self.unlink_seconds.max(1e-9)
    }
}

/// Stats then unlinks the `made` files; an error if the listing does not find them all.
pub fn stat_and_unlink(fs: &Mounted, plan: &Plan, made: u64) -> Result<Rates> {
    let mnt = fs.path();
    let started = Instant::now();
    let seen = per_dir(mnt, plan, |path| {
        std::fs::symlink_metadata(path)
            .map(|_| ())
            .with_context(|| format!("lstat {}", path.display()))
    })?;
    let stat_seconds = started.elapsed().as_secs_f64();
    if seen != made {
        bail!("the listing found {seen} files, {made} were made");
    }
    println!(
        "files: lstat of {seen} files in {stat_seconds:.2} s ({:.0}/s)",
        seen as f64 / stat_seconds.max(1e-9)
    );
    let started = Instant::now();
    let gone = per_dir(mnt, plan, |path| {
        std::fs::remove_file(path).with_context(|| format!("unlink {}", path.display()))
    })?;
    make_durable(mnt)?;
    let unlink_seconds = started.elapsed().as_secs_f64();
    if gone != made {
        bail!("unlinked {gone} files, {made} were made");
    }
    println!(
        "files: unlink of {gone} files in {unlink_seconds:.2} s ({:.0}/s)",
        gone as f64 / unlink_seconds.max(1e-9)
    );
    Ok(Rates {
        files: made,
        stat_seconds,
        unlink_seconds,
    })
}

/// Lists every directory of the files (directory `d` by thread `d % threads`) and calls `each`
/// on every entry; returns how many there were. The first error stops every thread.
fn per_dir(mnt: &Path, plan: &Plan, each: impl Fn(&Path) -> Result<()> + Sync) -> Result<u64> {
    let count = AtomicU64::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let threads = plan.threads.max(1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (count, failure, each) = (&count, &failure, &each);
            s.spawn(move || {
                let failed = || failure.lock().map_or(true, |f| f.is_some());
                for d in (t..plan.dirs).step_by(threads) {
                    if failed() {
                        return;
                    }
                    if let Err(e) = one_dir(&dir_path(mnt, d), each, count) {
                        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(count.into_inner()),
    }
}

fn one_dir(
    dir: &Path,
    each: &(impl Fn(&Path) -> Result<()> + Sync),
    count: &AtomicU64,
) -> Result<()> {
    // Listed whole first: the unlink phase does not remove entries under an open listing.
    let paths = std::fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .with_context(|| format!("listing {}", dir.display()))?;
    for path in &paths {
        each(path)?;
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
