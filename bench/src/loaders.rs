//! The loading benchmark (`stripefs bench --loaders`): runs `python/bench.py`, which times
//! the Python package (`pip install ./python`) loading a large file and a multi-tensor
//! safetensors file on a scratch mount, against `numpy.fromfile` and
//! `safetensors.numpy.load_file` through the same mount, and against the Rust client on the
//! same files: this binary's hidden `--rust-load`, below, in its own process as Python is.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use stripefs_client::{Client, ClientBuffer, ClientOptions, FileRequest, Handle, Op};

use crate::BenchArgs;

/// Requests in flight, and the size of each: what the Python package uses by default.
const ENTRIES: u32 = 256;
const CHUNK: u64 = 4 << 20;

/// The script, in the repository this binary was built from unless `--loaders-script` says.
fn script(args: &BenchArgs) -> PathBuf {
    args.loaders_script.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("python")
            .join("bench.py")
    })
}

/// Runs `python3 python/bench.py` with this binary for mounts and for the Rust client.
pub fn run_script(args: &BenchArgs) -> Result<()> {
    let script = script(args);
    if !script.exists() {
        bail!("{} not found (--loaders-script)", script.display());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg("--stripefs-bin").arg(&exe);
    cmd.arg("--dir").arg(&args.dir);
    if args.quick {
        cmd.arg("--quick");
    }
    if let Some(n) = args.repeat {
        cmd.arg("--repeat").arg(n.to_string());
    }
    if let Some(p) = &args.markdown {
        cmd.arg("--markdown").arg(p);
    }
    if let Some(p) = &args.json {
        cmd.arg("--json").arg(p);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running python3 {}", script.display()))?;
    if !status.success() {
        bail!("python3 {} failed: {status}", script.display());
    }
    Ok(())
}

/// `--rust-load FILE...`: connects to the mount of the first file, registers one buffer as
/// large as the largest file, reads every file once untimed (the connection's daemon threads
/// start), then (timed) opens each file for requests and reads it whole into the buffer,
/// `CHUNK`-sized requests all in flight; prints `{"bytes": .., "seconds": ..}`. The Python
/// side of the benchmark does the same in every run (`python_read` in python/bench.py): a
/// read's speed depends on the new buffer's physical pages, so both draw one per run.
pub fn rust_load(paths: &[PathBuf]) -> Result<()> {
    let Some(first) = paths.first() else {
        bail!("--rust-load needs files");
    };
    let sizes = paths
        .iter()
        .map(|p| Ok(std::fs::metadata(p)?.len()))
        .collect::<std::io::Result<Vec<u64>>>()
        .context("sizing the files")?;
    let largest = sizes.iter().copied().max().unwrap_or(0).max(1);
    let client = Client::connect_with(
        first,
        ClientOptions {
            entries: ENTRIES,
            workers: 0,
        },
    )?;
    let buffer = ClientBuffer::new(largest)?;
    let handle = client.register_buffer(&buffer)?;
    load(&client, handle, paths, &sizes)?;
    let started = Instant::now();
    let bytes = load(&client, handle, paths, &sizes)?;
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"bytes\": {bytes}, \"seconds\": {seconds}}}");
    Ok(())
}

/// Opens each file for requests and reads it whole into the buffer; returns the bytes read.
fn load(client: &Client, handle: Handle, paths: &[PathBuf], sizes: &[u64]) -> Result<u64> {
    let mut bytes = 0;
    for (path, &size) in paths.iter().zip(sizes) {
        let file = client.open(&File::open(path).with_context(|| path.display().to_string())?)?;
        let requests: Vec<FileRequest> = (0..size.div_ceil(CHUNK))
            .map(|i| FileRequest {
                file,
                buffer: handle,
                op: Op::Read,
                file_offset: i * CHUNK,
                buffer_offset: i * CHUNK,
                len: CHUNK.min(size - i * CHUNK),
                tag: 0,
            })
            .collect();
        for ticket in client.start_files(&requests)? {
            bytes += client.finish(ticket)?;
        }
        client.close(file)?;
    }
    Ok(bytes)
}
