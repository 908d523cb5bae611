//! Bulk traffic through kxdp over AF_XDP with a real client: iperf3 TCP streams between pods on
//! the kxdp node and across to the kernel node both ways over VXLAN, and a UDP exchange, each
//! for two seconds; and a packet too big for the tunnel, answered by kxdp with fragmentation
//! needed carrying the tunnel's MTU. Needs root; prints SKIP otherwise, and fails
//! under CI.

use std::process::{Child, Command, Stdio};
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

/// An iperf3 server for one test in `ns`; killed when dropped.
struct IperfServer(Child);

impl IperfServer {
    fn start(ns: &str, port: u16) -> IperfServer {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-1", "-p"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 runs");
        IperfServer(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run an iperf3 client in `ns` toward `server:port` for 2 s (`udp`: 20 Mbit/s of UDP) and
/// return the bytes the receiver got.
fn iperf(ns: &str, server: &str, port: u16, udp: bool) -> u64 {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "20", "ip", "netns", "exec", ns, "iperf3", "-c", server, "-t", "2", "-J", "-p",
    ])
    .arg(port.to_string());
    if udp {
        cmd.args(["-u", "-b", "20M"]);
    }
    let out = cmd.output().expect("iperf3 runs");
    let json = String::from_utf8_lossy(&out.stdout);
    // "sum_received": { ..., "bytes": N, ... } for TCP; UDP reports in "sum".
    let section = if udp { "\"sum\":" } else { "\"sum_received\":" };
    json.rfind(section)
        .and_then(|at| {
            let rest = &json[at..];
            let b = rest.find("\"bytes\":")? + "\"bytes\":".len();
            rest[b..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

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
            name: "pod1".into(),
            id: t.pod_b.iface,
            role: IfRole::Pod,
        },
        Managed {
            name: "uplink".into(),
            id: t.node.uplink,
            role: IfRole::Uplink,
        },
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
    // which ping reports, and the pod's kernel learns the path MTU.
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
