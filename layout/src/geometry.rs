//! Stripe geometry: the stripe unit and the layout of an object over its devices.
//!
//! An object is cut into stripe units of `unit` bytes; unit `u` goes to column
//! `u % count` (the device at that position in the device list), at stripe `u / count`
//! of that device's object. So byte `off` lives at
//! `device_offset = (u / count) * unit + off % unit` on column `u % count`, with
//! `u = off / unit`.

use std::collections::HashSet;

use crate::error::LayoutError;
use crate::offsets::{DeviceIndex, DeviceOffset, FileOffset};
use crate::segment::Segments;

/// The size of one stripe unit: a power of two from [`StripeUnit::MIN`] to
/// [`StripeUnit::MAX`] bytes.
///
/// A power of two lets offsets split with shifts and masks, and keeps every unit boundary
/// aligned for direct I/O. The upper bound is the size of one registered buffer, so a
/// segment (never longer than a unit) always fits in one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StripeUnit(u64);

impl StripeUnit {
    /// The smallest stripe unit: one page, and a multiple of every direct-I/O block size.
    pub const MIN: u64 = 4096;
    /// The largest stripe unit: 1 GiB, the cap on one registered buffer.
    pub const MAX: u64 = 1 << 30;

    /// Checks that `bytes` is a power of two within [`Self::MIN`]`..=`[`Self::MAX`].
    pub fn new(bytes: u64) -> Result<Self, LayoutError> {
        if !bytes.is_power_of_two() {
            return Err(LayoutError::UnitNotPowerOfTwo { unit: bytes });
        }
        if bytes < Self::MIN {
            return Err(LayoutError::UnitTooSmall {
                unit: bytes,
                min: Self::MIN,
            });
        }
        if bytes > Self::MAX {
            return Err(LayoutError::UnitTooLarge {
                unit: bytes,
                max: Self::MAX,
            });
        }
        Ok(Self(bytes))
    }

    /// The unit's size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// `bytes() - 1`: masks an offset down to its position within a unit.
    fn mask(self) -> u64 {
        self.0 - 1
    }
}

/// How an object is striped: the stripe unit and the devices it rotates over, in order.
///
/// Position `i` in [`devices`](Self::devices) is column `i`; the layout guarantees the list
/// is non-empty, holds no device twice, and has at most [`Self::MAX_STRIPE_COUNT`] entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StripeLayout {
    unit: StripeUnit,
    devices: Vec<DeviceIndex>,
}

impl StripeLayout {
    /// The largest number of devices one layout may stripe over.
    pub const MAX_STRIPE_COUNT: usize = 256;

    /// Builds a layout, refusing an empty, oversized or repeating device list.
    pub fn new(unit: StripeUnit, devices: Vec<DeviceIndex>) -> Result<Self, LayoutError> {
        if devices.is_empty() {
            return Err(LayoutError::NoDevices);
        }
        if devices.len() > Self::MAX_STRIPE_COUNT {
            return Err(LayoutError::TooManyDevices {
                count: devices.len(),
                max: Self::MAX_STRIPE_COUNT,
            });
        }
        let mut seen = HashSet::with_capacity(devices.len());
        if let Some(&device) = devices.iter().find(|d| !seen.insert(**d)) {
            return Err(LayoutError::DuplicateDevice { device });
        }
        Ok(Self { unit, devices })
    }

    /// The stripe unit.
    pub fn unit(&self) -> StripeUnit {
        self.unit
    }

    /// The number of devices (columns) the layout rotates over.
    pub fn stripe_count(&self) -> usize {
        self.devices.len()
    }

    /// The devices, in column order.
    pub fn devices(&self) -> &[DeviceIndex] {
        &self.devices
    }

    /// Bytes in one full stripe: one unit on every device (`unit * count`).
    ///
    /// Cannot overflow: at most 2^30 * 256 = 2^38.
    pub fn stripe_width(&self) -> u64 {
        self.unit.bytes() * self.count()
    }

