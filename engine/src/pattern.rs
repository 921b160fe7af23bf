//! Deterministic data patterns: the byte at every offset of a target is a function of the
//! offset and a seed, so any range can be generated or checked without keeping a copy.

/// Fills `out` with the pattern bytes of offsets `offset..offset+out.len()`.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    for_each_word(seed, offset, out.len(), |at, expected| {
        out[at..at + expected.len()].copy_from_slice(expected);
        true
    });
}

/// The first offset in `offset..offset+data.len()` whose byte differs from the pattern.
pub fn first_mismatch(seed: u64, offset: u64, data: &[u8]) -> Option<u64> {
    let mut bad = None;
    for_each_word(seed, offset, data.len(), |at, expected| {
        let got = &data[at..at + expected.len()];
        if got == expected {
            return true;
        }
        let i = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        bad = Some(offset + (at + i) as u64);
        false
    });
    bad
}

/// Calls `f(index in range, expected bytes)` for each 8-byte-aligned word overlapping
/// `offset..offset+len`, clipped to the range; stops when `f` returns false.
fn for_each_word(seed: u64, offset: u64, len: usize, mut f: impl FnMut(usize, &[u8]) -> bool) {
    let mut at = 0usize;
    while at < len {
        let pos = offset + at as u64;
        let word = word_at(seed, pos / 8).to_le_bytes();
        let skip = (pos % 8) as usize;
        let n = (8 - skip).min(len - at);
        if !f(at, &word[skip..skip + n]) {
            return;
        }
        at += n;
    }
}

fn word_at(seed: u64, word: u64) -> u64 {
    splitmix64(seed ^ word.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The pattern byte at `offset`.
pub fn byte_at(seed: u64, offset: u64) -> u8 {
    word_at(seed, offset / 8).to_le_bytes()[(offset % 8) as usize]
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_agrees_with_byte_at_and_detects_change() {
        let mut buf = vec![0u8; 4096];
        fill(7, 12_345, &mut buf);
        assert_eq!(first_mismatch(7, 12_345, &buf), None);
        assert!(first_mismatch(8, 12_345, &buf).is_some());
        for (i, &b) in buf.iter().enumerate() {
            assert_eq!(b, byte_at(7, 12_345 + i as u64));
        }
        buf[100] ^= 1;
        assert_eq!(first_mismatch(7, 12_345, &buf), Some(12_445));
    }
}
