//! Reference-model property test: random operations run on the filesystem (over real
//! O_DIRECT device files) and on a flat model (name -> bytes); after every operation, and
//! after clean reopens, the filesystem must agree with the model byte for byte.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use proptest::prelude::*;
use stripefs_engine::{DeviceSpec, pattern};
use stripefs_fs::filesystem::{self, Caller, Filesystem, MkfsOptions, RenameFlags, SetAttr};

const ROOT: u64 = 1;
const NAMES: usize = 3;
const MAX_SIZE: u64 = 600_000;

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Write {
        file: usize,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    Read {
        file: usize,
        offset: u64,
        len: u32,
    },
    Unlink(usize),
    Rename {
        from: usize,
        to: usize,
    },
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..NAMES;
    prop_oneof![
        1 => file.clone().prop_map(Op::Create),
        4 => (file.clone(), 0..MAX_SIZE, 0usize..200_000, any::<u64>())
            .prop_map(|(file, offset, len, seed)| Op::Write { file, offset, len, seed }),
        1 => (file.clone(), 0..MAX_SIZE).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => (file.clone(), 0..MAX_SIZE, 0u32..300_000).prop_map(|(file, offset, len)| Op::Read { file, offset, len }),
        1 => file.clone().prop_map(Op::Unlink),
        1 => (file.clone(), file).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

fn name(i: usize) -> String {
    format!("file{i}")
}

fn lookup(fs: &Filesystem, i: usize) -> Option<u64> {
    fs.lookup(ROOT, OsStr::new(&name(i))).ok().map(|a| a.ino)
}

fn check_all(fs: &Filesystem, model: &BTreeMap<usize, Vec<u8>>) -> Result<(), TestCaseError> {
    for i in 0..NAMES {
        match (lookup(fs, i), model.get(&i)) {
            (None, None) => {}
            (Some(ino), Some(bytes)) => {
                let got = fs
                    .read(ino, 0, (MAX_SIZE * 2) as u32)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got.len(), bytes.len(), "size of {}", name(i));
                prop_assert!(got == *bytes, "contents of {}", name(i));
            }
            (a, b) => prop_assert!(
                false,
                "{} exists in fs: {}, in model: {}",
                name(i),
                a.is_some(),
                b.is_some()
            ),
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir_in("/var/tmp").map_err(|e| TestCaseError::fail(e.to_string()))?;
    let specs: Vec<DeviceSpec> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("d{i}.img"));
            std::fs::File::create(&p)
                .and_then(|f| f.set_len(24 << 20))
                .map(|()| DeviceSpec::Path(p))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let options = MkfsOptions {
        stripe_unit: 8 << 10,
        metadata_size: Some(2 << 20),
        ..MkfsOptions::default()
    };
    filesystem::mkfs(&specs, &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut fs = Filesystem::open(&specs).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let who = Caller::default();
    for op in ops {
        match op {
            Op::Create(i) => {
                let r = fs.create(ROOT, OsStr::new(&name(i)), 0o644, who);
                prop_assert_eq!(r.is_ok(), !model.contains_key(&i));
                model.entry(i).or_default();
            }
            Op::Write {
                file,
                offset,
                len,
                seed,
            } => {
                let mut bytes = vec![0u8; len];
                pattern::fill(seed, offset, &mut bytes);
                let Some(ino) = lookup(&fs, file) else {
                    continue;
                };
                fs.write(ino, offset, &bytes)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let m = model.entry(file).or_default();
                let end = offset as usize + len;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[offset as usize..end].copy_from_slice(&bytes);
            }
            Op::Truncate { file, size } => {
                let Some(ino) = lookup(&fs, file) else {
                    continue;
                };
                fs.setattr(
                    ino,
                    &SetAttr {
                        size: Some(size),
                        ..SetAttr::default()
                    },
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.entry(file).or_default().resize(size as usize, 0);
            }
            Op::Read { file, offset, len } => {
                let Some(ino) = lookup(&fs, file) else {
                    continue;
                };
                let got = fs
                    .read(ino, offset, len)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let m = &model[&file];
                let start = (offset as usize).min(m.len());
                let end = (offset as usize + len as usize).min(m.len());
                prop_assert!(
                    got == m[start..end],
                    "read of {} at {offset}+{len}",
                    name(file)
                );
            }
            Op::Unlink(i) => {
                let r = fs.unlink(ROOT, OsStr::new(&name(i)));
                prop_assert_eq!(r.is_ok(), model.remove(&i).is_some());
            }
            Op::Rename { from, to } => {
                let r = fs.rename(
                    ROOT,
                    OsStr::new(&name(from)),
                    ROOT,
                    OsStr::new(&name(to)),
                    RenameFlags::default(),
                );
                prop_assert_eq!(r.is_ok(), model.contains_key(&from));
                if let Some(bytes) = model.remove(&from) {
                    model.insert(to, bytes);
                }
            }
            Op::Sync => fs.sync().map_err(|e| TestCaseError::fail(e.to_string()))?,
            Op::Reopen => {
                fs.shutdown()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                drop(fs);
                fs = Filesystem::open(&specs).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        check_all(&fs, &model)?;
    }
    fs.shutdown()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    drop(fs);
    let devices =
        filesystem::open_devices(&specs).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let report = filesystem::fsck(&devices).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.is_clean(), "fsck: {:?}", report.problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn filesystem_agrees_with_a_flat_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
