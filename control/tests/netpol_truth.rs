//! NetworkPolicy semantics as a truth table, in the style of the upstream conformance suites
//! (Kubernetes' `test/e2e/network/netpol`, cyclonus): namespaces x, y, z with pods a, b, c in
//! each, and per case a set of policies and the flows it decides, each flow stating source,
//! destination, protocol, port and the expected verdict per direction (the destination pod's
//! ingress, the source pod's egress).
//!
//! The verdicts are the compiled tables' ([`PodPolicy::evaluate`]), so this checks the
//! conversion ([`kxdp_control::netpol`]), the compiler ([`compile_policies`]) and the tables
//! together. What the tables do not decide (a pod reaching itself, node traffic) is the fast
//! path's, and not here.
//!
//! The same cases also run through the dataplane's pipeline ([`process_batch`]), with each
//! namespace's pods on a node of their own: every flow's first packet is sent on the source
//! pod's node (egress, and ingress where both pods share it) and, arriving over VXLAN or on the
//! uplink, on the destination pod's node (ingress), and must be dropped with the direction's
//! reason exactly where the table says deny; and through `kxdp trace`, which must name each
//! way's verdict and policies as the table does.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kxdp_control::model::{Model, Object};
use kxdp_control::policy::{compile_policies, PodPolicies};
use kxdp_control::tables::{
    Direction, InterfaceId, LocalPod, PolicyVerdict, RemoteNode, Snapshot, SnapshotInputs,
};
use kxdp_control::trace::{trace, Entry, PolicyDirection, PolicyOutcome, TraceInput, TraceVerdict};
use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::wire::build::FrameSpec;
use kxdp_dataplane::wire::Ipv4Cidr;
use kxdp_dataplane::{process_batch, Counters, DropReason, Instant, Verdict};
use kxdp_testkit::{mac, tcp_flags, FrameBuf, Topology};
use serde_json::{json, Value};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// The cluster every case starts from: namespaces x (`ns=x, team=blue`), y (`ns=y,
/// team=red`), z (`ns=z`); pods a, b, c in each (`pod=<name>`, c also `tier=db`), every pod
/// with named ports `serve-80-tcp`, `serve-81-udp`, `serve-80-sctp`, and `http` on TCP 80 on a
/// but TCP 8080 on b (c has none), so a named port resolves per pod.
fn cluster() -> Model {
    let mut model = Model::new();
    for (ns, extra) in [
        ("x", json!({"team": "blue"})),
        ("y", json!({"team": "red"})),
        ("z", json!({})),
    ] {
        let mut labels = extra;
        labels["ns"] = ns.into();
        let o: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels}}))
        .unwrap();
        model.apply(&Object::Namespace(Box::new(o))).unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let mut labels = json!({"pod": name});
            let mut ports = vec![
                json!({"name": "serve-80-tcp", "containerPort": 80}),
                json!({"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"}),
                json!({"name": "serve-80-sctp", "containerPort": 80, "protocol": "SCTP"}),
            ];
            match *name {
                "a" => ports.push(json!({"name": "http", "containerPort": 80})),
                "b" => ports.push(json!({"name": "http", "containerPort": 8080})),
                _ => labels["tier"] = "db".into(),
            }
            let o: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"nodeName": "node-1",
                         "containers": [{"name": "c", "image": "c", "ports": ports}]},
                "status": {"phase": "Running", "podIP": pod_ip(ns, i)}}))
            .unwrap();
            model.apply(&Object::Pod(Box::new(o))).unwrap();
        }
    }
    model
}

fn pod_ip(ns: &str, i: usize) -> String {
    let net = match ns {
        "x" => 1,
        "y" => 2,
        _ => 3,
    };
    format!("10.244.{net}.{}", i + 10)
}

/// `ns/pod` to its address; anything else is an address outside the cluster.
fn address(who: &str) -> Ipv4Addr {
    match who.split_once('/') {
        Some((ns, pod)) => {
            let i = ["a", "b", "c"].iter().position(|p| *p == pod).unwrap();
            pod_ip(ns, i).parse().unwrap()
        }
        None => who.parse().unwrap(),
    }
}

fn policy(ns: &str, name: &str, spec: Value) -> Object {
    let o: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))
    .unwrap();
    Object::NetworkPolicy(Box::new(o))
}

