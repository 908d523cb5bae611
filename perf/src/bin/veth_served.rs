//! How soon a pod that `kxdp-cni` attaches is served by `kxdp agent`, and when its first
//! packet is forwarded: the agent runs on node A of the agents' two-node cluster
//! (`kxdp_tests::cluster`) with the demo manifest, which does not list the measured pods: the
//! agent knows each only from the declaration the plugin writes on its veth (the node end's
//! alias, `kxdp-pod default/measured-N IP`), as in a real cluster, where the API lists a pod's
//! address only after `ADD` has returned and the kubelet reported it. Then, one pod at a
//! time, the runtime's part is played: a fresh pod namespace with its loopback up, and the
//! real plugin's `ADD` run in the node's namespace with the `CNI_*` environment and the
//! network configuration on stdin (`kxdp_tests::cni`), exactly as a container runtime calls
//! it; `ADD` waits (up to its default `servedTimeoutMs`, 1 s) for the agent's
//! `/served/<ifname>`. Node A's demo pods are moved to 10.244.1.250 and .251, out of the
//! plugin's round robin (it does not know them: the test bed made their veths).
//!
//! The moments taken, per pod:
//!
//! - **ADD exec** and **ADD return**: around the plugin's process (`nsenter` and the
//!   plugin, from spawn to exit, its result read);
//! - **appeared** and **up**: the host end's `RTM_NEWLINK` notifications, as a netlink watcher
//!   in the node's namespace receives them (the same notifications the agent follows); the
//!   plugin makes the pair, sets the node's end up, then configures the pod's end, so both
//!   fall inside `ADD`;
//! - **served**: the agent's `pod interface served` log line (XDP attached, every worker's
//!   socket bound, the snapshot published), by its timestamp; it may come before `ADD`
//!   returns (negative "ADD return -> served");
//! - **first reply**: the first echo reply the new pod receives from the node's `client-a`
//!   through the dataplane (`ping -D`, one probe every 2 ms, started in the pod's namespace
//!   the moment `ADD` returns, the pod as the plugin left it: its ARP retransmit time is the
//!   kernel's default, so a first ARP request lost before the veth was served costs a second,
//!   as it would cost a real pod; `--arp-retrans-ms` shortens it, to tell those runs from the
//!   rest), with the probe number that got it.
//!
//! Each pod is deleted by the plugin's `DEL` (with its `ADD` result as `prevResult`) and its
//! namespace removed before the next; the run fails unless the plugin then holds no address
//! and the node's end is gone. An error on the way, or a panic (the release profile aborts,
//! so a panic hook does it), deletes the pod in flight too, then every namespace.
//!
//! It prints p50/p99/max of each span, how many pods were served before `ADD` returned, the
//! runs whose first reply came over 500 ms after `ADD` returned (with their spans), and the
//! machine's load average before and after. Needs root. Agents are `KXDP_BIN` or the
//! `kxdp` beside this binary, the plugin `KXDP_CNI_BIN` or the `kxdp-cni` beside it.
//!
//! `veth_served [--runs N] [--arp-retrans-ms MS]` (`--runs` 1 to 100, default 20)
//!
//! Measured with `make perf-veth VETH_ARGS="--runs 100"` (release build, on a 2-core machine
//! at load 4.1 while another engineer's benchmark ran), in ms, p50 / p99 / max: `ADD` 18.1 /
//! 31.7 / 64.1; veth up -> served 0.7 / 5.5 / 11.3; `ADD` return -> served -2.4 / -0.5 /
//! -0.4 (all 100 pods served before `ADD` returned); `ADD` return -> first reply 8.4 / 13.1 /
//! 42.5, every first reply on probe 1. Three more runs of 100 at load 4.1 to 5.0: that p99
//! 10.9, 22.0 and 12.2 ms, no pod of 400 waiting for an ARP retry. Before `ADD` waited for
//! `/served` (and with the pods pre-listed in the manifest), 2 pods of 100 (13 of 900 over
//! nine runs) had their first ARP request lost and a first reply 1 s late, p99 1008 ms.
//! `ADD` now lasts a few ms longer (its wait for the agent, and the load: its steps before
//! the veth appears took 12 to 15 ms at p50 here against 6.6 ms for all of `ADD` at load 2).
//! The watcher's moments are when its thread reads the notification, which on a busy machine
//! can lag, so spans from `ADD`'s two moments are the ones to trust.

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

