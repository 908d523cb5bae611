//! The wire parsers `pipeline::inspect` does not reach, on untrusted frames: the VXLAN header
//! view, and the offload module's segmentation, fragmentation and coalescing. Each either
//! refuses its input with an error or keeps its promises, checked apart from kxdp's own code
//! (headers re-parsed with etherparse, checksums summed here as a receiver sums them):
//!
//! - **segment** and **fragment**: the plan's `count()` frames are committed, none longer than
//!   its `max_frame_len()` nor the MTU; each is IPv4 with a correct header checksum and total
//!   length (and, for VXLAN, correct outer IPv4 and UDP lengths and checksums); segments carry
//!   a correct TCP checksum, consecutive sequence numbers and, joined, the original payload;
//!   fragments carry consecutive offsets, MF on all but the last and, joined, the original
//!   data. A sink running dry stops the cut with `OutOfBuffers` naming the frames committed.
//! - **coalesce**: every frame of the batch is in exactly one run, runs come in the order of
//!   their first frames, no merged run exceeds the limits, and each run's frame is written
//!   whole; a merged frame has a correct IPv4 checksum, and a correct TCP checksum when each
//!   of its segments had one. The same with each frame's first bytes in a first buffer and
//!   the rest in further ones (`coalesce_chained`): a slice of a chained frame starts in its
//!   first buffer and ends with the frame, as the worker chains it.
//! - **vxlan**: `VxlanPacket::new_checked` accepts exactly the buffers that hold a header,
//!   `VxlanRepr::parse` exactly the headers a conforming sender emits, and emitting the parsed
//!   header gives its bytes back.
//!
//! Input: a 6-byte header, then (segment and fragment) up to 7 cut points of 2 bytes each,
//! then the frame; (coalesce) records of a 2-byte length and a frame; (vxlan) the header's
//! bytes on. Header bytes:
//!
//! - `[0]`: bits 0-1 the parser (0 segment, 1 fragment, 2 coalesce, 3 vxlan); bit 2 VXLAN
//!   encapsulation; bit 3 a sink that runs dry after `[5] % 8` frames (segment, fragment), or
//!   checksums fixed up before coalescing (so that mutated frames still merge); bits 4-6 how
//!   many cut points split the frame into pieces;
//! - `[1..3]`: the MTU, 68 to 9000 (segment, fragment), or the coalescer's largest IPv4
//!   length, 20 to 65535;
//! - `[3..5]`: a peer's MSS for `Segments::limit_mss` (0: none), or the coalescer's largest
//!   run in buffers (0: no limit);
//! - `[5]`: extra bytes on every buffer the sink hands out, and the dry sink's frame count; or
//!   (coalesce) 16 times the bytes of each frame's first buffer (0: frames whole).
#![no_main]

use etherparse::{Ipv4HeaderSlice, TcpSlice, UdpHeaderSlice};
use kxdp_dataplane::offload::{
    Coalescer, Encap, FragmentPlan, Fragments, FrameSink, GroLimits, OffloadError, Segments, Tail,
};
use kxdp_dataplane::wire::{VxlanPacket, VxlanRepr};
#[path = "shared/checksum.rs"]
mod checksum;
use checksum::{be16, sum16, verifies};
use libfuzzer_sys::fuzz_target;

/// Bytes before the cut points or frames.
const HEADER: usize = 6;
/// The lowest and highest MTU tried: IPv4's minimum, and a jumbo frame's.
const MTU: core::ops::RangeInclusive<usize> = 68..=9000;
/// The coalescer's batch capacity; a larger batch must be refused (`BatchTooLarge`).
const BATCH: usize = 32;
/// Where the (inner) IPv4 header of a VXLAN frame starts: outer Ethernet, IPv4, UDP and VXLAN
/// headers, then the inner Ethernet header.
const VXLAN_INNER_L3: usize = 64;

/// A sink that records what the cutter asks for and commits: each buffer is filled with junk
/// beforehand (so a byte left unwritten shows in a checksum) and may be longer than asked.
struct Sink {
    frames: Vec<Vec<u8>>,
    pending: Vec<u8>,
    /// The longest buffer asked for.
    longest_ask: usize,
    /// Extra bytes on every buffer.
    slack: usize,
    /// How many buffers it hands out before running dry, if it does.
    limit: Option<usize>,
}

