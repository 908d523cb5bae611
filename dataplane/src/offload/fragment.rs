//! IPv4 fragmentation in software, as `ip_do_fragment` does, for packets other than TCP (which
//! [`super::segment`] cuts instead) that are too big for the way out.
//!
//! A packet with DF set is not cut: [`Fragments::plan`] answers
//! [`FragmentPlan::NeedsFragmentation`] with the next-hop MTU for the caller's ICMP
//! "fragmentation needed" (RFC 1191), which the pipeline already builds. Otherwise the IPv4
//! payload is cut into pieces of the largest multiple of 8 bytes that fits (the last takes the
//! rest), and each fragment gets a copy of the IPv4 header with its total length, the fragment
//! offset (in 8-byte units, added to the original's, so a fragment can be cut again), MF on
//! every fragment but the last (which keeps the original's MF) and a fresh header checksum;
//! the ID, TTL, TOS and DF stay. No L4 checksum changes: fragments carry the L4 bytes as they
//! are.
//!
//! A VXLAN frame's inner packet is the one cut, and each fragment travels in its own VXLAN
//! frame: the outer headers are copied with their IPv4 total length, ID (counting up, or fixed
//! for DF with ID 0, as for segments), header checksum, UDP length and, where the original had
//! one, UDP checksum renewed. The inner packet's MTU is the given (uplink) MTU less the 50
//! bytes of outer headers and inner Ethernet header; that is also the MTU a DF packet is told.

use super::headers::{
    self, fill_udp_checksum, outer_udp_checksum, rewrite_outer, Ipv4Template, Stack, IP_DF, IP_MF,
    IP_OFFSET, OUTER_L3,
};
use super::pieces::Cursor;
use super::{Encap, FrameSink, OffloadError};
use crate::wire::IPV4_HEADER_LEN;

/// The least data a fragment carries: one 8-byte unit of offset.
const MIN_FRAGMENT_DATA: usize = 8;
/// The largest IPv4 datagram.
const MAX_DATAGRAM: usize = 65535;

/// What to do with a packet too big for the MTU.
#[derive(Debug, Clone)]
pub enum FragmentPlan<'a> {
    /// Cut it (or copy it whole, if it fits after all): see [`Fragments`].
    Fragments(Fragments<'a>),
    /// DF is set and the packet does not fit: answer with ICMP fragmentation needed, telling
    /// this MTU (of the packet's own IPv4 header: inside the tunnel, for a VXLAN frame).
    NeedsFragmentation {
        /// The next-hop MTU for the ICMP message.
        next_hop_mtu: u16,
    },
}

/// What [`fragment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragmented {
    /// It wrote this many frames.
    Frames(usize),
    /// Nothing: DF is set; see [`FragmentPlan::NeedsFragmentation`].
    NeedsFragmentation {
        /// The next-hop MTU for the ICMP message.
        next_hop_mtu: u16,
    },
}

/// A validated IPv4 frame and how it will be cut: made by [`Fragments::plan`], carried out by
/// [`Fragments::emit`].
#[derive(Debug, Clone)]
pub struct Fragments<'a> {
    frame: &'a [&'a [u8]],
    stack: Stack,
    /// Bytes of IPv4 payload in every fragment but the last: a multiple of 8.
    per_fragment: usize,
}

