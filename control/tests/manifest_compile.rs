//! The manifest source and the compiler: a fixture cluster (tests/fixtures/cluster.yaml) read,
//! converted and compiled; bad input named by file, object and field, with the last good
//! tables kept; one changed slice recompiling one service; endpoints that leave reported for
//! flushing or draining.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use kxdp_control::compile::{is_pod_interface_name, pod_interface_name, pod_mac, Compiler};
use kxdp_control::manifest::{parse, ManifestError, ManifestSource};
use kxdp_control::model::{Kind, Model, Object};
use kxdp_dataplane::tables::{FrontendKind, TrafficPolicy};

mod common;
use common::{ip, scratch, settings};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster.yaml")
}

#[test]
fn the_fixture_compiles_to_what_kube_proxy_and_flannel_would_serve() {
    let mut model = Model::new();
    let mut source = ManifestSource::new(vec![fixture()]);
    assert!(source.load(&mut model).expect("the fixture loads"));
    // Skipped: the headless, ExternalName and other-proxy services, the FQDN slice, the
    // host-network pod, the Deployment.
    assert_eq!(model.counts(), [2, 2, 2, 3]);
    let mut compiler = Compiler::new(settings());
    let c = compiler.compile(&mut model).expect("compiles");
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let snap = &c.snapshot;
    assert_eq!(snap.node.pod_cidr.to_string(), "10.244.1.0/24");
    assert_eq!(snap.node.gateway_ip, ip("10.244.1.1"));
    assert_eq!(snap.node.node_ips[0], ip("198.18.0.10"));

    let mut ports = snap.services.ports().to_vec();
    ports.sort_by(|a, b| a.name().cmp(b.name()));
    let names: Vec<&str> = ports.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["default/web:http", "kube-system/dns:dns"]);
    let web = ports[0].spec();
    assert_eq!(web.proto, 6);
    let kinds: Vec<(FrontendKind, Option<Ipv4Addr>, u16)> = web
        .frontends
        .iter()
        .map(|f| (f.kind, f.ip, f.port))
        .collect();
    assert_eq!(
        kinds,
        [
            (FrontendKind::ClusterIp, Some(ip("10.96.0.10")), 80),
            (FrontendKind::NodePort, None, 30080),
        ]
    );
    assert_eq!(web.external_policy, TrafficPolicy::Local);
    let backends: Vec<(Ipv4Addr, u16, bool)> = web
        .backends
        .iter()
        .map(|b| (b.ip, b.port, b.local))
        .collect();
    assert_eq!(
        backends,
        [
            (ip("10.244.1.10"), 8080, true),
            (ip("10.244.2.10"), 8080, false)
        ]
    );
    let dns = ports[1].spec();
    assert_eq!(
        (dns.proto, dns.backends.len()),
        (17, 1),
        "the FQDN slice is skipped"
    );

    // Local pods: named interfaces, MACs from the annotation or derived from the address.
    let pods: Vec<(String, Ipv4Addr)> = snap.local_pods().map(|p| (p.name.clone(), p.ip)).collect();
    assert_eq!(
        pods,
        [
            ("default/client".into(), ip("10.244.1.11")),
            ("default/web-0".into(), ip("10.244.1.10"))
        ]
    );
    let web0 = snap.local_pod(ip("10.244.1.10")).unwrap();
    assert_eq!(web0.mac, pod_mac(ip("10.244.1.10")));
    assert_eq!(web0.mac.to_string(), "0a-58-0a-f4-01-0a");
    let client = snap.local_pod(ip("10.244.1.11")).unwrap();
    assert_eq!(client.mac.to_string(), "02-00-0a-f4-01-0b");
    let ifnames: Vec<&str> = c.interfaces.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec![
        pod_interface_name("default", "web-0"),
        pod_interface_name("default", "client"),
    ];
    expected.sort();
    assert_eq!(ifnames, expected);
    assert!(ifnames.iter().all(|n| n.len() <= 15 && n.starts_with("kx")));
    // The same convention tells a pod's veth from kxdp's own links.
    assert!(ifnames.iter().all(|n| is_pod_interface_name(n)));
    for other in [
        "kxdp0",
        "host0",
        "kx0123456789ab0",
        "kx0123456789AB",
        "uplink",
    ] {
        assert!(!is_pod_interface_name(other), "{other}");
    }

    // The flannel node, by its public IP and VTEP MAC.
    let remote = snap.remote_nodes();
    assert_eq!(remote.len(), 1);
    assert_eq!(remote[0].node.node_ip, ip("198.18.0.11"));
    assert_eq!(remote[0].node.vtep_mac.to_string(), "02-6b-78-76-00-02");
}

