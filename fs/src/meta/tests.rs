//! Tests of the in-memory metadata: every kind of inode gives back its record, extents
//! columns, shared layouts, slots, and replays of snapshots (property tests).

use super::*;
use proptest::prelude::*;

const T: Timestamp = Timestamp {
    secs: 1_790_000_000,
    nanos: 5,
};

fn layout(devices: &[u16]) -> LayoutRecord {
    LayoutRecord {
        stripe_unit: 65536,
        devices: devices.to_vec(),
    }
}

fn file(ino: u64, devices: &[u16]) -> InodeRecord {
    new_inode(ino, InodeKind::File, 0o644, 7, 8, T, Some(layout(devices)))
}

fn with_root() -> Metadata {
    let mut m = Metadata::default();
    let root = new_inode(ROOT, InodeKind::Dir, 0o755, 0, 0, T, None);
    m.apply(&Record::Inode(root)).unwrap();
    m
}

fn extent(ino: u64, column: u16, object_offset: u64, device_offset: u64, len: u64) -> Record {
    Record::Extent {
        ino,
        column,
        object_offset,
        device_offset,
        len,
    }
}

/// Every kind of inode gives back the record it was made from, field for field.
#[test]
fn records_come_back_as_applied() {
    let mut m = with_root();
    let mut f = file(2, &[1, 2, 0]);
    f.size = 12345;
    f.prealloc = true;
    f.mtime.nanos = 9;
    f.crtime.secs = -3;
    let mut dir = new_inode(3, InodeKind::Dir, 0o1777, 1, 2, T, Some(layout(&[3])));
    dir.atime.secs = 42;
    let mut link = new_inode(4, InodeKind::Symlink, 0o777, 0, 0, T, None);
    link.symlink_target = b"../target".to_vec();
    link.size = 9;
    let mut dev = new_inode(5, InodeKind::CharDevice, 0o600, 0, 0, T, None);
    dev.rdev = 0x0501;
    let fifo = new_inode(6, InodeKind::Fifo, 0o600, 0, 0, T, None);
    for r in [&f, &dir, &link, &dev, &fifo] {
        m.apply(&Record::Inode(r.clone())).unwrap();
        assert_eq!(m.get(r.ino).unwrap().record(), *r);
    }
    // A change of fields and of symlink target is taken whole.
    link.symlink_target = b"elsewhere".to_vec();
    link.mode = 0o700;
    m.apply(&Record::Inode(link.clone())).unwrap();
    assert_eq!(m.get(4).unwrap().record(), link);
    assert_eq!(m.get(4).unwrap().symlink_target(), b"elsewhere");
    assert_eq!(m.len(), 6);
    assert_eq!(m.next_ino(), 7);
}

/// A file's extents take the smallest form that holds them, and the columns read the
/// same in every form.
#[test]
fn columns_widen_and_shrink() {
    let mut m = with_root();
    m.apply(&Record::Inode(file(2, &[0, 1, 2, 3]))).unwrap();
    let columns = |m: &Metadata| -> Vec<Vec<Extent>> {
        let i = m.get(2).unwrap();
        i.extents().iter().map(|c| c.iter().collect()).collect()
    };
    let body = |m: &Metadata| match &m.get(2).unwrap().body {
        Body::File(Columns::None) => "none",
        Body::File(Columns::One { .. }) => "one",
        Body::File(Columns::All(_)) => "all",
        _ => "other",
    };
    assert_eq!(body(&m), "none");
    assert_eq!(m.get(2).unwrap().extents().len(), 4);
    m.apply(&extent(2, 2, 0, 8192, 4096)).unwrap();
    assert_eq!(body(&m), "one");
    let e = |o, d, l| Extent {
        object_offset: o,
        device_offset: d,
        len: l,
    };
    assert_eq!(
        columns(&m),
        vec![vec![], vec![], vec![e(0, 8192, 4096)], vec![]]
    );
    m.apply(&extent(2, 0, 0, 100, 4096)).unwrap();
    assert_eq!(body(&m), "all");
    assert_eq!(
        columns(&m),
        vec![
            vec![e(0, 100, 4096)],
            vec![],
            vec![e(0, 8192, 4096)],
            vec![]
        ]
    );
    assert_eq!(m.device_of(2, 3), Ok(3));
    assert_eq!(
        m.apply(&extent(2, 4, 0, 0, 4096)),
        Err(MetaError::NoColumn { ino: 2, column: 4 })
    );
    assert_eq!(
        m.apply(&extent(2, 0, 2048, 0, 4096)),
        Err(MetaError::Overlap {
            ino: 2,
            column: 0,
            object_offset: 2048,
            len: 4096
        })
    );
    let freed = m
        .apply(&Record::TruncateExtents {
            ino: 2,
            column: 2,
            object_offset: 0,
        })
        .unwrap();
    assert_eq!(freed, vec![(2, 8192, 4096)]);
    assert_eq!(body(&m), "one");
    assert_eq!(
        columns(&m),
        vec![vec![e(0, 100, 4096)], vec![], vec![], vec![]]
    );
    let freed = m
        .apply(&Record::RemoveExtents {
            ino: 2,
            column: 0,
            object_offset: 0,
            len: 4096,
        })
        .unwrap();
    assert_eq!(freed, vec![(0, 100, 4096)]);
    assert_eq!(body(&m), "none");
    // A directory has no columns, whatever its layout.
    let d = new_inode(3, InodeKind::Dir, 0o755, 0, 0, T, Some(layout(&[0, 1])));
    m.apply(&Record::Inode(d)).unwrap();
    assert!(m.get(3).unwrap().extents().is_empty());
    assert_eq!(
        m.apply(&extent(3, 0, 0, 0, 4096)),
        Err(MetaError::NoColumn { ino: 3, column: 0 })
    );
}

