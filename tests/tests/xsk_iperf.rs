//! Bulk traffic through kxdp over AF_XDP with a real client: iperf3 TCP streams between pods on
//! the kxdp node and across to the kernel node both ways over VXLAN, and a UDP exchange, each
//! for two seconds; and a packet too big for the tunnel, answered by kxdp with fragmentation
//! needed carrying the tunnel's MTU. The pods' veths keep transmit checksum offload on (a
//! veth's default), so their stacks leave TCP and UDP checksums partial: kxdp hands them on in
//! AF_XDP TX metadata, or, on a UMEM without it, completes them; either way every receiver
//! finds them right. Needs root; prints SKIP otherwise, and fails under CI.

use std::process::Command;
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::clients::{checksum_errors, iperf, IperfServer};
use kxdp_tests::node::{mac_text, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};

#[test]
fn iperf3_streams_through_kxdp_on_one_node_and_across_nodes() {
    if skip_unless_privileged("iperf3_streams_through_kxdp_on_one_node_and_across_nodes") {
        return;
    }
    streams(true);
}

/// The same where the kernel has no TX metadata for kxdp (a kernel before 6.11): the worker
/// completes the checksums the pods left partial.
#[test]
fn iperf3_streams_through_kxdp_with_checksums_completed_by_the_worker() {
    if skip_unless_privileged("iperf3_streams_through_kxdp_with_checksums_completed_by_the_worker")
    {
        return;
    }
    streams(false);
}

fn streams(tx_metadata: bool) {
    use kxdp_xdp::worker::IoCounter;
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
    let node = KxdpNode::start_configured(&kx.ns, managed, snapshot, |c| {
        c.port.tx_metadata = tx_metadata;
    })
    .expect("kxdp starts");

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
    let io = node.io();
    let c = node.finish().expect("worker");
    let (handed_on, completed) = (
        io.get(IoCounter::ChecksumsHandedOn),
        io.get(IoCounter::ChecksumsCompleted),
    );
    if tx_metadata {
        assert!(handed_on > 1000 && completed == 0, "{io:?}");
    } else {
        assert!(completed > 1000 && handed_on == 0, "{io:?}");
    }
    // Handed on to the uplink, whose veth has no checksum offload, the kernel completed them
    // there from the pseudo-header sum kxdp wrote; the pod here trusts what it is handed, as
    // it trusts a partial checksum from a veth.
    for ns in [&a, &b, &remote.ns] {
        for proto in ["Tcp:", "Udp:"] {
            assert_eq!(
                checksum_errors(ns, proto),
                0,
                "{proto} checksum errors in {ns}"
            );
        }
    }

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
