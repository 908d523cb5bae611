//! `perf/run` (`make perf`): kxdp against the kernel path it replaces (flannel's VXLAN and
//! kube-proxy's nftables rules, with conntrack), side by side in one run, with the ceiling of
//! the same veth path (XDP redirect, and a bare AF_XDP forwarder on kxdp's own sockets).
//!
//! Four measurements, each repeated `--runs` times with the paths alternating, reported as the
//! median with the range:
//!
//! 1. **Forwarded packets per second at saturation**, through a ClusterIP across nodes: a pod
//!    sends UDP to kube-system/dns's ClusterIP, whose backend is on node B; node A DNATs and
//!    encapsulates it in VXLAN toward node B. Topology per path:
//!
//!    ```text
//!    gen (pod) --veth-- node A --uplink veth-- sink (stands for node B: counts, drops)
//!    ```
//!
//!    Node A is either a kxdp node (plain pod veth, kxdp on pod0 and uplink, one busy-poll
//!    worker pinned to `--worker-core`) or a kernel node built as flannel builds one (`cni0`
//!    bridge, `flannel.1`, routes, neighbour and forwarding entries) with kube-proxy's nftables
//!    rules for the same services ([`kxdp_perf::kube_proxy`]), conntrack included. The ceilings
//!    run on kxdp's node: an XDP program redirecting pod0 to the uplink, and the bare AF_XDP
//!    forwarder.
//!
//!    Generators, pinned to `--gen-core`: the perf XDP program through `BPF_PROG_RUN` live
//!    frames (4–6 Mpps here) for kxdp and the ceilings; and a generator of socket buffers for
//!    the kernel path, and for kxdp again so that one column compares the two with the same
//!    generator: the kernel's pktgen where `/proc/net/pktgen` exists ([`kxdp_perf::pktgen`];
//!    this machine's kernel has none), else trafgen (netsniff-ng, PACKET_MMAP). Live XDP
//!    frames cannot feed the kernel path: sent into a veth whose peer passes them to the
//!    stack, only the first 128 reached IP here. trafgen sends skbs, at 0.5–0.8 Mpps into
//!    kxdp, so that column is a lower bound for kxdp. On a veth the receiver's work runs on
//!    the sending core: node A's whole kernel path (bridge, netfilter, routing, VXLAN) runs on
//!    the generator's core, as do kxdp's XDP steering and copy into the UMEM; kxdp's worker
//!    has a core of its own.
//!
//!    Then, where `perf` is installed, a profile of the worker's core while kxdp and the bare
//!    forwarder run flat out (`perf record -e cpu-clock`), top symbols side by side.
//! 2. **CPU per packet** at a fixed offered rate below saturation (`--cpu-rate`, the skb
//!    generator for both paths): busy time of all cores from `/proc/stat`, minus the same
//!    generator at the same rate into an XDP drop on node A's pod veth, over the packets
//!    delivered. kxdp runs in wakeup mode here (a busy-poll worker costs a whole core at any
//!    rate, and an adaptive one spins between packets at this rate).
//! 3. **iperf3** between pods of two-node clusters, one run by `kxdp agent`s, one by the kernel
//!    as above: TCP pod to pod across nodes, TCP through a ClusterIP, UDP pod to pod.
//! 4. **Request/response latency** at a fixed rate (`--rps`): UDP echo through a ClusterIP to a
//!    pod on the other node, recorded in an hdrhistogram: p50, p99, p99.9; kxdp's agents in
//!    each worker mode (wakeup, adaptive, busy-poll).
//!
//! The report (markdown with the machine's description, and an SVG of throughput by packet
//! size and of latency percentiles) goes to stdout and to `--out DIR`.

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kxdp_control::compile::Compiler;
use kxdp_control::manifest::parse;
use kxdp_control::model::Model;
use kxdp_control::trace::trace_settings;
use kxdp_dataplane::conntrack::ConntrackConfig;
use kxdp_dataplane::tables::SnapshotInputs;
use kxdp_dataplane::{process_batch, Snapshot};
use kxdp_perf::baseline::mac_swap;
use kxdp_perf::in_namespace;
use kxdp_perf::kube_proxy::ruleset;
use kxdp_perf::programs::PerfPrograms;
use kxdp_perf::stats::{median, range};
use kxdp_testkit::Topology;
use kxdp_tests::clients::{iperf_rate, IperfServer};
use kxdp_tests::cluster::{AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::node::mac_text;
use kxdp_tests::testbed::{missing_privilege, Spec, Testbed};
use kxdp_xdp::runtime::{Config, Dataplane, Managed};
use kxdp_xdp::worker::Mode;
use kxdp_xdp::{enter_netns, ifindex, pin_current_thread, Attachment};

const USAGE: &str = "usage: compare [--long] [--seconds S] [--runs R] [--sizes 64,1500] \
                     [--flows 1,10000] [--cpu-rate PPS] [--rps N] [--gen-core G] \
                     [--worker-core W] [--out DIR] [--skip pps,profile,cpu,iperf,latency]";

/// The command line.
#[derive(Clone)]
struct Args {
    seconds: f64,
    runs: usize,
    sizes: Vec<usize>,
    flows: Vec<u32>,
    cpu_rate: u64,
    rps: u32,
    iperf_secs: u32,
    gen_core: usize,
    worker_core: usize,
    out: Option<PathBuf>,
    skip: Vec<String>,
    profile: &'static str,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 2.0,
        runs: 3,
        sizes: vec![64, 1500],
        flows: vec![1, 10_000],
        cpu_rate: 100_000,
        rps: 1000,
        iperf_secs: 3,
        gen_core: 0,
        worker_core: 1,
        out: None,
        skip: Vec::new(),
        profile: "short",
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        if flag == "--long" {
            a.seconds = 5.0;
            a.runs = 5;
            a.sizes = vec![64, 256, 512, 1024, 1500];
            a.iperf_secs = 10;
            a.profile = "long";
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}\n{USAGE}");
        let list = |what: &str| -> Result<Vec<u64>, String> {
            value
                .split(',')
                .map(|s| s.parse().map_err(|_| bad(what)))
                .collect()
        };
        match flag.as_str() {
            "--seconds" => {
                a.seconds = value.parse().map_err(|_| bad("seconds"))?;
                if !(0.5..=600.0).contains(&a.seconds) {
                    return Err(bad("0.5 to 600 seconds"));
                }
            }
            "--runs" => a.runs = value.parse().map_err(|_| bad("a count"))?,
            "--sizes" => {
                a.sizes = list("frame sizes")?
                    .into_iter()
                    .map(|n| n as usize)
                    .collect();
                if a.sizes.iter().any(|n| !(60..=1514).contains(n)) {
                    return Err(bad("frame sizes from 60 to 1514"));
                }
            }
            "--flows" => {
                a.flows = list("flow counts")?.into_iter().map(|n| n as u32).collect();
                if a.flows.iter().any(|n| !(1..=50_000).contains(n)) {
                    return Err(bad("flow counts from 1 to 50000"));
                }
            }
            "--cpu-rate" => a.cpu_rate = value.parse().map_err(|_| bad("packets per second"))?,
            "--rps" => a.rps = value.parse().map_err(|_| bad("requests per second"))?,
            "--gen-core" => a.gen_core = value.parse().map_err(|_| bad("a core number"))?,
            "--worker-core" => a.worker_core = value.parse().map_err(|_| bad("a core number"))?,
            "--out" => a.out = Some(value.into()),
            "--skip" => a.skip = value.split(',').map(str::to_owned).collect(),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.runs == 0 || a.cpu_rate == 0 || !(1..=100_000).contains(&a.rps) {
        return Err(format!(
            "--runs, --cpu-rate and --rps (at most 100000) must be positive\n{USAGE}"
        ));
    }
    Ok(a)
}

/// How a path forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// XDP redirect from the pod veth to the uplink: the ceiling of the veth path.
    Redirect,
    /// A bare AF_XDP forwarder (MAC swap) on kxdp's sockets and worker loop.
    Bare,
    /// kxdp: ClusterIP DNAT, conntrack, VXLAN encap.
    Kxdp,
    /// kxdp again, fed by the skb generator (pktgen or trafgen) as the kernel is.
    KxdpSkb,
    /// The kernel: bridge, kube-proxy's nftables rules, conntrack, flannel's VXLAN (all on the
    /// sending core, as a veth runs its receiver there).
    Kernel,
}

impl Path {
    const ALL: [Path; 5] = [
        Path::Redirect,
        Path::Bare,
        Path::Kxdp,
        Path::KxdpSkb,
        Path::Kernel,
    ];

    /// Whether the skb generator feeds it (the kernel path cannot take live XDP frames, see
    /// the module documentation), rather than the live-frames generator.
    fn skb_fed(self) -> bool {
        matches!(self, Path::KxdpSkb | Path::Kernel)
    }

    fn name(self) -> &'static str {
        match self {
            Path::Redirect => "XDP redirect (ceiling)",
            Path::Bare => "bare AF_XDP forwarder",
            Path::Kxdp => "kxdp",
            Path::KxdpSkb => "kxdp (skb generator)",
            Path::Kernel => "kernel: flannel VXLAN + kube-proxy nftables",
        }
    }

    /// Bytes the path adds to a frame (VXLAN encapsulation).
    fn overhead(self) -> f64 {
        match self {
            Path::Redirect | Path::Bare => 0.0,
            Path::Kxdp | Path::KxdpSkb | Path::Kernel => 50.0,
        }
    }
}

