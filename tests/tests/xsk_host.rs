//! The host interface: the node's own kernel and its pods reach each other through kxdp. A
//! pod pings the node's address and connects to a server the node runs; the node connects to
//! a server in the pod. The pod's packets to the node are handed to the kernel through the
//! host veth, and the kernel's to the pod come back through it (kxdp answering its ARP for
//! pod addresses). Needs root; prints SKIP otherwise, and fails under CI.

use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::clients::{connect_many, TcpServer};
use kxdp_tests::node::{mac_text, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::IfRole;

#[test]
fn the_node_and_its_pods_reach_each_other_through_the_host_interface() {
    if skip_unless_privileged("the_node_and_its_pods_reach_each_other_through_the_host_interface") {
        return;
    }
    let t = Topology::default();
    let mut tb = Testbed::kxdp_and_kernel_node(
        &[(t.pod_a.ip, &mac_text(t.pod_a.mac))],
        t.node.gateway_ip,
        &mac_text(t.node.vtep_mac),
        1,
    )
    .expect("testbed builds");
    tb.add_host_interface(0, &mac_text(t.node.host_mac), &t.node.pod_cidr.to_string())
        .expect("host interface");
    let inputs = mixed_inputs(&t, &tb).expect("the testbed's addresses");
    let snapshot = Snapshot::build(inputs).expect("a valid snapshot");
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::uplink("uplink", t.node.uplink),
        Managed {
            name: "host0".into(),
            id: t.node.host,
            role: IfRole::Host,
        },
    ];
    let (node_ns, node_ip) = (tb.nodes[0].ns.clone(), tb.nodes[0].ip);
    let pod = tb.nodes[0].pods[0].ns.clone();
    let _on_node = TcpServer::start(&node_ns, 7000, "node");
    let _in_pod = TcpServer::start(&pod, 7001, "pod");
    std::thread::sleep(Duration::from_millis(500));
    let node = KxdpNode::start(&node_ns, managed, snapshot).expect("kxdp starts");

    let pings = tb.ping(&pod, node_ip, 3, Duration::from_secs(5)).unwrap();
    let pod_to_node = connect_many(&pod, &node_ip.to_string(), 7000, 3);
    let node_to_pod = connect_many(&node_ns, &t.pod_a.ip.to_string(), 7001, 3);
    let c = node.finish().expect("worker");

    assert_eq!(pings, 3, "the pod pings the node: {c:?}");
    let want = format!("node {}", t.pod_a.ip);
    assert!(
        pod_to_node.iter().all(|a| *a == want),
        "{pod_to_node:?} {c:?}"
    );
    assert_eq!(pod_to_node.len(), 3);
    assert!(
        node_to_pod.iter().all(|a| a.starts_with("pod ")),
        "{node_to_pod:?} {c:?}"
    );
    assert_eq!(node_to_pod.len(), 3);
    assert!(
        c.pass(kxdp_dataplane::PassReason::ForNode) >= 3,
        "handed to the host: {c:?}"
    );
    assert!(
        c.event(Event::ArpReply) >= 1,
        "kxdp answered the kernel's ARP: {c:?}"
    );
}
