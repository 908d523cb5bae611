//! NetworkPolicy end to end: two agent processes on a two-node namespace cluster, real HTTP
//! clients in pod namespaces, a policy added by rewriting the manifest: the client it admits
//! gets through (across nodes, over VXLAN, directly and through a ClusterIP), the other does
//! not, the denials are counted in `/metrics`, and `kxdp trace` names the policy; UDP is judged
//! as TCP is; an external client through a NodePort is judged on the address that reaches the
//! pod (its own with `externalTrafficPolicy: Local`, the node's when masqueraded); and a live
//! connection stops within a second of a policy change that no longer admits it.

use std::time::Duration;

use kxdp_tests::clients::{http_get_many, udp_echo_many, HttpServer, UdpEchoServer};
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

    // `kxdp policies` lists what selects web-a and what it allows, and leaves client-a open.
    let out = c.kxdp(&["policies", "--admin", &admin, "--pod", "default/web-a"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text,
        "default/web-a 10.244.1.10\n\
         \x20 ingress: selected by default/web-from-client-b\n\
         \x20   default/web-from-client-b: from 10.244.2.11 to tcp/8080\n\
         \x20 egress: open (no policy selects it)\n"
    );
    let out = c.kxdp(&["policies", "--admin", &admin, "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let client_a = all
        .iter()
        .find(|p| p["pod"] == "default/client-a")
        .expect("client-a is listed");
    assert!(
        client_a["ingress"].is_null() && client_a["egress"].is_null(),
        "{client_a}"
    );
}

/// The `app: web` pods take TCP 7000 from `cidr` only.
fn echo_policy(cidr: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: echo-in, namespace: default}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n\
         \x20   - from: [{{ipBlock: {{cidr: {cidr}}}}}]\n      ports: [{{port: 7000}}]\n"
    )
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_policy_change_cuts_a_live_connection_within_a_second() {
    if skip_unless_privileged("a_policy_change_cuts_a_live_connection_within_a_second") {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let ns = |c: &AgentCluster, name: &str| c.pod(name).ns.clone();
    let publish = |c: &AgentCluster, text: String| {
        let before = c.status(0).generation;
        std::fs::write(&c.manifest, text).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || c.status(0).generation > before),
            "no new snapshot:\n{}",
            c.log(0)
        );
    };
    // web-a takes the echo port from client-b: the connection is tracked under this policy.
    publish(&c, MANIFEST.to_owned() + &echo_policy("10.244.2.11/32"));
    let server = "import socket, threading, time\n\
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('0.0.0.0', 7000)); s.listen(4)\n\
        def serve(c):\n\
        \x20   while True:\n\
        \x20       d = c.recv(100)\n\
        \x20       if not d: return\n\
        \x20       c.sendall(d)\n\
        threading.Timer(30, lambda: __import__('os')._exit(0)).start()\n\
        while True:\n\
        \x20   c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()\n";
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &ns(&c, "web-a"), "python3", "-c", server])
        .spawn()
        .expect("python3 runs");
    std::thread::sleep(Duration::from_millis(500));
    // One connection from client-b (the other node), a line every 100 ms for 8 s, each
    // answer awaited at most 0.5 s: "<time> ok" or "<time> lost".
    let client = "import socket, time\n\
        s = socket.create_connection(('10.244.1.10', 7000), timeout=2)\n\
        s.settimeout(0.5)\n\
        end = time.time() + 8\n\
        while time.time() < end:\n\
        \x20   try:\n\
        \x20       s.sendall(b'x'); s.recv(100); print(time.time(), 'ok', flush=True)\n\
        \x20   except OSError:\n\
        \x20       print(time.time(), 'lost', flush=True)\n\
        \x20   time.sleep(0.1)\n";
    let client = std::process::Command::new("timeout")
        .args([
            "20",
            "ip",
            "netns",
            "exec",
            &ns(&c, "client-b"),
            "python3",
            "-c",
            client,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::thread::sleep(Duration::from_millis(2500));
    // Now only an address that is no pod may: the live connection must stop.
    publish(&c, MANIFEST.to_owned() + &echo_policy("10.244.2.99/32"));
    let changed = now_s();
    let out = client.wait_with_output().expect("the client ends");
    let _ = server.kill();
    let _ = server.wait();
    let lines: Vec<(f64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, what) = l.split_once(' ')?;
            Some((t.parse().ok()?, what.to_owned()))
        })
        .collect();
    let ok_before = lines
        .iter()
        .filter(|(t, w)| *t < changed && w == "ok")
        .count();
    let ok_after: Vec<_> = lines
        .iter()
        .filter(|(t, w)| *t > changed + 1.0 && w == "ok")
        .collect();
    let tried_after = lines.iter().filter(|(t, _)| *t > changed + 1.0).count();
    assert!(ok_before >= 10, "the connection worked first: {lines:?}");
    assert!(tried_after >= 3, "the client kept trying: {lines:?}");
    assert!(
        ok_after.is_empty(),
        "answers more than a second after the change: {ok_after:?}"
    );
    let (_, m) = c
        .metrics_get(0, "/metrics", Duration::from_secs(10))
        .unwrap();
    assert!(metric(&m, "kxdp_drops_total{reason=\"policy_denied_ingress\"} ") >= 1.0);
}