/// Frames per generator call at saturation (see `forward.rs`: each call pays the kernel's
/// page-pool set-up, so calls are long).
const BURST: u32 = 1 << 20;

/// One side of the packet-rate topology: a node A of either kind with its generator pod and
/// its sink.
struct Side {
    node_ns: String,
    gen_ns: String,
    sink: PerfPrograms,
    /// The sink's program, attached while the side exists.
    _sink_link: Attachment,
    /// The helper programs attached in the node's namespace (redirect, drop).
    node_progs: PerfPrograms,
    _tb: Testbed,
}

/// Both sides and what they share.
struct Bench {
    args: Args,
    /// Where generated frames go (an IPv4 address as a number).
    dst: std::sync::atomic::AtomicU32,
    t: Topology,
    inputs: SnapshotInputs,
    kxdp: Side,
    kernel: Side,
    /// The generator of socket buffers both paths take: pktgen where the kernel has it, else
    /// trafgen.
    skb_gen: SkbGen,
}

/// A generator that sends socket buffers into the pod's veth, which both paths can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SkbGen {
    /// The kernel's pktgen (`/proc/net/pktgen`).
    Pktgen,
    /// trafgen from netsniff-ng (PACKET_MMAP).
    Trafgen,
}

impl SkbGen {
    fn name(self) -> &'static str {
        match self {
            SkbGen::Pktgen => "pktgen",
            SkbGen::Trafgen => "trafgen",
        }
    }
}

/// A rate measurement.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    /// Frames per second the sink received.
    forwarded: f64,
    /// Frames per second the generator sent.
    offered: f64,
    /// Mean size of the frames the sink received.
    sink_bytes: f64,
    /// Busy core-seconds per second of all cores (from /proc/stat).
    busy_cores: f64,
}

impl Rate {
    /// The rate of a run that sent `sent` frames in `secs`, whose sink was sampled as
    /// [`sample_sink`] does.
    fn of(sample: Result<(f64, f64, f64), String>, sent: u64, secs: f64) -> Result<Rate, String> {
        let (forwarded, sink_bytes, busy_cores) = sample?;
        Ok(Rate {
            forwarded,
            offered: sent as f64 / secs,
            sink_bytes,
            busy_cores,
        })
    }
}