#[test]
fn bad_manifests_name_file_object_and_field_and_the_last_tables_stay() {
    let good = std::fs::read_to_string(fixture()).unwrap();
    let (_dir, path) = scratch("bad", &good);
    let mut model = Model::new();
    let mut source = ManifestSource::new(vec![path.clone()]);
    source.load(&mut model).expect("the fixture loads");
    let mut compiler = Compiler::new(settings());
    compiler.compile(&mut model).expect("compiles");

    let cases = [
        (
            good.replace("port: 80, targetPort", "port: eighty, targetPort"),
            vec![
                "cluster.yaml",
                "document 7",
                "Service default/web",
                "spec.ports[0].port",
            ],
        ),
        (
            good.replace("clusterIP: 10.96.0.53", "clusterIP: 10.96.0.999"),
            vec![
                "cluster.yaml",
                "Service kube-system/dns",
                // The field the file used, not the list the API server would also fill.
                "spec.clusterIP: ",
                "10.96.0.999",
            ],
        ),
        (
            good.replace("podCIDR: 10.244.2.0/24", "podCIDR: 10.244.2.0/33"),
            vec!["Node node-b", "spec.podCIDR:"],
        ),
        (
            good.replace("VtepMAC\":\"02:6b:78:76:00:02", "VtepMAC\":\"02:6b:78"),
            vec![
                "Node node-b",
                "flannel.alpha.coreos.com/backend-data",
                "VtepMAC",
            ],
        ),
        (
            good.replace("protocol: TCP, port: 8080}", "protocol: TCP, port: x}"),
            vec![
                "document 8",
                "EndpointSlice default/web-abc",
                "ports[0].port",
            ],
        ),
        (
            format!("{good}\n---\n: : :\n"),
            vec!["cluster.yaml", "document 16"],
        ),
        (
            good.replace(
                "kxdp.io/mac: \"02:00:0a:f4:01:0b\"",
                "kxdp.io/mac: \"nope\"",
            ),
            vec!["Pod default/client", "kxdp.io/mac"],
        ),
    ];
    for (text, wanted) in cases {
        std::fs::write(&path, &text).unwrap();
        let e = source.load(&mut model).expect_err("a bad manifest fails");
        let msg = e.to_string();
        for w in &wanted {
            assert!(msg.contains(w), "{msg:?} should name {w:?}");
        }
        assert!(model.is_clean(), "a failed load changes nothing: {msg}");
    }
    let missing = ManifestSource::new(vec![path.with_file_name("nope.yaml")]).load(&mut model);
    assert!(matches!(missing, Err(ManifestError::Read { .. })));
    // The last good tables still compile as they were.
    std::fs::write(&path, &good).unwrap();
    assert!(
        !source.load(&mut model).unwrap(),
        "nothing changed since the last good load"
    );
}

