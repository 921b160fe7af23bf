//! `stripefs mount`: serves a filesystem with FUSE, in the foreground or as a daemon.
//!
//! Foreground (the default): the command mounts, says so, and serves until the filesystem is
//! unmounted (`umount MOUNTPOINT` from anywhere) or it gets SIGINT, SIGTERM or SIGHUP.
//!
//! `--daemon`: the command forks before anything else runs (no thread exists yet, so the
//! child is a complete copy), the child starts a new session, opens the devices, mounts,
//! checks that a request through the mountpoint reaches it, and only then tells the parent,
//! through a pipe, that the mount is ready; the parent exits 0 then, or prints the child's
//! error and exits 1. The child's standard streams go to `/dev/null` (or `--log FILE`).
//!
//! Either way, the end is the same: the first signal commits the metadata and unmounts
//! (`umount(2)`; if files are still open there, the mount is detached lazily and served until
//! the last one is closed); a second signal stops at once. When the session has ended, the
//! filesystem is shut down (commit and checkpoint) and the process exits 0.
//!
//! Opening the devices waits for a daemon that is finishing an unmount of them, and the
//! daemon keeps a state file saying what it is doing (serving, unmounting, exiting) so that
//! other commands can tell: see [`crate::lock`].

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use stripefs_engine::DeviceSpec;
use stripefs_fs::Filesystem;
use stripefs_fs::control::ServerOptions;
use stripefs_fs::mount::{Mount, MountOptions};

use crate::lock::{DaemonState, DeviceLocks, Phase, lock_devices};
use crate::mkfs::parse_specs;

/// Settings of the mount command.
#[derive(Clone, Debug, clap::Args)]
pub struct MountArgs {
    /// Detach into the background once the mount is ready.
    #[arg(long)]
    pub daemon: bool,
    /// Threads serving FUSE requests (default: one per CPU, at least 2, at most 16).
    #[arg(long, default_value_t = stripefs_fs::mount::default_threads())]
    pub threads: usize,
    /// Commit metadata changes to the log at least this often (fsync commits at once).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// Let every user in (FUSE's allow_other; off unless asked, as for any FUSE mount; a
    /// user needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Let device nodes on the filesystem be opened as devices (mount's `dev`; the default
    /// is `nodev`).
    #[arg(long)]
    pub dev: bool,
    /// With --daemon: append the daemon's messages to this file (default: discarded).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Another place to look for members (an image file, say) when the filesystem is named
    /// by `UUID=…` or by one member; repeatable.
    #[arg(long = "device", value_name = "PATH")]
    pub extra_devices: Vec<PathBuf>,
    /// Per user of the control endpoint (root is not limited): bytes of buffers registered
    /// at once (default: a quarter of the memory, at most 64G). Over it: EDQUOT.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub user_registered: Option<u64>,
    /// Per user: live registrations (default 256). Over it: EDQUOT.
    #[arg(long, value_name = "N")]
    pub user_registrations: Option<u64>,
    /// Per user: control connections open at once (default 32). Over it: EAGAIN.
    #[arg(long, value_name = "N")]
    pub user_connections: Option<u64>,
    /// Per user: registered I/O requests in flight (default 1024). Over it: EAGAIN.
    #[arg(long, value_name = "N")]
    pub user_requests: Option<u64>,
    /// Per user: bounce memory of unaligned requests at once (default 256M). Over it:
    /// EAGAIN.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub user_bounce: Option<u64>,
    /// Per user: worker threads of its rings, all connections together (default 64); a
    /// ring gets what is left. None left: EAGAIN.
    #[arg(long, value_name = "N")]
    pub user_workers: Option<u64>,
    /// Mount options, comma-separated: threads=N, commit=SECONDS, allow_other, dev/nodev,
    /// device=PATH, log=FILE, user_registered=SIZE, user_registrations=N,
    /// user_connections=N, user_requests=N, user_bounce=SIZE, user_workers=N (as in fstab);
    /// repeatable.
    /// They override the flags.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Warn about unknown mount options instead of refusing them (mount's -s).
    #[arg(skip)]
    pub sloppy: bool,
    /// The filesystem: its devices in their mkfs order (paths or emu: specs), or `UUID=…`,
    /// or any one member device (the others are found); then the mountpoint.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<String>,
}

