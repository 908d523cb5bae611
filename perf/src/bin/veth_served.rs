//! How soon `kxdp agent` serves a pod's veth once the CNI plugin creates it: the agent runs on
//! node A of the agents' two-node cluster (`kxdp_tests::cluster`) with a manifest that already
//! lists `--runs` extra pods on node A, none with a veth yet; then, one pod at a time, the veth
//! is created as a CNI plugin does (the pair with its pod end in a fresh pod namespace, the pod
//! end configured and pinging a pod of the node, then the host end set up), and three
//! moments are taken:
//!
//! - **appeared** and **up**: the host end's `RTM_NEWLINK` notifications, as a netlink watcher
//!   in the node's namespace receives them (the same notifications the agent follows);
//! - **served**: the agent's `pod interface served` log line (XDP attached, every worker's
//!   socket bound, the snapshot published), by its timestamp;
//! - **first reply**: the first echo reply the new pod receives from the node's `client-a`
//!   through the dataplane (`ping -D`, one probe every 2 ms from before the host end is up; the
//!   pod's ARP retransmit time is 10 ms so a request lost before the veth was served is
//!   repeated as soon as a probe would be).
//!
//! It prints p50/p99/max of served and first reply, from appeared and from up. Needs root; the
//! namespaces are removed at the end (and on a panic). Agents are `KXDP_BIN` or the `kxdp`
//! beside this binary.
//!
//! `veth_served [--runs N]` (1 to 100, default 20)

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

use std::net::Ipv4Addr;
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use kxdp_agent::nodefacts::{self, NodeEvent};
use kxdp_control::compile::{pod_interface_name, pod_mac};
use kxdp_tests::cluster::{AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::node::mac_text;
use kxdp_tests::testbed::{self, Testbed};

const USAGE: &str = "usage: veth_served [--runs N] (1 to 100)";

fn parse_args() -> Result<u32, String> {
    let mut runs = 20;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match (flag.as_str(), value.parse::<u32>()) {
            ("--runs", Ok(n)) if (1..=100).contains(&n) => runs = n,
            _ => return Err(format!("{flag} {value}: out of range or unknown\n{USAGE}")),
        }
    }
    Ok(runs)
}

/// Seconds since the epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A log line's RFC 3339 timestamp (`2026-01-02T03:04:05.123456Z`, as the agent's `tracing`
/// lines start) in seconds since the epoch.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let t = k8s_openapi::chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(t.timestamp_micros() as f64 / 1e6)
}

/// When the agent logged that it serves `iface`.
fn served_at(log: &str, iface: &str) -> Option<f64> {
    let needle = format!("interface={iface}");
    log.lines()
        .filter(|l| l.contains("pod interface served") && l.contains(&needle))
        .find_map(log_time)
}

/// `ip` (in namespace `ns` if given), its failure as text.
fn ip(ns: Option<&str>, args: &[&str]) -> Result<(), String> {
    testbed::ip(ns, args).map(drop).map_err(|e| e.to_string())
}

