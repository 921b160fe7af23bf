//! `stripefs.Client`: one connection to the daemon of a mount, shared by every buffer, file
//! and ring made from it (and by threads: every call releases the GIL while it waits).

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use stripefs_client::{ClientBuffer, ClientOptions};

use crate::buffer::{Buffer, BufferCore};
use crate::errors;
use crate::file::File;
use crate::ring::Ring;
use crate::shared::Shared;

/// A connection to the stripefs daemon serving the mount that holds `path`.
///
/// `Client(path, entries=256, workers=0, chunk=4 MiB)`: `entries` requests in flight at
/// most (a power of two), `workers` daemon threads for this client (0: its default),
/// `chunk` the size reads and writes are split into. Use as a context manager, or call
/// `close()`.
#[pyclass(module = "stripefs", frozen, weakref)]
pub(crate) struct Client {
    shared: std::sync::Mutex<Option<Arc<Shared>>>,
}

impl Client {
    /// The live connection, or ValueError once closed.
    pub(crate) fn shared(&self) -> PyResult<Arc<Shared>> {
        self.shared
            .lock()
            .map_err(|_| PyValueError::new_err("client lock poisoned"))?
            .clone()
            .ok_or_else(|| PyValueError::new_err("the client is closed"))
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (path, entries = 256, workers = 0, chunk = 4 << 20))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        entries: u32,
        workers: u32,
        chunk: u64,
    ) -> PyResult<Self> {
        if chunk == 0 || !chunk.is_multiple_of(4096) {
            return Err(PyValueError::new_err(format!(
                "chunk {chunk} is not a positive multiple of 4096"
            )));
        }
        let options = ClientOptions { entries, workers };
        let client = py
            .detach(|| stripefs_client::Client::connect_with(&path, options))
            .map_err(|e| errors::error(&e, &path, &path))?;
        Ok(Client {
            shared: std::sync::Mutex::new(Some(Arc::new(Shared {
                client,
                mount: path,
                chunk,
            }))),
        })
    }

    /// `alloc(size, huge_pages=False)`: a buffer of `size` bytes (rounded up to whole pages),
    /// registered once against the mount: any file of the mount reads into it or writes from
    /// it. `huge_pages=True` backs it with 2 MiB huge pages (`MFD_HUGETLB`, from those
    /// reserved in /proc/sys/vm/nr_hugepages; StripefsError ENOMEM when too few are free):
    /// physically contiguous memory, so each device request moves few large segments
    /// whatever the kernel's free memory looks like.
    #[pyo3(signature = (size, huge_pages = false))]
    fn alloc(&self, py: Python<'_>, size: u64, huge_pages: bool) -> PyResult<Buffer> {
        let shared = self.shared()?;
        let mount = shared.mount.clone();
        let (buffer, handle) = py
            .detach(|| {
                let buffer = ClientBuffer::with_huge_pages(size, huge_pages)?;
                let handle = shared.client.register_buffer(&buffer)?;
                Ok((buffer, handle))
            })
            .map_err(|e| errors::error(&e, &mount, &mount))?;
        Ok(Buffer::new(BufferCore::new(shared, buffer, handle)))
    }

    /// `open(path, mode="r")`: a file on the mount, opened once for requests ("r", "w" or
    /// "r+"; "w" neither creates nor truncates: the file must exist).
    #[pyo3(signature = (path, mode = "r"))]
    fn open(&self, py: Python<'_>, path: PathBuf, mode: &str) -> PyResult<File> {
        File::open(py, self.shared()?, path, mode)
    }

    /// `ring(entries=256)`: a batch of requests prepared, submitted together and reaped as
    /// they complete; one per thread (rings of one client never take each other's
    /// completions).
    #[pyo3(signature = (entries = 256))]
    fn ring(&self, entries: usize) -> PyResult<Ring> {
        Ring::new(self.shared()?, entries)
    }

    /// Requests in flight at most on this connection.
    #[getter]
    fn entries(&self) -> PyResult<u32> {
        Ok(self.shared()?.client.entries())
    }

    /// The path the client was made with.
    #[getter]
    fn mount(&self) -> PyResult<PathBuf> {
        Ok(self.shared()?.mount.clone())
    }

    /// Closes the connection once every buffer, file and ring made from it is gone (they
    /// keep it open until then); using this object afterwards raises ValueError.
    fn close(&self) -> PyResult<()> {
        self.shared
            .lock()
            .map_err(|_| PyValueError::new_err("client lock poisoned"))?
            .take();
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _kind: Option<Bound<'_, PyAny>>,
        _value: Option<Bound<'_, PyAny>>,
        _trace: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.shared() {
            Ok(s) => format!(
                "<stripefs.Client {} connection {}>",
                s.mount.display(),
                s.client.connection()
            ),
            Err(_) => "<stripefs.Client closed>".into(),
        }
    }
}
