//! The C API through the header: the C examples (`examples/read_file.c`, and
//! `examples/cat_files.c` with one buffer for many files) are compiled with `cc` against the
//! static library and run as other processes on a real mount; their output must be the
//! files, byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Mounted, Watchdog, assert_same, data};

const MIB: u64 = 1 << 20;

/// The static library built alongside this test (`target/<profile>/deps`).
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps directory");
    let lib = deps.join("libstripefs_client.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

fn compile_example(name: &str, out: &Path) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("cc")
        .args([
            "-std=c11",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-D_GNU_SOURCE",
            "-I",
        ])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples").join(name))
        .arg(static_library())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(out)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed: {status}");
}

#[test]
fn the_c_example_reads_a_file_on_the_mount_byte_for_byte() {
    if common::require::skip(&[common::require::Requirement::Tool("cc")]) {
        return;
    }
    require_mount!();
    let _w = Watchdog::new("C example", Duration::from_secs(180));
    let m = Mounted::new(3, 64 * MIB, 64 << 10);
    let exe = m.dir.path().join("read_file");
    compile_example("read_file.c", &exe);
    for (name, size) in [
        ("empty", 0usize),
        ("small", 1000),
        ("odd", 9 * MIB as usize + 12345),
    ] {
        let want = data(size as u64, size);
        let path = m.path(name);
        std::fs::write(&path, &want).expect("write through the mount");
        let out = Command::new(&exe)
            .arg(&path)
            .output()
            .expect("run the C example");
        assert!(
            out.status.success(),
            "C example on {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(&format!("C example output for {name}"), &out.stdout, &want);
    }
    m.wait_for_no_connections(Duration::from_secs(10));
    assert!(m.fs.registrations().is_empty());
    // An unreachable path is -ENOENT, reported by the example.
    let out = Command::new(&exe)
        .arg("/proc/version")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stripefs_connect"), "{stderr}");
}

#[test]
fn the_c_example_reads_many_files_into_one_buffer_registered_once() {
    if common::require::skip(&[common::require::Requirement::Tool("cc")]) {
        return;
    }
    require_mount!();
    let _w = Watchdog::new("C example, many files", Duration::from_secs(180));
    let m = Mounted::new(3, 64 * MIB, 64 << 10);
    let exe = m.dir.path().join("cat_files");
    compile_example("cat_files.c", &exe);
    let sizes = [
        0usize,
        1000,
        3 * MIB as usize + 7,
        64 << 10,
        2 * MIB as usize,
    ];
    let mut want = Vec::new();
    let mut paths = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let bytes = data(50 + i as u64, size);
        let path = m.path(&format!("c{i}"));
        std::fs::write(&path, &bytes).expect("write through the mount");
        want.extend_from_slice(&bytes);
        paths.push(path);
    }
    let out = Command::new(&exe)
        .args(&paths)
        .output()
        .expect("run the C example");
    assert!(
        out.status.success(),
        "C example failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same("cat_files output", &out.stdout, &want);
    m.wait_for_no_connections(Duration::from_secs(10));
    assert!(m.fs.registrations().is_empty());
}
