//! VXLAN header (RFC 7348), as a zero-copy view in smoltcp's style.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The header follows an outer UDP header (destination port [`DEFAULT_PORT`] for flannel and
//! Linux, [`IANA_PORT`] elsewhere) and precedes the inner Ethernet frame.
//!
//! [`VxlanPacket::new_checked`] checks the length only. Whether the header is one kxdp accepts
//! is a separate question, answered by [`VxlanPacket::has_valid_flags`], which follows the
//! Linux receive path rather than the RFC's "ignore on receipt" (see there).

use smoltcp::wire::{Error, Result};

/// Byte ranges of the VXLAN header fields.
pub mod field {
    /// A range of bytes within the header.
    pub type Field = core::ops::Range<usize>;
    /// The bytes from an offset to the end of the packet.
    pub type Rest = core::ops::RangeFrom<usize>;

    /// The flags byte; only [`super::FLAG_I`] is defined.
    pub const FLAGS: usize = 0;
    /// 24 reserved bits after the flags.
    pub const RESERVED_1: Field = 1..4;
    /// The 24-bit VXLAN Network Identifier.
    pub const VNI: Field = 4..7;
    /// 8 reserved bits after the VNI.
    pub const RESERVED_2: usize = 7;
    /// The encapsulated Ethernet frame.
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// The I flag: the VNI field is valid. RFC 7348 requires it set.
pub const FLAG_I: u8 = 0x08;

/// The UDP port Linux's `vxlan` driver uses by default and flannel's VXLAN backend uses.
pub const DEFAULT_PORT: u16 = 8472;

/// The IANA-assigned VXLAN UDP port (RFC 7348 section 5).
pub const IANA_PORT: u16 = 4789;

/// The VNI flannel's VXLAN backend uses by default (`flannel.1`).
pub const DEFAULT_VNI: u32 = 1;

/// The largest VNI: the field is 24 bits wide.
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A read/write view over a VXLAN header and the frame it carries.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer without checking its length; accessors panic if it is too short.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole VXLAN header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Returns `Err` if the buffer is shorter than the VXLAN header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// Consumes the view, returning the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN Network Identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let data = self.buffer.as_ref();
        u32::from_be_bytes([0, data[4], data[5], data[6]])
    }

    /// Whether the header is exactly what a conforming sender emits: the I flag set, and
    /// every other flag bit and both reserved fields zero.
    ///
    /// RFC 7348 says receivers ignore the reserved bits, but Linux's `vxlan_rcv` drops a
    /// packet with any unknown flag or reserved bit set (unless an extension such as GBP
    /// claims it) "for robustness and security", and flannel's peers are Linux. kxdp follows
    /// Linux, so a packet it decapsulates is one the kernel would have decapsulated too.
    #[inline]
    pub fn has_valid_flags(&self) -> bool {
        let data = self.buffer.as_ref();
        data[..4] == [FLAG_I, 0, 0, 0] && data[field::RESERVED_2] == 0
    }

    /// The reserved bits, for diagnostics: the 24 after the flags and the 8 after the VNI.
    #[inline]
    pub fn reserved(&self) -> (u32, u8) {
        let data = self.buffer.as_ref();
        (
            u32::from_be_bytes([0, data[1], data[2], data[3]]),
            data[field::RESERVED_2],
        )
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VxlanPacket<&'a T> {
    /// The encapsulated Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the VNI.
    ///
    /// # Panics
    /// In debug builds, if `value` does not fit in 24 bits (release builds keep the low 24).
    #[inline]
    pub fn set_vni(&mut self, value: u32) {
        debug_assert!(value <= MAX_VNI, "VNI {value:#x} wider than 24 bits");
        let bytes = value.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&bytes[1..]);
    }

    /// Zeroes both reserved fields.
    #[inline]
    pub fn clear_reserved(&mut self) {
        let data = self.buffer.as_mut();
        data[field::RESERVED_1].fill(0);
        data[field::RESERVED_2] = 0;
    }

    /// The encapsulated Ethernet frame, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for VxlanPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of a valid VXLAN header: just the VNI.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct VxlanRepr {
    /// The VXLAN Network Identifier (24 bits).
    pub vni: u32,
}

