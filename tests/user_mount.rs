//! Mounts and users: what a user other than root gets from `stripefs mount` where the system
//! does not let users mount FUSE (here `/dev/fuse` is mode 0600): an error that says so and
//! what root can do; where the control socket of a user's daemon goes (the user's own
//! directory when `/run/stripefs` is not writable); `allow_other` only when asked; the
//! per-user limit options checked.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::mount::{MountedFs, stripefs_may_fail};
use common::require::{self, Requirement};

/// A user other than root for these tests.
const USER: u32 = 60004;
/// Set in a child process: what it should do.
const CHILD_ENV: &str = "STRIPEFS_USER_MOUNT_CHILD";

/// `program ARGS` as `uid` (and group), through `setpriv`, with `env` added.
fn as_user(uid: u32, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program)
        .args(args)
        .env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run setpriv")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn can_run() -> bool {
    !require::skip(&[Requirement::Root, Requirement::Tool("setpriv")])
}

/// A scratch directory every user may use.
fn open_scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("stripefs-user-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// Entry point of the child processes of this file (a no-op in a normal run): prints the
/// socket directory chosen for `/run/stripefs`, or the error.
#[test]
fn child_process_entry() {
    let Some(task) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    assert_eq!(task, "socket-dir");
    match stripefs_fs::control::socket_dir::choose(Path::new("/run/stripefs")) {
        Ok(dir) => println!("CHOSEN {}", dir.display()),
        Err(e) => println!("REFUSED {e}"),
    }
}

/// What the child of this test binary, run as `uid` with `env`, chose.
fn socket_dir_as(uid: u32, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let mut env = env.to_vec();
    env.push((CHILD_ENV, "socket-dir"));
    let out = as_user(
        uid,
        &exe,
        &[
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ],
        &env,
    );
    assert!(out.status.success(), "child failed: {}", text(&out));
    text(&out)
}

#[test]
fn a_users_socket_goes_to_a_directory_of_the_users() {
    if !can_run() {
        return;
    }
    // $XDG_RUNTIME_DIR/stripefs, in a runtime directory the user owns.
    let scratch = open_scratch();
    let runtime = scratch.path().join("runtime");
    std::fs::create_dir(&runtime).expect("mkdir");
    std::os::unix::fs::chown(&runtime, Some(USER), Some(USER)).expect("chown");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let runtime_str = runtime.to_str().expect("UTF-8");
    let out = socket_dir_as(USER, &[("XDG_RUNTIME_DIR", runtime_str)]);
    let want = runtime.join("stripefs");
    assert!(
        out.contains(&format!("CHOSEN {}", want.display())),
        "with XDG_RUNTIME_DIR: {out}"
    );
    assert_eq!(std::fs::metadata(&want).expect("made").uid(), USER);
    // Without it, /tmp/stripefs-UID, made by the user.
    let tmp = PathBuf::from(format!("/tmp/stripefs-{USER}"));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = socket_dir_as(USER, &[]);
    assert!(
        out.contains(&format!("CHOSEN {}", tmp.display())),
        "without XDG_RUNTIME_DIR: {out}"
    );
    assert_eq!(std::fs::metadata(&tmp).expect("made").uid(), USER);
    std::fs::remove_dir_all(&tmp).expect("clean up");
    // A directory of that name planted by someone else is not used.
    std::fs::create_dir(&tmp).expect("plant");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = socket_dir_as(USER, &[]);
    std::fs::remove_dir_all(&tmp).expect("clean up");
    assert!(out.contains("REFUSED"), "planted directory: {out}");
    assert!(
        out.contains(&format!("not a directory owned by uid {USER}")),
        "planted directory: {out}"
    );
    assert!(out.contains("/run/stripefs"), "names what it tried: {out}");
}

#[test]
fn a_user_who_cannot_mount_fuse_is_told_why() {
    if !can_run() {
        return;
    }
    let scratch = open_scratch();
    let device = |i: usize| {
        format!(
            "emu:{},size=64M",
            scratch.path().join(format!("d{i}.img")).display()
        )
    };
    let (d0, d1) = (device(0), device(1));
    let stripefs = Path::new(common::mount::STRIPEFS);
    let out = as_user(USER, stripefs, &["mkfs", &d0, &d1], &[]);
    assert!(out.status.success(), "mkfs as a user: {}", text(&out));
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    std::os::unix::fs::chown(&mnt, Some(USER), Some(USER)).expect("chown");
    let fuse = std::fs::metadata("/dev/fuse").expect("/dev/fuse");
    let others_may_open = fuse.mode() & 0o006 == 0o006;
    let mnt_str = mnt.to_str().expect("UTF-8");
    let out = as_user(USER, stripefs, &["mount", &d0, &d1, mnt_str], &[]);
    let said = text(&out);
    if others_may_open {
        // A system that lets users mount FUSE (fusermount3): whatever happens, it is not
        // the old bare "Permission denied" about the mountpoint.
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).output();
        assert!(
            !said.contains(&format!("mounting on {mnt_str}: Permission denied")),
            "{said}"
        );
        return;
    }
    assert!(
        !out.status.success(),
        "a user mounted with /dev/fuse 0600: {said}"
    );
    for part in [
        format!("does not let uid {USER} mount FUSE filesystems"),
        format!("/dev/fuse (mode {:04o}", fuse.mode() & 0o7777),
        "Root can allow user mounts".to_string(),
    ] {
        assert!(said.contains(&part), "missing `{part}` in: {said}");
    }
}

#[test]
fn other_users_reach_a_mount_only_with_allow_other() {
    if !can_run() {
        return;
    }
    let check = |args: &[&str], reachable: bool| {
        let Some(fx) = MountedFs::new("allow_other", &[], args) else {
            return;
        };
        let parent = fx.mnt.parent().expect("parent");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(fx.path("f"), b"shared").expect("write");
        let cat = as_user(
            USER,
            Path::new("/bin/cat"),
            &[fx.path("f").to_str().expect("UTF-8")],
            &[],
        );
        if reachable {
            assert_eq!(cat.stdout, b"shared", "with {args:?}: {}", text(&cat));
        } else {
            assert!(
                !cat.status.success(),
                "with {args:?}: another user read the mount"
            );
            assert!(text(&cat).contains("Permission denied"), "{}", text(&cat));
        }
        fx.finish();
    };
    check(&[], false);
    check(&["-o", "allow_other"], true);
}

#[test]
fn per_user_limit_options_are_checked() {
    if !can_run() {
        return;
    }
    for (option, want) in [
        (
            "user_connections=0",
            "user_connections=0: not a number (1 or more)",
        ),
        ("user_registered=lots", "user_registered=lots"),
        ("user_frob=1", "unknown mount option(s): user_frob=1"),
    ] {
        let out = stripefs_may_fail(&["mount", "-o", option, "/nonexistent", "/nonexistent"]);
        assert!(!out.status.success(), "{option} accepted");
        assert!(text(&out).contains(want), "{option}: {}", text(&out));
    }
}
