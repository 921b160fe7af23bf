//! A concurrent crash workload: several threads create files, write them, fsync them (so
//! their fsyncs share commits) and unlink older ones, on a metadata log small enough to
//! wrap. No single order of states exists, so the oracle is per file: every file whose fsync
//! returned before the crash point, and whose unlink had not started, has exactly its bytes;
//! any other file that is there holds a prefix of what was written to it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use stripefs_engine::WriteEvent;
use stripefs_fs::filesystem::{Caller, Filesystem, MkfsOptions, XattrFlags};

use super::workload::{self, open_recorded};

const THREADS: u64 = 3;
const FILES: u64 = 60;
/// Markers of this workload: `CONCURRENT | kind << 56 | thread << 32 | file`.
const CONCURRENT: u64 = 1 << 63;
const FSYNCED: u64 = 1;
const UNLINKING: u64 = 2;

fn tag(kind: u64, thread: u64, file: u64) -> u64 {
    CONCURRENT | kind << 56 | thread << 32 | file
}

fn name(file: u64) -> String {
    format!("f{file}")
}

/// What file `file` of `thread` holds.
pub fn contents(thread: u64, file: u64) -> Vec<u8> {
    workload::data(
        thread << 32 | file,
        0,
        4096 + ((thread * 13 + file * 7919) % 36_000) as usize,
    )
}

/// The recording of a run and the devices' contents before it.
pub struct ConcurrentRun {
    pub events: Vec<WriteEvent>,
    pub base: Vec<Vec<u8>>,
}

/// Runs the workload on fresh devices in `dir`.
pub fn run(dir: &Path, count: usize, size: u64) -> ConcurrentRun {
    let specs = workload::specs(dir, count, size);
    let options = MkfsOptions {
        stripe_unit: 16 << 10,
        metadata_size: Some(1 << 20),
        ..MkfsOptions::default()
    };
    stripefs_fs::filesystem::mkfs(&specs, &options).expect("mkfs");
    let base = specs
        .iter()
        .map(|s| std::fs::read(workload::backing(s)).expect("base image"))
        .collect();
    let log = stripefs_engine::WriteLog::new();
    let fs = open_recorded(&specs, &log);
    let who = Caller::default();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (fs, log) = (fs.clone(), log.clone());
            let dir = fs
                .mkdir(1, OsStr::new(&format!("t{t}")), 0o755, who)
                .expect("mkdir")
                .ino;
            std::thread::spawn(move || writer(&fs, &log, t, dir))
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    drop(fs);
    ConcurrentRun {
        events: log.events(),
        base,
    }
}

fn writer(fs: &Arc<Filesystem>, log: &stripefs_engine::WriteLog, t: u64, dir: u64) {
    static BIG: [u8; 3000] = [0xC3; 3000];
    for i in 0..FILES {
        let ino = fs
            .create(dir, OsStr::new(&name(i)), 0o644, Caller::default())
            .expect("create")
            .ino;
        fs.write(ino, 0, &contents(t, i)).expect("write");
        fs.setxattr(
            ino,
            OsStr::new("user.test.pad"),
            &BIG,
            XattrFlags::default(),
        )
        .expect("setxattr");
        fs.fsync(ino).expect("fsync");
        log.mark(tag(FSYNCED, t, i));
        // Unlink most older files (every fifth stays), so the metadata stays small.
        if i >= 4 && (i - 4) % 5 != 0 {
            log.mark(tag(UNLINKING, t, i - 4));
            fs.unlink(dir, OsStr::new(&name(i - 4))).expect("unlink");
        }
    }
}

/// What the markers before a crash point promise.
#[derive(Default)]
pub struct Promises {
    fsynced: BTreeSet<(u64, u64)>,
    unlinking: BTreeSet<(u64, u64)>,
}

impl Promises {
    /// Takes a marker into account; `false` if it is not one of this workload's.
    pub fn note(&mut self, tag: u64) -> bool {
        if tag & CONCURRENT == 0 {
            return false;
        }
        let key = ((tag >> 32) & 0xFF_FFFF, tag & 0xFFFF_FFFF);
        match (tag >> 56) & 0x7F {
            FSYNCED => self.fsynced.insert(key),
            UNLINKING => self.unlinking.insert(key),
            _ => false,
        };
        true
    }

    /// Judges the recovered filesystem.
    pub fn judge(&self, fs: &Filesystem) -> Result<(), String> {
        let mut present: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
        for t in 0..THREADS {
            let Ok(dir) = fs.lookup(1, OsStr::new(&format!("t{t}"))) else {
                continue;
            };
            for i in 0..FILES {
                if let Ok(a) = fs.lookup(dir.ino, OsStr::new(&name(i))) {
                    let bytes = fs
                        .read(a.ino, 0, a.size as u32)
                        .map_err(|e| format!("read t{t}/f{i}: {e}"))?;
                    present.insert((t, i), bytes);
                }
            }
        }
        for key in self.fsynced.difference(&self.unlinking) {
            let (t, i) = *key;
            match present.get(key) {
                None => return Err(format!("t{t}/f{i} lost although its fsync returned")),
                Some(b) if *b != contents(t, i) => {
                    return Err(format!("t{t}/f{i} differs although its fsync returned"));
                }
                Some(_) => {}
            }
        }
        for (&(t, i), bytes) in &present {
            let want = contents(t, i);
            if bytes.len() > want.len() || *bytes != want[..bytes.len()] {
                return Err(format!("t{t}/f{i} holds bytes never written to it"));
            }
        }
        Ok(())
    }
}
