//! Buffers and files registered apart: one buffer registered once against the mount reads
//! many files (every byte compared) with no registration per file, many requests in flight;
//! writes through a file handle; access from the open mode; closed and deleted files; a
//! buffer migrating while reads of several files are in flight.

mod common;

use std::fs::{File, OpenOptions};
use std::time::{Duration, Instant};

use common::{Mounted, Watchdog, assert_same, data};
use stripefs_client::{Client, ClientBuffer, ClientOptions, FileHandle, FileRequest, Op};

const MIB: u64 = 1 << 20;

/// Sizes of the files: aligned, unaligned, smaller than a block, several stripe units.
const SIZES: [usize; 9] = [
    100_000,
    4096,
    1,
    MIB as usize,
    MIB as usize + 17,
    3 * MIB as usize,
    65_536 * 3 + 5,
    777_777,
    2 * MIB as usize - 4096,
];

/// Reads every piece of every file into one buffer through `submit_files`, as many in flight
/// as the ring holds; returns where each file starts in the buffer.
fn read_all(
    client: &Client,
    buffer: stripefs_client::Handle,
    files: &[(FileHandle, usize)],
) -> Vec<u64> {
    let piece = 256 << 10;
    let mut starts = Vec::new();
    let mut requests = Vec::new();
    let mut at = 0u64;
    for (i, &(file, len)) in files.iter().enumerate() {
        // Odd files start at an unaligned buffer offset: those reads go through the bounce path.
        let start = if i % 2 == 1 { at + 512 } else { at };
        starts.push(start);
        let mut off = 0u64;
        while off < len as u64 {
            requests.push(FileRequest {
                file,
                buffer,
                op: Op::Read,
                file_offset: off,
                buffer_offset: start + off,
                len: piece.min(len as u64 - off),
                tag: requests.len() as u64,
            });
            off += piece;
        }
        at = (start + len as u64).next_multiple_of(4096);
    }
    let mut done = Vec::new();
    let mut next = 0;
    while done.len() < requests.len() {
        if next < requests.len() {
            next += client
                .submit_files(&requests[next..])
                .or_else(|e| match e {
                    stripefs_client::ClientError::Busy { .. } => Ok(0),
                    e => Err(e),
                })
                .expect("submit");
        }
        client.wait(1, &mut done).expect("wait");
    }
    for c in &done {
        let r = requests[c.tag as usize];
        assert_eq!(c.result, Ok(r.len), "request {} ({r:?})", c.tag);
    }
    starts
}

#[test]
fn one_buffer_reads_many_files_with_no_new_registration() {
    require_mount!();
    let _w = Watchdog::new("one buffer, many files", Duration::from_secs(180));
    let m = Mounted::new(3, 64 * MIB, 64 << 10);
    let wants: Vec<Vec<u8>> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| data(100 + i as u64, n))
        .collect();
    for (i, want) in wants.iter().enumerate() {
        std::fs::write(m.path(&format!("f{i}")), want).expect("write through the mount");
    }
    let client = Client::connect_with(
        &m.mnt,
        ClientOptions {
            entries: 32,
            workers: 2,
        },
    )
    .expect("connect");
    let total: usize = SIZES.iter().map(|n| n + 8192).sum();
    let buffer = ClientBuffer::new(total as u64).expect("buffer");
    let handle = client
        .register_buffer(&buffer)
        .expect("register the buffer once");
    let info = client.registration(handle).expect("info");
    assert_eq!((info.ino, info.devices), (0, 3), "{info:?}");
    let files: Vec<(FileHandle, usize)> = (0..SIZES.len())
        .map(|i| {
            let f = File::open(m.path(&format!("f{i}"))).expect("open");
            (client.open(&f).expect("open for requests"), SIZES[i])
        })
        .collect();
    // The descriptors are closed: the file handles stand alone.
    assert_eq!(
        m.fs.registrations().len(),
        1,
        "one registration for every file"
    );
    for round in 0..2 {
        buffer.write_at(0, &vec![0xEE; total]).expect("scribble");
        let starts = read_all(&client, handle, &files);
        for (i, want) in wants.iter().enumerate() {
            let mut got = vec![0u8; want.len()];
            buffer.read_at(starts[i], &mut got).expect("copy out");
            assert_same(&format!("round {round}, file {i}"), &got, want);
        }
    }
    let stat = client.stat().expect("stat");
    assert_eq!(stat.registrations_total, 1, "no registration per file");
    // The blocking form, and a read past the end of a file (short).
    let (f3, _) = files[3];
    assert_eq!(
        client
            .read_file(f3, handle, MIB - 10, 0, 100)
            .expect("read"),
        10
    );
    let mut tail = vec![0u8; 10];
    buffer.read_at(0, &mut tail).expect("copy");
    assert_same("tail", &tail, &wants[3][MIB as usize - 10..]);
    // The same files through the registration shorthand still work alongside.
    let f0 = File::open(m.path("f0")).expect("open");
    let shorthand = client
        .register(&f0, &buffer)
        .expect("register(file, buffer)");
    assert_eq!(client.read(shorthand, 0, 0, MIB).expect("read"), 100_000);
    for (file, _) in files {
        client.close(file).expect("close");
    }
    client.unregister(handle).expect("unregister");
    client.unregister(shorthand).expect("unregister");
    assert!(m.fs.registrations().is_empty());
}

