//! Pod to ClusterIP through kxdp, with one backend on the kxdp node and one on a flannel-style
//! kernel node: many short TCP connections from a pod to the service address are spread over
//! both backends by Maglev, and each completes, which it does only if the replies come back
//! from the service address. Real TCP clients and servers (Python's sockets) in the pods.
//! Needs root; prints SKIP otherwise, and fails under CI.

use std::sync::Arc;
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::tables::{Backend, ServicePort};
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::clients::{connect_many, TcpServer};
use kxdp_tests::node::{mac_text, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};

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

    let mut inputs = mixed_inputs(&t, &tb).expect("the testbed's addresses");
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
        Managed::pod("pod0", t.pod_a.iface),
        Managed::pod("pod1", t.pod_b.iface),
        Managed::uplink("uplink", t.node.uplink),
    ];
    let _local = TcpServer::start(&kx.pods[1].ns, 8080, "local");
    let _remote = TcpServer::start(&remote.ns, 8080, "remote");
    std::thread::sleep(Duration::from_millis(500)); // the servers start listening

    let node = KxdpNode::start(&kx.ns, managed, snapshot).expect("kxdp starts");

    let answers = connect_many(&kx.pods[0].ns, &t.web_cluster_ip.to_string(), 80, 40);
    let c = node.finish().expect("worker");
    let count = |who: &str| {
        answers
            .iter()
            .filter(|a| a.starts_with(&format!("{who} ")))
            .count()
    };
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
