//! Traffic between the cluster and the outside through kxdp over AF_XDP: an external client
//! reaches a NodePort on the kxdp node's address and is served by a backend on the other
//! (kernel) node, and a pod on the kxdp node reaches the external client, masqueraded to the
//! node's address. Real TCP (Python sockets) and ping. Needs root; prints SKIP otherwise, and
//! fails under CI.

use std::sync::Arc;
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::tables::{Backend, ServicePort};
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::clients::{connect_many, TcpServer};
use kxdp_tests::node::{fixture_and_kernel_node, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::skip_unless_privileged;

#[test]
fn node_port_from_outside_and_egress_masquerade_to_outside() {
    if skip_unless_privileged("node_port_from_outside_and_egress_masquerade_to_outside") {
        return;
    }
    let t = Topology::default();
    let tb = fixture_and_kernel_node(&t).expect("testbed builds");
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);
    let (ext_ns, ext_ip) = tb.external.clone().expect("external client");
    let remote = &kernel.pods[0];

    let mut inputs = mixed_inputs(&t, &tb).expect("the testbed's addresses");
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
        Managed::pod("pod0", t.pod_a.iface),
        Managed::uplink("uplink", t.node.uplink),
    ];
    let _backend = TcpServer::start(&remote.ns, 8080, "backend");
    let _outside = TcpServer::start(&ext_ns, 9000, "outside");
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
