//! Pod to ClusterIP through kxdp, with one backend on the kxdp node and one on a flannel-style
//! kernel node: many short TCP connections from a pod to the service address are spread over
//! both backends by Maglev, and each completes, which it does only if the replies come back
//! from the service address. Real TCP clients and servers (Python's sockets) in the pods.
//! Needs root; prints SKIP otherwise, and fails under CI.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::tables::{Backend, ServicePort};
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

/// A TCP server in namespace `ns` answering every connection on port 8080 with `name`; it
/// exits by itself after 60 s, and is killed when dropped.
struct Server(Child);

impl Server {
    fn start(ns: &str, name: &str) -> Server {
        let script = format!(
            "import socket, time\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', 8080)); s.listen(64); s.settimeout(1)\n\
             end = time.time() + 60\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       c, _ = s.accept()\n\
             \x20   except socket.timeout:\n\
             \x20       continue\n\
             \x20   c.sendall(b'{name}'); c.close()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// From namespace `ns`, open `n` connections to `addr:port` one after another (each bounded
/// by a 2 s timeout) and return the answers, one per line; failures are "ERR".
fn connect_many(ns: &str, addr: &str, port: u16, n: u32) -> Vec<String> {
    let script = format!(
        "import socket\n\
         for i in range({n}):\n\
         \x20   try:\n\
         \x20       c = socket.create_connection(('{addr}', {port}), timeout=2)\n\
         \x20       print(c.recv(64).decode() or 'EMPTY'); c.close()\n\
         \x20   except Exception as e:\n\
         \x20       print('ERR', e)\n"
    );
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", ns, "python3", "-c", &script])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn pod_to_cluster_ip_spreads_connections_over_backends_on_both_nodes() {
    if skip_unless_privileged("pod_to_cluster_ip_spreads_connections_over_backends_on_both_nodes") {
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
    // default/web: one backend here (pod B), one on the kernel node.
    let web = inputs
        .services
        .iter()
        .position(|s| s.name() == "default/web:http")
        .expect("the fixture has default/web");
    let mut spec = inputs.services[web].spec().clone();
    spec.backends = vec![
        Backend::ready(t.pod_b.ip, 8080, true),
        Backend::ready(remote.ip, 8080, false),
    ];
    inputs.services[web] = Arc::new(ServicePort::new(spec));
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
    let _local = Server::start(&kx.pods[1].ns, "local");
    let _remote = Server::start(&remote.ns, "remote");
    std::thread::sleep(Duration::from_millis(500)); // the servers start listening

    let node = KxdpNode::start(&kx.ns, managed, snapshot).expect("kxdp starts");

    let answers = connect_many(&kx.pods[0].ns, &t.web_cluster_ip.to_string(), 80, 40);
    let c = node.finish().expect("worker");
    let count = |who: &str| answers.iter().filter(|a| a.as_str() == who).count();
    assert_eq!(answers.len(), 40, "{answers:?}");
    assert_eq!(
        count("local") + count("remote"),
        40,
        "every connection completed: {answers:?}"
    );
    assert!(
        count("local") >= 5 && count("remote") >= 5,
        "spread over both: {answers:?}"
    );
    assert!(c.event(Event::ServiceNewFlow) >= 40, "{c:?}");
    assert!(c.event(Event::ReverseNat) >= 40, "{c:?}");
}
