//! One test per refusal of the on-disk codecs, plus the byte offsets the format promises.
//!
//! Invalid values are produced by encoding them as they are (encoders write fields
//! unchecked) or by editing the bytes and fixing the checksum, so each test reaches the
//! check it names.

use stripefs_layout::ondisk::*;
use stripefs_layout::{DeviceIndex, StripeLayout, StripeUnit};

// ---------------------------------------------------------------- superblock

fn superblock() -> Superblock {
    Superblock {
        fs_uuid: *b"0123456789abcdef",
        device_index: 1,
        device_count: 4,
        block_size: 4096,
        default_stripe_unit: 1 << 20,
        default_stripe_count: 4,
        device_size: 1 << 30,
        meta_offset: 4096,
        meta_len: 64 << 20,
        data_offset: (64 << 20) + 4096,
        data_len: (1 << 30) - (64 << 20) - 4096,
        created_secs: 1_700_000_000,
        label: "scratch".into(),
    }
}

/// Decodes the encoding of `sb` with `edit` applied to its raw fields (checksum refreshed).
fn decode_edited(
    sb: &Superblock,
    edit: impl FnOnce(&mut RawSuperblock),
) -> Result<Superblock, OnDiskError> {
    let mut raw = RawSuperblock::read(&sb.encode());
    edit(&mut raw);
    Superblock::decode(&raw.write())
}

fn bad_field(field: &'static str, value: u64) -> Result<Superblock, OnDiskError> {
    Err(OnDiskError::BadField { field, value })
}

#[test]
fn superblock_round_trips_at_fixed_offsets() {
    let sb = superblock();
    let block = sb.encode();
    assert_eq!(block.len(), SUPERBLOCK_SIZE);
    assert_eq!(&block[0..8], b"STRIPEFS");
    assert_eq!(block[8..12], 1u32.to_le_bytes());
    assert_eq!(block[32..36], 1u32.to_le_bytes());
    assert_eq!(block[52..60], (1u64 << 30).to_le_bytes());
    assert_eq!(block[92..100], 1_700_000_000u64.to_le_bytes());
    assert_eq!(&block[100..107], b"scratch");
    assert!(block[107..4092].iter().all(|&b| b == 0));
    assert_eq!(block[4092..], crc32c::crc32c(&block[..4092]).to_le_bytes());
    assert_eq!(Superblock::decode(&block), Ok(sb));
}

#[test]
fn superblock_decode_ignores_bytes_after_the_block() {
    let mut bytes = superblock().encode().to_vec();
    bytes.extend_from_slice(&[0xAB; 100]);
    assert_eq!(Superblock::decode(&bytes), Ok(superblock()));
}

#[test]
fn superblock_truncated() {
    let block = superblock().encode();
    assert_eq!(
        Superblock::decode(&block[..4095]),
        Err(OnDiskError::Truncated {
            needed: 4096,
            available: 4095
        })
    );
    assert!(matches!(
        Superblock::decode(&[]),
        Err(OnDiskError::Truncated { .. })
    ));
}

#[test]
fn superblock_bad_magic() {
    assert_eq!(
        Superblock::decode(&[0; 4096]),
        Err(OnDiskError::BadMagic { found: 0 })
    );
    let mut block = superblock().encode();
    block[0] = b's';
    assert_eq!(
        Superblock::decode(&block),
        Err(OnDiskError::BadMagic {
            found: u64::from_le_bytes(*b"sTRIPEFS")
        })
    );
}

#[test]
fn superblock_unknown_version_is_reported_before_the_checksum() {
    let mut block = superblock().encode();
    block[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        Superblock::decode(&block),
        Err(OnDiskError::UnsupportedVersion {
            found: 2,
            supported: FORMAT_VERSION
        })
    );
}

#[test]
fn superblock_bad_checksum() {
    let mut block = superblock().encode();
    block[20] ^= 0x10;
    let stored = u32::from_le_bytes(block[4092..].try_into().unwrap());
    assert_eq!(
        Superblock::decode(&block),
        Err(OnDiskError::BadChecksum {
            expected: stored,
            found: crc32c::crc32c(&block[..4092])
        })
    );
}

#[test]
fn superblock_flags_and_padding_must_be_zero() {
    let sb = superblock();
    assert_eq!(decode_edited(&sb, |r| r.flags = 4), bad_field("flags", 4));
    let mut block = sb.encode();
    block[2000] = 1;
    let crc = crc32c::crc32c(&block[..4092]);
    block[4092..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Superblock::decode(&block), bad_field("padding", 0));
}

