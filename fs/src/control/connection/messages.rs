//! The control-message loop of a connection: each message is decoded, handled, and answered.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::proto::{self, Reply, Request};
use super::super::server::ServerShared;
use super::super::sys;
use super::{Connection, Handled, files, hello, register};

/// Serves one connection until the client goes away (or the server stops), then releases
/// everything it had.
pub(crate) fn serve(server: &Arc<ServerShared>, conn: &Arc<Connection>) {
    let mut packet = vec![0u8; proto::MAX_MESSAGE];
    loop {
        let received = match sys::recv(conn.socket.as_fd(), &mut packet) {
            Ok(r) => r,
            Err(_) => break,
        };
        if received.eof {
            break;
        }
        let bytes = &packet[..received.len.min(packet.len())];
        let seq = proto::peek_seq(bytes);
        let (kind, result, reply_fds) = if received.truncated {
            (proto::KIND_ERROR, Err(libc::EMSGSIZE), Vec::new())
        } else if received.fds_truncated {
            (proto::KIND_ERROR, Err(libc::EINVAL), Vec::new())
        } else {
            match proto::decode_request(bytes) {
                Err(e) => {
                    let kind = match e {
                        proto::DecodeError::BodySize { kind, .. } => kind,
                        _ => proto::KIND_ERROR,
                    };
                    (kind, Err(e.errno()), Vec::new())
                }
                Ok((_, request)) => {
                    let kind = request.kind();
                    if received.fds.len() != kind.request_fds() {
                        (kind as u16, Err(libc::EINVAL), Vec::new())
                    } else {
                        match handle(server, conn, request, received.fds) {
                            Ok((reply, fds)) => (kind as u16, Ok(reply), fds),
                            Err(errno) => (kind as u16, Err(errno), Vec::new()),
                        }
                    }
                }
            }
        };
        if result.is_err() {
            server.refused.fetch_add(1, Ordering::Relaxed);
        }
        let message = proto::encode_reply(kind, seq, result.as_ref().map_err(|e| *e));
        let fds: Vec<_> = reply_fds.iter().map(AsFd::as_fd).collect();
        if sys::send(conn.socket.as_fd(), &message, &fds).is_err() {
            break;
        }
    }
    close(server, conn);
}

/// Releases a connection: the ring stops taking requests, running ones complete, queued ones
/// are cancelled, then every registration is unregistered.
fn close(server: &ServerShared, conn: &Connection) {
    if let Some(ring) = conn.ring.lock().take() {
        ring.stop();
    }
    let regs = conn.handles.write().drain();
    for reg in regs {
        let _ = server.fs.unregister(&reg.mapping);
    }
    conn.buffers.lock().clear();
    conn.buffer_charges.lock().clear();
    files::close_all(server, conn);
}

fn handle(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    request: Request,
    fds: Vec<OwnedFd>,
) -> Handled {
    match request {
        Request::Hello {
            sq_entries,
            workers,
        } => hello::hello(server, conn, sq_entries, workers),
        Request::Register { flags } => register::register(server, conn, flags, fds),
        Request::Unregister { handle } => {
            let reg = conn.handles.write().remove(handle).ok_or(libc::EBADF)?;
            let result = server.fs.unregister(&reg.mapping).map_err(|e| e.errno());
            register::forget_buffer_if_unused(conn, &reg.buffer);
            result.map(|()| (Reply::Unregister, Vec::new()))
        }
        Request::Migrate { handle } => register::migrate(server, conn, handle, fds),
        Request::Stat => Ok((Reply::Stat(server.stat(Some(conn.uid()))), Vec::new())),
        Request::RegisterBuffer { flags } => files::register_buffer(server, conn, flags, fds),
        Request::OpenFile => files::open_file(server, conn, fds),
        Request::CloseFile { handle } => files::close_file(server, conn, handle),
    }
}
