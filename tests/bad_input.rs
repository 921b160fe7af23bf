//! Bad input gets its own specific error and touches nothing: zero-length, out-of-buffer,
//! out-of-volume (including ranges whose end overflows u64), misaligned offsets, buffer
//! offsets and lengths, a stale mapping after unregister, another volume's mapping, a full
//! I/O context, device paths that are not devices, and malformed emulated-device specs.
//!
//! "Touches nothing" is checked three ways: no device counted a command, the buffer is
//! unchanged after a refused read, and the devices still hold their old data at the end.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{KIB, MIB};
use stripefs_engine::spec::SpecError;
use stripefs_engine::{
    DeviceQueue, DeviceSpec, Error, IoContext, Op, QueueOptions, Request, Volume,
};
use stripefs_layout::{LayoutError, StripeUnit};
use stripefs_mapping::{Buffer, Mapping, MappingError, MappingState};

const LBA: u64 = 4096;
const OLD: u64 = 0xbad1_0001;
const BUF: u64 = 0xbad1_0002;
const BUFFER_LEN: u64 = MIB;

struct Setup {
    _dir: tempfile::TempDir,
    volume: Volume,
    buffer: Buffer,
    mapping: Mapping,
}

/// Two emulated devices of 4 MiB (4 KiB LBAs) striped in 64 KiB units and filled with OLD;
/// a 1 MiB buffer holding BUF, registered.
fn setup() -> Setup {
    let dir = common::scratch_dir();
    let paths = common::image_paths(dir.path(), 2);
    let devices = common::open_emulated(&paths, |_| "size=4M,lba=4096,mdts=64K".into());
    let volume =
        Volume::striped(devices, StripeUnit::new(64 * KIB).expect("unit")).expect("volume");
    assert_eq!((volume.size(), volume.block_size()), (8 * MIB, LBA));
    common::fill_volume(&volume, OLD);
    let buffer = Buffer::new(BUFFER_LEN).expect("buffer");
    buffer
        .write_at(0, &common::pattern(BUF, 0, BUFFER_LEN))
        .expect("write_at");
    let mapping = volume.register(&buffer).expect("register");
    Setup {
        _dir: dir,
        volume,
        buffer,
        mapping,
    }
}

impl Setup {
    /// Issues the request blocking and through an I/O context, for reads and writes; each
    /// must be refused with the same error, and nothing may reach a device or the buffer.
    /// Returns the error.
    #[track_caller]
    fn refused(&self, mapping: &Mapping, offset: u64, buffer_offset: u64, len: u64) -> Error {
        let mut first: Option<Error> = None;
        for op in [Op::Read, Op::Write] {
            let stats: Vec<_> = self.volume.devices().iter().map(|d| d.stats()).collect();
            let blocking = match op {
                Op::Read => self.volume.read(mapping, offset, buffer_offset, len),
                Op::Write => self.volume.write(mapping, offset, buffer_offset, len),
            };
            let mut ctx = IoContext::new(4);
            let queued = ctx.submit(
                &self.volume,
                Request {
                    op,
                    mapping,
                    offset,
                    buffer_offset,
                    len,
                    tag: 1,
                },
            );
            let what = format!("{op} of {len} at {offset} into buffer offset {buffer_offset}");
            let e = blocking.expect_err(&format!("blocking {what} should be refused"));
            let q = queued.expect_err(&format!("queued {what} should be refused"));
            assert_eq!(
                format!("{e:?}"),
                format!("{q:?}"),
                "{what}: same error both ways"
            );
            assert_eq!(
                ctx.in_flight(),
                0,
                "{what}: a refused request holds no slot"
            );
            assert_eq!(
                ctx.poll(&mut Vec::new()),
                0,
                "{what}: and completes nothing"
            );
            let after: Vec<_> = self.volume.devices().iter().map(|d| d.stats()).collect();
            assert_eq!(stats, after, "{what}: a refused request reached a device");
            common::assert_pattern(
                &format!("buffer after refused {what}"),
                BUF,
                0,
                &common::buffer_bytes(&self.buffer, 0, BUFFER_LEN),
            );
            if let Some(f) = &first {
                assert_eq!(
                    format!("{f:?}"),
                    format!("{e:?}"),
                    "{what}: read and write differ"
                );
            }
            first = Some(e);
        }
        first.expect("two ops ran")
    }

