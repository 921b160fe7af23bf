//! Opening a device `O_DIRECT` and discovering its size and direct-I/O alignment.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::Error;

/// `_IOR(0x12, 114, size_t)`: size of a block device in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 104)`: logical block size of a block device.
const BLKSSZGET: libc::c_ulong = 0x1268;
const STATX_DIOALIGN: u32 = 0x2000;

/// What kind of thing a device path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A block device (loop device, NVMe namespace…).
    Block,
    /// A regular file.
    File,
    /// An emulated NVMe namespace over a file or memory.
    Emulated,
}

/// An opened device and what was learnt about it.
pub(crate) struct Probed {
    pub file: File,
    pub kind: DeviceKind,
    pub size: u64,
    /// Required alignment of offsets and lengths for direct I/O (logical block size).
    pub block_size: u32,
    /// False when the file could only be opened for buffered I/O (emulated memory backings).
    pub direct: bool,
}

/// Opens `path` for direct I/O. `allow_buffered` lets an emulated namespace sit on a file
/// system without `O_DIRECT` (tmpfs), where the "device" is memory anyway.
pub(crate) fn open(path: &Path, allow_buffered: bool) -> Result<Probed, Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let ft = meta.file_type();
    let kind = if ft.is_block_device() {
        DeviceKind::Block
    } else if ft.is_file() {
        DeviceKind::File
    } else {
        return Err(Error::NotADevice {
            path: path.to_path_buf(),
        });
    };
    let (file, direct) = match open_direct(path, kind) {
        Ok(file) => (file, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && allow_buffered => (
            open_flags(path, 0).map_err(|source| open_error(path, source))?,
            false,
        ),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(Error::DirectIoUnsupported {
                path: path.to_path_buf(),
                source: e,
            });
        }
        Err(source) => return Err(open_error(path, source)),
    };
    let (size, block_size) = match kind {
        DeviceKind::Block => (block_size_bytes(&file, path)?, logical_block(&file, path)?),
        _ => (meta.len(), if direct { dio_align(&file, path)? } else { 1 }),
    };
    Ok(Probed {
        file,
        kind,
        size,
        block_size,
        direct,
    })
}

fn open_error(path: &Path, source: io::Error) -> Error {
    Error::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn open_direct(path: &Path, kind: DeviceKind) -> io::Result<File> {
    // A block device is opened exclusively, so nothing mounts it under us.
    let excl = if kind == DeviceKind::Block {
        libc::O_EXCL
    } else {
        0
    };
    open_flags(path, libc::O_DIRECT | excl)
}

fn open_flags(path: &Path, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags | libc::O_CLOEXEC)
        .open(path)
}

fn block_size_bytes(file: &File, path: &Path) -> Result<u64, Error> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) } != 0 {
        return Err(probe_error(path, "ioctl(BLKGETSIZE64)"));
    }
    Ok(size)
}

fn logical_block(file: &File, path: &Path) -> Result<u32, Error> {
    let mut block: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `block`.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut block) } != 0 {
        return Err(probe_error(path, "ioctl(BLKSSZGET)"));
    }
    Ok(block.max(512) as u32)
}

/// Direct-I/O offset alignment of a regular file (`statx` with `STATX_DIOALIGN`), falling
/// back to 512 when the file system does not report it.
fn dio_align(file: &File, path: &Path) -> Result<u32, Error> {
    // The kernel's `struct statx` is 256 bytes; read it as words to stay independent of the
    // libc binding's field list. stx_mask is at byte 0, stx_dio_offset_align at byte 156.
    let mut buf = [0u64; 32];
    let empty = c"";
    // SAFETY: statx writes at most 256 bytes into `buf`, which is 256 bytes; `empty` is a
    // valid C string and AT_EMPTY_PATH makes the call describe the fd itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_statx,
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(probe_error(path, "statx(STATX_DIOALIGN)"));
    }
    let mask = buf[0] as u32;
    let offset_align = (buf[19] >> 32) as u32;
    if mask & STATX_DIOALIGN == 0 || offset_align == 0 {
        return Ok(512);
    }
    Ok(offset_align)
}

fn probe_error(path: &Path, what: &'static str) -> Error {
    Error::Probe {
        path: path.to_path_buf(),
        what,
        source: io::Error::last_os_error(),
    }
}
