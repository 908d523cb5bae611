//! Test support for the offload functions (unit tests only): frame builders whose checksums
//! come from etherparse and smoltcp rather than from this crate, a sink that collects frames
//! into vectors, and a checker that re-parses every output with etherparse and verifies every
//! length and checksum.

use etherparse::{Ipv4HeaderSlice, NetSlice, SlicedPacket, TcpSlice, TransportSlice};

use super::FrameSink;
use crate::wire::build::{vxlan_payload, FrameSpec, Ipv4Opts};
use crate::wire::{tcp_flags, EthernetAddress};

pub(crate) const SRC_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
pub(crate) const DST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
pub(crate) const SRC_IP: [u8; 4] = [10, 244, 1, 5];
pub(crate) const DST_IP: [u8; 4] = [10, 244, 2, 7];
pub(crate) const NODE_A: [u8; 4] = [198, 18, 0, 1];
pub(crate) const NODE_B: [u8; 4] = [198, 18, 0, 2];

/// The fields of a TCP frame a test varies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcpSpec {
    pub(crate) tos: u8,
    pub(crate) ttl: u8,
    pub(crate) id: u16,
    pub(crate) df: bool,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) window: u16,
    pub(crate) urgent: u16,
    /// Option bytes, a multiple of 4 long (at most 40).
    pub(crate) options: Vec<u8>,
}

impl Default for TcpSpec {
    fn default() -> Self {
        TcpSpec {
            tos: 0,
            ttl: 64,
            id: 0x1234,
            df: true,
            src_port: 40000,
            dst_port: 8080,
            seq: 1_000_000,
            ack: 77,
            flags: tcp_flags::ACK,
            window: 502,
            urgent: 0,
            options: Vec::new(),
        }
    }
}

/// Linux's usual options on an established flow: NOP, NOP, timestamps.
pub(crate) fn timestamps(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// An Ethernet/IPv4/TCP frame, checksums filled by etherparse.
pub(crate) fn tcp_frame(spec: &TcpSpec, payload: &[u8]) -> Vec<u8> {
    assert!(spec.options.len() % 4 == 0 && spec.options.len() <= 40);
    let thl = 20 + spec.options.len();
    let ip_len = 20 + thl + payload.len();
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&DST_MAC.0);
    f.extend_from_slice(&SRC_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, spec.tos]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&spec.id.to_be_bytes());
    f.extend_from_slice(&(if spec.df { 0x4000u16 } else { 0 }).to_be_bytes());
    f.extend_from_slice(&[spec.ttl, 6, 0, 0]);
    f.extend_from_slice(&SRC_IP);
    f.extend_from_slice(&DST_IP);
    f.extend_from_slice(&spec.src_port.to_be_bytes());
    f.extend_from_slice(&spec.dst_port.to_be_bytes());
    f.extend_from_slice(&spec.seq.to_be_bytes());
    f.extend_from_slice(&spec.ack.to_be_bytes());
    f.extend_from_slice(&[((thl / 4) as u8) << 4, spec.flags]);
    f.extend_from_slice(&spec.window.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&spec.urgent.to_be_bytes());
    f.extend_from_slice(&spec.options);
    f.extend_from_slice(payload);
    let ip_check = Ipv4HeaderSlice::from_slice(&f[14..34])
        .unwrap()
        .to_header()
        .calc_header_checksum();
    f[24..26].copy_from_slice(&ip_check.to_be_bytes());
    let tcp_check = TcpSlice::from_slice(&f[34..])
        .unwrap()
        .calc_checksum_ipv4(SRC_IP, DST_IP)
        .unwrap();
    f[50..52].copy_from_slice(&tcp_check.to_be_bytes());
    f
}

/// The outer IPv4 options of VXLAN frames built here: kxdp's own encapsulation (DF, ID 0).
pub(crate) fn kxdp_outer() -> Ipv4Opts {
    Ipv4Opts {
        ident: 0,
        dont_fragment: true,
        ..Ipv4Opts::default()
    }
}

/// `inner` (a whole Ethernet frame) in VXLAN between two nodes, built by smoltcp.
pub(crate) fn vxlan_frame(inner: &[u8], outer: Ipv4Opts, udp_checksum: bool) -> Vec<u8> {
    FrameSpec {
        ip: outer,
        udp_checksum,
        ..FrameSpec::new(
            EthernetAddress([0x52, 0x54, 0, 0xbb, 0, 2]),
            EthernetAddress([0x52, 0x54, 0, 0xaa, 0, 1]),
            NODE_A.into(),
            NODE_B.into(),
        )
    }
    .udp(51000, 8472, &vxlan_payload(1, inner))
}

