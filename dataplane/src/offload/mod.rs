//! Software TCP segmentation (TSO), IPv4 fragmentation and TCP coalescing (GRO): pure,
//! allocation-free functions over the bytes of frames, for where a frame's size and the MTU of
//! the interface it leaves through disagree.
//!
//! Pods may have an MTU far above the uplink's. Their TCP then sends segments of up to 64 KiB;
//! where such a frame leaves through the VXLAN tunnel or the uplink, [`segment`] cuts it into
//! frames that fit, as Linux's GSO does (`tcp_gso_segment`, `inet_gso_segment`,
//! `skb_udp_tunnel_segment`). Other IPv4 packets too big for the way out are cut by
//! [`fragment`], as `ip_do_fragment` does, or refused when DF is set. In the other direction,
//! [`Coalescer`] merges in-order segments of one TCP flow within a batch, as `tcp_gro_receive`
//! does, so a stream arriving over VXLAN reaches the pod as large frames.
//!
//! # The contract
//!
//! **Input frames.** A frame to cut is a list of byte pieces, `&[&[u8]]`: the buffers of a
//! multi-buffer AF_XDP frame, in order, or one piece for a single-buffer frame. The first piece
//! holds every header, outer and inner (and may hold payload too); later pieces hold payload
//! only. A frame is Ethernet II (no VLAN tag) carrying IPv4 without options, either plain or,
//! with [`Encap::Vxlan`], VXLAN-encapsulated: outer Ethernet, IPv4 (no options), UDP and VXLAN
//! headers, then the inner Ethernet frame (see `pipeline::vxlan`). Bytes after the (outer)
//! IPv4 packet, such as Ethernet padding, are ignored. Input is untrusted: anything this module
//! cannot handle is an [`OffloadError`] that names the layer and field, never a panic.
//!
//! **Checksums.** [`segment`] and [`fragment`] neither verify nor trust input checksums: every
//! output IPv4 header checksum, TCP checksum and (non-zero) outer UDP checksum is computed
//! from the bytes as they are copied ([`copy_and_sum`](crate::wire::checksum::copy_and_sum):
//! each block summed while in L1), as a NIC's TSO does; a pod's TCP over veth leaves its
//! checksum field partial (only the pseudo header) for exactly that reason. [`Coalescer`] is
//! the opposite: it checks each IPv4 header's checksum (as the kernel's GRO does), never reads
//! a payload, and derives the merged TCP checksum from the segments' own checksum fields, so a
//! segment corrupted on the way still fails the receiver's check after the merge (see there).
//!
//! **Output buffers.** Cut frames are written into buffers the caller hands out through a
//! [`FrameSink`] (UMEM chunks, in a worker), one buffer per output frame, headers and payload
//! contiguous. A plan ([`Segments`], [`Fragments`]) says before anything is written how many
//! frames of what size are coming, so the caller can reserve buffers or pick a smaller MTU
//! that fits its chunks. [`Coalescer`] writes nothing into frames: it returns runs whose
//! rewritten header fields go into the first frame in place and whose payload slices chain
//! after it, for a multi-buffer frame built without copying.
//!
//! Nothing here allocates (but [`GsoBuf::new`], once), reads a clock or does I/O; the plans and
//! the coalescer borrow the caller's bytes and buffers only.
//!
//! # Decisions
//!
//! - **IP options** are refused ([`OffloadError::Ipv4Options`]), in the outer and the inner
//!   header: the pipeline drops packets with options before they could get here
//!   (`DropReason::Ipv4Options`), so supporting them would be dead code. **TCP options** are
//!   copied to every segment, as the kernel does; the MSS leaves room for them.
//! - **IP ID**: every segment or fragment after the first of an IPv4 header takes the next ID
//!   (`id + i`, modulo 2^16), inner and outer alike, as `inet_gso_segment` does for locally
//!   generated TSO and for `SKB_GSO_UDP_TUNNEL`, except that a header with DF set and ID 0
//!   keeps ID 0 in every segment: that is the kernel's `SKB_GSO_TCP_FIXEDID` case (which GRO
//!   sets for a stream whose IDs were fixed, and which RFC 6864 allows for atomic datagrams),
//!   and it is what kxdp's own VXLAN encapsulation writes (DF, ID 0). Without the kernel's
//!   `gso_type` the bytes are all there is to go by, and DF with ID 0 is the one unambiguous
//!   sign of a sender that does not count IDs. Fragments of one packet share its ID, as they
//!   must; their outer headers follow the same rule as segments'.
//! - **TCP flags**: CWR only on the first segment, PSH and FIN only on the last, everything
//!   else (URG and the urgent pointer included) copied, as `tcp_gso_segment` does for classic
//!   ECN. (With AccECN the kernel keeps CWR on every segment, as part of the ACE counter; the
//!   bytes do not say whether a flow negotiated it, and classic ECN is the Linux default.)
//! - **Encapsulated non-TCP packets** are fragmented inside the tunnel: the inner packet is cut
//!   and each fragment travels in its own VXLAN frame with fresh outer headers, as Linux does
//!   when a packet is bigger than the tunnel's MTU (`ip_fragment` runs before the vxlan device
//!   encapsulates). The outer packet is never fragmented (kxdp sets DF on it); the receiving
//!   pod reassembles.
//! - **The MTU** is always that of the outermost IPv4 packet: the uplink's, whether the frame
//!   is plain or encapsulated. An encapsulated frame's inner packet gets `mtu - 50` (what the
//!   outer headers and inner Ethernet header take), which is also the next-hop MTU reported
//!   for a DF packet, as the pipeline's own fragmentation-needed answer does.
//!
//! # For the I/O side
//!
//! - An AF_XDP frame carries no `gso_size`: the kernel's GSO cuts at the MSS the sender's TCP
//!   chose (the peer's MSS option, the path MTU), this module at the MTU it is given. Where a
//!   peer advertised less (a host outside the cluster behind a smaller MTU, say), pass its MSS
//!   to [`Segments::limit_mss`]; pods of the cluster advertise their MTU's, which the tunnel
//!   MTU already respects.
//! - Every output frame goes into one buffer of [`Segments::max_frame_len`] (or
//!   [`Fragments::max_frame_len`]) bytes. With chunks smaller than the uplink's MTU plus the
//!   Ethernet header, pass a smaller MTU: smaller segments are still correct.
//! - A merged run is its segments' buffers on transmit; AF_XDP's copy mode takes at most
//!   `MAX_SKB_FRAGS + 1` (18 by default) per frame, so set [`GroLimits::max_buffers`] to what
//!   the transmit path takes.
//! - The errors map to drop reasons where the pipeline counts them; `OutOfBuffers` is the
//!   worker's own shortage, not the packet's fault.