/// A NodePort with `externalTrafficPolicy: Local` to web-a (node-a), beside the demo's
/// `web-nodeport` (30080, Cluster: the client is masqueraded).
const LOCAL_NODEPORT: &str = "---
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.61
  externalTrafficPolicy: Local
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
addressType: IPv4
metadata:
  name: web-local-1
  namespace: default
  labels: {kubernetes.io/service-name: web-local}
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints:
- {addresses: [10.244.1.10], nodeName: node-a, conditions: {ready: true}}
";

/// The `app: web` pods take UDP 9000 from client-b, and TCP 8080 from the external client.
const UDP_AND_EXTERNAL_POLICY: &str = "---\napiVersion: networking.k8s.io/v1\n\
kind: NetworkPolicy\nmetadata: {name: web-udp-and-outside, namespace: default}\n\
spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n\
\x20   - from: [{ipBlock: {cidr: 10.244.2.11/32}}]\n      ports: [{protocol: UDP, port: 9000}]\n\
\x20   - from: [{ipBlock: {cidr: 198.18.0.100/32}}]\n      ports: [{port: 8080}]\n";

#[test]
fn udp_and_an_external_client_through_a_node_port_are_judged_too() {
    if skip_unless_privileged("udp_and_an_external_client_through_a_node_port_are_judged_too") {
        return;
    }
    let manifest = MANIFEST.to_owned() + LOCAL_NODEPORT + UDP_AND_EXTERNAL_POLICY;
    let mut c = AgentCluster::build(&manifest, &PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let ns = |c: &AgentCluster, name: &str| c.pod(name).ns.clone();
    let (ext, _) = c.tb.external.clone().expect("an external client");
    let node_a = c.tb.nodes[0].ip;
    let _a = HttpServer::start(&ns(&c, "web-a"), 8080, "web-a", 90);
    let _b = HttpServer::start(&ns(&c, "web-b"), 8080, "web-b", 90);
    let _echo = UdpEchoServer::start(&ns(&c, "web-a"), 9000);
    let _other = UdpEchoServer::start(&ns(&c, "web-a"), 9001);

    // UDP across nodes: client-b's datagrams are judged on web-a's node after decapsulation
    // and admitted; client-a's (web-a's own node) are dropped, and so is client-b on a port
    // the policy does not name.
    let echoed = |client: &str, port: u16, n: u32| {
        udp_echo_many(&ns(&c, client), "10.244.1.10", port, 100, n)
    };
    assert_eq!(echoed("client-b", 9000, 3), 3, "{}", c.log(0));
    assert_eq!(echoed("client-a", 9000, 2), 0);
    assert_eq!(echoed("client-b", 9001, 2), 0);

    // From outside through a NodePort: with externalTrafficPolicy Local web-a sees the
    // client's own address, which the policy admits; with Cluster it sees the node's
    // masquerade address instead, which it does not.
    let local = http_get_many(&ext, &format!("http://{node_a}:30081/"), 3);
    assert!(
        local.len() == 3 && local.iter().all(|(b, _)| b == "web-a"),
        "{local:?}\n{}",
        c.log(0)
    );
    let cluster = http_get_many(&ext, &format!("http://{node_a}:30080/"), 2);
    assert!(
        cluster.len() == 2 && cluster.iter().all(|(b, _)| b.starts_with("ERR")),
        "{cluster:?}"
    );

    // Every denial counted on the node that made it: node-a for the UDP and for the
    // masqueraded connections to web-a, node-b for those sent on to web-b.
    let denied = |n: usize| {
        let (_, m) = c
            .metrics_get(n, "/metrics", Duration::from_secs(10))
            .unwrap();
        metric(&m, "kxdp_drops_total{reason=\"policy_denied_ingress\"} ")
    };
    assert!(
        denied(0) + denied(1) >= 6.0,
        "{} + {}",
        denied(0),
        denied(1)
    );
    assert!(denied(0) >= 4.0, "the datagrams to web-a: {}", denied(0));
}
