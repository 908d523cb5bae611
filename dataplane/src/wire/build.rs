//! Frame builders for tests, fixtures and benchmarks.
//!
//! These allocate a `Vec<u8>` per frame and are never used on the packet path. Every frame is a
//! complete Ethernet II frame (no FCS, no padding unless [`pad_to_min`] is asked for) with every
//! length and checksum filled in, built on smoltcp's reprs and views so that the bytes are
//! produced by code independent of kxdp's own rewrites.
//!
//! The free functions cover the common cases; [`FrameSpec`] is the general form, with
//! [`Ipv4Opts`] and [`TcpOpts`] to tweak what the free functions leave at their defaults:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use kxdp_dataplane::wire::build::{FrameSpec, Ipv4Opts};
//! use kxdp_dataplane::wire::EthernetAddress;
//!
//! let spec = FrameSpec {
//!     ip: Ipv4Opts { ttl: 1, ..Ipv4Opts::default() },
//!     ..FrameSpec::new(
//!         EthernetAddress([2, 0, 0, 0, 0, 1]),
//!         EthernetAddress([2, 0, 0, 0, 0, 2]),
//!         Ipv4Addr::new(10, 244, 1, 5),
//!         Ipv4Addr::new(10, 96, 0, 10),
//!     )
//! };
//! let frame = spec.udp(40000, 53, b"query");
//! assert_eq!(frame.len(), 14 + 20 + 8 + 5);
//! ```

use std::net::Ipv4Addr;

use super::{
    tcp_flags, ArpOperation, ArpPacket, ArpRepr, ChecksumCapabilities, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Message, Icmpv4Packet, Icmpv4Repr,
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, MacAddr, TcpPacket, TcpSeqNumber, UdpPacket,
    UdpRepr, VxlanPacket, VxlanRepr, ARP_ETHERNET_IPV4_LEN, ETHERNET_HEADER_LEN,
    ETHERNET_MIN_FRAME_LEN, ICMP_HEADER_LEN, IPV4_HEADER_LEN, TCP_MIN_HEADER_LEN, UDP_HEADER_LEN,
    VXLAN_HEADER_LEN,
};

/// The broadcast MAC address.
pub const BROADCAST: MacAddr = MacAddr::BROADCAST;

/// IPv4 header fields a test may want other than the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Opts {
    /// Time to live. Default 64, Linux's.
    pub ttl: u8,
    /// The DF flag. Default set, as Linux sets it on TCP and on path-MTU-discovering UDP.
    pub dont_fragment: bool,
    /// The MF flag. Default clear.
    pub more_fragments: bool,
    /// Fragment offset in bytes; must be a multiple of 8. Default 0.
    pub frag_offset: u16,
    /// Identification. Default 0.
    pub ident: u16,
    /// The DSCP/ECN byte. Default 0.
    pub tos: u8,
    /// Writes this total length instead of the true one (before the checksum is filled, so
    /// the header checksum stays valid), to make malformed packets. Default `None`.
    pub total_len: Option<u16>,
}

impl Default for Ipv4Opts {
    fn default() -> Self {
        Self {
            ttl: 64,
            dont_fragment: true,
            more_fragments: false,
            frag_offset: 0,
            ident: 0,
            tos: 0,
            total_len: None,
        }
    }
}

/// TCP header fields other than the ports and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOpts {
    /// Sequence number. Default 1.
    pub seq: u32,
    /// Acknowledgment number, written whether or not ACK is set. Default 0.
    pub ack: u32,
    /// Window. Default 64240, Linux's initial window.
    pub window: u16,
}

impl Default for TcpOpts {
    fn default() -> Self {
        Self {
            seq: 1,
            ack: 0,
            window: 64240,
        }
    }
}

/// The Ethernet and IPv4 envelope of a frame, from which frames of each protocol are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    /// Ethernet source.
    pub src_mac: MacAddr,
    /// Ethernet destination.
    pub dst_mac: MacAddr,
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// IPv4 header tweaks.
    pub ip: Ipv4Opts,
    /// TCP header fields, for [`FrameSpec::tcp`].
    pub tcp: TcpOpts,
    /// Whether UDP frames (including VXLAN's outer UDP) carry a checksum. Default `true`;
    /// `false` writes zero, "no checksum".
    pub udp_checksum: bool,
}

