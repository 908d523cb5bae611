//! The bare AF_XDP forwarder the perf harness measures kxdp against: a batch function
//! ([`BatchFn`](kxdp_xdp::worker::BatchFn)) that swaps
//! each frame's Ethernet addresses and sends it out of the node's uplink
//! (`snap.node.uplink`), and nothing else. Given to the runtime in place of the pipeline
//! (`Config::forwarding`), it runs on kxdp's own sockets, UMEM and worker loop, so the
//! difference between the two is the pipeline's work alone.
//!
//! It reads no conntrack, counts nothing and never allocates; a frame too short for an
//! Ethernet header is dropped (`FrameTooShort`).

use kxdp_dataplane::conntrack::Conntrack;
use kxdp_dataplane::{Counters, DropReason, Instant, Packet, Snapshot, Verdict};

/// The baseline forwarder's whole work: swap the Ethernet addresses, send out of the uplink.
/// Its signature is [`BatchFn`](kxdp_xdp::worker::BatchFn)'s.
pub fn mac_swap(
    packets: &mut [Packet<'_>],
    snap: &Snapshot,
    _conntrack: &Conntrack,
    _counters: &Counters,
    _now: Instant,
) {
    let out = snap.node.uplink;
    for p in packets {
        let data = p.frame.data_mut();
        if data.len() >= 12 {
            let (dst, src) = data[..12].split_at_mut(6);
            dst.swap_with_slice(src);
            p.verdict = Verdict::Transmit(out);
        } else {
            p.verdict = Verdict::Drop(DropReason::FrameTooShort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kxdp_dataplane::conntrack::ConntrackConfig;
    use kxdp_testkit::{FrameBuf, Topology};

    #[test]
    fn every_frame_goes_out_of_the_uplink_with_its_addresses_swapped() {
        let t = Topology::default();
        let snap = t.snapshot();
        let ct = Conntrack::new(ConntrackConfig::default());
        let input = t.case_pod_to_pod(1000);
        let mut buf = FrameBuf::new(&input.frame);
        let mut short = FrameBuf::new(&input.frame[..10]);
        let mut batch = [buf.packet(input.ingress), short.packet(input.ingress)];
        mac_swap(&mut batch, &snap, &ct, &Counters::new(), Instant::ZERO);
        let [swapped, short] = batch;
        assert_eq!(swapped.verdict, Verdict::Transmit(snap.node.uplink));
        let out = swapped.frame.data();
        assert_eq!(out[..6], input.frame[6..12]);
        assert_eq!(out[6..12], input.frame[..6]);
        assert_eq!(out[12..], input.frame[12..]);
        assert_eq!(short.verdict, Verdict::Drop(DropReason::FrameTooShort));
    }
}
