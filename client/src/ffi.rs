//! The C API (`include/stripefs.h`): the Rust client behind opaque pointers. Every function
//! returns 0 (or a count, or bytes) on success and a negative errno on failure; none unwinds
//! into C (a panic becomes `-EIO`).
//!
//! [`files`]: buffers and files registered apart.

mod files;

pub use files::CFileRequest;

use std::ffi::{CStr, c_char, c_int, c_void};
use std::os::fd::BorrowedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::{
    Client, ClientBuffer, ClientError, ClientOptions, Completion, Handle, Mode, Op, Request,
};

/// `struct stripefs_client`: a connection.
pub struct CClient(Client);

/// `struct stripefs_buffer`: a registered-I/O buffer.
pub struct CBuffer(ClientBuffer);

/// `struct stripefs_request`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CRequest {
    pub handle: u64,
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

/// `struct stripefs_completion`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CCompletion {
    pub tag: u64,
    /// Bytes transferred, or a negative errno.
    pub result: i64,
}

fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

fn neg(e: &ClientError) -> c_int {
    -e.errno()
}

/// # Safety
/// `p` is null or a pointer returned by `stripefs_connect*` and not yet disconnected.
unsafe fn client<'a>(p: *mut CClient) -> Option<&'a Client> {
    // SAFETY: per this function's contract, a non-null `p` points to a live CClient.
    unsafe { p.as_ref() }.map(|c| &c.0)
}

/// # Safety
/// `p` is null or a pointer returned by `stripefs_buffer_new` and not yet freed.
unsafe fn buffer<'a>(p: *const CBuffer) -> Option<&'a ClientBuffer> {
    // SAFETY: per this function's contract, a non-null `p` points to a live CBuffer.
    unsafe { p.as_ref() }.map(|b| &b.0)
}

/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn path<'a>(s: *const c_char) -> Option<&'a Path> {
    if s.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    let c = unsafe { CStr::from_ptr(s) };
    use std::os::unix::ffi::OsStrExt;
    Some(Path::new(std::ffi::OsStr::from_bytes(c.to_bytes())))
}

/// Hands a new object to C through `out` (0), or returns the error's negative errno.
fn publish<T, W>(made: Result<T, ClientError>, wrap: fn(T) -> W, out: *mut *mut W) -> c_int {
    match made {
        Ok(v) => {
            // SAFETY: the callers checked `out` is non-null; it is writable per their contract.
            unsafe { *out = Box::into_raw(Box::new(wrap(v))) };
            0
        }
        Err(e) => neg(&e),
    }
}

/// Takes back and drops an object `publish` handed to C; null is ignored.
///
/// # Safety
/// `p` is null or came from `publish` and is released exactly once.
unsafe fn release<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: per this function's contract, `p` came from Box::into_raw, released once.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Connects to the daemon serving the mount that holds `path_on_mount`.
///
/// # Safety
/// `path_on_mount` is a NUL-terminated string; `out` points to writable storage for a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_connect(
    path_on_mount: *const c_char,
    out: *mut *mut CClient,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(p) = (unsafe { path(path_on_mount) }) else {
            return -libc::EINVAL;
        };
        if out.is_null() {
            return -libc::EINVAL;
        }
        publish(Client::connect(p), CClient, out)
    })
}

/// Connects to the control socket at `socket_path` with a ring of `entries` (0: default).
///
/// # Safety
/// As `stripefs_connect`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_connect_socket(
    socket_path: *const c_char,
    entries: u32,
    out: *mut *mut CClient,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(p) = (unsafe { path(socket_path) }) else {
            return -libc::EINVAL;
        };
        if out.is_null() {
            return -libc::EINVAL;
        }
        let options = ClientOptions {
            entries: if entries == 0 {
                ClientOptions::default().entries
            } else {
                entries
            },
            ..ClientOptions::default()
        };
        publish(Client::connect_socket_with(p, options), CClient, out)
    })
}

/// Closes the connection; the daemon releases every registration made through it.
///
/// # Safety
/// `client` is null or a live pointer from `stripefs_connect*`; it is invalid afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_disconnect(client: *mut CClient) {
    // SAFETY: `client` is null or from `stripefs_connect*`, freed once (this contract).
    guard((), || unsafe { release(client) })
}

