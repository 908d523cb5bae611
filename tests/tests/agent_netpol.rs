//! NetworkPolicy end to end: two agent processes on a two-node namespace cluster, real HTTP
//! clients in pod namespaces, a policy added by rewriting the manifest: the client it admits
//! gets through (across nodes, over VXLAN, directly and through a ClusterIP), the other does
//! not, the denials are counted in `/metrics`, and `kxdp trace` names the policy; and a live
//! connection stops within a second of a policy change that no longer admits it.

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
