//! Lifetime: a client process killed (SIGKILL) in the middle of reads and writes has its
//! registrations released while the daemon goes on serving another client and the filesystem
//! stays consistent (fsck); a client dropped with requests in flight; a server that stops
//! while clients are connected.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{Mounted, Watchdog, assert_same, child, child_task, data, task_parts};
use stripefs_client::{Client, ClientBuffer, ClientError, Completion, Op, Request};

const MIB: u64 = 1 << 20;

/// Entry point of the child processes of this file (a no-op in a normal run).
#[test]
fn child_process_entry() {
    let Some(task) = child_task() else { return };
    match task_parts(&task).as_slice() {
        // hammer:READ_FILE:WRITE_FILE — forever: 8 reads of READ_FILE and 8 writes to
        // WRITE_FILE in flight; prints STRIPEFS-CHILD-READY once the first round is done.
        ["hammer", read_path, write_path] => {
            let r = File::open(read_path).expect("child: open");
            let w = OpenOptions::new()
                .read(true)
                .write(true)
                .open(write_path)
                .expect("child: open for writing");
            let client = Client::connect(read_path).expect("child: connect");
            let buffer = ClientBuffer::new(16 * MIB).expect("child: buffer");
            let hr = client.register(&r, &buffer).expect("child: register");
            let hw = client.register(&w, &buffer).expect("child: register");
            let mut round = 0u64;
            loop {
                let requests: Vec<Request> = (0..16u64)
                    .map(|i| Request {
                        handle: if i < 8 { hr } else { hw },
                        op: if i < 8 { Op::Read } else { Op::Write },
                        file_offset: (i % 8) * MIB,
                        buffer_offset: i * MIB,
                        len: MIB,
                        tag: i,
                    })
                    .collect();
                let mut sent = 0;
                let mut done: Vec<Completion> = Vec::new();
                while done.len() < requests.len() {
                    if sent < requests.len() {
                        sent += client.submit(&requests[sent..]).expect("child: submit");
                    }
                    client.wait(1, &mut done).expect("child: wait");
                }
                assert!(done.iter().all(|c| c.result == Ok(MIB)), "child: {done:?}");
                if round == 0 {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "\nSTRIPEFS-CHILD-READY").expect("child: stdout");
                    out.flush().expect("child: flush");
                }
                round += 1;
            }
        }
        other => panic!("unknown child task {other:?}"),
    }
}

#[test]
fn a_client_killed_mid_io_is_cleaned_up_and_the_mount_stays_consistent() {
    require_mount!();
    let _w = Watchdog::new("killed client", Duration::from_secs(180));
    let m = Mounted::new(3, 96 * MIB, 64 << 10);
    let want = data(21, 8 * MIB as usize);
    let read_path = m.path("read.bin");
    let write_path = m.path("write.bin");
    std::fs::write(&read_path, &want).expect("write");
    std::fs::write(&write_path, data(22, 8 * MIB as usize)).expect("write");
    for attempt in 0..3 {
        let mut victim = child(
            "child_process_entry",
            &format!("hammer:{}:{}", read_path.display(), write_path.display()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
        let stdout = victim.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                // The harness may print on the same line ("test child_process_entry ... ").
                Some(Ok(line)) if line.contains("STRIPEFS-CHILD-READY") => break,
                Some(Ok(_)) => continue,
                other => panic!("child ended before it was ready: {other:?}"),
            }
        }
        let pid = victim.id();
        let before = m.server().stat();
        let theirs = before.registrations.iter().filter(|r| r.pid == pid).count();
        assert_eq!(theirs, 2, "the child's registrations in stat: {before:?}");
        // Let it run, then kill it in the middle of its requests.
        std::thread::sleep(Duration::from_millis(100 + 100 * attempt));
        victim.kill().expect("SIGKILL");
        victim.wait().expect("reap");
        m.wait_for_no_connections(Duration::from_secs(10));
        assert!(
            m.fs.registrations().is_empty(),
            "registrations outlived the killed client: {:?}",
            m.fs.registrations()
        );
        // The daemon serves another client, and the data is intact.
        let client = Client::connect(&read_path).expect("connect after the kill");
        let f = File::open(&read_path).expect("open");
        let buffer = ClientBuffer::new(8 * MIB).expect("buffer");
        let h = client
            .register(&f, &buffer)
            .expect("register after the kill");
        assert_eq!(client.read(h, 0, 0, 8 * MIB).expect("read"), 8 * MIB);
        let mut got = vec![0u8; 8 * MIB as usize];
        buffer.read_at(0, &mut got).expect("copy");
        assert_same("file read after the kill", &got, &want);
        drop(client);
    }
    // The file the killed clients wrote is whole: 8 MiB, readable through the mount.
    let written = std::fs::read(&write_path).expect("read the written file");
    assert_eq!(written.len(), 8 * MIB as usize);
    m.close_and_fsck();
}

#[test]
fn dropping_a_client_with_requests_in_flight_releases_its_registrations() {
    require_mount!();
    let _w = Watchdog::new("dropped client", Duration::from_secs(120));
    let m = Mounted::new(2, 64 * MIB, 64 << 10);
    std::fs::write(m.path("f"), data(7, 16 * MIB as usize)).expect("write");
    let f = File::open(m.path("f")).expect("open");
    for _ in 0..5 {
        let client = Client::connect(&m.mnt).expect("connect");
        let buffer = ClientBuffer::new(16 * MIB).expect("buffer");
        let h = client.register(&f, &buffer).expect("register");
        let requests: Vec<Request> = (0..64u64)
            .map(|i| Request {
                handle: h,
                op: Op::Read,
                file_offset: (i % 16) * MIB,
                buffer_offset: (i % 16) * MIB,
                len: MIB,
                tag: i,
            })
            .collect();
        assert_eq!(client.submit(&requests).expect("submit"), 64);
        drop(client);
    }
    m.wait_for_no_connections(Duration::from_secs(10));
    assert!(m.fs.registrations().is_empty());
}

#[test]
fn clients_see_a_stopped_server_as_disconnected() {
    require_mount!();
    let _w = Watchdog::new("server stop", Duration::from_secs(120));
    let mut m = Mounted::new(2, 32 * MIB, 64 << 10);
    std::fs::write(m.path("f"), data(8, MIB as usize)).expect("write");
    let f = File::open(m.path("f")).expect("open");
    let client = Client::connect(&m.mnt).expect("connect");
    let buffer = ClientBuffer::new(MIB).expect("buffer");
    let h = client.register(&f, &buffer).expect("register");
    let socket = m.server().socket_path().to_path_buf();
    m.server.take().expect("server").shutdown();
    assert!(!socket.exists(), "the socket file is removed");
    assert!(m.fs.registrations().is_empty());
    let e = client
        .read(h, 0, 0, 4096)
        .expect_err("read after the server stopped");
    assert!(
        matches!(e, ClientError::Disconnected) || e.errno() == libc::ENOTCONN,
        "{e}"
    );
    let e = Client::connect(&m.mnt).expect_err("connect with no server");
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
}
