//! stripefs registered reads from another process, through the control endpoint: this
//! program runs itself again as a client (`stripefs bench --cross-process-client SPEC`, a
//! hidden option), which connects to the mount's control socket with `stripefs-client`,
//! registers its own buffer against the file, and keeps `devices x QD` requests in flight on
//! the shared ring (`Client::submit` / `Client::wait`); the daemon's ring thread runs the
//! (block-aligned) reads itself, asynchronously. The client reports its requests, time, latencies and its own CPU
//! (getrusage); the daemon side (this process: the control server's threads, the device
//! queues) is measured here over the same window. CPU figures add both.
//!
//! The handshake keeps set-up out of the window: the child prints `ready` once connected and
//! registered, waits for `go` on its standard input, runs, prints one JSON line, and stays
//! connected until its standard input closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use stripefs_client::{Client, ClientBuffer, ClientOptions, Completion, Op, Request};

use super::files::{Filesystems, Need};
use super::{Deadline, EngineResult, RunSpec, buffer_area};
use crate::stats::{Detail, Histogram, Measurement, ThreadTimes, Usage};
use crate::workload::{Access, Offsets};

/// How long the client may take to connect and register, and to report after its window.
const GRACE: Duration = Duration::from_secs(30);

/// What the client process does (its command-line argument, as JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientSpec {
    /// The file, on the mount.
    pub file: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    pub random: bool,
    pub bs: u64,
    /// Requests in flight.
    pub depth: u32,
    /// Daemon workers asked for.
    pub workers: u32,
    pub seconds: f64,
    /// Bytes of the file to read (a multiple of `bs`).
    pub region: u64,
    /// Bytes of the client's buffer (requests share it beyond that).
    pub buffer: u64,
    /// The buffer is in huge pages (`--huge-pages`).
    #[serde(default)]
    pub huge_pages: bool,
}

/// What the client process reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientReport {
    pub ops: u64,
    pub seconds: f64,
    pub user: f64,
    pub system: f64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn run(spec: &RunSpec<'_>, filesystems: &mut Filesystems) -> EngineResult {
    let w = spec.workload;
    if w.access.is_write() {
        return Ok(Err("reads only".into()));
    }
    let fs = match filesystems.get(spec.target, Need::Control)? {
        Ok(fs) => fs,
        Err(reason) => return Ok(Err(reason)),
    };
    let socket = fs
        .socket()
        .ok_or_else(|| anyhow!("the control endpoint is not running"))?
        .to_path_buf();
    let depth = spec.total_depth().max(1);
    let buffer = match buffer_area(depth, w.bs, spec.target.count()) {
        Ok(area) => area,
        Err(reason) => return Ok(Err(reason)),
    };
    let client = ClientSpec {
        file: fs.path(),
        socket,
        random: w.access == Access::RandRead,
        bs: w.bs,
        depth: u32::try_from(depth).context("queue depth")?,
        // Aligned reads never reach the workers (the ring thread runs them); one is enough.
        workers: 1,
        seconds: spec.duration.as_secs_f64(),
        region: fs.file_size / w.bs * w.bs,
        buffer,
        huge_pages: crate::memory::huge_pages(),
    };
    let commands = fs.device_commands();
    let mut child = ChildProcess::spawn(&client)?;
    let ready = child.line(GRACE);
    if ready.as_deref().ok() != Some("ready") {
        return Err(child.failed(ready.err(), "did not get ready"));
    }
    let (times, usage) = (ThreadTimes::now(), Usage::now()?);
    child.go()?;
    let line = child.line(spec.duration + GRACE);
    let daemon = Usage::now()?.since(&usage);
    let mut thread_cpu = ThreadTimes::now().since(&times);
    let commands = fs.device_commands() - commands;
    let report: ClientReport = match line.as_deref().map(serde_json::from_str) {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return Err(child.failed(Some(e.into()), "sent a bad report")),
        Err(_) => return Err(child.failed(line.err(), "did not report")),
    };
    child.finish()?;
    let bytes = report.ops * w.bs;
    let client_cpu = report.user + report.system;
    thread_cpu.insert("client".into(), client_cpu);
    let mut m = Measurement {
        bytes,
        ops: report.ops,
        seconds: report.seconds,
        cpu_seconds: client_cpu + daemon.cpu(),
        p50_us: report.p50_us,
        p99_us: report.p99_us,
        ..Measurement::default()
    };
    m.detail = Some(Detail {
        thread_cpu,
        voluntary_switches: report.voluntary_switches + daemon.voluntary_switches,
        involuntary_switches: report.involuntary_switches + daemon.involuntary_switches,
        device_commands: Some(commands),
    });
    Ok(Ok(m))
}

