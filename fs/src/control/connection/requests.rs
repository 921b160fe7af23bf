//! Taking requests off a connection's ring, checking them, and running them.

use std::os::fd::AsFd;
use std::sync::atomic::{Ordering, fence};

use super::super::limits::Resource;
use super::super::proto::{ACCESS_READ, ACCESS_WRITE};
use super::super::ring::{Entry, NEED_WAKEUP, OP_READ, OP_WRITE, SQE_FILE, Sqe};
use super::super::server::ServerShared;
use super::super::sys;
use super::Connection;
use super::direct::{DirectReads, block_aligned};
use super::rings::{Job, RingState, finish};
use crate::filesystem::BOUNCE_SIZE;

/// Largest piece one worker call moves; longer requests are done in pieces (bounds the
/// bounce allocation of a misaligned request).
const MAX_PIECE: u64 = 64 << 20;

/// Takes requests off the submission queue while there is room for their completions, checks
/// them, and runs aligned reads itself or queues the rest for the workers; sleeps on the
/// doorbell (and the reads in flight) when there is nothing to do.
pub(super) fn submission_loop(server: &ServerShared, conn: &Connection, ring: &RingState) {
    let mut direct = DirectReads::new(ring.view.layout().cq_entries);
    serve_ring(server, conn, ring, &mut direct);
    if let Some(direct) = direct.as_mut() {
        direct.finish_all(server, ring);
    }
}

