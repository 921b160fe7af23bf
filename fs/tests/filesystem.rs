//! The filesystem through its library API (no mount): namespace, data path, registered I/O
//! against files, persistence across reopen, and refusal of wrong device sets.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use stripefs_engine::DeviceSpec;
use stripefs_fs::filesystem::{
    self, FileType, Filesystem, FsError, MkfsOptions, RenameFlags, SetAttr,
};
use stripefs_mapping::Buffer;

use common::{Devices, ME, ROOT, devices, name};

fn mkfs(d: &Devices, unit: u64) {
    filesystem::mkfs(
        &d.specs,
        &MkfsOptions {
            stripe_unit: unit,
            ..MkfsOptions::default()
        },
    )
    .expect("mkfs");
}

use common::data;

#[test]
fn files_survive_reopen_with_exact_contents() {
    let d = devices(3, 64 << 20);
    mkfs(&d, 64 << 10);
    let sizes = [
        0usize,
        1,
        4095,
        4096,
        4097,
        65536 + 123,
        3 << 20,
        (5 << 20) + 777,
    ];
    {
        let fs = Filesystem::open(&d.specs).expect("open");
        let dir = fs.mkdir(ROOT, name("dir"), 0o755, ME).expect("mkdir");
        for (i, &size) in sizes.iter().enumerate() {
            let f = fs
                .create(dir.ino, name(&format!("f{i}")), 0o644, ME)
                .expect("create");
            let bytes = data(i as u64, size);
            // Write in odd-sized pieces to exercise read-modify-write.
            let mut at = 0;
            while at < size {
                let n = (size - at).min(100_003);
                fs.write(f.ino, at as u64, &bytes[at..at + n])
                    .expect("write");
                at += n;
            }
            assert_eq!(fs.getattr(f.ino).expect("getattr").size, size as u64);
        }
        fs.sync().expect("sync");
        fs.shutdown().expect("shutdown");
    }
    let fs = Filesystem::open(&d.specs).expect("reopen");
    let dir = fs.lookup(ROOT, name("dir")).expect("lookup dir");
    assert_eq!(dir.kind, FileType::Dir);
    for (i, &size) in sizes.iter().enumerate() {
        let f = fs.lookup(dir.ino, name(&format!("f{i}"))).expect("lookup");
        assert_eq!(f.size, size as u64);
        let got = fs.read(f.ino, 0, (size + 10) as u32).expect("read");
        assert!(
            got == data(i as u64, size),
            "file f{i} of {size} bytes differs after reopen"
        );
    }
}

#[test]
fn unsynced_metadata_is_replayed_from_the_log_after_a_crash() {
    let d = devices(2, 64 << 20);
    mkfs(&d, 64 << 10);
    {
        let fs = Filesystem::open(&d.specs).expect("open");
        let f = fs.create(ROOT, name("synced"), 0o644, ME).expect("create");
        fs.write(f.ino, 0, &data(1, 200_000)).expect("write");
        fs.fsync(f.ino).expect("fsync");
        let g = fs.create(ROOT, name("later"), 0o644, ME).expect("create");
        fs.write(g.ino, 0, &data(2, 5000)).expect("write");
        fs.fsync(g.ino).expect("fsync");
        // No shutdown: the process "crashes" (the Arc is dropped without a checkpoint).
        std::mem::forget(fs);
    }
    let fs = Filesystem::open(&d.specs).expect("reopen");
    let f = fs.lookup(ROOT, name("synced")).expect("synced file");
    assert!(fs.read(f.ino, 0, 300_000).expect("read") == data(1, 200_000));
    let g = fs.lookup(ROOT, name("later")).expect("later file");
    assert!(fs.read(g.ino, 0, 300_000).expect("read") == data(2, 5000));
}

#[test]
fn truncate_sparse_rename_unlink() {
    let d = devices(4, 32 << 20);
    mkfs(&d, 16 << 10);
    let fs = Filesystem::open(&d.specs).expect("open");
    let f = fs.create(ROOT, name("a"), 0o644, ME).expect("create");
    fs.write(f.ino, 0, &data(3, 100_000)).expect("write");
    fs.setattr(
        f.ino,
        &SetAttr {
            size: Some(5000),
            ..SetAttr::default()
        },
    )
    .expect("truncate down");
    fs.setattr(
        f.ino,
        &SetAttr {
            size: Some(50_000),
            ..SetAttr::default()
        },
    )
    .expect("truncate up");
    let got = fs.read(f.ino, 0, 60_000).expect("read");
    assert_eq!(got.len(), 50_000);
    assert!(got[..5000] == data(3, 5000)[..]);
    assert!(
        got[5000..].iter().all(|&b| b == 0),
        "bytes after a truncate down and up must be zero"
    );

    // Sparse: a write far out leaves a hole of zeros.
    let s = fs.create(ROOT, name("sparse"), 0o644, ME).expect("create");
    fs.write(s.ino, 10 << 20, b"end").expect("write");
    let attr = fs.getattr(s.ino).expect("getattr");
    assert_eq!(attr.size, (10 << 20) + 3);
    assert!(
        attr.blocks * 512 < 1 << 20,
        "a sparse file stores only what was written"
    );
    let hole = fs.read(s.ino, 5 << 20, 4096).expect("read hole");
    assert!(hole.iter().all(|&b| b == 0));

    // Rename over an existing file replaces it.
    let b = fs.create(ROOT, name("b"), 0o644, ME).expect("create");
    fs.write(b.ino, 0, b"bbb").expect("write");
    fs.rename(ROOT, name("b"), ROOT, name("a"), RenameFlags::default())
        .expect("rename");
    let a = fs.lookup(ROOT, name("a")).expect("lookup");
    assert_eq!(a.ino, b.ino);
    assert!(matches!(fs.lookup(ROOT, name("b")), Err(FsError::NotFound)));
    assert!(
        matches!(fs.getattr(f.ino), Err(FsError::NotFound)),
        "the replaced file is gone"
    );

    // Unlink of an open file: readable until released.
    fs.open_file(a.ino).expect("open");
    fs.unlink(ROOT, name("a")).expect("unlink");
    assert_eq!(fs.read(a.ino, 0, 10).expect("read open unlinked"), b"bbb");
    fs.release_file(a.ino).expect("release");
    assert!(matches!(fs.getattr(a.ino), Err(FsError::NotFound)));

    // Errors.
    assert!(matches!(
        fs.create(ROOT, name(&"x".repeat(256)), 0o644, ME),
        Err(FsError::NameTooLong { .. })
    ));
    assert!(matches!(
        fs.create(ROOT, name("sparse"), 0o644, ME),
        Err(FsError::Exists)
    ));
    let dir = fs.mkdir(ROOT, name("d"), 0o755, ME).expect("mkdir");
    fs.create(dir.ino, name("inner"), 0o644, ME)
        .expect("create");
    assert!(matches!(fs.rmdir(ROOT, name("d")), Err(FsError::NotEmpty)));
    assert!(matches!(
        fs.rename(
            ROOT,
            name("d"),
            dir.ino,
            name("self"),
            RenameFlags::default()
        ),
        Err(FsError::Invalid { .. })
    ));
}

