//! TCP segmentation in software (TSO/GSO): one large TCP frame, plain or VXLAN-encapsulated,
//! cut into frames whose outermost IPv4 packet fits the MTU, as `tcp_gso_segment` with
//! `inet_gso_segment` (and `skb_udp_tunnel_segment` for VXLAN) does.
//!
//! Every segment carries a copy of the original's headers (TCP options included) and the next
//! `mss` bytes of its payload, in order; only the last may be shorter. In each copy:
//!
//! - (inner) IPv4: total length, ID (counting up, or fixed for DF with ID 0: see the module
//!   docs of [`crate::offload`]), header checksum;
//! - TCP: sequence number advanced by the payload before it; CWR only on the first segment,
//!   PSH and FIN only on the last; checksum computed over the pseudo header, the header and
//!   the payload, summed while the payload is copied;
//! - for VXLAN, outer IPv4: total length, ID (by the same rule), header checksum; outer UDP:
//!   length, and the checksum, computed over the whole datagram if the original had one and
//!   left zero if it did not.
//!
//! The MSS is `mtu` less every header from the outermost IPv4 header to the end of the TCP
//! header; [`Segments::limit_mss`] lowers it further (to a peer's advertised MSS, say).

use super::headers::{
    self, addr, fill_udp_checksum, outer_udp_checksum, put16, reach, rewrite_outer, Ipv4Template,
    Stack, IP_MF, IP_OFFSET, OUTER_L3,
};
use super::pieces::Cursor;
use super::{Encap, FrameSink, Layer, OffloadError};
use crate::flow::proto;
use crate::wire::checksum::{add, fold, pseudo_header, sum};
use crate::wire::{tcp_flags, IPV4_HEADER_LEN, TCP_MIN_HEADER_LEN};

/// A validated TCP frame and how it will be cut: made by [`Segments::new`], carried out by
/// [`Segments::emit`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    frame: &'a [&'a [u8]],
    stack: Stack,
    /// TCP header length, options included.
    tcp_header_len: usize,
    /// TCP payload bytes.
    payload_len: usize,
    /// Payload bytes per segment.
    mss: usize,
}

