//! The measurements on the packet-rate topologies and the clusters' latency, each writing its
//! section of the report, its targets and every run's sample: packets per second at saturation
//! (with a profile of the worker's core), CPU per packet at a fixed rate, and request/response
//! latency. iperf3 has its own module.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kxdp_perf::stats::{median, range};
use kxdp_xdp::enter_netns;
use serde_json::json;

use crate::args::Args;
use crate::clusters::{restart_agents, Clusters, Which};
use crate::paths::{Bench, Path};
use crate::report::{mpps, spread, Point, Report};

pub(crate) fn measure_pps(b: &Bench, r: &mut Report) -> Result<(), String> {
    let a = &b.args;
    let _ = writeln!(
        r.md,
        "## Forwarded packets per second at saturation\n\n\
         UDP from a pod to a ClusterIP whose backend is on node B (DNAT, conntrack and VXLAN \
         encapsulation on node A), or straight to a pod on node B (VXLAN only); the ceilings \
         forward the frame unchanged. Mpps. Median of {} runs of {} s with \
         the range. *Offered* is what the generator's veth took (sent on to node A, or \
         dropped with node A's queue full) over the same window as the sink's count, both \
         read from the kernel's counters at the same moments.\n",
        a.runs, a.seconds
    );
    let _ = writeln!(
        r.md,
        "| frame | to | flows | XDP redirect | bare AF_XDP | kxdp | kxdp ({g}) | kernel ({g}) | kxdp / kernel, same generator | kxdp / bare | offered to kxdp: own generator / {g}; to the kernel: {g} |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        g = b.skb_gen.name()
    );
    let many = *a.flows.last().unwrap_or(&1);
    let targets: Vec<(&'static str, Ipv4Addr, u32)> = a
        .flows
        .iter()
        .map(|&f| ("ClusterIP", b.t.dns_cluster_ip, f))
        .chain([("pod", b.t.remote_pod_ip, many)])
        .collect();
    let (mut same_gen, mut of_bare) = (Vec::new(), Vec::new());
    // Forwarded over offered, and the generator's own count over the window's, per run.
    let (mut over, mut own) = (Vec::new(), Vec::new());
    for &size in &a.sizes {
        for &(to, dst, flows) in &targets {
            b.dst.store(u32::from(dst), Relaxed);
            let mut got: Vec<Vec<f64>> = vec![Vec::new(); Path::ALL.len()];
            // What was offered to each path, per run.
            let mut offered: Vec<Vec<f64>> = vec![Vec::new(); Path::ALL.len()];
            for run in 0..a.runs {
                for (i, path) in Path::ALL.iter().enumerate() {
                    let s = b.saturate(*path, size, flows)?;
                    got[i].push(s.forwarded);
                    offered[i].push(s.offered);
                    over.push((s.forwarded / s.offered.max(1.0), *path, size, to, flows));
                    if *path == Path::KxdpSkb || *path == Path::Kernel {
                        own.push(s.generator_reported / s.offered.max(1.0));
                    }
                    r.samples.push(json!({
                        "measurement": "pps",
                        "frame_bytes": size,
                        "to": to,
                        "flows": flows,
                        "path": path.name(),
                        "generator": if path.skb_fed() { b.skb_gen.name() } else { b.own_gen_name() },
                        "run": run,
                        "forwarded_pps": s.forwarded,
                        "offered_pps": s.offered,
                        "offered_dropped_at_veth_pps": s.offered_dropped,
                        "generator_own_count_pps": s.generator_reported,
                        "busy_cores": s.busy_cores,
                    }));
                }
            }
            let m: Vec<f64> = got.iter().map(|v| median(v)).collect();
            if to == "ClusterIP" && flows == many {
                for (i, path) in Path::ALL.iter().enumerate() {
                    let mpps: Vec<f64> = got[i].iter().map(|x| x / 1e6).collect();
                    r.pps
                        .push(Point::of(format!("{size} B"), path.series(), &mpps));
                }
            }
            let _ = writeln!(
                r.md,
                "| {size} | {to} | {flows} | {} | {} | {} | {} | {} | {:.2}x | {:.0}% | {} / {}; {} |",
                spread(&got[0], mpps),
                spread(&got[1], mpps),
                spread(&got[2], mpps),
                spread(&got[3], mpps),
                spread(&got[4], mpps),
                m[3] / m[4].max(1.0),
                100.0 * m[2] / m[1].max(1.0),
                mpps(median(&offered[2])),
                mpps(median(&offered[3])),
                mpps(median(&offered[4])),
            );
            if to == "ClusterIP" {
                same_gen.push(m[3] / m[4].max(1.0));
                of_bare.push(m[2] / m[1].max(1.0));
            }
            println!("  pps: {size} B to a {to}, {flows} flows done");
        }
    }
    let _ = writeln!(
        r.md,
        "\n*Own generator*: the one feeding the XDP redirect, bare AF_XDP and kxdp columns, here \
         {} (BPF_PROG_RUN live frames where the kernel allows them, else an AF_XDP \
         copy-mode socket's transmit ring, which offers far less).",
        b.own_gen_name()
    );
    let worst = over
        .iter()
        .copied()
        .fold(None, |w: Option<(f64, Path, usize, &str, u32)>, x| {
            Some(w.filter(|w| w.0 >= x.0).unwrap_or(x))
        });
    if let Some((ratio, path, size, to, flows)) = worst {
        let verdict = if ratio > 1.01 {
            "**more than was offered: a measurement error to find**"
        } else if ratio > 1.0 {
            "within 1% of what was offered (the generator's count is interpolated between two reads around the sink's)"
        } else {
            "no more than was offered"
        };
        let _ = writeln!(
            r.md,
            "\nForwarded over offered, every run of every path: at most {:.1}% ({}, {size} B to \
             a {to}, {flows} flows): {verdict}. This report's earlier versions showed kxdp \
             (trafgen) forwarding more than trafgen offered: the offered rate was trafgen's own \
             count over its whole process life, start-up included (the C preprocessor on its \
             config, its ring set up), divided by that life, while the sink counted a window \
             of steady sending after a warm-up. Over its whole run, the skb generator's \
             ({g}) own count comes to {:.0}% (median; {:.0}–{:.0}%) of the rate its veth took \
             in the window; both are in the samples. IPv6 is off in these namespaces, so \
             neither count includes a link's neighbour discovery and MLD reports.",
            100.0 * ratio,
            path.name(),
            100.0 * median(&own),
            100.0 * range(&own).0,
            100.0 * range(&own).1,
            g = b.skb_gen.name(),
        );
    }
    let (lo, _) = range(&same_gen);
    r.targets.push((
        "packets per second through a ClusterIP across nodes, kxdp / kernel ≥ 1.5x".into(),
        format!(
            "{lo:.2}x at the least (same generator, {}; a lower bound where it limits kxdp)",
            b.skb_gen.name()
        ),
        lo >= 1.5,
    ));
    let (lo, _) = range(&of_bare);
    r.targets.push((
        "kxdp ≥ 80% of the bare AF_XDP forwarder on the same path".into(),
        format!("{:.0}% at the least", 100.0 * lo),
        lo >= 0.8,
    ));
    Ok(())
}

/// Whether `perf` runs here.
pub(crate) fn perf_installed() -> bool {
    std::process::Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Samples of one core (`perf record -e cpu-clock`): (share in %, kernel or not, symbol).
type Profile = Vec<(f64, bool, String)>;

/// Profile the worker's core while `path` forwards `size`-byte frames flat out: the worker
/// and the kernel work its transmits do there (the sink's veth receive). `perf record` starts
/// a second into the run (the dataplane's start and the sampler's warm-up) and lasts until
/// about its end.
fn profile(b: &Bench, path: Path, size: usize, flows: u32) -> Result<Profile, String> {
    let data = std::env::temp_dir().join(format!(
        "kxdp-perf-{}-{}.data",
        std::process::id(),
        path.name().split(' ').next().unwrap_or("path")
    ));
    let secs = format!("{:.1}", (b.args.seconds - 0.5).max(0.5));
    let core = b.args.worker_core.to_string();
    std::thread::scope(|s| {
        let recorder = s.spawn(|| {
            std::thread::sleep(Duration::from_secs(1));
            std::process::Command::new("perf")
                .args([
                    "record",
                    "-q",
                    "-e",
                    "cpu-clock",
                    "-F",
                    "4999",
                    "-C",
                    &core,
                    "-o",
                ])
                .arg(&data)
                .args(["--", "sleep", &secs])
                .output()
        });
        let run = b.saturate(path, size, flows);
        let recorded = recorder
            .join()
            .map_err(|_| "perf record panicked".to_owned())?
            .map_err(|e| format!("perf record: {e}"))?;
        run?;
        if !recorded.status.success() {
            return Err(format!(
                "perf record: {}",
                String::from_utf8_lossy(&recorded.stderr)
            ));
        }
        Ok(())
    })?;
    let report = std::process::Command::new("perf")
        .args([
            "report",
            "--no-children",
            "--sort",
            "sym",
            "--stdio",
            "-q",
            "-i",
        ])
        .arg(&data)
        .output()
        .map_err(|e| format!("perf report: {e}"))?;
    let _ = std::fs::remove_file(&data);
    Ok(parse_perf_report(&String::from_utf8_lossy(&report.stdout)))
}

/// `perf report --sort sym --stdio -q` lines: `  12.34%  [k] veth_xmit`.
fn parse_perf_report(text: &str) -> Profile {
    text.lines()
        .filter_map(|l| {
            let (share, rest) = l.trim().split_once('%')?;
            let rest = rest.trim();
            let kernel = rest.starts_with("[k]");
            let sym = rest.get(3..)?.trim();
            Some((share.trim().parse().ok()?, kernel, sym.to_owned()))
        })
        .collect()
}

pub(crate) fn measure_profile(b: &Bench, r: &mut Report) -> Result<(), String> {
    if !perf_installed() {
        let _ = writeln!(
            r.md,
            "\n## Where the worker's core goes\n\nNot profiled: `perf` is not installed \
             (Debian: `linux-perf`)."
        );
        return Ok(());
    }
    let (size, flows) = (64, *b.args.flows.last().unwrap_or(&1));
    b.dst.store(u32::from(b.t.dns_cluster_ip), Relaxed);
    let kxdp = profile(b, Path::Kxdp, size, flows)?;
    let bare = profile(b, Path::Bare, size, flows)?;
    let user = |p: &Profile| p.iter().filter(|x| !x.1).map(|x| x.0).sum::<f64>();
    let _ = writeln!(
        r.md,
        "\n## Where the worker's core goes\n\n\
         `perf record -e cpu-clock` on core {} (the worker, and the kernel work its transmits \
         do there) while kxdp and then the bare forwarder forward {size}-byte frames to the \
         ClusterIP over {flows} flows flat out. User space (kxdp's pipeline, inlined into the \
         worker loop; the bare forwarder's MAC swap): kxdp {:.1}%, bare {:.1}% of the samples. \
         The rest is the kernel's copy-mode AF_XDP on veth: an skb allocated and the frame \
         copied for every transmit, the sink's veth receive, and the syscalls.\n\n\
         | # | kxdp | % | bare AF_XDP | % |\n|---:|---|---:|---|---:|",
        b.args.worker_core,
        user(&kxdp),
        user(&bare)
    );
    let name = |x: &(f64, bool, String)| {
        let short: String = x.2.chars().take(60).collect();
        format!("`{}{short}`", if x.1 { "[k] " } else { "" })
    };
    for i in 0..12.min(kxdp.len().max(bare.len())) {
        let cell = |p: &Profile| {
            p.get(i)
                .map_or(("".into(), "".into()), |x| (name(x), format!("{:.1}", x.0)))
        };
        let ((ks, kp), (bs, bp)) = (cell(&kxdp), cell(&bare));
        let _ = writeln!(r.md, "| {} | {ks} | {kp} | {bs} | {bp} |", i + 1);
    }
    println!("  profile done");
    Ok(())
}

pub(crate) fn measure_cpu(b: &Bench, r: &mut Report) -> Result<(), String> {
    let a = &b.args;
    let size = 64;
    let flows = *a.flows.last().unwrap_or(&1);
    b.dst.store(u32::from(b.t.dns_cluster_ip), Relaxed);
    let (mut reference, mut kxdp, mut kernel) = (Vec::new(), Vec::new(), Vec::new());
    let (mut kx_rate, mut k_rate) = (Vec::new(), Vec::new());
    for run in 0..a.runs {
        let running = b.start_reference()?;
        // The reference drops on node A's pod veth: nothing reaches the sink, so count what
        // was offered.
        let rf = b.rate(&b.kxdp, size, flows, Some(a.cpu_rate), true);
        running.stop()?;
        let rf = rf?;
        reference.push(rf.busy_cores / rf.offered.max(1.0));
        r.samples.push(json!({
            "measurement": "cpu",
            "path": "reference: the generator into an XDP drop",
            "run": run,
            "ns_per_packet": 1e9 * rf.busy_cores / rf.offered.max(1.0),
            "offered_pps": rf.offered,
            "busy_cores": rf.busy_cores,
        }));
        for (path, out, rates) in [
            (Path::Kxdp, &mut kxdp, &mut kx_rate),
            (Path::Kernel, &mut kernel, &mut k_rate),
        ] {
            let running = b.start(path, false)?;
            let x = b.rate(b.side(path), size, flows, Some(a.cpu_rate), true);
            running.stop()?;
            let x = x?;
            // CPU per forwarded packet, less the generator's per offered packet.
            let gen_share = rf.busy_cores / rf.offered.max(1.0) * x.offered;
            out.push((x.busy_cores - gen_share).max(0.0) / x.forwarded.max(1.0));
            rates.push(x.forwarded / x.offered.max(1.0));
            r.samples.push(json!({
                "measurement": "cpu",
                "path": path.name(),
                "run": run,
                "ns_per_packet": 1e9 * out.last().copied().unwrap_or(0.0),
                "forwarded_pps": x.forwarded,
                "offered_pps": x.offered,
                "busy_cores": x.busy_cores,
            }));
        }
    }
    let ns = |s: f64| format!("{:.0}", s * 1e9);
    let (mk, mkern) = (median(&kxdp), median(&kernel));
    let _ = writeln!(
        r.md,
        "\n## CPU per packet at a fixed rate\n\n\
         {size}-byte frames, {flows} flows, offered at {} kpps (below the kernel path's \
         saturation); busy time of all cores from /proc/stat over the packets forwarded, less \
         the generator's own cost (the same generator at the same rate into an XDP drop on \
         node A's pod veth: {} ns per packet). kxdp in wakeup mode. Median of {} runs (range).\n\n\
         | path | ns of CPU per packet | delivered / offered |\n|---|---:|---:|\n\
         | kxdp | {} | {:.3} |\n| kernel | {} | {:.3} |\n| **kxdp / kernel** | **{:.2}x** | |",
        a.cpu_rate / 1000,
        ns(median(&reference)),
        a.runs,
        spread(&kxdp, ns),
        median(&kx_rate),
        spread(&kernel, ns),
        median(&k_rate),
        mk / mkern.max(f64::MIN_POSITIVE),
    );
    let ratio = mk / mkern.max(f64::MIN_POSITIVE);
    r.targets.push((
        "CPU per packet, kxdp / kernel ≤ 0.7x".into(),
        format!("{ratio:.2}x"),
        ratio <= 0.7,
    ));
    println!("  cpu done");
    Ok(())
}

/// UDP echo through the echo ClusterIP of cluster `which` at `rps` requests per second for
/// `secs`: the round-trip histogram (µs) and the requests lost.
fn echo_latency(
    c: &Clusters,
    which: Which,
    rps: u32,
    secs: f64,
) -> Result<(Histogram<u64>, u64), String> {
    let stop = AtomicBool::new(false);
    let server_ns = c.pod_ns(which, "web-b");
    let client_ns = c.pod_ns(which, "client-a");
    std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<(), String> {
            enter_netns(&server_ns).map_err(|e| e.to_string())?;
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 7007)).map_err(|e| e.to_string())?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            while !stop.load(Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
            Ok(())
        });
        // The client moves its own thread into the pod's namespace, not the caller's.
        let client = s.spawn(|| -> Result<(Histogram<u64>, u64), String> {
            std::thread::sleep(Duration::from_millis(200));
            enter_netns(&client_ns).map_err(|e| e.to_string())?;
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
            sock.connect((Ipv4Addr::new(10, 96, 0, 40), 7))
                .map_err(|e| e.to_string())?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let mut h =
                Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).map_err(|e| e.to_string())?;
            let (mut lost, mut buf) = (0u64, [0u8; 64]);
            let interval = Duration::from_secs_f64(1.0 / f64::from(rps));
            let count = (secs * f64::from(rps)) as u64;
            let start = Instant::now();
            for i in 0..count {
                let due = start + interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let t = Instant::now();
                sock.send(&i.to_ne_bytes()).map_err(|e| e.to_string())?;
                // Wait for this request's answer; a late answer to an earlier one is skipped.
                loop {
                    match sock.recv(&mut buf) {
                        Ok(8) if buf[..8] == i.to_ne_bytes() => {
                            let _ = h.record((t.elapsed().as_micros() as u64).max(1));
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => {
                            lost += 1;
                            break;
                        }
                    }
                }
            }
            Ok((h, lost))
        });
        let result = client
            .join()
            .map_err(|_| "the echo client panicked".to_owned());
        stop.store(true, Relaxed);
        server
            .join()
            .map_err(|_| "the echo server panicked".to_owned())??;
        result?
    })
}