impl FrameSpec {
    /// A spec with default IPv4 and TCP options and UDP checksums on.
    pub fn new(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self {
            src_mac,
            dst_mac,
            src,
            dst,
            ip: Ipv4Opts::default(),
            tcp: TcpOpts::default(),
            udp_checksum: true,
        }
    }

    /// An IPv4 frame whose payload is `payload`, taken as is (no L4 checksum is computed).
    pub fn ipv4(&self, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
        self.ipv4_with(protocol, payload.len(), |buf| buf.copy_from_slice(payload))
    }

    /// An IPv4 frame with an L4 payload of `len` bytes, written by `emit`, which gets the
    /// payload slice and may compute checksums over it.
    fn ipv4_with(&self, protocol: IpProtocol, len: usize, emit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut frame = vec![0; ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + len];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        EthernetRepr {
            src_addr: self.src_mac,
            dst_addr: self.dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);

        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        Ipv4Repr {
            src_addr: self.src,
            dst_addr: self.dst,
            next_header: protocol,
            payload_len: len,
            hop_limit: self.ip.ttl,
        }
        .emit(&mut ip, &ChecksumCapabilities::ignored());
        ip.set_dscp(self.ip.tos >> 2);
        ip.set_ecn(self.ip.tos & 0x03);
        ip.set_ident(self.ip.ident);
        ip.set_dont_frag(self.ip.dont_fragment);
        ip.set_more_frags(self.ip.more_fragments);
        debug_assert!(
            self.ip.frag_offset % 8 == 0,
            "fragment offsets are in 8-byte units"
        );
        ip.set_frag_offset(self.ip.frag_offset);
        // The L4 payload first: its checksum must see the true length, not an override.
        emit(&mut ip.payload_mut()[..len]);
        if let Some(total_len) = self.ip.total_len {
            ip.set_total_len(total_len);
        }
        ip.fill_checksum();
        frame
    }

