//! Running the programs a user would run (tar, find, du, cp, cat, mkfs, mount), timed, with
//! their output discarded and their errors reported with what they printed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Runs `cmd` to the end with its output discarded; an error names the command and says what
/// it printed on stderr.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd` like [`run_quiet`] and returns what it printed on stdout.
pub fn run_output(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` like [`run_quiet`] and returns the seconds it took.
pub fn timed(cmd: &mut Command) -> Result<f64> {
    let started = Instant::now();
    run_quiet(cmd)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Whether `program` can be run here (found on the PATH or in /sbin, /usr/sbin).
pub fn installed(program: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(program).is_file())
}

/// Makes everything written to the filesystem mounted at `mountpoint` durable: `syncfs`
/// (data and metadata of a kernel filesystem), then `fsync` of its root directory (which
/// commits stripefs's metadata log; FUSE has no `syncfs` of its own). Returns the seconds
/// it took.
pub fn make_durable(mountpoint: &Path) -> Result<f64> {
    use std::os::fd::AsRawFd;
    let started = Instant::now();
    let dir = std::fs::File::open(mountpoint)
        .with_context(|| format!("opening {}", mountpoint.display()))?;
    // SAFETY: syncfs on a descriptor we own; no memory is involved.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncfs of {}", mountpoint.display()));
    }
    dir.sync_all()
        .with_context(|| format!("fsync of {}", mountpoint.display()))?;
    Ok(started.elapsed().as_secs_f64())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
