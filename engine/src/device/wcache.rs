//! The volatile write cache of an emulated device (`wcache=on`), and simulated power cuts.
//!
//! Writes go to the backing as on any device, so reads see them at once; what the cache adds
//! is the knowledge of what is not durable yet. For every write completed since the last
//! flush it keeps the offset, the bytes before the write (its pre-image, read when the
//! command is queued) and the bytes after it (its post-image, read back when its completion
//! is handled). A flush forgets the writes completed before it began. A power cut writes the
//! pre-images back in reverse order, which leaves exactly the durable contents, then applies
//! the post-images a [`PowerCut`] policy keeps, in submission order.
//!
//! Pre-images taken at queue time are exact because the filesystem never has two
//! overlapping writes in flight: nothing else changes the range between the read and the
//! write.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::image::Image;

/// What a simulated power cut keeps of the writes not yet flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerCut {
    /// Every unflushed write is lost: the device holds its durable contents.
    DropAll,
    /// Every unflushed write survives (as if the cache had been flushed).
    KeepAll,
    /// Each unflushed write survives with probability 1/2, and at most one surviving write
    /// is torn (only some of its blocks land); the same seed makes the same choices.
    Random { seed: u64 },
}

/// What a power cut did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerCutReport {
    /// Writes completed since the last flush (or still in flight) when the power went.
    pub unflushed: usize,
    /// Of those, how many landed, fully or torn.
    pub kept: usize,
    /// Of the kept ones, how many landed only partly (0 or 1).
    pub torn: usize,
}

/// A write on its way to the backing: what its range held before, and its place in
/// submission order. Kept with the command until its completion is handled.
pub(crate) struct Pending {
    seq: u64,
    pre: Image,
}

/// A completed write that no flush has covered yet.
struct Unflushed {
    /// Submission order.
    seq: u64,
    /// Completion order, compared with a flush's start.
    done: u64,
    offset: u64,
    pre: Image,
    /// `None` if reading it back failed: such a write can only be dropped by a power cut.
    post: Option<Image>,
}

#[derive(Default)]
struct CacheState {
    writes: Vec<Unflushed>,
    /// Writes completed so far (the next one's `done`).
    completed: u64,
}

/// The write cache of one device.
#[derive(Default)]
pub(super) struct WriteCache {
    /// The power is cut: every command fails until the device is opened again.
    off: AtomicBool,
    next_seq: AtomicU64,
    state: Mutex<CacheState>,
}

impl WriteCache {
    /// Whether a power cut has switched the device off.
    pub(super) fn is_off(&self) -> bool {
        self.off.load(Ordering::Acquire)
    }

    /// Switches the device off; false if it already was.
    pub(super) fn switch_off(&self) -> bool {
        !self.off.swap(true, Ordering::AcqRel)
    }

    /// Takes the pre-image of a write of `len` bytes at `offset`, before it is queued.
    pub(super) fn before_write(&self, file: &File, offset: u64, len: u64) -> io::Result<Pending> {
        let pre = Image::read(file, offset, image_len(len)?)?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        Ok(Pending { seq, pre })
    }

    /// A write completed (successfully or not: it may have changed the backing either way).
    pub(super) fn completed(&self, pending: Pending, offset: u64, post: Option<Image>) {
        let mut state = self.state.lock();
        let done = state.completed;
        state.completed += 1;
        state.writes.push(Unflushed {
            seq: pending.seq,
            done,
            offset,
            pre: pending.pre,
            post,
        });
    }

    /// A flush begins: returns the mark to hand to [`Self::flushed`] once it succeeded.
    pub(super) fn flush_begins(&self) -> u64 {
        self.state.lock().completed
    }

    /// A flush that began at `mark` succeeded: the writes completed before it are durable.
    pub(super) fn flushed(&self, mark: u64) {
        self.state.lock().writes.retain(|w| w.done >= mark);
    }