    /// The devices still hold OLD everywhere.
    fn assert_devices_untouched(&self) {
        let content = common::read_volume(&self.volume);
        common::assert_pattern("volume after refused requests", OLD, 0, &content);
    }
}

#[test]
fn zero_length() {
    let s = setup();
    for offset in [0, 4096, s.volume.size()] {
        assert!(matches!(
            s.refused(&s.mapping, offset, 0, 0),
            Error::ZeroLength
        ));
    }
    s.assert_devices_untouched();
}

#[test]
fn outside_the_buffer() {
    let s = setup();
    // Edges that fit are accepted (and read what they should).
    assert_eq!(
        s.volume
            .read(&s.mapping, 0, BUFFER_LEN - LBA, LBA)
            .expect("last block of the buffer"),
        LBA
    );
    common::assert_pattern(
        "last block",
        OLD,
        0,
        &common::buffer_bytes(&s.buffer, BUFFER_LEN - LBA, LBA),
    );
    s.buffer
        .write_at(0, &common::pattern(BUF, 0, BUFFER_LEN))
        .expect("restore");
    let max_aligned = u64::MAX - (LBA - 1);
    for (buffer_offset, len) in [
        (BUFFER_LEN - LBA, 2 * LBA), // straddles the end
        (BUFFER_LEN, LBA),           // starts at the end
        (0, BUFFER_LEN + LBA),       // longer than the buffer
        (max_aligned, 2 * LBA),      // end overflows u64
        (max_aligned, LBA),          // end is exactly 2^64
    ] {
        match s.refused(&s.mapping, 0, buffer_offset, len) {
            Error::OutOfBuffer {
                offset,
                len: l,
                buffer_len,
            } => assert_eq!((offset, l, buffer_len), (buffer_offset, len, BUFFER_LEN)),
            other => panic!("buffer range {buffer_offset}+{len}: got {other:?}"),
        }
    }
    s.assert_devices_untouched();
}

#[test]
fn outside_the_volume() {
    let s = setup();
    let size = s.volume.size();
    assert_eq!(
        s.volume
            .read(&s.mapping, size - LBA, 0, LBA)
            .expect("last block"),
        LBA
    );
    common::assert_pattern(
        "last block of the volume",
        OLD,
        size - LBA,
        &common::buffer_bytes(&s.buffer, 0, LBA),
    );
    s.buffer
        .write_at(0, &common::pattern(BUF, 0, BUFFER_LEN))
        .expect("restore");
    let max_aligned = u64::MAX - (LBA - 1);
    for (offset, len) in [
        (size - LBA, 2 * LBA),        // straddles the end
        (size, LBA),                  // starts at the end
        (1 << 62, LBA),               // far beyond
        (max_aligned, 2 * LBA),       // end overflows u64
        (max_aligned - LBA, 4 * LBA), // end overflows u64 too
    ] {
        match s.refused(&s.mapping, offset, 0, len) {
            Error::OutOfRange {
                offset: o,
                len: l,
                size: sz,
            } => assert_eq!((o, l, sz), (offset, len, size)),
            other => panic!("volume range {offset}+{len}: got {other:?}"),
        }
    }
    s.assert_devices_untouched();
}