impl<'a> Fragments<'a> {
    /// Validates `frame` (pieces, laid out as `encap`) and plans cutting its (inner) IPv4
    /// packet so that the outermost IPv4 packet of each frame fits `mtu`.
    pub fn plan(
        frame: &'a [&'a [u8]],
        encap: Encap,
        mtu: usize,
    ) -> Result<FragmentPlan<'a>, OffloadError> {
        let stack = headers::parse(frame, encap)?;
        let data_len = stack.ip_len - IPV4_HEADER_LEN;
        let have = stack.frame_len - stack.l4();
        if have < data_len {
            return Err(OffloadError::PayloadTruncated {
                have,
                need: data_len,
            });
        }
        let outer = stack.l3 - OUTER_L3;
        let inner_mtu = mtu.saturating_sub(outer);
        if stack.ip_len <= inner_mtu {
            return Ok(FragmentPlan::Fragments(Fragments {
                frame,
                stack,
                per_fragment: data_len.max(MIN_FRAGMENT_DATA),
            }));
        }
        let per_fragment = inner_mtu.saturating_sub(IPV4_HEADER_LEN) & !7;
        if per_fragment < MIN_FRAGMENT_DATA {
            return Err(OffloadError::MtuTooSmall {
                mtu,
                headers: stack.ip_headers(),
                min_payload: MIN_FRAGMENT_DATA,
            });
        }
        if stack.flags_offset & IP_DF != 0 {
            return Ok(FragmentPlan::NeedsFragmentation {
                next_hop_mtu: inner_mtu.min(MAX_DATAGRAM) as u16,
            });
        }
        let end = usize::from(stack.flags_offset & IP_OFFSET) * 8 + data_len;
        if end > MAX_DATAGRAM {
            return Err(OffloadError::FragmentPastMaximum { end });
        }
        Ok(FragmentPlan::Fragments(Fragments {
            frame,
            stack,
            per_fragment,
        }))
    }

    /// Bytes of (inner) IPv4 payload in the whole packet.
    fn data_len(&self) -> usize {
        self.stack.ip_len - IPV4_HEADER_LEN
    }

    /// How many frames [`Fragments::emit`] writes (1 for a packet that fits).
    pub fn count(&self) -> usize {
        self.data_len().div_ceil(self.per_fragment).max(1)
    }

    /// The length of the longest frame [`Fragments::emit`] writes (the first): what every
    /// buffer the sink hands out must hold.
    pub fn max_frame_len(&self) -> usize {
        self.stack.l4() + self.data_len().min(self.per_fragment)
    }

    /// Writes the fragments into buffers from `sink`, in order, and returns how many. On
    /// [`OffloadError::OutOfBuffers`] the frames committed before are useless to the receiver
    /// without the rest: the caller should take them back.
    pub fn emit<S: FrameSink + ?Sized>(&self, sink: &mut S) -> Result<usize, OffloadError> {
        let first = self.frame[0];
        let (l3, l4) = (self.stack.l3, self.stack.l4());
        let headers = &first[..l4];
        let ip = Ipv4Template::new(first, l3);
        let outer = Ipv4Template::new(first, OUTER_L3);
        let flags_offset = self.stack.flags_offset;
        let original_mf = flags_offset & IP_MF;
        let original_offset = flags_offset & IP_OFFSET;
        let kept_flags = flags_offset & !(IP_MF | IP_OFFSET);
        let encap = self.stack.encap == Encap::Vxlan;
        let udp_checksum = encap && outer_udp_checksum(first);
        let count = self.count();

        let mut cursor = Cursor::new(self.frame, l4);
        let mut left = self.data_len();
        for i in 0..count {
            let n = left.min(self.per_fragment);
            let len = l4 + n;
            let buf = sink
                .buffer(len)
                .ok_or(OffloadError::OutOfBuffers { emitted: i })?;
            let got = buf.len();
            let Some(out) = buf.get_mut(..len) else {
                return Err(OffloadError::BufferTooSmall { need: len, got });
            };
            out[..l4].copy_from_slice(headers);
            let data_sum = if udp_checksum {
                cursor.copy_and_sum(&mut out[l4..])
            } else {
                cursor.copy(&mut out[l4..]);
                0
            };

            let mf = if i + 1 < count { IP_MF } else { original_mf };
            // `plan` checked that the last offset fits the field.
            let offset = original_offset + (i * self.per_fragment / 8) as u16;
            // Every fragment keeps the ID: the receiver reassembles by it.
            let ip_len = (IPV4_HEADER_LEN + n) as u16;
            ip.write(out, ip_len, ip.id, kept_flags | mf | offset);

            if encap {
                rewrite_outer(out, &outer, i, usize::from(ip_len));
                if udp_checksum {
                    fill_udp_checksum(out, l4, data_sum);
                }
            }
            sink.commit(len);
            left -= n;
        }
        Ok(count)
    }
}

