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
//! when the one in turn has clearly less free space (by more than [`MARGIN_SHARE`] of its
//! area): the devices fill together, down to the last blocks.
//!
//! A replica's usable space is its free space less the slack kept for metadata, not less
//! everything kept: what is kept for the next checkpoint's pieces (counted uncompressed, tens
//! of MiB on a big filesystem) comes back when that checkpoint is written, which a data
//! allocation that finds no room does. Counting it would send every new file away from the
//! replicas near the end, to devices that fill first.

use std::sync::atomic::Ordering;

use super::Filesystem;
use super::durability::CHANGE_ROOM;
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
        let slack = self.meta_slack + CHANGE_ROOM;
        steer(&self.alloc.lock(), turn, n, slack)
    }
}

/// `turn`, unless another of the `n` devices has more than a margin more usable space (free
/// less at most `slack` of what is kept): then the device with the most.
fn steer(alloc: &Allocator, turn: usize, n: usize, slack: u64) -> usize {
    let usable = |d: usize| alloc.free(d).saturating_sub(alloc.kept(d).min(slack));
    let Some(emptiest) = (0..n).max_by_key(|&d| (usable(d), std::cmp::Reverse(d))) else {
        return turn;
    };
    let (here, best) = (usable(turn), usable(emptiest));
    let margin = alloc.capacity(turn) / MARGIN_SHARE;
    // Behind by more than the margin, or nearly full while another device has more room.
    if here + margin < best || (here < margin && here < best) {
        emptiest
    } else {
        turn
    }
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
            assert_eq!(steer(&alloc, turn, 4, u64::MAX), turn);
        }
    }

    #[test]
    fn a_fuller_device_is_skipped_for_the_emptiest() {
        let mut alloc = four_devices();
        alloc.allocate(0, 100 << 20, None).expect("allocate");
        alloc.allocate(1, 60 << 20, None).expect("allocate");
        alloc.allocate(3, 10 << 20, None).expect("allocate");
        assert_eq!(steer(&alloc, 0, 4, u64::MAX), 2);
        assert_eq!(steer(&alloc, 1, 4, u64::MAX), 2);
        assert_eq!(steer(&alloc, 2, 4, u64::MAX), 2);
        assert_eq!(steer(&alloc, 3, 4, u64::MAX), 3);
    }

    #[test]
    fn space_kept_for_metadata_counts_as_used() {
        let mut alloc = four_devices();
        alloc.keep(0, 200 << 20);
        assert_eq!(steer(&alloc, 0, 4, u64::MAX), 1);
    }

    #[test]
    fn space_kept_for_the_next_checkpoint_counts_as_usable() {
        let mut alloc = four_devices();
        // 4 MiB of slack and 196 MiB for pieces a checkpoint will write: only the slack
        // stays out of reach.
        alloc.keep(0, 200 << 20);
        assert_eq!(steer(&alloc, 0, 4, 4 << 20), 0);
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
        assert_eq!(steer(&alloc, 0, 2, u64::MAX), 1);
        assert_eq!(steer(&alloc, 1, 2, u64::MAX), 1);
    }
}