use std::net::Ipv4Addr;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kxdp_agent::nodefacts::{self, NodeEvent};
use kxdp_control::compile::pod_interface_name;
use kxdp_tests::cluster::{set_pod_ips, AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::cni::{Attachment, Plugin};
use kxdp_tests::testbed::{self, Testbed};

const USAGE: &str = "usage: veth_served [--runs N] [--arp-retrans-ms MS]
  --runs N             pods attached one after another (1 to 100, default 20)
  --arp-retrans-ms MS  the pod's ARP retransmit time, set as ping starts (10 to 1000; default:
                       the kernel's, 1000 ms), to tell a lost first ARP request from the rest";

/// The command line.
struct Args {
    runs: u32,
    arp_retrans_ms: Option<u32>,
}

/// The flags after the program's name.
fn parse_args(flags: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        runs: 20,
        arp_retrans_ms: None,
    };
    for (flag, value) in kxdp_perf::args::pairs(flags, USAGE)? {
        match (flag.as_str(), value.parse::<u32>()) {
            ("--runs", Ok(n)) if (1..=100).contains(&n) => args.runs = n,
            ("--arp-retrans-ms", Ok(n)) if (10..=1000).contains(&n) => {
                args.arp_retrans_ms = Some(n);
            }
            _ => return Err(format!("{flag} {value}: out of range or unknown\n{USAGE}")),
        }
    }
    Ok(args)
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

/// Node A's demo pods (`web-a`, `client-a`) moved to addresses the plugin does not reach in
/// 100 runs (round robin from 10.244.1.2, each pod deleted before the next): the plugin does
/// not know them (the test bed made their veths), and a declared address the manifest's pod
/// holds would be ignored.
const MOVED_DEMO_PODS: [(Ipv4Addr, Ipv4Addr); 2] = [
    (DEMO_PODS[0].2, Ipv4Addr::new(10, 244, 1, 250)),
    (DEMO_PODS[1].2, Ipv4Addr::new(10, 244, 1, 251)),
];

/// The pod being measured: what deleting it takes.
struct InFlight {
    plugin: Plugin,
    pod: String,
    ns: String,
    /// Its `ADD` result, once `ADD` returned.
    attachment: Option<Attachment>,
}

/// At most one pod is attached at a time; the panic hook and [`DetachOnDrop`] find it here.
static IN_FLIGHT: Mutex<Option<InFlight>> = Mutex::new(None);

fn in_flight() -> std::sync::MutexGuard<'static, Option<InFlight>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// `DEL` the pod in flight (if `ADD` returned) and remove its namespace; the first error.
fn detach_in_flight() -> Result<(), String> {
    let Some(pod) = in_flight().take() else {
        return Ok(());
    };
    let deleted = match &pod.attachment {
        Some(a) => pod.plugin.del(&pod.pod, a),
        None => Ok(()),
    };
    let removed = ip(None, &["netns", "del", &pod.ns]);
    deleted.and(removed)
}

/// Detaches the pod in flight when an error returns early.
struct DetachOnDrop;

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        let _ = detach_in_flight();
    }
}

/// A panic hook that deletes the pod in flight by the plugin (while the node's namespace is
/// still there), then runs the hook installed before it (the test bed's, which removes the
/// namespaces): the release profile aborts on a panic, so no `Drop` runs.
fn detach_on_panic() {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Err(e) = detach_in_flight() {
            eprintln!("panic: deleting the measured pod: {e}");
        }
        before(info);
    }));
}

/// One pod's moments, in seconds since the epoch, and the probe its first reply answered.
struct Run {
    pod: String,
    add_exec: f64,
    add_return: f64,
    appeared: f64,
    up: f64,
    served: f64,
    first_reply: f64,
    first_reply_seq: u32,
}