/// Fragments the (inner) IPv4 packet of `frame` (pieces, laid out as `encap`) so that every
/// outermost IPv4 packet fits `mtu`, into buffers from `sink`; or, with DF set, says which MTU
/// to tell the sender.
pub fn fragment<S: FrameSink + ?Sized>(
    frame: &[&[u8]],
    encap: Encap,
    mtu: usize,
    sink: &mut S,
) -> Result<Fragmented, OffloadError> {
    match Fragments::plan(frame, encap, mtu)? {
        FragmentPlan::Fragments(plan) => plan.emit(sink).map(Fragmented::Frames),
        FragmentPlan::NeedsFragmentation { next_hop_mtu } => {
            Ok(Fragmented::NeedsFragmentation { next_hop_mtu })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testing::{
        kxdp_outer, payload, pieces, tcp_frame, udp_frame, verify, vxlan_frame, TcpSpec, VecSink,
    };
    use crate::wire::build::{FrameSpec, Ipv4Opts};
    use crate::wire::EthernetAddress;

    fn cut(frame: &[u8], encap: Encap, mtu: usize) -> Vec<Vec<u8>> {
        let mut sink = VecSink::default();
        let done = fragment(&[frame], encap, mtu, &mut sink).expect("fragments");
        assert_eq!(done, Fragmented::Frames(sink.frames.len()));
        sink.frames
    }

    /// (offset in bytes, MF, data length) of each verified fragment, and their data joined in
    /// offset order (from the first fragment's offset on).
    fn reassemble(frags: &[Vec<u8>], vxlan: bool) -> (Vec<(usize, bool, usize)>, Vec<u8>) {
        let mut parts: Vec<(usize, bool, Vec<u8>)> = frags
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let c = verify(f, vxlan, &format!("fragment {i}"));
                let data = c.frame[34..].to_vec();
                (
                    usize::from(c.ip.fragment_offset.byte_offset()),
                    c.ip.more_fragments,
                    data,
                )
            })
            .collect();
        let shape = parts.iter().map(|(o, mf, d)| (*o, *mf, d.len())).collect();
        parts.sort_by_key(|p| p.0);
        let base = parts[0].0;
        let mut joined = Vec::new();
        for (o, _, d) in parts {
            assert_eq!(o, base + joined.len(), "no gap, no overlap");
            joined.extend_from_slice(&d);
        }
        (shape, joined)
    }

    fn no_df() -> Ipv4Opts {
        Ipv4Opts {
            dont_fragment: false,
            ident: 0xbeef,
            ..Ipv4Opts::default()
        }
    }

    #[test]
    fn udp_of_3000_bytes_at_mtu_1500() {
        let frame = udp_frame(no_df(), &payload(3000, 20));
        let out = cut(&frame, Encap::Plain, 1500);
        let (shape, data) = reassemble(&out, false);
        // 3008 bytes of UDP: 1480 (185 units), 1480, 48; MF on all but the last.
        assert_eq!(
            shape,
            [(0, true, 1480), (1480, true, 1480), (2960, false, 48)]
        );
        assert_eq!(data, frame[34..]);
        for (i, f) in out.iter().enumerate() {
            let c = verify(f, false, "fragment");
            assert_eq!(c.ip.identification, 0xbeef, "fragment {i} keeps the ID");
            assert!(!c.ip.dont_fragment);
            assert!(f.len() - 14 <= 1500);
            assert_eq!(f[..14], frame[..14]);
            assert_eq!(f[22..24], frame[22..24], "TTL and protocol");
        }
        // The reassembled datagram carries the original's UDP checksum, still valid.
        let mut whole = out[0][..34].to_vec();
        whole.extend_from_slice(&data);
        whole[16..18].copy_from_slice(&(20 + data.len() as u16).to_be_bytes());
        whole[20..22].copy_from_slice(&[0, 0]);
        assert_eq!(whole[34..], frame[34..]);
    }

    #[test]
    fn df_asks_for_an_icmp_with_the_mtu() {
        let frame = udp_frame(Ipv4Opts::default(), &payload(3000, 21));
        let mut sink = VecSink::default();
        assert_eq!(
            fragment(&[&frame[..]], Encap::Plain, 1500, &mut sink),
            Ok(Fragmented::NeedsFragmentation { next_hop_mtu: 1500 })
        );
        // Inside the tunnel the inner packet's MTU is told.
        let vx = vxlan_frame(&frame, kxdp_outer(), false);
        assert_eq!(
            fragment(&[&vx[..]], Encap::Vxlan, 1500, &mut sink),
            Ok(Fragmented::NeedsFragmentation { next_hop_mtu: 1450 })
        );
        assert!(sink.frames.is_empty());
        // DF on a packet that fits is no obstacle.
        let small = udp_frame(Ipv4Opts::default(), &payload(1000, 22));
        assert_eq!(cut(&small, Encap::Plain, 1500), [small]);
    }

    #[test]
    fn vxlan_inner_packet_is_fragmented_into_its_own_frames() {
        let inner = udp_frame(no_df(), &payload(4000, 23));
        for udp_checksum in [false, true] {
            let frame = vxlan_frame(&inner, kxdp_outer(), udp_checksum);
            let out = cut(&frame, Encap::Vxlan, 1500);
            // The inner MTU is 1450: 1424 bytes of data (178 units) a fragment.
            let (shape, data) = reassemble(&out, true);
            assert_eq!(
                shape,
                [(0, true, 1424), (1424, true, 1424), (2848, false, 1160)]
            );
            assert_eq!(data, inner[34..]);
            for (i, f) in out.iter().enumerate() {
                let c = verify(f, true, &format!("fragment {i}"));
                let outer = c.outer.unwrap();
                assert!(usize::from(outer.total_len) <= 1500);
                assert_eq!(outer.identification, 0, "kxdp's outer ID stays 0");
                assert!(outer.dont_fragment);
                assert_eq!(c.outer_udp_checksum != Some(0), udp_checksum);
                assert_eq!(c.ip.identification, 0xbeef);
                assert_eq!(f[42..64], frame[42..64], "VXLAN and inner Ethernet copied");
            }
        }
    }

    #[test]
    fn a_fragment_is_cut_again_at_its_offset() {
        // The middle of a datagram: offset 800, MF set, 2400 bytes of data.
        let ip = Ipv4Opts {
            more_fragments: true,
            frag_offset: 800,
            ..no_df()
        };
        let frame = FrameSpec {
            ip,
            ..FrameSpec::new(
                EthernetAddress([2, 0, 0, 0, 0, 1]),
                EthernetAddress([2, 0, 0, 0, 0, 2]),
                [10, 244, 1, 5].into(),
                [10, 244, 2, 7].into(),
            )
        }
        .ipv4(crate::wire::IpProtocol::Udp, &payload(2400, 24));
        let (shape, data) = reassemble(&cut(&frame, Encap::Plain, 1000), false);
        assert_eq!(
            shape,
            [(800, true, 976), (1776, true, 976), (2752, true, 448)],
            "the last keeps the original's MF"
        );
        assert_eq!(data, frame[34..]);
    }

    #[test]
    fn icmp_and_pieces() {
        let spec = FrameSpec {
            ip: no_df(),
            ..FrameSpec::new(
                EthernetAddress([2, 0, 0, 0, 0, 1]),
                EthernetAddress([2, 0, 0, 0, 0, 2]),
                [10, 244, 1, 5].into(),
                [10, 244, 2, 7].into(),
            )
        };
        let frame = spec.icmp_echo(true, 7, 1, &payload(5000, 25));
        let whole = cut(&frame, Encap::Plain, 1500);
        assert_eq!(whole.len(), 4);
        let (_, data) = reassemble(&whole, false);
        assert_eq!(data, frame[34..]);
        let p = pieces(&frame, &[34, 999, 1, 2048]);
        let mut sink = VecSink::default();
        fragment(&p, Encap::Plain, 1500, &mut sink).unwrap();
        assert_eq!(sink.frames, whole);
    }

    #[test]
    fn tcp_without_df_is_fragmented_too() {
        let frame = tcp_frame(
            &TcpSpec {
                df: false,
                ..TcpSpec::default()
            },
            &payload(3000, 26),
        );
        let (shape, data) = reassemble(&cut(&frame, Encap::Plain, 1500), false);
        assert_eq!(shape.len(), 3);
        assert_eq!(data, frame[34..]);
    }

    #[test]
    fn errors_are_named() {
        let frame = udp_frame(no_df(), &payload(3000, 27));
        let mut sink = VecSink::default();
        assert_eq!(
            fragment(&[&frame[..]], Encap::Plain, 27, &mut sink),
            Err(OffloadError::MtuTooSmall {
                mtu: 27,
                headers: 20,
                min_payload: 8
            })
        );
        // MTU 28 allows one unit of 8.
        assert_eq!(
            Fragments::plan(&[&frame[..]], Encap::Plain, 28)
                .map(|p| match p {
                    FragmentPlan::Fragments(f) => f.count(),
                    FragmentPlan::NeedsFragmentation { .. } => 0,
                })
                .unwrap(),
            376
        );
        let late = udp_frame(
            Ipv4Opts {
                frag_offset: 63_000,
                ..no_df()
            },
            &payload(3000, 28),
        );
        assert_eq!(
            fragment(&[&late[..]], Encap::Plain, 1500, &mut sink),
            Err(OffloadError::FragmentPastMaximum { end: 66_008 })
        );
        assert_eq!(
            fragment(&[&frame[..1000]], Encap::Plain, 1500, &mut sink),
            Err(OffloadError::Truncated {
                layer: crate::offload::Layer::Inner,
                total_len: 3028,
                available: 986
            })
        );
        let mut sink = VecSink {
            limit: Some(1),
            ..VecSink::default()
        };
        assert_eq!(
            fragment(&[&frame[..]], Encap::Plain, 1500, &mut sink),
            Err(OffloadError::OutOfBuffers { emitted: 1 })
        );
    }
}
