//! Extended attributes, among them the file layout as `user.stripefs.layout`.

use std::os::unix::ffi::OsStrExt;

use stripefs_engine::spec::parse_size;
use stripefs_layout::StripeUnit;
use stripefs_layout::ondisk::{InodeKind, LayoutRecord, Record};

use super::error::FsError;
use super::{Filesystem, NAME_MAX, now};

/// The name under which a file's (or directory's default) layout is shown and set.
pub const LAYOUT_XATTR: &str = "user.stripefs.layout";
/// The name under which the mount's control socket path is shown (read-only).
pub const CONTROL_XATTR: &str = "user.stripefs.control";
/// Largest attribute value.
pub const XATTR_VALUE_MAX: usize = 65536;

/// How `setxattr` treats an existing attribute.
#[derive(Clone, Copy, Debug, Default)]
pub struct XattrFlags {
    /// Fail if it exists (XATTR_CREATE).
    pub create: bool,
    /// Fail if it does not exist (XATTR_REPLACE).
    pub replace: bool,
}

/// `stripe_unit=262144,stripe_count=4,devices=0,1,2,3`
pub fn format_layout(layout: &LayoutRecord) -> String {
    let devices: Vec<String> = layout.devices.iter().map(u16::to_string).collect();
    format!(
        "stripe_unit={},stripe_count={},devices={}",
        layout.stripe_unit,
        layout.devices.len(),
        devices.join(":")
    )
}

impl Filesystem {
    /// The value of attribute `name`.
    pub fn getxattr(&self, ino: u64, name: &std::ffi::OsStr) -> Result<Vec<u8>, FsError> {
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        if name.as_bytes() == CONTROL_XATTR.as_bytes() {
            return self
                .control_socket
                .read()
                .as_ref()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .ok_or(FsError::NoXattr);
        }
        if name.as_bytes() == LAYOUT_XATTR.as_bytes() {
            return match (inode.layout(), inode.kind()) {
                (Some(l), _) => Ok(format_layout(l).into_bytes()),
                (None, InodeKind::Dir) => Ok(format!(
                    "{} (filesystem default)",
                    format_layout(&super::format::default_layout(self.superblock(), 0))
                )
                .into_bytes()),
                (None, _) => Err(FsError::NoXattr),
            };
        }
        inode
            .xattrs()
            .get(name.as_bytes())
            .cloned()
            .ok_or(FsError::NoXattr)
    }

