//! Newtypes that keep the address spaces of the data path apart.
//!
//! A file offset, an offset inside one device's object and a device's index are all plain
//! integers underneath; giving each its own type means the compiler refuses to pass one
//! where another is expected.

use std::fmt;

/// A byte offset in the striped object (a file, or a whole volume).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileOffset(pub u64);

/// A byte offset in one device's object (the part of the striped object stored on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceOffset(pub u64);

/// The index of a device within the volume; errors and logs show it as `dev{N}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceIndex(pub u32);

impl fmt::Display for FileOffset {
    /// Shows the bare byte offset, so messages read "at offset 4096".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for DeviceOffset {
    /// Shows the bare byte offset, so messages read "at device offset 4096".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for DeviceIndex {
    /// Shows `dev{N}`, the name a device goes by in every message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dev{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        assert_eq!(DeviceIndex(3).to_string(), "dev3");
        assert_eq!(FileOffset(4096).to_string(), "4096");
        assert_eq!(DeviceOffset(0).to_string(), "0");
    }

    #[test]
    fn offsets_order_by_value() {
        assert!(FileOffset(1) < FileOffset(2));
        assert!(DeviceOffset(7) > DeviceOffset(6));
        assert!(DeviceIndex(0) < DeviceIndex(1));
    }
}
