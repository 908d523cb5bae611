//! Rewrites of an IPv4 packet in place: NAT of an address and port, TTL decrement, written
//! plainly on smoltcp's views as the reference for the pipeline's fixed-offset rewrites
//! (`pipeline/rewrite.rs`), which a test checks against these byte for byte on random packets.
//! A test oracle only: compiled under `cfg(test)`, never part of the shipped crate.
//!
//! Every function takes `ip`, the bytes of a packet starting at its IPv4 header, that the
//! caller has already validated (see the [module contract](super)): version 4, IHL of at least
//! 5 within the slice, and, when the packet is TCP, UDP or ICMP and not a non-first fragment,
//! the whole L4 header (20 bytes of TCP, 8 of UDP or ICMP) present after the IPv4 header. The
//! functions do not re-validate; they panic if that promise was broken.
//!
//! Checksums are patched with RFC 1624's incremental update, never recomputed, so the cost is
//! independent of the packet's length and a packet whose checksum was wrong on arrival stays
//! exactly as wrong (NAT neither repairs nor hides corruption; the receiver still drops it).
//!
//! # What is rewritten
//!
//! - The IPv4 address, and the header checksum.
//! - TCP and UDP: the port on the same side, and the L4 checksum, which covers both the port
//!   and, through the pseudo-header, the address. A UDP checksum of zero means "none" and stays
//!   zero.
//! - ICMP echo: the echo identifier plays the part of the port, and the ICMP checksum (which
//!   has no pseudo-header, so only the identifier changes it). The identifier names the
//!   *querier's* end, so it is the source "port" of a request and the destination "port" of a
//!   reply, matching how [`crate::flow::FlowKey`] is built for echo: [`rewrite_src`] on an echo
//!   request and [`rewrite_dst`] on an echo reply set the identifier; the other two
//!   combinations, and every other ICMP message, change only the address and ignore `port`.
//! - A non-first fragment carries no L4 header: only the address changes. A first fragment's
//!   L4 checksum covers the whole datagram, but the update is linear, so patching it for the
//!   changed words is still exact.
//!
//! The packet's other protocols (anything but TCP, UDP, ICMP) get the address rewrite only.

use std::net::Ipv4Addr;

use super::checksum;
use super::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

/// Which end of the packet a rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// Rewrites the source address and source port (for ICMP echo requests, the identifier) and
/// patches every checksum that covers them.
///
/// # Panics
/// If `ip` breaks the module's validation contract.
#[inline]
pub(crate) fn rewrite_src(ip: &mut [u8], addr: Ipv4Addr, port: u16) {
    rewrite(ip, Side::Src, addr, port);
}

/// Rewrites the destination address and destination port (for ICMP echo replies, the
/// identifier) and patches every checksum that covers them.
///
/// # Panics
/// If `ip` breaks the module's validation contract.
#[inline]
pub(crate) fn rewrite_dst(ip: &mut [u8], addr: Ipv4Addr, port: u16) {
    rewrite(ip, Side::Dst, addr, port);
}

#[inline]
fn rewrite(ip: &mut [u8], side: Side, addr: Ipv4Addr, port: u16) {
    let (old_addr, header_len, protocol, first_fragment) = {
        let mut packet = Ipv4Packet::new_unchecked(&mut *ip);
        let old_addr = match side {
            Side::Src => packet.src_addr(),
            Side::Dst => packet.dst_addr(),
        };
        match side {
            Side::Src => packet.set_src_addr(addr),
            Side::Dst => packet.set_dst_addr(addr),
        }
        packet.set_checksum(checksum::update_addr(packet.checksum(), old_addr, addr));
        (
            old_addr,
            usize::from(packet.header_len()),
            packet.next_header(),
            packet.frag_offset() == 0,
        )
    };
    if !first_fragment {
        return;
    }
    let l4 = &mut ip[header_len..];
    match protocol {
        IpProtocol::Tcp => {
            let mut tcp = TcpPacket::new_unchecked(l4);
            let old_port = match side {
                Side::Src => tcp.src_port(),
                Side::Dst => tcp.dst_port(),
            };
            match side {
                Side::Src => tcp.set_src_port(port),
                Side::Dst => tcp.set_dst_port(port),
            }
            let check = checksum::update_addr(tcp.checksum(), old_addr, addr);
            tcp.set_checksum(checksum::update16(check, old_port, port));
        }
        IpProtocol::Udp => {
            let mut udp = UdpPacket::new_unchecked(l4);
            let old_port = match side {
                Side::Src => udp.src_port(),
                Side::Dst => udp.dst_port(),
            };
            match side {
                Side::Src => udp.set_src_port(port),
                Side::Dst => udp.set_dst_port(port),
            }
            let check = checksum::update_udp(udp.checksum(), |check| {
                let check = checksum::update_addr(check, old_addr, addr);
                checksum::update16(check, old_port, port)
            });
            udp.set_checksum(check);
        }
        IpProtocol::Icmp => {
            let mut icmp = Icmpv4Packet::new_unchecked(l4);
            let carries_ident = matches!(
                (side, icmp.msg_type()),
                (Side::Src, Icmpv4Message::EchoRequest) | (Side::Dst, Icmpv4Message::EchoReply)
            );
            if carries_ident {
                let old_ident = icmp.echo_ident();
                icmp.set_echo_ident(port);
                icmp.set_checksum(checksum::update16(icmp.checksum(), old_ident, port));
            }
        }
        _ => {}
    }
}