/// Link notifications in namespace `ns`, as (name, up, when) on a channel, from a thread
/// that runs until the process ends.
fn watch_links(ns: &str) -> Result<mpsc::Receiver<(String, bool, f64)>, String> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let watch = (|| {
            kxdp_xdp::enter_netns(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(rt)
        })();
        let rt = match watch {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let mut events = match nodefacts::watch() {
                Ok(events) => events,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while let Some(e) = events.next().await {
                if let NodeEvent::Link(l) = e {
                    if tx.send((l.name, l.up, now())).is_err() {
                        return;
                    }
                }
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("the link watcher did not start: {e}"))??;
    Ok(rx)
}

/// One pod's moments, in seconds since the epoch.
struct Run {
    appeared: f64,
    up: f64,
    served: f64,
    first_reply: f64,
}

fn percentiles(label: &str, ms: &[f64]) -> String {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for v in ms {
        let _ = h.record((v * 1000.0).max(1.0) as u64);
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    format!(
        "{label:<28} {:>8.1} {:>8.1} {:>8.1}",
        q(0.5),
        q(0.99),
        h.max() as f64 / 1000.0
    )
}

fn run() -> Result<(), String> {
    let runs = parse_args()?;
    Testbed::remove_namespaces_on_panic();
    // The demo cluster, and `runs` pods on node A that the API lists before their veths exist.
    let pods: Vec<(String, Ipv4Addr)> = (0..runs)
        .map(|i| {
            (
                format!("measured-{i}"),
                Ipv4Addr::new(10, 244, 1, 100 + i as u8),
            )
        })
        .collect();
    let mut manifest = DEMO_MANIFEST.to_owned();
    for (name, ip) in &pods {
        manifest += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{nodeName: node-a, containers: [{{name: c, image: c}}]}}\n\
             status: {{phase: Running, podIP: {ip}}}\n"
        );
    }
    let mut c = AgentCluster::build(&manifest, &DEMO_PODS)?;
    let prefix = c.tb.prefix().to_owned();
    let measured = measure(&mut c, &pods);
    // The agent and the cluster's namespaces go with the cluster; the measured pods' too.
    drop(c);
    Testbed::remove_namespaces(&prefix);
    let results = measured?;
    report(&results);
    Ok(())
}

/// Start node A's agent and time each pod's veth.
fn measure(c: &mut AgentCluster, pods: &[(String, Ipv4Addr)]) -> Result<Vec<Run>, String> {
    let node_ns = c.tb.nodes[0].ns.clone();
    let links = watch_links(&node_ns)?;
    let manifest_path = c.manifest.display().to_string();
    c.start_node(0, 600, &["--manifest", &manifest_path])?;
    c.wait_ready(0, Duration::from_secs(30))?;
    let prefix = c.tb.prefix().to_owned();
    let gateway = c.tb.nodes[0].gateway.to_string();
    let target = DEMO_PODS[1].2.to_string();

    let mut results = Vec::new();
    for (i, (name, pod_ip)) in pods.iter().enumerate() {
        let host_side = pod_interface_name("default", name);
        let pod_ns = format!("{prefix}-m{i}");
        ip(None, &["netns", "add", &pod_ns])?;
        // The pod's end first: created in the pod's namespace, configured, and probing.
        ip(
            Some(&node_ns),
            &[
                "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &pod_ns,
            ],
        )?;
        let mac = mac_text(pod_mac(*pod_ip));
        ip(Some(&pod_ns), &["link", "set", "eth0", "address", &mac])?;
        ip(
            Some(&pod_ns),
            &["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"],
        )?;
        ip(Some(&pod_ns), &["link", "set", "lo", "up"])?;
        ip(Some(&pod_ns), &["link", "set", "eth0", "up"])?;
        ip(Some(&pod_ns), &["route", "add", "default", "via", &gateway])?;
        let sysctl = Command::new("ip")
            .args(["netns", "exec", &pod_ns])
            .args(["sysctl", "-qw", "net.ipv4.neigh.eth0.retrans_time_ms=10"])
            .status()
            .map_err(|e| e.to_string())?;
        if !sysctl.success() {
            return Err(format!("sysctl in {pod_ns}: {sysctl}"));
        }
        // Until the first reply, at most 10 s. Errors while nothing answers the pod's ARP are
        // expected, and ping stops at the first one under `-c` or `-w`: `timeout` bounds it.
        let mut ping = Command::new("timeout")
            .args(["10", "ip", "netns", "exec", &pod_ns])
            .args(["ping", "-n", "-D", "-i", "0.002", &target])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("ping: {e}"))?;
        ip(Some(&node_ns), &["link", "set", &host_side, "up"])?;
        let stdout = ping.stdout.take().ok_or("ping has no stdout")?;
        let first_reply = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .find(|l| l.contains("bytes from"))
            .and_then(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok());
        let _ = ping.kill();
        let _ = ping.wait();
        let first_reply =
            first_reply.ok_or_else(|| format!("{name}: no reply from {target} within 10 s"))?;

        // The agent's log has the served line by now (the reply came through the dataplane).
        let served = (0..100)
            .find_map(|_| {
                let t = served_at(&c.log(0), &host_side);
                if t.is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                t
            })
            .ok_or_else(|| format!("{name}: the agent never logged serving {host_side}"))?;
        let (mut appeared, mut up) = (None, None);
        while let Ok((link, is_up, at)) = links.try_recv() {
            if link == host_side {
                appeared.get_or_insert(at);
                if is_up {
                    up.get_or_insert(at);
                }
            }
        }
        let (Some(appeared), Some(up)) = (appeared, up) else {
            return Err(format!(
                "{name}: the watcher missed {host_side}'s notifications"
            ));
        };
        results.push(Run {
            appeared,
            up,
            served,
            first_reply,
        });
        // Gone again, so the node holds one measured pod at a time.
        ip(None, &["netns", "del", &pod_ns])?;
    }
    Ok(results)
}

fn report(results: &[Run]) {
    let ms = |f: fn(&Run) -> f64| results.iter().map(f).collect::<Vec<f64>>();
    println!(
        "kxdp agent: a new pod veth served, {} pods (wakeup mode, 1 worker)\n",
        results.len()
    );
    println!("{:<28} {:>8} {:>8} {:>8}", "ms", "p50", "p99", "max");
    println!(
        "{}",
        percentiles("appeared -> up", &ms(|r| (r.up - r.appeared) * 1e3))
    );
    println!(
        "{}",
        percentiles("appeared -> served", &ms(|r| (r.served - r.appeared) * 1e3))
    );
    println!(
        "{}",
        percentiles("up -> served", &ms(|r| (r.served - r.up) * 1e3))
    );
    println!(
        "{}",
        percentiles(
            "appeared -> first reply",
            &ms(|r| (r.first_reply - r.appeared) * 1e3)
        )
    );
    println!(
        "{}",
        percentiles("up -> first reply", &ms(|r| (r.first_reply - r.up) * 1e3))
    );
    println!(
        "\nappeared -> up is this harness configuring the pod's end (as a CNI plugin does) \
         before it sets the host end up; the agent serves a veth once it is up."
    );
}

fn main() -> ExitCode {
    kxdp_perf::exit("veth_served", run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_read_as_epoch_seconds() {
        let t = log_time("2026-12-05T01:06:57.509222Z  INFO kxdp_agent::run: starting").unwrap();
        assert!((t - 1_796_432_817.509_222).abs() < 1e-6, "{t}");
        assert_eq!(log_time("1970-01-01T00:00:00Z x"), Some(0.0));
        assert_eq!(log_time("not a time"), None);
        let log = "2026-12-05T01:06:57.5Z  INFO kxdp_agent::reconcile: pod interface served interface=kx0\n";
        assert_eq!(served_at(log, "kx0"), Some(1_796_432_817.5));
        assert_eq!(served_at(log, "kx1"), None);
    }
}
