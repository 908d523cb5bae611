//! `kxdp trace` over a table of scenarios on the fixture cluster: what each stage decides for
//! one packet of each path a user asks about.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use kxdp_control::compile::{Compiler, NodeSettings};
use kxdp_control::json::{Endpoint, FrontendKind, Policy};
use kxdp_control::manifest::parse;
use kxdp_control::model::Model;
use kxdp_control::trace::{
    trace, Entered, Entry, Exit, PolicyDirection, PolicyOutcome, Trace, TraceError, TraceInput,
    TraceVerdict,
};
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::reason::{DropReason, PassReason};
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The fixture, plus a service with no endpoints.
fn snapshot() -> std::sync::Arc<Snapshot> {
    snapshot_with("")
}

/// The fixture, a service with no endpoints, and the objects of `extra`.
fn snapshot_with(extra: &str) -> std::sync::Arc<Snapshot> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster.yaml");
    let text = std::fs::read_to_string(fixture).unwrap()
        + "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: default}\n\
           spec: {clusterIP: 10.96.0.99, ports: [{name: http, port: 80}]}\n"
        + extra;
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

fn ep(text: &str) -> Endpoint {
    let (ip, port) = text.split_once(':').unwrap();
    Endpoint::new(ip.parse().unwrap(), port.parse().unwrap())
}

#[test]
fn a_cluster_address_on_the_uplink_is_an_internal_client_as_the_pipeline_sees_it() {
    // A pod of another node reaching this node's NodePort over the underlay: kube-proxy (and
    // the pipeline) treat it as inside the cluster, so externalTrafficPolicy Local does not
    // apply to it and the trace must say so.
    let t = run(
        Entry::Uplink,
        ("10.244.2.77", 50000),
        ("198.18.0.10", 30080),
        6,
    );
    let service = t.service.expect("the NodePort");
    assert_eq!(service.policy.to_string(), "Cluster", "{service:?}");
    let outside = run(
        Entry::Uplink,
        ("198.19.0.7", 50000),
        ("198.18.0.10", 30080),
        6,
    );
    assert_eq!(
        outside.service.expect("the NodePort").policy.to_string(),
        "Local"
    );
}