/// Nearest-rank percentile `p` (0 to 1) of `sorted`, which is not empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A report line: `label`, then p50, p99 and max of `values` (which may be negative).
fn percentiles(label: &str, values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return format!("{label:<30} (no values)");
    }
    format!(
        "{label:<30} {:>8.1} {:>8.1} {:>8.1}",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1]
    )
}

/// The machine's load averages (1, 5 and 15 minutes), as `/proc/loadavg` has them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn run() -> Result<(), String> {
    let args = parse_args(std::env::args().skip(1))?;
    let runs = args.runs;
    Testbed::remove_namespaces_on_panic();
    detach_on_panic();
    // The demo cluster with node A's pods out of the plugin's range. The measured pods are
    // not in the manifest: the agent knows each only from what the plugin declares on its
    // veth, as in a real cluster, where the API lists the pod's address only after `ADD`.
    let pods: Vec<String> = (0..runs).map(|i| format!("measured-{i}")).collect();
    let manifest = set_pod_ips(DEMO_MANIFEST, &MOVED_DEMO_PODS);
    let demo_pods: Vec<(&str, usize, Ipv4Addr)> = DEMO_PODS
        .iter()
        .map(|&(name, node, ip)| {
            let moved = MOVED_DEMO_PODS.iter().find(|(from, _)| *from == ip);
            (name, node, moved.map_or(ip, |(_, to)| *to))
        })
        .collect();
    let mut c = AgentCluster::build(&manifest, &demo_pods)?;
    let prefix = c.tb.prefix().to_owned();
    let load_before = load_average();
    let measured = measure(&mut c, &pods, demo_pods[1].2, args.arp_retrans_ms);
    let load_after = load_average();
    // The agent and the cluster's namespaces go with the cluster; the measured pods' too.
    let detached = detach_in_flight();
    drop(c);
    Testbed::remove_namespaces(&prefix);
    let results = measured?;
    detached?;
    report(&results, &args, &load_before, &load_after);
    Ok(())
}

