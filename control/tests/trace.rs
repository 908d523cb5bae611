//! `kxdp trace` over a table of scenarios on the fixture cluster: what each stage decides for
//! one packet of each path a user asks about.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use kxdp_control::compile::{Compiler, NodeSettings};
use kxdp_control::manifest::parse;
use kxdp_control::model::Model;
use kxdp_control::trace::{trace, Entry, Trace, TraceError, TraceInput};
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The fixture, plus a service with no endpoints.
fn snapshot() -> std::sync::Arc<Snapshot> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster.yaml");
    let text = std::fs::read_to_string(fixture).unwrap()
        + "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: default}\n\
           spec: {clusterIP: 10.96.0.99, ports: [{name: http, port: 80}]}\n";
    // Parsed in memory: tests run in parallel, and a shared scratch file raced.
    let mut model = Model::new();
    for (_, o) in parse("cluster.yaml", &text).unwrap() {
        model.apply(&o).unwrap();
    }
    let topo = Topology::default();
    let mut node = topo.node.clone();
    node.name = "node-a".into();
    node.node_ips = vec![];
    let mut compiler = Compiler::new(NodeSettings {
        node,
        neighbors: vec![
            (ip("198.18.0.11"), topo.node_b_mac),
            (ip("198.18.0.254"), topo.gateway_router_mac),
        ],
    });
    compiler.compile(&mut model).unwrap().snapshot
}

fn run(entry: Entry, src: (&str, u16), dst: (&str, u16), proto: u8) -> Trace {
    trace(
        &snapshot(),
        &TraceInput {
            entry,
            src: (ip(src.0), src.1),
            dst: (ip(dst.0), dst.1),
            proto,
        },
    )
    .expect("traced")
}

#[test]
fn pod_to_cluster_ip_names_the_service_its_backends_and_the_one_chosen() {
    let t = run(Entry::Pod, ("10.244.1.11", 40000), ("10.96.0.10", 80), 6);
    assert_eq!(t.entered, "pod default/client");
    assert_eq!(t.verdict, "forward");
    let s = t.service.as_ref().unwrap();
    assert_eq!(
        (s.name.as_str(), s.frontend.as_str()),
        ("default/web:http", "ClusterIP")
    );
    assert_eq!(s.backends, ["10.244.1.10:8080", "10.244.2.10:8080"]);
    let chosen = s.chosen.clone().expect("a backend");
    assert!(s.backends.contains(&chosen));
    assert_eq!(t.dnat, Some(format!("10.96.0.10:80 -> {chosen}")));
    assert_eq!(t.snat, None);
    let exit = t.exit.clone().unwrap();
    if chosen.starts_with("10.244.1.") {
        assert_eq!(exit, "local pod default/web-0");
    } else {
        assert_eq!(
            exit,
            "remote node node-b over VXLAN (to 198.18.0.11, VNI 1)"
        );
    }
    // The same 5-tuple always gets the same backend.
    let again = run(Entry::Pod, ("10.244.1.11", 40000), ("10.96.0.10", 80), 6);
    assert_eq!(again, t);
}