/// A registration and a change of layout of the same empty file, racing: one of them is
/// refused, or the registration is of the layout the file ends with. Never a mapping of
/// devices the file no longer uses.
#[test]
fn a_layout_change_racing_a_registration_never_leaves_a_stale_mapping() {
    let d = devices(4, 32 << 20);
    mkfs(&d, 64 << 10);
    let fs: Arc<Filesystem> = Filesystem::open(&d.specs).expect("open");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mut both = 0;
    for i in 0..200 {
        let f = fs
            .create(ROOT, name(&format!("race{i}")), 0o644, ME)
            .expect("create");
        let (registered, relaid) = std::thread::scope(|s| {
            let register = s.spawn(|| fs.register(f.ino, &buffer));
            let relay = s.spawn(|| {
                fs.setxattr(
                    f.ino,
                    name("user.stripefs.layout"),
                    b"stripe_count=1,devices=2",
                    Default::default(),
                )
            });
            (
                register.join().expect("register thread"),
                relay.join().expect("layout thread"),
            )
        });
        if let Ok(mapping) = registered {
            let layout = fs
                .getxattr(f.ino, name("user.stripefs.layout"))
                .expect("layout");
            let count = String::from_utf8(layout)
                .expect("utf-8")
                .split(',')
                .find_map(|kv| kv.strip_prefix("stripe_count=").map(str::to_string))
                .expect("stripe_count")
                .parse::<usize>()
                .expect("a number");
            assert_eq!(
                mapping.device_count(),
                count,
                "iteration {i}: a stale mapping"
            );
            both += usize::from(relaid.is_ok());
            fs.unregister(&mapping).expect("unregister");
        }
    }
    // Both succeed when the layout changes first; the test is only worth something if
    // the two orders both happened at least sometimes, which the count shows when run
    // with --nocapture.
    println!("{both} of 200 rounds: layout changed, then registered");
}

#[test]
fn registered_io_against_a_file_uses_only_its_devices() {
    let d = devices(4, 64 << 20);
    mkfs(&d, 64 << 10);
    let fs: Arc<Filesystem> = Filesystem::open(&d.specs).expect("open");
    let f = fs
        .create(ROOT, name("model.bin"), 0o644, ME)
        .expect("create");
    fs.setxattr(
        f.ino,
        name("user.stripefs.layout"),
        b"stripe_unit=64K,stripe_count=2,devices=1:3",
        Default::default(),
    )
    .expect("set layout");
    let layout = fs
        .getxattr(f.ino, name("user.stripefs.layout"))
        .expect("get layout");
    assert_eq!(layout, b"stripe_unit=65536,stripe_count=2,devices=1:3");

    let len = (3 << 20) + 1000;
    let buffer = Buffer::new(4 << 20).expect("buffer");
    buffer.write_at(0, &data(9, len)).expect("fill");
    let mapping = fs.register(f.ino, &buffer).expect("register");
    assert_eq!(
        mapping.device_count(),
        2,
        "one attachment per device of the file's layout"
    );
    let before: Vec<_> = fs.devices().iter().map(|d| d.stats()).collect();
    assert_eq!(
        fs.write_registered(&mapping, 0, 0, len as u64)
            .expect("registered write"),
        len as u64
    );
    let after: Vec<_> = fs.devices().iter().map(|d| d.stats()).collect();
    for i in [0, 2] {
        assert_eq!(
            after[i].bytes_written, before[i].bytes_written,
            "device {i} is not in the layout"
        );
    }
    // Through the POSIX path.
    assert!(fs.read(f.ino, 0, (4 << 20) as u32).expect("read") == data(9, len));
    // Registered read into another buffer, at an unaligned file offset (bounced head/tail).
    let other = Buffer::new(4 << 20).expect("buffer");
    let m2 = fs.register(f.ino, &other).expect("register");
    assert!(matches!(
        fs.read_registered(&m2, 1000, 1000, 4 << 20),
        Err(FsError::Device(stripefs_engine::Error::OutOfBuffer { .. }))
    ));
    let n = fs
        .read_registered(&m2, 1000, 1000, 3 << 20)
        .expect("registered read");
    assert_eq!(n, 3 << 20);
    let mut got = vec![0u8; 3 << 20];
    other.read_at(1000, &mut got).expect("copy out");
    assert!(got[..] == data(9, len)[1000..1000 + (3 << 20)]);
    // Past the end of the file the read is short; holes in the buffer's range are untouched.
    let n = fs
        .read_registered(&m2, 3 << 20, 0, 1 << 20)
        .expect("read at the end");
    assert_eq!(n, 1000);
    // Unregistering, or deleting the file, revokes the mapping.
    fs.unregister(&m2).expect("unregister");
    assert!(fs.read_registered(&m2, 0, 0, 4096).is_err());
    fs.unlink(ROOT, name("model.bin")).expect("unlink");
    assert!(
        fs.read_registered(&mapping, 0, 0, 4096).is_err(),
        "a deleted file's mapping is revoked"
    );
}

