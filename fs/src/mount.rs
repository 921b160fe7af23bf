//! Mounting a [`Filesystem`] with FUSE and running it until it is unmounted.
//!
//! [`Mount::start`] mounts (the kernel's INIT is answered before it returns), starts the
//! event-loop threads and the invalidation thread, and installs the filesystem's
//! invalidator hook. The session ends when the mount goes away: [`Mount::unmount`] from
//! this process, or `umount MOUNTPOINT` from outside. [`Mount::wait`] then returns, and the
//! caller calls [`Filesystem::shutdown`] (commit and checkpoint). Nothing here installs
//! signal handlers: the `stripefs mount` command does.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fuser::{Config, MountOption, SessionACL, SessionUnmounter};

use crate::filesystem::Filesystem;
use crate::fuse::{Fuse, Invalidations};

/// `f_type` of a FUSE mount in `statfs`.
const FUSE_SUPER_MAGIC: libc::__fsword_t = 0x6573_5546;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Event-loop threads (requests served in parallel).
    pub threads: usize,
    /// Let every user in (`allow_other`; needs root or `user_allow_other` in
    /// `/etc/fuse.conf`). Off by default, as for every FUSE filesystem: only the user who
    /// mounted (and, for the kernel's checks, nobody else) may use the mount.
    pub allow_other: bool,
    /// The source shown in `/proc/mounts`.
    pub fsname: String,
    /// Let device nodes on the filesystem be opened as devices (`dev`; off by default, as
    /// `nodev`: whoever can write the member devices could otherwise make a node of any
    /// device). Creating device nodes works either way.
    pub dev: bool,
}

/// Threads serving FUSE requests unless told otherwise: one per CPU, at least 2 and at most
/// 16. A metadata request is a few microseconds of work between two context switches;
/// threads beyond the CPUs only add switches (on 2 CPUs, 2 threads made 20-25% more empty
/// files per second than 4).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16))
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: default_threads(),
            allow_other: false,
            fsname: "stripefs".into(),
            dev: false,
        }
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A mounted filesystem, served by background threads.
pub struct Mount {
    mountpoint: PathBuf,
    /// `None` when this process mounted with `mount(2)` itself (root) and so unmounts with
    /// `umount(2)` itself; fuser's unmounter after a mount through `fusermount3`.
    fuser_unmounter: Option<SessionUnmounter>,
    /// `maj:min` of our mount (root path), to unmount only ours: another mount may have
    /// taken the directory since ours went away.
    device: Option<String>,
    session: Option<JoinHandle<io::Result<()>>>,
    invalidations: Option<(Invalidations, JoinHandle<()>)>,
    fs: Arc<Filesystem>,
}

