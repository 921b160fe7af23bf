//! Stripe geometry and offset arithmetic for stripefs: pure logic, no I/O.
//!
//! A [`StripeLayout`] says how an object (a file, or a whole volume) is spread over its
//! devices: stripe units of one [`StripeUnit`] rotate over the device list. The layout maps
//! a byte range of the object into per-device [`Segment`]s, and a device offset back to the
//! object. File offsets, device offsets and device indices are distinct newtypes
//! ([`FileOffset`], [`DeviceOffset`], [`DeviceIndex`]) so they cannot be mixed up.

mod error;
mod geometry;
mod offsets;
pub mod ondisk;
mod segment;

pub use error::LayoutError;
pub use geometry::{StripeLayout, StripeUnit};
pub use offsets::{DeviceIndex, DeviceOffset, FileOffset};
pub use segment::{Segment, Segments};