fn open_error(specs: &[DeviceSpec]) -> String {
    match Filesystem::open(specs) {
        Ok(_) => panic!("opening {specs:?} should have failed"),
        Err(e) => e.to_string(),
    }
}

fn patch(path: &PathBuf, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open device file");
    f.write_all_at(bytes, offset).expect("patch");
}

#[test]
fn wrong_device_sets_are_refused_naming_the_device() {
    let d = devices(3, 32 << 20);
    mkfs(&d, 64 << 10);
    let other = devices(1, 32 << 20);
    mkfs(&other, 64 << 10);
    let name_of = |i: usize| d.paths[i].display().to_string();

    let e = open_error(&d.specs[..2]);
    assert!(
        e.contains("3 devices but 2 were given") && e.contains("#2"),
        "{e}"
    );
    let e = open_error(&[d.specs[1].clone(), d.specs[0].clone(), d.specs[2].clone()]);
    assert!(e.contains(&name_of(1)) && e.contains("given as #0"), "{e}");
    let e = open_error(&[d.specs[0].clone(), d.specs[0].clone(), d.specs[2].clone()]);
    assert!(e.contains(&name_of(0)), "{e}");
    let e = open_error(&[
        d.specs[0].clone(),
        other.specs[0].clone(),
        d.specs[2].clone(),
    ]);
    assert!(
        e.contains(&other.paths[0].display().to_string()) && e.contains("another filesystem"),
        "{e}"
    );

    patch(&d.paths[2], 64, &[0xff]);
    let e = open_error(&d.specs);
    assert!(
        e.contains(&name_of(2)) && e.to_lowercase().contains("checksum"),
        "{e}"
    );
    patch(&d.paths[2], 64, &[0]);
    Filesystem::open(&d.specs)
        .expect("repaired superblock opens again")
        .shutdown()
        .expect("shutdown");

    patch(&d.paths[1], 8, &99u32.to_le_bytes());
    let e = open_error(&d.specs);
    assert!(e.contains(&name_of(1)) && e.contains("99"), "{e}");

    patch(&d.paths[0], 0, b"NOTSTRIP");
    let e = open_error(&d.specs);
    assert!(e.contains(&name_of(0)), "{e}");
}

#[test]
fn a_full_filesystem_says_enospc_and_loses_nothing() {
    let d = devices(2, 12 << 20);
    mkfs(&d, 64 << 10);
    let fs = Filesystem::open(&d.specs).expect("open");
    let keep = fs.create(ROOT, name("keep"), 0o644, ME).expect("create");
    fs.write(keep.ino, 0, &data(5, 100_000)).expect("write");
    let big = fs.create(ROOT, name("big"), 0o644, ME).expect("create");
    let chunk = data(6, 1 << 20);
    let mut offset = 0u64;
    let err = loop {
        match fs.write(big.ino, offset, &chunk) {
            Ok(_) => offset += 1 << 20,
            Err(e) => break e,
        }
        assert!(offset < 64 << 20, "never ran out of space");
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    assert_eq!(
        fs.getattr(big.ino).expect("getattr").size,
        offset,
        "a failed write does not grow the file"
    );
    fs.shutdown().expect("shutdown");
    drop(fs);
    let fs = Filesystem::open(&d.specs).expect("reopen");
    let keep = fs.lookup(ROOT, name("keep")).expect("lookup");
    assert!(fs.read(keep.ino, 0, 200_000).expect("read") == data(5, 100_000));
    let big = fs.lookup(ROOT, name("big")).expect("lookup");
    let got = fs.read(big.ino, 0, offset as u32).expect("read");
    for (i, c) in got.chunks(1 << 20).enumerate() {
        assert!(c == &chunk[..c.len()], "chunk {i} of the full file differs");
    }
}

/// Appends a log entry with `records` to every metadata replica, as if the filesystem had
/// written it: fsck and mount must then judge the damage.
fn append_log_entry(d: &Devices, records: &[stripefs_layout::ondisk::Record]) {
    use std::os::unix::fs::FileExt;
    use stripefs_layout::ondisk::{Superblock, decode_checkpoint_header, encode_entry};
    for path in &d.paths {
        let f = std::fs::File::open(path).expect("device file");
        let mut block = vec![0u8; 4096];
        f.read_exact_at(&mut block, 0).expect("superblock");
        let sb = Superblock::decode(&block).expect("superblock decodes");
        if sb.meta_len == 0 {
            continue;
        }
        let slot = sb.meta_len / 4 / 4096 * 4096;
        let generation = (0..2)
            .filter_map(|i| {
                f.read_exact_at(&mut block, sb.meta_offset + i * slot)
                    .ok()?;
                decode_checkpoint_header(&block).ok().map(|h| h.generation)
            })
            .max()
            .expect("a checkpoint");
        patch(
            path,
            sb.meta_offset + 2 * slot,
            &encode_entry(generation, 1, records),
        );
    }
}

#[test]
fn fsck_is_clean_after_use_and_names_damage() {
    use stripefs_layout::ondisk::Record;
    let d = devices(3, 32 << 20);
    mkfs(&d, 64 << 10);
    let ino = {
        let fs = Filesystem::open(&d.specs).expect("open");
        let f = fs.create(ROOT, name("f"), 0o644, ME).expect("create");
        fs.write(f.ino, 0, &data(7, 300_000)).expect("write");
        fs.mkdir(ROOT, name("d"), 0o755, ME).expect("mkdir");
        fs.shutdown().expect("shutdown");
        f.ino
    };
    let devices = filesystem::open_devices(&d.specs).expect("devices");
    let report = filesystem::fsck(&devices).expect("fsck runs");
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.files, report.directories), (1, 2));
    assert_eq!(report.bytes_stored, 300_000u64.div_ceil(4096) * 4096);
    drop(devices);

    append_log_entry(
        &d,
        &[
            Record::Extent {
                ino,
                column: 0,
                object_offset: 1 << 30,
                device_offset: 0,
                len: 4096,
            },
            Record::Link {
                parent: ROOT,
                name: b"ghost".to_vec(),
                ino: 999_999,
            },
        ],
    );
    let devices = filesystem::open_devices(&d.specs).expect("devices");
    let report = filesystem::fsck(&devices).expect("fsck runs");
    let all = report.problems.join("\n");
    assert!(all.contains("outside its data area"), "{all}");
    assert!(all.contains("999999"), "{all}");
    assert!(
        all.contains(&format!("file {ino}")),
        "extent beyond the size: {all}"
    );
    drop(devices);
    let e = open_error(&d.specs);
    assert!(e.contains("damaged") || e.contains("inconsistent"), "{e}");
}

