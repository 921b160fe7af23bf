//! Per-user limits of the control endpoint: what one local user (the peer uid of a
//! connection, from `SO_PEERCRED`) may hold at once, so that no user can take the daemon, or
//! other users' service, down.
//!
//! Each user has counters for the five resources of [`Resource`]. A call that would take a
//! user over a limit fails alone, with the errno of [`Resource::errno`], and changes nothing
//! else. Root (uid 0) is not limited per user; the server-wide limits
//! ([`super::ServerOptions`]) still apply to it.
//!
//! Charges are held by RAII guards ([`Charge`]) or, for requests in flight, by counts taken
//! when a request leaves the ring and given back when its completion is posted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// What a user may hold at once through the control endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of buffers registered (each buffer counted once, however many files it is
    /// registered against). The daemon pins these pages for device I/O: they cannot be
    /// swapped out while registered.
    pub registered_bytes: u64,
    /// Live registrations (each takes device buffer slots).
    pub registrations: u64,
    /// Connections open at once (each has a thread, and a ring with its threads).
    pub connections: u64,
    /// Requests taken off the rings and not completed yet.
    pub requests: u64,
    /// Bytes of bounce memory (heap and bounce buffers) the user's unaligned requests may
    /// use at once in the daemon.
    pub bounce_bytes: u64,
    /// Worker threads of the user's rings, all connections together (a ring asking for
    /// more gets what is left, at least one, else its `hello` is refused).
    pub workers: u64,
}

/// Default bytes a user may register: a quarter of the machine's memory, at most 64 GiB
/// (the pages are pinned: the machine must keep enough to run).
const DEFAULT_REGISTERED_SHARE: u64 = 4;
const DEFAULT_REGISTERED_MAX: u64 = 64 << 30;
/// When the machine's memory cannot be read.
const DEFAULT_REGISTERED_FALLBACK: u64 = 1 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            registered_bytes: default_registered_bytes(),
            registrations: 256,
            connections: 32,
            requests: 1024,
            bounce_bytes: 256 << 20,
            workers: 64,
        }
    }
}

/// A quarter of `MemTotal`, at most 64 GiB.
fn default_registered_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib.saturating_mul(1024));
    match total {
        Some(bytes) => (bytes / DEFAULT_REGISTERED_SHARE).min(DEFAULT_REGISTERED_MAX),
        None => DEFAULT_REGISTERED_FALLBACK,
    }
}

/// The resources a user's limits cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    RegisteredBytes,
    Registrations,
    Connections,
    Requests,
    BounceBytes,
    Workers,
}

const RESOURCES: usize = 6;

impl Resource {
    fn index(self) -> usize {
        self as usize
    }

    /// The errno a call gets when it would go over this limit: `EDQUOT` for what a user
    /// keeps (registered bytes, registrations), `EAGAIN` for what passes (connections,
    /// requests in flight, bounce memory: retry once some are done).
    pub fn errno(self) -> i32 {
        match self {
            Resource::RegisteredBytes | Resource::Registrations => libc::EDQUOT,
            Resource::Connections
            | Resource::Requests
            | Resource::BounceBytes
            | Resource::Workers => libc::EAGAIN,
        }
    }

    fn limit(self, limits: &Limits) -> u64 {
        match self {
            Resource::RegisteredBytes => limits.registered_bytes,
            Resource::Registrations => limits.registrations,
            Resource::Connections => limits.connections,
            Resource::Requests => limits.requests,
            Resource::BounceBytes => limits.bounce_bytes,
            Resource::Workers => limits.workers,
        }
    }
}

/// What one user holds, against its limits.
pub(crate) struct UserUsage {
    uid: u32,
    limits: Limits,
    used: [AtomicU64; RESOURCES],
}

impl UserUsage {
    /// Takes `amount` of `resource`, or refuses with its errno if that would go over the
    /// limit (root is never refused).
    pub(crate) fn take(&self, resource: Resource, amount: u64) -> Result<(), i32> {
        let counter = &self.used[resource.index()];
        if self.uid == 0 {
            counter.fetch_add(amount, Ordering::AcqRel);
            return Ok(());
        }
        let limit = resource.limit(&self.limits);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(amount).filter(|&n| n <= limit)
            })
            .map(|_| ())
            .map_err(|_| resource.errno())
    }

    /// Takes up to `amount` of `resource`: all of it is counted (and must be given back),
    /// and the part within the limit is returned.
    pub(crate) fn take_up_to(&self, resource: Resource, amount: u64) -> u64 {
        let before = self.used[resource.index()].fetch_add(amount, Ordering::AcqRel);
        if self.uid == 0 {
            return amount;
        }
        resource
            .limit(&self.limits)
            .saturating_sub(before)
            .min(amount)
    }

    /// Gives back `amount` of `resource`.
    pub(crate) fn give_back(&self, resource: Resource, amount: u64) {
        let _ =
            self.used[resource.index()].fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(amount))
            });
    }

    /// Takes `amount` of `resource` for as long as the guard lives.
    pub(crate) fn charge(self: &Arc<Self>, resource: Resource, amount: u64) -> Result<Charge, i32> {
        self.take(resource, amount)?;
        Ok(Charge {
            user: self.clone(),
            resource,
            amount,
        })
    }

    /// Takes as much of `amount` as the limit leaves (root: all of it), for as long as the
    /// guard lives; refused with the errno if nothing is left.
    pub(crate) fn charge_up_to(
        self: &Arc<Self>,
        resource: Resource,
        amount: u64,
    ) -> Result<Charge, i32> {
        let taken = self.take_up_to(resource, amount);
        self.give_back(resource, amount - taken);
        if taken == 0 {
            return Err(resource.errno());
        }
        Ok(Charge {
            user: self.clone(),
            resource,
            amount: taken,
        })
    }

    /// What the user holds now of `resource`.
    #[cfg(test)]
    pub(crate) fn used(&self, resource: Resource) -> u64 {
        self.used[resource.index()].load(Ordering::Acquire)
    }
}

