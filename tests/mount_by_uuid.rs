//! Behaving like a Linux filesystem, on real loop devices: mount and fsck by `UUID=…` and by
//! one member (the others found among the block devices, or image files given with
//! `-o device=`), a missing member named, `stripefs probe`, `mount -t stripefs` through the
//! `mount.stripefs` helper with options, an fstab line mounted with `mount MNT`, and mkfs
//! refusing an ext4 and a stripefs device without `--force`.
//!
//! Needs root, loop devices and /dev/fuse (and `mkfs.ext4` for the mkfs test); without them
//! each test prints `skipped: <reason>` (and fails instead when the matching
//! `STRIPEFS_REQUIRE_*` switch is set). The helper tests install `/sbin/mount.stripefs` (a
//! symlink to the binary under test, where mount(8) looks for helpers) for their duration.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::mount::{
    Daemon, Loops, STRIPEFS, assert_fsck_clean, become_subreaper, image_files, is_mounted, mkfs,
    skip_reason, stripefs, stripefs_may_fail,
};
use common::require::{Requirement, skip};
use common::{MIB, Watchdog};

/// Scratch images of `n` devices with a filesystem labelled `label`, the first `attached` of
/// them on loop devices; its uuid.
struct Fixture {
    _watchdog: Watchdog,
    scratch: tempfile::TempDir,
    images: Vec<PathBuf>,
    loops: Loops,
    uuid: String,
}

impl Fixture {
    fn new(name: &'static str, n: usize, attached: usize) -> Option<Fixture> {
        if let Some(reason) = skip_reason(true) {
            println!("skipped: {reason}");
            return None;
        }
        let watchdog = Watchdog::new(name, Duration::from_secs(120));
        let scratch = common::scratch_dir();
        let images = image_files(scratch.path(), n, 64 * MIB);
        mkfs(&images, &["--label", name]);
        let uuid = uuid_of(&images[0]);
        let loops = Loops::attach(&images[..attached]);
        Some(Fixture {
            _watchdog: watchdog,
            scratch,
            images,
            loops,
            uuid,
        })
    }

    fn mnt(&self) -> PathBuf {
        self.scratch.path().join("mnt")
    }

    fn uuid_source(&self) -> String {
        format!("UUID={}", self.uuid)
    }
}

