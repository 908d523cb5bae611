//! Cross-node interop over VXLAN: a kxdp node and a flannel-style node (the kernel's own vxlan
//! device, configured as flanneld configures it) exchange pod traffic both ways. kxdp
//! encapsulates toward the kernel node's VTEP and decapsulates what the kernel sends, on an
//! AF_XDP port on its uplink, steered there by the XDP program; the node's own traffic (ARP
//! for its address) stays with its kernel. A sniffer on the underlay checks that no pod address
//! ever appears there unencapsulated. Needs root; prints SKIP otherwise, and fails under CI.

use std::process::{Command, Stdio};
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::testkit::Topology;
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_dataplane::Snapshot;
use kxdp_tests::node::{KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::IfRole;

/// Counts, for the seconds given as its argument, the IPv4 frames on every interface of the
/// namespace it runs in: VXLAN frames (UDP port 8472), and frames whose outer source or
/// destination is a pod address (10.244.0.0/16). Prints both.
const SNIFFER: &str = "\
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.2)
end = time.time() + float(sys.argv[1])
vxlan = leaks = 0
while time.time() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    if len(f) < 34 or f[12:14] != b'\\x08\\x00':
        continue
    if f[23] == 17 and len(f) >= 42 and struct.unpack('!H', f[36:38])[0] == 8472:
        vxlan += 1
    if f[26:28] == bytes([10, 244]) or f[30:32] == bytes([10, 244]):
        leaks += 1
print(vxlan, leaks)
";

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
    let sniffer = Command::new("ip")
        .args(["netns", "exec", &tb.switch, "python3", "-c", SNIFFER, "8"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Duration::from_secs(5);
    let kx_pod = kx.pods[0].ns.clone();
    let kernel_pod = &kernel.pods[0];
    let out = tb.ping(&kx_pod, kernel_pod.ip, 3, deadline).unwrap();
    let back = tb.ping(&kernel_pod.ns, t.pod_a.ip, 3, deadline).unwrap();
    // The kernel node reaches the kxdp node's own address: not kxdp's, passed to its kernel.
    let node_ping = tb.ping(&kernel.ns, kx.ip, 2, deadline).unwrap();
    let c = node.finish().expect("worker");
    let seen = sniffer
        .wait_with_output()
        .expect("the sniffer ends by itself");
    let seen = String::from_utf8_lossy(&seen.stdout).into_owned();
    let counts: Vec<u64> = seen
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "sniffer output: {seen}");
    assert!(
        counts[0] >= 12,
        "pod traffic crossed the underlay in VXLAN: {seen}"
    );
    assert_eq!(
        counts[1], 0,
        "no pod address ever showed on the underlay: {seen}"
    );
    assert_eq!((out, back), (3, 3), "pod traffic both ways: {c:?}");
    assert_eq!(
        node_ping, 2,
        "the kxdp node's kernel answers for its own address"
    );
    assert!(c.event(Event::VxlanEncap) >= 6, "kxdp encapsulated: {c:?}");
    assert!(c.event(Event::VxlanDecap) >= 6, "kxdp decapsulated: {c:?}");
}
