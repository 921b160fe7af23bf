//! Giving the heap's free memory back to the system.
//!
//! A checkpoint builds the records of every piece changed since the last one (tens of MiB on a
//! filesystem of a million files), compresses and writes them, then frees them. glibc keeps
//! freed memory in its per-thread arenas for the next allocation, so the daemon's resident
//! size stayed at its highest point: filling four 1 GiB devices with 4 KiB files, 625 MiB
//! while serving, 195 MiB once mounted again with the same files.

/// Returns the free memory of every malloc arena to the system (glibc); nothing elsewhere.
pub(super) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only releases pages malloc holds free, under
    // each arena's own lock, so it is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
