//! The opaque mapping object and its invalidation (move_notify) state machine.
//!
//! A mapping is mapped (a current [`MapState`] with one attachment per device), invalidated
//! (no current state; the next I/O maps again) or revoked (never again). Each I/O holds a
//! [`MapGuard`] on the state it started with; invalidation swaps the state out, then waits
//! until no guard on the old state is left (the fence) before the old attachments detach.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwapOption;
use parking_lot::{Condvar, Mutex};

use crate::attachment::{Attachment, Importer};
use crate::buffer::{Buffer, BufferShared};
use crate::error::MappingError;
use crate::memory::Memory;

/// The opaque object a registration returns: a buffer bound to a target, with one attachment
/// per device the target spans, hidden behind one handle. Cloning gives another handle to the
/// same registration.
#[derive(Clone)]
pub struct Mapping {
    shared: Arc<MappingShared>,
}

/// The externally visible state of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingState {
    /// Attached; `epoch` counts how many times the mapping has been mapped.
    Mapped { epoch: u64 },
    /// Invalidated by a move; the next I/O maps again.
    Invalidated,
    /// Unregistered; I/O fails.
    Revoked,
}

pub(crate) struct MappingShared {
    id: u64,
    owner: u64,
    buffer: Arc<BufferShared>,
    importers: Box<[Arc<dyn Importer>]>,
    state: ArcSwapOption<MapState>,
    /// States taken out of service whose in-flight I/O may still be draining.
    retired: Mutex<Vec<Weak<MapState>>>,
    /// Serialises installing and removing states (remap, invalidate, revoke).
    remap_lock: Mutex<()>,
    revoked: AtomicBool,
    epoch: AtomicU64,
}

/// One generation of attachments over one piece of memory.
struct MapState {
    epoch: u64,
    memory: Arc<Memory>,
    importers: Box<[Arc<dyn Importer>]>,
    /// Per device, in importer order; empty where the device refused (offline) so far: the
    /// next I/O that needs it tries again.
    attachments: Box<[OnceLock<Attachment>]>,
    attach_lock: Mutex<()>,
    inflight: AtomicUsize,
    draining: AtomicBool,
    fence: Mutex<()>,
    drained: Condvar,
}

/// Proof that an I/O may use the mapping's current attachments: while a guard lives, the
/// attachments and the memory under them stay valid.
pub struct MapGuard {
    state: Arc<MapState>,
}

impl Mapping {
    /// Registers `buffer` against the devices `importers` on behalf of target `owner`,
    /// attaching it to every device now. Fails, naming the device, if any attach fails.
    pub fn register(
        buffer: &Buffer,
        owner: u64,
        importers: Vec<Arc<dyn Importer>>,
    ) -> Result<Self, MappingError> {
        let shared = Arc::new(MappingShared {
            id: crate::next_id(),
            owner,
            buffer: buffer.shared.clone(),
            importers: importers.into_boxed_slice(),
            state: ArcSwapOption::empty(),
            retired: Mutex::new(Vec::new()),
            remap_lock: Mutex::new(()),
            revoked: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        });
        {
            let memory = shared.buffer.memory.read();
            let _lock = shared.remap_lock.lock();
            let attachments = shared.attach_all(&memory, true)?;
            shared.install(memory.clone(), attachments);
        }
        buffer.shared.add_mapping(Arc::downgrade(&shared));
        Ok(Mapping { shared })
    }

    /// Unique number of this registration.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The target this mapping was registered against.
    pub fn owner(&self) -> u64 {
        self.shared.owner
    }

    /// Length of the registered buffer.
    pub fn buffer_len(&self) -> u64 {
        self.shared.buffer.len()
    }

    /// The registered buffer.
    pub fn buffer(&self) -> Buffer {
        Buffer {
            shared: self.shared.buffer.clone(),
        }
    }

    /// Number of devices the mapping has attachments on.
    pub fn device_count(&self) -> usize {
        self.shared.importers.len()
    }

    /// Current state.
    pub fn state(&self) -> MappingState {
        if self.shared.revoked.load(Ordering::Acquire) {
            return MappingState::Revoked;
        }
        match &*self.shared.state.load() {
            Some(state) => MappingState::Mapped { epoch: state.epoch },
            None => MappingState::Invalidated,
        }
    }

    /// Number of times the mapping has been mapped (1 after registration; +1 per remap).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Relaxed)
    }

    /// Pins the current attachments for one I/O, mapping again first if the mapping was
    /// invalidated. Fails if the mapping was revoked.
    pub fn acquire(&self) -> Result<MapGuard, MappingError> {
        loop {
            if self.shared.revoked.load(Ordering::Acquire) {
                return Err(MappingError::Revoked {
                    mapping: self.shared.id,
                });
            }
            if let Some(state) = self.shared.state.load_full()
                && let Some(guard) = MapGuard::enter(state)
            {
                return Ok(guard);
            }
            self.shared.remap()?;
        }
    }

    /// `move_notify` from the importer's side: drops the current attachments once in-flight
    /// I/O on them has finished. The next I/O maps again.
    pub fn invalidate(&self) {
        self.shared.invalidate();
    }

    /// Unregisters: invalidates, waits for in-flight I/O, and makes every later I/O fail.
    pub fn revoke(&self) {
        self.shared.take_out(true);
    }
}

