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
//!
//! The code, by concern: `args.rs` the command line; `paths.rs` the packet-rate topologies,
//! their paths and generators; `clusters.rs` the two-node clusters; `measure.rs` the four
//! measurements; `report.rs` the report's text and figures; `svg.rs` its plot; this file the
//! order they run in.

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

mod args;
mod clusters;
mod measure;
mod paths;
mod report;
mod svg;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use kxdp_tests::testbed::{missing_privilege, Testbed};

use crate::args::parse_args;
use crate::clusters::clusters;
use crate::measure::{measure_cpu, measure_iperf, measure_latency, measure_pps, measure_profile};
use crate::paths::build;
use crate::report::{machine, Report};
use crate::svg::svg;

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
