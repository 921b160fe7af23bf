//! Workloads and the plan of a run: which access pattern, block size and queue depth, on
//! which kind and number of devices.

use serde::Serialize;

use crate::devices::{Kind, short_size};

/// Access pattern and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    SeqRead,
    RandRead,
    SeqWrite,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::SeqRead => "seq-read",
            Access::RandRead => "rand-read",
            Access::SeqWrite => "seq-write",
        }
    }

    pub fn is_write(self) -> bool {
        self == Access::SeqWrite
    }

    /// fio's `rw=` value.
    pub fn fio_rw(self) -> &'static str {
        match self {
            Access::SeqRead => "read",
            Access::RandRead => "randread",
            Access::SeqWrite => "write",
        }
    }
}

/// One workload: `qd` requests of `bs` bytes in flight per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub access: Access,
    pub bs: u64,
    /// Requests in flight per device (fio: `iodepth` of each device's job).
    pub qd: u32,
}

/// Which curve or comparison a point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Sweep {
    /// Sequential read against device count.
    Scaling,
    /// Sequential read against queue depth.
    QueueDepth,
    /// Random 4 KiB read against queue depth.
    Random,
    /// Sequential write.
    Write,
    /// Bandwidth-capped emulated NVMe against device count.
    EmuScaling,
    /// Memory-backed emulated NVMe: not disk-bound.
    EmuMem,
    /// Untar, find, stat, rm -rf, cp and cat on stripefs and on btrfs raid0 over the same
    /// RAM-backed loop devices (no points of the plan: see `crate::metadata`).
    Metadata,
    /// Up to a million files on stripefs (create rate, commit, daemon RSS, mount time at
    /// checkpoints; stat and unlink rates; 4 KiB files until ENOSPC) and btrfs raid0 on the
    /// same RAM-backed loop devices (no points of the plan: see `crate::scale`). Several
    /// minutes: it runs only when named (`--sweeps files`).
    Files,
}

impl Sweep {
    pub fn name(self) -> &'static str {
        match self {
            Sweep::Scaling => "scaling",
            Sweep::QueueDepth => "queue-depth",
            Sweep::Random => "random",
            Sweep::Write => "write",
            Sweep::EmuScaling => "emu-scaling",
            Sweep::EmuMem => "emu-mem",
            Sweep::Metadata => "metadata",
            Sweep::Files => "files",
        }
    }
}

/// One measurement configuration: every applicable engine runs on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Point {
    pub sweep: Sweep,
    pub kind: Kind,
    pub devices: usize,
    pub workload: Workload,
    /// Whether the engines that read a file of a mounted stripefs (FUSE, registered reads
    /// of the file in-process and from another process) run here too. They need a
    /// filesystem on the devices, so the plan picks a subset of the read points.
    pub files: bool,
}

impl Point {
    /// "seq-read loop x4 bs=1M qd=8".
    pub fn label(&self) -> String {
        format!(
            "{} {} x{} bs={} qd={}",
            self.workload.access.name(),
            self.kind.name(),
            self.devices,
            short_size(self.workload.bs),
            self.workload.qd
        )
    }
}

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;

