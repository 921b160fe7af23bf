//! Property tests of the on-disk codecs: round trips of arbitrary valid values, decoders
//! that never panic on arbitrary or mutated bytes, and every single-bit flip and every
//! truncation detected (never decoded as a different value).

use proptest::collection::{hash_set, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use stripefs_layout::ondisk::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- strategies

fn timestamps() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0..Timestamp::NANOS_PER_SEC).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

/// Units from 4 KiB to 1 GiB over 1 to 8 devices, or over all 256.
fn layouts() -> impl Strategy<Value = LayoutRecord> {
    let devices = prop_oneof![
        8 => hash_set(0u16..256, 1..=8).prop_map(|d| d.into_iter().collect::<Vec<_>>()),
        1 => Just((0u16..256).collect::<Vec<_>>()).prop_shuffle(),
    ];
    (12u32..=30, devices).prop_map(|(shift, devices)| LayoutRecord {
        stripe_unit: 1 << shift,
        devices,
    })
}

/// Bytes other than NUL and `/`.
fn name_bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_map(|b| if b == 0 || b == b'/' { b'_' } else { b }),
        len,
    )
}

/// Valid directory entry names, short or up to the limit.
fn names() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![name_bytes(1..=12), name_bytes(1..=NAME_MAX)].prop_map(|n| {
        if n == b"." || n == b".." {
            b"dot".to_vec()
        } else {
            n
        }
    })
}

/// Valid xattr names: like entry names, and `/` is allowed.
fn xattr_names() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"user.stripefs.layout".to_vec()),
        names(),
        Just(b"user.a/b".to_vec())
    ]
}

fn inodes() -> impl Strategy<Value = InodeRecord> {
    let kinds = prop_oneof![
        Just(InodeKind::File),
        Just(InodeKind::Dir),
        Just(InodeKind::Symlink),
        Just(InodeKind::Fifo),
        Just(InodeKind::Socket),
        Just(InodeKind::CharDevice),
        Just(InodeKind::BlockDevice)
    ];
    let ids = (
        any::<u64>(),
        0..=MODE_MAX,
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    );
    let times = [timestamps(), timestamps(), timestamps(), timestamps()];
    let target = prop_oneof![name_bytes(1..=64), name_bytes(1..=SYMLINK_MAX)];
    let rdevs = prop_oneof![Just(0u32), Just((1 << 8) | 3), any::<u32>()];
    let flags = (any::<bool>(), any::<bool>());
    (kinds, ids, times, layouts(), flags, target, rdevs).prop_map(
        |(
            kind,
            (ino, mode, uid, gid, size),
            [atime, mtime, ctime, crtime],
            layout,
            (dir_has_layout, prealloc),
            target,
            rdev,
        )| {
            let layout = match kind {
                InodeKind::File => Some(layout),
                InodeKind::Dir => dir_has_layout.then_some(layout),
                _ => None,
            };
            let rdev = if kind.is_device() { rdev } else { 0 };
            let symlink_target = if kind == InodeKind::Symlink {
                target
            } else {
                Vec::new()
            };
            InodeRecord {
                ino,
                kind,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                ctime,
                crtime,
                layout,
                symlink_target,
                rdev,
                prealloc: prealloc && kind == InodeKind::File,
            }
        },
    )
}

/// An extent whose ends do not overflow.
fn extents() -> impl Strategy<Value = Record> {
    let lens = prop_oneof![1..=(1u64 << 30), 1..=u64::MAX];
    (any::<u64>(), 0u16..256, any::<u64>(), any::<u64>(), lens).prop_map(
        |(ino, column, o, d, len)| Record::Extent {
            ino,
            column,
            object_offset: o.min(u64::MAX - len),
            device_offset: d.min(u64::MAX - len),
            len,
        },
    )
}