/// Start node A's agent and time each pod's attachment by the plugin, pinging `target` (with
/// the pod's ARP retransmit time set to `arp_retrans_ms` first, if given).
fn measure(
    c: &mut AgentCluster,
    pods: &[String],
    target: Ipv4Addr,
    arp_retrans_ms: Option<u32>,
) -> Result<Vec<Run>, String> {
    let node_ns = c.tb.nodes[0].ns.clone();
    let links = watch_links(&node_ns)?;
    let manifest_path = c.manifest.display().to_string();
    c.start_node(0, 900, &["--manifest", &manifest_path])?;
    c.wait_ready(0, Duration::from_secs(30))?;
    // The agent writes the subnet file the plugin reads once it knows node A's podCIDR.
    let subnet_file = c.subnet_file(0);
    let written = (0..200).any(|_| {
        let exists = subnet_file.exists();
        if !exists {
            std::thread::sleep(Duration::from_millis(50));
        }
        exists
    });
    if !written {
        return Err(format!(
            "the agent wrote no subnet file {} within 10 s",
            subnet_file.display()
        ));
    }
    let plugin = c.plugin(0)?;
    let prefix = c.tb.prefix().to_owned();
    let target = target.to_string();

    let mut results = Vec::new();
    for (i, name) in pods.iter().enumerate() {
        let host_side = pod_interface_name("default", name);
        let pod_ns = format!("{prefix}-m{i}");
        // The runtime's sandbox: a namespace with its loopback up (the loopback plugin's
        // part), made before `ADD` and not timed.
        *in_flight() = Some(InFlight {
            plugin: plugin.clone(),
            pod: name.clone(),
            ns: pod_ns.clone(),
            attachment: None,
        });
        let _detach = DetachOnDrop;
        ip(None, &["netns", "add", &pod_ns])?;
        ip(Some(&pod_ns), &["link", "set", "lo", "up"])?;

        let add_exec = now();
        let attached = plugin.add(name, &pod_ns);
        let add_return = now();
        let attachment = attached?;
        let got = attachment.ip;
        if let Some(pod) = in_flight().as_mut() {
            pod.attachment = Some(attachment);
        }
        if MOVED_DEMO_PODS.iter().any(|(_, moved)| *moved == got) {
            return Err(format!(
                "{name}: the plugin gave {got}, a demo pod's address (did the IPAM's round \
                 robin change? see cni/src/ipam.rs)"
            ));
        }
        // Until the first reply, at most 10 s. Errors while nothing answers the pod's ARP are
        // expected, and ping stops at the first one under `-c` or `-w`: `timeout` bounds it.
        // One shell either way, so that setting the retransmit time costs both alike.
        let set_retrans = arp_retrans_ms.map_or(String::new(), |ms| {
            format!("echo {ms} > /proc/sys/net/ipv4/neigh/eth0/retrans_time_ms && ")
        });
        let mut ping = Command::new("timeout")
            .arg("10")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{pod_ns}"))
            .args(["sh", "-c"])
            .arg(format!("{set_retrans}exec ping -n -D -i 0.002 {target}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ping: {e}"))?;
        let stdout = ping.stdout.take().ok_or("ping has no stdout")?;
        let first_reply = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .find_map(|l| echo_reply(&l));
        // SIGTERM, which `timeout` passes on to ping; a SIGKILL (`Child::kill`) would end
        // `timeout` alone and leave ping probing every 2 ms, orphaned.
        let _ = Command::new("kill").arg(ping.id().to_string()).status();
        let _ = ping.wait();
        let (first_reply, first_reply_seq) =
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
        // The watcher's thread may lag behind on a busy machine: wait for its notifications.
        let (mut appeared, mut up) = (None, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while up.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok((link, is_up, at)) = links.recv_timeout(left) else {
                break;
            };
            if link == host_side {
                appeared.get_or_insert(at);
                if is_up {
                    up.get_or_insert(at);
                }
            }
        }
        let (Some(appeared), Some(up)) = (appeared, up) else {
            return Err(format!(
                "{name}: the watcher did not report {host_side} up within 5 s"
            ));
        };
        results.push(Run {
            pod: name.clone(),
            add_exec,
            add_return,
            appeared,
            up,
            served,
            first_reply,
            first_reply_seq,
        });
        // Gone again, by the plugin, so the node holds one measured pod at a time and the
        // next `ADD` gets the next address; nothing may be left of it.
        detach_in_flight()?;
        let held = c.plugin_allocations(0);
        if !held.is_empty() {
            return Err(format!("{name}: after DEL the plugin still holds {held:?}"));
        }
        if testbed::ip(Some(&node_ns), &["link", "show", &host_side]).is_ok() {
            return Err(format!("{name}: after DEL {host_side} is still on node A"));
        }
    }
    Ok(results)
}

/// An echo reply line of `ping -n -D` (`[1733400000.123456] 64 bytes from 10.244.1.251:
/// icmp_seq=3 ttl=64 time=0.1 ms`): when it came, in seconds since the epoch, and its probe.
/// Other lines (errors, `From ... Destination Host Unreachable`) are `None`.
fn echo_reply(line: &str) -> Option<(f64, u32)> {
    if !line.contains(" bytes from ") {
        return None;
    }
    let at = line.strip_prefix('[')?.split(']').next()?.parse().ok()?;
    let seq = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("icmp_seq="))?
        .parse()
        .ok()?;
    Some((at, seq))
}

/// A span of a run, in seconds.
type Span = fn(&Run) -> f64;

