//! Errors of the filesystem, and the one place where each becomes an errno.

use std::path::PathBuf;

use stripefs_engine::Error;
use stripefs_layout::ondisk::OnDiskError;
use stripefs_mapping::{ImportError, MappingError};

use crate::meta::MetaError;
use crate::meta::alloc::AllocError;

/// Errors of filesystem operations. The FUSE adapter turns them into errnos with
/// [`FsError::errno`]; the command line prints them.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("name of {len} bytes is too long (at most {max})")]
    NameTooLong { len: usize, max: usize },
    #[error("invalid name {name:?}")]
    InvalidName { name: String },
    #[error("invalid argument: {what}")]
    Invalid { what: String },
    #[error("no space left: {0}")]
    NoSpace(#[from] AllocError),
    #[error(
        "no room for the metadata: {needed} bytes needed on each metadata replica (the next checkpoint's pieces, or its table in the log area), {available} available"
    )]
    MetadataFull { needed: u64, available: u64 },
    #[error("no such attribute")]
    NoXattr,
    #[error("operation not supported: {what}")]
    NotSupported { what: &'static str },
    #[error("mapping {mapping} is not a registration of a file of this filesystem")]
    UnknownMapping { mapping: u64 },
    #[error("opened file {file} is closed, or the file was deleted")]
    UnknownFile { file: u64 },
    #[error("a FIFO, socket or device node is opened by the kernel, not through the filesystem")]
    SpecialFile,
    #[error("no data at or after offset {offset} (file size {size})")]
    PastEnd { offset: u64, size: u64 },
    #[error("file too large: {offset}+{len}")]
    TooLarge { offset: u64, len: u64 },
    #[error(transparent)]
    Device(#[from] Error),
    #[error("device {device}: {what}")]
    DeviceSet { device: String, what: String },
    #[error("device {device}: bad superblock: {source}")]
    Superblock {
        device: String,
        #[source]
        source: OnDiskError,
    },
    #[error("metadata on device {device} is damaged: {what}")]
    Corrupt { device: String, what: String },
    #[error("metadata is inconsistent: {0}")]
    Meta(#[from] MetaError),
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FsError {
    /// The errno a POSIX caller sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong { .. } => libc::ENAMETOOLONG,
            FsError::InvalidName { .. } => libc::EINVAL,
            FsError::Invalid { .. } => libc::EINVAL,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::MetadataFull { .. } => libc::ENOSPC,
            FsError::NoXattr => libc::ENODATA,
            FsError::NotSupported { .. } => libc::EOPNOTSUPP,
            FsError::UnknownMapping { .. } | FsError::UnknownFile { .. } => libc::EBADF,
            FsError::SpecialFile => libc::ENXIO,
            FsError::PastEnd { .. } => libc::ENXIO,
            FsError::TooLarge { .. } => libc::EFBIG,
            FsError::Device(e) => device_errno(e),
            FsError::DeviceSet { .. } => libc::ENODEV,
            FsError::Superblock { .. } => libc::EUCLEAN,
            FsError::Corrupt { .. } => libc::EUCLEAN,
            FsError::Meta(_) => libc::EUCLEAN,
            FsError::Path { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        FsError::Invalid { what: what.into() }
    }
}

fn device_errno(e: &Error) -> i32 {
    match e {
        Error::Misaligned { .. }
        | Error::ZeroLength
        | Error::OutOfBuffer { .. }
        | Error::OutOfRange { .. } => libc::EINVAL,
        // No device buffer slot left for client memory.
        Error::Mapping(MappingError::Attach {
            source: ImportError::NoSlots { .. },
            ..
        }) => libc::ENOSPC,
        Error::ForeignMapping { .. } | Error::Mapping(_) => libc::EBADF,
        Error::ContextFull { .. } => libc::EAGAIN,
        Error::DeviceOffline { .. } | Error::DeviceClosed { .. } | Error::NotAttached { .. } => {
            libc::ENXIO
        }
        Error::Open { .. }
        | Error::NotADevice { .. }
        | Error::DirectIoUnsupported { .. }
        | Error::Probe { .. }
        | Error::Emulation { .. }
        | Error::Ring { .. }
        | Error::DeviceIo { .. }
        | Error::ShortTransfer { .. }
        | Error::Timeout { .. }
        | Error::NoDevices
        | Error::Layout(_)
        | Error::Spec(_) => libc::EIO,
    }
}
