//! The closed loop both in-process stripefs engines run: one thread keeps `depth` requests
//! in flight on an `IoContext` for the run's duration, resubmitting each slot as soon as its
//! request completes, and measures what got through.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use stripefs_engine::{Completion, IoContext};

use super::Deadline;
use crate::stats::{Detail, Histogram, Measurement, ThreadTimes, Usage};

/// How completions are collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collect {
    /// `IoContext::wait`: sleep until one completes.
    Wait,
    /// `IoContext::poll` in a spin loop.
    Poll,
}

/// Runs the loop: `submit(ctx, slot)` starts the next request in `slot` (tag = slot); each
/// completion must report `bs` bytes. The measurement's `device_commands` is left to the
/// caller.
pub fn run(
    depth: usize,
    bs: u64,
    duration: Duration,
    collect: Collect,
    mut submit: impl FnMut(&mut IoContext, usize) -> Result<()>,
) -> Result<Measurement> {
    let mut ctx = IoContext::try_new(depth)?;
    let mut done: Vec<Completion> = Vec::with_capacity(depth);
    let mut started = vec![Instant::now(); depth];
    let mut hist = Histogram::default();
    let (times, usage, start) = (ThreadTimes::now(), Usage::now()?, Instant::now());
    let deadline = Deadline::after(duration);
    for (slot, at) in started.iter_mut().enumerate() {
        *at = Instant::now();
        submit(&mut ctx, slot)?;
    }
    let (mut ops, mut error) = (0u64, None);
    while ctx.in_flight() > 0 {
        done.clear();
        match collect {
            Collect::Poll => {
                while ctx.poll(&mut done) == 0 {
                    std::hint::spin_loop();
                }
            }
            Collect::Wait => {
                ctx.wait(1, &mut done);
            }
        }
        for c in &done {
            let slot = c.tag as usize;
            let Some(at) = started.get_mut(slot) else {
                error.get_or_insert_with(|| anyhow!("completion with unknown tag {slot}"));
                continue;
            };
            hist.record(at.elapsed());
            match &c.result {
                Ok(n) if *n == bs => ops += 1,
                Ok(n) => {
                    error.get_or_insert_with(|| anyhow!("request {slot}: {n} of {bs} bytes"));
                }
                Err(e) => {
                    error.get_or_insert_with(|| anyhow!("request {slot}: {e}"));
                }
            }
            if error.is_none() && !deadline.passed() && !crate::signal::interrupted() {
                *at = Instant::now();
                submit(&mut ctx, slot)?;
            }
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    let seconds = start.elapsed().as_secs_f64();
    let used = Usage::now()?.since(&usage);
    let mut m = Measurement::new(ops * bs, ops, seconds, &used, &hist);
    m.detail = Some(Detail {
        thread_cpu: ThreadTimes::now().since(&times),
        voluntary_switches: used.voluntary_switches,
        involuntary_switches: used.involuntary_switches,
        device_commands: None,
    });
    Ok(m)
}