fn report(results: &[Run], args: &Args, load_before: &str, load_after: &str) {
    let ms = |f: Span| results.iter().map(|r| f(r) * 1e3).collect::<Vec<f64>>();
    println!(
        "kxdp agent: a pod attached by kxdp-cni, served, its first packet forwarded; {} pods \
         (wakeup mode, 1 worker), the pod's ARP retransmit time {}\n",
        results.len(),
        args.arp_retrans_ms
            .map_or("the kernel's (1000 ms)".into(), |ms| format!("{ms} ms"))
    );
    println!("{:<30} {:>8} {:>8} {:>8}", "ms", "p50", "p99", "max");
    let rows: [(&str, Span); 7] = [
        ("ADD (exec -> exit)", |r| r.add_return - r.add_exec),
        ("ADD exec -> veth appeared", |r| r.appeared - r.add_exec),
        ("veth appeared -> up", |r| r.up - r.appeared),
        ("veth up -> served", |r| r.served - r.up),
        ("ADD return -> served", |r| r.served - r.add_return),
        ("ADD return -> first reply", |r| {
            r.first_reply - r.add_return
        }),
        ("served -> first reply", |r| r.first_reply - r.served),
    ];
    for (label, span) in rows {
        println!("{}", percentiles(label, &ms(span)));
    }
    let seqs: Vec<f64> = results
        .iter()
        .map(|r| f64::from(r.first_reply_seq))
        .collect();
    println!("{}", percentiles("first reply's probe (icmp_seq)", &seqs));
    let early = results.iter().filter(|r| r.served <= r.add_return).count();
    println!(
        "\nserved before ADD returned: {early} of {}; load average (1, 5, 15 min): {load_before} \
         before, {load_after} after",
        results.len()
    );
    let arp_retried = results
        .iter()
        .filter(|r| r.first_reply - r.add_return > 0.5)
        .count();
    println!(
        "first reply over 500 ms after ADD returned: {arp_retried} of {} (as a rule the pod's \
         first ARP request for its gateway, sent before its veth was served, answered by \
         nobody and retried after the kernel's 1 s retransmit time: the probes wait for it)",
        results.len()
    );
    for r in results
        .iter()
        .filter(|r| r.first_reply - r.add_return > 0.5)
    {
        println!(
            "  {}: ADD return -> served {:.1} ms, veth up -> served {:.1} ms, ADD return -> \
             first reply {:.1} ms (probe {})",
            r.pod,
            (r.served - r.add_return) * 1e3,
            (r.served - r.up) * 1e3,
            (r.first_reply - r.add_return) * 1e3,
            r.first_reply_seq
        );
    }
    println!(
        "ADD return -> first reply includes starting ping in the pod's namespace (timeout, \
         nsenter, ping)."
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

    #[test]
    fn flags_are_read_and_bounded() {
        let parse = |flags: &[&str]| parse_args(flags.iter().map(|f| f.to_string()));
        let args = parse(&[]).unwrap();
        assert_eq!((args.runs, args.arp_retrans_ms), (20, None));
        let args = parse(&["--arp-retrans-ms", "10", "--runs", "100"]).unwrap();
        assert_eq!((args.runs, args.arp_retrans_ms), (100, Some(10)));
        for bad in [
            &["--runs", "0"][..],
            &["--runs", "101"],
            &["--arp-retrans-ms", "5"],
            &["--arp-retrans-ms", "1001"],
            &["--arp-retrans-ms"],
            &["--pods", "3"],
        ] {
            let e = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert!(e.contains(bad[0]) && e.contains("usage:"), "{e}");
        }
    }

    #[test]
    fn echo_replies_read_as_time_and_probe() {
        let line = "[1733400000.123456] 64 bytes from 10.244.1.251: icmp_seq=3 ttl=64 time=0.1 ms";
        let (at, seq) = echo_reply(line).unwrap();
        assert!((at - 1_733_400_000.123_456).abs() < 1e-6, "{at}");
        assert_eq!(seq, 3);
        assert_eq!(
            echo_reply("64 bytes from 10.244.1.251: icmp_seq=3 ttl=64"),
            None
        );
        assert_eq!(
            echo_reply("[1.5] From 10.244.1.2 icmp_seq=1 Destination Host Unreachable"),
            None
        );
    }

    #[test]
    fn percentiles_are_nearest_rank_and_keep_the_sign() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[-3.0], 0.99), -3.0);
        assert_eq!(percentile(&[-3.0, 1.0], 0.0), -3.0);
        let line = percentiles("x", &[2.0, -1.5, 0.5]);
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["x", "0.5", "2.0", "2.0"]
        );
        assert!(percentiles("x", &[]).contains("no values"));
    }
}
