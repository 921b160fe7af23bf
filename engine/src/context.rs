//! I/O contexts: the window through which a thread submits many requests and collects their
//! completions, and the fan-out that issues a request's device commands.
//!
//! Request slots are allocated once per context and reused, so a request costs no allocation:
//! submission clones `Arc`s and takes per-device and per-context locks only.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use stripefs_mapping::{MapGuard, Mapping};

use crate::device::{DeviceQueue, DeviceShared, Piece};
use crate::error::{Error, Op};
use crate::notify;
use crate::request::{Completion, ContextShared, FileHold, RequestSlot};

/// Issues the device commands of one request: each device gets its pieces as one batch.
///
/// For a layer that resolves its own ranges into device pieces (the filesystem): it is
/// handed one by [`IoContext::submit_with`] or [`run_plan`].
pub struct FanOut<'a> {
    op: Op,
    guard: &'a MapGuard,
    slot: &'a Arc<RequestSlot>,
    touched: &'a mut Vec<Arc<DeviceShared>>,
    /// When emulated timing lets the last command so far complete.
    due: Option<Instant>,
}

impl FanOut<'_> {
    /// Queues `pieces` on `device`, through the mapping's attachment number `attachment`.
    pub fn device(
        &mut self,
        attachment: usize,
        device: &DeviceQueue,
        pieces: impl Iterator<Item = Piece>,
    ) {
        let mut pieces = pieces.peekable();
        if pieces.peek().is_none() {
            return;
        }
        if !self.touched.iter().any(|d| Arc::ptr_eq(d, device.shared())) {
            device.shared().active.fetch_add(1, Ordering::AcqRel);
            self.touched.push(device.shared().clone());
        }
        match self.guard.attachment(attachment) {
            Some(att) => {
                let due = device.submit(self.op, pieces, att, self.slot);
                self.due = self.due.max(due);
            }
            None if device.faults().is_offline() => self.fail(Error::DeviceOffline {
                device: device.name().to_string(),
            }),
            None => self.fail(Error::NotAttached {
                device: device.name().to_string(),
            }),
        }
    }

    /// Fills a buffer range with zeros (a hole read).
    pub fn zero(&mut self, buffer_offset: u64, len: u64) {
        if let Err(e) = self.guard.memory().fill(buffer_offset, len, 0) {
            self.fail(e.into());
        }
    }

    /// Fails the request (its other commands still run to completion).
    pub fn fail(&mut self, error: Error) {
        self.slot.fail(error);
    }
}

/// A thread's window onto registered I/O: up to `depth` requests in flight, completions
/// collected by polling or by blocking. Use one per thread; requests may target any volume.
pub struct IoContext {
    slots: Box<[Arc<RequestSlot>]>,
    free: Vec<u32>,
    shared: Arc<ContextShared>,
    ready: Vec<u32>,
    /// Devices this context has sent commands to: the rings its waits drain.
    touched: Vec<Arc<DeviceShared>>,
    /// During a wait: whether this context watches each touched device's ring.
    watching: Vec<bool>,
    pollfds: Vec<libc::pollfd>,
    /// The earliest instant emulated timing lets a request submitted here complete (until
    /// it is [`SPIN`] past): a waiter that finds no completion yet (the backing's may come
    /// late) spins or sets its timer for it rather than sleeping until the completion wakes
    /// it, which would add a thread's wake-up latency to the emulated one.
    expected: Option<Instant>,
    /// For sleeps until an emulated completion is due (made at the first one; `None` while
    /// there was none, or if no timerfd could be had: then sleeps are in milliseconds).
    timer: Option<notify::Timer>,
}

impl IoContext {
    /// A context with room for `depth` requests in flight (at least 1).
    ///
    /// # Panics
    /// If the process is out of file descriptors (an eventfd is needed); use
    /// [`IoContext::try_new`] to get an error instead.
    pub fn new(depth: usize) -> Self {
        match Self::try_new(depth) {
            Ok(ctx) => ctx,
            Err(e) => panic!("cannot create an I/O context: {e}"),
        }
    }

