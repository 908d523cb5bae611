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

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kxdp_control::model::{Model, Object};
use kxdp_control::policy::{compile_policies, PodPolicies};
use kxdp_control::tables::{Direction, PolicyVerdict};
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