/// The uuid of the filesystem `device` is a member of, from `stripefs probe DEVICE`.
fn uuid_of(device: &Path) -> String {
    let out = stripefs(&["probe", device.to_str().expect("UTF-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .filter(|u| u.len() == 32 && u.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no uuid in `stripefs probe` output: {text}"))
        .to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mount_and_fsck_by_uuid_and_by_one_member() {
    let Some(fx) = Fixture::new("by-uuid", 3, 3) else {
        return;
    };
    let mnt = fx.mnt();
    let probe = stdout(&stripefs(&["probe"]));
    assert!(
        probe.contains(&format!(
            "stripefs uuid {} label \"by-uuid\" (3 devices, complete)",
            fx.uuid
        )),
        "probe of every block device: {probe}"
    );
    let by_uuid = Daemon::mount(&[PathBuf::from(fx.uuid_source())], &mnt);
    std::fs::write(mnt.join("f"), b"mounted by uuid").expect("write");
    by_uuid.unmount();
    // Any one member names the filesystem; the daemon serves all three, in order.
    let by_member = Daemon::mount(&[fx.loops.devices[1].clone()], &mnt);
    assert_eq!(
        std::fs::read(mnt.join("f")).expect("read"),
        b"mounted by uuid"
    );
    let layout =
        common::mount::getxattr(&mnt.join("f"), "user.stripefs.layout").expect("layout xattr");
    assert!(
        String::from_utf8_lossy(&layout).contains("stripe_count=3"),
        "{}",
        String::from_utf8_lossy(&layout)
    );
    by_member.unmount();
    assert_fsck_clean(&[PathBuf::from(fx.uuid_source())]);
    assert_fsck_clean(&fx.loops.devices[2..]);
    // The explicit list keeps working.
    assert_fsck_clean(&fx.loops.devices);
}

#[test]
fn a_missing_member_is_named_and_files_complete_the_set() {
    let Some(fx) = Fixture::new("missing", 3, 2) else {
        return;
    };
    become_subreaper();
    let mnt = fx.mnt();
    std::fs::create_dir_all(&mnt).expect("mkdir mnt");
    let m = mnt.to_str().expect("UTF-8");
    let want = format!(
        "member 2 of 3 of filesystem {} (\"missing\") not found; found: #0 {}, #1 {}",
        fx.uuid,
        fx.loops.devices[0].display(),
        fx.loops.devices[1].display()
    );
    let source = fx.uuid_source();
    let member = fx.loops.devices[0].to_str().expect("UTF-8");
    for args in [
        vec!["mount", source.as_str(), m],
        vec!["mount", "--daemon", member, m],
        vec!["fsck", source.as_str()],
    ] {
        let out = stripefs_may_fail(&args);
        assert!(
            !out.status.success() && stderr(&out).contains(&want),
            "stripefs {}: {} {}",
            args.join(" "),
            out.status,
            stderr(&out)
        );
        assert!(!is_mounted(&mnt));
    }
    let probe = stdout(&stripefs(&["probe"]));
    assert!(
        probe.contains(&format!(
            "{} label \"missing\" (3 devices, missing member 2)",
            fx.uuid
        )),
        "{probe}"
    );
    // The third member is an image file: given with -o device= (or --device), the set is
    // whole, loop devices and file together.
    let image = fx.images[2].to_str().expect("UTF-8");
    let opt = format!("device={image}");
    let log = fx.scratch.path().join("mount.log");
    let out = stripefs(&[
        "mount",
        "--daemon",
        "--log",
        log.to_str().expect("UTF-8"),
        "-o",
        &opt,
        &source,
        m,
    ]);
    let daemon = Daemon::adopt(&out, &mnt, &[]);
    assert!(is_mounted(&mnt), "{}", stdout(&out));
    std::fs::write(mnt.join("g"), b"three members").expect("write");
    daemon.unmount();
    let out = stripefs(&["fsck", &source, "--device", image]);
    assert!(stdout(&out).contains("clean"), "{}", stdout(&out));
}

// ---------------------------------------------------------------------------------------
// mount(8) and its helper
// ---------------------------------------------------------------------------------------

/// Where mount(8) looks for the helper.
const HELPER: &str = "/sbin/mount.stripefs";

/// `/sbin/mount.stripefs -> the binary under test` while alive (one test at a time holds it);
/// removed on drop, also when the test fails. Refuses to replace a helper it did not make.
struct HelperLink {
    _serial: MutexGuard<'static, ()>,
}

static HELPER_TESTS: Mutex<()> = Mutex::new(());

impl HelperLink {
    fn install() -> HelperLink {
        let serial = HELPER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(target) = std::fs::read_link(HELPER) {
            assert_eq!(
                target,
                Path::new(STRIPEFS),
                "{HELPER} exists and points elsewhere: not replacing it"
            );
            std::fs::remove_file(HELPER).expect("remove our stale helper link");
        } else {
            assert!(
                !Path::new(HELPER).exists(),
                "{HELPER} exists and is not a symlink: not replacing it"
            );
        }
        std::os::unix::fs::symlink(STRIPEFS, HELPER)
            .unwrap_or_else(|e| panic!("symlink {HELPER}: {e}"));
        HelperLink { _serial: serial }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(HELPER) {
            eprintln!("removing {HELPER}: {e}");
        }
    }
}

fn mount_cmd(args: &[&str]) -> Output {
    Command::new("mount")
        .args(args)
        .output()
        .expect("run mount")
}

#[test]
fn mount_t_stripefs_runs_the_helper_with_options() {
    let Some(fx) = Fixture::new("helper", 3, 3) else {
        return;
    };
    become_subreaper();
    let _link = HelperLink::install();
    let mnt = fx.mnt();
    std::fs::create_dir_all(&mnt).expect("mkdir mnt");
    let m = mnt.to_str().expect("UTF-8");
    let log = fx.scratch.path().join("helper.log");
    let opts = format!("threads=2,commit=1,allow_other,log={}", log.display());
    let member = fx.loops.devices[2].to_str().expect("UTF-8");
    let out = mount_cmd(&["-t", "stripefs", "-o", &opts, member, m]);
    assert!(out.status.success(), "mount -t stripefs: {}", stderr(&out));
    let daemon = Daemon::adopt(&out, &mnt, &[]);
    assert!(is_mounted(&mnt), "mount returned but nothing is mounted");
    std::fs::write(mnt.join("h"), b"through mount(8)").expect("write");
    daemon.unmount();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("unmounted"), "daemon log: {logged}");
    // Unknown options are named, and nothing is mounted.
    let out = mount_cmd(&["-t", "stripefs", "-o", "threads=2,frob=1,ro", member, m]);
    assert!(
        !out.status.success()
            && stderr(&out).contains("unknown mount option(s): ")
            && stderr(&out).contains("frob=1")
            && stderr(&out).contains("ro"),
        "{}",
        stderr(&out)
    );
    assert!(!is_mounted(&mnt));
    // The helper as mount(8) runs it, with the filesystem named by uuid.
    let out = Command::new(HELPER)
        .args([&fx.uuid_source(), m, "-o", "rw,threads=3"])
        .output()
        .expect("run the helper");
    assert!(out.status.success(), "{HELPER} UUID=…: {}", stderr(&out));
    let daemon = Daemon::adopt(&out, &mnt, &[]);
    assert_eq!(
        std::fs::read(mnt.join("h")).expect("read"),
        b"through mount(8)"
    );
    daemon.unmount();
    assert_fsck_clean(&fx.loops.devices);
}

/// `/dev/disk/by-uuid/UUID -> a member`, as udev makes for filesystems it knows, while
/// alive: mount(8) resolves `UUID=` itself, through these links (then libblkid, which does
/// not know stripefs), and hands the helper the device. Removed on drop.
struct ByUuidLink {
    link: PathBuf,
    made_dirs: Vec<PathBuf>,
}

impl ByUuidLink {
    fn install(uuid: &str, member: &Path) -> ByUuidLink {
        let dir = Path::new("/dev/disk/by-uuid");
        let made_dirs = [Path::new("/dev/disk"), dir]
            .iter()
            .filter(|d| !d.exists())
            .map(|d| d.to_path_buf())
            .collect();
        std::fs::create_dir_all(dir).expect("mkdir /dev/disk/by-uuid");
        let link = dir.join(uuid);
        std::os::unix::fs::symlink(member, &link)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
        ByUuidLink { link, made_dirs }
    }
}

impl Drop for ByUuidLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        for dir in self.made_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn an_fstab_line_mounts_with_mount_mnt() {
    let Some(fx) = Fixture::new("fstab", 3, 3) else {
        return;
    };
    become_subreaper();
    let _helper = HelperLink::install();
    let _by_uuid = ByUuidLink::install(&fx.uuid, &fx.loops.devices[0]);
    let mnt = fx.mnt();
    std::fs::create_dir_all(&mnt).expect("mkdir mnt");
    let m = mnt.to_str().expect("UTF-8");
    let fstab = fx.scratch.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# scratch fstab\n{}  {m}  stripefs  defaults,threads=2,commit=2  0 0\n",
            fx.uuid_source()
        ),
    )
    .expect("write fstab");
    let out = mount_cmd(&["--fstab", fstab.to_str().expect("UTF-8"), m]);
    assert!(out.status.success(), "mount {m} (fstab): {}", stderr(&out));
    let daemon = Daemon::adopt(&out, &mnt, &[]);
    assert!(is_mounted(&mnt));
    std::fs::write(mnt.join("from-fstab"), b"fstab").expect("write");
    daemon.unmount();
    assert_fsck_clean(&[PathBuf::from(fx.uuid_source())]);
}