#[test]
fn pod_to_cluster_ip_names_the_service_its_backends_and_the_one_chosen() {
    let t = run(Entry::Pod, ("10.244.1.11", 40000), ("10.96.0.10", 80), 6);
    assert_eq!(
        t.entered,
        Entered::Pod {
            pod: "default/client".into()
        }
    );
    assert_eq!(t.verdict, TraceVerdict::Forward);
    let s = t.service.as_ref().unwrap();
    assert_eq!(s.name, "default/web:http");
    assert_eq!(s.frontend.kind, FrontendKind::ClusterIp);
    assert_eq!(
        (s.frontend.ip, s.frontend.port),
        (Some(ip("10.96.0.10")), 80)
    );
    assert_eq!(s.policy, Policy::Cluster);
    assert_eq!(s.backends, [ep("10.244.1.10:8080"), ep("10.244.2.10:8080")]);
    let chosen = s.chosen.expect("a backend");
    assert!(s.backends.contains(&chosen));
    let dnat = t.dnat.expect("translated");
    assert_eq!((dnat.from, dnat.to), (ep("10.96.0.10:80"), chosen));
    assert_eq!(t.snat, None);
    // The translation is the one conntrack recorded, and the packet left with it.
    let ct = t.conntrack.as_ref().expect("a tracked flow");
    assert_eq!((ct.original, ct.reply.src), (t.packet, chosen));
    assert_eq!(ct.state, "tcp_opening");
    assert_eq!(t.packet_out.map(|p| p.dst), Some(chosen));
    let exit = t.exit.clone().unwrap();
    if chosen.ip.octets()[2] == 1 {
        assert_eq!(exit.to_string(), "local pod default/web-0");
    } else {
        assert_eq!(
            exit,
            Exit::Node {
                node: Some("node-b".into()),
                underlay_ip: ip("198.18.0.11"),
                vni: 1
            }
        );
        assert!(t.events.iter().any(|e| e == "vxlan_encap"), "{t}");
    }
    assert!(t.events.iter().any(|e| e == "service_new_flow"), "{t}");
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
        verdict: TraceVerdict,
        reason: Option<&'static str>,
        event: Option<&'static str>,
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
            verdict: TraceVerdict::Forward,
            reason: None,
            event: Some("vxlan_encap"),
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
            verdict: TraceVerdict::Forward,
            reason: None,
            event: Some("local_forward"),
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
            verdict: TraceVerdict::Forward,
            reason: None,
            event: Some("vxlan_encap"),
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
            verdict: TraceVerdict::Forward,
            reason: None,
            event: Some("masquerade_new_flow"),
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
            verdict: TraceVerdict::Forward,
            reason: None,
            event: Some("service_new_flow"),
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
            verdict: TraceVerdict::Reject,
            reason: Some("icmp_port_unreachable"),
            event: Some("icmp_port_unreachable"),
            dnat: None,
            snat_to: None,
            exit: Some("local pod default/client"),
        },
        Case {
            what: "a service address on a port it lacks: rejected, as kube-proxy does",
            entry: Entry::Pod,
            src: ("10.244.1.11", 40007),
            dst: ("10.96.0.10", 81),
            proto: 6,
            verdict: TraceVerdict::Reject,
            reason: Some("icmp_port_unreachable"),
            event: Some("icmp_port_unreachable"),
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
            verdict: TraceVerdict::Drop,
            reason: Some("service_not_found"),
            event: Some("dropped"),
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
            verdict: TraceVerdict::Reply,
            reason: Some("icmp_echo_reply"),
            event: Some("icmp_echo_reply"),
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
        assert_eq!(t.dnat.map(|d| d.to_string()).as_deref(), c.dnat, "{ctx}");
        match c.snat_to {
            Some(to) => assert!(
                t.snat.is_some_and(|s| s.to.to_string().starts_with(to)),
                "{ctx}"
            ),
            None => assert_eq!(t.snat, None, "{ctx}"),
        }
        assert_eq!(t.exit.map(|e| e.to_string()).as_deref(), c.exit, "{ctx}");
        if let Some(e) = c.event {
            assert!(t.events.iter().any(|x| x == e), "{e} counted: {ctx}");
        }
    }
}

