//! `make demo`: kxdp's main job on the embedded demo cluster (`control/manifests/demo.yaml`).
//!
//! Builds two kxdp nodes in network namespaces on this machine, starts a `kxdp agent` on each,
//! attaches four pods through the `kxdp-cni` binary as a container runtime does (`ADD` in the
//! node's namespace with the subnet file its agent wrote; the pods' addresses are the plugin's
//! and are written into the agents' manifest), drives real traffic ([`kxdp_tests::demo`]'s
//! checks: ping, HTTP and iperf3 across nodes and through services, an external client to a
//! NodePort, a service without endpoints), prints the results as a table, shows what
//! `kxdp services`, `kxdp counters` and `kxdp status` say, and tears everything down, the pods
//! by the plugin's `DEL`. Every traffic run is bounded in count and time, and the agents stop
//! by themselves after five minutes whatever happens. Needs root (namespaces, XDP) and the
//! `kxdp` and `kxdp-cni` binaries beside the demo's (`make demo` builds them).

// Printing is the demo's point.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use kxdp_tests::cluster::{AgentCluster, DEMO_MANIFEST as MANIFEST, NODES};
use kxdp_tests::demo::STEPS;
use kxdp_tests::testbed::{missing_privilege, Testbed};

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
    println!("[setup] building namespaces: underlay switch, node-a, node-b, external client");
    let mut c = AgentCluster::build(MANIFEST, &[])?;
    let prefix = c.tb.prefix().to_owned();
    println!("[setup] starting `kxdp agent` on node-a and node-b (manifest source, debug API on Unix sockets, metrics on 127.0.0.1:9901 in each node); each joins its node's own stack with the host veth pair host0/kxdp0 it makes, routing the pod and service CIDRs to it");
    c.start(300, &["--host-interface", "host0"])?;
    println!(
        "[setup] both agents ready after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    println!("[setup] attaching 4 pods with kxdp-cni ADD in their node's namespace, their addresses into the manifest");
    c.attach_demo_pods_by_plugin(Duration::from_secs(20))?;
    for p in &c.pods {
        println!("[setup]   {} on {}: {}", p.name, NODES[p.node], p.ip);
    }
    println!(
        "[setup] pods served after {:.1} s\n",
        t0.elapsed().as_secs_f64()
    );
    let mut step = 0;
    let rows = kxdp_tests::demo::checks(&c, |title| {
        step += 1;
        println!("[{step:>2}/{STEPS}] {title} ...");
    })?;
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
            "kxdp policies --pod default/web-a (node-a)",
            vec!["policies", "--pod", "default/web-a"],
        ),
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

    println!("\n[teardown] kxdp-cni DEL of every pod, in its node's namespace");
    let detached = match c.detach_pods_by_plugin() {
        Ok(()) => {
            let left: Vec<_> = (0..2).flat_map(|n| c.plugin_allocations(n)).collect();
            if !left.is_empty() {
                println!("[teardown] the plugin still holds {left:?}");
            }
            left.is_empty()
        }
        Err(e) => {
            println!("[teardown] DEL failed: {e}");
            false
        }
    };
    println!(
        "[teardown] SIGTERM to both agents (their XDP programs stay, dropping, for a successor), then the namespaces (and the programs with them)"
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
    Ok(all_ok && healthy && detached && clean && left.is_empty())
}
