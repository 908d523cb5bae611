//! Two kxdp nodes over VXLAN: pods on each reach pods on the other both ways with ping, an
//! iperf3 TCP stream and a UDP exchange, each node's dataplane running on AF_XDP; and no pod
//! address ever crosses the underlay unencapsulated. Needs root; prints SKIP otherwise, and
//! fails under CI.

use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::tables::{InterfaceId, LocalPod, NodeConfig, RemoteNode, SnapshotInputs};
use kxdp_dataplane::wire::Ipv4Cidr;
use kxdp_dataplane::Snapshot;
use kxdp_testkit::{mac, Topology};
use kxdp_tests::clients::{iperf, IperfServer};
use kxdp_tests::node::{mac_text, parse_mac, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::IfRole;

#[test]
fn two_kxdp_nodes_carry_pod_traffic_over_vxlan() {
    if skip_unless_privileged("two_kxdp_nodes_carry_pod_traffic_over_vxlan") {
        return;
    }
    let t = Topology::default();
    // Node B's pod, on node B's interface 2.
    let pod_b2 = LocalPod {
        name: "default/far".into(),
        ip: "10.244.2.10".parse().unwrap(),
        iface: InterfaceId(2),
        mac: mac([0x02, 0, 0x0a, 0xf4, 0x02, 0x0a]),
        policy: None,
    };
    let tb = Testbed::two_kxdp_nodes(
        &[(t.pod_a.ip, &mac_text(t.pod_a.mac))],
        &[(pod_b2.ip, &mac_text(pod_b2.mac))],
    )
    .expect("testbed builds");
    let (na, nb) = (&tb.nodes[0], &tb.nodes[1]);
    let (mac_a, mac_b) = (
        parse_mac(&tb.mac(&na.ns, "uplink").unwrap()),
        parse_mac(&tb.mac(&nb.ns, "uplink").unwrap()),
    );

    // Node A: the fixture node, with node B as its remote node.
    let mut a = t.inputs();
    a.node.node_ips = vec![na.ip];
    a.node.uplink_mac = mac_a;
    a.nodes = vec![RemoteNode {
        name: "node-b".into(),
        node_ip: nb.ip,
        pod_cidr: Ipv4Cidr::new(nb.pod_net, 24),
        vtep_mac: t.node_b.vtep_mac,
    }];
    a.neighbors = vec![(nb.ip, mac_b)];
    // Node B: its mirror image.
    let b = SnapshotInputs {
        generation: 1,
        node: NodeConfig {
            name: "node-b".into(),
            node_ips: vec![nb.ip],
            nodeport_ips: None,
            pod_cidr: Ipv4Cidr::new(nb.pod_net, 24),
            gateway_ip: nb.gateway,
            uplink_mac: mac_b,
            vtep_mac: t.node_b.vtep_mac,
            ..t.node.clone()
        },
        services: Vec::new(),
        pods: vec![pod_b2.clone()],
        nodes: vec![RemoteNode {
            name: "node-a".into(),
            node_ip: na.ip,
            pod_cidr: t.node.pod_cidr,
            vtep_mac: t.node.vtep_mac,
        }],
        neighbors: vec![(na.ip, mac_a)],
        draining_endpoints: Vec::new(),
    };
    let managed = |id| {
        vec![
            Managed {
                name: "pod0".into(),
                id,
                role: IfRole::Pod,
            },
            Managed::uplink("uplink", t.node.uplink),
        ]
    };
    let (pa, pb) = (na.pods[0].ns.clone(), nb.pods[0].ns.clone());
    let _s1 = IperfServer::start(&pb, 5201);
    let _s2 = IperfServer::start(&pa, 5202);
    let _s3 = IperfServer::start(&pb, 5203);
    std::thread::sleep(Duration::from_millis(500));
    let node_a = KxdpNode::start(&na.ns, managed(t.pod_a.iface), Snapshot::build(a).unwrap())
        .expect("kxdp starts on node A");
    let node_b = KxdpNode::start(&nb.ns, managed(pod_b2.iface), Snapshot::build(b).unwrap())
        .expect("kxdp starts on node B");

    let sniffer = tb.watch_underlay(12).expect("the sniffer starts");
    let deadline = Duration::from_secs(5);
    let pings = (
        tb.ping(&pa, pod_b2.ip, 3, deadline).unwrap(),
        tb.ping(&pb, t.pod_a.ip, 3, deadline).unwrap(),
    );
    let a_to_b = iperf(&pa, &pod_b2.ip.to_string(), 5201, false);
    let b_to_a = iperf(&pb, &t.pod_a.ip.to_string(), 5202, false);
    let udp = iperf(&pa, &pod_b2.ip.to_string(), 5203, true);
    let (ca, cb) = (
        node_a.finish().expect("node A"),
        node_b.finish().expect("node B"),
    );
    let (vxlan, leaks) = sniffer.finish().expect("the sniffer reports");
    assert!(
        vxlan > 100,
        "pod traffic crossed the underlay in VXLAN: {vxlan}"
    );
    assert_eq!(leaks, 0, "no pod address ever showed on the underlay");

    assert_eq!(pings, (3, 3), "ping both ways: {ca:?} {cb:?}");
    let mb = 1_000_000;
    assert!(
        a_to_b > mb && b_to_a > mb,
        "TCP both ways: {a_to_b} {b_to_a}"
    );
    assert!(udp > mb, "UDP: {udp}");
    for c in [&ca, &cb] {
        assert!(
            c.event(Event::VxlanEncap) > 100 && c.event(Event::VxlanDecap) > 100,
            "{c:?}"
        );
    }
}
