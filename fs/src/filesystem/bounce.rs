//! Bounce buffers: small registered buffers, attached to every device, through which the
//! POSIX data path, metadata I/O and unaligned heads and tails of registered I/O go.

use std::ops::Deref;
use std::sync::Arc;

use parking_lot::Mutex;
use stripefs_engine::plan::{self as engine, Piece};
use stripefs_engine::{DeviceQueue, Error, Op};
use stripefs_mapping::{Buffer, Importer, Mapping};

/// Bytes of one bounce buffer: the largest FUSE request plus a block at each end.
pub(crate) const BOUNCE_SIZE: u64 = (1 << 20) + 2 * 65536;

/// A registered buffer attached to every device; attachment `i` is device `i`.
pub(crate) struct Bounce {
    pub buffer: Buffer,
    pub mapping: Mapping,
}

/// Bounce buffers for concurrent users; grows on demand, keeps what it made.
pub(crate) struct BouncePool {
    owner: u64,
    importers: Vec<Arc<dyn Importer>>,
    free: Mutex<Vec<Bounce>>,
}

/// A bounce buffer on loan; returns to the pool when dropped.
pub(crate) struct BounceGuard<'a> {
    pool: &'a BouncePool,
    bounce: Option<Bounce>,
}

impl BouncePool {
    pub(crate) fn new(owner: u64, devices: &[DeviceQueue]) -> Self {
        BouncePool {
            owner,
            importers: devices.iter().map(DeviceQueue::importer).collect(),
            free: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn take(&self) -> Result<BounceGuard<'_>, Error> {
        let bounce = match self.free.lock().pop() {
            Some(b) => b,
            None => {
                let buffer = Buffer::new(BOUNCE_SIZE)?;
                let mapping = Mapping::register(&buffer, self.owner, self.importers.clone())?;
                Bounce { buffer, mapping }
            }
        };
        Ok(BounceGuard {
            pool: self,
            bounce: Some(bounce),
        })
    }
}

impl Deref for BounceGuard<'_> {
    type Target = Bounce;

    fn deref(&self) -> &Bounce {
        // The option is only emptied by drop.
        self.bounce.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for BounceGuard<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.bounce.take() {
            self.pool.free.lock().push(b);
        }
    }
}

/// Reads `out.len()` bytes at `offset` of device `index` (aligned to its block size).
pub(crate) fn read_device(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    index: usize,
    offset: u64,
    out: &mut [u8],
) -> Result<(), Error> {
    let bounce = pool.take()?;
    let mut done = 0usize;
    while done < out.len() {
        let n = (out.len() - done).min(1 << 20);
        device_transfer(
            devices,
            &bounce,
            Op::Read,
            index,
            offset + done as u64,
            n as u64,
        )?;
        bounce.buffer.read_at(0, &mut out[done..done + n])?;
        done += n;
    }
    Ok(())
}

/// Writes `data` at `offset` of device `index` (aligned to its block size).
pub(crate) fn write_device(
    devices: &[DeviceQueue],
    pool: &BouncePool,
    index: usize,
    offset: u64,
    data: &[u8],
) -> Result<(), Error> {
    let bounce = pool.take()?;
    let mut done = 0usize;
    while done < data.len() {
        let n = (data.len() - done).min(1 << 20);
        bounce.buffer.write_at(0, &data[done..done + n])?;
        device_transfer(
            devices,
            &bounce,
            Op::Write,
            index,
            offset + done as u64,
            n as u64,
        )?;
        done += n;
    }
    Ok(())
}

fn device_transfer(
    devices: &[DeviceQueue],
    bounce: &Bounce,
    op: Op,
    index: usize,
    offset: u64,
    len: u64,
) -> Result<u64, Error> {
    let device = devices.get(index).ok_or(Error::NoDevices)?;
    let end = offset.checked_add(len).filter(|&e| e <= device.size());
    if end.is_none() {
        return Err(Error::OutOfRange {
            offset,
            len,
            size: device.size(),
        });
    }
    let piece = Piece {
        device_offset: offset,
        len,
        buffer_offset: 0,
    };
    engine::run_plan(&bounce.mapping, op, len, |fan| {
        fan.device(index, device, std::iter::once(piece))
    })
}
