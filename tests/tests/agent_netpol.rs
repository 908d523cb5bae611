//! NetworkPolicy end to end: two agent processes on a two-node namespace cluster, real HTTP
//! clients in pod namespaces, a policy added by rewriting the manifest: the client it admits
//! gets through (across nodes, over VXLAN, directly and through a ClusterIP), the other does
//! not, the denials are counted in `/metrics`, and `kxdp trace` names the policy.

use std::time::Duration;

use kxdp_tests::clients::{http_get_many, HttpServer};
use kxdp_tests::cluster::{eventually, metric, AgentCluster};
use kxdp_tests::cluster::{DEMO_MANIFEST as MANIFEST, DEMO_PODS as PODS};
use kxdp_tests::testbed::skip_unless_privileged;

/// The `app: web` pods take TCP 8080 from client-b (on node-b) only.
const POLICY: &str = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: web-from-client-b, namespace: default}\n\
spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n\
\x20   - from: [{ipBlock: {cidr: 10.244.2.11/32}}]\n      ports: [{port: 8080}]\n";

#[test]
fn a_network_policy_admits_the_client_it_names_and_drops_the_other() {
    if skip_unless_privileged("a_network_policy_admits_the_client_it_names_and_drops_the_other") {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let ns = |c: &AgentCluster, name: &str| c.pod(name).ns.clone();
    let _a = HttpServer::start(&ns(&c, "web-a"), 8080, "web-a", 90);
    let _b = HttpServer::start(&ns(&c, "web-b"), 8080, "web-b", 90);
    let ok = |answers: &[(String, f64)], body: &str| answers.iter().all(|(b, _)| b == body);
    // No policy yet: both clients reach web-a.
    for client in ["client-a", "client-b"] {
        let answers = http_get_many(&ns(&c, client), "http://10.244.1.10:8080/", 3);
        assert!(
            answers.len() == 3 && ok(&answers, "web-a"),
            "{client}: {answers:?}"
        );
    }

    let before = [c.status(0).generation, c.status(1).generation];
    std::fs::write(&c.manifest, MANIFEST.to_owned() + POLICY).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || (0..2)
            .all(|n| c.status(n).generation > before[n])),
        "no new snapshot:\n{}",
        c.log(0)
    );

    // client-b, on the other node: web-a's node judges its ingress after decapsulation.
    let answers = http_get_many(&ns(&c, "client-b"), "http://10.244.1.10:8080/", 3);
    assert!(answers.len() == 3 && ok(&answers, "web-a"), "{answers:?}");
    // client-a, on web-a's own node: dropped, so every attempt times out.
    let answers = http_get_many(&ns(&c, "client-a"), "http://10.244.1.10:8080/", 2);
    assert!(
        answers.len() == 2 && answers.iter().all(|(b, _)| b.starts_with("ERR")),
        "{answers:?}"
    );
    // Through the ClusterIP, on the backend after DNAT: client-b reaches both backends
    // (web-b on its own node, web-a over VXLAN), client-a neither.
    let answers = http_get_many(&ns(&c, "client-b"), "http://10.96.0.10/", 8);
    assert!(
        answers.len() == 8 && answers.iter().all(|(b, _)| b == "web-a" || b == "web-b"),
        "{answers:?}"
    );
    let answers = http_get_many(&ns(&c, "client-a"), "http://10.96.0.10/", 2);
    assert!(
        answers.iter().all(|(b, _)| b.starts_with("ERR")),
        "{answers:?}"
    );

    let (_, m) = c
        .metrics_get(0, "/metrics", Duration::from_secs(10))
        .unwrap();
    assert!(
        metric(&m, "kxdp_drops_total{reason=\"policy_denied_ingress\"} ") >= 2.0,
        "{m}"
    );
    assert!(metric(&m, "kxdp_events_total{event=\"policy_new_flow\"} ") >= 3.0);

    // The live tables' trace names the policy whose default deny drops client-a.
    let admin = c.admin(0).to_string();
    let out = c.kxdp(&[
        "trace",
        "--src",
        "10.244.1.11:40000",
        "--dst",
        "10.244.1.10:8080",
        "--agent",
        &admin,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("verdict:    drop (policy_denied_ingress)")
            && text.contains(
                "ingress:    pod default/web-a: denied (default deny of \
                 default/web-from-client-b)"
            ),
        "{text}"
    );
}