impl<'a> Segments<'a> {
    /// Validates `frame` (pieces, laid out as `encap`) as a TCP segment and plans cutting it for
    /// an outermost IPv4 packet of at most `mtu` bytes.
    pub fn new(frame: &'a [&'a [u8]], encap: Encap, mtu: usize) -> Result<Self, OffloadError> {
        let stack = headers::parse(frame, encap)?;
        if stack.protocol != proto::TCP {
            return Err(OffloadError::NotTcp {
                protocol: stack.protocol,
            });
        }
        if stack.flags_offset & (IP_MF | IP_OFFSET) != 0 {
            return Err(OffloadError::TcpFragment {
                flags_offset: stack.flags_offset,
            });
        }
        let first = frame[0];
        let l4 = stack.l4();
        let available = stack.ip_len - IPV4_HEADER_LEN;
        let data_offset = if available >= TCP_MIN_HEADER_LEN {
            reach(first, l4 + TCP_MIN_HEADER_LEN, Layer::Inner)?;
            first[l4 + 12] >> 4
        } else {
            0
        };
        let tcp_header_len = usize::from(data_offset) * 4;
        if tcp_header_len < TCP_MIN_HEADER_LEN || tcp_header_len > available {
            return Err(OffloadError::BadTcpHeader {
                data_offset,
                available,
            });
        }
        let header_len = l4 + tcp_header_len;
        reach(first, header_len, Layer::Inner)?;
        let payload_len = available - tcp_header_len;
        let have = stack.frame_len - header_len;
        if have < payload_len {
            return Err(OffloadError::PayloadTruncated {
                have,
                need: payload_len,
            });
        }
        let headers = stack.ip_headers() + tcp_header_len;
        if mtu <= headers {
            return Err(OffloadError::MtuTooSmall {
                mtu,
                headers,
                min_payload: 1,
            });
        }
        Ok(Segments {
            frame,
            stack,
            tcp_header_len,
            payload_len,
            mss: mtu - headers,
        })
    }

    /// Caps the payload per segment at `mss` too (ignored if 0 or above the MTU's MSS): the
    /// MTU bounds what the path carries, a peer's MSS option what it accepts.
    #[must_use]
    pub fn limit_mss(mut self, mss: usize) -> Self {
        if mss > 0 {
            self.mss = self.mss.min(mss);
        }
        self
    }

    /// Payload bytes per segment (the last may carry fewer).
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// How many frames [`Segments::emit`] writes: at least one (a frame without payload, or
    /// one that fits already, is copied whole).
    pub fn count(&self) -> usize {
        self.payload_len.div_ceil(self.mss).max(1)
    }

    /// Bytes of headers each segment repeats, from the first (outer) Ethernet byte to the end
    /// of the TCP header.
    pub fn header_len(&self) -> usize {
        self.stack.l4() + self.tcp_header_len
    }

    /// TCP payload bytes of the whole frame.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The length of the longest frame [`Segments::emit`] writes (the first): what every buffer
    /// the sink hands out must hold.
    pub fn max_frame_len(&self) -> usize {
        self.header_len() + self.payload_len.min(self.mss)
    }

    /// Writes the segments into buffers from `sink`, in order, and returns how many. On
    /// [`OffloadError::OutOfBuffers`] the frames committed before are complete, valid segments
    /// of the stream's beginning; the caller may send them (TCP retransmits the rest) or
    /// drop them.
    pub fn emit<S: FrameSink + ?Sized>(&self, sink: &mut S) -> Result<usize, OffloadError> {
        let first = self.frame[0];
        let header_len = self.header_len();
        let headers = &first[..header_len];
        let (l3, l4) = (self.stack.l3, self.stack.l4());
        let thl = self.tcp_header_len;
        let tcp = &first[l4..header_len];
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let flags = tcp[13];
        let ip = Ipv4Template::new(first, l3);
        // The TCP checksum's parts that are the same in every segment: the pseudo header but
        // its length, and the header but the sequence number, flags word and checksum.
        let pseudo = pseudo_header(addr(first, l3 + 12), addr(first, l3 + 16), proto::TCP, 0);
        let tcp_rest = sum(&tcp[..4], sum(&tcp[8..12], sum(&tcp[14..16], pseudo)));
        let tcp_rest = sum(&tcp[18..], tcp_rest);
        let encap = self.stack.encap == Encap::Vxlan;
        let outer = Ipv4Template::new(first, OUTER_L3);
        let udp_checksum = encap && outer_udp_checksum(first);
        let count = self.count();

        let mut cursor = Cursor::new(self.frame, header_len);
        let mut left = self.payload_len;
        for i in 0..count {
            let n = left.min(self.mss);
            let len = header_len + n;
            let buf = sink
                .buffer(len)
                .ok_or(OffloadError::OutOfBuffers { emitted: i })?;
            let got = buf.len();
            let Some(out) = buf.get_mut(..len) else {
                return Err(OffloadError::BufferTooSmall { need: len, got });
            };
            out[..header_len].copy_from_slice(headers);
            let payload_sum = cursor.copy_and_sum(&mut out[header_len..]);

            // (Inner) IPv4.
            let ip_len = (IPV4_HEADER_LEN + thl + n) as u16;
            ip.write(out, ip_len, ip.id_for(i), ip.flags_offset);

            // TCP.
            let seg_seq = seq.wrapping_add((i * self.mss) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&seg_seq.to_be_bytes());
            let mut seg_flags = flags;
            if i + 1 < count {
                seg_flags &= !(tcp_flags::PSH | tcp_flags::FIN);
            }
            if i > 0 {
                seg_flags &= !tcp_flags::CWR;
            }
            out[l4 + 13] = seg_flags;
            let varying = (seg_seq >> 16)
                + (seg_seq & 0xffff)
                + u32::from(u16::from_be_bytes([tcp[12], seg_flags]))
                + (thl + n) as u32;
            let check = fold(add(add(tcp_rest, varying), payload_sum));
            put16(out, l4 + 16, check);

            // Outer IPv4 and UDP.
            if encap {
                rewrite_outer(out, &outer, i, usize::from(ip_len));
                if udp_checksum {
                    fill_udp_checksum(out, header_len, payload_sum);
                }
            }
            sink.commit(len);
            left -= n;
        }
        Ok(count)
    }
}

