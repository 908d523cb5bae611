//! kxdp's Kubernetes source through the real kube client against the loopback API server:
//! the first tables come only after every watcher's first (paged) list and say what the
//! cluster says; changes follow; a 410 Gone forces a relist that deletes what is no longer
//! listed; a 500 and a dropped connection are ridden out; while the API server is away the
//! last tables stay served; the node's flannel annotations are published; NetworkPolicies,
//! Namespaces and the pods of every node (as peers) are watched, a bad policy is reported by
//! object and field without taking the others down. No privileges needed; every wait is
//! bounded.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kxdp_control::compile::{Compiler, NodeSettings};
use kxdp_control::kube_source::{KubeSource, SourceStatus};
use kxdp_control::model::Model;
use kxdp_control::tables::{Direction, PolicyVerdict};
use kxdp_dataplane::wire::EthernetAddress;
use kxdp_testkit::Topology;
use kxdp_tests::apiserver::{FakeApiServer, Fault, Resource};
use serde_json::{json, Value};

const BOUND: Duration = Duration::from_secs(15);

fn node(name: &str, cidr: &str, ip: &str, vtep: Option<&str>) -> Value {
    let mut annotations = json!({});
    if let Some(mac) = vtep {
        annotations = json!({
            "flannel.alpha.coreos.com/backend-data": format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}"),
            "flannel.alpha.coreos.com/public-ip": ip,
        });
    }
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "annotations": annotations},
           "spec": {"podCIDR": cidr},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

/// A pod labelled `app` with its name up to the first `-` (`web-0`: `app=web`).
fn pod(name: &str, node: &str, ip: &str) -> Value {
    let app = name.split('-').next().unwrap_or(name);
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "c"}]},
           "status": {"phase": "Running", "podIP": ip}})
}

fn service(name: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default", "labels": labels},
           "spec": {"clusterIP": ip, "clusterIPs": [ip],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn slice(service: &str, addresses: &[&str]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "node-b"}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-1"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": endpoints})
}

/// What one published snapshot says, in a comparable form.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tables {
    /// "service-port backend,backend".
    services: Vec<String>,
    pods: Vec<String>,
    remote_nodes: Vec<String>,
    /// "pod <- peer: verdict", ingress on TCP 8080 from each of [`PROBES`], for every local
    /// pod some policy selects for ingress.
    policy: Vec<String>,
    /// What the model holds for policies: "NetworkPolicy key", "Namespace name labels", "Pod
    /// key address labels" for every pod a policy may name.
    objects: Vec<String>,
}

