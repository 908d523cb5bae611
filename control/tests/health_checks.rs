//! What the compiler and the model hand the agent for kube-proxy's service health checks and
//! programming-latency metric: the health-check node port of each LoadBalancer service with
//! `externalTrafficPolicy: Local` with its count of this node's ready endpoints, and the
//! `endpoints.kubernetes.io/last-change-trigger-time` of each slice change.

use std::time::{Duration, SystemTime};

use kxdp_control::compile::{health_checks, HealthCheck};
use kxdp_control::manifest::parse;
use kxdp_control::model::Model;

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.50
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  ports:
  - {name: http, protocol: TCP, port: 80, nodePort: 30180}
  - {name: https, protocol: TCP, port: 443, nodePort: 30443}
";

/// A slice of service shop/lb: each endpoint (address, node, ready), on both ports.
fn slice(name: &str, endpoints: &[(&str, &str, bool)], trigger: Option<&str>) -> String {
    let annotations = trigger.map_or(String::new(), |t| {
        format!("\n  annotations: {{endpoints.kubernetes.io/last-change-trigger-time: \"{t}\"}}")
    });
    let mut text = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\nmetadata:\n  \
         name: {name}\n  namespace: shop\n  labels: {{kubernetes.io/service-name: lb}}{annotations}\n\
         ports: [{{name: http, protocol: TCP, port: 8080}}, {{name: https, protocol: TCP, port: 8443}}]\n\
         endpoints:\n"
    );
    for (ip, node, ready) in endpoints {
        text +=
            &format!("- {{addresses: [{ip}], nodeName: {node}, conditions: {{ready: {ready}}}}}\n");
    }
    text
}

fn load(model: &mut Model, text: &str) -> bool {
    let mut changed = false;
    for (_, object) in parse("test.yaml", text).unwrap() {
        changed |= model.apply(&object).unwrap();
    }
    changed
}

#[test]
fn a_local_load_balancer_counts_this_nodes_ready_endpoints_once_each() {
    let mut model = Model::new();
    load(&mut model, SERVICE);
    let check = |model: &Model| health_checks(model, "node-a");
    assert_eq!(
        check(&model),
        [HealthCheck {
            service: "shop/lb".into(),
            port: 32100,
            local_endpoints: 0
        }],
        "no endpoint yet: the port is served, answering 0"
    );
    // Two ports of one endpoint count once; another node's and a not-ready one do not count.
    load(
        &mut model,
        &slice(
            "lb-1",
            &[
                ("10.244.1.5", "node-a", true),
                ("10.244.1.6", "node-a", false),
                ("10.244.2.5", "node-b", true),
            ],
            None,
        ),
    );
    assert_eq!(check(&model)[0].local_endpoints, 1);
    // The same address in a second slice is still one.
    load(
        &mut model,
        &slice(
            "lb-2",
            &[
                ("10.244.1.5", "node-a", true),
                ("10.244.1.7", "node-a", true),
            ],
            None,
        ),
    );
    assert_eq!(check(&model)[0].local_endpoints, 2);
    assert_eq!(health_checks(&model, "node-b")[0].local_endpoints, 1);
}

#[test]
fn only_load_balancers_with_the_local_policy_have_a_health_check_port() {
    for (edit, why) in [
        (
            (
                "externalTrafficPolicy: Local",
                "externalTrafficPolicy: Cluster",
            ),
            "Cluster policy",
        ),
        (
            ("type: LoadBalancer", "type: NodePort"),
            "a NodePort service",
        ),
    ] {
        let mut model = Model::new();
        load(&mut model, &SERVICE.replace(edit.0, edit.1));
        assert_eq!(health_checks(&model, "node-a"), [], "{why}");
    }
    let mut model = Model::new();
    let bad = SERVICE.replace("32100", "70000");
    let object = parse("test.yaml", &bad).unwrap().remove(0).1;
    let e = model.apply(&object).unwrap_err().to_string();
    assert!(
        e.contains("Service shop/lb") && e.contains("spec.healthCheckNodePort"),
        "{e}"
    );
}

#[test]
fn a_slice_change_with_a_trigger_time_is_measured_once_and_one_without_is_not() {
    let mut model = Model::new();
    load(&mut model, SERVICE);
    load(
        &mut model,
        &slice("lb-1", &[("10.244.1.5", "node-a", true)], None),
    );
    assert_eq!(
        model.take_trigger_times(),
        [],
        "no annotation, no observation"
    );

    let at = "2026-01-02T03:04:05Z";
    let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
    load(
        &mut model,
        &slice("lb-1", &[("10.244.1.6", "node-a", true)], Some(at)),
    );
    assert_eq!(model.take_trigger_times(), [expected]);
    assert_eq!(model.take_trigger_times(), [], "taken once");
    // Re-applying the same slice changes nothing: no second observation.
    assert!(!load(
        &mut model,
        &slice("lb-1", &[("10.244.1.6", "node-a", true)], Some(at))
    ));
    assert_eq!(model.take_trigger_times(), []);
    // A trigger time that does not parse serves the slice, and is only a metric lost.
    assert!(load(
        &mut model,
        &slice("lb-1", &[("10.244.1.7", "node-a", true)], Some("soon"))
    ));
    assert_eq!(model.take_trigger_times(), []);
}
