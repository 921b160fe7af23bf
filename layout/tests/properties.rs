//! Property tests of the stripe arithmetic: segments against `locate`, its inverse, and a
//! reference model that deals stripe units out one by one.

use std::collections::HashSet;

use proptest::prelude::*;
use stripefs_layout::{
    DeviceIndex, DeviceOffset, FileOffset, LayoutError, Segment, StripeLayout, StripeUnit,
};

/// A layout with a unit from 4 KiB to 1 MiB and 1 to 8 distinct, arbitrary devices.
fn layouts() -> impl Strategy<Value = StripeLayout> {
    layouts_with(12..=20, 8)
}

fn layouts_with(
    shifts: std::ops::RangeInclusive<u32>,
    max_devices: usize,
) -> impl Strategy<Value = StripeLayout> {
    (
        shifts,
        proptest::collection::hash_set(any::<u32>(), 1..=max_devices),
    )
        .prop_map(|(shift, devices)| {
            let unit = StripeUnit::new(1 << shift).expect("unit in range");
            let devices = devices.into_iter().map(DeviceIndex).collect();
            StripeLayout::new(unit, devices).expect("distinct, non-empty devices")
        })
}

/// Offsets that exercise the interesting places: small, unit-aligned give or take a few
/// bytes, anywhere, and near the top of the address space.
fn offsets() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..(1u64 << 24),
        (0..(1u64 << 12), -3i64..=3).prop_map(|(u, d)| ((u << 20) as i64 + d).max(0) as u64),
        any::<u64>(),
        (0..(1u64 << 24)).prop_map(|d| u64::MAX - d),
    ]
}