#[test]
fn concurrent_writers_and_readers_on_different_files() {
    let d = devices(4, 64 << 20);
    mkfs(&d, 32 << 10);
    let fs = Filesystem::open(&d.specs).expect("open");
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                let f = fs
                    .create(ROOT, name(&format!("t{t}")), 0o644, ME)
                    .expect("create");
                let bytes = data(100 + t, (2 << 20) + 12_345 * t as usize);
                for (i, chunk) in bytes.chunks(77_777).enumerate() {
                    fs.write(f.ino, (i * 77_777) as u64, chunk).expect("write");
                    let back = fs
                        .read(f.ino, (i * 77_777) as u64, chunk.len() as u32)
                        .expect("read");
                    assert!(back == chunk, "thread {t} chunk {i} reads back wrong");
                }
                (f.ino, bytes)
            })
        })
        .collect();
    for handle in threads {
        let (ino, bytes) = handle.join().expect("thread");
        assert!(fs.read(ino, 0, 4 << 20).expect("read") == bytes);
    }
    let devices_before = fs.devices().len();
    fs.shutdown().expect("shutdown");
    drop(fs);
    let devices = filesystem::open_devices(&d.specs).expect("devices");
    assert_eq!(devices.len(), devices_before);
    let report = filesystem::fsck(&devices).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// Data fills every device, then metadata fills what is left: both answer ENOSPC, and
