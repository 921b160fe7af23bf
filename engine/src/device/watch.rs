//! Who watches a device's ring while several threads wait on it. Without this, every waiting
//! thread polls the ring and one completion wakes them all (a thundering herd: with 32 FUSE
//! threads reading, most of the CPU went to wake-ups). Instead one waiter at a time, the
//! watcher, polls the ring and drains it, which completes the others' requests and rings
//! their own doorbells; the others sleep on those doorbells. A watcher that leaves hands the
//! watch to a sleeper.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::request::ContextShared;

#[derive(Default)]
pub(crate) struct Watch {
    taken: AtomicBool,
    sleepers: Mutex<Vec<Arc<ContextShared>>>,
    /// `sleepers.len()`, readable without the lock.
    sleeping: AtomicU32,
}

impl Watch {
    /// Takes the watch (true), or registers `me` to be woken when the watch is handed over.
    ///
    /// No hand-over is lost: a watcher clears `taken` before it looks at `sleeping`, and a
    /// sleeper counts itself before it tries `taken` once more (all sequentially consistent),
    /// so either the watcher sees the sleeper or the sleeper sees the watch free.
    pub(crate) fn enter(&self, me: &Arc<ContextShared>) -> bool {
        if !self.taken.swap(true, Ordering::SeqCst) {
            return true;
        }
        self.sleepers.lock().push(me.clone());
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        if !self.taken.swap(true, Ordering::SeqCst) {
            self.leave(me);
            return true;
        }
        false
    }

    /// The watcher leaves: a sleeper is woken to take over.
    pub(crate) fn hand_over(&self) {
        self.taken.store(false, Ordering::SeqCst);
        self.wake_a_sleeper();
    }

    /// A waiter that did not watch is leaving. A hand-over may have woken it (to take the
    /// watch) just as its own request finished, in which case nobody took the watch: pass it
    /// on to another sleeper.
    pub(crate) fn pass_on(&self) {
        if !self.taken.load(Ordering::SeqCst) {
            self.wake_a_sleeper();
        }
    }

    fn wake_a_sleeper(&self) {
        if self.sleeping.load(Ordering::SeqCst) == 0 {
            return;
        }
        let next = {
            let mut sleepers = self.sleepers.lock();
            let next = sleepers.pop();
            if next.is_some() {
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
            }
            next
        };
        if let Some(next) = next {
            next.wake();
        }
    }

    /// A sleeper leaves (if a hand-over has not already taken it off the list).
    pub(crate) fn leave(&self, me: &Arc<ContextShared>) {
        let mut sleepers = self.sleepers.lock();
        if let Some(i) = sleepers.iter().position(|c| Arc::ptr_eq(c, me)) {
            sleepers.swap_remove(i);
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
