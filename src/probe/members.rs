//! Finding the members of a filesystem: reading the superblocks of the machine's block devices
//! (and of files named by the user), grouping them by filesystem uuid, and checking that a
//! filesystem's set is whole.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use stripefs_fs::filesystem::hex;
use stripefs_layout::ondisk::SUPERBLOCK_SIZE;

use super::signatures::{HEAD_LEN, Signature, detect};

/// Why the members of a filesystem cannot be put together.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("`{0}` is not a filesystem uuid (32 hex digits, dashes allowed)")]
    BadUuid(String),
    #[error("no member of filesystem {uuid} found ({looked})")]
    NotFound { uuid: String, looked: String },
    #[error("{} of {} of filesystem {} not found; found: {}", missing_text(.missing), .fs.count, .fs.name(), .fs.found_text())]
    Missing { fs: FoundFs, missing: Vec<u32> },
    #[error("member {index} of filesystem {} is on more than one device: {}; give the devices explicitly", .fs.name(), join(.paths))]
    Duplicate {
        fs: FoundFs,
        index: u32,
        paths: Vec<PathBuf>,
    },
    #[error("the members of filesystem {} disagree on how many devices it has ({counts})", .fs.name())]
    Inconsistent { fs: FoundFs, counts: String },
}

fn missing_text(missing: &[u32]) -> String {
    match missing {
        [one] => format!("member {one}"),
        many => format!(
            "members {}",
            many.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One device holding a stripefs superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub path: PathBuf,
    pub index: u32,
    /// How many devices this member's superblock says the filesystem has.
    pub count: u32,
}

/// A filesystem and the members of it that were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFs {
    pub uuid: [u8; 16],
    pub label: String,
    /// How many devices the filesystem has (per its first member found).
    pub count: u32,
    /// The members found, by index (a device found under two names is listed once).
    pub members: Vec<Member>,
}

impl FoundFs {
    /// The uuid, and the label in parentheses if there is one.
    pub fn name(&self) -> String {
        if self.label.is_empty() {
            hex(&self.uuid)
        } else {
            format!("{} ({:?})", hex(&self.uuid), self.label)
        }
    }

    /// The indices below `count` no member was found for.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.count)
            .filter(|i| !self.members.iter().any(|m| m.index == *i))
            .collect()
    }

    /// `#0 /dev/loop3, #1 /dev/loop4`, or `nothing`.
    pub fn found_text(&self) -> String {
        if self.members.is_empty() {
            return "nothing".into();
        }
        self.members
            .iter()
            .map(|m| format!("#{} {}", m.index, m.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The members' paths in index order, if the set is whole: one device per index, every
    /// index below the count, all agreeing on the count.
    pub fn ordered(&self) -> Result<Vec<PathBuf>, FindError> {
        if let Some(odd) = self.members.iter().find(|m| m.count != self.count) {
            return Err(FindError::Inconsistent {
                fs: self.clone(),
                counts: format!(
                    "{} says {}, {} says {}",
                    self.members[0].path.display(),
                    self.count,
                    odd.path.display(),
                    odd.count
                ),
            });
        }
        if let Some(dup) = self.duplicate() {
            return Err(dup);
        }
        let missing = self.missing();
        if !missing.is_empty() {
            return Err(FindError::Missing {
                fs: self.clone(),
                missing,
            });
        }
        Ok(self.members.iter().map(|m| m.path.clone()).collect())
    }

    fn duplicate(&self) -> Option<FindError> {
        let mut by_index: BTreeMap<u32, Vec<PathBuf>> = BTreeMap::new();
        for m in &self.members {
            by_index.entry(m.index).or_default().push(m.path.clone());
        }
        let (index, paths) = by_index.into_iter().find(|(_, p)| p.len() > 1)?;
        Some(FindError::Duplicate {
            fs: self.clone(),
            index,
            paths,
        })
    }
}

impl fmt::Display for FoundFs {
    /// `stripefs uuid UUID label "label" (N devices, complete)` (or `missing member 2`), then
    /// a line per member.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing = self.missing();
        let state = if missing.is_empty() {
            "complete".to_string()
        } else {
            format!("missing {}", missing_text(&missing))
        };
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" label {:?}", self.label)
        };
        writeln!(
            f,
            "stripefs uuid {}{label} ({} devices, {state})",
            hex(&self.uuid),
            self.count
        )?;
        for m in &self.members {
            writeln!(
                f,
                "  member {} of {}: {}",
                m.index,
                m.count,
                m.path.display()
            )?;
        }
        Ok(())
    }
}

/// Parses a filesystem uuid: 32 hex digits, dashes anywhere ignored, any case.
pub fn parse_uuid(text: &str) -> Result<[u8; 16], FindError> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    let bad = || FindError::BadUuid(text.to_string());
    if digits.len() != 32 {
        return Err(bad());
    }
    let mut uuid = [0u8; 16];
    for (byte, pair) in uuid.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(uuid)
}

