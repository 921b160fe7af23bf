//! The listening socket, the accept loop and the registry of live connections.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use super::connection::{self, Connection};
use super::imports::Imports;
use super::limits::{Charge, Limits, Resource, UserUsage, Users};
use super::proto::{self, DeviceStat, RegistrationStat, StatReply};
use super::refuse::Refuser;
use super::{ControlError, socket_dir, sys};
use crate::filesystem::Filesystem;

/// `FUSE_SUPER_MAGIC`: the `f_type` of a FUSE mount.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Limits and defaults of the control server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Where the socket is created (`/run/stripefs`; for a user who cannot write there, a
    /// directory of the user's: see [`super::socket_dir::choose`]).
    pub socket_dir: PathBuf,
    /// Connections served at once; more are refused (their first message is answered with
    /// `EAGAIN`, then they are closed).
    pub max_connections: usize,
    /// Live registrations per connection.
    pub max_registrations: usize,
    /// Largest buffer a client may register (its pages are mapped in the daemon).
    pub max_buffer_len: u64,
    /// Worker threads per connection when the client does not ask.
    pub default_workers: u32,
    /// Most worker threads per connection.
    pub max_workers: u32,
    /// What each user (other than root) may hold at once.
    pub limits: Limits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            socket_dir: PathBuf::from(proto::SOCKET_DIR),
            max_connections: 256,
            max_registrations: 1024,
            max_buffer_len: 64 << 30,
            default_workers: 4,
            max_workers: 32,
            limits: Limits::default(),
        }
    }
}

/// For tests without a mount: host files standing for inodes of the filesystem. A descriptor
/// of a host file registered here (by its `st_dev` and `st_ino`) is taken as the inode given.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct HostFiles(Arc<RwLock<HashMap<(u64, u64), u64>>>);

impl HostFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes descriptors of the host file `path` stand for inode `ino`.
    pub fn insert(&self, path: &Path, ino: u64) -> io::Result<()> {
        let st = sys::stat(path)?;
        self.0.write().insert((st.st_dev, st.st_ino), ino);
        Ok(())
    }

    fn get(&self, dev: u64, ino: u64) -> Option<u64> {
        self.0.read().get(&(dev, ino)).copied()
    }
}

/// How the daemon turns a client's file descriptor into an inode.
pub(crate) enum Files {
    /// The descriptor must be on the mount (its `st_dev`); `st_ino` is the inode number.
    Mount { dev: u64 },
    /// Test stand-ins (see [`HostFiles`]).
    Host(HostFiles),
}

impl Files {
    /// The inode of a file descriptor's file, or the errno to refuse it with: EXDEV when it
    /// is not on this filesystem, EISDIR/EINVAL when it is not a regular file.
    pub(crate) fn identify(&self, st: &libc::stat) -> Result<u64, i32> {
        let kind = st.st_mode & libc::S_IFMT;
        let ino = match self {
            Files::Mount { dev } if st.st_dev == *dev => st.st_ino,
            Files::Mount { .. } => return Err(libc::EXDEV),
            Files::Host(map) => map.get(st.st_dev, st.st_ino).ok_or(libc::EXDEV)?,
        };
        match kind {
            libc::S_IFREG => Ok(ino),
            libc::S_IFDIR => Err(libc::EISDIR),
            _ => Err(libc::EINVAL),
        }
    }
}

/// State shared by the accept loop and every connection.
pub(crate) struct ServerShared {
    pub(crate) fs: Arc<Filesystem>,
    pub(crate) files: Files,
    pub(crate) options: ServerOptions,
    /// Every user's usage against its limits.
    pub(crate) users: Users,
    /// Client memory mapped, shared by every buffer over the same memfd.
    pub(crate) imports: Imports,
    /// Answers connections refused for a limit.
    refuser: Refuser,
    socket_path: PathBuf,
    listener: OwnedFd,
    stop: OwnedFd,
    stopping: AtomicBool,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_connection: AtomicU64,
    /// Ring requests completed since start.
    pub(crate) requests: AtomicU64,
    /// Malformed messages and ring entries refused since start.
    pub(crate) refused: AtomicU64,
}

/// The control server of one mounted filesystem.
pub struct Server;

/// A running control server. Dropping it (or [`ServerHandle::shutdown`]) stops accepting,
/// closes every connection (their registrations are released), and removes the socket.
pub struct ServerHandle {
    shared: Arc<ServerShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// The control socket of the filesystem mounted at `mountpoint`, in the default directory:
    /// `/run/stripefs/mnt-<hash of the canonical mountpoint>.sock`. This is the value of the
    /// [`proto::CONTROL_XATTR`] attribute the mount shows, and the path clients derive when the
    /// attribute is missing.
    pub fn socket_path(mountpoint: &Path) -> PathBuf {
        socket_path_in(Path::new(proto::SOCKET_DIR), mountpoint)
    }

