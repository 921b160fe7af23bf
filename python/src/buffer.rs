//! `stripefs.Buffer`: memory registered once against the mount, exported through the buffer
//! protocol (numpy, memoryview, `torch.frombuffer` see it without a copy) and sliced into
//! views that requests can target. Closing it while views are alive raises `BufferError`.
//!
//! The only unsafe code of the binding: filling a `Py_buffer`.

use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::exceptions::{PyBufferError, PyIndexError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PySlice;
use stripefs_client::{ClientBuffer, Handle};

use crate::errors;
use crate::shared::Shared;

/// A registered buffer, shared by its slices.
pub(crate) struct BufferCore {
    pub(crate) shared: Arc<Shared>,
    buffer: ClientBuffer,
    pub(crate) handle: Handle,
    /// Address of the pages in this process (they never move: the binding never migrates).
    base: usize,
    /// Buffer-protocol exports alive (memoryviews, numpy arrays, ...), of any slice.
    exports: AtomicUsize,
    /// Requests in flight into or out of it.
    pub(crate) pending: AtomicUsize,
    closed: AtomicBool,
}

impl BufferCore {
    pub(crate) fn new(shared: Arc<Shared>, buffer: ClientBuffer, handle: Handle) -> Arc<Self> {
        let base = buffer.as_ptr() as usize;
        Arc::new(BufferCore {
            shared,
            buffer,
            handle,
            base,
            exports: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }
}

impl Drop for BufferCore {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            let _ = self.shared.client.unregister(self.handle);
        }
    }
}

/// A registered buffer, or a slice of one (`buf[a:b]`): what requests read into and write
/// from. Supports the buffer protocol (writable, format "B"), `len()`, slicing with step 1,
/// and `close()` (BufferError while views of it or requests on it are alive).
#[pyclass(module = "stripefs", frozen)]
pub(crate) struct Buffer {
    pub(crate) core: Arc<BufferCore>,
    /// Where this view starts in the registered buffer.
    pub(crate) offset: u64,
    /// Bytes of this view.
    pub(crate) len: u64,
}

impl Buffer {
    pub(crate) fn new(core: Arc<BufferCore>) -> Buffer {
        let len = core.buffer.len();
        Buffer {
            core,
            offset: 0,
            len,
        }
    }

    /// ValueError once closed.
    pub(crate) fn check_open(&self) -> PyResult<()> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(PyValueError::new_err("the buffer is closed"));
        }
        Ok(())
    }

    fn view(&self, start: u64, len: u64) -> Buffer {
        Buffer {
            core: self.core.clone(),
            offset: self.offset + start,
            len,
        }
    }
}

#[pymethods]
impl Buffer {
    fn __len__(&self) -> usize {
        self.len as usize
    }

    /// Bytes of this view.
    #[getter]
    fn nbytes(&self) -> u64 {
        self.len
    }

    /// Where this view starts in the registered buffer.
    #[getter]
    fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether views of it (memoryviews, arrays) or requests on it are alive: what makes
    /// `close()` raise, and what a pool checks before reusing it.
    #[getter]
    fn busy(&self) -> bool {
        self.core.exports.load(Ordering::Acquire) > 0
            || self.core.pending.load(Ordering::Acquire) > 0
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.closed.load(Ordering::Acquire)
    }

    /// `buf[a:b]` is a view of the same registered memory (step 1 only); `buf[i]` a byte.
    fn __getitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = key.py();
        if let Ok(slice) = key.cast::<PySlice>() {
            let len = isize::try_from(self.len).map_err(|_| PyValueError::new_err("too long"))?;
            let i = slice.indices(len)?;
            if i.step != 1 {
                return Err(PyValueError::new_err("buffer slices take step 1 only"));
            }
            let (start, n) = (i.start as u64, i.slicelength as u64);
            return Ok(Py::new(py, self.view(start, n))?.into_any());
        }
        let index: i64 = key
            .extract()
            .map_err(|_| PyTypeError::new_err("buffer indices are integers or slices"))?;
        let at = if index < 0 {
            index + self.len as i64
        } else {
            index
        };
        if at < 0 || at as u64 >= self.len {
            return Err(PyIndexError::new_err("buffer index out of range"));
        }
        self.check_open()?;
        let mut byte = [0u8; 1];
        self.core
            .buffer
            .read_at(self.offset + at as u64, &mut byte)
            .map_err(|e| errors::error(&e, &self.core.shared.mount, &self.core.shared.mount))?;
        Ok(byte[0].into_pyobject(py)?.into_any().unbind())
    }

    /// Unregisters the buffer (every view of it). Raises BufferError while memoryviews or
    /// arrays of it, or requests on it, are alive.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let core = &self.core;
        let exports = core.exports.load(Ordering::Acquire);
        let pending = core.pending.load(Ordering::Acquire);
        if exports > 0 || pending > 0 {
            return Err(PyBufferError::new_err(format!(
                "cannot close a buffer with {exports} exported views and {pending} requests \
                 alive"
            )));
        }
        if core.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let shared = &core.shared;
        py.detach(|| shared.client.unregister(core.handle))
            .map_err(|e| errors::error(&e, &shared.mount, &shared.mount))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: Option<Bound<'_, PyAny>>,
        _value: Option<Bound<'_, PyAny>>,
        _trace: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<stripefs.Buffer {} bytes at {} of {}{}>",
            self.len,
            self.offset,
            self.core.buffer.len(),
            if self.closed() { ", closed" } else { "" }
        )
    }

    /// Exports the view's bytes: one dimension of unsigned bytes, writable.
    ///
    /// # Safety
    /// Called by Python with a `Py_buffer` to fill (or null).
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no Py_buffer to fill"));
        }
        let this = slf.get();
        if this.core.closed.load(Ordering::Acquire) {
            return Err(PyBufferError::new_err("the buffer is closed"));
        }
        let len = isize::try_from(this.len)
            .map_err(|_| PyBufferError::new_err("buffer longer than isize"))?;
        let buf = (this.core.base + this.offset as usize) as *mut c_void;
        this.core.exports.fetch_add(1, Ordering::AcqRel);
        // SAFETY: `view` is non-null and points to a Py_buffer Python gives us to fill. `buf`
        // is inside the registered pages (offset + len <= the buffer's length, checked when
        // the view was made), which stay mapped while `obj` (a new reference to this object,
        // holding the core) lives; the format string is static; shape and strides point into
        // the Py_buffer itself, as the protocol allows.
        unsafe {
            (*view).obj = slf.into_any().into_ptr();
            (*view).buf = buf;
            (*view).len = len;
            (*view).readonly = 0;
            (*view).itemsize = 1;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                c"B".as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
                &raw mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                &raw mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    /// An export ended.
    ///
    /// # Safety
    /// Called by Python once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.core.exports.fetch_sub(1, Ordering::AcqRel);
    }
}
