//! Buffers and files registered apart: a buffer registered once against the mount (one
//! attachment per device), files opened once (a file handle each), and requests that name
//! both. The registration shorthand (`register.rs`) ties one buffer to one file instead.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::super::limits::Resource;
use super::super::proto::{ACCESS_READ, ACCESS_WRITE, OpenReply, RegisterReply, Reply};
use super::super::server::ServerShared;
use super::handles::{FileEntry, Registration};
use super::register::{file_of, forget_buffer_if_unused, import_buffer};
use super::{Connection, Handled};

/// `RegisterBuffer`: the buffer is attached once to every device of the mount; the handle
/// names it in requests together with any file handle. Counts as a registration (limits).
pub(super) fn register_buffer(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    flags: u32,
    fds: Vec<OwnedFd>,
) -> Handled {
    let buffer_fd = fds.into_iter().next().ok_or(libc::EINVAL)?;
    if conn.handles.read().live >= server.options.max_registrations {
        return Err(libc::EMFILE);
    }
    let charge = conn.user.charge(Resource::Registrations, 1)?;
    let buffer = import_buffer(server, conn, flags, buffer_fd)?;
    let mapping = match server.fs.register_buffer(&buffer) {
        Ok(m) => m,
        Err(e) => {
            forget_buffer_if_unused(conn, &buffer);
            return Err(e.errno());
        }
    };
    let (buffer_len, devices) = (mapping.buffer_len(), mapping.device_count() as u32);
    let access = ACCESS_READ | ACCESS_WRITE;
    let reg = Arc::new(Registration {
        ino: 0,
        mapping,
        buffer,
        access,
        requests: AtomicU64::new(0),
        _charge: charge,
    });
    let handle = conn.handles.write().insert(reg);
    Ok((
        Reply::RegisterBuffer(RegisterReply {
            handle,
            ino: 0,
            buffer_len,
            access,
            devices,
        }),
        Vec::new(),
    ))
}

/// `OpenFile`: a file handle for the file the descriptor names, with the access its open
/// mode grants. The daemon keeps no descriptor: deleting the file closes the handle.
pub(super) fn open_file(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    fds: Vec<OwnedFd>,
) -> Handled {
    let file = fds.into_iter().next().ok_or(libc::EINVAL)?;
    let (ino, access) = file_of(server, file)?;
    if conn.files.read().live >= server.options.max_registrations {
        return Err(libc::EMFILE);
    }
    let opened = server.fs.open_registered(ino).map_err(|e| e.errno())?;
    let handle = conn
        .files
        .write()
        .insert(Arc::new(FileEntry { opened, access }));
    Ok((
        Reply::OpenFile(OpenReply {
            handle,
            ino,
            access,
        }),
        Vec::new(),
    ))
}

/// `CloseFile`: requests naming the handle fail from now on (running ones complete).
pub(super) fn close_file(server: &ServerShared, conn: &Connection, handle: u64) -> Handled {
    let entry = conn.files.write().remove(handle).ok_or(libc::EBADF)?;
    // The file may have been deleted meanwhile (its handle closed with it): still closed.
    let _ = server.fs.close_registered(&entry.opened);
    Ok((Reply::CloseFile, Vec::new()))
}

/// Closes every file handle of a closing connection.
pub(super) fn close_all(server: &ServerShared, conn: &Connection) {
    for entry in conn.files.write().drain() {
        let _ = server.fs.close_registered(&entry.opened);
    }
}
