//! Shared harness for the pipeline tests: run frames through the pipeline on the fixture
//! topology and check outputs with an independent parser (etherparse).
#![allow(dead_code, unreachable_pub)]

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::tables::SnapshotInputs;
use kxdp_dataplane::{process_batch, Counters, Frame, Instant, Packet, Snapshot, Split, Verdict};
use kxdp_testkit::{FrameBuf, Input, Topology, HEADROOM};

#[derive(Debug)]
pub struct Env {
    pub t: Topology,
    pub snap: Snapshot,
    pub ct: Conntrack,
    pub counters: Counters,
    pub now: Instant,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Self {
        Self::with(Topology::default(), 4096)
    }

    pub fn with(t: Topology, capacity: u32) -> Self {
        let inputs = t.inputs();
        Self::from_inputs(t, inputs, capacity)
    }

    /// The fixture topology with its snapshot inputs changed by the test.
    pub fn from_inputs(t: Topology, inputs: SnapshotInputs, capacity: u32) -> Self {
        let snap = Snapshot::build(inputs).expect("valid test inputs");
        Env {
            t,
            snap,
            ct: Conntrack::new(ConntrackConfig {
                capacity,
                ..ConntrackConfig::default()
            }),
            counters: Counters::new(),
            now: Instant::from_secs(1000),
        }
    }

    /// Run one frame; returns the verdict and the output frame.
    pub fn run(&self, input: &Input) -> (Verdict, Vec<u8>) {
        let mut buf = FrameBuf::new(&input.frame);
        let mut batch = [buf.packet(input.ingress)];
        process_batch(&mut batch, &self.snap, &self.ct, &self.counters, self.now);
        let [p] = batch;
        (p.verdict, p.frame.data().to_vec())
    }

    /// Run one frame of which only the first `first` bytes are in the buffer, the rest a tail
    /// of further buffers, as a multi-buffer AF_XDP frame arrives: the verdict, the first
    /// buffer after processing, what is left of the tail, and how the frame is to be cut.
    pub fn run_large(
        &self,
        ingress: InterfaceId,
        frame: &[u8],
        first: usize,
    ) -> (Verdict, Vec<u8>, usize, Option<Split>) {
        let mut buf = vec![0u8; HEADROOM + first + 256];
        buf[HEADROOM..HEADROOM + first].copy_from_slice(&frame[..first]);
        let f = Frame::new(&mut buf, HEADROOM, first)
            .expect("fits")
            .with_tail(frame.len() - first);
        let mut batch = [Packet::new(f, ingress)];
        process_batch(&mut batch, &self.snap, &self.ct, &self.counters, self.now);
        let [p] = batch;
        let split = p.frame.split();
        (p.verdict, p.frame.data().to_vec(), p.frame.tail(), split)
    }
}

/// Check every checksum of an Ethernet/IPv4 frame with etherparse and our own full sums;
/// recurse into VXLAN. Panics with `what` on failure.
pub fn assert_valid(frame: &[u8], what: &str) {
    let sliced = SlicedPacket::from_ethernet(frame).unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let Some(NetSlice::Ipv4(ip)) = sliced.net else {
        return;
    };
    let header = ip.header();
    let h = header.to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "{what}: IPv4 header checksum"
    );
    match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let c = tcp
                .to_header()
                .calc_checksum_ipv4(&h, tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), c, "{what}: TCP checksum");
        }
        Some(TransportSlice::Udp(udp)) => {
            if udp.checksum() != 0 {
                let c = udp
                    .to_header()
                    .calc_checksum_ipv4(&h, udp.payload())
                    .unwrap();
                assert_eq!(udp.checksum(), c, "{what}: UDP checksum");
            }
            if udp.destination_port() == 8472 && udp.payload().len() >= 8 + 14 {
                assert_valid(&udp.payload()[8..], &format!("{what} (inner)"));
            }
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            let c = kxdp_dataplane::wire::checksum::checksum(icmp.slice());
            assert_eq!(c, 0, "{what}: ICMP checksum");
        }
        _ => {}
    }
}

/// Compare two frames, ignoring the byte ranges in `mask`.
pub fn assert_frame_eq(got: &[u8], want: &[u8], mask: &[core::ops::Range<usize>], what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length\n got {got:02x?}\nwant {want:02x?}"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if mask.iter().any(|r| r.contains(&i)) {
            continue;
        }
        assert_eq!(
            g, w,
            "{what}: byte {i} differs\n got {got:02x?}\nwant {want:02x?}"
        );
    }
}
