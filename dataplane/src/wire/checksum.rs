//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is computed in two steps: [`sum`] accumulates 16-bit big-endian words into a
//! one's complement sum, and [`fold`] propagates the carries and complements the result into the
//! value that goes into a header's checksum field. Sums compose, so a pseudo-header sum
//! can be the `initial` value for the sum over the L4 segment.
//!
//! NAT changes a handful of 16-bit words in a packet whose checksums are already right, so it
//! patches the checksums rather than recomputing them: [`update16`] and [`update32`] implement
//! RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`. Eqn. 3 gives the same result as a full
//! recomputation (unlike RFC 1141's `HC' = HC + m + ~m'`, which can produce -0, `0xffff`, where
//! the recomputed checksum is `0x0000`). The pipeline keeps UDP's special case for the value
//! zero where it patches a UDP checksum.
//!
//! The helpers only the NAT oracle (`wire::nat`) uses, the pseudo-header sum, an address update
//! and UDP's zero rule, exist in test builds only. Everything here is a pure function over integers or byte slices; nothing allocates.

/// Adds the 16-bit big-endian words of `data` to the one's complement sum `initial`.
///
/// The result is a partial sum with its carries already folded into the low 17 bits, ready to
/// be passed as `initial` to another call or to [`fold`]. An odd trailing byte is padded with a
/// zero byte on the right, as RFC 1071 specifies; so when several slices are summed in turn,
/// every slice but the last must have an even length.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // RFC 1071 section 2 (C): the sum may be taken over 32-bit words in a 64-bit accumulator
    // and folded at the end; a 64 KiB packet is 16 Ki words, far from overflowing.
    let mut acc = u64::from(initial);
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        acc += u64::from(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    let mut rest = words.remainder();
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    // Fold 64 -> 32 -> 17 bits; the caller folds the last carry.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u32
}

/// Folds the carries of a one's complement sum into 16 bits, without complementing.
#[inline]
const fn add_carries(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Folds a one's complement sum into 16 bits and complements it: the checksum field value.
///
/// A packet whose checksum field is right sums (field included) to `0xffff`, so
/// `fold(sum(packet, 0)) == 0` verifies it.
#[inline]
pub const fn fold(sum: u32) -> u16 {
    !add_carries(sum)
}

/// The one's complement sum of the IPv4 pseudo-header that TCP and UDP checksums cover
/// (RFC 793 section 3.1, RFC 768): source and destination address, protocol and L4 length.
#[cfg(test)]
#[inline]
pub(crate) fn pseudo_header(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    protocol: u8,
    l4_len: u16,
) -> u32 {
    let src = u32::from(src);
    let dst = u32::from(dst);
    (src >> 16)
        + (src & 0xffff)
        + (dst >> 16)
        + (dst & 0xffff)
        + u32::from(protocol)
        + u32::from(l4_len)
}

/// The checksum field value for `data` alone: `fold(sum(data, 0))`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(data, 0))
}

/// Updates checksum field `check` after a 16-bit word covered by it changed from `old` to `new`
/// (RFC 1624 eqn. 3).
#[inline]
pub const fn update16(check: u16, old: u16, new: u16) -> u16 {
    !add_carries(!check as u32 + !old as u32 + new as u32)
}

/// Updates checksum field `check` after a 32-bit value covered by it (an IPv4 address, two
/// 16-bit words) changed from `old` to `new` (RFC 1624 eqn. 3).
#[inline]
pub const fn update32(check: u16, old: u32, new: u32) -> u16 {
    let old = !old;
    !add_carries(!check as u32 + (old >> 16) + (old & 0xffff) + (new >> 16) + (new & 0xffff))
}

/// [`update32`] for an IPv4 address.
#[cfg(test)]
#[inline]
pub(crate) fn update_addr(check: u16, old: std::net::Ipv4Addr, new: std::net::Ipv4Addr) -> u16 {
    update32(check, u32::from(old), u32::from(new))
}

