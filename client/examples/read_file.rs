//! `read_file FILE`: reads FILE (on a stripefs mount) through a registered buffer, four
//! requests of 1 MiB in flight, and writes it to standard output in order.
//!
//! cargo run -p stripefs-client --example read_file -- /mnt/stripefs/data.bin | sha256sum

use std::fs::File;
use std::io::Write;

use stripefs_client::{Client, ClientBuffer, Completion, Op, Request};

const CHUNK: u64 = 1 << 20;
const QUEUE: u64 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: read_file FILE")?;
    let file = File::open(&path)?;
    let size = file.metadata()?.len();
    let client = Client::connect(&path)?; // finds the daemon from the path
    let buffer = ClientBuffer::new(QUEUE * CHUNK)?; // sealed memfd, mapped here and there
    let handle = client.register(&file, &buffer)?; // once per (file, buffer)
    let mut out = std::io::stdout().lock();
    let mut chunk = vec![0u8; CHUNK as usize];
    let mut at = 0;
    while at < size {
        let requests: Vec<Request> = (0..QUEUE)
            .filter(|i| at + i * CHUNK < size)
            .map(|i| Request {
                handle,
                op: Op::Read,
                file_offset: at + i * CHUNK,
                buffer_offset: i * CHUNK,
                len: CHUNK,
                tag: i,
            })
            .collect();
        let mut sent = 0;
        while sent < requests.len() {
            sent += client.submit(&requests[sent..])?; // one system call at most
        }
        let mut done: Vec<Completion> = Vec::new();
        while done.len() < requests.len() {
            client.wait(requests.len() - done.len(), &mut done)?; // sleeps on an eventfd
        }
        done.sort_by_key(|c| c.tag);
        for c in &done {
            let n = c.result? as usize; // bytes, short only at end of file
            buffer.read_at(c.tag * CHUNK, &mut chunk[..n])?;
            out.write_all(&chunk[..n])?;
        }
        at += QUEUE * CHUNK;
    }
    client.unregister(handle)?;
    Ok(())
}