/// Lengths from empty to many stripes of the largest layout.
fn lengths() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1..8192u64, 1..(1u64 << 26)]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Segments tile the range exactly and never cross a stripe unit; the iterator's length
    /// is exact at every step.
    #[test]
    fn segments_tile_the_range(layout in layouts(), offset in offsets(), len in lengths()) {
        let Ok(mut segments) = layout.segments(FileOffset(offset), len) else {
            prop_assert!(offset.checked_add(len).is_none());
            return Ok(());
        };
        let unit = layout.unit().bytes();
        let mut expected = 0u64;
        loop {
            let left = segments.len();
            prop_assert_eq!(segments.size_hint(), (left, Some(left)));
            let Some(s) = segments.next() else {
                prop_assert_eq!(left, 0);
                break;
            };
            prop_assert!(left > 0);
            prop_assert_eq!(s.request_offset, expected);
            prop_assert!(s.len > 0);
            prop_assert!(s.device_offset.0 % unit + s.len <= unit);
            let start = s.file_offset(FileOffset(offset)).0;
            prop_assert!(start % unit + s.len <= unit);
            expected += s.len;
        }
        prop_assert_eq!(expected, len);
        prop_assert_eq!(segments.next(), None);
    }

    /// Each segment's first and last byte agree with `locate`, and its start maps back
    /// through `file_offset`.
    #[test]
    fn segments_agree_with_locate(layout in layouts(), offset in offsets(), len in lengths()) {
        let Ok(segments) = layout.segments(FileOffset(offset), len) else {
            return Ok(());
        };
        for s in segments {
            let start = s.file_offset(FileOffset(offset));
            prop_assert_eq!(layout.locate(start), (s.column, s.device_offset));
            prop_assert_eq!(layout.devices()[s.column], s.device);
            let last = FileOffset(start.0 + (s.len - 1));
            prop_assert_eq!(layout.locate(last), (s.column, DeviceOffset(s.device_end() - 1)));
            prop_assert_eq!(layout.file_offset(s.column, s.device_offset), Ok(start));
        }
    }

    /// A range whose end overflows is refused with the numbers, not a panic.
    #[test]
    fn overflow_is_an_error(layout in layouts(), below_top in 0..(1u64 << 20), extra in 1..(1u64 << 20)) {
        let offset = u64::MAX - below_top;
        let len = below_top + extra;
        prop_assert_eq!(
            layout.segments(FileOffset(offset), len).err(),
            Some(LayoutError::RangeOverflow { offset: FileOffset(offset), len })
        );
    }

    /// `file_offset` inverts `locate` everywhere, and `locate` inverts `file_offset`
    /// wherever it succeeds.
    #[test]
    fn locate_and_file_offset_are_inverse(
        layout in layouts_with(12..=30, 256),
        offset in offsets(),
        device_offset in offsets(),
        column in 0usize..300,
    ) {
        let (c, d) = layout.locate(FileOffset(offset));
        prop_assert!(c < layout.stripe_count());
        prop_assert_eq!(layout.file_offset(c, d), Ok(FileOffset(offset)));
        match layout.file_offset(column, DeviceOffset(device_offset)) {
            Ok(file) => prop_assert_eq!(layout.locate(file), (column, DeviceOffset(device_offset))),
            Err(LayoutError::ColumnOutOfRange { column: c, count }) => {
                prop_assert_eq!((c, count), (column, layout.stripe_count()));
                prop_assert!(column >= count);
            }
            Err(e) => prop_assert_eq!(
                e,
                LayoutError::FileOffsetOverflow { column, device_offset: DeviceOffset(device_offset) }
            ),
        }
    }

    /// `column_extent` equals the highest device end the object's own segments reach, and
    /// the extents add up to the size (each column's part is dense from offset 0).
    #[test]
    fn column_extent_matches_segments(layout in layouts_with(12..=14, 8), size in 0..(1u64 << 20)) {
        let mut highest = vec![0u64; layout.stripe_count()];
        for s in layout.segments(FileOffset(0), size).expect("no overflow") {
            highest[s.column] = highest[s.column].max(s.device_end());
        }
        for (column, &high) in highest.iter().enumerate() {
            prop_assert_eq!(layout.column_extent(size, column), high);
        }
        prop_assert_eq!(highest.iter().sum::<u64>(), size);
        prop_assert_eq!(layout.column_extent(size, layout.stripe_count()), 0);
    }

    /// An object of `capacity` bytes fits every device; one more stripe unit does not, and
    /// when devices hold whole units, neither does one more byte.
    #[test]
    fn capacity_is_the_whole_unit_maximum(layout in layouts_with(12..=30, 256), per_device in offsets()) {
        let unit = layout.unit().bytes();
        let cap = layout.capacity(per_device);
        let columns = 0..layout.stripe_count();
        prop_assert!(columns.clone().all(|c| layout.column_extent(cap, c) <= per_device));
        if cap == u64::MAX {
            return Ok(());
        }
        prop_assert_eq!(cap % layout.stripe_width(), 0);
        prop_assert_eq!(cap / layout.stripe_width(), per_device / unit);
        if let Some(more) = cap.checked_add(unit) {
            prop_assert!(columns.clone().any(|c| layout.column_extent(more, c) > per_device));
        }
        if per_device % unit == 0 {
            prop_assert!(columns.clone().any(|c| layout.column_extent(cap + 1, c) > per_device));
        }
    }
}

/// Where every byte of the first `end` bytes of the object lives, worked out by dealing
/// stripe units to the columns in turn and stacking each column's units on its device.
fn reference_model(unit: u64, count: usize, end: u64) -> Vec<(usize, u64)> {
    let mut depth = vec![0u64; count];
    let mut column = 0;
    let mut map = Vec::new();
    while (map.len() as u64) < end {
        for within in 0..unit {
            map.push((column, depth[column] + within));
        }
        depth[column] += unit;
        column = (column + 1) % count;
    }
    map.truncate(end as usize);
    map
}

proptest! {
    #![proptest_config(config(48))]

    /// Byte by byte, the segments of a small range put every byte where the model does.
    #[test]
    fn segments_match_reference_model(
        layout in layouts_with(12..=13, 5),
        offset in 0..(1u64 << 15),
        len in 0..(1u64 << 15),
    ) {
        let unit = layout.unit().bytes();
        let model = reference_model(unit, layout.stripe_count(), offset + len);
        let mut seen = HashSet::new();
        let segments: Vec<Segment> = layout.segments(FileOffset(offset), len).expect("small").collect();
        for s in &segments {
            for i in 0..s.len {
                let file = offset + s.request_offset + i;
                prop_assert!(seen.insert(file), "byte {} covered twice", file);
                let want = model[file as usize];
                prop_assert_eq!((s.column, s.device_offset.0 + i), want, "byte {}", file);
            }
        }
        prop_assert_eq!(seen.len() as u64, len);
    }
}
