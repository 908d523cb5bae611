//! Soak: the agents' two-node cluster (`kxdp_tests::cluster`, the demo's pods and manifest)
//! under steady traffic at half of what the path carries, with pods and services changing
//! every few seconds, for as long as asked; then the load stops and the run waits for
//! conntrack to drain. What it watches on both agents, from their `/metrics` every few
//! seconds: resident memory (`process_resident_memory_bytes`), open file descriptors
//! (`process_open_fds`), UMEM chunks by place (`kxdp_worker_umem_chunks`: free, the kernel's,
//! held by a worker between batches, which is a lost chunk), conntrack's flows and the
//! snapshot generation.
//!
//! The load, in segments of `--segment` seconds so that every segment opens new flows:
//! - iperf3 UDP from client-a through a ClusterIP (`soak`, 10.96.0.40, UDP and TCP 5201) to
//!   web-b on the other node, offered at half of the saturation rate measured first on the
//!   same path (iperf3 `-b 0` for 5 s, 1200-byte datagrams);
//! - short HTTP requests from client-b through the `web` ClusterIP (both web pods), a new
//!   connection each, ten a second.
//!
//! The churn, one step every `--churn` seconds: a pod attached by the real CNI plugin (`ADD`,
//! on the two nodes in turn) until four are up, then the oldest deleted (`DEL`, its namespace
//! removed) until none is, and again; and at every step the manifest rewritten with a new `churn-N` ClusterIP whose
//! endpoints are the churn pods up then (the previous `churn-N` gone), so both agents rebuild
//! their tables.
//!
//! Verdicts, per agent: resident memory after the warm-up (the first tenth of the run, at
//! least a minute) stays within 5% of its first value after warm-up; no UMEM chunk is ever
//! held between batches, and the chunks counted once load and churn are over are those
//! counted before; file descriptors after the churn pods are gone are those before the load;
//! conntrack's flows return to their count before the load (waiting out the closing and UDP
//! timeouts, at most `--drain` seconds); the agent never restarts. Any failed verdict exits
//! non-zero.
//!
//! Writes `soak.md` (the report: commit, machine, settings, verdicts, a table per minute) and
//! `soak.json` (every sample) into `--out`. Needs root; agents are `KXDP_BIN` or the `kxdp`
//! beside this binary, the plugin `KXDP_CNI_BIN` or the `kxdp-cni` beside it.
//!
//! `soak [--minutes M] [--churn S] [--segment S] [--sample S] [--drain S] [--out DIR]`

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kxdp_perf::iperf3;
use kxdp_perf::provenance::{commit, machine};
use kxdp_tests::clients::{stop_bounded, HttpServer};
use kxdp_tests::cluster::{AgentCluster, DEMO_MANIFEST, DEMO_PODS, NODES};
use kxdp_tests::cni::Attachment;
use kxdp_tests::testbed::{missing_privilege, Testbed};
use serde_json::json;

const USAGE: &str =
    "usage: soak [--minutes M] [--churn S] [--segment S] [--sample S] [--drain S] [--out DIR]
  --minutes M  minutes of load and churn (0.5 to 600, default 3: the short profile; 60 for
               the hour)
  --churn S    seconds between churn steps (1 to 60, default 3)
  --segment S  seconds per load segment (5 to 300, default 30)
  --sample S   seconds between samples (1 to 60, default 5)
  --drain S    the longest wait for conntrack to drain after the load (10 to 900, default 300)
  --out DIR    where soak.md and soak.json go (default: printed only)";

/// The ClusterIP the UDP load goes through (web-b's iperf3).
const SOAK_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
/// The `web` ClusterIP of the demo manifest (both web pods, port 80 to 8080).
const WEB_VIP: &str = "10.96.0.10";
/// Pods the churn keeps up at most.
const CHURN_PODS: usize = 4;
/// UDP payload of the load: fits a 1450-byte pod MTU unfragmented.
const UDP_LEN: u32 = 1200;
/// HTTP requests a second.
const HTTP_RATE: u32 = 10;

/// The command line.
#[derive(Debug)]
struct Args {
    minutes: f64,
    churn_s: f64,
    segment_s: u32,
    sample_s: f64,
    drain_s: u64,
    out: Option<PathBuf>,
}

