//! The control endpoint of a mounted filesystem: registered I/O for other processes.
//!
//! A program that knows only a path on the mount finds the daemon's Unix socket (the
//! [`proto::CONTROL_XATTR`] attribute of the mount root, or the well-known path
//! [`Server::socket_path`] derived from the canonical mountpoint), connects, and registers a
//! file against its own memory by passing two descriptors over the socket (SCM_RIGHTS): the
//! file, opened on the mount, and a sealed memfd. The daemon identifies the file from the
//! descriptor (`st_dev` must be the mount's, `st_ino` is the inode), takes the access rights
//! from its open mode, maps the memfd (the same pages as the client's), registers it with
//! [`Filesystem::register`](crate::Filesystem::register), and answers with an opaque handle that is valid only on that
//! connection.
//!
//! Requests and completions travel through a shared-memory ring ([`ring`]) that the daemon
//! creates per connection, with two eventfd doorbells, so that many requests in flight cost
//! few system calls. The daemon copies every ring entry before checking it and checks every
//! counter, handle, offset and length: a client can only ever address its own buffers through
//! its own handles. A malformed message gets an error reply; a ring whose counters make no
//! sense closes the connection. When a connection closes (or its process dies), requests
//! already running complete, queued ones are cancelled, and every registration it made is
//! released.
//!
//! Threads per connection: one reading control messages, one taking requests off the ring,
//! and a few workers. The ring thread runs block-aligned reads itself, asynchronously
//! ([`Filesystem::submit_read`](crate::Filesystem::submit_read) on its own I/O context, many in flight, completions posted as
//! they land), so the common case crosses no thread inside the daemon; writes and unaligned
//! reads, which may bounce and block, go to the workers.

mod connection;
mod imports;
mod limits;
pub mod proto;
mod refuse;
pub mod ring;
mod server;
pub mod socket_dir;
#[doc(hidden)]
pub mod sys;

pub use limits::{Limits, Resource};
pub use server::{HostFiles, Server, ServerHandle, ServerOptions};

use std::path::PathBuf;

/// Why the control server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("mountpoint {path}: {source}")]
    Mountpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a FUSE mount (filesystem type {fs_type:#x}); start the control server after mounting"
    )]
    NotMounted { path: PathBuf, fs_type: i64 },
    #[error("control socket directory {path}: {source}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path} is served by another running daemon")]
    InUse { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the control server thread: {source}")]
    Thread {
        #[source]
        source: std::io::Error,
    },
}
