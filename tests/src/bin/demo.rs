//! `make demo`: kxdp's main job on the embedded demo cluster (`control/manifests/demo.yaml`).
//!
//! Builds two kxdp nodes with four pods in network namespaces on this machine, starts a
//! `kxdp agent` on each, drives real traffic (ping, HTTP and iperf3 across nodes and through
//! services, an external client to a NodePort, a service without endpoints), prints the
//! results as a table, shows what `kxdp services`, `kxdp counters` and `kxdp status` say, and
//! tears everything down. Every traffic run is bounded in count and time, and the agents stop
//! by themselves after five minutes whatever happens. Needs root (namespaces, XDP).

// Printing is the demo's point.
#![allow(clippy::print_stdout)]

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kxdp_tests::clients::{http_get_many, iperf_rate, HttpServer, IperfServer};
use kxdp_tests::cluster::{AgentCluster, NODES};
use kxdp_tests::testbed::{missing_privilege, Testbed};

use kxdp_tests::cluster::{DEMO_MANIFEST as MANIFEST, DEMO_PODS as PODS};

/// One line of the results table.
struct Row {
    check: String,
    path: String,
    result: String,
    ok: bool,
}

/// How many checks the demo runs, for its progress lines.
const STEPS: usize = 13;

fn main() -> ExitCode {
    if let Some(why) = missing_privilege() {
        eprintln!("kxdp demo: {why}");
        return ExitCode::FAILURE;
    }
    Testbed::remove_namespaces_on_panic();
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("\nSome checks failed (see the table above).");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kxdp demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, String> {
    let t0 = Instant::now();
    println!("kxdp demo: two kxdp nodes, four pods, services from control/manifests/demo.yaml\n");
    println!(
        "[setup] building namespaces: underlay switch, node-a, node-b, 4 pods, external client"
    );
    let mut c = AgentCluster::build(MANIFEST, &PODS)?;
    let prefix = c.tb.prefix().to_owned();
    println!(
        "[setup] joining each node's own stack to kxdp: host veth pair, pod and service routes"
    );
    for node in 0..2 {
        c.add_host_interface(node)?;
    }
    println!("[setup] starting `kxdp agent` on node-a and node-b (manifest source, debug API on Unix sockets, metrics on 127.0.0.1:9901 in each node)");
    c.start(300, &["--host-interface", "host0"])?;
    println!(
        "[setup] both agents ready after {:.1} s\n",
        t0.elapsed().as_secs_f64()
    );
    let ns = |name: &str| c.pod(name).ns.clone();
    let ext = c.tb.external.clone().ok_or("no external client")?.0;
    let _web_a = HttpServer::start(&ns("web-a"), 8080, "web-a", 240);
    let _web_b = HttpServer::start(&ns("web-b"), 8080, "web-b", 240);
    let node_b = c.tb.nodes[1].ns.clone();
    let _on_node_b = HttpServer::start(&node_b, 8081, "node-b", 240);

    let mut rows = Vec::new();
    let mut step = 0;
    let mut progress = |title: &str| {
        step += 1;
        println!("[{step:>2}/{STEPS}] {title} ...");
    };

    progress("ping, pod to pod on node-a");
    rows.push(ping(
        &c.tb,
        &ns("client-a"),
        "client-a -> web-a (same node)",
        PODS[0].2,
    ));
    progress("ping, pod to pod across nodes (VXLAN)");
    rows.push(ping(
        &c.tb,
        &ns("client-a"),
        "client-a -> web-b (node-b)",
        PODS[2].2,
    ));
    progress("ping, across nodes the other way");
    rows.push(ping(
        &c.tb,
        &ns("client-b"),
        "client-b -> web-a (node-a)",
        PODS[0].2,
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
        "client-a -> web-b 10.244.2.10",
        "10.244.2.10",
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
        "client-a -> web-b 10.244.2.10",
        "10.244.2.10",
        5203,
        true,
    ));
    drop(server);

    println!("\nResults\n");
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                if r.ok { "ok" } else { "FAIL" }.to_owned(),
                r.check.clone(),
                r.path.clone(),
                r.result.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        kxdp_agent::cli::render::table(&["", "CHECK", "PATH", "RESULT"], &table)
    );
    let all_ok = rows.iter().all(|r| r.ok);

    let healthy = match c.metrics_get(0, "/healthz", Duration::from_secs(5)) {
        Ok((200, _)) => {
            println!("\n[check] node-a's metrics listener: /healthz ok");
            true
        }
        other => {
            println!("\n[check] node-a's metrics listener: /healthz FAIL {other:?}");
            false
        }
    };
    for (title, args) in [
        ("kxdp services (node-a)", vec!["services"]),
        ("kxdp counters (node-a)", vec!["counters"]),
        (
            "kxdp conntrack --limit 5 (node-a)",
            vec!["conntrack", "--limit", "5"],
        ),
        ("kxdp status (node-b)", vec!["status"]),
    ] {
        let node = usize::from(title.contains("node-b"));
        let admin = c.admin(node).to_string();
        let mut full = args.clone();
        full.extend(["--admin", &admin]);
        println!("\n$ kxdp {} --admin {}\n", args.join(" "), admin);
        let out = c.kxdp(&full);
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }

    println!(
        "\n[teardown] SIGTERM to both agents (they detach their XDP programs), then the namespaces"
    );
    let mut clean = true;
    for (node, name) in NODES.iter().enumerate() {
        match c.stop(node) {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                println!(
                    "[teardown] the agent of {name} did not exit cleanly:\n{}",
                    c.log(node)
                );
                clean = false;
            }
        }
    }
    drop(c);
    let left = Testbed::live_namespaces(&prefix);
    println!(
        "[teardown] done: {} namespaces left; {:.0} s in all",
        left.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(all_ok && healthy && clean && left.is_empty())
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