fn parse_args(flags: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        minutes: 3.0,
        churn_s: 3.0,
        segment_s: 30,
        sample_s: 5.0,
        drain_s: 300,
        out: None,
    };
    for (flag, value) in kxdp_perf::args::pairs(flags, USAGE)? {
        let bad = || format!("{flag} {value}: out of range or unknown\n{USAGE}");
        let num = |lo: f64, hi: f64| {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(bad)
        };
        match flag.as_str() {
            "--minutes" => args.minutes = num(0.5, 600.0)?,
            "--churn" => args.churn_s = num(1.0, 60.0)?,
            "--segment" => args.segment_s = num(5.0, 300.0)? as u32,
            "--sample" => args.sample_s = num(1.0, 60.0)?,
            "--drain" => args.drain_s = num(10.0, 900.0)? as u64,
            "--out" => args.out = Some(value.into()),
            _ => return Err(bad()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = missing_privilege() {
        eprintln!("soak needs root: {why}");
        return ExitCode::from(2);
    }
    Testbed::remove_namespaces_on_panic();
    match soak(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("soak: a verdict failed (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A churn pod: its name, node, namespace and the plugin's attachment.
struct ChurnPod {
    name: String,
    node: usize,
    ns: String,
    attachment: Attachment,
}

/// What one agent's `/metrics` said.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    rss: f64,
    fds: f64,
    flows: f64,
    free: f64,
    kernel: f64,
    held: f64,
    generation: f64,
    pid: u32,
}

/// One sample: seconds since the load started (negative before), the phase, both agents.
#[derive(Clone, Debug)]
struct Sample {
    t: f64,
    phase: &'static str,
    churn_pods: usize,
    nodes: [Reading; 2],
}

fn soak(args: &Args) -> Result<bool, String> {
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let max_run = total.as_secs() + args.drain_s + 600;
    let commit = commit(args.out.as_deref());
    let machine = machine();
    let mut c = AgentCluster::build(&manifest(&[], 0), &DEMO_PODS)?;
    c.start(max_run, &[])?;
    let ns = |name: &str| c.pod(name).ns.clone();
    let (client_a, client_b, web_a, web_b) =
        (ns("client-a"), ns("client-b"), ns("web-a"), ns("web-b"));
    let lifetime = u32::try_from(max_run).unwrap_or(u32::MAX);
    let _http_a = HttpServer::start(&web_a, 8080, "web-a", lifetime);
    let _http_b = HttpServer::start(&web_b, 8080, "web-b", lifetime);
    let _iperf = Bounded::spawn(
        Command::new("timeout")
            .arg(max_run.to_string())
            .args(["ip", "netns", "exec", &web_b, "iperf3", "-s", "-p", "5201"]),
    )?;
    std::thread::sleep(Duration::from_millis(500));

    // The baseline, before any flow of the soak's own.
    let before = [read(&c, 0)?, read(&c, 1)?];
    // Saturation: what the path carries with iperf3 sending as fast as it can.
    let saturation = udp_segment(&client_a, 0.0, 5)?.received_bps;
    let offered = saturation / 2.0;
    println!(
        "soak: saturation {:.0} Mbit/s, offering {:.0} Mbit/s for {:.1} min",
        saturation / 1e6,
        offered / 1e6,
        args.minutes
    );
    let start = Instant::now();
    let mut samples = vec![Sample {
        t: 0.0,
        phase: "before",
        churn_pods: 0,
        nodes: before,
    }];

    let stop = Arc::new(AtomicBool::new(false));
    let segments = Arc::new(Mutex::new(Vec::<(f64, Result<iperf3::Run, String>)>::new()));
    let http = Arc::new(Mutex::new((0u64, 0u64)));
    let udp_load = {
        let (stop, segments, client_a, seg) = (
            stop.clone(),
            segments.clone(),
            client_a.clone(),
            args.segment_s,
        );
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let t = start.elapsed().as_secs_f64();
                let r = udp_segment(&client_a, offered, seg);
                if let Err(e) = &r {
                    eprintln!("soak: UDP segment at {t:.0} s: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
                segments.lock().expect("not poisoned").push((t, r));
            }
        })
    };
    let http_load = {
        let (stop, http, client_b, seg) = (stop.clone(), http.clone(), client_b, args.segment_s);
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let (ok, failed) = http_segment(&client_b, seg);
                let mut h = http.lock().expect("not poisoned");
                h.0 += ok;
                h.1 += failed;
            }
        })
    };

    let mut churn: VecDeque<ChurnPod> = VecDeque::new();
    let (mut step, mut added, mut deleted, mut most) = (0u32, 0u32, 0u32, 0usize);
    let mut next_churn = Duration::ZERO;
    let mut next_sample = Duration::from_secs_f64(args.sample_s);
    let mut failure = None;
    while start.elapsed() < total {
        let now = start.elapsed();
        if now >= next_churn {
            step += 1;
            // Up to CHURN_PODS pods, one a step, then down to none, oldest first.
            let adding = (step - 1) as usize % (2 * CHURN_PODS) < CHURN_PODS;
            let add = churn.is_empty() || (adding && churn.len() < CHURN_PODS);
            let r = if !add {
                delete_pod(&mut c, churn.pop_front().expect("not empty")).map(|()| deleted += 1)
            } else {
                add_pod(&mut c, step, (added % 2) as usize).map(|p| {
                    churn.push_back(p);
                    added += 1;
                    most = most.max(churn.len());
                })
            };
            let ips: Vec<(Ipv4Addr, usize)> =
                churn.iter().map(|p| (p.attachment.ip, p.node)).collect();
            let written = std::fs::write(&c.manifest, manifest(&ips, step))
                .map_err(|e| format!("{}: {e}", c.manifest.display()));
            if let Err(e) = r.and(written) {
                failure = Some(format!("churn step {step}: {e}"));
                break;
            }
            next_churn += Duration::from_secs_f64(args.churn_s);
        }
        if now >= next_sample {
            match (read(&c, 0), read(&c, 1)) {
                (Ok(a), Ok(b)) => samples.push(Sample {
                    t: now.as_secs_f64(),
                    phase: "load",
                    churn_pods: churn.len(),
                    nodes: [a, b],
                }),
                (Err(e), _) | (_, Err(e)) => {
                    failure = Some(format!(
                        "reading the metrics at {:.0} s: {e}",
                        now.as_secs_f64()
                    ));
                    break;
                }
            }
            next_sample += Duration::from_secs_f64(args.sample_s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Relaxed);
    let load_s = start.elapsed().as_secs_f64();
    while let Some(p) = churn.pop_front() {
        if let Err(e) = delete_pod(&mut c, p) {
            failure.get_or_insert(format!("deleting the churn pods: {e}"));
        }
        deleted += 1;
    }
    std::fs::write(&c.manifest, manifest(&[], 0)).map_err(|e| e.to_string())?;
    let _ = udp_load.join();
    let _ = http_load.join();
    let load_end = start.elapsed().as_secs_f64();

    // The drain: conntrack back to where it was before the load.
    let drain_start = Instant::now();
    let mut drained = None;
    while drain_start.elapsed() < Duration::from_secs(args.drain_s) {
        std::thread::sleep(Duration::from_secs_f64(args.sample_s));
        let nodes = [read(&c, 0)?, read(&c, 1)?];
        samples.push(Sample {
            t: start.elapsed().as_secs_f64(),
            phase: "drain",
            churn_pods: 0,
            nodes,
        });
        if (0..2).all(|n| nodes[n].flows <= before[n].flows) {
            drained = Some(drain_start.elapsed().as_secs_f64());
            break;
        }
    }
    let after = samples.last().expect("a sample").nodes;

    let segments = std::mem::take(&mut *segments.lock().expect("not poisoned"));
    let http = *http.lock().expect("not poisoned");
    let run = Run {
        args,
        commit,
        machine,
        saturation,
        offered,
        load_s,
        load_end,
        steps: step,
        added,
        deleted,
        most,
        samples,
        segments,
        http,
        drained,
        before,
        after,
        failure,
    };
    let (report, ok) = run.report();
    println!("{report}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("soak.md"), &report).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("soak.json"), run.json()).map_err(|e| e.to_string())?;
    }
    Ok(ok)
}

/// A `timeout` running a command, stopped when dropped ([`stop_bounded`]).
struct Bounded(Child);

impl Bounded {
    fn spawn(cmd: &mut Command) -> Result<Bounded, String> {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Bounded)
            .map_err(|e| format!("{cmd:?}: {e}"))
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        stop_bounded(&mut self.0);
    }
}

/// One iperf3 UDP run from `ns` through the soak ClusterIP for `secs` s at `rate` bit/s
/// (0: as fast as it can), bounded by `secs + 15` s.
fn udp_segment(ns: &str, rate: f64, secs: u32) -> Result<iperf3::Run, String> {
    let out = Command::new("timeout")
        .arg((secs + 15).to_string())
        .args(["ip", "netns", "exec", ns, "iperf3", "-c"])
        .arg(SOAK_VIP.to_string())
        .args(["-p", "5201", "-u", "-J", "-l", &UDP_LEN.to_string()])
        .args(["-b", &format!("{rate:.0}"), "-t", &secs.to_string()])
        .output()
        .map_err(|e| format!("iperf3: {e}"))?;
    iperf3::parse(&String::from_utf8_lossy(&out.stdout))
}

/// HTTP GETs from `ns` through the `web` ClusterIP, [`HTTP_RATE`] a second for `secs` s, a
/// new connection each (bounded by `secs + 15` s): how many were answered and how many not.
fn http_segment(ns: &str, secs: u32) -> (u64, u64) {
    let script = format!(
        "import urllib.request, time\n\
         ok = failed = 0\n\
         start = time.time()\n\
         for i in range({n}):\n\
         \x20   time.sleep(max(0, start + i / {HTTP_RATE} - time.time()))\n\
         \x20   try:\n\
         \x20       urllib.request.urlopen('http://{WEB_VIP}/', timeout=2).read()\n\
         \x20       ok += 1\n\
         \x20   except Exception:\n\
         \x20       failed += 1\n\
         print(ok, failed)\n",
        n = secs * HTTP_RATE
    );
    let out = Command::new("timeout")
        .arg((secs + 15).to_string())
        .args(["ip", "netns", "exec", ns, "python3", "-c", &script])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut n = text.split_whitespace().filter_map(|w| w.parse().ok());
    match (n.next(), n.next()) {
        (Some(ok), Some(failed)) => (ok, failed),
        _ => (0, u64::from(secs * HTTP_RATE)),
    }
}

/// Attach churn pod number `step` through node `node`'s plugin, in a namespace of its own.
fn add_pod(c: &mut AgentCluster, step: u32, node: usize) -> Result<ChurnPod, String> {
    let name = format!("churn-{step}");
    let ns = format!("{}-{name}", c.tb.prefix());
    c.tb.add_namespace(&ns).map_err(|e| e.to_string())?;
    let attachment = c.plugin(node)?.add(&name, &ns)?;
    Ok(ChurnPod {
        name,
        node,
        ns,
        attachment,
    })
}

/// Detach `pod` through its node's plugin and remove its namespace.
fn delete_pod(c: &mut AgentCluster, pod: ChurnPod) -> Result<(), String> {
    let del = c.plugin(pod.node)?.del(&pod.name, &pod.attachment);
    let out = Command::new("ip").args(["netns", "del", &pod.ns]).output();
    del?;
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "ip netns del {}: {}",
            pod.ns,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("ip netns del {}: {e}", pod.ns)),
    }
}

