//! Segments cut for the tunnel, laid out as UDP GSO packets for the kernel to send.
//!
//! On a veth underlay each frame sent through a copy-mode AF_XDP socket costs the kernel an
//! skb and a copy on the sending core, and every hop after it (the switch's bridge) handles
//! it alone. The TCP segments a worker cuts from a pod's large frame for the VXLAN tunnel are
//! all alike but for their payload, so they can leave as what Linux calls a UDP GSO packet
//! (`SKB_GSO_UDP_L4`): one skb whose UDP payload is the segments' VXLAN packets back to back,
//! `gso_size` bytes each but the last, handed over with a virtio-net header (through a packet
//! socket with `PACKET_VNET_HDR`, as a virtual NIC hands the kernel a TSO frame). The kernel
//! cuts it into UDP datagrams where a device cannot carry it whole (on the NIC, if it
//! segments UDP; in software otherwise), repeating the outer Ethernet, IPv4 and UDP headers
//! with their lengths (`__udp_gso_segment`, `inet_gso_segment`). What arrives is what
//! [`segment`](super::segment) alone would have made, but for two outer fields the kernel
//! writes: the IPv4 ID (the packet's, 0, counted up per datagram: harmless with DF set) and
//! the UDP checksum (computed per datagram where kxdp's template has zero; both are valid
//! VXLAN).
//!
//! [`GsoBuf`] is the [`FrameSink`] the cutting writes into: each segment after a packet's
//! first is written over the tail of the one before (its outer headers, which the kernel
//! repeats, are dropped and the 42 bytes they covered put back), so a packet's payload is
//! contiguous without a second copy. [`GsoBuf::packet`] completes a packet's headers for
//! sending. Its memory is allocated once, at creation.

use super::FrameSink;
use crate::wire::checksum::{fold, pseudo_header, sum};

/// Outer Ethernet, IPv4 (no options) and UDP: what the kernel repeats in every datagram.
pub const OUTER_HEADERS: usize = 14 + 20 + 8;

/// The virtio-net header before each packet (`struct virtio_net_hdr`, in the host's byte
/// order, as a packet socket reads it).
pub const VNET_HDR: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the kernel completes the checksum at `csum_start`.
pub const NEEDS_CSUM: u8 = 1;

/// `VIRTIO_NET_HDR_GSO_UDP_L4` (Linux 6.2).
pub const GSO_UDP_L4: u8 = 5;

/// Datagrams per packet, at most: the kernel's `UDP_MAX_SEGMENTS` in older kernels.
pub const MAX_SEGMENTS: usize = 64;

/// One packet of a [`GsoBuf`]: `[start..end]` of its bytes, virtio-net header first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packet {
    start: usize,
    end: usize,
    /// UDP payload bytes of each datagram but the last (`gso_size`).
    segment: usize,
    /// Datagrams.
    count: usize,
    /// The last one written was shorter than `segment`: nothing may follow it.
    short: bool,
}

/// Where the sink's open buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    /// A new packet's first segment, at this offset (after its virtio-net header).
    First(usize),
    /// A segment appended at this offset, over the 42 bytes saved in `saved`.
    Appended(usize),
}

/// The packets of a batch's cut frames, ready to send.
#[derive(Debug)]
pub struct GsoBuf {
    buf: Box<[u8]>,
    /// Never grows past the capacity it was made with.
    packets: Vec<Packet>,
    open: Open,
    saved: [u8; OUTER_HEADERS],
}

impl GsoBuf {
    /// A buffer of `bytes` bytes holding at most `packets` packets. A frame that does not fit
    /// is refused ([`FrameSink::buffer`] gives `None`).
    pub fn new(bytes: usize, packets: usize) -> Self {
        GsoBuf {
            buf: vec![0; bytes].into_boxed_slice(),
            packets: Vec::with_capacity(packets),
            open: Open::None,
            saved: [0; OUTER_HEADERS],
        }
    }

