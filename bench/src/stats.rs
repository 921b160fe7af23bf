//! Measuring: latency histograms, process CPU time and context switches (getrusage), and CPU
//! time per thread (from /proc), so a run can say which threads its CPU went to.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

/// Sub-buckets per power of two: about 3% resolution.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A log-bucketed histogram of nanosecond latencies; records without allocating.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)] += 1;
        self.total += 1;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Number of recorded values.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return midpoint(i) as f64 / 1000.0;
            }
        }
        0.0
    }
}

fn index(ns: u64) -> usize {
    if ns < (2 * SUB) as u64 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    let shift = msb - SUB_BITS;
    ((shift as usize + 1) << SUB_BITS) + ((ns >> shift) as usize & (SUB - 1))
}

/// A representative value of bucket `i` (its middle).
fn midpoint(i: usize) -> u64 {
    if i < 2 * SUB {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let low = ((SUB + (i & (SUB - 1))) as u64) << shift;
    low + (1u64 << shift) / 2
}

/// CPU time and context switches of this process (all threads) so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub user: f64,
    pub system: f64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl Usage {
    /// The process's usage now.
    pub fn now() -> Result<Usage> {
        // SAFETY: `ru` is plain data that getrusage fills in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage struct.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
            return Err(std::io::Error::last_os_error()).context("getrusage");
        }
        let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        Ok(Usage {
            user: secs(ru.ru_utime),
            system: secs(ru.ru_stime),
            voluntary_switches: ru.ru_nvcsw as u64,
            involuntary_switches: ru.ru_nivcsw as u64,
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            voluntary_switches: self.voluntary_switches - earlier.voluntary_switches,
            involuntary_switches: self.involuntary_switches - earlier.involuntary_switches,
        }
    }

    /// User plus system seconds.
    pub fn cpu(&self) -> f64 {
        self.user + self.system
    }
}

/// CPU nanoseconds of every thread of this process, by thread id, with the thread's name.
#[derive(Clone, Debug, Default)]
pub struct ThreadTimes(BTreeMap<u32, (String, u64)>);

impl ThreadTimes {
    /// Reads /proc/self/task/*/{comm,schedstat}. Threads that vanish meanwhile are skipped.
    pub fn now() -> ThreadTimes {
        let mut map = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return ThreadTimes(map);
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let path = entry.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()));
            if let Some(ns) = ns {
                map.insert(tid, (comm.trim().to_string(), ns));
            }
        }
        ThreadTimes(map)
    }

    /// CPU seconds used since `earlier`, summed per thread group (see [`thread_group`]).
    /// Threads born meanwhile count from zero; threads gone meanwhile are not counted.
    pub fn since(&self, earlier: &ThreadTimes) -> BTreeMap<String, f64> {
        let mut groups = BTreeMap::new();
        for (tid, (name, ns)) in &self.0 {
            let before = earlier.0.get(tid).map_or(0, |(_, ns)| *ns);
            let secs = ns.saturating_sub(before) as f64 / 1e9;
            *groups.entry(thread_group(name).to_string()).or_insert(0.0) += secs;
        }
        groups.retain(|_, s| *s > 0.0);
        groups
    }
}

/// The group a thread belongs to, by name: the stripefs device reapers, the kernel's io_uring
/// workers (io-wq, which run requests that could not be issued without blocking), the pread
/// pool, the FUSE threads serving the mount (`fuser-N`), the control endpoint's threads
/// (`stripefs ctl …`: ring and workers of a client), the threads issuing blocking file
/// requests (`reader N`), or the main (submitting) thread and anything else.
pub fn thread_group(name: &str) -> &'static str {
    if name.starts_with("reaper") {
        "reaper"
    } else if name.starts_with("iou-") {
        "io-wq"
    } else if name.starts_with("pread") {
        "pread"
    } else if name.starts_with("fuser-") {
        "fuse"
    } else if name.starts_with("stripefs ctl") {
        "control"
    } else if name.starts_with("reader") {
        "reader"
    } else {
        "main"
    }
}

/// The locked-memory limit that io_uring buffer registration counts against, or None when
/// there is none (root has CAP_IPC_LOCK, or the limit is infinite).
pub fn memlock_limit() -> Option<u64> {
    if crate::devices::is_root() {
        return None;
    }
    // SAFETY: `rl` is plain data that getrlimit fills in.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is a valid, writable rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return None;
    }
    (rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur)
}

/// CPU nanoseconds the calling thread has used.
pub fn this_thread_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What a run did and what it cost: the figures every engine reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Measurement {
    /// Bytes transferred.
    pub bytes: u64,
    /// Requests completed.
    pub ops: u64,
    /// Wall-clock seconds of the measured window.
    pub seconds: f64,
    /// User + system CPU seconds of the process doing the I/O.
    pub cpu_seconds: f64,
    /// Median request latency, submission to completion, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Where the time went (in-process engines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    /// GB/s of each repetition, when the figures add up several (shows the noise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeats_gbps: Vec<f64>,
}