    /// Puts the backing back to its durable contents plus what `policy` keeps of the
    /// unflushed writes; `block` is the unit a torn write is cut in. Nothing may be in
    /// flight on the device.
    pub(super) fn cut(
        &self,
        file: &File,
        block: usize,
        policy: PowerCut,
    ) -> io::Result<PowerCutReport> {
        let mut writes = std::mem::take(&mut self.state.lock().writes);
        writes.sort_by_key(|w| w.seq);
        for w in writes.iter().rev() {
            w.pre.write_to(file, w.offset)?;
        }
        let fates = fates(&writes, block, policy);
        for (w, fate) in writes.iter().zip(&fates) {
            apply(file, w, fate, block)?;
        }
        Ok(PowerCutReport {
            unflushed: writes.len(),
            kept: fates.iter().filter(|f| !matches!(f, Fate::Dropped)).count(),
            torn: fates.iter().filter(|f| matches!(f, Fate::Torn(_))).count(),
        })
    }
}

/// A command length as a buffer length.
fn image_len(len: u64) -> io::Result<usize> {
    usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// What a power cut does with one unflushed write.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Dropped,
    Kept,
    /// Only the blocks marked `true` land.
    Torn(Vec<bool>),
}

/// The fate of each write (in submission order) under `policy`.
fn fates(writes: &[Unflushed], block: usize, policy: PowerCut) -> Vec<Fate> {
    let keep = |w: &Unflushed| match w.post {
        Some(_) => Fate::Kept,
        None => Fate::Dropped,
    };
    match policy {
        PowerCut::DropAll => writes.iter().map(|_| Fate::Dropped).collect(),
        PowerCut::KeepAll => writes.iter().map(keep).collect(),
        PowerCut::Random { seed } => random_fates(writes, block, &mut SplitMix64(seed)),
    }
}

/// Keeps each write with probability 1/2; then, half the time, tears one kept write of two
/// blocks or more.
fn random_fates(writes: &[Unflushed], block: usize, rng: &mut SplitMix64) -> Vec<Fate> {
    let blocks = |w: &Unflushed| w.pre.len() / block.max(1);
    let mut fates: Vec<Fate> = writes
        .iter()
        .map(|w| match rng.coin() && w.post.is_some() {
            true => Fate::Kept,
            false => Fate::Dropped,
        })
        .collect();
    let tearable: Vec<usize> = (0..writes.len())
        .filter(|&i| fates[i] == Fate::Kept && blocks(&writes[i]) >= 2)
        .collect();
    if !tearable.is_empty() && rng.coin() {
        let i = tearable[rng.below(tearable.len())];
        fates[i] = Fate::Torn(torn_mask(blocks(&writes[i]), rng));
    }
    fates
}

/// Which of `blocks` blocks land: a random subset that is neither empty nor complete.
fn torn_mask(blocks: usize, rng: &mut SplitMix64) -> Vec<bool> {
    let mut mask: Vec<bool> = (0..blocks).map(|_| rng.coin()).collect();
    let landed = mask.iter().filter(|&&b| b).count();
    if landed == 0 || landed == blocks {
        let i = rng.below(blocks);
        mask[i] = !mask[i];
    }
    mask
}

/// Writes what `fate` keeps of `w` (its durable contents are already in place).
fn apply(file: &File, w: &Unflushed, fate: &Fate, block: usize) -> io::Result<()> {
    let Some(post) = &w.post else {
        return Ok(());
    };
    match fate {
        Fate::Dropped => Ok(()),
        Fate::Kept => post.write_to(file, w.offset),
        Fate::Torn(mask) => mask
            .iter()
            .enumerate()
            .filter(|(_, landed)| **landed)
            .try_for_each(|(i, _)| post.write_part(file, w.offset, i * block, block)),
    }
}

