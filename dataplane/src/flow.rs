//! Flow identity: the 5-tuple key and the fixed-seed hash every worker agrees on.
//!
//! The hash has a fixed seed on purpose: Maglev picks, VXLAN outer source ports and conntrack
//! buckets must be the same on every worker and after every restart, so a flow keeps its backend
//! and its path. It is not a defence against adversarial collisions; conntrack bounds its probe
//! length instead.

use core::hash::{BuildHasher, Hasher};
use core::net::Ipv4Addr;

/// IP protocol numbers the pipeline handles.
pub mod proto {
    /// ICMPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP: its ports are read for NetworkPolicy, nothing else.
    pub const SCTP: u8 = 132;
}

/// A unidirectional 5-tuple. For ICMP echo, the request carries the identifier in
/// `src_port` (with `dst_port` zero) and the reply carries it in `dst_port`, so a reply's key is
/// the exact reverse of its request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src_ip: Ipv4Addr,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// Source port (ICMP echo request: identifier).
    pub src_port: u16,
    /// Destination port (ICMP echo reply: identifier).
    pub dst_port: u16,
    /// IP protocol number, see [`proto`].
    pub proto: u8,
}

impl FlowKey {
    /// A key from its parts.
    #[inline]
    pub const fn new(
        proto: u8,
        src_ip: Ipv4Addr,
        src_port: u16,
        dst_ip: Ipv4Addr,
        dst_port: u16,
    ) -> Self {
        FlowKey {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            proto,
        }
    }

    /// The key of a packet going the other way.
    #[inline]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }

    /// The key packed into two words: addresses, then ports and protocol.
    #[inline]
    pub fn to_words(&self) -> (u64, u64) {
        let a = (u64::from(u32::from(self.src_ip)) << 32) | u64::from(u32::from(self.dst_ip));
        let b = (u64::from(self.src_port) << 48)
            | (u64::from(self.dst_port) << 32)
            | u64::from(self.proto);
        (a, b)
    }

    /// The inverse of [`FlowKey::to_words`].
    #[inline]
    pub fn from_words(a: u64, b: u64) -> Self {
        FlowKey {
            src_ip: Ipv4Addr::from((a >> 32) as u32),
            dst_ip: Ipv4Addr::from(a as u32),
            src_port: (b >> 48) as u16,
            dst_port: (b >> 32) as u16,
            proto: b as u8,
        }
    }

    /// The fixed-seed hash of this key, see [`flow_hash`].
    #[inline]
    pub fn hash(&self) -> u64 {
        let (a, b) = self.to_words();
        flow_hash(a, b)
    }
}

/// The fixed seed of every flow hash. Changing it moves every flow: don't.
pub const FLOW_HASH_SEED: u64 = 0x6b78_6470_5f76_3031; // "kxdp_v01"

/// Murmur3's 64-bit finaliser: every input bit affects every output bit.
#[inline]
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Hash two words with the fixed seed.
#[inline]
pub const fn hash_words(a: u64, b: u64) -> u64 {
    fmix64(fmix64(a ^ FLOW_HASH_SEED).wrapping_add(b).rotate_left(29) ^ b)
}

/// The per-packet flow hash of a key's two words: cheaper than [`hash_words`] (three
/// multiplications, two of them independent, against four in a chain) because every packet
/// that may be tracked pays for it, and still mixing every input bit into the low bits that
/// conntrack's index and Maglev's reduction use. Fixed seed, like every hash here.
#[inline]
pub const fn flow_hash(a: u64, b: u64) -> u64 {
    let mut h = (a ^ FLOW_HASH_SEED).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h ^= h >> 32;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

/// A fast, fixed-seed [`Hasher`] for the snapshot's integer-keyed maps (service keys, pod
/// addresses). Keys are small integers we produce ourselves, so SipHash's DoS resistance buys
/// nothing on the packet path and costs tens of nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher {
    state: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.state)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.state = (self.state.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Builds [`FastHasher`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastBuildHasher;

impl BuildHasher for FastBuildHasher {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher::default()
    }
}

/// A `HashMap` keyed by our own integers, with [`FastBuildHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey::new(
            proto::TCP,
            Ipv4Addr::new(10, 244, 1, 2),
            40000,
            Ipv4Addr::new(10, 96, 0, 10),
            80,
        )
    }

    #[test]
    fn flow_hash_spreads_keys_that_differ_in_one_field_over_the_low_bits() {
        // Conntrack masks the low bits and Maglev reduces by multiplication: both need keys
        // that differ only in a port or an address to land evenly.
        for vary in 0..3 {
            let mut buckets = [0u32; 1024];
            for i in 0..65_536u32 {
                let mut k = key();
                match vary {
                    0 => k.src_port = i as u16,
                    1 => k.src_ip = Ipv4Addr::from(0x0af4_0000 | i),
                    _ => k.dst_ip = Ipv4Addr::from(0x0a60_0000 | i),
                }
                let h = k.hash();
                buckets[(h & 1023) as usize] += 1;
            }
            // 64 per bucket on average; a poor mix leaves buckets empty or doubled.
            let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
            assert!(
                *min >= 32 && *max <= 110,
                "field {vary}: buckets {min}..{max}"
            );
        }
    }

    #[test]
    fn words_round_trip_and_reverse_is_an_involution() {
        let k = key();
        let (a, b) = k.to_words();
        assert_eq!(FlowKey::from_words(a, b), k);
        assert_eq!(k.reversed().reversed(), k);
        assert_ne!(k.reversed(), k);
    }

    #[test]
    fn hash_is_fixed_across_builds_and_sensitive_to_every_field() {
        // A golden value: if this changes, every flow in a running cluster moves on upgrade.
        // The value was computed independently (Python, from the definition above).
        let golden = key().hash();
        assert_eq!(golden, 0x578a_890f_5b65_f7a9);
        let (a, b) = key().to_words();
        assert_eq!(hash_words(a, b), 0x5ad4_40f1_88e3_7475);
        let mut k = key();
        k.src_port += 1;
        assert_ne!(k.hash(), golden);
        let mut k = key();
        k.proto = proto::UDP;
        assert_ne!(k.hash(), golden);
        assert_ne!(key().reversed().hash(), golden);
    }
}
