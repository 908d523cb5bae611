//! `kxdp agent` end to end: two agent processes on a two-node namespace cluster, read through
//! their admin API and the `kxdp` CLI, changed by rewriting their manifest, stopped by SIGTERM.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use kxdp_agent::admin::{
    self, BackendState, CountersView, FlowsView, RouteTarget, RouteView, ServiceView, StatusView,
};
use kxdp_control::json::{Endpoint, Frontend, FrontendKind, Policy, Proto};
use kxdp_tests::clients::{http_get_many, HttpServer};
use kxdp_tests::cluster::{eventually, metric, AgentCluster};
use kxdp_tests::testbed::{self, skip_unless_privileged};

use kxdp_tests::cluster::{DEMO_MANIFEST as MANIFEST, DEMO_PODS as PODS};

fn cluster() -> AgentCluster {
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    c
}

/// `kxdp <args> --admin <node's API>`: stdout, after checking it succeeded.
fn cli(c: &AgentCluster, node: usize, args: &[&str]) -> String {
    let admin = c.admin(node).to_string();
    let mut all = args.to_vec();
    all.extend(["--admin", &admin]);
    let out = c.kxdp(&all);
    assert!(
        out.status.success(),
        "kxdp {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json<T: serde::de::DeserializeOwned>(c: &AgentCluster, node: usize, args: &[&str]) -> T {
    let mut all = args.to_vec();
    all.push("--json");
    let text = cli(c, node, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("kxdp {args:?} --json: {e}: {text}"))
}

#[test]
fn agents_serve_the_cluster_and_report_it_through_the_api_and_cli() {
    if skip_unless_privileged("agents_serve_the_cluster_and_report_it_through_the_api_and_cli") {
        return;
    }
    let c = cluster();
    let ns = |name: &str| c.pod(name).ns.clone();
    let _a = HttpServer::start(&ns("web-a"), 8080, "web-a", 60);
    let _b = HttpServer::start(&ns("web-b"), 8080, "web-b", 60);
    let answers = http_get_many(&ns("client-a"), "http://10.96.0.10/", 12);
    assert_eq!(answers.len(), 12);
    assert!(
        answers.iter().all(|(b, _)| b == "web-a" || b == "web-b"),
        "{answers:?}"
    );

    // Health, readiness and metrics, on the metrics listener (TCP, in the node's namespace);
    // the debug views only on the debug socket.
    let get = |path: &str| c.metrics_get(0, path, Duration::from_secs(10)).unwrap();
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz").0, 200);
    assert_eq!(get("/api/status").0, 404);
    let addr = c.admin(0);
    assert_eq!(admin::get(&addr, "/healthz").unwrap().0, 200);
    let (code, m) = get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&m, "kxdp_ready "), 1.0);
    assert_eq!(metric(&m, "kxdp_services "), 4.0);
    assert!(metric(&m, "kxdp_events_total{event=\"service_new_flow\"}") >= 12.0);
    assert!(metric(&m, "kxdp_conntrack_flows ") >= 12.0);
    assert!(
        metric(
            &m,
            "kxdp_interface_rx_frames_total{interface=\"uplink\",worker=\"0\"}"
        ) > 0.0
    );
    assert!(metric(&m, "kxdp_snapshot_update_latency_seconds_count ") >= 1.0);
    assert!(metric(&m, "kxdp_batch_size_frames_count ") > 0.0);
    assert!(metric(&m, "process_open_fds ") > 0.0);
    assert_eq!(metric(&m, "kxdp_source_errors_total "), 0.0);
    for reason in kxdp_dataplane::reason::DropReason::ALL {
        let series = format!("kxdp_drops_total{{reason=\"{}\"}} ", reason.name());
        metric(&m, &series);
    }
    for decision in kxdp_xdp::XdpDecision::ALL {
        let series = format!(
            "kxdp_xdp_decisions_total{{decision=\"{}\"}} ",
            decision.name()
        );
        metric(&m, &series);
    }
    assert!(metric(&m, "kxdp_xdp_decisions_total{decision=\"xsk_pod\"} ") > 0.0);

    // kxdp status.
    let s: StatusView = json(&c, 0, &["status"]);
    assert!(s.ready && s.synced, "{s:?}");
    assert_eq!(
        (s.node.as_str(), s.local_pods, s.remote_nodes),
        ("node-a", 2, 1)
    );
    assert_eq!((s.neighbors.needed, s.neighbors.resolved), (1, 1));
    assert!(
        s.conntrack.flows >= 12 && s.conntrack.capacity >= s.conntrack.flows,
        "{s:?}"
    );
    assert!(
        s.update_latency_ms.p50 <= s.update_latency_ms.p99
            && s.update_latency_ms.p99 <= s.update_latency_ms.max,
        "{s:?}"
    );
    assert_eq!(s.interfaces.len(), 3, "uplink and two pods: {s:?}");
    assert!(s.interfaces.iter().all(|i| i.rx > 0), "{s:?}");
    // By default each agent pins its one worker to the last CPU it may use: here, the CPU the
    // cluster gave its node (where the whole agent runs, so the pinning shows in `pinned`).
    for node in 0..2 {
        let cpu = kxdp_tests::cluster::node_cpu(node);
        let workers = c.status(node).workers;
        assert_eq!(
            workers
                .iter()
                .map(|w| (w.core, w.cpus.clone(), w.pinned))
                .collect::<Vec<_>>(),
            vec![(Some(cpu), vec![cpu], Some(cpu))],
            "{workers:?}"
        );
    }
    let text = cli(&c, 0, &["status"]);
    assert!(
        text.contains("node node-a") && text.contains("INTERFACE"),
        "{text}"
    );
    // The JSON's fields by name, as a tool reads them.
    let raw: serde_json::Value = json(&c, 0, &["status"]);
    assert_eq!(
        raw["neighbors"],
        serde_json::json!({"needed": 1, "resolved": 1})
    );
    assert!(raw["conntrack"]["capacity"].as_u64() > Some(0), "{raw}");

    // kxdp services: the ClusterIP with one local and one remote backend, the empty one.
    let services: Vec<ServiceView> = json(&c, 0, &["services"]);
    let web = services
        .iter()
        .find(|s| s.name == "default/web:http")
        .unwrap();
    assert_eq!(web.proto, Proto::Tcp);
    assert_eq!(
        web.frontends,
        [Frontend {
            kind: FrontendKind::ClusterIp,
            ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
            port: 80
        }]
    );
    assert_eq!(
        (web.policies.internal, web.policies.external),
        (Policy::Cluster, Policy::Cluster)
    );
    let backends: Vec<(Endpoint, BackendState, bool)> = web
        .backends
        .iter()
        .map(|b| (Endpoint::new(b.ip, b.port), b.state, b.local))
        .collect();
    assert_eq!(
        backends,
        [
            (
                Endpoint::new(Ipv4Addr::new(10, 244, 1, 10), 8080),
                BackendState::Ready,
                true
            ),
            (
                Endpoint::new(Ipv4Addr::new(10, 244, 2, 10), 8080),
                BackendState::Ready,
                false
            )
        ]
    );
    let np = services
        .iter()
        .find(|s| s.name == "default/web-nodeport:http")
        .unwrap();
    assert!(
        np.frontends.contains(&Frontend {
            kind: FrontendKind::NodePort,
            ip: None,
            port: 30080
        }),
        "{np:?}"
    );
    let empty = services
        .iter()
        .find(|s| s.name == "default/empty:http")
        .unwrap();
    assert!(empty.backends.is_empty());
    let raw: serde_json::Value = json(&c, 0, &["services"]);
    let raw_web = raw
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "default/web:http")
        .unwrap();
    assert_eq!(
        raw_web["frontends"][0],
        serde_json::json!({"kind": "ClusterIP", "ip": "10.96.0.10", "port": 80})
    );
    assert_eq!(
        raw_web["backends"][0],
        serde_json::json!({"ip": "10.244.1.10", "port": 8080, "state": "ready", "local": true})
    );
    assert_eq!(raw_web["proto"], "tcp");
    assert_eq!(
        raw_web["policies"],
        serde_json::json!({"internal": "Cluster", "external": "Cluster"})
    );
    let text = cli(&c, 0, &["services"]);
    assert!(text.contains("(none: connections are refused)"), "{text}");
    assert!(
        text.contains("10.244.1.10:8080") && text.contains("ready local"),
        "{text}"
    );
    assert!(text.contains("ClusterIP 10.96.0.10:80"), "{text}");

    // kxdp conntrack, with filters.
    let flows: FlowsView = json(
        &c,
        0,
        &["conntrack", "--proto", "tcp", "--addr", "10.96.0.10"],
    );
    assert!(flows.matched >= 12, "{flows:?}");
    assert!(
        !flows.flows.is_empty(),
        "the matched flows are listed: {flows:?}"
    );
    let vip = Endpoint::new(Ipv4Addr::new(10, 96, 0, 10), 80);
    assert!(
        flows.flows.iter().all(|f| f.original.proto == Proto::Tcp
            && f.original.dst == vip
            && f.reply.dst == f.original.src
            && [8080].contains(&f.reply.src.port)),
        "{flows:?}"
    );
    let raw: serde_json::Value = json(&c, 0, &["conntrack", "--addr", "10.96.0.10"]);
    let first = &raw["flows"][0];
    assert_eq!(first["original"]["proto"], "tcp", "{raw}");
    assert_eq!(
        first["original"]["dst"],
        serde_json::json!({"ip": "10.96.0.10", "port": 80}),
        "{raw}"
    );
    assert_eq!(first["reply"]["src"]["port"], 8080, "{raw}");
    let none: FlowsView = json(&c, 0, &["conntrack", "--proto", "udp"]);
    assert_eq!(none.matched, 0, "{none:?}");
    let limited: FlowsView = json(&c, 0, &["conntrack", "--limit", "2"]);
    assert_eq!(limited.flows.len(), 2);
    let text = cli(&c, 0, &["conntrack", "--port", "80"]);
    assert!(
        text.contains("flows matched") && text.contains("-> 10.96.0.10:80"),
        "{text}"
    );

    // kxdp routes: node-b's pod CIDR over VXLAN, with its MAC resolved.
    let routes: Vec<RouteView> = json(&c, 0, &["routes"]);
    let b = routes
        .iter()
        .find(|r| r.destination.to_string() == "10.244.2.0/24")
        .unwrap();
    match &b.target {
        RouteTarget::RemoteNode {
            node,
            next_hop,
            vni,
            ..
        } => assert!(
            node == "node-b" && *vni == 1 && next_hop.mac.is_some(),
            "{b:?}"
        ),
        other => panic!("10.244.2.0/24 goes to {other:?}"),
    }
    let raw: serde_json::Value = json(&c, 0, &["routes"]);
    let raw_b = raw
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"] == "10.244.2.0/24")
        .unwrap();
    assert_eq!(raw_b["kind"], "remote_node", "{raw_b}");
    assert_eq!(raw_b["node"], "node-b", "{raw_b}");
    assert!(raw_b["next_hop"]["ip"].is_string(), "{raw_b}");
    assert!(raw
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["kind"] == "local_pods" && r["destination"] == "10.244.1.0/24"));
    let text = cli(&c, 0, &["routes"]);
    assert!(
        text.contains("10.244.1.0/24") && text.contains("vxlan to node-b (vni 1)"),
        "{text}"
    );

    // kxdp counters.
    let counters: CountersView = json(&c, 0, &["counters"]);
    assert!(counters.events["service_new_flow"] >= 12, "{counters:?}");
    assert_eq!(
        counters.drops.len(),
        kxdp_dataplane::reason::DropReason::COUNT
    );
    assert!(counters.io["rx_frames"] > 0);
    assert_eq!(counters.io.len(), kxdp_xdp::worker::IoCounter::COUNT);
    // Pods' frames are steered by the XDP program, and the node's uplink saw VXLAN from
    // node-b: its decisions reach the API and the CLI.
    assert!(counters.xdp["xsk_pod"] > 0, "{counters:?}");
    assert!(counters.xdp["xsk_vxlan"] > 0, "{counters:?}");
    assert_eq!(counters.xdp.len(), kxdp_xdp::XdpDecision::COUNT);
    let sizes: Vec<(u64, u64)> = counters
        .batch_sizes
        .iter()
        .map(|b| (b.min, b.max))
        .collect();
    assert_eq!(sizes.first(), Some(&(1, 1)));
    assert_eq!(sizes.last(), Some(&(64, 64)));
    assert!(counters.batch_sizes.iter().map(|b| b.batches).sum::<u64>() > 0);
    let raw: serde_json::Value = json(&c, 0, &["counters"]);
    assert_eq!(raw["batch_sizes"][1]["min"], 2, "{raw}");
    assert_eq!(raw["batch_sizes"][1]["max"], 3, "{raw}");
    let text = cli(&c, 0, &["counters"]);
    assert!(text.contains("batches by size: 1: "), "{text}");
    assert!(text.contains("xsk_pod"), "{text}");

    // kxdp trace against the live tables.
    let admin = c.admin(0).to_string();
    let trace = |dst: &str, json: bool| {
        let mut args = vec![
            "trace",
            "--agent",
            &admin,
            "--src",
            "10.244.1.11:40000",
            "--dst",
            dst,
        ];
        if json {
            args.push("--json");
        }
        let out = c.kxdp(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let text = String::from_utf8(trace("10.96.0.30:80", false)).unwrap();
    assert!(text.contains("verdict:    reject"), "{text}");
    assert!(text.contains("(icmp_port_unreachable)"), "{text}");
    let out = trace("10.96.0.10:80", true);
    let t: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
    assert_eq!(t["verdict"], "forward", "{t}");
    assert_eq!(
        t["service"]["backends"].as_array().map(Vec::len),
        Some(2),
        "{t}"
    );
    assert_eq!(
        t["service"]["frontend"],
        serde_json::json!({"kind": "ClusterIP", "ip": "10.96.0.10", "port": 80}),
        "{t}"
    );
    assert_eq!(
        t["dnat"]["from"],
        serde_json::json!({"ip": "10.96.0.10", "port": 80})
    );
    // Compared only once present: two missing fields would compare equal (null == null).
    for field in [
        &t["dnat"]["to"],
        &t["service"]["chosen"],
        &t["packet_out"]["dst"],
    ] {
        assert!(field.is_object(), "an endpoint, not {field}: {t}");
    }
    assert_eq!(t["dnat"]["to"], t["service"]["chosen"], "{t}");
    assert_eq!(t["packet_out"]["dst"], t["dnat"]["to"], "{t}");
}

#[test]
fn manifest_changes_go_live_a_late_veth_is_served_and_bad_edits_keep_the_tables() {
    if skip_unless_privileged(
        "manifest_changes_go_live_a_late_veth_is_served_and_bad_edits_keep_the_tables",
    ) {
        return;
    }
    let mut c = cluster();
    let before = c.status(0).generation;
    // web-b leaves the ClusterIP, and a pod "late" is scheduled on node-a before its veth
    // exists.
    let late = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: default}\n\
                spec: {nodeName: node-a, containers: [{name: c, image: c}]}\n\
                status: {phase: Running, podIP: 10.244.1.12}\n";
    let edited = MANIFEST.replacen(
        "  - {addresses: [10.244.1.10], nodeName: node-a, conditions: {ready: true}}\n  - {addresses: [10.244.2.10], nodeName: node-b, conditions: {ready: true}}\n---\n# The same pods",
        "  - {addresses: [10.244.1.10], nodeName: node-a, conditions: {ready: true}}\n---\n# The same pods",
        1,
    ) + late;
    assert_ne!(edited, MANIFEST.to_owned() + late, "the edit applies");
    std::fs::write(&c.manifest, &edited).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || c.status(0).generation > before),
        "no new snapshot:\n{}",
        c.log(0)
    );
    let services: Vec<ServiceView> = admin::get_json(&c.admin(0), "/api/services").unwrap();
    let web = services
        .iter()
        .find(|s| s.name == "default/web:http")
        .unwrap();
    assert_eq!(web.backends.len(), 1, "{web:?}");
    assert_eq!(c.status(0).local_pods, 3);
    assert_eq!(
        c.status(0).interfaces.len(),
        3,
        "the late pod has no veth yet"
    );

    // The CNI plugin creates the veth: the agent serves it within a tick or two.
    let pod = c
        .add_pod_veth(
            0,
            "late",
            Ipv4Addr::new(10, 244, 1, 12),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("the late veth: {e}"));
    assert_eq!(c.status(0).interfaces.len(), 4);
    let replies =
        c.tb.ping(
            &pod.ns,
            Ipv4Addr::new(10, 244, 2, 11),
            3,
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(replies >= 2, "late pod to client-b: {replies}/3");

    // A bad edit: the last good tables stay, the error names the object and field.
    let generation = c.status(0).generation;
    std::fs::write(
        &c.manifest,
        edited.replace("port: 5201, targetPort", "port: lots, targetPort"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || c
            .status(0)
            .last_error
            .is_some_and(
                |e| e.contains("Service default/iperf") && e.contains("spec.ports[0].port")
            )),
        "{:?}",
        c.status(0)
    );
    assert_eq!(c.status(0).generation, generation);
    assert_eq!(admin::get(&c.admin(0), "/healthz").unwrap().0, 200);
    assert!(
        c.tb.ping(
            &pod.ns,
            Ipv4Addr::new(10, 244, 1, 11),
            2,
            Duration::from_secs(4)
        )
        .unwrap()
            >= 1
    );
    // The bad edit is one error: counted once and logged once, however many ticks pass.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.status(0).source_errors, 1, "{:?}", c.status(0));
    let (_, m) = admin::get(&c.admin(0), "/metrics").unwrap();
    assert_eq!(metric(&m, "kxdp_source_errors_total "), 1.0);
    let logged = |c: &AgentCluster| c.log(0).matches("keeping the last good model").count();
    assert_eq!(logged(&c), 1, "{}", c.log(0));

    // The next good load clears the error; the count stays.
    std::fs::write(&c.manifest, &edited).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || c.status(0).last_error.is_none()),
        "the error stayed after a good load: {:?}",
        c.status(0)
    );
    assert_eq!(c.status(0).source_errors, 1);
    assert_eq!(logged(&c), 1);
    assert!(c.log(0).contains("error cleared"), "{}", c.log(0));
}

