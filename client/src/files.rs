//! Buffers and files registered apart: [`Client::register_buffer`] registers a buffer once
//! against the whole mount (one attachment per device), [`Client::open`] opens a file once,
//! and requests name both, so one buffer reads from any number of files with no registration
//! per file (cuFile's `cuFileBufRegister` apart from `cuFileHandleRegister`).

use std::os::fd::AsFd;

use super::proto::{self, Reply};
use super::ring::{Entry, SQE_FILE, Sqe};
use super::{Client, ClientBuffer, ClientError, Handle, Op, Ticket};

/// A file opened with [`Client::open`]; valid only on the client that opened it, until
/// [`Client::close`] or until the file is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileHandle(pub(crate) u64);

impl FileHandle {
    /// The handle's number (for the C API and for passing around).
    pub fn raw(self) -> u64 {
        self.0
    }

    /// A handle from its number. Using a number the daemon did not give this client fails
    /// with EBADF.
    pub fn from_raw(raw: u64) -> FileHandle {
        FileHandle(raw)
    }
}

/// What an opened file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub handle: FileHandle,
    /// Inode number of the file.
    pub ino: u64,
    /// From the descriptor's open mode: reads need it readable, writes writable.
    pub readable: bool,
    pub writable: bool,
}

/// One request naming a file and a buffer registered against the mount: move `len` bytes
/// between file offset `file_offset` of `file` and buffer offset `buffer_offset` of `buffer`.
/// `tag` (below 2^63) comes back in the completion.
#[derive(Clone, Copy, Debug)]
pub struct FileRequest {
    pub file: FileHandle,
    pub buffer: Handle,
    pub op: Op,
    pub file_offset: u64,
    pub buffer_offset: u64,
    pub len: u64,
    pub tag: u64,
}

impl FileRequest {
    fn entry(&self) -> Entry {
        Entry {
            sqe: Sqe {
                handle: self.buffer.0,
                op: self.op.code(),
                flags: SQE_FILE,
                file_offset: self.file_offset,
                buffer_offset: self.buffer_offset,
                len: self.len,
                tag: self.tag,
            },
            file: self.file.0,
            reserved: 0,
        }
    }
}

impl Client {
    /// Registers `buffer` against the whole mount: the daemon attaches it once to every
    /// device, and the handle serves requests on every file opened with [`Client::open`]
    /// ([`Client::read_file`], [`Client::submit_files`]). Migrate and unregister it like a
    /// registration of one file.
    pub fn register_buffer(&self, buffer: &ClientBuffer) -> Result<Handle, ClientError> {
        let (reply, _) = buffer.registering(|memfd| {
            let reply = self.call(&proto::Request::RegisterBuffer { flags: 0 }, &[memfd])?;
            buffer.inner.registered_on.lock().push(self.id);
            Ok(reply)
        })?;
        let Reply::RegisterBuffer(reply) = reply else {
            return Err(ClientError::Protocol {
                what: "register buffer answered with another kind".into(),
            });
        };
        Ok(self.remember(buffer, reply))
    }

    /// Opens `file` (a descriptor opened on the mount) for requests with buffers registered
    /// against the mount. Access follows the descriptor's open mode; the descriptor may be
    /// closed afterwards.
    pub fn open(&self, file: &impl AsFd) -> Result<FileHandle, ClientError> {
        let (reply, _) = self.call(&proto::Request::OpenFile, &[file.as_fd()])?;
        let Reply::OpenFile(o) = reply else {
            return Err(ClientError::Protocol {
                what: "open file answered with another kind".into(),
            });
        };
        let info = FileInfo {
            handle: FileHandle(o.handle),
            ino: o.ino,
            readable: o.access & proto::ACCESS_READ != 0,
            writable: o.access & proto::ACCESS_WRITE != 0,
        };
        self.files.lock().insert(o.handle, info);
        Ok(info.handle)
    }

    /// What opened file `file` is.
    pub fn file_info(&self, file: FileHandle) -> Option<FileInfo> {
        self.files.lock().get(&file.0).copied()
    }

    /// Closes an opened file: requests on it that are already running complete; later ones
    /// fail with EBADF.
    pub fn close(&self, file: FileHandle) -> Result<(), ClientError> {
        let result = self.call(&proto::Request::CloseFile { handle: file.0 }, &[]);
        self.files.lock().remove(&file.0);
        result.map(|_| ())
    }

    /// Queues requests naming files and buffers; returns how many were queued (fewer when
    /// the ring is full). Their completions come back through [`Client::wait`] and
    /// [`Client::poll`] with the requests' tags.
    pub fn submit_files(&self, requests: &[FileRequest]) -> Result<usize, ClientError> {
        if let Some(r) = requests.iter().find(|r| r.tag & super::SYNC_TAG != 0) {
            return Err(ClientError::invalid(format!(
                "tag {:#x} has bit 63 set (reserved)",
                r.tag
            )));
        }
        self.submit_sqes(requests.iter().map(FileRequest::entry))
    }

    /// Queues requests naming files and buffers, waiting for ring space as needed, and
    /// returns a ticket for each (their tags are not used): the completions are kept apart
    /// for [`Client::finish`] and [`Client::finish_some`], not handed to [`Client::wait`].
    pub fn start_files(&self, requests: &[FileRequest]) -> Result<Vec<Ticket>, ClientError> {
        self.start_entries(requests.iter().map(FileRequest::entry))
    }

    /// Reads up to `len` bytes at `file_offset` of `file` into `buffer` (registered against
    /// the mount) at `buffer_offset`; returns the bytes read (short only at end of file).
    /// Blocks.
    pub fn read_file(
        &self,
        file: FileHandle,
        buffer: Handle,
        file_offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, ClientError> {
        self.file_blocking(file, buffer, Op::Read, (file_offset, buffer_offset, len))
    }

    /// Writes `len` bytes from `buffer` at `buffer_offset` to `file_offset` of `file` (the
    /// file grows as needed); returns `len`. Blocks.
    pub fn write_file(
        &self,
        file: FileHandle,
        buffer: Handle,
        file_offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, ClientError> {
        self.file_blocking(file, buffer, Op::Write, (file_offset, buffer_offset, len))
    }

    fn file_blocking(
        &self,
        file: FileHandle,
        buffer: Handle,
        op: Op,
        (file_offset, buffer_offset, len): (u64, u64, u64),
    ) -> Result<u64, ClientError> {
        let request = FileRequest {
            file,
            buffer,
            op,
            file_offset,
            buffer_offset,
            len,
            tag: 0,
        };
        let tickets = self.start_files(&[request])?;
        self.finish(tickets[0])
    }
}
