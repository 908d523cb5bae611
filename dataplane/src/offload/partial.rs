//! Checksums left to the way out, as a stack leaves them to its device: the TCP or UDP
//! checksum field holds only the sum of the pseudo header (the kernel's `CHECKSUM_PARTIAL`),
//! to be completed where the packet leaves.
//!
//! A pod's stack leaves every TCP and UDP checksum so on a veth with transmit checksum offload
//! on, which is a veth's default; the kernel path carries the packet so to the receiving pod,
//! whose stack trusts a partial checksum without reading the payload, or completes it where it
//! leaves through a device that cannot. AF_XDP hands kxdp the bytes without the skb's
//! checksum state, so kxdp does not ask what the field holds: the pipeline leaves the checksum
//! of every TCP packet, and every UDP datagram with a checksum, from a pod or the node's stack
//! to the way out (`Frame::checksum_offload`). A packet a pod's stack checksummed in full (its
//! veth without offload) is then handed on too, which spares a receiver on the node its check
//! of bytes that never left the host's memory; packets from the uplink keep their checksums.
//!
//! On the way out, [`prepare`] writes the pseudo-header sum of the packet as it leaves (after
//! NAT, inside VXLAN), and the worker hands the checksum on with AF_XDP TX metadata (the
//! descriptor's metadata says where the checksum starts and lies), which the kernel turns into
//! `CHECKSUM_PARTIAL` again, or, where the socket has no metadata, completes it here
//! ([`completed`]). Software segmentation computes every segment's checksum anyway;
//! fragmentation needs the whole datagram's checksum first, so it is completed before.

use crate::flow::proto;
use crate::wire::checksum::{add_at, fold, pseudo_header, sum};
use crate::wire::IPV4_HEADER_LEN;

/// Where a partial checksum is, as AF_XDP TX metadata gives it: the checksummed bytes start
/// `start` bytes into the frame (the L4 header), and the field is `offset` bytes after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumRequest {
    /// Offset of the L4 header in the frame.
    pub start: u16,
    /// Offset of the checksum field in the L4 header.
    pub offset: u16,
}

impl ChecksumRequest {
    /// Whether the checksum is TCP's (else UDP's), as its place in the header says.
    pub fn tcp(&self) -> bool {
        usize::from(self.offset) == TCP_FIELD
    }

    /// Offset of the checksum field in the frame.
    pub fn field(&self) -> usize {
        usize::from(self.start) + usize::from(self.offset)
    }
}

/// Offset of the checksum field in a TCP header.
const TCP_FIELD: usize = 16;

/// Offset of the checksum field in an L4 header of protocol `protocol`, for TCP and UDP.
fn field_offset(protocol: u8) -> Option<usize> {
    match protocol {
        proto::TCP => Some(TCP_FIELD),
        proto::UDP => Some(6),
        _ => None,
    }
}

/// What a stack leaves in the checksum field for offload: the pseudo-header sum of the IPv4
/// header `ip` (20 bytes at least), folded and not complemented.
fn pseudo_sum(ip: &[u8]) -> u16 {
    let addr = |at: usize| std::net::Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let total = u16::from_be_bytes([ip[2], ip[3]]);
    let l4_len = total.saturating_sub(IPV4_HEADER_LEN as u16);
    !fold(pseudo_header(addr(12), addr(16), ip[9], l4_len))
}

/// Ready the packet whose L4 header is at `l4` in `first` (the frame's first buffer, which
/// holds every header) to have its checksum completed downstream: write the pseudo-header
/// sum of its IPv4 header as it is now (translated, its TTL spent) into the field, and say
/// where the checksum lies. `None`, and nothing written, where the bytes there are not an
/// IPv4 header without options of a TCP or UDP packet with its field in `first`.
pub fn prepare(first: &mut [u8], l4: usize) -> Option<ChecksumRequest> {
    let l3 = l4.checked_sub(IPV4_HEADER_LEN)?;
    let ip = first.get(l3..l4)?;
    if ip[0] != 0x45 {
        return None;
    }
    let offset = field_offset(ip[9])?;
    let value = pseudo_sum(ip);
    let at = l4 + offset;
    first
        .get_mut(at..at + 2)?
        .copy_from_slice(&value.to_be_bytes());
    Some(ChecksumRequest {
        start: u16::try_from(l4).ok()?,
        offset: offset as u16,
    })
}

