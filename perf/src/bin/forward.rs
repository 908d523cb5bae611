//! Packets per second kxdp forwards between two namespaces, next to a bare AF_XDP forwarder on
//! the same sockets and the same path, for each frame size, in one run.
//!
//! Topology (namespaces this program creates; all removed when it ends, however it ends):
//!
//! ```text
//!   gen (pod A) --veth-- node: kxdp on pod0 and uplink --veth, MTU 1600-- sink (as node B)
//! ```
//!
//! The generator (`kxdp_perf::generator`: the perf XDP program through `BPF_PROG_RUN` live
//! frames, or AF_XDP where the kernel refuses those, pinned to `--gen-core`; the table says
//! which ran) sends UDP from pod A to kube-system/dns's ClusterIP (10.96.0.53:53) over
//! `--flows` source ports. The node's one worker (busy-poll, pinned to `--worker-core`) either
//! runs kxdp's pipeline, which DNATs each datagram to the backend on node B and encapsulates it
//! in VXLAN toward the sink, or is the bare forwarder, which swaps the MAC addresses and sends
//! the frame out of the uplink. The sink's XDP program counts and drops. On veth, the receive
//! side of each hop runs on the sending core: the node's XDP steering and the copy into the
//! UMEM on the generator's core, the sink's XDP on the worker's.
//!
//! Every (size, forwarder) pair runs `--runs` times, alternating; the table gives the median
//! forwarded rate with its range, the generator's offered rate, and kxdp's share of the bare
//! forwarder's rate. Frame sizes are without the FCS.
//!
//! `forward [--seconds S] [--runs R] [--flows F] [--sizes 64,1500] [--gen-core G]
//! [--worker-core W]`; needs root.

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use kxdp_dataplane::conntrack::ConntrackConfig;
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::tables::SnapshotInputs;
use kxdp_dataplane::{process_batch, DropReason, Snapshot};
use kxdp_perf::baseline::mac_swap;
use kxdp_perf::generator::{Generator, Means};
use kxdp_perf::in_namespace;
use kxdp_perf::programs::PerfPrograms;
use kxdp_perf::stats::{median, range};
use kxdp_testkit::Topology;
use kxdp_tests::node::mac_text;
use kxdp_tests::testbed::{missing_privilege, Testbed};
use kxdp_xdp::runtime::{Config, Dataplane, Managed};
use kxdp_xdp::worker::{BatchFn, Mode};
use kxdp_xdp::{enter_netns, ifindex, pin_current_thread};

/// The command line.
struct Args {
    seconds: f64,
    runs: usize,
    flows: u32,
    sizes: Vec<usize>,
    gen_core: usize,
    worker_core: usize,
}

const USAGE: &str = "usage: forward [--seconds S] [--runs R] [--flows F] [--sizes 64,1500] \
                     [--gen-core G] [--worker-core W]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 3.0,
        runs: 3,
        flows: 1024,
        sizes: vec![64, 1500],
        gen_core: 0,
        worker_core: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}\n{USAGE}");
        match flag.as_str() {
            "--seconds" => {
                a.seconds = value.parse().map_err(|_| bad("seconds"))?;
                if !(0.1..=600.0).contains(&a.seconds) {
                    return Err(bad("0.1 to 600 seconds"));
                }
            }
            "--runs" => a.runs = value.parse().map_err(|_| bad("a count"))?,
            "--flows" => a.flows = value.parse().map_err(|_| bad("a count"))?,
            "--gen-core" => a.gen_core = value.parse().map_err(|_| bad("a core number"))?,
            "--worker-core" => a.worker_core = value.parse().map_err(|_| bad("a core number"))?,
            "--sizes" => {
                a.sizes = value
                    .split(',')
                    .map(|s| s.parse().ok().filter(|n| (60..=1514).contains(n)))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("frame sizes from 60 to 1514, comma-separated"))?;
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.runs == 0 || a.flows == 0 || a.flows > 50_000 {
        return Err(format!(
            "--runs must be positive, --flows 1 to 50000\n{USAGE}"
        ));
    }
    Ok(a)
}

/// The two forwarders measured, on the same sockets and worker loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarder {
    /// The bare forwarder ([`mac_swap`]): MAC swap, out of the uplink.
    Bare,
    /// kxdp's pipeline.
    Kxdp,
}