#[test]
fn superblock_device_count_and_index() {
    let sb = superblock();
    assert_eq!(
        decode_edited(&sb, |r| r.device_count = 0),
        bad_field("device_count", 0)
    );
    assert_eq!(
        decode_edited(&sb, |r| r.device_count = 257),
        bad_field("device_count", 257)
    );
    assert_eq!(
        decode_edited(&sb, |r| r.device_index = 4),
        bad_field("device_index", 4)
    );
    let last = decode_edited(&sb, |r| {
        r.device_count = 256;
        r.device_index = 255;
    });
    assert!(last.is_ok());
}

#[test]
fn superblock_block_size() {
    let sb = superblock();
    for bad in [0, 256, 3000, 131072] {
        assert_eq!(
            decode_edited(&sb, |r| r.block_size = bad),
            bad_field("block_size", bad.into())
        );
    }
    for good in [512, 65536] {
        let mut sb = superblock();
        sb.block_size = good;
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }
}

#[test]
fn superblock_default_layout() {
    let sb = superblock();
    for bad in [0, 2048, 3 << 12, 1 << 31] {
        let result = decode_edited(&sb, |r| r.default_stripe_unit = bad);
        assert_eq!(result, bad_field("default_stripe_unit", bad.into()));
    }
    for bad in [0, 5] {
        let result = decode_edited(&sb, |r| r.default_stripe_count = bad);
        assert_eq!(result, bad_field("default_stripe_count", bad.into()));
    }
}

#[test]
fn superblock_device_size() {
    let sb = superblock();
    let result = decode_edited(&sb, |r| r.device_size += 512);
    assert_eq!(result, bad_field("device_size", (1 << 30) + 512));
    let tiny = decode_edited(&sb, |r| {
        r.block_size = 512;
        r.device_size = 2048;
        r.meta_len = 0;
        r.data_len = 0;
    });
    assert_eq!(tiny, bad_field("device_size", 2048));
}

#[test]
fn superblock_regions_inside_the_device() {
    let sb = superblock();
    let meta_over_sb = decode_edited(&sb, |r| r.meta_offset = 0);
    assert_eq!(
        meta_over_sb,
        Err(OnDiskError::BadRegion {
            region: "meta",
            offset: 0,
            len: 64 << 20,
            device_size: 1 << 30
        })
    );
    let data_past_end = decode_edited(&sb, |r| r.data_len += 4096);
    assert!(matches!(
        data_past_end,
        Err(OnDiskError::BadRegion { region: "data", .. })
    ));
    let overflow = decode_edited(&sb, |r| r.data_offset = u64::MAX - 10);
    assert!(matches!(
        overflow,
        Err(OnDiskError::BadRegion { region: "data", .. })
    ));
    let no_meta = decode_edited(&sb, |r| {
        r.meta_offset = 0;
        r.meta_len = 0;
    });
    assert!(no_meta.is_ok(), "an empty region may sit anywhere");
}

#[test]
fn superblock_regions_apart() {
    let result = decode_edited(&superblock(), |r| r.data_offset = 8192);
    assert!(matches!(
        result,
        Err(OnDiskError::RegionsOverlap {
            meta_offset: 4096,
            data_offset: 8192,
            ..
        })
    ));
}

#[test]
fn superblock_label() {
    let sb = superblock();
    let not_utf8 = decode_edited(&sb, |r| r.label[0] = 0xFF);
    assert_eq!(not_utf8, Err(OnDiskError::BadLabel));
    let junk_after_nul = decode_edited(&sb, |r| r.label[20] = b'x');
    assert_eq!(junk_after_nul, Err(OnDiskError::BadLabel));
    let full = decode_edited(&sb, |r| r.label = [b'a'; 32]);
    assert_eq!(full.map(|s| s.label), Ok("a".repeat(32)));

    let mut long = superblock();
    long.label = "é".repeat(17);
    assert_eq!(
        long.validate(),
        Err(OnDiskError::NameTooLong { len: 34, max: 32 })
    );
    long.label = "a\0b".into();
    assert_eq!(long.validate(), Err(OnDiskError::BadLabel));
}

#[test]
#[should_panic(expected = "cannot be encoded")]
fn superblock_encode_refuses_a_label_it_cannot_store() {
    let mut sb = superblock();
    sb.label = "x".repeat(33);
    sb.encode();
}

#[test]
fn superblock_encode_of_invalid_fields_is_refused_by_decode() {
    let mut sb = superblock();
    sb.device_index = 9;
    assert_eq!(
        Superblock::decode(&sb.encode()),
        bad_field("device_index", 9)
    );
}

// ---------------------------------------------------------------- records

fn ts(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 5 }
}

fn file() -> InodeRecord {
    InodeRecord {
        ino: 7,
        kind: InodeKind::File,
        mode: 0o644,
        uid: 1000,
        gid: 100,
        size: 12345,
        atime: ts(1),
        mtime: ts(2),
        ctime: ts(3),
        crtime: ts(-4),
        layout: Some(LayoutRecord {
            stripe_unit: 1 << 16,
            devices: vec![2, 0, 1],
        }),
        symlink_target: Vec::new(),
        rdev: 0,
        prealloc: false,
    }
}

