//! What devices hold ([`signatures`]), finding the members of a filesystem ([`members`]), and
//! the `stripefs probe` command.

pub mod members;
pub mod signatures;
mod udev;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use members::{FoundFs, block_devices, find, member_of, parse_uuid, scan, signatures_of};

/// Arguments of `stripefs probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Devices or image files to look at (default: every block device of the machine).
    #[arg(value_name = "DEV")]
    pub devices: Vec<PathBuf>,
    /// Print the udev properties of one device (`ID_FS_TYPE=stripefs`, `ID_FS_UUID`, …;
    /// nothing if it is no stripefs member), for `IMPORT{program}` in a udev rule.
    #[arg(long)]
    pub udev: bool,
}

/// The devices of the filesystem that `sources` (what was typed before the mountpoint) name,
/// as device specs in member order:
/// - several: the explicit list, as given (checked when the filesystem is opened);
/// - `UUID=…`: the members of that filesystem, found among the block devices and `extra`;
/// - one device holding a member of a filesystem of several devices: all its members;
/// - anything else (an `emu:` spec, a single-device filesystem, a device without a stripefs
///   superblock): as given.
pub fn resolve(sources: &[String], extra: &[PathBuf]) -> Result<Vec<String>> {
    let [source] = sources else {
        return Ok(sources.to_vec());
    };
    let paths = if let Some(uuid) = uuid_tag(source) {
        find(parse_uuid(uuid)?, &[], extra)?
    } else {
        match member_of(std::path::Path::new(source)) {
            Some((member, uuid, _)) if member.count > 1 => find(uuid, &[member.path], extra)
                .with_context(|| {
                    format!("{source} is member {} of {}", member.index, member.count)
                })?,
            _ => return Ok(sources.to_vec()),
        }
    };
    Ok(paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

/// The uuid of a `UUID=…` source (the tag in any case).
fn uuid_tag(source: &str) -> Option<&str> {
    let (tag, value) = source.split_once('=')?;
    tag.eq_ignore_ascii_case("UUID").then_some(value)
}

/// `stripefs probe [DEV…]`: the filesystems found and their state; for devices named on the
/// command line, also what a device holds if it is not a stripefs member.
pub fn run(args: &ProbeArgs) -> Result<()> {
    if args.udev {
        let [device] = &args.devices[..] else {
            anyhow::bail!("--udev takes exactly one device");
        };
        let found =
            signatures_of(device).with_context(|| format!("reading {}", device.display()))?;
        let _ = std::io::stdout().write_all(udev::properties(&found).as_bytes());
        return Ok(());
    }
    let named = !args.devices.is_empty();
    let paths = if named {
        args.devices.clone()
    } else {
        block_devices()
    };
    let found = scan(&paths);
    let mut out: String = found.iter().map(ToString::to_string).collect();
    if named {
        out.push_str(&others(&args.devices, &found)?);
    } else if found.is_empty() {
        out.push_str(&format!(
            "no stripefs filesystem on the {} block devices\n",
            paths.len()
        ));
    }
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

/// For each named device that is no member found: what it holds, or that it holds nothing
/// recognizable; a line each.
fn others(devices: &[PathBuf], found: &[FoundFs]) -> Result<String> {
    let is_member = |p: &PathBuf| found.iter().any(|f| f.members.iter().any(|m| &m.path == p));
    let mut out = String::new();
    for path in devices.iter().filter(|p| !is_member(p)) {
        let signatures =
            signatures_of(path).with_context(|| format!("reading {}", path.display()))?;
        let what = if signatures.is_empty() {
            "nothing recognizable".to_string()
        } else {
            signatures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push_str(&format!("{}: {what}\n", path.display()));
    }
    Ok(out)
}
