use crate::attachment::ImportError;

/// Errors of the buffer model. Each variant carries the numbers involved.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("buffer length must be greater than 0")]
    EmptyBuffer,
    #[error("buffer of {len} bytes is too large (at most {max})")]
    BufferTooLarge { len: u64, max: u64 },
    #[error("range {offset}+{len} is outside the buffer of {buffer_len} bytes")]
    OutOfBuffer {
        offset: u64,
        len: u64,
        buffer_len: u64,
    },
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "huge pages requested but none are available ({source}); reserve some in /proc/sys/vm/nr_hugepages"
    )]
    HugePagesUnavailable {
        #[source]
        source: std::io::Error,
    },
    #[error("/dev/udmabuf is not available on this kernel: {source}")]
    UdmabufUnavailable {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "memfd is missing the seals {missing:#x} (F_SEAL_SHRINK|F_SEAL_GROW are required before registration)"
    )]
    NotSealed { missing: i32 },
    #[error(
        "memfd cannot be sealed with F_SEAL_FUTURE_WRITE ({source}); do not seal it with F_SEAL_SEAL before registration, the daemon adds that seal so that no hole can be punched in registered memory"
    )]
    CannotSeal {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "memfd is not fully backed: its first hole is at byte {first_hole} of {len}; allocate and touch every page (fallocate, then write or MAP_POPULATE) before registration, the daemon does not allocate memory for a client"
    )]
    NotBacked { first_hole: u64, len: u64 },
    #[error(
        "memfd is sealed against new writable mappings (seals {seals:#x}: F_SEAL_WRITE or F_SEAL_FUTURE_WRITE), so it cannot be mapped for I/O here; it may be registered with another daemon already: register a separate buffer"
    )]
    WriteSealed { seals: i32 },
    #[error("mapping {mapping} was revoked (unregistered, or its buffer or target is gone)")]
    Revoked { mapping: u64 },
    #[error("attaching the buffer to device {device} failed: {source}")]
    Attach {
        device: String,
        #[source]
        source: ImportError,
    },
}

impl MappingError {
    pub(crate) fn os(op: &'static str) -> Self {
        MappingError::Os {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}
