//! In-place header rewrites for validated packets, with fixed offsets: the helpers every stage
//! shares (NAT, TTL, Ethernet addresses); no stage of its own.
//!
//! `wire::nat` does the same through smoltcp's views and is the reference; this module exists
//! because the benchmark showed the views' per-field bounds checks and conversions cost about
//! 12 ns of a ~90 ns DNAT (the `service/dnat_established` bench). It relies on what
//! [`super::parse::parse_ipv4`] guarantees (IHL 5, L4 header present, not a fragment) and
//! folds every change into each checksum once (RFC 1624, eqn. 3, accumulated). A test checks
//! it against `wire::nat` byte for byte on random packets.

use core::net::Ipv4Addr;

use super::parse::icmp_type;
use crate::flow::{proto, FlowKey};
use crate::wire::MacAddr;

/// Write the Ethernet addresses of the frame whose bytes are `frame`.
#[inline]
pub(crate) fn set_macs(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    if let Some(eth) = frame.first_chunk_mut::<12>() {
        eth[..6].copy_from_slice(&dst.0);
        eth[6..].copy_from_slice(&src.0);
    }
}

/// The one's-complement sum of `~old + new` for a 16-bit field change.
#[inline]
fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// The same for a 32-bit field (an address), as two 16-bit words.
#[inline]
fn delta32(old: [u8; 4], new: [u8; 4]) -> u32 {
    delta16(
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    ) + delta16(
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

/// Apply an accumulated delta to the checksum in `c`.
#[inline]
fn adjust(c: &mut [u8; 2], delta: u32) {
    let check = u16::from_be_bytes(*c);
    let mut sum = u32::from(!check) + delta;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    *c = (!(sum as u16)).to_be_bytes();
}

#[inline]
fn swap16(field: &mut [u8; 2], new: u16) -> u32 {
    let old = u16::from_be_bytes(*field);
    *field = new.to_be_bytes();
    delta16(old, new)
}

#[inline]
fn swap_addr(field: &mut [u8; 4], new: Ipv4Addr) -> u32 {
    let old = *field;
    *field = new.octets();
    delta32(old, new.octets())
}

/// A fixed-size window of `h` at `at`: every offset below is a constant, so the compiler
/// checks nothing at run time.
#[inline]
fn at<const N: usize>(h: &mut [u8; 28], at: usize) -> &mut [u8; N] {
    (&mut h[at..at + N])
        .try_into()
        .expect("constant in-bounds window")
}

/// Rewrite the IPv4 packet `ip` (validated; its 5-tuple is `from`) to the 5-tuple `to`, with
/// the IPv4 and L4 checksums updated. ICMP echo carries its identifier in the port fields as
/// [`FlowKey`] documents. `icmp_type` is the packet's ICMP type (ignored for TCP and UDP).
#[inline]
pub(crate) fn nat(ip: &mut [u8], from: &FlowKey, to: &FlowKey, icmp_type: u8) {
    // IPv4 header and the first 8 bytes of L4: what every validated TCP, UDP or ICMP packet
    // has (TCP's checksum, further on, is fetched on its own).
    let Some(h) = ip.first_chunk_mut::<28>() else {
        debug_assert!(false, "nat on a packet shorter than its validated headers");
        return;
    };
    let mut addr_delta = 0;
    if from.src_ip != to.src_ip {
        addr_delta += swap_addr(at::<4>(h, 12), to.src_ip);
    }
    if from.dst_ip != to.dst_ip {
        addr_delta += swap_addr(at::<4>(h, 16), to.dst_ip);
    }
    if addr_delta != 0 {
        adjust(at::<2>(h, 10), addr_delta);
    }
    match from.proto {
        proto::TCP | proto::UDP => {
            let mut delta = addr_delta;
            if from.src_port != to.src_port {
                delta += swap16(at::<2>(h, 20), to.src_port);
            }
            if from.dst_port != to.dst_port {
                delta += swap16(at::<2>(h, 22), to.dst_port);
            }
            if from.proto == proto::TCP {
                if let Some(c) = ip.get_mut(36..38) {
                    adjust(c.try_into().expect("two bytes"), delta);
                }
            } else {
                // UDP: zero means "no checksum" and stays zero; a computed zero is sent as
                // all ones.
                let c = at::<2>(h, 26);
                if *c != [0, 0] {
                    adjust(c, delta);
                    if *c == [0, 0] {
                        *c = [0xff, 0xff];
                    }
                }
            }
        }
        proto::ICMP => {
            // The echo identifier: the source "port" of a request, the destination of a reply.
            let (old, new) = match icmp_type {
                icmp_type::ECHO_REQUEST => (from.src_port, to.src_port),
                icmp_type::ECHO_REPLY => (from.dst_port, to.dst_port),
                _ => return,
            };
            if old != new {
                let delta = swap16(at::<2>(h, 24), new);
                adjust(at::<2>(h, 22), delta);
            }
        }
        _ => {}
    }
}

/// Decrement the TTL of the validated IPv4 packet `ip`; false (and no change) if it would
/// reach zero.
#[inline]
pub(crate) fn decrement_ttl(ip: &mut [u8]) -> bool {
    let Some(h) = ip.first_chunk_mut::<20>() else {
        return false;
    };
    let ttl = h[8];
    if ttl <= 1 {
        return false;
    }
    h[8] = ttl - 1;
    // The TTL is the high byte of the word it shares with the protocol.
    let c: &mut [u8; 2] = (&mut h[10..12]).try_into().expect("constant window");
    adjust(c, delta16(u16::from(ttl) << 8, u16::from(ttl - 1) << 8));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::FrameSpec;
    use crate::wire::{nat as reference, EthernetAddress};
    use fastrand::Rng;

    fn addr(rng: &mut Rng) -> Ipv4Addr {
        Ipv4Addr::from(rng.u32(..))
    }

    #[test]
    fn matches_the_reference_rewrites_on_random_packets() {
        let mut rng = Rng::with_seed(0x1234_5678_9abc_def1);
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        for i in 0..20_000 {
            let spec = FrameSpec {
                udp_checksum: i % 7 != 0,
                ..FrameSpec::new(mac, mac, addr(&mut rng), addr(&mut rng))
            };
            let (sp, dp, id) = (rng.u16(..), rng.u16(..), rng.u16(..));
            let payload = [rng.u8(..); 9];
            let (frame, kind) = match i % 4 {
                0 => (spec.tcp(sp, dp, 0x10, &payload), 0),
                1 => (spec.udp(sp, dp, &payload), 0),
                2 => (spec.icmp_echo(true, id, 1, &payload), 8),
                _ => (spec.icmp_echo(false, id, 1, &payload), 0),
            };
            let ip = &frame[14..];
            let from = crate::pipeline::inspect(&frame).unwrap();
            let mut to = from;
            if rng.bool() {
                to.src_ip = addr(&mut rng);
            }
            if rng.bool() {
                to.dst_ip = addr(&mut rng);
            }
            match (from.proto, kind) {
                (proto::ICMP, 8) => to.src_port = rng.u16(..),
                (proto::ICMP, _) => to.dst_port = rng.u16(..),
                _ => {
                    to.src_port = rng.u16(..);
                    to.dst_port = rng.u16(..);
                }
            }
            let mut fast = ip.to_vec();
            nat(&mut fast, &from, &to, kind);
            let mut slow = ip.to_vec();
            reference::rewrite_src(&mut slow, to.src_ip, to.src_port);
            reference::rewrite_dst(&mut slow, to.dst_ip, to.dst_port);
            assert_eq!(fast, slow, "packet {i}: {from:?} -> {to:?}");
            let mut fast_ttl = ip.to_vec();
            let mut slow_ttl = ip.to_vec();
            assert_eq!(
                decrement_ttl(&mut fast_ttl),
                reference::decrement_ttl(&mut slow_ttl)
            );
            assert_eq!(fast_ttl, slow_ttl, "packet {i}: ttl");
        }
    }
}
