//! The demo's checks (`make demo`, and the agent tests that run its scenario): real traffic on
//! the demo cluster ([`crate::cluster`], [`DEMO_MANIFEST`](crate::cluster::DEMO_MANIFEST)):
//! ping, HTTP and iperf3 across nodes and through services, an external client to a NodePort,
//! node-a's own stack to a ClusterIP (its host interface), a pod to its node's address, a
//! service without endpoints, and last a NetworkPolicy added live (the client it admits gets
//! through, the other is dropped). Pods are found by name, so their addresses may be the test
//! bed's or the CNI plugin's. Every traffic run is bounded in count and time.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::clients::{http_get_many, iperf_rate, HttpServer, IperfServer};
use crate::cluster::AgentCluster;
use crate::testbed::Testbed;

/// One line of the results table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What is checked.
    pub check: String,
    /// From where to where.
    pub path: String,
    /// What happened.
    pub result: String,
    /// Whether it passed.
    pub ok: bool,
}

/// How many checks the demo runs, for its progress lines.
pub const STEPS: usize = 15;

/// Run every check on the started cluster `c` (agents ready, pods served, node-a's host
/// interface joined), calling `progress` with each one's title before it runs.
pub fn checks(c: &AgentCluster, mut progress: impl FnMut(&str)) -> Result<Vec<Row>, String> {
    let ns = |name: &str| c.pod(name).ns.clone();
    let web_b = c.pod("web-b").ip.to_string();
    let ext = c.tb.external.clone().ok_or("no external client")?.0;
    let _web_a = HttpServer::start(&ns("web-a"), 8080, "web-a", 240);
    let _web_b = HttpServer::start(&ns("web-b"), 8080, "web-b", 240);
    let node_b = c.tb.nodes[1].ns.clone();
    let _on_node_b = HttpServer::start(&node_b, 8081, "node-b", 240);

    let mut rows = Vec::new();

    progress("ping, pod to pod on node-a");
    rows.push(ping(
        &c.tb,
        &ns("client-a"),
        "client-a -> web-a (same node)",
        c.pod("web-a").ip,
    ));
    progress("ping, pod to pod across nodes (VXLAN)");
    rows.push(ping(
        &c.tb,
        &ns("client-a"),
        "client-a -> web-b (node-b)",
        c.pod("web-b").ip,
    ));
    progress("ping, across nodes the other way");
    rows.push(ping(
        &c.tb,
        &ns("client-b"),
        "client-b -> web-a (node-a)",
        c.pod("web-a").ip,
    ));

    progress("HTTP to the ClusterIP from node-a");
    rows.push(http(
        &ns("client-a"),
        "HTTP ClusterIP",
        "client-a -> web 10.96.0.10:80",
        "http://10.96.0.10/",
        true,
    ));
    progress("HTTP to the ClusterIP from node-b");
    rows.push(http(
        &ns("client-b"),
        "HTTP ClusterIP",
        "client-b -> web 10.96.0.10:80",
        "http://10.96.0.10/",
        true,
    ));
    progress("HTTP from outside to the NodePort on node-a");
    rows.push(http(
        &ext,
        "HTTP NodePort",
        "external -> 198.18.0.10:30080",
        "http://198.18.0.10:30080/",
        true,
    ));
    progress("HTTP from outside to the NodePort on node-b");
    rows.push(http(
        &ext,
        "HTTP NodePort",
        "external -> 198.18.0.11:30080",
        "http://198.18.0.11:30080/",
        true,
    ));
    progress("HTTP from node-a's own stack to the ClusterIP (host interface)");
    rows.push(http(
        &c.tb.nodes[0].ns,
        "HTTP node to ClusterIP",
        "node-a -> web 10.96.0.10:80",
        "http://10.96.0.10/",
        true,
    ));
    progress("HTTP from a pod to a server on its node's address");
    rows.push(http(
        &ns("client-b"),
        "HTTP pod to node",
        "client-b -> node-b 198.18.0.11:8081",
        "http://198.18.0.11:8081/",
        true,
    ));
    progress("HTTP to a service without endpoints (should be refused)");
    rows.push(http(
        &ns("client-a"),
        "HTTP no endpoints",
        "client-a -> empty 10.96.0.30:80",
        "http://10.96.0.30/",
        false,
    ));

    progress("iperf3 TCP, pod to pod across nodes, 3 s");
    let server = IperfServer::start(&ns("web-b"), 5201);
    std::thread::sleep(Duration::from_millis(300));
    rows.push(iperf(
        &ns("client-a"),
        "iperf3 TCP",
        &format!("client-a -> web-b {web_b}"),
        &web_b,
        5201,
        false,
    ));
    drop(server);
    progress("iperf3 TCP through the iperf ClusterIP, 3 s");
    let server = IperfServer::start(&ns("web-b"), 5201);
    std::thread::sleep(Duration::from_millis(300));
    rows.push(iperf(
        &ns("client-a"),
        "iperf3 TCP ClusterIP",
        "client-a -> iperf 10.96.0.20:5201",
        "10.96.0.20",
        5201,
        false,
    ));
    drop(server);
    progress("iperf3 UDP, pod to pod across nodes, 3 s at 200 Mbit/s offered");
    // A port of its own: the last server's port may not be free again yet.
    let server = IperfServer::start(&ns("web-b"), 5203);
    std::thread::sleep(Duration::from_millis(300));
    rows.push(iperf(
        &ns("client-a"),
        "iperf3 UDP",
        &format!("client-a -> web-b {web_b}"),
        &web_b,
        5203,
        true,
    ));
    drop(server);

    // Last, as it closes web-a and web-b to everyone but client-b.
    progress("NetworkPolicy added live: web takes port 8080 from client-b only");
    let web_a = format!("http://{}:8080/", c.pod("web-a").ip);
    add_policy(c, &web_from(c.pod("client-b").ip))?;
    rows.push(http(
        &ns("client-b"),
        "NetworkPolicy allows",
        "client-b -> web-a :8080 (node-b)",
        &web_a,
        true,
    ));
    progress("NetworkPolicy: client-a is not admitted (should time out)");
    rows.push(denied(
        &ns("client-a"),
        "NetworkPolicy denies",
        "client-a -> web-a :8080 (node-a)",
        &web_a,
    ));

    Ok(rows)
}

