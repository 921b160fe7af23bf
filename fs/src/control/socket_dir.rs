//! Where the control socket goes: the system directory (`/run/stripefs`) for root, and for a
//! user who cannot write there a directory of their own: `$XDG_RUNTIME_DIR/stripefs`, else
//! `/tmp/stripefs-<uid>`. Clients find the socket through the mount's
//! `user.stripefs.control` attribute wherever it is, and check that its peer is the mount's
//! owner (so a directory others could write is not a risk for them, only for the daemon's
//! own listening: a directory of the user's is checked to be theirs).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::ControlError;

/// The directory the socket goes in: `preferred` if this process can create it and write
/// in it; otherwise, for a user other than root, the first of the user's own directories
/// that works. The error names each directory tried and why it was not used.
pub fn choose(preferred: &Path) -> Result<PathBuf, ControlError> {
    let mut tried = Vec::new();
    match usable(preferred, false) {
        Ok(()) => return Ok(preferred.to_path_buf()),
        Err(e) => tried.push(format!("{}: {e}", preferred.display())),
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        for dir in user_dirs(uid) {
            match usable(&dir, true) {
                Ok(()) => return Ok(dir),
                Err(e) => tried.push(format!("{}: {e}", dir.display())),
            }
        }
    }
    Err(ControlError::SocketDir {
        path: preferred.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "no usable directory for the socket (tried {})",
                tried.join("; ")
            ),
        ),
    })
}

/// The user's own candidates, in order.
fn user_dirs(uid: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        dirs.push(Path::new(&runtime).join("stripefs"));
    }
    dirs.push(PathBuf::from(format!("/tmp/stripefs-{uid}")));
    dirs
}

/// Creates `dir` (mode 0755) if needed and checks that this process may make a socket in
/// it; `own`: it must also be a real directory owned by this user (not a symlink, not
/// someone else's directory planted in a shared place such as /tmp).
fn usable(dir: &Path, own: bool) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if own {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "not a directory owned by uid {uid} (owner uid {}, symlink: {})",
                    meta.uid(),
                    meta.file_type().is_symlink()
                ),
            ));
        }
    }
    let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))?;
    // SAFETY: `path` is a NUL-terminated string that lives for the call.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_preferred_directory_is_used() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("sockets");
        assert_eq!(choose(&dir).ok(), Some(dir.clone()));
        assert!(dir.is_dir());
    }
}
