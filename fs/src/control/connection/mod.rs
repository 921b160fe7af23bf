//! One client connection: control messages, its registrations (handles), its ring, and the
//! workers that run its requests.
//!
//! - [`handles`]: the connection's registrations, named by salted handles;
//! - [`register`]: registering, unregistering and migrating a client's buffer;
//! - [`files`]: buffers registered against the whole mount and files opened apart, for
//!   requests that name both;
//! - [`messages`]: the control-message loop, and what closing a connection releases;
//! - [`hello`] and [`rings`]: the shared-memory ring a connection gets at `Hello`, its
//!   state and its threads;
//! - [`requests`]: taking requests off the ring, checking them and running them, with
//!   [`direct`] for the aligned reads the ring thread runs itself.

mod direct;
mod files;
mod handles;
mod hello;
pub(crate) mod messages;
mod register;
mod requests;
mod rings;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{Mutex, RwLock};
use stripefs_mapping::Buffer;

use super::limits::{Charge, UserUsage};
use super::proto::{RegistrationStat, Reply};
use super::sys::{self, PeerCred};
use handles::{FileEntry, HandleTable};
use rings::RingThreads;

/// A client connection.
pub(crate) struct Connection {
    id: u64,
    cred: PeerCred,
    socket: OwnedFd,
    handles: RwLock<HandleTable>,
    /// Files opened for requests with buffers registered against the mount.
    files: RwLock<HandleTable<FileEntry>>,
    /// The daemon's view of each of the client's memfds, by (st_dev, st_ino), so that one
    /// memfd registered against several files is one buffer (and migrates as one).
    buffers: Mutex<HashMap<(u64, u64), Buffer>>,
    /// The registered bytes charged to the user for each of those buffers, by buffer id.
    buffer_charges: Mutex<HashMap<u64, Charge>>,
    ring: Mutex<Option<RingThreads>>,
    /// The usage of the connection's user (its peer uid), against the per-user limits.
    user: Arc<UserUsage>,
    /// This connection, counted against the user's connections.
    _charge: Charge,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        socket: OwnedFd,
        cred: PeerCred,
        user: Arc<UserUsage>,
        charge: Charge,
    ) -> Self {
        Connection {
            id,
            cred,
            socket,
            handles: RwLock::new(HandleTable::new()),
            files: RwLock::new(HandleTable::new()),
            buffers: Mutex::new(HashMap::new()),
            buffer_charges: Mutex::new(HashMap::new()),
            ring: Mutex::new(None),
            user,
            _charge: charge,
        }
    }

    /// The peer uid of the connection.
    pub(crate) fn uid(&self) -> u32 {
        self.cred.uid
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Wakes the connection's thread so that it closes the connection.
    pub(crate) fn hang_up(&self) {
        sys::shutdown(self.socket.as_fd());
    }

    pub(crate) fn registration_stats(&self) -> Vec<RegistrationStat> {
        self.handles
            .read()
            .iter()
            .map(|r| RegistrationStat {
                mapping: r.mapping.id(),
                ino: r.ino,
                connection: self.id,
                pid: self.cred.pid,
                access: r.access,
                buffer_len: r.mapping.buffer_len(),
                requests: r.requests.load(Ordering::Relaxed),
                migrations: r.buffer.migrations() as u32,
            })
            .collect()
    }
}

/// What handling a control message gives: the reply and the descriptors it carries, or an
/// errno.
type Handled = Result<(Reply, Vec<OwnedFd>), i32>;
