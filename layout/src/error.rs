//! The one error type of the layout crate.

use crate::offsets::{DeviceIndex, DeviceOffset, FileOffset};

/// Why a stripe geometry or an offset computation was refused.
///
/// Each variant carries the numbers that made the request invalid, so a caller can report
/// them (or add context such as a path) without re-deriving them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The stripe unit must be a power of two so that offsets split with shifts and masks.
    #[error("stripe unit must be a power of two, got {unit} bytes")]
    UnitNotPowerOfTwo {
        /// The refused stripe unit, in bytes.
        unit: u64,
    },
    /// The stripe unit is below the smallest supported size (one page / direct-I/O block).
    #[error("stripe unit must be at least {min} bytes, got {unit}")]
    UnitTooSmall {
        /// The refused stripe unit, in bytes.
        unit: u64,
        /// The smallest stripe unit accepted.
        min: u64,
    },
    /// The stripe unit is above the largest supported size (one registered buffer's cap).
    #[error("stripe unit must be at most {max} bytes, got {unit}")]
    UnitTooLarge {
        /// The refused stripe unit, in bytes.
        unit: u64,
        /// The largest stripe unit accepted.
        max: u64,
    },
    /// A layout needs at least one device.
    #[error("a stripe layout needs at least one device")]
    NoDevices,
    /// More devices than a layout may stripe over.
    #[error("a stripe layout spans at most {max} devices, got {count}")]
    TooManyDevices {
        /// The number of devices given.
        count: usize,
        /// The largest stripe count accepted.
        max: usize,
    },
    /// The same device appears twice in a layout's device list.
    #[error("device {device} appears more than once in the stripe layout")]
    DuplicateDevice {
        /// The repeated device.
        device: DeviceIndex,
    },
    /// `offset + len` does not fit in a `u64`.
    #[error("range of {len} bytes at offset {offset} overflows a 64-bit offset")]
    RangeOverflow {
        /// Start of the refused range.
        offset: FileOffset,
        /// Length of the refused range, in bytes.
        len: u64,
    },
    /// A column index at or past the layout's stripe count.
    #[error("column {column} is out of range for a stripe count of {count}")]
    ColumnOutOfRange {
        /// The refused column.
        column: usize,
        /// The layout's stripe count.
        count: usize,
    },
    /// The file offset that a device offset maps back to does not fit in a `u64`.
    #[error("device offset {device_offset} of column {column} maps past the largest file offset")]
    FileOffsetOverflow {
        /// The column of the device offset.
        column: usize,
        /// The device offset that was mapped back.
        device_offset: DeviceOffset,
    },
}