/// Decrements the TTL of a packet being forwarded, patching the header checksum.
///
/// Returns `false`, leaving the packet untouched, if the TTL is 0 or 1: the packet must not be
/// forwarded (RFC 1812 section 5.3.1) and the caller answers with ICMP time exceeded or drops.
///
/// # Panics
/// If `ip` is shorter than an IPv4 header.
#[inline]
pub(crate) fn decrement_ttl(ip: &mut [u8]) -> bool {
    let mut packet = Ipv4Packet::new_unchecked(ip);
    let ttl = packet.hop_limit();
    if ttl <= 1 {
        return false;
    }
    // The TTL is the high byte of the 16-bit word it shares with the protocol.
    let protocol = u8::from(packet.next_header());
    let old = u16::from_be_bytes([ttl, protocol]);
    let new = u16::from_be_bytes([ttl - 1, protocol]);
    packet.set_hop_limit(ttl - 1);
    packet.set_checksum(checksum::update16(packet.checksum(), old, new));
    true
}

/// Whether the IPv4 header at the start of `ip` has a correct checksum.
///
/// Unlike the rewrites this accepts untrusted bytes: a slice too short for the header its IHL
/// claims, or an IHL below 5, is reported as `false`.
#[inline]
pub(crate) fn ipv4_header_checksum_ok(ip: &[u8]) -> bool {
    let Some(&version_ihl) = ip.first() else {
        return false;
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    header_len >= super::IPV4_HEADER_LEN
        && ip.len() >= header_len
        && checksum::checksum(&ip[..header_len]) == 0
}

#[cfg(test)]
mod tests {
    use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};

    use super::*;
    use crate::wire::build::{FrameSpec, Ipv4Opts};
    use crate::wire::{tcp_flags, EthernetAddress, MacAddr, ETHERNET_HEADER_LEN};
    use fastrand::Rng;

    const MAC_A: MacAddr = EthernetAddress([0x02, 0, 0, 0, 0, 0xa]);
    const MAC_B: MacAddr = EthernetAddress([0x02, 0, 0, 0, 0, 0xb]);

    /// What a packet says about itself after a rewrite, every checksum recomputed from scratch.
    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        /// Source and destination port, or (identifier, sequence) for ICMP echo.
        ports: Option<(u16, u16)>,
        l4_checksum: Option<u16>,
    }

    /// Parses `frame` with etherparse and asserts that every checksum in it is right.
    fn parse_and_verify(frame: &[u8]) -> Parsed {
        let parsed = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
        let Some(NetSlice::Ipv4(ip)) = &parsed.net else {
            panic!("not IPv4")
        };
        let header = ip.header();
        assert_eq!(
            header.to_header().calc_header_checksum(),
            header.header_checksum(),
            "IPv4 header checksum"
        );
        assert!(ipv4_header_checksum_ok(&frame[ETHERNET_HEADER_LEN..]));
        let (src, dst) = (header.source_addr(), header.destination_addr());
        let (ports, l4_checksum) = match &parsed.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let expected = tcp.calc_checksum_ipv4(header.source(), header.destination());
                assert_eq!(expected.unwrap(), tcp.checksum(), "TCP checksum");
                (
                    Some((tcp.source_port(), tcp.destination_port())),
                    Some(tcp.checksum()),
                )
            }
            Some(TransportSlice::Udp(udp)) => {
                if udp.checksum() != 0 {
                    let expected = udp
                        .to_header()
                        .calc_checksum_ipv4(&header.to_header(), udp.payload())
                        .unwrap();
                    assert_eq!(expected, udp.checksum(), "UDP checksum");
                }
                (
                    Some((udp.source_port(), udp.destination_port())),
                    Some(udp.checksum()),
                )
            }
            Some(TransportSlice::Icmpv4(icmp)) => {
                assert_eq!(checksum::checksum(icmp.slice()), 0, "ICMP checksum");
                let ports = match icmp.icmp_type() {
                    Icmpv4Type::EchoRequest(echo) | Icmpv4Type::EchoReply(echo) => {
                        Some((echo.id, echo.seq))
                    }
                    _ => None,
                };
                (ports, Some(icmp.checksum()))
            }
            _ => (None, None),
        };
        Parsed {
            src,
            dst,
            ports,
            l4_checksum,
        }
    }

    fn ip_of(frame: &mut [u8]) -> &mut [u8] {
        &mut frame[ETHERNET_HEADER_LEN..]
    }

    fn random_addr(rng: &mut Rng) -> Ipv4Addr {
        Ipv4Addr::from(rng.u32(..))
    }

    #[test]
    fn tcp_dnat_and_snat() {
        let client = Ipv4Addr::new(10, 244, 1, 5);
        let service = Ipv4Addr::new(10, 96, 0, 10);
        let backend = Ipv4Addr::new(10, 244, 2, 9);
        let spec = FrameSpec::new(MAC_A, MAC_B, client, service);
        let mut frame = spec.tcp(40000, 80, tcp_flags::SYN, b"");

        rewrite_dst(ip_of(&mut frame), backend, 8080);
        let parsed = parse_and_verify(&frame);
        assert_eq!((parsed.src, parsed.dst), (client, backend));
        assert_eq!(parsed.ports, Some((40000, 8080)));

        // And the reply direction undoes it.
        let reply = FrameSpec::new(MAC_B, MAC_A, backend, client);
        let mut frame = reply.tcp(8080, 40000, tcp_flags::SYN | tcp_flags::ACK, b"");
        rewrite_src(ip_of(&mut frame), service, 80);
        let parsed = parse_and_verify(&frame);
        assert_eq!((parsed.src, parsed.dst), (service, client));
        assert_eq!(parsed.ports, Some((80, 40000)));
    }

    #[test]
    fn udp_rewrites_both_ends() {
        let spec = FrameSpec::new(
            MAC_A,
            MAC_B,
            Ipv4Addr::new(10, 244, 1, 5),
            Ipv4Addr::new(10, 96, 0, 10),
        );
        let mut frame = spec.udp(33333, 53, b"\x12\x34\x01\x00\x00\x01");
        rewrite_dst(ip_of(&mut frame), Ipv4Addr::new(10, 244, 3, 3), 5353);
        rewrite_src(ip_of(&mut frame), Ipv4Addr::new(192, 168, 1, 10), 61000);
        let parsed = parse_and_verify(&frame);
        assert_eq!(parsed.src, Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(parsed.dst, Ipv4Addr::new(10, 244, 3, 3));
        assert_eq!(parsed.ports, Some((61000, 5353)));
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let spec = FrameSpec {
            udp_checksum: false,
            ..FrameSpec::new(
                MAC_A,
                MAC_B,
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
            )
        };
        let mut frame = spec.udp(1000, 2000, b"no checksum here");
        rewrite_dst(ip_of(&mut frame), Ipv4Addr::new(172, 16, 9, 9), 3000);
        rewrite_src(ip_of(&mut frame), Ipv4Addr::new(172, 16, 8, 8), 4000);
        let parsed = parse_and_verify(&frame);
        assert_eq!(parsed.l4_checksum, Some(0));
        assert_eq!(parsed.ports, Some((4000, 3000)));
    }

    #[test]
    fn udp_checksum_that_becomes_zero_is_sent_as_all_ones() {
        // Choose the new destination port so the one's complement sum of the rewritten
        // datagram is -0 (0xffff): its true checksum is then 0, which UDP must send as 0xffff.
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let spec = FrameSpec::new(MAC_A, MAC_B, src, dst);
        let mut frame = spec.udp(1000, 2000, b"abcd");
        let ip = ip_of(&mut frame);
        let udp_check = UdpPacket::new_unchecked(&ip[20..]).checksum();
        // update16(c, old, 0) = !(sum without the port); adding its complement gives -0.
        let new_port = checksum::update16(udp_check, 2000, 0);
        assert_eq!(checksum::update16(udp_check, 2000, new_port), 0);
        rewrite_dst(ip, dst, new_port);
        let check = UdpPacket::new_unchecked(&ip[20..]).checksum();
        let parsed = parse_and_verify(&frame);
        assert_eq!(parsed.ports, Some((1000, new_port)));
        assert_eq!(check, 0xffff, "a computed zero goes out as all ones");
    }

    #[test]
    fn icmp_echo_identifier_follows_the_querier() {
        let pod = Ipv4Addr::new(10, 244, 1, 5);
        let node = Ipv4Addr::new(192, 168, 1, 10);
        let remote = Ipv4Addr::new(8, 8, 8, 8);

        // SNAT of a request: source address and identifier change.
        let mut request = FrameSpec::new(MAC_A, MAC_B, pod, remote).icmp_echo(true, 77, 3, b"ping");
        rewrite_src(ip_of(&mut request), node, 40001);
        let parsed = parse_and_verify(&request);
        assert_eq!((parsed.src, parsed.dst), (node, remote));
        assert_eq!(parsed.ports, Some((40001, 3)));

        // Un-SNAT of the reply: destination address and identifier change back.
        let mut reply =
            FrameSpec::new(MAC_B, MAC_A, remote, node).icmp_echo(false, 40001, 3, b"ping");
        rewrite_dst(ip_of(&mut reply), pod, 77);
        let parsed = parse_and_verify(&reply);
        assert_eq!((parsed.src, parsed.dst), (remote, pod));
        assert_eq!(parsed.ports, Some((77, 3)));

        // The other side of each leaves the identifier alone.
        let mut request = FrameSpec::new(MAC_A, MAC_B, pod, remote).icmp_echo(true, 77, 3, b"ping");
        rewrite_dst(ip_of(&mut request), Ipv4Addr::new(1, 1, 1, 1), 999);
        assert_eq!(parse_and_verify(&request).ports, Some((77, 3)));
        let mut reply = FrameSpec::new(MAC_B, MAC_A, remote, pod).icmp_echo(false, 77, 3, b"ping");
        rewrite_src(ip_of(&mut reply), Ipv4Addr::new(1, 1, 1, 1), 999);
        assert_eq!(parse_and_verify(&reply).ports, Some((77, 3)));
    }

    #[test]
    fn other_icmp_changes_only_the_address() {
        let spec = FrameSpec::new(
            MAC_A,
            MAC_B,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        );
        let mut frame = spec.icmp(
            Icmpv4Message::DstUnreachable,
            3,
            [0; 4],
            &[
                0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
            ],
        );
        let before = frame[ETHERNET_HEADER_LEN + 20..].to_vec();
        rewrite_src(ip_of(&mut frame), Ipv4Addr::new(10, 9, 9, 9), 1234);
        assert_eq!(&frame[ETHERNET_HEADER_LEN + 20..], &before[..]);
        assert_eq!(parse_and_verify(&frame).src, Ipv4Addr::new(10, 9, 9, 9));
    }

    #[test]
    fn non_first_fragment_changes_only_the_address() {
        let spec = FrameSpec {
            ip: Ipv4Opts {
                dont_fragment: false,
                frag_offset: 1480,
                ..Ipv4Opts::default()
            },
            ..FrameSpec::new(
                MAC_A,
                MAC_B,
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
            )
        };
        // The "payload" of a non-first fragment is the middle of some datagram.
        let mut frame = spec.ipv4(IpProtocol::Udp, &[0xab; 16]);
        rewrite_dst(ip_of(&mut frame), Ipv4Addr::new(10, 0, 0, 3), 80);
        assert_eq!(&frame[ETHERNET_HEADER_LEN + 20..], &[0xab; 16]);
        assert!(ipv4_header_checksum_ok(ip_of(&mut frame)));
    }

    #[test]
    fn first_fragment_l4_checksum_stays_consistent() {
        // A first fragment's L4 checksum covers the whole datagram; the incremental update
        // must move it by exactly what the rewrite changed, i.e. match a rewrite of the
        // unfragmented datagram.
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let whole = FrameSpec::new(MAC_A, MAC_B, src, dst);
        let first = FrameSpec {
            ip: Ipv4Opts {
                dont_fragment: false,
                more_fragments: true,
                ..Ipv4Opts::default()
            },
            ..whole
        };
        let mut a = whole.udp(5000, 6000, &[7; 64]);
        let mut b = first.udp(5000, 6000, &[7; 64]);
        for frame in [&mut a, &mut b] {
            rewrite_dst(ip_of(frame), Ipv4Addr::new(10, 1, 1, 1), 7000);
        }
        let l4 = ETHERNET_HEADER_LEN + 20;
        assert_eq!(&a[l4..], &b[l4..]);
    }

    #[test]
    fn random_rewrites_match_recomputation() {
        let mut rng = Rng::with_seed(0x4e41_5421);
        for i in 0..3000 {
            let spec = FrameSpec {
                ip: Ipv4Opts {
                    ttl: rng.u8(2..),
                    ident: rng.u16(..),
                    ..Ipv4Opts::default()
                },
                ..FrameSpec::new(MAC_A, MAC_B, random_addr(&mut rng), random_addr(&mut rng))
            };
            let len = rng.usize(..300);
            let payload: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            let (sport, dport) = (rng.u16(..), rng.u16(..));
            let mut frame = match i % 4 {
                0 => spec.tcp(sport, dport, rng.u8(..), &payload),
                1 => spec.udp(sport, dport, &payload),
                2 => spec.icmp_echo(true, sport, dport, &payload),
                _ => spec.icmp_echo(false, sport, dport, &payload),
            };
            let (new_src, new_dst) = (random_addr(&mut rng), random_addr(&mut rng));
            let (new_sport, new_dport) = (rng.u16(..), rng.u16(..));
            rewrite_src(ip_of(&mut frame), new_src, new_sport);
            rewrite_dst(ip_of(&mut frame), new_dst, new_dport);
            assert!(decrement_ttl(ip_of(&mut frame)));
            let parsed = parse_and_verify(&frame);
            assert_eq!((parsed.src, parsed.dst), (new_src, new_dst));
            let expected_ports = match i % 4 {
                0 | 1 => (new_sport, new_dport),
                2 => (new_sport, dport),
                _ => (new_dport, dport),
            };
            assert_eq!(parsed.ports, Some(expected_ports), "case {i}");
        }
    }

    #[test]
    fn ttl_decrements_until_one() {
        let spec = FrameSpec {
            ip: Ipv4Opts {
                ttl: 3,
                ..Ipv4Opts::default()
            },
            ..FrameSpec::new(
                MAC_A,
                MAC_B,
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
            )
        };
        let mut frame = spec.udp(1, 2, b"");
        let ip = ip_of(&mut frame);
        assert!(decrement_ttl(ip));
        assert_eq!(Ipv4Packet::new_unchecked(&*ip).hop_limit(), 2);
        assert!(ipv4_header_checksum_ok(ip));
        assert!(decrement_ttl(ip));
        assert_eq!(Ipv4Packet::new_unchecked(&*ip).hop_limit(), 1);
        let before = ip.to_vec();
        assert!(!decrement_ttl(ip));
        assert_eq!(ip, &before[..], "a TTL of 1 is left alone");
        parse_and_verify(&frame);

        let mut zero = FrameSpec {
            ip: Ipv4Opts {
                ttl: 0,
                ..Ipv4Opts::default()
            },
            ..spec
        }
        .udp(1, 2, b"");
        assert!(!decrement_ttl(ip_of(&mut zero)));
    }

    #[test]
    fn header_checksum_check_rejects_bad_input() {
        let spec = FrameSpec::new(
            MAC_A,
            MAC_B,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        );
        let mut frame = spec.udp(1, 2, b"x");
        let ip = ip_of(&mut frame);
        assert!(ipv4_header_checksum_ok(ip));
        assert!(!ipv4_header_checksum_ok(&ip[..19]));
        assert!(!ipv4_header_checksum_ok(&[]));
        ip[8] ^= 1;
        assert!(!ipv4_header_checksum_ok(ip));
        ip[8] ^= 1;
        ip[0] = 0x44; // IHL 4
        assert!(!ipv4_header_checksum_ok(ip));
    }
}
