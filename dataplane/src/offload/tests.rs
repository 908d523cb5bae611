//! Cross-module property test: segmenting a random frame at a random MSS, then coalescing the
//! segments and materialising the merged frame, gives the original back byte for byte, with
//! every intermediate frame valid.

use fastrand::Rng;

use super::testing::{
    kxdp_outer, payload, pieces, tcp_frame, verify, vxlan_frame, TcpSpec, VecSink,
};
use super::{segment, Coalescer, Encap, GroLimits};
use crate::wire::build::Ipv4Opts;
use crate::wire::tcp_flags::{ACK, CWR, ECE, FIN, PSH};

/// The largest batch the property test coalesces.
const MAX_SEGMENTS: usize = 256;

fn random_spec(rng: &mut Rng) -> TcpSpec {
    let mut flags = ACK;
    for f in [PSH, FIN, CWR, ECE] {
        if rng.bool() {
            flags |= f;
        }
    }
    let option_len = 4 * rng.usize(..=10);
    let options: Vec<u8> = std::iter::repeat_with(|| rng.u8(..))
        .take(option_len)
        .collect();
    TcpSpec {
        tos: rng.u8(..),
        ttl: rng.u8(1..),
        // ID 0 often, to exercise the fixed-ID rule.
        id: if rng.u8(..4) == 0 { 0 } else { rng.u16(..) },
        df: rng.bool(),
        src_port: rng.u16(..),
        dst_port: rng.u16(..),
        seq: rng.u32(..),
        ack: rng.u32(..),
        flags,
        window: rng.u16(..),
        urgent: rng.u16(..),
        options,
    }
}

/// Cuts `frame` at random places; the first piece holds at least `headers` bytes.
fn random_pieces<'a>(rng: &mut Rng, frame: &'a [u8], headers: usize) -> Vec<&'a [u8]> {
    let mut cuts = vec![rng.usize(headers..=frame.len()), frame.len()];
    for _ in 0..rng.usize(..20) {
        cuts.push(rng.usize(headers..=frame.len()));
    }
    cuts.sort_unstable();
    let mut out = vec![&frame[..cuts[0]]];
    out.extend(cuts.windows(2).map(|w| &frame[w[0]..w[1]]));
    out
}