#[test]
fn a_changed_slice_recompiles_its_service_only_and_reports_leaving_endpoints() {
    let mut model = Model::new();
    ManifestSource::new(vec![fixture()])
        .load(&mut model)
        .unwrap();
    let mut compiler = Compiler::new(settings());
    let first = compiler.compile(&mut model).unwrap();
    assert_eq!(first.services_compiled, 2);

    // The DNS backend moves: the UDP endpoint that left is to be flushed.
    let text = std::fs::read_to_string(fixture()).unwrap();
    let moved = text.replace("addresses: [10.244.2.20]", "addresses: [10.244.2.21]");
    let objects = parse("moved.yaml", &moved).unwrap();
    let slice = objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o.kind() == Kind::EndpointSlice && o.key() == "kube-system/dns-1")
        .unwrap();
    assert!(model.apply(slice).unwrap());
    let second = compiler.compile(&mut model).unwrap();
    assert_eq!(second.services_compiled, 1);
    assert_eq!(second.flush_udp, [(ip("10.244.2.20"), 53)]);
    let (a, b) = (
        first.snapshot.services.ports(),
        second.snapshot.services.ports(),
    );
    assert!(Arc::ptr_eq(&a[0], &b[0]), "web was not rebuilt");
    assert!(!Arc::ptr_eq(&a[1], &b[1]), "dns was");
    assert_eq!(b[1].spec().backends[0].ip, ip("10.244.2.21"));

    // A status-only change converts to the same model: nothing to compile.
    assert!(!model.apply(slice).unwrap());
    assert_eq!(compiler.compile(&mut model).unwrap().services_compiled, 0);

    // A TCP endpoint that leaves every service drains instead, until no flow is left.
    let gone = text.replace(
        "  - addresses: [10.244.2.10]\n    nodeName: node-b\n    conditions: {ready: true}\n",
        "",
    );
    let objects = parse("gone.yaml", &gone).unwrap();
    let web_slice: &Object = objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o.key() == "default/web-abc")
        .unwrap();
    model.apply(web_slice).unwrap();
    let third = compiler.compile(&mut model).unwrap();
    assert!(third.flush_udp.is_empty());
    let draining: Vec<_> = compiler.draining().copied().collect();
    assert_eq!(draining, [(ip("10.244.2.10"), 6, 8080)]);
    assert!(third
        .snapshot
        .services
        .is_backend(ip("10.244.2.10"), 6, 8080));
    compiler.retire_draining(|_| false);
    let fourth = compiler.compile(&mut model).unwrap();
    assert!(!fourth
        .snapshot
        .services
        .is_backend(ip("10.244.2.10"), 6, 8080));
}

#[test]
fn a_relist_removes_what_it_no_longer_lists() {
    let mut model = Model::new();
    ManifestSource::new(vec![fixture()])
        .load(&mut model)
        .unwrap();
    let mut compiler = Compiler::new(settings());
    compiler.compile(&mut model).unwrap();
    let text = std::fs::read_to_string(fixture()).unwrap();
    let objects: Vec<Object> = parse("x.yaml", &text)
        .unwrap()
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| o.key() != "default/web")
        .collect();
    let errors = model.replace_kind(Kind::Service, &objects);
    assert!(errors.is_empty());
    let c = compiler.compile(&mut model).unwrap();
    let names: Vec<&str> = c
        .snapshot
        .services
        .ports()
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(names, ["kube-system/dns:dns"]);
}