    /// An SCTP packet: the common header (ports, a zero verification tag and a zero CRC32c,
    /// which kxdp never checks) and `chunks` taken as is.
    pub fn sctp(&self, src_port: u16, dst_port: u16, chunks: &[u8]) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(12 + chunks.len());
        l4.extend(src_port.to_be_bytes());
        l4.extend(dst_port.to_be_bytes());
        l4.extend([0u8; 8]);
        l4.extend(chunks);
        self.ipv4(IpProtocol::Unknown(132), &l4)
    }

    /// A TCP segment with `flags` (see [`tcp_flags`]) and no options.
    pub fn tcp(&self, src_port: u16, dst_port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = (IpAddress::Ipv4(self.src), IpAddress::Ipv4(self.dst));
        let opts = self.tcp;
        self.ipv4_with(IpProtocol::Tcp, TCP_MIN_HEADER_LEN + payload.len(), |buf| {
            // Built on the view rather than TcpRepr, which cannot express arbitrary flags.
            let mut tcp = TcpPacket::new_unchecked(buf);
            tcp.set_src_port(src_port);
            tcp.set_dst_port(dst_port);
            tcp.set_seq_number(TcpSeqNumber(opts.seq as i32));
            tcp.set_ack_number(TcpSeqNumber(opts.ack as i32));
            tcp.set_header_len(TCP_MIN_HEADER_LEN as u8);
            tcp.clear_flags();
            tcp.set_fin(flags & tcp_flags::FIN != 0);
            tcp.set_syn(flags & tcp_flags::SYN != 0);
            tcp.set_rst(flags & tcp_flags::RST != 0);
            tcp.set_psh(flags & tcp_flags::PSH != 0);
            tcp.set_ack(flags & tcp_flags::ACK != 0);
            tcp.set_urg(flags & tcp_flags::URG != 0);
            tcp.set_ece(flags & tcp_flags::ECE != 0);
            tcp.set_cwr(flags & tcp_flags::CWR != 0);
            tcp.set_window_len(opts.window);
            tcp.set_urgent_at(0);
            tcp.payload_mut().copy_from_slice(payload);
            tcp.fill_checksum(&src, &dst);
        })
    }

    /// A UDP datagram; its checksum is filled unless `udp_checksum` is off.
    pub fn udp(&self, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = (IpAddress::Ipv4(self.src), IpAddress::Ipv4(self.dst));
        let mut caps = ChecksumCapabilities::ignored();
        if self.udp_checksum {
            caps = ChecksumCapabilities::default();
        }
        self.ipv4_with(IpProtocol::Udp, UDP_HEADER_LEN + payload.len(), |buf| {
            UdpRepr { src_port, dst_port }.emit(
                &mut UdpPacket::new_unchecked(buf),
                &src,
                &dst,
                payload.len(),
                |out| out.copy_from_slice(payload),
                &caps,
            );
        })
    }

    /// An ICMP echo request (`request`) or reply.
    pub fn icmp_echo(&self, request: bool, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
        let repr = if request {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
        } else {
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            }
        };
        self.ipv4_with(IpProtocol::Icmp, repr.buffer_len(), |buf| {
            repr.emit(
                &mut Icmpv4Packet::new_unchecked(buf),
                &ChecksumCapabilities::default(),
            );
        })
    }

    /// Any ICMP message: type, code, the 4 bytes after the checksum (for example
    /// `[0, 0, mtu_hi, mtu_lo]` for "fragmentation needed") and the data that follows.
    pub fn icmp(&self, msg: Icmpv4Message, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
        self.ipv4_with(IpProtocol::Icmp, ICMP_HEADER_LEN + data.len(), |buf| {
            buf[4..ICMP_HEADER_LEN].copy_from_slice(&rest);
            buf[ICMP_HEADER_LEN..].copy_from_slice(data);
            let mut icmp = Icmpv4Packet::new_unchecked(buf);
            icmp.set_msg_type(msg);
            icmp.set_msg_code(code);
            icmp.fill_checksum();
        })
    }

    /// A VXLAN frame carrying `inner` (a whole Ethernet frame) on `vni`, from `src_port` (in
    /// Linux, a hash of the inner flow) to `dst_port`. The outer UDP checksum follows
    /// `udp_checksum`; Linux and flannel leave it zero, as [`vxlan`](fn@vxlan) does.
    pub fn vxlan(&self, src_port: u16, dst_port: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
        self.udp(src_port, dst_port, &vxlan_payload(vni, inner))
    }
}

/// A TCP segment with default IPv4 and TCP options (TTL 64, DF, seq 1, ack 0).
#[allow(clippy::too_many_arguments)] // Mirrors the fields of the frame, in order.
pub fn tcp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    FrameSpec::new(src_mac, dst_mac, src, dst).tcp(src_port, dst_port, flags, payload)
}

/// A UDP datagram with a checksum and default IPv4 options.
pub fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    FrameSpec::new(src_mac, dst_mac, src, dst).udp(src_port, dst_port, payload)
}

/// An ICMP echo request (`request`) or reply with default IPv4 options.
#[allow(clippy::too_many_arguments)] // Mirrors the fields of the frame, in order.
pub fn icmp_echo(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    request: bool,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) -> Vec<u8> {
    FrameSpec::new(src_mac, dst_mac, src, dst).icmp_echo(request, ident, seq_no, data)
}

/// A VXLAN frame as Linux's `vxlan` driver sends it: outer UDP checksum zero, DF, TTL 64,
/// identification 0.
#[allow(clippy::too_many_arguments)] // Mirrors the fields of the frame, in order.
pub fn vxlan(
    outer_src_mac: MacAddr,
    outer_dst_mac: MacAddr,
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    FrameSpec {
        udp_checksum: false,
        ..FrameSpec::new(outer_src_mac, outer_dst_mac, outer_src, outer_dst)
    }
    .vxlan(src_port, dst_port, vni, inner)
}

