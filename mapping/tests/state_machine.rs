//! The mapping's state machine and fence, checked with an importer that records what it is
//! asked to do (the mapping crate knows no devices; the fs crate tests the real ones).

#[path = "../../tests/common/require.rs"]
mod require;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use stripefs_mapping::{
    Buffer, BufferOptions, ImportError, ImportToken, Importer, Mapping, MappingError, MappingState,
    Memory,
};

#[derive(Default)]
struct Recorder {
    /// Memory ids attached and not yet detached.
    attached: Mutex<Vec<u64>>,
    attaches: AtomicUsize,
    detaches: AtomicUsize,
    offline: AtomicBool,
}

impl Importer for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn attach(&self, memory: &Memory) -> Result<ImportToken, ImportError> {
        if self.offline.load(Ordering::SeqCst) {
            return Err(ImportError::Offline);
        }
        self.attaches.fetch_add(1, Ordering::SeqCst);
        self.attached.lock().push(memory.id());
        let slots = memory.chunks().map(|c| (c.offset >> 30) as u16).collect();
        Ok(ImportToken { slots })
    }

    fn detach(&self, _token: &ImportToken) {
        self.detaches.fetch_add(1, Ordering::SeqCst);
        self.attached.lock().remove(0);
    }
}

fn importers(n: usize) -> (Vec<Arc<Recorder>>, Vec<Arc<dyn Importer>>) {
    let recs: Vec<Arc<Recorder>> = (0..n).map(|_| Arc::new(Recorder::default())).collect();
    let dyns = recs
        .iter()
        .map(|r| r.clone() as Arc<dyn Importer>)
        .collect();
    (recs, dyns)
}

#[test]
fn register_attaches_once_per_device() {
    let buffer = Buffer::new(1 << 20).unwrap();
    let (recs, dyns) = importers(3);
    let mapping = Mapping::register(&buffer, 7, dyns).unwrap();
    assert_eq!(mapping.state(), MappingState::Mapped { epoch: 1 });
    assert_eq!(mapping.owner(), 7);
    assert_eq!(mapping.device_count(), 3);
    for r in &recs {
        assert_eq!(r.attaches.load(Ordering::SeqCst), 1);
    }
    // I/O does not attach again.
    for _ in 0..10 {
        let guard = mapping.acquire().unwrap();
        assert!(guard.attachment(2).is_some());
        assert!(guard.attachment(3).is_none());
    }
    assert_eq!(recs[0].attaches.load(Ordering::SeqCst), 1);
}

