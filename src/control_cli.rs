//! `stripefs cat --registered FILE` and `stripefs stat MOUNTPOINT`: a program other than the
//! mount daemon doing registered I/O on a mounted stripefs through its control endpoint.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;
use stripefs_engine::spec::format_size;

use anyhow::{Context, Result, bail};
use stripefs_client::{Client, ClientBuffer, ClientError, ClientOptions, Completion, Op, Request};

/// Settings of `stripefs cat`.
#[derive(Debug, clap::Args)]
pub struct CatArgs {
    /// Read through a buffer registered with the mount daemon (requests on its shared ring)
    /// instead of read(2) through the mount.
    #[arg(long)]
    pub registered: bool,
    /// Size of each request.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub request_size: u64,
    /// Requests in flight (with --registered).
    #[arg(long, default_value_t = 8)]
    pub queue_depth: u32,
    /// Print bytes, time and throughput to standard error at the end.
    #[arg(long)]
    pub stats: bool,
    /// Files on a stripefs mount (with --registered), written to standard output in order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Settings of `stripefs stat`.
#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// The mountpoint (or any path on the mount).
    pub mountpoint: PathBuf,
}

fn parse_size(s: &str) -> Result<u64, String> {
    stripefs_engine::spec::parse_size(s).map_err(|e| e.to_string())
}

