//! Directory streams continue from stable positions: entries removed while a directory is
//! read do not make the rest of the stream skip anything (what `rm -rf` of a large
//! directory does, reading and removing by turns), and each call returns from where the
//! last one stopped.

mod common;

use std::collections::BTreeSet;

use stripefs_fs::filesystem::{self, Filesystem, MkfsOptions};

use common::{ME, ROOT, devices, name};

#[test]
fn removing_entries_while_reading_a_directory_skips_none_of_the_others() {
    let d = devices(2, 64 << 20);
    filesystem::mkfs(&d.specs, &MkfsOptions::default()).expect("mkfs");
    let fs = Filesystem::open(&d.specs).expect("open");
    let dir = fs.mkdir(ROOT, name("big"), 0o755, ME).expect("mkdir");
    let all: Vec<String> = (0..1000).map(|i| format!("f{i:04}")).collect();
    for n in &all {
        fs.create(dir.ino, name(n), 0o644, ME).expect("create");
    }
    // Read ".", ".." and the first 100 entries, as one reply would.
    let mut first = Vec::new();
    let mut next = 0;
    fs.readdir_with(dir.ino, 0, |e, a| {
        assert_eq!(e.ino, a.ino, "the attributes are the entry's");
        first.push(String::from_utf8_lossy(&e.name).into_owned());
        next = e.next;
        first.len() == 102
    })
    .expect("readdir");
    assert_eq!(&first[..2], [".", ".."]);
    // Remove what was read, and every other entry not read yet.
    let read: BTreeSet<&str> = first[2..].iter().map(String::as_str).collect();
    let mut left = BTreeSet::new();
    for (i, n) in all.iter().enumerate() {
        if read.contains(n.as_str()) || i % 2 == 0 {
            fs.unlink(dir.ino, name(n)).expect("unlink");
        } else {
            left.insert(n.clone());
        }
    }
    let rest: Vec<String> = fs
        .readdir(dir.ino, next)
        .expect("readdir from where the first call stopped")
        .into_iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    assert_eq!(rest.len(), left.len(), "each entry left is listed once");
    assert_eq!(rest.into_iter().collect::<BTreeSet<_>>(), left);
    fs.shutdown().expect("shutdown");
}