fn records() -> impl Strategy<Value = Record> {
    prop_oneof![
        3 => inodes().prop_map(Record::Inode),
        1 => any::<u64>().prop_map(|ino| Record::FreeInode { ino }),
        1 => (any::<u64>(), names(), any::<u64>()).prop_map(|(parent, name, ino)| Record::Link { parent, name, ino }),
        1 => (any::<u64>(), names()).prop_map(|(parent, name)| Record::Unlink { parent, name }),
        2 => extents(),
        1 => (any::<u64>(), 0u16..256, any::<u64>()).prop_map(|(ino, column, object_offset)| {
            Record::TruncateExtents { ino, column, object_offset }
        }),
        1 => (any::<u64>(), 0u16..256, any::<u64>(), 1..=u64::MAX).prop_map(|(ino, column, o, len)| {
            Record::RemoveExtents { ino, column, object_offset: o.min(u64::MAX - len), len }
        }),
        1 => (any::<u64>(), xattr_names(), vec(any::<u8>(), 0..300)).prop_map(|(ino, name, value)| {
            Record::SetXattr { ino, name, value }
        }),
        1 => (any::<u64>(), xattr_names()).prop_map(|(ino, name)| Record::RemoveXattr { ino, name }),
    ]
}

/// Valid superblocks: regions of whole blocks after the superblock, in either order,
/// possibly empty, with slack at the end of the device.
fn superblocks() -> impl Strategy<Value = Superblock> {
    let devices = (1u32..=256).prop_flat_map(|count| (Just(count), 0..count, 1..=count));
    let geometry = (9u32..=16, 12u32..=30);
    let regions = (0u64..1 << 30, 0u64..1 << 30, 0u64..1 << 20, any::<bool>());
    let label = proptest::string::string_regex("[^\\x00]{0,8}").expect("regex");
    let ids = (any::<[u8; 16]>(), any::<u64>());
    (devices, geometry, regions, label, ids).prop_map(
        |(
            (count, index, stripes),
            (block_shift, unit_shift),
            (meta, data, slack, swap),
            label,
            (uuid, created),
        )| {
            let block = 1u64 << block_shift;
            let first = 4096u64.next_multiple_of(block);
            let (meta_len, data_len) = (meta * block, data * block);
            let (meta_offset, data_offset) = if swap {
                (first + data_len, first)
            } else {
                (first, first + meta_len)
            };
            Superblock {
                fs_uuid: uuid,
                device_index: index,
                device_count: count,
                block_size: block as u32,
                default_stripe_unit: 1 << unit_shift,
                default_stripe_count: stripes,
                device_size: first + meta_len + data_len + slack * block,
                meta_offset,
                meta_len,
                data_offset,
                data_len,
                created_secs: created,
                label,
            }
        },
    )
}

// ---------------------------------------------------------------- helpers

fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(&mut out);
    out
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[bit / 8] ^= 1 << (bit % 8);
    flipped
}