/// Runs `stripefs cat`.
pub fn cat(args: &CatArgs) -> Result<()> {
    if args.request_size == 0 || args.request_size > 1 << 30 {
        bail!("--request-size must be between 1 byte and 1 GiB");
    }
    let depth = args.queue_depth.clamp(1, 4096);
    let stdout = io::stdout();
    let start = Instant::now();
    let mut total = 0u64;
    for path in &args.files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let copied = if args.registered {
            cat_registered(path, &file, args.request_size, depth, &stdout)
        } else {
            cat_plain(&file, args.request_size, &stdout)
        };
        match copied {
            Ok(n) => total += n,
            // The reader went away (`| head`): stop quietly, like cat killed by SIGPIPE.
            Err(e) if is_broken_pipe(&e) => return Ok(()),
            Err(e) => return Err(e.context(format!("reading {}", path.display()))),
        }
    }
    if args.stats {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{} bytes in {secs:.3} s: {:.1} MB/s ({})",
            total,
            total as f64 / secs.max(1e-9) / 1e6,
            if args.registered {
                "registered"
            } else {
                "read(2)"
            }
        );
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn cat_plain(mut file: &File, request: u64, stdout: &io::Stdout) -> Result<u64> {
    let mut buf = vec![0u8; request as usize];
    let mut out = stdout.lock();
    let mut total = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Reads `file` through a registered buffer of `depth` slots of `request` bytes, keeping every
/// slot busy, and writes the slots to standard output in file order, straight from the
/// shared pages.
fn cat_registered(
    path: &std::path::Path,
    file: &File,
    request: u64,
    depth: u32,
    stdout: &io::Stdout,
) -> Result<u64> {
    let client = Client::connect_with(
        path,
        ClientOptions {
            entries: depth.next_power_of_two(),
            workers: 0,
        },
    )
    .context("connecting to the mount's control endpoint")?;
    let depth = u64::from(depth);
    let buffer = ClientBuffer::new(request * depth).context("allocating the buffer")?;
    let handle = client
        .register(file, &buffer)
        .context("registering the buffer against the file")?;
    let out = stdout.lock();
    let result = pump(&client, handle, &buffer, request, depth, out.as_fd());
    let unregistered = client.unregister(handle);
    let total = result?;
    unregistered.context("unregistering")?;
    Ok(total)
}

fn pump(
    client: &Client,
    handle: stripefs_client::Handle,
    buffer: &ClientBuffer,
    request: u64,
    depth: u64,
    out: std::os::fd::BorrowedFd<'_>,
) -> Result<u64> {
    let read = |chunk: u64| Request {
        handle,
        op: Op::Read,
        file_offset: chunk * request,
        buffer_offset: (chunk % depth) * request,
        len: request,
        tag: chunk,
    };
    // Result of each chunk in flight or waiting to be written, by slot.
    let mut results: Vec<Option<u64>> = vec![None; depth as usize];
    let initial: Vec<Request> = (0..depth).map(read).collect();
    submit_all(client, &initial)?;
    let mut next_write = 0u64;
    let mut total = 0u64;
    let mut done: Vec<Completion> = Vec::new();
    loop {
        done.clear();
        client
            .wait(1, &mut done)
            .context("waiting for completions")?;
        for c in &done {
            let n = c
                .result
                .map_err(|e| anyhow::anyhow!("registered read of chunk {}: {e}", c.tag))?;
            results[(c.tag % depth) as usize] = Some(n);
        }
        // Write what is complete, in order, and give each slot its next chunk.
        let mut refill = Vec::new();
        while let Some(n) = results[(next_write % depth) as usize].take() {
            write_all(buffer, out, (next_write % depth) * request, n)?;
            total += n;
            if n < request {
                // End of file: drain what is still in flight, then stop.
                while client.in_flight() > 0 {
                    done.clear();
                    client.wait(1, &mut done)?;
                }
                return Ok(total);
            }
            refill.push(read(next_write + depth));
            next_write += 1;
        }
        submit_all(client, &refill)?;
    }
}

fn submit_all(client: &Client, requests: &[Request]) -> Result<usize> {
    let mut sent = 0;
    while sent < requests.len() {
        match client.submit(&requests[sent..]) {
            Ok(n) => sent += n,
            Err(ClientError::Busy { .. }) => std::thread::yield_now(),
            Err(e) => return Err(e).context("submitting reads"),
        }
    }
    Ok(sent)
}

fn write_all(
    buffer: &ClientBuffer,
    out: std::os::fd::BorrowedFd<'_>,
    mut offset: u64,
    mut len: u64,
) -> Result<()> {
    while len > 0 {
        match buffer.write_to_fd(out, offset, len as usize) {
            Ok(0) => bail!("standard output accepts no more bytes"),
            Ok(n) => {
                offset += n as u64;
                len -= n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs `stripefs stat`.
pub fn stat(args: &StatArgs) -> Result<()> {
    let s = stripefs_client::stat(&args.mountpoint)
        .with_context(|| format!("asking the daemon of {}", args.mountpoint.display()))?;
    let socket = stripefs_client::discover(&args.mountpoint)?;
    println!(
        "{}: control socket {}; {} connection(s), {} ring requests completed, {} refused",
        args.mountpoint.display(),
        socket.display(),
        s.connections,
        s.requests,
        s.refused
    );
    println!();
    println!(
        "{:<40} {:>10} {:>12} {:>10} {:>12} {:>7}",
        "device", "reads", "read", "writes", "written", "errors"
    );
    for d in &s.devices {
        println!(
            "{:<40} {:>10} {:>12} {:>10} {:>12} {:>7}",
            d.name,
            d.reads,
            format_size(d.bytes_read),
            d.writes,
            format_size(d.bytes_written),
            d.errors
        );
    }
    println!();
    println!("registrations: {}", s.registrations_total);
    if !s.registrations.is_empty() {
        println!(
            "{:>10} {:>10} {:>8} {:>10} {:>6} {:>12} {:>10} {:>10}",
            "mapping", "inode", "pid", "connection", "access", "buffer", "requests", "migrations"
        );
        for r in &s.registrations {
            let access = match (r.access & 1 != 0, r.access & 2 != 0) {
                (true, true) => "rw",
                (true, false) => "r",
                (false, true) => "w",
                (false, false) => "-",
            };
            println!(
                "{:>10} {:>10} {:>8} {:>10} {:>6} {:>12} {:>10} {:>10}",
                r.mapping,
                r.ino,
                r.pid,
                r.connection,
                access,
                format_size(r.buffer_len),
                r.requests,
                r.migrations
            );
        }
        if s.registrations.len() < s.registrations_total as usize {
            println!(
                "(and {} more)",
                s.registrations_total as usize - s.registrations.len()
            );
        }
    }
    Ok(())
}