/// One path's row of the latency table: p50, p99 and p99.9 of each run, requests lost, and
/// (kxdp's modes) the share of a core an idle agent uses.
struct LatencyRow<'a> {
    name: &'a str,
    q: [Vec<f64>; 3],
    lost: u64,
    idle: Option<f64>,
}

/// How long [`idle_cpu`] waits for traffic to end (an adaptive worker spins 2 ms after its
/// last frame).
const IDLE_SETTLE_SECS: f64 = 2.0;
/// How long [`idle_cpu`] then counts the agents' run time.
const IDLE_SECS: f64 = 3.0;

/// The share of a core each of kxdp's agent processes (every thread: workers, control,
/// API) ran over [`IDLE_SECS`] with no traffic, both nodes' mean.
fn idle_cpu(kx: &kxdp_tests::cluster::AgentCluster) -> Result<f64, String> {
    std::thread::sleep(Duration::from_secs_f64(IDLE_SETTLE_SECS));
    let pids: Vec<u32> = (0..2)
        .map(|n| kx.agent_pid(n).ok_or("an agent is not running"))
        .collect::<Result<_, _>>()?;
    let ran = || -> Result<u64, String> { pids.iter().map(|&p| cpu_ns(p)).sum() };
    let (t0, start) = (ran()?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(IDLE_SECS));
    let used = ran()?.saturating_sub(t0) as f64 / 1e9;
    Ok(used / start.elapsed().as_secs_f64() / pids.len() as f64)
}

