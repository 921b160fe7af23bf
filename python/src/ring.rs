//! `stripefs.Ring`: many requests prepared, submitted together, and reaped as they complete,
//! each with the caller's `userdata` (io_uring's and 3FS's usrbio shape). Rings of one client
//! share its connection but never take each other's completions (each holds tickets).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use stripefs_client::{FileRequest, Op, Ticket};

use crate::buffer::{Buffer, BufferCore};
use crate::errors;
use crate::file::File;
use crate::shared::Shared;

/// What a request of the ring carries besides itself.
struct Owner {
    userdata: Py<PyAny>,
    core: Arc<BufferCore>,
    path: PathBuf,
}

#[derive(Default)]
struct State {
    prepared: Vec<(FileRequest, Owner)>,
    in_flight: HashMap<Ticket, Owner>,
}

/// `prepare(file, buf, file_offset=0, size=None, userdata=None, write=False)` queues one
/// request here; `submit()` sends every prepared one (and returns the ring); `wait(
/// min_results=1)` returns a list of `(userdata, result)` pairs, `result` being the bytes
/// moved or a StripefsError.
#[pyclass(module = "stripefs", frozen)]
pub(crate) struct Ring {
    shared: Arc<Shared>,
    entries: usize,
    state: Mutex<State>,
}

impl Ring {
    pub(crate) fn new(shared: Arc<Shared>, entries: usize) -> PyResult<Ring> {
        if entries == 0 {
            return Err(PyValueError::new_err("a ring needs at least one entry"));
        }
        Ok(Ring {
            shared,
            entries,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| PyRuntimeError::new_err("ring lock poisoned"))
    }
}

#[pymethods]
impl Ring {
    /// Queues one request (not sent until `submit()`). Raises RuntimeError when the ring
    /// holds `entries` requests prepared or in flight.
    #[pyo3(signature = (file, buf, file_offset = 0, size = None, userdata = None, write = false))]
    fn prepare(
        &self,
        file: PyRef<'_, File>,
        buf: PyRef<'_, Buffer>,
        file_offset: u64,
        size: Option<u64>,
        userdata: Option<Py<PyAny>>,
        write: bool,
    ) -> PyResult<()> {
        if !Arc::ptr_eq(&file.shared, &self.shared) || !Arc::ptr_eq(&buf.core.shared, &self.shared)
        {
            return Err(PyValueError::new_err(
                "the file and the buffer must come from this ring's client",
            ));
        }
        buf.check_open()?;
        let len = size.unwrap_or(buf.len);
        if len > buf.len {
            return Err(PyValueError::new_err(format!(
                "size {len} is larger than the buffer view ({} bytes)",
                buf.len
            )));
        }
        let mut st = self.lock()?;
        if st.prepared.len() + st.in_flight.len() >= self.entries {
            return Err(PyRuntimeError::new_err(format!(
                "the ring is full ({} requests prepared or in flight): wait first",
                self.entries
            )));
        }
        let request = FileRequest {
            file: file.handle,
            buffer: buf.core.handle,
            op: if write { Op::Write } else { Op::Read },
            file_offset,
            buffer_offset: buf.offset,
            len,
            tag: 0,
        };
        let owner = Owner {
            userdata: userdata.unwrap_or_else(|| file.py().None()),
            core: buf.core.clone(),
            path: file.path().to_path_buf(),
        };
        st.prepared.push((request, owner));
        Ok(())
    }

    /// Sends every prepared request; returns the ring (for `ring.submit().wait()`).
    fn submit(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        let this = slf.get();
        // The lock is never held while waiting without the GIL (see Future::wait).
        let prepared = std::mem::take(&mut this.lock()?.prepared);
        let requests: Vec<FileRequest> = prepared.iter().map(|(r, _)| *r).collect();
        for (_, owner) in &prepared {
            owner.core.pending.fetch_add(1, Ordering::AcqRel);
        }
        let shared = &this.shared;
        match py.detach(|| shared.client.start_files(&requests)) {
            Ok(tickets) => {
                let mut st = this.lock()?;
                for (t, (_, owner)) in tickets.into_iter().zip(prepared) {
                    st.in_flight.insert(t, owner);
                }
            }
            Err(e) => {
                for (_, owner) in &prepared {
                    owner.core.pending.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(errors::error(&e, &shared.mount, &shared.mount));
            }
        }
        Ok(slf)
    }

    /// Waits (GIL released) until `min_results` requests have completed (all in flight if
    /// fewer); returns every completed one as `(userdata, bytes or StripefsError)`.
    #[pyo3(signature = (min_results = 1))]
    fn wait(&self, py: Python<'_>, min_results: usize) -> PyResult<Vec<(Py<PyAny>, Py<PyAny>)>> {
        let tickets: Vec<Ticket> = self.lock()?.in_flight.keys().copied().collect();
        let shared = &self.shared;
        let done = py
            .detach(|| shared.client.finish_some(&tickets, min_results))
            .map_err(|e| errors::error(&e, &shared.mount, &shared.mount))?;
        let mut st = self.lock()?;
        let mut out = Vec::with_capacity(done.len());
        for (ticket, outcome) in done {
            let Some(owner) = st.in_flight.remove(&ticket) else {
                continue;
            };
            owner.core.pending.fetch_sub(1, Ordering::AcqRel);
            let result = match outcome {
                Ok(n) => n.into_pyobject(py)?.into_any().unbind(),
                Err(e) => errors::error(&e, &owner.path, &shared.mount)
                    .into_value(py)
                    .into_any(),
            };
            out.push((owner.userdata, result));
        }
        Ok(out)
    }

    /// Requests sent and not yet reaped.
    #[getter]
    fn in_flight(&self) -> PyResult<usize> {
        Ok(self.lock()?.in_flight.len())
    }

    /// Requests prepared and not yet sent.
    #[getter]
    fn prepared(&self) -> PyResult<usize> {
        Ok(self.lock()?.prepared.len())
    }

    #[getter]
    fn entries(&self) -> usize {
        self.entries
    }
}

impl Drop for Ring {
    /// Requests still in flight finish before their buffers count as free of them.
    fn drop(&mut self) {
        if let Ok(st) = self.state.get_mut() {
            for (ticket, owner) in st.in_flight.drain() {
                let _ = self.shared.client.finish(ticket);
                owner.core.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}
