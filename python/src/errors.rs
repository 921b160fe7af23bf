//! Client errors as Python exceptions: [`StripefsError`] (an `OSError`) carries the errno, a
//! message, the path involved (`filename`), the mount (`mount`) and the device (`device`,
//! `None` when no single device is to blame: the daemon reports an errno per request).

use std::path::Path;

use pyo3::create_exception;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use stripefs_client::ClientError;

create_exception!(
    stripefs,
    StripefsError,
    PyOSError,
    "An error of stripefs: `errno`, `strerror`, `filename` (the file or path involved), \
     `mount` (the mount it is on) and `device` (when one device is to blame, else None)."
);

/// A [`StripefsError`] with `errno` and `message`, about `path` on `mount`.
pub(crate) fn os_error(errno: i32, message: String, path: &Path, mount: &Path) -> PyErr {
    let err = StripefsError::new_err((errno, message, path.display().to_string()));
    Python::attach(|py| {
        let value = err.value(py);
        let _ = value.setattr("mount", mount.display().to_string());
        let _ = value.setattr("device", py.None());
    });
    err
}

/// `error` as a [`StripefsError`] about `path` on `mount`.
pub(crate) fn error(error: &ClientError, path: &Path, mount: &Path) -> PyErr {
    os_error(error.errno(), error.to_string(), path, mount)
}
