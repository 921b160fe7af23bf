//! Ctrl-C: the first SIGINT or SIGTERM asks the run to stop at the end of the current
//! measurement (so loop devices are detached and scratch files removed); a second one kills.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: signal(2) is async-signal-safe; restoring the default makes a second signal
    // end the process.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Installs the handlers.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic and calls signal(2), both
        // async-signal-safe.
        unsafe { libc::signal(signal, handler) };
    }
}

/// Whether the user asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