/// One flow and what each side says: `ingress` is the destination pod's verdict, `egress`
/// the source pod's; `"open"`, `"allow:<policy>"`, `"deny:<policies>"`, or `"-"` where that
/// side is no pod (an address outside the cluster).
struct Flow {
    from: &'static str,
    to: &'static str,
    proto: u8,
    port: u16,
    ingress: &'static str,
    egress: &'static str,
}

const fn flow(
    from: &'static str,
    to: &'static str,
    proto: u8,
    port: u16,
    ingress: &'static str,
    egress: &'static str,
) -> Flow {
    Flow {
        from,
        to,
        proto,
        port,
        ingress,
        egress,
    }
}

struct Case {
    what: &'static str,
    policies: Vec<Object>,
    flows: Vec<Flow>,
}

fn verdict(policies: &PodPolicies, pod: &str, d: Direction, peer: &str, f: &Flow) -> String {
    if !pod.contains('/') {
        return "-".into();
    }
    let compiled = policies
        .get(pod)
        .unwrap_or_else(|| panic!("no entry for pod {pod}"));
    match compiled.evaluate(d, address(peer), f.proto, f.port) {
        PolicyVerdict::Open => "open".into(),
        PolicyVerdict::Exempt => "exempt".into(),
        PolicyVerdict::Allowed(p) => format!("allow:{p}"),
        PolicyVerdict::Denied(ps) => {
            let names: Vec<&str> = ps.iter().map(|p| &**p).collect();
            format!("deny:{}", names.join(","))
        }
    }
}

