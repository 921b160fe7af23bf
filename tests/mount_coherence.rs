//! Coherence between the mount and registered I/O, in one process: the filesystem is opened
//! and mounted with the library (`stripefs_fs::mount::Mount`), files are written through the
//! mount and read with registered reads, written with registered writes and read through the
//! mount (`read`, `stat`, and a live `mmap`), byte for byte.
//!
//! The mount serves files with FOPEN_DIRECT_IO (no page cache), so reads through it always
//! reach the devices; what the kernel still caches (attributes for 1 s, pages of `mmap`ed
//! files) is invalidated when a registered write returns.
//!
//! Needs root and /dev/fuse; without them it prints `skipped: <reason>`.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::mount::{contents, image_files, skip_reason};
use common::{MIB, Watchdog, assert_bytes, buffer_bytes};
use stripefs_engine::DeviceSpec;
use stripefs_fs::FsError;
use stripefs_fs::filesystem::{self, Filesystem, MkfsOptions};
use stripefs_fs::mount::{Mount, MountOptions};
use stripefs_mapping::Buffer;

struct Mounted {
    mount: Option<Mount>,
    fs: Arc<Filesystem>,
    mnt: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Mounted {
        let scratch = common::scratch_dir();
        let specs: Vec<DeviceSpec> = image_files(scratch.path(), 4, 64 * MIB)
            .iter()
            .map(|p| DeviceSpec::Path(p.clone()))
            .collect();
        let options = MkfsOptions {
            stripe_unit: 64 << 10,
            ..MkfsOptions::default()
        };
        filesystem::mkfs(&specs, &options).expect("mkfs");
        let fs = Filesystem::open(&specs).expect("open the filesystem");
        let mnt = scratch.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        let mount = Mount::start(fs.clone(), &mnt, &MountOptions::default(), || {}).expect("mount");
        mount.check().expect("the mount answers");
        Mounted {
            mount: Some(mount),
            fs,
            mnt,
            _scratch: scratch,
        }
    }

    fn finish(mut self) {
        if let Some(mut mount) = self.mount.take() {
            mount.unmount().expect("unmount");
            mount.wait().expect("session ends cleanly");
        }
        self.fs.shutdown().expect("shutdown");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Dropping a Mount unmounts it (lazily if busy).
        self.mount.take();
    }
}

#[test]
fn mount_and_registered_io_see_each_others_writes() {
    if let Some(reason) = skip_reason(false) {
        println!("skipped: {reason}");
        return;
    }
    let _watchdog = Watchdog::new("coherence", Duration::from_secs(60));
    let m = Mounted::new();
    let path = m.mnt.join("shared");
    let first = contents(1, 3 * MIB as usize + 5);
    std::fs::write(&path, &first).expect("write through the mount");
    let ino = std::fs::metadata(&path).expect("stat").ino();

    // Written through the mount, read with registered I/O.
    let buffer = Buffer::new(8 * MIB).expect("buffer");
    let mapping = m.fs.register(ino, &buffer).expect("register the file");
    let n =
        m.fs.read_registered(&mapping, 0, 0, 8 * MIB)
            .expect("registered read");
    assert_eq!(
        n,
        first.len() as u64,
        "registered read stops at end of file"
    );
    assert_bytes(
        "registered read of a file written through the mount",
        &buffer_bytes(&buffer, 0, n),
        &first,
    );

    // Keep a page of the file mapped through the mount, and its attributes cached.
    let file = std::fs::File::open(&path).expect("open");
    // SAFETY: a fresh read-only shared mapping of 64 KiB of an open file; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            65_536,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(
        map,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is 64 KiB long and lives until munmap below; only read.
    let mapped = || unsafe { std::slice::from_raw_parts(map.cast::<u8>(), 65_536) }.to_vec();
    assert_bytes("mmap before", &mapped(), &first[..65_536]);
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        first.len() as u64
    );

    // Registered writes: over the start (unaligned tail) and past the end (extending).
    let second = contents(2, 5 * MIB as usize + 777);
    buffer.write_at(0, &second).expect("fill the buffer");
    let wrote =
        m.fs.write_registered(&mapping, 0, 0, second.len() as u64)
            .expect("registered write");
    assert_eq!(wrote, second.len() as u64);
    // At once, with no wait: the size, the bytes, and the mapped page.
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        second.len() as u64,
        "stat through the mount right after a registered write that extended the file"
    );
    assert_bytes(
        "read through the mount after a registered write",
        &std::fs::read(&path).expect("read"),
        &second,
    );
    assert_bytes(
        "mmap after a registered write",
        &mapped(),
        &second[..65_536],
    );
    // SAFETY: `map` is the mapping made above, no longer used.
    assert_eq!(unsafe { libc::munmap(map, 65_536) }, 0);
    drop(file);

    // A write through the mount at an unaligned offset, then a registered read.
    let patch = contents(3, 100_000);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .write_all_at(&patch, 1_234_567)
        .expect("write through the mount");
    let mut want = second.clone();
    want[1_234_567..1_234_567 + patch.len()].copy_from_slice(&patch);
    let n =
        m.fs.read_registered(&mapping, 0, 0, 8 * MIB)
            .expect("registered read");
    assert_bytes(
        "registered read after a write through the mount",
        &buffer_bytes(&buffer, 0, n),
        &want,
    );

    // Unlinking the file through the mount revokes the registration.
    std::fs::remove_file(&path).expect("unlink");
    match m.fs.read_registered(&mapping, 0, 0, 4096) {
        Err(FsError::UnknownMapping { .. }) => {}
        other => panic!("registered read of an unlinked file: {other:?}"),
    }
    m.finish();
}