/// Applies `update` to a UDP checksum field, keeping UDP's rules for zero (RFC 768).
///
/// A zero UDP checksum means the sender computed none; it stays zero, since the receiver will
/// not check it either. A computed checksum of zero is sent as `0xffff` (the other
/// representation of zero), so the update never turns a present checksum into "none".
#[cfg(test)]
#[inline]
pub(crate) fn update_udp(check: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if check == 0 {
        return 0;
    }
    match update(check) {
        0 => 0xffff,
        new => new,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fastrand::Rng;
    use std::net::Ipv4Addr;

    /// The textbook RFC 1071 algorithm, one 16-bit word at a time, as a reference.
    fn reference_checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for chunk in data.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(add_carries(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_example() {
        // A real IPv4 header (Wikipedia's example) with its checksum field zeroed.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&header), 0);
    }

    #[test]
    fn sum_matches_reference_and_composes() {
        let mut rng = Rng::with_seed(0x5eed);
        for _ in 0..2000 {
            let len = rng.usize(..1600);
            let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            assert_eq!(checksum(&data), reference_checksum(&data), "len {len}");
            // Splitting at an even offset composes.
            let cut = rng.usize(..len / 2 + 1) * 2;
            let (a, b) = data.split_at(cut);
            assert_eq!(fold(sum(b, sum(a, 0))), reference_checksum(&data));
        }
    }

    #[test]
    fn sum_of_a_maximum_size_packet_does_not_overflow() {
        let data = vec![0xff; 65535];
        assert_eq!(checksum(&data), reference_checksum(&data));
        assert_eq!(fold(sum(&data, u32::MAX >> 1)), {
            let mut acc = u64::from(u32::MAX >> 1) + u64::from(add_carries(sum(&data, 0)));
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        });
    }

    #[test]
    fn pseudo_header_matches_bytes() {
        let src = Ipv4Addr::new(10, 244, 1, 7);
        let dst = Ipv4Addr::new(192, 168, 200, 3);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 17]);
        bytes.extend_from_slice(&1234u16.to_be_bytes());
        assert_eq!(fold(pseudo_header(src, dst, 17, 1234)), checksum(&bytes));
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: the other header words sum to 0xcd7a and m = 0x5555, so
        // HC = 0xdd2f. Changing m to 0x3285 makes the sum 0xffff (-0), whose checksum is
        // 0x0000; RFC 1141's update gives 0xffff, eqn. 3 must give 0x0000.
        assert_eq!(fold(0xcd7a + 0x5555), 0xdd2f);
        assert_eq!(fold(0xcd7a + 0x3285), 0x0000);
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        // And back again.
        assert_eq!(update16(0x0000, 0x3285, 0x5555), 0xdd2f);
    }

    #[test]
    fn update_never_yields_minus_zero_for_nonzero_data() {
        // 0xffff as a checksum field would mean the covered data sums to +0, which only
        // all-zero data does. Eqn. 3 must never produce it otherwise.
        let mut rng = Rng::with_seed(1624);
        for _ in 0..200_000 {
            let check = rng.u16(..);
            let old = rng.u16(..);
            let new = rng.u16(..);
            if check == 0xffff && old == 0xffff && new == 0 {
                continue;
            }
            assert_ne!(
                update16(check, old, new),
                0xffff,
                "{check:#x} {old:#x} {new:#x}"
            );
        }
    }

    #[test]
    fn incremental_matches_recomputation() {
        let mut rng = Rng::with_seed(0xc0ffee);
        for _ in 0..20_000 {
            let len = 2 * (2 + rng.usize(..60));
            let mut data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            let check = checksum(&data);

            // Change one 16-bit word.
            let at = 2 * rng.usize(..len / 2);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let new = rng.u16(..);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let check = update16(check, old, new);
            assert_eq!(check, checksum(&data));

            // Change one 32-bit value at an even (not necessarily 4-aligned) offset.
            let at = 2 * rng.usize(..len / 2 - 1);
            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            let new = rng.u32(..);
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            assert_eq!(update32(check, old, new), checksum(&data));
        }
    }

    #[test]
    fn incremental_reaches_zero_checksum() {
        // Construct data whose new checksum is exactly 0x0000 (sum -0) and check that eqn. 3
        // lands on it rather than on 0xffff.
        let mut rng = Rng::with_seed(7);
        for _ in 0..1000 {
            let mut data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(20).collect();
            let check = checksum(&data);
            // Choose the new first word so the total becomes 0xffff.
            let old = u16::from_be_bytes([data[0], data[1]]);
            let rest = add_carries(sum(&data[2..], 0));
            let new = !rest;
            data[..2].copy_from_slice(&new.to_be_bytes());
            if data.iter().all(|&b| b == 0) {
                continue;
            }
            assert_eq!(checksum(&data), 0x0000);
            assert_eq!(update16(check, old, new), 0x0000);
        }
    }

    #[test]
    fn udp_zero_rules() {
        // No checksum stays no checksum, whatever changes.
        assert_eq!(update_udp(0, |c| update16(c, 0x1234, 0x4321)), 0);
        // A computed zero is sent as all ones.
        assert_eq!(update_udp(0xdd2f, |c| update16(c, 0x5555, 0x3285)), 0xffff);
        // Otherwise the update is plain.
        assert_eq!(
            update_udp(0x1111, |c| update16(c, 1, 2)),
            update16(0x1111, 1, 2)
        );
        // An all-ones field (a computed zero) updates like zero does in one's complement.
        assert_eq!(update_udp(0xffff, |c| update16(c, 5, 5)), 0xffff);
    }

    #[test]
    fn update_addr_is_update32() {
        let old = Ipv4Addr::new(10, 96, 0, 10);
        let new = Ipv4Addr::new(10, 244, 2, 17);
        assert_eq!(
            update_addr(0xabcd, old, new),
            update32(0xabcd, 0x0a60_000a, 0x0af4_0211)
        );
    }
}