/// Busy and total jiffies of all cores.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// After half a second of warm-up, what `side`'s sink receives over `window`: frames per
/// second, mean frame size, and busy cores (all cores' busy time per second).
fn sample_sink(side: &Side, window: Duration) -> Result<(f64, f64, f64), String> {
    std::thread::sleep(Duration::from_millis(500));
    let read = || side.sink.sink_counts().map_err(|e| e.to_string());
    let ((f0, b0), c0, t0) = (read()?, cpu_jiffies(), Instant::now());
    std::thread::sleep(window);
    let ((f1, b1), c1, t1) = (read()?, cpu_jiffies(), Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    Ok((
        (f1 - f0) as f64 / secs,
        (b1 - b0) as f64 / (f1 - f0).max(1) as f64,
        (c1.0 - c0.0) as f64 / USER_HZ / secs,
    ))
}

/// /proc/stat counts in USER_HZ, which Linux fixes at 100 for user space.
const USER_HZ: f64 = 100.0;

impl Bench {
    fn side(&self, path: Path) -> &Side {
        if path == Path::Kernel {
            &self.kernel
        } else {
            &self.kxdp
        }
    }

    /// The generator's template: pod A to the current destination (the DNS ClusterIP, or the
    /// pod on node B), port 53, `size` bytes, no UDP checksum.
    fn frame(&self, size: usize) -> Vec<u8> {
        let dst = Ipv4Addr::from(self.dst.load(Relaxed));
        let mut spec = self.t.from_pod_a(dst);
        spec.udp_checksum = false;
        spec.udp(10_000, 53, &vec![0x6b; size - 42])
    }

    /// Start what forwards on `path` (kxdp's dataplane, or the redirect program); the kernel
    /// path is always on. `drop_only` puts an XDP drop on the pod veth instead (the CPU
    /// reference).
    fn start(&self, path: Path, busy_poll: bool) -> Result<Running, String> {
        let side = self.side(path);
        match path {
            Path::Kernel => Ok(Running::Nothing),
            Path::Redirect => in_namespace(&side.node_ns, || {
                let pod = ifindex("pod0").map_err(|e| e.to_string())?;
                let uplink = ifindex("uplink").map_err(|e| e.to_string())?;
                side.node_progs
                    .attach_redirect(pod, uplink)
                    .map(Running::Attached)
                    .map_err(|e| e.to_string())
            }),
            Path::Bare | Path::Kxdp | Path::KxdpSkb => {
                let config = Config {
                    netns: Some(side.node_ns.clone()),
                    workers: vec![Some(self.args.worker_core)],
                    mode: if busy_poll {
                        Mode::BusyPoll
                    } else {
                        Mode::Wakeup { timeout_ms: 50 }
                    },
                    forwarding: if path == Path::Bare {
                        mac_swap
                    } else {
                        process_batch
                    },
                    conntrack: ConntrackConfig {
                        capacity: 1 << 17,
                        ..ConntrackConfig::default()
                    },
                    max_run: Some(Duration::from_secs(300)),
                    ..Config::default()
                };
                let snapshot = Snapshot::build(self.inputs.clone()).map_err(|e| e.to_string())?;
                let ifaces = vec![
                    Managed::pod("pod0", self.t.pod_a.iface),
                    Managed::uplink(self.t.node.uplink),
                ];
                Dataplane::start(config, ifaces, snapshot).map(Running::Dataplane)
            }
        }
    }

    /// The CPU reference: the generator into an XDP drop on the kxdp node's pod veth.
    fn start_reference(&self) -> Result<Running, String> {
        in_namespace(&self.kxdp.node_ns, || {
            let pod = ifindex("pod0").map_err(|e| e.to_string())?;
            self.kxdp
                .node_progs
                .attach_sink(pod)
                .map(Running::Attached)
                .map_err(|e| e.to_string())
        })
    }

    /// Generate `size`-byte frames over `flows` flows on `side` for the window (flat out, or
    /// at `rate` frames per second), with the live-frames generator or, with `skb_gen`, the
    /// skb generator ([`SkbGen`]), and measure what its sink receives.
    fn rate(
        &self,
        side: &Side,
        size: usize,
        flows: u32,
        rate: Option<u64>,
        skb_gen: bool,
    ) -> Result<Rate, String> {
        if skb_gen {
            return match self.skb_gen {
                SkbGen::Pktgen => self.pktgen_rate(side, size, flows, rate),
                SkbGen::Trafgen => self.trafgen_rate(side, size, flows, rate),
            };
        }
        let frame = self.frame(size);
        let stop = AtomicBool::new(false);
        let window = Duration::from_secs_f64(self.args.seconds);
        std::thread::scope(|s| {
            let generator = s.spawn(|| -> Result<(u64, f64), String> {
                enter_netns(&side.gen_ns).map_err(|e| e.to_string())?;
                pin_current_thread(self.args.gen_core)
                    .map_err(|e| format!("pinning the generator: {e}"))?;
                let progs = PerfPrograms::load().map_err(|e| e.to_string())?;
                progs.set_flows(flows).map_err(|e| e.to_string())?;
                let index = ifindex("eth0").map_err(|e| e.to_string())?;
                let (started, mut sent) = (Instant::now(), 0u64);
                // At a fixed rate: a tenth of a second's frames every tenth of a second.
                let tick = Duration::from_millis(100);
                let mut next = Instant::now();
                while !stop.load(Relaxed) {
                    let burst = rate.map_or(BURST, |r| (r / 10).max(1) as u32);
                    progs
                        .generate(&frame, index, burst)
                        .map_err(|e| e.to_string())?;
                    sent += u64::from(burst);
                    if rate.is_some() {
                        next += tick;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                Ok((sent, started.elapsed().as_secs_f64()))
            });
            let sample = sample_sink(side, window);
            stop.store(true, Relaxed);
            let (sent, secs) = generator
                .join()
                .map_err(|_| "the generator panicked".to_owned())??;
            Rate::of(sample, sent, secs)
        })
    }

    /// [`Bench::rate`] with trafgen (netsniff-ng) as the generator, pinned to the generator's
    /// core: the same frame, over `flows` source ports (for more than one: the high byte of
    /// the port stepping through 40 values and the low byte random, about 10k flows), flat out
    /// or at `rate` frames per second.
    fn trafgen_rate(
        &self,
        side: &Side,
        size: usize,
        flows: u32,
        rate: Option<u64>,
    ) -> Result<Rate, String> {
        let frame = self.frame(size);
        let bytes: Vec<String> = frame
            .iter()
            .enumerate()
            .map(|(i, b)| match (i, flows > 1) {
                (34, true) => "dinc(0x27, 0x4e)".to_owned(),
                (35, true) => "drnd()".to_owned(),
                _ => format!("0x{b:02x}"),
            })
            .collect();
        let cfg =
            std::env::temp_dir().join(format!("kxdp-perf-trafgen-{}.cfg", std::process::id()));
        std::fs::write(&cfg, format!("{{ {} }}\n", bytes.join(", "))).map_err(|e| e.to_string())?;
        let secs = self.args.seconds + 1.0;
        let mut cmd = std::process::Command::new("timeout");
        cmd.args([
            "-s",
            "INT",
            &format!("{secs}"),
            "ip",
            "netns",
            "exec",
            &side.gen_ns,
        ])
        .args(["taskset", "-c", &self.args.gen_core.to_string()])
        .args(["trafgen", "-o", "eth0", "-P", "1", "--cpp", "-q", "-i"])
        .arg(&cfg);
        if let Some(r) = rate {
            cmd.args(["-b", &format!("{r}pps")]);
        }
        let started = Instant::now();
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("trafgen: {e} (install netsniff-ng: scripts/install-deps.sh)"))?;
        let sample = sample_sink(side, Duration::from_secs_f64(self.args.seconds));
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let elapsed = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&cfg);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let sent: u64 = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_suffix("packets outgoing")?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("trafgen said: {text}"))?;
        Rate::of(sample, sent, elapsed)
    }

    /// [`Bench::rate`] with the kernel's pktgen as the generator, on the generator core's
    /// kernel thread: the same frame over `flows` source ports ([`kxdp_perf::pktgen`]).
    fn pktgen_rate(
        &self,
        side: &Side,
        size: usize,
        flows: u32,
        rate: Option<u64>,
    ) -> Result<Rate, String> {
        use kxdp_perf::pktgen::{script, sent, Packets, DIR};
        let packets = Packets::of_frame(&self.frame(size))?;
        let shell = |script: &str| {
            std::process::Command::new("ip")
                .args(["netns", "exec", &side.gen_ns, "sh", "-c", script])
                .output()
                .map_err(|e| format!("pktgen: {e}"))
        };
        let setup = shell(&script("eth0", self.args.gen_core, &packets, flows, rate))?;
        if !setup.status.success() {
            return Err(format!(
                "setting up pktgen: {}",
                String::from_utf8_lossy(&setup.stderr)
            ));
        }
        // `start` returns when `stop` is written; the timeout bounds it if that fails.
        let started = Instant::now();
        let secs = self.args.seconds + 5.0;
        let running = std::process::Command::new("timeout")
            .args(["-s", "INT", &format!("{secs}"), "ip", "netns", "exec"])
            .args([&side.gen_ns, "sh", "-c"])
            .arg(format!("echo start > {DIR}/pgctrl"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("pktgen: {e}"))?;
        let sample = sample_sink(side, Duration::from_secs_f64(self.args.seconds));
        let stopped = shell(&format!("echo stop > {DIR}/pgctrl; cat {DIR}/eth0"));
        let elapsed = started.elapsed().as_secs_f64();
        let _ = running.wait_with_output();
        let status = String::from_utf8_lossy(&stopped?.stdout).into_owned();
        let sent = sent(&status).ok_or_else(|| format!("pktgen said: {status}"))?;
        Rate::of(sample, sent, elapsed)
    }

    /// One saturation run of `path`.
    fn saturate(&self, path: Path, size: usize, flows: u32) -> Result<Rate, String> {
        let running = self.start(path, true)?;
        let r = self.rate(self.side(path), size, flows, None, path.skb_fed());
        running.stop()?;
        if std::env::var_os("KXDP_PERF_DEBUG").is_some() {
            eprintln!("{path:?} {size} {flows}: {r:?}");
            if path == Path::Kernel {
                for cmd in [
                    "ip -s link",
                    "ip route",
                    "ip neigh",
                    "nft list chain ip kube-proxy services",
                    "bridge fdb show dev flannel.1",
                    "sysctl net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.cni0.rp_filter net.ipv4.conf.default.rp_filter",
                    "nstat -asz",
                ] {
                    let out = std::process::Command::new("ip")
                        .args(["netns", "exec", &self.kernel.node_ns])
                        .args(cmd.split(' '))
                        .output();
                    if let Ok(o) = out {
                        eprintln!("$ {cmd}\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                    }
                }
            }
        }
        let r = r?;
        let expected = size as f64 + path.overhead();
        if r.forwarded > 0.0 && (r.sink_bytes - expected).abs() > 0.5 {
            return Err(format!(
                "{}: the sink saw {:.1}-byte frames for {size}-byte frames (expected {expected})",
                path.name(),
                r.sink_bytes
            ));
        }
        Ok(r)
    }
}

/// What runs a path, stopped after a measurement.
enum Running {
    Nothing,
    Attached(Attachment),
    Dataplane(Dataplane),
}

impl Running {
    fn stop(self) -> Result<(), String> {
        match self {
            Running::Nothing => Ok(()),
            Running::Attached(a) => {
                drop(a);
                Ok(())
            }
            Running::Dataplane(dp) => dp.finish().map(|_| ()),
        }
    }
}

/// Build both node A's.
fn build(args: Args) -> Result<Bench, String> {
    let t = Topology::default();
    let mut inputs = t.inputs();
    inputs.node.uplink_mtu = 1600;
    let e = |e: kxdp_tests::testbed::TestbedError| e.to_string();
    // kxdp's node A.
    let mut tb =
        Testbed::pods_on_kxdp_node(&[(t.pod_a.ip, &mac_text(t.pod_a.mac))], t.node.gateway_ip)
            .map_err(e)?;
    let sink_ns = tb
        .add_uplink_peer(
            0,
            "sink",
            (t.node.node_ips[0], &mac_text(t.node.uplink_mac)),
            (t.node_b.node_ip, &mac_text(t.node_b_mac)),
            1600,
        )
        .map_err(e)?;
    let kxdp = side(tb, sink_ns)?;
    // The kernel's node A, serving the same services.
    let (tb, sink_ns) = Testbed::flannel_node_with_uplink_peer(
        (t.pod_a.ip, &mac_text(t.pod_a.mac)),
        (t.node.gateway_ip, &mac_text(t.node.gateway_mac)),
        (
            t.node.node_ips[0],
            &mac_text(t.node.uplink_mac),
            &mac_text(t.node.vtep_mac),
        ),
        (t.node_b.node_ip, &mac_text(t.node_b_mac)),
        (
            t.node_b.pod_cidr.network().address(),
            &mac_text(t.node_b.vtep_mac),
        ),
        1600,
    )
    .map_err(e)?;
    let snapshot = Snapshot::build(inputs.clone()).map_err(|e| e.to_string())?;
    tb.exec_with_input(&tb.nodes[0].ns, &["nft", "-f", "-"], &ruleset(&snapshot))
        .map_err(e)?;
    let kernel = side(tb, sink_ns)?;
    Ok(Bench {
        args,
        dst: std::sync::atomic::AtomicU32::new(u32::from(t.dns_cluster_ip)),
        t,
        inputs,
        kxdp,
        kernel,
        skb_gen: if kxdp_perf::pktgen::available() {
            SkbGen::Pktgen
        } else {
            SkbGen::Trafgen
        },
    })
}

fn side(tb: Testbed, sink_ns: String) -> Result<Side, String> {
    let node_ns = tb.nodes[0].ns.clone();
    let gen_ns = tb.nodes[0].pods[0].ns.clone();
    let (sink, sink_link) = in_namespace(&sink_ns, || {
        let progs = PerfPrograms::load().map_err(|e| e.to_string())?;
        let index = ifindex("eth0").map_err(|e| e.to_string())?;
        let attached = progs.attach_sink(index).map_err(|e| e.to_string())?;
        Ok((progs, attached))
    })?;
    let node_progs = PerfPrograms::load().map_err(|e| e.to_string())?;
    Ok(Side {
        node_ns,
        gen_ns,
        sink,
        _sink_link: sink_link,
        node_progs,
        _tb: tb,
    })
}

/// The report being written.
struct Report {
    md: String,
    /// (size, flows, destination, path, median Mpps) for the plot.
    pps: Vec<(usize, u32, &'static str, Path, f64)>,
    /// (path name, p50, p99, p99.9 in µs) for the plot.
    latency: Vec<(String, [f64; 3])>,
    /// The issue's targets: (target, what was measured, met).
    targets: Vec<(String, String, bool)>,
}

fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

fn spread(v: &[f64], f: impl Fn(f64) -> String) -> String {
    let (lo, hi) = range(v);
    format!("{} ({}–{})", f(median(v)), f(lo), f(hi))
}

fn measure_pps(b: &Bench, r: &mut Report) -> Result<(), String> {
    let a = &b.args;
    let _ = writeln!(
        r.md,
        "## Forwarded packets per second at saturation\n\n\
         UDP from a pod to a ClusterIP whose backend is on node B (DNAT, conntrack and VXLAN \
         encapsulation on node A), or straight to a pod on node B (VXLAN only); the ceilings \
         forward the frame unchanged. Mpps. Median of {} runs of {} s with \
         the range; the offered rate is the generator's.\n",
        a.runs, a.seconds
    );
    let _ = writeln!(
        r.md,
        "| frame | to | flows | XDP redirect | bare AF_XDP | kxdp | kxdp ({g}) | kernel ({g}) | kxdp / kernel, same generator | kxdp / bare | offered: live / {g} |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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
    for &size in &a.sizes {
        for &(to, dst, flows) in &targets {
            b.dst.store(u32::from(dst), Relaxed);
            let mut got: Vec<Vec<f64>> = vec![Vec::new(); Path::ALL.len()];
            let (mut live, mut skb) = (Vec::new(), Vec::new());
            for _ in 0..a.runs {
                for (i, path) in Path::ALL.iter().enumerate() {
                    let s = b.saturate(*path, size, flows)?;
                    got[i].push(s.forwarded);
                    if path.skb_fed() {
                        skb.push(s.offered);
                    } else {
                        live.push(s.offered);
                    }
                }
            }
            let m: Vec<f64> = got.iter().map(|v| median(v)).collect();
            for (i, path) in Path::ALL.iter().enumerate() {
                r.pps.push((size, flows, to, *path, m[i] / 1e6));
            }
            let _ = writeln!(
                r.md,
                "| {size} | {to} | {flows} | {} | {} | {} | {} | {} | {:.2}x | {:.0}% | {} / {} |",
                spread(&got[0], mpps),
                spread(&got[1], mpps),
                spread(&got[2], mpps),
                spread(&got[3], mpps),
                spread(&got[4], mpps),
                m[3] / m[4].max(1.0),
                100.0 * m[2] / m[1].max(1.0),
                mpps(median(&live)),
                mpps(median(&skb)),
            );
            if to == "ClusterIP" {
                same_gen.push(m[3] / m[4].max(1.0));
                of_bare.push(m[2] / m[1].max(1.0));
            }
            println!("  pps: {size} B to a {to}, {flows} flows done");
        }
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

fn measure_profile(b: &Bench, r: &mut Report) -> Result<(), String> {
    let perf = std::process::Command::new("perf").arg("--version").output();
    if !perf.is_ok_and(|o| o.status.success()) {
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

fn measure_cpu(b: &Bench, r: &mut Report) -> Result<(), String> {
    let a = &b.args;
    let size = 64;
    let flows = *a.flows.last().unwrap_or(&1);
    b.dst.store(u32::from(b.t.dns_cluster_ip), Relaxed);
    let (mut reference, mut kxdp, mut kernel) = (Vec::new(), Vec::new(), Vec::new());
    let (mut kx_rate, mut k_rate) = (Vec::new(), Vec::new());
    for _ in 0..a.runs {
        let running = b.start_reference()?;
        // The reference drops on node A's pod veth: nothing reaches the sink, so count what
        // was offered.
        let rf = b.rate(&b.kxdp, size, flows, Some(a.cpu_rate), true);
        running.stop()?;
        let rf = rf?;
        reference.push(rf.busy_cores / rf.offered.max(1.0));
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

/// The services of the two-node comparison: the demo's, and a UDP echo ClusterIP served by
/// web-b.
const ECHO: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\n\
spec: {type: ClusterIP, clusterIP: 10.96.0.40, ports: [{name: echo, protocol: UDP, port: 7, targetPort: 7007}]}\n\
---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-1\n  namespace: default\n  labels: {kubernetes.io/service-name: echo}\n\
addressType: IPv4\nports: [{name: echo, protocol: UDP, port: 7007}]\n\
endpoints:\n  - {addresses: [10.244.2.10], nodeName: node-b, conditions: {ready: true}}\n";

/// The two-node clusters: pod namespaces by demo pod name, and what keeps them alive.
enum Cluster {
    Kxdp(Box<AgentCluster>),
    Kernel(Testbed),
}

impl Cluster {
    fn pod_ns(&self, name: &str) -> String {
        match self {
            Cluster::Kxdp(c) => c.pod(name).ns.clone(),
            Cluster::Kernel(tb) => {
                let (_, node, ip) = DEMO_PODS.iter().find(|p| p.0 == name).expect("a demo pod");
                tb.nodes[*node]
                    .pods
                    .iter()
                    .find(|p| p.ip == *ip)
                    .expect("the pod")
                    .ns
                    .clone()
            }
        }
    }
}

fn clusters() -> Result<(Cluster, Cluster), String> {
    let manifest = format!("{DEMO_MANIFEST}{ECHO}");
    let mut kx = AgentCluster::build(&manifest, &DEMO_PODS)?;
    kx.start(600, &[])?;
    // The kernel cluster: flannel-style nodes with the same addresses, kube-proxy's rules for
    // the same services on both.
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 2,
        pods_per_node: 2,
        external: false,
    })
    .map_err(|e| e.to_string())?;
    for (i, node) in ["node-a", "node-b"].iter().enumerate() {
        let mut model = Model::new();
        for (_, o) in parse("demo", &manifest).map_err(|e| e.to_string())? {
            model.apply(&o).map_err(|e| e.to_string())?;
        }
        let settings = trace_settings(
            &model,
            node,
            kxdp_control::model::parse_cidr("10.244.0.0/16").expect("a CIDR"),
            kxdp_control::model::parse_cidr("10.96.0.0/12").expect("a CIDR"),
        );
        let snap = Compiler::new(settings)
            .compile(&mut model)
            .map_err(|e| e.to_string())?
            .snapshot;
        tb.exec_with_input(&tb.nodes[i].ns, &["nft", "-f", "-"], &ruleset(&snap))
            .map_err(|e| e.to_string())?;
    }
    Ok((Cluster::Kxdp(Box::new(kx)), Cluster::Kernel(tb)))
}

fn measure_iperf(a: &Args, pair: &(Cluster, Cluster), r: &mut Report) -> Result<(), String> {
    let _ = writeln!(
        r.md,
        "\n## iperf3 between pods (two-node clusters)\n\n\
         One run by `kxdp agent`s (wakeup mode, one worker each), one by the kernel as above; \
         the same pods, addresses and services. {} s per run, median of {} runs (range). UDP \
         offered at 2 Gbit/s in datagrams of the path MTU (iperf3's default); the rate received is what counts.\n\n\
         | test | kxdp (Gbit/s) | kernel (Gbit/s) | kxdp / kernel |\n|---|---:|---:|---:|",
        a.iperf_secs, a.runs
    );
    let tests = [
        ("TCP client-a → web-b (across nodes)", "10.244.2.10", false),
        (
            "TCP client-a → ClusterIP 10.96.0.20 → web-b",
            "10.96.0.20",
            false,
        ),
        ("UDP client-a → web-b (across nodes)", "10.244.2.10", true),
    ];
    for (name, server, udp) in tests {
        let mut got = [Vec::new(), Vec::new()];
        for _ in 0..a.runs {
            for (i, c) in [&pair.0, &pair.1].into_iter().enumerate() {
                let _server = IperfServer::start(&c.pod_ns("web-b"), 5201);
                std::thread::sleep(Duration::from_millis(300));
                let bps = iperf_rate(
                    &c.pod_ns("client-a"),
                    server,
                    5201,
                    udp.then_some("2G"),
                    a.iperf_secs,
                );
                got[i].push(bps / 1e9);
            }
        }
        let g = |v: f64| format!("{v:.2}");
        let _ = writeln!(
            r.md,
            "| {name} | {} | {} | {:.2}x |",
            spread(&got[0], g),
            spread(&got[1], g),
            median(&got[0]) / median(&got[1]).max(f64::MIN_POSITIVE)
        );
    }
    println!("  iperf3 done");
    Ok(())
}

/// UDP echo through the echo ClusterIP at `rps` requests per second for `secs`: the
/// round-trip histogram (µs) and the requests lost.
fn echo_latency(c: &Cluster, rps: u32, secs: f64) -> Result<(Histogram<u64>, u64), String> {
    let stop = AtomicBool::new(false);
    let server_ns = c.pod_ns("web-b");
    let client_ns = c.pod_ns("client-a");
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

/// Restart the kxdp cluster's agents with workers in `mode` (`busy-poll` or `adaptive`),
/// node-a's on core 0 and node-b's on core 1.
fn restart_agents(c: &mut Cluster, mode: &str) -> Result<(), String> {
    let Cluster::Kxdp(c) = c else {
        return Ok(());
    };
    let manifest = c.manifest.display().to_string();
    for node in 0..2 {
        c.stop(node)?;
        let core = node.to_string();
        c.start_node(
            node,
            600,
            &["--manifest", &manifest, "--mode", mode, "--cores", &core],
        )?;
    }
    for node in 0..2 {
        c.wait_ready(node, Duration::from_secs(30))?;
    }
    Ok(())
}

fn measure_latency(a: &Args, pair: &mut (Cluster, Cluster), r: &mut Report) -> Result<(), String> {
    let secs = a.seconds.max(2.0);
    let mut rows = Vec::new();
    for name in [
        "kxdp, wakeup",
        "kernel",
        "kxdp, adaptive",
        "kxdp, busy-poll",
    ] {
        if let Some(mode) = name.strip_prefix("kxdp, ").filter(|m| *m != "wakeup") {
            restart_agents(&mut pair.0, mode)?;
        }
        let c = if name == "kernel" { &pair.1 } else { &pair.0 };
        let mut q = [Vec::new(), Vec::new(), Vec::new()];
        let mut lost = 0;
        for _ in 0..a.runs {
            let (h, l) = echo_latency(c, a.rps, secs)?;
            lost += l;
            for (v, p) in q.iter_mut().zip([0.5, 0.99, 0.999]) {
                v.push(h.value_at_quantile(p) as f64);
            }
        }
        let m = [median(&q[0]), median(&q[1]), median(&q[2])];
        r.latency.push((name.to_owned(), m));
        rows.push((name, q, lost));
    }
    let _ = writeln!(
        r.md,
        "\n## Request/response latency at a fixed rate\n\n\
         UDP echo from client-a (node A) through the ClusterIP 10.96.0.40 to web-b (node B) and \
         back, {} requests per second for {secs} s, one request outstanding; round trips in µs \
         (hdrhistogram), median of {} runs (range). kxdp's agents in wakeup mode (their \
         default: a worker sleeps in poll(2) when idle), then in adaptive mode (a worker spins \
         for 200 µs after its last frame, then sleeps) and in busy-poll mode, both with \
         node-a's worker on core 0 and node-b's on core 1, the cores the clients also run on \
         (a spinning worker whose rings are empty yields the core).\n\n\
         | path | p50 | p99 | p99.9 | lost |\n|---|---:|---:|---:|---:|",
        a.rps, a.runs
    );
    let us = |v: f64| format!("{v:.0}");
    for (name, q, lost) in &rows {
        let _ = writeln!(
            r.md,
            "| {name} | {} | {} | {} | {lost} |",
            spread(&q[0], us),
            spread(&q[1], us),
            spread(&q[2], us)
        );
    }
    let kern = r.latency[1].1;
    for (name, k) in r.latency.iter().filter(|l| l.0 != "kernel") {
        let _ = writeln!(
            r.md,
            "| **{name} / kernel** | **{:.2}x** | **{:.2}x** | **{:.2}x** | |",
            k[0] / kern[0].max(1.0),
            k[1] / kern[1].max(1.0),
            k[2] / kern[2].max(1.0)
        );
        r.targets.push((
            format!("p99 latency no worse than the kernel ({name})"),
            format!(
                "{:.2}x (p99.9: {:.2}x)",
                k[1] / kern[1].max(1.0),
                k[2] / kern[2].max(1.0)
            ),
            k[1] <= kern[1],
        ));
    }
    println!("  latency done");
    Ok(())
}

/// The machine this ran on.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem:.0} GiB, Linux {}; load average before the run: {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The SVG: throughput by frame size per path (many flows), and latency percentiles.
fn svg(r: &Report, flows: u32) -> String {
    let colors = ["#9aa5b1", "#52606d", "#d64545", "#f0b429", "#2680c2"];
    let mut s = String::new();
    let (w, h) = (900.0, 400.0);
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    // Left: Mpps by frame size.
    let sizes: Vec<usize> = {
        let mut v: Vec<usize> = r
            .pps
            .iter()
            .filter(|p| p.1 == flows && p.2 == "ClusterIP")
            .map(|p| p.0)
            .collect();
        v.dedup();
        v
    };
    let max = r.pps.iter().map(|p| p.4).fold(0.1, f64::max);
    let (x0, y0, ph, pw) = (50.0, 320.0, 260.0, 480.0);
    let _ = writeln!(s, "<text x=\"{x0}\" y=\"30\" font-size=\"14\">Forwarded Mpps by frame size ({flows} flows, ClusterIP across nodes)</text>");
    let _ = writeln!(
        s,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"black\"/>",
        x0 + pw
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = y0 - ph * f64::from(i) / 4.0;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">{v:.2}</text><line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/>", x0 - 5.0, x0 + pw);
    }
    let group = pw / sizes.len().max(1) as f64;
    for (gi, size) in sizes.iter().enumerate() {
        for (pi, path) in Path::ALL.iter().enumerate() {
            let v = r
                .pps
                .iter()
                .find(|p| p.0 == *size && p.1 == flows && p.2 == "ClusterIP" && p.3 == *path)
                .map_or(0.0, |p| p.4);
            let bw = group / 6.0;
            let x = x0 + group * gi as f64 + bw * (pi as f64 + 0.5);
            let bh = ph * v / max;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{}\"/>",
                y0 - bh,
                colors[pi]
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{size} B</text>",
            x0 + group * (gi as f64 + 0.5),
            y0 + 16.0
        );
    }
    for (pi, path) in Path::ALL.iter().enumerate() {
        let y = 350.0 + 0.0 * pi as f64;
        let x = x0 + 105.0 * pi as f64;
        let _ = writeln!(s, "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>", y, colors[pi], x + 14.0, y + 9.0, path.name().split(':').next().unwrap_or(""));
    }
    // Right: latency percentiles.
    let (lx, lw) = (620.0, 240.0);
    let lmax = r.latency.iter().flat_map(|l| l.1).fold(1.0, f64::max);
    let _ = writeln!(
        s,
        "<text x=\"{lx}\" y=\"30\" font-size=\"14\">UDP echo round trip (µs)</text>"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{lx}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"black\"/>",
        lx + lw
    );
    for (qi, q) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let group = lw / 3.0;
        for (li, (_, v)) in r.latency.iter().enumerate() {
            let bw = group / 5.0;
            let x = lx + group * qi as f64 + bw * (li as f64 + 0.5);
            let bh = ph * v[qi] / lmax;
            let color = [colors[2], colors[4], colors[0], colors[3]][li.min(3)];
            let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{:.0}</text>", y0 - bh, x + bw / 2.0, y0 - bh - 3.0, v[qi]);
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{q}</text>",
            lx + group * (qi as f64 + 0.5),
            y0 + 16.0
        );
    }
    for (li, (name, _)) in r.latency.iter().enumerate() {
        let y = 342.0 + 13.0 * li as f64;
        let _ = writeln!(s, "<rect x=\"{lx}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>", [colors[2], colors[4], colors[0], colors[3]][li.min(3)], lx + 14.0, y + 9.0);
    }
    s.push_str("</svg>\n");
    s
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if let Some(why) = missing_privilege() {
        return Err(format!("cannot run: {why}"));
    }
    Testbed::remove_namespaces_on_panic();
    for tool in ["nft"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            return Err(format!(
                "`{tool}` is not installed: run scripts/install-deps.sh"
            ));
        }
    }
    let started = Instant::now();
    let mut r = Report {
        md: String::new(),
        pps: Vec::new(),
        latency: Vec::new(),
        targets: Vec::new(),
    };
    let _ = writeln!(
        r.md,
        "# kxdp against the kernel path, side by side\n\n\
         Machine: {}.\n\nProfile `{}`; generator on core {}, kxdp's worker on core {}. \
         Reproduce: `make perf` (short) or `make perf PERF_ARGS=--long`.\n",
        machine(),
        args.profile,
        args.gen_core,
        args.worker_core
    );
    let skip = |what: &str| args.skip.iter().any(|s| s == what);
    let (do_pps, do_profile, do_cpu, do_iperf, do_latency) = (
        !skip("pps"),
        !skip("profile"),
        !skip("cpu"),
        !skip("iperf"),
        !skip("latency"),
    );
    let many = *args.flows.last().unwrap_or(&1);
    let out = args.out.clone();
    let iperf_args = args.clone();
    if do_pps || do_profile || do_cpu {
        println!("building the packet-rate topologies ...");
        let bench = build(args)?;
        if do_pps {
            measure_pps(&bench, &mut r)?;
        }
        if do_profile {
            measure_profile(&bench, &mut r)?;
        }
        if do_cpu {
            measure_cpu(&bench, &mut r)?;
        }
    }
    if do_iperf || do_latency {
        println!("building the two-node clusters ...");
        let mut pair = clusters()?;
        if do_iperf {
            measure_iperf(&iperf_args, &pair, &mut r)?;
        }
        if do_latency {
            measure_latency(&iperf_args, &mut pair, &mut r)?;
        }
    }
    if !r.targets.is_empty() {
        let _ = writeln!(
            r.md,
            "\n## Targets\n\n| target | measured | met |\n|---|---|---|"
        );
        for (t, m, ok) in &r.targets {
            let met = if *ok { "yes" } else { "**no**" };
            let _ = writeln!(r.md, "| {t} | {m} | {met} |");
        }
        if r.targets
            .iter()
            .any(|t| !t.2 && t.0.starts_with("p99 latency"))
        {
            let _ = writeln!(
                r.md,
                "\nWhat limits the latency, by mode. Wakeup: each of the four forwarding hops \
                 of a round trip (client → node A → node B → server, and back) wakes a worker \
                 sleeping in poll(2), while the kernel forwards inside the sender's softirq on \
                 a veth, with no thread to wake. Adaptive: a worker keeps spinning 200 µs after \
                 its last frame, so the answer finds both workers awake and only the request's \
                 two hops wake one. Busy-poll: no wakeups; a worker picks a frame up as it \
                 lands. What remains in the tail is this machine: with two cores, the spinning \
                 workers share them with the client, the server and their kernel work, and \
                 although an idle worker yields the core, a request now and then waits for the \
                 scheduler (p99.9). Wakeup and adaptive modes trade this latency for idle CPU; \
                 busy-poll with a core per worker is the mode for latency."
            );
        }
    }
    let _ = writeln!(
        r.md,
        "\nTotal time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    println!("\n{}", r.md);
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("report.md"), &r.md).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("report.svg"), svg(&r, many)).map_err(|e| e.to_string())?;
        println!("written: {}/report.md, report.svg", dir.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    kxdp_perf::exit("compare", run())
}

#[cfg(test)]
mod tests {
    use super::*;

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
