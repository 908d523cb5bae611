//! kube-proxy's Service rules as real clients see them through kxdp over AF_XDP: a ClusterIP's
//! port that no service has refuses a connection at once; `loadBalancerSourceRanges` let one
//! outside client in and keep another out; `sessionAffinity: ClientIP` keeps a client on its
//! backend across connections and endpoint changes until the timeout passes. Real TCP
//! (Python sockets) from pod, external and node namespaces. Needs root; prints SKIP otherwise,
//! and fails under CI.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::tables::{
    Backend, Frontend, FrontendKind, Pick, ServicePort, ServicePortSpec, TrafficPolicy,
};
use kxdp_dataplane::wire::Ipv4Cidr;
use kxdp_dataplane::{DropReason, Snapshot};
use kxdp_testkit::Topology;
use kxdp_tests::clients::{connect_many, TcpServer};
use kxdp_tests::node::{mac_text, mixed_inputs, KxdpNode, Managed};
use kxdp_tests::testbed::{ip, skip_unless_privileged, Testbed};
use kxdp_xdp::runtime::Change;

/// One connection from `ns` to `addr:port`: what failed (`refused`, `timeout`, other) or the
/// server's answer, and how long it took in milliseconds.
fn connect_once(ns: &str, addr: &str, port: u16) -> (String, u128) {
    let script = format!(
        "import socket, time\n\
         t = time.monotonic()\n\
         try:\n\
         \x20   c = socket.create_connection(('{addr}', {port}), timeout=2)\n\
         \x20   r = c.recv(64).decode() or 'EMPTY'; c.close()\n\
         except ConnectionRefusedError:\n\
         \x20   r = 'refused'\n\
         except socket.timeout:\n\
         \x20   r = 'timeout'\n\
         except Exception as e:\n\
         \x20   r = 'ERR ' + str(e)\n\
         print(r + '|' + str(int((time.monotonic() - t) * 1000)))\n"
    );
    let out = Command::new("timeout")
        .args(["20", "ip", "netns", "exec", ns, "python3", "-c", &script])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (what, ms) = text.trim().rsplit_once('|').unwrap_or((&text, "0"));
    (what.to_owned(), ms.parse().unwrap_or(0))
}

#[test]
fn refused_ports_source_ranges_and_affinity_as_real_clients_see_them() {
    if skip_unless_privileged("refused_ports_source_ranges_and_affinity_as_real_clients_see_them") {
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
    let (ext_ns, ext_ip) = tb.external.clone().expect("external client");
    let remote = &kernel.pods[0];
    let local = (t.pod_b.ip, 8080);
    let far = (remote.ip, 8080);

    let mut inputs = mixed_inputs(&t, &tb).expect("the testbed's addresses");
    // default/web: both backends, its load-balancer address open to the external client only.
    let web = inputs
        .services
        .iter()
        .position(|s| s.name() == "default/web:http")
        .expect("the fixture has default/web");
    let mut spec = inputs.services[web].spec().clone();
    spec.backends = vec![
        Backend::ready(local.0, local.1, true),
        Backend::ready(far.0, far.1, false),
    ];
    spec.source_ranges = vec![Ipv4Cidr::new(ext_ip, 32)];
    inputs.services[web] = Arc::new(ServicePort::new(spec));
    // default/sticky: ClientIP affinity for 3 s. Pod A's address alone places it on `placed`
    // once both endpoints serve; it starts with the other one only.
    let sticky_ip = std::net::Ipv4Addr::new(10, 96, 0, 60);
    let sticky = |backends: &[(std::net::Ipv4Addr, u16)]| {
        Arc::new(ServicePort::new(ServicePortSpec {
            name: "default/sticky:http".into(),
            proto: 6,
            frontends: vec![Frontend {
                kind: FrontendKind::ClusterIp,
                ip: Some(sticky_ip),
                port: 80,
            }],
            backends: backends
                .iter()
                .map(|&(ip, port)| Backend::ready(ip, port, ip == local.0))
                .collect(),
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Cluster,
            client_ip_affinity: Some(Duration::from_secs(3)),
            source_ranges: Vec::new(),
        }))
    };
    let Pick::Backend(pip, pport) =
        sticky(&[local, far]).pick(FrontendKind::ClusterIp, t.pod_a.ip, true, 0)
    else {
        panic!("two endpoints")
    };
    let placed = (pip, pport);
    let first = if placed == local { far } else { local };
    let name = |b: (std::net::Ipv4Addr, u16)| if b == local { "local" } else { "remote" };
    let mut later = inputs.clone();
    inputs.services.push(sticky(&[first]));
    later.services.push(sticky(&[local, far]));
    let snapshot = Snapshot::build(inputs).expect("a valid snapshot");
    let later = Arc::new(Snapshot::build(later).expect("a valid snapshot"));

    // The load-balancer address is routed to the kxdp node, as a cloud's balancer would.
    let lb = t.web_lb_ip.to_string();
    for ns in [&ext_ns, &kernel.ns] {
        ip(
            Some(ns),
            &[
                "route",
                "add",
                &format!("{lb}/32"),
                "via",
                &kx.ip.to_string(),
            ],
        )
        .expect("route to the load balancer");
    }
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::pod("pod1", t.pod_b.iface),
        Managed::uplink("uplink", t.node.uplink),
    ];
    let _local = TcpServer::start(&kx.pods[1].ns, 8080, "local");
    let _remote = TcpServer::start(&remote.ns, 8080, "remote");
    std::thread::sleep(Duration::from_millis(500));
    let node = KxdpNode::start(&kx.ns, managed, snapshot).expect("kxdp starts");
    let pod = &kx.pods[0].ns;

    // A ClusterIP's port the service lacks: refused at once, not timed out.
    let (what, ms) = connect_once(pod, &t.web_cluster_ip.to_string(), 81);
    assert_eq!(what, "refused", "after {ms} ms");
    assert!(ms < 1000, "refused after {ms} ms");

    // Source ranges: the external client gets in, the other node (outside the range) not.
    let inside = connect_many(&ext_ns, &lb, 80, 3);
    assert_eq!(inside.len(), 3, "{inside:?}");
    assert!(
        inside
            .iter()
            .all(|a| a.starts_with("local ") || a.starts_with("remote ")),
        "{inside:?}"
    );
    let (outside, _) = connect_once(&kernel.ns, &lb, 80);
    assert_eq!(outside, "timeout");

    // Affinity: the pod keeps `first` while it is the only endpoint, then after `placed`
    // joins, while it keeps connecting; after 3 s without a connection it is placed afresh.
    let answers = |n| -> Vec<String> {
        (0..n)
            .map(|_| {
                let (a, _) = connect_once(pod, &sticky_ip.to_string(), 80);
                a.split(' ').next().unwrap_or("").to_owned()
            })
            .collect()
    };
    assert_eq!(answers(2), [name(first); 2]);
    node.change(Change::Publish(later, Vec::new()))
        .expect("published");
    assert_eq!(answers(4), [name(first); 4], "kept across the change");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        answers(2),
        [name(placed); 2],
        "placed afresh after the timeout"
    );

    let c = node.finish().expect("worker");
    assert!(c.event(Event::IcmpPortUnreachable) >= 1, "{c:?}");
    assert!(c.drop(DropReason::LoadBalancerSourceRange) >= 1, "{c:?}");
}