/// Cuts the TCP frame `frame` (pieces, laid out as `encap`) into segments whose outermost IPv4
/// packet fits `mtu`, written into buffers from `sink`; returns how many.
/// `Segments::new(frame, encap, mtu)?.emit(sink)`.
pub fn segment<S: FrameSink + ?Sized>(
    frame: &[&[u8]],
    encap: Encap,
    mtu: usize,
    sink: &mut S,
) -> Result<usize, OffloadError> {
    Segments::new(frame, encap, mtu)?.emit(sink)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::offload::testing::{
        kxdp_outer, payload, pieces, tcp_frame, timestamps, udp_frame, verify, vxlan_frame,
        TcpSpec, VecSink,
    };
    use crate::wire::build::Ipv4Opts;
    use tcp_flags::{ACK, CWR, FIN, PSH};

    /// A 10-byte segment (pod 10.244.1.5:40000 to 10.244.2.7:8080, seq 1000000, ack 77, ID
    /// 0x1234, DF, ACK|PSH|FIN|CWR), its checksums worked out apart from this crate.
    #[rustfmt::skip]
    pub(crate) static GOLDEN_SEGMENT: [u8; 64] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: length 50, ID 0x1234, DF, TTL 64, TCP, checksum 0x0f9f.
        0x45, 0x00, 0x00, 0x32, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x0f, 0x9f,
        0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x02, 0x07,
        // TCP: seq 1000000, ack 77, data offset 5, CWR|ACK|PSH|FIN, window 502, check 0x9aeb.
        0x9c, 0x40, 0x1f, 0x90, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0x00, 0x4d,
        0x50, 0x99, 0x01, 0xf6, 0x9a, 0xeb, 0x00, 0x00,
        b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h', b'i', b'j',
    ];

    /// [`GOLDEN_SEGMENT`] at MTU 45 (MSS 5): ID, length, sequence, flags and checksums
    /// worked out apart from this crate.
    #[rustfmt::skip]
    pub(crate) static GOLDEN_SEGMENTS: [[u8; 59]; 2] = [
        [
            0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
            // Length 45, ID 0x1234, checksum 0x0fa4.
            0x45, 0x00, 0x00, 0x2d, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x0f, 0xa4,
            0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x02, 0x07,
            // Seq 1000000, CWR|ACK (PSH and FIN cleared), checksum 0x6c32.
            0x9c, 0x40, 0x1f, 0x90, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0x00, 0x4d,
            0x50, 0x90, 0x01, 0xf6, 0x6c, 0x32, 0x00, 0x00,
            b'a', b'b', b'c', b'd', b'e',
        ],
        [
            0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
            // Length 45, ID 0x1235, checksum 0x0fa3.
            0x45, 0x00, 0x00, 0x2d, 0x12, 0x35, 0x40, 0x00, 0x40, 0x06, 0x0f, 0xa3,
            0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x02, 0x07,
            // Seq 1000005, ACK|PSH|FIN (CWR cleared), checksum 0x5d9a.
            0x9c, 0x40, 0x1f, 0x90, 0x00, 0x0f, 0x42, 0x45, 0x00, 0x00, 0x00, 0x4d,
            0x50, 0x19, 0x01, 0xf6, 0x5d, 0x9a, 0x00, 0x00,
            b'f', b'g', b'h', b'i', b'j',
        ],
    ];

    fn cut(frame: &[u8], encap: Encap, mtu: usize) -> Vec<Vec<u8>> {
        let mut sink = VecSink::default();
        let n = segment(&[frame], encap, mtu, &mut sink).expect("segments");
        assert_eq!(n, sink.frames.len());
        sink.frames
    }

    #[test]
    fn golden_frame_is_what_the_test_builder_makes() {
        let spec = TcpSpec {
            flags: ACK | PSH | FIN | CWR,
            ..TcpSpec::default()
        };
        assert_eq!(tcp_frame(&spec, b"abcdefghij"), GOLDEN_SEGMENT);
        verify(&GOLDEN_SEGMENT, false, "golden");
    }

    #[test]
    fn golden_segments() {
        let out = cut(&GOLDEN_SEGMENT, Encap::Plain, 45);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], GOLDEN_SEGMENTS[0]);
        assert_eq!(out[1], GOLDEN_SEGMENTS[1]);
    }

    #[test]
    fn a_4000_byte_payload_at_mss_1448() {
        let data = payload(4000, 1);
        let spec = TcpSpec {
            flags: ACK | PSH | FIN | CWR,
            options: timestamps(0xdead_beef, 0x0102_0304),
            ..TcpSpec::default()
        };
        let frame = tcp_frame(&spec, &data);
        // 20 bytes of IPv4 and 32 of TCP with timestamps: MTU 1500 gives MSS 1448.
        let pieces = [&frame[..]];
        let plan = Segments::new(&pieces, Encap::Plain, 1500).unwrap();
        assert_eq!((plan.mss(), plan.count(), plan.header_len()), (1448, 3, 66));
        assert_eq!(plan.max_frame_len(), 1514);
        let out = cut(&frame, Encap::Plain, 1500);
        let mut joined = Vec::new();
        let expect = [
            (1448, 1_000_000, 0x1234, ACK | CWR),
            (1448, 1_001_448, 0x1235, ACK),
            (1104, 1_002_896, 0x1236, ACK | PSH | FIN),
        ];
        for (i, (f, (len, seq, id, flags))) in out.iter().zip(expect).enumerate() {
            let c = verify(f, false, &format!("segment {i}"));
            let tcp = c.tcp.unwrap();
            assert_eq!(c.payload.len(), len, "segment {i}");
            assert_eq!(usize::from(c.ip.total_len), 20 + 32 + len);
            assert!(usize::from(c.ip.total_len) <= 1500);
            assert_eq!(tcp.sequence_number, seq, "segment {i}");
            assert_eq!(c.ip.identification, id, "segment {i}");
            assert_eq!(f[47], flags, "segment {i} flags");
            assert!(c.ip.dont_fragment);
            // Everything else in the headers is the original's.
            assert_eq!(f[..16], frame[..16]);
            assert_eq!(f[20..24], frame[20..24]);
            assert_eq!(f[26..38], frame[26..38]);
            assert_eq!(f[42..47], frame[42..47]);
            assert_eq!(f[48..50], frame[48..50]);
            assert_eq!(f[52..66], frame[52..66], "options copied");
            joined.extend_from_slice(c.payload);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn pieces_of_any_size_give_the_same_segments() {
        let data = payload(9001, 2);
        let spec = TcpSpec {
            options: timestamps(1, 2),
            ..TcpSpec::default()
        };
        let frame = tcp_frame(&spec, &data);
        let whole = cut(&frame, Encap::Plain, 1500);
        for lens in [
            &[66][..],
            &[100, 3, 4093, 0, 1],
            &[67, 1447, 1449, 4096],
            &[2000, 2000, 2000, 2000],
        ] {
            let p = pieces(&frame, lens);
            let mut sink = VecSink::default();
            segment(&p, Encap::Plain, 1500, &mut sink).unwrap();
            assert_eq!(sink.frames, whole, "pieces {lens:?}");
        }
    }

    #[test]
    fn vxlan_frame_is_cut_inside_the_tunnel() {
        let data = payload(4000, 3);
        let spec = TcpSpec {
            flags: ACK | PSH,
            options: timestamps(5, 6),
            ..TcpSpec::default()
        };
        let inner = tcp_frame(&spec, &data);
        // kxdp's encapsulation: outer DF, ID 0, no UDP checksum.
        let frame = vxlan_frame(&inner, kxdp_outer(), false);
        let out = cut(&frame, Encap::Vxlan, 1500);
        // 50 + 20 + 32 bytes of headers leave 1398 of payload per 1500-byte outer packet.
        let lens: Vec<usize> = out.iter().map(|f| f.len()).collect();
        assert_eq!(lens, [1514, 1514, 14 + 50 + 52 + 1204]);
        let mut joined = Vec::new();
        for (i, f) in out.iter().enumerate() {
            let c = verify(f, true, &format!("segment {i}"));
            let outer = c.outer.unwrap();
            assert!(usize::from(outer.total_len) <= 1500);
            assert_eq!(outer.identification, 0, "fixed outer ID (DF, ID 0)");
            assert_eq!(c.outer_udp_checksum, Some(0));
            assert_eq!(c.ip.identification, 0x1234 + i as u16);
            let tcp = c.tcp.unwrap();
            assert_eq!(tcp.sequence_number, 1_000_000 + 1398 * i as u32);
            assert_eq!(tcp.psh, i == 2);
            // Outer Ethernet, UDP ports, VXLAN and inner Ethernet are copied.
            assert_eq!(f[..14], frame[..14]);
            assert_eq!(f[34..38], frame[34..38]);
            assert_eq!(f[42..64], frame[42..64]);
            joined.extend_from_slice(c.payload);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn vxlan_outer_checksum_and_counting_ids() {
        let data = payload(3000, 4);
        let inner = tcp_frame(&TcpSpec::default(), &data);
        let outer = Ipv4Opts {
            ident: 0x4000,
            dont_fragment: false,
            ..Ipv4Opts::default()
        };
        let frame = vxlan_frame(&inner, outer, true);
        assert_ne!(u16::from_be_bytes([frame[40], frame[41]]), 0);
        // An odd MTU gives an odd MSS: payloads start at odd offsets of the original.
        let out = cut(&frame, Encap::Vxlan, 1001);
        assert_eq!(out.len(), 3000usize.div_ceil(1001 - 50 - 40));
        for (i, f) in out.iter().enumerate() {
            let c = verify(f, true, &format!("segment {i}"));
            let o = c.outer.unwrap();
            assert_eq!(o.identification, 0x4000 + i as u16);
            assert!(!o.dont_fragment);
            assert_ne!(c.outer_udp_checksum, Some(0), "checksum kept on");
        }
    }

    #[test]
    fn df_with_id_zero_keeps_id_zero_and_ids_wrap() {
        let data = payload(3000, 5);
        let fixed = tcp_frame(
            &TcpSpec {
                id: 0,
                ..TcpSpec::default()
            },
            &data,
        );
        let ids = |frame: &[u8]| -> Vec<u16> {
            cut(frame, Encap::Plain, 1000)
                .iter()
                .map(|f| verify(f, false, "id").ip.identification)
                .collect()
        };
        assert_eq!(ids(&fixed), [0, 0, 0, 0]);
        let counting = tcp_frame(
            &TcpSpec {
                id: 0,
                df: false,
                ..TcpSpec::default()
            },
            &data,
        );
        assert_eq!(ids(&counting), [0, 1, 2, 3]);
        let wrapping = tcp_frame(
            &TcpSpec {
                id: 0xfffe,
                ..TcpSpec::default()
            },
            &data,
        );
        assert_eq!(ids(&wrapping), [0xfffe, 0xffff, 0, 1]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let data = payload(2500, 6);
        let frame = tcp_frame(
            &TcpSpec {
                seq: u32::MAX - 999,
                ..TcpSpec::default()
            },
            &data,
        );
        let seqs: Vec<u32> = cut(&frame, Encap::Plain, 1040)
            .iter()
            .map(|f| verify(f, false, "seq").tcp.unwrap().sequence_number)
            .collect();
        assert_eq!(seqs, [u32::MAX - 999, 0, 1000]);
    }

    #[test]
    fn a_frame_that_fits_or_has_no_payload_is_copied() {
        for len in [0, 1, 1460] {
            let frame = tcp_frame(&TcpSpec::default(), &payload(len, 7));
            let out = cut(&frame, Encap::Plain, 1500);
            assert_eq!(out, [frame], "payload {len}");
        }
    }

    #[test]
    fn limit_mss_caps_the_payload() {
        let frame = tcp_frame(&TcpSpec::default(), &payload(4000, 8));
        let pieces = [&frame[..]];
        let plan = Segments::new(&pieces, Encap::Plain, 9000).unwrap();
        assert_eq!((plan.mss(), plan.count()), (8960, 1));
        let plan = plan.limit_mss(1000);
        assert_eq!((plan.mss(), plan.count()), (1000, 4));
        assert_eq!(plan.clone().limit_mss(0).mss(), 1000);
        assert_eq!(plan.limit_mss(5000).mss(), 1000);
    }

    #[test]
    fn sink_shortfalls_are_errors() {
        let frame = tcp_frame(&TcpSpec::default(), &payload(4000, 9));
        let mut sink = VecSink {
            limit: Some(2),
            ..VecSink::default()
        };
        assert_eq!(
            segment(&[&frame[..]], Encap::Plain, 1500, &mut sink),
            Err(OffloadError::OutOfBuffers { emitted: 2 })
        );
        assert_eq!(sink.frames.len(), 2);
        for (i, f) in sink.frames.iter().enumerate() {
            verify(f, false, &format!("committed {i}"));
        }

        struct Short(Vec<u8>);
        impl FrameSink for Short {
            fn buffer(&mut self, _len: usize) -> Option<&mut [u8]> {
                Some(&mut self.0)
            }
            fn commit(&mut self, _len: usize) {
                panic!("nothing to commit")
            }
        }
        assert_eq!(
            segment(&[&frame[..]], Encap::Plain, 1500, &mut Short(vec![0; 100])),
            Err(OffloadError::BufferTooSmall {
                need: 1514,
                got: 100
            })
        );
    }

    #[test]
    fn malformed_and_unsupported_input_is_named() {
        let good = tcp_frame(&TcpSpec::default(), &payload(3000, 10));
        let mut sink = VecSink::default();
        let mut check = |frame: &[&[u8]], encap: Encap, mtu: usize, want: OffloadError| {
            assert_eq!(segment(frame, encap, mtu, &mut sink), Err(want));
        };
        check(
            &[],
            Encap::Plain,
            1500,
            OffloadError::HeadersNotInFirstPiece {
                layer: Layer::Inner,
                have: 0,
                need: 34,
            },
        );
        check(
            &[&good[..50], &good[50..]],
            Encap::Plain,
            1500,
            OffloadError::HeadersNotInFirstPiece {
                layer: Layer::Inner,
                have: 50,
                need: 54,
            },
        );
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        check(
            &[&arp],
            Encap::Plain,
            1500,
            OffloadError::NotIpv4 {
                layer: Layer::Inner,
                ethertype: 0x0806,
            },
        );
        let mut options = good.clone();
        options[14] = 0x46;
        check(
            &[&options],
            Encap::Plain,
            1500,
            OffloadError::Ipv4Options {
                layer: Layer::Inner,
                ihl: 6,
            },
        );
        let mut v6 = good.clone();
        v6[14] = 0x65;
        check(
            &[&v6],
            Encap::Plain,
            1500,
            OffloadError::BadIpv4Header {
                layer: Layer::Inner,
                version_ihl: 0x65,
                total_len: 3040,
            },
        );
        check(
            &[&good[..3000]],
            Encap::Plain,
            1500,
            OffloadError::Truncated {
                layer: Layer::Inner,
                total_len: 3040,
                available: 2986,
            },
        );
        let udp = udp_frame(Ipv4Opts::default(), &payload(3000, 11));
        check(
            &[&udp],
            Encap::Plain,
            1500,
            OffloadError::NotTcp { protocol: 17 },
        );
        let mut fragment = good.clone();
        fragment[20] = 0x20; // MF
        check(
            &[&fragment],
            Encap::Plain,
            1500,
            OffloadError::TcpFragment {
                flags_offset: 0x2000,
            },
        );
        let mut doff = good.clone();
        doff[46] = 0x40;
        check(
            &[&doff],
            Encap::Plain,
            1500,
            OffloadError::BadTcpHeader {
                data_offset: 4,
                available: 3020,
            },
        );
        check(
            &[&good],
            Encap::Plain,
            40,
            OffloadError::MtuTooSmall {
                mtu: 40,
                headers: 40,
                min_payload: 1,
            },
        );
        // A plain frame said to be VXLAN.
        check(
            &[&good],
            Encap::Vxlan,
            1500,
            OffloadError::OuterNotUdp { protocol: 6 },
        );
        let mut vx = vxlan_frame(&good, kxdp_outer(), false);
        vx[38..40].copy_from_slice(&100u16.to_be_bytes());
        check(
            &[&vx],
            Encap::Vxlan,
            1500,
            OffloadError::BadUdpLength {
                udp_len: 100,
                expected: 3070,
            },
        );
        let vx = vxlan_frame(&good, kxdp_outer(), false);
        check(
            &[&vx[..vx.len() - 1]],
            Encap::Vxlan,
            1500,
            OffloadError::Truncated {
                layer: Layer::Outer,
                total_len: 3090,
                available: 3089,
            },
        );
        // Pieces that hold less than the IPv4 length says (a lying outer length can't, but
        // an inner one within a padded outer packet can).
        let short_inner = tcp_frame(&TcpSpec::default(), &payload(100, 12));
        let mut padded = short_inner.clone();
        padded[16..18].copy_from_slice(&200u16.to_be_bytes());
        check(
            &[&padded],
            Encap::Plain,
            1500,
            OffloadError::Truncated {
                layer: Layer::Inner,
                total_len: 200,
                available: 140,
            },
        );
    }
}
