//! Errors of the client, and the one place where each becomes an errno (for the C API).

use std::path::PathBuf;

use stripefs_mapping::MappingError;

/// An errno, as a request's result or a daemon's refusal carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

/// Errors of the client library. [`ClientError::errno`] gives the errno the C API returns.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: no stripefs control socket found (tried {tried})")]
    NotFound { path: PathBuf, tried: String },
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to the control socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon refused {op}: {errno}{}", refusal_hint(op, *errno))]
    Refused { op: &'static str, errno: Errno },
    #[error("{path}: will not use the control socket {socket}: {why}")]
    Untrusted {
        path: PathBuf,
        socket: PathBuf,
        why: String,
    },
    #[error("protocol error: {what}")]
    Protocol { what: String },
    #[error("the daemon closed the connection")]
    Disconnected,
    #[error("the ring is full ({in_flight} requests in flight): reap completions first")]
    Busy { in_flight: u32 },
    #[error(
        "the buffer is registered through another client too; migrate it where it is registered alone"
    )]
    BufferShared,
    #[error("handle {handle:#x} is not a registration of this client")]
    UnknownHandle { handle: u64 },
    #[error("invalid argument: {what}")]
    Invalid { what: String },
    #[error("the request of this ticket is not in flight (its outcome was taken already)")]
    UnknownTicket,
    #[error("buffer: {0}")]
    Buffer(#[from] MappingError),
}

impl ClientError {
    /// The errno for this error (positive).
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::NotFound { .. } => libc::ENOENT,
            ClientError::Path { source, .. }
            | ClientError::Connect { source, .. }
            | ClientError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ClientError::Refused { errno, .. } => errno.0,
            ClientError::Untrusted { .. } => libc::EPERM,
            ClientError::Protocol { .. } => libc::EPROTO,
            ClientError::Disconnected => libc::ENOTCONN,
            ClientError::Busy { .. } | ClientError::BufferShared => libc::EBUSY,
            ClientError::UnknownHandle { .. } => libc::EBADF,
            ClientError::UnknownTicket => libc::ENOENT,
            ClientError::Invalid { .. } => libc::EINVAL,
            ClientError::Buffer(e) => mapping_errno(e),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        ClientError::Invalid { what: what.into() }
    }

    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        ClientError::Io { op, source }
    }
}

/// What a refusal means, where the errno alone would not say (the daemon's per-user limits,
/// and its refusal to allocate a client's memory).
fn refusal_hint(op: &str, errno: Errno) -> &'static str {
    match (op, errno.0) {
        ("register", libc::EFAULT) => {
            " (the buffer's pages are not all allocated: the daemon does not allocate memory \
             for a client)"
        }
        (_, libc::EDQUOT) => {
            " (per-user limit of the mount reached: registered bytes or registrations)"
        }
        ("hello" | "stat", libc::EAGAIN) => {
            " (per-user limit of the mount reached: connections or worker threads; close a \
             connection and retry)"
        }
        ("register" | "migrate", libc::ENOSPC) => {
            " (no device buffer slot left for client buffers on the mount)"
        }
        _ => "",
    }
}

fn mapping_errno(e: &MappingError) -> i32 {
    match e {
        MappingError::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        MappingError::EmptyBuffer
        | MappingError::BufferTooLarge { .. }
        | MappingError::OutOfBuffer { .. } => libc::EINVAL,
        MappingError::HugePagesUnavailable { .. } => libc::ENOMEM,
        MappingError::UdmabufUnavailable { .. } => libc::ENODEV,
        MappingError::NotSealed { .. }
        | MappingError::CannotSeal { .. }
        | MappingError::WriteSealed { .. } => libc::EPERM,
        MappingError::NotBacked { .. } => libc::EFAULT,
        MappingError::Revoked { .. } => libc::EBADF,
        MappingError::Attach { .. } => libc::ENXIO,
    }
}
