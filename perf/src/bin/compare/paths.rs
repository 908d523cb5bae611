//! The packet-rate topologies: node A of either kind (kxdp's, or the kernel's with flannel's
//! VXLAN and kube-proxy's rules) with its generator pod and its counting sink ([`Side`], both in
//! a [`Bench`]), the paths measured on them ([`Path`]), what runs a path ([`Running`]), and the
//! generators that drive them (live XDP frames, pktgen or trafgen) with the sink's sampling
//! ([`Rate`]). Everything here builds, starts, drives or reads; the measurements that combine
//! it into the report are in `measure.rs`.
//!
//! Offered and forwarded rates come from one window: the kernel's count of what the
//! generator's veth took (sent on to node A, or dropped there with node A's queue full) and
//! the sink's count, read at the same moments after a warm-up. A generator's own total over
//! its whole run (trafgen's "packets outgoing" over the process's life) includes its start,
//! when it sends little or nothing, and so reads lower than the rate the sink sees while it
//! runs, and would show kxdp forwarding more than was offered. The
//! generator's own rate is kept in the samples. IPv6 is off in these namespaces, so neither
//! count includes a link's IPv6 neighbour discovery and MLD reports.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use kxdp_dataplane::conntrack::ConntrackConfig;
use kxdp_dataplane::tables::SnapshotInputs;
use kxdp_dataplane::{process_batch, Snapshot};
use kxdp_perf::baseline::mac_swap;
use kxdp_perf::generator::{Generator, Means};
use kxdp_perf::in_namespace;
use kxdp_perf::kube_proxy::ruleset;
use kxdp_perf::programs::PerfPrograms;
use kxdp_testkit::Topology;
use kxdp_tests::node::mac_text;
use kxdp_tests::testbed::Testbed;
use kxdp_xdp::runtime::{Config, Dataplane, Managed};
use kxdp_xdp::worker::Mode;
use kxdp_xdp::{enter_netns, ifindex, pin_current_thread, Attachment};

use crate::args::Args;
use crate::settings::{capture, Device, SINK_ROLE};

/// How a path forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
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
    pub(crate) const ALL: [Path; 5] = [
        Path::Redirect,
        Path::Bare,
        Path::Kxdp,
        Path::KxdpSkb,
        Path::Kernel,
    ];

    /// Whether the skb generator feeds it (the kernel path cannot take live XDP frames, see
    /// the module documentation), rather than the live-frames generator.
    pub(crate) fn skb_fed(self) -> bool {
        matches!(self, Path::KxdpSkb | Path::Kernel)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Path::Redirect => "XDP redirect (ceiling)",
            Path::Bare => "bare AF_XDP forwarder",
            Path::Kxdp => "kxdp",
            Path::KxdpSkb => "kxdp (skb generator)",
            Path::Kernel => "kernel: flannel VXLAN + kube-proxy nftables",
        }
    }

    /// The plot's series for it (one colour per path across the panels).
    pub(crate) fn series(self) -> &'static str {
        match self {
            Path::Redirect => "XDP redirect (ceiling)",
            Path::Bare => "bare AF_XDP forwarder",
            Path::Kxdp => "kxdp",
            Path::KxdpSkb => "kxdp, skb generator",
            Path::Kernel => "kernel",
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
pub(crate) struct Side {
    node_ns: String,
    gen_ns: String,
    sink_ns: String,
    sink: PerfPrograms,
    /// The sink's program, attached while the side exists.
    _sink_link: Attachment,
    /// The helper programs attached in the node's namespace (redirect, drop).
    node_progs: PerfPrograms,
    tb: Testbed,
}

/// Both sides and what they share.
pub(crate) struct Bench {
    pub(crate) args: Args,
    /// Where generated frames go (an IPv4 address as a number).
    pub(crate) dst: std::sync::atomic::AtomicU32,
    pub(crate) t: Topology,
    inputs: SnapshotInputs,
    pub(crate) kxdp: Side,
    kernel: Side,
    /// The generator of socket buffers both paths take: pktgen where the kernel has it, else
    /// trafgen.
    pub(crate) skb_gen: SkbGen,
    /// What the other generator (of kxdp and the ceilings) used in its last run: live frames,
    /// or AF_XDP where the kernel refused them.
    pub(crate) own_gen: std::sync::Mutex<Option<Means>>,
}

/// A generator that sends socket buffers into the pod's veth, which both paths can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SkbGen {
    /// The kernel's pktgen (`/proc/net/pktgen`).
    Pktgen,
    /// trafgen from netsniff-ng (PACKET_MMAP).
    Trafgen,
}

impl SkbGen {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SkbGen::Pktgen => "pktgen",
            SkbGen::Trafgen => "trafgen",
        }
    }
}