fn symlink() -> InodeRecord {
    InodeRecord {
        kind: InodeKind::Symlink,
        layout: None,
        symlink_target: b"../target".to_vec(),
        ..file()
    }
}

fn all_kinds() -> Vec<Record> {
    vec![
        Record::Inode(file()),
        Record::Inode(symlink()),
        Record::Inode(InodeRecord {
            kind: InodeKind::Dir,
            layout: None,
            ..file()
        }),
        Record::FreeInode { ino: 9 },
        Record::Link {
            parent: 1,
            name: b"a file".to_vec(),
            ino: 7,
        },
        Record::Unlink {
            parent: 1,
            name: b"x".to_vec(),
        },
        Record::Extent {
            ino: 7,
            column: 2,
            object_offset: 1 << 20,
            device_offset: 1 << 30,
            len: 4096,
        },
        Record::TruncateExtents {
            ino: 7,
            column: 255,
            object_offset: 0,
        },
        Record::RemoveExtents {
            ino: 7,
            column: 255,
            object_offset: 4096,
            len: u64::MAX - 4096,
        },
        Record::SetXattr {
            ino: 7,
            name: b"user.stripefs.layout".to_vec(),
            value: Vec::new(),
        },
        Record::RemoveXattr {
            ino: 7,
            name: b"user.x".to_vec(),
        },
    ]
}

fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(&mut out);
    out
}

/// Encodes `record` as it is and decodes it back.
fn reencode(record: &Record) -> Result<Record, OnDiskError> {
    Record::decode(&encode(record)).map(|(r, _)| r)
}

fn inode_with(edit: impl FnOnce(&mut InodeRecord)) -> Result<Record, OnDiskError> {
    let mut inode = file();
    edit(&mut inode);
    reencode(&Record::Inode(inode))
}

fn record_field<T>(field: &'static str, value: u64) -> Result<T, OnDiskError> {
    Err(OnDiskError::BadField { field, value })
}

#[test]
fn every_record_kind_round_trips() {
    for record in all_kinds() {
        let bytes = encode(&record);
        assert_eq!(Record::decode(&bytes), Ok((record.clone(), bytes.len())));
        assert_eq!(record.validate(), Ok(()));
    }
    let mut all = Vec::new();
    encode_all(&all_kinds(), &mut all);
    assert_eq!(decode_all(&all), Ok(all_kinds()));
    assert_eq!(decode_all(&[]), Ok(Vec::new()));
}

