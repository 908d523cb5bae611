//! TCP coalescing in software (GRO): in-order segments of one flow within a batch merged into
//! one large frame, with the rules of Linux's `tcp_gro_receive` and `inet_gro_receive`.
//!
//! [`Coalescer::coalesce`] takes the frames of a batch headed for one pod (single-buffer
//! Ethernet frames, each a few KiB at most; [`Coalescer::coalesce_chained`] takes frames that
//! go on in further buffers, as a jumbo frame in 4 KiB chunks does, every header in the first)
//! and splits the batch into [`Run`]s: every frame
//! belongs to exactly one run, a run is either one frame sent as it is or a TCP segment
//! followed by the segments merged into it, and the runs come in the order of their first
//! frames. Up to [`MAX_OPEN_FLOWS`] flows are merged at once, so interleaved streams coalesce
//! too, as the kernel's GRO list does; segments of one flow never change order.
//!
//! A segment joins the flow's open run when, as the kernel decides:
//!
//! - Ethernet header, IPv4 addresses and TCP ports equal the run's first segment's;
//! - IPv4 without options, with a valid header checksum, not a fragment, same TOS, TTL and
//!   DF; the IP ID one more than the last segment's, or, with DF set, equal to the first's
//!   throughout (decided at the second segment);
//! - TCP: its sequence number follows the run's last byte, same acknowledgment number, same
//!   data offset, window and option bytes, the same flags but for CWR, PSH and FIN, and CWR
//!   clear (a segment with CWR starts a run of its own);
//! - its payload is not empty and not longer than the first segment's; the merged IPv4
//!   total length stays within [`GroLimits::max_ip_len`] and the run's buffers within
//!   [`GroLimits::max_buffers`].
//!
//! A segment with less payload than the first, or with PSH, FIN, URG, RST or SYN, ends the run
//! it joins; one that cannot join any run and has no payload or one of those flags is sent
//! alone at once, as `tcp_gro_receive`'s final flush does. The merged header is the first
//! segment's, with the IPv4 total length, IPv4 checksum, TCP flags (PSH and FIN of the merged
//! segments ORed in) and TCP checksum rewritten.
//!
//! # The merged checksum never reads the payload
//!
//! Each segment's checksum field already encodes the sum of its payload: a valid segment sums,
//! pseudo header and TCP header (checksum field included) and payload, to `0xffff`, so its
//! payload sums to the complement of the pseudo header plus the header as it is. The merged
//! checksum adds those payload sums (byte-swapped where a payload starts at an odd offset of
//! the merged one) to the new pseudo header and header. Reading only headers keeps coalescing
//! cheap, and it keeps errors: the payload sums are the ones each sender computed, so a segment
//! corrupted on the way (its checksum no longer matching its bytes) gives a merged frame whose
//! checksum fails the pod's check too, as the corrupt segment alone would have, rather than a
//! freshly computed checksum that blesses the corruption. The segments' TCP checksums are
//! therefore not verified here (the kernel verifies them in GRO; here the receiver does, once,
//! over the merged frame).
//!
//! Nothing is copied: the caller rewrites the first frame's headers in place
//! ([`Run::rewrite_first`]) and chains each [`PayloadSlice`] after it as further buffers of a
//! multi-buffer frame (a slice of a chained frame goes on in that frame's further buffers);
//! [`Coalescer::write_merged`] does the same into one contiguous buffer.

use super::headers::{addr, be16, ipv4_checksum, put16, IP_DF};
use crate::flow::proto;
use crate::wire::checksum::{self, add, add_at, fold, pseudo_header, sum};
use crate::wire::{tcp_flags, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, TCP_MIN_HEADER_LEN};

/// How many flows are coalesced at once; a new one beyond that closes the oldest run. The
/// kernel holds as many per GRO bucket (`MAX_GRO_SKBS`).
pub const MAX_OPEN_FLOWS: usize = 8;

/// Offsets in a frame this module merges: Ethernet, IPv4 without options, TCP.
const L3: usize = ETHERNET_HEADER_LEN;
const L4: usize = L3 + IPV4_HEADER_LEN;

/// Flags that end a run (the kernel's final flush).
const FLUSH_FLAGS: u8 =
    tcp_flags::URG | tcp_flags::PSH | tcp_flags::RST | tcp_flags::SYN | tcp_flags::FIN;

/// Bounds on a merged frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroLimits {
    /// The largest merged IPv4 total length (at most 65535, which the kernel's default
    /// `gro_max_size` of 64 KiB allows).
    pub max_ip_len: usize,
    /// The most buffers in one merged frame: a segment adds its buffers (one, for a
    /// single-buffer frame), and AF_XDP's copy-mode transmit takes at most `MAX_SKB_FRAGS + 1`
    /// buffers per frame (18 with the default kernel configuration; more and the frame is
    /// dropped with `EOVERFLOW`).
    pub max_buffers: usize,
}

impl GroLimits {
    /// The kernel's own limits: 64 KiB less one byte of IPv4, any number of buffers.
    pub const KERNEL: GroLimits = GroLimits {
        max_ip_len: 65535,
        max_buffers: usize::MAX,
    };
}

impl Default for GroLimits {
    fn default() -> Self {
        GroLimits::KERNEL
    }
}

