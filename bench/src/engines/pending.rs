//! Engines whose subject does not exist yet. They are listed in every table so the place
//! for their figures is visible; each fills in when its part of stripefs lands.

use super::Outcome;

/// Reason printed for the FUSE baseline until the mount exists.
pub const FUSE_MISSING: &str = "not available yet: the FUSE mount is not built";
/// Reason printed for cross-process registered reads until the control endpoint exists.
pub const XPROC_MISSING: &str = "not available yet: the control endpoint is not built";

/// Buffered reads through the FUSE mount with a cold cache (`pread` on the mounted file
/// after dropping the page cache).
pub fn fuse() -> Outcome {
    Outcome::Unavailable {
        reason: FUSE_MISSING.into(),
    }
}

/// Registered reads issued by another process through the control endpoint.
pub fn cross_process() -> Outcome {
    Outcome::Unavailable {
        reason: XPROC_MISSING.into(),
    }
}