#[test]
fn record_header_layout() {
    let bytes = encode(&Record::FreeInode { ino: 0x0102 });
    assert_eq!(bytes, [2, 8, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(RECORD_HEADER_LEN, 5);
}

#[test]
fn record_bad_type() {
    for tag in [0u8, 10, 255] {
        assert_eq!(
            Record::decode(&[tag, 0, 0, 0, 0]),
            Err(OnDiskError::BadRecordType { tag })
        );
    }
}

#[test]
fn record_truncated() {
    assert_eq!(
        Record::decode(&[]),
        Err(OnDiskError::Truncated {
            needed: 1,
            available: 0
        })
    );
    assert_eq!(
        Record::decode(&[2, 8, 0]),
        Err(OnDiskError::Truncated {
            needed: 5,
            available: 3
        })
    );
    let bytes = encode(&Record::FreeInode { ino: 1 });
    assert_eq!(
        Record::decode(&bytes[..12]),
        Err(OnDiskError::Truncated {
            needed: 13,
            available: 12
        })
    );
    // A body_len shorter than the fields: the record, as delimited, ends too soon.
    assert_eq!(
        Record::decode(&[2, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
        Err(OnDiskError::Truncated {
            needed: 13,
            available: 9
        })
    );
}

#[test]
fn record_body_longer_than_its_fields() {
    let mut bytes = encode(&Record::FreeInode { ino: 1 });
    bytes[1] = 9;
    bytes.push(0);
    assert_eq!(
        Record::decode(&bytes),
        Err(OnDiskError::BodyLength {
            tag: 2,
            declared: 9,
            used: 8
        })
    );
}

#[test]
fn decode_all_fails_on_any_bad_record() {
    let mut bytes = Vec::new();
    encode_all(&all_kinds(), &mut bytes);
    bytes.push(0);
    assert_eq!(
        decode_all(&bytes),
        Err(OnDiskError::BadRecordType { tag: 0 })
    );
    bytes.pop();
    bytes.pop();
    assert!(matches!(
        decode_all(&bytes),
        Err(OnDiskError::Truncated { .. })
    ));
}

#[test]
fn inode_kind_mode_and_times() {
    let mut bytes = encode(&Record::Inode(file()));
    bytes[5 + 8] = 8;
    assert_eq!(Record::decode(&bytes), record_field("inode.kind", 8));
    assert_eq!(
        inode_with(|i| i.mode = 0o10000),
        record_field("inode.mode", 0o10000)
    );
    assert!(inode_with(|i| i.mode = 0o7777).is_ok());
    let late = inode_with(|i| i.mtime.nanos = 1_000_000_000);
    assert_eq!(late, record_field("inode.mtime.nanos", 1_000_000_000));
    let late = inode_with(|i| i.crtime.nanos = u32::MAX);
    assert_eq!(late, record_field("inode.crtime.nanos", u32::MAX.into()));
    assert!(
        inode_with(|i| i.atime = Timestamp {
            secs: i64::MIN,
            nanos: 999_999_999
        })
        .is_ok()
    );
}

#[test]
fn inode_layout_follows_kind() {
    assert_eq!(
        inode_with(|i| i.layout = None),
        record_field("inode.layout", 0)
    );
    let link_with_layout = inode_with(|i| {
        i.kind = InodeKind::Symlink;
        i.symlink_target = b"t".to_vec();
    });
    assert_eq!(link_with_layout, record_field("inode.layout", 1));
    assert!(inode_with(|i| i.kind = InodeKind::Dir).is_ok());
}

/// An inode record as written before special files existed, built byte by byte: tag 1, body
/// length, ino, kind, mode, uid, gid, size, four timestamps, layout option, symlink target.
fn old_format_inode(kind: u8, layout: Option<(u32, &[u16])>, target: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&7u64.to_le_bytes());
    body.push(kind);
    for v in [0o644u32, 1000, 100] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&12345u64.to_le_bytes());
    for secs in [1i64, 2, 3, -4] {
        body.extend_from_slice(&secs.to_le_bytes());
        body.extend_from_slice(&5u32.to_le_bytes());
    }
    match layout {
        None => body.push(0),
        Some((unit, devices)) => {
            body.push(1);
            body.extend_from_slice(&unit.to_le_bytes());
            body.extend_from_slice(&(devices.len() as u32).to_le_bytes());
            for d in devices {
                body.extend_from_slice(&d.to_le_bytes());
            }
        }
    }
    body.extend_from_slice(&(target.len() as u32).to_le_bytes());
    body.extend_from_slice(target);
    let mut out = vec![1];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn old_format_inode_records_still_decode() {
    let old_file = old_format_inode(1, Some((1 << 16, &[2, 0, 1])), b"");
    assert_eq!(
        Record::decode(&old_file),
        Ok((Record::Inode(file()), old_file.len()))
    );
    // Files, directories and symlinks are still written exactly as before.
    assert_eq!(encode(&Record::Inode(file())), old_file);
    let old_link = old_format_inode(3, None, b"../target");
    assert_eq!(
        Record::decode(&old_link),
        Ok((Record::Inode(symlink()), old_link.len()))
    );
    assert_eq!(encode(&Record::Inode(symlink())), old_link);
    let old_dir = old_format_inode(2, None, b"");
    let dir = InodeRecord {
        kind: InodeKind::Dir,
        layout: None,
        ..file()
    };
    assert_eq!(
        Record::decode(&old_dir),
        Ok((Record::Inode(dir), old_dir.len()))
    );
}

fn special(kind: InodeKind, rdev: u32) -> InodeRecord {
    InodeRecord {
        kind,
        size: 0,
        layout: None,
        rdev,
        prealloc: false,
        ..file()
    }
}

#[test]
fn special_inode_records() {
    let chr = special(InodeKind::CharDevice, (1 << 8) | 3);
    let bytes = encode(&Record::Inode(chr.clone()));
    // The rdev is the last field, after the (empty) symlink target.
    assert_eq!(bytes[bytes.len() - 4..], ((1u32 << 8) | 3).to_le_bytes());
    assert_eq!(reencode(&Record::Inode(chr)).map(|_| ()), Ok(()));
    for kind in [InodeKind::Fifo, InodeKind::Socket, InodeKind::BlockDevice] {
        let r = Record::Inode(special(kind, 0));
        assert_eq!(reencode(&r), Ok(r));
    }
    // Only device nodes have a device number.
    assert_eq!(
        reencode(&Record::Inode(special(InodeKind::Fifo, 9))),
        record_field("inode.rdev", 9)
    );
    // A file's rdev is never written, so only validate can see it.
    let file_with_rdev = Record::Inode(InodeRecord { rdev: 9, ..file() });
    assert_eq!(file_with_rdev.validate(), record_field("inode.rdev", 9));
    // Special files have no layout.
    let with_layout = InodeRecord {
        layout: file().layout,
        ..special(InodeKind::Socket, 0)
    };
    assert_eq!(
        reencode(&Record::Inode(with_layout)),
        record_field("inode.layout", 1)
    );
    // A special kind without its trailing rdev is truncated; a file with one is too long.
    let mut short = encode(&Record::Inode(special(InodeKind::Fifo, 0)));
    short.truncate(short.len() - 4);
    let body_len = (short.len() - 5) as u32;
    short[1..5].copy_from_slice(&body_len.to_le_bytes());
    assert!(Record::decode(&short).is_err());
    let long = with_tail(&Record::Inode(file()), &[1, 0, 0, 0]);
    assert!(matches!(
        Record::decode(&long),
        Err(OnDiskError::BodyLength { tag: 1, .. })
    ));
}

/// The record's encoding with `tail` appended to its body.
fn with_tail(record: &Record, tail: &[u8]) -> Vec<u8> {
    let mut bytes = encode(record);
    bytes.extend_from_slice(tail);
    let body_len = (bytes.len() - 5) as u32;
    bytes[1..5].copy_from_slice(&body_len.to_le_bytes());
    bytes
}

#[test]
fn inode_prealloc_byte() {
    // Set: one trailing byte, 1; clear: no byte (a file record as before the flag existed).
    let plain = encode(&Record::Inode(file()));
    let flagged = InodeRecord {
        prealloc: true,
        ..file()
    };
    let bytes = encode(&Record::Inode(flagged.clone()));
    assert_eq!(bytes.len(), plain.len() + 1);
    assert_eq!(bytes[5..bytes.len() - 1], plain[5..]);
    assert_eq!(bytes[bytes.len() - 1], 1);
    assert_eq!(
        Record::decode(&bytes).map(|(r, _)| r),
        Ok(Record::Inode(flagged))
    );
    let zero = with_tail(&Record::Inode(file()), &[0]);
    assert_eq!(Record::decode(&zero), record_field("inode.prealloc", 0));
    // Only files preallocate.
    let dir = InodeRecord {
        prealloc: true,
        ..special(InodeKind::Fifo, 0)
    };
    assert_eq!(
        dir.validate(),
        Err(OnDiskError::BadField {
            field: "inode.prealloc",
            value: 1
        })
    );
}

#[test]
fn remove_extents_checks() {
    let ok = Record::RemoveExtents {
        ino: 3,
        column: 1,
        object_offset: 4096,
        len: 8192,
    };
    assert_eq!(Record::decode(&encode(&ok)).map(|(r, _)| r), Ok(ok));
    let empty = Record::RemoveExtents {
        ino: 3,
        column: 1,
        object_offset: 4096,
        len: 0,
    };
    assert_eq!(reencode(&empty), record_field("remove_extents.len", 0));
    let wraps = Record::RemoveExtents {
        ino: 3,
        column: 1,
        object_offset: u64::MAX,
        len: 2,
    };
    assert_eq!(
        reencode(&wraps),
        record_field("remove_extents.object_offset", u64::MAX)
    );
    let column = Record::RemoveExtents {
        ino: 3,
        column: 256,
        object_offset: 0,
        len: 1,
    };
    assert_eq!(reencode(&column), record_field("column", 256));
}

#[test]
fn inode_layout_flag() {
    let mut bytes = encode(&Record::Inode(file()));
    let flag_at = 5 + 8 + 1 + 4 * 3 + 8 + 12 * 4;
    assert_eq!(bytes[flag_at], 1);
    bytes[flag_at] = 2;
    assert_eq!(Record::decode(&bytes), record_field("inode.layout.flag", 2));
}

#[test]
fn layout_record_checks() {
    let with = |unit: u32, devices: Vec<u16>| {
        inode_with(|i| {
            i.layout = Some(LayoutRecord {
                stripe_unit: unit,
                devices,
            })
        })
    };
    assert_eq!(
        with(2048, vec![0]),
        record_field("layout.stripe_unit", 2048)
    );
    assert_eq!(
        with(1 << 31, vec![0]),
        record_field("layout.stripe_unit", 1 << 31)
    );
    assert_eq!(
        with(12288, vec![0]),
        record_field("layout.stripe_unit", 12288)
    );
    assert_eq!(with(4096, vec![]), record_field("layout.devices.len", 0));
    assert_eq!(with(4096, vec![1, 2, 1]), record_field("layout.devices", 1));
    assert_eq!(with(4096, vec![256]), record_field("layout.devices", 256));
    assert_eq!(
        with(4096, (0..257).collect()),
        record_field("layout.devices.len", 257)
    );
    assert!(with(1 << 30, (0..256).rev().collect()).is_ok());
}

#[test]
fn layout_record_device_count_checked_before_reading_devices() {
    let mut bytes = encode(&Record::Inode(file()));
    let count_at = 5 + 8 + 1 + 4 * 3 + 8 + 12 * 4 + 1 + 4;
    bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        Record::decode(&bytes),
        record_field("layout.devices.len", u32::MAX.into())
    );
}

#[test]
fn layout_record_converts_to_and_from_geometry() {
    let record = LayoutRecord {
        stripe_unit: 1 << 16,
        devices: vec![3, 1],
    };
    let layout = record.to_stripe_layout().unwrap();
    assert_eq!(layout.unit(), StripeUnit::new(1 << 16).unwrap());
    assert_eq!(layout.devices(), [DeviceIndex(3), DeviceIndex(1)]);
    assert_eq!(LayoutRecord::try_from(&layout), Ok(record));
    let far = StripeLayout::new(StripeUnit::new(4096).unwrap(), vec![DeviceIndex(300)]).unwrap();
    assert_eq!(
        LayoutRecord::try_from(&far),
        Err(OnDiskError::BadField {
            field: "layout.devices",
            value: 300
        })
    );
}

#[test]
fn symlink_target_checks() {
    let link = |target: Vec<u8>| {
        reencode(&Record::Inode(InodeRecord {
            symlink_target: target,
            ..symlink()
        }))
    };
    assert_eq!(
        link(Vec::new()),
        record_field("inode.symlink_target.len", 0)
    );
    assert_eq!(
        link(b"a\0b".to_vec()),
        record_field("inode.symlink_target.nul_at", 1)
    );
    assert!(link(vec![b'a'; SYMLINK_MAX]).is_ok());
    assert_eq!(
        link(vec![b'a'; SYMLINK_MAX + 1]),
        Err(OnDiskError::ValueTooLong {
            field: "inode.symlink_target",
            len: 4097,
            max: 4096
        })
    );
    let file_with_target = inode_with(|i| i.symlink_target = b"t".to_vec());
    assert_eq!(
        file_with_target,
        record_field("inode.symlink_target.len", 1)
    );
}

#[test]
fn entry_names() {
    let link = |name: &[u8]| {
        reencode(&Record::Link {
            parent: 1,
            name: name.to_vec(),
            ino: 2,
        })
    };
    let bad = |name: &[u8], reason| {
        Err(OnDiskError::BadName {
            name: name.to_vec(),
            reason,
        })
    };
    assert_eq!(link(b""), bad(b"", "empty"));
    assert_eq!(link(b"."), bad(b".", "reserved name"));
    assert_eq!(link(b".."), bad(b"..", "reserved name"));
    assert_eq!(link(b"a/b"), bad(b"a/b", "contains '/'"));
    assert_eq!(link(b"a\0"), bad(b"a\0", "contains NUL"));
    assert_eq!(
        link(&[b'n'; 256]),
        Err(OnDiskError::NameTooLong { len: 256, max: 255 })
    );
    assert!(link(&[b'n'; 255]).is_ok());
    assert!(link(b"...").is_ok());
    assert!(link(&[0xFF, 0xFE]).is_ok(), "names are bytes, not UTF-8");
    let unlink = Record::Unlink {
        parent: 1,
        name: b"/".to_vec(),
    };
    assert_eq!(reencode(&unlink), bad(b"/", "contains '/'"));
    let shown = validate_name(b"a/\xff").unwrap_err().to_string();
    assert_eq!(shown, "bad name \"a/\\xff\": contains '/'");
}

#[test]
fn xattr_checks() {
    let set = |name: &[u8], value: Vec<u8>| {
        reencode(&Record::SetXattr {
            ino: 1,
            name: name.to_vec(),
            value,
        })
    };
    assert!(
        set(b"user.a/b", vec![7; XATTR_VALUE_MAX]).is_ok(),
        "'/' is fine in an xattr name"
    );
    assert_eq!(
        set(b"user.a", vec![7; XATTR_VALUE_MAX + 1]),
        Err(OnDiskError::ValueTooLong {
            field: "xattr.value",
            len: 65537,
            max: 65536
        })
    );
    assert!(matches!(
        set(b"", Vec::new()),
        Err(OnDiskError::BadName {
            reason: "empty",
            ..
        })
    ));
    let remove = Record::RemoveXattr {
        ino: 1,
        name: vec![b'x'; 300],
    };
    assert_eq!(
        reencode(&remove),
        Err(OnDiskError::NameTooLong { len: 300, max: 255 })
    );
    assert!(matches!(
        validate_xattr_name(b"a\0"),
        Err(OnDiskError::BadName {
            reason: "contains NUL",
            ..
        })
    ));
}

#[test]
fn extent_checks() {
    let extent = |column, object_offset, device_offset, len| {
        reencode(&Record::Extent {
            ino: 1,
            column,
            object_offset,
            device_offset,
            len,
        })
    };
    assert_eq!(extent(0, 0, 0, 0), record_field("extent.len", 0));
    assert_eq!(extent(256, 0, 0, 1), record_field("column", 256));
    assert_eq!(
        extent(0, u64::MAX, 0, 2),
        record_field("extent.object_offset", u64::MAX)
    );
    assert_eq!(
        extent(0, 0, u64::MAX - 1, 2),
        record_field("extent.device_offset", u64::MAX - 1)
    );
    assert!(extent(255, u64::MAX - 1, u64::MAX - 1, 1).is_ok());
    let truncate = Record::TruncateExtents {
        ino: 1,
        column: 300,
        object_offset: 0,
    };
    assert_eq!(reencode(&truncate), record_field("column", 300));
}

// ---------------------------------------------------------------- log entries

/// An entry built by hand, its checksum computed over header and payload as the format says.
fn hand_entry(version: u16, flags: u16, generation: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&LOG_MAGIC.to_le_bytes());
    e.extend_from_slice(&version.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&generation.to_le_bytes());
    e.extend_from_slice(&seq.to_le_bytes());
    e.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    e.extend_from_slice(&[0; 4]);
    e.extend_from_slice(payload);
    let crc = crc32c::crc32c(&e);
    e[28..32].copy_from_slice(&crc.to_le_bytes());
    e.resize(e.len().next_multiple_of(LOG_BLOCK), 0);
    e
}

#[test]
fn log_entry_round_trips_and_matches_the_documented_layout() {
    let records = all_kinds();
    let entry = encode_entry(3, 1, &records);
    assert_eq!(entry.len() % LOG_BLOCK, 0);
    assert_eq!(&entry[0..4], b"SLOG");
    let mut payload = Vec::new();
    encode_all(&records, &mut payload);
    assert_eq!(entry, hand_entry(1, 0, 3, 1, &payload));
    assert_eq!(decode_entry(&entry, 3, 1), Ok(Some((records, entry.len()))));
}

#[test]
fn log_entries_follow_one_another() {
    let mut log = encode_entry(5, 1, &all_kinds());
    log.extend(encode_entry(5, 2, &[]));
    log.extend(encode_entry(4, 3, &[Record::FreeInode { ino: 1 }])); // stale generation
    let (first, len1) = decode_entry(&log, 5, 1).unwrap().unwrap();
    assert_eq!(first, all_kinds());
    let (second, len2) = decode_entry(&log[len1..], 5, 2).unwrap().unwrap();
    assert_eq!((second, len2), (Vec::new(), LOG_BLOCK));
    assert_eq!(decode_entry(&log[len1 + len2..], 5, 3), Ok(None));
}

#[test]
fn log_end_is_not_an_error() {
    let entry = encode_entry(2, 7, &all_kinds());
    assert_eq!(decode_entry(&[], 2, 7), Ok(None));
    assert_eq!(decode_entry(&[0; 8192], 2, 7), Ok(None));
    assert_eq!(decode_entry(&entry[..31], 2, 7), Ok(None));
    assert_eq!(
        decode_entry(&entry[..entry.len() - 1], 2, 7),
        Ok(None),
        "torn padding"
    );
    assert_eq!(decode_entry(&entry, 1, 7), Ok(None), "other generation");
    assert_eq!(decode_entry(&entry, 2, 8), Ok(None), "other seq");
    let mut flipped = entry.clone();
    flipped[40] ^= 1;
    assert_eq!(decode_entry(&flipped, 2, 7), Ok(None), "bad crc");
    let mut magic = entry.clone();
    magic[3] = 0;
    assert_eq!(decode_entry(&magic, 2, 7), Ok(None), "bad magic");
    let mut huge = entry;
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode_entry(&huge, 2, 7),
        Ok(None),
        "payload past the bytes"
    );
}

