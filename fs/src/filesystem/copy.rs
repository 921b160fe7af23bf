//! `copy_file_range` inside the daemon: bytes go from the source file's extents on the
//! devices, through the daemon's bounce buffers, to fresh space of the destination, never
//! through the caller's memory. The destination's blocks are rewritten copy-on-write (see
//! `rewrite`) and recorded in one change, so a crash shows the destination range entirely
//! before or entirely after the copy.
//!
//! Holes stay holes: a destination block that receives no stored source byte and ends up all
//! zeros is left (or made) a hole instead of being given storage.

use super::Filesystem;
use super::data::{check_range, resolve, round_down, round_up};
use super::error::FsError;
use super::format::BLOCK_SIZE;
use super::now;
use super::rewrite::{Blocks, Fate, Rewrite};

/// One copy: `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRange {
    pub src: u64,
    pub src_offset: u64,
    pub dst: u64,
    pub dst_offset: u64,
    pub len: u64,
}

impl Filesystem {
    /// Copies up to `c.len` bytes (fewer at the source's end); returns the bytes copied.
    /// Overlapping ranges of one file are refused (EINVAL), as on Linux.
    pub fn copy_file_range(&self, c: CopyRange) -> Result<u64, FsError> {
        check_range(c.src_offset, c.len)?;
        check_range(c.dst_offset, c.len)?;
        if c.src == c.dst
            && c.src_offset < c.dst_offset + c.len
            && c.dst_offset < c.src_offset + c.len
        {
            return Err(FsError::invalid(
                "copy_file_range: source and destination ranges of one file overlap",
            ));
        }
        let (src_lock, dst_lock) = (self.data_lock(c.src), self.data_lock(c.dst));
        // Locks in inode order, so that two opposite copies cannot wait for each other.
        let (_shared, _exclusive);
        if c.src == c.dst {
            _exclusive = dst_lock.write();
        } else if c.src < c.dst {
            _shared = Some(src_lock.read());
            _exclusive = dst_lock.write();
        } else {
            _exclusive = dst_lock.write();
            _shared = Some(src_lock.read());
        }
        let src_size = self.file_size(c.src)?;
        self.file_size(c.dst)?;
        let n = c.len.min(src_size.saturating_sub(c.src_offset));
        if n == 0 {
            return Ok(0);
        }
        let end = c.dst_offset + n;
        let edit = |b: Blocks<'_>| self.fill_copy(c, end, b);
        let (head, tail) = (round_down(c.dst_offset), round_down(end - 1));
        let (i0, i1) = (round_up(c.dst_offset), round_down(end));
        let body = |rw: &mut Rewrite| {
            // Partial blocks at the ends keep their other bytes: read them first.
            if c.dst_offset != head {
                self.rewrite_range(rw, (head, head + BLOCK_SIZE), true, edit)?;
            }
            if end != round_up(end) && (tail != head || c.dst_offset == head) {
                self.rewrite_range(rw, (tail, tail + BLOCK_SIZE), true, edit)?;
            }
            if i0 < i1 {
                self.rewrite_range(rw, (i0, i1), false, edit)?;
            }
            Ok(())
        };
        self.rewrite(c.dst, body, |r| {
            let t = now();
            r.size = r.size.max(end);
            r.mtime = t;
            r.ctime = t;
        })?;
        Ok(n)
    }

    /// Puts the source bytes that land in a window of destination blocks into it and sets
    /// each block's fate: stored if a stored source byte lands in it or it holds anything
    /// but zeros; otherwise a hole.
    fn fill_copy(&self, c: CopyRange, end: u64, b: Blocks<'_>) -> Result<(), FsError> {
        let window_end = b.start + b.bytes.len() as u64;
        let (x0, x1) = (c.dst_offset.max(b.start), end.min(window_end));
        let s0 = c.src_offset + (x0 - c.dst_offset);
        let s1 = s0 + (x1 - x0);
        let slot = (x0 - b.start) as usize..(x1 - b.start) as usize;
        self.read_bounced(c.src, s0, &mut b.bytes[slot])?;
        // Stored source ranges, as file offsets of the source.
        let r0 = round_down(s0);
        let stored: Vec<(u64, u64)> = resolve(&self.meta.read(), c.src, r0, round_up(s1) - r0)?
            .iter()
            .filter(|p| p.device_offset.is_some())
            .map(|p| (r0 + p.request_offset, r0 + p.request_offset + p.len))
            .collect();
        for (i, fate) in b.fates.iter_mut().enumerate() {
            let at = i as u64 * BLOCK_SIZE;
            let (d0, d1) = ((b.start + at).max(x0), (b.start + at + BLOCK_SIZE).min(x1));
            let from_data = d0 < d1 && {
                let (f0, f1) = (s0 + (d0 - x0), s0 + (d1 - x0));
                stored.iter().any(|&(a, z)| a < f1 && f0 < z)
            };
            let block = &b.bytes[at as usize..(at + BLOCK_SIZE) as usize];
            *fate = if from_data || block.iter().any(|&x| x != 0) {
                Fate::Store
            } else if b.mapped[i] {
                Fate::Drop
            } else {
                Fate::Keep
            };
        }
        Ok(())
    }
}