/// The points of a run. `disk` is the disk-bound kind for the sweeps (loop devices, or files
/// without root); `ram` the memory-backed block kind, if any.
pub fn plan(quick: bool, counts: &[usize], disk: Kind, ram: Option<Kind>) -> Vec<Point> {
    if quick {
        return quick_plan(disk, ram);
    }
    let mut points = Vec::new();
    let mut add = |sweep, kind, devices, access, bs, qd, files| {
        points.push(Point {
            sweep,
            kind,
            devices,
            workload: Workload { access, bs, qd },
            files,
        })
    };
    let block_kinds: Vec<Kind> = [Some(Kind::File), Some(disk), ram]
        .into_iter()
        .flatten()
        .fold(Vec::new(), |mut v, k| {
            if !v.contains(&k) {
                v.push(k);
            }
            v
        });
    let wide = counts
        .iter()
        .copied()
        .filter(|&n| n <= 4)
        .max()
        .unwrap_or(1);
    // The file engines run on the disk-bound and the memory-backed kinds at the widest
    // count; on `file` only when it is the disk-bound kind (no loop devices).
    for &kind in &block_kinds {
        for &n in counts {
            let files = n == wide && (kind != Kind::File || disk == Kind::File);
            add(Sweep::Scaling, kind, n, Access::SeqRead, M, 8, files);
        }
    }
    // Queue depth: the file engines on the disk at 1 MiB (CPU per GiB is what differs there)
    // and on memory at 128 KiB (throughput), including QD 32 (the cross-process target).
    for (kind, bs, depths) in [
        (Some(disk), 128 * K, &[1, 4, 16, 64][..]),
        (Some(disk), M, &[1, 4, 16, 64][..]),
        (ram, 128 * K, &[1, 4, 16, 32, 64][..]),
    ] {
        let Some(kind) = kind else { continue };
        for &qd in depths {
            let files = bs == M || Some(kind) == ram;
            add(
                Sweep::QueueDepth,
                kind,
                wide,
                Access::SeqRead,
                bs,
                qd,
                files,
            );
        }
    }
    for kind in [Some(disk), ram].into_iter().flatten() {
        for qd in [1, 8, 32, 128] {
            let files = qd == 1 || qd == 32;
            add(
                Sweep::Random,
                kind,
                wide,
                Access::RandRead,
                4 * K,
                qd,
                files,
            );
        }
        add(Sweep::Write, kind, wide, Access::SeqWrite, M, 8, false);
    }
    for &n in counts {
        add(
            Sweep::EmuScaling,
            Kind::EmuCapped,
            n,
            Access::SeqRead,
            M,
            8,
            false,
        );
    }
    for (access, bs, qd) in [
        (Access::SeqRead, 128 * K, 32),
        (Access::SeqRead, M, 8),
        (Access::RandRead, 4 * K, 32),
    ] {
        add(Sweep::EmuMem, Kind::EmuMem, wide, access, bs, qd, true);
    }
    points
}

fn quick_plan(disk: Kind, ram: Option<Kind>) -> Vec<Point> {
    let p = |sweep, kind, devices, access, bs, qd, files| Point {
        sweep,
        kind,
        devices,
        workload: Workload { access, bs, qd },
        files,
    };
    let mut points = vec![
        p(Sweep::Scaling, disk, 2, Access::SeqRead, M, 8, true),
        p(Sweep::Random, disk, 2, Access::RandRead, 4 * K, 32, true),
        p(Sweep::Write, disk, 2, Access::SeqWrite, M, 8, false),
    ];
    if let Some(ram) = ram {
        points.push(p(
            Sweep::QueueDepth,
            ram,
            2,
            Access::SeqRead,
            128 * K,
            32,
            true,
        ));
    }
    for n in [1, 8] {
        points.push(p(
            Sweep::EmuScaling,
            Kind::EmuCapped,
            n,
            Access::SeqRead,
            M,
            8,
            false,
        ));
    }
    points.push(p(
        Sweep::EmuMem,
        Kind::EmuMem,
        2,
        Access::SeqRead,
        128 * K,
        32,
        true,
    ));
    points
}

/// Offsets of successive requests on one device (or volume): sequential with wrap-around,
/// or uniformly random, aligned to the block size.
#[derive(Clone, Debug)]
pub struct Offsets {
    random: bool,
    bs: u64,
    blocks: u64,
    next: u64,
    rng: u64,
}

impl Offsets {
    /// Offsets of `bs`-sized requests within `region` bytes; `seed` varies the start.
    pub fn new(access: Access, bs: u64, region: u64, seed: u64) -> Offsets {
        let blocks = (region / bs.max(1)).max(1);
        Offsets {
            random: access == Access::RandRead,
            bs,
            blocks,
            next: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The next offset.
    pub fn next_offset(&mut self) -> u64 {
        let block = if self.random {
            // xorshift64*
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.blocks
        } else {
            let b = self.next;
            self.next = (self.next + 1) % self.blocks;
            b
        };
        block * self.bs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stay_in_region_and_aligned() {
        let mut seq = Offsets::new(Access::SeqRead, 4096, 3 * 4096 + 100, 1);
        let got: Vec<_> = (0..4).map(|_| seq.next_offset()).collect();
        assert_eq!(got, vec![0, 4096, 8192, 0]);
        let mut rnd = Offsets::new(Access::RandRead, 4096, 1 << 20, 7);
        for _ in 0..1000 {
            let o = rnd.next_offset();
            assert!(o < 1 << 20 && o.is_multiple_of(4096));
        }
    }

    #[test]
    fn plans_are_non_empty() {
        assert!(plan(true, &[1, 2, 4, 8], Kind::File, None).len() >= 5);
        let full = plan(false, &[1, 2, 4, 8], Kind::Loop, Some(Kind::RamLoop));
        assert!(
            full.iter()
                .any(|p| p.sweep == Sweep::EmuScaling && p.devices == 8)
        );
    }
}