impl VxlanRepr {
    /// Parses a header, rejecting any that [`VxlanPacket::has_valid_flags`] rejects.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &VxlanPacket<&T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.has_valid_flags() {
            return Err(Error);
        }
        Ok(Self { vni: packet.vni() })
    }

    /// The length of the header this emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the whole header: the I flag, the VNI, and zero reserved fields.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut VxlanPacket<T>) {
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;
    use crate::wire::checksum;

    /// A flannel VXLAN frame as it appears on the node's uplink: node 192.168.1.10 carries an
    /// echo request from pod 10.244.1.5 to pod 10.244.2.7 on node 192.168.1.11. Linux set DF
    /// on the outer header (inherited from the inner one), chose the UDP source port from the
    /// inner flow hash and left the outer UDP checksum zero (flannel's default).
    #[rustfmt::skip]
    pub(crate) static GOLDEN_FRAME: [u8; 100] = [
        // Outer Ethernet: node MACs, IPv4.
        0x52, 0x54, 0x00, 0xbb, 0x00, 0x02, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01, 0x08, 0x00,
        // Outer IPv4: len 86, id 0x1c46, DF, TTL 64, UDP, 192.168.1.10 -> 192.168.1.11.
        0x45, 0x00, 0x00, 0x56, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x9a, 0xeb,
        0xc0, 0xa8, 0x01, 0x0a, 0xc0, 0xa8, 0x01, 0x0b,
        // Outer UDP: 51105 -> 8472, len 66, no checksum.
        0xc7, 0xa1, 0x21, 0x18, 0x00, 0x42, 0x00, 0x00,
        // VXLAN: I flag, VNI 1.
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
        // Inner Ethernet: flannel.1 VTEP MACs, IPv4.
        0x7a, 0x5e, 0x40, 0x44, 0x55, 0x66, 0x26, 0x8f, 0x3c, 0x11, 0x22, 0x33, 0x08, 0x00,
        // Inner IPv4: len 36, id 0xab01, DF, TTL 63, ICMP, 10.244.1.5 -> 10.244.2.7.
        0x45, 0x00, 0x00, 0x24, 0xab, 0x01, 0x40, 0x00, 0x3f, 0x01, 0x77, 0xe4,
        0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x02, 0x07,
        // ICMP echo request: id 0x0d2a, seq 1, 8 bytes of data.
        0x08, 0x00, 0x9e, 0x84, 0x0d, 0x2a, 0x00, 0x01,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    /// Offset of the VXLAN header in [`GOLDEN_FRAME`].
    const GOLDEN_VXLAN_AT: usize = 14 + 20 + 8;

    #[test]
    fn golden_outer_headers_parse_with_etherparse() {
        let parsed = SlicedPacket::from_ethernet(&GOLDEN_FRAME).expect("outer parses");
        let Some(NetSlice::Ipv4(ip)) = parsed.net else {
            panic!("outer is not IPv4: {:?}", parsed.net)
        };
        let header = ip.header();
        assert_eq!(header.source_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(header.destination_addr(), Ipv4Addr::new(192, 168, 1, 11));
        assert!(header.dont_fragment());
        assert_eq!(header.ttl(), 64);
        assert_eq!(
            header.to_header().calc_header_checksum(),
            header.header_checksum()
        );
        let Some(TransportSlice::Udp(udp)) = parsed.transport else {
            panic!("outer is not UDP")
        };
        assert_eq!(udp.destination_port(), DEFAULT_PORT);
        assert_eq!(udp.checksum(), 0);
        assert_eq!(udp.payload(), &GOLDEN_FRAME[GOLDEN_VXLAN_AT..]);
    }

    #[test]
    fn golden_vxlan_header() {
        let packet = VxlanPacket::new_checked(&GOLDEN_FRAME[GOLDEN_VXLAN_AT..]).unwrap();
        assert_eq!(packet.flags(), FLAG_I);
        assert!(packet.has_valid_flags());
        assert_eq!(packet.vni(), DEFAULT_VNI);
        assert_eq!(packet.reserved(), (0, 0));
        assert_eq!(VxlanRepr::parse(&packet), Ok(VxlanRepr { vni: 1 }));

        let inner = SlicedPacket::from_ethernet(packet.payload()).expect("inner parses");
        let Some(NetSlice::Ipv4(ip)) = inner.net else {
            panic!("inner is not IPv4")
        };
        assert_eq!(ip.header().source_addr(), Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(10, 244, 2, 7));
        assert_eq!(checksum::checksum(ip.header().slice()), 0);
        let Some(TransportSlice::Icmpv4(icmp)) = inner.transport else {
            panic!("inner is not ICMP")
        };
        assert_eq!(checksum::checksum(icmp.slice()), 0);
    }

    #[test]
    fn emit_reproduces_golden_header() {
        let mut bytes = [0xffu8; HEADER_LEN];
        let mut packet = VxlanPacket::new_unchecked(&mut bytes[..]);
        VxlanRepr { vni: DEFAULT_VNI }.emit(&mut packet);
        assert_eq!(bytes, GOLDEN_FRAME[GOLDEN_VXLAN_AT..][..HEADER_LEN]);
    }

    #[test]
    fn setters_round_trip() {
        let mut bytes = [0u8; HEADER_LEN + 2];
        let mut packet = VxlanPacket::new_checked(&mut bytes[..]).unwrap();
        packet.set_flags(FLAG_I);
        packet.set_vni(MAX_VNI);
        packet.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(packet.vni(), MAX_VNI);
        assert!(packet.has_valid_flags());
        assert_eq!(bytes, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0, 0xaa, 0xbb]);
    }

    #[test]
    fn too_short_is_an_error() {
        assert_eq!(VxlanPacket::new_checked(&[0x08u8; 7][..]), Err(Error));
        assert!(VxlanPacket::new_checked(&[0u8; 8][..]).is_ok());
        assert!(VxlanPacket::new_checked(&[0u8; 8][..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn flags_other_than_i_alone_are_rejected() {
        let good = [0x08, 0, 0, 0, 0, 0, 7, 0];
        assert!(VxlanPacket::new_unchecked(&good[..]).has_valid_flags());
        for (at, value) in [
            (0, 0x00), // I missing
            (0, 0x88), // GBP's G bit
            (0, 0x0c), // VXLAN-GPE's P bit
            (1, 0x01), // first reserved field
            (3, 0x80),
            (7, 0x01), // reserved byte after the VNI
        ] {
            let mut bad = good;
            bad[at] = value;
            let packet = VxlanPacket::new_unchecked(&bad[..]);
            assert!(!packet.has_valid_flags(), "byte {at} = {value:#x}");
            assert_eq!(VxlanRepr::parse(&packet), Err(Error));
        }
    }
}