/// Reads up to `len` bytes from the start of `path` with plain reads (fewer at its end).
pub fn read_head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut head = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// What the first [`HEAD_LEN`] bytes of `path` hold.
pub fn signatures_of(path: &Path) -> std::io::Result<Vec<Signature>> {
    Ok(detect(&read_head(path, HEAD_LEN)?))
}

/// The stripefs superblock of `path`, if it holds a readable one (`None` if it cannot be
/// opened or read, or holds none).
pub fn member_of(path: &Path) -> Option<(Member, [u8; 16], String)> {
    let head = read_head(path, SUPERBLOCK_SIZE).ok()?;
    match detect(&head).into_iter().next()? {
        Signature::Stripefs {
            uuid,
            label,
            index,
            count,
        } => Some((
            Member {
                path: path.to_path_buf(),
                index,
                count,
            },
            uuid,
            label,
        )),
        _ => None,
    }
}

/// The machine's block devices: `/dev/NAME` for every NAME in `/sys/class/block` (or, without
/// sysfs, in `/proc/partitions`) that exists as a block device.
pub fn block_devices() -> Vec<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = std::fs::read_to_string("/proc/partitions")
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .collect();
    }
    names.sort();
    names
        .into_iter()
        .map(|n| PathBuf::from("/dev").join(n))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
        .collect()
}

/// What identifies a device whatever its name: the device number of a block device, the
/// (filesystem, inode) of a file.
fn identity(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some(if m.file_type().is_block_device() {
        (u64::MAX, m.rdev())
    } else {
        (m.dev(), m.ino())
    })
}

/// Reads the superblocks of `paths` (skipping what cannot be read or holds none, and a device
/// already seen under another name) and groups the members by filesystem, in the order found.
pub fn scan(paths: &[PathBuf]) -> Vec<FoundFs> {
    let mut seen = Vec::new();
    let mut found: Vec<FoundFs> = Vec::new();
    for path in paths {
        let Some(id) = identity(path) else { continue };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let Some((member, uuid, label)) = member_of(path) else {
            continue;
        };
        match found.iter_mut().find(|f| f.uuid == uuid) {
            Some(fs) => fs.members.push(member),
            None => found.push(FoundFs {
                uuid,
                label,
                count: member.count,
                members: vec![member],
            }),
        }
    }
    for fs in &mut found {
        fs.members.sort_by_key(|m| m.index);
    }
    found
}

/// The devices of filesystem `uuid`, in member order, looked for among `first` (looked at
/// before anything else), the machine's block devices and `extra`; an error names what is
/// missing.
pub fn find(
    uuid: [u8; 16],
    first: &[PathBuf],
    extra: &[PathBuf],
) -> Result<Vec<PathBuf>, FindError> {
    let devices = block_devices();
    let mut paths = first.to_vec();
    paths.extend(devices.iter().cloned());
    paths.extend(extra.iter().cloned());
    let Some(fs) = scan(&paths).into_iter().find(|f| f.uuid == uuid) else {
        return Err(FindError::NotFound {
            uuid: hex(&uuid),
            looked: format!(
                "looked at {} block devices and {} files given with device=",
                devices.len(),
                extra.len()
            ),
        });
    };
    fs.ordered()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(members: &[(u32, &str)], count: u32) -> FoundFs {
        FoundFs {
            uuid: [0xab; 16],
            label: "data".into(),
            count,
            members: members
                .iter()
                .map(|&(index, p)| Member {
                    path: PathBuf::from(p),
                    index,
                    count,
                })
                .collect(),
        }
    }

    #[test]
    fn uuids_parse_with_or_without_dashes() {
        let plain = "0123456789abcdef0123456789ABCDEF";
        let dashed = "01234567-89ab-cdef-0123-456789abcdef";
        assert_eq!(parse_uuid(plain).ok(), parse_uuid(dashed).ok());
        assert_eq!(parse_uuid(plain).ok().map(|u| u[1]), Some(0x23));
        assert!(parse_uuid("0123").is_err());
        assert!(parse_uuid("zz23456789abcdef0123456789abcdef").is_err());
    }

    #[test]
    fn a_whole_set_is_ordered() {
        let whole = fs(&[(0, "/dev/a"), (1, "/dev/b")], 2);
        assert_eq!(
            whole.ordered().ok(),
            Some(vec![PathBuf::from("/dev/a"), PathBuf::from("/dev/b")])
        );
    }

    #[test]
    fn a_missing_member_is_named_with_what_was_found() {
        let text = fs(&[(0, "/dev/a"), (1, "/dev/b"), (3, "/dev/d")], 4)
            .ordered()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.starts_with("member 2 of 4 of filesystem abab"),
            "{text}"
        );
        assert!(text.contains("(\"data\")"), "{text}");
        assert!(
            text.ends_with("found: #0 /dev/a, #1 /dev/b, #3 /dev/d"),
            "{text}"
        );
    }

    #[test]
    fn a_member_twice_is_refused() {
        let text = fs(&[(0, "/dev/a"), (0, "/dev/b")], 1)
            .ordered()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.contains("/dev/a, /dev/b"), "{text}");
    }
}
