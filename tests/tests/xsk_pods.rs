//! Real packets through kxdp on AF_XDP: pods on a node run by a kxdp worker. A pod pings its
//! gateway (ARP and echo replies come from the pipeline: nothing in the kernel owns that
//! address), and two pods ping each other (proxy ARP, then routing between their veths with
//! MAC rewrite and TTL decrement, copied between the two ports' UMEMs). Needs root; prints SKIP
//! otherwise, and fails under CI.

use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::tables::LocalPod;
use kxdp_testkit::Topology;
use kxdp_tests::clients::{connect_many, TcpServer};
use kxdp_tests::node::{mac_text, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::worker::IoCounter;
use kxdp_xdp::IfRole;

/// The fixture's `pods` on one kxdp node, with its dataplane running on `pod<j>`.
fn start(t: &Topology, pods: &[&LocalPod]) -> (Testbed, KxdpNode) {
    let macs: Vec<String> = pods.iter().map(|p| mac_text(p.mac)).collect();
    let spec: Vec<_> = pods
        .iter()
        .zip(&macs)
        .map(|(p, m)| (p.ip, m.as_str()))
        .collect();
    let tb = Testbed::pods_on_kxdp_node(&spec, t.node.gateway_ip).expect("testbed builds");
    let managed = pods
        .iter()
        .enumerate()
        .map(|(j, p)| Managed {
            name: format!("pod{j}"),
            id: p.iface,
            role: IfRole::Pod,
        })
        .collect();
    let node = KxdpNode::start(&tb.nodes[0].ns, managed, t.snapshot()).expect("kxdp starts");
    (tb, node)
}

#[test]
fn a_pod_pings_its_gateway_through_af_xdp_and_the_pipeline() {
    if skip_unless_privileged("a_pod_pings_its_gateway_through_af_xdp_and_the_pipeline") {
        return;
    }
    let t = Topology::default();
    let (tb, node) = start(&t, &[&t.pod_a]);
    let pod = tb.nodes[0].pods[0].ns.clone();
    let replies = tb
        .ping(&pod, t.node.gateway_ip, 3, Duration::from_secs(5))
        .unwrap();
    let c = node.finish().expect("worker");
    assert_eq!(replies, 3, "pings answered through kxdp");
    assert!(
        c.event(Event::ArpReply) >= 1,
        "ARP answered by the pipeline: {c:?}"
    );
    assert!(
        c.event(Event::IcmpEchoReply) >= 3,
        "echo answered by the pipeline: {c:?}"
    );
}

#[test]
fn two_pods_on_one_node_reach_each_other_through_kxdp() {
    if skip_unless_privileged("two_pods_on_one_node_reach_each_other_through_kxdp") {
        return;
    }
    let t = Topology::default();
    let (tb, node) = start(&t, &[&t.pod_a, &t.pod_b]);
    let (a, b) = (
        tb.nodes[0].pods[0].ns.clone(),
        tb.nodes[0].pods[1].ns.clone(),
    );
    let deadline = Duration::from_secs(5);
    let a_to_b = tb.ping(&a, t.pod_b.ip, 3, deadline).unwrap();
    let b_to_a = tb.ping(&b, t.pod_a.ip, 3, deadline).unwrap();
    // Read from this thread while the worker runs.
    let (live, io) = (node.counters(), node.io());
    let c = node.finish().expect("worker");
    assert!(
        live.event(Event::LocalForward) >= 12,
        "live counters: {live:?}"
    );
    assert!(
        io.get(IoCounter::Rx) >= 12 && io.get(IoCounter::Tx) >= 12,
        "I/O counters: {io:?}"
    );
    assert_eq!(
        io.get(IoCounter::Copied),
        0,
        "one UMEM: frames moved between veths without copies: {io:?}"
    );
    assert!(
        io.get(IoCounter::EmptyPolls) > 0
            && io.get(IoCounter::Polls) > io.get(IoCounter::EmptyPolls),
        "{io:?}"
    );
    assert_eq!((a_to_b, b_to_a), (3, 3), "pod to pod through kxdp");
    // Requests and replies both ways, each routed by the pipeline.
    assert!(
        c.event(Event::LocalForward) >= 12,
        "routed by the pipeline: {c:?}"
    );
}

#[test]
fn pinned_spinning_workers_serve_pods_in_busy_poll_and_adaptive_modes() {
    if skip_unless_privileged("pinned_spinning_workers_serve_pods_in_busy_poll_and_adaptive_modes")
    {
        return;
    }
    let t = Topology::default();
    let spec = [(t.pod_a.ip, mac_text(t.pod_a.mac))];
    let spec: Vec<_> = spec.iter().map(|(ip, m)| (*ip, m.as_str())).collect();
    let last_core = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    for mode in [
        kxdp_xdp::worker::Mode::BusyPoll,
        kxdp_xdp::worker::Mode::Adaptive {
            spin_us: 200,
            timeout_ms: 50,
        },
    ] {
        let tb = Testbed::pods_on_kxdp_node(&spec, t.node.gateway_ip).expect("testbed builds");
        let managed = vec![Managed::pod("pod0", t.pod_a.iface)];
        let node = KxdpNode::start_with(
            &tb.nodes[0].ns,
            managed,
            t.snapshot(),
            mode,
            &[Some(last_core)],
        )
        .expect("kxdp starts");
        let pod = tb.nodes[0].pods[0].ns.clone();
        // 0.2 s apart: in adaptive mode each echo request finds the worker asleep.
        let replies = tb
            .ping(&pod, t.node.gateway_ip, 3, Duration::from_secs(5))
            .unwrap();
        let c = node.finish().expect("worker");
        assert_eq!(replies, 3, "{mode:?}: {c:?}");
        assert!(c.event(Event::Batches) >= 1, "{mode:?}: {c:?}");
    }
}

#[test]
fn two_workers_share_a_nodes_queues_and_its_flows() {
    if skip_unless_privileged("two_workers_share_a_nodes_queues_and_its_flows") {
        return;
    }
    let t = Topology::default();
    let (ma, mb) = (mac_text(t.pod_a.mac), mac_text(t.pod_b.mac));
    let tb = Testbed::pods_on_multiqueue_kxdp_node(
        &[(t.pod_a.ip, &ma), (t.pod_b.ip, &mb)],
        t.node.gateway_ip,
        2,
    )
    .expect("testbed builds");
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::pod("pod1", t.pod_b.iface),
    ];
    let node = KxdpNode::start_with(
        &tb.nodes[0].ns,
        managed,
        t.snapshot(),
        kxdp_xdp::worker::Mode::Wakeup { timeout_ms: 50 },
        &[None, None],
    )
    .expect("kxdp starts");
    let (a, b) = (&tb.nodes[0].pods[0].ns, &tb.nodes[0].pods[1].ns);
    let server = TcpServer::start(b, 8080, "pod-b");
    // Each connection's socket picks a transmit queue by its own hash, in both pods: the two
    // directions of one flow may reach different workers, which share conntrack.
    let replies = connect_many(a, &t.pod_b.ip.to_string(), 8080, 40);
    let workers = node.worker_io();
    drop(server);
    let c = node.finish().expect("workers");
    let ok = replies.iter().filter(|r| r.starts_with("pod-b ")).count();
    assert_eq!(ok, 40, "every connection answered: {replies:?} {c:?}");
    assert_eq!(workers.len(), 2);
    for (q, w) in workers.iter().enumerate() {
        assert!(
            w.get(IoCounter::Rx) > 0,
            "worker {q} received nothing: {workers:?}"
        );
    }
}

