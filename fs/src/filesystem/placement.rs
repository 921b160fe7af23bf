//! Where a new file's stripes start.
//!
//! A file with the default layout has its first stripe unit on its first device, so a small
//! file lives entirely there. Starting new files on each device in turn spreads a directory
//! of small files over every device (reading them back uses all of them), but it fills the
//! devices unevenly once they differ: the metadata replicas hold the pieces on top of their
//! share of data, and a workload may delete from one device more than another. A filesystem
//! of small files then reports ENOSPC while the other devices still have room.
//!
//! So the turn is kept while the devices are about even, and skipped for the emptiest device
//! when the one in turn has clearly less usable space (free, less what is kept for metadata;
//! by more than [`MARGIN_SHARE`] of its area), or is nearly full while another has more. The
//! devices fill together; the replicas keep room for the metadata that the files still to
//! come will need.
//!
//! Near the end a device can fill between a file's create and its first write. A file that
//! holds no data yet and has the default layout then starts over on the device with the most
//! usable space ([`Filesystem::restart_elsewhere`]), so ENOSPC comes when every device is full,
//! not when the one a file happened to get is.

use std::sync::atomic::Ordering;

use stripefs_layout::ondisk::{InodeKind, Record};

use super::error::FsError;
use super::format::{self, BLOCK_SIZE};
use super::{Filesystem, now};
use crate::meta::alloc::Allocator;

/// How far behind the emptiest device (as a share of the device's data area: 1/64) the device
/// in turn may be before a new file starts elsewhere.
const MARGIN_SHARE: u64 = 64;

impl Filesystem {
    /// The device a new file's stripes start on: the next in turn, or the emptiest device if
    /// the one in turn has clearly less free space.
    pub(super) fn first_device_for_new_file(&self) -> usize {
        let n = self.devices.len().max(1);
        let turn = self.next_first_device.fetch_add(1, Ordering::Relaxed) % n;
        steer(&self.alloc.lock(), turn, n)
    }

    /// A write to `ino` found its device full. If the file holds no data yet, is not
    /// registered, and has the default layout, it starts over on the device with the most
    /// usable space (one change: its inode record with the new layout). Returns whether it
    /// did, so that the caller resolves its write again.
    pub(super) fn restart_elsewhere(&self, ino: u64) -> Result<bool, FsError> {
        let mut meta = self.meta.write();
        // Under the metadata lock: see `register`.
        if self.is_registered(ino) {
            return Ok(false);
        }
        let Some(inode) = meta.get(ino) else {
            return Ok(false);
        };
        let empty = inode.kind() == InodeKind::File && inode.extents().iter().all(|m| m.end() == 0);
        let Some(layout) = inode.layout().filter(|_| empty) else {
            return Ok(false);
        };
        let first = layout.devices.first().map_or(0, |&d| usize::from(d));
        let sb = self.superblock();
        if *layout != format::default_layout(sb, first) {
            return Ok(false);
        }
        let best = {
            let alloc = self.alloc.lock();
            emptiest(&alloc, self.devices.len()).map(|d| (usable(&alloc, d), d))
        };
        match best {
            Some((room, d)) if d != first && room >= BLOCK_SIZE => {
                let mut r = inode.record();
                r.layout = Some(format::default_layout(sb, d));
                r.ctime = now();
                self.change(&mut meta, vec![Record::Inode(r)])?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// `turn`, unless another of the `n` devices has more than a margin more usable space: then
/// the device with the most.
fn steer(alloc: &Allocator, turn: usize, n: usize) -> usize {
    let Some(roomiest) = emptiest(alloc, n) else {
        return turn;
    };
    let (here, best) = (usable(alloc, turn), usable(alloc, roomiest));
    let margin = alloc.capacity(turn) / MARGIN_SHARE;
    // Behind by more than the margin, or nearly full while another device has more room.
    if here + margin < best || (here < margin && here < best) {
        roomiest
    } else {
        turn
    }
}

/// Space of `device` data may still take: free, less what is kept for metadata.
fn usable(alloc: &Allocator, device: usize) -> u64 {
    alloc.free(device).saturating_sub(alloc.kept(device))
}

/// The one of `n` devices with the most usable space (the lowest numbered of equals).
fn emptiest(alloc: &Allocator, n: usize) -> Option<usize> {
    (0..n).max_by_key(|&d| (usable(alloc, d), std::cmp::Reverse(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn four_devices() -> Allocator {
        Allocator::new(&[(0, GIB), (0, GIB), (0, GIB), (0, GIB)])
    }

    #[test]
    fn even_devices_keep_their_turn() {
        let mut alloc = four_devices();
        // Within the margin (16 MiB of 1 GiB): the turn stands.
        alloc.allocate(1, 8 << 20, None).expect("allocate");
        for turn in 0..4 {
            assert_eq!(steer(&alloc, turn, 4), turn);
        }
    }

    #[test]
    fn a_fuller_device_is_skipped_for_the_emptiest() {
        let mut alloc = four_devices();
        alloc.allocate(0, 100 << 20, None).expect("allocate");
        alloc.allocate(1, 60 << 20, None).expect("allocate");
        alloc.allocate(3, 10 << 20, None).expect("allocate");
        assert_eq!(steer(&alloc, 0, 4), 2);
        assert_eq!(steer(&alloc, 1, 4), 2);
        assert_eq!(steer(&alloc, 2, 4), 2);
        assert_eq!(steer(&alloc, 3, 4), 3);
    }

    #[test]
    fn space_kept_for_metadata_counts_as_used() {
        let mut alloc = four_devices();
        alloc.keep(0, 200 << 20);
        assert_eq!(steer(&alloc, 0, 4), 1);
    }

    #[test]
    fn a_nearly_full_device_gives_way_to_any_with_more_room() {
        let mut alloc = Allocator::new(&[(0, 64 << 20), (0, 64 << 20)]);
        // Margin: 1 MiB. Device 0 has 512 KiB left, device 1 has 768 KiB: within the
        // margin, but device 0 is nearly full.
        alloc
            .allocate(0, (64 << 20) - (512 << 10), None)
            .expect("allocate");
        alloc
            .allocate(1, (64 << 20) - (768 << 10), None)
            .expect("allocate");
        assert_eq!(steer(&alloc, 0, 2), 1);
        assert_eq!(steer(&alloc, 1, 2), 1);
    }
}