fn serve_ring(
    server: &ServerShared,
    conn: &Connection,
    ring: &RingState,
    direct: &mut Option<DirectReads>,
) {
    let entries = ring.view.layout().sq_entries;
    let mut head: u32 = 0;
    loop {
        if ring.stopping.load(Ordering::Acquire) {
            return;
        }
        if let Some(d) = direct.as_mut() {
            d.reap(server, ring);
        }
        let tail = ring.view.sq_tail().load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        if pending > entries {
            return violation(server, conn, ring);
        }
        let room = {
            let mut cq = ring.cq.lock();
            let Some(room) = ring.room(&cq) else {
                return violation(server, conn, ring);
            };
            let n = pending.min(room);
            cq.reserved += n;
            n
        };
        if room > 0 {
            let admitted = ring.admit(room);
            for i in 0..room {
                let entry = ring.view.read_sqe(head);
                head = head.wrapping_add(1);
                if i < admitted {
                    dispatch(server, conn, ring, direct, entry);
                } else {
                    // Over the user's requests in flight: this one fails alone.
                    server.refused.fetch_add(1, Ordering::Relaxed);
                    ring.complete(entry.sqe.tag, -i64::from(Resource::Requests.errno()));
                }
            }
            ring.view.sq_head().store(head, Ordering::Release);
            continue;
        }
        // Nothing to take: sleep until the client rings (it does when NEED_WAKEUP is set,
        // after publishing requests or consuming completions) or a read of ours finishes.
        ring.view.sq_flags().store(NEED_WAKEUP, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let tail = ring.view.sq_tail().load(Ordering::Acquire);
        let can_take = tail != head && ring.room(&ring.cq.lock()).is_some_and(|r| r > 0);
        if !can_take {
            match direct.as_mut() {
                Some(d) if d.ctx.in_flight() > 0 => d.wait(server, ring),
                _ => {
                    let _ = sys::poll(
                        &[
                            (ring.sq_doorbell.as_fd(), libc::POLLIN),
                            (ring.stop.as_fd(), libc::POLLIN),
                        ],
                        -1,
                    );
                }
            }
            sys::drain_doorbell(ring.sq_doorbell.as_fd());
        }
        ring.view.sq_flags().store(0, Ordering::SeqCst);
    }
}

/// The client broke the ring's rules: refuse further requests and close the connection.
fn violation(server: &ServerShared, conn: &Connection, ring: &RingState) {
    server.refused.fetch_add(1, Ordering::Relaxed);
    ring.stopping.store(true, Ordering::Release);
    conn.hang_up();
}

/// Checks one request (a private copy of the entry) and queues it, or completes it at once
/// with the errno that refuses it.
fn dispatch(
    server: &ServerShared,
    conn: &Connection,
    ring: &RingState,
    direct: &mut Option<DirectReads>,
    entry: Entry,
) {
    match check(conn, &entry) {
        Ok(job) => {
            if let Some(d) = direct.as_mut().filter(|_| DirectReads::takes(&job.sqe)) {
                return d.start(server, ring, job);
            }
            let mut jobs = ring.jobs.lock();
            jobs.queue.push_back(job);
            ring.jobs_ready.notify_one();
        }
        Err(errno) => {
            server.refused.fetch_add(1, Ordering::Relaxed);
            ring.complete(entry.sqe.tag, -i64::from(errno));
        }
    }
}

/// Checks one ring entry: known flags and op, handles of this connection (a buffer
/// registered against the mount with [`SQE_FILE`] and a file handle, or a registration of
/// one file without), access from the file's open mode, and ranges that do not overflow.
pub(super) fn check(conn: &Connection, entry: &Entry) -> Result<Job, i32> {
    let sqe = &entry.sqe;
    if sqe.flags & !SQE_FILE != 0 || entry.reserved != 0 {
        return Err(libc::EINVAL);
    }
    let need = match sqe.op {
        OP_READ => ACCESS_READ,
        OP_WRITE => ACCESS_WRITE,
        _ => return Err(libc::EINVAL),
    };
    let reg = conn.handles.read().get(sqe.handle).ok_or(libc::EBADF)?;
    let (access, file) = if sqe.flags & SQE_FILE != 0 {
        let file = conn.files.read().get(entry.file).ok_or(libc::EBADF)?;
        (file.access, Some(file))
    } else if entry.file != 0 {
        return Err(libc::EINVAL);
    } else if reg.ino == 0 {
        // A buffer registered against the mount reads and writes files named apart.
        return Err(libc::EINVAL);
    } else {
        (reg.access, None)
    };
    if access & need == 0 {
        return Err(libc::EBADF);
    }
    match sqe.buffer_offset.checked_add(sqe.len) {
        Some(end) if end <= reg.mapping.buffer_len() => {}
        _ => return Err(libc::EFAULT),
    }
    if sqe.file_offset.checked_add(sqe.len).is_none() {
        return Err(libc::EINVAL);
    }
    Ok(Job {
        reg,
        file,
        sqe: *sqe,
    })
}

pub(super) fn worker(server: &ServerShared, ring: &RingState) {
    loop {
        let job = {
            let mut jobs = ring.jobs.lock();
            loop {
                if let Some(job) = jobs.queue.pop_front() {
                    break Some(job);
                }
                if jobs.closed {
                    break None;
                }
                ring.jobs_ready.wait(&mut jobs);
            }
        };
        let Some(job) = job else { return };
        let result = if ring.stopping.load(Ordering::Acquire) {
            -i64::from(libc::ECANCELED)
        } else {
            match ring
                .user
                .charge(Resource::BounceBytes, bounce_need(&job.sqe))
            {
                Ok(_bounce) => run(server, &job),
                Err(errno) => -i64::from(errno),
            }
        };
        finish(server, ring, &job.reg, job.sqe.tag, result);
    }
}

/// Bounce memory a request may use in the daemon while it runs, charged to its user: none
/// when it is block-aligned (the devices move the data straight to or from the client's
/// buffer); otherwise a heap copy of up to [`MAX_PIECE`] bytes and a bounce buffer of the
/// pool.
pub(super) fn bounce_need(sqe: &Sqe) -> u64 {
    if block_aligned(sqe) {
        0
    } else {
        sqe.len.min(MAX_PIECE) + BOUNCE_SIZE
    }
}

/// Runs one checked request: bytes transferred, or a negative errno if nothing was.
pub(super) fn run(server: &ServerShared, job: &Job) -> i64 {
    let Sqe {
        op,
        file_offset,
        buffer_offset,
        len,
        ..
    } = job.sqe;
    let mapping = &job.reg.mapping;
    let file = job.file.as_ref().map(|f| &f.opened);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(MAX_PIECE);
        let (at, from) = (file_offset + done, buffer_offset + done);
        let result = match (op == OP_WRITE, file) {
            (true, None) => server.fs.write_registered(mapping, at, from, n),
            (true, Some(f)) => server.fs.write_file(mapping, f, at, from, n),
            (false, None) => server.fs.read_registered(mapping, at, from, n),
            (false, Some(f)) => server.fs.read_file(mapping, f, at, from, n),
        };
        match result {
            Ok(k) => {
                done += k;
                if k < n {
                    break;
                }
            }
            Err(e) if done == 0 => return -i64::from(e.errno()),
            Err(_) => break,
        }
    }
    done as i64
}
