//! Byte images of device ranges: what a range of the backing held at one moment, read and
//! written back with plain positioned I/O (not through the ring).
//!
//! The write cache keeps the images before and after every write that is not yet flushed,
//! and the write recorder copies the image after every write. The backing is usually opened
//! `O_DIRECT`, so an image's memory is 4096-aligned. Its offsets and lengths are multiples
//! of the device's block size, which is itself a multiple of the backing's alignment.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Memory alignment of an image: enough for `O_DIRECT` on any backing this crate opens.
const ALIGN: usize = 4096;

/// A copy of `len` bytes of a device, in 4096-aligned memory.
pub(crate) struct Image {
    /// Owns the memory: `ALIGN - 1` bytes longer than needed, so an aligned run fits.
    storage: Vec<u8>,
    /// Where the aligned run starts in `storage`.
    start: usize,
    len: usize,
}

impl Image {
    /// Reads `len` bytes of `file` at `offset`.
    pub(crate) fn read(file: &File, offset: u64, len: usize) -> io::Result<Image> {
        let mut image = Image::zeroed(len)?;
        file.read_exact_at(image.bytes_mut(), offset)?;
        Ok(image)
    }

    /// `len` zero bytes in aligned memory.
    fn zeroed(len: usize) -> io::Result<Image> {
        let storage = vec![0u8; len + ALIGN - 1];
        let start = storage.as_ptr().align_offset(ALIGN);
        if start >= ALIGN {
            return Err(io::Error::other("cannot align an image buffer"));
        }
        Ok(Image {
            storage,
            start,
            len,
        })
    }

    /// The bytes of the image.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// Writes the whole image back to `file` at `offset`.
    pub(crate) fn write_to(&self, file: &File, offset: u64) -> io::Result<()> {
        file.write_all_at(self.bytes(), offset)
    }

    /// Writes only bytes `from..from + len` of the image, to `offset + from` (one block of a
    /// torn write). `from` and `len` must be multiples of the device's block size.
    pub(crate) fn write_part(
        &self,
        file: &File,
        offset: u64,
        from: usize,
        len: usize,
    ) -> io::Result<()> {
        file.write_all_at(&self.bytes()[from..from + len], offset + from as u64)
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_aligned_and_round_trip() {
        let dir = tempfile::tempdir_in("/var/tmp").expect("scratch dir");
        let path = dir.path().join("img");
        let block = |b: u8| vec![b; 4096];
        std::fs::write(&path, [block(1), block(2), block(3)].concat()).expect("file");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let image = Image::read(&file, 4096, 8192).expect("read");
        assert_eq!(image.bytes().as_ptr() as usize % ALIGN, 0);
        assert_eq!(image.len(), 8192);
        assert_eq!(image.bytes(), [block(2), block(3)].concat());
        image.write_part(&file, 0, 4096, 4096).expect("part");
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(back, [block(1), block(3), block(3)].concat());
        image.write_to(&file, 0).expect("write");
        let back = std::fs::read(&path).expect("read back");
        assert_eq!(back, [block(2), block(3), block(3)].concat());
    }
}