impl Forwarder {
    /// What the worker runs on each batch.
    fn batch_fn(self) -> BatchFn {
        match self {
            Forwarder::Bare => mac_swap,
            Forwarder::Kxdp => process_batch,
        }
    }
}

/// One measurement.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Frames per second the sink received.
    forwarded: f64,
    /// Frames per second the generator sent.
    offered: f64,
    /// Mean size of the frames the sink received.
    sink_bytes: f64,
    /// How the generator sent.
    means: Means,
}

/// The perf harness's setup: the testbed and what runs on it.
struct Bench {
    args: Args,
    t: Topology,
    inputs: SnapshotInputs,
    node_ns: String,
    gen_ns: String,
    sink: PerfPrograms,
}

/// Frames per generator call: 100-300 ms of traffic. Each call also pays the kernel's set-up
/// and tear-down of its page pool, which sleeps (tens of ms here): with 64k-frame calls the
/// generator idled two thirds of the time and offered less than the forwarders could take.
const BURST: u32 = 1 << 20;

impl Bench {
    /// The generator's template: pod A to the DNS ClusterIP, `size` bytes, no UDP checksum.
    fn frame(&self, size: usize) -> Vec<u8> {
        let mut spec = self.t.from_pod_a(self.t.dns_cluster_ip);
        spec.udp_checksum = false;
        spec.udp(10_000, 53, &vec![0x6b; size - 42])
    }

    fn measure(&self, size: usize, forwarding: Forwarder) -> Result<Sample, String> {
        let config = Config {
            netns: Some(self.node_ns.clone()),
            workers: vec![Some(self.args.worker_core)],
            mode: Mode::BusyPoll,
            forwarding: forwarding.batch_fn(),
            conntrack: ConntrackConfig {
                capacity: 1 << 17,
                ..ConntrackConfig::default()
            },
            max_run: Some(Duration::from_secs_f64(self.args.seconds + 60.0)),
            ..Config::default()
        };
        let snapshot = Snapshot::build(self.inputs.clone()).map_err(|e| e.to_string())?;
        let ifaces = vec![
            Managed::pod("pod0", self.t.pod_a.iface),
            Managed::uplink("uplink", self.t.node.uplink),
        ];
        let dp = Dataplane::start(config, ifaces, snapshot)?;
        let frame = self.frame(size);
        let stop = AtomicBool::new(false);
        let window = Duration::from_secs_f64(self.args.seconds);
        let (forwarded, sink_bytes, offered, means) = std::thread::scope(|s| {
            // Returns the frames it sent, for how long and by what means.
            let generator = s.spawn(|| -> Result<(u64, f64, Means), String> {
                enter_netns(&self.gen_ns).map_err(|e| e.to_string())?;
                pin_current_thread(self.args.gen_core)
                    .map_err(|e| format!("pinning the generator: {e}"))?;
                let mut generator = Generator::new("eth0", &frame, self.args.flows)?;
                let (started, mut sent) = (Instant::now(), 0u64);
                while !stop.load(Relaxed) {
                    sent += u64::from(generator.send(BURST)?);
                }
                Ok((sent, started.elapsed().as_secs_f64(), generator.means()))
            });
            let sample = (|| -> Result<(f64, f64), String> {
                std::thread::sleep(Duration::from_millis(500));
                let read = || self.sink.sink_counts().map_err(|e| e.to_string());
                let ((f0, b0), t0) = (read()?, Instant::now());
                std::thread::sleep(window);
                let ((f1, b1), t1) = (read()?, Instant::now());
                let secs = (t1 - t0).as_secs_f64();
                Ok((
                    (f1 - f0) as f64 / secs,
                    (b1 - b0) as f64 / (f1 - f0).max(1) as f64,
                ))
            })();
            stop.store(true, Relaxed);
            let generated = generator
                .join()
                .map_err(|_| "the generator panicked".to_owned())?;
            let (sent, secs, means) = generated?;
            sample.map(|(f, b)| (f, b, sent as f64 / secs, means))
        })?;
        let sample = Sample {
            forwarded,
            offered,
            sink_bytes,
            means,
        };
        let io = dp.io();
        let counters = dp.finish()?;
        if std::env::var_os("KXDP_PERF_DEBUG").is_some() {
            eprintln!("{size} {forwarding:?}: {sample:?} {io:?}");
        }
        // The pod's own IPv6 chatter (router solicitations) is dropped by name; nothing else
        // may be.
        let dropped =
            counters.event(Event::Dropped) - counters.drop(DropReason::UnsupportedEthertype);
        if forwarding == Forwarder::Kxdp && dropped > 0 {
            return Err(format!("kxdp dropped frames: {counters:?}"));
        }
        Ok(sample)
    }
}

fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if let Some(why) = missing_privilege() {
        return Err(format!("cannot run: {why}"));
    }
    Testbed::remove_namespaces_on_panic();
    let t = Topology::default();
    let mut tb =
        Testbed::pods_on_kxdp_node(&[(t.pod_a.ip, &mac_text(t.pod_a.mac))], t.node.gateway_ip)
            .map_err(|e| e.to_string())?;
    let sink_ns = tb
        .add_uplink_peer(
            0,
            "sink",
            (t.node.node_ips[0], &mac_text(t.node.uplink_mac)),
            (t.node_b.node_ip, &mac_text(t.node_b_mac)),
            1600,
        )
        .map_err(|e| e.to_string())?;
    // An uplink that carries a 1500-byte frame in VXLAN, and the pod at its MTU less 50, so
    // that the pod's veth takes 1500-byte frames.
    tb.set_underlay_mtu(1600).map_err(|e| e.to_string())?;
    let mut inputs = t.inputs();
    inputs.node.uplink_mtu = 1600;
    inputs.node.pod_mtu = 1550;
    let (sink, _attached) = in_namespace(&sink_ns, || {
        let progs = PerfPrograms::load().map_err(|e| e.to_string())?;
        let index = ifindex("eth0").map_err(|e| e.to_string())?;
        let attached = progs.attach_sink(index).map_err(|e| e.to_string())?;
        Ok((progs, attached))
    })?;
    let bench = Bench {
        node_ns: tb.nodes[0].ns.clone(),
        gen_ns: tb.nodes[0].pods[0].ns.clone(),
        inputs,
        t,
        sink,
        args,
    };
    let a = &bench.args;
    println!(
        "# kxdp vs a bare AF_XDP forwarder: {} flows, {} runs of {} s each, generator on core {}, worker on core {}\n",
        a.flows, a.runs, a.seconds, a.gen_core, a.worker_core
    );
    println!("| frame (bytes) | bare forwarder (Mpps) | kxdp: DNAT + VXLAN encap (Mpps) | kxdp / bare | offered (Mpps) |");
    println!("|---:|---:|---:|---:|---:|");
    let mut generators = std::collections::BTreeSet::new();
    for &size in &a.sizes {
        let (mut bare, mut kxdp, mut offered) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.runs {
            let b = bench.measure(size, Forwarder::Bare)?;
            let k = bench.measure(size, Forwarder::Kxdp)?;
            // What arrived must be what each forwarder makes: the frame as sent, or the frame
            // in 50 bytes of VXLAN.
            if (b.sink_bytes - size as f64).abs() > 0.5
                || (k.sink_bytes - (size + 50) as f64).abs() > 0.5
            {
                return Err(format!("the sink saw frames of {:.1} (bare) and {:.1} (kxdp) bytes for {size}-byte frames", b.sink_bytes, k.sink_bytes));
            }
            bare.push(b.forwarded);
            kxdp.push(k.forwarded);
            offered.extend([b.offered, k.offered]);
            generators.extend([b.means.name(), k.means.name()]);
        }
        let range = |v: &[f64]| {
            let (lo, hi) = range(v);
            format!("{}–{}", mpps(lo), mpps(hi))
        };
        let (rb, rk) = (range(&bare), range(&kxdp));
        let (mb, mk) = (median(&bare), median(&kxdp));
        println!(
            "| {size} | {} ({rb}) | {} ({rk}) | {:.0}% | {} |",
            mpps(mb),
            mpps(mk),
            100.0 * mk / mb,
            mpps(median(&offered)),
        );
    }
    let generators: Vec<&str> = generators.into_iter().collect();
    println!("\ngenerator: {}", generators.join(", "));
    drop(tb);
    Ok(())
}

fn main() -> ExitCode {
    kxdp_perf::exit("forward", run())
}