#[test]
fn sockets_on_their_own_umems_copy_frames_between_them() {
    if skip_unless_privileged("sockets_on_their_own_umems_copy_frames_between_them") {
        return;
    }
    let t = Topology::default();
    let (ma, mb) = (mac_text(t.pod_a.mac), mac_text(t.pod_b.mac));
    let tb = Testbed::pods_on_kxdp_node(&[(t.pod_a.ip, &ma), (t.pod_b.ip, &mb)], t.node.gateway_ip)
        .expect("testbed builds");
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::pod("pod1", t.pod_b.iface),
    ];
    let node_ns = tb.nodes[0].ns.clone();
    let node = KxdpNode::start_configured(&node_ns, managed, t.snapshot(), |c| {
        c.shared_umem = false;
    })
    .expect("kxdp starts");
    let (a, b) = (&tb.nodes[0].pods[0].ns, &tb.nodes[0].pods[1].ns);
    let server = TcpServer::start(b, 8080, "pod-b");
    let replies = connect_many(a, &t.pod_b.ip.to_string(), 8080, 10);
    let io = node.io();
    drop(server);
    let c = node.finish().expect("worker");
    let ok = replies.iter().filter(|r| r.starts_with("pod-b ")).count();
    assert_eq!(ok, 10, "every connection answered: {replies:?} {c:?}");
    assert!(
        io.get(IoCounter::Copied) >= 10,
        "frames were copied between UMEMs: {io:?}"
    );
    // Stopping detached the program from every interface.
    for dev in ["pod0", "pod1"] {
        let out = kxdp_tests::testbed::ip(Some(&node_ns), &["-d", "link", "show", dev])
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("prog/xdp"), "{dev}: {text}");
    }
}
