//! The emulated NVMe model: command limits, a bandwidth and latency model, and faults.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Timing model of an emulated namespace: one transfer channel of `bandwidth` bytes per
/// second, plus a fixed `latency` per command. A command completes no earlier than
/// `max(submit, channel free) + len / bandwidth + latency`.
#[derive(Clone, Debug, Default)]
pub struct TimingModel {
    pub bandwidth: Option<u64>,
    pub latency: Duration,
}

impl TimingModel {
    /// Whether the model delays anything at all.
    pub fn is_active(&self) -> bool {
        self.bandwidth.is_some() || !self.latency.is_zero()
    }

    /// Books a command of `len` bytes on the channel whose next free instant is `*channel`,
    /// and returns the earliest instant its completion may be delivered.
    pub fn schedule(&self, channel: &mut Option<Instant>, now: Instant, len: u64) -> Instant {
        let start = match *channel {
            Some(free) if free > now => free,
            _ => now,
        };
        let service = match self.bandwidth {
            Some(bw) if bw > 0 => Duration::from_nanos(
                ((len as u128 * 1_000_000_000) / bw as u128).min(u64::MAX as u128) as u64,
            ),
            _ => Duration::ZERO,
        };
        let finish = start + service;
        *channel = Some(finish);
        finish + self.latency
    }
}

/// Faults a device can be told to produce: a failed LBA range, failure after N commands,
/// being offline, hanging after N commands (commands that never complete on their own), or
/// short transfers. The emulated NVMe device takes them from its spec; tests set them at run
/// time on any device to exercise error paths.
#[derive(Debug)]
pub struct Faults {
    offline: AtomicBool,
    /// Commands still allowed before every command fails; negative means "no limit".
    fail_after: AtomicI64,
    /// Commands still answered before the device hangs; negative means "never".
    hang_after: AtomicI64,
    /// Most bytes one command transfers before the device answers (a short transfer); 0
    /// means "all of it".
    short: AtomicU64,
    ranges: Mutex<Vec<Range<u64>>>,
    has_ranges: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            offline: AtomicBool::new(false),
            fail_after: AtomicI64::new(-1),
            hang_after: AtomicI64::new(-1),
            short: AtomicU64::new(0),
            ranges: Mutex::new(Vec::new()),
            has_ranges: AtomicBool::new(false),
        }
    }
}

impl Faults {
    /// Takes the device offline (every command fails with "device offline") or back online.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::Release);
    }

    /// Whether the device is offline.
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// Every command touching `range` (device byte offsets) fails with EIO.
    pub fn fail_range(&self, range: Range<u64>) {
        self.ranges.lock().push(range);
        self.has_ranges.store(true, Ordering::Release);
    }

    /// After `commands` more commands, every command fails with EIO.
    pub fn fail_after(&self, commands: u64) {
        self.fail_after
            .store(commands.min(i64::MAX as u64) as i64, Ordering::Release);
    }

    /// After `commands` more commands the device hangs: every later command is accepted and
    /// never completes on its own (its request fails when the device's timeout passes, and
    /// the command is cancelled). Commands already hung stay hung after [`Faults::clear`].
    pub fn hang_after(&self, commands: u64) {
        self.hang_after
            .store(commands.min(i64::MAX as u64) as i64, Ordering::Release);
    }

    /// Every command transfers at most `bytes` (a multiple of the block size) and then
    /// answers with a short count, as a device may; the engine resubmits the rest. `None`
    /// removes the fault.
    pub fn short_transfers(&self, bytes: Option<u64>) {
        // 0 stands for "no fault", so a cap of 0 bytes is taken as 1.
        self.short
            .store(bytes.map_or(0, |b| b.max(1)), Ordering::Release);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.ranges.lock().clear();
        self.has_ranges.store(false, Ordering::Release);
        self.fail_after.store(-1, Ordering::Release);
        self.hang_after.store(-1, Ordering::Release);
        self.short.store(0, Ordering::Release);
        self.set_offline(false);
    }

    /// Decides whether the next command hangs (counts it against `hang_after`).
    pub(crate) fn hangs(&self) -> bool {
        if self.hang_after.load(Ordering::Relaxed) < 0
            || self.hang_after.fetch_sub(1, Ordering::AcqRel) > 0
        {
            return false;
        }
        self.hang_after.store(0, Ordering::Release);
        true
    }

    /// How much of `remaining` bytes the device transfers before it answers.
    pub(crate) fn transfer(&self, remaining: u64) -> u64 {
        match self.short.load(Ordering::Relaxed) {
            0 => remaining,
            cap => remaining.min(cap),
        }
    }

    /// Decides whether a command on `offset..offset+len` fails; returns the errno if so.
    pub(crate) fn check(&self, offset: u64, len: u64) -> Option<i32> {
        if self.fail_after.load(Ordering::Relaxed) >= 0
            && self.fail_after.fetch_sub(1, Ordering::AcqRel) <= 0
        {
            self.fail_after.store(0, Ordering::Release);
            return Some(libc::EIO);
        }
        if self.has_ranges.load(Ordering::Acquire) {
            let end = offset.saturating_add(len);
            let ranges = self.ranges.lock();
            if ranges.iter().any(|r| r.start < end && offset < r.end) {
                return Some(libc::EIO);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_serialises_commands() {
        let model = TimingModel {
            bandwidth: Some(1_000_000),
            latency: Duration::from_micros(10),
        };
        let now = Instant::now();
        let mut channel = None;
        let a = model.schedule(&mut channel, now, 1000);
        let b = model.schedule(&mut channel, now, 1000);
        assert_eq!(a - now, Duration::from_micros(1010));
        assert_eq!(b - now, Duration::from_micros(2010));
    }

    #[test]
    fn fault_range_and_count() {
        let faults = Faults::default();
        assert_eq!(faults.check(0, 4096), None);
        faults.fail_range(8192..12288);
        assert_eq!(faults.check(4096, 4096), None);
        assert_eq!(faults.check(4096, 4097), Some(libc::EIO));
        assert_eq!(faults.check(12288, 4096), None);
        faults.clear();
        faults.fail_after(2);
        assert_eq!(faults.check(0, 1), None);
        assert_eq!(faults.check(0, 1), None);
        assert_eq!(faults.check(0, 1), Some(libc::EIO));
        assert_eq!(faults.check(0, 1), Some(libc::EIO));
    }

    #[test]
    fn hang_after_count_and_short_transfers() {
        let faults = Faults::default();
        assert!(!faults.hangs());
        assert_eq!(faults.transfer(1 << 20), 1 << 20);
        faults.hang_after(1);
        assert!(!faults.hangs());
        assert!(faults.hangs());
        assert!(faults.hangs());
        faults.short_transfers(Some(4096));
        assert_eq!(faults.transfer(12288), 4096);
        assert_eq!(faults.transfer(512), 512);
        faults.clear();
        assert!(!faults.hangs());
        assert_eq!(faults.transfer(12288), 12288);
    }
}
