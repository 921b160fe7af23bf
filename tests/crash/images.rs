//! Device images as a crash would leave them, built from a recording of writes and flushes
//! (as CrashMonkey builds them from its block-device wrapper).
//!
//! A write is durable once a flush of its device began after it completed. At a crash
//! point the durable writes are all there; of the writes not yet flushed (in a volatile
//! write cache), any subset may have reached the media, and the last one to land may be torn
//! (only some of its blocks written).

use std::sync::Arc;

use stripefs_engine::WriteEvent;

/// A write not yet flushed.
#[derive(Clone, Debug)]
pub struct Cached {
    pub offset: u64,
    pub data: Arc<[u8]>,
}

/// Which of the unflushed writes a crash image keeps.
#[derive(Clone, Copy, Debug)]
pub enum Variant {
    /// All of them: what the devices hold, as after `kill -9` of the daemon.
    All,
    /// None: a power cut that drops the whole cache.
    None,
    /// A random subset on each device, in order, with one kept write torn.
    Random(u64),
}

/// The durable contents of every device and its unflushed writes, event by event.
pub struct Replay {
    pub durable: Vec<Vec<u8>>,
    pub cached: Vec<Vec<Cached>>,
}

impl Replay {
    /// Starts from the devices' contents before the recording.
    pub fn new(base: Vec<Vec<u8>>) -> Self {
        let cached = vec![Vec::new(); base.len()];
        Replay {
            durable: base,
            cached,
        }
    }

    /// Takes one recorded event into account.
    pub fn step(&mut self, event: &WriteEvent) {
        match event {
            WriteEvent::Write {
                device,
                offset,
                data,
            } => self.cached[*device].push(Cached {
                offset: *offset,
                data: data.clone(),
            }),
            WriteEvent::Flush { device } => {
                for w in std::mem::take(&mut self.cached[*device]) {
                    put(&mut self.durable[*device], w.offset, &w.data);
                }
            }
            WriteEvent::Mark(_) => {}
        }
    }

    /// Unflushed writes over all devices.
    pub fn unflushed(&self) -> usize {
        self.cached.iter().map(Vec::len).sum()
    }

    /// The images a crash now would leave under `variant`; also how many unflushed writes
    /// were kept and how many torn.
    pub fn crash_images(&self, variant: Variant) -> (Vec<Vec<u8>>, usize, usize) {
        let mut images = self.durable.clone();
        let (mut kept, mut torn) = (0, 0);
        let mut rng = match variant {
            Variant::Random(seed) => Some(Rng(seed)),
            _ => None,
        };
        for (device, writes) in self.cached.iter().enumerate() {
            let chosen: Vec<&Cached> = writes
                .iter()
                .filter(|_| match variant {
                    Variant::All => true,
                    Variant::None => false,
                    Variant::Random(_) => rng.as_mut().is_some_and(|r| r.next() & 1 == 1),
                })
                .collect();
            let tear = rng
                .as_mut()
                .filter(|_| !chosen.is_empty())
                .map(|r| (r.next() % chosen.len() as u64) as usize);
            for (i, w) in chosen.iter().enumerate() {
                kept += 1;
                match (tear == Some(i), rng.as_mut()) {
                    (true, Some(r)) => {
                        torn += usize::from(w.data.len() > 4096);
                        put_torn(&mut images[device], w, r);
                    }
                    _ => put(&mut images[device], w.offset, &w.data),
                }
            }
        }
        (images, kept, torn)
    }
}

fn put(image: &mut [u8], offset: u64, data: &[u8]) {
    let at = offset as usize;
    image[at..at + data.len()].copy_from_slice(data);
}

/// Writes a random subset of the write's 4096-byte blocks (at least one left out when it
/// has more than one).
fn put_torn(image: &mut [u8], w: &Cached, rng: &mut Rng) {
    let blocks: Vec<usize> = (0..w.data.len().div_ceil(4096)).collect();
    let skip = (rng.next() % blocks.len() as u64) as usize;
    for b in blocks {
        let lands = blocks_len_one(w) || (b != skip && rng.next() & 1 == 1);
        if lands {
            let end = ((b + 1) * 4096).min(w.data.len());
            put(image, w.offset + (b * 4096) as u64, &w.data[b * 4096..end]);
        }
    }
}

fn blocks_len_one(w: &Cached) -> bool {
    w.data.len() <= 4096
}

/// splitmix64: a small deterministic generator for reproducible crash images.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
