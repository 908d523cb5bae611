//! Traffic between the cluster and the outside through kxdp over AF_XDP: an external client
//! reaches a NodePort on the kxdp node's address and is served by a backend on the other
//! (kernel) node, and a pod on the kxdp node reaches the external client, masqueraded to the
//! node's address. Real TCP (Python sockets) and ping. Needs root; prints SKIP otherwise, and
//! fails under CI.

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

/// A TCP server in `ns` on `port` answering each connection with `reply` then the client's
/// address as it saw it; exits by itself after 60 s and is killed when dropped.
struct Server(Child);

impl Server {
    fn start(ns: &str, port: u16, reply: &str) -> Server {
        let script = format!(
            "import socket, time\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port})); s.listen(64); s.settimeout(1)\n\
             end = time.time() + 60\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       c, peer = s.accept()\n\
             \x20   except socket.timeout:\n\
             \x20       continue\n\
             \x20   c.sendall(('{reply} ' + peer[0]).encode()); c.close()\n"
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

/// `n` connections from `ns` to `addr:port`, each bounded by 2 s; the answers ("ERR" on
/// failure).
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
fn node_port_from_outside_and_egress_masquerade_to_outside() {
    if skip_unless_privileged("node_port_from_outside_and_egress_masquerade_to_outside") {
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
    let (ext_ns, ext_ip) = tb.external.clone().expect("external client");
    let remote = &kernel.pods[0];

    let mut inputs = t.inputs();
    inputs.node.node_ips = vec![kx.ip];
    inputs.node.uplink_mac = parse_mac(&tb.mac(&kx.ns, "uplink").unwrap());
    inputs.nodes[0].node_ip = kernel.ip;
    inputs.nodes[0].pod_cidr = Ipv4Cidr::new(kernel.pod_net, 24);
    inputs.nodes[0].vtep_mac = parse_mac(&kernel.vtep_mac);
    inputs.neighbors = vec![
        (kernel.ip, parse_mac(&tb.mac(&kernel.ns, "uplink").unwrap())),
        (ext_ip, parse_mac(&tb.mac(&ext_ns, "eth0").unwrap())),
    ];
    // default/web's NodePort 30080, served only by the pod on the kernel node.
    let web = inputs
        .services
        .iter()
        .position(|s| s.name() == "default/web:http")
        .expect("the fixture has default/web");
    let mut spec = inputs.services[web].spec().clone();
    spec.backends = vec![Backend::ready(remote.ip, 8080, false)];
    inputs.services[web] = Arc::new(ServicePort::new(spec));
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
    let _backend = Server::start(&remote.ns, 8080, "backend");
    let _outside = Server::start(&ext_ns, 9000, "outside");
    std::thread::sleep(Duration::from_millis(500));
    let node = KxdpNode::start(&kx.ns, managed, snapshot).expect("kxdp starts");

    // Outside to the NodePort: served by the remote backend, which sees the kxdp node's
    // pod-network address (the masquerade kube-proxy would apply), not the client's.
    let via_node_port = connect_many(&ext_ns, &kx.ip.to_string(), t.web_node_port, 5);
    // A pod to outside: the outside server sees the node's address.
    let egress = connect_many(&kx.pods[0].ns, &ext_ip.to_string(), 9000, 5);
    let ping = tb
        .ping(&kx.pods[0].ns, ext_ip, 3, Duration::from_secs(5))
        .unwrap();
    let c = node.finish().expect("worker");

    let want_np = format!("backend {}", t.node.gateway_ip);
    assert!(
        via_node_port.iter().all(|a| *a == want_np),
        "{via_node_port:?} {c:?}"
    );
    assert_eq!(via_node_port.len(), 5);
    let want_eg = format!("outside {}", kx.ip);
    assert!(egress.iter().all(|a| *a == want_eg), "{egress:?} {c:?}");
    assert_eq!(egress.len(), 5);
    assert_eq!(ping, 3, "ping out, masqueraded: {c:?}");
    assert!(c.event(Event::MasqueradeNewFlow) >= 6, "{c:?}");
    assert!(c.event(Event::ServiceNewFlow) >= 5, "{c:?}");
}
