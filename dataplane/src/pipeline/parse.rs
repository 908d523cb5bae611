//! Validation of an IPv4 packet, once, into the facts every later stage needs.
//!
//! After [`parse_ipv4`] succeeds, the stages may rely on: version 4, no options (IHL 5), total
//! length within the frame and at least the header, not a fragment, and a complete L4 header for
//! TCP (with its data offset), UDP and ICMP. Other protocols are accepted with zero ports
//! (SCTP's are read only where NetworkPolicy judges it: [`sctp_dst_port`]).
//!
//! A fragment fails [`parse_ipv4`] with [`DropReason::Ipv4Fragment`], so the common path pays
//! nothing for fragments; [`parse_fragment`] then validates it apart, for the pipeline to route
//! it (`pipeline::fragment`).

use core::net::Ipv4Addr;

use super::Frame;
use crate::flow::{proto, FlowKey};
use crate::reason::DropReason;
use crate::wire::{IPV4_HEADER_LEN, TCP_MIN_HEADER_LEN, UDP_HEADER_LEN};

/// SCTP's common header: ports, verification tag, checksum (RFC 9260).
const SCTP_HEADER_LEN: usize = 12;

/// The destination port of the SCTP packet `meta` describes in `frame`, 0 for a fragment (as
/// [`parse_fragment`] gives every fragment) or when its common header is cut short. Read apart
/// from [`parse_ipv4`] (SCTP is never translated or tracked: only NetworkPolicy asks for its
/// ports, on its cold path), so other traffic pays nothing.
pub(crate) fn sctp_dst_port(frame: &[u8], meta: &Ipv4Meta) -> u16 {
    let fragment = frame
        .get(meta.l3() + 6..meta.l3() + 8)
        .is_none_or(|f| be16(f, 0) & 0x3fff != 0);
    match frame.get(meta.l4()..meta.l3() + meta.ip_len()) {
        Some(l4) if !fragment && l4.len() >= SCTP_HEADER_LEN => be16(l4, 2),
        _ => 0,
    }
}

/// ICMP types the pipeline treats specially.
pub(crate) mod icmp_type {
    pub(crate) const ECHO_REPLY: u8 = 0;
    pub(crate) const DEST_UNREACHABLE: u8 = 3;
    pub(crate) const ECHO_REQUEST: u8 = 8;
    pub(crate) const TIME_EXCEEDED: u8 = 11;
    pub(crate) const PARAMETER_PROBLEM: u8 = 12;

    /// Errors quote the offending packet and so must be translated like its flow.
    #[inline]
    pub(crate) fn is_error(t: u8) -> bool {
        matches!(t, DEST_UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM)
    }
}

/// What the pipeline knows about a validated IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ipv4Meta {
    /// Offset of the IPv4 header in the frame ([`Ipv4Meta::l3`]). This and the length are
    /// kept in 16 bits, as the header lies in the frame's first buffer and an IPv4 length has
    /// 16: the meta travels with every packet between the pipeline's two passes, and a
    /// smaller one is cheaper to move.
    l3: u16,
    /// IPv4 total length ([`Ipv4Meta::ip_len`]).
    ip_len: u16,
    /// The 5-tuple; ICMP echo carries its identifier as documented on [`FlowKey`], other ICMP
    /// has zero ports.
    pub(crate) key: FlowKey,
    /// TCP flags, zero for anything else.
    pub(crate) tcp_flags: u8,
    /// ICMP type, zero for anything else.
    pub(crate) icmp_type: u8,
    /// The DF bit.
    pub(crate) dont_frag: bool,
    /// `key.hash()` once computed, else 0 (then computed when needed).
    pub(crate) hash: u64,
}

const _: () = assert!(core::mem::size_of::<Ipv4Meta>() <= 32);

impl Ipv4Meta {
    /// What [`parse_ipv4`] learned about a packet at `l3` of `ip_len` bytes (the header must
    /// lie within the first 64 KiB of the frame, as it does in any buffer kxdp is given).
    #[inline(always)]
    pub(crate) fn new(
        l3: usize,
        ip_len: u16,
        key: FlowKey,
        tcp_flags: u8,
        icmp_type: u8,
        dont_frag: bool,
    ) -> Ipv4Meta {
        debug_assert!(l3 <= usize::from(u16::MAX));
        Ipv4Meta {
            l3: l3 as u16,
            ip_len,
            key,
            tcp_flags,
            icmp_type,
            dont_frag,
            hash: 0,
        }
    }

    /// Offset of the IPv4 header in the frame.
    #[inline]
    pub(crate) fn l3(&self) -> usize {
        usize::from(self.l3)
    }

    /// IPv4 total length.
    #[inline]
    pub(crate) fn ip_len(&self) -> usize {
        usize::from(self.ip_len)
    }

    /// Offset of the L4 header in the frame.
    #[inline]
    pub(crate) fn l4(&self) -> usize {
        self.l3() + IPV4_HEADER_LEN
    }

    /// The key's flow hash, computed at most once per key.
    #[inline]
    pub(crate) fn hash(&mut self) -> u64 {
        if self.hash == 0 {
            self.hash = self.key.hash();
        }
        self.hash
    }

    /// Whether the packet is an ICMP error.
    #[inline]
    pub(crate) fn is_icmp_error(&self) -> bool {
        self.key.proto == proto::ICMP && icmp_type::is_error(self.icmp_type)
    }
}