impl Mount {
    /// Mounts `fs` on `mountpoint` and starts serving it. `on_end` is called (from the
    /// session thread) when the session has ended, however it ended.
    ///
    /// As root, the mount is made here with `mount(2)` (type `fuse.stripefs`) and the
    /// session is built on its `/dev/fuse` descriptor, so that only this process unmounts
    /// it: a session that fuser mounted tries `umount(2)` again on the mountpoint when it
    /// ends, even after an unmount from outside, which could take down a newer mount on the
    /// same directory. Other users mount through fuser (`fusermount3`).
    pub fn start(
        fs: Arc<Filesystem>,
        mountpoint: &Path,
        options: &MountOptions,
        on_end: impl FnOnce() + Send + 'static,
    ) -> io::Result<Mount> {
        let mountpoint = mountpoint.canonicalize()?;
        let mut config = Config::default();
        config.acl = if options.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(options.threads.max(1));
        config.clone_fd = true;
        let fuse = Fuse::new(fs.clone());
        let (session, fuser_unmounter, device) = if is_root() {
            let fd = mount_sys(&mountpoint, options)?;
            let device = mounted_device(&mountpoint);
            match fuser::Session::from_fd(fuse, fd, config.acl, config) {
                Ok(session) => (session, None, device),
                Err(e) => {
                    let _ = umount(&mountpoint, 0);
                    return Err(e);
                }
            }
        } else {
            user_can_mount()?;
            config.mount_options = vec![
                MountOption::FSName(options.fsname.clone()),
                MountOption::Subtype("stripefs".into()),
                MountOption::DefaultPermissions,
                MountOption::NoAtime,
                if options.dev {
                    MountOption::Dev
                } else {
                    MountOption::NoDev
                },
            ];
            let mut session = fuser::Session::new(fuse, &mountpoint, &config)?;
            let unmounter = session.unmount_callable();
            (session, Some(unmounter), None)
        };
        let (invalidations, notifier_thread) = Invalidations::start(session.notifier())?;
        fs.set_invalidator(invalidations.hook());
        let mut mount = Mount {
            mountpoint,
            fuser_unmounter,
            device,
            session: None,
            invalidations: Some((invalidations, notifier_thread)),
            fs,
        };
        let thread = std::thread::Builder::new()
            .name("stripefs fuse".into())
            .spawn(move || {
                let result = session.run();
                on_end();
                result
            });
        match thread {
            Ok(thread) => mount.session = Some(thread),
            Err(e) => {
                let _ = mount.unmount();
                return Err(e);
            }
        }
        Ok(mount)
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Checks that requests through the mountpoint reach this filesystem (`statfs` answers
    /// with FUSE's magic number).
    pub fn check(&self) -> io::Result<()> {
        let path = CString::new(self.mountpoint.as_os_str().as_bytes())?;
        // SAFETY: `statfs` is plain data; zeroed is a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `st` a valid out-pointer, both live
        // for the call.
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.f_type != FUSE_SUPER_MAGIC {
            return Err(io::Error::other(format!(
                "{} is not a FUSE mount (f_type {:#x})",
                self.mountpoint.display(),
                st.f_type
            )));
        }
        Ok(())
    }

    /// Unmounts (`umount(2)`); fails with `EBUSY` while files are open or a process has its
    /// working directory inside. The session then ends.
    pub fn unmount(&mut self) -> io::Result<()> {
        if let Some(unmounter) = &mut self.fuser_unmounter {
            return unmounter.unmount();
        }
        if self.still_mounted() {
            umount(&self.mountpoint, 0)?;
        }
        Ok(())
    }

    /// Detaches the mount from the namespace now (`umount -l`); the session ends when the
    /// last open file on it is closed.
    pub fn detach(&mut self) -> io::Result<()> {
        if self.fuser_unmounter.is_some() || self.still_mounted() {
            umount(&self.mountpoint, libc::MNT_DETACH)?;
        }
        Ok(())
    }

    /// Whether our own mount (not a later one on the same directory) is still there.
    fn still_mounted(&self) -> bool {
        match &self.device {
            Some(ours) => mounted_device(&self.mountpoint).as_ref() == Some(ours),
            // Unknown: let umount(2) tell.
            None => true,
        }
    }

    /// Waits until the session has ended (after an unmount from here or from outside) and
    /// the invalidation thread has stopped. Does not shut the filesystem down.
    pub fn wait(mut self) -> io::Result<()> {
        let result = match self.session.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the FUSE session thread panicked"))),
            None => Ok(()),
        };
        let ours_known = self.fuser_unmounter.is_none() && self.device.is_some();
        let still_mounted = ours_known && self.still_mounted();
        // A connection that ended without an unmount (aborted) leaves a dead mount behind.
        if still_mounted {
            let _ = umount(&self.mountpoint, libc::MNT_DETACH);
        }
        self.stop_invalidations();
        match result {
            // When a lazily detached mount is released (its last open file closed), the
            // kernel sometimes ends the connection with ECONNABORTED instead of ENODEV, which
            // fuser reports as an error (seen on 6.18, about one time in four). With our mount
            // gone from the namespace that is the normal end; a connection aborted while
            // mounted (fusectl's `abort`) leaves the mount behind and stays an error.
            Err(e)
                if e.raw_os_error() == Some(libc::ECONNABORTED) && ours_known && !still_mounted =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn stop_invalidations(&mut self) {
        if let Some((invalidations, thread)) = self.invalidations.take() {
            // Replacing the hook drops its sender; with ours, the thread's channel closes.
            self.fs.set_invalidator(Box::new(|_| {}));
            drop(invalidations);
            let _ = thread.join();
        }
    }
}

impl Drop for Mount {
    /// A mount dropped without [`Mount::wait`] is unmounted and waited for, or detached
    /// lazily (and not waited for) if busy.
    fn drop(&mut self) {
        if let Some(thread) = self.session.take() {
            if self.unmount().is_ok() {
                let _ = thread.join();
            } else {
                // Busy: joining could wait for a file that is never closed.
                let _ = self.detach();
            }
        }
        self.stop_invalidations();
    }
}

/// The `maj:min` of the topmost mount on `path`, from /proc/self/mountinfo.
fn mounted_device(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let (device, point) = (fields.get(2)?, fields.get(4)?);
        (unescape_mountinfo(point) == want).then(|| (*device).to_string())
    })
}

/// Undoes the octal escapes (`\040` for a space) of a mountinfo field.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether this (non-root) user can mount FUSE here: `fusermount3` opens `/dev/fuse` with
/// the user's own file-system uid, so a user who cannot open it cannot mount at all (where
/// `/dev/fuse` is `0600`, as on some containers and hardened systems). The error says so,
/// and what root can do, instead of a bare "Permission denied" about the mountpoint.
fn user_can_mount() -> io::Result<()> {
    const DEVICE: &str = "/dev/fuse";
    let path = CString::new(DEVICE)?;
    // SAFETY: `path` is a NUL-terminated string that lives for the call.
    if unsafe { libc::access(path.as_ptr(), libc::R_OK | libc::W_OK) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    let mode = std::fs::metadata(DEVICE)
        .map(|m| format!("mode {:04o}, owner uid {}", m.mode() & 0o7777, m.uid()))
        .unwrap_or_else(|e| e.to_string());
    Err(io::Error::new(
        err.kind(),
        format!(
            "this system does not let uid {uid} mount FUSE filesystems: {DEVICE} ({mode}) is \
             not readable and writable by uid {uid} ({err}), and fusermount3 opens it as the \
             user. Root can allow user mounts (chmod 0666 {DEVICE}, as most distributions \
             do, with fusermount3 installed setuid root), or mount the filesystem itself \
             (with -o allow_other to let other users in)",
            // SAFETY: getuid has no preconditions and cannot fail.
            uid = unsafe { libc::getuid() },
        ),
    ))
}

/// `umount2(path, flags)`.
fn umount(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `path` is a NUL-terminated string that lives for the call.
    if unsafe { libc::umount2(path.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `/dev/fuse` and mounts it on `mountpoint` with `mount(2)` (root only), the way
/// libfuse and fuser do; returns the device descriptor the session is served on.
fn mount_sys(mountpoint: &Path, options: &MountOptions) -> io::Result<OwnedFd> {
    let device: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/fuse: {e}")))?
        .into();
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={},default_permissions",
        device.as_raw_fd(),
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        unsafe { libc::getuid() },
        // SAFETY: as above.
        unsafe { libc::getgid() },
    );
    if options.allow_other {
        data.push_str(",allow_other");
    }
    let source = CString::new(options.fsname.as_bytes())?;
    let target = CString::new(mountpoint.as_os_str().as_bytes())?;
    let fstype = CString::new("fuse.stripefs")?;
    let data = CString::new(data)?;
    let mut flags = libc::MS_NOSUID | libc::MS_NOATIME;
    if !options.dev {
        flags |= libc::MS_NODEV;
    }
    // SAFETY: every pointer is a NUL-terminated string that lives for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount(2) of fuse.stripefs on {}: {e}", mountpoint.display()),
        ));
    }
    Ok(device)
}