/// The complete checksum of a packet [`prepare`] readied, over its L4 bytes in `pieces` (the
/// frame's buffers in order, the first from the frame's start) up to the end of the IPv4
/// packet: the value for the field at [`ChecksumRequest::field`]. A UDP checksum that comes
/// to zero is sent as `0xffff`, zero meaning none.
pub fn completed(pieces: &[&[u8]], req: ChecksumRequest) -> u16 {
    let l4 = usize::from(req.start);
    let total = pieces
        .first()
        .and_then(|first| first.get(l4 - IPV4_HEADER_LEN + 2..l4 - IPV4_HEADER_LEN + 4))
        .map_or(0, |t| usize::from(u16::from_be_bytes([t[0], t[1]])));
    // The field holds the pseudo-header sum, so the sum of the L4 bytes as they are is the
    // sum the checksum covers.
    let mut left = total.saturating_sub(IPV4_HEADER_LEN);
    let (mut acc, mut done, mut pos) = (0, 0, 0);
    for piece in pieces {
        let from = l4.saturating_sub(pos).min(piece.len());
        pos += piece.len();
        let n = (piece.len() - from).min(left);
        acc = add_at(acc, sum(&piece[from..from + n], 0), done);
        done += n;
        left -= n;
    }
    match (fold(acc), req.offset) {
        (0, 6) => 0xffff,
        (c, _) => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testing::{payload, pieces, tcp_frame, udp_frame, verify, TcpSpec};

    /// `frame` with its L4 checksum replaced by what a stack offloading it leaves.
    fn made_partial(mut frame: Vec<u8>) -> Vec<u8> {
        let at = 34 + field_offset(frame[23]).unwrap();
        let value = pseudo_sum(&frame[14..34]);
        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
        frame
    }

    fn ip_header(frame: &[u8]) -> etherparse::Ipv4Header {
        etherparse::Ipv4HeaderSlice::from_slice(&frame[14..34])
            .unwrap()
            .to_header()
    }

    #[test]
    fn prepared_then_completed_in_pieces_gives_the_checksum_of_the_packet_as_it_leaves() {
        let mut rng = fastrand::Rng::with_seed(0x9a27);
        for case in 0..300u64 {
            let tcp = case % 2 == 0;
            let len = rng.usize(0..9000);
            let mut frame = made_partial(if tcp {
                tcp_frame(&TcpSpec::default(), &payload(len, case))
            } else {
                udp_frame(Default::default(), &payload(len, case))
            });
            // Translated on the way (DNAT), which leaves a partial field stale.
            let mut h = ip_header(&frame);
            h.destination = [10, 96, 0, rng.u8(1..255)];
            h.header_checksum = h.calc_header_checksum();
            frame[14..34].copy_from_slice(&h.to_bytes());
            // Ethernet padding after the packet is not summed.
            frame.extend_from_slice(&[0xee; 3]);
            let req = prepare(&mut frame, 34).unwrap();
            assert_eq!(req.start, 34);
            let field = u16::from_be_bytes([frame[req.field()], frame[req.field() + 1]]);
            assert_eq!(
                field,
                pseudo_sum(&frame[14..34]),
                "the pseudo-header sum written"
            );
            // In pieces of any length, the first holding every header.
            let mut cuts = vec![rng.usize(60..700)];
            for _ in 0..rng.usize(0..5) {
                cuts.push(rng.usize(0..700));
            }
            let value = completed(&pieces(&frame, &cuts), req);
            frame[req.field()..req.field() + 2].copy_from_slice(&value.to_be_bytes());
            let packet = &frame[..frame.len() - 3];
            if tcp {
                verify(packet, false, "completed TCP");
            } else {
                let p = etherparse::SlicedPacket::from_ethernet(packet).unwrap();
                let Some(etherparse::TransportSlice::Udp(u)) = p.transport else {
                    panic!("not UDP")
                };
                let want = u
                    .to_header()
                    .calc_checksum_ipv4(&ip_header(packet), u.payload())
                    .unwrap();
                assert_eq!(value, want, "completed UDP, {len} bytes");
            }
        }
    }

    #[test]
    fn only_an_ipv4_tcp_or_udp_header_is_prepared() {
        let frame = made_partial(tcp_frame(&TcpSpec::default(), b"abc"));
        let refused = |mut f: Vec<u8>, l4: usize, what: &str| {
            let before = f.clone();
            assert_eq!(prepare(&mut f, l4), None, "{what}");
            assert_eq!(f, before, "{what}: nothing written");
        };
        let mut icmp = frame.clone();
        icmp[23] = proto::ICMP;
        refused(icmp, 34, "ICMP");
        let mut options = frame.clone();
        options[14] = 0x46;
        refused(options, 34, "IHL 6");
        refused(frame.clone(), 10, "no IPv4 header before");
        refused(frame[..40].to_vec(), 34, "field past the buffer");
        let mut f = frame.clone();
        assert_eq!(
            prepare(&mut f, 34),
            Some(ChecksumRequest {
                start: 34,
                offset: 16
            })
        );
    }
}
