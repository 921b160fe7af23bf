//! The `stripefs` command line.

mod control_cli;
mod demo;
mod fsck_cli;
mod helper;
mod lock;
mod mkfs;
mod mount;
mod mount_options;
mod probe;
mod umount;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stripefs",
    version,
    about = "A striped multi-device filesystem with registered-buffer I/O"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make scratch devices, write a pattern across a striped volume with registered writes,
    /// read it back with registered reads while the buffer migrates, verify every byte.
    Demo(demo::DemoArgs),
    /// Write a new, empty filesystem over devices (paths or emu: specs), in this order.
    Mkfs(mkfs::MkfsArgs),
    /// Serve a filesystem with FUSE on MOUNTPOINT until it is unmounted (`umount
    /// MOUNTPOINT`) or interrupted; in the foreground unless --daemon. The filesystem is
    /// named by its devices in order, by `UUID=…`, or by any one member.
    #[command(
        override_usage = "stripefs mount [OPTIONS] DEV... MOUNTPOINT\n       stripefs mount [OPTIONS] UUID=UUID|MEMBER MOUNTPOINT"
    )]
    Mount(mount::MountArgs),
    /// Unmount and wait until the daemon has written its checkpoint and exited.
    Umount(umount::UmountArgs),
    /// Check the superblocks and metadata of a filesystem that is not mounted (waiting for a
    /// daemon that is finishing an unmount of it); exits 1 if anything is wrong. With
    /// --repair, repair what can be repaired safely and refuse the rest.
    Fsck(fsck_cli::FsckArgs),
    /// List the stripefs filesystems on DEVs (default: every block device), with their
    /// members, label, uuid and state (complete, or which member is missing), and what
    /// other DEVs hold.
    Probe(probe::ProbeArgs),
    /// Write files to standard output; with --registered, read them through a buffer
    /// registered with the mount daemon (registered I/O from this process).
    Cat(control_cli::CatArgs),
    /// Per-device bytes and requests of a mounted stripefs, and its live registrations.
    Stat(control_cli::StatArgs),
    /// Measure registered I/O against fio, a raw io_uring reader and the baselines, on
    /// scratch devices.
    Bench(Box<stripefs_bench::BenchArgs>),
}

fn main() {
    if helper::invoked_as_helper() {
        if let Err(e) = helper::run() {
            eprintln!("{}: {}", helper::NAME, report(&e));
            // mount(8): 32 is "mount failure".
            std::process::exit(32);
        }
        return;
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Mkfs(args) => mkfs::run(args),
        Command::Mount(args) => mount::run(args),
        Command::Umount(args) => umount::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Bench(args) => stripefs_bench::run(args),
        Command::Cat(args) => control_cli::cat(args),
        Command::Stat(args) => control_cli::stat(args),
        Command::Fsck(args) => match fsck_cli::run(args) {
            Ok(true) => Ok(()),
            // The report is printed: damage found.
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        eprintln!("stripefs: {}", report(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the level above
/// already includes (some errors print their source in their own message too).
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}