/// Every reason and event a trace reports is a name from kxdp's lists (`DropReason`,
/// `PassReason`, `Event`): the trace reads what the pipeline counted, it invents none.
#[test]
fn every_reason_and_event_is_a_name_from_the_lists() {
    let names: Vec<&str> = DropReason::ALL
        .iter()
        .map(|r| r.name())
        .chain(PassReason::ALL.iter().map(|r| r.name()))
        .chain(Event::ALL.iter().map(|e| e.name()))
        .collect();
    let packets = [
        (Entry::Pod, ("10.244.1.11", 1), ("10.96.0.10", 80), 6),
        (Entry::Pod, ("10.244.1.11", 2), ("10.96.0.99", 80), 6),
        (Entry::Pod, ("10.244.1.11", 3), ("10.96.0.99", 80), 17),
        (Entry::Pod, ("10.244.1.11", 4), ("10.96.0.98", 80), 6),
        (Entry::Pod, ("10.244.1.11", 5), ("10.244.1.1", 0), 1),
        (Entry::Pod, ("10.244.1.11", 6), ("8.8.8.8", 53), 17),
        (Entry::Pod, ("10.244.1.10", 7), ("10.96.0.10", 80), 6),
        (Entry::Uplink, ("198.19.0.7", 8), ("198.18.0.10", 22), 6),
        (Entry::Uplink, ("198.19.0.7", 9), ("198.18.0.10", 30080), 6),
        (Entry::Uplink, ("198.19.0.7", 10), ("10.244.1.10", 8080), 6),
        (Entry::Host, ("198.18.0.10", 11), ("10.96.0.99", 80), 6),
        (Entry::Host, ("198.18.0.10", 12), ("10.96.0.10", 80), 6),
    ];
    let mut reasons = std::collections::BTreeSet::new();
    for (entry, src, dst, proto) in packets {
        let t = run(entry, src, dst, proto);
        if let Some(r) = &t.reason {
            assert!(
                names.contains(&r.as_str()),
                "reason {r:?} is in no list:\n{t}"
            );
            reasons.insert(r.clone());
        }
        assert!(!t.events.is_empty(), "the pipeline counted nothing?\n{t}");
        for e in &t.events {
            assert!(
                Event::ALL.iter().any(|x| x.name() == e),
                "event {e:?} is no Event:\n{t}"
            );
        }
        // A drop's reason is the one its `dropped` event was counted for.
        assert_eq!(
            t.verdict == TraceVerdict::Drop,
            t.events.iter().any(|e| e == "dropped"),
            "{t}"
        );
    }
    for wanted in [
        "icmp_port_unreachable",
        "service_not_found",
        "icmp_echo_reply",
        "for_node",
    ] {
        assert!(reasons.contains(wanted), "{wanted} among {reasons:?}");
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
fn the_json_has_every_field_as_typed_objects() {
    let t = run(Entry::Pod, ("10.244.1.11", 40000), ("10.96.0.53", 53), 17);
    let v = serde_json::to_value(&t).unwrap();
    for field in [
        "entered",
        "packet",
        "service",
        "verdict",
        "reason",
        "events",
        "conntrack",
        "dnat",
        "snat",
        "packet_out",
        "exit",
        "network_policy",
    ] {
        assert!(v.get(field).is_some(), "{field} in {v}");
    }
    // The client is a local pod: its egress is reported (open: no policy here), and the
    // backend, on another node, is that node's to judge.
    assert_eq!(
        v["network_policy"],
        serde_json::json!({"egress": {"pod": "default/client", "verdict": "open", "policies": []},
                           "ingress": null})
    );
    let endpoint = |ip: &str, port: u16| serde_json::json!({"ip": ip, "port": port});
    assert_eq!(
        v["entered"],
        serde_json::json!({"via": "pod", "pod": "default/client"})
    );
    assert_eq!(
        v["packet"],
        serde_json::json!({"proto": "udp", "src": endpoint("10.244.1.11", 40000),
                           "dst": endpoint("10.96.0.53", 53)})
    );
    assert_eq!(
        v["service"]["frontend"],
        serde_json::json!({"kind": "ClusterIP", "ip": "10.96.0.53", "port": 53})
    );
    assert_eq!(v["service"]["policy"], "Cluster");
    assert_eq!(v["service"]["backends"][0], endpoint("10.244.2.20", 53));
    assert_eq!(v["service"]["chosen"], endpoint("10.244.2.20", 53));
    assert_eq!(v["verdict"], "forward");
    assert_eq!(
        v["dnat"],
        serde_json::json!({"from": endpoint("10.96.0.53", 53), "to": endpoint("10.244.2.20", 53)})
    );
    assert_eq!(v["snat"], serde_json::Value::Null);
    assert_eq!(v["conntrack"]["reply"]["src"], endpoint("10.244.2.20", 53));
    assert_eq!(v["conntrack"]["state"], "udp");
    assert_eq!(v["packet_out"]["dst"], endpoint("10.244.2.20", 53));
    assert_eq!(
        v["exit"],
        serde_json::json!({"to": "node", "node": "node-b", "underlay_ip": "198.18.0.11", "vni": 1})
    );
    // It reads back as the same trace.
    assert_eq!(serde_json::from_value::<Trace>(v).unwrap(), t);
}

#[test]
fn entry_names_parse_back_and_match_where_the_trace_says_it_entered() {
    let sources = [
        (Entry::Pod, "10.244.1.11"),
        (Entry::Uplink, "198.19.0.7"),
        (Entry::Host, "198.18.0.10"),
    ];
    for (entry, src) in sources {
        let name = entry.to_string();
        assert_eq!(name.parse::<Entry>(), Ok(entry));
        let t = run(entry, (src, 40000), ("10.96.0.10", 80), 6);
        assert_eq!(serde_json::to_value(&t).unwrap()["entered"]["via"], name);
    }
    let err = "wire".parse::<Entry>().unwrap_err();
    assert_eq!(err.to_string(), r#""wire" is not pod, uplink or host"#);
}

/// kube-proxy's packet-flow cases restated for `kxdp trace`: every kind of frontend of a
/// LoadBalancer service (ClusterIP, NodePort, external IP, load-balancer IP), from every
/// origin (a local pod, the node itself, an outside client), under both external traffic
/// policies: which endpoints a new flow may get, and whether it is masqueraded.
#[test]
fn every_frontend_from_every_origin_under_both_policies_as_kube_proxy_serves_it() {
    let service = |name: &str, policy: &str, n: u8| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{type: LoadBalancer, clusterIP: 10.96.1.{n}, externalIPs: [198.19.{n}.1], \
             externalTrafficPolicy: {policy}, ports: [{{name: http, port: 80, nodePort: 301{n:02}}}]}}\n\
             status: {{loadBalancer: {{ingress: [{{ip: 198.19.{n}.2}}]}}}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, protocol: TCP, port: 8080}}]\n\
             endpoints:\n  - addresses: [10.244.1.10]\n    nodeName: node-a\n\
             \x20 - addresses: [10.244.2.10]\n    nodeName: node-b\n"
        )
    };
    let snap = snapshot_with(&(service("cl", "Cluster", 1) + &service("lo", "Local", 2)));
    let both = [ep("10.244.1.10:8080"), ep("10.244.2.10:8080")];
    let local = [ep("10.244.1.10:8080")];
    let origins = [
        ("a local pod", Entry::Pod, "10.244.1.11"),
        ("the node", Entry::Host, "198.18.0.10"),
        ("outside", Entry::Uplink, "198.19.0.7"),
    ];
    for (policy, n) in [("Cluster", 1u8), ("Local", 2)] {
        let frontends = [
            ("ClusterIP", format!("10.96.1.{n}"), 80),
            ("NodePort", "198.18.0.10".to_owned(), 30100 + u16::from(n)),
            ("external IP", format!("198.19.{n}.1"), 80),
            ("load-balancer IP", format!("198.19.{n}.2"), 80),
        ];
        for (kind, addr, port) in &frontends {
            for (origin, entry, src) in origins {
                let what =
                    format!("{origin} to the {kind} of an externalTrafficPolicy {policy} service");
                let t = trace(
                    &snap,
                    &TraceInput {
                        entry,
                        src: (ip(src), 40000),
                        dst: (ip(addr), *port),
                        proto: 6,
                    },
                )
                .expect("traced");
                assert_eq!(t.verdict, TraceVerdict::Forward, "{what}:\n{t}");
                let s = t.service.as_ref().expect("a service");
                let external = *kind != "ClusterIP";
                // kube-proxy: only outside clients of an external frontend meet the Local
                // policy; they keep their address. Every other new flow of an external
                // frontend of a Cluster service is masqueraded, and so is every client outside
                // the cluster CIDR (the node, outside clients) of the rest.
                let local_only = external && policy == "Local" && entry == Entry::Uplink;
                let masqueraded = if external && policy == "Cluster" {
                    true
                } else {
                    entry != Entry::Pod && !local_only
                };
                let want: &[Endpoint] = if local_only { &local } else { &both };
                assert_eq!(s.backends, want, "{what}:\n{t}");
                assert_eq!(t.snat.is_some(), masqueraded, "{what}:\n{t}");
                if let Some(snat) = &t.snat {
                    assert_eq!(snat.to.ip, ip("10.244.1.1"), "{what}: the gateway address");
                }
            }
        }
    }
}