#[test]
fn segment_then_coalesce_gives_the_original_back() {
    let mut rng = Rng::with_seed(0x650_6e0);
    let mut coalescer = Coalescer::<MAX_SEGMENTS>::new();
    for round in 0..1000 {
        let spec = random_spec(&mut rng);
        let thl = 20 + spec.options.len();
        let vxlan = rng.bool();
        // The outermost IPv4 packet must fit its 16-bit length.
        let max_payload = 65535 - 20 - thl - if vxlan { 50 } else { 0 };
        let len = match rng.u8(..4) {
            0 => rng.usize(..=3000),
            _ => rng.usize(..=max_payload),
        };
        let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        let inner = tcp_frame(&spec, &data);
        let (frame, encap, headers) = if vxlan {
            let outer = if rng.bool() {
                kxdp_outer()
            } else {
                Ipv4Opts {
                    ident: rng.u16(..),
                    dont_fragment: rng.bool(),
                    ..Ipv4Opts::default()
                }
            };
            let frame = vxlan_frame(&inner, outer, rng.bool());
            (frame, Encap::Vxlan, 50 + 20 + thl)
        } else {
            (inner.clone(), Encap::Plain, 20 + thl)
        };
        let min_mss = len.div_ceil(MAX_SEGMENTS - 1).max(1);
        let mss = match rng.u8(..3) {
            0 => rng.usize(min_mss..=min_mss + 100),
            1 => rng.usize(min_mss.max(1000)..=9000),
            _ => rng.usize(min_mss..=len.max(min_mss) + 10),
        };
        let mtu = mss + headers;
        let what = format!("round {round}: payload {len}, mss {mss}, {encap:?}, {spec:?}");

        let pieces = random_pieces(&mut rng, &frame, 14 + headers);
        let mut sink = VecSink {
            slack: rng.usize(..64),
            ..VecSink::default()
        };
        let n = segment(&pieces, encap, mtu, &mut sink).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(n, len.div_ceil(mss).max(1), "{what}");

        // Every segment valid, within the MTU, in sequence, flags where they belong.
        let mut next_seq = spec.seq;
        let inners: Vec<&[u8]> = sink
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let c = verify(f, vxlan, &format!("{what}: segment {i}"));
                assert!(f.len() - 14 <= mtu, "{what}: segment {i} exceeds the MTU");
                let tcp = c.tcp.expect("TCP");
                assert_eq!(tcp.sequence_number, next_seq, "{what}: segment {i} seq");
                next_seq = next_seq.wrapping_add(c.payload.len() as u32);
                let last = i + 1 == n;
                assert_eq!(tcp.psh, last && spec.flags & PSH != 0, "{what}: {i} PSH");
                assert_eq!(tcp.fin, last && spec.flags & FIN != 0, "{what}: {i} FIN");
                assert_eq!(tcp.cwr, i == 0 && spec.flags & CWR != 0, "{what}: {i} CWR");
                assert_eq!(tcp.ece, spec.flags & ECE != 0);
                assert!(last || c.payload.len() == mss, "{what}: {i} short");
                c.frame
            })
            .collect();
        assert_eq!(next_seq, spec.seq.wrapping_add(len as u32), "{what}");

        // Coalescing gives one run: the original inner frame, byte for byte.
        let runs = coalescer.coalesce(&inners, GroLimits::KERNEL).unwrap();
        assert_eq!(runs.len(), 1, "{what}: {runs:?}");
        let run = runs[0];
        assert_eq!(run.segments, n, "{what}");
        let mut merged = vec![0; run.len()];
        coalescer.write_merged(&run, &inners, &mut merged).unwrap();
        assert_eq!(merged, inner, "{what}");

        // The I/O side's way: the first frame rewritten in place, the slices chained.
        let mut first = inners[0][..run.first_len].to_vec();
        run.rewrite_first(&mut first);
        for s in coalescer.slices(&run) {
            first.extend_from_slice(&inners[s.frame][s.offset..s.offset + s.len]);
        }
        assert_eq!(first, inner, "{what}");
    }
}

/// An inner packet within 50 bytes of 64 KiB: its encapsulation's outer lengths do not fit in
/// 16 bits, so the pipeline saturates them, and segmenting goes by the inner length.
#[test]
fn a_vxlan_frame_with_saturated_outer_lengths_is_cut_by_its_inner_length() {
    let data = payload(65_535 - 40, 7);
    let inner = tcp_frame(&TcpSpec::default(), &data);
    assert_eq!(inner.len(), 14 + 65_535);
    // Outer headers of a real VXLAN frame, then the whole inner frame, lengths saturated.
    let small = vxlan_frame(&inner[..64], kxdp_outer(), false);
    let mut frame = small[..50].to_vec();
    frame.extend_from_slice(&inner);
    frame[16..18].copy_from_slice(&u16::MAX.to_be_bytes());
    frame[38..40].copy_from_slice(&(u16::MAX - 20).to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let check = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..34])
        .unwrap()
        .to_header()
        .calc_header_checksum();
    frame[24..26].copy_from_slice(&check.to_be_bytes());
    let mut sink = VecSink::default();
    let n = super::segment(
        &pieces(&frame, &[3000, 3840]),
        Encap::Vxlan,
        1500,
        &mut sink,
    )
    .expect("cut by the inner length");
    assert_eq!(n, sink.frames.len());
    let mut got = Vec::new();
    for (i, f) in sink.frames.iter().enumerate() {
        assert!(f.len() <= 14 + 1500, "segment {i} fits the MTU");
        got.extend_from_slice(verify(f, true, &format!("segment {i}")).payload);
    }
    assert_eq!(got, data);
}
