//! `stripefs.File` (a file opened once for requests) and `stripefs.Future` (requests in
//! flight, waited for later). A read or write is split into requests of the client's chunk
//! size, all in flight at once; the GIL is released while they run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use stripefs_client::{ClientError, FileHandle, FileRequest, Op, Ticket};

use crate::buffer::{Buffer, BufferCore};
use crate::errors;
use crate::shared::Shared;

/// A file on the mount, opened once for requests with the client's registered buffers.
#[pyclass(module = "stripefs", frozen)]
pub(crate) struct File {
    pub(crate) shared: Arc<Shared>,
    pub(crate) handle: FileHandle,
    path: PathBuf,
    /// Kept open for the file's size until closed (an open descriptor keeps the mount busy).
    std: Mutex<Option<std::fs::File>>,
    closed: AtomicBool,
}

impl File {
    pub(crate) fn open(
        py: Python<'_>,
        shared: Arc<Shared>,
        path: PathBuf,
        mode: &str,
    ) -> PyResult<File> {
        let (read, write) = match mode {
            "r" | "rb" => (true, false),
            "w" | "wb" => (false, true),
            "r+" | "rb+" | "r+b" => (true, true),
            _ => return Err(PyValueError::new_err(format!("unknown mode {mode:?}"))),
        };
        let opened = py.detach(|| {
            let std = std::fs::OpenOptions::new()
                .read(read)
                .write(write)
                .open(&path)
                .map_err(|e| ClientError::Path {
                    path: path.clone(),
                    source: e,
                })?;
            let handle = shared.client.open(&std)?;
            Ok((std, handle))
        });
        let (std, handle) = opened.map_err(|e| errors::error(&e, &path, &shared.mount))?;
        Ok(File {
            shared,
            handle,
            path,
            std: Mutex::new(Some(std)),
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PyValueError::new_err(format!(
                "{} is closed",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// The file's length now.
    fn len(&self) -> PyResult<u64> {
        let std = self
            .std
            .lock()
            .map_err(|_| PyValueError::new_err("file lock poisoned"))?;
        let std = std
            .as_ref()
            .ok_or_else(|| PyValueError::new_err(format!("{} is closed", self.path.display())))?;
        std.metadata().map(|m| m.len()).map_err(|e| {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            errors::os_error(errno, e.to_string(), &self.path, &self.shared.mount)
        })
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The requests that move `size` bytes (default: the view's length; reads stop at the end
    /// of the file) between `file_offset` and `buf`, cut at multiples of the chunk size.
    pub(crate) fn plan(
        &self,
        buf: &Buffer,
        size: Option<u64>,
        file_offset: u64,
        op: Op,
    ) -> PyResult<Vec<FileRequest>> {
        self.check_open()?;
        buf.check_open()?;
        if !Arc::ptr_eq(&buf.core.shared, &self.shared) {
            return Err(PyValueError::new_err(
                "the buffer and the file must come from the same client",
            ));
        }
        let size = size.unwrap_or(buf.len);
        if size > buf.len {
            return Err(PyValueError::new_err(format!(
                "size {size} is larger than the buffer view ({} bytes)",
                buf.len
            )));
        }
        let size = match op {
            Op::Read => size.min(self.len()?.saturating_sub(file_offset)),
            Op::Write => size,
        };
        let chunk = self.shared.chunk;
        let mut requests = Vec::new();
        let mut at = file_offset;
        let end = file_offset.saturating_add(size);
        while at < end {
            let next = ((at / chunk) + 1).saturating_mul(chunk).min(end);
            requests.push(FileRequest {
                file: self.handle,
                buffer: buf.core.handle,
                op,
                file_offset: at,
                buffer_offset: buf.offset + (at - file_offset),
                len: next - at,
                tag: 0,
            });
            at = next;
        }
        Ok(requests)
    }

    /// Runs a batch to the end without the GIL: bytes moved, or the first error.
    fn run(&self, py: Python<'_>, buf: &Buffer, batch: Vec<FileRequest>) -> PyResult<u64> {
        let future = Future::start(py, self, buf, batch)?;
        future.wait(py)
    }
}

#[pymethods]
impl File {
    /// `read(buf, size=None, file_offset=0)`: reads into `buf` (a Buffer or a slice of
    /// one) up to `size` bytes (default: its length) at `file_offset`; returns the bytes
    /// read (short only at the end of the file). Blocks with the GIL released.
    #[pyo3(signature = (buf, size = None, file_offset = 0))]
    fn read(
        &self,
        py: Python<'_>,
        buf: PyRef<'_, Buffer>,
        size: Option<u64>,
        file_offset: u64,
    ) -> PyResult<u64> {
        let batch = self.plan(&buf, size, file_offset, Op::Read)?;
        self.run(py, &buf, batch)
    }

    /// `write(buf, size=None, file_offset=0)`: writes `size` bytes (default: the length of
    /// `buf`) at `file_offset`; returns the bytes written. Blocks with the GIL released.
    #[pyo3(signature = (buf, size = None, file_offset = 0))]
    fn write(
        &self,
        py: Python<'_>,
        buf: PyRef<'_, Buffer>,
        size: Option<u64>,
        file_offset: u64,
    ) -> PyResult<u64> {
        let batch = self.plan(&buf, size, file_offset, Op::Write)?;
        self.run(py, &buf, batch)
    }

    /// `pread(buf, size=None, file_offset=0)`: like `read`, returning at once a Future
    /// (`.get()` waits and returns the bytes read, `.done()` tells).
    #[pyo3(signature = (buf, size = None, file_offset = 0))]
    fn pread(
        &self,
        py: Python<'_>,
        buf: PyRef<'_, Buffer>,
        size: Option<u64>,
        file_offset: u64,
    ) -> PyResult<Future> {
        let batch = self.plan(&buf, size, file_offset, Op::Read)?;
        Future::start(py, self, &buf, batch)
    }

    /// `pwrite(buf, size=None, file_offset=0)`: like `write`, returning at once a Future.
    #[pyo3(signature = (buf, size = None, file_offset = 0))]
    fn pwrite(
        &self,
        py: Python<'_>,
        buf: PyRef<'_, Buffer>,
        size: Option<u64>,
        file_offset: u64,
    ) -> PyResult<Future> {
        let batch = self.plan(&buf, size, file_offset, Op::Write)?;
        Future::start(py, self, &buf, batch)
    }

    /// The file's size now.
    #[getter]
    fn size(&self) -> PyResult<u64> {
        self.len()
    }

    #[getter(path)]
    fn get_path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the file handle (requests running on it complete).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Ok(mut std) = self.std.lock() {
            std.take();
        }
        let shared = &self.shared;
        py.detach(|| shared.client.close(self.handle))
            .map_err(|e| errors::error(&e, &self.path, &shared.mount))
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
        format!("<stripefs.File {}>", self.path.display())
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            let _ = self.shared.client.close(self.handle);
        }
    }
}

/// What a future has gathered so far.
struct Progress {
    open: Vec<Ticket>,
    bytes: u64,
    /// The first failure: errno and message.
    failed: Option<(i32, String)>,
}

/// Requests in flight: `get()` waits for them (GIL released) and returns the bytes moved,
/// or raises the first error; `done()` tells without waiting.
#[pyclass(module = "stripefs", frozen)]
pub(crate) struct Future {
    shared: Arc<Shared>,
    core: Arc<BufferCore>,
    path: PathBuf,
    progress: Mutex<Progress>,
}

impl Future {
    pub(crate) fn start(
        py: Python<'_>,
        file: &File,
        buf: &Buffer,
        batch: Vec<FileRequest>,
    ) -> PyResult<Future> {
        let shared = file.shared.clone();
        buf.core.pending.fetch_add(1, Ordering::AcqRel);
        let started = py.detach(|| shared.client.start_files(&batch));
        let open = match started {
            Ok(t) if t.is_empty() => {
                buf.core.pending.fetch_sub(1, Ordering::AcqRel);
                t
            }
            Ok(t) => t,
            Err(e) => {
                buf.core.pending.fetch_sub(1, Ordering::AcqRel);
                return Err(errors::error(&e, file.path(), &shared.mount));
            }
        };
        Ok(Future {
            shared,
            core: buf.core.clone(),
            path: file.path().to_path_buf(),
            progress: Mutex::new(Progress {
                open,
                bytes: 0,
                failed: None,
            }),
        })
    }

    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Progress>> {
        self.progress
            .lock()
            .map_err(|_| PyValueError::new_err("future lock poisoned"))
    }

    /// Takes the outcome of one finished request.
    fn absorb(p: &mut Progress, outcome: Result<u64, ClientError>) {
        match outcome {
            Ok(n) => p.bytes += n,
            Err(e) if p.failed.is_none() => p.failed = Some((e.errno(), e.to_string())),
            Err(_) => {}
        }
    }

    /// Marks the buffer free of this future's requests once all have finished.
    fn settle(&self, p: &Progress, was_open: bool) {
        if was_open && p.open.is_empty() {
            self.core.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn outcome(&self, p: &Progress) -> PyResult<u64> {
        match &p.failed {
            Some((errno, what)) => Err(errors::os_error(
                *errno,
                what.clone(),
                &self.path,
                &self.shared.mount,
            )),
            None => Ok(p.bytes),
        }
    }

    pub(crate) fn wait(&self, py: Python<'_>) -> PyResult<u64> {
        // The lock is not held while waiting without the GIL (a thread holding the GIL
        // could then wait for the lock, and this one for the GIL).
        let open = std::mem::take(&mut self.lock()?.open);
        let was_open = !open.is_empty();
        let shared = &self.shared;
        let outcomes: Vec<_> =
            py.detach(|| open.into_iter().map(|t| shared.client.finish(t)).collect());
        let mut p = self.lock()?;
        for outcome in outcomes {
            Self::absorb(&mut p, outcome);
        }
        self.settle(&p, was_open);
        self.outcome(&p)
    }
}

#[pymethods]
impl Future {
    /// Waits for every request (GIL released); returns the bytes moved or raises.
    fn get(&self, py: Python<'_>) -> PyResult<u64> {
        self.wait(py)
    }

    /// Whether every request has completed (never waits).
    fn done(&self) -> PyResult<bool> {
        let mut p = self.lock()?;
        let was_open = !p.open.is_empty();
        let open = std::mem::take(&mut p.open);
        for t in open {
            match self.shared.client.try_finish(t) {
                Ok(Some(n)) => Self::absorb(&mut p, Ok(n)),
                Ok(None) => p.open.push(t),
                Err(e) => Self::absorb(&mut p, Err(e)),
            }
        }
        self.settle(&p, was_open);
        Ok(p.open.is_empty())
    }
}

impl Drop for Future {
    /// A future dropped unwaited still lets its requests finish before the buffer counts as
    /// free of them.
    fn drop(&mut self) {
        if let Ok(p) = self.progress.get_mut()
            && !p.open.is_empty()
        {
            for t in std::mem::take(&mut p.open) {
                let _ = self.shared.client.finish(t);
            }
            self.core.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
