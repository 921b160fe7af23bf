//! The stripefs filesystem, built on the registered-I/O engine (`stripefs-engine`): metadata
//! and its log, files striped over the devices, the POSIX data path and registration of
//! buffers against files; the FUSE mount and the control endpoint.

pub mod control;
pub mod filesystem;
pub mod fuse;
pub mod meta;
pub mod mount;

pub use filesystem::{FileRead, Filesystem, FsError, MkfsOptions, OpenedFile};

// The engine's modules and names, still reachable where they were before the engine had a
// crate of its own; new code imports them from `stripefs_engine`.
pub use stripefs_engine::{
    Completion, DeviceKind, DeviceQueue, DeviceSpec, DeviceStats, Error, Faults, IoContext, Op,
    PowerCut, PowerCutReport, QueueOptions, Request, Volume, WriteEvent, WriteLog, device, error,
    pattern, spec,
};