use core::fmt;

pub mod coalesce;
pub mod fragment;
pub mod gso;
mod headers;
pub mod partial;
mod pieces;
pub mod segment;

pub use coalesce::{BatchTooLarge, Coalescer, GroLimits, PayloadSlice, Run, Tail, MAX_OPEN_FLOWS};
pub use fragment::{fragment, FragmentPlan, Fragmented, Fragments};
pub use gso::GsoBuf;
pub use partial::ChecksumRequest;
pub use segment::{segment, Segments};

/// Where the caller's output buffers come from: a worker hands out free UMEM chunks.
///
/// For every output frame the cutter calls [`FrameSink::buffer`] once, writes the frame at the
/// start of the buffer, and calls [`FrameSink::commit`] with its length. The frames are
/// committed in order. A buffer that is not committed (because the call failed after it was
/// handed out) stays the sink's.
pub trait FrameSink {
    /// A free buffer of at least `len` bytes for the next frame, or `None` when there is none;
    /// then the cutting stops with [`OffloadError::OutOfBuffers`].
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]>;

    /// The last buffer handed out now holds a frame of `len` bytes at its start.
    fn commit(&mut self, len: usize);
}

/// How the frame given to [`segment`] or [`fragment`] is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// Ethernet, IPv4, then the L4 packet.
    Plain,
    /// Outer Ethernet, IPv4 and UDP, a VXLAN header, then a whole plain frame (what
    /// `pipeline::vxlan::encap` produces).
    Vxlan,
}

/// Which IPv4 header of a frame an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The headers of a VXLAN frame's outer packet (Ethernet, IPv4, UDP, VXLAN).
    Outer,
    /// The packet itself: that of a plain frame, or the encapsulated one.
    Inner,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Outer => "outer",
            Layer::Inner => "inner",
        })
    }
}

