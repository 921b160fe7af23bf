//! The control server without a FUSE mount (for machines without /dev/fuse): host files
//! stand in for inodes (`HostFiles`), the client finds the socket from a path under the
//! directory the server was started for (the well-known derived socket path; connecting from
//! that path is refused, since it is on no stripefs mount, so the socket is named), and
//! reads what the filesystem holds.

#[path = "../../tests/common/require.rs"]
mod require;

use std::ffi::OsStr;
use std::fs::File;
use std::time::Duration;

use stripefs_client::{Client, ClientBuffer, ClientError};
use stripefs_engine::{DeviceSpec, pattern};
use stripefs_fs::control::{HostFiles, Server, ServerOptions};
use stripefs_fs::filesystem::{self, Caller, Filesystem, MkfsOptions};

#[test]
fn a_server_without_a_mount_serves_host_stand_ins_found_by_the_derived_socket_path() {
    // The socket lives in /run/stripefs.
    if require::skip(&[require::Requirement::Root]) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("stripefs-control-unmounted-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    let specs: Vec<DeviceSpec> = (0..2)
        .map(|i| {
            let p = dir.path().join(format!("d{i}.img"));
            std::fs::File::create(&p)
                .and_then(|f| f.set_len(32 << 20))
                .expect("device file");
            DeviceSpec::Path(p)
        })
        .collect();
    filesystem::mkfs(&specs, &MkfsOptions::default()).expect("mkfs");
    let fs = Filesystem::open(&specs).expect("open");
    let attr = fs
        .create(1, OsStr::new("f"), 0o644, Caller::default())
        .expect("create");
    let mut want = vec![0u8; 200_000];
    pattern::fill(9, 0, &mut want);
    fs.write(attr.ino, 0, &want).expect("write");

    let fake_mount = dir.path().join("fake-mount");
    std::fs::create_dir(&fake_mount).expect("dir");
    let stand_in = fake_mount.join("f");
    std::fs::write(&stand_in, b"").expect("stand-in");
    let files = HostFiles::new();
    files.insert(&stand_in, attr.ino).expect("map the stand-in");
    let server = Server::start_unmounted(fs.clone(), &fake_mount, files, ServerOptions::default())
        .expect("server");

    // Found from the path alone; but the path is not on a stripefs mount, so connecting
    // from the path is refused (before anything is sent), and the socket must be named.
    let socket = stripefs_client::discover(&stand_in).expect("the derived socket path");
    assert_eq!(socket, server.socket_path());
    match Client::connect(&stand_in) {
        Err(ClientError::Untrusted { why, .. }) => {
            assert!(why.contains("not on a FUSE mount"), "{why}")
        }
        other => panic!("a path off any mount was trusted: {:?}", other.err()),
    }
    let client = Client::connect_socket(&socket).expect("connect to the named socket");
    assert_eq!(client.socket_path(), server.socket_path());
    let buffer = ClientBuffer::new(1 << 20).expect("buffer");
    let file = File::open(&stand_in).expect("open stand-in");
    let handle = client.register(&file, &buffer).expect("register");
    assert_eq!(client.read(handle, 0, 0, 1 << 20).expect("read"), 200_000);
    let mut got = vec![0u8; 200_000];
    buffer.read_at(0, &mut got).expect("copy");
    assert!(got == want, "bytes differ");
    // A host file that stands for nothing is not on this filesystem.
    let other = fake_mount.join("other");
    std::fs::write(&other, b"x").expect("other");
    let e = client
        .register(&File::open(&other).expect("open"), &buffer)
        .expect_err("unmapped host file");
    assert_eq!(e.errno(), libc::EXDEV, "{e}");
    drop(client);
    let start = std::time::Instant::now();
    while server.connections() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "connection not closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fs.registrations().is_empty());
    server.shutdown();
    fs.shutdown().expect("shutdown");
}