#[test]
fn migrate_waits_for_inflight_io_and_keeps_contents() {
    let buffer = Buffer::new(3 * 4096 + 100).unwrap();
    let data: Vec<u8> = (0..buffer.len()).map(|i| (i % 251) as u8).collect();
    buffer.write_at(0, &data).unwrap();
    let (recs, dyns) = importers(2);
    let mapping = Mapping::register(&buffer, 1, dyns).unwrap();
    let guard = mapping.acquire().unwrap();
    let old_memory = guard.memory().id();

    let done = Arc::new(AtomicBool::new(false));
    let mover = {
        let buffer = buffer.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let report = buffer.migrate().unwrap();
            done.store(true, Ordering::SeqCst);
            report
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // The migration is fenced by our in-flight "I/O": it has invalidated but not finished,
    // and the old attachments are still in place.
    assert!(
        !done.load(Ordering::SeqCst),
        "migrate did not wait for in-flight I/O"
    );
    assert_eq!(mapping.state(), MappingState::Invalidated);
    assert_eq!(recs[0].detaches.load(Ordering::SeqCst), 0);
    drop(guard);
    let report = mover.join().unwrap();
    assert_eq!(report.mappings, 1);
    assert_eq!(recs[0].detaches.load(Ordering::SeqCst), 1);

    let mut back = vec![0u8; data.len()];
    buffer.read_at(0, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(buffer.migrations(), 1);

    // The next I/O maps the new pages.
    let guard = mapping.acquire().unwrap();
    assert_ne!(guard.memory().id(), old_memory);
    assert_eq!(mapping.state(), MappingState::Mapped { epoch: 2 });
    assert_eq!(recs[1].attaches.load(Ordering::SeqCst), 2);
}

#[test]
fn revoke_fences_and_is_final() {
    let buffer = Buffer::new(8192).unwrap();
    let (recs, dyns) = importers(1);
    let mapping = Mapping::register(&buffer, 1, dyns).unwrap();
    let guard = mapping.acquire().unwrap();
    let revoker = {
        let mapping = mapping.clone();
        std::thread::spawn(move || mapping.revoke())
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(recs[0].detaches.load(Ordering::SeqCst), 0);
    drop(guard);
    revoker.join().unwrap();
    assert_eq!(recs[0].detaches.load(Ordering::SeqCst), 1);
    assert_eq!(mapping.state(), MappingState::Revoked);
    assert!(matches!(
        mapping.acquire(),
        Err(MappingError::Revoked { .. })
    ));
    // A migration after revoke does not map again.
    buffer.migrate().unwrap();
    assert_eq!(recs[0].attaches.load(Ordering::SeqCst), 1);
}

#[test]
fn offline_device_fails_registration_but_only_its_column_after_a_move() {
    let buffer = Buffer::new(4096).unwrap();
    let (recs, dyns) = importers(2);
    recs[1].offline.store(true, Ordering::SeqCst);
    match Mapping::register(&buffer, 1, dyns.clone()) {
        Err(MappingError::Attach { device, .. }) => assert_eq!(device, "recorder"),
        other => panic!("expected an attach error, got {other:?}"),
    }
    recs[1].offline.store(false, Ordering::SeqCst);
    let mapping = Mapping::register(&buffer, 1, dyns).unwrap();
    recs[1].offline.store(true, Ordering::SeqCst);
    buffer.migrate().unwrap();
    let guard = mapping.acquire().unwrap();
    assert!(guard.attachment(0).is_some());
    assert!(guard.attachment(1).is_none());
}

#[test]
fn bounds_are_checked() {
    let buffer = Buffer::new(4096).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(
        buffer.read_at(4096, &mut byte),
        Err(MappingError::OutOfBuffer {
            offset: 4096,
            len: 1,
            buffer_len: 4096
        })
    ));
    assert!(matches!(
        buffer.write_at(u64::MAX, &[1]),
        Err(MappingError::OutOfBuffer { .. })
    ));
    assert!(matches!(Buffer::new(0), Err(MappingError::EmptyBuffer)));
}

#[test]
fn unsealed_memfd_is_refused_and_sealed_one_is_shared() {
    // SAFETY: a plain memfd_create call with a valid C string.
    let raw =
        unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(raw >= 0);
    // SAFETY: memfd_create returned a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: resizing our own memfd.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 8192) }, 0);
    let dup = fd.try_clone().unwrap();
    assert!(matches!(
        Buffer::from_memfd(dup),
        Err(MappingError::NotSealed { .. })
    ));
    // SAFETY: adding seals to our own memfd.
    let rc = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    assert_eq!(rc, 0);
    // Back every page (the importer refuses holes).
    let zeros = [0u8; 8192];
    // SAFETY: pwrite from a valid local buffer into our own memfd.
    let n = unsafe { libc::pwrite(fd.as_raw_fd(), zeros.as_ptr().cast(), zeros.len(), 0) };
    assert_eq!(n, 8192);
    let buffer = Buffer::from_memfd(fd.try_clone().unwrap()).unwrap();
    buffer.write_at(100, b"shared").unwrap();
    // The bytes are visible through the original fd: same pages.
    let mut got = [0u8; 6];
    // SAFETY: pread into a valid local buffer.
    let n = unsafe { libc::pread(fd.as_raw_fd(), got.as_mut_ptr().cast(), 6, 100) };
    assert_eq!(n, 6);
    assert_eq!(&got, b"shared");
}

#[test]
fn huge_pages_work_or_fail_clearly() {
    let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let result = Buffer::with_options(2 << 20, BufferOptions { huge_pages: true });
    if reserved == 0 {
        match result {
            Err(MappingError::HugePagesUnavailable { .. }) => {}
            other => {
                panic!("expected HugePagesUnavailable without reserved huge pages, got {other:?}")
            }
        }
    } else {
        let buffer = result.unwrap();
        buffer.write_at(0, &[9; 16]).unwrap();
    }
}

#[test]
fn udmabuf_exports_when_the_kernel_has_it() {
    let buffer = Buffer::new(1 << 20).unwrap();
    // Optional: most kernels have no udmabuf (STRIPEFS_REQUIRE_UDMABUF makes it required).
    if let Some(reason) = require::Requirement::Udmabuf.missing() {
        assert!(!stripefs_mapping::udmabuf::available());
        println!("skipped: {reason}");
        assert!(matches!(
            stripefs_mapping::udmabuf::export(&buffer),
            Err(MappingError::UdmabufUnavailable { .. })
        ));
        return;
    }
    let fd = stripefs_mapping::udmabuf::export(&buffer).unwrap();
    // A dma-buf reports its size through lseek(SEEK_END).
    // SAFETY: lseek on a descriptor we own.
    let size = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
    assert_eq!(size, 1 << 20);
}