#[test]
fn sigterm_leaves_the_programs_dropping_uninstall_removes_them_a_bad_manifest_stops_the_start() {
    if skip_unless_privileged(
        "sigterm_leaves_the_programs_dropping_uninstall_removes_them_a_bad_manifest_stops_the_start",
    ) {
        return;
    }
    let mut c = cluster();
    let node_ns = c.tb.nodes[0].ns.clone();
    let xdp_links = |ns: &str| {
        let out = testbed::ip(Some(ns), &["link", "show"]).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).matches("xdp").count()
    };
    assert!(
        xdp_links(&node_ns) >= 3,
        "uplink and two pods carry the program"
    );
    assert_eq!(c.stop(0), Ok(true), "{}", c.log(0));
    // Left for the next agent: the pods' traffic is dropped meanwhile, never answered by the
    // node's kernel.
    assert!(xdp_links(&node_ns) >= 3, "left on SIGTERM");
    assert!(
        c.log(0).contains("XDP programs left in place"),
        "{}",
        c.log(0)
    );
    let state_dir = c.state_dir(0).display().to_string();
    let out = c.kxdp_on(
        0,
        &[
            "uninstall",
            "--admin",
            &c.admin(0).to_string(),
            "--state-dir",
            &state_dir,
            "--subnet-file",
            &c.subnet_file(0).display().to_string(),
            "--force",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("XDP program: detached from"), "{said}");
    assert_eq!(xdp_links(&node_ns), 0, "detached by kxdp uninstall: {said}");
    assert!(!c.state_dir(0).exists(), "{said}");

    // Restarting with a broken manifest fails before anything is attached, naming the field.
    let bad = c.dir().join("bad.yaml");
    std::fs::write(
        &bad,
        MANIFEST.replace("podCIDR: 10.244.1.0/24", "podCIDR: 10.244.1.0/33"),
    )
    .unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &node_ns])
        .arg(kxdp_tests::cluster::kxdp_bin().unwrap())
        .args([
            "agent",
            "--node",
            "node-a",
            "--uplink",
            "uplink",
            "--max-run",
            "10",
            "--state-dir",
            "none",
        ])
        .arg("--manifest")
        .arg(&bad)
        .arg("--admin")
        .arg(format!("unix:{}", c.dir().join("again.sock").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Node node-a") && err.contains("spec.podCIDR"),
        "{err}"
    );
    assert_eq!(xdp_links(&node_ns), 0);
}

