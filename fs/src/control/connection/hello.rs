//! `Hello`: a connection gets its shared-memory ring, its doorbells and the threads that serve
//! them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Condvar, Mutex};
use stripefs_mapping::Memory;

use super::super::limits::Resource;
use super::super::proto::{HelloReply, Reply};
use super::super::ring::{Layout, RingView};
use super::super::server::ServerShared;
use super::super::sys;
use super::requests::{submission_loop, worker};
use super::rings::{CqState, JobQueue, RingState, RingThreads};
use super::{Connection, Handled};

/// Ring size when the client does not ask.
const DEFAULT_ENTRIES: u32 = 128;

pub(super) fn hello(
    server: &Arc<ServerShared>,
    conn: &Arc<Connection>,
    entries: u32,
    workers: u32,
) -> Handled {
    let mut ring_slot = conn.ring.lock();
    if ring_slot.is_some() {
        return Err(libc::EISCONN);
    }
    let entries = if entries == 0 {
        DEFAULT_ENTRIES
    } else {
        entries
    };
    let layout = Layout::new(entries, entries).ok_or(libc::EINVAL)?;
    let workers = match workers {
        0 => server.options.default_workers,
        n => n,
    }
    .clamp(1, server.options.max_workers.max(1));
    // The user's worker threads, all rings together: this ring gets what is left.
    let workers_charge = conn
        .user
        .charge_up_to(Resource::Workers, u64::from(workers))?;
    let workers = workers_charge.amount() as u32;
    let memory =
        Memory::create("stripefs-ring", layout.len as u64, false).map_err(|_| libc::ENOMEM)?;
    let memory = Arc::new(memory);
    let view = RingView::new(memory.clone(), layout).map_err(|_| libc::ENOMEM)?;
    view.write_header();
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let ring = Arc::new(RingState {
        view,
        sq_doorbell: sys::eventfd().map_err(errno)?,
        cq_doorbell: sys::eventfd().map_err(errno)?,
        stop: sys::eventfd().map_err(errno)?,
        stopping: AtomicBool::new(false),
        cq: Mutex::new(CqState {
            tail: 0,
            reserved: 0,
        }),
        jobs: Mutex::new(JobQueue {
            queue: VecDeque::new(),
            closed: false,
        }),
        jobs_ready: Condvar::new(),
        user: conn.user.clone(),
        counted: AtomicU64::new(0),
    });
    let reply_fds = vec![
        memory.fd().try_clone_to_owned().map_err(errno)?,
        ring.sq_doorbell.try_clone().map_err(errno)?,
        ring.cq_doorbell.try_clone().map_err(errno)?,
    ];
    let mut threads = RingThreads {
        ring: ring.clone(),
        threads: Vec::new(),
        _workers: workers_charge,
    };
    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EAGAIN))
    };
    for w in 0..workers {
        let (server, conn, ring) = (server.clone(), conn.clone(), ring.clone());
        match spawn(
            format!("stripefs ctl {} w{w}", conn.id),
            Box::new(move || worker(&server, &ring)),
        ) {
            Ok(t) => threads.threads.push(t),
            Err(e) => {
                threads.stop();
                return Err(e);
            }
        }
    }
    {
        let (server, conn, ring) = (server.clone(), conn.clone(), ring.clone());
        match spawn(
            format!("stripefs ctl {} sq", conn.id),
            Box::new(move || submission_loop(&server, &conn, &ring)),
        ) {
            Ok(t) => threads.threads.push(t),
            Err(e) => {
                threads.stop();
                return Err(e);
            }
        }
    }
    *ring_slot = Some(threads);
    Ok((
        Reply::Hello(HelloReply {
            connection: conn.id,
            ring_len: layout.len as u64,
            sq_entries: layout.sq_entries,
            cq_entries: layout.cq_entries,
        }),
        reply_fds,
    ))
}