    /// Names of the attributes of `ino`.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>, FsError> {
        let meta = self.meta.read();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        if matches!(inode.kind(), InodeKind::File | InodeKind::Dir) {
            names.push(LAYOUT_XATTR.as_bytes().to_vec());
        }
        if self.control_socket.read().is_some() {
            names.push(CONTROL_XATTR.as_bytes().to_vec());
        }
        names.extend(inode.xattrs().keys().cloned());
        Ok(names)
    }

    /// Sets attribute `name`. The layout may be set on an empty file or a directory.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &std::ffi::OsStr,
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<(), FsError> {
        let name = name.as_bytes();
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::invalid(format!(
                "attribute value of {} bytes (at most {XATTR_VALUE_MAX})",
                value.len()
            )));
        }
        if name == LAYOUT_XATTR.as_bytes() {
            return self.set_layout(ino, value);
        }
        if name == CONTROL_XATTR.as_bytes() {
            return Err(FsError::invalid(
                "user.stripefs.control is set by the mount daemon",
            ));
        }
        let mut meta = self.meta.write();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        let exists = inode.xattrs().contains_key(name);
        if flags.create && exists {
            return Err(FsError::Exists);
        }
        if flags.replace && !exists {
            return Err(FsError::NoXattr);
        }
        let mut r = inode.record();
        r.ctime = now();
        self.change(
            &mut meta,
            vec![
                Record::SetXattr {
                    ino,
                    name: name.to_vec(),
                    value: value.to_vec(),
                },
                Record::Inode(r),
            ],
        )
    }

    /// Removes attribute `name` (a directory's layout: back to the filesystem default).
    pub fn removexattr(&self, ino: u64, name: &std::ffi::OsStr) -> Result<(), FsError> {
        let name = name.as_bytes();
        let mut meta = self.meta.write();
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        let mut r = inode.record();
        r.ctime = now();
        if name == LAYOUT_XATTR.as_bytes() {
            if inode.kind() != InodeKind::Dir {
                return Err(FsError::invalid(
                    "a file's layout cannot be removed, only replaced",
                ));
            }
            r.layout = None;
            return self.change(&mut meta, vec![Record::Inode(r)]);
        }
        if !inode.xattrs().contains_key(name) {
            return Err(FsError::NoXattr);
        }
        self.change(
            &mut meta,
            vec![
                Record::RemoveXattr {
                    ino,
                    name: name.to_vec(),
                },
                Record::Inode(r),
            ],
        )
    }

    fn set_layout(&self, ino: u64, value: &[u8]) -> Result<(), FsError> {
        let layout = self.parse_layout(value)?;
        let mut meta = self.meta.write();
        // Under the metadata lock: see `register`.
        if self.is_registered(ino) {
            return Err(FsError::invalid(
                "the file is registered; unregister it before changing its layout",
            ));
        }
        let inode = meta.get(ino).ok_or(FsError::NotFound)?;
        match inode.kind() {
            InodeKind::Dir => {}
            InodeKind::File
                if inode.size() == 0 && inode.extents().iter().all(|m| m.end() == 0) => {}
            InodeKind::File => {
                return Err(FsError::invalid(
                    "the layout of a file can only be set while it is empty",
                ));
            }
            InodeKind::Symlink => return Err(FsError::invalid("symbolic links have no layout")),
            InodeKind::Fifo
            | InodeKind::Socket
            | InodeKind::CharDevice
            | InodeKind::BlockDevice => {
                return Err(FsError::invalid(
                    "FIFOs, sockets and device nodes have no layout",
                ));
            }
        }
        let mut r = inode.record();
        r.layout = Some(layout);
        r.ctime = now();
        self.change(&mut meta, vec![Record::Inode(r)])
    }

    /// Parses `stripe_unit=64K,stripe_count=2[,devices=1:3]` (any of the keys may be left
    /// out: they default to the filesystem's; devices default to a rotating choice).
    fn parse_layout(&self, value: &[u8]) -> Result<LayoutRecord, FsError> {
        let text = std::str::from_utf8(value)
            .map_err(|_| FsError::invalid("layout is not UTF-8"))?
            .trim_matches(|c: char| c.is_whitespace() || c == '\0');
        let sb = self.superblock();
        let n = sb.device_count as usize;
        let (mut unit, mut count, mut devices) = (u64::from(sb.default_stripe_unit), None, None);
        for item in text.split([',', ' ']).filter(|s| !s.is_empty()) {
            let (key, val) = item.split_once('=').ok_or_else(|| {
                FsError::invalid(format!("layout item {item:?} is not key=value"))
            })?;
            match key {
                "stripe_unit" | "unit" => {
                    unit = parse_size(val).map_err(|e| FsError::invalid(format!("layout: {e}")))?;
                }
                "stripe_count" | "count" => {
                    count = Some(val.parse::<usize>().map_err(|_| {
                        FsError::invalid(format!("layout: stripe_count {val:?} is not a number"))
                    })?);
                }
                "devices" => devices = Some(parse_devices(val, n)?),
                _ => return Err(FsError::invalid(format!("layout: unknown key {key:?}"))),
            }
        }
        let unit = StripeUnit::new(unit).map_err(|e| FsError::invalid(format!("layout: {e}")))?;
        let devices = match (devices, count) {
            (Some(d), Some(c)) if d.len() != c => {
                return Err(FsError::invalid(format!(
                    "layout: stripe_count {c} but {} devices listed",
                    d.len()
                )));
            }
            (Some(d), _) => d,
            (None, c) => {
                let c = c.unwrap_or(sb.default_stripe_count as usize);
                if c == 0 || c > n {
                    return Err(FsError::invalid(format!(
                        "layout: stripe_count {c} must be between 1 and {n}"
                    )));
                }
                let first = self.first_device_for_new_file();
                (0..c).map(|i| ((first + i) % n) as u16).collect()
            }
        };
        Ok(LayoutRecord {
            stripe_unit: unit.bytes() as u32,
            devices,
        })
    }
}

fn parse_devices(val: &str, n: usize) -> Result<Vec<u16>, FsError> {
    let mut out: Vec<u16> = Vec::new();
    for d in val.split([':', ';', '+']) {
        let i: u16 = d
            .parse()
            .map_err(|_| FsError::invalid(format!("layout: device {d:?} is not a number")))?;
        if usize::from(i) >= n {
            return Err(FsError::invalid(format!(
                "layout: device {i} does not exist (the filesystem has {n})"
            )));
        }
        if out.contains(&i) {
            return Err(FsError::invalid(format!("layout: device {i} listed twice")));
        }
        out.push(i);
    }
    Ok(out)
}

/// Namespaces whose attributes are stored as plain values. `system.*` (ACLs and the like)
/// has meaning the filesystem does not implement, so it is refused rather than stored and
/// silently ignored.
const STORED_NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

fn check_xattr_name(name: &[u8]) -> Result<(), FsError> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) {
        return Err(FsError::invalid(format!(
            "attribute name of {} bytes",
            name.len()
        )));
    }
    if !STORED_NAMESPACES.iter().any(|ns| name.starts_with(ns)) {
        return Err(FsError::NotSupported {
            what: "attributes outside the user., trusted. and security. namespaces",
        });
    }
    Ok(())
}