impl Sink {
    fn new(slack: usize, limit: Option<usize>) -> Sink {
        Sink {
            frames: Vec::new(),
            pending: Vec::new(),
            longest_ask: 0,
            slack,
            limit,
        }
    }
}

impl FrameSink for Sink {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.limit.is_some_and(|l| self.frames.len() >= l) {
            return None;
        }
        self.longest_ask = self.longest_ask.max(len);
        self.pending.clear();
        self.pending.resize(len + self.slack, 0xa5);
        Some(&mut self.pending)
    }

    fn commit(&mut self, len: usize) {
        assert!(len <= self.pending.len(), "committed past the buffer");
        self.frames.push(self.pending[..len].to_vec());
    }
}

/// The sum of the IPv4 pseudo header of an L4 packet.
fn pseudo(ip: &Ipv4HeaderSlice<'_>, len: usize) -> u64 {
    let s = sum16(0, &ip.source());
    sum16(s, &ip.destination()) + u64::from(ip.protocol().0) + len as u64
}

/// The IPv4 header at `at` of `frame`, checked as etherparse reads it: a header without
/// options whose checksum verifies and whose total length reaches exactly to the frame's end.
fn ipv4<'a>(frame: &'a [u8], at: usize, what: &str) -> Ipv4HeaderSlice<'a> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[at..]).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(ip.ihl(), 5, "{what}: IPv4 options in an output");
    assert!(
        verifies(sum16(0, ip.slice())),
        "{what}: IPv4 header checksum {:#06x}, want {:#06x}",
        ip.header_checksum(),
        ip.to_header().calc_header_checksum()
    );
    assert_eq!(
        usize::from(ip.total_len()),
        frame.len() - at,
        "{what}: IPv4 total length"
    );
    ip
}

/// Checks the outer headers of a VXLAN frame written by a cutter: IPv4 (lengths, checksum),
/// UDP (length; checksum when the original had one, and then never zero).
fn check_outer(frame: &[u8], udp_checksum: bool, what: &str) {
    let ip = ipv4(frame, 14, &format!("{what}: outer"));
    let udp = UdpHeaderSlice::from_slice(&frame[34..]).unwrap_or_else(|e| panic!("{what}: {e}"));
    let udp_len = frame.len() - 34;
    assert_eq!(usize::from(udp.length()), udp_len, "{what}: UDP length");
    assert_eq!(
        udp.checksum() != 0,
        udp_checksum,
        "{what}: UDP checksum kept"
    );
    if udp_checksum {
        assert!(
            verifies(sum16(pseudo(&ip, udp_len), &frame[34..])),
            "{what}: outer UDP checksum"
        );
    }
}

/// `frame` cut into pieces at `cuts` (positions, any order, clamped to its length).
fn pieces<'a>(frame: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (frame.len() + 1))
        .collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut from = 0;
    for c in at {
        out.push(&frame[from..c]);
        from = c;
    }
    out.push(&frame[from..]);
    out
}

/// What an error from a cutter may be: anything about the input, never the sink's buffer
/// size (this sink always hands out enough), and `OutOfBuffers` only from a dry sink, naming
/// the frames it took.
fn check_error(e: OffloadError, sink: &Sink) {
    match e {
        OffloadError::BufferTooSmall { .. } => panic!("{e}: the sink gave what was asked"),
        OffloadError::OutOfBuffers { emitted } => {
            assert_eq!(Some(emitted), sink.limit, "{e}");
            assert_eq!(emitted, sink.frames.len(), "{e}");
        }
        _ => assert!(sink.frames.is_empty(), "{e} after frames were written"),
    }
}