/// A rate measurement.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rate {
    /// Frames per second the sink received.
    pub(crate) forwarded: f64,
    /// Frames per second the generator's veth took over the same window: sent on to node A,
    /// or dropped with node A's queue full.
    pub(crate) offered: f64,
    /// Of `offered`, frames per second dropped at the veth (node A's queue full).
    pub(crate) offered_dropped: f64,
    /// Frames per second by the generator's own count over its whole run, start included.
    pub(crate) generator_reported: f64,
    /// Mean size of the frames the sink received.
    sink_bytes: f64,
    /// Busy core-seconds per second of all cores (from /proc/stat).
    pub(crate) busy_cores: f64,
}

impl Rate {
    /// The rate of a run whose generator says it sent `sent` frames in `secs`, sampled as
    /// [`sample_sink`] does.
    fn of(sample: Result<Window, String>, sent: u64, secs: f64) -> Result<Rate, String> {
        let w = sample?;
        Ok(Rate {
            forwarded: w.forwarded,
            offered: w.offered,
            offered_dropped: w.offered_dropped,
            generator_reported: sent as f64 / secs,
            sink_bytes: w.sink_bytes,
            busy_cores: w.busy_cores,
        })
    }
}

/// What one window of [`sample_sink`] saw, per second.
struct Window {
    forwarded: f64,
    sink_bytes: f64,
    offered: f64,
    offered_dropped: f64,
    busy_cores: f64,
}

/// The transmit counters of the generator's `eth0` in namespace `ns` (packets, dropped), as
/// the kernel counts them (a veth's count includes what its peer took through XDP), and when
/// they were read (the middle of the read).
fn generator_tx(ns: &str) -> Result<(u64, u64, Instant), String> {
    let before = Instant::now();
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", "dev", "eth0"])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    let at = before + (Instant::now() - before) / 2;
    let (packets, dropped) = parse_tx_counters(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| format!("the generator's eth0 counters in {ns}: unreadable"))?;
    Ok((packets, dropped, at))
}