/// everything can still be removed (space is kept for changes that only remove), committed
/// and mounted again, empty and clean.
#[test]
fn a_filesystem_full_of_data_and_files_can_always_be_emptied() {
    let d = devices(2, 24 << 20);
    mkfs(&d, 64 << 10);
    let fs = Filesystem::open(&d.specs).expect("open");
    let chunk = data(3, 1 << 20);
    let mut names = Vec::new();
    let err = loop {
        let n = format!("data{}", names.len());
        let f = match fs.create(ROOT, name(&n), 0o644, ME) {
            Ok(f) => f,
            Err(e) => break e,
        };
        names.push(n);
        if let Err(e) = fs.write(f.ino, 0, &chunk) {
            break e;
        }
        assert!(names.len() < 100, "data never filled the devices");
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    let err = loop {
        let n = format!("empty{}", names.len());
        match fs.create(ROOT, name(&n), 0o644, ME) {
            Ok(_) => names.push(n),
            Err(e) => break e,
        }
        assert!(names.len() < 200_000, "metadata never filled the devices");
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    for n in &names {
        fs.unlink(ROOT, name(n))
            .unwrap_or_else(|e| panic!("unlink {n} on a full filesystem: {e}"));
    }
    fs.sync().expect("commit of the removals");
    fs.shutdown().expect("unmount");
    drop(fs);
    let report = common::fsck(&d.specs);
    assert!(report.is_clean(), "fsck: {:?}", report.problems);
    assert_eq!(report.files, 0);
    let fs = Filesystem::open(&d.specs).expect("reopen");
    assert!(fs.readdir(ROOT, 2).expect("readdir").is_empty());
    fs.create(ROOT, name("again"), 0o644, ME)
        .expect("space is back");
}

/// Small files fill every device, not only those in turn: the metadata replicas hold more
/// than the others, so new files start on the emptiest device once the one in turn falls
/// behind. At ENOSPC little free space is left anywhere.
#[test]
fn small_files_fill_every_device() {
    let d = devices(4, 48 << 20);
    mkfs(&d, 64 << 10);
    let fs = Filesystem::open(&d.specs).expect("open");
    let block = data(5, 4096);
    let mut made = 0u64;
    let err = loop {
        let r = fs
            .create(ROOT, name(&format!("small{made:06}")), 0o644, ME)
            .and_then(|f| fs.write(f.ino, 0, &block));
        match r {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        // As the mount's periodic committer would.
        if made.is_multiple_of(2000) {
            fs.sync().expect("commit");
        }
        assert!(made < 1_000_000, "the devices never filled");
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    let s = fs.statfs();
    let free_share = s.bfree as f64 / s.blocks as f64;
    // Without steering, the two replica devices filled first and 19% was left (32,684
    // files); now 1.7% (42,038 files): the slack kept on the replicas for metadata.
    assert!(
        free_share < 0.03,
        "{made} files of 4 KiB made, then ENOSPC with {} of {} blocks free",
        s.bfree,
        s.blocks
    );
}

/// A new file whose first device fills before its first write starts over on a device
/// with room (it holds no data yet and has the default layout); a file whose layout was
/// chosen explicitly stays where it was put and gets ENOSPC.
#[test]
fn a_new_file_whose_device_filled_starts_on_another() {
    let d = devices(2, 24 << 20);
    mkfs(&d, 64 << 10);
    let fs = Filesystem::open(&d.specs).expect("open");
    let layout_of = |ino| {
        let text = fs
            .getxattr(ino, name("user.stripefs.layout"))
            .expect("layout");
        String::from_utf8(text).expect("utf-8")
    };
    let late = fs.create(ROOT, name("late"), 0o644, ME).expect("create");
    let first = layout_of(late.ino)
        .rsplit_once("devices=")
        .and_then(|(_, d)| d.split(':').next().map(str::to_string))
        .expect("devices");
    let pinned_layout = format!("stripe_count=1,devices={first}");
    let pin = |n: &str| {
        let f = fs.create(ROOT, name(n), 0o644, ME).expect("create");
        fs.setxattr(
            f.ino,
            name("user.stripefs.layout"),
            pinned_layout.as_bytes(),
            Default::default(),
        )
        .expect("pin");
        f.ino
    };
    let filler = pin("filler");
    let pinned = pin("pinned");
    let chunk = data(4, 1 << 20);
    let mut at = 0;
    let err = loop {
        match fs.write(filler, at, &chunk) {
            Ok(_) => at += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(at < 64 << 20, "device {first} never filled");
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    // Fill the last blocks too.
    while fs.write(filler, at, &chunk[..4096]).is_ok() {
        at += 4096;
    }
    let err = fs
        .write(pinned, 0, &chunk[..4096])
        .expect_err("the pinned file's device is full");
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");

    let bytes = data(5, 4096);
    fs.write(late.ino, 0, &bytes)
        .expect("the new file moves to the device with room");
    let other = 1 - first.parse::<u8>().expect("a device number");
    assert!(
        layout_of(late.ino).ends_with(&format!("devices={other}:{first}")),
        "{}",
        layout_of(late.ino)
    );
    assert_eq!(fs.read(late.ino, 0, 4096).expect("read"), bytes);
    fs.shutdown().expect("unmount");
    drop(fs);
    let report = common::fsck(&d.specs);
    assert!(report.is_clean(), "fsck: {:?}", report.problems);
    let fs = Filesystem::open(&d.specs).expect("reopen");
    assert_eq!(
        fs.read(late.ino, 0, 4096).expect("read after remount"),
        bytes
    );
}

#[test]
fn a_full_metadata_area_refuses_changes_instead_of_losing_them() {
    let d = devices(2, 32 << 20);
    filesystem::mkfs(
        &d.specs,
        &MkfsOptions {
            metadata_size: Some(1 << 20),
            ..MkfsOptions::default()
        },
    )
    .expect("mkfs");
    let fs = Filesystem::open(&d.specs).expect("open");
    let mut made = 0;
    let err = loop {
        // Bytes that do not compress, so that the pieces fill the space.
        let pad = data(made, 300);
        let r = fs
            .create(ROOT, name(&format!("f{made}")), 0o644, ME)
            .and_then(|f| fs.setxattr(f.ino, name("user.pad"), &pad, Default::default()));
        match r {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 100_000, "metadata never filled up");
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    // Metadata room goes a piece (256 inodes) at a time; statfs counts 64 B per file (a
    // small file's compressed records), and these files carry 300 B more each.
    assert!(
        fs.statfs().ffree < made / 20,
        "statfs shows the metadata is nearly full ({:?}, after {made} files: {err})",
        fs.statfs()
    );
    fs.shutdown()
        .expect("everything acknowledged fits in a checkpoint");
    drop(fs);
    let fs = Filesystem::open(&d.specs).expect("reopen");
    for i in 0..made {
        let f = fs
            .lookup(ROOT, name(&format!("f{i}")))
            .expect("every acknowledged file is there");
        assert_eq!(
            fs.getxattr(f.ino, name("user.pad"))
                .expect("and its attribute"),
            data(i, 300)
        );
    }
    assert!(matches!(
        fs.setxattr(1, name("system.posix_acl_access"), b"x", Default::default()),
        Err(FsError::NotSupported { .. })
    ));
}

/// Descriptors of this process open on files under `dir` (other tests of this binary run
/// at the same time and open their own: only this test's devices are counted).
fn open_fds(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.starts_with(dir))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn closing_a_filesystem_closes_its_devices() {
    let d = devices(2, 32 << 20);
    mkfs(&d, 64 << 10);
    // Warm up this thread's lazily created state first.
    Filesystem::open(&d.specs)
        .expect("open")
        .shutdown()
        .expect("shutdown");
    let before = open_fds(d.dir.path());
    assert_eq!(before, 0);
    for _ in 0..3 {
        let fs = Filesystem::open(&d.specs).expect("open");
        let f = fs
            .create(ROOT, name("x"), 0o644, ME)
            .or_else(|_| fs.lookup(ROOT, name("x")))
            .expect("file");
        fs.write(f.ino, 0, b"data").expect("write");
        assert!(open_fds(d.dir.path()) >= 2, "open devices are counted");
        fs.shutdown().expect("shutdown");
    }
    assert_eq!(
        open_fds(d.dir.path()),
        0,
        "device descriptors must not outlive the filesystem"
    );
}

/// A filesystem made on `n` emulated devices of 64 MiB backed by scratch files (the
/// directory goes with the returned guard); their specs, to open it (or to add to).
fn emulated_filesystem(n: usize) -> (tempfile::TempDir, Vec<DeviceSpec>) {
    let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
    let specs: Vec<DeviceSpec> = (0..n)
        .map(|i| {
            let path = dir.path().join(format!("e{i}.img"));
            format!("emu:{},size=64M", path.display())
                .parse()
                .expect("spec")
        })
        .collect();
    filesystem::mkfs(&specs, &MkfsOptions::default()).expect("mkfs");
    (dir, specs)
}

/// The bytes a read of `len` at `offset` must return from a file whose contents are `model`.
fn expected(model: &[u8], offset: u64, len: u64) -> &[u8] {
    let start = (offset as usize).min(model.len());
    let end = (offset.saturating_add(len) as usize).min(model.len());
    &model[start..end]
}

#[test]
fn asynchronous_registered_reads_keep_many_in_flight_with_exact_data() {
    use stripefs_engine::{Completion, IoContext};
    use stripefs_fs::FileRead;

    let d = devices(3, 64 << 20);
    mkfs(&d, 64 << 10);
    let fs: Arc<Filesystem> = Filesystem::open(&d.specs).expect("open");
    let f = fs.create(ROOT, name("data"), 0o644, ME).expect("create");
    // 0..2M+777 written, a hole up to 5M, then 100K+5 written: size 5M+100K+5.
    let head = data(21, (2 << 20) + 777);
    let tail = data(22, (100 << 10) + 5);
    fs.write(f.ino, 0, &head).expect("write head");
    fs.write(f.ino, 5 << 20, &tail).expect("write tail");
    let mut model = head.clone();
    model.resize(5 << 20, 0);
    model.extend_from_slice(&tail);

    let buffer = Buffer::new(16 << 20).expect("buffer");
    buffer.write_at(0, &vec![0xeeu8; 16 << 20]).expect("poison");
    let mapping = fs.register(f.ino, &buffer).expect("register");
    // (file offset, length, buffer offset shift from the slot start)
    let reads: Vec<(u64, u64, u64)> = vec![
        (0, 4096, 0),
        (0, 1 << 20, 0),
        (64 << 10, 192 << 10, 0),          // across stripe units and devices
        (4096 * 3, 4096 * 70, 0),          // unaligned to units, aligned to blocks
        (1000, 100_000, 1000),             // bounced head and tail, aligned middle
        (1000, 100_000, 0),                // offsets differ modulo the block: all bounced
        ((2 << 20) - 4096, 3 * 4096, 0),   // data, then the hole
        (3 << 20, 256 << 10, 0),           // inside the hole: zeros
        ((5 << 20) - 8192, 64 << 10, 0),   // hole, then data
        ((5 << 20) + (96 << 10), 8192, 0), // crosses the end of the file: short
        ((5 << 20) + (200 << 10), 4096, 0), // past the end: 0 bytes
        (7, 3, 7),                         // tiny, inside one block
    ];
    let slot = 1u64 << 20;
    let mut ctx = IoContext::new(4);
    let mut done: Vec<Completion> = Vec::new();
    let mut next = 0;
    let mut results: Vec<Option<u64>> = vec![None; reads.len()];
    while next < reads.len() || ctx.in_flight() > 0 {
        while next < reads.len() && ctx.in_flight() < ctx.depth() {
            let (offset, len, shift) = reads[next];
            let read = FileRead {
                offset,
                buffer_offset: next as u64 * slot + shift,
                len,
                tag: next as u64,
            };
            fs.submit_read(&mut ctx, &mapping, read)
                .unwrap_or_else(|e| panic!("submit {read:?}: {e}"));
            next += 1;
        }
        done.clear();
        ctx.wait(1, &mut done);
        for c in &done {
            let n = c.result.as_ref().expect("read completes");
            results[c.tag as usize] = Some(*n);
        }
    }
    for (i, &(offset, len, shift)) in reads.iter().enumerate() {
        let want = expected(&model, offset, len);
        assert_eq!(results[i], Some(want.len() as u64), "read {i} length");
        let mut got = vec![0u8; want.len()];
        buffer
            .read_at(i as u64 * slot + shift, &mut got)
            .expect("copy out");
        assert!(got == want, "read {i} ({offset}+{len}) bytes");
        // Nothing past the bytes read was written (when the slot has room after them).
        if shift + want.len() as u64 >= slot {
            continue;
        }
        let mut after = [0u8; 1];
        buffer
            .read_at(i as u64 * slot + shift + want.len() as u64, &mut after)
            .expect("copy out");
        assert_eq!(after[0], 0xee, "read {i} wrote past its bytes");
    }

    // Refused at submission, touching nothing: outside the buffer, a full context, a
    // mapping that is not a registration of this filesystem.
    let outside = FileRead {
        offset: 0,
        buffer_offset: (16 << 20) - 4096,
        len: 8192,
        tag: 0,
    };
    assert!(matches!(
        fs.submit_read(&mut ctx, &mapping, outside),
        Err(FsError::Device(stripefs_engine::Error::OutOfBuffer { .. }))
    ));
    let mut one = IoContext::new(1);
    let ok = FileRead {
        offset: 0,
        buffer_offset: 0,
        len: 4096,
        tag: 1,
    };
    fs.submit_read(&mut one, &mapping, ok).expect("first");
    assert!(matches!(
        fs.submit_read(&mut one, &mapping, ok),
        Err(FsError::Device(stripefs_engine::Error::ContextFull {
            depth: 1
        }))
    ));
    assert_eq!(one.wait_one().map(|c| c.result.ok()), Some(Some(4096)));
    let other = Buffer::new(1 << 20).expect("buffer");
    let stranger = stripefs_mapping::Mapping::register(&other, 7, Vec::new()).expect("mapping");
    assert!(matches!(
        fs.submit_read(&mut one, &stranger, ok),
        Err(FsError::UnknownMapping { .. })
    ));
    fs.unregister(&mapping).expect("unregister");
    assert!(fs.submit_read(&mut one, &mapping, ok).is_err());
    assert_eq!(one.in_flight(), 0);
}

#[test]
fn a_truncate_waits_for_asynchronous_reads_of_the_blocks_it_frees() {
    use stripefs_engine::IoContext;
    use stripefs_fs::FileRead;

    // Emulated devices with 150 ms per command: a read stays in flight long enough to see
    // whether the truncate waited for it.
    let (_dir, specs) = emulated_filesystem(2);
    let slow: Vec<DeviceSpec> = specs
        .iter()
        .map(|s| format!("{s},lat=150ms").parse().expect("spec"))
        .collect();
    let fs: Arc<Filesystem> = Filesystem::open(&slow).expect("open");
    let f = fs.create(ROOT, name("f"), 0o644, ME).expect("create");
    let contents = data(31, 1 << 20);
    fs.write(f.ino, 0, &contents).expect("write");
    let buffer = Buffer::new(1 << 20).expect("buffer");
    let mapping = fs.register(f.ino, &buffer).expect("register");
    let mut ctx = IoContext::new(2);
    let read = FileRead {
        offset: 0,
        buffer_offset: 0,
        len: 1 << 20,
        tag: 5,
    };
    let submitted = std::time::Instant::now();
    fs.submit_read(&mut ctx, &mapping, read).expect("submit");
    let truncated = std::thread::scope(|s| {
        let truncater = s.spawn(|| {
            fs.setattr(
                f.ino,
                &SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
            )
            .expect("truncate");
            submitted.elapsed()
        });
        let c = ctx.wait_one().expect("completion");
        assert_eq!(c.tag, 5);
        assert_eq!(c.result.expect("read"), 1 << 20);
        truncater.join().expect("truncater")
    });
    assert!(
        truncated >= std::time::Duration::from_millis(140),
        "the truncate returned after {truncated:?}, before the read in flight finished"
    );
    let mut got = vec![0u8; 1 << 20];
    buffer.read_at(0, &mut got).expect("copy out");
    assert!(got == contents, "the read returned the file as it was");
    assert_eq!(fs.getattr(f.ino).expect("getattr").size, 0);
}

#[test]
fn statfs_while_open_files_are_unlinked_and_released_does_not_deadlock() {
    // statfs took the allocator and then the metadata; releasing an unlinked file takes the
    // metadata and then the allocator (to return the space): a `df` during a `close` could
    // stop the filesystem for good.
    let d = devices(2, 32 << 20);
    mkfs(&d, 64 << 10);
    let fs: Arc<Filesystem> = Filesystem::open(&d.specs).expect("open");
    let free_before = fs.statfs().bfree;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                let n = format!("f{i}");
                let f = fs.create(ROOT, name(&n), 0o644, ME).expect("create");
                fs.write(f.ino, 0, &[7u8; 12288]).expect("write");
                fs.open_file(f.ino).expect("open");
                fs.unlink(ROOT, name(&n)).expect("unlink");
                fs.release_file(f.ino).expect("release frees the space");
            }
            let _ = done_tx.send(());
        })
    };
    let watcher = {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut calls = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = fs.statfs();
                assert!(s.bfree <= s.blocks);
                calls += 1;
            }
            calls
        })
    };
    let finished = done_rx.recv_timeout(std::time::Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        finished.is_ok(),
        "creating, unlinking and releasing 400 files beside statfs did not finish in 60 s"
    );
    writer.join().expect("writer");
    assert!(watcher.join().expect("statfs thread") > 0);
    // Freed space is reused only once the free is durable.
    fs.sync().expect("commit");
    assert_eq!(
        fs.statfs().bfree,
        free_before,
        "every released file's space is free again once the release is committed"
    );
}