/// A plain frame from the test pod with `ip` options, built by smoltcp: a UDP datagram.
pub(crate) fn udp_frame(ip: Ipv4Opts, payload: &[u8]) -> Vec<u8> {
    FrameSpec {
        ip,
        ..FrameSpec::new(SRC_MAC, DST_MAC, SRC_IP.into(), DST_IP.into())
    }
    .udp(5353, 53, payload)
}

/// Cuts `frame` into pieces at the given lengths (the rest in a last piece).
pub(crate) fn pieces<'a>(frame: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &l in lens {
        let end = (at + l).min(frame.len());
        out.push(&frame[at..end]);
        at = end;
    }
    out.push(&frame[at..]);
    out
}

/// A sink collecting frames, with buffers filled with junk beforehand (so a byte left
/// unwritten shows) and optionally a limit on how many it hands out.
#[derive(Debug, Default)]
pub(crate) struct VecSink {
    pub(crate) frames: Vec<Vec<u8>>,
    pub(crate) pending: Vec<u8>,
    pub(crate) limit: Option<usize>,
    /// Extra bytes on every buffer beyond what was asked for.
    pub(crate) slack: usize,
}

impl FrameSink for VecSink {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.limit.is_some_and(|l| self.frames.len() >= l) {
            return None;
        }
        self.pending = vec![0xa5; len + self.slack];
        Some(&mut self.pending)
    }

    fn commit(&mut self, len: usize) {
        self.frames.push(self.pending[..len].to_vec());
    }
}

/// The facts a test checks in a verified frame's (inner) packet.
#[derive(Debug, Clone)]
pub(crate) struct Checked<'a> {
    /// The (inner) Ethernet frame.
    pub(crate) frame: &'a [u8],
    /// The (inner) IPv4 header.
    pub(crate) ip: etherparse::Ipv4Header,
    /// The outer IPv4 header, for a VXLAN frame.
    pub(crate) outer: Option<etherparse::Ipv4Header>,
    /// The outer UDP checksum, for a VXLAN frame.
    pub(crate) outer_udp_checksum: Option<u16>,
    /// The TCP header, for an unfragmented TCP packet.
    pub(crate) tcp: Option<etherparse::TcpHeader>,
    /// The IPv4 payload (TCP: the TCP payload).
    pub(crate) payload: &'a [u8],
}

/// Parses `frame` with etherparse and checks every length and checksum: IPv4 header checksums,
/// the outer UDP length and checksum (when not zero), the TCP checksum over the pseudo
/// header. Panics with `what` on any failure.
pub(crate) fn verify<'a>(frame: &'a [u8], vxlan: bool, what: &str) -> Checked<'a> {
    let (inner, outer, outer_udp_checksum) = if vxlan {
        let p = SlicedPacket::from_ethernet(frame).unwrap_or_else(|e| panic!("{what}: {e}"));
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("{what}: outer is not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(
            h.calc_header_checksum(),
            h.header_checksum,
            "{what}: outer IPv4 checksum"
        );
        assert_eq!(
            usize::from(h.total_len),
            frame.len() - 14,
            "{what}: outer length"
        );
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("{what}: outer is not UDP")
        };
        assert_eq!(
            usize::from(udp.length()),
            frame.len() - 34,
            "{what}: UDP length"
        );
        if udp.checksum() != 0 {
            let c = udp
                .to_header()
                .calc_checksum_ipv4_raw(h.source, h.destination, udp.payload())
                .unwrap();
            assert_eq!(c, udp.checksum(), "{what}: outer UDP checksum");
        }
        (&udp.payload()[8..], Some(h), Some(udp.checksum()))
    } else {
        (frame, None, None)
    };
    let p = SlicedPacket::from_ethernet(inner).unwrap_or_else(|e| panic!("{what}: {e}"));
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("{what}: not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.calc_header_checksum(),
        h.header_checksum,
        "{what}: IPv4 checksum"
    );
    assert_eq!(
        usize::from(h.total_len),
        inner.len() - 14,
        "{what}: IPv4 length"
    );
    let (tcp, payload) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let c = t.calc_checksum_ipv4(h.source, h.destination).unwrap();
            assert_eq!(c, t.checksum(), "{what}: TCP checksum");
            (Some(t.to_header()), t.payload())
        }
        _ => (None, &inner[34..]),
    };
    Checked {
        frame: inner,
        ip: h,
        outer,
        outer_udp_checksum,
        tcp,
        payload,
    }
}

/// Deterministic payload bytes.
pub(crate) fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    std::iter::repeat_with(|| rng.u8(..)).take(len).collect()
}
