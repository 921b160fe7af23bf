//! Registered I/O through the control endpoint of a real FUSE mount: another process reads a
//! file written through the mount byte for byte; many requests in flight with blocking and
//! polling waits; registered writes seen through the mount; migration while requests are in
//! flight; `stat`; discovery from a path on the mount.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Mounted, Watchdog, assert_same, child, child_task, data, task_parts};
use stripefs_client::{Client, ClientBuffer, ClientOptions, Completion, Handle, Op, Request};

const MIB: u64 = 1 << 20;

/// Entry point of the child processes of this file (a no-op in a normal run).
#[test]
fn child_process_entry() {
    let Some(task) = child_task() else { return };
    let parts = task_parts(&task);
    match parts.as_slice() {
        // read:FILE:OUT — read FILE through a registered buffer, 8 requests in flight of
        // 1 MiB each, and write what was read to OUT (a file off the mount).
        ["read", file, out] => {
            let f = File::open(file).expect("child: open file on the mount");
            let client = Client::connect(file).expect("child: connect from the file's path");
            let size = f.metadata().expect("child: stat").len();
            let buffer = ClientBuffer::new(size.max(1)).expect("child: buffer");
            let handle = client.register(&f, &buffer).expect("child: register");
            let chunk = MIB;
            let requests: Vec<Request> = (0..size.div_ceil(chunk))
                .map(|i| Request {
                    handle,
                    op: Op::Read,
                    file_offset: i * chunk,
                    buffer_offset: i * chunk,
                    len: chunk.min(size - i * chunk),
                    tag: i,
                })
                .collect();
            let mut done = Vec::new();
            let mut next = 0;
            while done.len() < requests.len() {
                if next < requests.len() {
                    match client.submit(&requests[next..(next + 8).min(requests.len())]) {
                        Ok(n) => next += n,
                        Err(stripefs_client::ClientError::Busy { .. }) => {}
                        Err(e) => panic!("child: submit: {e}"),
                    }
                }
                client.wait(1, &mut done).expect("child: wait");
            }
            for c in &done {
                let want = requests[c.tag as usize].len;
                assert_eq!(c.result, Ok(want), "child: request {} result", c.tag);
            }
            let mut bytes = vec![0u8; size as usize];
            buffer.read_at(0, &mut bytes).expect("child: copy out");
            std::fs::write(out, &bytes).expect("child: write output");
            client.unregister(handle).expect("child: unregister");
        }
        other => panic!("unknown child task {other:?}"),
    }
}

#[test]
fn another_process_reads_a_file_written_through_the_mount_byte_for_byte() {
    require_mount!();
    let _w = Watchdog::new("two processes", Duration::from_secs(120));
    let m = Mounted::new(3, 96 * MIB, 64 << 10);
    let size = 13 * MIB as usize + 4321;
    let want = data(11, size);
    let path = m.path("written.bin");
    {
        let mut f = File::create(&path).expect("create on the mount");
        for piece in want.chunks(300_007) {
            f.write_all(piece).expect("write through the mount");
        }
        f.sync_all().expect("fsync");
    }
    let out = m.dir.path().join("child-read.bin");
    let status = child(
        "child_process_entry",
        &format!("read:{}:{}", path.display(), out.display()),
    )
    .output()
    .expect("spawn child");
    assert!(
        status.status.success(),
        "child client failed ({}): {}",
        status.status,
        String::from_utf8_lossy(&status.stderr)
    );
    let got = std::fs::read(&out).expect("child output");
    assert_same("bytes read by the other process", &got, &want);
    m.wait_for_no_connections(Duration::from_secs(10));
    assert!(
        m.fs.registrations().is_empty(),
        "the child's registration outlived it"
    );
}

