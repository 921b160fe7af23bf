//! Connections refused for a limit get an answer rather than a silent close: one thread
//! waits (briefly) for each one's first message and answers it with the errno, so that the
//! client reports "the daemon refused hello: Resource temporarily unavailable" instead of a
//! connection that simply went away.
//!
//! A refused connection costs no thread of its own: they queue (a bounded number; beyond
//! that they are closed at once) for the one refusing thread, which gives each at most
//! [`FIRST_MESSAGE_WAIT_MS`] to speak.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use super::{proto, sys};

/// How long a refused connection may take to send its first message.
const FIRST_MESSAGE_WAIT_MS: i32 = 1000;
/// Refused connections waiting for their answer; more are closed without one.
const QUEUE: usize = 64;

/// Where the accept loop hands refused connections.
pub(crate) struct Refuser {
    queue: SyncSender<(OwnedFd, i32)>,
}

impl Refuser {
    /// Starts the refusing thread; it ends when the `Refuser` is dropped.
    pub(crate) fn start() -> std::io::Result<Refuser> {
        let (queue, refused) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("stripefs refuse".into())
            .spawn(move || refuse_loop(&refused))?;
        Ok(Refuser { queue })
    }

    /// Answers the first message of `socket` with `errno`, then closes it; closes it at once
    /// if too many wait already.
    pub(crate) fn refuse(&self, socket: OwnedFd, errno: i32) {
        // Full or gone: the socket is dropped, which closes it.
        let _: Result<(), TrySendError<_>> = self.queue.try_send((socket, errno));
    }
}

fn refuse_loop(refused: &Receiver<(OwnedFd, i32)>) {
    let mut packet = vec![0u8; proto::MAX_MESSAGE];
    while let Ok((socket, errno)) = refused.recv() {
        answer(&socket, errno, &mut packet);
    }
}

fn answer(socket: &OwnedFd, errno: i32, packet: &mut [u8]) {
    let ready = sys::poll(&[(socket.as_fd(), libc::POLLIN)], FIRST_MESSAGE_WAIT_MS);
    if !matches!(ready.as_deref(), Ok([events]) if *events != 0) {
        return;
    }
    let Ok(received) = sys::recv(socket.as_fd(), packet) else {
        return;
    };
    if received.eof {
        return;
    }
    let bytes = &packet[..received.len.min(packet.len())];
    let kind = proto::decode_request(bytes)
        .map(|(_, request)| request.kind() as u16)
        .unwrap_or(proto::KIND_ERROR);
    let reply = proto::encode_reply(kind, proto::peek_seq(bytes), Err(errno));
    let _ = sys::send(socket.as_fd(), &reply, &[]);
}