    /// A context with room for `depth` requests in flight (at least 1).
    pub fn try_new(depth: usize) -> Result<Self, std::io::Error> {
        let depth = depth.clamp(1, u32::MAX as usize);
        let shared = Arc::new(ContextShared::new(depth)?);
        let slots = (0..depth as u32)
            .map(|index| Arc::new(RequestSlot::new(index, shared.clone())))
            .collect();
        Ok(IoContext {
            slots,
            free: (0..depth as u32).rev().collect(),
            shared,
            ready: Vec::with_capacity(depth),
            touched: Vec::new(),
            watching: Vec::new(),
            pollfds: Vec::new(),
            expected: None,
            timer: None,
        })
    }

    /// Requests in flight at most.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Requests submitted and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Starts a validated request whose device commands `plan` issues through a [`FanOut`].
    /// `len` is what the completion reports on success; `hold` is let go when it completes.
    /// For the filesystem layer, which plans file ranges itself; volumes use `submit`.
    pub fn submit_with(
        &mut self,
        mapping: &Mapping,
        op: Op,
        tag: u64,
        len: u64,
        hold: Option<FileHold>,
        plan: impl FnOnce(&mut FanOut<'_>),
    ) -> Result<(), Error> {
        let Some(index) = self.free.pop() else {
            return Err(Error::ContextFull {
                depth: self.slots.len(),
            });
        };
        let slot = &self.slots[index as usize];
        let guard = match mapping.acquire() {
            Ok(guard) => guard,
            Err(e) => {
                self.free.push(index);
                return Err(e.into());
            }
        };
        slot.begin(tag, len);
        *slot.hold.lock() = hold;
        let mut fan_out = FanOut {
            op,
            guard: &guard,
            slot,
            touched: &mut self.touched,
            due: None,
        };
        plan(&mut fan_out);
        if let Some(due) = fan_out.due {
            self.expected = Some(self.expected.map_or(due, |e| e.min(due)));
        }
        // The submitter's reference keeps the request open until here, so the guard is in
        // place before the last device command can finish and release it.
        *slot.guard.lock() = Some(guard);
        slot.release();
        Ok(())
    }

    /// Collects finished requests without blocking; returns how many were added to `out`.
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.collect(0, out);
        if n > 0 || self.in_flight() == 0 {
            return n;
        }
        // The device rings run their completion work in this thread only when it enters the
        // kernel (cooperative task running: no interrupt per completion). A thread that only
        // polls may never do so; enter once, then look again.
        if let Some(d) = self.touched.first() {
            d.enter_kernel();
        }
        self.collect(0, out)
    }

    /// Blocks until at least `min` requests (at most those in flight) have finished, and
    /// collects every finished one.
    pub fn wait(&mut self, min: usize, out: &mut Vec<Completion>) -> usize {
        self.collect(min.min(self.in_flight()), out)
    }

    /// Blocks until one request finishes and returns it; `None` if nothing is in flight.
    pub fn wait_one(&mut self) -> Option<Completion> {
        if self.ready.is_empty() {
            if self.in_flight() == 0 {
                return None;
            }
            self.fetch(1, None);
        }
        let index = self.ready.pop()?;
        self.free.push(index);
        Some(self.slots[index as usize].take_completion())
    }

    /// Blocks until a request finishes or `fd` becomes readable (or a short tick passes),
    /// and collects every finished request. For a thread that serves another source of work
    /// too (a socket, a doorbell) without a second thread.
    pub fn wait_or_readable(&mut self, fd: BorrowedFd<'_>, out: &mut Vec<Completion>) -> usize {
        self.fetch(0, None);
        let mut n = self.drain_ready(out);
        if n == 0 && self.in_flight() > 0 {
            self.fetch(1, Some(fd.as_raw_fd()));
            n = self.drain_ready(out);
        }
        n
    }