#[test]
fn writes_through_file_handles_follow_the_open_mode() {
    require_mount!();
    let _w = Watchdog::new("file handle writes", Duration::from_secs(120));
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    let path = m.path("w");
    std::fs::write(&path, b"").expect("create");
    let client = Client::connect(&m.mnt).expect("connect");
    let buffer = ClientBuffer::new(4 * MIB).expect("buffer");
    let want = data(7, 3 * MIB as usize + 333);
    buffer.write_at(0, &want).expect("fill");
    let handle = client.register_buffer(&buffer).expect("register buffer");
    let read_only = client
        .open(&File::open(&path).expect("open"))
        .expect("open read-only");
    let rw = client
        .open(
            &OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open"),
        )
        .expect("open read-write");
    let info = client.file_info(rw).expect("info");
    assert!(info.readable && info.writable);
    let e = client
        .write_file(read_only, handle, 0, 0, 4096)
        .expect_err("write through a read-only file handle");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    let n = client
        .write_file(rw, handle, 0, 0, want.len() as u64)
        .expect("write");
    assert_eq!(n, want.len() as u64);
    assert_same("written", &std::fs::read(&path).expect("read back"), &want);
    // A buffer registered against the mount needs a file to name.
    let e = client
        .read(handle, 0, 0, 4096)
        .expect_err("buffer handle without a file");
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    // A closed file handle, and one of another client.
    client.close(read_only).expect("close");
    let e = client
        .read_file(read_only, handle, 0, 0, 4096)
        .expect_err("closed file handle");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    let other = Client::connect(&m.mnt).expect("other client");
    let e = other
        .read_file(rw, handle, 0, 0, 4096)
        .expect_err("another client's handles");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    // Unregistered: the buffer handle names nothing.
    client.unregister(handle).expect("unregister");
    let e = client
        .read_file(rw, handle, 0, 0, 4096)
        .expect_err("unregistered buffer");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
}

#[test]
fn deleting_a_file_closes_its_handles() {
    require_mount!();
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    let path = m.path("gone");
    std::fs::write(&path, data(6, 100_000)).expect("write");
    let client = Client::connect(&m.mnt).expect("connect");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    let handle = client.register_buffer(&buffer).expect("register");
    let file = client
        .open(&File::open(&path).expect("open"))
        .expect("open for requests");
    assert_eq!(
        client.read_file(file, handle, 0, 0, MIB).expect("read"),
        100_000
    );
    std::fs::remove_file(&path).expect("unlink");
    // The kernel sends the release of the closed descriptor asynchronously.
    let start = Instant::now();
    let err = loop {
        match client.read_file(file, handle, 0, 0, 4096) {
            Err(e) => break e,
            Ok(_) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(n) => panic!("read {n} bytes of an unlinked, closed file"),
        }
    };
    assert_eq!(err.errno(), libc::EBADF, "{err}");
    // A new file (which may reuse the inode number) is not reachable through the old handle.
    std::fs::write(m.path("new"), data(9, 8192)).expect("write");
    let e = client
        .read_file(file, handle, 0, 0, 4096)
        .expect_err("stale handle");
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    // The buffer registration is untouched.
    let new = client
        .open(&File::open(m.path("new")).expect("open"))
        .expect("open new");
    assert_eq!(
        client.read_file(new, handle, 0, 0, MIB).expect("read"),
        8192
    );
}

#[test]
fn a_buffer_registered_against_the_mount_migrates_under_reads_of_many_files() {
    require_mount!();
    let _w = Watchdog::new("migrate", Duration::from_secs(180));
    let m = Mounted::new(2, 64 * MIB, 64 << 10);
    let wants: Vec<Vec<u8>> = (0..4).map(|i| data(40 + i, 2 * MIB as usize)).collect();
    let client = Client::connect(&m.mnt).expect("connect");
    let buffer = ClientBuffer::new(8 * MIB).expect("buffer");
    let handle = client.register_buffer(&buffer).expect("register");
    let files: Vec<FileHandle> = wants
        .iter()
        .enumerate()
        .map(|(i, want)| {
            let p = m.path(&format!("m{i}"));
            std::fs::write(&p, want).expect("write");
            client.open(&File::open(&p).expect("open")).expect("open")
        })
        .collect();
    for round in 0..3 {
        let requests: Vec<FileRequest> = files
            .iter()
            .enumerate()
            .flat_map(|(i, &file)| {
                (0..8u64).map(move |k| FileRequest {
                    file,
                    buffer: handle,
                    op: Op::Read,
                    file_offset: k * (256 << 10),
                    buffer_offset: i as u64 * 2 * MIB + k * (256 << 10),
                    len: 256 << 10,
                    tag: 0,
                })
            })
            .collect();
        let tickets = client.start_files(&requests).expect("start");
        let report = client
            .migrate(handle)
            .expect("migrate while reads are in flight");
        assert!(report.mappings >= 1);
        for t in tickets {
            assert_eq!(
                client.finish(t).expect("finish"),
                256 << 10,
                "round {round}"
            );
        }
        // What finished before the move was copied; read again after it, all of it.
        for (i, &file) in files.iter().enumerate() {
            client
                .read_file(file, handle, 0, i as u64 * 2 * MIB, 2 * MIB)
                .expect("read after the move");
        }
        for (i, want) in wants.iter().enumerate() {
            let mut got = vec![0u8; want.len()];
            buffer.read_at(i as u64 * 2 * MIB, &mut got).expect("copy");
            assert_same(&format!("round {round} file {i}"), &got, want);
        }
    }
    // Tickets: a finished ticket's outcome is taken once.
    let t = client
        .start_files(&[FileRequest {
            file: files[0],
            buffer: handle,
            op: Op::Read,
            file_offset: 0,
            buffer_offset: 0,
            len: 4096,
            tag: 0,
        }])
        .expect("start")[0];
    let done = client.finish_some(&[t], 1).expect("finish some");
    assert_eq!(done.len(), 1);
    assert_eq!(*done[0].1.as_ref().expect("ok"), 4096);
    assert_eq!(
        client.finish(t).expect_err("taken already").errno(),
        libc::ENOENT
    );
}