#[test]
fn misaligned_offset_buffer_offset_and_length() {
    let s = setup();
    for (offset, buffer_offset, len, what, value) in [
        (512, 0, LBA, "offset", 512),
        (LBA + 1, 0, LBA, "offset", LBA + 1),
        (0, 100, LBA, "buffer offset", 100),
        (0, 2048, LBA, "buffer offset", 2048),
        (0, 0, LBA + 512, "length", LBA + 512),
        (0, 0, 1, "length", 1),
    ] {
        let e = s.refused(&s.mapping, offset, buffer_offset, len);
        match &e {
            Error::Misaligned {
                what: w,
                value: v,
                align,
            } => {
                assert_eq!((*w, *v, *align), (what, value, LBA));
            }
            other => panic!("{what} {value}: got {other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains(what) && text.contains("4096"),
            "`{text}` should name the {what} and the alignment"
        );
    }
    s.assert_devices_untouched();
}

#[test]
fn stale_mapping_after_unregister() {
    let s = setup();
    let stale = s.volume.register(&s.buffer).expect("second registration");
    assert_eq!(stale.state(), MappingState::Mapped { epoch: 1 });
    s.volume.unregister(&stale).expect("unregister");
    assert_eq!(stale.state(), MappingState::Revoked);
    match s.refused(&stale, 0, 0, LBA) {
        Error::Mapping(MappingError::Revoked { mapping }) => assert_eq!(mapping, stale.id()),
        other => panic!("stale mapping: got {other:?}"),
    }
    // The other registration of the same buffer is unaffected.
    assert_eq!(
        s.mapping.state(),
        MappingState::Mapped { epoch: 1 },
        "unregistering one mapping touched another"
    );
    assert_eq!(s.volume.read(&s.mapping, 0, 0, LBA).expect("read"), LBA);
    common::assert_pattern("read", OLD, 0, &common::buffer_bytes(&s.buffer, 0, LBA));
    s.buffer
        .write_at(0, &common::pattern(BUF, 0, LBA))
        .expect("restore");
    s.assert_devices_untouched();
}

#[test]
fn mapping_of_another_volume() {
    let s = setup();
    let other = Volume::raw(common::open_spec("emu:mem,size=1M")).expect("other volume");
    let foreign = other
        .register(&s.buffer)
        .expect("register on the other volume");
    let want = (foreign.id(), other.id(), s.volume.id());
    match s.refused(&foreign, 0, 0, LBA) {
        Error::ForeignMapping {
            mapping,
            owner,
            target,
        } => assert_eq!((mapping, owner, target), want),
        e => panic!("foreign mapping: got {e:?}"),
    }
    match s.volume.unregister(&foreign) {
        Err(Error::ForeignMapping {
            mapping,
            owner,
            target,
        }) => assert_eq!((mapping, owner, target), want),
        r => panic!("unregistering a foreign mapping: got {r:?}"),
    }
    // Refusing it did not revoke it: it still works on its own volume.
    assert_eq!(foreign.state(), MappingState::Mapped { epoch: 1 });
    assert_eq!(other.read(&foreign, 0, 0, LBA).expect("own volume"), LBA);
    s.assert_devices_untouched();
}

#[test]
fn full_io_context() {
    let _watchdog = common::Watchdog::new("full_io_context", Duration::from_secs(30));
    let s = setup();
    let mut ctx = IoContext::new(2);
    assert_eq!(ctx.depth(), 2);
    let read = |tag: u64, offset: u64| Request {
        op: Op::Read,
        mapping: &s.mapping,
        offset,
        buffer_offset: 64 * KIB * tag,
        len: 64 * KIB,
        tag,
    };
    ctx.submit(&s.volume, read(1, 0)).expect("first");
    ctx.submit(&s.volume, read(2, 64 * KIB)).expect("second");
    // Slots are held until completions are collected, whether or not the I/O is done.
    std::thread::sleep(Duration::from_millis(20));
    let stats: Vec<_> = s.volume.devices().iter().map(|d| d.stats()).collect();
    let refused = ctx.submit(
        &s.volume,
        Request {
            op: Op::Write,
            mapping: &s.mapping,
            offset: 0,
            buffer_offset: 0,
            len: MIB,
            tag: 3,
        },
    );
    match refused {
        Err(Error::ContextFull { depth }) => assert_eq!(depth, 2),
        other => panic!("third request in a context of depth 2: got {other:?}"),
    }
    assert_eq!(ctx.in_flight(), 2);
    let after: Vec<_> = s.volume.devices().iter().map(|d| d.stats()).collect();
    assert_eq!(stats, after, "the refused write reached a device");
    let mut done = Vec::new();
    assert_eq!(ctx.wait(2, &mut done), 2);
    let mut tags: Vec<u64> = done
        .iter()
        .map(|c| {
            assert_eq!(*c.result.as_ref().expect("read"), 64 * KIB);
            c.tag
        })
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, [1, 2]);
    common::assert_pattern(
        "reads 1 and 2",
        OLD,
        0,
        &common::buffer_bytes(&s.buffer, 64 * KIB, 128 * KIB),
    );
    // Room again.
    ctx.submit(&s.volume, read(3, 128 * KIB))
        .expect("after collecting");
    let c = ctx.wait_one().expect("one in flight");
    assert_eq!((c.tag, c.result.expect("read")), (3, 64 * KIB));
    assert!(ctx.wait_one().is_none());
    s.assert_devices_untouched();
}