/// A NetworkPolicy selecting the `app: web` pods: TCP 8080 from `client` only.
fn web_from(client: Ipv4Addr) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: web-from-client-b, namespace: default}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n\
         \x20   - from: [{{ipBlock: {{cidr: {client}/32}}}}]\n      ports: [{{port: 8080}}]\n"
    )
}

/// Append `policy` to the manifest both agents read, and wait (10 s at most) until both
/// have published a snapshot with it.
fn add_policy(c: &AgentCluster, policy: &str) -> Result<(), String> {
    let generation = |n| c.try_status(n).map(|s| s.generation);
    let before = [generation(0)?, generation(1)?];
    let manifest = std::fs::read_to_string(&c.manifest).map_err(|e| e.to_string())?;
    std::fs::write(&c.manifest, manifest + policy).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (0..2).any(|n| generation(n).map_or(true, |g| g <= before[n])) {
        if std::time::Instant::now() > deadline {
            return Err("the agents did not load the NetworkPolicy within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Three GETs that a NetworkPolicy drops: each must time out (a refusal would mean something
/// answered).
fn denied(from: &str, check: &str, path: &str, url: &str) -> Row {
    let answers = http_get_many(from, url, 3);
    let dropped = answers
        .iter()
        .filter(|(b, _)| b.starts_with("ERR") && b != "ERR refused")
        .count();
    Row {
        check: check.into(),
        path: path.into(),
        result: format!("{dropped}/{} requests dropped (timed out)", answers.len()),
        ok: answers.len() == 3 && dropped == 3,
    }
}

fn ping(tb: &Testbed, from: &str, path: &str, to: Ipv4Addr) -> Row {
    let got = tb.ping(from, to, 5, Duration::from_secs(6)).unwrap_or(0);
    Row {
        check: "ping".into(),
        path: path.into(),
        result: format!("{got}/5 replies"),
        ok: got >= 4,
    }
}

fn http(from: &str, check: &str, path: &str, url: &str, expect_ok: bool) -> Row {
    let answers = http_get_many(from, url, 20);
    let mut by_body: std::collections::BTreeMap<&str, u32> = Default::default();
    for (body, _) in &answers {
        *by_body.entry(body.as_str()).or_default() += 1;
    }
    let mut ms: Vec<f64> = answers.iter().map(|(_, ms)| *ms).collect();
    ms.sort_by(f64::total_cmp);
    let p50 = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
    let spread: Vec<String> = by_body.iter().map(|(b, n)| format!("{b} {n}")).collect();
    let ok = if expect_ok {
        answers.len() == 20 && answers.iter().all(|(b, _)| !b.starts_with("ERR"))
    } else {
        answers.len() == 20 && answers.iter().all(|(b, _)| b == "ERR refused")
    };
    Row {
        check: check.into(),
        path: path.into(),
        result: format!(
            "{} requests: {}; p50 {p50:.1} ms",
            answers.len(),
            spread.join(", ")
        ),
        ok,
    }
}

fn iperf(from: &str, check: &str, path: &str, server: &str, port: u16, udp: bool) -> Row {
    let bps = iperf_rate(from, server, port, udp.then_some("200M"), 3);
    Row {
        check: check.into(),
        path: path.into(),
        result: format!("{:.2} Gbit/s received", bps / 1e9),
        ok: bps > 0.0,
    }
}