#[test]
fn a_claimed_frontend_stays_with_its_first_holder_and_passes_on_when_it_goes() {
    let extra = "
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {clusterIP: 10.96.1.1, externalIPs: [198.19.0.5], ports: [{name: x, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {clusterIP: 10.96.1.2, externalIPs: [198.19.0.5], ports: [{name: x, port: 80}]}
";
    let text = std::fs::read_to_string(fixture()).unwrap() + extra;
    let mut model = Model::new();
    let (_dir, path) = scratch("claims", &text);
    let mut source = ManifestSource::new(vec![path.clone()]);
    source.load(&mut model).unwrap();
    let mut compiler = Compiler::new(settings());
    let c = compiler
        .compile(&mut model)
        .expect("a conflict does not fail the snapshot");
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert!(c.problems[0].contains("default/b:x") && c.problems[0].contains("default/a"));
    let external_of = |c: &kxdp_control::compile::Compiled, name: &str| {
        c.snapshot
            .services
            .ports()
            .iter()
            .find(|p| p.name() == name)
            .map(|p| {
                p.spec()
                    .frontends
                    .iter()
                    .any(|f| f.kind == FrontendKind::ExternalIp)
            })
    };
    assert_eq!(external_of(&c, "default/a:x"), Some(true));
    assert_eq!(external_of(&c, "default/b:x"), Some(false));
    // Service a goes: b gets the external IP.
    let without_a = text.replace(
        "metadata: {name: a, namespace: default}",
        "metadata: {name: a, namespace: default, labels: {service.kubernetes.io/service-proxy-name: x}}",
    );
    std::fs::write(&path, without_a).unwrap();
    source.load(&mut model).unwrap();
    let c = compiler.compile(&mut model).unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(external_of(&c, "default/b:x"), Some(true));
}

#[test]
fn a_changed_file_is_noticed_and_re_read() {
    let text = std::fs::read_to_string(fixture()).unwrap();
    let (_dir, path) = scratch("reread", &text);
    let mut model = Model::new();
    let mut source = ManifestSource::new(vec![path.clone()]);
    assert!(source.changed(), "never read yet");
    source.load(&mut model).unwrap();
    assert!(!source.changed());
    model.take_changes();
    // A different size is noticed even within the file system's timestamp granularity.
    std::fs::write(&path, text.replace("10.244.2.20", "10.244.2.200")).unwrap();
    assert!(source.changed());
    assert!(source.load(&mut model).unwrap(), "the slice changed");
    let changes = model.take_changes();
    assert_eq!(
        changes.services.into_iter().collect::<Vec<_>>(),
        ["kube-system/dns"]
    );
    assert!(!source.changed());
}

#[test]
fn a_file_that_fails_to_load_is_not_read_again_until_it_changes() {
    let text = std::fs::read_to_string(fixture()).unwrap();
    let (_dir, path) = scratch("bad-reread", &text);
    let mut model = Model::new();
    let mut source = ManifestSource::new(vec![path.clone()]);
    source.load(&mut model).unwrap();
    model.take_changes();
    std::fs::write(&path, text.replace("10.244.2.20", "10.244.2.2000")).unwrap();
    assert!(source.changed());
    source.load(&mut model).unwrap_err();
    assert!(
        !source.changed(),
        "the agent's loop asks every tick: a bad file is read once per change"
    );
    assert!(
        model.take_changes().services.is_empty(),
        "the model is as it was"
    );
    std::fs::write(&path, text.replace("10.244.2.20", "10.244.2.21")).unwrap();
    assert!(source.changed());
    assert!(source.load(&mut model).unwrap());
}

#[test]
fn a_compile_without_this_node_keeps_the_changes_for_the_next_one() {
    let text = std::fs::read_to_string(fixture()).unwrap();
    let objects: Vec<Object> = parse("x.yaml", &text)
        .unwrap()
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    let (node_a, rest): (Vec<Object>, Vec<Object>) = objects
        .into_iter()
        .partition(|o| matches!(o, Object::Node(_)) && o.key() == "node-a");
    let mut model = Model::new();
    for o in &rest {
        let _ = model.apply(o);
    }
    let mut compiler = Compiler::new(settings());
    let e = compiler.compile(&mut model).unwrap_err();
    assert!(e.to_string().contains("node node-a: no Node object"), "{e}");
    model.apply(&node_a[0]).unwrap();
    let c = compiler.compile(&mut model).unwrap();
    assert_eq!(
        c.snapshot.services.ports().len(),
        2,
        "the services waited for the node"
    );
}

#[test]
fn bad_pods_and_nodes_are_left_out_each_with_a_named_problem() {
    let text = std::fs::read_to_string(fixture()).unwrap()
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: stray, namespace: default}\n\
           spec: {nodeName: node-a, containers: [{name: c, image: c}]}\n\
           status: {phase: Running, podIP: 10.244.9.9}\n\
           ---\napiVersion: v1\nkind: Pod\nmetadata: {name: twin, namespace: default}\n\
           spec: {nodeName: node-a, containers: [{name: c, image: c}]}\n\
           status: {phase: Running, podIP: 10.244.1.11}\n\
           ---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-c\n  annotations:\n    \
           flannel.alpha.coreos.com/backend-data: '{\"VNI\":1,\"VtepMAC\":\"02:6b:78:76:00:03\"}'\n\
           spec: {podCIDR: 10.244.2.128/25}\n\
           status: {addresses: [{type: InternalIP, address: 198.18.0.12}]}\n\
           ---\napiVersion: v1\nkind: Node\nmetadata: {name: node-d}\n\
           spec: {podCIDR: 10.244.4.0/24}\n\
           status: {addresses: [{type: InternalIP, address: 198.18.0.13}]}\n";
    let mut model = Model::new();
    let (_dir, manifest) = scratch("bad-pods", &text);
    ManifestSource::new(vec![manifest])
        .load(&mut model)
        .expect("loads: each object converts on its own");
    let c = Compiler::new(settings())
        .compile(&mut model)
        .expect("compiles");
    let mut problems = c.problems.clone();
    problems.sort();
    let wanted = [
        "node node-c: pod CIDR 10.244.2.128/25 overlaps node node-b's",
        "node node-d: not in the overlay yet",
        "pod default/stray: address 10.244.9.9 is outside this node's pod CIDR 10.244.1.0/24",
        "pod default/twin: address 10.244.1.11 is already used by pod default/",
    ];
    assert_eq!(problems.len(), wanted.len(), "{problems:#?}");
    for (p, w) in problems.iter().zip(wanted) {
        assert!(p.starts_with(w), "{p:?} should start with {w:?}");
    }
    // What was left out is not in the tables; everything else is.
    let snap = &c.snapshot;
    assert!(snap.local_pod(ip("10.244.9.9")).is_none());
    assert!(snap.local_pod(ip("10.244.1.11")).is_some());
    assert!(snap.local_pod(ip("10.244.1.10")).is_some());
    let nodes: Vec<&str> = snap
        .remote_nodes()
        .iter()
        .map(|r| r.node.name.as_str())
        .collect();
    assert_eq!(nodes, ["node-b"]);
}

/// Each object of `yaml` (a whole document), converted: the error's text.
fn convert_error(yaml: &str) -> String {
    let mut model = Model::new();
    let objects = parse("t.yaml", yaml).expect("decodes");
    let errors: Vec<String> = objects
        .iter()
        .filter_map(|(_, o)| model.apply(o).err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{yaml}: {errors:?}");
    errors[0].clone()
}

#[test]
fn errors_name_the_field_the_object_used() {
    let service = |spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{{spec}, ports: [{{port: 80}}]}}\n")
    };
    let pod = |status: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n\
             spec: {{nodeName: n, containers: [{{name: c, image: c}}]}}\nstatus: {{{status}}}\n"
        )
    };
    let node = |rest: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n}}\n{rest}\n");
    let cases = [
        (service("clusterIP: nonsense"), "Service default/s: spec.clusterIP: \"nonsense\" is not an IP address"),
        (service("clusterIPs: [nonsense]"), "Service default/s: spec.clusterIPs[0]: \"nonsense\""),
        (service("clusterIPs: [\"fd00::1\", nonsense]"), "Service default/s: spec.clusterIPs[1]: \"nonsense\""),
        (
            service("clusterIP: nonsense, clusterIPs: [nonsense]"),
            "Service default/s: spec.clusterIP: \"nonsense\"",
        ),
        (
            service("clusterIP: 10.96.0.5, clusterIPs: [10.96.0.6]"),
            "Service default/s: spec.clusterIPs[0]: \"10.96.0.6\" must equal spec.clusterIP \"10.96.0.5\"",
        ),
        (
            service("type: LoadBalancer, loadBalancerSourceRanges: [203.0.113.0/24, 10.0.0.0/40]"),
            "Service default/s: spec.loadBalancerSourceRanges[1]: \"10.0.0.0/40\" is not an IPv4 CIDR",
        ),
        (
            service("sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}"),
            "Service default/s: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is outside 1..=86400",
        ),
        (
            service("sessionAffinity: Sticky"),
            "Service default/s: spec.sessionAffinity: unknown affinity \"Sticky\"",
        ),
        (pod("podIP: nonsense"), "Pod default/p: status.podIP: \"nonsense\""),
        (pod("podIPs: [{ip: nonsense}]"), "Pod default/p: status.podIPs[0].ip: \"nonsense\""),
        (
            pod("podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}, {ip: nonsense}]"),
            "Pod default/p: status.podIPs[1].ip: \"nonsense\"",
        ),
        (
            node("spec: {podCIDR: 10.244.1.1/24}"),
            "Node n: spec.podCIDR: \"10.244.1.1/24\" has bits set beyond the prefix length: write the network, 10.244.1.0/24",
        ),
        (
            node("spec: {podCIDRs: [10.244.1.0/33]}"),
            "Node n: spec.podCIDRs[0]: \"10.244.1.0/33\" is not an IPv4 CIDR",
        ),
        (
            node("spec: {podCIDR: 010.244.1.0/24}"),
            "Node n: spec.podCIDR: \"010.244.1.0/24\" is not an IPv4 CIDR",
        ),
        (
            node("status: {addresses: [{type: Hostname, address: n}, {type: InternalIP, address: nonsense}]}"),
            "Node n: status.addresses[1].address: \"nonsense\" is not an IP address",
        ),
    ];
    for (yaml, wanted) in cases {
        let e = convert_error(&yaml);
        assert!(
            e.starts_with(wanted),
            "{yaml}\n{e:?}\nshould start with\n{wanted:?}"
        );
    }
    // What converts keeps converting: a Hostname address, an IPv6 first cluster IP.
    let mut model = Model::new();
    for (_, o) in parse(
        "t.yaml",
        &format!(
            "{}---\n{}",
            node("status: {addresses: [{type: Hostname, address: n}, {type: InternalIP, address: 198.18.0.9}]}"),
            service("clusterIPs: [\"fd00::1\", 10.96.0.7]")
        ),
    )
    .unwrap()
    {
        model.apply(&o).expect("converts");
    }
    assert_eq!(model.nodes()["n"].internal_ip, Some(ip("198.18.0.9")));
    // Source ranges as kube-proxy reads them: spaces trimmed, host bits masked, IPv6 skipped.
    let mut lb = Model::new();
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec: {type: LoadBalancer, \
                clusterIP: 10.96.0.8, loadBalancerSourceRanges: [\" 203.0.113.7/24 \", \"2001:db8::/32\"], \
                ports: [{port: 80, nodePort: 30081}]}\n";
    for (_, o) in parse("lb.yaml", yaml).unwrap() {
        lb.apply(&o).expect("converts");
    }
    assert_eq!(
        lb.services()["default/lb"].source_ranges,
        [kxdp_dataplane::wire::Ipv4Cidr::new(ip("203.0.113.0"), 24)]
    );
    // Affinity's timeout: as written, or the API server's default.
    let affinity = |config: &str| {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: a}}\nspec: {{clusterIP: 10.96.0.9, \
             sessionAffinity: ClientIP, {config} ports: [{{port: 80}}]}}\n"
        );
        let mut m = Model::new();
        for (_, o) in parse("a.yaml", &yaml).unwrap() {
            m.apply(&o).expect("converts");
        }
        m.services()["default/a"].client_ip_affinity
    };
    assert_eq!(affinity(""), Some(10_800));
    assert_eq!(
        affinity("sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}},"),
        Some(60)
    );
    let s = &model.services()["default/s"];
    assert_eq!(
        (s.cluster_ip, s.cluster_ip_field.as_str()),
        (Some(ip("10.96.0.7")), "spec.clusterIPs[1]")
    );
}