    fn collect(&mut self, min: usize, out: &mut Vec<Completion>) -> usize {
        let mut n = 0;
        loop {
            self.fetch(0, None);
            n += self.drain_ready(out);
            if n >= min {
                return n;
            }
            self.fetch(1, None);
        }
    }

    fn drain_ready(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut n = 0;
        while let Some(index) = self.ready.pop() {
            self.free.push(index);
            out.push(self.slots[index as usize].take_completion());
            n += 1;
        }
        n
    }

    /// Moves finished slot indices into `ready`, waiting until there are at least `min` (or
    /// until `extra` is readable). While waiting, this thread drains the rings of the devices
    /// it used itself: io_uring posts a command's completion from its submitter's task work,
    /// so the submitter is where the completion is cheapest to handle.
    fn fetch(&mut self, min: usize, extra: Option<RawFd>) {
        self.fetch_watching(min, extra);
        self.unwatch();
    }

    fn fetch_watching(&mut self, min: usize, extra: Option<RawFd>) {
        loop {
            self.take_done();
            if min > 0 && self.ready.len() >= min {
                return;
            }
            let drained: usize = self.touched.iter().map(|d| d.drain()).sum();
            if drained > 0 {
                if min == 0 {
                    self.take_done();
                    return;
                }
                continue;
            }
            for d in &self.touched {
                d.kick_deferred();
            }
            if min == 0 {
                return;
            }
            if self.block(extra) {
                self.take_done();
                return;
            }
        }
    }

    /// Hands over the watches this context holds (its wait is over), and passes on any
    /// watch handed to it that it did not take.
    fn unwatch(&mut self) {
        for (d, watching) in self.touched.iter().zip(self.watching.drain(..)) {
            if watching {
                d.watch.hand_over();
            } else {
                d.watch.pass_on();
            }
        }
    }

    fn take_done(&mut self) {
        let mut done = self.shared.done.lock();
        self.ready.extend(done.drain(..));
        drop(done);
        if self.ready.len() == self.slots.len() - self.free.len() {
            // Nothing left in flight: let go of the devices, so that closing a volume or a
            // filesystem really closes them (a context may live as long as its thread).
            self.release_devices();
        }
    }