/// Identical layouts are held once, and forgotten with the last inode that has them.
#[test]
fn layouts_are_shared() {
    let mut m = with_root();
    for ino in 2..10 {
        m.apply(&Record::Inode(file(ino, &[(ino % 2) as u16, 2])))
            .unwrap();
    }
    assert_eq!(m.layouts.len(), 2);
    let a = m.get(2).unwrap().layout.clone().unwrap();
    assert!(Arc::ptr_eq(&a, m.get(4).unwrap().layout.as_ref().unwrap()));
    drop(a);
    // A new layout on one inode; its old one stays for the others.
    m.apply(&Record::Inode(file(2, &[5]))).unwrap();
    assert_eq!(m.layouts.len(), 3);
    for ino in (3..10).step_by(2) {
        m.apply(&Record::FreeInode { ino }).unwrap();
    }
    assert_eq!(m.layouts.len(), 2, "[1, 2] went with its last inode");
    for ino in [2, 4, 6, 8] {
        m.apply(&Record::FreeInode { ino }).unwrap();
    }
    assert_eq!(m.layouts.len(), 0);
    // Freed slots are used again, and numbers still count up.
    m.apply(&Record::Inode(file(10, &[0]))).unwrap();
    assert_eq!(m.slots.len(), 9);
    assert_eq!(m.len(), 2);
    assert_eq!(m.get(10).unwrap().ino(), 10);
    assert!(m.get(9).is_none());
    assert_eq!(m.next_ino(), 11);
}

#[derive(Clone, Debug)]
enum Op {
    File(u8),
    Dir(u8),
    Link(u8, u8, u8),
    Unlink(u8, u8),
    Extent(u8, u8, u8, u8),
    Truncate(u8, u8, u8),
    Free(u8),
    Xattr(u8, u8),
    RemoveXattr(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12).prop_map(Op::File),
        (0u8..12).prop_map(Op::Dir),
        (0u8..12, 0u8..6, 0u8..12).prop_map(|(p, n, i)| Op::Link(p, n, i)),
        (0u8..12, 0u8..6).prop_map(|(p, n)| Op::Unlink(p, n)),
        (0u8..12, 0u8..4, 0u8..16, 1u8..4).prop_map(|(i, c, o, l)| Op::Extent(i, c, o, l)),
        (0u8..12, 0u8..4, 0u8..16).prop_map(|(i, c, o)| Op::Truncate(i, c, o)),
        (2u8..12).prop_map(Op::Free),
        (0u8..12, 0u8..3).prop_map(|(i, n)| Op::Xattr(i, n)),
        (0u8..12, 0u8..3).prop_map(|(i, n)| Op::RemoveXattr(i, n)),
    ]
}

proptest! {
    /// After any sequence of records (applied or refused), the snapshot rebuilds the same
    /// metadata: the same snapshot, the same entries at their names, the same device of
    /// every column.
    #[test]
    fn snapshot_rebuilds_the_same(ops in proptest::collection::vec(op(), 1..80)) {
        let mut m = with_root();
        for (n, op) in ops.into_iter().enumerate() {
            let ino = |i: u8| u64::from(i) + 1;
            let record = match op {
                Op::File(i) => Record::Inode(file(ino(i), &[u16::from(i % 3), 3, 4][..usize::from(i % 3) + 1])),
                Op::Dir(i) => Record::Inode(new_inode(ino(i), InodeKind::Dir, 0o755, 0, 0, T, None)),
                Op::Link(p, name, i) => Record::Link { parent: ino(p), name: format!("n{name}").into_bytes(), ino: ino(i) },
                Op::Unlink(p, name) => Record::Unlink { parent: ino(p), name: format!("n{name}").into_bytes() },
                Op::Extent(i, c, o, l) => extent(ino(i), u16::from(c), u64::from(o) * 4096, n as u64 * 65536, u64::from(l) * 4096),
                Op::Truncate(i, c, o) => Record::TruncateExtents { ino: ino(i), column: u16::from(c), object_offset: u64::from(o) * 4096 },
                Op::Free(i) => Record::FreeInode { ino: ino(i) },
                Op::Xattr(i, name) => Record::SetXattr { ino: ino(i), name: vec![b'x', name], value: vec![n as u8] },
                Op::RemoveXattr(i, name) => Record::RemoveXattr { ino: ino(i), name: vec![b'x', name] },
            };
            // Records the filesystem never makes: a number changing kind, and freeing an
            // inode that something still names (its snapshot could not be replayed).
            let refused = match &record {
                Record::Inode(r) => m.get(r.ino).is_some_and(|i| i.kind() != r.kind),
                Record::FreeInode { ino } => m
                    .get(*ino)
                    .is_some_and(|i| i.nlink() > 0 || !i.entries().is_empty()),
                _ => false,
            };
            if !refused {
                let _ = m.apply(&record);
            }
        }
        let snapshot = m.snapshot();
        let mut again = Metadata::default();
        for r in &snapshot {
            prop_assert!(again.apply(r).is_ok(), "{:?}", r);
        }
        prop_assert_eq!(again.snapshot(), snapshot);
        prop_assert_eq!(again.len(), m.len());
        prop_assert_eq!(again.orphans(), m.orphans());
        for inode in m.iter() {
            let other = again.get(inode.ino()).unwrap();
            prop_assert_eq!(other.record(), inode.record());
            prop_assert_eq!(other.entries().len(), inode.entries().len());
            for (name, &child) in inode.entries() {
                prop_assert_eq!(other.entries().get(name), Some(&child));
            }
            prop_assert_eq!(other.extents().len(), inode.extents().len());
            prop_assert_eq!(freed_all(other), freed_all(inode));
        }
    }
}