/// Payload to chain after a run's first frame: `len` bytes at `offset` in frame `frame` (an
/// index into the batch given to [`Coalescer::coalesce`]), going on into the frame's further
/// buffers where it has some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadSlice {
    /// Index of the frame in the batch.
    pub frame: usize,
    /// Offset of the TCP payload in that frame.
    pub offset: usize,
    /// Payload bytes (Ethernet padding excluded).
    pub len: usize,
}

/// What follows a frame's first buffer in a multi-buffer frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tail {
    /// Bytes in the further buffers.
    pub len: usize,
    /// How many further buffers.
    pub buffers: usize,
}

impl Tail {
    /// A single-buffer frame's.
    pub const NONE: Tail = Tail { len: 0, buffers: 0 };
}

/// Frames of a batch that leave as one: frame `first`, followed by `segments - 1` payload
/// slices when merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Run {
    /// Index of the first frame in the batch.
    pub first: usize,
    /// How many frames the run merges; 1 means frame `first` goes as it is.
    pub segments: usize,
    /// Bytes of frame `first` to send (in all its buffers): its headers and payload,
    /// Ethernet padding cut when merged; the whole frame otherwise.
    pub first_len: usize,
    /// Bytes of headers (Ethernet, IPv4, TCP with options) of frame `first`, when merged.
    pub header_len: usize,
    /// The merged IPv4 total length.
    pub ip_total_len: u16,
    /// The merged IPv4 header checksum.
    pub ip_checksum: u16,
    /// The merged TCP flags.
    pub tcp_flags: u8,
    /// The merged TCP checksum.
    pub tcp_checksum: u16,
    /// The run's slices in [`Coalescer`]'s list.
    slices_at: usize,
}

impl Run {
    /// Whether the run merges several frames (and the first one's headers need rewriting).
    pub fn is_merged(&self) -> bool {
        self.segments > 1
    }

    /// Bytes of the frame the run makes: the merged frame, or the single frame as it is.
    pub fn len(&self) -> usize {
        if self.is_merged() {
            ETHERNET_HEADER_LEN + usize::from(self.ip_total_len)
        } else {
            self.first_len
        }
    }

    /// Whether the run makes an empty frame (never: every run has a first frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the merged header fields into the run's first frame `frame` (in place, before
    /// it is sent with the payload slices after it). Does nothing for a run of one frame.
    ///
    /// # Panics
    /// If `frame` is shorter than the headers: it must be the run's first frame.
    pub fn rewrite_first(&self, frame: &mut [u8]) {
        if !self.is_merged() {
            return;
        }
        put16(frame, L3 + 2, self.ip_total_len);
        put16(frame, L3 + 10, self.ip_checksum);
        frame[L4 + 13] = self.tcp_flags;
        put16(frame, L4 + 16, self.tcp_checksum);
    }
}

/// The facts about a frame that coalescing looks at.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// TCP header length.
    thl: usize,
    /// TCP payload bytes.
    payload: usize,
    /// IPv4 ID.
    id: u16,
    /// Whether DF is set.
    df: bool,
    /// TCP sequence number.
    seq: u32,
    /// TCP flags.
    flags: u8,
}

impl Segment {
    /// The frame whose first buffer is `f`, followed by `tail`, as a TCP segment this module
    /// can merge, or `None`. A chained frame must end where its IPv4 packet does (no padding
    /// to cut in a further buffer), and its first buffer must hold its headers and the start
    /// of its payload.
    #[inline]
    fn parse(f: &[u8], tail: Tail) -> Option<Segment> {
        if f.len() < L4 + TCP_MIN_HEADER_LEN
            || be16(f, 12) != 0x0800
            || f[L3] != 0x45
            || f[L3 + 9] != proto::TCP
        {
            return None;
        }
        let ip_len = usize::from(be16(f, L3 + 2));
        let flags_offset = be16(f, L3 + 6);
        // MF, a fragment offset or the reserved bit: the kernel flushes these too. So it does
        // a header with a bad checksum, which must not be blessed with a fresh one.
        let whole = if tail.len == 0 {
            L3 + ip_len <= f.len()
        } else {
            L3 + ip_len == f.len() + tail.len
        };
        if flags_offset & !IP_DF != 0 || !whole || checksum::checksum(&f[L3..L4]) != 0 {
            return None;
        }
        let thl = usize::from(f[L4 + 12] >> 4) * 4;
        if thl < TCP_MIN_HEADER_LEN
            || IPV4_HEADER_LEN + thl > ip_len
            || (tail.len > 0 && L4 + thl >= f.len())
        {
            return None;
        }
        Some(Segment {
            thl,
            payload: ip_len - IPV4_HEADER_LEN - thl,
            id: be16(f, L3 + 4),
            df: flags_offset & IP_DF != 0,
            seq: u32::from_be_bytes([f[L4 + 4], f[L4 + 5], f[L4 + 6], f[L4 + 7]]),
            flags: f[L4 + 13],
        })
    }

    /// The sum of the segment's payload, from its checksum field: the complement of the pseudo
    /// header plus the TCP header as it is (see the module docs).
    #[inline]
    fn payload_sum(&self, f: &[u8]) -> u32 {
        let tcp_len = (self.thl + self.payload) as u16;
        let pseudo = pseudo_header(addr(f, L3 + 12), addr(f, L3 + 16), proto::TCP, tcp_len);
        u32::from(fold(sum(&f[L4..L4 + self.thl], pseudo)))
    }
}

