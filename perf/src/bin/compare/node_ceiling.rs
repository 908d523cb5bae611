//! The ceiling of kxdp's path between two pods of one node: iperf3 from client-a to web-a, as
//! in the one-node rows, through a bare forwarder on kxdp's own sockets, UMEM and worker loop
//! instead of its pipeline, on kxdp's own cluster with its agents stopped. The forwarder moves
//! each frame from one pod's veth to the other's whole (a 64 KiB frame of up to 18 buffers
//! as one), rewrites its Ethernet addresses and hands the pod's partial TCP checksum on in
//! AF_XDP TX metadata, as kxdp does; it has no conntrack, policy, routing table or counters.
//! What it moves is what copy-mode AF_XDP on veth lets two pods of a node exchange with one
//! worker: the pods' kernels, the copy into the worker's UMEM in the sender's transmit, the
//! skb and copy of each AF_XDP transmit, and the receiver's TCP in the worker's.
//!
//! The pods keep their neighbour entries (made permanent: nothing answers ARP while the
//! forwarder runs) and their MTU; the worker runs as the agent's would by default: adaptive
//! mode, pinned to node A's CPU.

use std::fmt::Write as _;
use std::time::Duration;

use kxdp_control::compile::{pod_interface_name, pod_mac};
use kxdp_dataplane::conntrack::Conntrack;
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::{Counters, DropReason, Packet, Snapshot, Verdict};
use kxdp_perf::iperf3::Run;
use kxdp_testkit::Topology;
use kxdp_tests::testbed::ip;
use kxdp_xdp::runtime::{Config, Dataplane, Managed};
use kxdp_xdp::worker::Mode;

use crate::args::Args;
use crate::ceiling::{percent, times, write_section};
use crate::clusters::{Clusters, Which};
use crate::iperf::{gbps_cell, loss_cell, median_rate, one_run, row, sample, Row, TESTS};
use crate::report::Report;

/// The path its iperf3 runs are recorded under in the samples.
const PATH: &str = "bare forwarder (ceiling on one node)";

/// The interface numbers the forwarder gives the client's and the server's pod veths.
const PODS: [InterfaceId; 2] = [InterfaceId(1), InterfaceId(2)];

/// The ceiling on one node at one underlay MTU: iperf3 runs through the bare forwarder.
pub(crate) struct NodeCeiling {
    pub(crate) mtu: u16,
    /// (streams, runs)
    pub(crate) runs: Vec<(u32, Vec<Result<Run, String>>)>,
}