fn segment(frame: &[u8], pieces: &[&[u8]], encap: Encap, mtu: usize, mss: u16, sink: &mut Sink) {
    let plan = match Segments::new(pieces, encap, mtu) {
        Ok(p) => p.limit_mss(usize::from(mss)),
        Err(e) => return check_error(e, sink),
    };
    let (count, max, header_len) = (plan.count(), plan.max_frame_len(), plan.header_len());
    assert!(plan.mss() >= 1 && (mss == 0 || plan.mss() <= usize::from(mss)));
    assert!(max <= 14 + mtu, "max_frame_len {max} past the MTU {mtu}");
    let got = plan.emit(sink);
    assert!(
        sink.longest_ask <= max,
        "asked {} > {max}",
        sink.longest_ask
    );
    match got {
        Ok(n) => assert_eq!((n, sink.frames.len()), (count, count), "frames written"),
        Err(e) => return check_error(e, sink),
    }
    let vxlan = encap == Encap::Vxlan;
    let l3 = if vxlan { VXLAN_INNER_L3 } else { 14 };
    let udp_checksum = vxlan && be16(frame, 40) != 0;
    let seq0 = u32::from_be_bytes(frame[l3 + 24..l3 + 28].try_into().unwrap());
    let mut payload = Vec::new();
    for (i, f) in sink.frames.iter().enumerate() {
        let what = format!("segment {i} of {count}");
        assert!(
            f.len() <= max && f.len() - 14 <= mtu,
            "{what}: {} bytes",
            f.len()
        );
        if vxlan {
            check_outer(f, udp_checksum, &what);
        }
        let ip = ipv4(f, l3, &what);
        let tcp = TcpSlice::from_slice(&f[l3 + 20..]).unwrap_or_else(|e| panic!("{what}: {e}"));
        let tcp_len = f.len() - l3 - 20;
        assert!(
            verifies(sum16(pseudo(&ip, tcp_len), &f[l3 + 20..])),
            "{what}: TCP checksum"
        );
        assert_eq!(
            tcp.sequence_number(),
            seq0.wrapping_add(payload.len() as u32),
            "{what}: sequence number"
        );
        assert!(
            i + 1 == count || tcp.payload().len() == plan.mss(),
            "{what}: a short segment before the last"
        );
        payload.extend_from_slice(tcp.payload());
    }
    assert_eq!(payload.len(), plan.payload_len(), "payload bytes");
    assert!(
        payload[..] == frame[header_len..header_len + payload.len()],
        "the segments' payload is not the original's"
    );
}

fn fragment(frame: &[u8], pieces: &[&[u8]], encap: Encap, mtu: usize, sink: &mut Sink) {
    let vxlan = encap == Encap::Vxlan;
    let l3 = if vxlan { VXLAN_INNER_L3 } else { 14 };
    let plan = match Fragments::plan(pieces, encap, mtu) {
        Ok(FragmentPlan::Fragments(p)) => p,
        Ok(FragmentPlan::NeedsFragmentation { next_hop_mtu }) => {
            assert!(be16(frame, l3 + 6) & 0x4000 != 0, "DF not set");
            let inner_mtu = mtu - (l3 - 14);
            assert_eq!(usize::from(next_hop_mtu), inner_mtu.min(65535));
            assert!(
                usize::from(be16(frame, l3 + 2)) > inner_mtu,
                "the packet fits"
            );
            return;
        }
        Err(e) => return check_error(e, sink),
    };
    let (count, max) = (plan.count(), plan.max_frame_len());
    assert!(max <= 14 + mtu, "max_frame_len {max} past the MTU {mtu}");
    let got = plan.emit(sink);
    assert!(
        sink.longest_ask <= max,
        "asked {} > {max}",
        sink.longest_ask
    );
    match got {
        Ok(n) => assert_eq!((n, sink.frames.len()), (count, count), "frames written"),
        Err(e) => return check_error(e, sink),
    }
    let udp_checksum = vxlan && be16(frame, 40) != 0;
    let original = Ipv4HeaderSlice::from_slice(&frame[l3..]).expect("the plan's header");
    let data_len = usize::from(original.total_len()) - 20;
    let mut data = Vec::new();
    for (i, f) in sink.frames.iter().enumerate() {
        let what = format!("fragment {i} of {count}");
        assert!(
            f.len() <= max && f.len() - 14 <= mtu,
            "{what}: {} bytes",
            f.len()
        );
        if vxlan {
            check_outer(f, udp_checksum, &what);
        }
        let ip = ipv4(f, l3, &what);
        assert_eq!(ip.identification(), original.identification(), "{what}: ID");
        assert_eq!(ip.dont_fragment(), original.dont_fragment(), "{what}: DF");
        let last = i + 1 == count;
        let mf = if last {
            original.more_fragments()
        } else {
            true
        };
        assert_eq!(ip.more_fragments(), mf, "{what}: MF");
        assert_eq!(
            usize::from(ip.fragments_offset().value()) * 8,
            usize::from(original.fragments_offset().value()) * 8 + data.len(),
            "{what}: offset"
        );
        assert!(
            last || (f.len() - l3 - 20) % 8 == 0,
            "{what}: data not in 8-byte units"
        );
        data.extend_from_slice(&f[l3 + 20..]);
    }
    assert_eq!(data.len(), data_len, "data bytes");
    assert!(
        data[..] == frame[l3 + 20..l3 + 20 + data_len],
        "the fragments' data is not the original's"
    );
}

