//! Power cuts on devices with a volatile write cache (`wcache=on`): what was not flushed is
//! dropped or torn, at random. Whatever `fsync` or `fdatasync` acknowledged must survive
//! every cut, the filesystem must mount and fsck clean, and nothing may show bytes that
//! were never written to it. A missing flush anywhere on the fsync path fails this test.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;

use common::{ME, ROOT, data};
use stripefs_engine::{DeviceSpec, PowerCut};
use stripefs_fs::filesystem::{self, Filesystem, MkfsOptions};

fn specs(dir: &std::path::Path) -> Vec<DeviceSpec> {
    (0..3)
        .map(|i| {
            format!(
                "emu:{}/d{i}.img,size=40M,lba=4096,mdts=1M,wcache=on",
                dir.display()
            )
            .parse()
            .expect("spec")
        })
        .collect()
}

fn read(fs: &Filesystem, name: &str) -> Option<Vec<u8>> {
    let attr = fs.lookup(ROOT, OsStr::new(name)).ok()?;
    Some(fs.read(attr.ino, 0, attr.size as u32).expect("read"))
}

#[test]
fn acknowledged_data_survives_power_cuts() {
    for seed in 0..6u64 {
        let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
        let specs = specs(dir.path());
        let options = MkfsOptions {
            stripe_unit: 32 << 10,
            metadata_size: Some(1 << 20),
            ..MkfsOptions::default()
        };
        filesystem::mkfs(&specs, &options).expect("mkfs");
        // What must survive: name -> bytes.
        let mut durable: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // What may survive: name -> every content it had since its last acknowledgement.
        let mut loose: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for round in 0..4u64 {
            let fs = Filesystem::open(&specs)
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: mount: {e}"));
            for (name, bytes) in &durable {
                assert!(
                    read(&fs, name).as_ref() == Some(bytes),
                    "seed {seed} round {round}: {name} lost what fsync acknowledged"
                );
            }
            for (name, versions) in &loose {
                if let Some(got) = read(&fs, name) {
                    assert!(
                        versions
                            .iter()
                            .any(|v| got.len() <= v.len() && got[..] == v[..got.len()]),
                        "seed {seed} round {round}: {name} holds bytes never written to it"
                    );
                }
            }
            loose.clear();
            if round == 3 {
                break;
            }
            let base = seed * 100 + round * 10;
            // An acknowledged file overwritten in place and fdatasync'ed: the new bytes.
            if let Some((name, old)) = durable.iter().next().map(|(n, b)| (n.clone(), b.clone())) {
                let ino = fs.lookup(ROOT, OsStr::new(&name)).expect("lookup").ino;
                let mut new = old.clone();
                let patch = data(base + 9, old.len().min(8192));
                new[..patch.len()].copy_from_slice(&patch);
                fs.write(ino, 0, &patch).expect("overwrite");
                fs.fdatasync(ino).expect("fdatasync");
                durable.insert(name, new);
            }
            // Unsynced: an unlink (the file may come back whole).
            if let Some(name) = durable.keys().nth(1).cloned() {
                fs.unlink(ROOT, OsStr::new(&name)).expect("unlink");
                let bytes = durable.remove(&name).expect("durable");
                loose.insert(name, vec![bytes]);
            }
            for k in 0..6u64 {
                let name = format!("r{round}f{k}");
                let bytes = data(base + k, 5000 + (k as usize) * 90_000);
                let ino = fs
                    .create(ROOT, OsStr::new(&name), 0o644, ME)
                    .expect("create")
                    .ino;
                fs.write(ino, 0, &bytes).expect("write");
                match k % 3 {
                    0 => {
                        fs.fsync(ino).expect("fsync");
                        durable.insert(name, bytes);
                    }
                    1 => {
                        fs.fdatasync(ino).expect("fdatasync");
                        durable.insert(name, bytes);
                    }
                    _ => {
                        loose.insert(name, vec![bytes]);
                    }
                }
            }
            let ino = fs
                .create(ROOT, OsStr::new(&format!("x{round}")), 0o644, ME)
                .expect("create")
                .ino;
            fs.write(ino, 0, &data(base + 8, 300_000)).expect("write");
            loose.insert(format!("x{round}"), vec![data(base + 8, 300_000)]);
            for (i, device) in fs.devices().iter().enumerate() {
                device
                    .power_cut(PowerCut::Random {
                        seed: seed * 31 + round * 7 + i as u64,
                    })
                    .expect("power cut");
            }
            drop(fs);
            let report = common::fsck(&specs);
            assert!(
                report.is_clean(),
                "seed {seed} round {round}: fsck {:?}",
                report.problems
            );
        }
    }
}
