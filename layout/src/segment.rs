//! Segments: the per-device pieces a file range resolves into.

use std::iter::FusedIterator;

use crate::geometry::StripeLayout;
use crate::offsets::{DeviceIndex, DeviceOffset, FileOffset};

/// One piece of a request that lives on a single device, within a single stripe unit.
///
/// A request of `len` bytes at a file offset becomes a run of segments whose
/// `request_offset`s go 0, then each previous `request_offset + len`, so a segment also
/// says where its bytes sit in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The position of the device in the layout's [`devices`](StripeLayout::devices).
    pub column: usize,
    /// The device that holds this piece.
    pub device: DeviceIndex,
    /// Where the piece starts in that device's object.
    pub device_offset: DeviceOffset,
    /// Length of the piece in bytes; never zero, never past the end of a stripe unit.
    pub len: u64,
    /// Offset of this piece inside the request (0 for the first segment).
    pub request_offset: u64,
}

impl Segment {
    /// The file offset where this piece starts, given the offset the request started at.
    ///
    /// `request_start` must be the offset passed to [`StripeLayout::segments`]; then the
    /// sum cannot overflow, since `segments` refused ranges whose end does.
    pub fn file_offset(&self, request_start: FileOffset) -> FileOffset {
        FileOffset(request_start.0 + self.request_offset)
    }

    /// The device offset one past this piece's last byte (`device_offset + len`).
    pub fn device_end(&self) -> u64 {
        self.device_offset.0 + self.len
    }
}

/// The segments of one request, in request order; made by [`StripeLayout::segments`].
///
/// Allocates nothing, and knows its exact length up front.
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    layout: &'a StripeLayout,
    /// File offset of the next segment.
    next: u64,
    /// Bytes of the request not yet yielded.
    remaining: u64,
    /// `request_offset` of the next segment.
    request_offset: u64,
    /// Segments not yet yielded.
    count: usize,
}

impl<'a> Segments<'a> {
    /// Starts the walk; `count` is the exact number of stripe units the range touches and
    /// `offset + len` must not overflow (both checked by [`StripeLayout::segments`]).
    pub(crate) fn new(
        layout: &'a StripeLayout,
        offset: FileOffset,
        len: u64,
        count: usize,
    ) -> Self {
        Self {
            layout,
            next: offset.0,
            remaining: len,
            request_offset: 0,
            count,
        }
    }
}

impl Iterator for Segments<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        if self.remaining == 0 {
            return None;
        }
        let unit = self.layout.unit().bytes();
        let within = self.next & (unit - 1);
        let len = (unit - within).min(self.remaining);
        let (column, device_offset) = self.layout.locate(FileOffset(self.next));
        let segment = Segment {
            column,
            device: self.layout.devices()[column],
            device_offset,
            len,
            request_offset: self.request_offset,
        };
        self.next += len;
        self.remaining -= len;
        self.request_offset += len;
        self.count -= 1;
        Some(segment)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.count, Some(self.count))
    }
}

impl ExactSizeIterator for Segments<'_> {}

impl FusedIterator for Segments<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::StripeUnit;

    fn layout(unit: u64, devices: &[u32]) -> StripeLayout {
        let unit = StripeUnit::new(unit).expect("valid unit");
        StripeLayout::new(unit, devices.iter().copied().map(DeviceIndex).collect())
            .expect("valid layout")
    }

    fn seg(
        column: usize,
        device: u32,
        device_offset: u64,
        len: u64,
        request_offset: u64,
    ) -> Segment {
        Segment {
            column,
            device: DeviceIndex(device),
            device_offset: DeviceOffset(device_offset),
            len,
            request_offset,
        }
    }

    #[test]
    fn empty_range_yields_nothing() {
        let l = layout(4096, &[0, 1]);
        let mut s = l.segments(FileOffset(12345), 0).expect("no overflow");
        assert_eq!(s.len(), 0);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn within_one_unit() {
        let l = layout(4096, &[5, 6]);
        let all: Vec<_> = l
            .segments(FileOffset(4096 + 100), 200)
            .expect("ok")
            .collect();
        assert_eq!(all, vec![seg(1, 6, 100, 200, 0)]);
    }

    #[test]
    fn unaligned_head_and_tail_across_stripes() {
        // Devices 10, 20, 30; unit 4 KiB. Request [4000, 4000 + 9000) = [4000, 13000).
        let l = layout(4096, &[10, 20, 30]);
        let s = l.segments(FileOffset(4000), 9000).expect("ok");
        assert_eq!(s.len(), 4);
        let all: Vec<_> = s.collect();
        assert_eq!(
            all,
            vec![
                seg(0, 10, 4000, 96, 0),
                seg(1, 20, 0, 4096, 96),
                seg(2, 30, 0, 4096, 4192),
                seg(0, 10, 4096, 712, 8288),
            ]
        );
        assert_eq!(all[3].file_offset(FileOffset(4000)), FileOffset(12288));
        assert_eq!(all[3].device_end(), 4096 + 712);
    }

    #[test]
    fn size_hint_counts_down() {
        let l = layout(4096, &[0, 1, 2]);
        let mut s = l.segments(FileOffset(1), 3 * 4096).expect("ok");
        for left in (0..=4).rev() {
            assert_eq!(s.size_hint(), (left, Some(left)));
            s.next();
        }
        assert_eq!(s.next(), None);
        assert_eq!(s.size_hint(), (0, Some(0)));
    }

    #[test]
    fn range_ending_at_u64_max() {
        let l = layout(4096, &[0, 1]);
        let start = u64::MAX - 5000;
        let all: Vec<_> = l.segments(FileOffset(start), 5000).expect("ok").collect();
        assert_eq!(all.iter().map(|s| s.len).sum::<u64>(), 5000);
        assert_eq!(all.len(), 2);
    }
}