/// The IPv4 header checksum and, where the header says TCP and the frame holds it, the TCP
/// checksum of `f`, set correct (a mutated frame merges only with correct ones).
fn fix_checksums(f: &mut [u8]) {
    if f.len() < 34 || f[14] != 0x45 {
        return;
    }
    f[24..26].fill(0);
    if let Ok(ip) = Ipv4HeaderSlice::from_slice(&f[14..]) {
        let c = ip.to_header().calc_header_checksum();
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    let end = 14 + usize::from(be16(f, 16));
    if f[23] != 6 || end > f.len() || end < 54 {
        return;
    }
    let (src, dst): ([u8; 4], [u8; 4]) =
        (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
    if let Ok(c) = TcpSlice::from_slice(&f[34..end]).map(|t| t.calc_checksum_ipv4(src, dst)) {
        f[50..52].copy_from_slice(&c.unwrap().to_be_bytes());
    }
}

/// The TCP segment of `f` (IPv4 without options), up to the IPv4 total length.
fn tcp_segment(f: &[u8]) -> Option<(Ipv4HeaderSlice<'_>, TcpSlice<'_>)> {
    let ip = Ipv4HeaderSlice::from_slice(f.get(14..)?).ok()?;
    let end = 14 + usize::from(ip.total_len());
    let tcp = TcpSlice::from_slice(f.get(34..end)?).ok()?;
    (ip.ihl() == 5 && ip.protocol().0 == 6).then_some((ip, tcp))
}

/// The TCP payload of `f`.
fn tcp_payload(f: &[u8]) -> Option<&[u8]> {
    tcp_segment(f).map(|(_, tcp)| tcp.payload())
}

/// Whether `f` holds a TCP segment whose checksum is correct.
fn tcp_checksum_ok(f: &[u8]) -> bool {
    tcp_segment(f).is_some_and(|(ip, tcp)| {
        let seg = tcp.slice();
        verifies(sum16(pseudo(&ip, seg.len()), seg))
    })
}

fn coalesce(params: &[u8], mut rest: &[u8], fix: bool) {
    let max_ip_len = 20 + usize::from(be16(params, 1)) % (65535 - 20 + 1);
    let max_buffers = match usize::from(be16(params, 3)) {
        0 => usize::MAX,
        n => n,
    };
    let limits = GroLimits {
        max_ip_len,
        max_buffers,
    };
    let mut owned: Vec<Vec<u8>> = Vec::new();
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        owned.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if fix {
        owned.iter_mut().for_each(|f| fix_checksums(f));
    }
    let frames: Vec<&[u8]> = owned.iter().map(|f| &f[..]).collect();
    // Chained: each frame's first buffer, and what follows it in 4 KiB buffers.
    let chain_at = usize::from(params[5]) * 16;
    let firsts: Vec<&[u8]> = match chain_at {
        0 => frames.clone(),
        n => frames.iter().map(|f| &f[..n.min(f.len())]).collect(),
    };
    let tail = |i: usize| {
        let len = frames[i].len() - firsts[i].len();
        Tail {
            len,
            buffers: len.div_ceil(4096),
        }
    };
    let mut c = Coalescer::<BATCH>::new();
    let runs = match c.coalesce_chained(&firsts, tail, limits) {
        Ok(runs) => runs.to_vec(),
        Err(e) => {
            assert!(frames.len() > BATCH, "{e}");
            return;
        }
    };
    assert!(frames.len() <= BATCH, "a batch past the capacity taken");
    let mut seen = vec![false; frames.len()];
    let mut previous_first = None;
    for (r, run) in runs.iter().enumerate() {
        let what = format!("run {r} {run:?}");
        assert!(previous_first < Some(run.first), "{what}: out of order");
        previous_first = Some(run.first);
        let slices = c.slices(run);
        assert_eq!(slices.len() + 1, run.segments, "{what}: slices");
        for i in std::iter::once(run.first).chain(slices.iter().map(|s| s.frame)) {
            assert!(
                !std::mem::replace(&mut seen[i], true),
                "{what}: frame {i} twice"
            );
        }
        let mut out = vec![0x5a; run.len() + 1];
        let len = c.write_merged(run, &frames, &mut out);
        assert_eq!(len, Some(run.len()), "{what}: written");
        let out = &out[..run.len()];
        if run.is_merged() {
            // What the worker chains: the first frame's buffers (padding cut where it has one),
            // then each slice from its first buffer on through the frame's further buffers.
            let head = run.first;
            assert!(
                tail(head).len == 0 || run.first_len == frames[head].len(),
                "{what}: a chained first frame cut"
            );
            for s in slices {
                assert!(
                    tail(s.frame).len == 0
                        || (s.offset < firsts[s.frame].len()
                            && s.offset + s.len == frames[s.frame].len()),
                    "{what}: slice {s:?} of a chained frame"
                );
            }
        }
        if !run.is_merged() {
            assert_eq!(out, frames[run.first], "{what}: a single frame changed");
            continue;
        }
        let buffers: usize = std::iter::once(run.first)
            .chain(slices.iter().map(|s| s.frame))
            .map(|i| 1 + tail(i).buffers)
            .sum();
        assert!(buffers <= max_buffers, "{what}: past {max_buffers} buffers");
        assert!(
            usize::from(run.ip_total_len) <= max_ip_len,
            "{what}: past {max_ip_len}"
        );
        ipv4(out, 14, &what);
        // The merged payload is the segments' payloads in order, each read as etherparse
        // reads the segment (padding after the IPv4 packet left out).
        let members: Vec<&[u8]> = std::iter::once(run.first)
            .chain(slices.iter().map(|s| s.frame))
            .map(|i| frames[i])
            .collect();
        let payload: Vec<u8> = members
            .iter()
            .flat_map(|f| tcp_payload(f).expect("a merged frame is a TCP segment"))
            .copied()
            .collect();
        assert!(tcp_payload(out) == Some(&payload[..]), "{what}: payload");
        if members.iter().all(|f| tcp_checksum_ok(f)) {
            assert!(tcp_checksum_ok(out), "{what}: merged TCP checksum");
        }
    }
    assert!(seen.iter().all(|s| *s), "a frame in no run");
}

fn vxlan(bytes: &[u8]) {
    let Ok(packet) = VxlanPacket::new_checked(bytes) else {
        assert!(bytes.len() < 8, "refused a whole header");
        return;
    };
    assert_eq!(packet.payload(), &bytes[8..]);
    let conforming = bytes[..4] == [0x08, 0, 0, 0] && bytes[7] == 0;
    match VxlanRepr::parse(&packet) {
        Ok(repr) => {
            assert!(
                conforming,
                "accepted flags or reserved bits {:02x?}",
                &bytes[..8]
            );
            assert_eq!(
                repr.vni,
                u32::from_be_bytes([0, bytes[4], bytes[5], bytes[6]])
            );
            let mut out = [0xffu8; 8];
            repr.emit(&mut VxlanPacket::new_unchecked(&mut out[..]));
            assert_eq!(out, bytes[..8], "emit does not give the header back");
        }
        Err(_) => assert!(!conforming, "refused {:02x?}", &bytes[..8]),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let (params, rest) = data.split_at(HEADER);
    let sel = params[0];
    let flag = sel & 0x08 != 0;
    match sel & 3 {
        3 => return vxlan(rest),
        2 => return coalesce(params, rest, flag),
        _ => {}
    }
    let encap = if sel & 0x04 != 0 {
        Encap::Vxlan
    } else {
        Encap::Plain
    };
    let mtu = MTU.start() + usize::from(be16(params, 1)) % (MTU.end() - MTU.start() + 1);
    let ncuts = usize::from((sel >> 4) & 7);
    if rest.len() < 2 * ncuts {
        return;
    }
    let (cuts, frame) = rest.split_at(2 * ncuts);
    let cuts: Vec<u16> = cuts.chunks_exact(2).map(|c| be16(c, 0)).collect();
    let pieces = pieces(frame, &cuts);
    let limit = flag.then_some(usize::from(params[5] % 8));
    let mut sink = Sink::new(usize::from(params[5] >> 3), limit);
    if sel & 1 == 0 {
        segment(frame, &pieces, encap, mtu, be16(params, 3), &mut sink);
    } else {
        fragment(frame, &pieces, encap, mtu, &mut sink);
    }
});