/// Per-run counters for finding where the time goes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Detail {
    /// CPU seconds per thread group (by thread name).
    pub thread_cpu: BTreeMap<String, f64>,
    /// Voluntary context switches (a thread blocked: waits, sleeps).
    pub voluntary_switches: u64,
    /// Involuntary context switches (a thread was preempted).
    pub involuntary_switches: u64,
    /// Commands issued to the devices (stripefs: from the device counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_commands: Option<u64>,
}

impl Detail {
    /// "per request: 4.1 us main, 2.0 us reaper; 0.6 switches; 1.0 commands".
    pub fn per_request(&self, ops: u64) -> String {
        let ops = ops.max(1) as f64;
        let cpu: Vec<String> = self
            .thread_cpu
            .iter()
            .map(|(group, s)| format!("{:.1} us {group}", s * 1e6 / ops))
            .collect();
        let switches = (self.voluntary_switches + self.involuntary_switches) as f64 / ops;
        let mut s = format!(
            "per request: {}; {switches:.2} context switches",
            if cpu.is_empty() {
                "-".to_string()
            } else {
                cpu.join(", ")
            }
        );
        if let Some(c) = self.device_commands {
            s.push_str(&format!("; {:.2} device commands", c as f64 / ops));
        }
        s
    }
}

impl Measurement {
    /// Builds a measurement from counts, a latency histogram and usage deltas.
    pub fn new(bytes: u64, ops: u64, seconds: f64, usage: &Usage, hist: &Histogram) -> Self {
        Measurement {
            bytes,
            ops,
            seconds,
            cpu_seconds: usage.cpu(),
            p50_us: hist.quantile_us(0.50),
            p99_us: hist.quantile_us(0.99),
            detail: None,
            repeats_gbps: Vec::new(),
        }
    }

    /// Adds up repetitions of one run: totals add, latency percentiles are averaged.
    pub fn combine(parts: &[Measurement]) -> Measurement {
        let n = parts.len().max(1) as f64;
        let detail =
            parts
                .iter()
                .filter_map(|p| p.detail.as_ref())
                .fold(None, |acc: Option<Detail>, d| {
                    let mut acc = acc.unwrap_or_default();
                    for (group, s) in &d.thread_cpu {
                        *acc.thread_cpu.entry(group.clone()).or_insert(0.0) += s;
                    }
                    acc.voluntary_switches += d.voluntary_switches;
                    acc.involuntary_switches += d.involuntary_switches;
                    acc.device_commands = match (acc.device_commands, d.device_commands) {
                        (a, Some(b)) => Some(a.unwrap_or(0) + b),
                        (a, None) => a,
                    };
                    Some(acc)
                });
        Measurement {
            bytes: parts.iter().map(|p| p.bytes).sum(),
            ops: parts.iter().map(|p| p.ops).sum(),
            seconds: parts.iter().map(|p| p.seconds).sum(),
            cpu_seconds: parts.iter().map(|p| p.cpu_seconds).sum(),
            p50_us: parts.iter().map(|p| p.p50_us).sum::<f64>() / n,
            p99_us: parts.iter().map(|p| p.p99_us).sum::<f64>() / n,
            detail,
            repeats_gbps: if parts.len() > 1 {
                parts.iter().map(Measurement::gbps).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Decimal gigabytes per second.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e9
    }

    /// Requests per second.
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }

    /// CPU seconds per GiB transferred.
    pub fn cpu_per_gib(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / (1u64 << 30) as f64).max(1e-12)
    }

    /// Cores kept busy on average.
    pub fn cores(&self) -> f64 {
        self.cpu_seconds / self.seconds.max(1e-9)
    }

    /// Requests per second per core used.
    pub fn iops_per_core(&self) -> f64 {
        self.iops() / self.cores().max(1e-6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_close() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            4096,
            123_456,
            10_000_000,
            u64::MAX / 2,
        ] {
            let i = index(ns);
            assert!(i >= last, "index must not decrease");
            last = i;
            let mid = midpoint(i);
            let err = (mid as f64 - ns as f64).abs() / (ns as f64).max(1.0);
            assert!(err < 0.04, "{ns} -> bucket {i} mid {mid}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        assert!((h.quantile_us(0.5) - 50.0).abs() < 2.0);
        assert!((h.quantile_us(0.99) - 99.0).abs() < 3.0);
        let mut g = Histogram::default();
        g.merge(&h);
        assert_eq!(g.count(), 100);
    }
}