/// Makes a buffer of `len` bytes (rounded up to whole pages): a sealed memfd mapped here.
///
/// # Safety
/// `out` points to writable storage for a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_buffer_new(len: u64, out: *mut *mut CBuffer) -> c_int {
    guard(-libc::EIO, || {
        if out.is_null() {
            return -libc::EINVAL;
        }
        publish(ClientBuffer::new(len), CBuffer, out)
    })
}

/// Releases the caller's reference; registrations keep the memory until unregistered.
///
/// # Safety
/// `buffer` is null or a live pointer from `stripefs_buffer_new`; it is invalid afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_buffer_free(buffer: *mut CBuffer) {
    // SAFETY: `buffer` is null or from `stripefs_buffer_new`, freed once (this contract).
    guard((), || unsafe { release(buffer) })
}

/// Length of the buffer in bytes (0 for a null pointer).
///
/// # Safety
/// `buffer` is null or a live pointer from `stripefs_buffer_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_buffer_len(buffer: *const CBuffer) -> u64 {
    guard(0, || {
        // SAFETY: forwarded contract.
        unsafe { self::buffer(buffer) }.map_or(0, ClientBuffer::len)
    })
}

/// Address of the buffer's bytes in this process. Valid until the buffer migrates
/// (`stripefs_migrate` of a registration of it) or is freed and unregistered; ask again after
/// a migration. The daemon and devices write these bytes while reads are in flight.
///
/// # Safety
/// `buffer` is null or a live pointer from `stripefs_buffer_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_buffer_data(buffer: *const CBuffer) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        unsafe { self::buffer(buffer) }.map_or(std::ptr::null_mut(), |b| b.as_ptr().cast())
    })
}

/// Registers `buffer` against the file open as `fd` (on the mount); stores the handle.
///
/// # Safety
/// `client` and `buffer` are live pointers from this library, `handle` is writable, and `fd`
/// stays open for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_register(
    client: *mut CClient,
    fd: c_int,
    buffer: *const CBuffer,
    handle: *mut u64,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let (Some(c), Some(b)) = (unsafe { self::client(client) }, unsafe {
            self::buffer(buffer)
        }) else {
            return -libc::EINVAL;
        };
        if handle.is_null() {
            return -libc::EINVAL;
        }
        if fd < 0 {
            return -libc::EBADF;
        }
        // SAFETY: the caller keeps `fd` open during the call; a descriptor that is not open
        // only makes sendmsg fail with EBADF.
        let file = unsafe { BorrowedFd::borrow_raw(fd) };
        match c.register(&file, b) {
            Ok(h) => {
                // SAFETY: checked non-null; writable per the contract.
                unsafe { *handle = h.raw() };
                0
            }
            Err(e) => neg(&e),
        }
    })
}

/// Drops a registration.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_unregister(client: *mut CClient, handle: u64) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(c) = (unsafe { self::client(client) }) else {
            return -libc::EINVAL;
        };
        c.unregister(Handle::from_raw(handle))
            .map_or_else(|e| neg(&e), |()| 0)
    })
}

/// Moves the registration's buffer to new pages (requests may be in flight). Afterwards
/// `stripefs_buffer_data` returns a new address.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_migrate(client: *mut CClient, handle: u64) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(c) = (unsafe { self::client(client) }) else {
            return -libc::EINVAL;
        };
        c.migrate(Handle::from_raw(handle))
            .map_or_else(|e| neg(&e), |_| 0)
    })
}

fn blocking(
    client: *mut CClient,
    op: Op,
    handle: u64,
    file_offset: u64,
    buffer_offset: u64,
    len: u64,
) -> i64 {
    guard(-i64::from(libc::EIO), || {
        // SAFETY: the exported callers pass their caller's pointer, live per their contract.
        let Some(c) = (unsafe { self::client(client) }) else {
            return -i64::from(libc::EINVAL);
        };
        let h = Handle::from_raw(handle);
        let result = match op {
            Op::Read => c.read(h, file_offset, buffer_offset, len),
            Op::Write => c.write(h, file_offset, buffer_offset, len),
        };
        match result {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => -i64::from(e.errno()),
        }
    })
}

