//! Little-endian reading and writing shared by the codecs, and the checksum.
//!
//! Reading goes through [`Reader`], which checks every length against what is left before
//! touching the bytes, so a decoder built on it cannot index out of bounds or allocate more
//! than its input holds.

use super::error::OnDiskError;

/// The crc32c of `parts`, concatenated.
pub(crate) fn crc(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

/// `len` rounded up to a multiple of `block` (a power of two), or `None` on overflow.
pub(crate) fn round_up(len: u64, block: u64) -> Option<u64> {
    debug_assert!(block.is_power_of_two());
    Some(len.checked_add(block - 1)? & !(block - 1))
}

/// Checks that `bytes` holds at least `needed` bytes.
pub(crate) fn need(bytes: &[u8], needed: u64) -> Result<(), OnDiskError> {
    let available = bytes.len() as u64;
    if available < needed {
        return Err(OnDiskError::Truncated { needed, available });
    }
    Ok(())
}

/// `Ok` if `ok`, else [`OnDiskError::BadField`] naming `field` and `value`.
pub(crate) fn check_field(field: &'static str, value: u64, ok: bool) -> Result<(), OnDiskError> {
    if ok {
        Ok(())
    } else {
        Err(OnDiskError::BadField { field, value })
    }
}

/// The length of a byte string as a `u32` prefix.
///
/// # Panics
/// If `len` exceeds `u32::MAX`: no on-disk structure holds anything that long.
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("on-disk byte strings are shorter than 4 GiB")
}

/// A cursor over untrusted bytes; every read checks the length first.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Where `bytes` starts within the enclosing structure, for [`OnDiskError::Truncated`].
    base: u64,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from its start.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self::at(bytes, 0)
    }

    /// Reads `bytes`, which start `base` bytes into the structure being decoded.
    pub(crate) fn at(bytes: &'a [u8], base: u64) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], OnDiskError> {
        if n > self.remaining() {
            return Err(OnDiskError::Truncated {
                needed: self
                    .base
                    .saturating_add((self.pos as u64).saturating_add(n as u64)),
                available: self.base + self.bytes.len() as u64,
            });
        }
        let taken = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(taken)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], OnDiskError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Result<u8, OnDiskError> {
        Ok(self.array::<1>()?[0])
    }

    /// The next little-endian `u16`.
    pub(crate) fn u16(&mut self) -> Result<u16, OnDiskError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// The next little-endian `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32, OnDiskError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// The next little-endian `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64, OnDiskError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// The next little-endian `i64`.
    pub(crate) fn i64(&mut self) -> Result<i64, OnDiskError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A byte string with a `u32` length prefix.
    pub(crate) fn bytes32(&mut self) -> Result<&'a [u8], OnDiskError> {
        let len = self.u32()?;
        // A u32 always fits a usize on the 64-bit targets stripefs runs on; elsewhere an
        // oversized length saturates and `take` reports it as truncated.
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
    }
}

/// Little-endian writes onto a byte vector.
pub(crate) trait Put {
    /// Appends one byte.
    fn put_u8(&mut self, v: u8);
    /// Appends a little-endian `u16`.
    fn put_u16(&mut self, v: u16);
    /// Appends a little-endian `u32`.
    fn put_u32(&mut self, v: u32);
    /// Appends a little-endian `u64`.
    fn put_u64(&mut self, v: u64);
    /// Appends a little-endian `i64`.
    fn put_i64(&mut self, v: i64);
    /// Appends a byte string with a `u32` length prefix.
    fn put_bytes32(&mut self, bytes: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }

    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_bytes32(&mut self, bytes: &[u8]) {
        self.put_u32(len_u32(bytes.len()));
        self.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_parts_is_crc_of_concatenation() {
        assert_eq!(crc(&[b"1234", b"56789"]), crc32c::crc32c(b"123456789"));
        // The standard crc32c check value.
        assert_eq!(crc(&[b"123456789"]), 0xE306_9283);
    }

    #[test]
    fn round_up_to_blocks() {
        assert_eq!(round_up(0, 4096), Some(0));
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(u64::MAX, 4096), None);
    }

    #[test]
    fn reader_reports_truncation_from_the_structure_start() {
        let mut r = Reader::at(&[1, 2, 3], 10);
        assert_eq!(r.u16(), Ok(0x0201));
        assert_eq!(
            r.u32(),
            Err(OnDiskError::Truncated {
                needed: 16,
                available: 13
            })
        );
        assert_eq!(r.remaining(), 1);
    }

    #[test]
    fn huge_length_prefix_is_truncation_not_allocation() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert!(matches!(r.bytes32(), Err(OnDiskError::Truncated { .. })));
    }

    #[test]
    fn writes_are_little_endian() {
        let mut v = Vec::new();
        v.put_u16(0x0102);
        v.put_u32(0x0304_0506);
        v.put_bytes32(b"ab");
        assert_eq!(v, [2, 1, 6, 5, 4, 3, 2, 0, 0, 0, b'a', b'b']);
    }
}
