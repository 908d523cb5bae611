//! Cross-node interop over VXLAN: a kxdp node and a flannel-style node (the kernel's own vxlan
//! device, configured as flanneld configures it) exchange pod traffic both ways. kxdp
//! encapsulates toward the kernel node's VTEP and decapsulates what the kernel sends, on an
//! AF_XDP port on its uplink, steered there by the XDP program; the node's own traffic (ARP
//! for its address) stays with its kernel. A sniffer on the underlay checks that no pod address
//! ever appears there unencapsulated. Needs root; prints SKIP otherwise, and fails under CI.

use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::node::{mac_text, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};

#[test]
fn a_kxdp_node_and_a_kernel_vxlan_node_exchange_pod_traffic() {
    if skip_unless_privileged("a_kxdp_node_and_a_kernel_vxlan_node_exchange_pod_traffic") {
        return;
    }
    let t = Topology::default();
    let tb = Testbed::kxdp_and_kernel_node(
        &[(t.pod_a.ip, &mac_text(t.pod_a.mac))],
        t.node.gateway_ip,
        &mac_text(t.node.vtep_mac),
        1,
    )
    .expect("testbed builds");
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);

    // The fixture node, with the testbed's underlay addresses and MACs.
    let inputs = mixed_inputs(&t, &tb).expect("the testbed's addresses");
    let snapshot = Snapshot::build(inputs).expect("a valid snapshot");
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::uplink("uplink", t.node.uplink),
    ];
    let node = KxdpNode::start(&kx.ns, managed, snapshot).expect("kxdp starts");

    // Watch the underlay while the pods talk: every frame on every switch port, counted as
    // VXLAN, or as a leak if its outer header carries a pod address.
    let sniffer = tb.watch_underlay(8).expect("the sniffer starts");
    let deadline = Duration::from_secs(5);
    let kx_pod = kx.pods[0].ns.clone();
    let kernel_pod = &kernel.pods[0];
    let out = tb.ping(&kx_pod, kernel_pod.ip, 3, deadline).unwrap();
    let back = tb.ping(&kernel_pod.ns, t.pod_a.ip, 3, deadline).unwrap();
    // The kernel node reaches the kxdp node's own address: not kxdp's, passed to its kernel.
    let node_ping = tb.ping(&kernel.ns, kx.ip, 2, deadline).unwrap();
    let c = node.finish().expect("worker");
    let (vxlan, leaks) = sniffer.finish().expect("the sniffer reports");
    assert!(
        vxlan >= 12,
        "pod traffic crossed the underlay in VXLAN: {vxlan}"
    );
    assert_eq!(leaks, 0, "no pod address ever showed on the underlay");
    assert_eq!((out, back), (3, 3), "pod traffic both ways: {c:?}");
    assert_eq!(
        node_ping, 2,
        "the kxdp node's kernel answers for its own address"
    );
    assert!(c.event(Event::VxlanEncap) >= 6, "kxdp encapsulated: {c:?}");
    assert!(c.event(Event::VxlanDecap) >= 6, "kxdp decapsulated: {c:?}");
}
