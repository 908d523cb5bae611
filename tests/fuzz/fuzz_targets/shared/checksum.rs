//! The Internet checksum as a receiver checks it, summed here apart from kxdp's own code, for
//! the targets that verify the frames kxdp writes.

/// The big-endian 16-bit word of `b` at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The 32-bit sum of `bytes` as big-endian 16-bit words (the last byte padded with zero), added
/// to `acc`.
pub fn sum16(acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    let mut s = acc;
    for w in &mut chunks {
        s += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

/// Whether a one's-complement sum, checksum field included, verifies: it folds to `0xffff`
/// (the receiver's check, which takes either encoding of zero).
pub fn verifies(mut s: u64) -> bool {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}
