//! The unsafe edge of a device queue: pushing entries that lend memory to the kernel,
//! updating fixed-buffer slots, and reading completions.

use std::io;

use io_uring::{IoUring, opcode, squeue, types};

/// One command to put on the ring.
pub(crate) enum Entry {
    Read {
        fd: i32,
        offset: u64,
        addr: *mut u8,
        len: u32,
        slot: u16,
    },
    Write {
        fd: i32,
        offset: u64,
        addr: *mut u8,
        len: u32,
        slot: u16,
    },
    /// A command that does nothing; its completion carries an injected fault.
    Nop,
    /// A command that never completes on its own (an emulated hung device): a timeout op
    /// that would expire only in a century. It ends when it is cancelled.
    Hang,
    /// Cancels the command whose user data is `target` (a timed-out command).
    Cancel { target: u64 },
}

/// User data of the engine's own entries (cancellations), which complete no command. Command
/// user data never has this bit: see [`command_data`].
pub(crate) const CONTROL: u64 = 1 << 63;

/// "Never" for [`Entry::Hang`]: a century. The kernel reads it when the entry is submitted,
/// which may be after the push: a static is valid whenever that is.
static HANG: types::Timespec = types::Timespec::new().sec(100 * 365 * 24 * 3600);

/// The user data of command slot `id` in its `generation`th use: the slot in the low 32 bits,
/// the generation above it (31 bits, never [`CONTROL`]). A cancellation names the exact use
/// it targets, so it can never cancel a later command that reuses the slot.
pub(crate) fn command_data(id: u32, generation: u32) -> u64 {
    (u64::from(generation & 0x7fff_ffff) << 32) | u64::from(id)
}

/// The command slot that a command's user data names; `None` for the engine's own entries.
pub(crate) fn command_slot(user_data: u64) -> Option<u32> {
    (user_data & CONTROL == 0).then_some(user_data as u32)
}

impl Entry {
    fn build(&self, user_data: u64) -> squeue::Entry {
        match *self {
            Entry::Read {
                fd,
                offset,
                addr,
                len,
                slot,
            } => opcode::ReadFixed::new(types::Fd(fd), addr, len, slot)
                .offset(offset)
                .build(),
            Entry::Write {
                fd,
                offset,
                addr,
                len,
                slot,
            } => opcode::WriteFixed::new(types::Fd(fd), addr, len, slot)
                .offset(offset)
                .build(),
            Entry::Nop => opcode::Nop::new().build(),
            Entry::Hang => opcode::Timeout::new(&HANG).build(),
            Entry::Cancel { target } => opcode::AsyncCancel::new(target).build(),
        }
        .user_data(user_data)
    }
}

/// Pushes one entry. Returns false if the submission queue is full.
///
/// # Safety
/// The caller must hold the device's submission lock (no other `SubmissionQueue` may exist),
/// and the memory of a Read/Write entry (`addr..addr+len`, inside fixed-buffer `slot`) must
/// stay valid and attached until its completion is reaped: the in-flight table holds the
/// request, which holds the mapping guard that keeps the attachment and memory alive.
pub(crate) unsafe fn push(ring: &IoUring, entry: &Entry, user_data: u64) -> bool {
    let sqe = entry.build(user_data);
    // SAFETY: exclusive access to the SQ is guaranteed by the caller's lock.
    let mut sq = unsafe { ring.submission_shared() };
    // SAFETY: the caller guarantees the buffer outlives the request (see above).
    let ok = unsafe { sq.push(&sqe) }.is_ok();
    sq.sync();
    ok
}

/// Makes fixed-buffer `slot` describe `addr..addr+len` (or nothing, with a null address).
///
/// # Safety
/// For a non-null `addr`, the memory must stay mapped until the slot is cleared again
/// (the attachment clears it in its drop, before it releases the memory). The kernel pins the
/// pages itself.
pub(crate) unsafe fn set_slot(
    ring: &IoUring,
    slot: u16,
    addr: *mut u8,
    len: u64,
) -> io::Result<()> {
    let iov = libc::iovec {
        iov_base: addr.cast(),
        iov_len: len as usize,
    };
    // SAFETY: see the function's contract; `iov` lives for the duration of the call.
    unsafe {
        ring.submitter()
            .register_buffers_update(u32::from(slot), &[iov], None)
    }
}

/// Submits what is queued; retries on transient errors. Failure is not fatal: the entries stay
/// in the ring and the reaper's next enter submits them.
pub(crate) fn submit(ring: &IoUring) -> io::Result<()> {
    loop {
        match ring.submit() {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                std::thread::yield_now();
            }
            Err(e) => return Err(e),
        }
    }
}

/// Submits what is queued and checks that the kernel took all of it (an error otherwise).
///
/// # Safety
/// The caller must hold the device's submission lock (no other `SubmissionQueue` may exist).
pub(crate) unsafe fn submit_all(ring: &IoUring) -> io::Result<()> {
    submit(ring)?;
    // SAFETY: exclusive access to the SQ is guaranteed by the caller's lock.
    let mut sq = unsafe { ring.submission_shared() };
    sq.sync();
    if sq.is_empty() {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }
}

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h).
const ENTER_GETEVENTS: u32 = 1;

/// Runs this thread's pending io_uring task work (which posts its commands' completions) and
/// returns without waiting: `io_uring_enter(GETEVENTS, min_complete = 0)`.
pub(crate) fn run_task_work(ring: &IoUring) {
    // SAFETY: no submission entries, no wait and no argument: the call reads nothing of ours.
    let _ = unsafe {
        ring.submitter()
            .enter::<libc::sigset_t>(0, 0, ENTER_GETEVENTS, None)
    };
}

/// Takes every available completion as (user_data, result).
///
/// # Safety
/// Only the device's reaper thread may call this (no other `CompletionQueue` may exist).
pub(crate) unsafe fn reap(ring: &IoUring, out: &mut Vec<(u64, i32)>) {
    // SAFETY: the caller is the only reader of the completion queue.
    let cq = unsafe { ring.completion_shared() };
    out.extend(cq.map(|cqe| (cqe.user_data(), cqe.result())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_data_names_slot_and_generation_and_is_never_control() {
        let a = command_data(5, 1);
        let b = command_data(5, 2);
        assert_ne!(a, b, "two uses of a slot must differ");
        assert_eq!(command_slot(a), Some(5));
        assert_eq!(command_slot(b), Some(5));
        let wrapped = command_data(u32::MAX, u32::MAX);
        assert_eq!(wrapped & CONTROL, 0);
        assert_eq!(command_slot(wrapped), Some(u32::MAX));
        assert_eq!(command_slot(CONTROL), None);
    }
}