/// `ip -s -j link show dev X`'s transmit packets and drops.
fn parse_tx_counters(json: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let tx = &v[0]["stats64"]["tx"];
    Some((tx["packets"].as_u64()?, tx["dropped"].as_u64()?))
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

/// After half a second of warm-up, what `side`'s sink receives over `window` and what the
/// generator's veth took over the same window: frames per second, mean frame size, and busy
/// cores (all cores' busy time per second). The generator's counters are read right before
/// and right after each read of the sink's, and taken at the sink's read time between the two
/// (a read takes milliseconds, while the live generator sends in bursts).
fn sample_sink(side: &Side, window: Duration) -> Result<Window, String> {
    std::thread::sleep(Duration::from_millis(500));
    let read = || -> Result<_, String> {
        let before = generator_tx(&side.gen_ns)?;
        let (sink, cpu, at) = (
            side.sink.sink_counts().map_err(|e| e.to_string())?,
            cpu_jiffies(),
            Instant::now(),
        );
        let after = generator_tx(&side.gen_ns)?;
        Ok((sink, cpu, at, interpolate(before, after, at)))
    };
    let ((f0, b0), c0, t0, g0) = read()?;
    std::thread::sleep(window);
    let ((f1, b1), c1, t1, g1) = read()?;
    let secs = (t1 - t0).as_secs_f64();
    Ok(Window {
        forwarded: (f1 - f0) as f64 / secs,
        sink_bytes: (b1 - b0) as f64 / (f1 - f0).max(1) as f64,
        offered: (g1.0 - g0.0).max(0.0) / secs,
        offered_dropped: (g1.1 - g0.1).max(0.0) / secs,
        busy_cores: (c1.0 - c0.0) as f64 / USER_HZ / secs,
    })
}

/// The generator's counters (taken: packets and drops; dropped) at `at`, between two reads.
fn interpolate(
    (p0, d0, t0): (u64, u64, Instant),
    (p1, d1, t1): (u64, u64, Instant),
    at: Instant,
) -> (f64, f64) {
    let span = (t1 - t0).as_secs_f64();
    let share = if span > 0.0 {
        (at.saturating_duration_since(t0).as_secs_f64() / span).min(1.0)
    } else {
        0.5
    };
    let between = |a: u64, b: u64| a as f64 + (b as f64 - a as f64) * share;
    (between(p0 + d0, p1 + d1), between(d0, d1))
}

/// /proc/stat counts in USER_HZ, which Linux fixes at 100 for user space.
const USER_HZ: f64 = 100.0;

impl Bench {
    /// How the report names the generator of kxdp and the ceilings, as its last run used it.
    pub(crate) fn own_gen_name(&self) -> &'static str {
        match *self.own_gen.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(means) => means.name(),
            None => "not run",
        }
    }

    pub(crate) fn side(&self, path: Path) -> &Side {
        if path == Path::Kernel {
            &self.kernel
        } else {
            &self.kxdp
        }
    }

    /// The devices of `path`'s node A, its generator pod and its sink, as they are now (with
    /// the XDP programs of what runs `path` while it runs).
    pub(crate) fn devices(&self, path: Path) -> Result<Vec<Device>, String> {
        let side = self.side(path);
        capture(&side.tb, &[(side.sink_ns.clone(), SINK_ROLE)])
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
    pub(crate) fn start(&self, path: Path, busy_poll: bool) -> Result<Running, String> {
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
                    Managed::uplink("uplink", self.t.node.uplink),
                ];
                Dataplane::start(config, ifaces, snapshot)
                    .map(Running::Dataplane)
                    .map_err(String::from)
            }
        }
    }

    /// The CPU reference: the generator into an XDP drop on the kxdp node's pod veth.
    pub(crate) fn start_reference(&self) -> Result<Running, String> {
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
    pub(crate) fn rate(
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
            let generator = s.spawn(|| -> Result<(u64, f64, Means), String> {
                enter_netns(&side.gen_ns).map_err(|e| e.to_string())?;
                pin_current_thread(self.args.gen_core)
                    .map_err(|e| format!("pinning the generator: {e}"))?;
                let mut generator = Generator::new("eth0", &frame, flows)?;
                let (started, mut sent) = (Instant::now(), 0u64);
                // At a fixed rate: a tenth of a second's frames every tenth of a second.
                let tick = Duration::from_millis(100);
                let mut next = Instant::now();
                while !stop.load(Relaxed) {
                    let burst = rate.map_or(BURST, |r| (r / 10).max(1) as u32);
                    let mut queued = generator.send(burst)?;
                    // At a fixed rate every frame of the tick goes (AF_XDP takes a ring's
                    // worth per call).
                    while rate.is_some() && queued < burst && !stop.load(Relaxed) {
                        queued += generator.send(burst - queued)?;
                    }
                    sent += u64::from(queued);
                    if rate.is_some() {
                        next += tick;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                Ok((sent, started.elapsed().as_secs_f64(), generator.means()))
            });
            let sample = sample_sink(side, window);
            stop.store(true, Relaxed);
            let (sent, secs, means) = generator
                .join()
                .map_err(|_| "the generator panicked".to_owned())??;
            *self.own_gen.lock().unwrap_or_else(|e| e.into_inner()) = Some(means);
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
    pub(crate) fn saturate(&self, path: Path, size: usize, flows: u32) -> Result<Rate, String> {
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
pub(crate) enum Running {
    Nothing,
    Attached(Attachment),
    Dataplane(Dataplane),
}

impl Running {
    pub(crate) fn stop(self) -> Result<(), String> {
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
pub(crate) fn build(args: Args) -> Result<Bench, String> {
    let t = Topology::default();
    let mut inputs = t.inputs();
    // An uplink that carries a 1500-byte frame in VXLAN, and pods at its MTU less 50 on both
    // nodes (flannel's rule and kxdp's --pod-mtu default), so that both take 1500-byte frames.
    const UPLINK_MTU: u16 = 1600;
    inputs.node.uplink_mtu = UPLINK_MTU;
    inputs.node.pod_mtu = UPLINK_MTU - 50;
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
            UPLINK_MTU,
        )
        .map_err(e)?;
    tb.set_underlay_mtu(UPLINK_MTU).map_err(e)?;
    let kxdp = side(tb, sink_ns)?;
    // The kernel's node A, serving the same services.
    let (mut tb, sink_ns) = Testbed::flannel_node_with_uplink_peer(
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
        UPLINK_MTU,
    )
    .map_err(e)?;
    tb.set_underlay_mtu(UPLINK_MTU).map_err(e)?;
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
        own_gen: std::sync::Mutex::new(None),
    })
}

fn side(tb: Testbed, sink_ns: String) -> Result<Side, String> {
    let node_ns = tb.nodes[0].ns.clone();
    let gen_ns = tb.nodes[0].pods[0].ns.clone();
    // Only the generator's frames on the counted links.
    for ns in [&node_ns, &gen_ns, &sink_ns] {
        kxdp_perf::ipv4_only(ns)?;
    }
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
        sink_ns,
        sink,
        _sink_link: sink_link,
        node_progs,
        tb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_counters_are_its_transmit_packets_and_drops() {
        let json = r#"[{"ifindex":2,"ifname":"eth0","stats64":{"rx":{"bytes":0,"packets":3,"errors":0,"dropped":0},"tx":{"bytes":6400,"packets":100,"errors":0,"dropped":7,"carrier_errors":0,"collisions":0}}}]"#;
        assert_eq!(parse_tx_counters(json), Some((100, 7)));
        assert_eq!(parse_tx_counters("[]"), None);
        assert_eq!(parse_tx_counters(""), None);
    }

    #[test]
    fn the_generators_count_is_taken_at_the_sinks_read() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(10);
        let at = t0 + Duration::from_millis(4);
        assert_eq!(interpolate((100, 0, t0), (200, 10, t1), at), (144.0, 4.0));
        assert_eq!(interpolate((100, 0, t0), (100, 0, t0), t0), (100.0, 0.0));
    }
}