impl MappingShared {
    fn attach_all(
        &self,
        memory: &Arc<Memory>,
        strict: bool,
    ) -> Result<Box<[OnceLock<Attachment>]>, MappingError> {
        let mut attachments = Vec::with_capacity(self.importers.len());
        for importer in self.importers.iter() {
            match Attachment::new(importer.clone(), memory.clone()) {
                Ok(att) => attachments.push(OnceLock::from(att)),
                Err(source) if strict => {
                    return Err(MappingError::Attach {
                        device: importer.name().to_string(),
                        source,
                    });
                }
                // A device that cannot attach now (offline) fails only the I/O that touches it.
                Err(_) => attachments.push(OnceLock::new()),
            }
        }
        Ok(attachments.into_boxed_slice())
    }

    fn install(&self, memory: Arc<Memory>, attachments: Box<[OnceLock<Attachment>]>) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        self.state.store(Some(Arc::new(MapState {
            epoch,
            memory,
            importers: self.importers.clone(),
            attachments,
            attach_lock: Mutex::new(()),
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            fence: Mutex::new(()),
            drained: Condvar::new(),
        })));
    }

    fn remap(&self) -> Result<(), MappingError> {
        // Lock order: buffer memory, then remap_lock (a migration holds the memory lock for
        // writing while it invalidates, so no remap can attach pages that are being moved).
        let memory = self.buffer.memory.read();
        let _lock = self.remap_lock.lock();
        if self.revoked.load(Ordering::Acquire) || self.state.load().is_some() {
            return Ok(());
        }
        let attachments = self.attach_all(&memory, false)?;
        self.install(memory.clone(), attachments);
        Ok(())
    }

    pub(crate) fn invalidate(&self) {
        self.take_out(false);
    }

    /// Takes the current state out of service (and, with `revoke`, forbids new ones), then
    /// waits until no I/O uses it — nor any state taken out earlier and still draining: a
    /// migration racing with an unregister must not copy the pages while the unregister's
    /// state still has reads landing in them, and vice versa.
    fn take_out(&self, revoke: bool) {
        let _old = {
            let _lock = self.remap_lock.lock();
            if revoke {
                self.revoked.store(true, Ordering::Release);
            }
            let old = self.state.swap(None);
            if let Some(old) = &old {
                self.retire(old);
            }
            old
        };
        self.drain_retired();
    }

    /// Remembers a state that is being drained, so that a revoke can wait for it too.
    fn retire(&self, state: &Arc<MapState>) {
        let mut retired = self.retired.lock();
        retired.retain(|w| w.strong_count() > 0);
        retired.push(Arc::downgrade(state));
    }

    /// Waits for every state still draining.
    fn drain_retired(&self) {
        let retired: Vec<Arc<MapState>> = self
            .retired
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for state in retired {
            state.drain();
        }
    }
}

impl MapState {
    /// Waits until no I/O holds a guard on this state.
    fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let mut lock = self.fence.lock();
        if self.inflight.load(Ordering::SeqCst) == 0 {
            return;
        }
        for importer in self.importers.iter() {
            importer.begin_urgent();
        }
        while self.inflight.load(Ordering::SeqCst) > 0 {
            self.drained.wait(&mut lock);
        }
        for importer in self.importers.iter() {
            importer.end_urgent();
        }
    }
}

impl MapGuard {
    fn enter(state: Arc<MapState>) -> Option<Self> {
        // Dekker-style handshake with `drain`: we raise `inflight` then look at `draining`; the
        // drainer raises `draining` then looks at `inflight`. With SeqCst one sees the other.
        state.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = MapGuard { state };
        if guard.state.draining.load(Ordering::SeqCst) {
            return None; // dropping the guard wakes the drainer
        }
        Some(guard)
    }

    /// The attachment of device `index` (in registration order). A device that could not
    /// attach at the last remap (offline) is asked again; `None` if it still refuses.
    pub fn attachment(&self, index: usize) -> Option<&Attachment> {
        let slot = self.state.attachments.get(index)?;
        if let Some(att) = slot.get() {
            return Some(att);
        }
        let _lock = self.state.attach_lock.lock();
        if slot.get().is_none() {
            let importer = self.state.importers.get(index)?.clone();
            let att = Attachment::new(importer, self.state.memory.clone()).ok()?;
            let _ = slot.set(att);
        }
        slot.get()
    }

    /// The memory the attachments map.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.state.memory
    }

    /// The mapping generation this guard pins.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        if self.state.inflight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.state.draining.load(Ordering::SeqCst)
        {
            let _lock = self.state.fence.lock();
            self.state.drained.notify_all();
        }
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("id", &self.id())
            .field("owner", &self.owner())
            .field("devices", &self.device_count())
            .field("state", &self.state())
            .finish()
    }
}

impl std::fmt::Debug for MapGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapGuard")
            .field("epoch", &self.state.epoch)
            .finish()
    }
}