/// A run still taking segments.
#[derive(Debug, Clone, Copy, Default)]
struct Open {
    /// Its index in the runs.
    run: usize,
    /// Its first frame.
    head: usize,
    /// Its last frame so far.
    last: usize,
    /// The first segment's payload length: no later one may be longer.
    mss: usize,
    /// The first segment's IPv4 ID and DF.
    id: u16,
    df: bool,
    /// Whether the IDs are fixed rather than counting (decided at the second segment).
    fixed_id: bool,
    /// Segments so far.
    count: usize,
    /// Buffers so far.
    buffers: usize,
    /// The sequence number the next segment must have.
    next_seq: u32,
    /// Merged IPv4 total length so far.
    ip_len: usize,
    /// Merged payload bytes so far.
    payload: usize,
    /// Sum of the merged payload, from the checksum fields.
    payload_sum: u32,
    /// PSH and FIN of the merged segments.
    flags_or: u8,
}

/// The error of a batch larger than a [`Coalescer`] was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a batch of {len} frames exceeds the coalescer's capacity of {capacity}")]
pub struct BatchTooLarge {
    /// Frames in the batch.
    pub len: usize,
    /// The coalescer's `N`.
    pub capacity: usize,
}

/// Coalesces batches of up to `N` frames; reusable, and allocation-free (keep one per worker:
/// it holds a few arrays of `N` entries).
#[derive(Debug, Clone)]
pub struct Coalescer<const N: usize> {
    runs: [Run; N],
    run_count: usize,
    slices: [PayloadSlice; N],
    /// Each frame's payload, by frame index.
    payloads: [PayloadSlice; N],
    /// Each frame's further buffers, by frame index.
    tails: [Tail; N],
    /// The next frame of each frame's run, or `usize::MAX`.
    next: [usize; N],
    open: [Open; MAX_OPEN_FLOWS],
    open_count: usize,
}

impl<const N: usize> Default for Coalescer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Coalescer<N> {
    /// A coalescer for batches of up to `N` frames.
    pub fn new() -> Self {
        Coalescer {
            runs: [Run::default(); N],
            run_count: 0,
            slices: [PayloadSlice::default(); N],
            payloads: [PayloadSlice::default(); N],
            tails: [Tail::NONE; N],
            next: [usize::MAX; N],
            open: [Open::default(); MAX_OPEN_FLOWS],
            open_count: 0,
        }
    }

    /// Splits the batch `frames` (each one whole single-buffer Ethernet frame) into runs, in
    /// the order of their first frames, every frame in exactly one; see the module docs for
    /// which frames merge. The runs stay readable through [`Coalescer::runs`] until the next
    /// call.
    pub fn coalesce(
        &mut self,
        frames: &[&[u8]],
        limits: GroLimits,
    ) -> Result<&[Run], BatchTooLarge> {
        self.coalesce_chained(frames, |_| Tail::NONE, limits)
    }

    /// As [`Coalescer::coalesce`], for frames of which `frames` holds the first buffers and
    /// `tail(i)` says what follows frame `i`'s (the payload slices then run on into those
    /// buffers, and [`Run::first_len`] counts them).
    pub fn coalesce_chained(
        &mut self,
        frames: &[&[u8]],
        tail: impl Fn(usize) -> Tail,
        limits: GroLimits,
    ) -> Result<&[Run], BatchTooLarge> {
        if frames.len() > N {
            return Err(BatchTooLarge {
                len: frames.len(),
                capacity: N,
            });
        }
        self.run_count = 0;
        self.open_count = 0;
        for (i, &f) in frames.iter().enumerate() {
            self.next[i] = usize::MAX;
            self.tails[i] = tail(i);
            let Some(seg) = Segment::parse(f, self.tails[i]) else {
                self.alone(i, f.len() + self.tails[i].len);
                continue;
            };
            self.payloads[i] = PayloadSlice {
                frame: i,
                offset: L4 + seg.thl,
                len: seg.payload,
            };
            match self.find_open(frames, f) {
                Some(o) => match self.try_merge(o, frames, i, &seg, limits) {
                    Merge::Merged { ends_run: false } => {}
                    Merge::Merged { ends_run: true } => self.close(o, frames),
                    Merge::No => {
                        self.close(o, frames);
                        self.start(i, frames, &seg);
                    }
                },
                None => self.start(i, frames, &seg),
            }
        }
        while self.open_count > 0 {
            self.close(0, frames);
        }
        self.lay_out_slices();
        Ok(self.runs())
    }

    /// The runs of the last batch.
    pub fn runs(&self) -> &[Run] {
        &self.runs[..self.run_count]
    }

    /// The payload slices to chain after `run`'s first frame, in order.
    pub fn slices(&self, run: &Run) -> &[PayloadSlice] {
        let at = run.slices_at.min(self.slices.len());
        let len = run.segments.saturating_sub(1).min(self.slices.len() - at);
        &self.slices[at..at + len]
    }

