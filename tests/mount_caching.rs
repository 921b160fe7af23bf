//! What the kernel caches on the mount (names, attributes and missing names for a day,
//! directory listings until the directory changes; see `fs/src/fuse.rs`) never shows
//! anything stale: every change made through the mount is seen at once, by the next
//! `stat`, lookup or listing.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use common::mount::MountedFs as Fixture;
use common::mount::assert_errno;

fn listing(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
        .collect()
}

#[test]
fn cached_names_attributes_and_listings_follow_every_change() {
    let Some(fx) = Fixture::new("caching", &[], &[]) else {
        return;
    };
    let dir = fx.path("d");
    std::fs::create_dir(&dir).expect("mkdir");
    let a = dir.join("a");
    // A missing name, looked up twice (the second answer is the kernel's), then created.
    assert_errno(
        "stat of a missing name",
        std::fs::metadata(&a),
        libc::ENOENT,
    );
    assert_errno("stat again", std::fs::metadata(&a), libc::ENOENT);
    File::create(&a)
        .and_then(|mut f| f.write_all(b"12345"))
        .expect("create");
    assert_eq!(std::fs::metadata(&a).expect("stat").len(), 5);
    // A listing, cached, then changed by every kind of namespace operation.
    for i in 0..50 {
        File::create(dir.join(format!("f{i:02}"))).expect("create");
    }
    let mut want: BTreeSet<String> = (0..50).map(|i| format!("f{i:02}")).collect();
    want.insert("a".into());
    assert_eq!(listing(&dir), want);
    std::fs::remove_file(dir.join("f07")).expect("unlink");
    std::fs::rename(dir.join("f08"), dir.join("g08")).expect("rename");
    std::fs::hard_link(&a, dir.join("b")).expect("link");
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    want.remove("f07");
    want.remove("f08");
    want.extend(["g08".to_string(), "b".into(), "sub".into()]);
    assert_eq!(listing(&dir), want, "listing after changes");
    // Attributes the changes touched: link count, size after a write, mode, the directory.
    assert_eq!(std::fs::metadata(&a).expect("stat").nlink(), 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&a)
        .and_then(|mut f| f.write_all(b"678"))
        .expect("append");
    assert_eq!(std::fs::metadata(dir.join("b")).expect("stat").len(), 8);
    std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    assert_eq!(std::fs::metadata(&a).expect("stat").mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&dir).expect("stat").nlink(),
        3,
        "d, d/., d/sub/.."
    );
    std::fs::remove_file(&a).expect("unlink a");
    assert_errno("stat after unlink", std::fs::metadata(&a), libc::ENOENT);
    assert_eq!(std::fs::metadata(dir.join("b")).expect("stat").nlink(), 1);
    fx.finish();
}