fn cases() -> Vec<Case> {
    let deny_all_ingress = || policy("x", "deny-in", json!({"podSelector": {}}));
    vec![
        Case {
            what: "no policy: every pod open both ways",
            policies: vec![],
            flows: vec![
                flow("y/a", "x/a", TCP, 80, "open", "open"),
                flow("x/b", "z/c", UDP, 81, "open", "open"),
                flow("x/a", "198.51.100.1", TCP, 443, "-", "open"),
            ],
        },
        Case {
            what: "default deny ingress in x: x's pods take nothing, send anything; other \
                   namespaces untouched",
            policies: vec![deny_all_ingress()],
            flows: vec![
                flow("y/a", "x/a", TCP, 80, "deny:x/deny-in", "open"),
                flow("x/b", "x/a", TCP, 80, "deny:x/deny-in", "open"),
                flow("x/a", "y/a", TCP, 80, "open", "open"),
                flow("198.51.100.1", "x/c", TCP, 80, "deny:x/deny-in", "-"),
            ],
        },
        Case {
            what: "policyTypes implied: egress rules add Egress, Ingress is always there (so \
                   ingress is denied); explicit [Egress] with `egress: []` denies egress only",
            policies: vec![
                policy(
                    "x",
                    "implied",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                ),
                policy(
                    "y",
                    "egress-only",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "policyTypes": ["Egress"], "egress": []}),
                ),
            ],
            flows: vec![
                flow("x/a", "x/b", TCP, 80, "open", "allow:x/implied"),
                flow("x/a", "x/c", TCP, 80, "open", "deny:x/implied"),
                flow("x/b", "x/a", TCP, 80, "deny:x/implied", "open"),
                flow("y/a", "x/b", TCP, 80, "open", "deny:y/egress-only"),
                flow("x/b", "y/a", TCP, 80, "open", "open"),
            ],
        },
        Case {
            what: "an empty rule list denies, a list of one empty rule allows everything",
            policies: vec![
                policy(
                    "x",
                    "none",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": []}),
                ),
                policy(
                    "x",
                    "all",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]}),
                ),
            ],
            flows: vec![
                flow("y/c", "x/a", TCP, 80, "deny:x/none", "open"),
                flow("y/c", "x/b", TCP, 80, "allow:x/all", "open"),
                flow("y/c", "x/b", SCTP, 9, "allow:x/all", "open"),
                flow("203.0.113.9", "x/b", UDP, 53, "allow:x/all", "-"),
            ],
        },
        Case {
            what: "podSelector peers are the policy's namespace's pods only",
            policies: vec![policy(
                "x",
                "from-b",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            flows: vec![
                flow("x/b", "x/a", TCP, 80, "allow:x/from-b", "open"),
                flow("x/c", "x/a", TCP, 80, "deny:x/from-b", "open"),
                flow("y/b", "x/a", TCP, 80, "deny:x/from-b", "open"),
                flow("x/c", "x/b", TCP, 80, "open", "open"),
            ],
        },
        Case {
            what: "namespaceSelector alone: every pod of the selected namespaces",
            policies: vec![policy(
                "x",
                "from-y",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            flows: vec![
                flow("y/a", "x/a", TCP, 80, "allow:x/from-y", "open"),
                flow("y/c", "x/a", UDP, 81, "allow:x/from-y", "open"),
                flow("x/b", "x/a", TCP, 80, "deny:x/from-y", "open"),
                flow("z/a", "x/a", TCP, 80, "deny:x/from-y", "open"),
            ],
        },
        Case {
            what: "namespaceSelector and podSelector in one peer are ANDed, in two peers ORed",
            policies: vec![
                policy(
                    "x",
                    "and",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "ingress": [{"from": [{
                               "namespaceSelector": {"matchLabels": {"ns": "y"}},
                               "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                ),
                policy(
                    "x",
                    "or",
                    json!({"podSelector": {"matchLabels": {"pod": "c"}},
                           "ingress": [{"from": [
                               {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                               {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                ),
            ],
            flows: vec![
                flow("y/b", "x/a", TCP, 80, "allow:x/and", "open"),
                flow("y/a", "x/a", TCP, 80, "deny:x/and", "open"),
                flow("x/b", "x/a", TCP, 80, "deny:x/and", "open"),
                flow("z/b", "x/a", TCP, 80, "deny:x/and", "open"),
                flow("y/a", "x/c", TCP, 80, "allow:x/or", "open"),
                flow("x/b", "x/c", TCP, 80, "allow:x/or", "open"),
                flow("z/b", "x/c", TCP, 80, "deny:x/or", "open"),
            ],
        },
        Case {
            what: "an empty namespaceSelector is every namespace; the API server's \
                   kubernetes.io/metadata.name label picks one by name",
            policies: vec![
                policy(
                    "x",
                    "any-ns",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "ingress": [{"from": [{"namespaceSelector": {},
                               "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                ),
                policy(
                    "x",
                    "by-name",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                           "ingress": [{"from": [{"namespaceSelector":
                               {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}),
                ),
            ],
            flows: vec![
                flow("z/c", "x/a", TCP, 80, "allow:x/any-ns", "open"),
                flow("x/c", "x/a", TCP, 80, "allow:x/any-ns", "open"),
                flow("y/b", "x/a", TCP, 80, "deny:x/any-ns", "open"),
                flow("z/a", "x/b", TCP, 80, "allow:x/by-name", "open"),
                flow("y/a", "x/b", TCP, 80, "deny:x/by-name", "open"),
            ],
        },
        Case {
            what: "matchExpressions: In, NotIn (an unset label is not in), Exists, DoesNotExist",
            policies: vec![
                policy(
                    "x",
                    "in",
                    json!({"podSelector": {"matchExpressions": [
                               {"key": "pod", "operator": "In", "values": ["a"]}]},
                           "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                               {"key": "team", "operator": "NotIn", "values": ["red"]}]}}]}]}),
                ),
                policy(
                    "x",
                    "exists",
                    json!({"podSelector": {"matchExpressions": [
                               {"key": "tier", "operator": "Exists"}]},
                           "ingress": [{"from": [{
                               "namespaceSelector": {"matchExpressions": [
                                   {"key": "team", "operator": "Exists"}]},
                               "podSelector": {"matchExpressions": [
                                   {"key": "tier", "operator": "DoesNotExist"}]}}]}]}),
                ),
            ],
            flows: vec![
                flow("z/a", "x/a", TCP, 80, "allow:x/in", "open"),
                flow("x/b", "x/a", TCP, 80, "allow:x/in", "open"),
                flow("y/a", "x/a", TCP, 80, "deny:x/in", "open"),
                flow("y/a", "x/c", TCP, 80, "allow:x/exists", "open"),
                flow("x/b", "x/c", TCP, 80, "allow:x/exists", "open"),
                flow("y/c", "x/c", TCP, 80, "deny:x/exists", "open"),
                flow("z/a", "x/c", TCP, 80, "deny:x/exists", "open"),
                flow("z/a", "x/b", TCP, 80, "open", "open"),
            ],
        },
        Case {
            what: "ports: number and protocol (TCP by default), endPort ranges, a protocol \
                   alone is all its ports, SCTP",
            policies: vec![policy(
                "x",
                "ports",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "ingress": [{"ports": [
                           {"port": 80},
                           {"protocol": "UDP", "port": 1000, "endPort": 1002},
                           {"protocol": "SCTP"}]}]}),
            )],
            flows: vec![
                flow("y/a", "x/a", TCP, 80, "allow:x/ports", "open"),
                flow("y/a", "x/a", TCP, 81, "deny:x/ports", "open"),
                flow("y/a", "x/a", UDP, 80, "deny:x/ports", "open"),
                flow("y/a", "x/a", UDP, 999, "deny:x/ports", "open"),
                flow("y/a", "x/a", UDP, 1000, "allow:x/ports", "open"),
                flow("y/a", "x/a", UDP, 1002, "allow:x/ports", "open"),
                flow("y/a", "x/a", UDP, 1003, "deny:x/ports", "open"),
                flow("y/a", "x/a", SCTP, 7, "allow:x/ports", "open"),
                flow("y/a", "x/a", TCP, 1001, "deny:x/ports", "open"),
            ],
        },
        Case {
            what: "ingress named ports resolve on the selected pod, protocol included",
            policies: vec![policy(
                "x",
                "named-in",
                json!({"podSelector": {},
                       "ingress": [{"ports": [
                           {"port": "http"},
                           {"protocol": "UDP", "port": "serve-81-udp"},
                           {"protocol": "UDP", "port": "serve-80-tcp"}]}]}),
            )],
            flows: vec![
                flow("y/a", "x/a", TCP, 80, "allow:x/named-in", "open"),
                flow("y/a", "x/b", TCP, 8080, "allow:x/named-in", "open"),
                flow("y/a", "x/b", TCP, 80, "deny:x/named-in", "open"),
                flow("y/a", "x/c", TCP, 80, "deny:x/named-in", "open"),
                flow("y/a", "x/c", UDP, 81, "allow:x/named-in", "open"),
                flow("y/a", "x/c", TCP, 81, "deny:x/named-in", "open"),
                // serve-80-tcp is a TCP port: asked for on UDP, it names nothing.
                flow("y/a", "x/a", UDP, 80, "deny:x/named-in", "open"),
            ],
        },
        Case {
            what: "egress named ports resolve per destination pod; an address that is no pod \
                   has no named port",
            policies: vec![policy(
                "x",
                "named-out",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "policyTypes": ["Egress"],
                       "egress": [{"ports": [{"port": "http"}]}]}),
            )],
            flows: vec![
                flow("x/a", "y/a", TCP, 80, "open", "allow:x/named-out"),
                flow("x/a", "y/b", TCP, 8080, "open", "allow:x/named-out"),
                flow("x/a", "y/b", TCP, 80, "open", "deny:x/named-out"),
                flow("x/a", "y/a", TCP, 8080, "open", "deny:x/named-out"),
                flow("x/a", "z/c", TCP, 80, "open", "deny:x/named-out"),
                flow("x/a", "198.51.100.1", TCP, 80, "-", "deny:x/named-out"),
            ],
        },
        Case {
            what: "egress named ports with peers: only the peers' pods resolve it, a pod an \
                   ipBlock admits included",
            policies: vec![policy(
                "x",
                "named-to-peers",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "policyTypes": ["Egress"],
                       "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.0/24"}},
                                          {"podSelector": {"matchLabels": {"pod": "b"}}}],
                                   "ports": [{"port": "http"}, {"port": 443}]}]}),
            )],
            flows: vec![
                flow("x/a", "y/b", TCP, 8080, "open", "allow:x/named-to-peers"),
                flow("x/a", "y/a", TCP, 80, "open", "allow:x/named-to-peers"),
                flow("x/a", "x/b", TCP, 8080, "open", "allow:x/named-to-peers"),
                flow("x/a", "z/b", TCP, 8080, "open", "deny:x/named-to-peers"),
                flow("x/a", "10.244.2.200", TCP, 80, "-", "deny:x/named-to-peers"),
                flow(
                    "x/a",
                    "10.244.2.200",
                    TCP,
                    443,
                    "-",
                    "allow:x/named-to-peers",
                ),
                flow("x/a", "z/a", TCP, 443, "open", "deny:x/named-to-peers"),
            ],
        },
        Case {
            what: "ipBlock with except, for egress and ingress; pod addresses are not in a \
                   block that does not cover them",
            policies: vec![
                policy(
                    "x",
                    "block-out",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "policyTypes": ["Egress"],
                           "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24",
                                                           "except": ["192.0.2.128/25"]}}],
                                       "ports": [{"port": 443}]}]}),
                ),
                policy(
                    "x",
                    "block-in",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                           "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16",
                                                              "except": ["10.244.2.0/24"]}}]}]}),
                ),
            ],
            flows: vec![
                flow("x/a", "192.0.2.5", TCP, 443, "-", "allow:x/block-out"),
                flow("x/a", "192.0.2.127", TCP, 443, "-", "allow:x/block-out"),
                flow("x/a", "192.0.2.128", TCP, 443, "-", "deny:x/block-out"),
                flow("x/a", "192.0.2.5", TCP, 80, "-", "deny:x/block-out"),
                flow("x/a", "y/a", TCP, 443, "open", "deny:x/block-out"),
                flow("z/a", "x/b", TCP, 80, "allow:x/block-in", "open"),
                flow("y/a", "x/b", TCP, 80, "deny:x/block-in", "open"),
                flow("203.0.113.1", "x/b", TCP, 80, "deny:x/block-in", "-"),
            ],
        },
        Case {
            what: "policies add up: a default deny subtracts nothing from an allow, and every \
                   selecting policy is named in a denial",
            policies: vec![
                deny_all_ingress(),
                policy(
                    "x",
                    "from-b",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                        "ports": [{"port": 80}]}]}),
                ),
                policy(
                    "x",
                    "from-c",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                ),
            ],
            flows: vec![
                flow("x/b", "x/a", TCP, 80, "allow:x/from-b", "open"),
                flow(
                    "x/b",
                    "x/a",
                    TCP,
                    81,
                    "deny:x/deny-in,x/from-b,x/from-c",
                    "open",
                ),
                flow("x/c", "x/a", TCP, 81, "allow:x/from-c", "open"),
                flow("x/c", "x/b", TCP, 80, "deny:x/deny-in", "open"),
            ],
        },
        Case {
            what: "pod to pod, both sides decide: the source's egress and the destination's \
                   ingress each on their own",
            policies: vec![
                policy(
                    "x",
                    "a-out-to-y",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                           "policyTypes": ["Egress"],
                           "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
                ),
                policy(
                    "y",
                    "b-in-from-x-c",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                           "ingress": [{"from": [{
                               "namespaceSelector": {"matchLabels": {"ns": "x"}},
                               "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                ),
            ],
            flows: vec![
                flow("x/a", "y/a", TCP, 80, "open", "allow:x/a-out-to-y"),
                flow(
                    "x/a",
                    "y/b",
                    TCP,
                    80,
                    "deny:y/b-in-from-x-c",
                    "allow:x/a-out-to-y",
                ),
                flow("x/c", "y/b", TCP, 80, "allow:y/b-in-from-x-c", "open"),
                flow("x/a", "z/a", TCP, 80, "open", "deny:x/a-out-to-y"),
            ],
        },
        Case {
            what: "the same rule in two namespaces: a podSelector alone picks each policy's own \
                   namespace, a namespaceSelector the same pods for both",
            policies: ["x", "y"]
                .into_iter()
                .flat_map(|ns| {
                    [
                        policy(
                            ns,
                            "from-b",
                            json!({"podSelector": {"matchLabels": {"pod": "a"}},
                                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                                   "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                               "ports": [{"port": "http"}]}]}),
                        ),
                        policy(
                            ns,
                            "c-from-z",
                            json!({"podSelector": {"matchLabels": {"pod": "c"}},
                                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
                        ),
                    ]
                })
                .collect(),
            flows: vec![
                flow("x/b", "x/a", TCP, 80, "allow:x/from-b", "open"),
                flow("y/b", "y/a", TCP, 80, "allow:y/from-b", "open"),
                flow("y/b", "x/a", TCP, 80, "deny:x/from-b", "open"),
                flow("x/b", "y/a", TCP, 80, "deny:y/from-b", "open"),
                flow("x/a", "x/b", TCP, 8080, "open", "allow:x/from-b"),
                flow("y/a", "y/b", TCP, 8080, "open", "allow:y/from-b"),
                flow("x/a", "y/b", TCP, 8080, "open", "deny:x/from-b"),
                flow("z/a", "x/c", TCP, 80, "allow:x/c-from-z", "open"),
                flow("z/b", "y/c", TCP, 80, "allow:y/c-from-z", "open"),
                flow("x/a", "y/c", TCP, 80, "deny:y/c-from-z", "deny:x/from-b"),
            ],
        },
    ]
}

#[test]
fn compiled_policies_decide_every_case_as_kubernetes_defines() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases() {
        let mut model = cluster();
        for p in &case.policies {
            model
                .apply(p)
                .unwrap_or_else(|e| panic!("{}: {e}", case.what));
        }
        let compiled = compile_policies(&model, None);
        assert_eq!(compiled.len(), 9, "{}: every pod has an entry", case.what);
        for f in &case.flows {
            let got_in = verdict(&compiled, f.to, Direction::Ingress, f.from, f);
            let got_out = verdict(&compiled, f.from, Direction::Egress, f.to, f);
            checked += 1;
            if (got_in.as_str(), got_out.as_str()) != (f.ingress, f.egress) {
                failures.push(format!(
                    "{}\n    {} -> {} proto {} port {}: ingress {got_in} (want {}), egress \
                     {got_out} (want {})",
                    case.what, f.from, f.to, f.proto, f.port, f.ingress, f.egress
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} flows decided wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn policies_follow_pods_namespaces_and_policies_as_they_change() {
    let mut model = cluster();
    model
        .apply(&policy(
            "x",
            "from-team-red",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}},
                                          "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        ))
        .unwrap();
    let verdict_from = |model: &Model, peer: &str| {
        let compiled = compile_policies(model, None);
        compiled["x/a"]
            .evaluate(Direction::Ingress, peer.parse().unwrap(), TCP, 80)
            .is_allowed()
    };
    assert!(!verdict_from(&model, "10.244.3.99"), "no such pod yet");
    // A pod appears in z (team unset): not a peer; z is relabelled team=red: now it is.
    let client: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "z", "labels": {"role": "client"}},
        "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "c"}]},
        "status": {"phase": "Running", "podIP": "10.244.3.99"}}))
    .unwrap();
    model
        .apply(&Object::PeerPod(Box::new(client.clone())))
        .unwrap();
    assert!(!verdict_from(&model, "10.244.3.99"), "z is not team=red");
    let z: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "z", "labels": {"team": "red"}}}))
    .unwrap();
    model.apply(&Object::Namespace(Box::new(z))).unwrap();
    assert!(verdict_from(&model, "10.244.3.99"), "z relabelled team=red");
    // The pod loses its label: no longer a peer.
    let mut unlabelled = client;
    unlabelled.metadata.labels = None;
    model.apply(&Object::PeerPod(Box::new(unlabelled))).unwrap();
    assert!(
        !verdict_from(&model, "10.244.3.99"),
        "the pod lost role=client"
    );
}

/// The namespaces, each on its node: `x` on node 1 (pod CIDR 10.244.1.0/24), `y` on node 2,
/// `z` on node 3, as [`pod_ip`] numbers them.
const NAMESPACES: [&str; 3] = ["x", "y", "z"];

fn node_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

fn vtep(n: u8) -> kxdp_dataplane::wire::MacAddr {
    mac([0x02, 0x6b, 0x78, 0x76, 0, n])
}

fn pod_mac(n: u8, i: u8) -> kxdp_dataplane::wire::MacAddr {
    mac([0x02, 0, 0x0a, 0xf4, n, 10 + i])
}

/// Node `n`'s snapshot: the fixture's node settings moved to its addresses, its namespace's
/// three pods (interfaces 2, 3, 4) with their compiled policies, the other two nodes remote.
fn node_snapshot(t: &Topology, n: u8, compiled: &PodPolicies) -> Snapshot {
    let mut inputs: SnapshotInputs = t.inputs();
    inputs.services.clear();
    let node = &mut inputs.node;
    node.name = format!("node-{n}");
    node.node_ips = vec![node_ip(n)];
    node.pod_cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, n, 0), 24);
    node.gateway_ip = Ipv4Addr::new(10, 244, n, 1);
    node.vtep_mac = vtep(n);
    let ns = NAMESPACES[usize::from(n - 1)];
    inputs.pods = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let key = format!("{ns}/{name}");
            LocalPod {
                ip: address(&key),
                iface: InterfaceId(2 + i as u16),
                mac: pod_mac(n, i as u8),
                policy: compiled.get(&key).filter(|p| p.is_selected()).cloned(),
                name: key,
            }
        })
        .collect();
    inputs.nodes = (1..=3u8)
        .filter(|m| *m != n)
        .map(|m| RemoteNode {
            name: format!("node-{m}"),
            node_ip: node_ip(m),
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, m, 0), 24),
            vtep_mac: vtep(m),
        })
        .collect();
    inputs.neighbors = (1..=3u8)
        .map(|m| (node_ip(m), mac([0x02, 0, 0xc6, 0x12, 0, m])))
        .chain([(Ipv4Addr::new(198, 18, 0, 254), t.gateway_router_mac)])
        .collect();
    Snapshot::build(inputs).expect("valid node")
}

