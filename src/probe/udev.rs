//! `stripefs probe --udev DEV`: the properties udev imports for a stripefs member
//! (`IMPORT{program}`), so that a rule can make the `/dev/disk/by-uuid/` and `by-label/` links
//! that mount(8) needs to resolve `UUID=…` and `LABEL=…` (libblkid does not know stripefs).
//! The rule is `contrib/udev/60-stripefs.rules`.

use stripefs_fs::filesystem::hex;

use super::signatures::Signature;

/// `KEY=value` lines for the first stripefs member signature among `found`; nothing for a
/// device that holds no stripefs member.
pub fn properties(found: &[Signature]) -> String {
    let Some((uuid, label, index, count)) = found.iter().find_map(|s| match s {
        Signature::Stripefs {
            uuid,
            label,
            index,
            count,
        } => Some((uuid, label, index, count)),
        _ => None,
    }) else {
        return String::new();
    };
    let uuid = hex(uuid);
    let mut out = format!(
        "ID_FS_TYPE=stripefs\nID_FS_USAGE=filesystem\nID_FS_UUID={uuid}\nID_FS_UUID_ENC={uuid}\n\
         STRIPEFS_MEMBER={index}\nSTRIPEFS_MEMBERS={count}\n"
    );
    if !label.is_empty() {
        out.push_str(&format!(
            "ID_FS_LABEL={}\nID_FS_LABEL_ENC={}\n",
            safe(label),
            encode(label)
        ));
    }
    out
}

/// A label as a udev property value: characters udev would not keep become `_`.
fn safe(label: &str) -> String {
    label
        .chars()
        .map(|c| if kept(c) { c } else { '_' })
        .collect()
}

/// A label as udev encodes it for link names: other bytes as `\xNN`.
fn encode(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if kept(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

fn kept(c: char) -> bool {
    c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_gets_the_properties_a_rule_links_by() {
        let found = [
            Signature::Ext,
            Signature::Stripefs {
                uuid: [0xab; 16],
                label: "data set/1".into(),
                index: 0,
                count: 4,
            },
        ];
        let text = properties(&found);
        assert!(text.starts_with("ID_FS_TYPE=stripefs\n"), "{text}");
        assert!(text.contains(&format!("ID_FS_UUID_ENC={}\n", "ab".repeat(16))));
        assert!(text.contains("STRIPEFS_MEMBER=0\nSTRIPEFS_MEMBERS=4\n"));
        assert!(text.contains("ID_FS_LABEL=data_set_1\n"));
        assert!(text.contains("ID_FS_LABEL_ENC=data\\x20set\\x2f1\n"));
    }

    #[test]
    fn anything_else_gets_nothing() {
        assert_eq!(properties(&[Signature::Xfs]), "");
        assert_eq!(properties(&[]), "");
    }
}
