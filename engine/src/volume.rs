//! Volumes: a raw device, or several devices striped with a layout. Both register buffers
//! the same way and return the same [`Mapping`]. A volume resolves a [`Request`] into device
//! pieces and hands them to an I/O context's fan-out ([`IoContext::submit`], and the blocking
//! calls through this thread's private context).

use stripefs_layout::{DeviceIndex, FileOffset, StripeLayout, StripeUnit};
use stripefs_mapping::{Buffer, Mapping};

use crate::context::{self, FanOut, IoContext};
use crate::device::{DeviceQueue, Piece};
use crate::error::{Error, Op};
use crate::request::Request;

/// A registered-I/O target made of devices: `offset` in a request is an offset in the
/// volume, which the layout resolves into per-device ranges.
pub struct Volume {
    id: u64,
    devices: Vec<DeviceQueue>,
    layout: StripeLayout,
    size: u64,
    block_size: u64,
}

impl Volume {
    /// A single raw device: the importer the kernel proposal has.
    pub fn raw(device: DeviceQueue) -> Result<Self, Error> {
        // One column: the unit only bounds how the range is cut, and pieces are merged again.
        let unit = StripeUnit::new(1 << 30)?;
        Self::striped(vec![device], unit)
    }

    /// `devices` striped round-robin in `unit`-sized pieces, in the order given.
    pub fn striped(devices: Vec<DeviceQueue>, unit: StripeUnit) -> Result<Self, Error> {
        if devices.is_empty() {
            return Err(Error::NoDevices);
        }
        let indices = (0..devices.len() as u32).map(DeviceIndex).collect();
        let layout = StripeLayout::new(unit, indices)?;
        let min_size = devices.iter().map(DeviceQueue::size).min().unwrap_or(0);
        let block_size = devices
            .iter()
            .map(|d| u64::from(d.block_size()))
            .max()
            .unwrap_or(512)
            .max(512);
        // With one device the whole device is usable; striped, each device holds whole units.
        let size = if devices.len() == 1 {
            min_size - min_size % block_size
        } else {
            layout.capacity(min_size)
        };
        Ok(Volume {
            id: next_volume_id(),
            devices,
            layout,
            size,
            block_size,
        })
    }

    /// Unique number of this volume (the owner recorded in its mappings).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Addressable bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Alignment required of offsets, buffer offsets and lengths.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// How the volume is striped.
    pub fn layout(&self) -> &StripeLayout {
        &self.layout
    }

    /// The devices, in layout order.
    pub fn devices(&self) -> &[DeviceQueue] {
        &self.devices
    }

    /// Registers `buffer`: every device attaches it, and one mapping stands for all of them.
    pub fn register(&self, buffer: &Buffer) -> Result<Mapping, Error> {
        let importers = self.devices.iter().map(DeviceQueue::importer).collect();
        Ok(Mapping::register(buffer, self.id, importers)?)
    }

    /// Unregisters: waits for the mapping's in-flight I/O, detaches it from every device, and
    /// makes later I/O on it fail.
    pub fn unregister(&self, mapping: &Mapping) -> Result<(), Error> {
        self.check_owner(mapping)?;
        mapping.revoke();
        Ok(())
    }