    /// Starts serving the filesystem `fs` mounted (by FUSE) at `mountpoint`, with default
    /// options. Call it after the mount is established: descriptors are accepted when their
    /// `st_dev` is that of `mountpoint`.
    pub fn start(fs: Arc<Filesystem>, mountpoint: &Path) -> Result<ServerHandle, ControlError> {
        Self::start_with(fs, mountpoint, ServerOptions::default())
    }

    /// Like [`Server::start`], with explicit options.
    pub fn start_with(
        fs: Arc<Filesystem>,
        mountpoint: &Path,
        options: ServerOptions,
    ) -> Result<ServerHandle, ControlError> {
        let mountpoint_error = |source| ControlError::Mountpoint {
            path: mountpoint.to_path_buf(),
            source,
        };
        let canonical = mountpoint.canonicalize().map_err(mountpoint_error)?;
        let fs_type = sys::fs_type(&canonical).map_err(mountpoint_error)?;
        if fs_type != FUSE_SUPER_MAGIC {
            return Err(ControlError::NotMounted {
                path: canonical,
                fs_type,
            });
        }
        let dev = sys::stat(&canonical).map_err(mountpoint_error)?.st_dev;
        let handle = start(fs.clone(), Files::Mount { dev }, &canonical, options)?;
        fs.set_control_socket(Some(handle.socket_path().to_path_buf()));
        Ok(handle)
    }

    /// For tests without a mount: serves `fs` on the socket derived from `dir` (as if it were
    /// the mountpoint), taking descriptors of the host files in `files` as inodes.
    #[doc(hidden)]
    pub fn start_unmounted(
        fs: Arc<Filesystem>,
        dir: &Path,
        files: HostFiles,
        options: ServerOptions,
    ) -> Result<ServerHandle, ControlError> {
        let canonical = dir
            .canonicalize()
            .map_err(|source| ControlError::Mountpoint {
                path: dir.to_path_buf(),
                source,
            })?;
        start(fs, Files::Host(files), &canonical, options)
    }
}

fn socket_path_in(dir: &Path, mountpoint: &Path) -> PathBuf {
    let canonical = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    dir.join(proto::socket_name(&canonical))
}

/// Starts serving on the socket of `mountpoint` (canonical) in the socket directory chosen
/// by [`socket_dir::choose`].
fn start(
    fs: Arc<Filesystem>,
    files: Files,
    mountpoint: &Path,
    options: ServerOptions,
) -> Result<ServerHandle, ControlError> {
    let socket_path = socket_dir::choose(&options.socket_dir)?.join(proto::socket_name(mountpoint));
    remove_stale_socket(&socket_path)?;
    let socket_error = |source| ControlError::Socket {
        path: socket_path.clone(),
        source,
    };
    let listener = sys::listen(&socket_path, 128).map_err(socket_error)?;
    // Anyone may connect: access to a file is proven by the descriptor passed, and follows
    // its open mode.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666))
        .map_err(socket_error)?;
    let stop = sys::eventfd().map_err(socket_error)?;
    let refuser = Refuser::start().map_err(|source| ControlError::Thread { source })?;
    let shared = Arc::new(ServerShared {
        fs,
        files,
        users: Users::new(options.limits),
        imports: Imports::default(),
        refuser,
        options,
        socket_path,
        listener,
        stop,
        stopping: AtomicBool::new(false),
        connections: Mutex::new(HashMap::new()),
        threads: Mutex::new(Vec::new()),
        next_connection: AtomicU64::new(1),
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let accept_shared = shared.clone();
    let acceptor = std::thread::Builder::new()
        .name("stripefs control".into())
        .spawn(move || accept_loop(&accept_shared))
        .map_err(|source| {
            let _ = std::fs::remove_file(&shared.socket_path);
            ControlError::Thread { source }
        })?;
    Ok(ServerHandle {
        shared,
        acceptor: Some(acceptor),
    })
}

/// Removes a socket file left by a daemon that is gone; refuses if one still answers.
fn remove_stale_socket(path: &Path) -> Result<(), ControlError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Socket {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ControlError::Socket {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"),
            });
        }
        Ok(_) => {}
    }
    if sys::connect(path).is_ok() {
        return Err(ControlError::InUse {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(|source| ControlError::Socket {
        path: path.to_path_buf(),
        source,
    })
}

fn accept_loop(shared: &Arc<ServerShared>) {
    loop {
        let ready = sys::poll(
            &[
                (shared.listener.as_fd(), libc::POLLIN),
                (shared.stop.as_fd(), libc::POLLIN),
            ],
            -1,
        );
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        match ready {
            Ok(events) if events.first().is_some_and(|e| *e != 0) => {}
            Ok(_) => continue,
            Err(_) => {
                // Nothing sensible to do but not spin.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        }
        let Ok(socket) = sys::accept(shared.listener.as_fd()) else {
            continue;
        };
        let Some(cred) = sys::peer_cred(socket.as_fd()).ok() else {
            continue; // dropping the socket closes it
        };
        let user = shared.users.user(cred.uid);
        let charge = match admit(shared, &user) {
            Ok(charge) => charge,
            Err(errno) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                shared.refuser.refuse(socket, errno);
                continue;
            }
        };
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection::new(id, socket, cred, user, charge));
        shared.connections.lock().insert(id, conn.clone());
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("stripefs ctl {id}"))
            .spawn(move || {
                connection::messages::serve(&conn_shared, &conn);
                conn_shared.connections.lock().remove(&conn.id());
            });
        let mut threads = shared.threads.lock();
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                shared.connections.lock().remove(&id);
            }
        }
    }
}

