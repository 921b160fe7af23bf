//! What the sweeps that run on a mounted filesystem share (`metadata`, issue 11, and `files`,
//! issue 16): RAM-backed loop devices of their own, stripefs and btrfs raid0 made and mounted
//! on them the way a user would (`filesystems`), programs run and timed (`command`), and the
//! machine's load.

pub mod command;
mod filesystems;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

pub use filesystems::{FsKind, Mounted};

use crate::devices::{Devices, Kind, Lab, LabSettings};

/// Why the sweeps on a mount cannot run here (no loop devices, no FUSE), if they cannot.
pub fn unavailable() -> Option<String> {
    if let Err(reason) = crate::devices::loops_available() {
        return Some(reason);
    }
    crate::engines::files::mount_unavailable()
}

/// `count` RAM-backed loop devices of `size` bytes each (files in /dev/shm), removed when the
/// returned lab is dropped; `tag` prefixes its messages.
pub fn ram_devices(count: usize, size: u64, tag: &str) -> Result<(Lab, Vec<PathBuf>)> {
    let lab = Lab::new(
        LabSettings {
            dir: PathBuf::from("/var/tmp"),
            device_size: size,
            emu_size: 0,
            emu_bandwidth: 0,
            max_devices: count,
        },
        &[Kind::RamLoop],
        &mut |msg| println!("{tag}: {msg}"),
    )
    .with_context(|| format!("making the {tag} sweep's devices"))?;
    let devices = match lab.target(Kind::RamLoop, count) {
        Ok(t) => match t.devices {
            Devices::Paths(p) => p,
            Devices::Emulated(_) => bail!("RAM-backed loop devices have paths"),
        },
        Err(reason) => bail!("no RAM-backed loop devices: {reason}"),
    };
    Ok((lab, devices))
}

/// The 1-minute load average (/proc/loadavg).
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