#[test]
fn many_requests_in_flight_with_blocking_and_polling_waits() {
    require_mount!();
    let _w = Watchdog::new("many in flight", Duration::from_secs(120));
    let m = Mounted::new(4, 64 * MIB, 32 << 10);
    let size = 8 * MIB as usize;
    let want = data(3, size);
    let path = m.path("f");
    std::fs::write(&path, &want).expect("write through the mount");
    let f = File::open(&path).expect("open");
    let client = Client::connect_with(
        &m.mnt,
        ClientOptions {
            entries: 64,
            workers: 4,
        },
    )
    .expect("connect from the mountpoint");
    let buffer = ClientBuffer::new(size as u64).expect("buffer");
    let handle = client.register(&f, &buffer).expect("register");
    let info = client.registration(handle).expect("info");
    assert!(info.readable && !info.writable);
    assert_eq!(info.devices, 4);
    // 256 requests of 32 KiB with odd offsets, through a ring of 64: submit what fits, reap,
    // repeat. Half the rounds wait blocking, half polling.
    let piece = 32 << 10;
    let requests: Vec<Request> = (0..(size as u64 / piece))
        .map(|i| Request {
            handle,
            op: Op::Read,
            file_offset: i * piece,
            buffer_offset: i * piece,
            len: piece,
            tag: 1000 + i,
        })
        .collect();
    for round in 0..2 {
        buffer
            .write_at(0, &vec![0xEE; size])
            .expect("clear the buffer");
        let mut done: Vec<Completion> = Vec::new();
        let mut next = 0;
        while done.len() < requests.len() {
            if next < requests.len() {
                match client.submit(&requests[next..]) {
                    Ok(n) => next += n,
                    Err(stripefs_client::ClientError::Busy { .. }) => {}
                    Err(e) => panic!("submit: {e}"),
                }
            }
            if round == 0 {
                client.wait(8, &mut done).expect("wait");
            } else {
                client.wait_polling(8, &mut done).expect("wait_polling");
            }
        }
        let mut tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
        tags.sort_unstable();
        assert_eq!(tags, requests.iter().map(|r| r.tag).collect::<Vec<_>>());
        assert!(done.iter().all(|c| c.result == Ok(piece)), "{done:?}");
        let mut got = vec![0u8; size];
        buffer.read_at(0, &mut got).expect("copy out");
        assert_same(&format!("round {round}"), &got, &want);
    }
    assert_eq!(client.in_flight(), 0);
    let mut none = Vec::new();
    assert_eq!(client.poll(&mut none).expect("poll"), 0);
    // Unaligned ranges are bounced by the filesystem; the result is the same bytes.
    buffer.write_at(0, &vec![0u8; 9000]).expect("clear");
    let n = client
        .read(handle, 12_345, 777, 8000)
        .expect("unaligned read");
    assert_eq!(n, 8000);
    let mut got = vec![0u8; 8000];
    buffer.read_at(777, &mut got).expect("copy out");
    assert_same("unaligned read", &got, &want[12_345..20_345]);
    // Reading past the end is short.
    let n = client
        .read(handle, size as u64 - 100, 0, 4096)
        .expect("read at the end");
    assert_eq!(n, 100);
    assert_eq!(
        client
            .read(handle, size as u64 + 5, 0, 4096)
            .expect("past the end"),
        0
    );
    // Aligned reads (run by the daemon's ring thread) and unaligned ones (run by its workers)
    // in flight together, on a file whose size is not a multiple of the block: the aligned
    // read that crosses the end is short, the one past it reads nothing.
    let odd = 300_000usize;
    let want_odd = data(4, odd);
    let path = m.path("odd");
    std::fs::write(&path, &want_odd).expect("write through the mount");
    let g = File::open(&path).expect("open");
    let h2 = client.register(&g, &buffer).expect("register");
    buffer
        .write_at(0, &vec![0xEE; size])
        .expect("clear the buffer");
    let ranges: Vec<(u64, u64, u64)> = vec![
        (0, 65536, 0),
        (4096, 12_288, 1 << 20),
        (1000, 50_000, (2 << 20) + 1000),
        (294_912, 8192, 3 << 20), // the last block is partial: 5088 bytes
        (303_104, 4096, 4 << 20), // past the end
        (123, 4096, (5 << 20) + 7),
        (131_072, 131_072, 6 << 20),
    ];
    let sqes: Vec<Request> = ranges
        .iter()
        .enumerate()
        .map(|(i, &(file_offset, len, buffer_offset))| Request {
            handle: h2,
            op: Op::Read,
            file_offset,
            buffer_offset,
            len,
            tag: i as u64,
        })
        .collect();
    assert_eq!(client.submit(&sqes).expect("submit"), sqes.len());
    let mut done: Vec<Completion> = Vec::new();
    while done.len() < sqes.len() {
        client.wait(1, &mut done).expect("wait");
    }
    for c in &done {
        let (file_offset, len, buffer_offset) = ranges[c.tag as usize];
        let end = (file_offset + len)
            .min(odd as u64)
            .max(file_offset.min(odd as u64));
        let expect = &want_odd[file_offset.min(odd as u64) as usize..end as usize];
        assert_eq!(c.result, Ok(expect.len() as u64), "request {}", c.tag);
        let mut got = vec![0u8; expect.len()];
        buffer.read_at(buffer_offset, &mut got).expect("copy out");
        assert_same(&format!("mixed request {}", c.tag), &got, expect);
    }
}

