//! What /proc tells about other processes: who holds a device, their command lines, their
//! start times (which tell a live process from a reused pid).

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::device_id::DeviceId;

/// The processes that hold `id`: the owner of a `flock` on a file (/proc/locks), the
/// processes that have a block device open (/proc/PID/fd).
pub(super) fn holders(id: DeviceId) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    match id {
        DeviceId::File { dev, ino } => {
            // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; the device in hex.
            let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            for line in locks.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.get(1) == Some(&"FLOCK")
                    && words.get(5) == Some(&want.as_str())
                    && let Some(pid) = words.get(4).and_then(|p| p.parse().ok())
                {
                    pids.push(pid);
                }
            }
        }
        DeviceId::Block { rdev } => {
            for pid in processes() {
                let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                    continue;
                };
                let holds = fds.flatten().any(|fd| {
                    std::fs::metadata(fd.path())
                        .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
                });
                if holds {
                    pids.push(pid);
                }
            }
        }
    }
    pids.retain(|&p| p != me);
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The command line of `pid`, spaces between the arguments.
pub(super) fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        "exited".into()
    } else {
        words.join(" ")
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat, clock ticks after boot).
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
