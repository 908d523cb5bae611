//! Namespaces and NetworkPolicies from manifest files, through the compiler: this node's pods
//! get their policies (peers on other nodes included), unchanged policies are reused, a
//! changed file recompiles them, and a bad policy fails the load naming file, document,
//! object and field while the last good model stays, as for every other kind.

use std::sync::Arc;

use kxdp_control::compile::Compiler;
use kxdp_control::manifest::ManifestSource;
use kxdp_control::model::{Kind, Model, Object};
use kxdp_control::tables::{Direction, PolicyVerdict};

mod common;
use common::{ip, scratch, settings};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 198.18.0.10}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 198.18.0.11}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  containers: [{name: web, image: web, ports: [{name: http, containerPort: 8080}]}]
status: {phase: Running, podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec: {nodeName: node-b, containers: [{name: c, image: c}]}
status: {phase: Running, podIP: 10.244.2.20}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: default}},
              podSelector: {matchLabels: {app: client}}}]
      ports: [{port: http}]
"#;

#[test]
fn manifest_policies_compile_for_this_nodes_pods_and_follow_the_file() {
    let (_dir, path) = scratch("follow", CLUSTER);
    let mut model = Model::new();
    let mut source = ManifestSource::new(vec![path.clone()]);
    assert!(source.load(&mut model).expect("loads"));
    assert_eq!(model.keys(Kind::Namespace), ["shop"]);
    assert_eq!(model.keys(Kind::NetworkPolicy), ["shop/web-from-clients"]);
    let mut compiler = Compiler::new(settings());
    let c = compiler.compile(&mut model).expect("compiles");
    assert!(c.policies_compiled);
    assert_eq!(
        c.policies.keys().collect::<Vec<_>>(),
        ["shop/web-0"],
        "this node's pods only"
    );
    let web = &c.policies["shop/web-0"];
    // The client is on node-b, in namespace default, which only its pods name.
    assert_eq!(
        web.evaluate(Direction::Ingress, ip("10.244.2.20"), 6, 8080),
        PolicyVerdict::Allowed("shop/web-from-clients")
    );
    assert!(!web
        .evaluate(Direction::Ingress, ip("10.244.2.20"), 6, 80)
        .is_allowed());
    assert_eq!(
        web.evaluate(Direction::Egress, ip("10.244.2.20"), 6, 80),
        PolicyVerdict::Open
    );

    // The snapshot carries the pod's policy, the compile's own.
    let in_snapshot = |c: &kxdp_control::compile::Compiled| {
        c.snapshot
            .local_pod(ip("10.244.1.10"))
            .and_then(|p| p.policy.clone())
            .expect("web-0 has its policy in the snapshot")
    };
    assert!(Arc::ptr_eq(&in_snapshot(&c), web));
    assert!(c.snapshot.has_policies());

    // Nothing changed: the same compiled policies, shared by the new snapshot.
    let again = compiler.compile(&mut model).expect("compiles");
    assert!(!again.policies_compiled);
    assert!(Arc::ptr_eq(&c.policies, &again.policies));
    assert!(Arc::ptr_eq(&in_snapshot(&again), web));
    // A service changes: services recompile, policies do not.
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
    .unwrap();
    model.apply(&Object::Service(Box::new(svc))).unwrap();
    let after_service = compiler.compile(&mut model).expect("compiles");
    assert_eq!(after_service.services_compiled, 1);
    assert!(!after_service.policies_compiled);
    assert!(Arc::ptr_eq(&c.policies, &after_service.policies));

    // The client, on the other node, loses the label the policy selects it by: recompiled,
    // denied.
    let text = CLUSTER.replace(
        "metadata: {name: client, labels: {app: client}}",
        "metadata: {name: client, labels: {app: other}}",
    );
    assert_ne!(text, CLUSTER);
    std::fs::write(&path, &text).unwrap();
    assert!(source.load(&mut model).expect("loads"));
    let c = compiler.compile(&mut model).expect("compiles");
    assert!(c.policies_compiled);
    assert!(!c.policies["shop/web-0"]
        .evaluate(Direction::Ingress, ip("10.244.2.20"), 6, 8080)
        .is_allowed());
    assert!(!in_snapshot(&c)
        .evaluate(Direction::Ingress, ip("10.244.2.20"), 6, 8080)
        .is_allowed());

    // Without the policy the pod is open both ways: no policy in the snapshot at all.
    let open = text
        .split("---\napiVersion: networking.k8s.io/v1")
        .next()
        .unwrap();
    std::fs::write(&path, open).unwrap();
    assert!(source.load(&mut model).expect("loads"));
    let c = compiler.compile(&mut model).expect("compiles");
    assert!(c.policies["shop/web-0"].ingress.is_none());
    assert!(c
        .snapshot
        .local_pod(ip("10.244.1.10"))
        .unwrap()
        .policy
        .is_none());
    assert!(!c.snapshot.has_policies());
}

#[test]
fn a_bad_policy_fails_the_load_naming_file_object_and_field_and_the_model_stays() {
    let (_dir, path) = scratch("bad", CLUSTER);
    let mut model = Model::new();
    let mut source = ManifestSource::new(vec![path.clone()]);
    source.load(&mut model).expect("loads");
    let before = model.policies().clone();
    model.take_changes();
    for (text, wanted) in [
        (
            CLUSTER.replace(
                "ports: [{port: http}]",
                "ports: [{port: http, endPort: 90}]",
            ),
            vec![
                "cluster.yaml",
                "NetworkPolicy shop/web-from-clients",
                "spec.ingress[0].ports[0].endPort",
            ],
        ),
        (
            CLUSTER.replace("ports: [{port: http}]", "ports: [{port: [80]}]"),
            vec![
                "cluster.yaml",
                "document 6",
                "NetworkPolicy shop/web-from-clients",
                "spec.ingress[0].ports[0].port",
            ],
        ),
        (
            CLUSTER.replace("{matchLabels: {app: client}}", "{matchLabels: [app]}"),
            vec![
                "NetworkPolicy shop/web-from-clients",
                "spec.ingress[0].from[0].podSelector.matchLabels",
            ],
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let msg = source
            .load(&mut model)
            .expect_err("a bad policy fails the load")
            .to_string();
        for w in &wanted {
            assert!(msg.contains(w), "{msg:?} should name {w:?}");
        }
        assert!(model.is_clean(), "a failed load changes nothing: {msg}");
        assert_eq!(model.policies(), &before);
    }
}
