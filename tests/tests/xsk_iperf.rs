//! Bulk traffic through kxdp over AF_XDP with a real client: iperf3 TCP streams between pods on
//! the kxdp node and across to the kernel node both ways over VXLAN, and a UDP exchange, each
//! for two seconds; and a packet too big for the tunnel, answered by kxdp with fragmentation
//! needed carrying the tunnel's MTU. Needs root; prints SKIP otherwise, and fails
//! under CI.

use std::process::Command;
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::clients::{iperf, IperfServer};
use kxdp_tests::node::{mac_text, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};

#[test]
fn iperf3_streams_through_kxdp_on_one_node_and_across_nodes() {
    if skip_unless_privileged("iperf3_streams_through_kxdp_on_one_node_and_across_nodes") {
        return;
    }
    let t = Topology::default();
    let tb = Testbed::kxdp_and_kernel_node(
        &[
            (t.pod_a.ip, &mac_text(t.pod_a.mac)),
            (t.pod_b.ip, &mac_text(t.pod_b.mac)),
        ],
        t.node.gateway_ip,
        &mac_text(t.node.vtep_mac),
        1,
    )
    .expect("testbed builds");
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);
    let remote = &kernel.pods[0];
    let inputs = mixed_inputs(&t, &tb).expect("the testbed's addresses");
    let snapshot = Snapshot::build(inputs).expect("a valid snapshot");
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::pod("pod1", t.pod_b.iface),
        Managed::uplink("uplink", t.node.uplink),
    ];
    let (a, b) = (kx.pods[0].ns.clone(), kx.pods[1].ns.clone());
    let _s1 = IperfServer::start(&b, 5201);
    let _s2 = IperfServer::start(&remote.ns, 5202);
    let _s3 = IperfServer::start(&a, 5203);
    let _s4 = IperfServer::start(&remote.ns, 5204);
    std::thread::sleep(Duration::from_millis(500));
    let node = KxdpNode::start(&kx.ns, managed, snapshot).expect("kxdp starts");

    let same_node = iperf(&a, &t.pod_b.ip.to_string(), 5201, false);
    let to_kernel_node = iperf(&a, &remote.ip.to_string(), 5202, false);
    let from_kernel_node = iperf(&remote.ns, &t.pod_a.ip.to_string(), 5203, false);
    let udp = iperf(&a, &remote.ip.to_string(), 5204, true);
    // A 1500-byte packet with DF does not fit the tunnel: kxdp answers fragmentation needed,
    // which ping reports, and the pod's kernel learns the path MTU. (The pod's MTU is raised
    // past the tunnel's for it: with flannel's 1450 its own kernel would refuse to send.)
    for (ns, dev) in [(a.as_str(), "eth0"), (kx.ns.as_str(), "pod0")] {
        kxdp_tests::testbed::ip(Some(ns), &["link", "set", dev, "mtu", "1500"]).expect("mtu");
    }
    let big = Command::new("timeout")
        .args([
            "10", "ip", "netns", "exec", &a, "ping", "-n", "-c", "1", "-W", "2",
        ])
        .args(["-M", "do", "-s", "1472", &remote.ip.to_string()])
        .output()
        .expect("ping runs");
    let big_text =
        String::from_utf8_lossy(&big.stdout).into_owned() + &String::from_utf8_lossy(&big.stderr);
    let c = node.finish().expect("worker");

    let mb = 1_000_000;
    assert!(
        same_node > mb,
        "pod to pod on one node: {same_node} bytes; {c:?}"
    );
    assert!(
        to_kernel_node > mb,
        "to the kernel node: {to_kernel_node} bytes; {c:?}"
    );
    assert!(
        from_kernel_node > mb,
        "from the kernel node: {from_kernel_node} bytes; {c:?}"
    );
    assert!(udp > mb, "UDP to the kernel node: {udp} bytes; {c:?}");
    assert!(c.event(Event::IcmpFragNeeded) >= 1, "{big_text} {c:?}");
    assert!(
        big_text.contains("mtu = 1450"),
        "ping saw the tunnel's MTU: {big_text}"
    );
}