    /// Reads `len` bytes at `offset` into the buffer at `buffer_offset`; blocks until done.
    pub fn read(
        &self,
        mapping: &Mapping,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, Error> {
        self.blocking(Op::Read, mapping, offset, buffer_offset, len)
    }

    /// Writes `len` bytes from the buffer at `buffer_offset` to `offset`; blocks until done.
    pub fn write(
        &self,
        mapping: &Mapping,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, Error> {
        self.blocking(Op::Write, mapping, offset, buffer_offset, len)
    }

    /// Flushes every device.
    pub fn sync(&self) -> Result<(), Error> {
        self.devices.iter().try_for_each(DeviceQueue::sync)
    }

    fn blocking(
        &self,
        op: Op,
        mapping: &Mapping,
        offset: u64,
        buffer_offset: u64,
        len: u64,
    ) -> Result<u64, Error> {
        run_blocking(
            self,
            Request {
                op,
                mapping,
                offset,
                buffer_offset,
                len,
                tag: 0,
            },
        )
    }

    fn check_owner(&self, mapping: &Mapping) -> Result<(), Error> {
        if mapping.owner() != self.id {
            return Err(Error::ForeignMapping {
                mapping: mapping.id(),
                owner: mapping.owner(),
                target: self.id,
            });
        }
        Ok(())
    }

    /// Refuses a request that is empty, misaligned, outside the buffer or the volume, or
    /// made with another target's mapping.
    fn validate(&self, r: &Request<'_>) -> Result<(), Error> {
        self.check_owner(r.mapping)?;
        if r.len == 0 {
            return Err(Error::ZeroLength);
        }
        for (what, value) in [
            ("offset", r.offset),
            ("buffer offset", r.buffer_offset),
            ("length", r.len),
        ] {
            if !value.is_multiple_of(self.block_size) {
                return Err(Error::Misaligned {
                    what,
                    value,
                    align: self.block_size,
                });
            }
        }
        let buffer_len = r.mapping.buffer_len();
        if r.buffer_offset
            .checked_add(r.len)
            .is_none_or(|end| end > buffer_len)
        {
            return Err(Error::OutOfBuffer {
                offset: r.buffer_offset,
                len: r.len,
                buffer_len,
            });
        }
        if r.offset
            .checked_add(r.len)
            .is_none_or(|end| end > self.size)
        {
            return Err(Error::OutOfRange {
                offset: r.offset,
                len: r.len,
                size: self.size,
            });
        }
        Ok(())
    }

    /// Resolves a validated request into per-device pieces, one batch per device.
    fn plan(&self, r: &Request<'_>, fan: &mut FanOut<'_>) {
        for (column, device) in self.devices.iter().enumerate() {
            let Ok(segments) = self.layout.segments(FileOffset(r.offset), r.len) else {
                return; // validated: cannot overflow
            };
            let pieces = segments.filter(|s| s.column == column).map(|s| Piece {
                device_offset: s.device_offset.0,
                len: s.len,
                buffer_offset: r.buffer_offset + s.request_offset,
            });
            fan.device(column, device, Merged::new(pieces));
        }
    }
}

/// Joins pieces that are contiguous both on the device and in the buffer (with one column,
/// a range cut at unit boundaries becomes one piece again). Public for the filesystem
/// layer, which merges the pieces of file ranges the same way.
pub struct Merged<I> {
    next: Option<Piece>,
    rest: I,
}

impl<I: Iterator<Item = Piece>> Merged<I> {
    pub fn new(mut pieces: I) -> Self {
        Merged {
            next: pieces.next(),
            rest: pieces,
        }
    }
}

impl<I: Iterator<Item = Piece>> Iterator for Merged<I> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        let mut current = self.next.take()?;
        for piece in self.rest.by_ref() {
            if piece.device_offset == current.device_offset + current.len
                && piece.buffer_offset == current.buffer_offset + current.len
            {
                current.len += piece.len;
            } else {
                self.next = Some(piece);
                break;
            }
        }
        Some(current)
    }
}

impl IoContext {
    /// Starts a request on a volume. Invalid requests are refused here and touch nothing.
    pub fn submit(&mut self, volume: &Volume, request: Request<'_>) -> Result<(), Error> {
        volume.validate(&request)?;
        self.submit_with(
            request.mapping,
            request.op,
            request.tag,
            request.len,
            None,
            |fan| volume.plan(&request, fan),
        )
    }
}

/// Runs one request to completion on this thread's private context.
fn run_blocking(volume: &Volume, request: Request<'_>) -> Result<u64, Error> {
    volume.validate(&request)?;
    context::run_plan(request.mapping, request.op, request.len, |fan| {
        volume.plan(&request, fan)
    })
}

fn next_volume_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Volume ids are kept apart from mapping ids by a high bit, so a mistaken comparison
    // between the two can never match.
    (1 << 62) | NEXT.fetch_add(1, Ordering::Relaxed)
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("id", &self.id)
            .field("devices", &self.devices)
            .field("layout", &self.layout)
            .field("size", &self.size)
            .finish()
    }
}