/// How long process `pid`'s threads have run, in ns: the first field of each
/// `/proc/PID/task/TID/schedstat` (a thread that ended is no longer counted).
fn cpu_ns(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let mut ns = 0;
    for task in tasks.flatten() {
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += parse_schedstat(&text).ok_or_else(|| format!("{dir}: schedstat {text:?}"))?;
        }
    }
    Ok(ns)
}

/// The time on a CPU, in ns, of a `schedstat` line (`ran waited timeslices`).
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The latency section, on clusters whose kxdp agents run (they are restarted in each worker
/// mode); it goes to `md` rather than the report's, to follow the iperf3 section.
pub(crate) fn measure_latency(
    a: &Args,
    c: &mut Clusters,
    r: &mut Report,
    md: &mut String,
) -> Result<(), String> {
    if let Some(why) = &c.kxdp_failed {
        let _ = writeln!(
            md,
            "\n## Request/response latency at a fixed rate\n\nNot measured: at underlay MTU \
             {}, kxdp: {why}.",
            c.mtu
        );
        return Ok(());
    }
    let secs = a.seconds.max(2.0);
    // Each kxdp mode's runs alternate with the kernel's, which goes first every other run:
    // this VM's speed drifts within minutes, so a ratio is only taken between runs made side
    // by side. The kernel's row is all its runs; each mode's ratio is to the kernel's runs
    // made beside it.
    let mut rows: Vec<LatencyRow> = Vec::new();
    let mut kernel: ([Vec<f64>; 3], u64) = Default::default();
    let mut ratios = Vec::new();
    // The plot's series of each mode: kxdp's default (adaptive, pinned) is plain "kxdp".
    for (name, series, restart) in [
        ("kxdp, adaptive (default)", "kxdp", None),
        (
            "kxdp, adaptive, unpinned",
            "kxdp, adaptive, unpinned",
            Some(("adaptive", false)),
        ),
        ("kxdp, wakeup", "kxdp, wakeup", Some(("wakeup", true))),
        (
            "kxdp, busy-poll",
            "kxdp, busy-poll",
            Some(("busy-poll", true)),
        ),
    ] {
        if let Some((mode, pinned)) = restart {
            restart_agents(&mut c.kxdp, mode, pinned)?;
        }
        let idle = idle_cpu(&c.kxdp)?;
        r.samples.push(json!({
            "measurement": "idle agent CPU",
            "path": name,
            "share_of_a_core": idle,
            "seconds": IDLE_SECS,
        }));
        let (mut q, mut beside) = (<[Vec<f64>; 3]>::default(), <[Vec<f64>; 3]>::default());
        let mut lost = 0;
        for run in 0..a.latency_runs {
            let order = if run % 2 == 0 {
                [Which::Kxdp, Which::Kernel]
            } else {
                [Which::Kernel, Which::Kxdp]
            };
            for which in order {
                let (h, l) = echo_latency(c, which, a.rps, secs)?;
                let (path, into) = match which {
                    Which::Kxdp => {
                        lost += l;
                        (name, &mut q)
                    }
                    Which::Kernel => {
                        kernel.1 += l;
                        ("kernel", &mut beside)
                    }
                };
                for (v, p) in into.iter_mut().zip([0.5, 0.99, 0.999]) {
                    v.push(h.value_at_quantile(p) as f64);
                }
                r.samples.push(json!({
                    "measurement": "latency",
                    "path": path,
                    "beside": name,
                    "underlay_mtu": c.mtu,
                    "run": run,
                    "requests": h.len(),
                    "lost": l,
                    "p50_us": h.value_at_quantile(0.5),
                    "p99_us": h.value_at_quantile(0.99),
                    "p99_9_us": h.value_at_quantile(0.999),
                    "max_us": h.max(),
                }));
            }
        }
        for (qi, label) in ["p50", "p99", "p99.9"].iter().enumerate() {
            r.latency
                .push(Point::of((*label).to_owned(), series, &q[qi]));
            kernel.0[qi].extend_from_slice(&beside[qi]);
        }
        let ratio = |qi: usize| median(&q[qi]) / median(&beside[qi]).max(1.0);
        ratios.push((name, [ratio(0), ratio(1), ratio(2)]));
        rows.push(LatencyRow {
            name,
            q,
            lost,
            idle: Some(idle),
        });
    }
    for (qi, label) in ["p50", "p99", "p99.9"].iter().enumerate() {
        r.latency
            .push(Point::of((*label).to_owned(), "kernel", &kernel.0[qi]));
    }
    rows.insert(
        1,
        LatencyRow {
            name: "kernel",
            q: kernel.0,
            lost: kernel.1,
            idle: None,
        },
    );
    let _ = writeln!(
        md,
        "\n## Request/response latency at a fixed rate\n\n\
         UDP echo from client-a (node A) through the ClusterIP 10.96.0.40 to web-b (node B) and \
         back, underlay MTU {}, {} requests per second for {secs} s, one request outstanding; \
         round trips in µs \
         (hdrhistogram), median of {} runs of each kxdp mode (range), each run beside one \
         of the kernel's, the two alternating (the kernel's row: all {} of its runs; each \
         mode's ratio: to the median of the kernel's runs beside it). kxdp's agents in \
         their defaults (adaptive mode: a worker spins for 2 ms after its last frame, then \
         sleeps in poll(2); one worker pinned to the last core the agent may use, node-a's \
         agent on core 0 and node-b's on core 1, as on two machines), then adaptive with \
         every core and its worker unpinned (`--cores none`), wakeup (a worker sleeps in \
         poll(2) whenever its rings are empty) and busy-poll (it never sleeps), these two \
         pinned as by default. The clients run on the same cores (a spinning worker whose \
         rings are empty yields the core). *Idle*: the CPU each agent process used while no \
         traffic ran, before its mode's runs ({IDLE_SECS} s, after {IDLE_SETTLE_SECS} s without \
         traffic; every thread's `schedstat`, both agents' mean); the kernel path has no process to \
         idle.\n\n\
         | path | p50 | p99 | p99.9 | lost | idle, % of a core |\n|---|---:|---:|---:|---:|---:|",
        c.mtu,
        a.rps,
        a.latency_runs,
        ratios.len() * a.latency_runs
    );
    let us = |v: f64| format!("{v:.0}");
    for LatencyRow {
        name,
        q,
        lost,
        idle,
    } in &rows
    {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {lost} | {} |",
            spread(&q[0], us),
            spread(&q[1], us),
            spread(&q[2], us),
            idle.map_or("–".to_owned(), |f| format!("{:.2}", 100.0 * f))
        );
    }
    for (name, k) in &ratios {
        let _ = writeln!(
            md,
            "| **{name} / kernel** | **{:.2}x** | **{:.2}x** | **{:.2}x** | | |",
            k[0], k[1], k[2]
        );
        r.targets.push((
            format!("p99 latency no worse than the kernel ({name})"),
            format!("{:.2}x (p99.9: {:.2}x)", k[1], k[2]),
            k[1] <= 1.0,
        ));
    }
    println!("  latency done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threads_run_time_is_schedstats_first_field() {
        assert_eq!(parse_schedstat("123684 1278615 2\n"), Some(123_684));
        assert_eq!(parse_schedstat(""), None);
        // This process has run.
        assert!(cpu_ns(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn perf_report_lines_give_share_kind_and_symbol() {
        let text = "\n    12.34%  [k] veth_xmit\n     9.50%  [.] kxdp_xdp::runtime::run_worker\n\
                    #\n  0.01%  [k] native_irq_return_iret\n";
        assert_eq!(
            parse_perf_report(text),
            vec![
                (12.34, true, "veth_xmit".to_owned()),
                (9.5, false, "kxdp_xdp::runtime::run_worker".to_owned()),
                (0.01, true, "native_irq_return_iret".to_owned()),
            ]
        );
    }
}