/// An ARP packet for Ethernet and IPv4 in an Ethernet frame (42 bytes, unpadded).
pub fn arp(
    operation: ArpOperation,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut frame = vec![0; ETHERNET_HEADER_LEN + ARP_ETHERNET_IPV4_LEN];
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: sender.0,
        source_protocol_addr: sender.1,
        target_hardware_addr: target.0,
        target_protocol_addr: target.1,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    frame
}

/// A broadcast ARP request from `src_mac`/`sender_ip` asking who has `target_ip`.
pub fn arp_request(src_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp(
        ArpOperation::Request,
        src_mac,
        BROADCAST,
        (src_mac, sender_ip),
        (EthernetAddress([0; 6]), target_ip),
    )
}

/// A unicast ARP reply: `src_mac` has `sender_ip`, told to `dst_mac`/`target_ip`.
pub fn arp_reply(
    src_mac: MacAddr,
    sender_ip: Ipv4Addr,
    dst_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    arp(
        ArpOperation::Reply,
        src_mac,
        dst_mac,
        (src_mac, sender_ip),
        (dst_mac, target_ip),
    )
}

/// Pads `frame` with zeros to the 60-byte Ethernet minimum, as a NIC does on the wire, so
/// tests can check that parsers go by the IPv4 total length rather than the frame length.
pub fn pad_to_min(frame: &mut Vec<u8>) {
    if frame.len() < ETHERNET_MIN_FRAME_LEN {
        frame.resize(ETHERNET_MIN_FRAME_LEN, 0);
    }
}

/// The VXLAN UDP payload for `inner` on `vni`: header and frame. Pass it to
/// [`FrameSpec::udp`] to vary what [`FrameSpec::vxlan`] does not.
pub fn vxlan_payload(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0; VXLAN_HEADER_LEN + inner.len()];
    let mut packet = VxlanPacket::new_unchecked(&mut payload[..]);
    VxlanRepr { vni }.emit(&mut packet);
    packet.payload_mut().copy_from_slice(inner);
    payload
}

#[cfg(test)]
mod tests {
    use etherparse::{
        ArpOperation as EpArpOperation, EtherType, Icmpv4Type, IpNumber, LinkSlice, NetSlice,
        SlicedPacket, TransportSlice,
    };

    use super::*;
    use crate::wire::checksum;
    use crate::wire::vxlan::{self, tests::GOLDEN_FRAME};

    const MAC_A: MacAddr = EthernetAddress([0x02, 0x42, 0x0a, 0xf4, 0x01, 0x05]);
    const MAC_B: MacAddr = EthernetAddress([0x02, 0x42, 0x0a, 0xf4, 0x01, 0x01]);
    const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
    const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

