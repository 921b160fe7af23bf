//! Where the write cache and the write recorder meet the command path: a pre-image when a
//! write is queued, a post-image when its completion is handled (before its request
//! completes), the flush, and the power cut.
//!
//! Neither costs anything on a device that has no cache and does not record: queueing checks
//! one `Option`, a completion one atomic flag, and nothing is allocated.

use std::sync::atomic::Ordering;
use std::time::Duration;

use stripefs_mapping::Importer;

use super::image::Image;
use super::wcache::{Pending, PowerCut, PowerCutReport};
use super::{DeviceShared, InFlight};
use crate::error::{Error, Op};

/// How long a power cut sleeps between looks at the commands still in flight.
const IDLE_POLL: Duration = Duration::from_millis(1);

impl DeviceShared {
    /// Whether a power cut has switched the device off.
    pub(super) fn is_powered_off(&self) -> bool {
        self.wcache.as_ref().is_some_and(|c| c.is_off())
    }

    /// On a device with a write cache, takes the pre-image of a write about to be queued.
    /// If that fails, the command is failed instead (through `injected`), untouched.
    pub(super) fn pre_image(
        &self,
        op: Op,
        offset: u64,
        len: u64,
        injected: &mut Option<i32>,
    ) -> Option<Pending> {
        let cache = self.wcache.as_ref()?;
        if op != Op::Write || injected.is_some() {
            return None;
        }
        match cache.before_write(&self.file, offset, len) {
            Ok(pending) => Some(pending),
            Err(e) => {
                *injected = Some(e.raw_os_error().unwrap_or(libc::EIO));
                None
            }
        }
    }

    /// Hands a completed write to the cache and the recorder, if there are any; returns the
    /// request's outcome (a failed read-back fails it).
    pub(super) fn observe_write(
        &self,
        cmd: &mut InFlight,
        outcome: Result<u64, Error>,
    ) -> Result<u64, Error> {
        if cmd.op != Op::Write || (cmd.cached.is_none() && !self.recorder.is_on()) {
            return outcome;
        }
        self.after_write(cmd, outcome)
    }

    /// Reads back what a write left on the backing, records it if it succeeded, and keeps it
    /// as unflushed if the device has a cache.
    fn after_write(&self, cmd: &mut InFlight, outcome: Result<u64, Error>) -> Result<u64, Error> {
        let post = usize::try_from(cmd.len)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))
            .and_then(|len| Image::read(&self.file, cmd.offset, len));
        let (post, read_back) = match post {
            Ok(image) => (Some(image), None),
            Err(e) => (None, Some(e)),
        };
        if let (Ok(_), Some(image), true) = (&outcome, &post, self.recorder.is_on()) {
            self.recorder.write(cmd.offset, image.bytes());
        }
        if let (Some(cache), Some(pending)) = (&self.wcache, cmd.cached.take()) {
            cache.completed(pending, cmd.offset, post);
        }
        match (outcome, read_back) {
            (Ok(_), Some(e)) => Err(self.io_error(
                Op::Read,
                cmd.offset,
                cmd.len,
                std::io::Error::new(e.kind(), format!("reading back a completed write: {e}")),
            )),
            (outcome, _) => outcome,
        }
    }

    /// Flushes: logs the flush, syncs the backing, and marks what completed before as
    /// durable in the cache.
    pub(super) fn flush(&self) -> Result<(), Error> {
        if self.is_powered_off() {
            return Err(Error::DeviceOffline {
                device: self.name.clone(),
            });
        }
        self.recorder.flush();
        let mark = self.wcache.as_ref().map(|c| c.flush_begins());
        self.file
            .sync_data()
            .map_err(|source| self.io_error(Op::Write, 0, 0, source))?;
        if let (Some(cache), Some(mark)) = (&self.wcache, mark) {
            cache.flushed(mark);
        }
        Ok(())
    }

    /// The power cut: refuses new commands, waits for those in flight, restores the backing
    /// as `policy` says and syncs it.
    pub(super) fn power_cut(&self, policy: PowerCut) -> Result<PowerCutReport, Error> {
        let cache = self.wcache.as_ref().ok_or_else(|| Error::Emulation {
            path: self.path.clone(),
            what: format!(
                "device {} has no volatile write cache, so a power cut loses nothing \
                 (open it as `emu:PATH,...,wcache=on`)",
                self.name
            ),
        })?;
        // Under the submission lock, so no command is queued after the switch.
        let was_on = {
            let _state = self.submit.lock();
            cache.switch_off()
        };
        if !was_on {
            return Err(Error::DeviceOffline {
                device: self.name.clone(),
            });
        }
        self.wait_idle();
        let block = self.block_size as usize;
        let report = cache
            .cut(&self.file, block, policy)
            .map_err(|source| self.io_error(Op::Write, 0, 0, source))?;
        self.file
            .sync_data()
            .map_err(|source| self.io_error(Op::Write, 0, 0, source))?;
        Ok(report)
    }

    /// Waits until no command is in flight (each one's completion handled, its slot free).
    /// Timed-out commands are waited for too: one may still change the backing, which the
    /// cut must know of. Only emulated devices have a cache, and theirs always complete (a
    /// hung one once cancelled, a held one when due), so this wait is bounded.
    fn wait_idle(&self) {
        self.begin_urgent();
        let mut state = self.submit.lock();
        while state.free.len() < self.depth as usize {
            // Deferred entries must reach the kernel to complete at all.
            self.deferred.store(false, Ordering::Release);
            self.kick();
            // The reaper drains (urgent); sleeping also lets this thread's own completion
            // work run.
            self.space.wait_for(&mut state, IDLE_POLL);
        }
        drop(state);
        self.end_urgent();
    }
}
