//! Our raw reader: one io_uring over every device (registered files), one thread keeping
//! `qd` requests in flight per device. With `fixed`, the buffers are registered once and
//! requests are READ_FIXED/WRITE_FIXED (the limit without fio's own overheads); without,
//! plain READ/WRITE on O_DIRECT descriptors (the "no registration" baseline). No layout, no
//! mapping: this is what the devices give a program that does nothing else.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use io_uring::{IoUring, opcode, squeue, types};

use super::{Deadline, EngineResult, RunSpec, buffer_area};
use crate::devices::Devices;
use crate::memory::AlignedMem;
use crate::stats::{Detail, Histogram, Measurement, ThreadTimes, Usage};
use crate::workload::Offsets;

/// One request slot: which device it serves and where its data goes.
struct Slot {
    device: usize,
    buffer_offset: usize,
    offset: u64,
    started: Instant,
}

struct Bench {
    ring: IoUring,
    mem: AlignedMem,
    slots: Vec<Slot>,
    offsets: Vec<Offsets>,
    fixed: bool,
    write: bool,
    bs: u32,
}

pub fn run(spec: &RunSpec<'_>, fixed: bool) -> EngineResult {
    let Devices::Paths(paths) = &spec.target.devices else {
        return Ok(Err("needs device paths".into()));
    };
    let files = open_all(paths, spec.workload.access.is_write())?;
    let area = match buffer_area(spec.total_depth(), spec.workload.bs, usize::from(fixed)) {
        Ok(area) => area,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut bench = Bench::new(spec, &files, fixed, area)?;
    Ok(Ok(bench.measure(spec)?))
}

pub fn open_all(paths: &[PathBuf], write: bool) -> Result<Vec<File>> {
    paths
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(libc::O_DIRECT)
                .open(p)
                .with_context(|| format!("opening {} O_DIRECT", p.display()))
        })
        .collect()
}

impl Bench {
    fn new(spec: &RunSpec<'_>, files: &[File], fixed: bool, area: u64) -> Result<Bench> {
        let w = spec.workload;
        let depth = spec.total_depth();
        let entries = (depth as u32).next_power_of_two().max(8);
        // Built like the stripefs device rings (no task-run flags), so that the two differ
        // only in what runs around the ring.
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)
            .context("io_uring setup")?;
        let fds: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
        ring.submitter()
            .register_files(&fds)
            .context("registering files")?;
        let mem = AlignedMem::new(area as usize).context("allocating buffers")?;
        if fixed {
            // SAFETY: `mem` outlives the ring's use of it: the ring is dropped before `mem`
            // (field order in `Bench`) and every request is reaped before `measure` returns.
            unsafe { ring.submitter().register_buffers(&[mem.iovec()]) }
                .context("registering fixed buffers")?;
        }
        let n = files.len();
        let now = Instant::now();
        let slots = (0..depth)
            .map(|s| Slot {
                device: s % n,
                buffer_offset: ((s as u64 * w.bs) % area) as usize,
                offset: 0,
                started: now,
            })
            .collect();
        let offsets = (0..n)
            .map(|d| Offsets::new(w.access, w.bs, spec.region(), d as u64 + 1))
            .collect();
        Ok(Bench {
            ring,
            mem,
            slots,
            offsets,
            fixed,
            write: w.access.is_write(),
            bs: u32::try_from(w.bs).context("block size above 4 GiB")?,
        })
    }

    fn measure(&mut self, spec: &RunSpec<'_>) -> Result<Measurement> {
        let (threads, usage, start) = (ThreadTimes::now(), Usage::now()?, Instant::now());
        let deadline = Deadline::after(spec.duration);
        let mut hist = Histogram::default();
        for s in 0..self.slots.len() {
            self.push(s)?;
        }
        let (mut in_flight, mut ops, mut error) = (self.slots.len(), 0u64, None);
        let mut done: Vec<(u64, i32)> = Vec::with_capacity(self.slots.len());
        while in_flight > 0 {
            enter(&self.ring)?;
            done.clear();
            done.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(user_data, res) in &done {
                let s = user_data as usize;
                hist.record(self.slots[s].started.elapsed());
                in_flight -= 1;
                if let Err(e) = self.check(s, res) {
                    error.get_or_insert(e);
                    continue;
                }
                ops += 1;
                if error.is_none() && !deadline.passed() && !crate::signal::interrupted() {
                    self.push(s)?;
                    in_flight += 1;
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let seconds = start.elapsed().as_secs_f64();
        let used = Usage::now()?.since(&usage);
        let mut m = Measurement::new(ops * spec.workload.bs, ops, seconds, &used, &hist);
        m.detail = Some(Detail {
            thread_cpu: ThreadTimes::now().since(&threads),
            voluntary_switches: used.voluntary_switches,
            involuntary_switches: used.involuntary_switches,
            device_commands: Some(ops),
        });
        Ok(m)
    }

    fn check(&self, s: usize, res: i32) -> Result<()> {
        let slot = &self.slots[s];
        if res < 0 {
            bail!(
                "device {} offset {}: {}",
                slot.device,
                slot.offset,
                std::io::Error::from_raw_os_error(-res)
            );
        }
        if res as u32 != self.bs {
            bail!(
                "device {} offset {}: short transfer {res} of {}",
                slot.device,
                slot.offset,
                self.bs
            );
        }
        Ok(())
    }

    /// Queues the next request of slot `s` (submitted by the next `submit_and_wait`).
    fn push(&mut self, s: usize) -> Result<()> {
        let device = self.slots[s].device;
        let offset = self.offsets[device].next_offset();
        let slot = &mut self.slots[s];
        slot.offset = offset;
        slot.started = Instant::now();
        let addr = self.mem.addr(slot.buffer_offset);
        let entry =
            entry(self.fixed, self.write, device as u32, addr, self.bs, offset).user_data(s as u64);
        // SAFETY: `addr..addr+bs` is inside `mem`, which lives until every request is reaped;
        // no other request of this run uses the slot's area until this one completes (areas
        // are shared only past the buffer area, and then only the data, never looked at, races).
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| anyhow::anyhow!("submission queue full"))
    }
}

/// Submits what is queued and waits for one completion; retries when interrupted.
pub fn enter(ring: &IoUring) -> Result<()> {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e).context("io_uring_enter"),
        }
    }
}

fn entry(fixed: bool, write: bool, dev: u32, addr: *mut u8, len: u32, off: u64) -> squeue::Entry {
    let fd = types::Fixed(dev);
    match (fixed, write) {
        (true, false) => opcode::ReadFixed::new(fd, addr, len, 0).offset(off).build(),
        (true, true) => opcode::WriteFixed::new(fd, addr, len, 0)
            .offset(off)
            .build(),
        (false, false) => opcode::Read::new(fd, addr, len).offset(off).build(),
        (false, true) => opcode::Write::new(fd, addr, len).offset(off).build(),
    }
}