#[test]
fn an_agent_watches_the_kubernetes_api_and_publishes_its_node() {
    if skip_unless_privileged("an_agent_watches_the_kubernetes_api_and_publishes_its_node") {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    // The API server stand-in listens inside node-a's namespace, where the agent runs.
    let server = kxdp_tests::apiserver::FakeApiServer::start_in_netns(&c.tb.nodes[0].ns);
    let mut slices = Vec::new();
    let mut node_a = None;
    for doc in serde_yaml::Deserializer::from_str(MANIFEST) {
        let object: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if object["kind"] == "EndpointSlice" {
            slices.push(object.clone());
        }
        if object["kind"] == "Node" && object["metadata"]["name"] == "node-a" {
            node_a = Some(object);
        } else {
            server.apply(object);
        }
    }
    let kubeconfig = c.dir().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: k\n\
             clusters: [{{name: c, cluster: {{server: \"{}\"}}}}]\n\
             contexts: [{{name: k, context: {{cluster: c, user: u}}}}]\n\
             users: [{{name: u, user: {{}}}}]\n",
            server.url()
        ),
    )
    .unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    c.start_node(0, 120, &["--kubeconfig", &kubeconfig])
        .unwrap();
    let manifest = c.manifest.display().to_string();
    c.start_node(1, 120, &["--manifest", &manifest]).unwrap();
    // Without its Node object the agent has synced but cannot build tables: not ready, and
    // it says why.
    let why = "node node-a: no Node object with an IPv4 spec.podCIDR yet";
    assert!(
        eventually(Duration::from_secs(20), || {
            admin::get(&c.admin(0), "/readyz")
                .is_ok_and(|(code, body)| code == 503 && body.contains(why))
        }),
        "{}",
        c.log(0)
    );
    server.apply(node_a.unwrap());
    c.wait_ready(0, Duration::from_secs(30)).unwrap();
    c.wait_ready(1, Duration::from_secs(30)).unwrap();

    let status: StatusView = json(&c, 0, &["status"]);
    assert_eq!(
        (status.source.as_str(), status.synced),
        ("kubernetes", true)
    );
    assert_eq!((status.services, status.local_pods), (4, 2));
    // Published on the loop's next tick (every 500 ms) once the tables are live, which can
    // come just after ready.
    assert!(
        eventually(Duration::from_secs(5), || server
            .requests()
            .iter()
            .any(|r| r.starts_with("PATCH /api/v1/nodes/node-a"))),
        "the flannel annotations were published: {:?}",
        server.requests()
    );
    let ns = |name: &str| c.pod(name).ns.clone();
    let _a = HttpServer::start(&ns("web-a"), 8080, "web-a", 60);
    let _b = HttpServer::start(&ns("web-b"), 8080, "web-b", 60);
    let answers = http_get_many(&ns("client-a"), "http://10.96.0.10/", 10);
    assert!(
        answers.iter().all(|(b, _)| b == "web-a" || b == "web-b"),
        "{answers:?}"
    );

    // web-a leaves the ClusterIP's slice through the API: only web-b answers after that.
    let mut web = slices
        .into_iter()
        .find(|s| s["metadata"]["name"] == "web-1")
        .unwrap();
    web["endpoints"].as_array_mut().unwrap().remove(0);
    let generation = status.generation;
    server.apply(web);
    assert!(
        eventually(Duration::from_secs(10), || {
            c.try_status(0).is_ok_and(|s| s.generation > generation)
        }),
        "{}",
        c.log(0)
    );
    let answers = http_get_many(&ns("client-a"), "http://10.96.0.10/", 10);
    assert!(answers.iter().all(|(b, _)| b == "web-b"), "{answers:?}");
}

#[test]
fn the_host_interface_joins_the_node_to_its_pods_and_services() {
    if skip_unless_privileged("the_host_interface_joins_the_node_to_its_pods_and_services") {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    // Node A's own stack behind the veth pair its agent makes, with the kernel's routes to
    // the pods and services through it.
    let node_ns = c.tb.nodes[0].ns.clone();
    let manifest = c.manifest.display().to_string();
    c.start_node(
        0,
        120,
        &["--manifest", &manifest, "--host-interface", "host0"],
    )
    .unwrap();
    c.start_node(1, 120, &["--manifest", &manifest]).unwrap();
    for node in 0..2 {
        c.wait_ready(node, Duration::from_secs(30)).unwrap();
    }
    let (web_a, web_b, client) = (
        c.pod("web-a").ns.clone(),
        c.pod("web-b").ns.clone(),
        c.pod("client-a").ns.clone(),
    );
    let _a = HttpServer::start(&web_a, 8080, "web-a", 60);
    let _b = HttpServer::start(&web_b, 8080, "web-b", 60);
    let _node = kxdp_tests::clients::TcpServer::start(&node_ns, 7000, "node-a");
    std::thread::sleep(Duration::from_millis(500));

    // A pod reaches a server on its node's own address, which sees the pod's address.
    let from_pod = kxdp_tests::clients::connect_many(&client, "198.18.0.10", 7000, 3);
    assert_eq!(from_pod, vec!["node-a 10.244.1.11"; 3], "{}", c.log(0));
    // The node reaches a pod of its own, a pod on the other node, and a ClusterIP whose
    // backends are on both nodes.
    for (url, want) in [
        ("http://10.244.1.10:8080/", &["web-a"][..]),
        ("http://10.244.2.10:8080/", &["web-b"][..]),
        ("http://10.96.0.10/", &["web-a", "web-b"][..]),
    ] {
        let answers = http_get_many(&node_ns, url, 8);
        assert_eq!(answers.len(), 8, "{url}: {answers:?}");
        assert!(
            answers.iter().all(|(b, _)| want.contains(&b.as_str())),
            "{url}: {answers:?}"
        );
    }

    // The status names the host interface, and frames went through it both ways.
    let status: StatusView = json(&c, 0, &["status"]);
    assert!(
        status
            .interfaces
            .iter()
            .any(|i| i.name == "host0" && i.role == "host"),
        "{status:?}"
    );
    let (_, m) = admin::get(&c.admin(0), "/metrics").unwrap();
    assert!(
        metric(&m, "kxdp_to_host_total{reason=\"for_node\"}") >= 3.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "kxdp_interface_rx_frames_total{interface=\"host0\",worker=\"0\"}"
        ) > 0.0
    );
    // Without the flag, the same node keeps pods off its own addresses.
    c.stop(0).unwrap();
    c.start_node(0, 120, &["--manifest", &manifest]).unwrap();
    c.wait_ready(0, Duration::from_secs(30)).unwrap();
    let refused = kxdp_tests::clients::connect_many(&client, "198.18.0.10", 7000, 1);
    assert!(
        !refused.iter().any(|a| a.starts_with("node-a")),
        "{refused:?}"
    );
}

#[test]
fn big_datagrams_cross_between_pods_in_fragments() {
    if skip_unless_privileged("big_datagrams_cross_between_pods_in_fragments") {
        return;
    }
    let c = cluster();
    let ns = |name: &str| c.pod(name).ns.clone();
    // The pods' MTU as flannel's CNI sets it (the uplink's less VXLAN's 50 bytes), so their
    // kernels fragment what is bigger and every fragment fits the tunnel.
    for pod in ["client-a", "web-a", "web-b"] {
        testbed::ip(Some(&ns(pod)), &["link", "set", "eth0", "mtu", "1450"])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // 3000-byte echoes: three fragments each way, on one node and across nodes.
    for (to, ip) in [("web-a", "10.244.1.10"), ("web-b", "10.244.2.10")] {
        let replies =
            c.tb.ping_bytes(
                &ns("client-a"),
                ip.parse().unwrap(),
                3,
                3000,
                Duration::from_secs(8),
            )
            .unwrap();
        assert_eq!(replies, 3, "big pings to {to}: {}", c.log(0));
    }
    // UDP datagrams of 4000 bytes to a pod on the other node and back (web-b serves no UDP
    // service, so its fragments need no translation).
    let _echo = kxdp_tests::clients::UdpEchoServer::start(&ns("web-b"), 7007);
    let back = kxdp_tests::clients::udp_echo_many(&ns("client-a"), "10.244.2.10", 7007, 4000, 5);
    assert_eq!(back, 5, "{}", c.log(0));
    let (_, m) = admin::get(&c.admin(0), "/metrics").unwrap();
    assert_eq!(
        metric(&m, "kxdp_drops_total{reason=\"ipv4_fragment\"} "),
        0.0
    );
}

#[test]
fn a_ttl_running_out_at_the_node_answers_time_exceeded_from_the_gateway() {
    if skip_unless_privileged(
        "a_ttl_running_out_at_the_node_answers_time_exceeded_from_the_gateway",
    ) {
        return;
    }
    let c = cluster();
    // What traceroute's first probe sees: the pod's node answers, from its gateway address
    // (a flannel node's cni0 address), for a pod across nodes and one on the same node. (The
    // pipeline tests cover a ClusterIP, which answers no ping, as kube-proxy's do not.)
    let client = c.pod("client-a").ns.clone();
    let ping = |args: &[&str]| {
        Command::new("timeout")
            .args([
                "10", "ip", "netns", "exec", &client, "ping", "-n", "-c", "1", "-W", "2",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    for to in ["10.244.2.10", "10.244.1.10"] {
        // The path first carries an ordinary ping (the pod's gateway resolved, the far side
        // ready), so a slow first frame on a loaded machine is not read as a missing answer.
        assert!(
            eventually(Duration::from_secs(10), || ping(&[to]).status.success()),
            "ping {to}"
        );
        let out = ping(&["-t", "1", to]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("From 10.244.1.1") && text.contains("Time to live exceeded"),
            "ping -t 1 {to}: {text}"
        );
    }
    let (_, m) = admin::get(&c.admin(0), "/metrics").unwrap();
    assert_eq!(
        metric(&m, "kxdp_events_total{event=\"icmp_time_exceeded\"} "),
        2.0
    );
}

#[test]
fn the_demos_checks_pass_on_pods_the_cni_plugin_attached() {
    if skip_unless_privileged("the_demos_checks_pass_on_pods_the_cni_plugin_attached") {
        return;
    }
    // `make demo`'s scenario: pods attached by kxdp-cni (built beside this test:
    // cargo build -p kxdp-cni), node-a's and node-b's stacks joined through the host0 pair
    // each agent makes.
    let mut c = AgentCluster::build(MANIFEST, &[]).expect("the cluster builds");
    c.start(120, &["--host-interface", "host0"])
        .expect("the agents start");
    c.attach_demo_pods_by_plugin(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("the demo's pods through the plugin: {e}"));
    // The plugin's addresses (round robin from .2), not the manifest's .10 and .11.
    let ips: Vec<(String, Ipv4Addr)> = c.pods.iter().map(|p| (p.name.clone(), p.ip)).collect();
    assert_eq!(
        ips,
        [
            ("web-a".into(), Ipv4Addr::new(10, 244, 1, 2)),
            ("client-a".into(), Ipv4Addr::new(10, 244, 1, 3)),
            ("web-b".into(), Ipv4Addr::new(10, 244, 2, 2)),
            ("client-b".into(), Ipv4Addr::new(10, 244, 2, 3)),
        ]
    );
    let rows = kxdp_tests::demo::checks(&c, |_| {}).expect("the checks run");
    assert_eq!(rows.len(), kxdp_tests::demo::STEPS);
    let failed: Vec<_> = rows.iter().filter(|r| !r.ok).collect();
    assert!(failed.is_empty(), "{failed:#?}");

    // DEL of every pod: no address held, no pod veth left on either node.
    c.detach_pods_by_plugin().expect("DEL");
    for node in 0..2 {
        assert_eq!(c.plugin_allocations(node), Vec::<Ipv4Addr>::new());
        let links = testbed::ip(Some(&c.tb.nodes[node].ns), &["-o", "link", "show"]).unwrap();
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        for (pod, _, _) in kxdp_tests::cluster::DEMO_PODS {
            let veth = kxdp_control::compile::pod_interface_name("default", pod);
            assert!(
                !links.contains(&format!(": {veth}@")),
                "{pod}'s veth {veth} left on node {node}: {links}"
            );
        }
    }
}

/// A LoadBalancer service with the Local policy, its one endpoint (web-a) on node-a; its slice
/// carries a trigger time.
const LOCAL_LB: &str = "---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.60
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
addressType: IPv4
metadata:
  name: web-lb-1
  namespace: default
  labels: {kubernetes.io/service-name: web-lb}
  annotations: {endpoints.kubernetes.io/last-change-trigger-time: \"2026-01-01T00:00:00Z\"}
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints:
- {addresses: [10.244.1.10], nodeName: node-a, conditions: {ready: true}}
";

/// `GET /` on `ip:port` from namespace `ns`, as a load balancer's health checker asks: the
/// status, the `X-Load-Balancing-Endpoint-Weight` header and the body; `None` when nothing
/// answers.
fn health_check(ns: &str, ip: Ipv4Addr, port: u16) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    kxdp_tests::cluster::in_netns(ns, || {
        let addr = std::net::SocketAddr::from((ip, port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let weight = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-load-balancing-endpoint-weight")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        Some((status, weight, body.to_owned()))
    })
    .unwrap()
}

#[test]
fn a_local_load_balancers_health_check_port_follows_its_local_endpoint() {
    if skip_unless_privileged("a_local_load_balancers_health_check_port_follows_its_local_endpoint")
    {
        return;
    }
    let manifest = MANIFEST.to_owned() + LOCAL_LB;
    let mut c = AgentCluster::build(&manifest, &PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let (ext, _) = c.tb.external.clone().expect("an external client");
    let (node_a, node_b) = (c.tb.nodes[0].ip, c.tb.nodes[1].ip);

    // From outside, as a cloud load balancer asks: node-a has the endpoint, node-b none.
    let (status, weight, body) = health_check(&ext, node_a, 32100)
        .unwrap_or_else(|| panic!("node-a does not answer on 32100:\n{}", c.log(0)));
    assert_eq!((status, weight.as_str()), (200, "1"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["service"]["namespace"], "default");
    assert_eq!(v["service"]["name"], "web-lb");
    assert_eq!(v["localEndpoints"], 1);
    assert_eq!(v["serviceProxyHealthy"], true);
    let (status, weight, _) = health_check(&ext, node_b, 32100)
        .unwrap_or_else(|| panic!("node-b does not answer on 32100:\n{}", c.log(1)));
    assert_eq!((status, weight.as_str()), (503, "0"));

    // The one slice with a trigger time was measured once; the demo's slices have none.
    let programmed = |c: &AgentCluster| {
        let (_, m) = admin::get(&c.admin(0), "/metrics").unwrap();
        metric(&m, "kxdp_network_programming_duration_seconds_count ")
    };
    assert_eq!(programmed(&c), 1.0);

    // The endpoint stops being ready: node-a fails its check within a moment.
    let not_ready = MANIFEST.to_owned() + &LOCAL_LB.replace("ready: true", "ready: false");
    std::fs::write(&c.manifest, &not_ready).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || health_check(
            &ext, node_a, 32100
        )
        .is_some_and(|(status, weight, _)| status == 503 && weight == "0")),
        "node-a still passes its check: {:?}\n{}",
        health_check(&ext, node_a, 32100),
        c.log(0)
    );
    // The same trigger time again: no second observation.
    assert_eq!(programmed(&c), 1.0);

    // The service goes: so does its port.
    std::fs::write(&c.manifest, MANIFEST).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || health_check(
            &ext, node_a, 32100
        )
        .is_none()),
        "32100 still answers:\n{}",
        c.log(0)
    );
    assert!(
        c.log(0).contains("health check port closed"),
        "{}",
        c.log(0)
    );
}
