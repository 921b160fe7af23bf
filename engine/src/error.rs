//! The errors of devices, volumes and registered I/O. Each names the device, range or path
//! involved.

use std::path::PathBuf;
use std::time::Duration;

use stripefs_layout::LayoutError;
use stripefs_mapping::MappingError;

use crate::spec::SpecError;

/// Direction of a transfer, for error messages and statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
        })
    }
}

/// Errors of the engine: devices, volumes and registered I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open device {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a block device nor a regular file")]
    NotADevice { path: PathBuf },
    #[error(
        "{path} does not support O_DIRECT (tmpfs?); put device files on a disk file system: {source}"
    )]
    DirectIoUnsupported {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("probing {path}: {what} failed: {source}")]
    Probe {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing emulated device {path}: {what}")]
    Emulation { path: PathBuf, what: String },
    #[error("io_uring on device {device}: {what}: {source}")]
    Ring {
        device: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("device {device}: {op} of {len} bytes at device offset {offset} failed: {source}")]
    DeviceIo {
        device: String,
        op: Op,
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("device {device}: short {op} at device offset {offset}: {done} of {expected} bytes")]
    ShortTransfer {
        device: String,
        op: Op,
        offset: u64,
        expected: u64,
        done: u64,
    },
    /// The device did not answer a command within its timeout (`timeout=` of an emulated
    /// device, [`QueueOptions::timeout`](crate::QueueOptions::timeout) of a path): the
    /// request fails and the command is cancelled.
    #[error(
        "device {device}: {op} of {len} bytes at device offset {offset} timed out: no answer within {timeout:?}"
    )]
    Timeout {
        device: String,
        op: Op,
        offset: u64,
        len: u64,
        timeout: Duration,
    },
    #[error("device {device} is offline")]
    DeviceOffline { device: String },
    #[error("device {device} is closed")]
    DeviceClosed { device: String },
    #[error(
        "device {device} has no attachment of this mapping (it was offline when the mapping was last mapped)"
    )]
    NotAttached { device: String },
    #[error("{what} {value} is not a multiple of the block size {align}")]
    Misaligned {
        what: &'static str,
        value: u64,
        align: u64,
    },
    #[error("a request must transfer at least one byte")]
    ZeroLength,
    #[error("range {offset}+{len} is outside the registered buffer of {buffer_len} bytes")]
    OutOfBuffer {
        offset: u64,
        len: u64,
        buffer_len: u64,
    },
    #[error("range {offset}+{len} is outside the target of {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("mapping {mapping} belongs to target {owner}, not to this target ({target})")]
    ForeignMapping {
        mapping: u64,
        owner: u64,
        target: u64,
    },
    #[error("all {depth} request slots of this I/O context are in flight; reap completions first")]
    ContextFull { depth: usize },
    #[error("a volume needs at least one device")]
    NoDevices,
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Spec(#[from] SpecError),
}