    fn parse(frame: &[u8]) -> SlicedPacket<'_> {
        SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame")
    }

    fn eth_addrs(parsed: &SlicedPacket<'_>) -> ([u8; 6], [u8; 6]) {
        let Some(LinkSlice::Ethernet2(eth)) = &parsed.link else {
            panic!("not Ethernet II")
        };
        (eth.source(), eth.destination())
    }

    /// Checks the IPv4 header (addresses, length, checksum) and returns it.
    fn check_ipv4(parsed: &SlicedPacket<'_>, frame_len: usize) -> etherparse::Ipv4Header {
        let Some(NetSlice::Ipv4(ip)) = &parsed.net else {
            panic!("not IPv4")
        };
        let header = ip.header().to_header();
        assert_eq!(header.calc_header_checksum(), header.header_checksum);
        assert_eq!(
            usize::from(header.total_len),
            frame_len - ETHERNET_HEADER_LEN
        );
        header
    }

    #[test]
    fn tcp_frame() {
        let frame = tcp(
            MAC_A,
            MAC_B,
            POD,
            40000,
            SERVICE,
            80,
            tcp_flags::SYN | tcp_flags::ECE | tcp_flags::CWR,
            b"",
        );
        assert_eq!(frame.len(), 54);
        let parsed = parse(&frame);
        assert_eq!(eth_addrs(&parsed), (MAC_A.0, MAC_B.0));
        let ip = check_ipv4(&parsed, frame.len());
        assert_eq!(
            (ip.source, ip.destination),
            (POD.octets(), SERVICE.octets())
        );
        assert_eq!((ip.time_to_live, ip.dont_fragment), (64, true));
        assert_eq!(ip.protocol, IpNumber::TCP);
        let Some(TransportSlice::Tcp(tcp)) = &parsed.transport else {
            panic!("not TCP")
        };
        assert_eq!((tcp.source_port(), tcp.destination_port()), (40000, 80));
        assert!(tcp.syn() && tcp.ece() && tcp.cwr());
        assert!(!(tcp.ack() || tcp.fin() || tcp.rst() || tcp.psh() || tcp.urg()));
        assert_eq!((tcp.sequence_number(), tcp.acknowledgment_number()), (1, 0));
        assert_eq!(tcp.window_size(), 64240);
        assert_eq!(
            tcp.calc_checksum_ipv4(ip.source, ip.destination).unwrap(),
            tcp.checksum()
        );
    }

    #[test]
    fn tcp_frame_with_payload_and_options() {
        let spec = FrameSpec {
            tcp: TcpOpts {
                seq: 0xdead_beef,
                ack: 0x8000_0001,
                window: 512,
            },
            ..FrameSpec::new(MAC_A, MAC_B, POD, SERVICE)
        };
        let frame = spec.tcp(
            1,
            2,
            tcp_flags::PSH | tcp_flags::ACK,
            b"GET / HTTP/1.1\r\n\r\n",
        );
        let parsed = parse(&frame);
        let ip = check_ipv4(&parsed, frame.len());
        let Some(TransportSlice::Tcp(tcp)) = &parsed.transport else {
            panic!("not TCP")
        };
        assert!(tcp.psh() && tcp.ack());
        assert_eq!(tcp.sequence_number(), 0xdead_beef);
        assert_eq!(tcp.acknowledgment_number(), 0x8000_0001);
        assert_eq!(tcp.window_size(), 512);
        assert_eq!(tcp.payload(), b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            tcp.calc_checksum_ipv4(ip.source, ip.destination).unwrap(),
            tcp.checksum()
        );
    }

    #[test]
    fn udp_frame() {
        let frame = udp(MAC_A, MAC_B, POD, 5353, SERVICE, 53, b"odd");
        let parsed = parse(&frame);
        let ip = check_ipv4(&parsed, frame.len());
        assert_eq!(ip.protocol, IpNumber::UDP);
        let Some(TransportSlice::Udp(udp)) = &parsed.transport else {
            panic!("not UDP")
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (5353, 53));
        assert_eq!(udp.length(), 11);
        assert_eq!(udp.payload(), b"odd");
        assert_ne!(udp.checksum(), 0);
        let expected = udp
            .to_header()
            .calc_checksum_ipv4(&ip, udp.payload())
            .unwrap();
        assert_eq!(expected, udp.checksum());
    }

    #[test]
    fn ipv4_options_are_applied() {
        let spec = FrameSpec {
            ip: Ipv4Opts {
                ttl: 1,
                dont_fragment: false,
                more_fragments: true,
                frag_offset: 0,
                ident: 0x1234,
                tos: 0xb9,
                total_len: None,
            },
            udp_checksum: false,
            ..FrameSpec::new(MAC_A, MAC_B, POD, SERVICE)
        };
        let frame = spec.udp(1, 2, &[0; 40]);
        let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
        assert_eq!(ip.hop_limit(), 1);
        assert!(!ip.dont_frag() && ip.more_frags());
        assert_eq!(ip.ident(), 0x1234);
        assert_eq!((ip.dscp(), ip.ecn()), (0xb9 >> 2, 0x01));
        assert!(ip.verify_checksum());
        assert_eq!(UdpPacket::new_unchecked(ip.payload()).checksum(), 0);
    }

    #[test]
    fn total_len_override_keeps_a_valid_header_checksum() {
        let spec = FrameSpec {
            ip: Ipv4Opts {
                total_len: Some(1000),
                ..Ipv4Opts::default()
            },
            ..FrameSpec::new(MAC_A, MAC_B, POD, SERVICE)
        };
        let frame = spec.udp(1, 2, b"short");
        assert_eq!(
            frame.len(),
            ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + 5
        );
        let ip = Ipv4Packet::new_unchecked(&frame[ETHERNET_HEADER_LEN..]);
        assert_eq!(ip.total_len(), 1000);
        assert!(ip.verify_checksum());
        // The lie is caught by a checked view.
        assert!(Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).is_err());
    }

    #[test]
    fn icmp_echo_frames() {
        for request in [true, false] {
            let frame = icmp_echo(MAC_A, MAC_B, POD, SERVICE, request, 0x0d2a, 7, b"abcdefg");
            let parsed = parse(&frame);
            let ip = check_ipv4(&parsed, frame.len());
            assert_eq!(ip.protocol, IpNumber::ICMP);
            let Some(TransportSlice::Icmpv4(icmp)) = &parsed.transport else {
                panic!("not ICMP")
            };
            let echo = match (request, icmp.icmp_type()) {
                (true, Icmpv4Type::EchoRequest(echo)) | (false, Icmpv4Type::EchoReply(echo)) => {
                    echo
                }
                (_, other) => panic!("wrong ICMP type {other:?}"),
            };
            assert_eq!((echo.id, echo.seq), (0x0d2a, 7));
            assert_eq!(icmp.payload(), b"abcdefg");
            assert_eq!(checksum::checksum(icmp.slice()), 0);
        }
    }

    #[test]
    fn icmp_error_frame() {
        let original = FrameSpec::new(MAC_A, MAC_B, POD, SERVICE).udp(1, 2, b"");
        let quoted = &original[ETHERNET_HEADER_LEN..];
        let frame = FrameSpec::new(MAC_B, MAC_A, Ipv4Addr::new(10, 244, 1, 1), POD).icmp(
            Icmpv4Message::DstUnreachable,
            4,
            [0, 0, 0x05, 0x78],
            quoted,
        );
        let parsed = parse(&frame);
        check_ipv4(&parsed, frame.len());
        let Some(TransportSlice::Icmpv4(icmp)) = &parsed.transport else {
            panic!("not ICMP")
        };
        assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 4));
        assert_eq!(icmp.bytes5to8(), [0, 0, 0x05, 0x78]);
        assert_eq!(checksum::checksum(icmp.slice()), 0);
    }

    #[test]
    fn arp_frames() {
        let request = arp_request(MAC_A, POD, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(request.len(), 42);
        let parsed = parse(&request);
        assert_eq!(eth_addrs(&parsed), (MAC_A.0, [0xff; 6]));
        let Some(LinkSlice::Ethernet2(eth)) = &parsed.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.ether_type(), EtherType::ARP);
        let Some(NetSlice::Arp(arp)) = &parsed.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), EpArpOperation::REQUEST);
        assert_eq!(arp.sender_hw_addr(), MAC_A.0);
        assert_eq!(arp.sender_protocol_addr(), POD.octets());
        assert_eq!(arp.target_hw_addr(), [0; 6]);
        assert_eq!(arp.target_protocol_addr(), [10, 244, 1, 1]);

        let reply = arp_reply(MAC_B, Ipv4Addr::new(10, 244, 1, 1), MAC_A, POD);
        let parsed = parse(&reply);
        assert_eq!(eth_addrs(&parsed), (MAC_B.0, MAC_A.0));
        let Some(NetSlice::Arp(arp)) = &parsed.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), EpArpOperation::REPLY);
        assert_eq!(arp.sender_hw_addr(), MAC_B.0);
        assert_eq!(arp.target_hw_addr(), MAC_A.0);
        assert_eq!(arp.target_protocol_addr(), POD.octets());
    }

    #[test]
    fn padding_does_not_change_the_ip_length() {
        let mut frame = arp_request(MAC_A, POD, SERVICE);
        pad_to_min(&mut frame);
        assert_eq!(frame.len(), ETHERNET_MIN_FRAME_LEN);
        assert!(SlicedPacket::from_ethernet(&frame).is_ok());

        let mut frame = udp(MAC_A, MAC_B, POD, 1, SERVICE, 2, b"");
        pad_to_min(&mut frame);
        let parsed = parse(&frame);
        let Some(NetSlice::Ipv4(ip)) = &parsed.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().total_len(), 28);
        let mut long = vec![0; 100];
        pad_to_min(&mut long);
        assert_eq!(long.len(), 100);
    }

    #[test]
    fn vxlan_frame_reproduces_the_golden_capture() {
        let inner = &GOLDEN_FRAME[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + 8..];
        // Rebuild the inner frame too, from its parts.
        let rebuilt_inner = FrameSpec {
            ip: Ipv4Opts {
                ttl: 63,
                ident: 0xab01,
                ..Ipv4Opts::default()
            },
            ..FrameSpec::new(
                EthernetAddress([0x26, 0x8f, 0x3c, 0x11, 0x22, 0x33]),
                EthernetAddress([0x7a, 0x5e, 0x40, 0x44, 0x55, 0x66]),
                POD,
                Ipv4Addr::new(10, 244, 2, 7),
            )
        }
        .icmp_echo(
            true,
            0x0d2a,
            1,
            &[0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17],
        );
        assert_eq!(rebuilt_inner, inner);

        let frame = FrameSpec {
            ip: Ipv4Opts {
                ident: 0x1c46,
                ..Ipv4Opts::default()
            },
            udp_checksum: false,
            ..FrameSpec::new(
                EthernetAddress([0x52, 0x54, 0x00, 0xaa, 0x00, 0x01]),
                EthernetAddress([0x52, 0x54, 0x00, 0xbb, 0x00, 0x02]),
                Ipv4Addr::new(192, 168, 1, 10),
                Ipv4Addr::new(192, 168, 1, 11),
            )
        }
        .vxlan(
            51105,
            vxlan::DEFAULT_PORT,
            vxlan::DEFAULT_VNI,
            &rebuilt_inner,
        );
        assert_eq!(frame, GOLDEN_FRAME);
    }

    #[test]
    fn vxlan_frame() {
        let inner = icmp_echo(MAC_A, MAC_B, POD, SERVICE, true, 1, 1, b"x");
        let outer_src = Ipv4Addr::new(192, 168, 1, 10);
        let outer_dst = Ipv4Addr::new(192, 168, 1, 11);
        let frame = vxlan(
            MAC_B,
            MAC_A,
            outer_src,
            outer_dst,
            40000,
            8472,
            0x00ab_cdef,
            &inner,
        );
        assert_eq!(frame.len(), inner.len() + crate::wire::VXLAN_OVERHEAD);
        let parsed = parse(&frame);
        let ip = check_ipv4(&parsed, frame.len());
        assert_eq!((ip.time_to_live, ip.dont_fragment), (64, true));
        let Some(TransportSlice::Udp(udp)) = &parsed.transport else {
            panic!("not UDP")
        };
        assert_eq!((udp.destination_port(), udp.checksum()), (8472, 0));
        let packet = VxlanPacket::new_checked(udp.payload()).unwrap();
        assert!(packet.has_valid_flags());
        assert_eq!(packet.vni(), 0x00ab_cdef);
        assert_eq!(packet.payload(), &inner[..]);
        assert_eq!(
            vxlan_payload(0x00ab_cdef, &inner),
            udp.payload(),
            "vxlan_payload builds the same UDP payload"
        );

        // With a checksum, for decap paths that must accept either.
        let spec = FrameSpec::new(MAC_B, MAC_A, outer_src, outer_dst);
        let frame = spec.vxlan(40000, 4789, 1, &inner);
        let parsed = parse(&frame);
        let Some(TransportSlice::Udp(udp)) = &parsed.transport else {
            panic!("not UDP")
        };
        let ip = check_ipv4(&parsed, frame.len());
        let expected = udp
            .to_header()
            .calc_checksum_ipv4(&ip, udp.payload())
            .unwrap();
        assert_eq!(expected, udp.checksum());
    }
}
