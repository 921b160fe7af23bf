//! `stripefs._native`: the Python binding of the stripefs client (PyO3, abi3 for Python ≥
//! 3.11). Registered memory with the buffer protocol ([`buffer`]), files opened once and read
//! or written with the GIL released ([`file`]), futures, and rings of many requests in flight
//! ([`ring`]), all over one connection whose buffers are registered once against the mount.
//! The format-aware loaders (`load_safetensors`, `read_many`, `as_completed`) are Python,
//! in `stripefs/`, on top of these.

mod buffer;
mod client;
mod errors;
mod file;
mod ring;
mod shared;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<buffer::Buffer>()?;
    m.add_class::<file::File>()?;
    m.add_class::<file::Future>()?;
    m.add_class::<ring::Ring>()?;
    m.add("StripefsError", m.py().get_type::<errors::StripefsError>())?;
    Ok(())
}