/// The three nodes' snapshots under `case`'s policies.
fn node_snapshots(t: &Topology, case: &Case) -> Vec<Snapshot> {
    let mut model = cluster();
    for p in &case.policies {
        model.apply(p).unwrap();
    }
    let compiled = compile_policies(&model, None);
    (1..=3).map(|n| node_snapshot(t, n, &compiled)).collect()
}

/// The node (1..=3) whose pod CIDR holds `ip`, if any.
fn node_of(ip: Ipv4Addr) -> Option<u8> {
    let [a, b, c, _] = ip.octets();
    ((a, b) == (10, 244) && (1..=3).contains(&c)).then_some(c)
}

/// The first packet of flow `f`, IPv4 from `src` to `dst` in an Ethernet frame of `spec`.
fn first_packet(spec: FrameSpec, f: &Flow) -> Vec<u8> {
    match f.proto {
        TCP => spec.tcp(40000, f.port, tcp_flags::SYN, b""),
        UDP => spec.udp(40000, f.port, b"q"),
        SCTP => spec.sctp(40000, f.port, &[0u8; 4]),
        p => panic!("protocol {p} in a case"),
    }
}

/// Run one frame through node `snap`'s pipeline, with fresh conntrack.
fn run(snap: &Snapshot, ingress: InterfaceId, frame: &[u8]) -> Verdict {
    let ct = Conntrack::new(ConntrackConfig {
        capacity: 64,
        ..ConntrackConfig::default()
    });
    let counters = Counters::new();
    let mut buf = FrameBuf::new(frame);
    let mut batch = [buf.packet(ingress)];
    process_batch(&mut batch, snap, &ct, &counters, Instant::from_secs(1));
    batch[0].verdict
}