/// Reads up to `len` bytes at `file_offset` into the buffer at `buffer_offset`; returns the
/// bytes read (short only at end of file). Blocks.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_read(
    client: *mut CClient,
    handle: u64,
    file_offset: u64,
    buffer_offset: u64,
    len: u64,
) -> i64 {
    blocking(client, Op::Read, handle, file_offset, buffer_offset, len)
}

/// Writes `len` bytes from the buffer at `buffer_offset` to `file_offset`. Blocks.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_write(
    client: *mut CClient,
    handle: u64,
    file_offset: u64,
    buffer_offset: u64,
    len: u64,
) -> i64 {
    blocking(client, Op::Write, handle, file_offset, buffer_offset, len)
}

/// Queues `count` requests; returns how many were queued (fewer when the ring is full).
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`; `requests` points to `count`
/// readable requests.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_submit(
    client: *mut CClient,
    requests: *const CRequest,
    count: u32,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: forwarded contract.
        let Some(c) = (unsafe { self::client(client) }) else {
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
            let Some(op) = op_of(r.op, r.reserved) else {
                return -libc::EINVAL;
            };
            reqs.push(Request {
                handle: Handle::from_raw(r.handle),
                op,
                file_offset: r.file_offset,
                buffer_offset: r.buffer_offset,
                len: r.len,
                tag: r.tag,
            });
        }
        match c.submit(&reqs) {
            Ok(n) => c_int::try_from(n).unwrap_or(c_int::MAX),
            Err(e) => neg(&e),
        }
    })
}

/// The direction of a C request (`STRIPEFS_OP_*`), if it is one and `reserved` is 0.
fn op_of(op: u32, reserved: u32) -> Option<Op> {
    match (op, reserved) {
        (1, 0) => Some(Op::Read),
        (2, 0) => Some(Op::Write),
        _ => None,
    }
}

fn collect(
    client: *mut CClient,
    out: *mut CCompletion,
    max: u32,
    min: u32,
    mode: Option<Mode>,
) -> c_int {
    guard(-libc::EIO, || {
        // SAFETY: the exported callers pass their caller's pointer, live per their contract.
        let Some(c) = (unsafe { self::client(client) }) else {
            return -libc::EINVAL;
        };
        if max == 0 {
            return 0;
        }
        if out.is_null() {
            return -libc::EINVAL;
        }
        let mut got: Vec<Completion> = Vec::new();
        let max = max.min(c_int::MAX as u32) as usize;
        let result = match mode {
            Some(mode) => c.wait_into((min as usize).min(max), max, mode, &mut got),
            None => c.poll_into(max, &mut got),
        };
        if let Err(e) = result {
            return neg(&e);
        }
        for (i, done) in got.iter().enumerate() {
            let result = match done.result {
                Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
                Err(errno) => -i64::from(errno.0),
            };
            // SAFETY: i < got.len() <= max, and `out` points to `max` writable completions
            // per the exported callers' contract.
            unsafe {
                out.add(i).write(CCompletion {
                    tag: done.tag,
                    result,
                })
            };
        }
        got.len() as c_int
    })
}

/// Waits (asleep on the completion doorbell) until `min` completions are ready or nothing is
/// in flight; stores up to `max` in `out`; returns how many.
///
/// # Safety
/// `client` is a live pointer from `stripefs_connect*`; `out` points to `max` writable
/// completions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_wait(
    client: *mut CClient,
    out: *mut CCompletion,
    max: u32,
    min: u32,
) -> c_int {
    collect(client, out, max, min, Some(Mode::Block))
}

/// Like `stripefs_wait`, spinning instead of sleeping.
///
/// # Safety
/// As `stripefs_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_wait_polling(
    client: *mut CClient,
    out: *mut CCompletion,
    max: u32,
    min: u32,
) -> c_int {
    collect(client, out, max, min, Some(Mode::Spin))
}

/// Stores up to `max` completions that are ready now; never waits.
///
/// # Safety
/// As `stripefs_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stripefs_poll(
    client: *mut CClient,
    out: *mut CCompletion,
    max: u32,
) -> c_int {
    collect(client, out, max, 0, None)
}