#[test]
fn a_cluster_ip_outside_the_service_cidr_leaves_the_service_out_with_a_named_problem() {
    let rogue = |name: &str, ips: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{type: NodePort, {ips}, ports: [{{name: http, port: 80, nodePort: 30099}}]}}\n"
        )
    };
    let text = std::fs::read_to_string(fixture()).unwrap()
        + &rogue("rogue", "clusterIP: 8.8.8.8")
        + &rogue("listed", "clusterIPs: [9.9.9.9]");
    let mut model = Model::new();
    let (_dir, manifest) = scratch("rogue", &text);
    ManifestSource::new(vec![manifest])
        .load(&mut model)
        .expect("loads: the address itself is well formed");
    let c = Compiler::new(settings())
        .compile(&mut model)
        .expect("compiles");
    let mut problems = c.problems.clone();
    problems.sort();
    assert_eq!(
        problems,
        [
            "Service default/listed: spec.clusterIPs[0]: 9.9.9.9 is outside the service CIDR 10.96.0.0/12: the service is left out",
            "Service default/rogue: spec.clusterIP: 8.8.8.8 is outside the service CIDR 10.96.0.0/12: the service is left out",
        ]
    );
    // Left out whole: no port, not even its NodePort; the others are served.
    let names: Vec<&str> = c
        .snapshot
        .services
        .ports()
        .iter()
        .map(|p| p.name())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("rogue") || n.contains("listed")),
        "{names:?}"
    );
    assert!(names.contains(&"default/web:http"), "{names:?}");
    assert!(c.snapshot.services.lookup(ip("8.8.8.8"), 6, 80).is_none());
}