    /// Writes the frame `run` makes from the batch `frames` (the same as given to
    /// [`Coalescer::coalesce`]) into `out` as one contiguous frame; returns its length, or
    /// `None` if `out` is too short or the run takes bytes of further buffers.
    pub fn write_merged(&self, run: &Run, frames: &[&[u8]], out: &mut [u8]) -> Option<usize> {
        let len = run.len();
        let out = out.get_mut(..len)?;
        let first = frames.get(run.first)?.get(..run.first_len)?;
        out[..run.first_len].copy_from_slice(first);
        run.rewrite_first(out);
        let mut at = run.first_len;
        for s in self.slices(run) {
            let bytes = frames.get(s.frame)?.get(s.offset..s.offset + s.len)?;
            out.get_mut(at..at + s.len)?.copy_from_slice(bytes);
            at += s.len;
        }
        (at == len).then_some(len)
    }

    /// Records frame `i` as a run of its own.
    fn alone(&mut self, i: usize, len: usize) {
        self.runs[self.run_count] = Run {
            first: i,
            segments: 1,
            first_len: len,
            ..Run::default()
        };
        self.run_count += 1;
    }

    /// The open run of the flow of frame `f`, if any.
    #[inline]
    fn find_open(&self, frames: &[&[u8]], f: &[u8]) -> Option<usize> {
        self.open[..self.open_count].iter().position(|o| {
            let h = frames[o.head];
            // Ethernet header, then the addresses and ports.
            h[..ETHERNET_HEADER_LEN] == f[..ETHERNET_HEADER_LEN]
                && h[L3 + 12..L4 + 4] == f[L3 + 12..L4 + 4]
        })
    }

    /// Frame `i` starts a run of its flow, or goes alone if it cannot be merged into.
    fn start(&mut self, i: usize, frames: &[&[u8]], seg: &Segment) {
        let (f, tail) = (frames[i], self.tails[i]);
        if seg.payload == 0 || seg.flags & FLUSH_FLAGS != 0 {
            self.alone(i, f.len() + tail.len);
            return;
        }
        if self.open_count == MAX_OPEN_FLOWS {
            self.close(0, frames);
        }
        let run = self.run_count;
        self.alone(i, f.len() + tail.len);
        self.open[self.open_count] = Open {
            run,
            head: i,
            last: i,
            mss: seg.payload,
            id: seg.id,
            df: seg.df,
            fixed_id: false,
            count: 1,
            buffers: 1 + tail.buffers,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            ip_len: IPV4_HEADER_LEN + seg.thl + seg.payload,
            payload: seg.payload,
            payload_sum: seg.payload_sum(f),
            flags_or: 0,
        };
        self.open_count += 1;
    }

    /// Merges frame `i` into open run `o` if the rules allow.
    #[inline]
    fn try_merge(
        &mut self,
        o: usize,
        frames: &[&[u8]],
        i: usize,
        seg: &Segment,
        limits: GroLimits,
    ) -> Merge {
        let open = &mut self.open[o];
        let (h, f) = (frames[open.head], frames[i]);
        let buffers = 1 + self.tails[i].buffers;
        // IPv4: TOS, TTL, DF.
        if h[L3 + 1] != f[L3 + 1] || h[L3 + 8] != f[L3 + 8] || open.df != seg.df {
            return Merge::No;
        }
        // The ID counts up by one a segment, or (DF only) stays as the first one's.
        let id_offset = seg.id.wrapping_sub(open.id);
        if open.count == 1 && open.df && id_offset == 0 {
            open.fixed_id = true;
        }
        let expected = if open.fixed_id { 0 } else { open.count as u16 };
        if id_offset != expected {
            return Merge::No;
        }
        // TCP: data offset, window and flags but CWR, PSH and FIN equal (the kernel compares
        // the whole 32-bit word at offset 12); CWR clear; acknowledgment and options equal.
        let mask = !(tcp_flags::CWR | tcp_flags::PSH | tcp_flags::FIN);
        if h[L4 + 12] != f[L4 + 12]
            || (h[L4 + 13] ^ f[L4 + 13]) & mask != 0
            || h[L4 + 14..L4 + 16] != f[L4 + 14..L4 + 16]
            || seg.flags & tcp_flags::CWR != 0
            || h[L4 + 8..L4 + 12] != f[L4 + 8..L4 + 12]
            || h[L4 + TCP_MIN_HEADER_LEN..L4 + seg.thl] != f[L4 + TCP_MIN_HEADER_LEN..L4 + seg.thl]
        {
            return Merge::No;
        }
        // Payload: not empty, not longer than the first's, contiguous, within the limits.
        if seg.payload == 0
            || seg.payload > open.mss
            || seg.seq != open.next_seq
            || open.ip_len + seg.payload > limits.max_ip_len.min(65535)
            || open.buffers + buffers > limits.max_buffers
        {
            return Merge::No;
        }
        open.payload_sum = add_at(open.payload_sum, seg.payload_sum(f), open.payload);
        open.payload += seg.payload;
        open.ip_len += seg.payload;
        open.next_seq = open.next_seq.wrapping_add(seg.payload as u32);
        open.count += 1;
        open.buffers += buffers;
        open.flags_or |= seg.flags & (tcp_flags::PSH | tcp_flags::FIN);
        self.next[open.last] = i;
        open.last = i;
        Merge::Merged {
            ends_run: seg.payload < open.mss || seg.flags & FLUSH_FLAGS != 0,
        }
    }

