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
