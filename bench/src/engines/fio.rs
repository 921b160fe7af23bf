//! The limit: fio reading the raw devices in parallel (one job per device, io_uring engine,
//! O_DIRECT, fixed buffers, registered files, the same block size and queue depth).

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{EngineResult, RunSpec};
use crate::devices::Devices;
use crate::stats::{Detail, Measurement};

/// `fio --version`, or None when fio is not installed.
pub fn fio_version() -> Option<String> {
    let out = Command::new("fio").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn run(spec: &RunSpec<'_>) -> EngineResult {
    let Devices::Paths(paths) = &spec.target.devices else {
        return Ok(Err("fio needs device paths".into()));
    };
    if fio_version().is_none() {
        return Ok(Err("fio not installed (apt-get install -y fio)".into()));
    }
    let out = command(spec, paths).output().context("running fio")?;
    if !out.status.success() {
        if let Some(limit) = crate::stats::memlock_limit() {
            return Ok(Err(format!(
                "fio --fixedbufs failed without root (RLIMIT_MEMLOCK {limit} bytes): run as root"
            )));
        }
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = text.lines().filter(|l| l.contains("fio")).take(3).collect();
        bail!("fio exited with {}: {}", out.status, tail.join(" | "));
    }
    let json: Value = serde_json::from_slice(&out.stdout).context("parsing fio's JSON output")?;
    Ok(Ok(parse(&json, spec.workload.access.is_write())?))
}

fn command(spec: &RunSpec<'_>, paths: &[std::path::PathBuf]) -> Command {
    let w = &spec.workload;
    let mut cmd = Command::new("fio");
    cmd.args([
        "--output-format=json",
        "--ioengine=io_uring",
        "--direct=1",
        "--fixedbufs",
        "--registerfiles",
        "--group_reporting",
        "--lat_percentiles=1",
        "--percentile_list=50:99",
        "--randrepeat=0",
        "--norandommap",
        "--time_based",
    ]);
    cmd.arg(format!("--rw={}", w.access.fio_rw()))
        .arg(format!("--bs={}", w.bs))
        .arg(format!("--iodepth={}", w.qd))
        .arg(format!("--size={}", spec.region()))
        .arg(format!("--runtime={}ms", spec.duration.as_millis().max(1)));
    if crate::memory::huge_pages() {
        // Buffers in huge pages (SysV shared memory with SHM_HUGETLB), like the other engines.
        cmd.arg("--iomem=shmhuge");
    }
    for (i, path) in paths.iter().enumerate() {
        cmd.arg(format!("--name=dev{i}"))
            .arg("--filename")
            .arg(path);
    }
    cmd
}

/// Reads the group's figures. CPU seconds = (usr% + sys%) x job runtime: with group
/// reporting fio sums the runtimes of the jobs and averages the percentages over them.
fn parse(json: &Value, write: bool) -> Result<Measurement> {
    let job = json
        .pointer("/jobs/0")
        .context("fio's JSON output has no job")?;
    let error = job.get("error").and_then(Value::as_i64).unwrap_or(0);
    if error != 0 {
        bail!("fio job failed with error {error}");
    }
    let dir = job
        .get(if write { "write" } else { "read" })
        .context("fio's JSON output has no read/write section")?;
    let num = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    let bytes = num(dir, "/io_bytes");
    let bw = num(dir, "/bw_bytes");
    if bytes <= 0.0 || bw <= 0.0 {
        bail!("fio transferred nothing");
    }
    let runtime_s = num(job, "/job_runtime") / 1000.0;
    let cpu = (num(job, "/usr_cpu") + num(job, "/sys_cpu")) / 100.0 * runtime_s;
    let lat = |q: &str| num(dir, &format!("/lat_ns/percentile/{q}")) / 1000.0;
    Ok(Measurement {
        bytes: bytes as u64,
        ops: num(dir, "/total_ios") as u64,
        seconds: bytes / bw,
        cpu_seconds: cpu,
        p50_us: lat("50.000000"),
        p99_us: lat("99.000000"),
        detail: Some(Detail {
            voluntary_switches: num(job, "/ctx") as u64,
            ..Detail::default()
        }),
        repeats_gbps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_group_report() {
        let json: Value = serde_json::from_str(
            r#"{"jobs":[{"error":0,"job_runtime":4000,"usr_cpu":2.0,"sys_cpu":13.0,"ctx":10,
            "read":{"io_bytes":400000000,"bw_bytes":200000000,"total_ios":100000,
            "lat_ns":{"percentile":{"50.000000":800000,"99.000000":2700000}}}}]}"#,
        )
        .unwrap();
        let m = parse(&json, false).unwrap();
        assert_eq!(m.seconds, 2.0);
        assert!((m.cpu_seconds - 0.6).abs() < 1e-9);
        assert_eq!(m.p50_us, 800.0);
        assert_eq!(m.ops, 100000);
    }
}