/// The demo manifest, the soak's UDP service, and churn step `step`'s service over `pods`
/// (address and node index).
fn manifest(pods: &[(Ipv4Addr, usize)], step: u32) -> String {
    let mut m = DEMO_MANIFEST.to_owned();
    let _ = write!(
        m,
        "\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: soak, namespace: default}}\n\
         spec:\n  type: ClusterIP\n  clusterIP: {SOAK_VIP}\n  ports:\n\
         \x20 - {{name: udp, protocol: UDP, port: 5201, targetPort: 5201}}\n\
         \x20 - {{name: tcp, protocol: TCP, port: 5201, targetPort: 5201}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: soak-1\n  namespace: default\n\
         \x20 labels: {{kubernetes.io/service-name: soak}}\naddressType: IPv4\n\
         ports:\n  - {{name: udp, protocol: UDP, port: 5201}}\n  - {{name: tcp, protocol: TCP, port: 5201}}\n\
         endpoints:\n  - {{addresses: [{web_b}], nodeName: node-b, conditions: {{ready: true}}}}\n",
        web_b = DEMO_PODS[2].2
    );
    if step == 0 {
        return m;
    }
    let vip = Ipv4Addr::new(10, 96, 1, (step % 250 + 1) as u8);
    let _ = write!(
        m,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: churn-{step}, namespace: default}}\n\
         spec:\n  type: ClusterIP\n  clusterIP: {vip}\n\
         \x20 ports: [{{name: http, protocol: TCP, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: churn-{step}-1\n  namespace: default\n\
         \x20 labels: {{kubernetes.io/service-name: churn-{step}}}\naddressType: IPv4\n\
         ports: [{{name: http, protocol: TCP, port: 8080}}]\nendpoints:\n"
    );
    if pods.is_empty() {
        m.push_str("  []\n");
    }
    for (ip, node) in pods {
        let _ = writeln!(
            m,
            "  - {{addresses: [{ip}], nodeName: {}, conditions: {{ready: true}}}}",
            NODES[*node]
        );
    }
    m
}

/// Node `node`'s agent, from its `/metrics`.
fn read(c: &AgentCluster, node: usize) -> Result<Reading, String> {
    let (status, text) = c.metrics_get(node, "/metrics", Duration::from_secs(5))?;
    if status != 200 {
        return Err(format!("{}'s /metrics answered {status}", NODES[node]));
    }
    // The sum of every series of `name` whose labels contain `with`.
    let sum = |name: &str, with: &str| -> Result<f64, String> {
        let mut found = false;
        let mut total = 0.0;
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = l.rsplit_once(' ') else {
                continue;
            };
            let base = series.split('{').next().unwrap_or(series);
            if base == name && series.contains(with) {
                total += value.parse::<f64>().map_err(|e| format!("{l}: {e}"))?;
                found = true;
            }
        }
        found
            .then_some(total)
            .ok_or_else(|| format!("{}'s /metrics has no {name} {with}", NODES[node]))
    };
    Ok(Reading {
        rss: sum("process_resident_memory_bytes", "")?,
        fds: sum("process_open_fds", "")?,
        flows: sum("kxdp_conntrack_flows", "")?,
        free: sum("kxdp_worker_umem_chunks", "place=\"free\"")?,
        kernel: sum("kxdp_worker_umem_chunks", "place=\"kernel\"")?,
        held: sum("kxdp_worker_umem_chunks", "place=\"held\"")?,
        generation: sum("kxdp_snapshot_generation", "")?,
        pid: c.agent_pid(node).unwrap_or(0),
    })
}