/// Why a frame cannot be segmented or fragmented. Each names the header and field at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The first piece ends before the headers do: it must hold every header.
    #[error(
        "{layer} headers: the first piece ({have} bytes) ends before the headers do ({need} bytes)"
    )]
    HeadersNotInFirstPiece {
        /// The header that runs past the first piece.
        layer: Layer,
        /// Bytes of the first piece.
        have: usize,
        /// Bytes the headers need.
        need: usize,
    },
    /// The Ethernet type is not IPv4 (VLAN tags are not supported either).
    #[error("{layer} Ethernet: ethertype {ethertype:#06x} is not IPv4")]
    NotIpv4 {
        /// Which Ethernet header.
        layer: Layer,
        /// The ethertype found.
        ethertype: u16,
    },
    /// The IPv4 version is not 4, or the total length is shorter than the header.
    #[error("{layer} IPv4: bad version/IHL byte {version_ihl:#04x} or total length {total_len}")]
    BadIpv4Header {
        /// Which IPv4 header.
        layer: Layer,
        /// The version and IHL byte.
        version_ihl: u8,
        /// The total length field.
        total_len: u16,
    },
    /// The IPv4 header has options, which this module does not handle (see the module docs).
    #[error("{layer} IPv4: options are not supported (IHL {ihl})")]
    Ipv4Options {
        /// Which IPv4 header.
        layer: Layer,
        /// The IHL field, in 32-bit words.
        ihl: u8,
    },
    /// The IPv4 total length runs past the end of the frame (or, for the inner packet, of the
    /// outer one).
    #[error("{layer} IPv4: total length {total_len} runs past the {available} bytes there")]
    Truncated {
        /// Which IPv4 header.
        layer: Layer,
        /// The total length field.
        total_len: u16,
        /// Bytes available from the IPv4 header on.
        available: usize,
    },
    /// The outer IPv4 packet of a VXLAN frame is not UDP.
    #[error("outer IPv4: protocol {protocol} is not UDP")]
    OuterNotUdp {
        /// The protocol field.
        protocol: u8,
    },
    /// The outer IPv4 packet of a VXLAN frame is a fragment.
    #[error("outer IPv4: a fragment (flags and offset {flags_offset:#06x}) cannot be re-cut")]
    OuterFragment {
        /// The flags and fragment offset field.
        flags_offset: u16,
    },
    /// The outer UDP length disagrees with the outer IPv4 total length.
    #[error("outer UDP: length {udp_len} disagrees with IPv4's {expected}")]
    BadUdpLength {
        /// The UDP length field.
        udp_len: u16,
        /// What the IPv4 total length implies.
        expected: usize,
    },
    /// [`segment`] was given a packet that is not TCP.
    #[error("inner IPv4: protocol {protocol} is not TCP")]
    NotTcp {
        /// The protocol field.
        protocol: u8,
    },
    /// [`segment`] was given an IPv4 fragment.
    #[error("inner IPv4: a fragment (flags and offset {flags_offset:#06x}) cannot be segmented")]
    TcpFragment {
        /// The flags and fragment offset field.
        flags_offset: u16,
    },
    /// The TCP data offset is below 5 words or runs past the packet.
    #[error("TCP: data offset {data_offset} words does not fit the {available}-byte segment")]
    BadTcpHeader {
        /// The data offset field, in 32-bit words.
        data_offset: u8,
        /// Bytes of the IPv4 payload.
        available: usize,
    },
    /// The pieces after the headers hold fewer bytes than the IPv4 total length says.
    #[error("payload: the pieces hold {have} bytes after the headers, IPv4 says {need}")]
    PayloadTruncated {
        /// Bytes in the pieces after the headers.
        have: usize,
        /// Bytes the IPv4 total length implies.
        need: usize,
    },
    /// The MTU leaves no room for payload after the headers (TCP: a whole byte; fragments:
    /// 8 bytes).
    #[error("mtu {mtu}: too small for {headers} bytes of headers and {min_payload} of payload")]
    MtuTooSmall {
        /// The MTU asked for.
        mtu: usize,
        /// Bytes of headers each frame repeats, counted from the outermost IPv4 header.
        headers: usize,
        /// The least payload a frame must carry.
        min_payload: usize,
    },
    /// A fragment's offset plus its data runs past the largest IPv4 datagram, so the offsets
    /// of its pieces would not fit the 13-bit field.
    #[error("inner IPv4: fragment offset and data end at byte {end}, past 65535")]
    FragmentPastMaximum {
        /// Where the fragment's data ends in the datagram.
        end: usize,
    },
    /// The sink had no buffer for the next frame; `emitted` frames were committed before.
    #[error("out of buffers after {emitted} frames")]
    OutOfBuffers {
        /// Frames committed before the sink ran dry.
        emitted: usize,
    },
    /// The sink handed out a buffer shorter than asked for.
    #[error("the sink's buffer has {got} bytes, the frame needs {need}")]
    BufferTooSmall {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes the buffer has.
        got: usize,
    },
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