    /// Splits `len` bytes from `offset` into per-device segments, in request order.
    ///
    /// Each segment lies within one stripe unit. A zero `len` yields no segment; a range
    /// whose end does not fit in a `u64` is refused with [`LayoutError::RangeOverflow`].
    pub fn segments(&self, offset: FileOffset, len: u64) -> Result<Segments<'_>, LayoutError> {
        let overflow = LayoutError::RangeOverflow { offset, len };
        let end = offset.0.checked_add(len).ok_or(overflow)?;
        let count = if len == 0 {
            0
        } else {
            self.unit_index(end - 1) - self.unit_index(offset.0) + 1
        };
        let count = usize::try_from(count).map_err(|_| overflow)?;
        Ok(Segments::new(self, offset, len, count))
    }

    /// The column and device offset where the byte at `offset` is stored.
    pub fn locate(&self, offset: FileOffset) -> (usize, DeviceOffset) {
        let unit_index = self.unit_index(offset.0);
        let count = self.count();
        // The remainder is below `count`, itself at most MAX_STRIPE_COUNT, so it fits a usize.
        let column = (unit_index % count) as usize;
        let stripe = unit_index / count;
        let within = offset.0 & self.unit.mask();
        // stripe * unit <= unit_index * unit <= offset: no overflow.
        (column, DeviceOffset(stripe * self.unit.bytes() + within))
    }

    /// The file offset stored at `device_offset` of `column`: the inverse of
    /// [`locate`](Self::locate).
    pub fn file_offset(
        &self,
        column: usize,
        device_offset: DeviceOffset,
    ) -> Result<FileOffset, LayoutError> {
        self.check_column(column)?;
        let stripe = device_offset.0 >> self.shift();
        let within = device_offset.0 & self.unit.mask();
        stripe
            .checked_mul(self.count())
            .and_then(|u| u.checked_add(column as u64))
            .and_then(|u| u.checked_mul(self.unit.bytes()))
            .and_then(|start| start.checked_add(within))
            .map(FileOffset)
            .ok_or(LayoutError::FileOffsetOverflow {
                column,
                device_offset,
            })
    }

    /// How many bytes of `column`'s device object an object of `size` bytes uses: its
    /// highest device offset touched plus one, or 0 if the object touches nothing there.
    ///
    /// A column past the stripe count uses nothing, so it returns 0.
    pub fn column_extent(&self, size: u64, column: usize) -> u64 {
        let column = column as u64;
        let unit = self.unit.bytes();
        let full_units = size >> self.shift();
        let tail = size & self.unit.mask();
        let count = self.count();
        if column >= count {
            return 0;
        }
        if tail > 0 && full_units % count == column {
            // The partial last unit is this column's highest.
            return (full_units / count) * unit + tail;
        }
        // Whole units of this column among the first `full_units`: column, column + count, …
        let whole = if full_units > column {
            (full_units - column - 1) / count + 1
        } else {
            0
        };
        whole * unit
    }

    /// The size of an object made of whole stripe units that fits devices holding
    /// `per_device` bytes each: `floor(per_device / unit) * unit * count`.
    ///
    /// Every [`column_extent`](Self::column_extent) of an object this size is at most
    /// `per_device`. A device's tail shorter than one unit is left unused, so that every
    /// device is used to the same depth. Saturates at `u64::MAX`, which then fits too.
    pub fn capacity(&self, per_device: u64) -> u64 {
        let depth = per_device & !self.unit.mask();
        depth.saturating_mul(self.count())
    }

    /// Refuses a column at or past the stripe count.
    fn check_column(&self, column: usize) -> Result<(), LayoutError> {
        if column >= self.stripe_count() {
            return Err(LayoutError::ColumnOutOfRange {
                column,
                count: self.stripe_count(),
            });
        }
        Ok(())
    }

    /// The index of the stripe unit holding byte `offset` of the object.
    fn unit_index(&self, offset: u64) -> u64 {
        offset >> self.shift()
    }

    /// log2 of the stripe unit.
    fn shift(&self) -> u32 {
        self.unit.bytes().trailing_zeros()
    }

    /// The stripe count as a `u64`, for offset arithmetic.
    fn count(&self) -> u64 {
        self.devices.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(unit: u64, count: u32) -> StripeLayout {
        let unit = StripeUnit::new(unit).expect("valid unit");
        StripeLayout::new(unit, (0..count).map(DeviceIndex).collect()).expect("valid layout")
    }

    #[test]
    fn unit_bounds() {
        assert_eq!(StripeUnit::new(4096).map(StripeUnit::bytes), Ok(4096));
        assert_eq!(StripeUnit::new(1 << 30).map(StripeUnit::bytes), Ok(1 << 30));
        assert_eq!(
            StripeUnit::new(0),
            Err(LayoutError::UnitNotPowerOfTwo { unit: 0 })
        );
        assert_eq!(
            StripeUnit::new(12288),
            Err(LayoutError::UnitNotPowerOfTwo { unit: 12288 })
        );
        assert_eq!(
            StripeUnit::new(2048),
            Err(LayoutError::UnitTooSmall {
                unit: 2048,
                min: 4096
            })
        );
        assert_eq!(
            StripeUnit::new(1 << 31),
            Err(LayoutError::UnitTooLarge {
                unit: 1 << 31,
                max: 1 << 30
            })
        );
    }

    #[test]
    fn layout_refuses_bad_device_lists() {
        let unit = StripeUnit::new(4096).expect("valid unit");
        assert_eq!(StripeLayout::new(unit, vec![]), Err(LayoutError::NoDevices));
        let many: Vec<_> = (0..257).map(DeviceIndex).collect();
        assert_eq!(
            StripeLayout::new(unit, many),
            Err(LayoutError::TooManyDevices {
                count: 257,
                max: 256
            })
        );
        let max: Vec<_> = (0..256).map(DeviceIndex).collect();
        assert!(StripeLayout::new(unit, max).is_ok());
        let dup = vec![DeviceIndex(4), DeviceIndex(1), DeviceIndex(4)];
        assert_eq!(
            StripeLayout::new(unit, dup),
            Err(LayoutError::DuplicateDevice {
                device: DeviceIndex(4)
            })
        );
    }

    #[test]
    fn accessors() {
        let unit = StripeUnit::new(65536).expect("valid unit");
        let devices = vec![DeviceIndex(7), DeviceIndex(2), DeviceIndex(9)];
        let l = StripeLayout::new(unit, devices.clone()).expect("valid layout");
        assert_eq!(l.unit(), unit);
        assert_eq!(l.stripe_count(), 3);
        assert_eq!(l.devices(), &devices[..]);
        assert_eq!(l.stripe_width(), 3 * 65536);
    }

    #[test]
    fn locate_worked_examples() {
        let l = layout(4096, 3);
        assert_eq!(l.locate(FileOffset(0)), (0, DeviceOffset(0)));
        assert_eq!(l.locate(FileOffset(4095)), (0, DeviceOffset(4095)));
        assert_eq!(l.locate(FileOffset(4096)), (1, DeviceOffset(0)));
        assert_eq!(l.locate(FileOffset(2 * 4096 + 5)), (2, DeviceOffset(5)));
        assert_eq!(
            l.locate(FileOffset(3 * 4096 + 7)),
            (0, DeviceOffset(4096 + 7))
        );
        assert_eq!(l.locate(FileOffset(7 * 4096)), (1, DeviceOffset(2 * 4096)));
    }

    #[test]
    fn file_offset_inverts_locate() {
        let l = layout(8192, 5);
        for off in [0, 1, 8191, 8192, 40959, 40960, 123_456_789, u64::MAX] {
            let (column, dev) = l.locate(FileOffset(off));
            assert_eq!(l.file_offset(column, dev), Ok(FileOffset(off)));
        }
    }

    #[test]
    fn file_offset_refuses_bad_column_and_overflow() {
        let l = layout(4096, 3);
        assert_eq!(
            l.file_offset(3, DeviceOffset(0)),
            Err(LayoutError::ColumnOutOfRange {
                column: 3,
                count: 3
            })
        );
        assert_eq!(
            l.file_offset(0, DeviceOffset(u64::MAX)),
            Err(LayoutError::FileOffsetOverflow {
                column: 0,
                device_offset: DeviceOffset(u64::MAX)
            })
        );
        let one = layout(4096, 1);
        assert_eq!(
            one.file_offset(0, DeviceOffset(u64::MAX)),
            Ok(FileOffset(u64::MAX))
        );
    }

    #[test]
    fn column_extent_worked_examples() {
        let l = layout(4096, 3);
        // Empty object: nothing used anywhere.
        assert_eq!(l.column_extent(0, 0), 0);
        // 1 byte: column 0 uses one byte, the others nothing.
        assert_eq!(l.column_extent(1, 0), 1);
        assert_eq!(l.column_extent(1, 1), 0);
        // One unit and a half: column 0 full unit, column 1 half.
        assert_eq!(l.column_extent(6144, 0), 4096);
        assert_eq!(l.column_extent(6144, 1), 2048);
        assert_eq!(l.column_extent(6144, 2), 0);
        // Four units and 10 bytes: units 0..4 are whole (columns 0, 1, 2, 0); unit 4 is
        // partial and lands on column 1 at stripe 1.
        assert_eq!(l.column_extent(4 * 4096 + 10, 0), 2 * 4096);
        assert_eq!(l.column_extent(4 * 4096 + 10, 1), 4096 + 10);
        assert_eq!(l.column_extent(4 * 4096 + 10, 2), 4096);
        // A column past the stripe count uses nothing.
        assert_eq!(l.column_extent(1 << 40, 3), 0);
    }

    #[test]
    fn capacity_worked_examples() {
        let l = layout(4096, 4);
        assert_eq!(l.capacity(0), 0);
        assert_eq!(l.capacity(4095), 0);
        assert_eq!(l.capacity(4096), 4 * 4096);
        assert_eq!(l.capacity(10_000), 4 * 8192);
        assert_eq!(l.capacity(u64::MAX), u64::MAX);
    }

    #[test]
    fn segments_refuse_overflow_without_panicking() {
        let l = layout(4096, 2);
        assert_eq!(
            l.segments(FileOffset(u64::MAX), 1).err(),
            Some(LayoutError::RangeOverflow {
                offset: FileOffset(u64::MAX),
                len: 1
            })
        );
        assert_eq!(l.segments(FileOffset(u64::MAX), 0).map(|s| s.len()), Ok(0));
        assert_eq!(
            l.segments(FileOffset(u64::MAX - 1), 1).map(|s| s.len()),
            Ok(1)
        );
    }
}