    /// Forget every packet (a new batch).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.open = Open::None;
    }

    /// How many packets the buffer holds.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Packet `k`, virtio-net header first, its headers completed; and how many datagrams
    /// it carries.
    pub fn packet(&mut self, k: usize) -> (&[u8], usize) {
        let p = self.packets[k];
        let bytes = &mut self.buf[p.start..p.end];
        finish(bytes, p.segment, p.count);
        (&self.buf[p.start..p.end], p.count)
    }

    /// Whether the open packet can take a segment of `len` bytes (outer headers included).
    fn fits(&self, len: usize) -> bool {
        let Some(p) = self.packets.last() else {
            return false;
        };
        let payload = len.saturating_sub(OUTER_HEADERS);
        let udp_len = 8 + (p.end - p.start - VNET_HDR - OUTER_HEADERS) + payload;
        !p.short
            && p.count < MAX_SEGMENTS
            && payload <= p.segment
            && 20 + udp_len <= usize::from(u16::MAX)
            && p.end + payload <= self.buf.len()
    }

    /// Drop the packets from the `n`th on (a frame whose cutting failed part way).
    pub fn truncate(&mut self, n: usize) {
        self.packets.truncate(n);
        self.open = Open::None;
    }

    /// Stop adding to the last packet: the next segment starts a new one (each frame's
    /// segments start their own packets).
    pub fn seal(&mut self) {
        if let Some(p) = self.packets.last_mut() {
            p.short = true;
        }
    }
}

impl FrameSink for GsoBuf {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        if len <= OUTER_HEADERS {
            return None;
        }
        if self.fits(len) {
            let at = self.packets.last()?.end - OUTER_HEADERS;
            self.saved
                .copy_from_slice(&self.buf[at..at + OUTER_HEADERS]);
            self.open = Open::Appended(at);
            return Some(&mut self.buf[at..at + len]);
        }
        if self.packets.len() == self.packets.capacity() {
            return None;
        }
        let start = self.packets.last().map_or(0, |p| p.end);
        let at = start + VNET_HDR;
        if at + len > self.buf.len() {
            return None;
        }
        self.open = Open::First(at);
        Some(&mut self.buf[at..at + len])
    }

    fn commit(&mut self, len: usize) {
        let payload = len - OUTER_HEADERS;
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::First(at) => self.packets.push(Packet {
                start: at - VNET_HDR,
                end: at + len,
                segment: payload,
                count: 1,
                short: false,
            }),
            Open::Appended(at) => {
                self.buf[at..at + OUTER_HEADERS].copy_from_slice(&self.saved);
                if let Some(p) = self.packets.last_mut() {
                    p.end += payload;
                    p.count += 1;
                    p.short = payload < p.segment;
                }
            }
        }
    }
}