    /// Closes open run `o`: computes its merged header fields.
    fn close(&mut self, o: usize, frames: &[&[u8]]) {
        let open = self.open[o];
        // Keep the others in order of age.
        self.open.copy_within(o + 1..self.open_count, o);
        self.open_count -= 1;
        if open.count == 1 {
            return; // Goes as it is.
        }
        let h = frames[open.head];
        let thl = open.ip_len - IPV4_HEADER_LEN - open.payload;
        let header_len = L4 + thl;

        let mut ip = [0u8; IPV4_HEADER_LEN];
        ip.copy_from_slice(&h[L3..L4]);
        put16(&mut ip, 2, open.ip_len as u16);
        let ip_checksum = ipv4_checksum(&ip);

        let flags = h[L4 + 13] | open.flags_or;
        // The TCP header with the merged flags and a zero checksum: its sum is the header's as
        // it is, less the old flags word and checksum, plus the new flags word.
        let old_word = be16(h, L4 + 12);
        let new_word = (old_word & 0xff00) | u16::from(flags);
        let check = be16(h, L4 + 16);
        let header_sum = add(
            sum(&h[L4..header_len], 0),
            u32::from(!old_word) + u32::from(new_word) + u32::from(!check),
        );
        let tcp_len = (open.ip_len - IPV4_HEADER_LEN) as u16;
        let pseudo = pseudo_header(addr(h, L3 + 12), addr(h, L3 + 16), proto::TCP, tcp_len);
        let tcp_checksum = fold(add(add(header_sum, pseudo), open.payload_sum));

        self.runs[open.run] = Run {
            first: open.head,
            segments: open.count,
            first_len: header_len + self.payloads[open.head].len,
            header_len,
            ip_total_len: open.ip_len as u16,
            ip_checksum,
            tcp_flags: flags,
            tcp_checksum,
            slices_at: 0,
        };
    }

    /// Writes every merged run's slices, in run order, following the frames' links.
    fn lay_out_slices(&mut self) {
        let mut at = 0;
        for r in 0..self.run_count {
            let run = &mut self.runs[r];
            run.slices_at = at;
            if !run.is_merged() {
                continue;
            }
            let mut frame = self.next[run.first];
            while frame != usize::MAX {
                self.slices[at] = self.payloads[frame];
                at += 1;
                frame = self.next[frame];
            }
        }
    }
}