/// Everything a run found.
struct Run<'a> {
    args: &'a Args,
    commit: String,
    machine: String,
    saturation: f64,
    offered: f64,
    load_s: f64,
    load_end: f64,
    steps: u32,
    added: u32,
    deleted: u32,
    /// Churn pods up at once, at most.
    most: usize,
    samples: Vec<Sample>,
    segments: Vec<(f64, Result<iperf3::Run, String>)>,
    http: (u64, u64),
    drained: Option<f64>,
    before: [Reading; 2],
    after: [Reading; 2],
    failure: Option<String>,
}

impl Run<'_> {
    /// The warm-up: the first tenth of the load, at least a minute (all of a shorter run's
    /// first half).
    fn warm_up(&self) -> f64 {
        (self.load_s / 10.0).max(60.0_f64.min(self.load_s / 2.0))
    }

    /// The verdicts, each with whether it holds, for node `n`.
    fn verdicts(&self, n: usize) -> Vec<(bool, String)> {
        let warm = self.warm_up();
        let load: Vec<&Reading> = self
            .samples
            .iter()
            .filter(|s| s.phase == "load" && s.t >= warm)
            .map(|s| &s.nodes[n])
            .collect();
        let mut v = Vec::new();
        let (before, after) = (&self.before[n], &self.after[n]);
        match load.first() {
            Some(first) => {
                let max = load.iter().map(|r| r.rss).fold(f64::MIN, f64::max);
                let min = load.iter().map(|r| r.rss).fold(f64::MAX, f64::min);
                let growth = (max - first.rss) / first.rss * 100.0;
                let drop = (first.rss - min) / first.rss * 100.0;
                v.push((
                    growth <= 5.0 && drop <= 5.0,
                    format!(
                        "resident memory after warm-up within 5% of its first value ({:.1} MiB): \
                         {:.1} to {:.1} MiB ({:+.1}% / {:+.1}%) over {} samples",
                        mib(first.rss),
                        mib(min),
                        mib(max),
                        -drop,
                        growth,
                        load.len()
                    ),
                ));
            }
            None => v.push((false, "no sample after warm-up".into())),
        }
        let held = self
            .samples
            .iter()
            .map(|s| s.nodes[n].held)
            .fold(0.0, f64::max);
        v.push((
            held == 0.0,
            format!("UMEM chunks held by a worker between batches (lost): at most {held:.0}"),
        ));
        let (c0, c1) = (before.free + before.kernel, after.free + after.kernel);
        v.push((
            c0 == c1,
            format!("UMEM chunks counted before the load {c0:.0}, after {c1:.0}"),
        ));
        let fd_max = self
            .samples
            .iter()
            .map(|s| s.nodes[n].fds)
            .fold(0.0, f64::max);
        v.push((
            before.fds == after.fds,
            format!(
                "open file descriptors before the load {:.0}, after it {:.0} (at most {fd_max:.0} \
                 with churn pods up)",
                before.fds, after.fds
            ),
        ));
        let peak = self
            .samples
            .iter()
            .map(|s| s.nodes[n].flows)
            .fold(0.0, f64::max);
        v.push((
            after.flows <= before.flows,
            format!(
                "conntrack flows before the load {:.0}, peak {peak:.0}, after the drain {:.0}{}",
                before.flows,
                after.flows,
                self.drained
                    .map(|s| format!(" ({s:.0} s after the load)"))
                    .unwrap_or_else(|| format!(" (not drained in {} s)", self.args.drain_s))
            ),
        ));
        let pids: Vec<u32> = self.samples.iter().map(|s| s.nodes[n].pid).collect();
        v.push((
            pids.iter().all(|p| *p != 0 && *p == pids[0]),
            "the agent ran throughout (one process, never restarted)".into(),
        ));
        v
    }

    /// The report, and whether every verdict holds.
    fn report(&self) -> (String, bool) {
        let a = self.args;
        let mut ok = self.failure.is_none();
        let mut r = String::new();
        let _ = writeln!(
            r,
            "# Soak: {:.1} minutes of load and churn on the agents' two-node cluster\n\n\
             Commit `{}`. Machine: {}.\n\n\
             Reproduce: `make soak SOAK_ARGS=\"--minutes {} --churn {} --segment {} --sample {} \
             --drain {} --out perf/results\"` (root; `make soak` alone is the 3-minute profile).\n",
            self.load_s / 60.0,
            self.commit,
            self.machine,
            a.minutes,
            a.churn_s,
            a.segment_s,
            a.sample_s,
            a.drain_s
        );
        let udp: Vec<&iperf3::Run> = self
            .segments
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .collect();
        let failed_segments = self.segments.len() - udp.len();
        let mean = |f: &dyn Fn(&iperf3::Run) -> f64| {
            udp.iter().map(|r| f(r)).sum::<f64>() / udp.len().max(1) as f64
        };
        let _ = writeln!(
            r,
            "## Load and churn\n\n\
             - UDP through a ClusterIP across nodes (client-a to web-b, {UDP_LEN}-byte datagrams): \
             saturation {:.0} Mbit/s (iperf3 `-b 0`, 5 s), offered half, {:.0} Mbit/s, in {} \
             segments of {} s ({} failed): received {:.0} Mbit/s on average, {:.2}% lost.\n\
             - HTTP through the `web` ClusterIP from client-b, {HTTP_RATE} new connections a \
             second: {} answered, {} not.\n\
             - Churn every {} s: {} steps, {} pods attached and {} deleted by the CNI plugin (up \
             to {} at once, one more or one fewer a step), a new ClusterIP over them at every \
             step.\n\
             - Warm-up {:.0} s; samples every {} s; the churn stopped at {:.0} s, the last \
             load segment ended at {:.0} s.\n",
            self.saturation / 1e6,
            self.offered / 1e6,
            self.segments.len(),
            a.segment_s,
            failed_segments,
            mean(&|r| r.received_bps) / 1e6,
            mean(&|r| r.lost_percent.unwrap_or(0.0)),
            self.http.0,
            self.http.1,
            a.churn_s,
            self.steps,
            self.added,
            self.deleted,
            self.most,
            self.warm_up(),
            a.sample_s,
            self.load_s,
            self.load_end
        );
        if let Some(f) = &self.failure {
            let _ = writeln!(r, "**The run stopped early**: {f}\n");
        }
        let _ = writeln!(r, "## Verdicts\n");
        for (n, node) in NODES.iter().enumerate() {
            for (holds, what) in self.verdicts(n) {
                ok &= holds;
                let _ = writeln!(
                    r,
                    "- {} {node}: {what}",
                    if holds { "PASS" } else { "FAIL" }
                );
            }
        }
        let _ = writeln!(
            r,
            "\n## By minute (the last sample of each)\n\n\
             | t (s) | phase | churn pods | node-a RSS (MiB) | fds | flows | chunks free/kernel/held | generation | node-b RSS (MiB) | fds | flows | chunks free/kernel/held | generation |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let n = self.samples.len();
        for (i, s) in self.samples.iter().enumerate() {
            let minute = |s: &Sample| (s.t / 60.0) as i64;
            let last_of_its_minute = self
                .samples
                .get(i + 1)
                .is_none_or(|next| minute(next) != minute(s) || next.phase != s.phase);
            if i != 0 && i + 1 != n && !last_of_its_minute {
                continue;
            }
            let _ = write!(r, "| {:.0} | {} | {} ", s.t, s.phase, s.churn_pods);
            for x in &s.nodes {
                let _ = write!(
                    r,
                    "| {:.1} | {:.0} | {:.0} | {:.0}/{:.0}/{:.0} | {:.0} ",
                    mib(x.rss),
                    x.fds,
                    x.flows,
                    x.free,
                    x.kernel,
                    x.held,
                    x.generation
                );
            }
            let _ = writeln!(r, "|");
        }
        let _ = writeln!(
            r,
            "\nEvery sample and UDP segment: `soak.json` beside this file."
        );
        (r, ok)
    }

    /// Every sample and segment as JSON.
    fn json(&self) -> String {
        let node = |x: &Reading| {
            json!({"rss_bytes": x.rss, "open_fds": x.fds, "conntrack_flows": x.flows,
                   "umem_free": x.free, "umem_kernel": x.kernel, "umem_held": x.held,
                   "generation": x.generation, "pid": x.pid})
        };
        let samples: Vec<_> = self
            .samples
            .iter()
            .map(|s| {
                json!({"t_s": s.t, "phase": s.phase, "churn_pods": s.churn_pods,
                       "node_a": node(&s.nodes[0]), "node_b": node(&s.nodes[1])})
            })
            .collect();
        let segments: Vec<_> = self
            .segments
            .iter()
            .map(|(t, r)| match r {
                Ok(r) => json!({"t_s": t, "received_bps": r.received_bps, "sent_bps": r.sent_bps,
                                "lost_percent": r.lost_percent}),
                Err(e) => json!({"t_s": t, "error": e}),
            })
            .collect();
        let v = json!({"commit": self.commit, "machine": self.machine,
            "minutes": self.args.minutes, "churn_s": self.args.churn_s,
            "segment_s": self.args.segment_s, "saturation_bps": self.saturation,
            "offered_bps": self.offered, "http_ok": self.http.0, "http_failed": self.http.1,
            "samples": samples, "udp_segments": segments});
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}