/// The client process, its output lines and its standard error.
struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl ChildProcess {
    fn spawn(spec: &ClientSpec) -> Result<ChildProcess> {
        let exe = std::env::current_exe().context("finding this program")?;
        let arg = serde_json::to_string(spec).context("encoding the client's spec")?;
        let mut child = Command::new(&exe)
            .args(["bench", "--cross-process-client", &arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} as the client", exe.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (tx, lines) = channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = stderr.map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        Ok(ChildProcess {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        })
    }

    /// The next line of the client's output, within `limit`.
    fn line(&self, limit: Duration) -> Result<String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => Ok(line.trim().to_string()),
            Err(RecvTimeoutError::Timeout) => bail!("no answer within {limit:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("it exited"),
        }
    }

    fn go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("no stdin"))?;
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .context("starting the client")
    }

    /// Waits for a clean exit.
    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait().context("waiting for the client")?;
        if !status.success() {
            let stderr = self.stderr();
            bail!("the client exited with {status}: {stderr}");
        }
        Ok(())
    }

    /// Stops the client (ours, by its handle) and builds the error, with what it said.
    fn failed(mut self, cause: Option<anyhow::Error>, what: &str) -> anyhow::Error {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr();
        let cause = cause.map_or_else(String::new, |e| format!(" ({e:#})"));
        anyhow!("the client process {what}{cause}: {stderr}")
    }

    fn stderr(&mut self) -> String {
        let text = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            "(nothing on stderr)".into()
        } else {
            text.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
        }
    }
}

/// The client process: `stripefs bench --cross-process-client SPEC`.
pub fn client_main(spec: &str) -> Result<()> {
    let spec: ClientSpec = serde_json::from_str(spec).context("parsing the client's spec")?;
    let sane = spec.bs > 0
        && (1..=4096).contains(&spec.depth)
        && spec.region >= spec.bs
        && spec.buffer >= spec.bs
        && spec.seconds > 0.0
        && spec.seconds < 86_400.0;
    if !sane {
        bail!("bad client spec: {spec:?}");
    }
    let file = std::fs::File::open(&spec.file)
        .with_context(|| format!("opening {}", spec.file.display()))?;
    let options = ClientOptions {
        entries: spec.depth.next_power_of_two().clamp(1, 4096),
        workers: spec.workers,
    };
    let client = Client::connect_socket_with(&spec.socket, options)
        .with_context(|| format!("connecting to {}", spec.socket.display()))?;
    let buffer = ClientBuffer::with_huge_pages(spec.buffer, spec.huge_pages)
        .context("allocating the buffer")?;
    let handle = client
        .register(&file, &buffer)
        .context("registering the buffer")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").and_then(|()| out.flush())?;
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .context("waiting for go")?;
    if go.trim() != "go" {
        bail!("expected go, got {go:?}");
    }
    let report = client_run(&spec, &client, handle)?;
    writeln!(out, "{}", serde_json::to_string(&report)?).and_then(|()| out.flush())?;
    // Stay connected until the benchmark has taken its figures (it closes our standard
    // input): the daemon's threads for this connection end when it closes, and a thread that
    // has ended can no longer be counted in the per-thread CPU.
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    client.unregister(handle).context("unregistering")?;
    Ok(())
}

fn client_run(
    spec: &ClientSpec,
    client: &Client,
    handle: stripefs_client::Handle,
) -> Result<ClientReport> {
    let access = if spec.random {
        Access::RandRead
    } else {
        Access::SeqRead
    };
    let depth = spec.depth as usize;
    let blocks = spec.region / spec.bs;
    let mut random = Offsets::new(access, spec.bs, spec.region, 1);
    let mut next_block = 0u64;
    let mut next_offset = || {
        if spec.random {
            random.next_offset()
        } else {
            let b = next_block;
            next_block = (next_block + 1) % blocks;
            b * spec.bs
        }
    };
    let request = |slot: usize, offset: u64| Request {
        handle,
        op: Op::Read,
        file_offset: offset,
        buffer_offset: (slot as u64 * spec.bs) % (spec.buffer / spec.bs * spec.bs),
        len: spec.bs,
        tag: slot as u64,
    };
    let usage = Usage::now()?;
    let start = Instant::now();
    let deadline = Deadline::after(Duration::from_secs_f64(spec.seconds));
    let mut started = vec![start; depth];
    let mut batch: Vec<Request> = (0..depth).map(|s| request(s, next_offset())).collect();
    let mut hist = Histogram::default();
    let (mut ops, mut in_flight, mut error) = (0u64, 0usize, None);
    let mut done: Vec<Completion> = Vec::with_capacity(depth);
    loop {
        let now = Instant::now();
        for r in &batch {
            started[r.tag as usize] = now;
        }
        let mut sent = 0;
        while sent < batch.len() {
            sent += client.submit(&batch[sent..]).context("submitting")?;
        }
        in_flight += batch.len();
        batch.clear();
        if in_flight == 0 {
            break;
        }
        done.clear();
        client.wait(1, &mut done).context("waiting")?;
        let more = error.is_none() && !deadline.passed();
        for c in &done {
            in_flight -= 1;
            let slot = c.tag as usize;
            let Some(t) = started.get(slot) else {
                bail!("completion with unknown tag {}", c.tag);
            };
            hist.record(t.elapsed());
            match c.result {
                Ok(n) if n == spec.bs => ops += 1,
                Ok(n) => {
                    error.get_or_insert_with(|| format!("short read: {n} of {} bytes", spec.bs));
                }
                Err(e) => {
                    error.get_or_insert_with(|| format!("read failed: {e}"));
                }
            }
            if more {
                batch.push(request(slot, next_offset()));
            }
        }
    }
    if let Some(e) = error {
        bail!(e);
    }
    let seconds = start.elapsed().as_secs_f64();
    let used = Usage::now()?.since(&usage);
    Ok(ClientReport {
        ops,
        seconds,
        user: used.user,
        system: used.system,
        voluntary_switches: used.voluntary_switches,
        involuntary_switches: used.involuntary_switches,
        p50_us: hist.quantile_us(0.50),
        p99_us: hist.quantile_us(0.99),
    })
}