#[test]
fn topology_hints_follow_this_nodes_zone_and_a_new_zone_recompiles() {
    let text = std::fs::read_to_string(fixture()).unwrap();
    let hinted = text
        .replace(
            "  - addresses: [10.244.1.10]\n    nodeName: node-a\n    conditions: {ready: true}\n",
            "  - addresses: [10.244.1.10]\n    nodeName: node-a\n    conditions: {ready: true}\n    \
             hints: {forZones: [{name: zone-a}]}\n",
        )
        .replace(
            "  - addresses: [10.244.2.10]\n    nodeName: node-b\n    conditions: {ready: true}\n",
            "  - addresses: [10.244.2.10]\n    nodeName: node-b\n    conditions: {ready: true}\n    \
             hints: {forZones: [{name: zone-b}]}\n",
        );
    let labelled = |zone: &str| {
        hinted.replacen(
            "  name: node-a\n",
            &format!("  name: node-a\n  labels: {{topology.kubernetes.io/zone: {zone}}}\n"),
            1,
        )
    };
    let web = |c: &kxdp_control::compile::Compiled| -> Vec<Ipv4Addr> {
        c.snapshot
            .services
            .ports()
            .iter()
            .find(|p| p.name() == "default/web:http")
            .expect("web")
            .cluster_members()
            .iter()
            .map(|m| m.0)
            .collect()
    };
    let mut model = Model::new();
    let (_dir, manifest) = scratch("zones", &labelled("zone-a"));
    let mut source = ManifestSource::new(vec![manifest]);
    source.load(&mut model).unwrap();
    let mut compiler = Compiler::new(settings());
    assert_eq!(
        web(&compiler.compile(&mut model).unwrap()),
        [ip("10.244.1.10")]
    );
    // The node moves to zone-b: every service is compiled again, web's pool follows.
    let moved = parse("zones.yaml", &labelled("zone-b")).unwrap();
    for (_, o) in &moved {
        model.apply(o).unwrap();
    }
    let again = compiler.compile(&mut model).unwrap();
    assert_eq!(again.services_compiled, 2);
    assert_eq!(web(&again), [ip("10.244.2.10")]);
    // A zone no hint names: hints ignored, every endpoint.
    for (_, o) in &parse("zones.yaml", &labelled("zone-c")).unwrap() {
        model.apply(o).unwrap();
    }
    assert_eq!(
        web(&compiler.compile(&mut model).unwrap()),
        [ip("10.244.1.10"), ip("10.244.2.10")]
    );
    assert_eq!(model.nodes()["node-a"].zone.as_deref(), Some("zone-c"));
}