fn labels(l: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// The peers whose ingress verdicts [`Tables::policy`] lists: web-1 (on node-b) and client.
const PROBES: [&str; 2] = ["10.244.2.10", "10.244.1.10"];

/// The source running on its own thread, compiling every report into [`Tables`].
struct Running {
    reports: mpsc::Receiver<(Tables, SourceStatus)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(server: &FakeApiServer) -> Running {
        let config = server.kube_config();
        let (tx, reports) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let client = kube::Client::try_from(config).expect("client");
                let source = KubeSource::new(client, "node-a");
                let mut node = Topology::default().node;
                node.name = "node-a".into();
                node.node_ips = vec![];
                let mut compiler = Compiler::new(NodeSettings {
                    node,
                    neighbors: vec![],
                });
                let mut model = Model::new();
                let run = source.run(&mut model, |model, status| {
                    let c = compiler.compile(model).expect("compiles");
                    let s = &c.snapshot;
                    let mut services: Vec<String> = s
                        .services
                        .ports()
                        .iter()
                        .map(|p| {
                            let b: Vec<String> =
                                p.spec().backends.iter().map(|b| b.ip.to_string()).collect();
                            format!("{} {}", p.name(), b.join(","))
                        })
                        .collect();
                    services.sort();
                    let mut policy = Vec::new();
                    for (pod, p) in c.policies.iter() {
                        if p.ingress.is_none() {
                            continue;
                        }
                        for peer in PROBES {
                            let v = match p.evaluate(
                                Direction::Ingress,
                                peer.parse().unwrap(),
                                6,
                                8080,
                            ) {
                                PolicyVerdict::Allowed(by) => format!("allowed by {by}"),
                                PolicyVerdict::Denied(_) => "denied".into(),
                                PolicyVerdict::Open => "open".into(),
                                PolicyVerdict::Exempt => "exempt".into(),
                            };
                            policy.push(format!("{pod} <- {peer}: {v}"));
                        }
                    }
                    let mut objects: Vec<String> = model
                        .policies()
                        .keys()
                        .map(|k| format!("NetworkPolicy {k}"))
                        .collect();
                    objects.extend(
                        model
                            .namespaces()
                            .iter()
                            .map(|(n, i)| format!("Namespace {n} {}", labels(&i.labels))),
                    );
                    objects.extend(
                        model
                            .policy_pods()
                            .map(|(k, p)| format!("Pod {k} {} {}", p.ip, labels(&p.labels))),
                    );
                    let tables = Tables {
                        objects,
                        policy,
                        services,
                        pods: s.local_pods().map(|p| p.name.clone()).collect(),
                        remote_nodes: s
                            .remote_nodes()
                            .iter()
                            .map(|r| r.node.name.clone())
                            .collect(),
                    };
                    let _ = tx.send((tables, status.clone()));
                });
                tokio::select! {
                    () = run => {}
                    _ = stopped => {}
                }
            });
        });
        Running {
            reports,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The next report, within the bound.
    fn next(&self, what: &str) -> (Tables, SourceStatus) {
        self.reports
            .recv_timeout(BOUND)
            .unwrap_or_else(|e| panic!("no report ({what}): {e}"))
    }

    /// Reports until one satisfies `f`.
    fn until(&self, what: &str, f: impl Fn(&Tables) -> bool) -> (Tables, SourceStatus) {
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (t, s) = self
                .reports
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("never: {what}: {e}"));
            if f(&t) {
                return (t, s);
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A cluster: this node and a flannel node, two pods here and one there, a service with two
/// backends, and services kube-proxy would skip.
fn cluster(server: &FakeApiServer) {
    server.apply(node("node-a", "10.244.1.0/24", "198.18.0.10", None));
    server.apply(node(
        "node-b",
        "10.244.2.0/24",
        "198.18.0.11",
        Some("02:6b:78:76:00:02"),
    ));
    server.apply(pod("client", "node-a", "10.244.1.10"));
    server.apply(pod("web-0", "node-a", "10.244.1.11"));
    server.apply(pod("web-1", "node-b", "10.244.2.10"));
    server.apply(service("web", "10.96.0.10", json!({})));
    server.apply(slice("web", &["10.244.1.11", "10.244.2.10"]));
    server.apply(service("api", "10.96.0.20", json!({})));
    server.apply(slice("api", &["10.244.2.30"]));
    server.apply(service(
        "theirs",
        "10.96.0.30",
        json!({"service.kubernetes.io/service-proxy-name": "other"}),
    ));
    server.apply(service("headless", "None", json!({})));
}

fn has_service(t: &Tables, entry: &str) -> bool {
    t.services.iter().any(|s| s == entry)
}

#[test]
fn first_tables_come_after_every_paged_list_and_say_what_the_cluster_says() {
    let server = FakeApiServer::start();
    server.set_page_size(2);
    cluster(&server);
    let source = Running::start(&server);
    let (t, status) = source.next("the first tables");
    assert!(status.synced);
    assert_eq!(status.lists, [1; 7], "one complete list per kind first");
    assert_eq!(
        t.services,
        [
            "default/api:http 10.244.2.30",
            "default/web:http 10.244.1.11,10.244.2.10"
        ]
    );
    assert_eq!(
        t.pods,
        ["default/client", "default/web-0"],
        "this node's pods only"
    );
    assert_eq!(t.remote_nodes, ["node-b"]);
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.contains("continue=")),
        "lists were paged: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods") && r.contains("spec.nodeName%3Dnode-a")),
        "pods are watched for this node only: {requests:?}"
    );

    // Changes follow, bookmarks between them: a backend goes, a service goes, a pod comes.
    server.bookmark();
    server.apply(slice("web", &["10.244.2.10"]));
    source.until("the backend left", |t| {
        has_service(t, "default/web:http 10.244.2.10")
    });
    server.delete(Resource::Services, Some("default"), "api");
    source.until("the service left", |t| t.services.len() == 1);
    server.bookmark();
    server.apply(pod("web-2", "node-a", "10.244.1.12"));
    source.until("the pod came", |t| t.pods.len() == 3);
}

