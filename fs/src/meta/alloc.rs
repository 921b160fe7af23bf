//! Free space of each device's data area. Never persisted: at mount it is derived from the
//! extents the metadata references, so it cannot disagree with them after a crash.

use std::collections::BTreeMap;

/// Why space could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no space: {wanted} bytes wanted on device #{device}, {free} free")]
    NoSpace {
        device: usize,
        wanted: u64,
        free: u64,
    },
    #[error("device #{device}: range {start}+{len} is outside the data area or owned twice")]
    Conflict { device: usize, start: u64, len: u64 },
}

/// Free runs of one device, keyed by start.
#[derive(Clone, Debug, Default)]
struct FreeSpace {
    runs: BTreeMap<u64, u64>,
    free: u64,
}

/// Free space of every device; all ranges are in bytes and block-aligned.
#[derive(Clone, Debug)]
pub struct Allocator {
    devices: Vec<FreeSpace>,
    capacity: Vec<u64>,
    /// Bytes of each device that [`Allocator::allocate`] leaves free: kept for the next
    /// checkpoint's metadata pieces, which [`Allocator::allocate_kept`] may take.
    kept: Vec<u64>,
}

impl Allocator {
    /// Every device's data area `(offset, len)` starts out free.
    pub fn new(areas: &[(u64, u64)]) -> Self {
        let devices = areas
            .iter()
            .map(|&(start, len)| {
                let mut runs = BTreeMap::new();
                if len > 0 {
                    runs.insert(start, len);
                }
                FreeSpace { runs, free: len }
            })
            .collect();
        Allocator {
            devices,
            capacity: areas.iter().map(|&(_, l)| l).collect(),
            kept: vec![0; areas.len()],
        }
    }

    /// Keeps `bytes` of `device` free for metadata: data allocations leave them.
    pub fn keep(&mut self, device: usize, bytes: u64) {
        if let Some(k) = self.kept.get_mut(device) {
            *k = bytes;
        }
    }

    /// Bytes of `device` kept for metadata.
    pub fn kept(&self, device: usize) -> u64 {
        self.kept.get(device).copied().unwrap_or(0)
    }

    /// Free bytes on `device`.
    pub fn free(&self, device: usize) -> u64 {
        self.devices.get(device).map_or(0, |d| d.free)
    }

    /// Size of `device`'s data area.
    pub fn capacity(&self, device: usize) -> u64 {
        self.capacity.get(device).copied().unwrap_or(0)
    }

    /// Marks a range as used (loading metadata). Fails if any of it is not free.
    pub fn reserve(&mut self, device: usize, start: u64, len: u64) -> Result<(), AllocError> {
        let conflict = AllocError::Conflict { device, start, len };
        let space = self.devices.get_mut(device).ok_or(conflict)?;
        let (&run_start, &run_len) = space.runs.range(..=start).next_back().ok_or(conflict)?;
        if run_start + run_len < start + len {
            return Err(conflict);
        }
        space.runs.remove(&run_start);
        if start > run_start {
            space.runs.insert(run_start, start - run_start);
        }
        if run_start + run_len > start + len {
            space
                .runs
                .insert(start + len, run_start + run_len - start - len);
        }
        space.free -= len;
        Ok(())
    }

    /// Takes `len` bytes on `device`, preferring to continue at `goal`, leaving what is kept
    /// for metadata; returns the runs taken (several if free space is fragmented). All or
    /// nothing.
    pub fn allocate(
        &mut self,
        device: usize,
        len: u64,
        goal: Option<u64>,
    ) -> Result<Vec<(u64, u64)>, AllocError> {
        let free = self.free(device).saturating_sub(self.kept(device));
        if free < len {
            return Err(AllocError::NoSpace {
                device,
                wanted: len,
                free,
            });
        }
        self.allocate_kept(device, len, goal)
    }

    /// Like [`Allocator::allocate`], and may take the space kept for metadata.
    pub fn allocate_kept(
        &mut self,
        device: usize,
        len: u64,
        goal: Option<u64>,
    ) -> Result<Vec<(u64, u64)>, AllocError> {
        let free = self.free(device);
        if free < len || device >= self.devices.len() {
            return Err(AllocError::NoSpace {
                device,
                wanted: len,
                free,
            });
        }
        let mut taken = Vec::new();
        let mut left = len;
        if let Some(goal) = goal {
            left -= self.take_at(device, goal, left, &mut taken);
        }
        while left > 0 {
            let space = &self.devices[device];
            // First fit; else the largest run.
            let pick = space
                .runs
                .iter()
                .find(|&(_, &l)| l >= left)
                .or_else(|| space.runs.iter().max_by_key(|&(_, &l)| l))
                .map(|(&s, _)| s);
            let Some(start) = pick else { break };
            left -= self.take_at(device, start, left, &mut taken);
        }
        Ok(taken)
    }

    /// Takes up to `len` bytes from the free run that starts exactly at `start`.
    fn take_at(&mut self, device: usize, start: u64, len: u64, taken: &mut Vec<(u64, u64)>) -> u64 {
        let space = &mut self.devices[device];
        let Some(run_len) = space.runs.remove(&start) else {
            return 0;
        };
        let n = run_len.min(len);
        if run_len > n {
            space.runs.insert(start + n, run_len - n);
        }
        space.free -= n;
        if let Some(last) = taken.last_mut()
            && last.0 + last.1 == start
        {
            last.1 += n;
        } else {
            taken.push((start, n));
        }
        n
    }

    /// Returns a range to the free space, merging with its neighbours.
    pub fn release(&mut self, device: usize, start: u64, len: u64) {
        let Some(space) = self.devices.get_mut(device) else {
            return;
        };
        if len == 0 {
            return;
        }
        space.free += len;
        let mut start = start;
        let mut len = len;
        if let Some((&ps, &pl)) = space.runs.range(..start).next_back()
            && ps + pl == start
        {
            space.runs.remove(&ps);
            start = ps;
            len += pl;
        }
        if let Some(nl) = space.runs.remove(&(start + len)) {
            len += nl;
        }
        space.runs.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_reserve_release() {
        let mut a = Allocator::new(&[(4096, 40960)]);
        a.reserve(0, 8192, 4096).unwrap();
        assert_eq!(a.free(0), 36864);
        assert!(a.reserve(0, 8192, 4096).is_err(), "owned twice");
        let runs = a.allocate(0, 8192, Some(4096)).unwrap();
        assert_eq!(runs, vec![(4096, 4096), (12288, 4096)]);
        a.release(0, 4096, 4096);
        a.release(0, 8192, 4096);
        a.release(0, 12288, 4096);
        assert_eq!(a.free(0), 40960);
        assert_eq!(a.allocate(0, 40960, None).unwrap(), vec![(4096, 40960)]);
        assert!(matches!(
            a.allocate(0, 4096, None),
            Err(AllocError::NoSpace { .. })
        ));
    }

    #[test]
    fn kept_space_is_left_to_metadata() {
        let mut a = Allocator::new(&[(0, 16384)]);
        a.keep(0, 8192);
        assert!(matches!(
            a.allocate(0, 12288, None),
            Err(AllocError::NoSpace { free: 8192, .. })
        ));
        assert_eq!(a.allocate(0, 8192, None).unwrap(), vec![(0, 8192)]);
        assert_eq!(a.allocate_kept(0, 8192, None).unwrap(), vec![(8192, 8192)]);
    }
}
