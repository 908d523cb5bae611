//! `perf/run` (`make perf`): kxdp against the kernel path it replaces (flannel's VXLAN and
//! kube-proxy's nftables rules, with conntrack), side by side in one run, with the ceiling of
//! the same veth path (XDP redirect, and a bare AF_XDP forwarder on kxdp's own sockets).
//!
//! The kernel path runs as a flannel node does, every offload at its default, and so do kxdp's
//! pods; only a kxdp node's uplink and the underlay port facing it (standing in for a NIC)
//! run without transmit checksum offload (`no_tx_offload` in the testbed says why). The report
//! opens with every setting that differs between the two paths, read off the topologies at
//! run time (`settings.rs`).
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
//!    frames (4–6 Mpps here; where the kernel refuses live frames, `kxdp_perf::generator`'s
//!    AF_XDP fallback, which offers far less) for kxdp and the ceilings; and a generator of socket buffers for
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
//!    as above, at every underlay MTU of `--mtus` (pods at 50 bytes less on both): TCP with one
//!    stream and with four, pod to pod on one node, across nodes and through a ClusterIP;
//!    Gbit/s and retransmits from iperf3's JSON; UDP pod to pod; and the kernel with transmit
//!    offload off on every veth (a weakened baseline) as one extra row (`iperf.rs`). Where
//!    kxdp cannot run (its agents do not start at an MTU), the rows say so. Where `perf` is
//!    installed, one more stream across nodes on each path with every core sampled, the
//!    samples put in categories by call stack (copies by their caller, the rest by stage) and
//!    given as CPU time per megabyte received (`stream_profile.rs`). Then, on kxdp's
//!    cluster with its agents stopped, the ceiling of the hop each segment kxdp sends to
//!    another node takes: datagrams of the underlay's MTU from node A's uplink into kxdp's
//!    sockets on node B's, as many as one core sends, as UDP GSO packets (kxdp's way) and
//!    as AF_XDP frames (`ceiling.rs`); and the ceiling of the one-node test, its iperf3 runs
//!    through a bare forwarder on kxdp's sockets and worker loop (`node_ceiling.rs`).
//! 4. **Request/response latency** at a fixed rate (`--rps`): UDP echo through a ClusterIP to a
//!    pod on the other node, recorded in an hdrhistogram: p50, p99, p99.9; kxdp's agents in
//!    each worker mode (adaptive pinned as by default, then adaptive unpinned, wakeup and
//!    busy-poll), each mode's runs alternating with the kernel's; before each mode's runs, the
//!    CPU its idle agents use.
//!
//! The report (markdown with the commit measured and the machine), goes to stdout and, with
//! `--out DIR`, to `DIR/report.md`, with its plot (`report.svg`: packets per second by frame
//! size, iperf3 by test, latency percentiles, each a median with its range) and every run of
//! every measurement (`samples.json`).
//!
//! The code, by concern: `args.rs` the command line; `paths.rs` the packet-rate topologies,
//! their paths and generators; `clusters.rs` the two-node clusters; `settings.rs` the devices'
//! settings; `measure.rs` packets per second, the profile, CPU and latency; `iperf.rs`
//! iperf3 and its targets; `stream_profile.rs` where the cores go in a stream across nodes; `ceiling.rs` the across-node hop's ceiling; `node_ceiling.rs` the one-node path's; `report.rs` the report's figures, samples and commit; `svg.rs` its plot; this file
//! the order they run in.

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

mod args;
mod ceiling;
mod clusters;
mod iperf;
mod measure;
mod node_ceiling;
mod paths;
mod report;
mod settings;
mod stream_profile;
mod svg;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use kxdp_tests::testbed::{missing_privilege, Testbed};

use crate::args::{parse_args, Args};
use crate::ceiling::{measure_ceiling, Ceiling};
use crate::clusters::clusters;
use crate::iperf::{measure_iperf_at, write_iperf};
use crate::measure::{measure_cpu, measure_latency, measure_pps, measure_profile};
use crate::node_ceiling::measure_node_ceiling;
use crate::paths::{build, Bench, Path};
use crate::report::Report;
use crate::settings::{capture, diff_table, Device};
use crate::stream_profile::{measure_stream_profile, write_stream_profiles};
use crate::svg::svg;
use kxdp_perf::provenance::{commit, machine};

/// The settings section's table for one comparison, and the differences it found.
fn settings_table(md: &mut String, what: &str, kernel: &[Device], kxdp: &[Device]) {
    let (table, differences) = diff_table(kernel, kxdp);
    let _ = writeln!(
        md,
        "\n### {what}\n\n{table}\nDiffering (kernel vs kxdp): {}.",
        if differences.is_empty() {
            "nothing".to_owned()
        } else {
            differences.join("; ")
        }
    );
}