/// Whether the packet `meta` describes is TCP, or UDP with a checksum (a zero field: none).
/// Takes the frame rather than its bytes so that only UDP reads them.
#[inline(always)]
pub(crate) fn has_l4_checksum(frame: &Frame<'_>, meta: &Ipv4Meta) -> bool {
    match meta.key.proto {
        proto::TCP => true,
        proto::UDP => frame
            .data()
            .get(meta.l4() + 6..meta.l4() + 8)
            .is_some_and(|c| c != [0, 0]),
        _ => false,
    }
}

/// A big-endian 16-bit field at `at`.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An IPv4 address at `at`.
#[inline(always)]
pub(crate) fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Validate the IPv4 fragment at `l3` in `frame` (one [`parse_ipv4`] refused with
/// [`DropReason::Ipv4Fragment`]) as far as a fragment can be: the header, and the length. Its
/// payload may be the middle of a datagram, so it has no L4 facts: ports, TCP flags and ICMP
/// type are zero, which the later stages read as "nothing to translate, nothing to answer".
/// `tail` is as for [`parse_ipv4`].
#[cold]
#[inline(never)]
pub(crate) fn parse_fragment(frame: &[u8], l3: usize, tail: usize) -> Result<Ipv4Meta, DropReason> {
    let ip = frame.get(l3..).ok_or(DropReason::TruncatedIpv4)?;
    if ip.len() < IPV4_HEADER_LEN {
        return Err(DropReason::TruncatedIpv4);
    }
    let ip_len = usize::from(be16(ip, 2));
    if ip[0] != 0x45 || ip_len < IPV4_HEADER_LEN {
        return Err(DropReason::BadIpv4Header);
    }
    if ip_len > ip.len() + tail {
        return Err(DropReason::TruncatedIpv4);
    }
    Ok(Ipv4Meta::new(
        l3,
        ip_len as u16,
        FlowKey {
            src_ip: addr(ip, 12),
            dst_ip: addr(ip, 16),
            src_port: 0,
            dst_port: 0,
            proto: ip[9],
        },
        0,
        0,
        be16(ip, 6) & 0x4000 != 0,
    ))
}

/// Validate the IPv4 packet at `l3` in `frame`, the first buffer of a frame that continues in
/// `tail` more bytes (0 for a frame in one buffer): its headers must lie in `frame`, its total
/// length within both. Always inlined: it is the first work on every packet, and the benches
/// showed the compiler outlining it once it had more callers.
#[inline(always)]
pub(crate) fn parse_ipv4(frame: &[u8], l3: usize, tail: usize) -> Result<Ipv4Meta, DropReason> {
    let Some(ip) = frame.get(l3..) else {
        return Err(DropReason::TruncatedIpv4);
    };
    if ip.len() < IPV4_HEADER_LEN {
        return Err(DropReason::TruncatedIpv4);
    }
    let ver_ihl = ip[0];
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    let ip_len = usize::from(be16(ip, 2));
    if ver_ihl >> 4 != 4 || ihl < IPV4_HEADER_LEN || ip_len < ihl {
        return Err(DropReason::BadIpv4Header);
    }
    if ip_len > ip.len() + tail {
        return Err(DropReason::TruncatedIpv4);
    }
    if ihl != IPV4_HEADER_LEN {
        return Err(DropReason::Ipv4Options);
    }
    let flags_frag = be16(ip, 6);
    if flags_frag & 0x3fff != 0 {
        // MF set or a non-zero offset.
        return Err(DropReason::Ipv4Fragment);
    }
    let protocol = ip[9];
    // The L4 header must be in this buffer; a payload beyond it is the tail's.
    let l4 = &ip[IPV4_HEADER_LEN..ip_len.min(ip.len())];
    let (src_port, dst_port, tcp_flags, icmp_type) = match protocol {
        proto::TCP => {
            if l4.len() < TCP_MIN_HEADER_LEN {
                return Err(DropReason::TruncatedL4);
            }
            let data_off = usize::from(l4[12] >> 4) * 4;
            if data_off < TCP_MIN_HEADER_LEN || data_off > l4.len() {
                return Err(DropReason::TruncatedL4);
            }
            (be16(l4, 0), be16(l4, 2), l4[13], 0)
        }
        proto::UDP => {
            if l4.len() < UDP_HEADER_LEN {
                return Err(DropReason::TruncatedL4);
            }
            (be16(l4, 0), be16(l4, 2), 0, 0)
        }
        proto::ICMP => {
            if l4.len() < 8 {
                return Err(DropReason::TruncatedL4);
            }
            let ident = be16(l4, 4);
            match l4[0] {
                icmp_type::ECHO_REQUEST => (ident, 0, 0, l4[0]),
                icmp_type::ECHO_REPLY => (0, ident, 0, l4[0]),
                t => (0, 0, 0, t),
            }
        }
        _ => (0, 0, 0, 0),
    };
    Ok(Ipv4Meta::new(
        l3,
        ip_len as u16,
        FlowKey {
            src_ip: addr(ip, 12),
            dst_ip: addr(ip, 16),
            src_port,
            dst_port,
            proto: protocol,
        },
        tcp_flags,
        icmp_type,
        flags_frag & 0x4000 != 0,
    ))
}