/// splitmix64: a small deterministic generator, so a seed replays the same power cut.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability 1/2.
    fn coin(&mut self) -> bool {
        self.next() >> 63 == 1
    }

    /// Uniform in `0..n` (n > 0; the bias of the modulo is negligible here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const BLOCK: usize = 4096;

    /// A plain file of 4 blocks of byte 0, standing in for a backing.
    fn backing() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
        let path = dir.path().join("backing");
        std::fs::write(&path, vec![0u8; 4 * BLOCK]).expect("file");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        (dir, file)
    }

    /// Writes `blocks` blocks of `byte` at block `at` through the cache's bookkeeping.
    fn write(cache: &WriteCache, file: &File, at: usize, blocks: usize, byte: u8) {
        let (offset, len) = ((at * BLOCK) as u64, blocks * BLOCK);
        let pending = cache.before_write(file, offset, len as u64).expect("pre");
        file.write_all_at(&vec![byte; len], offset).expect("write");
        let post = Image::read(file, offset, len).expect("post");
        cache.completed(pending, offset, Some(post));
    }

    fn contents(file: &File) -> Vec<u8> {
        let mut all = vec![0u8; 4 * BLOCK];
        file.read_exact_at(&mut all, 0).expect("read");
        all
    }

    fn blocks(bytes: &[u8]) -> Vec<u8> {
        bytes.chunks(BLOCK).map(|b| b[0]).collect()
    }

    #[test]
    fn drop_all_restores_the_flushed_contents() {
        let (_dir, file) = backing();
        let cache = WriteCache::default();
        write(&cache, &file, 0, 1, 1);
        let mark = cache.flush_begins();
        write(&cache, &file, 1, 1, 2); // completes during the flush: not covered
        cache.flushed(mark);
        write(&cache, &file, 0, 2, 3); // overwrites a durable and an unflushed block
        write(&cache, &file, 1, 1, 4);
        let report = cache.cut(&file, BLOCK, PowerCut::DropAll).expect("cut");
        assert_eq!(
            report,
            PowerCutReport {
                unflushed: 3,
                kept: 0,
                torn: 0
            }
        );
        assert_eq!(blocks(&contents(&file)), [1, 0, 0, 0]);
    }

    #[test]
    fn keep_all_keeps_the_last_contents() {
        let (_dir, file) = backing();
        let cache = WriteCache::default();
        write(&cache, &file, 0, 2, 3);
        write(&cache, &file, 1, 2, 4);
        let report = cache.cut(&file, BLOCK, PowerCut::KeepAll).expect("cut");
        assert_eq!((report.unflushed, report.kept, report.torn), (2, 2, 0));
        assert_eq!(blocks(&contents(&file)), [3, 4, 4, 0]);
    }

    #[test]
    fn random_cuts_replay_and_tear_at_most_one_write() {
        let mut torn = 0;
        for seed in 0..64 {
            let run = || {
                let (_dir, file) = backing();
                let cache = WriteCache::default();
                write(&cache, &file, 0, 2, 5);
                write(&cache, &file, 2, 2, 6);
                let report = cache.cut(&file, BLOCK, PowerCut::Random { seed });
                (report.expect("cut"), blocks(&contents(&file)))
            };
            let (report, image) = run();
            assert_eq!(run(), (report, image.clone()), "seed {seed} replays");
            assert!(report.torn <= 1 && report.kept <= 2);
            assert!(image[..2].iter().all(|&b| b == 0 || b == 5));
            assert!(image[2..].iter().all(|&b| b == 0 || b == 6));
            torn += report.torn;
        }
        assert!(torn > 0, "no seed tore a write");
    }

    #[test]
    fn torn_masks_are_proper_subsets() {
        let mut rng = SplitMix64(7);
        for blocks in 2..10 {
            for _ in 0..100 {
                let landed = torn_mask(blocks, &mut rng).iter().filter(|&&b| b).count();
                assert!(landed > 0 && landed < blocks);
            }
        }
    }
}
