//! Real dma-buf file descriptors through `/dev/udmabuf`, where the kernel has it.
//!
//! udmabuf turns a sealed memfd range into a dma-buf. stripefs uses it to show that a real
//! dma-buf exporter's memory can stand behind a mapping: the dma-buf fd is what a program
//! would share, and the memfd pages behind it are what the device queues attach.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::buffer::Buffer;
use crate::error::MappingError;

const UDMABUF_PATH: &str = "/dev/udmabuf";
/// `_IOW('u', 0x42, struct udmabuf_create)`.
const UDMABUF_CREATE: libc::c_ulong = 0x4018_7542;
const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

/// Whether this kernel offers `/dev/udmabuf`.
pub fn available() -> bool {
    Path::new(UDMABUF_PATH).exists()
}

/// Creates a dma-buf fd over the whole of `buffer`'s current pages.
pub fn export(buffer: &Buffer) -> Result<OwnedFd, MappingError> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(UDMABUF_PATH)
        .map_err(|source| MappingError::UdmabufUnavailable { source })?;
    let size = buffer.len().next_multiple_of(4096);
    buffer.with_fd(|memfd| {
        let arg = UdmabufCreate {
            memfd: memfd.as_raw_fd() as u32,
            flags: UDMABUF_FLAGS_CLOEXEC,
            offset: 0,
            size,
        };
        // SAFETY: UDMABUF_CREATE reads one `udmabuf_create` struct, which `arg` is, and
        // returns a new fd or -1.
        let fd = unsafe { libc::ioctl(dev.as_raw_fd(), UDMABUF_CREATE, &arg) };
        if fd < 0 {
            return Err(MappingError::os("ioctl(UDMABUF_CREATE)"));
        }
        // SAFETY: the ioctl returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}