#[test]
fn paths_that_are_not_devices() {
    let dir = common::scratch_dir();
    let options = QueueOptions::default();
    let missing = dir.path().join("no-such-device");
    match DeviceQueue::open_path(&missing, &options) {
        Err(Error::Open { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("missing path: got {other:?}"),
    }
    match DeviceQueue::open(&DeviceSpec::Path(missing.clone())) {
        Err(Error::Open { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing path through a spec: got {other:?}"),
    }
    assert!(!missing.exists(), "opening a missing device created it");

    for not_a_device in [dir.path(), Path::new("/dev/null")] {
        match DeviceQueue::open_path(not_a_device, &options) {
            Err(Error::NotADevice { path }) => assert_eq!(path, not_a_device),
            other => panic!("{}: got {other:?}", not_a_device.display()),
        }
    }

    // tmpfs has no O_DIRECT: a plain device there is refused, saying so; an emulated
    // namespace may sit there (its "device" is memory anyway).
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && !common::supports_direct_io(shm) {
        let tmp = tempfile::Builder::new()
            .prefix("stripefs-e2e-")
            .tempdir_in(shm)
            .expect("tmpfs dir");
        let file = tmp.path().join("d.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(MIB))
            .expect("tmpfs file");
        match DeviceQueue::open_path(&file, &options) {
            Err(e @ Error::DirectIoUnsupported { .. }) => {
                assert!(e.to_string().contains("O_DIRECT"), "{e}")
            }
            other => panic!("file on tmpfs: got {other:?}"),
        }
        let emu = common::open_spec(&common::emu_spec(&file, "size=1M"));
        assert!(!emu.is_direct());
        assert_eq!(emu.size(), MIB);
    } else {
        println!("note: /dev/shm is missing or supports O_DIRECT; tmpfs case not checked");
    }

    // An emulated namespace whose backing cannot be created or does not exist.
    let nowhere = dir.path().join("missing-dir").join("d.img");
    for spec in [
        common::emu_spec(&nowhere, "size=1M"),
        common::emu_spec(&dir.path().join("absent.img"), ""),
    ] {
        let parsed: DeviceSpec = spec.parse().expect("valid syntax");
        match DeviceQueue::open(&parsed) {
            Err(e @ Error::Emulation { .. }) => {
                assert!(e.to_string().contains("cannot open backing file"), "{e}")
            }
            other => panic!("{spec}: got {other:?}"),
        }
    }
    assert!(!dir.path().join("absent.img").exists());
    assert!(!dir.path().join("missing-dir").exists());

    // Volumes and buffers that cannot be.
    assert!(matches!(
        Volume::striped(Vec::new(), StripeUnit::new(64 * KIB).expect("unit")),
        Err(Error::NoDevices)
    ));
    assert!(matches!(
        StripeUnit::new(3 * 4096),
        Err(LayoutError::UnitNotPowerOfTwo { unit: 12288 })
    ));
    assert!(matches!(
        StripeUnit::new(2048),
        Err(LayoutError::UnitTooSmall { unit: 2048, .. })
    ));
    assert!(matches!(Buffer::new(0), Err(MappingError::EmptyBuffer)));
}

/// Whether a refused spec got the error it should.
type SpecCheck = fn(&SpecError) -> bool;

#[test]
fn malformed_emulated_specs() {
    let dir = common::scratch_dir();
    let file: PathBuf = dir.path().join("d.img");
    let f = file.display();
    let err = |spec: &str| -> SpecError {
        match spec.parse::<DeviceSpec>() {
            Err(e) => e,
            Ok(parsed) => panic!("`{spec}` should be refused, parsed as {parsed:?}"),
        }
    };
    let cases: Vec<(String, SpecCheck)> = vec![
        ("emu:".into(), |e| matches!(e, SpecError::EmptyPath { .. })),
        ("".into(), |e| matches!(e, SpecError::EmptyPath { .. })),
        (format!("emu:{f},size=1M,lba=1000"), |e| {
            matches!(e, SpecError::BadLba { lba: 1000, .. })
        }),
        (format!("emu:{f},size=1M,mdts=6K"), |e| {
            matches!(
                e,
                SpecError::MdtsNotMultiple {
                    mdts: 6144,
                    lba: 4096,
                    ..
                }
            )
        }),
        (format!("emu:{f},size=1M,mdts=0"), |e| {
            matches!(e, SpecError::MdtsNotMultiple { mdts: 0, .. })
        }),
        (
            format!("emu:{f},size=1M,colour=blue"),
            |e| matches!(e, SpecError::UnknownKey { key, .. } if key == "colour"),
        ),
        (
            format!("emu:{f},size=1M,size=2M"),
            |e| matches!(e, SpecError::DuplicateKey { key, .. } if key == "size"),
        ),
        (
            format!("emu:{f},size"),
            |e| matches!(e, SpecError::MissingValue { key, .. } if key == "size"),
        ),
        (
            format!("emu:{f},size=lots"),
            |e| matches!(e, SpecError::BadValue { key, value, .. } if key == "size" && value == "lots"),
        ),
        (
            format!("emu:{f},size=1M,bw=0"),
            |e| matches!(e, SpecError::BadValue { key, .. } if key == "bw"),
        ),
        (
            format!("emu:{f},size=1M,lat=20"),
            |e| matches!(e, SpecError::BadValue { key, .. } if key == "lat"),
        ),
        (
            format!("emu:{f},size=1M,offline=yes"),
            |e| matches!(e, SpecError::UnexpectedValue { key, .. } if key == "offline"),
        ),
        (format!("emu:{f},size=1000"), |e| {
            matches!(e, SpecError::SizeNotMultiple { size: 1000, .. })
        }),
        (format!("emu:{f},size=0"), |e| {
            matches!(e, SpecError::SizeNotMultiple { size: 0, .. })
        }),
        ("emu:mem".into(), |e| {
            matches!(e, SpecError::MemWithoutSize { .. })
        }),
        (format!("emu:{f},size=1M,qd=0"), |e| {
            matches!(e, SpecError::QueueDepthOutOfRange { qd: 0, .. })
        }),
        (format!("emu:{f},size=1M,qd=5000"), |e| {
            matches!(e, SpecError::QueueDepthOutOfRange { qd: 5000, .. })
        }),
        (format!("emu:{f},size=1M,fail=8K-4K"), |e| {
            matches!(
                e,
                SpecError::EmptyFailRange {
                    start: 8192,
                    end: 4096,
                    ..
                }
            )
        }),
        (format!("emu:{f},size=1M,fail=100-5000"), |e| {
            matches!(
                e,
                SpecError::MisalignedFailRange {
                    start: 100,
                    end: 5000,
                    ..
                }
            )
        }),
        (
            format!("emu:{f},size=1M,fail=4K"),
            |e| matches!(e, SpecError::BadValue { key, .. } if key == "fail"),
        ),
        (
            format!("emu:{f},size=1M,fail_after=-1"),
            |e| matches!(e, SpecError::BadValue { key, .. } if key == "fail_after"),
        ),
    ];
    for (spec, expected) in &cases {
        let e = err(spec);
        assert!(expected(&e), "`{spec}`: unexpected error {e:?}");
        // Every message quotes the spec (or the refused value), so the user can find it.
        let text = e.to_string();
        assert!(
            spec.is_empty() || text.contains(spec.as_str()) || text.contains("lots"),
            "`{spec}`: message `{text}` does not quote it"
        );
    }
    assert!(!file.exists(), "parsing a spec created its backing file");

    // A refused spec is an `Error::Spec` where the library converts it.
    let e: Error = err("emu:mem").into();
    assert!(matches!(e, Error::Spec(SpecError::MemWithoutSize { .. })));
}