#[test]
fn log_entry_with_good_crc_but_bad_contents_is_an_error() {
    let mut payload = Vec::new();
    Record::FreeInode { ino: 1 }.encode(&mut payload);
    assert_eq!(
        decode_entry(&hand_entry(2, 0, 1, 1, &payload), 1, 1),
        Err(OnDiskError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    assert_eq!(
        decode_entry(&hand_entry(1, 8, 1, 1, &payload), 1, 1),
        Err(OnDiskError::BadField {
            field: "log.flags",
            value: 8
        })
    );
    payload.push(0);
    assert_eq!(
        decode_entry(&hand_entry(1, 0, 1, 1, &payload), 1, 1),
        Err(OnDiskError::BadRecordType { tag: 0 })
    );
}

// ---------------------------------------------------------------- checkpoints

fn reseal_checkpoint_header(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn checkpoint_round_trips_at_fixed_offsets() {
    let records = all_kinds();
    let bytes = encode_checkpoint(9, &records);
    let mut payload = Vec::new();
    encode_all(&records, &mut payload);
    assert_eq!(bytes.len() % 4096, 0);
    assert_eq!(&bytes[0..8], b"STRFSCKP");
    assert_eq!(bytes[8..12], 1u32.to_le_bytes());
    assert_eq!(bytes[12..20], 9u64.to_le_bytes());
    assert_eq!(bytes[20..28], (payload.len() as u64).to_le_bytes());
    assert_eq!(bytes[28..32], crc32c::crc32c(&payload).to_le_bytes());
    assert_eq!(bytes[32..36], crc32c::crc32c(&bytes[..32]).to_le_bytes());
    assert_eq!(&bytes[4096..4096 + payload.len()], payload);

    let header = decode_checkpoint_header(&bytes).unwrap();
    assert_eq!(header.generation, 9);
    assert_eq!(header.payload_len, payload.len() as u64);
    assert_eq!(header.total_len(), bytes.len() as u64);
    assert_eq!(
        decode_checkpoint_payload(header, &bytes[4096..]),
        Ok(records.clone())
    );
    assert_eq!(decode_checkpoint(&bytes), Ok((header, records)));
}

#[test]
fn empty_checkpoint() {
    let bytes = encode_checkpoint(1, &[]);
    assert_eq!(bytes.len(), 4096);
    let (header, records) = decode_checkpoint(&bytes).unwrap();
    assert_eq!((header.payload_len, header.total_len()), (0, 4096));
    assert!(records.is_empty());
}

#[test]
fn checkpoint_header_errors() {
    let bytes = encode_checkpoint(9, &all_kinds());
    assert_eq!(
        decode_checkpoint_header(&bytes[..4000]),
        Err(OnDiskError::Truncated {
            needed: 4096,
            available: 4000
        })
    );
    assert_eq!(
        decode_checkpoint_header(&[0; 4096]),
        Err(OnDiskError::BadMagic { found: 0 })
    );
    let mut version = bytes.clone();
    version[8] = 7;
    assert_eq!(
        decode_checkpoint_header(&version),
        Err(OnDiskError::UnsupportedVersion {
            found: 7,
            supported: CHECKPOINT_VERSION
        })
    );
    let mut generation = bytes.clone();
    generation[12] ^= 1;
    assert!(matches!(
        decode_checkpoint_header(&generation),
        Err(OnDiskError::BadChecksum { .. })
    ));
    let mut padding = bytes.clone();
    padding[4095] = 1;
    assert_eq!(
        decode_checkpoint_header(&padding),
        Err(OnDiskError::BadField {
            field: "checkpoint.padding",
            value: 0
        })
    );
    let mut huge = bytes;
    huge[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal_checkpoint_header(&mut huge);
    assert_eq!(
        decode_checkpoint_header(&huge),
        Err(OnDiskError::BadField {
            field: "checkpoint.payload_len",
            value: u64::MAX
        })
    );
}

#[test]
fn checkpoint_payload_errors() {
    let bytes = encode_checkpoint(9, &all_kinds());
    let header = decode_checkpoint_header(&bytes).unwrap();
    let end = 4096 + header.payload_len as usize;
    assert_eq!(
        decode_checkpoint(&bytes[..end - 1]),
        Err(OnDiskError::Truncated {
            needed: end as u64,
            available: end as u64 - 1
        })
    );
    assert_eq!(
        decode_checkpoint_payload(header, &bytes[4096..end - 1]),
        Err(OnDiskError::Truncated {
            needed: header.payload_len,
            available: header.payload_len - 1
        })
    );
    let mut flipped = bytes.clone();
    flipped[4100] ^= 0x80;
    assert!(matches!(
        decode_checkpoint(&flipped),
        Err(OnDiskError::BadChecksum { .. })
    ));
    // Bytes that checksum right but do not decode: corruption before the checksum.
    let mut garbage = bytes;
    garbage[4096] = 200;
    let crc = crc32c::crc32c(&garbage[4096..end]);
    garbage[28..32].copy_from_slice(&crc.to_le_bytes());
    reseal_checkpoint_header(&mut garbage);
    assert_eq!(
        decode_checkpoint(&garbage),
        Err(OnDiskError::BadRecordType { tag: 200 })
    );
}

#[test]
fn errors_read_well() {
    let e = OnDiskError::UnsupportedVersion {
        found: 2,
        supported: 1,
    };
    assert_eq!(
        e.to_string(),
        "unsupported format version 2 (this build reads version 1)"
    );
    let e = OnDiskError::BadField {
        field: "block_size",
        value: 3000,
    };
    assert_eq!(e.to_string(), "bad value 3000 (0xbb8) in field block_size");
}