/// What a node's pipeline must do with the packet: drop it with the reason of the first
/// direction it judges that the table denies, else send it on.
fn expected(egress: Option<&str>, ingress: Option<&str>) -> Result<(), DropReason> {
    if egress.is_some_and(|v| v.starts_with("deny")) {
        return Err(DropReason::PolicyDeniedEgress);
    }
    if ingress.is_some_and(|v| v.starts_with("deny")) {
        return Err(DropReason::PolicyDeniedIngress);
    }
    Ok(())
}

fn outcome(v: Verdict) -> Result<(), DropReason> {
    match v {
        Verdict::Drop(r) => Err(r),
        _ => Ok(()),
    }
}

#[test]
fn every_case_holds_through_the_pipeline_on_each_node() {
    let t = Topology::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases() {
        let snaps = node_snapshots(&t, &case);
        for f in &case.flows {
            let (src, dst) = (address(f.from), address(f.to));
            let from_pod = f.from.contains('/');
            let to_pod = f.to.contains('/');
            let (src_node, dst_node) = (node_of(src), node_of(dst));
            let mut check = |node: u8, ingress: InterfaceId, frame: Vec<u8>, want| {
                let got = outcome(run(&snaps[usize::from(node - 1)], ingress, &frame));
                checked += 1;
                if got != want {
                    failures.push(format!(
                        "{}\n    {} -> {} proto {} port {} on node-{node}: {got:?}, want {want:?}",
                        case.what, f.from, f.to, f.proto, f.port
                    ));
                }
            };
            // On the source pod's node: egress, and ingress when the destination is local.
            if let (true, Some(n)) = (from_pod, src_node) {
                let i = address_index(f.from);
                let gateway = snaps[usize::from(n - 1)].node.gateway_mac;
                let frame = first_packet(FrameSpec::new(pod_mac(n, i), gateway, src, dst), f);
                let ingress = (dst_node == Some(n) && to_pod).then_some(f.ingress);
                check(
                    n,
                    InterfaceId(2 + u16::from(i)),
                    frame,
                    expected(Some(f.egress), ingress),
                );
            }
            // On the destination pod's node, when the packet comes from elsewhere.
            if let (true, Some(n)) = (to_pod, dst_node) {
                if src_node == Some(n) {
                    continue;
                }
                let uplink = snaps[usize::from(n - 1)].node.uplink;
                let uplink_mac = snaps[usize::from(n - 1)].node.uplink_mac;
                let frame = match src_node {
                    Some(m) => {
                        let inner = first_packet(FrameSpec::new(vtep(m), vtep(n), src, dst), f);
                        let outer = FrameSpec {
                            udp_checksum: false,
                            ..FrameSpec::new(
                                mac([0x02, 0, 0xc6, 0x12, 0, m]),
                                uplink_mac,
                                node_ip(m),
                                node_ip(n),
                            )
                        };
                        outer.vxlan(49152, 8472, 1, &inner)
                    }
                    None => first_packet(
                        FrameSpec::new(t.gateway_router_mac, uplink_mac, src, dst),
                        f,
                    ),
                };
                check(n, uplink, frame, expected(None, Some(f.ingress)));
            }
        }
    }
    assert!(checked > 100, "only {checked} packets checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} packets judged wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The pod's number in its namespace (a 0, b 1, c 2).
fn address_index(pod: &str) -> u8 {
    let (_, name) = pod.split_once('/').unwrap();
    ["a", "b", "c"].iter().position(|p| *p == name).unwrap() as u8
}

/// A traced direction as the table writes a verdict: `open`, `exempt`, `allow:P` or
/// `deny:P1,P2`; `-` when the trace judged nothing that way.
fn traced(d: Option<&PolicyDirection>) -> String {
    let Some(d) = d else {
        return "-".into();
    };
    match d.verdict {
        PolicyOutcome::Open => "open".into(),
        PolicyOutcome::Exempt => "exempt".into(),
        PolicyOutcome::Allowed => format!("allow:{}", d.policies.join(",")),
        PolicyOutcome::Denied => format!("deny:{}", d.policies.join(",")),
    }
}

/// The same cases through `kxdp trace` ([`trace`]), as an operator would ask about each flow:
/// on the source pod's node (its egress, and ingress when the destination is local), and for
/// a source that is no pod, on the destination pod's node from the uplink. The trace must name
/// the verdict the table states each way, and its own verdict and reason must be the
/// pipeline's. SCTP is left out: the tracer builds TCP, UDP and ICMP only.
#[test]
fn every_case_holds_through_trace() {
    let t = Topology::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases() {
        let snaps = node_snapshots(&t, &case);
        for f in case.flows.iter().filter(|f| f.proto != SCTP) {
            let (src, dst) = (address(f.from), address(f.to));
            let (from_pod, to_pod) = (f.from.contains('/'), f.to.contains('/'));
            let (src_node, dst_node) = (node_of(src), node_of(dst));
            let (node, entry, egress, ingress) = match (from_pod, src_node, dst_node) {
                (true, Some(n), d) => {
                    let ingress = if to_pod && d == Some(n) {
                        f.ingress
                    } else {
                        "-"
                    };
                    (n, Entry::Pod, f.egress, ingress)
                }
                (false, None, Some(n)) if to_pod => (n, Entry::Uplink, "-", f.ingress),
                _ => continue,
            };
            let input = TraceInput {
                entry,
                src: (src, 40000),
                dst: (dst, f.port),
                proto: f.proto,
            };
            let got = trace(&snaps[usize::from(node - 1)], &input)
                .unwrap_or_else(|e| panic!("{}: {e}", case.what));
            checked += 1;
            let policy = got.network_policy.as_ref();
            let got_out = traced(policy.and_then(|p| p.egress.as_ref()));
            let got_in = traced(policy.and_then(|p| p.ingress.as_ref()));
            let want = expected(
                (egress != "-").then_some(egress),
                (ingress != "-").then_some(ingress),
            );
            let got_reason = match got.verdict {
                TraceVerdict::Drop => got.reason.clone(),
                _ => None,
            };
            let want_reason = want.err().map(|r| r.name().to_owned());
            if (got_out.as_str(), got_in.as_str(), &got_reason) != (egress, ingress, &want_reason) {
                failures.push(format!(
                    "{}\n    {} -> {} proto {} port {} on node-{node}: egress {got_out} (want \
                     {egress}), ingress {got_in} (want {ingress}), drop {got_reason:?} (want \
                     {want_reason:?})",
                    case.what, f.from, f.to, f.proto, f.port
                ));
            }
        }
    }
    assert!(checked > 60, "only {checked} flows traced");
    assert!(
        failures.is_empty(),
        "{} of {checked} traces wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