    /// Stops draining the devices used so far (their reapers take over).
    fn release_devices(&mut self) {
        self.unwatch();
        for d in self.touched.drain(..) {
            d.active.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sleeps until a touched ring holds a completion, another thread finishes one of our
    /// requests, a held completion falls due, or `extra` is readable; returns whether
    /// `extra` was.
    fn block(&mut self, extra: Option<RawFd>) -> bool {
        self.shared.waiting.store(true, Ordering::SeqCst);
        if !self.shared.done.lock().is_empty() {
            self.shared.waiting.store(false, Ordering::SeqCst);
            return false;
        }
        self.pollfds.clear();
        self.pollfds.push(notify::readable(self.shared.wake.raw()));
        // Watches taken in an earlier sleep of this wait are kept until the wait ends.
        self.watching.resize(self.touched.len(), false);
        let mut due: Option<Instant> = None;
        for (d, watching) in self.touched.iter().zip(self.watching.iter_mut()) {
            // One waiter per device polls its ring (readable while the completion queue is
            // not empty, so nothing needs resetting); the others sleep on their doorbells.
            if !*watching {
                *watching = d.watch.enter(&self.shared);
            }
            if *watching {
                self.pollfds.push(notify::readable(d.ring_fd()));
            }
            due = earliest(due, d.next_due());
        }
        // A request expected soon (or up to SPIN ago: the backing's own completion may come
        // a little late) whose completion has not come yet: look again at once.
        self.expected = self.expected.filter(|&e| Instant::now() < e + SPIN);
        let due = earliest(due, self.expected);
        let extra_at = extra.map(|fd| {
            self.pollfds.push(notify::readable(fd));
            self.pollfds.len() - 1
        });
        self.sleep(due);
        for (d, &watching) in self.touched.iter().zip(&self.watching) {
            if !watching {
                d.watch.leave(&self.shared);
            }
        }
        self.shared.waiting.store(false, Ordering::SeqCst);
        if self.pollfds[0].revents != 0 {
            self.shared.wake.clear();
        }
        extra_at.is_some_and(|i| self.pollfds[i].revents != 0)
    }

    /// Sleeps until one of `pollfds` is readable or a tick passes; with an emulated
    /// completion `due`, until then at the latest, to within a few µs: a timerfd wakes the
    /// thread [`SPIN`] before it, and the last stretch is spun (never longer than [`SPIN`],
    /// and only while a completion is that close).
    fn sleep(&mut self, due: Option<Instant>) {
        let left = due.map(|due| due.saturating_duration_since(Instant::now()));
        match (due, left) {
            (Some(due), Some(left)) if left <= SPIN => {
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
            }
            (_, Some(left)) if left < WAIT_TICK && self.timer().is_some() => {
                let Some(timer) = &self.timer else { return };
                timer.arm(left - SPIN);
                self.pollfds.push(notify::readable(timer.raw()));
                notify::wait_any(&mut self.pollfds, Some(WAIT_TICK));
                // Re-arming next time forgets an expiry, so nothing needs reading.
                self.pollfds.pop();
            }
            (_, left) => {
                let timeout = left.map_or(WAIT_TICK, |l| l.min(WAIT_TICK));
                notify::wait_any(&mut self.pollfds, Some(timeout));
            }
        }
    }

    /// This context's timer, made at first use (`None` if no timerfd can be had).
    fn timer(&mut self) -> Option<&notify::Timer> {
        if self.timer.is_none() {
            self.timer = notify::Timer::new().ok();
        }
        self.timer.as_ref()
    }
}

/// The earlier of two instants, either of which may be missing.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How close to an emulated completion's due time a waiter stops sleeping and spins: about
/// a thread's wake-up latency, which would otherwise be added to every emulated latency.
const SPIN: Duration = Duration::from_micros(30);

/// Longest a waiter sleeps before looking again (a safety net: wake-ups are by eventfd).
const WAIT_TICK: Duration = Duration::from_millis(20);

impl Drop for IoContext {
    /// Waits for requests still in flight: their buffers are pinned until they finish.
    fn drop(&mut self) {
        while self.in_flight() > 0 {
            if self.wait_one().is_none() {
                break;
            }
        }
        self.release_devices();
    }
}

thread_local! {
    static BLOCKING: RefCell<Option<IoContext>> = const { RefCell::new(None) };
}

/// Runs one validated request, whose device commands `plan` issues, to completion on this
/// thread's private context (a fresh one if that context is busy further up the stack).
/// For the filesystem layer, and for the blocking calls of volumes.
pub fn run_plan(
    mapping: &Mapping,
    op: Op,
    len: u64,
    plan: impl FnOnce(&mut FanOut<'_>),
) -> Result<u64, Error> {
    BLOCKING.with(|cell| match cell.try_borrow_mut() {
        Ok(mut cell) => {
            if cell.is_none() {
                *cell = Some(IoContext::try_new(1).map_err(no_context)?);
            }
            match cell.as_mut() {
                Some(ctx) => run_on(ctx, mapping, op, len, plan),
                None => Err(no_context(std::io::Error::from_raw_os_error(libc::EMFILE))),
            }
        }
        Err(_) => run_on(
            &mut IoContext::try_new(1).map_err(no_context)?,
            mapping,
            op,
            len,
            plan,
        ),
    })
}

fn run_on(
    ctx: &mut IoContext,
    mapping: &Mapping,
    op: Op,
    len: u64,
    plan: impl FnOnce(&mut FanOut<'_>),
) -> Result<u64, Error> {
    ctx.submit_with(mapping, op, 0, len, None, plan)?;
    match ctx.wait_one() {
        Some(c) => c.result,
        None => Err(Error::ContextFull { depth: 1 }),
    }
}

fn no_context(source: std::io::Error) -> Error {
    Error::Ring {
        device: String::from("(I/O context)"),
        what: "eventfd for the I/O context",
        source,
    }
}
