//! Crash workloads: operations run on a real filesystem over recorded emulated devices and,
//! step by step, on the reference model. Markers in the recording say where each operation
//! started and which fsyncs had returned.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use stripefs_engine::{DeviceQueue, DeviceSpec, WriteLog};
use stripefs_fs::filesystem::{
    Caller, CopyRange, Fallocate, FileType, Filesystem, LAYOUT_XATTR, MkfsOptions, RenameFlags,
    SetAttr, XattrFlags,
};

use super::model::{History, Kind, Model, Recovered, Shape, ShapeKind};

const ROOT: u64 = 1;

/// One step of a workload.
#[derive(Clone, Debug)]
pub enum Op {
    Create(&'static str),
    Mkdir(&'static str),
    Symlink(&'static str, &'static str),
    /// A FIFO, socket or device node (with its device number).
    Mknod(&'static str, FileType, u32),
    /// Writes `len` bytes of pattern `seed` at `offset`.
    Write {
        path: &'static str,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Truncate(&'static str, u64),
    Unlink(&'static str),
    Rmdir(&'static str),
    Rename(&'static str, &'static str),
    /// `rename` with `RENAME_EXCHANGE`.
    Exchange(&'static str, &'static str),
    /// `fallocate(path, offset, len)`.
    Fallocate(&'static str, u64, u64, Fallocate),
    /// `copy_file_range` of `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`.
    Copy {
        src: &'static str,
        src_offset: u64,
        dst: &'static str,
        dst_offset: u64,
        len: u64,
    },
    Link(&'static str, &'static str),
    SetXattr(&'static str, &'static str, &'static [u8]),
    RemoveXattr(&'static str, &'static str),
    /// Sets the layout attribute of a directory (or an empty file).
    SetLayout(&'static str, &'static str),
    Fsync(&'static str),
    Fdatasync(&'static str),
    /// Every change so far made durable (what `syncfs` would do).
    Sync,
    /// A clean unmount (final checkpoint) and a mount (checkpoint at mount).
    Remount,
}

/// A named list of steps and the filesystem it runs on.
pub struct Workload {
    pub name: &'static str,
    pub mkfs: MkfsOptions,
    pub ops: Vec<Op>,
}

/// What markers mean: `tag = op << 2 | kind`.
pub const MARK_START: u64 = 0;
pub const MARK_FSYNC: u64 = 1;
pub const MARK_DATASYNC: u64 = 2;

/// A run of a workload: the recording, the base images and the model's history.
pub struct Run {
    pub events: Vec<stripefs_engine::WriteEvent>,
    pub base: Vec<Vec<u8>>,
    pub history: History,
    /// Per `fdatasync` operation index: the node it made durable.
    pub datasync_nodes: BTreeMap<usize, u64>,
}

/// The specs of `count` emulated devices of `size` bytes backed by files in `dir`.
pub fn specs(dir: &Path, count: usize, size: u64) -> Vec<DeviceSpec> {
    (0..count)
        .map(|i| {
            format!(
                "emu:{}/d{i}.img,size={size},lba=4096,mdts=1M",
                dir.display()
            )
            .parse()
            .expect("device spec")
        })
        .collect()
}

/// Opens the devices, recording into `log`.
pub fn open_recorded(specs: &[DeviceSpec], log: &Arc<WriteLog>) -> Arc<Filesystem> {
    let devices: Vec<DeviceQueue> = specs
        .iter()
        .map(|s| DeviceQueue::open(s).expect("open device"))
        .collect();
    for (i, d) in devices.iter().enumerate() {
        d.record_to(log.clone(), i);
    }
    Filesystem::open_devices(devices).expect("mount")
}

/// Runs `w` on fresh devices in `dir`, recording every device write and flush.
pub fn run(w: &Workload, dir: &Path, count: usize, size: u64) -> Run {
    let specs = specs(dir, count, size);
    stripefs_fs::filesystem::mkfs(&specs, &w.mkfs).expect("mkfs");
    let base = specs
        .iter()
        .map(|s| std::fs::read(backing(s)).expect("read base image"))
        .collect();
    let log = WriteLog::new();
    let mut fs = open_recorded(&specs, &log);
    let mut model = Model::new();
    model.node_mut("").layout = Some(layout_of(&fs, ROOT));
    let mut states = vec![model.clone()];
    let mut datasync_nodes = BTreeMap::new();
    for (i, op) in w.ops.iter().enumerate() {
        log.mark((i as u64) << 2 | MARK_START);
        match op {
            Op::Remount => {
                fs.shutdown().expect("unmount");
                drop(fs);
                fs = open_recorded(&specs, &log);
            }
            Op::Fsync(p) => {
                fs.fsync(resolve(&fs, p)).expect("fsync");
                log.mark((i as u64) << 2 | MARK_FSYNC);
            }
            Op::Sync => {
                fs.sync().expect("sync");
                log.mark((i as u64) << 2 | MARK_FSYNC);
            }
            Op::Fdatasync(p) => {
                fs.fdatasync(resolve(&fs, p)).expect("fdatasync");
                datasync_nodes.insert(i, model.lookup(p).expect("model node"));
                log.mark((i as u64) << 2 | MARK_DATASYNC);
            }
            other => {
                let before = fs.changes_made();
                apply(&fs, &mut model, other);
                let changes = fs.changes_made() - before;
                // A commit may land between any two changes (the periodic committer, another
                // file's fsync), so an operation made of two could be seen half done.
                // Writes are exempt: POSIX promises no atomicity for them across a crash.
                assert!(
                    changes <= 1 || matches!(other, Op::Write { .. }),
                    "{}: operation {i} ({other:?}) made {changes} metadata changes; it must be one change to be atomic across a crash",
                    w.name
                );
            }
        }
        states.push(model.clone());
    }
    drop(fs);
    Run {
        events: log.events(),
        base,
        history: History { states },
        datasync_nodes,
    }
}

/// The file behind an emulated spec.
pub fn backing(spec: &DeviceSpec) -> std::path::PathBuf {
    match spec {
        DeviceSpec::Emulated(e) => match &e.backing {
            stripefs_engine::spec::Backing::File(p) => p.clone(),
            stripefs_engine::spec::Backing::Memory => panic!("crash images need file backings"),
        },
        DeviceSpec::Path(p) => p.clone(),
    }
}

fn apply(fs: &Filesystem, model: &mut Model, op: &Op) {
    let who = Caller::default();
    match *op {
        Op::Create(p) => {
            let (dir, name) = parent(fs, p);
            let ino = fs
                .create(dir, OsStr::new(name), 0o644, who)
                .expect("create")
                .ino;
            model.add(
                p,
                Kind::File(Arc::new(Vec::new())),
                Some(layout_of(fs, ino)),
            );
        }
        Op::Mkdir(p) => {
            let (dir, name) = parent(fs, p);
            let ino = fs
                .mkdir(dir, OsStr::new(name), 0o755, who)
                .expect("mkdir")
                .ino;
            model.add(p, Kind::Dir(BTreeMap::new()), Some(layout_of(fs, ino)));
        }
        Op::Symlink(p, target) => {
            let (dir, name) = parent(fs, p);
            fs.symlink(dir, OsStr::new(name), target.as_bytes(), who)
                .expect("symlink");
            model.add(p, Kind::Symlink(target.to_string()), None);
        }
        Op::Mknod(p, kind, rdev) => {
            let (dir, name) = parent(fs, p);
            let attr = fs
                .mknod(dir, OsStr::new(name), kind, 0o640, rdev, who)
                .expect("mknod");
            assert_eq!((attr.kind, attr.rdev), (kind, rdev), "mknod of {p}");
            model.add(p, Kind::Special(kind, rdev), None);
        }
        Op::Write {
            path,
            offset,
            len,
            seed,
        } => {
            let bytes = data(seed, offset, len);
            fs.write(resolve(fs, path), offset, &bytes).expect("write");
            let d = model.data_mut(path);
            let end = offset as usize + len;
            if d.len() < end {
                d.resize(end, 0);
            }
            d[offset as usize..end].copy_from_slice(&bytes);
        }
        Op::Truncate(p, size) => {
            let set = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            fs.setattr(resolve(fs, p), &set).expect("truncate");
            model.data_mut(p).resize(size as usize, 0);
        }
        Op::Unlink(p) => {
            let (dir, name) = parent(fs, p);
            fs.unlink(dir, OsStr::new(name)).expect("unlink");
            model.remove(p);
        }
        Op::Rmdir(p) => {
            let (dir, name) = parent(fs, p);
            fs.rmdir(dir, OsStr::new(name)).expect("rmdir");
            model.remove(p);
        }
        Op::Rename(from, to) => {
            let (d0, n0) = parent(fs, from);
            let (d1, n1) = parent(fs, to);
            fs.rename(
                d0,
                OsStr::new(n0),
                d1,
                OsStr::new(n1),
                RenameFlags::default(),
            )
            .expect("rename");
            model.rename(from, to);
        }
        Op::Exchange(a, b) => {
            let (d0, n0) = parent(fs, a);
            let (d1, n1) = parent(fs, b);
            let exchange = RenameFlags {
                exchange: true,
                ..RenameFlags::default()
            };
            fs.rename(d0, OsStr::new(n0), d1, OsStr::new(n1), exchange)
                .expect("exchange");
            model.exchange(a, b);
        }
        Op::Fallocate(p, offset, len, op) => {
            fs.fallocate(resolve(fs, p), offset, len, op)
                .expect("fallocate");
            fallocate_model(model.data_mut(p), offset, len, op);
        }
        Op::Copy {
            src,
            src_offset,
            dst,
            dst_offset,
            len,
        } => {
            let copy = CopyRange {
                src: resolve(fs, src),
                src_offset,
                dst: resolve(fs, dst),
                dst_offset,
                len,
            };
            let n = fs.copy_file_range(copy).expect("copy_file_range");
            let source = model.data_mut(src).clone();
            let (s0, d0) = (src_offset as usize, dst_offset as usize);
            let bytes = source[s0.min(source.len())..source.len().min(s0 + len as usize)].to_vec();
            assert_eq!(n, bytes.len() as u64, "bytes copied");
            let d = model.data_mut(dst);
            if d.len() < d0 + bytes.len() {
                d.resize(d0 + bytes.len(), 0);
            }
            d[d0..d0 + bytes.len()].copy_from_slice(&bytes);
        }
        Op::Link(from, to) => {
            let (dir, name) = parent(fs, to);
            fs.link(resolve(fs, from), dir, OsStr::new(name))
                .expect("link");
            model.link(from, to);
        }
        Op::SetXattr(p, name, value) => {
            fs.setxattr(
                resolve(fs, p),
                OsStr::new(name),
                value,
                XattrFlags::default(),
            )
            .expect("setxattr");
            model
                .node_mut(p)
                .xattrs
                .insert(name.to_string(), value.to_vec());
        }
        Op::RemoveXattr(p, name) => {
            fs.removexattr(resolve(fs, p), OsStr::new(name))
                .expect("removexattr");
            model.node_mut(p).xattrs.remove(name);
        }
        Op::SetLayout(p, value) => {
            let ino = resolve(fs, p);
            fs.setxattr(
                ino,
                OsStr::new(LAYOUT_XATTR),
                value.as_bytes(),
                XattrFlags::default(),
            )
            .expect("set layout");
            model.node_mut(p).layout = Some(layout_of(fs, ino));
        }
        Op::Fsync(_) | Op::Fdatasync(_) | Op::Sync | Op::Remount => unreachable!(),
    }
}

/// What `fallocate` does to a file's bytes: the size grows unless KEEP_SIZE (punching
/// never grows it), and punched or zeroed bytes read as zeros.
fn fallocate_model(d: &mut Vec<u8>, offset: u64, len: u64, op: Fallocate) {
    let end = (offset + len) as usize;
    let (grows, zeroes) = match op {
        Fallocate::Allocate { keep_size } => (!keep_size, false),
        Fallocate::PunchHole => (false, true),
        Fallocate::ZeroRange { keep_size } => (!keep_size, true),
    };
    if grows && d.len() < end {
        d.resize(end, 0);
    }
    if zeroes {
        let e = end.min(d.len());
        if (offset as usize) < e {
            d[offset as usize..e].fill(0);
        }
    }
}

/// The bytes a write of `seed` puts at `offset..offset + len`.
pub fn data(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.next_multiple_of(8)];
    stripefs_engine::pattern::fill(seed, offset & !7, &mut v);
    let skew = (offset & 7) as usize;
    v.rotate_left(skew);
    v.truncate(len);
    v
}

fn layout_of(fs: &Filesystem, ino: u64) -> Vec<u8> {
    fs.getxattr(ino, OsStr::new(LAYOUT_XATTR)).expect("layout")
}

/// The inode at `path` ("" is the root).
pub fn resolve(fs: &Filesystem, path: &str) -> u64 {
    try_resolve(fs, path).unwrap_or_else(|| panic!("{path} does not exist"))
}

fn try_resolve(fs: &Filesystem, path: &str) -> Option<u64> {
    let mut ino = ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, OsStr::new(part)).ok()?.ino;
    }
    Some(ino)
}

fn parent<'a>(fs: &Filesystem, path: &'a str) -> (u64, &'a str) {
    match path.rsplit_once('/') {
        Some((dir, name)) => (resolve(fs, dir), name),
        None => (ROOT, path),
    }
}

/// Reads the whole tree back: shapes, inode numbers and file data.
pub fn read_tree(fs: &Filesystem) -> Result<Recovered, String> {
    let mut out = Recovered::default();
    read_node(fs, ROOT, String::new(), &mut out)?;
    Ok(out)
}

fn read_node(fs: &Filesystem, ino: u64, path: String, out: &mut Recovered) -> Result<(), String> {
    let err = |what: &str, e: stripefs_fs::FsError| format!("{what} of {path:?}: {e}");
    let attr = fs.getattr(ino).map_err(|e| err("getattr", e))?;
    let mut xattrs = BTreeMap::new();
    for name in fs.listxattr(ino).map_err(|e| err("listxattr", e))? {
        let name = String::from_utf8_lossy(&name).into_owned();
        if name.starts_with("user.test") {
            let value = fs
                .getxattr(ino, OsStr::new(&name))
                .map_err(|e| err("getxattr", e))?;
            xattrs.insert(name, value);
        }
    }
    let layout = match attr.kind {
        FileType::Symlink
        | FileType::Fifo
        | FileType::Socket
        | FileType::CharDevice
        | FileType::BlockDevice => None,
        FileType::File | FileType::Dir => Some(
            fs.getxattr(ino, OsStr::new(LAYOUT_XATTR))
                .map_err(|e| err("layout", e))?,
        ),
    };
    let kind = match attr.kind {
        FileType::File => {
            let bytes = fs
                .read(ino, 0, attr.size as u32)
                .map_err(|e| err("read", e))?;
            if bytes.len() as u64 != attr.size {
                return Err(format!(
                    "{path:?}: read {} bytes of {}",
                    bytes.len(),
                    attr.size
                ));
            }
            out.data.insert(path.clone(), bytes);
            ShapeKind::File {
                size: attr.size,
                links: attr.nlink,
            }
        }
        FileType::Dir => ShapeKind::Dir,
        FileType::Fifo | FileType::Socket | FileType::CharDevice | FileType::BlockDevice => {
            ShapeKind::Special {
                kind: attr.kind,
                rdev: attr.rdev,
                links: attr.nlink,
            }
        }
        FileType::Symlink => ShapeKind::Symlink(
            String::from_utf8_lossy(&fs.readlink(ino).map_err(|e| err("readlink", e))?)
                .into_owned(),
        ),
    };
    out.paths.insert(
        path.clone(),
        (
            ino,
            Shape {
                kind,
                xattrs,
                layout,
            },
        ),
    );
    if attr.kind == FileType::Dir {
        let entries = fs.readdir(ino, 0).map_err(|e| err("readdir", e))?;
        for e in entries
            .into_iter()
            .filter(|e| e.name != b"." && e.name != b"..")
        {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let child = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            read_node(fs, e.ino, child, out)?;
        }
    }
    Ok(())
}
