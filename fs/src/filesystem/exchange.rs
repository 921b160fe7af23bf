//! `rename` with `RENAME_EXCHANGE`: two names swap the inodes they name, in one change.
//!
//! The change unlinks both names and links each to the other's inode; applying `Link` and
//! `Unlink` keeps the link counts (a directory counts in its parent's, through its `..`)
//! and a moved directory's parent right, so a file swapped with a directory in another
//! directory moves one link from the directory's old parent to its new one.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use stripefs_layout::ondisk::Record;

use super::error::FsError;
use super::namespace::{check_name, child, directory, is_ancestor};
use super::{Filesystem, now};
use crate::meta::Inode;

impl Filesystem {
    /// Swaps what `parent/name` and `new_parent/new_name` name; both must exist.
    pub(super) fn rename_exchange(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<(), FsError> {
        let (name, new_name) = (
            check_name(name.as_bytes())?,
            check_name(new_name.as_bytes())?,
        );
        let mut meta = self.meta.write();
        let a = child(&meta, parent, name)?;
        let b = child(&meta, new_parent, new_name)?;
        directory(&meta, new_parent)?;
        if a == b {
            return Ok(());
        }
        // A directory must not end up inside itself.
        let a_is_dir = meta.get(a).is_some_and(Inode::is_dir);
        let b_is_dir = meta.get(b).is_some_and(Inode::is_dir);
        if (a_is_dir && is_ancestor(&meta, a, new_parent))
            || (b_is_dir && is_ancestor(&meta, b, parent))
        {
            return Err(FsError::invalid("cannot move a directory into itself"));
        }
        let t = now();
        let mut records = vec![
            Record::Unlink {
                parent,
                name: name.to_vec(),
            },
            Record::Unlink {
                parent: new_parent,
                name: new_name.to_vec(),
            },
            Record::Link {
                parent,
                name: name.to_vec(),
                ino: b,
            },
            Record::Link {
                parent: new_parent,
                name: new_name.to_vec(),
                ino: a,
            },
        ];
        for ino in [a, b] {
            if let Some(mut r) = meta.get(ino).map(|i| i.record()) {
                r.ctime = t;
                records.push(Record::Inode(r));
            }
        }
        records.extend(self.touch_parent(&meta, parent, t));
        if new_parent != parent {
            records.extend(self.touch_parent(&meta, new_parent, t));
        }
        self.change(&mut meta, records)
    }
}
