use stripefs_fs::{DeviceQueue, QueueOptions, Volume};
use stripefs_layout::StripeUnit;
use stripefs_mapping::Buffer;

#[test]
fn file_devices_roundtrip() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut devs = Vec::new();
    for i in 0..3 {
        let p = dir.path().join(format!("d{i}.img"));
        std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
        devs.push(DeviceQueue::open_path(&p, &QueueOptions::default()).unwrap());
    }
    let vol = Volume::striped(devs, StripeUnit::new(64 << 10).unwrap()).unwrap();
    let buf = Buffer::new(1 << 20).unwrap();
    let pattern: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    buf.write_at(0, &pattern).unwrap();
    let m = vol.register(&buf).unwrap();
    assert_eq!(vol.write(&m, 4096 * 3, 0, 1 << 20).unwrap(), 1 << 20);
    buf.write_at(0, &vec![0u8; 1 << 20]).unwrap();
    assert_eq!(vol.read(&m, 4096 * 3, 0, 1 << 20).unwrap(), 1 << 20);
    let mut got = vec![0u8; 1 << 20];
    buf.read_at(0, &mut got).unwrap();
    assert!(got == pattern);
    buf.migrate().unwrap();
    buf.write_at(0, &vec![0u8; 1 << 20]).unwrap();
    vol.read(&m, 4096 * 3, 0, 1 << 20).unwrap();
    buf.read_at(0, &mut got).unwrap();
    assert!(got == pattern);
    assert_eq!(m.epoch(), 2);
}
