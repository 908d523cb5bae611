//! Validation of the header stack in a frame's first piece, shared by segmentation and
//! fragmentation: what is where, and that the lengths agree.
//!
//! After [`parse`] succeeds: the first piece holds the Ethernet and IPv4 headers (and, for a
//! VXLAN frame, the outer Ethernet, IPv4, UDP and VXLAN headers and the inner Ethernet
//! header); every IPv4 header is version 4 without options; the (inner) IPv4 total length
//! fits the frame (and the outer packet); the outer UDP length matches the outer IPv4 length
//! and the outer packet is not a fragment. The L4 header is the caller's to check.

use core::net::Ipv4Addr;

use super::{Encap, Layer, OffloadError};
use crate::flow::proto;
use crate::wire::checksum::{add, fold, pseudo_header, sum};
use crate::wire::{ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN, VXLAN_OVERHEAD};

/// IPv4 ethertype.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// Offset of the outer IPv4 header of a VXLAN frame, and of the IPv4 header of a plain one.
pub(super) const OUTER_L3: usize = ETHERNET_HEADER_LEN;
/// Offset of the outer UDP header of a VXLAN frame.
pub(super) const OUTER_UDP: usize = OUTER_L3 + IPV4_HEADER_LEN;
/// Offset of the inner IPv4 header of a VXLAN frame.
pub(super) const INNER_L3: usize = VXLAN_OVERHEAD + ETHERNET_HEADER_LEN;

/// The IPv4 flag bits and fragment offset field: DF, MF and the offset mask.
pub(super) const IP_DF: u16 = 0x4000;
pub(super) const IP_MF: u16 = 0x2000;
pub(super) const IP_OFFSET: u16 = 0x1fff;

/// Where the headers are in a validated frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stack {
    /// Whether the frame is VXLAN: its outer IPv4 header is at [`OUTER_L3`], its UDP header at
    /// [`OUTER_UDP`].
    pub(super) encap: Encap,
    /// Offset of the (inner) IPv4 header.
    pub(super) l3: usize,
    /// Its total length.
    pub(super) ip_len: usize,
    /// Its protocol.
    pub(super) protocol: u8,
    /// Its flags and fragment offset field.
    pub(super) flags_offset: u16,
    /// Total bytes of the frame's pieces.
    pub(super) frame_len: usize,
}

impl Stack {
    /// Offset of the (inner) L4 header.
    #[inline]
    pub(super) fn l4(&self) -> usize {
        self.l3 + IPV4_HEADER_LEN
    }

    /// Bytes from the outermost IPv4 header to the inner one's L4 header: what every frame cut
    /// from this one repeats, counted against the MTU.
    #[inline]
    pub(super) fn ip_headers(&self) -> usize {
        self.l4() - OUTER_L3
    }
}

/// A big-endian 16-bit field.
#[inline]
pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An IPv4 address at `at`.
#[inline]
pub(super) fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Writes a big-endian 16-bit field.
#[inline]
pub(super) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Checks that the first piece reaches `need` bytes.
#[inline]
pub(super) fn reach(first: &[u8], need: usize, layer: Layer) -> Result<(), OffloadError> {
    if first.len() < need {
        return Err(OffloadError::HeadersNotInFirstPiece {
            layer,
            have: first.len(),
            need,
        });
    }
    Ok(())
}

/// Checks the Ethernet type at `eth`.
#[inline]
fn ethernet(first: &[u8], eth: usize, layer: Layer) -> Result<(), OffloadError> {
    let ethertype = be16(first, eth + 12);
    if ethertype != ETHERTYPE_IPV4 {
        return Err(OffloadError::NotIpv4 { layer, ethertype });
    }
    Ok(())
}

/// Checks the IPv4 header at `l3` (which the first piece holds) and returns its total length,
/// which must fit the `available` bytes from `l3` on.
#[inline]
fn ipv4(first: &[u8], l3: usize, available: usize, layer: Layer) -> Result<usize, OffloadError> {
    let version_ihl = first[l3];
    let total_len = be16(first, l3 + 2);
    let ihl = version_ihl & 0x0f;
    if version_ihl >> 4 != 4 || ihl < 5 || usize::from(total_len) < IPV4_HEADER_LEN {
        return Err(OffloadError::BadIpv4Header {
            layer,
            version_ihl,
            total_len,
        });
    }
    if ihl != 5 {
        return Err(OffloadError::Ipv4Options { layer, ihl });
    }
    if usize::from(total_len) > available {
        return Err(OffloadError::Truncated {
            layer,
            total_len,
            available,
        });
    }
    Ok(usize::from(total_len))
}

