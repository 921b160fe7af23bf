//! `stripefs umount MOUNTPOINT`: unmounts and waits until the daemon has written its final
//! checkpoint and exited, so the devices can be used (fsck, mount again) right after.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stripefs_fs::control::Server;

/// Arguments of `stripefs umount`.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// Where the filesystem is mounted.
    pub mountpoint: PathBuf,
    /// How long to wait for the daemon to finish, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// Where the daemon serving `mountpoint` (canonical) records its pid: next to its control
/// socket, which the mount names (its `user.stripefs.control` attribute; a daemon of a user
/// keeps it in a directory of the user's), else in the system directory.
pub fn pid_file(mountpoint: &Path) -> PathBuf {
    let socket =
        stripefs_client::discover(mountpoint).unwrap_or_else(|_| Server::socket_path(mountpoint));
    pid_file_of(&socket)
}

/// The pid file of the daemon listening on `socket`.
pub fn pid_file_of(socket: &Path) -> PathBuf {
    socket.with_extension("pid")
}

pub fn run(args: &UmountArgs) -> Result<()> {
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("{}", args.mountpoint.display()))?;
    let daemon = std::fs::read_to_string(pid_file(&mountpoint))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&pid| is_stripefs(pid));
    let status = std::process::Command::new("umount")
        .arg(&mountpoint)
        .status()
        .context("running umount")?;
    if !status.success() {
        bail!("umount {} failed ({status})", mountpoint.display());
    }
    let Some(pid) = daemon else {
        println!("unmounted {}", mountpoint.display());
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while is_stripefs(pid) {
        if Instant::now() > deadline {
            bail!(
                "unmounted, but the daemon (pid {pid}) is still running after {} s",
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "unmounted {}; the daemon (pid {pid}) wrote its checkpoint and exited",
        mountpoint.display()
    );
    Ok(())
}

/// Whether `pid` is a live stripefs process (not a recycled pid, and not a zombie: a daemon
/// that has exited is done with its devices, whenever its parent — init, for a `--daemon` —
/// gets round to reaping it; some inits take seconds).
fn is_stripefs(pid: u32) -> bool {
    let named =
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "stripefs");
    named && !is_zombie(pid)
}

/// Whether `pid` has exited and waits to be reaped (state `Z` in `/proc/PID/stat`).
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state …": comm may hold spaces or parentheses, so look after the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}
