//! Recording what devices write: every completed write (with its data) and every flush of
//! one or more devices, in one global order, for a crash-consistency harness that replays
//! prefixes of the stream to build the device images a crash could leave.
//!
//! A device records once [`DeviceQueue::record_to`](super::DeviceQueue::record_to) is called;
//! until then the completion path checks one atomic flag and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// One entry of a [`WriteLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteEvent {
    /// A write command that completed successfully: `data` is what it wrote.
    Write {
        device: usize,
        offset: u64,
        data: Arc<[u8]>,
    },
    /// A flush of `device` began: every write recorded before this event on that device is
    /// durable once the flush returns.
    Flush { device: usize },
    /// A marker the test put in the stream (e.g. "fsync of op 7 returned").
    Mark(u64),
}

/// Writes and flushes of several devices in one global order.
///
/// Events are appended as they happen: a write when its completion is handled (before its
/// request completes), a flush when it starts, a mark when [`WriteLog::mark`] is called.
#[derive(Debug, Default)]
pub struct WriteLog {
    events: Mutex<Vec<WriteEvent>>,
}

impl WriteLog {
    /// An empty log, shared by the devices that record into it.
    pub fn new() -> Arc<Self> {
        Arc::new(WriteLog::default())
    }

    /// Appends a marker.
    pub fn mark(&self, tag: u64) {
        self.push(WriteEvent::Mark(tag));
    }

    /// Events recorded so far.
    pub fn len(&self) -> usize {
        self.events.lock().len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.events.lock().is_empty()
    }

    /// A copy of the events, in order.
    pub fn events(&self) -> Vec<WriteEvent> {
        self.events.lock().clone()
    }

    fn push(&self, event: WriteEvent) {
        self.events.lock().push(event);
    }
}

/// A device's link to the log it records into, if any.
#[derive(Default)]
pub(super) struct Recorder {
    /// Set once a log is attached: the only thing the completion path looks at otherwise.
    on: AtomicBool,
    target: Mutex<Option<(Arc<WriteLog>, usize)>>,
}

impl Recorder {
    /// Whether writes and flushes are being recorded.
    pub(super) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Records into `log` as device `index` from now on (replacing an earlier log).
    pub(super) fn attach(&self, log: Arc<WriteLog>, index: usize) {
        *self.target.lock() = Some((log, index));
        self.on.store(true, Ordering::Release);
    }

    /// Records a completed write of `data` at `offset`.
    pub(super) fn write(&self, offset: u64, data: &[u8]) {
        if let Some((log, device)) = &*self.target.lock() {
            log.push(WriteEvent::Write {
                device: *device,
                offset,
                data: Arc::from(data),
            });
        }
    }

    /// Records the start of a flush.
    pub(super) fn flush(&self) {
        if !self.is_on() {
            return;
        }
        if let Some((log, device)) = &*self.target.lock() {
            log.push(WriteEvent::Flush { device: *device });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_share_one_order() {
        let log = WriteLog::new();
        let (a, b) = (Recorder::default(), Recorder::default());
        assert!(!a.is_on());
        a.flush(); // not recording yet: nothing
        a.attach(log.clone(), 0);
        b.attach(log.clone(), 1);
        a.write(4096, &[1, 2]);
        log.mark(7);
        b.flush();
        b.write(0, &[3]);
        assert_eq!(log.len(), 4);
        assert_eq!(
            log.events(),
            vec![
                WriteEvent::Write {
                    device: 0,
                    offset: 4096,
                    data: Arc::from(&[1u8, 2][..]),
                },
                WriteEvent::Mark(7),
                WriteEvent::Flush { device: 1 },
                WriteEvent::Write {
                    device: 1,
                    offset: 0,
                    data: Arc::from(&[3u8][..]),
                },
            ]
        );
    }
}