/// Validates the headers of `frame` laid out as `encap`.
pub(super) fn parse(frame: &[&[u8]], encap: Encap) -> Result<Stack, OffloadError> {
    let first: &[u8] = frame.first().copied().unwrap_or_default();
    let frame_len: usize = frame.iter().map(|p| p.len()).sum();
    let (l3, available, layer) = match encap {
        Encap::Plain => {
            reach(first, OUTER_L3 + IPV4_HEADER_LEN, Layer::Inner)?;
            (OUTER_L3, frame_len - OUTER_L3, Layer::Inner)
        }
        Encap::Vxlan => {
            reach(first, OUTER_UDP, Layer::Outer)?;
            ethernet(first, 0, Layer::Outer)?;
            let outer_len = ipv4(first, OUTER_L3, frame_len - OUTER_L3, Layer::Outer)?;
            let protocol = first[OUTER_L3 + 9];
            if protocol != proto::UDP {
                return Err(OffloadError::OuterNotUdp { protocol });
            }
            let flags_offset = be16(first, OUTER_L3 + 6);
            if flags_offset & (IP_MF | IP_OFFSET) != 0 {
                return Err(OffloadError::OuterFragment { flags_offset });
            }
            reach(first, INNER_L3, Layer::Outer)?;
            let udp_len = be16(first, OUTER_UDP + 4);
            let expected = outer_len - IPV4_HEADER_LEN;
            if usize::from(udp_len) != expected || expected < INNER_L3 - OUTER_UDP {
                return Err(OffloadError::BadUdpLength { udp_len, expected });
            }
            ethernet(first, VXLAN_OVERHEAD, Layer::Inner)?;
            // An inner packet within 50 bytes of 64 KiB has outer lengths that 16 bits cannot
            // hold: encapsulation saturates them (IPv4 65535, UDP 65515), and the inner
            // packet's own length says how long the frame is.
            let available = if outer_len == usize::from(u16::MAX) {
                frame_len - INNER_L3
            } else {
                OUTER_L3 + outer_len - INNER_L3
            };
            (INNER_L3, available, Layer::Inner)
        }
    };
    reach(first, l3 + IPV4_HEADER_LEN, layer)?;
    ethernet(first, l3 - ETHERNET_HEADER_LEN, layer)?;
    let ip_len = ipv4(first, l3, available, layer)?;
    Ok(Stack {
        encap,
        l3,
        ip_len,
        protocol: first[l3 + 9],
        flags_offset: be16(first, l3 + 6),
        frame_len,
    })
}

/// The IPv4 header checksum of the 20-byte header `h`, whose checksum field is ignored.
#[inline]
pub(super) fn ipv4_checksum(h: &[u8]) -> u16 {
    // The words before and after the checksum field.
    fold(add(sum(&h[..10], 0), sum(&h[12..IPV4_HEADER_LEN], 0)))
}

/// An IPv4 header copied into many frames with a new total length, ID and flags: the sum of
/// its other words is taken once, so each copy's checksum costs three additions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ipv4Template {
    /// Offset of the header in a frame.
    at: usize,
    /// Sum of the header's words but the length, ID, flags and checksum.
    rest_sum: u32,
    /// The original's ID.
    pub(super) id: u16,
    /// The original's flags and fragment offset.
    pub(super) flags_offset: u16,
}

impl Ipv4Template {
    /// The IPv4 header at `at` in `first` (which holds it).
    pub(super) fn new(first: &[u8], at: usize) -> Self {
        let h = &first[at..at + IPV4_HEADER_LEN];
        Ipv4Template {
            at,
            rest_sum: sum(&h[8..10], sum(&h[12..IPV4_HEADER_LEN], sum(&h[..2], 0))),
            id: be16(h, 4),
            flags_offset: be16(h, 6),
        }
    }

    /// The ID of the `i`-th header cut from the original (see the module docs of
    /// [`crate::offload`]: DF with ID 0 stays fixed, anything else counts up).
    #[inline]
    pub(super) fn id_for(&self, i: usize) -> u16 {
        if self.id == 0 && self.flags_offset & IP_DF != 0 {
            0
        } else {
            self.id.wrapping_add(i as u16)
        }
    }

    /// Writes the total length, ID, flags and offset, and the checksum, into the copy of the
    /// header in `out`.
    #[inline]
    pub(super) fn write(&self, out: &mut [u8], total_len: u16, id: u16, flags_offset: u16) {
        let at = self.at;
        put16(out, at + 2, total_len);
        put16(out, at + 4, id);
        put16(out, at + 6, flags_offset);
        let s = self.rest_sum + u32::from(total_len) + u32::from(id) + u32::from(flags_offset);
        put16(out, at + 10, fold(s));
    }
}

/// Rewrites the outer IPv4 and UDP headers of the `i`-th VXLAN frame cut from one whose outer
/// IPv4 header is `outer` (and whose headers `out` holds a copy of), for an inner packet of
/// `inner_ip_len` bytes: lengths, ID, IPv4 checksum. The UDP checksum is zeroed; the caller
/// fills it when the original had one ([`outer_udp_checksum`]).
#[inline]
pub(super) fn rewrite_outer(out: &mut [u8], outer: &Ipv4Template, i: usize, inner_ip_len: usize) {
    let outer_len = (INNER_L3 - OUTER_L3 + inner_ip_len) as u16;
    outer.write(out, outer_len, outer.id_for(i), outer.flags_offset);
    put16(out, OUTER_UDP + 4, outer_len - IPV4_HEADER_LEN as u16);
    put16(out, OUTER_UDP + 6, 0);
}

/// Whether the VXLAN frame's first piece carries an outer UDP checksum.
#[inline]
pub(super) fn outer_udp_checksum(first: &[u8]) -> bool {
    be16(first, OUTER_UDP + 6) != 0
}

/// Fills the outer UDP checksum of the VXLAN frame `out` (complete but for that field, which
/// is zero), given `rest_sum`: the sum of the bytes from `from` (an even offset past the UDP
/// header) to the end, which the caller has from its copy.
#[inline]
pub(super) fn fill_udp_checksum(out: &mut [u8], from: usize, rest_sum: u32) {
    let udp_len = be16(out, OUTER_UDP + 4);
    let pseudo = pseudo_header(
        addr(out, OUTER_L3 + 12),
        addr(out, OUTER_L3 + 16),
        proto::UDP,
        udp_len,
    );
    let s = add(sum(&out[OUTER_UDP..from], pseudo), rest_sum);
    // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
    let check = match fold(s) {
        0 => 0xffff,
        c => c,
    };
    put16(out, OUTER_UDP + 6, check);
}

const _: () = assert!(INNER_L3 == 64);
const _: () = assert!(OUTER_UDP + UDP_HEADER_LEN + crate::wire::VXLAN_HEADER_LEN == 50);
