//! Cross-node interop over VXLAN: a kxdp node and a flannel-style node (the kernel's own vxlan
//! device, configured as flanneld configures it) exchange pod traffic both ways. kxdp
//! encapsulates toward the kernel node's VTEP and decapsulates what the kernel sends, on an
//! AF_XDP port on its uplink, steered there by the XDP program; the node's own traffic (ARP
//! for its address) stays with its kernel. A sniffer on the underlay checks that no pod address
//! ever appears there unencapsulated. Needs root; prints SKIP otherwise, and fails under CI.

use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::testkit::Topology;
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_dataplane::Snapshot;
use kxdp_tests::node::{KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::IfRole;

fn parse_mac(text: &str) -> EthernetAddress {
    let mut b = [0u8; 6];
    for (o, part) in b.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("a MAC address");
    }
    EthernetAddress(b)
}

fn mac_text(mac: EthernetAddress) -> String {
    mac.0.map(|b| format!("{b:02x}")).join(":")
}

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
    let mut inputs = t.inputs();
    inputs.node.node_ips = vec![kx.ip];
    inputs.node.uplink_mac = parse_mac(&tb.mac(&kx.ns, "uplink").unwrap());
    inputs.nodes[0].node_ip = kernel.ip;
    inputs.nodes[0].pod_cidr = Ipv4Cidr::new(kernel.pod_net, 24);
    inputs.nodes[0].vtep_mac = parse_mac(&kernel.vtep_mac);
    inputs.neighbors = vec![(kernel.ip, parse_mac(&tb.mac(&kernel.ns, "uplink").unwrap()))];
    let snapshot = Snapshot::build(inputs).expect("a valid snapshot");
    let managed = vec![
        Managed {
            name: "pod0".into(),
            id: t.pod_a.iface,
            role: IfRole::Pod,
        },
        Managed {
            name: "uplink".into(),
            id: t.node.uplink,
            role: IfRole::Uplink,
        },
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
