//! Cross-node interop over VXLAN: a kxdp node and a flannel-style node (the kernel's own vxlan
//! device, configured as flanneld configures it) exchange pod traffic both ways. kxdp
//! encapsulates toward the kernel node's VTEP and decapsulates what the kernel sends, on an
//! AF_XDP port on its uplink, steered there by the XDP program; the node's own traffic (ARP
//! for its address) stays with its kernel. A sniffer on the underlay checks that no pod address
//! ever appears there unencapsulated. VXLAN forged on the underlay (from an address that is no
//! node, or from a known node posing as another source) never reaches a pod, is counted, and
//! gets no answer from the node's kernel. Needs root; prints SKIP otherwise, and fails under CI.

use std::net::Ipv4Addr;
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::node::{fixture_and_kernel_node, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};

/// The fixture node on the kxdp node of [`fixture_and_kernel_node`], with the testbed's
/// underlay addresses and MACs, serving pod A and the uplink.
fn start(t: &Topology) -> (Testbed, KxdpNode) {
    let tb = fixture_and_kernel_node(t).expect("testbed builds");
    let inputs = mixed_inputs(t, &tb).expect("the testbed's addresses");
    let snapshot = Snapshot::build(inputs).expect("a valid snapshot");
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::uplink("uplink", t.node.uplink),
    ];
    let node = KxdpNode::start(&tb.nodes[0].ns, managed, snapshot).expect("kxdp starts");
    (tb, node)
}

#[test]
fn a_kxdp_node_and_a_kernel_vxlan_node_exchange_pod_traffic() {
    if skip_unless_privileged("a_kxdp_node_and_a_kernel_vxlan_node_exchange_pod_traffic") {
        return;
    }
    let t = Topology::default();
    let (tb, node) = start(&t);
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);

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

/// Counts, for the seconds given as its first argument, the UDP datagrams to the port given
/// as its second, by source address; prints "listening" once bound, then one "ADDRESS COUNT"
/// line per source.
const DATAGRAM_COUNTER: &str = "\
import collections, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', int(sys.argv[2]))); s.settimeout(0.2)
print('listening', flush=True)
seen = collections.Counter()
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        _, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    seen[peer[0]] += 1
for a, n in seen.items():
    print(a, n)
";

/// From the address given as its first argument, sends the hex-encoded payload given as its
/// fourth to UDP port 8472 of the second, as many times as the third says, 20 ms apart, on a
/// connected socket (so an ICMP port unreachable back shows as a refused send or receive);
/// prints how many were refused.
const VXLAN_SENDER: &str = "\
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0)); s.connect((sys.argv[2], 8472)); s.setblocking(False)
payload = bytes.fromhex(sys.argv[4])
refused = 0
for _ in range(int(sys.argv[3])):
    for op in (lambda: s.send(payload), lambda: s.recv(2048)):
        try:
            op()
        except ConnectionRefusedError:
            refused += 1
        except BlockingIOError:
            pass
    time.sleep(0.02)
time.sleep(0.2)
try:
    s.recv(2048)
except ConnectionRefusedError:
    refused += 1
except BlockingIOError:
    pass
print(refused)
";

/// VXLAN (VNI 1) carrying a UDP datagram from `src` to `dst`:`port`, inner Ethernet from node
/// B's VTEP to this node's, as the kernel's vxlan device would send it.
fn vxlan_payload(t: &Topology, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> String {
    let inner = t.inner_from_node_b(src, dst).udp(40000, port, b"forged?");
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vx.extend_from_slice(&inner);
    vx.iter().map(|b| format!("{b:02x}")).collect()
}

/// Send `n` datagrams carrying `payload` from `from` in namespace `ns` to `node`:8472; returns
/// how many sends or receives were refused (ICMP port unreachable from the node's kernel).
fn send_vxlan(ns: &str, from: Ipv4Addr, node: Ipv4Addr, n: u32, payload: &str) -> u32 {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", VXLAN_SENDER])
        .args([
            &from.to_string(),
            &node.to_string(),
            &n.to_string(),
            payload,
        ])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "the sender in {ns} printed {text:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn forged_vxlan_from_the_underlay_is_dropped_and_counted() {
    if skip_unless_privileged("forged_vxlan_from_the_underlay_is_dropped_and_counted") {
        return;
    }
    let t = Topology::default();
    let (tb, node) = start(&t);
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);

    // The pod counts what reaches it, by source.
    const PORT: u16 = 7000;
    let mut counter = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &kx.pods[0].ns,
            "python3",
            "-c",
            DATAGRAM_COUNTER,
        ])
        .args(["6", &PORT.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = std::io::BufReader::new(counter.stdout.take().expect("piped"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("the counter's first line");
    assert_eq!(line.trim(), "listening", "the counter in the pod started");

    const N: u32 = 10;
    let (ext_ns, external) = tb.external.clone().expect("external client");
    let outside = Ipv4Addr::new(198, 19, 255, 66);
    let kernel_pod = kernel.pods[0].ip;
    let pod = t.pod_a.ip;
    // Who sends (namespace, outer source) and the inner source it claims:
    let cases = [
        // the external client, which is no node: dropped by the XDP program, so the node's
        // kernel never sees it (it would answer port unreachable) and the pod never gets it;
        (&ext_ns, external, kernel_pod),
        // node B's own address (a known node), posing as the outside and as a local pod:
        // dropped after decapsulation;
        (&kernel.ns, kernel.ip, outside),
        (&kernel.ns, kernel.ip, pod),
        // the same from node B with its own pod's address: delivered (the test can fail).
        (&kernel.ns, kernel.ip, kernel_pod),
    ];
    let refused: Vec<u32> = cases
        .iter()
        .map(|&(ns, from, inner)| {
            send_vxlan(ns, from, kx.ip, N, &vxlan_payload(&t, inner, pod, PORT))
        })
        .collect();
    let decisions = node.xdp_decisions().expect("the program's counters");
    let c = node.finish().expect("worker");
    let mut seen = String::new();
    std::io::Read::read_to_string(&mut out, &mut seen).expect("the counter's report");
    counter.wait().expect("the counter ends");
    let got = |who: Ipv4Addr| -> u32 {
        seen.lines()
            .find_map(|l| l.strip_prefix(&format!("{who} "))?.parse().ok())
            .unwrap_or(0)
    };

    assert_eq!(
        got(kernel_pod),
        N,
        "the genuine datagrams arrived: {seen:?} {c:?}"
    );
    assert_eq!(
        (got(outside), got(pod)),
        (0, 0),
        "no forged one did: {seen:?}"
    );
    assert_eq!(
        refused, [0; 4],
        "the node's kernel answered none of it (no port unreachable)"
    );
    assert!(
        decisions[kxdp_xdp::XdpDecision::DropUnknownPeer as usize] >= u64::from(N),
        "the program dropped VXLAN from the unknown peer: {decisions:?}"
    );
    assert_eq!(
        c.drop(kxdp_dataplane::reason::DropReason::VxlanForeignInnerSource),
        u64::from(2 * N),
        "forged inner sources dropped by name: {c:?}"
    );
}
