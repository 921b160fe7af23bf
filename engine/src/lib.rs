//! The registered-I/O engine of stripefs: devices and their io_uring queues, I/O contexts and
//! striped volumes. It knows nothing of the filesystem built on top of it.
//!
//! A [`Volume`] (one raw device, or several striped with a layout) registers a
//! [`stripefs_mapping::Buffer`] and returns a [`stripefs_mapping::Mapping`]; reads and writes
//! name the mapping, an offset in the volume, an offset in the buffer and a length, and are
//! fanned out to the devices as fixed-buffer commands.
//!
//! Alignment: offsets, buffer offsets and lengths must be multiples of the volume's block
//! size (the largest logical block size of its devices). Misaligned requests are refused with
//! an error naming the value and the alignment; nothing is bounced.
//!
//! Layers, each importing only those below it: `notify` (eventfds), `request` (a request and
//! the state its device commands complete), `device` (queues), `context` ([`IoContext`] and
//! the fan-out of a request to devices), `volume` ([`Volume`], and [`IoContext::submit`] on
//! a volume).

mod context;
pub mod device;
pub mod error;
mod notify;
pub mod pattern;
mod request;
pub mod spec;
mod volume;

pub use context::IoContext;
pub use device::{
    DeviceKind, DeviceQueue, DeviceStats, Faults, PowerCut, PowerCutReport, QueueOptions,
    WriteEvent, WriteLog,
};
pub use error::{Error, Op};
pub use request::{Completion, Request};
pub use spec::DeviceSpec;
pub use volume::Volume;

/// Issuing device commands directly, for the filesystem layer: it resolves file ranges into
/// device [`Piece`](plan::Piece)s itself (through its own layout and extents) instead of a
/// volume's, and runs them through an I/O context like any request.
pub mod plan {
    pub use crate::context::{FanOut, run_plan};
    pub use crate::device::{Piece, Urgent};
    pub use crate::request::FileHold;
    pub use crate::volume::Merged;
}