impl MountArgs {
    /// These arguments with the `-o` options applied over the flags.
    fn with_options(&self) -> Result<MountArgs> {
        let opts = crate::mount_options::parse(&self.options, self.sloppy)?;
        let mut args = self.clone();
        args.threads = opts.threads.unwrap_or(args.threads);
        args.commit_interval = opts.commit.unwrap_or(args.commit_interval);
        args.log = opts.log.or(args.log);
        args.extra_devices.extend(opts.devices);
        args.allow_other |= opts.allow_other;
        args.dev = opts.dev.unwrap_or(args.dev);
        let limits = &opts.limits;
        args.user_registered = limits.registered_bytes.or(args.user_registered);
        args.user_registrations = limits.registrations.or(args.user_registrations);
        args.user_connections = limits.connections.or(args.user_connections);
        args.user_requests = limits.requests.or(args.user_requests);
        args.user_bounce = limits.bounce_bytes.or(args.user_bounce);
        args.user_workers = limits.workers.or(args.user_workers);
        Ok(args)
    }

    /// The control endpoint's options: the defaults, with the per-user limits given.
    fn server_options(&self) -> Result<ServerOptions> {
        let mut options = ServerOptions::default();
        crate::mount_options::LimitOpts {
            registered_bytes: self.user_registered,
            registrations: self.user_registrations,
            connections: self.user_connections,
            requests: self.user_requests,
            bounce_bytes: self.user_bounce,
            workers: self.user_workers,
        }
        .apply(&mut options.limits);
        let l = &options.limits;
        if [l.registrations, l.connections, l.requests].contains(&0) {
            bail!(
                "--user-registrations, --user-connections and --user-requests must be at least 1"
            );
        }
        Ok(options)
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    stripefs_engine::spec::parse_size(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    stripefs_engine::spec::parse_duration(s).map_err(|e| e.to_string())
}

/// What the serving loop waits for.
enum Event {
    /// The FUSE session has ended (the filesystem was unmounted).
    Ended,
    /// A termination signal arrived.
    Signal(i32),
}

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

pub fn run(args: &MountArgs) -> Result<()> {
    let args = &args.with_options()?;
    let Some((mountpoint, sources)) = args.paths.split_last() else {
        bail!("give the devices, then the mountpoint");
    };
    let devices = &crate::probe::resolve(sources, &args.extra_devices)?;
    let specs = parse_specs(devices)?;
    let mountpoint = Path::new(mountpoint)
        .canonicalize()
        .with_context(|| format!("mountpoint {mountpoint}"))?;
    if !mountpoint.is_dir() {
        bail!("mountpoint {}: not a directory", mountpoint.display());
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let server_options = args.server_options()?;
    let options = MountOptions {
        threads: args.threads,
        allow_other: args.allow_other,
        fsname: "stripefs".into(),
        dev: args.dev,
    };
    // The locks on file devices are held for as long as the filesystem is served. Taking
    // them waits for a daemon that is still finishing an unmount of these devices.
    let open = || -> Result<(DeviceLocks, Arc<Filesystem>)> {
        let locks = lock_devices(&specs)?;
        let fs =
            Filesystem::open(&specs).with_context(|| format!("opening {}", devices.join(" ")))?;
        Ok((locks, fs))
    };
    if args.daemon {
        daemonize(&mountpoint, args.log.as_deref(), |ready| {
            let (_locks, fs) = open()?;
            serve(
                fs,
                &specs,
                &mountpoint,
                (&options, &server_options),
                args.commit_interval,
                ready,
            )
        })
    } else {
        block_signals()?;
        let (_locks, fs) = open()?;
        serve(
            fs,
            &specs,
            &mountpoint,
            (&options, &server_options),
            args.commit_interval,
            Ready::Foreground,
        )
    }
}

/// How to announce that the mount is ready.
enum Ready {
    Foreground,
    /// Write to the parent through this pipe, then redirect the standard streams and set
    /// `announced`.
    Daemon {
        pipe: File,
        log: Option<File>,
        announced: Arc<AtomicBool>,
    },
}

impl Ready {
    fn announce(self, mountpoint: &Path) -> Result<()> {
        match self {
            Ready::Foreground => {
                println!(
                    "stripefs: mounted on {} (Ctrl-C or `umount {}` to stop)",
                    mountpoint.display(),
                    mountpoint.display()
                );
                Ok(())
            }
            Ready::Daemon {
                mut pipe,
                log,
                announced,
            } => {
                pipe.write_all(b"ready\n")
                    .context("telling the parent the mount is ready")?;
                announced.store(true, Ordering::Release);
                drop(pipe);
                redirect_stdio(log.as_ref())?;
                // Keep no directory busy.
                std::env::set_current_dir("/").context("chdir /")?;
                Ok(())
            }
        }
    }
}

/// Mounts `fs` (on `specs`) and serves it until it is unmounted; then shuts it down.
fn serve(
    fs: Arc<Filesystem>,
    specs: &[DeviceSpec],
    mountpoint: &Path,
    (options, server_options): (&MountOptions, &ServerOptions),
    commit_interval: Duration,
    ready: Ready,
) -> Result<()> {
    let (events, received) = channel();
    fs.start_committer(commit_interval);
    let on_end = {
        let events = events.clone();
        move || {
            let _ = events.send(Event::Ended);
        }
    };
    let mut mount = Mount::start(fs.clone(), mountpoint, options, on_end)
        .with_context(|| format!("mounting on {}", mountpoint.display()))?;
    mount
        .check()
        .with_context(|| format!("checking the mount on {}", mountpoint.display()))?;
    // Before the mount is announced, so the socket exists when `mount --daemon` returns.
    let control =
        stripefs_fs::control::Server::start_with(fs.clone(), mountpoint, server_options.clone())
            .with_context(|| {
                format!("starting the control endpoint of {}", mountpoint.display())
            })?;
    let canonical = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let pid_file = crate::umount::pid_file_of(control.socket_path());
    // Before the announcement, so both exist when `mount --daemon` returns (this process
    // is already the daemon: its pid is final).
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        eprintln!(
            "stripefs: cannot write {}: {e} (`stripefs umount` will not wait)",
            pid_file.display()
        );
    }
    let mut state = std::fs::metadata(&canonical)
        .context("stat of the mount")
        .and_then(|m| DaemonState::new(&canonical, m.dev(), specs))
        .map_err(|e| {
            eprintln!(
                "stripefs: cannot describe this daemon in its state file: {} (commands run \
                 right after an unmount will not wait for it)",
                crate::report(&e)
            )
        })
        .ok();
    record(&mut state, Phase::Serving);
    start_signal_thread(events).context("starting the signal thread")?;
    ready.announce(mountpoint)?;

    let mut signalled = false;
    for event in received {
        match event {
            Event::Ended => break,
            Event::Signal(sig) if !signalled => {
                signalled = true;
                eprintln!(
                    "stripefs: {}: unmounting {}",
                    signal_name(sig),
                    mountpoint.display()
                );
                if let Err(e) = fs.sync() {
                    eprintln!("stripefs: committing metadata: {e}");
                }
                if let Err(e) = mount.unmount() {
                    let detached = mount.detach();
                    if detached.is_ok() {
                        record(&mut state, Phase::Detached);
                    }
                    eprintln!(
                        "stripefs: umount {}: {e}; {}",
                        mountpoint.display(),
                        match detached {
                            Ok(()) => "detached it: open files are served until closed \
                                       (signal again to stop now)"
                                .to_string(),
                            Err(e) => format!("detaching failed too: {e}"),
                        }
                    );
                }
            }
            Event::Signal(sig) => {
                eprintln!("stripefs: {}: stopping now", signal_name(sig));
                record(&mut state, Phase::Unmounting);
                // Exiting closes /dev/fuse, which ends the connection and every open file.
                let shutdown = fs.shutdown();
                record(&mut state, Phase::Exiting);
                shutdown.context("shutting the filesystem down (commit and checkpoint)")?;
                remove_pid_file(&pid_file);
                std::process::exit(0);
            }
        }
    }
    record(&mut state, Phase::Unmounting);
    control.shutdown();
    let session = mount.wait();
    let shutdown = fs.shutdown();
    // The state file stays, saying so: the devices are closed as this process exits, after
    // which nothing of it can remove the file (the next command that takes them does).
    record(&mut state, Phase::Exiting);
    shutdown.context("shutting the filesystem down (commit and checkpoint)")?;
    session.context("the FUSE session ended with an error")?;
    remove_pid_file(&pid_file);
    eprintln!("stripefs: unmounted {}", mountpoint.display());
    Ok(())
}

/// Records what this daemon is doing in its state file, if it has one.
fn record(state: &mut Option<DaemonState>, phase: Phase) {
    if let Some(s) = state
        && let Err(e) = s.set(phase)
    {
        eprintln!(
            "stripefs: cannot write {}: {e} (commands run right after an unmount will not \
             wait for this daemon)",
            s.path().display()
        );
        *state = None;
    }
}

/// Removes the pid file, unless a later daemon on the same mountpoint has replaced it.
fn remove_pid_file(pid_file: &Path) {
    let ours = std::fs::read_to_string(pid_file)
        .is_ok_and(|s| s.trim().parse::<u32>().ok() == Some(std::process::id()));
    if ours {
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Blocks the termination signals in this thread (and so in every thread started after it)
/// and starts a thread that waits for them and sends them as events.
fn start_signal_thread(events: Sender<Event>) -> Result<()> {
    let set = signal_set();
    std::thread::Builder::new()
        .name("stripefs signals".into())
        .spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: `set` is an initialized signal set and `sig` a valid out-pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                if events.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// Blocks the termination signals in the calling thread; threads started later inherit it.
/// Must run before any other thread exists, so that only the signal thread receives them.
fn block_signals() -> Result<()> {
    let set = signal_set();
    // SAFETY: `set` is a valid signal set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc)).context("blocking signals");
    }
    Ok(())
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Forks; the child runs `serve` (which announces readiness through the pipe it is given);
/// the parent waits for that announcement and exits 0, or prints the child's error and
/// exits 1. Returns only in the child.
fn daemonize(
    mountpoint: &Path,
    log: Option<&Path>,
    serve: impl FnOnce(Ready) -> Result<()>,
) -> Result<()> {
    let log = log
        .map(|p| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("log file {}", p.display()))
        })
        .transpose()?;
    let (read_end, write_end) = pipe().context("creating the readiness pipe")?;
    // SAFETY: no other thread exists yet (nothing has been opened or started), so the child
    // is a complete copy of this process and may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid > 0 {
        drop(write_end);
        parent_wait(pid, File::from(read_end), mountpoint);
    }
    drop(read_end);
    // SAFETY: setsid has no memory-safety preconditions; failure is reported.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error()).context("setsid");
    }
    block_signals()?;
    let mut pipe = File::from(write_end);
    let announced = Arc::new(AtomicBool::new(false));
    let ready = Ready::Daemon {
        pipe: pipe.try_clone().context("duplicating the readiness pipe")?,
        log,
        announced: announced.clone(),
    };
    let result = serve(ready);
    if let Err(e) = &result
        && !announced.load(Ordering::Acquire)
    {
        // Not ready yet: the parent prints the error and exits 1.
        let _ = writeln!(pipe, "{}", crate::report(e));
        std::process::exit(1);
    }
    // After readiness an error goes to the log, through the caller.
    result
}

/// In the parent: reads the child's announcement (a line) and exits.
fn parent_wait(pid: libc::pid_t, from_child: File, mountpoint: &Path) -> ! {
    let mut from_child = BufReader::new(from_child);
    let mut text = String::new();
    let read = from_child.read_line(&mut text);
    if read.is_ok() && text == "ready\n" {
        println!(
            "stripefs: mounted on {} (daemon pid {pid})",
            mountpoint.display()
        );
        std::process::exit(0);
    }
    // An error: the rest of it, up to the child's exit.
    let _ = from_child.read_to_string(&mut text);
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let message = text.trim();
    if message.is_empty() {
        eprintln!(
            "stripefs: the daemon exited before the mount was ready (wait status {status:#x})"
        );
    } else {
        eprintln!("stripefs: {message}");
    }
    std::process::exit(1);
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Points stdin at /dev/null and stdout/stderr at `log` (or /dev/null).
fn redirect_stdio(log: Option<&File>) -> Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let out = log.unwrap_or(&null);
    for (from, to) in [(&null, 0), (out, 1), (out, 2)] {
        // SAFETY: both descriptors are open; dup2 replaces `to` atomically.
        if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
            return Err(std::io::Error::last_os_error()).context("redirecting standard streams");
        }
    }
    Ok(())
}
