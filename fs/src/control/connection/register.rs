//! Registering a client's memfd against a file, and moving a registered buffer's pages.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use stripefs_mapping::{Buffer, MappingError};

use super::super::limits::Resource;
use super::super::proto::{
    ACCESS_READ, ACCESS_WRITE, MigrateReply, REGISTER_DMABUF, RegisterReply, Reply,
};
use super::super::server::ServerShared;
use super::super::sys;
use super::handles::Registration;
use super::{Connection, Handled};

fn mapping_errno(e: &MappingError) -> i32 {
    match e {
        MappingError::NotSealed { .. }
        | MappingError::CannotSeal { .. }
        | MappingError::WriteSealed { .. } => libc::EPERM,
        MappingError::NotBacked { .. } => libc::EFAULT,
        MappingError::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EINVAL),
        MappingError::EmptyBuffer
        | MappingError::BufferTooLarge { .. }
        | MappingError::OutOfBuffer { .. }
        | MappingError::HugePagesUnavailable { .. } => libc::EINVAL,
        MappingError::UdmabufUnavailable { .. } => libc::ENODEV,
        MappingError::Revoked { .. } => libc::EBADF,
        MappingError::Attach { .. } => libc::ENXIO,
    }
}

/// The access a descriptor grants, from its open mode; O_PATH descriptors grant none.
fn access_of(fd: &OwnedFd) -> Result<u32, i32> {
    let flags =
        sys::status_flags(fd.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF))?;
    if flags & libc::O_PATH != 0 {
        return Err(libc::EBADF);
    }
    Ok(match flags & libc::O_ACCMODE {
        libc::O_RDONLY => ACCESS_READ,
        libc::O_WRONLY => ACCESS_WRITE,
        libc::O_RDWR => ACCESS_READ | ACCESS_WRITE,
        _ => return Err(libc::EBADF),
    })
}

/// Checks a buffer descriptor's size and returns its identity.
fn buffer_identity(server: &ServerShared, fd: &OwnedFd) -> Result<((u64, u64), u64), i32> {
    let st = sys::fstat(fd.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EINVAL);
    }
    let len = u64::try_from(st.st_size).map_err(|_| libc::EINVAL)?;
    if len > server.options.max_buffer_len {
        return Err(libc::EFBIG);
    }
    Ok(((st.st_dev, st.st_ino), len))
}

pub(super) fn register(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    flags: u32,
    fds: Vec<OwnedFd>,
) -> Handled {
    let mut fds = fds.into_iter();
    let (Some(file), Some(buffer_fd)) = (fds.next(), fds.next()) else {
        return Err(libc::EINVAL);
    };
    let (ino, access) = file_of(server, file)?;
    if conn.handles.read().live >= server.options.max_registrations {
        return Err(libc::EMFILE);
    }
    let charge = conn.user.charge(Resource::Registrations, 1)?;
    let buffer = import_buffer(server, conn, flags, buffer_fd)?;
    let mapping = match server.fs.register(ino, &buffer) {
        Ok(m) => m,
        Err(e) => {
            forget_buffer_if_unused(conn, &buffer);
            return Err(e.errno());
        }
    };
    let reply = RegisterReply {
        handle: 0,
        ino,
        buffer_len: mapping.buffer_len(),
        access,
        devices: mapping.device_count() as u32,
    };
    let reg = Arc::new(Registration {
        ino,
        mapping,
        buffer,
        access,
        requests: AtomicU64::new(0),
        _charge: charge,
    });
    let handle = conn.handles.write().insert(reg);
    Ok((
        Reply::Register(RegisterReply { handle, ..reply }),
        Vec::new(),
    ))
}

/// The inode a descriptor opened on the mount names, and the access its open mode grants
/// (the descriptor is closed: the daemon keeps no reference to the file).
pub(super) fn file_of(server: &ServerShared, file: OwnedFd) -> Result<(u64, u32), i32> {
    let st = sys::fstat(file.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF))?;
    let ino = server.files.identify(&st)?;
    let access = access_of(&file)?;
    Ok((ino, access))
}

/// The daemon's view of a client's buffer descriptor: the connection's existing one for the
/// same memfd, or a new one.
pub(super) fn import_buffer(
    server: &ServerShared,
    conn: &Connection,
    flags: u32,
    buffer_fd: OwnedFd,
) -> Result<Buffer, i32> {
    if flags & REGISTER_DMABUF != 0 {
        // The buffer model maps memfd pages; a dma-buf's pages cannot be pinned for io_uring
        // through its own mmap, so dma-buf descriptors are not imported (yet).
        return Err(if stripefs_mapping::udmabuf::available() {
            libc::EOPNOTSUPP
        } else {
            libc::ENODEV
        });
    }
    let (key, len) = buffer_identity(server, &buffer_fd)?;
    let mut buffers = conn.buffers.lock();
    if let Some(b) = buffers.get(&key) {
        return Ok(b.clone());
    }
    // The pages are the client's (the daemon allocates nothing for it), pinned while
    // registered: their length counts against the user's registered bytes.
    let bytes = conn.user.charge(Resource::RegisteredBytes, len)?;
    let memory = server
        .imports
        .import(key, buffer_fd)
        .map_err(|e| mapping_errno(&e))?;
    let b = Buffer::from_shared_memory(memory);
    buffers.insert(key, b.clone());
    conn.buffer_charges.lock().insert(b.id(), bytes);
    Ok(b)
}

/// Drops the daemon's view of `buffer` when no registration of the connection uses it.
pub(super) fn forget_buffer_if_unused(conn: &Connection, buffer: &Buffer) {
    let handles = conn.handles.read();
    if handles.iter().any(|r| r.buffer.id() == buffer.id()) {
        return;
    }
    conn.buffers.lock().retain(|_, b| b.id() != buffer.id());
    conn.buffer_charges.lock().remove(&buffer.id());
}

pub(super) fn migrate(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    handle: u64,
    fds: Vec<OwnedFd>,
) -> Handled {
    let fd = fds.into_iter().next().ok_or(libc::EINVAL)?;
    let reg = conn.handles.read().get(handle).ok_or(libc::EBADF)?;
    let (key, len) = buffer_identity(server, &fd)?;
    if len < reg.buffer.len() {
        return Err(libc::EINVAL);
    }
    let mut buffers = conn.buffers.lock();
    if buffers.contains_key(&key) {
        // Already one of this connection's buffers: two buffers would share pages.
        return Err(libc::EBUSY);
    }
    // The new pages are pinned in place of the old ones: the user is charged their length.
    let mut charges = conn.buffer_charges.lock();
    let charge = charges.get_mut(&reg.buffer.id()).ok_or(libc::EBADF)?;
    let charged = charge.amount();
    charge.resize(len)?;
    let moved = server
        .imports
        .import(key, fd)
        .and_then(|memory| reg.buffer.migrate_to(memory));
    let report = match moved {
        Ok(report) => report,
        Err(e) => {
            let _ = charge.resize(charged);
            return Err(mapping_errno(&e));
        }
    };
    drop(charges);
    buffers.retain(|_, b| b.id() != reg.buffer.id());
    buffers.insert(key, reg.buffer.clone());
    Ok((
        Reply::Migrate(MigrateReply {
            drain_ns: report.drain.as_nanos() as u64,
            copy_ns: report.copy.as_nanos() as u64,
            total_ns: report.total.as_nanos() as u64,
            mappings: report.mappings as u32,
        }),
        Vec::new(),
    ))
}