/// A resource taken by a user; given back when dropped.
pub(crate) struct Charge {
    user: Arc<UserUsage>,
    resource: Resource,
    amount: u64,
}

impl Charge {
    /// How much the charge holds.
    pub(crate) fn amount(&self) -> u64 {
        self.amount
    }

    /// Makes the charge `amount`, taking or giving back the difference; refused (with the
    /// charge unchanged) if more would go over the limit.
    pub(crate) fn resize(&mut self, amount: u64) -> Result<(), i32> {
        if amount > self.amount {
            self.user.take(self.resource, amount - self.amount)?;
        } else {
            self.user.give_back(self.resource, self.amount - amount);
        }
        self.amount = amount;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.user.give_back(self.resource, self.amount);
    }
}

/// Every user's usage, created on a user's first connection.
pub(crate) struct Users {
    limits: Limits,
    users: Mutex<HashMap<u32, Arc<UserUsage>>>,
}

impl Users {
    pub(crate) fn new(limits: Limits) -> Self {
        Users {
            limits,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// The usage of user `uid`.
    pub(crate) fn user(&self, uid: u32) -> Arc<UserUsage> {
        self.users
            .lock()
            .entry(uid)
            .or_insert_with(|| {
                Arc::new(UserUsage {
                    uid,
                    limits: self.limits,
                    used: Default::default(),
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            registered_bytes: 100,
            registrations: 2,
            connections: 1,
            requests: 10,
            bounce_bytes: 50,
            workers: 4,
        }
    }

    #[test]
    fn a_user_is_refused_over_a_limit_and_served_again_after_giving_back() {
        let users = Users::new(limits());
        let alice = users.user(1000);
        let a = alice.charge(Resource::RegisteredBytes, 60).expect("within");
        assert_eq!(
            alice.charge(Resource::RegisteredBytes, 41).err(),
            Some(libc::EDQUOT)
        );
        let b = alice
            .charge(Resource::RegisteredBytes, 40)
            .expect("to the limit");
        drop(a);
        assert_eq!(alice.used(Resource::RegisteredBytes), 40);
        drop(b);
        assert_eq!(alice.used(Resource::RegisteredBytes), 0);
        let _c = alice.charge(Resource::Connections, 1).expect("one");
        assert_eq!(
            alice.charge(Resource::Connections, 1).err(),
            Some(libc::EAGAIN)
        );
    }

    #[test]
    fn users_are_counted_apart_and_root_is_not_limited() {
        let users = Users::new(limits());
        let _a = users
            .user(1000)
            .charge(Resource::Connections, 1)
            .expect("a");
        let _b = users
            .user(1001)
            .charge(Resource::Connections, 1)
            .expect("b");
        let root = users.user(0);
        let _r = root.charge(Resource::Connections, 5).expect("root");
        assert_eq!(users.user(1000).used(Resource::Connections), 1);
    }

    #[test]
    fn charge_up_to_takes_what_is_left() {
        let users = Users::new(limits());
        let u = users.user(7);
        let a = u.charge_up_to(Resource::Workers, 3).expect("3 of 4");
        let b = u.charge_up_to(Resource::Workers, 3).expect("the last one");
        assert_eq!((a.amount(), b.amount()), (3, 1));
        assert_eq!(
            u.charge_up_to(Resource::Workers, 1).err(),
            Some(libc::EAGAIN)
        );
        drop(a);
        assert_eq!(u.used(Resource::Workers), 1);
    }

    #[test]
    fn take_up_to_admits_the_part_within_the_limit() {
        let users = Users::new(limits());
        let u = users.user(7);
        assert_eq!(u.take_up_to(Resource::Requests, 8), 8);
        assert_eq!(u.take_up_to(Resource::Requests, 8), 2);
        assert_eq!(u.take_up_to(Resource::Requests, 1), 0);
        u.give_back(Resource::Requests, 17);
        assert_eq!(u.used(Resource::Requests), 0);
        assert_eq!(u.take_up_to(Resource::Requests, 3), 3);
    }
}
