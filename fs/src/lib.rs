//! Devices, io_uring device queues, volumes and the registered-I/O engine of stripefs.
//!
//! A [`Volume`] (one raw device, or several striped with a layout) registers a
//! [`stripefs_mapping::Buffer`] and returns a [`stripefs_mapping::Mapping`]; reads and writes
//! name the mapping, an offset in the volume, an offset in the buffer and a length, and are
//! fanned out to the devices as fixed-buffer commands.
//!
//! Alignment: offsets, buffer offsets and lengths must be multiples of the volume's block
//! size (the largest logical block size of its devices). Misaligned requests are refused with
//! an error naming the value and the alignment; nothing is bounced.

pub mod control;
pub mod device;
mod engine;
pub mod error;
pub mod filesystem;
pub mod fuse;
pub mod meta;
pub mod mount;
pub mod pattern;
pub mod spec;
mod volume;

pub use device::{
    DeviceKind, DeviceQueue, DeviceStats, Faults, PowerCut, PowerCutReport, QueueOptions,
    WriteEvent, WriteLog,
};
pub use engine::{Completion, IoContext, Request};
pub use error::{Error, Op};
pub use filesystem::{FileRead, Filesystem, FsError, MkfsOptions};
pub use spec::DeviceSpec;
pub use volume::Volume;