/// Overwrites bytes at random places with random values.
fn mutate(bytes: &mut [u8], edits: &[(Index, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for (at, value) in edits {
        let i = at.index(bytes.len());
        bytes[i] = *value;
    }
}

fn reseal_superblock(block: &mut [u8]) {
    let crc = crc32c::crc32c(&block[..4092]);
    block[4092..4096].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes a log entry's checksum over its header and as much payload as there is.
fn reseal_entry(entry: &mut [u8]) {
    let payload_len = u32::from_le_bytes(entry[24..28].try_into().unwrap()) as usize;
    let end = (LOG_HEADER_LEN + payload_len).min(entry.len());
    entry[28..32].fill(0);
    let crc = crc32c::crc32c(&entry[..end]);
    entry[28..32].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes both checksums of a checkpoint.
fn reseal_checkpoint(bytes: &mut [u8]) {
    let payload_len = u64::from_le_bytes(bytes[20..28].try_into().unwrap());
    let end = usize::try_from(payload_len).map_or(bytes.len(), |l| (4096 + l).min(bytes.len()));
    let crc = crc32c::crc32c(&bytes[4096..end]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------- superblock

/// Every one of the 32768 single-bit flips of a superblock is refused.
#[test]
fn every_superblock_bit_flip_is_detected() {
    let sb = superblocks()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .unwrap()
        .current();
    let block = sb.encode();
    for bit in 0..SUPERBLOCK_SIZE * 8 {
        let result = Superblock::decode(&flip(&block, bit));
        assert!(
            matches!(
                result,
                Err(OnDiskError::BadMagic { .. }
                    | OnDiskError::UnsupportedVersion { .. }
                    | OnDiskError::BadChecksum { .. })
            ),
            "bit {bit}: {result:?}"
        );
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn superblock_round_trips(sb in superblocks()) {
        prop_assert_eq!(sb.validate(), Ok(()));
        prop_assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }

    #[test]
    fn superblock_decode_never_panics(bytes in vec(any::<u8>(), 0..5000)) {
        let _ = Superblock::decode(&bytes);
    }

    /// With the checksum made right again, field damage is refused or decodes to a
    /// superblock that encodes to exactly the same block: never a silent change.
    #[test]
    fn resealed_superblock_damage_is_refused_or_exact(
        sb in superblocks(),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut block = sb.encode();
        mutate(&mut block[8..4092], &edits);
        reseal_superblock(&mut block);
        if let Ok(decoded) = Superblock::decode(&block) {
            prop_assert!(decoded.encode() == block, "decoded a different superblock");
        }
    }

    #[test]
    fn superblock_truncation_is_detected(sb in superblocks(), len in 0..SUPERBLOCK_SIZE) {
        let is_truncated = matches!(
            Superblock::decode(&sb.encode()[..len]),
            Err(OnDiskError::Truncated { .. })
        );
        prop_assert!(is_truncated);
    }
}

// ---------------------------------------------------------------- records

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn record_round_trips(record in records()) {
        prop_assert_eq!(record.validate(), Ok(()));
        let bytes = encode(&record);
        prop_assert_eq!(Record::decode(&bytes), Ok((record, bytes.len())));
    }

    #[test]
    fn no_inode_record_is_shorter_than_the_minimum(inode in inodes()) {
        let len = encode(&Record::Inode(inode.clone())).len() as u64;
        prop_assert!(len >= INODE_RECORD_MIN);
        if inode.layout.is_none() && inode.symlink_target.is_empty() && !inode.kind.is_special()
            && !inode.prealloc
        {
            prop_assert_eq!(len, INODE_RECORD_MIN);
        }
    }

    #[test]
    fn records_round_trip_back_to_back(records in vec(records(), 0..10)) {
        let mut bytes = Vec::new();
        encode_all(&records, &mut bytes);
        prop_assert_eq!(decode_all(&bytes), Ok(records));
    }

    #[test]
    fn record_decode_never_panics(tag in 0u8..10, bytes in vec(any::<u8>(), 0..600)) {
        let mut input = vec![tag];
        input.extend_from_slice(&bytes);
        let _ = Record::decode(&input);
        let _ = decode_all(&bytes);
    }

    /// Records carry no checksum of their own: damage is refused, or decodes to a valid
    /// record whose encoding is exactly the bytes it came from.
    #[test]
    fn damaged_record_is_refused_or_exact(
        record in records(),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&record);
        mutate(&mut bytes, &edits);
        if let Ok((decoded, used)) = Record::decode(&bytes) {
            prop_assert_eq!(decoded.validate(), Ok(()));
            prop_assert_eq!(encode(&decoded), &bytes[..used]);
        }
    }

    #[test]
    fn record_truncation_is_detected(record in records(), cut in any::<Index>()) {
        let bytes = encode(&record);
        let len = cut.index(bytes.len());
        let is_truncated = matches!(
            Record::decode(&bytes[..len]),
            Err(OnDiskError::Truncated { .. })
        );
        prop_assert!(is_truncated);
    }
}

// ---------------------------------------------------------------- log entries

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn log_entry_round_trips(generation in any::<u64>(), seq in any::<u64>(), records in vec(records(), 0..8)) {
        let entry = encode_entry(generation, seq, &records);
        prop_assert_eq!(entry.len() % LOG_BLOCK, 0);
        prop_assert_eq!(decode_entry(&entry, generation, seq), Ok(Some((records, entry.len()))));
    }

    #[test]
    fn log_decode_never_panics(bytes in vec(any::<u8>(), 0..9000), generation in 0u64..2, seq in 0u64..2) {
        let _ = decode_entry(&bytes, generation, seq);
    }

    /// A flip in the header or payload ends the log; one in the padding changes nothing.
    #[test]
    fn log_bit_flip_is_detected(records in vec(records(), 0..6), bit in any::<Index>()) {
        let entry = encode_entry(4, 2, &records);
        let mut payload = Vec::new();
        encode_all(&records, &mut payload);
        let bit = bit.index(entry.len() * 8);
        let result = decode_entry(&flip(&entry, bit), 4, 2);
        if bit / 8 < LOG_HEADER_LEN + payload.len() {
            prop_assert_eq!(result, Ok(None));
        } else {
            prop_assert_eq!(result, Ok(Some((records, entry.len()))));
        }
    }

    /// Damage with a right checksum is refused or decodes to exactly the same bytes.
    #[test]
    fn resealed_log_damage_is_refused_or_exact(
        records in vec(records(), 1..6),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut entry = encode_entry(4, 2, &records);
        mutate(&mut entry[LOG_HEADER_LEN..], &edits);
        reseal_entry(&mut entry);
        if let Ok(Some((decoded, len))) = decode_entry(&entry, 4, 2) {
            let again = encode_entry(4, 2, &decoded);
            let end = LOG_HEADER_LEN + u32::from_le_bytes(again[24..28].try_into().unwrap()) as usize;
            prop_assert_eq!(again.len(), len);
            prop_assert!(again[..end] == entry[..end], "decoded a different entry");
        }
    }

    #[test]
    fn log_truncation_ends_the_log(records in vec(records(), 0..6), cut in any::<Index>()) {
        let entry = encode_entry(4, 2, &records);
        let len = cut.index(entry.len());
        prop_assert_eq!(decode_entry(&entry[..len], 4, 2), Ok(None));
    }
}

// ---------------------------------------------------------------- checkpoints

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn checkpoint_round_trips(generation in any::<u64>(), records in vec(records(), 0..12)) {
        let bytes = encode_checkpoint(generation, &records);
        let (header, decoded) = decode_checkpoint(&bytes).expect("valid checkpoint");
        prop_assert_eq!(header.generation, generation);
        prop_assert_eq!(header.total_len(), bytes.len() as u64);
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn checkpoint_decode_never_panics(bytes in vec(any::<u8>(), 0..9000)) {
        let _ = decode_checkpoint(&bytes);
        if let Ok(header) = decode_checkpoint_header(&bytes) {
            let _ = decode_checkpoint_payload(header, &bytes);
        }
    }

    /// A flip in the header block or payload is refused; one in the payload's padding
    /// changes nothing.
    #[test]
    fn checkpoint_bit_flip_is_detected(records in vec(records(), 0..6), bit in any::<Index>()) {
        let bytes = encode_checkpoint(3, &records);
        let header = decode_checkpoint_header(&bytes).expect("valid header");
        let bit = bit.index(bytes.len() * 8);
        let result = decode_checkpoint(&flip(&bytes, bit));
        if bit / 8 < CHECKPOINT_HEADER_LEN + header.payload_len as usize {
            let detected = matches!(
                result,
                Err(OnDiskError::BadMagic { .. }
                    | OnDiskError::UnsupportedVersion { .. }
                    | OnDiskError::BadChecksum { .. }
                    | OnDiskError::BadField { field: "checkpoint.padding", .. })
            );
            prop_assert!(detected, "bit {}: {:?}", bit, result);
        } else {
            prop_assert_eq!(result, Ok((header, records)));
        }
    }

    /// Damage with right checksums is refused or decodes to exactly the same bytes.
    #[test]
    fn resealed_checkpoint_damage_is_refused_or_exact(
        records in vec(records(), 1..6),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_checkpoint(3, &records);
        mutate(&mut bytes[4096..], &edits);
        reseal_checkpoint(&mut bytes);
        if let Ok((header, decoded)) = decode_checkpoint(&bytes) {
            let again = encode_checkpoint(header.generation, &decoded);
            let end = CHECKPOINT_HEADER_LEN + header.payload_len as usize;
            prop_assert!(again[..end] == bytes[..end], "decoded a different checkpoint");
        }
    }

    #[test]
    fn checkpoint_truncation_is_detected(records in vec(records(), 1..6), cut in any::<Index>()) {
        let bytes = encode_checkpoint(3, &records);
        let header = decode_checkpoint_header(&bytes).expect("valid header");
        let len = cut.index(CHECKPOINT_HEADER_LEN + header.payload_len as usize);
        let is_truncated = matches!(decode_checkpoint(&bytes[..len]), Err(OnDiskError::Truncated { .. }));
        prop_assert!(is_truncated);
    }
}

// ---------------------------------------------------------------- piece tables

/// Tables of up to 20 pieces with increasing ids, each stored in 1 to 3 runs per replica,
/// plain or compressed.
fn piece_tables() -> impl Strategy<Value = PieceTable> {
    let piece = (
        1u32..200_000,
        any::<u32>(),
        1u64..4,
        any::<bool>(),
        1..=MAX_PIECE_RAW_LEN,
    );
    (1u16..=3, vec(piece, 0..20)).prop_map(|(replicas, raw)| {
        let mut id = 0;
        let pieces = raw
            .into_iter()
            .map(|(len, crc, gap, lz4, raw_len)| {
                id += gap;
                let blocks = u64::from(len).div_ceil(PIECE_BLOCK);
                let copies = (0..u64::from(replicas))
                    .map(|r| {
                        let first = blocks.div_ceil(2);
                        let mut runs = vec![(r << 30, first * PIECE_BLOCK)];
                        if blocks > first {
                            runs.push(((r << 30) + (1 << 20), (blocks - first) * PIECE_BLOCK));
                        }
                        runs
                    })
                    .collect();
                let (codec, raw_len) = if lz4 {
                    (PieceCodec::Lz4, raw_len)
                } else {
                    (PieceCodec::Plain, len)
                };
                PieceEntry {
                    id,
                    len,
                    crc,
                    codec,
                    raw_len,
                    replicas: copies,
                }
            })
            .collect();
        PieceTable { replicas, pieces }
    })
}

/// The same table with every piece plain, as version 2 could hold it.
fn plain(mut table: PieceTable) -> PieceTable {
    for p in &mut table.pieces {
        p.codec = PieceCodec::Plain;
        p.raw_len = p.len;
    }
    table
}

/// The table entry of `piece` stored in one run.
fn entry_of(piece: &EncodedPiece) -> PieceEntry {
    piece.entry(1, vec![vec![(0, piece.bytes.len() as u64)]])
}

/// Up to 12 records, or as many copies of one with its inode number varied: what
/// compresses, as the records of neighbouring inodes do.
fn piece_records() -> impl Strategy<Value = Vec<Record>> {
    prop_oneof![
        vec(records(), 0..12),
        (records(), 1usize..300).prop_map(|(r, n)| {
            (0..n as u64)
                .map(|i| match &r {
                    Record::Inode(inode) => {
                        let mut inode = inode.clone();
                        inode.ino = inode.ino.wrapping_add(i);
                        Record::Inode(inode)
                    }
                    other => other.clone(),
                })
                .collect()
        }),
    ]
}

/// `stored` as a piece's stored bytes with a matching checksum (a bad writer, not a torn
/// write: the checksum does not catch it).
fn forged(stored: &[u8], codec: PieceCodec, raw_len: u32) -> (PieceEntry, Vec<u8>) {
    let mut padded = stored.to_vec();
    padded.resize(
        stored
            .len()
            .next_multiple_of(PIECE_BLOCK as usize)
            .max(4096),
        0,
    );
    let entry = PieceEntry {
        id: 7,
        len: stored.len() as u32,
        crc: crc32c::crc32c(stored),
        codec,
        raw_len,
        replicas: vec![vec![(0, padded.len() as u64)]],
    };
    (entry, padded)
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn piece_table_round_trips(generation in any::<u64>(), table in piece_tables()) {
        let bytes = encode_checkpoint_table(generation, &table);
        let header = decode_checkpoint_header(&bytes).expect("valid header");
        prop_assert_eq!(header.version, CHECKPOINT_VERSION);
        prop_assert_eq!(decode_checkpoint_table(header, &bytes[CHECKPOINT_HEADER_LEN..]), Ok(table));
        prop_assert!(decode_checkpoint_payload(header, &bytes[CHECKPOINT_HEADER_LEN..]).is_err());
    }

    #[test]
    fn piece_table_decode_never_panics(bytes in vec(any::<u8>(), 0..4000)) {
        let _ = decode_piece_table(&bytes);
    }

    /// A flip anywhere in a table's checkpoint (header or payload) is refused.
    #[test]
    fn piece_table_bit_flip_is_detected(table in piece_tables(), bit in any::<Index>()) {
        let bytes = encode_checkpoint_table(5, &table);
        let header = decode_checkpoint_header(&bytes).expect("valid header");
        let end = CHECKPOINT_HEADER_LEN + header.payload_len as usize;
        let bit = bit.index(end * 8);
        let flipped = flip(&bytes, bit);
        let decoded = decode_checkpoint_header(&flipped)
            .and_then(|h| decode_checkpoint_table(h, &flipped[CHECKPOINT_HEADER_LEN..]));
        prop_assert!(decoded.is_err());
    }

    #[test]
    fn v2_piece_table_still_decodes(generation in any::<u64>(), table in piece_tables()) {
        let table = plain(table);
        let bytes = encode_checkpoint_table_v2(generation, &table).expect("plain pieces");
        let header = decode_checkpoint_header(&bytes).expect("valid header");
        prop_assert_eq!(header.version, PLAIN_PIECES_CHECKPOINT_VERSION);
        prop_assert_eq!(decode_checkpoint_table(header, &bytes[CHECKPOINT_HEADER_LEN..]), Ok(table));
    }

    #[test]
    fn v2_piece_table_decode_never_panics(bytes in vec(any::<u8>(), 0..4000)) {
        let _ = decode_piece_table_v2(&bytes);
    }

    #[test]
    fn piece_round_trips(records in piece_records()) {
        let piece = encode_piece(&records);
        prop_assert_eq!(piece.bytes.len() as u64 % PIECE_BLOCK, 0);
        prop_assert!(piece.len <= piece.raw_len);
        prop_assert_eq!(piece.codec == PieceCodec::Plain, piece.len == piece.raw_len);
        prop_assert_eq!(decode_piece(&entry_of(&piece), &piece.bytes), Ok(records));
    }

    /// A compressed piece cut short (its checksum made to match) is refused, never
    /// decoded short.
    #[test]
    fn truncated_compressed_piece_is_an_error(records in piece_records(), cut in any::<Index>()) {
        let piece = encode_piece(&records);
        prop_assume!(piece.codec == PieceCodec::Lz4);
        let stored = &piece.bytes[..cut.index(piece.len as usize)];
        prop_assume!(!stored.is_empty());
        let (entry, bytes) = forged(stored, PieceCodec::Lz4, piece.raw_len);
        prop_assert!(decode_piece(&entry, &bytes).is_err());
    }

    /// Mutated compressed bytes or a wrong declared length (the checksum made to match)
    /// decode to an error or to records, never a panic; a length past the limit is refused
    /// before anything is allocated.
    #[test]
    fn mutated_compressed_piece_never_panics(
        records in piece_records(),
        flips in vec((any::<Index>(), any::<u8>()), 1..4),
        raw_delta in -64i64..64,
    ) {
        let piece = encode_piece(&records);
        prop_assume!(piece.codec == PieceCodec::Lz4);
        let mut stored = piece.bytes[..piece.len as usize].to_vec();
        for (at, byte) in flips {
            let i = at.index(stored.len());
            stored[i] ^= byte;
        }
        let raw_len = (i64::from(piece.raw_len) + raw_delta).clamp(1, i64::from(u32::MAX)) as u32;
        let (entry, bytes) = forged(&stored, PieceCodec::Lz4, raw_len);
        let _ = decode_piece(&entry, &bytes);
        let (entry, bytes) = forged(&stored, PieceCodec::Lz4, MAX_PIECE_RAW_LEN + 1);
        let is_too_large = matches!(decode_piece(&entry, &bytes), Err(OnDiskError::PieceTooLarge { piece: 7, .. }));
        prop_assert!(is_too_large);
    }

    #[test]
    fn arbitrary_compressed_bytes_never_panic(
        stored in vec(any::<u8>(), 1..2000),
        raw_len in 1u32..100_000,
    ) {
        let (entry, bytes) = forged(&stored, PieceCodec::Lz4, raw_len);
        let _ = decode_piece(&entry, &bytes);
    }
}