/// The packet-rate topologies' devices: the kernel's node A as built, kxdp's while its
/// dataplane runs (with its XDP programs).
fn bench_settings(b: &Bench, md: &mut String) -> Result<(), String> {
    let kernel = b.devices(Path::Kernel)?;
    let running = b.start(Path::Kxdp, true)?;
    let kxdp = b.devices(Path::Kxdp);
    running.stop()?;
    settings_table(
        md,
        "Packet-rate topologies (node A, its generator pod, the sink)",
        &kernel,
        &kxdp?,
    );
    Ok(())
}

/// What differs between the paths besides their devices: how they forward, their workers and
/// pinning, segmentation, the VXLAN checksum.
fn path_settings(a: &Args) -> String {
    format!(
        "\nBesides the devices:\n\n\
         - **Forwarding.** Kernel: the `cni0` bridge, kube-proxy's nftables rules with \
           conntrack, routing and `flannel.1`, all in softirq on the sending core (a veth runs \
           its receiver there). kxdp: an XDP program on every veth steers frames to AF_XDP \
           sockets (copy mode on veth), and a user-space worker does conntrack, NAT, routing and \
           VXLAN.\n\
         - **Workers and pinning.** Two-node clusters: each `kxdp agent` with its defaults, \
           adaptive mode (2 ms spin) and one worker pinned to the last core the agent may use, \
           node-a's agent on core 0 and node-b's on core 1 (`taskset`), as if each node were a \
           machine; the kernel's nodes use both cores. For latency also adaptive with every \
           core and the worker unpinned (`--cores none`), wakeup and busy-poll. Packet-rate topologies: one \
           busy-poll worker pinned to core {w}, the generator to core {g}. The kernel has no \
           worker. iperf3 and the echo clients are unpinned on both paths.\n\
         - **Segmentation and coalescing.** Kernel pods send TCP in segments of up to 64 KiB \
           (TSO/GSO on their veths) that cross the veths, the bridge and `flannel.1` whole: on \
           veths nothing needs to cut them. kxdp's pod veths run without TSO (off on a veth \
           whose peer has an XDP program): pods send one MSS per segment (the pod MTU less 40 bytes) and kxdp's \
           worker handles each as a frame. In the two-node clusters kxdp's pods have an MTU \
           of 65535 (`--pod-mtu 65535`), so their TCP sends segments of up to 64 KiB too, as \
           frames of up to 18 AF_XDP buffers: kxdp delivers them whole on the node, cuts them \
           for the tunnel (software TSO, checksums computed while copying) and merges a pod's \
           incoming segments (software GRO, up to 18). Checksum offload stays on on kxdp's \
           pod veths: kxdp hands a pod's partial checksums on in AF_XDP TX metadata, so \
           neither the sender nor a receiver on the node sums them.\n\
         - **VXLAN outer UDP checksum.** `flannel.1`'s is in the table; kxdp writes zero \
           (its encapsulation template).\n\
         - **Pods' MTU.** Two-node clusters: the kernel's pods at the underlay's less 50 \
           (flannel's rule; its TCP still moves 64 KiB segments through veths and `cni0`); \
           kxdp's at 65535 (`--pod-mtu 65535`, the host interface too), which is what lets \
           its pods send large segments. Packet-rate topologies: the uplink's less 50 on \
           both.\n\
         - **The underlay** is the same for both: a namespace with a bridge standing in for \
           the physical network, every frame crossing it whole (a 64 KiB GSO packet of the \
           kernel's included, where a wire of the underlay's MTU would carry it cut: kxdp \
           cuts it before it leaves). The switch runs no bridge netfilter (a physical switch \
           has none; the kernel nodes' `cni0` keeps it, as kube-proxy needs).\n",
        w = a.worker_core,
        g = a.gen_core
    )
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
    let commit = commit(args.out.as_deref());
    let machine = machine();
    let mut r = Report::new();
    let mut settings_md = String::new();
    let skip = |what: &str| args.skip.iter().any(|s| s == what);
    let (do_pps, do_profile, do_cpu, do_iperf, do_latency) = (
        !skip("pps"),
        !skip("profile"),
        !skip("cpu"),
        !skip("iperf"),
        !skip("latency"),
    );
    let many = *args.flows.last().unwrap_or(&1);
    if do_pps || do_profile || do_cpu {
        println!("building the packet-rate topologies ...");
        let bench = build(args.clone())?;
        bench_settings(&bench, &mut settings_md)?;
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
        // Latency at 1500 where measured (the first MTU otherwise); without iperf3, only there.
        let latency_mtu = if args.mtus.contains(&1500) {
            1500
        } else {
            args.mtus[0]
        };
        let mut rows = Vec::new();
        let mut counters = Vec::new();
        let mut failures = Vec::new();
        let mut ceilings = Vec::new();
        let mut node_ceilings = Vec::new();
        let mut latency_md = String::new();
        let mut stream_profiles = Vec::new();
        for (i, &mtu) in args.mtus.iter().enumerate() {
            if !do_iperf && mtu != latency_mtu {
                continue;
            }
            println!("building the two-node clusters at underlay MTU {mtu} ...");
            let mut c = clusters(mtu)?;
            let kernel = capture(&c.kernel, &[])?;
            let kxdp = capture(&c.kxdp.tb, &[])?;
            settings_table(
                &mut settings_md,
                &format!("Two-node clusters at underlay MTU {mtu}"),
                &kernel,
                &kxdp,
            );
            if let Some(why) = &c.kxdp_failed {
                println!("  kxdp at MTU {mtu}: {why}");
                failures.push((mtu, why.clone()));
            }
            if do_iperf {
                measure_iperf_at(&args, &c, i == 0, &mut rows, &mut counters, &mut r)?;
                stream_profiles.push(measure_stream_profile(&args, &c, &mut r));
            }
            if do_latency && mtu == latency_mtu {
                measure_latency(&args, &mut c, &mut r, &mut latency_md)?;
            }
            if do_iperf && c.kxdp_failed.is_none() {
                // A failure here loses only the ceiling: the report says why.
                match measure_ceiling(&args, &mut c, &mut r) {
                    Ok(measured) => {
                        ceilings.extend(measured.into_iter().map(Ceiling::checked));
                        // The agents are stopped now: the one-node ceiling may use node A.
                        node_ceilings.push(measure_node_ceiling(&args, &c, &mut r).map_err(|e| {
                            println!("  ceiling on one node at MTU {mtu}: {e}");
                            (mtu, e)
                        }));
                    }
                    Err(e) => {
                        println!("  ceiling at MTU {mtu}: {e}");
                        ceilings.push(Err((mtu, e.clone())));
                        node_ceilings.push(Err((mtu, format!("the agents' stop failed: {e}"))));
                    }
                }
            }
        }
        if do_iperf {
            write_iperf(
                &args,
                &rows,
                &failures,
                &counters,
                &ceilings,
                &node_ceilings,
                &mut r,
            );
            write_stream_profiles(&stream_profiles, &mut r);
        }
        r.md.push_str(&latency_md);
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
                 a veth, with no thread to wake. Adaptive (the default): a worker keeps \
                 spinning 2 ms after its last frame, longer than the gap between requests at \
                 this rate, so no hop wakes one; at rates below one frame per 2 ms a request \
                 pays the wakeups. The default pins each node's worker to a core of its own, \
                 so the scheduler neither stacks the two spinning workers on one core nor \
                 moves them, as it may unpinned (`--cores none`). Busy-poll: no wakeups; a worker picks a \
                 frame up as it lands. What remains in the tail is this machine: with two cores, the spinning \
                 workers share them with the client, the server and their kernel work, and \
                 although an idle worker yields the core, a request now and then waits for the \
                 scheduler (p99.9). Above all, a worker whose core another task takes waits \
                 there: the other core is never idle while the other worker spins, so the \
                 scheduler does not move it. `perf sched` on this machine during a run: the \
                 kernel's memory monitor (kdamond) takes a core for 1 to 4 ms about every 0.4 s, \
                 and a request that meets it waits as long; the kernel path's client and server \
                 wake on whichever core is free, having no worker to wait for. Wakeup and \
                 adaptive modes trade this latency for idle CPU; busy-poll with a core per \
                 worker, away from other work, is the mode for latency."
            );
        }
    }
    let _ = writeln!(
        r.md,
        "\nTotal time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# kxdp against the kernel path, side by side\n\n\
         Commit `{commit}`. Machine: {machine}.\n\n\
         Profile `{}`; generator on core {}, kxdp's worker on core {}. Reproduce: `make perf` \
         (short) or `make perf PERF_ARGS=--long`. Every run of every measurement is in \
         `samples.json` beside this file; the plot is `report.svg`.\n\n\
         ## What differs between the two paths\n\n\
         The kernel path runs as a flannel node with kube-proxy runs it, every offload at its \
         default, and so do kxdp's pods; a kxdp node's uplink and the underlay port facing \
         it run without transmit checksum offload, standing in for a NIC that hands over \
         complete checksums. Devices as read at run time (`ip -d -j link`, \
         `ethtool -k`), by role; **bold**: differs between the paths.",
        args.profile, args.gen_core, args.worker_core
    );
    md.push_str(&settings_md);
    md.push_str(&path_settings(&args));
    md.push('\n');
    md.push_str(&r.md);
    println!("\n{md}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("report.md", &md)?;
        write(
            "report.svg",
            &svg(&r, many, &commit, args.runs, args.latency_runs),
        )?;
        write(
            "samples.json",
            &r.samples_json(&commit, &machine, args.profile),
        )?;
        println!(
            "written: {}/report.md, report.svg, samples.json",
            dir.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    kxdp_perf::exit("compare", run())
}