#[test]
fn registered_writes_are_seen_through_the_mount_and_by_threads_sharing_a_client() {
    require_mount!();
    let _w = Watchdog::new("writes", Duration::from_secs(120));
    let m = Mounted::new(2, 64 * MIB, 64 << 10);
    let path = m.path("out.bin");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    let client = Arc::new(Client::connect(&path).expect("connect"));
    let size = 4 * MIB as usize;
    let want = data(5, size);
    let buffer = ClientBuffer::new(size as u64).expect("buffer");
    buffer.write_at(0, &want).expect("fill");
    let handle = client.register(&f, &buffer).expect("register");
    // Four threads, each writing its quarter with blocking writes of 256 KiB.
    let quarter = size as u64 / 4;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut at = t * quarter;
                while at < (t + 1) * quarter {
                    let n = client.write(handle, at, at, 256 << 10).expect("write");
                    assert_eq!(n, 256 << 10);
                    at += n;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let through_mount = std::fs::read(&path).expect("read through the mount");
    assert_same(
        "registered writes read through the mount",
        &through_mount,
        &want,
    );
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        size as u64,
        "the size seen through the mount"
    );
    client.unregister(handle).expect("unregister");
    assert!(m.fs.registrations().is_empty());
}

#[test]
fn migrating_the_buffer_while_requests_are_in_flight_keeps_every_byte() {
    require_mount!();
    let _w = Watchdog::new("migrate", Duration::from_secs(120));
    let m = Mounted::new(3, 64 * MIB, 64 << 10);
    let size = 6 * MIB as usize;
    let want = data(8, size);
    let path = m.path("m.bin");
    std::fs::write(&path, &want).expect("write");
    let f = File::open(&path).expect("open");
    let client = Arc::new(Client::connect(&path).expect("connect"));
    let buffer = ClientBuffer::new(size as u64).expect("buffer");
    let handle = client.register(&f, &buffer).expect("register");
    // The buffer holds the file before the reader starts: every read after that writes the
    // same bytes again, so a migration at any moment must keep exactly these contents.
    assert_eq!(
        client.read(handle, 0, 0, size as u64).expect("read"),
        size as u64
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader keeps 6 requests of 1 MiB in flight, over and over.
    let reader = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 3 {
                let reqs: Vec<Request> = (0..6u64)
                    .map(|i| Request {
                        handle,
                        op: Op::Read,
                        file_offset: i * MIB,
                        buffer_offset: i * MIB,
                        len: MIB,
                        tag: i,
                    })
                    .collect();
                let mut sent = 0;
                let mut done = Vec::new();
                while done.len() < reqs.len() {
                    if sent < reqs.len() {
                        sent += client.submit(&reqs[sent..]).unwrap_or(0);
                    }
                    client.wait(1, &mut done).expect("wait");
                }
                assert!(done.iter().all(|c| c.result == Ok(MIB)), "{done:?}");
                rounds += 1;
            }
            rounds
        })
    };
    let mut migrations = 0;
    let start = Instant::now();
    while migrations < 10 || start.elapsed() < Duration::from_millis(300) {
        let report = client.migrate(handle).expect("migrate");
        assert_eq!(report.mappings, 1);
        migrations += 1;
        let mut got = vec![0u8; size];
        buffer.read_at(0, &mut got).expect("copy out");
        assert_same(&format!("buffer after migration {migrations}"), &got, &want);
        if migrations > 200 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = reader.join().expect("reader");
    assert!(rounds >= 3);
    // After the moves, reads land in the client's current pages.
    buffer.write_at(0, &vec![0u8; size]).expect("clear");
    assert_eq!(
        client.read(handle, 0, 0, size as u64).expect("read"),
        size as u64
    );
    let mut got = vec![0u8; size];
    buffer.read_at(0, &mut got).expect("copy out");
    assert_same("read after migrations", &got, &want);
    let stat = client.stat().expect("stat");
    let reg = stat
        .registrations
        .iter()
        .find(|r| r.connection == client.connection())
        .expect("our registration in stat");
    assert_eq!(reg.migrations, migrations);
}