/// Every pod of `default` takes TCP 8080 from the client pod only, and sends only inside the
/// cluster CIDR.
const POLICIES: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: default}
spec:
  podSelector: {}
  ingress:
    - from: [{ipBlock: {cidr: 10.244.1.11/32}}]
      ports: [{port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: stay-inside, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - to: [{ipBlock: {cidr: 10.244.0.0/16}}]
"#;

fn run_with_policies(entry: Entry, src: (&str, u16), dst: (&str, u16)) -> Trace {
    trace(
        &snapshot_with(POLICIES),
        &TraceInput {
            entry,
            src: (ip(src.0), src.1),
            dst: (ip(dst.0), dst.1),
            proto: 6,
        },
    )
    .expect("traced")
}

fn direction(pod: &str, verdict: PolicyOutcome, policies: &[&str]) -> Option<PolicyDirection> {
    Some(PolicyDirection {
        pod: pod.into(),
        verdict,
        policies: policies.iter().map(|p| p.to_string()).collect(),
    })
}

#[test]
fn trace_names_the_policy_or_the_default_deny_each_way() {
    use PolicyOutcome::*;
    let allowed = run_with_policies(Entry::Pod, ("10.244.1.11", 40000), ("10.244.1.10", 8080));
    assert_eq!(allowed.verdict, TraceVerdict::Forward, "{allowed}");
    let p = allowed
        .network_policy
        .clone()
        .expect("both ends are local pods");
    assert_eq!(
        p.egress,
        direction("default/client", Allowed, &["default/stay-inside"])
    );
    assert_eq!(
        p.ingress,
        direction("default/web-0", Allowed, &["default/web-in"])
    );
    let text = allowed.to_string();
    assert!(
        text.contains("egress:     pod default/client: allowed by default/stay-inside"),
        "{text}"
    );

    let wrong_port = run_with_policies(Entry::Pod, ("10.244.1.11", 40000), ("10.244.1.10", 9090));
    assert_eq!(
        (wrong_port.verdict, wrong_port.reason.as_deref()),
        (
            TraceVerdict::Drop,
            Some(DropReason::PolicyDeniedIngress.name())
        )
    );
    let p = wrong_port.network_policy.clone().unwrap();
    assert_eq!(
        p.ingress,
        direction("default/web-0", Denied, &["default/web-in"])
    );
    assert!(
        wrong_port
            .to_string()
            .contains("ingress:    pod default/web-0: denied (default deny of default/web-in)"),
        "{wrong_port}"
    );

    let outside = run_with_policies(Entry::Pod, ("10.244.1.11", 40000), ("198.51.100.1", 443));
    assert_eq!(
        outside.reason.as_deref(),
        Some(DropReason::PolicyDeniedEgress.name())
    );
    let p = outside.network_policy.unwrap();
    assert_eq!(
        p.egress,
        direction("default/client", Denied, &["default/stay-inside"])
    );
    assert_eq!(p.ingress, None, "no local pod at the other end");

    // The node's own kernel to a port no policy opens: its own node, always allowed.
    let probe = run_with_policies(Entry::Host, ("198.18.0.10", 50000), ("10.244.1.10", 9090));
    assert_eq!(probe.verdict, TraceVerdict::Forward, "{probe}");
    assert_eq!(
        probe.network_policy.unwrap().ingress,
        direction("default/web-0", Exempt, &[])
    );
}

#[test]
fn trace_judges_a_service_flow_on_its_backend_even_when_it_is_dropped() {
    // From outside to the NodePort of `default/web`, whose external policy is Local: the one
    // local backend, web-0:8080, sees the client's own address, which web-in does not admit.
    // Nothing is tracked, so the backend is the pipeline's pick, not conntrack's.
    let t = run_with_policies(Entry::Uplink, ("198.19.0.7", 5000), ("198.18.0.10", 30080));
    assert_eq!(
        t.reason.as_deref(),
        Some(DropReason::PolicyDeniedIngress.name()),
        "{t}"
    );
    assert_eq!(t.conntrack, None);
    let p = t.network_policy.expect("the backend is a local pod");
    assert_eq!(p.egress, None);
    assert_eq!(
        p.ingress,
        direction("default/web-0", PolicyOutcome::Denied, &["default/web-in"])
    );
    // Without policies the same trace says the pod is open, and the flow goes through.
    let open = run(
        Entry::Uplink,
        ("198.19.0.7", 5000),
        ("198.18.0.10", 30080),
        6,
    );
    assert_eq!(open.verdict, TraceVerdict::Forward);
    assert_eq!(
        open.network_policy.unwrap().ingress,
        direction("default/web-0", PolicyOutcome::Open, &[])
    );
}
