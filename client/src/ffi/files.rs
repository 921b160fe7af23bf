//! The C API of buffers and files registered apart: `stripefs_register_buffer`,
//! `stripefs_open`, `stripefs_close`, `stripefs_read_file`, `stripefs_write_file` and
//! `stripefs_submit_files` (`include/stripefs.h`).

use std::ffi::c_int;
use std::os::fd::BorrowedFd;

use super::{CBuffer, CClient, guard, neg};
use crate::{FileHandle, FileRequest, Handle, Op};

/// `struct stripefs_file_request`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CFileRequest {
    /// From `stripefs_open`.
    pub file: u64,
    /// From `stripefs_register_buffer`.
    pub buffer: u64,
    /// `STRIPEFS_OP_READ` (1) or `STRIPEFS_OP_WRITE` (2).
    pub op: u32,
    /// Must be 0.
    pub reserved: u32,
    pub file_offset: u64,
    pub buffer_offset: u64,
    pub len: u64,
    /// Below 2^63; returned in the completion.
    pub tag: u64,
}

/// Stores `value` through `out` (checked non-null by the caller) and returns 0.
///
/// # Safety
/// `out` is non-null and writable.
unsafe fn store(out: *mut u64, value: u64) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { *out = value };
    0
}

/// Registers `buffer` against the whole mount (one attachment per device); stores the
/// buffer handle, which serves requests on every file opened with `stripefs_open`.
///
/// # Safety
/// `client` and `buffer` are live pointers from this library; `handle` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_register_buffer(
    client: *mut CClient,
    buffer: *const CBuffer,
    handle: *mut u64,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let (Some(c), Some(b)) = (unsafe { super::client(client) }, unsafe {
            super::buffer(buffer)
        }) else {
            return -libc::EINVAL;
        };
        if handle.is_null() {
            return -libc::EINVAL;
        }
        match c.register_buffer(b) {
            // SAFETY: checked non-null; writable per the contract.
            Ok(h) => unsafe { store(handle, h.raw()) },
            Err(e) => neg(&e),
        }
    })
}

/// Opens the file open as `fd` (on the mount) for requests with buffers registered against
/// the mount; stores the file handle. Access follows the descriptor's open mode; `fd` may be
/// closed afterwards.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`, `file` is writable, and `fd` stays
/// open for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_open(client: *mut CClient, fd: c_int, file: *mut u64) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(c) = (unsafe { super::client(client) }) else {
            return -libc::EINVAL;
        };
        if file.is_null() {
            return -libc::EINVAL;
        }
        if fd < 0 {
            return -libc::EBADF;
        }
        // SAFETY: the caller keeps `fd` open during the call; a descriptor that is not open
        // only makes sendmsg fail with EBADF.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        match c.open(&fd) {
            // SAFETY: checked non-null; writable per the contract.
            Ok(h) => unsafe { store(file, h.raw()) },
            Err(e) => neg(&e),
        }
    })
}

/// Closes a file handle.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_close(client: *mut CClient, file: u64) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(c) = (unsafe { super::client(client) }) else {
            return -libc::EINVAL;
        };
        c.close(FileHandle::from_raw(file))
            .map_or_else(|e| neg(&e), |()| 0)
    })
}

fn file_blocking(client: *mut CClient, op: Op, request: (u64, u64, u64, u64, u64)) -> i64 {
    let (file, buffer, file_offset, buffer_offset, len) = request;
    guard(-i64::from(libc::EIO), || {
        // SAFETY: the exported callers pass their caller's pointer, live per their contract.
        let Some(c) = (unsafe { super::client(client) }) else {
            return -i64::from(libc::EINVAL);
        };
        let (f, b) = (FileHandle::from_raw(file), Handle::from_raw(buffer));
        let result = match op {
            Op::Read => c.read_file(f, b, file_offset, buffer_offset, len),
            Op::Write => c.write_file(f, b, file_offset, buffer_offset, len),
        };
        match result {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => -i64::from(e.errno()),
        }
    })
}

/// Reads up to `len` bytes at `file_offset` of `file` into `buffer` at `buffer_offset`;
/// returns the bytes read (short only at end of file). Blocks.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_read_file(
    client: *mut CClient,
    file: u64,
    buffer: u64,
    file_offset: u64,
    buffer_offset: u64,
    len: u64,
) -> i64 {
    let request = (file, buffer, file_offset, buffer_offset, len);
    file_blocking(client, Op::Read, request)
}

/// Writes `len` bytes from `buffer` at `buffer_offset` to `file_offset` of `file`. Blocks.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_write_file(
    client: *mut CClient,
    file: u64,
    buffer: u64,
    file_offset: u64,
    buffer_offset: u64,
    len: u64,
) -> i64 {
    let request = (file, buffer, file_offset, buffer_offset, len);
    file_blocking(client, Op::Write, request)
}

/// Queues `count` requests naming files and buffers; returns how many were queued (fewer
/// when the ring is full). Completions come back through `stripefs_wait`/`stripefs_poll`.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`; `requests` points to `count`
/// readable requests.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_submit_files(
    client: *mut CClient,
    requests: *const CFileRequest,
    count: u32,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(c) = (unsafe { super::client(client) }) else {
            return -libc::EINVAL;
        };
        if count == 0 {
            return 0;
        }
        if requests.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: per the contract `requests` points to `count` readable, initialised
        // requests (plain integers) that we only read during the call.
        let raw = unsafe { std::slice::from_raw_parts(requests, count as usize) };
        let mut reqs = Vec::with_capacity(raw.len());
        for r in raw {
            let Some(op) = super::op_of(r.op, r.reserved) else {
                return -libc::EINVAL;
            };
            reqs.push(FileRequest {
                file: FileHandle::from_raw(r.file),
                buffer: Handle::from_raw(r.buffer),
                op,
                file_offset: r.file_offset,
                buffer_offset: r.buffer_offset,
                len: r.len,
                tag: r.tag,
            });
        }
        match c.submit_files(&reqs) {
            Ok(n) => c_int::try_from(n).unwrap_or(c_int::MAX),
            Err(e) => neg(&e),
        }
    })
}