#[test]
fn a_kubeconfig_file_finds_the_api_server() {
    let server = FakeApiServer::start();
    cluster(&server);
    let dir = kxdp_testkit::ScratchDir::new("kubeconfig");
    let path = dir.join("config");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters: [{{name: test, cluster: {{server: \"{}\"}}}}]\n\
         users: [{{name: test, user: {{}}}}]\n\
         contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n",
        server.url()
    );
    std::fs::write(&path, kubeconfig).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let names = rt.block_on(async {
        let client = kxdp_control::kube_source::client(Some(&path))
            .await
            .expect("a client from the kubeconfig");
        let nodes: Api<Node> = Api::all(client);
        let list = nodes.list(&Default::default()).await.expect("nodes listed");
        list.items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect::<Vec<_>>()
    });
    assert_eq!(names, ["node-a", "node-b"]);
    let bad = rt.block_on(kxdp_control::kube_source::client(Some(
        &dir.join("missing"),
    )));
    assert!(bad.is_err(), "a missing kubeconfig is an error");
}

#[test]
fn a_relist_after_410_gone_deletes_what_went_while_the_watch_was_away() {
    let server = FakeApiServer::start();
    cluster(&server);
    let source = Running::start(&server);
    source.next("the first tables");
    // The API server goes away; meanwhile a service is deleted and history is compacted, so
    // the watch cannot resume: 410, relist.
    server.set_down(true);
    server.delete(Resource::Services, Some("default"), "api");
    server.expire_history();
    server.set_down(false);
    let (t, status) = source.until("the relist dropped api", |t| t.services.len() == 1);
    assert!(has_service(&t, "default/web:http 10.244.1.11,10.244.2.10"));
    assert!(
        status.lists[0] >= 2,
        "services were listed again: {status:?}"
    );
    assert!(status.errors >= 1, "{status:?}");
}

#[test]
fn a_500_and_a_dropped_watch_are_ridden_out() {
    let server = FakeApiServer::start();
    cluster(&server);
    server.inject(Resource::EndpointSlices, Fault::ServerError);
    let source = Running::start(&server);
    let (t, status) = source.next("the first tables, after a retried 500");
    assert_eq!(t.services.len(), 2);
    assert!(status.errors >= 1, "the 500 was seen: {status:?}");
    server.inject(Resource::Services, Fault::DropConnection);
    server.close_watches();
    server.apply(service("db", "10.96.0.40", json!({})));
    server.apply(slice("db", &["10.244.2.40"]));
    source.until("db after the drop", |t| {
        has_service(t, "default/db:http 10.244.2.40")
    });
}

#[test]
fn while_the_api_server_is_away_the_last_tables_stay() {
    let server = FakeApiServer::start();
    cluster(&server);
    let source = Running::start(&server);
    let (first, _) = source.next("the first tables");
    server.set_down(true);
    server.close_watches();
    // Nothing new is published while it is away: the dataplane keeps the last tables.
    match source.reports.recv_timeout(Duration::from_secs(3)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("a report while the API server was away: {other:?}"),
    }
    server.apply(slice("web", &["10.244.2.10", "10.244.2.11"]));
    server.set_down(false);
    let (t, status) = source.until("changes flow again", |t| {
        has_service(t, "default/web:http 10.244.2.10,10.244.2.11")
    });
    assert_ne!(t, first);
    assert!(status.errors >= 1, "the outage was seen: {status:?}");
}

#[test]
fn the_node_publishes_flannel_annotations() {
    let server = FakeApiServer::start();
    cluster(&server);
    let config = server.kube_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let annotations = rt.block_on(async {
        let client = kube::Client::try_from(config).unwrap();
        let source = KubeSource::new(client.clone(), "node-a");
        source
            .publish_node_annotations(
                1,
                EthernetAddress([0x02, 0x6b, 0x78, 0x76, 0, 0x01]),
                Ipv4Addr::new(198, 18, 0, 10),
            )
            .await
            .expect("patched");
        let nodes: Api<Node> = Api::all(client);
        nodes
            .get("node-a")
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap()
    });
    assert_eq!(
        annotations["flannel.alpha.coreos.com/backend-data"],
        r#"{"VNI":1,"VtepMAC":"02:6b:78:76:00:01"}"#
    );
    assert_eq!(
        annotations["flannel.alpha.coreos.com/public-ip"],
        "198.18.0.10"
    );
    assert_eq!(
        annotations["flannel.alpha.coreos.com/backend-type"],
        "vxlan"
    );
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels}})
}

fn network_policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

#[test]
fn policies_namespaces_and_every_nodes_pods_are_watched_and_a_bad_policy_is_named() {
    let server = FakeApiServer::start();
    cluster(&server);
    server.apply(namespace("default", json!({})));
    server.apply(namespace("clients", json!({"team": "clients"})));
    server.apply(network_policy(
        "web-from-web",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    ));
    server.apply(network_policy(
        "bad",
        json!({"podSelector": {},
               "ingress": [{"from": [{"ipBlock": {"cidr": "nonsense"}}]}]}),
    ));
    let source = Running::start(&server);
    let (t, status) = source.next("the first tables");
    assert_eq!(
        t.objects,
        [
            "NetworkPolicy default/web-from-web",
            "Namespace clients kubernetes.io/metadata.name=clients,team=clients",
            "Namespace default kubernetes.io/metadata.name=default",
            "Pod default/web-1 10.244.2.10 app=web",
            "Pod default/client 10.244.1.10 app=client",
            "Pod default/web-0 10.244.1.11 app=web",
        ],
        "the bad policy is left out; the pod on node-b is a peer"
    );
    assert_eq!(
        t.policy,
        [
            "default/web-0 <- 10.244.2.10: allowed by default/web-from-web",
            "default/web-0 <- 10.244.1.10: denied",
        ],
        "web-1, on node-b, is a peer; the bad policy selects nothing"
    );
    assert_eq!(t.pods, ["default/client", "default/web-0"]);
    assert_eq!(
        status.rejected,
        [
            "NetworkPolicy default/bad: spec.ingress[0].from[0].ipBlock.cidr: \"nonsense\" is not \
          a CIDR (address/length, as 10.0.0.0/8)"
        ]
    );
    let requests = server.requests();
    for (what, prefix) in [
        ("namespaces", "GET /api/v1/namespaces?"),
        (
            "network policies",
            "GET /apis/networking.k8s.io/v1/networkpolicies?",
        ),
    ] {
        assert!(
            requests.iter().any(|r| r.starts_with(prefix)),
            "{what} are listed: {requests:?}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("fieldSelector")),
        "every node's pods are listed too: {requests:?}"
    );

    // A peer on the other node changes its labels: watched, recompiled.
    server.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "old"}},
        "spec": {"nodeName": "node-b", "containers": [{"name": "c", "image": "c"}]},
        "status": {"phase": "Running", "podIP": "10.244.2.10"}}));
    source.until("web-1 is no longer a peer", |t| {
        t.objects
            .contains(&"Pod default/web-1 10.244.2.10 app=old".to_owned())
            && t.policy.first().map(String::as_str) == Some("default/web-0 <- 10.244.2.10: denied")
    });
    // A policy by namespace: the client namespace's label decides.
    server.apply(network_policy(
        "web-from-clients",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "clients"}}}]}]}),
    ));
    server.apply(namespace("default", json!({"team": "clients"})));
    source.until("the namespace's pods are peers", |t| {
        t.objects.contains(
            &"Namespace default kubernetes.io/metadata.name=default,team=clients".to_owned(),
        ) && t.policy
            == [
                "default/web-0 <- 10.244.2.10: allowed by default/web-from-clients",
                "default/web-0 <- 10.244.1.10: allowed by default/web-from-clients",
            ]
    });
    // The policies go: web-0 is selected by none.
    server.delete(Resource::NetworkPolicies, Some("default"), "web-from-web");
    server.delete(
        Resource::NetworkPolicies,
        Some("default"),
        "web-from-clients",
    );
    let (t, status) = source.until("no policy selects web-0", |t| t.policy.is_empty());
    assert!(
        !t.objects.iter().any(|o| o.starts_with("NetworkPolicy")),
        "{:?}",
        t.objects
    );
    assert_eq!(
        status.rejected.len(),
        1,
        "the bad policy is still the only one"
    );
}
