//! Eventfds and waiting on several of them: how completions wake whoever waits for them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking eventfd.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd creates a new descriptor; no memory is involved.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: eventfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the eventfd readable (wakes a poller).
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local u64 to our eventfd. A full counter (EAGAIN)
        // still leaves it readable, which is all a signal needs.
        unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the eventfd (consumes pending signals).
    pub(crate) fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a local u64; the fd is non-blocking.
        unsafe { libc::read(self.raw(), (&mut value as *mut u64).cast(), 8) };
    }
}

/// Blocks until one of `fds` is readable, `timeout` passes, or a signal or task work
/// interrupts (all of which the caller treats alike: look again).
pub(crate) fn wait_any(fds: &mut [libc::pollfd], timeout: Option<Duration>) {
    let ms = timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    });
    // SAFETY: `fds` is a valid, writable array of pollfd of the given length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

/// A pollfd asking for readability of `fd`.
pub(crate) fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
