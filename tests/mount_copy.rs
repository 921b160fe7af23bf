//! The mount end to end on four real loop devices: `stripefs mkfs`, `stripefs mount --daemon`,
//! a tree of files of random sizes (0 B to tens of MiB, with a symlink, a hard link and an
//! empty directory) copied in with `cp -a`, every checksum and every file's mode, size and
//! mtime compared through the mount, `umount`, a remount, and the same comparison again.
//!
//! Needs root, /dev/fuse and loop devices; without them it prints `skipped: <reason>`
//! (and fails instead when `STRIPEFS_REQUIRE_FUSE` is set).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mount::{
    Daemon, Loops, assert_fsck_clean, assert_same_map, checksums, contents, image_files, mkfs, run,
    skip_reason,
};
use common::{MIB, Rng, Watchdog};

/// What must survive the copy: kind, mode, size, mtime, link count, symlink target.
type Shape = BTreeMap<PathBuf, (u32, u64, i64, i64, u64, Option<PathBuf>)>;

fn shape(root: &Path) -> Shape {
    let mut out = Shape::new();
    shape_into(root, Path::new(""), &mut out);
    out
}

fn shape_into(root: &Path, rel: &Path, out: &mut Shape) {
    for e in std::fs::read_dir(root.join(rel)).expect("read_dir") {
        let e = e.expect("entry");
        let path = rel.join(e.file_name());
        let m = std::fs::symlink_metadata(root.join(&path)).expect("lstat");
        let target = m
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(root.join(&path)).expect("readlink"));
        // A directory's size and mtime are the filesystem's own business.
        let (size, mtime, mtime_ns) = if m.is_dir() {
            (0, 0, 0)
        } else {
            (m.len(), m.mtime(), m.mtime_nsec())
        };
        out.insert(
            path.clone(),
            (m.mode(), size, mtime, mtime_ns, m.nlink(), target),
        );
        if m.is_dir() {
            shape_into(root, &path, out);
        }
    }
}

/// A tree of `files` files of random sizes, with edge sizes around blocks and stripe units
/// and two of tens of MiB; returns the total bytes.
fn make_tree(root: &Path, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let dirs = ["", "a", "a/b", "a/b/c", "d", "d/e", "empty", "many"];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let fixed: [u64; 14] = [
        0,
        1,
        511,
        4095,
        4096,
        4097,
        65535,
        65536 + 1,
        256 << 10,
        (1 << 20) + 3,
        3 * MIB - 1,
        7 * MIB + 4097,
        21 * MIB + 12345,
        34 * MIB + 777,
    ];
    let mut total = 0;
    for (i, &size) in fixed.iter().enumerate() {
        let dir = dirs[i % dirs.len()];
        let path = root.join(dir).join(format!("fixed{i}.bin"));
        std::fs::write(&path, contents(seed ^ i as u64, size as usize)).expect("write");
        total += size;
    }
    for i in 0..60u64 {
        let size = match rng.below(10) {
            0..=5 => rng.below(64 << 10),
            6..=8 => rng.below(2 * MIB),
            _ => rng.below(6 * MIB),
        };
        let dir = if i < 30 {
            "many"
        } else {
            dirs[(i % 7) as usize]
        };
        let path = root.join(dir).join(format!("f{i:03}"));
        std::fs::write(&path, contents(seed.wrapping_add(1000 + i), size as usize)).expect("write");
        let mode = [0o644, 0o600, 0o755, 0o444][(i % 4) as usize];
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        total += size;
    }
    std::os::unix::fs::symlink("../fixed1.bin", root.join("a/link")).expect("symlink");
    std::os::unix::fs::symlink("no/such/target", root.join("d/dangling")).expect("symlink");
    std::fs::hard_link(root.join("fixed0.bin"), root.join("d/e/hard")).expect("link");
    std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod dir");
    total
}

#[test]
fn cp_a_tree_onto_four_loop_devices_survives_remount() {
    if let Some(reason) = skip_reason(true) {
        println!("skipped: {reason}");
        return;
    }
    let _watchdog = Watchdog::new("cp_a_tree", Duration::from_secs(100));
    let scratch = common::scratch_dir();
    let images = image_files(scratch.path(), 4, 256 * MIB);
    let loops = Loops::attach(&images);
    mkfs(
        &loops.devices,
        &["--stripe-unit", "64K", "--label", "copytest"],
    );

    let source = scratch.path().join("source");
    let total = make_tree(&source, 0x5EED_C0DE);
    let want_sums = checksums(&source);
    let want_shape = shape(&source);
    assert!(
        total > 60 * MIB,
        "the tree should hold tens of MiB ({total} bytes)"
    );

    let mnt = scratch.path().join("mnt");
    let tree = mnt.join("tree");
    let daemon = Daemon::mount(&loops.devices, &mnt);
    let started = std::time::Instant::now();
    run(
        "cp",
        &[
            "-a",
            source.to_str().expect("UTF-8"),
            tree.to_str().expect("UTF-8"),
        ],
        None,
    );
    println!(
        "cp -a of {:.1} MiB in {:?}",
        total as f64 / MIB as f64,
        started.elapsed()
    );
    assert_same_map("checksums through the mount", &checksums(&tree), &want_sums);
    assert_same_map(
        "modes, sizes, mtimes, links through the mount",
        &shape(&tree),
        &want_shape,
    );
    run("sync", &[], None);
    daemon.unmount();

    let daemon = Daemon::mount(&loops.devices, &mnt);
    assert_same_map("checksums after remount", &checksums(&tree), &want_sums);
    assert_same_map(
        "modes, sizes, mtimes, links after remount",
        &shape(&tree),
        &want_shape,
    );
    // The space the files take is accounted for: at least their bytes are in use.
    let (free, frsize) = common::mount::free_space(&mnt);
    let used = 4 * 256 * MIB - free * frsize;
    assert!(
        used >= total,
        "{used} bytes in use for {total} bytes of files"
    );
    // And a removed tree gives its space back.
    std::fs::remove_dir_all(&tree).expect("rm -r the tree");
    let (free_after, _) = common::mount::free_space(&mnt);
    assert!(
        (free_after - free) * frsize >= total,
        "removing {total} bytes freed only {}",
        (free_after - free) * frsize
    );
    daemon.unmount();
    assert_fsck_clean(&loops.devices);
    drop(loops);
}
