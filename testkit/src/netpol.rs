//! A synthetic cluster for NetworkPolicy at scale, as the API server would list it: the shapes
//! `make perf-control` compiles and the `policy/*` criterion benches judge flows against.
//!
//! [`NAMESPACES`] namespaces in ten teams; pod `k` in namespace `k % NAMESPACES`, app
//! `k / NAMESPACES % APPS`; policy `i` in namespace `i % NAMESPACES` selecting app
//! `i / NAMESPACES % APPS` there. With 1000 policies every app of every namespace up to app 9
//! is selected by one policy; with 10, app 0 of the first ten namespaces.

use core::net::Ipv4Addr;

use serde_json::{json, Value};

/// Namespaces (`ns-0` ...), in ten teams (`team: tN`).
pub const NAMESPACES: u32 = 100;

/// Apps per namespace (`app: app-N`).
pub const APPS: u32 = 50;

/// Namespace `i`.
pub fn namespace(i: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": format!("ns-{i}"), "labels": {"team": format!("t{}", i % 10)}},
    })
}

/// Pod `k` (`p-k`) on node `node-{node}` at `ip`: in namespace `k % NAMESPACES`, app
/// `k / NAMESPACES % APPS`, a third of them `tier: db` (the others `tier: web`), with a
/// container port named `http` (`http_port`, TCP).
pub fn pod(k: u32, node: u32, ip: Ipv4Addr, http_port: u16) -> Value {
    let tier = if k % 3 == 0 { "db" } else { "web" };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{k}"), "namespace": format!("ns-{}", k % NAMESPACES),
                     "labels": {"app": format!("app-{}", k / NAMESPACES % APPS), "tier": tier}},
        "spec": {"nodeName": format!("node-{node}"),
                 "containers": [{"name": "c", "image": "c", "ports": [
                     {"name": "http", "containerPort": http_port, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

/// Policy `i` (`np-i`), at `version` (which moves one of its ports): selects an app of its
/// namespace; admits `tier: web` pods of the namespace and two apps of its team's namespaces,
/// on the named port `http` and a range; lets the pods reach DNS and `http` in any namespace,
/// and the 10.0.0.0/8 block but the service CIDR.
pub fn policy(i: u32, version: u32) -> Value {
    let ns = i % NAMESPACES;
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("np-{i}"), "namespace": format!("ns-{ns}")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("app-{}", i / NAMESPACES % APPS)}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"tier": "web"}}},
                    {"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 10)}},
                     "podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                         "values": [format!("app-{}", i % APPS), format!("app-{}", (i + 1) % APPS)]}]}},
                ],
                "ports": [{"port": "http"},
                          {"protocol": "TCP", "port": 9000 + version % 100, "endPort": 9199}],
            }],
            "egress": [
                {"to": [{"namespaceSelector": {}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"port": "http"}]},
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}}]},
            ],
        },
    })
}