/// Complete a packet's virtio-net header and outer headers: the lengths of the whole, a
/// fresh IPv4 checksum, and for several datagrams the UDP checksum's pseudo-header part, for
/// the kernel to finish per datagram. A packet of one datagram is sent as it was cut.
fn finish(bytes: &mut [u8], segment: usize, count: usize) {
    let (hdr, frame) = bytes.split_at_mut(VNET_HDR);
    hdr.fill(0);
    if count < 2 {
        return;
    }
    let udp_len = (frame.len() - 14 - 20) as u16;
    let ip_len = udp_len + 20;
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[24..26].fill(0);
    let ip_check = fold(sum(&frame[14..34], 0));
    frame[24..26].copy_from_slice(&ip_check.to_be_bytes());
    frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
    let addr =
        |at: usize| std::net::Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    let pseudo = !fold(pseudo_header(addr(26), addr(30), 17, udp_len));
    frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
    hdr[0] = NEEDS_CSUM;
    hdr[1] = GSO_UDP_L4;
    hdr[2..4].copy_from_slice(&(OUTER_HEADERS as u16).to_ne_bytes());
    hdr[4..6].copy_from_slice(&(segment as u16).to_ne_bytes());
    hdr[6..8].copy_from_slice(&34u16.to_ne_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testing::{kxdp_outer, tcp_frame, verify, vxlan_frame, TcpSpec, VecSink};
    use crate::offload::{Encap, Segments};
    use crate::wire::tcp_flags;

    /// A pod's TCP segment of `len` payload bytes in VXLAN, as a worker cuts it.
    fn frame(len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let spec = TcpSpec {
            flags: tcp_flags::ACK | tcp_flags::PSH,
            ..TcpSpec::default()
        };
        vxlan_frame(&tcp_frame(&spec, &payload), kxdp_outer(), false)
    }

    /// A buffer as big as a worker's.
    fn buf() -> GsoBuf {
        GsoBuf::new(640 << 10, 128)
    }

    /// The datagrams the kernel cuts packet `k` into (`__udp_gso_segment`): the outer
    /// headers repeated, then `gso_size` bytes at a time, each with its lengths, the next IPv4
    /// ID and checksum, and the UDP checksum completed from the seeded pseudo-header part.
    fn kernel_cut(gso: &mut GsoBuf, k: usize) -> Vec<Vec<u8>> {
        let (packet, count) = gso.packet(k);
        let (hdr, p) = packet.split_at(VNET_HDR);
        let word = |at: usize| usize::from(u16::from_ne_bytes([hdr[at], hdr[at + 1]]));
        if count == 1 {
            assert_eq!(hdr, [0; VNET_HDR], "one datagram: no offload asked");
            return vec![p.to_vec()];
        }
        assert_eq!((hdr[0], hdr[1]), (NEEDS_CSUM, GSO_UDP_L4));
        assert_eq!((word(2), word(6), word(8)), (OUTER_HEADERS, 34, 6));
        let be = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
        assert_eq!(usize::from(be(16)), p.len() - 14, "IPv4 total length");
        assert_eq!(fold(sum(&p[14..34], 0)), 0, "IPv4 header checksum");
        assert_eq!(usize::from(be(38)), p.len() - 34, "UDP length");
        // The seed, adjusted for each datagram's length, then the sum from `csum_start` on
        // (`skb_checksum_help`): a wrong seed gives a wrong checksum.
        let seed = u32::from(be(40));
        let mut out = Vec::new();
        for (n, chunk) in p[OUTER_HEADERS..].chunks(word(4)).enumerate() {
            let mut d = p[..OUTER_HEADERS].to_vec();
            d.extend_from_slice(chunk);
            let udp_len = (8 + chunk.len()) as u16;
            d[16..18].copy_from_slice(&(udp_len + 20).to_be_bytes());
            d[18..20].copy_from_slice(&(be(18).wrapping_add(n as u16)).to_be_bytes());
            d[24..26].fill(0);
            let c = fold(sum(&d[14..34], 0));
            d[24..26].copy_from_slice(&c.to_be_bytes());
            d[38..40].copy_from_slice(&udp_len.to_be_bytes());
            let seed = !fold(seed + u32::from(!be(38)) + u32::from(udp_len));
            d[40..42].copy_from_slice(&seed.to_be_bytes());
            let c = match fold(sum(&d[34..], 0)) {
                0 => 0xffff,
                c => c,
            };
            d[40..42].copy_from_slice(&c.to_be_bytes());
            out.push(d);
        }
        assert_eq!(out.len(), count);
        out
    }

    /// `frame` cut at `mtu` both ways: as frames, and as packets the kernel then cuts.
    fn both_ways(frame: &[u8], mtu: usize, gso: &mut GsoBuf) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let pieces = [frame];
        let plan = Segments::new(&pieces, Encap::Vxlan, mtu).expect("a TCP frame");
        let mut frames = VecSink::default();
        plan.emit(&mut frames).expect("cut");
        gso.seal();
        let first = gso.len();
        assert_eq!(plan.emit(gso), Ok(frames.frames.len()));
        let datagrams = (first..gso.len())
            .flat_map(|k| kernel_cut(gso, k))
            .collect();
        (frames.frames, datagrams)
    }

    /// Equal but for the outer IPv4 ID and checksum and the UDP checksum, which the kernel
    /// writes; every datagram verified by etherparse.
    fn assert_same(frames: &[Vec<u8>], datagrams: &[Vec<u8>]) {
        assert_eq!(frames.len(), datagrams.len());
        for (n, (f, d)) in frames.iter().zip(datagrams).enumerate() {
            let checked = verify(d, true, &format!("datagram {n}"));
            assert!(checked.outer_udp_checksum.is_some_and(|c| c != 0) || datagrams.len() == 1);
            assert_eq!(f.len(), d.len(), "datagram {n}");
            assert_eq!(f[..18], d[..18], "datagram {n}: Ethernet, IPv4 to its ID");
            assert_eq!(f[20..24], d[20..24], "datagram {n}: IPv4 flags to protocol");
            assert_eq!(
                f[26..40],
                d[26..40],
                "datagram {n}: addresses, ports, UDP length"
            );
            assert_eq!(f[42..], d[42..], "datagram {n}: VXLAN and the inner frame");
        }
    }

    #[test]
    fn the_kernel_cuts_packets_into_the_frames_segmenting_would_send() {
        let mut gso = buf();
        let (frames, datagrams) = both_ways(&frame(64_000), 1500, &mut gso);
        // 46 datagrams of 1472 bytes would make a UDP packet longer than IPv4 allows: two.
        assert_eq!(gso.len(), 2);
        assert_same(&frames, &datagrams);
        // A second frame starts its own packets; a failed one is dropped with `truncate`.
        let (frames, datagrams) = both_ways(&frame(3000), 1500, &mut gso);
        assert_eq!((frames.len(), gso.len()), (3, 3));
        assert_same(&frames, &datagrams);
        gso.truncate(2);
        assert_eq!(gso.len(), 2);
    }

    #[test]
    fn at_most_64_datagrams_go_in_one_packet() {
        let mut gso = buf();
        let (frames, datagrams) = both_ways(&frame(64_000), 576, &mut gso);
        assert!(frames.len() > 2 * MAX_SEGMENTS, "{} frames", frames.len());
        let counts: Vec<usize> = (0..gso.len()).map(|k| gso.packet(k).1).collect();
        assert_eq!(counts[..2], [MAX_SEGMENTS, MAX_SEGMENTS]);
        assert_eq!(counts.iter().sum::<usize>(), frames.len());
        assert_same(&frames, &datagrams);
    }

    #[test]
    fn a_frame_of_one_datagram_leaves_as_it_was_cut() {
        let mut gso = buf();
        let frame = frame(1000);
        let (frames, datagrams) = both_ways(&frame, 1500, &mut gso);
        assert_eq!((frames.len(), gso.len()), (1, 1));
        assert_eq!(frames, datagrams);
    }

    #[test]
    fn a_longer_datagram_or_one_after_a_short_one_starts_a_packet() {
        let mut gso = buf();
        let mut put = |len: usize| {
            let b = gso.buffer(len).expect("room");
            b.fill(0x11);
            gso.commit(len);
            gso.len()
        };
        assert_eq!(put(100), 1);
        assert_eq!(put(100), 1, "as long as the first: appended");
        assert_eq!(put(120), 2, "longer than the packet's gso_size");
        assert_eq!(put(90), 2, "shorter: appended, and last");
        assert_eq!(put(90), 3, "nothing follows a short one");
        assert!(gso.buffer(OUTER_HEADERS).is_none(), "no payload");
    }

    #[test]
    fn a_full_buffer_refuses_the_next_frame() {
        let frame = frame(64_000);
        let pieces = [frame.as_slice()];
        let plan = Segments::new(&pieces, Encap::Vxlan, 1500).expect("a TCP frame");
        for (bytes, packets, fitting) in [(8 << 16, 32, 7), (1 << 20, 6, 3)] {
            let mut gso = GsoBuf::new(bytes, packets);
            let mut fitted = 0;
            loop {
                gso.seal();
                let before = gso.len();
                if plan.emit(&mut gso).is_err() {
                    gso.truncate(before);
                    break;
                }
                fitted += 1;
                assert!(fitted <= packets, "the buffer never filled");
            }
            assert_eq!((fitted, gso.len()), (fitting, fitting * 2));
        }
    }
}