#[test]
fn scenarios() {
    struct Case {
        what: &'static str,
        entry: Entry,
        src: (&'static str, u16),
        dst: (&'static str, u16),
        proto: u8,
        verdict: &'static str,
        reason: Option<&'static str>,
        dnat: Option<&'static str>,
        snat_to: Option<&'static str>,
        exit: Option<&'static str>,
    }
    let cases = [
        Case {
            what: "pod to a UDP service with a remote backend",
            entry: Entry::Pod,
            src: ("10.244.1.11", 40001),
            dst: ("10.96.0.53", 53),
            proto: 17,
            verdict: "forward",
            reason: None,
            dnat: Some("10.96.0.53:53 -> 10.244.2.20:53"),
            snat_to: None,
            exit: Some("remote node node-b over VXLAN (to 198.18.0.11, VNI 1)"),
        },
        Case {
            what: "pod to pod on this node",
            entry: Entry::Pod,
            src: ("10.244.1.11", 40002),
            dst: ("10.244.1.10", 8080),
            proto: 6,
            verdict: "forward",
            reason: None,
            dnat: None,
            snat_to: None,
            exit: Some("local pod default/web-0"),
        },
        Case {
            what: "pod to pod on another node",
            entry: Entry::Pod,
            src: ("10.244.1.11", 40003),
            dst: ("10.244.2.10", 8080),
            proto: 6,
            verdict: "forward",
            reason: None,
            dnat: None,
            snat_to: None,
            exit: Some("remote node node-b over VXLAN (to 198.18.0.11, VNI 1)"),
        },
        Case {
            what: "pod to outside the cluster: masqueraded to the node address",
            entry: Entry::Pod,
            src: ("10.244.1.11", 40004),
            dst: ("8.8.8.8", 53),
            proto: 17,
            verdict: "forward",
            reason: None,
            dnat: None,
            snat_to: Some("198.18.0.10:"),
            exit: Some("uplink"),
        },
        Case {
            what:
                "outside to a NodePort with externalTrafficPolicy Local: local backend, client kept",
            entry: Entry::Uplink,
            src: ("198.19.0.7", 50000),
            dst: ("198.18.0.10", 30080),
            proto: 6,
            verdict: "forward",
            reason: None,
            dnat: Some("198.18.0.10:30080 -> 10.244.1.10:8080"),
            snat_to: None,
            exit: Some("local pod default/web-0"),
        },
        Case {
            what: "a service without endpoints: rejected",
            entry: Entry::Pod,
            src: ("10.244.1.11", 40005),
            dst: ("10.96.0.99", 80),
            proto: 6,
            verdict: "reject",
            reason: Some("no_endpoints"),
            dnat: None,
            snat_to: None,
            exit: Some("local pod default/client"),
        },
        Case {
            what: "an unallocated service address: dropped",
            entry: Entry::Pod,
            src: ("10.244.1.11", 40006),
            dst: ("10.96.0.98", 80),
            proto: 6,
            verdict: "drop",
            reason: Some("service_not_found"),
            dnat: None,
            snat_to: None,
            exit: None,
        },
        Case {
            what: "the gateway's ping: answered in place",
            entry: Entry::Pod,
            src: ("10.244.1.11", 7),
            dst: ("10.244.1.1", 0),
            proto: 1,
            verdict: "reply",
            reason: None,
            dnat: None,
            snat_to: None,
            exit: Some("back where it came from"),
        },
    ];
    for c in cases {
        let t = run(c.entry, c.src, c.dst, c.proto);
        let ctx = format!("{}:\n{t}", c.what);
        assert_eq!(t.verdict, c.verdict, "{ctx}");
        assert_eq!(t.reason.as_deref(), c.reason, "{ctx}");
        assert_eq!(t.dnat.as_deref(), c.dnat, "{ctx}");
        match c.snat_to {
            Some(to) => assert!(
                t.snat
                    .as_deref()
                    .is_some_and(|s| s.contains(&format!("-> {to}"))),
                "{ctx}"
            ),
            None => assert_eq!(t.snat, None, "{ctx}"),
        }
        assert_eq!(t.exit.as_deref(), c.exit, "{ctx}");
    }
}

#[test]
fn a_packet_from_a_pod_must_start_at_a_pods_address() {
    let e = trace(
        &snapshot(),
        &TraceInput {
            entry: Entry::Pod,
            src: (ip("10.244.1.99"), 1),
            dst: (ip("10.96.0.10"), 80),
            proto: 6,
        },
    )
    .unwrap_err();
    assert_eq!(
        e,
        TraceError::NoSuchPod {
            node: "node-a".into(),
            ip: ip("10.244.1.99")
        }
    );
    assert!(e.to_string().contains("node-a") && e.to_string().contains("10.244.1.99"));
}

#[test]
fn the_json_has_every_field() {
    let t = run(Entry::Pod, ("10.244.1.11", 40000), ("10.96.0.53", 53), 17);
    let v = serde_json::to_value(&t).unwrap();
    for field in [
        "entered",
        "packet",
        "service",
        "verdict",
        "reason",
        "dnat",
        "snat",
        "packet_out",
        "exit",
    ] {
        assert!(v.get(field).is_some(), "{field} in {v}");
    }
    assert_eq!(v["service"]["chosen"], "10.244.2.20:53");
    assert_eq!(v["packet"], "udp 10.244.1.11:40000 -> 10.96.0.53:53");
    assert_eq!(v["packet_out"], "udp 10.244.1.11:40000 -> 10.244.2.20:53");
}