// ---------------------------------------------------------------------------------------
// mkfs safety
// ---------------------------------------------------------------------------------------

#[test]
fn mkfs_refuses_ext4_and_stripefs_without_force() {
    if skip(&[Requirement::Loop, Requirement::Tool("mkfs.ext4")]) {
        return;
    }
    let _w = Watchdog::new("mkfs-safety", Duration::from_secs(120));
    let scratch = common::scratch_dir();
    let images = image_files(scratch.path(), 2, 64 * MIB);
    let loops = Loops::attach(&images);
    let (ext4, sfs) = (&loops.devices[0], &loops.devices[1]);
    let (e, s) = (ext4.to_str().expect("UTF-8"), sfs.to_str().expect("UTF-8"));
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", e])
        .output()
        .expect("run mkfs.ext4");
    assert!(out.status.success(), "mkfs.ext4: {}", stderr(&out));
    mkfs(std::slice::from_ref(sfs), &["--label", "old"]);
    let old_uuid = uuid_of(sfs);

    let out = stripefs_may_fail(&["mkfs", e, s]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "mkfs over ext4 and stripefs succeeded"
    );
    assert!(
        err.contains(&format!(
            "{e} appears to contain an existing ext2/3/4 filesystem"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{s} appears to contain an existing stripefs filesystem {old_uuid} (\"old\"), member 0 of 1"
        )),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");

    // --dry-run prints the layout and writes nothing.
    let out = stripefs(&["mkfs", "--dry-run", e, s]);
    let text = stdout(&out);
    assert!(text.contains("dry run: nothing written"), "{text}");
    assert!(
        text.contains(&format!("#0 {e}:")) && text.contains("metadata"),
        "{text}"
    );
    assert!(text.contains("refused without --force"), "{text}");
    assert_eq!(uuid_of(sfs), old_uuid, "--dry-run wrote a superblock");
    let still = stdout(&stripefs(&["probe", e]));
    assert!(
        still.contains("ext2/3/4"),
        "--dry-run changed the ext4: {still}"
    );

    // --force overwrites both.
    stripefs(&["mkfs", "--force", "--label", "new", e, s]);
    let new_uuid = uuid_of(ext4);
    assert_ne!(new_uuid, old_uuid);
    let probe = stdout(&stripefs(&["probe", e, s]));
    assert!(
        probe.contains(&format!(
            "stripefs uuid {new_uuid} label \"new\" (2 devices, complete)"
        )),
        "{probe}"
    );
    assert_fsck_clean(&[PathBuf::from(format!("UUID={new_uuid}"))]);
}