#[test]
fn a_read_submitted_while_a_writer_waits_does_not_stall_on_its_own_reads() {
    use stripefs_engine::IoContext;
    use stripefs_fs::FileRead;

    // Read A holds the file shared until it completes; a writer then waits for it; read B
    // (same thread, same context) must wait for the writer, which waits for A, which only
    // this thread would collect. The reapers collect it meanwhile, so B waits for the I/O,
    // not for a reaper's 20 ms standby tick.
    let (_dir, specs) = emulated_filesystem(2);
    let fs: Arc<Filesystem> = Filesystem::open(&specs).expect("open");
    let f = fs.create(ROOT, name("f"), 0o644, ME).expect("create");
    let contents = data(41, 1 << 20);
    fs.write(f.ino, 0, &contents).expect("write");
    let buffer = Buffer::new(2 << 20).expect("buffer");
    let mapping = fs.register(f.ino, &buffer).expect("register");
    let mut waits = Vec::new();
    for round in 0..10u64 {
        let mut ctx = IoContext::new(4);
        let read = |tag: u64, buffer_offset: u64| FileRead {
            offset: 0,
            buffer_offset,
            len: 1 << 20,
            tag,
        };
        fs.submit_read(&mut ctx, &mapping, read(1, 0))
            .expect("read A");
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                fs.write(f.ino, 4096 * round, &contents[..4096])
                    .expect("write")
            });
            // Let the writer start waiting for A.
            std::thread::sleep(std::time::Duration::from_millis(5));
            let started = std::time::Instant::now();
            fs.submit_read(&mut ctx, &mapping, read(2, 1 << 20))
                .expect("read B");
            waits.push(started.elapsed());
            writer.join().expect("writer");
        });
        let mut done = Vec::new();
        while ctx.in_flight() > 0 {
            ctx.wait(1, &mut done);
        }
        assert!(
            done.iter()
                .all(|c| c.result.as_ref().ok() == Some(&(1 << 20)))
        );
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    assert!(
        median < std::time::Duration::from_millis(10),
        "read B waited {median:?} (median of 10) for a writer that waited for read A"
    );
}

