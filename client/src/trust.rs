//! Before a client hands anything to a control socket it found from a path (its file
//! descriptors, its memory), it checks whom it is talking to:
//!
//! - the path is on a FUSE mount of type `fuse.stripefs` (from `/proc/self/mountinfo`, the
//!   entry of the path's device), checked before connecting: a file elsewhere (say on
//!   tmpfs, with a planted `user.stripefs.control` attribute naming someone's socket) is
//!   refused without the socket ever being touched;
//! - the socket's peer (`SO_PEERCRED`, read after `connect` and before anything is sent) is
//!   the uid that owns that mount (the `user_id` of its options: the uid of the daemon that
//!   mounted it), or root.
//!
//! A mount made by a user is served by that user's daemon: registering through it trusts
//! that user as much as reading its files does.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use crate::error::ClientError;
use crate::sys;

/// `f_type` of a FUSE mount in `statfs`.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
/// Filesystem type of a stripefs mount in the mount table.
const STRIPEFS_TYPE: &str = "fuse.stripefs";

/// The uid owning the stripefs mount that holds `path`, checked before connecting to the
/// socket `socket_path` found for it; [`ClientError::Untrusted`] if `path` is not on one.
pub(crate) fn mount_owner_of(path: &Path, socket_path: &Path) -> Result<u32, ClientError> {
    mount_owner(path).map_err(|why| untrusted(path, socket_path, why))
}

/// Checks, after connecting and before sending anything, that the peer of `socket` is
/// `owner` (the mount's) or root.
pub(crate) fn check_peer(
    owner: u32,
    path: &Path,
    socket_path: &Path,
    socket: BorrowedFd<'_>,
) -> Result<(), ClientError> {
    let peer = sys::peer_cred(socket).map_err(|e| {
        untrusted(
            path,
            socket_path,
            format!("cannot read the socket's peer credentials: {e}"),
        )
    })?;
    if peer.uid != owner && peer.uid != 0 {
        return Err(untrusted(
            path,
            socket_path,
            format!(
                "the socket is served by uid {} (pid {}), not by the mount's owner uid \
                 {owner} or root",
                peer.uid, peer.pid
            ),
        ));
    }
    Ok(())
}

fn untrusted(path: &Path, socket_path: &Path, why: String) -> ClientError {
    ClientError::Untrusted {
        path: path.to_path_buf(),
        socket: socket_path.to_path_buf(),
        why,
    }
}

/// The uid that owns the stripefs mount holding `path`, or why it is not one.
fn mount_owner(path: &Path) -> Result<u32, String> {
    let fs_type = sys::fs_type(path).map_err(|e| format!("statfs: {e}"))?;
    if fs_type != FUSE_SUPER_MAGIC {
        return Err(format!(
            "not on a FUSE mount (filesystem type {fs_type:#x})"
        ));
    }
    let dev = sys::stat(path).map_err(|e| format!("stat: {e}"))?.st_dev;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mount = table
        .lines()
        .rev()
        .filter_map(MountEntry::parse)
        .find(|m| m.dev == (libc::major(dev), libc::minor(dev)))
        .ok_or_else(|| "its mount is not in /proc/self/mountinfo".to_string())?;
    if mount.fs_type != STRIPEFS_TYPE {
        return Err(format!(
            "on a FUSE mount of type {} at {}, not {STRIPEFS_TYPE}",
            mount.fs_type,
            mount.point.display()
        ));
    }
    mount.user_id.ok_or_else(|| {
        format!(
            "the mount at {} does not say which uid owns it (no user_id option)",
            mount.point.display()
        )
    })
}

/// What the client needs of a line of `/proc/self/mountinfo`.
struct MountEntry {
    dev: (u32, u32),
    point: PathBuf,
    fs_type: String,
    user_id: Option<u32>,
}

impl MountEntry {
    /// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS`.
    fn parse(line: &str) -> Option<MountEntry> {
        let (head, tail) = line.split_once(" - ")?;
        let mut head = head.split(' ');
        let dev = head.nth(2)?.split_once(':')?;
        let dev = (dev.0.parse().ok()?, dev.1.parse().ok()?);
        let point = PathBuf::from(unescape(head.nth(1)?));
        let mut tail = tail.split(' ');
        let fs_type = tail.next()?.to_string();
        let user_id = tail
            .nth(1)
            .and_then(|opts| opts.split(',').find_map(|o| o.strip_prefix("user_id=")))
            .and_then(|v| v.parse().ok());
        Some(MountEntry {
            dev,
            point,
            fs_type,
            user_id,
        })
    }
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo paths.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mountinfo_line_gives_device_type_and_owner() {
        let line = "52 30 0:48 / /var/tmp/my\\040mnt rw,nosuid,nodev,noatime - fuse.stripefs \
                    stripefs rw,user_id=1000,group_id=1000,default_permissions";
        let m = MountEntry::parse(line).expect("parses");
        assert_eq!(m.dev, (0, 48));
        assert_eq!(m.point, PathBuf::from("/var/tmp/my mnt"));
        assert_eq!(m.fs_type, "fuse.stripefs");
        assert_eq!(m.user_id, Some(1000));
        let other = "30 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw";
        let m = MountEntry::parse(other).expect("parses");
        assert_eq!(
            (m.dev, m.fs_type.as_str(), m.user_id),
            ((8, 1), "ext4", None)
        );
    }
}
