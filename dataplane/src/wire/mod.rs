//! Wire formats: typed, zero-copy views over the bytes of a frame.
//!
//! # The contract
//!
//! Every byte that arrives from a NIC is untrusted. A view over it is created with
//! `new_checked` (smoltcp's [`EthernetFrame`], [`Ipv4Packet`], [`UdpPacket`], [`TcpPacket`],
//! [`Icmpv4Packet`], [`ArpPacket`], and our [`VxlanPacket`]), which checks that the buffer holds
//! the whole header and that the header's own length fields stay within it. The pipeline
//! validates a frame once, at parse time, and from then on uses plain accessors and in-place
//! rewrites that index without re-validating. Checksums are patched incrementally
//! ([`checksum`]), never recomputed on the packet path.
//!
//! Views borrow the caller's buffer and never allocate. [`build`] is the exception: it makes
//! whole frames as `Vec<u8>` for tests, fixtures and benchmarks, and is never called on the
//! packet path.
//!
//! # Layout
//!
//! - smoltcp's `wire` views and reprs, re-exported below under the names the pipeline uses;
//! - [`vxlan`]: the VXLAN header view (RFC 7348), which smoltcp lacks;
//! - [`checksum`]: the Internet checksum and its RFC 1624 incremental update;
//! - `nat` (tests only): reference rewrites of an IPv4 packet through smoltcp's views, the
//!   oracle the pipeline's fixed-offset rewrites (`pipeline/rewrite.rs`) are checked against
//!   byte for byte; it is compiled for the unit tests alone and never ships;
//! - [`build`]: frame builders for tests.

pub mod build;
pub mod checksum;
#[cfg(test)]
pub(crate) mod nat;
pub mod vxlan;

pub use smoltcp::phy::ChecksumCapabilities;
/// The error every `new_checked` and `Repr::parse` returns: the bytes are not a valid header.
pub use smoltcp::wire::Error as WireError;
pub use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame,
    EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr,
    Icmpv4TimeExceeded, IpAddress, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};
pub use vxlan::{VxlanPacket, VxlanRepr};

/// An Ethernet MAC address.
pub type MacAddr = EthernetAddress;

/// Length of an Ethernet II header (no VLAN tag).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Length of a TCP header without options.
pub const TCP_MIN_HEADER_LEN: usize = 20;
/// Length of an ICMPv4 header (type, code, checksum and the 4-byte rest of header).
pub const ICMP_HEADER_LEN: usize = 8;
/// Length of an ARP packet for Ethernet and IPv4.
pub const ARP_ETHERNET_IPV4_LEN: usize = 28;
/// Length of a VXLAN header.
pub const VXLAN_HEADER_LEN: usize = vxlan::HEADER_LEN;
/// What VXLAN encapsulation adds to an inner frame: outer Ethernet, IPv4 (no options), UDP and
/// VXLAN headers. An inner frame of `mtu + 14` bytes needs an underlay MTU of `mtu + 50`.
pub const VXLAN_OVERHEAD: usize =
    ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
/// The shortest Ethernet frame on the wire, without the FCS; shorter frames are padded.
pub const ETHERNET_MIN_FRAME_LEN: usize = 60;

// Our constants must agree with smoltcp's views.
const _: () = assert!(ETHERNET_HEADER_LEN == smoltcp::wire::ETHERNET_HEADER_LEN);
const _: () = assert!(IPV4_HEADER_LEN == smoltcp::wire::IPV4_HEADER_LEN);
const _: () = assert!(UDP_HEADER_LEN == smoltcp::wire::UDP_HEADER_LEN);
const _: () = assert!(TCP_MIN_HEADER_LEN == smoltcp::wire::TCP_HEADER_LEN);
const _: () = assert!(VXLAN_OVERHEAD == 50);

/// TCP flag bits, as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}