#[test]
fn special_files_keep_kind_rdev_and_owner_and_refuse_data() {
    let d = devices(2, 64 << 20);
    mkfs(&d, 64 << 10);
    let who = stripefs_fs::filesystem::Caller {
        uid: 1234,
        gid: 567,
    };
    let kinds = [
        ("fifo", FileType::Fifo, 0u32),
        ("sock", FileType::Socket, 0),
        ("null", FileType::CharDevice, (1 << 8) | 3),
        ("loop", FileType::BlockDevice, (7 << 8) | 9),
    ];
    {
        let fs = Filesystem::open(&d.specs).expect("open");
        for (n, kind, rdev) in kinds {
            let a = fs
                .mknod(ROOT, name(n), kind, 0o640, rdev, who)
                .expect("mknod");
            assert_eq!(
                (a.kind, a.rdev, a.mode, a.uid, a.gid),
                (kind, rdev, 0o640, 1234, 567)
            );
            assert_eq!((a.size, a.blocks, a.nlink), (0, 0, 1));
            assert!(matches!(fs.open_file(a.ino), Err(FsError::SpecialFile)));
            assert_eq!(
                fs.open_file(a.ino).map(|_| ()).unwrap_err().errno(),
                libc::ENXIO
            );
            assert!(matches!(
                fs.read(a.ino, 0, 10),
                Err(FsError::Invalid { .. })
            ));
            assert!(matches!(
                fs.write(a.ino, 0, b"x"),
                Err(FsError::Invalid { .. })
            ));
            let grow = SetAttr {
                size: Some(10),
                ..SetAttr::default()
            };
            assert!(matches!(
                fs.setattr(a.ino, &grow),
                Err(FsError::Invalid { .. })
            ));
            let layout = fs.getxattr(a.ino, name(filesystem::LAYOUT_XATTR));
            assert!(matches!(layout, Err(FsError::NoXattr)));
        }
        // A FIFO's rdev is not kept; mknod makes no directories or symlinks.
        let f = fs
            .mknod(ROOT, name("f2"), FileType::Fifo, 0o600, 99, who)
            .expect("mknod fifo");
        assert_eq!(f.rdev, 0);
        assert!(
            fs.mknod(ROOT, name("x"), FileType::Dir, 0o700, 0, who)
                .is_err()
        );
        assert!(matches!(
            fs.mknod(ROOT, name("fifo"), FileType::Fifo, 0o600, 0, who),
            Err(FsError::Exists)
        ));
        let kinds: Vec<(Vec<u8>, FileType)> = fs
            .readdir(ROOT, 2)
            .expect("readdir")
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        assert!(kinds.contains(&(b"sock".to_vec(), FileType::Socket)));
        assert!(kinds.contains(&(b"loop".to_vec(), FileType::BlockDevice)));
        fs.shutdown().expect("shutdown");
    }
    let fs = Filesystem::open(&d.specs).expect("reopen");
    for (n, kind, rdev) in kinds {
        let a = fs.lookup(ROOT, name(n)).expect("lookup");
        assert_eq!((a.kind, a.rdev, a.mode, a.uid), (kind, rdev, 0o640, 1234));
    }
    fs.shutdown().expect("shutdown");
    drop(fs);
    let devices = filesystem::open_devices(&d.specs).expect("devices");
    let report = filesystem::fsck(&devices).expect("fsck runs");
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.special_files, 5);
}

