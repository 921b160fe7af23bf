//! `stripefs probe --udev DEV`: the properties the udev rule in `contrib/udev` imports to link
//! `/dev/disk/by-uuid/UUID` to member 0 of a stripefs, read from real image files made by
//! `stripefs mkfs`. Needs no root.

mod common;

use common::mount::{image_files, stripefs, stripefs_may_fail, strs};

#[test]
fn udev_properties_name_the_filesystem_and_the_member() {
    let scratch = common::scratch_dir();
    let images = image_files(scratch.path(), 2, 32 << 20);
    let mut args = vec!["mkfs", "--label", "sets 1"];
    args.extend(strs(&images));
    stripefs(&args);
    let probe = |i: usize| {
        let out = stripefs(&["probe", "--udev", strs(&images)[i]]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (first, second) = (probe(0), probe(1));
    let uuid = first
        .lines()
        .find_map(|l| l.strip_prefix("ID_FS_UUID_ENC="))
        .unwrap_or_else(|| panic!("no uuid in:\n{first}"))
        .to_string();
    assert_eq!(uuid.len(), 32, "{first}");
    for (text, member) in [(&first, 0), (&second, 1)] {
        assert!(text.starts_with("ID_FS_TYPE=stripefs\n"), "{text}");
        assert!(text.contains(&format!("ID_FS_UUID={uuid}\n")), "{text}");
        assert!(
            text.contains(&format!("STRIPEFS_MEMBER={member}\nSTRIPEFS_MEMBERS=2\n")),
            "{text}"
        );
        assert!(text.contains("ID_FS_LABEL_ENC=sets\\x201\n"), "{text}");
    }
    // The plain listing names the same uuid.
    let listing = stripefs(&[&["probe"], &strs(&images)[..]].concat());
    assert!(String::from_utf8_lossy(&listing.stdout).contains(&uuid));
    // A device that holds no stripefs: no properties, success (udev imports nothing).
    let blank = scratch.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).expect("blank image");
    let out = stripefs(&["probe", "--udev", blank.to_str().expect("UTF-8")]);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Exactly one device.
    let out = stripefs_may_fail(&["probe", "--udev"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly one device"));
}