#[test]
fn a_pod_its_veth_declares_is_served_until_the_api_lists_it_and_bad_declarations_are_named() {
    use kxdp_control::pod_declaration::PodDeclaration;
    let declare = |ns: &str, name: &str, addr: &str| PodDeclaration {
        namespace: ns.into(),
        name: name.into(),
        ip: ip(addr),
    };
    let mut model = Model::new();
    ManifestSource::new(vec![fixture()])
        .load(&mut model)
        .unwrap();
    let mut compiler = Compiler::new(settings());
    compiler.compile(&mut model).unwrap();

    // A pod the API does not list yet: served at its declared address, on its veth.
    let fresh = declare("default", "fresh", "10.244.1.20");
    assert!(model.set_declared(&fresh.interface_name(), Some(fresh.clone())));
    // Ignored, each with a problem: a veth not named for the pod, an address outside the
    // pod CIDR, one another pod has.
    let misnamed = declare("default", "misnamed", "10.244.1.21");
    model.set_declared(&pod_interface_name("default", "other"), Some(misnamed));
    let outside = declare("default", "outside", "10.244.2.22");
    model.set_declared(&outside.interface_name(), Some(outside.clone()));
    let taken = declare("default", "taken", "10.244.1.10");
    model.set_declared(&taken.interface_name(), Some(taken.clone()));
    // The API's pod wins over its own declaration; a different address is a problem.
    let client = declare("default", "client", "10.244.1.23");
    model.set_declared(&client.interface_name(), Some(client.clone()));

    let c = compiler.compile(&mut model).unwrap();
    let pod = c.snapshot.local_pod(ip("10.244.1.20")).expect("served");
    assert_eq!(pod.name, "default/fresh");
    assert_eq!(pod.mac, pod_mac(ip("10.244.1.20")));
    let iface = c
        .interfaces
        .iter()
        .find(|(n, _)| *n == fresh.interface_name())
        .expect("its veth is wanted");
    assert_eq!(pod.iface, iface.1);
    for addr in ["10.244.1.21", "10.244.2.22", "10.244.1.23"] {
        assert!(c.snapshot.local_pod(ip(addr)).is_none(), "{addr}");
    }
    assert_eq!(
        c.snapshot.local_pod(ip("10.244.1.10")).unwrap().name,
        "default/web-0"
    );
    assert_eq!(
        c.snapshot.local_pod(ip("10.244.1.11")).unwrap().name,
        "default/client"
    );
    let mut problems = c.problems.clone();
    problems.sort();
    let wanted = [
        "pod default/client: its veth kx",
        "pod default/misnamed: declared on veth kx",
        "pod default/outside: its veth kx",
        "pod default/taken: its veth kx",
    ];
    assert_eq!(problems.len(), wanted.len(), "{problems:#?}");
    for (p, w) in problems.iter().zip(wanted) {
        assert!(p.starts_with(w), "{p:?} should start with {w:?}");
    }
    assert!(problems[0].contains("declares 10.244.1.23, the API says 10.244.1.11"));
    assert!(problems[2].contains("outside this node's pod CIDR"));
    assert!(problems[3].contains("already used by pod default/web-0"));

    // The API lists it now: the same pod, from the API; the declaration goes with its veth.
    let listed = "apiVersion: v1\nkind: Pod\nmetadata: {name: fresh, namespace: default}\n\
                  spec: {nodeName: node-a, containers: [{name: c, image: c}]}\n\
                  status: {phase: Running, podIP: 10.244.1.20}\n";
    for (_, o) in parse("listed.yaml", listed).unwrap() {
        model.apply(&o).unwrap();
    }
    let c = compiler.compile(&mut model).unwrap();
    assert!(c.snapshot.local_pod(ip("10.244.1.20")).is_some());
    model.remove(Kind::Pod, "default/fresh");
    assert!(model.set_declared(&fresh.interface_name(), None));
    let c = compiler.compile(&mut model).unwrap();
    assert!(c.snapshot.local_pod(ip("10.244.1.20")).is_none());
    assert!(!c
        .interfaces
        .iter()
        .any(|(n, _)| *n == fresh.interface_name()));
}