#[test]
fn one_buffer_registered_against_two_files_migrates_as_one() {
    require_mount!();
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    let (a, b) = (data(1, MIB as usize), data(2, MIB as usize));
    std::fs::write(m.path("a"), &a).expect("write a");
    std::fs::write(m.path("b"), &b).expect("write b");
    let fa = File::open(m.path("a")).expect("open a");
    let fb = File::open(m.path("b")).expect("open b");
    let client = Client::connect(&m.mnt).expect("connect");
    let buffer = ClientBuffer::new(2 * MIB).expect("buffer");
    let ha = client.register(&fa, &buffer).expect("register a");
    let hb = client.register(&fb, &buffer).expect("register b");
    client.read(ha, 0, 0, MIB).expect("read a");
    let report = client.migrate(hb).expect("migrate through b");
    assert_eq!(report.mappings, 2, "both registrations of the buffer moved");
    client.read(hb, 0, MIB, MIB).expect("read b");
    let mut got = vec![0u8; 2 * MIB as usize];
    buffer.read_at(0, &mut got).expect("copy out");
    assert_same("a then b", &got, &[a, b].concat());
    // A buffer shared with a second client cannot be migrated (its other view would stale).
    let other = Client::connect(&m.mnt).expect("second client");
    let hc = other
        .register(&fa, &buffer)
        .expect("register on the second client");
    let err = client.migrate(ha).expect_err("shared buffer");
    assert_eq!(err.errno(), libc::EBUSY, "{err}");
    other.unregister(hc).expect("unregister");
    client.migrate(ha).expect("migrate once alone again");
}

#[test]
fn stat_shows_devices_and_live_registrations() {
    require_mount!();
    let m = Mounted::new(3, 32 * MIB, 64 << 10);
    std::fs::write(m.path("s"), data(4, 3 * MIB as usize)).expect("write");
    let f = File::open(m.path("s")).expect("open");
    let client = Client::connect(m.path("s")).expect("connect");
    let buffer = ClientBuffer::new(3 * MIB).expect("buffer");
    let handle = client.register(&f, &buffer).expect("register");
    client.read(handle, 0, 0, 3 * MIB).expect("read");
    let stat = client.stat().expect("stat");
    assert_eq!(stat.devices.len(), 3);
    assert!(
        stat.devices.iter().all(|d| d.reads > 0 && d.bytes_read > 0),
        "{stat:?}"
    );
    assert_eq!(stat.registrations_total, 1);
    let reg = &stat.registrations[0];
    assert_eq!(reg.connection, client.connection());
    assert_eq!(reg.pid, std::process::id());
    assert_eq!(reg.buffer_len, 3 * MIB);
    assert_eq!(reg.requests, 1);
    assert_eq!(reg.access, 1);
    assert!(stat.connections >= 1);
    client.unregister(handle).expect("unregister");
    assert_eq!(client.stat().expect("stat").registrations_total, 0);
}

#[test]
fn unlinking_a_registered_file_revokes_the_registration() {
    require_mount!();
    let m = Mounted::new(2, 32 * MIB, 64 << 10);
    let path = m.path("gone");
    std::fs::write(&path, data(6, 100_000)).expect("write");
    let client = Client::connect(&m.mnt).expect("connect");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    let handle = {
        let f = File::open(&path).expect("open");
        client.register(&f, &buffer).expect("register")
    };
    assert_eq!(client.read(handle, 0, 0, MIB).expect("read"), 100_000);
    std::fs::remove_file(&path).expect("unlink");
    // The kernel sends the release of the closed descriptor asynchronously; the inode goes
    // (and the registration with it) once both have arrived.
    let start = Instant::now();
    let err = loop {
        match client.read(handle, 0, 0, 4096) {
            Err(e) => break e,
            Ok(_) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(n) => panic!("read {n} bytes of an unlinked, closed file"),
        }
    };
    assert_eq!(err.errno(), libc::EBADF, "{err}");
    let _ = client.unregister(handle);
    let _ = Handle::from_raw(handle.raw());
}
