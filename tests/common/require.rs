//! What the tests need from the machine, one check per requirement, shared by every test
//! crate of the workspace (the client and mapping tests include this file by path).
//!
//! A test that cannot run here prints `skipped: <reason>` and passes, so that `cargo test`
//! works anywhere. Where a requirement must hold, a skip would hide that nothing was tested:
//! setting its switch (`STRIPEFS_REQUIRE_ROOT`, `_LOOP`, `_FUSE`, `_TOOLS`, `_UDMABUF` to
//! anything but empty or `0`) turns the skip into a failure naming what is missing. `.ci/run`
//! sets ROOT, LOOP, FUSE and TOOLS; not UDMABUF, which most kernels (this project's machine
//! included) do not have, so those tests stay optional.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Something a test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Running as root (`STRIPEFS_REQUIRE_ROOT`).
    Root,
    /// Loop devices: root, the loop driver and `losetup` (`STRIPEFS_REQUIRE_LOOP`).
    Loop,
    /// FUSE mounts with mount(2): root and `/dev/fuse` (`STRIPEFS_REQUIRE_FUSE`).
    Fuse,
    /// A command the test runs, one of those `.ci/run` installs: `cc`, `setpriv`,
    /// `mkfs.ext4` (`STRIPEFS_REQUIRE_TOOLS`).
    Tool(&'static str),
    /// `/dev/udmabuf` (`STRIPEFS_REQUIRE_UDMABUF`; optional, CI does not set it).
    Udmabuf,
}

impl Requirement {
    /// The environment variable that makes this requirement mandatory.
    pub fn switch(self) -> &'static str {
        match self {
            Requirement::Root => "STRIPEFS_REQUIRE_ROOT",
            Requirement::Loop => "STRIPEFS_REQUIRE_LOOP",
            Requirement::Fuse => "STRIPEFS_REQUIRE_FUSE",
            Requirement::Tool(_) => "STRIPEFS_REQUIRE_TOOLS",
            Requirement::Udmabuf => "STRIPEFS_REQUIRE_UDMABUF",
        }
    }

    /// Whether the switch is set.
    pub fn required(self) -> bool {
        std::env::var_os(self.switch()).is_some_and(|v| !v.is_empty() && v != "0")
    }

    /// What it is, for messages.
    fn describe(self) -> String {
        match self {
            Requirement::Root => "root".into(),
            Requirement::Loop => "loop devices".into(),
            Requirement::Fuse => "FUSE mounts".into(),
            Requirement::Tool(tool) => format!("`{tool}`"),
            Requirement::Udmabuf => "udmabuf".into(),
        }
    }

    /// What must hold before this one can (root for loop devices and FUSE).
    fn prerequisites(self) -> &'static [Requirement] {
        match self {
            Requirement::Loop | Requirement::Fuse => &[Requirement::Root],
            _ => &[],
        }
    }

    /// Why this requirement (not counting its prerequisites) does not hold here.
    fn why_missing(self) -> Option<String> {
        match self {
            Requirement::Root => {
                // SAFETY: geteuid has no preconditions and cannot fail.
                let euid = unsafe { libc::geteuid() };
                (euid != 0).then(|| format!("not root (euid {euid})"))
            }
            Requirement::Loop => {
                if !Path::new("/dev/loop-control").exists() {
                    return Some("no /dev/loop-control (loop driver missing)".into());
                }
                match Command::new("losetup").arg("--version").output() {
                    Ok(out) if out.status.success() => None,
                    Ok(_) => Some("`losetup --version` failed".into()),
                    Err(e) => Some(format!("losetup not runnable: {e}")),
                }
            }
            Requirement::Fuse => (!Path::new("/dev/fuse").exists())
                .then(|| "no /dev/fuse (fuse module not loaded)".into()),
            Requirement::Tool(tool) => match Command::new(tool).arg(version_flag(tool)).output() {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "`{tool} {}` failed ({})",
                    version_flag(tool),
                    out.status
                )),
                Err(e) => Some(format!("{tool} not runnable: {e}")),
            },
            Requirement::Udmabuf => (!Path::new("/dev/udmabuf").exists())
                .then(|| "/dev/udmabuf is not present on this kernel".into()),
        }
    }

    /// Why this requirement does not hold here, or `None` if it does. Panics instead of
    /// returning a reason when its switch, or that of the prerequisite that is missing, is
    /// set.
    #[track_caller]
    pub fn missing(self) -> Option<String> {
        for &pre in self.prerequisites() {
            if let Some(reason) = pre.why_missing() {
                let reason = format!("{} need {}: {reason}", self.describe(), pre.describe());
                enforce(&[self, pre], &reason);
                return Some(reason);
            }
        }
        let reason = self.why_missing()?;
        enforce(&[self], &reason);
        Some(reason)
    }
}

/// How `tool` is asked for its version (e2fsprogs' tools take `-V`, not `--version`).
fn version_flag(tool: &str) -> &'static str {
    if tool.starts_with("mkfs.ext") {
        "-V"
    } else {
        "--version"
    }
}

#[track_caller]
fn enforce(requirements: &[Requirement], reason: &str) {
    if let Some(r) = requirements.iter().find(|r| r.required()) {
        panic!("{} is set, but {reason}", r.switch());
    }
}

/// The first of `requirements` that does not hold here, if any; panics instead if any that
/// does not hold is required (all are checked, so a set switch is never hidden behind an
/// earlier requirement that is missing too).
#[track_caller]
pub fn missing(requirements: &[Requirement]) -> Option<String> {
    let mut first = None;
    for r in requirements {
        let reason = r.missing();
        first = first.or(reason);
    }
    first
}

/// For the start of a test: `true` (after printing `skipped: <reason>`) if one of
/// `requirements` does not hold here and the test should return; panics instead if that
/// requirement is required.
#[track_caller]
pub fn skip(requirements: &[Requirement]) -> bool {
    match missing(requirements) {
        Some(reason) => {
            println!("skipped: {reason}");
            true
        }
        None => false,
    }
}
