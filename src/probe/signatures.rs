//! Recognizing what a device holds from the bytes at its start, as `blkid` does: a stripefs
//! superblock, another filesystem (ext2/3/4, xfs, btrfs, swap) or a partition table (GPT,
//! MBR). Pure functions over byte slices; reading the bytes is the caller's job.

use std::fmt;

use stripefs_fs::filesystem::hex;
use stripefs_layout::ondisk::{SUPERBLOCK_MAGIC, Superblock};

/// How many bytes from the start of a device [`detect`] looks at (the btrfs superblock, the
/// farthest signature, ends below 64 KiB + 4 KiB).
pub const HEAD_LEN: usize = 128 << 10;

/// Something recognizable found on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// A member of a stripefs filesystem.
    Stripefs {
        uuid: [u8; 16],
        label: String,
        index: u32,
        count: u32,
    },
    /// The stripefs magic, but a superblock that does not decode.
    DamagedStripefs,
    Ext,
    Xfs,
    Btrfs,
    /// A swap area (`SWAPSPACE2` or `SWAP-SPACE` at the end of the first page).
    Swap,
    /// A GPT partition table.
    Gpt,
    /// An MBR (DOS) partition table with at least one partition.
    Mbr,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::Stripefs {
                uuid,
                label,
                index,
                count,
            } => {
                write!(f, "stripefs filesystem {}", hex(uuid))?;
                if !label.is_empty() {
                    write!(f, " ({label:?})")?;
                }
                write!(f, ", member {index} of {count}")
            }
            Signature::DamagedStripefs => write!(f, "a damaged stripefs superblock"),
            Signature::Ext => write!(f, "ext2/3/4 filesystem (magic 0xEF53 at byte 1080)"),
            Signature::Xfs => write!(f, "xfs filesystem (\"XFSB\" at byte 0)"),
            Signature::Btrfs => write!(f, "btrfs filesystem (\"_BHRfS_M\" at byte 65600)"),
            Signature::Swap => write!(f, "swap area"),
            Signature::Gpt => write!(f, "GPT partition table (\"EFI PART\")"),
            Signature::Mbr => write!(f, "MBR partition table (0x55AA at byte 510)"),
        }
    }
}

/// One signature's check.
type Check = fn(&[u8]) -> Option<Signature>;

/// Everything recognizable in `head`, the first bytes of a device (up to [`HEAD_LEN`]; a
/// shorter slice is checked as far as it goes).
pub fn detect(head: &[u8]) -> Vec<Signature> {
    let checks: [Check; 7] = [stripefs, ext, xfs, btrfs, swap, gpt, mbr];
    checks.iter().filter_map(|check| check(head)).collect()
}

/// Whether `head` holds `magic` at `offset`.
fn has(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len()) == Some(magic)
}

fn stripefs(head: &[u8]) -> Option<Signature> {
    if !has(head, 0, &SUPERBLOCK_MAGIC) {
        return None;
    }
    Some(match Superblock::decode(head) {
        Ok(sb) => Signature::Stripefs {
            uuid: sb.fs_uuid,
            label: sb.label,
            index: sb.device_index,
            count: sb.device_count,
        },
        Err(_) => Signature::DamagedStripefs,
    })
}

fn ext(head: &[u8]) -> Option<Signature> {
    has(head, 1080, &[0x53, 0xEF]).then_some(Signature::Ext)
}

fn xfs(head: &[u8]) -> Option<Signature> {
    has(head, 0, b"XFSB").then_some(Signature::Xfs)
}

fn btrfs(head: &[u8]) -> Option<Signature> {
    has(head, 65600, b"_BHRfS_M").then_some(Signature::Btrfs)
}

/// The swap signature ends the first page, whatever the page size of the machine that made it.
fn swap(head: &[u8]) -> Option<Signature> {
    let found = [4096, 8192, 16384, 65536].iter().any(|&page: &usize| {
        has(head, page - 10, b"SWAPSPACE2") || has(head, page - 10, b"SWAP-SPACE")
    });
    found.then_some(Signature::Swap)
}

/// The GPT header is in the second logical block: at 512 or at 4096.
fn gpt(head: &[u8]) -> Option<Signature> {
    (has(head, 512, b"EFI PART") || has(head, 4096, b"EFI PART")).then_some(Signature::Gpt)
}

/// The boot signature, and a partition entry whose type is not 0 (a bare boot signature is
/// also what FAT boot sectors have; without an entry it is not a partition table).
fn mbr(head: &[u8]) -> Option<Signature> {
    if !has(head, 510, &[0x55, 0xAA]) {
        return None;
    }
    let entry_used = (0..4).any(|i| head.get(446 + 16 * i + 4).is_some_and(|&t| t != 0));
    entry_used.then_some(Signature::Mbr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0; HEAD_LEN]
    }

    fn put(mut head: Vec<u8>, offset: usize, bytes: &[u8]) -> Vec<u8> {
        head[offset..offset + bytes.len()].copy_from_slice(bytes);
        head
    }

    #[test]
    fn zeros_hold_nothing() {
        assert!(detect(&blank()).is_empty());
        assert!(detect(&[]).is_empty());
    }

    #[test]
    fn each_signature_at_its_place() {
        let cases = [
            (put(blank(), 1080, &[0x53, 0xEF]), Signature::Ext),
            (put(blank(), 0, b"XFSB"), Signature::Xfs),
            (put(blank(), 65600, b"_BHRfS_M"), Signature::Btrfs),
            (put(blank(), 4086, b"SWAPSPACE2"), Signature::Swap),
            (put(blank(), 65526, b"SWAP-SPACE"), Signature::Swap),
            (put(blank(), 512, b"EFI PART"), Signature::Gpt),
            (put(blank(), 4096, b"EFI PART"), Signature::Gpt),
        ];
        for (head, want) in cases {
            assert_eq!(detect(&head), vec![want]);
        }
    }

    #[test]
    fn mbr_needs_a_partition_entry() {
        let bare = put(blank(), 510, &[0x55, 0xAA]);
        assert!(detect(&bare).is_empty());
        let with_entry = put(bare, 446 + 16 + 4, &[0x83]);
        assert_eq!(detect(&with_entry), vec![Signature::Mbr]);
    }

    #[test]
    fn a_short_head_is_checked_as_far_as_it_goes() {
        let head = put(blank(), 1080, &[0x53, 0xEF]);
        assert_eq!(detect(&head[..2048]), vec![Signature::Ext]);
        assert!(detect(&head[..1081]).is_empty());
    }

    #[test]
    fn stripefs_superblock_names_filesystem_and_member() {
        let sb = Superblock {
            fs_uuid: [7; 16],
            device_index: 2,
            device_count: 4,
            block_size: 4096,
            default_stripe_unit: 256 << 10,
            default_stripe_count: 4,
            device_size: 64 << 20,
            meta_offset: 0,
            meta_len: 0,
            data_offset: 1 << 20,
            data_len: 63 << 20,
            created_secs: 0,
            label: "scratch".into(),
        };
        let head = put(blank(), 0, &sb.encode());
        let found = detect(&head);
        assert_eq!(
            found,
            vec![Signature::Stripefs {
                uuid: [7; 16],
                label: "scratch".into(),
                index: 2,
                count: 4
            }]
        );
        let text = found[0].to_string();
        assert!(
            text.contains("07070707") && text.contains("member 2 of 4"),
            "{text}"
        );
        let damaged = put(head, 100, b"x");
        assert_eq!(detect(&damaged), vec![Signature::DamagedStripefs]);
    }
}