/// Counts a new connection against its user's limit and the server's; the errno to refuse
/// it with otherwise (`EAGAIN`).
fn admit(shared: &ServerShared, user: &Arc<UserUsage>) -> Result<Charge, i32> {
    let charge = user.charge(Resource::Connections, 1)?;
    if shared.connections.lock().len() >= shared.options.max_connections {
        return Err(libc::EAGAIN);
    }
    Ok(charge)
}

impl ServerShared {
    /// What a Stat request answers. `viewer` is the uid asking: a user other than root sees
    /// only the connections and registrations of its own uid (device counters and server
    /// totals are for everyone); `None` (the daemon itself) and root see all.
    pub(crate) fn stat(&self, viewer: Option<u32>) -> StatReply {
        let sees_all = matches!(viewer, None | Some(0));
        let visible = |c: &Connection| sees_all || Some(c.uid()) == viewer;
        let devices = self
            .fs
            .devices()
            .iter()
            .map(|d| {
                let s = d.stats();
                DeviceStat {
                    name: d.name().to_string(),
                    reads: s.reads,
                    writes: s.writes,
                    bytes_read: s.bytes_read,
                    bytes_written: s.bytes_written,
                    errors: s.errors,
                }
            })
            .collect();
        let connections: Vec<Arc<Connection>> = self
            .connections
            .lock()
            .values()
            .filter(|c| visible(c))
            .cloned()
            .collect();
        let mut known: HashMap<u64, RegistrationStat> = HashMap::new();
        for c in &connections {
            for r in c.registration_stats() {
                known.insert(r.mapping, r);
            }
        }
        let mut registrations: Vec<RegistrationStat> = self
            .fs
            .registrations()
            .into_iter()
            .filter_map(|(mapping, ino)| match known.remove(&mapping) {
                Some(r) => Some(r),
                // Not made through a connection this viewer may see.
                None if !sees_all => None,
                None => Some(RegistrationStat {
                    mapping,
                    ino,
                    connection: 0,
                    pid: 0,
                    access: 0,
                    buffer_len: 0,
                    requests: 0,
                    migrations: 0,
                }),
            })
            .collect();
        registrations.sort_by_key(|r| r.mapping);
        StatReply {
            connections: connections.len() as u32,
            requests: self.requests.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            devices,
            registrations_total: registrations.len() as u32,
            registrations,
        }
    }
}

impl ServerHandle {
    /// Where the server listens.
    pub fn socket_path(&self) -> &Path {
        &self.shared.socket_path
    }

    /// What a Stat request answers: device counters, live registrations, and counts.
    pub fn stat(&self) -> StatReply {
        self.shared.stat(None)
    }

    /// Connections being served.
    pub fn connections(&self) -> usize {
        self.shared.connections.lock().len()
    }

    /// Stops the server: no new connections; every connection is closed, its running
    /// requests complete and its registrations are released; the socket file is removed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        sys::ring_doorbell(self.shared.stop.as_fd());
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.shared.socket_path);
        for conn in self.shared.connections.lock().values() {
            conn.hang_up();
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("socket", &self.shared.socket_path)
            .field("connections", &self.connections())
            .finish()
    }
}