/// One buffer registered against the filesystem (one attachment per device) reads and
/// writes files of different layouts, opened apart, with no registration per file; deleting
/// a file closes its opened handles, and the mapping of the shorthand still works with the
/// file it names.
#[test]
fn one_buffer_registered_against_the_filesystem_serves_every_file() {
    let d = devices(4, 64 << 20);
    mkfs(&d, 64 << 10);
    let fs = Filesystem::open(&d.specs).expect("open");
    let layouts: [&[u8]; 3] = [
        b"stripe_unit=64K,stripe_count=2,devices=1:3",
        b"stripe_unit=128K,stripe_count=3,devices=0:1:2",
        b"stripe_unit=64K,stripe_count=1,devices=2",
    ];
    let sizes = [(3 << 20) + 1000, 100_000, 1 << 20];
    let mut files = Vec::new();
    for (i, layout) in layouts.iter().enumerate() {
        let f = fs
            .create(ROOT, name(&format!("f{i}")), 0o644, ME)
            .expect("create");
        fs.setxattr(
            f.ino,
            name("user.stripefs.layout"),
            layout,
            Default::default(),
        )
        .expect("set layout");
        fs.write(f.ino, 0, &data(20 + i as u64, sizes[i]))
            .expect("write");
        files.push(f.ino);
    }
    let buffer = Buffer::new(8 << 20).expect("buffer");
    let mapping = fs.register_buffer(&buffer).expect("register the buffer");
    assert_eq!(mapping.device_count(), 4, "one attachment per device");
    assert_eq!(fs.registered_file(&mapping).expect("registered"), 0);
    // Without a file, the mapping names nothing to read.
    assert!(matches!(
        fs.read_registered(&mapping, 0, 0, 4096),
        Err(FsError::Invalid { .. })
    ));
    let opened: Vec<_> = files
        .iter()
        .map(|&ino| fs.open_registered(ino).expect("open for registered I/O"))
        .collect();
    let mut at = 0u64;
    for (i, f) in opened.iter().enumerate() {
        // Aligned for the first two (direct), unaligned for the last (bounced).
        let start = if i == 2 { at + 100 } else { at };
        let n = fs
            .read_file(&mapping, f, 0, start, sizes[i] as u64)
            .expect("read");
        assert_eq!(n, sizes[i] as u64);
        let mut got = vec![0u8; sizes[i]];
        buffer.read_at(start, &mut got).expect("copy");
        assert!(got == data(20 + i as u64, sizes[i]), "file {i}");
        at = (start + n).next_multiple_of(4096);
    }
    assert_eq!(
        fs.registrations().len(),
        1,
        "one registration for every file"
    );
    // A write through the filesystem-wide mapping, read back through POSIX.
    buffer.write_at(0, &data(99, 2 << 20)).expect("fill");
    fs.write_file(&mapping, &opened[1], 4096, 0, 2 << 20)
        .expect("write");
    let back = fs.read(files[1], 4096, 2 << 20).expect("read back");
    assert!(back == data(99, 2 << 20));
    // The shorthand's mapping works with the file it names, not with another.
    let own = fs.register(files[0], &buffer).expect("register file 0");
    assert!(fs.read_file(&own, &opened[0], 0, 0, 4096).is_ok());
    assert!(matches!(
        fs.read_file(&own, &opened[1], 0, 0, 4096),
        Err(FsError::UnknownMapping { .. })
    ));
    // Closed, or deleted: requests naming the file fail; the buffer's mapping lives on.
    fs.close_registered(&opened[2]).expect("close");
    assert!(matches!(
        fs.read_file(&mapping, &opened[2], 0, 0, 4096),
        Err(FsError::UnknownFile { .. })
    ));
    fs.unlink(ROOT, name("f1")).expect("unlink");
    assert!(matches!(
        fs.read_file(&mapping, &opened[1], 0, 0, 4096),
        Err(FsError::UnknownFile { .. })
    ));
    assert!(fs.read_file(&mapping, &opened[0], 0, 0, 4096).is_ok());
    fs.unregister(&mapping).expect("unregister");
    assert!(fs.read_file(&mapping, &opened[0], 0, 0, 4096).is_err());
}
