//! Finding the control socket of the daemon serving a path, from the path alone.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::ClientError;
use crate::proto::{CONTROL_XATTR, SOCKET_DIR, socket_name};
use crate::sys;

/// The control socket of the stripefs mount that holds `path` (a file or directory on it):
///
/// 1. the value of the `user.stripefs.control` attribute of `path`, then of the mount root
///    (the topmost directory above `path` on the same device);
/// 2. the well-known socket `/run/stripefs/mnt-<hash>.sock` derived from the canonical path
///    of the mount root, then of every directory from `path` up to `/` (the first that
///    exists and is a socket).
pub fn discover(path: &Path) -> Result<PathBuf, ClientError> {
    let canonical = path.canonicalize().map_err(|source| ClientError::Path {
        path: path.to_path_buf(),
        source,
    })?;
    let root = mount_root(&canonical);
    let mut tried = Vec::new();
    for candidate in [&canonical, &root] {
        if let Ok(value) = sys::getxattr(candidate, OsStr::new(CONTROL_XATTR)) {
            let end = value
                .iter()
                .position(|&b| b == 0 || b == b'\n')
                .unwrap_or(value.len());
            if end > 0 {
                return Ok(PathBuf::from(OsStr::from_bytes(&value[..end])));
            }
        }
        tried.push(format!("xattr {CONTROL_XATTR} of {}", candidate.display()));
    }
    let dirs = std::iter::once(root.as_path()).chain(canonical.ancestors());
    for dir in dirs {
        let socket = Path::new(SOCKET_DIR).join(socket_name(dir));
        if std::fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(socket);
        }
        if dir == root {
            tried.push(format!("{} (for {})", socket.display(), dir.display()));
        }
    }
    tried.push(format!("{SOCKET_DIR}/mnt-*.sock of every parent directory"));
    Err(ClientError::NotFound {
        path: path.to_path_buf(),
        tried: tried.join(", "),
    })
}

/// The topmost directory above `path` (canonical) that is on the same device.
fn mount_root(path: &Path) -> PathBuf {
    let Ok(st) = sys::stat(path) else {
        return path.to_path_buf();
    };
    let mut root = path;
    while let Some(parent) = root.parent() {
        match sys::stat(parent) {
            Ok(p) if p.st_dev == st.st_dev => root = parent,
            _ => break,
        }
    }
    root.to_path_buf()
}
