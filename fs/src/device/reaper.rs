//! The reaper: one thread per device that waits on the ring, holds back completions the
//! timing model says are not due yet, and completes requests.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{DeviceShared, InFlight, ring};
use crate::error::{Error, Op};

pub(super) fn run(dev: &DeviceShared) {
    let depth = dev.depth as usize;
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(dev.ring.params().cq_entries() as usize);
    let mut held: BinaryHeap<Reverse<(Instant, u32, i32)>> = BinaryHeap::with_capacity(depth);
    let mut freed: Vec<u32> = Vec::with_capacity(depth);
    loop {
        let timeout = held
            .peek()
            .map(|Reverse((due, _, _))| due.saturating_duration_since(Instant::now()));
        if let Err(e) = ring::wait(&dev.ring, timeout) {
            // Nothing sensible to do but retry; a ring that cannot wait is broken for good,
            // so back off instead of spinning.
            eprintln!("stripefs: device {}: waiting on ring failed: {e}", dev.name);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        cqes.clear();
        // SAFETY: this thread is the device's only completion reader.
        unsafe { ring::reap(&dev.ring, &mut cqes) };
        let now = Instant::now();
        for &(user_data, result) in &cqes {
            if user_data == ring::WAKE {
                continue;
            }
            let Ok(id) = u32::try_from(user_data) else {
                continue;
            };
            let due = dev
                .inflight
                .get(id as usize)
                .and_then(|slot| slot.lock().as_ref().and_then(|f| f.deadline));
            match due {
                Some(due) if due > now => held.push(Reverse((due, id, result))),
                _ => complete(dev, id, result, &mut freed),
            }
        }
        while let Some(Reverse((due, id, result))) = held.peek().copied() {
            if due > Instant::now() {
                break;
            }
            held.pop();
            complete(dev, id, result, &mut freed);
        }
        if !freed.is_empty() {
            let mut state = dev.submit.lock();
            state.free.append(&mut freed);
            let idle = state.free.len() == depth;
            drop(state);
            dev.space.notify_all();
            if idle && dev.closed.load(Ordering::Acquire) {
                return;
            }
        } else if dev.closed.load(Ordering::Acquire)
            && held.is_empty()
            && dev.submit.lock().free.len() == depth
        {
            return;
        }
    }
}

fn complete(dev: &DeviceShared, id: u32, result: i32, freed: &mut Vec<u32>) {
    let Some(cmd) = dev
        .inflight
        .get(id as usize)
        .and_then(|slot| slot.lock().take())
    else {
        return;
    };
    freed.push(id);
    let outcome = outcome(dev, &cmd, result);
    count(dev, &cmd, outcome.is_ok());
    cmd.request.complete_part(outcome);
}

fn outcome(dev: &DeviceShared, cmd: &InFlight, result: i32) -> Result<u64, Error> {
    let errno = cmd.injected.or((result < 0).then_some(-result));
    if let Some(errno) = errno {
        return Err(dev.io_error(
            cmd.op,
            cmd.offset,
            cmd.len,
            std::io::Error::from_raw_os_error(errno),
        ));
    }
    let done = result as u64;
    if done != cmd.len {
        return Err(Error::ShortTransfer {
            device: dev.name.clone(),
            op: cmd.op,
            offset: cmd.offset,
            expected: cmd.len,
            done,
        });
    }
    Ok(done)
}

fn count(dev: &DeviceShared, cmd: &InFlight, ok: bool) {
    let c = &dev.counters;
    if !ok {
        c.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match cmd.op {
        Op::Read => {
            c.reads.fetch_add(1, Ordering::Relaxed);
            c.bytes_read.fetch_add(cmd.len, Ordering::Relaxed);
        }
        Op::Write => {
            c.writes.fetch_add(1, Ordering::Relaxed);
            c.bytes_written.fetch_add(cmd.len, Ordering::Relaxed);
        }
    }
}