/// The forwarder's whole work on a batch: an IPv4 frame from one pod goes to the other, to
/// the MAC address its destination's pod has (`pod_mac`), from the one the sender addressed
/// (its gateway's); its TCP checksum, left partial by the sending pod, is left to the way out.
/// Anything else is dropped. Its signature is [`BatchFn`](kxdp_xdp::worker::BatchFn)'s.
fn pod_to_pod(
    packets: &mut [Packet<'_>],
    _snap: &Snapshot,
    _conntrack: &Conntrack,
    _counters: &Counters,
    _now: kxdp_dataplane::Instant,
) {
    for p in packets {
        let out = if p.ingress == PODS[0] {
            PODS[1]
        } else {
            PODS[0]
        };
        let data = p.frame.data_mut();
        if data.len() < 34 || data[12..14] != [0x08, 0x00] {
            p.verdict = Verdict::Drop(DropReason::UnsupportedEthertype);
            continue;
        }
        let l4 = 14 + usize::from(data[14] & 0x0f) * 4;
        let tcp = data[23] == 6;
        let dst = std::net::Ipv4Addr::new(data[30], data[31], data[32], data[33]);
        data.copy_within(0..6, 6);
        data[..6].copy_from_slice(&pod_mac(dst).0);
        p.frame.set_checksum_offload(tcp.then_some(l4));
        p.verdict = Verdict::Transmit(out);
    }
}

/// Measure the ceiling on node A of kxdp's cluster, whose agents `measure_ceiling` stopped:
/// the one-node test's iperf3 runs, 1 and 4 streams, `a.runs` each, through the forwarder.
pub(crate) fn measure_node_ceiling(
    a: &Args,
    c: &Clusters,
    r: &mut Report,
) -> Result<NodeCeiling, String> {
    let ns = c.kxdp.tb.nodes[0].ns.clone();
    let mut managed = Vec::new();
    for (pod, id) in ["client-a", "web-a"].into_iter().zip(PODS) {
        let host_side = pod_interface_name("default", pod);
        // A stopped agent leaves its XDP program in place for a successor to adopt.
        ip(Some(&ns), &["link", "set", "dev", &host_side, "xdp", "off"])
            .map_err(|e| e.to_string())?;
        keep_neighbours(&c.pod_ns(Which::Kxdp, pod))?;
        managed.push(Managed::pod(&host_side, id));
    }
    let config = Config {
        netns: Some(ns),
        // The agent's defaults: adaptive mode, one worker on the CPU its node was given.
        workers: vec![Some(kxdp_tests::cluster::node_cpu(0))],
        mode: Mode::Adaptive {
            spin_us: kxdp_agent::settings::DEFAULT_SPIN_US,
            timeout_ms: 50,
        },
        forwarding: pod_to_pod,
        max_run: Some(Duration::from_secs(
            2 * a.runs as u64 * (u64::from(a.iperf_secs) + 20) + 60,
        )),
        ..Config::default()
    };
    let mut inputs = Topology::default().inputs();
    inputs.node.pod_mtu = crate::clusters::KXDP_POD_MTU;
    let snapshot = Snapshot::build(inputs).map_err(|e| e.to_string())?;
    let dp = Dataplane::start(config, managed, snapshot)?;
    let test = &TESTS[0];
    let mut ceiling = NodeCeiling {
        mtu: c.mtu,
        runs: vec![(1, Vec::new()), (4, Vec::new())],
    };
    for run in 0..a.runs {
        for (streams, runs) in &mut ceiling.runs {
            let result = one_run(a, c, Which::Kxdp, test, *streams);
            r.samples
                .push(sample(test, c.mtu, *streams, PATH, run, &result));
            runs.push(result);
        }
    }
    dp.finish()?;
    for (streams, runs) in &ceiling.runs {
        println!(
            "  ceiling on one node at MTU {}, {streams} stream(s): {}",
            c.mtu,
            median_rate(runs).map_or("no run".to_owned(), |g| format!("{g:.2} Gbit/s"))
        );
    }
    Ok(ceiling)
}

/// Make the neighbour entries of pod namespace `ns` permanent, so its kernel keeps sending to
/// the addresses it learnt while nothing answers its ARP.
fn keep_neighbours(ns: &str) -> Result<(), String> {
    let out = ip(Some(ns), &["-j", "neigh", "show", "dev", "eth0"]).map_err(|e| e.to_string())?;
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{ns}: ip -j neigh: {e}"))?;
    let learnt: Vec<(&str, &str)> = entries
        .iter()
        .filter_map(|e| Some((e["dst"].as_str()?, e["lladdr"].as_str()?)))
        .collect();
    if learnt.is_empty() {
        return Err(format!("{ns}: no neighbour learnt on eth0 to keep"));
    }
    for (dst, mac) in learnt {
        ip(
            Some(ns),
            &[
                "neigh",
                "replace",
                dst,
                "lladdr",
                mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The ceiling on one node beside kxdp's and the kernel's one-node rows.
pub(crate) fn write_node_ceilings(
    rows: &[Row],
    ceilings: &[Result<NodeCeiling, (u16, String)>],
    r: &mut Report,
) {
    let intro = "\n**The ceiling of kxdp's path on one node.** The one-node test again on kxdp's \
         cluster with its agents stopped, through a bare forwarder on kxdp's own sockets, UMEM \
         and worker loop (as the agent by default: adaptive mode, one worker pinned to node \
         A's core): each frame goes \
         from one pod's veth to the other's whole, its Ethernet addresses rewritten and the \
         pod's partial TCP checksum handed on in AF_XDP TX metadata, as kxdp does, with no \
         conntrack, policy, routing or counting. What it moves is what copy-mode AF_XDP on a \
         veth lets two pods of a node exchange through one worker: each byte copied into the \
         worker's UMEM in the sender's transmit and out of it into an skb in the worker's, \
         where the receiving pod's TCP also runs; the kernel's path copies each byte only \
         from the sender and to the receiver, and does the forwarding in the sender's \
         softirq, on whichever core sends. Median of the runs (range).\n\n\
         | underlay MTU | streams | bare forwarder (ceiling) | its retransmits | kxdp | \
         kernel | kxdp / ceiling | ceiling / kernel |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|";
    write_section(r, intro, ceilings, |c, md| {
        for (streams, runs) in &c.runs {
            let Some(row) = row(rows, TESTS[0].name, c.mtu, *streams) else {
                continue;
            };
            let (kx, k, ceiling) = (
                median_rate(&row.kxdp),
                median_rate(&row.kernel),
                median_rate(runs),
            );
            let cell = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.2}"));
            let _ = writeln!(
                md,
                "| {} | {streams} | {} | {} | {} | {} | {} | {} |",
                c.mtu,
                gbps_cell(runs),
                loss_cell(runs),
                cell(kx),
                cell(k),
                percent(kx, ceiling),
                times(ceiling, k),
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use kxdp_dataplane::conntrack::ConntrackConfig;
    use kxdp_dataplane::wire::build::FrameSpec;
    use kxdp_dataplane::wire::tcp_flags;
    use kxdp_dataplane::wire::MacAddr;
    use kxdp_testkit::FrameBuf;

    #[test]
    fn a_frame_goes_to_the_other_pod_with_its_checksum_left_to_the_way_out() {
        let t = Topology::default();
        let snap = Snapshot::build(t.inputs()).expect("the default topology builds");
        let ct = Conntrack::new(ConntrackConfig::default());
        let gateway = [2, 0, 0, 0, 0, 1];
        let (client, server) = (
            std::net::Ipv4Addr::new(10, 244, 1, 20),
            std::net::Ipv4Addr::new(10, 244, 1, 10),
        );
        let tcp = FrameSpec::new(
            pod_mac(client),
            MacAddr::from_bytes(&gateway),
            client,
            server,
        )
        .tcp(40_000, 5201, tcp_flags::ACK, &[7; 100]);
        let mut arp = tcp.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let (mut a, mut b, mut c) = (
            FrameBuf::new(&tcp),
            FrameBuf::new(&arp),
            FrameBuf::new(&tcp),
        );
        let mut batch = [a.packet(PODS[0]), b.packet(PODS[0]), c.packet(PODS[1])];
        pod_to_pod(
            &mut batch,
            &snap,
            &ct,
            &Counters::new(),
            kxdp_dataplane::Instant::ZERO,
        );
        let [to_server, arp, back] = batch;
        assert_eq!(to_server.verdict, Verdict::Transmit(PODS[1]));
        assert_eq!(back.verdict, Verdict::Transmit(PODS[0]));
        let out = to_server.frame.data();
        assert_eq!(out[..6], pod_mac(server).0);
        assert_eq!(out[6..12], gateway);
        assert_eq!(out[12..], tcp[12..]);
        assert_eq!(to_server.frame.checksum_offload(), Some(34));
        assert_eq!(arp.verdict, Verdict::Drop(DropReason::UnsupportedEthertype));
    }
}