/// Whether a segment joined a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// It did, and `ends_run` says whether it was the run's last.
    Merged { ends_run: bool },
    /// It did not: the run ends before it.
    No,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::segment::tests::{GOLDEN_SEGMENT, GOLDEN_SEGMENTS};
    use crate::offload::testing::{payload, tcp_frame, timestamps, udp_frame, verify, TcpSpec};
    use crate::wire::build::Ipv4Opts;
    use tcp_flags::{ACK, CWR, ECE, FIN, PSH, SYN, URG};

    /// Segments of one stream with payloads of `sizes`, IDs counting up from `spec`'s.
    fn stream(spec: &TcpSpec, sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut seq = spec.seq;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let s = TcpSpec {
                    seq,
                    id: spec.id.wrapping_add(i as u16),
                    ..spec.clone()
                };
                seq = seq.wrapping_add(n as u32);
                tcp_frame(&s, &payload(n, 100 + i as u64))
            })
            .collect()
    }

    fn default_stream(sizes: &[usize]) -> Vec<Vec<u8>> {
        let spec = TcpSpec {
            options: timestamps(1000, 2000),
            ..TcpSpec::default()
        };
        stream(&spec, sizes)
    }

    /// Coalesces `frames` and checks the runs against `expect` (first frame, segments): every
    /// frame in exactly one run, runs in order of their first frames, every merged frame valid
    /// (etherparse) and carrying its frames' payloads in order. Returns the merged frames.
    fn check(frames: &[Vec<u8>], limits: GroLimits, expect: &[(usize, usize)]) -> Vec<Vec<u8>> {
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let mut c = Coalescer::<64>::new();
        let runs = c.coalesce(&refs, limits).unwrap().to_vec();
        let got: Vec<(usize, usize)> = runs.iter().map(|r| (r.first, r.segments)).collect();
        assert_eq!(got, expect);
        let mut seen = vec![0; frames.len()];
        let mut out = Vec::new();
        for (k, run) in runs.iter().enumerate() {
            seen[run.first] += 1;
            let mut merged = vec![0; run.len()];
            assert_eq!(c.write_merged(run, &refs, &mut merged), Some(run.len()));
            assert_eq!(c.slices(run).len(), run.segments - 1);
            if run.is_merged() {
                let v = verify(&merged, false, &format!("run {k}"));
                let mut want = verify(&frames[run.first], false, "first").payload.to_vec();
                for s in c.slices(run) {
                    seen[s.frame] += 1;
                    want.extend_from_slice(verify(&frames[s.frame], false, "next").payload);
                }
                assert_eq!(v.payload, want, "run {k} payload");
            } else {
                assert_eq!(merged, frames[run.first], "run {k} goes as it is");
            }
            out.push(merged);
        }
        assert!(seen.iter().all(|&n| n == 1), "each frame once: {seen:?}");
        out
    }

    #[test]
    fn golden_segments_merge_back_into_the_golden_frame() {
        let frames: Vec<Vec<u8>> = GOLDEN_SEGMENTS.iter().map(|f| f.to_vec()).collect();
        let out = check(&frames, GroLimits::KERNEL, &[(0, 2)]);
        // CWR from the first, PSH and FIN from the last: the original, byte for byte.
        assert_eq!(out[0], GOLDEN_SEGMENT);
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let mut c = Coalescer::<4>::new();
        let run = c.coalesce(&refs, GroLimits::KERNEL).unwrap()[0];
        assert_eq!(
            (run.first_len, run.header_len, run.ip_total_len),
            (59, 54, 50)
        );
        assert_eq!(
            c.slices(&run),
            [PayloadSlice {
                frame: 1,
                offset: 54,
                len: 5
            }]
        );
        // In place: rewriting the first frame's headers then chaining the slice.
        let mut first = frames[0].clone();
        run.rewrite_first(&mut first);
        first.extend_from_slice(&frames[1][54..]);
        assert_eq!(first, GOLDEN_SEGMENT);
    }

    #[test]
    fn forty_four_segments_make_one_frame_and_the_limit_splits() {
        let out = check(&default_stream(&[1448; 44]), GroLimits::KERNEL, &[(0, 44)]);
        assert_eq!(out[0].len(), 14 + 20 + 32 + 44 * 1448);
        // 45 fit in 65535 bytes of IPv4 (65212); the 46th would not.
        check(
            &default_stream(&[1448; 50]),
            GroLimits::KERNEL,
            &[(0, 45), (45, 5)],
        );
        let limits = GroLimits {
            max_buffers: 18,
            ..GroLimits::KERNEL
        };
        check(
            &default_stream(&[1448; 40]),
            limits,
            &[(0, 18), (18, 18), (36, 4)],
        );
        let limits = GroLimits {
            max_ip_len: 3000,
            ..GroLimits::KERNEL
        };
        check(&default_stream(&[1000; 4]), limits, &[(0, 2), (2, 2)]);
    }

    /// Jumbo frames as a 4 KiB-chunk UMEM holds them: a first buffer of 3,840 bytes, then
    /// buffers of 4,096.
    #[test]
    fn chained_frames_merge_within_the_buffer_limit() {
        // 8,964-byte frames: 3,840 + 4,096 + 1,028, three buffers each.
        let frames = default_stream(&[8898; 8]);
        const FIRST: usize = 3840;
        let firsts: Vec<&[u8]> = frames.iter().map(|f| &f[..FIRST]).collect();
        let tail = |i: usize| {
            let len = frames[i].len() - FIRST;
            Tail {
                len,
                buffers: len.div_ceil(4096),
            }
        };
        let limits = GroLimits {
            max_buffers: 18,
            ..GroLimits::KERNEL
        };
        let mut c = Coalescer::<64>::new();
        let runs = c.coalesce_chained(&firsts, tail, limits).unwrap().to_vec();
        // Seven would fit in 64 KiB of IPv4; 18 buffers take six.
        let got: Vec<(usize, usize)> = runs.iter().map(|r| (r.first, r.segments)).collect();
        assert_eq!(got, [(0, 6), (6, 2)]);
        let mut contiguous = Coalescer::<64>::new();
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let six = GroLimits {
            max_buffers: 6,
            ..GroLimits::KERNEL
        };
        let same = contiguous.coalesce(&refs, six).unwrap();
        for (k, run) in runs.iter().enumerate() {
            // The run's bytes gathered from each frame's buffers, as the worker chains them.
            let mut merged = frames[run.first][..run.first_len].to_vec();
            run.rewrite_first(&mut merged);
            for s in c.slices(run) {
                merged.extend_from_slice(&frames[s.frame][s.offset..s.offset + s.len]);
            }
            assert_eq!(merged.len(), run.len(), "run {k}");
            let v = verify(&merged, false, &format!("run {k}"));
            let want: Vec<u8> = (run.first..run.first + run.segments)
                .flat_map(|f| verify(&frames[f], false, "segment").payload.to_vec())
                .collect();
            assert_eq!(v.payload, want, "run {k} payload");
            assert_eq!(
                *run,
                Run {
                    slices_at: run.slices_at,
                    ..same[k]
                },
                "run {k} as merged whole"
            );
            // The first buffers alone do not hold it.
            let mut out = vec![0; run.len()];
            assert_eq!(c.write_merged(run, &firsts, &mut out), None);
        }
        // A chained frame that goes on past its packet (padding in a further buffer), or whose
        // payload does not start in its first buffer, goes alone.
        let padded = |i: usize| Tail {
            len: tail(i).len + 4,
            ..tail(i)
        };
        let alone: Vec<(usize, usize)> = (0..8).map(|i| (i, 1)).collect();
        let got = c.coalesce_chained(&firsts, padded, limits).unwrap();
        assert_eq!(
            got.iter()
                .map(|r| (r.first, r.segments))
                .collect::<Vec<_>>(),
            alone
        );
        for first in [60, 66] {
            let short: Vec<&[u8]> = frames.iter().map(|f| &f[..first]).collect();
            let rest = |i: usize| Tail {
                len: frames[i].len() - first,
                buffers: 3,
            };
            let got = c.coalesce_chained(&short, rest, GroLimits::KERNEL).unwrap();
            let got: Vec<(usize, usize)> = got.iter().map(|r| (r.first, r.segments)).collect();
            assert_eq!(got, alone, "first buffers of {first} bytes");
            assert!(c
                .runs()
                .iter()
                .all(|r| r.first_len == frames[r.first].len()));
        }
    }

    #[test]
    fn a_corrupted_segment_spoils_the_merged_checksum() {
        let mut frames = default_stream(&[1448, 1448, 1447, 1]);
        let out = check(&frames, GroLimits::KERNEL, &[(0, 3), (3, 1)]);
        verify(&out[0], false, "intact");
        // Flip one payload byte of each segment in turn (odd and even offsets, the first
        // segment and later ones): the merged frame must fail the check.
        for (k, at) in [(0usize, 66usize), (1, 100), (1, 101), (2, 1500)] {
            let mut bad = frames.clone();
            bad[k][at] ^= 0x40;
            let refs: Vec<&[u8]> = bad.iter().map(|f| &f[..]).collect();
            let mut c = Coalescer::<8>::new();
            let run = c.coalesce(&refs, GroLimits::KERNEL).unwrap()[0];
            assert_eq!(run.segments, 3);
            let mut merged = vec![0; run.len()];
            c.write_merged(&run, &refs, &mut merged).unwrap();
            let tcp = etherparse::TcpSlice::from_slice(&merged[34..]).unwrap();
            let computed = tcp
                .calc_checksum_ipv4([10, 244, 1, 5], [10, 244, 2, 7])
                .unwrap();
            assert_ne!(computed, tcp.checksum(), "segment {k} byte {at} flipped");
        }
        // A corrupted header field the merge keeps (the window is compared, so use the
        // urgent pointer, which is not) spoils it too.
        frames[1][52] ^= 1;
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let mut c = Coalescer::<8>::new();
        let run = c.coalesce(&refs, GroLimits::KERNEL).unwrap()[0];
        let mut merged = vec![0; run.len()];
        c.write_merged(&run, &refs, &mut merged).unwrap();
        let tcp = etherparse::TcpSlice::from_slice(&merged[34..]).unwrap();
        let computed = tcp
            .calc_checksum_ipv4([10, 244, 1, 5], [10, 244, 2, 7])
            .unwrap();
        assert_ne!(computed, tcp.checksum());
    }

    /// A three-segment stream whose middle segment is changed by `change`.
    fn with_middle(change: impl FnOnce(&mut TcpSpec)) -> Vec<Vec<u8>> {
        let mut frames = default_stream(&[1000, 1000, 1000]);
        let mut spec = TcpSpec {
            options: timestamps(1000, 2000),
            seq: 1_001_000,
            id: 0x1235,
            ..TcpSpec::default()
        };
        change(&mut spec);
        frames[1] = tcp_frame(&spec, &payload(1000, 101));
        frames
    }

    #[test]
    fn nothing_merges_across_a_difference() {
        type Change = fn(&mut TcpSpec);
        let cases: [(&str, Change); 10] = [
            ("sequence gap", |s| s.seq += 1),
            ("ack", |s| s.ack += 1),
            ("ECE", |s| s.flags |= ECE),
            ("options", |s| s.options = timestamps(1001, 2000)),
            ("no options", |s| s.options.clear()),
            ("TTL", |s| s.ttl -= 1),
            ("TOS", |s| s.tos = 0x02),
            ("window", |s| s.window += 1),
            ("DF", |s| s.df = false),
            ("ID", |s| s.id += 1),
        ];
        for (what, change) in cases {
            let frames = with_middle(change);
            // The middle one cannot join the first; the third cannot join the middle either
            // (the same difference, or a gap), except where it continues the middle's run.
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let mut c = Coalescer::<8>::new();
            let runs = c.coalesce(&refs, GroLimits::KERNEL).unwrap();
            assert!(
                runs.iter().all(|r| r.first != 0 || r.segments == 1),
                "{what}: merged into the first: {runs:?}"
            );
        }
        // A header with a bad checksum is not merged (nor given a fresh checksum).
        let mut frames = default_stream(&[1000, 1000, 1000]);
        frames[1][24] ^= 0x10;
        check(&frames, GroLimits::KERNEL, &[(0, 1), (1, 1), (2, 1)]);
        // Frames from another MAC, or not TCP, go alone.
        let mut frames = default_stream(&[1000, 1000]);
        frames[1][6] ^= 1;
        check(&frames, GroLimits::KERNEL, &[(0, 1), (1, 1)]);
        let udp = udp_frame(Ipv4Opts::default(), &payload(1000, 5));
        check(&[udp.clone(), udp], GroLimits::KERNEL, &[(0, 1), (1, 1)]);
    }

    #[test]
    fn flags_end_or_refuse_a_run_as_the_kernel_does() {
        // PSH and FIN join and end the run; the flags are ORed into the merged header.
        let mut frames = default_stream(&[1000, 1000, 1000, 1000]);
        let spec = |seq, id, flags| TcpSpec {
            options: timestamps(1000, 2000),
            seq,
            id,
            flags,
            ..TcpSpec::default()
        };
        frames[1] = tcp_frame(&spec(1_001_000, 0x1235, ACK | PSH), &payload(1000, 101));
        let out = check(&frames, GroLimits::KERNEL, &[(0, 2), (2, 2)]);
        assert_eq!(out[0][47], ACK | PSH);
        frames[3] = tcp_frame(&spec(1_003_000, 0x1237, ACK | FIN), &payload(1000, 103));
        let out = check(&frames, GroLimits::KERNEL, &[(0, 2), (2, 2)]);
        assert_eq!(out[1][47], ACK | FIN);
        // CWR on the first is kept; on a later one it starts a new run.
        let mut frames = default_stream(&[1000, 1000, 1000]);
        frames[0] = tcp_frame(&spec(1_000_000, 0x1234, ACK | CWR), &payload(1000, 100));
        let out = check(&frames, GroLimits::KERNEL, &[(0, 3)]);
        assert_eq!(out[0][47], ACK | CWR);
        frames[1] = tcp_frame(&spec(1_001_000, 0x1235, ACK | CWR), &payload(1000, 101));
        let out = check(&frames, GroLimits::KERNEL, &[(0, 1), (1, 2)]);
        assert_eq!(out[1][47], ACK | CWR);
        // SYN, RST and URG go alone; so does a segment without payload.
        for flags in [SYN | ACK, ACK | URG, tcp_flags::RST | ACK] {
            let mut frames = default_stream(&[1000, 1000, 1000]);
            frames[1] = tcp_frame(&spec(1_001_000, 0x1235, flags), &payload(1000, 101));
            check(&frames, GroLimits::KERNEL, &[(0, 1), (1, 1), (2, 1)]);
        }
        let frames = default_stream(&[1000, 0, 1000]);
        check(&frames, GroLimits::KERNEL, &[(0, 1), (1, 1), (2, 1)]);
        // A first segment with PSH is never held.
        let mut frames = default_stream(&[1000, 1000]);
        frames[0] = tcp_frame(&spec(1_000_000, 0x1234, ACK | PSH), &payload(1000, 100));
        check(&frames, GroLimits::KERNEL, &[(0, 1), (1, 1)]);
    }

    #[test]
    fn sizes_end_runs_as_the_kernel_does() {
        // A shorter segment joins and ends the run; a longer one starts a new one.
        check(
            &default_stream(&[1000, 1000, 999, 1000]),
            GroLimits::KERNEL,
            &[(0, 3), (3, 1)],
        );
        check(
            &default_stream(&[1000, 1001, 1001, 500]),
            GroLimits::KERNEL,
            &[(0, 1), (1, 3)],
        );
    }

    #[test]
    fn fixed_ids_merge_only_with_df() {
        let fixed = |df: bool| {
            let spec = TcpSpec {
                id: 0,
                df,
                ..TcpSpec::default()
            };
            let mut frames = stream(&spec, &[1000; 3]);
            for f in &mut frames {
                f[18..20].copy_from_slice(&[0, 0]);
                let c = crate::offload::headers::ipv4_checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
            frames
        };
        check(&fixed(true), GroLimits::KERNEL, &[(0, 3)]);
        // Without DF the second segment's ID must be one more.
        check(&fixed(false), GroLimits::KERNEL, &[(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn interleaved_flows_merge_apart_and_keep_their_order() {
        let a = default_stream(&[1000; 4]);
        let b = stream(
            &TcpSpec {
                src_port: 40001,
                id: 0x7000,
                ..TcpSpec::default()
            },
            &[700; 3],
        );
        let udp = udp_frame(Ipv4Opts::default(), &payload(100, 9));
        let frames = vec![
            a[0].clone(),
            b[0].clone(),
            a[1].clone(),
            udp.clone(),
            b[1].clone(),
            a[2].clone(),
            b[2].clone(),
            a[3].clone(),
        ];
        check(&frames, GroLimits::KERNEL, &[(0, 4), (1, 3), (3, 1)]);
        // More flows than are held at once: the oldest run closes to make room. Flow 0's
        // run is closed when flow 8 arrives, so its second segment starts anew.
        let flows: Vec<Vec<Vec<u8>>> = (0..MAX_OPEN_FLOWS as u16 + 1)
            .map(|k| {
                stream(
                    &TcpSpec {
                        src_port: 41000 + k,
                        ..TcpSpec::default()
                    },
                    &[500, 500],
                )
            })
            .collect();
        let mut frames: Vec<Vec<u8>> = flows.iter().map(|f| f[0].clone()).collect();
        frames.extend(flows[1..].iter().map(|f| f[1].clone()));
        frames.push(flows[0][1].clone());
        let n = flows.len();
        let mut expect = vec![(0, 1)];
        expect.extend((1..n).map(|k| (k, 2)));
        expect.push((2 * n - 1, 1));
        check(&frames, GroLimits::KERNEL, &expect);
    }

    #[test]
    fn batches_beyond_capacity_are_refused() {
        let frames = default_stream(&[100; 5]);
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let mut c = Coalescer::<4>::new();
        assert_eq!(
            c.coalesce(&refs, GroLimits::KERNEL).err(),
            Some(BatchTooLarge {
                len: 5,
                capacity: 4
            })
        );
        // Garbage and short frames go alone, without a panic.
        let junk: Vec<&[u8]> = vec![&[], &[0x45; 10], &frames[0][..60]];
        let runs = c.coalesce(&junk, GroLimits::KERNEL).unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| !r.is_merged()));
    }
}
