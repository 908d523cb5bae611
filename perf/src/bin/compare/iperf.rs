//! iperf3 between pods of the two-node clusters, as users run it: the client's `--json`
//! report, TCP with one stream and with four (`-P 4`), pod to pod on one node, pod to pod
//! across nodes, and through a ClusterIP across nodes, at every underlay MTU of `--mtus`; and
//! UDP pod to pod across nodes at 2 Gbit/s offered (first MTU only). Per run: Gbit/s received,
//! and TCP's retransmits (`end.sum_sent.retransmits`) or UDP's loss, for kxdp and the kernel;
//! and one extra row for the kernel with transmit checksum offload off on every veth, as
//! kxdp's own pods run. A run that fails (kxdp's agents not started at this MTU, iperf3's
//! error, no report in time) is kept as its failure, shown in the report and the samples.
//! Around kxdp's runs at each MTU, its agents' counters say where its frames went: steered
//! to its sockets by the XDP program, taken by its workers, dropped by its pipeline
//! ([`KxdpCounters`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use kxdp_perf::iperf3::{parse, Run};
use kxdp_perf::stats::{median, range};
use kxdp_tests::clients::IperfServer;
use kxdp_tests::testbed::ip;
use serde_json::json;

use crate::args::Args;
use crate::ceiling::{write_ceilings, Ceiling, Means};
use crate::clusters::{Clusters, Which};
use crate::node_ceiling::{write_node_ceilings, NodeCeiling};
use crate::report::{Point, Report};

/// One test: what the client in client-a reaches.
pub(crate) struct Test {
    /// The report's name for it.
    pub(crate) name: &'static str,
    /// The plot's.
    pub(crate) short: &'static str,
    /// The demo pod serving it.
    server_pod: &'static str,
    /// The address the client connects to.
    addr: &'static str,
    udp: bool,
}

pub(crate) const TESTS: [Test; 4] = [
    Test {
        name: "TCP pod → pod, one node (client-a → web-a)",
        short: "one node",
        server_pod: "web-a",
        addr: "10.244.1.10",
        udp: false,
    },
    Test {
        name: "TCP pod → pod, across nodes (client-a → web-b)",
        short: "across nodes",
        server_pod: "web-b",
        addr: "10.244.2.10",
        udp: false,
    },
    Test {
        name: "TCP pod → ClusterIP 10.96.0.20 → pod, across nodes",
        short: "ClusterIP",
        server_pod: "web-b",
        addr: "10.96.0.20",
        udp: false,
    },
    Test {
        name: "UDP pod → pod, across nodes, 2 Gbit/s offered",
        short: "UDP",
        server_pod: "web-b",
        addr: "10.244.2.10",
        udp: true,
    },
];

/// How [`Clusters::kxdp_failed`] begins when kxdp's agents did not start (its runs are not
/// tried; the report says why once, under the table).
pub(crate) const NOT_STARTED: &str = "the agents did not start";

/// The paths a row compares.
pub(crate) const KXDP: &str = "kxdp";
pub(crate) const KERNEL: &str = "kernel";
pub(crate) const KERNEL_TX_OFF: &str = "kernel, tx offload off";

/// The runs of one test at one MTU and stream count.
pub(crate) struct Row {
    pub(crate) test: &'static Test,
    mtu: u16,
    streams: u32,
    pub(crate) kxdp: Vec<Result<Run, String>>,
    /// The kernel's runs, or with transmit offload off (`tx_off`).
    pub(crate) kernel: Vec<Result<Run, String>>,
    tx_off: bool,
}

/// What kxdp's agents counted over its runs at one MTU, both nodes together: the Prometheus
/// series of `/metrics` that say where frames went, as (series, increase).
pub(crate) struct KxdpCounters {
    pub(crate) mtu: u16,
    pub(crate) increase: BTreeMap<String, f64>,
}

/// The series of kxdp's `/metrics` that say where frames went.
const COUNTED: [&str; 7] = [
    "kxdp_xdp_decisions_total{decision=\"xsk_",
    "kxdp_worker_rx_frames_total",
    "kxdp_worker_tx_frames_total",
    "kxdp_worker_tx_ring_full_total",
    "kxdp_drops_total",
    "kxdp_worker_rx_ring_full_total",
    "kxdp_worker_rx_no_chunk_total",
];

/// Those series of a Prometheus text: (series with its labels, value).
fn counted(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| COUNTED.iter().any(|c| l.starts_with(c)))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Both agents' counted series, summed by series (the nodes' workers share labels).
fn kxdp_counters(c: &Clusters) -> BTreeMap<String, f64> {
    let mut sum = BTreeMap::new();
    for node in 0..2 {
        if let Ok((200, text)) = c.kxdp.metrics_get(node, "/metrics", Duration::from_secs(2)) {
            for (k, v) in counted(&text) {
                *sum.entry(k).or_insert(0.0) += v;
            }
        }
    }
    sum
}

impl KxdpCounters {
    /// The counters' increase from `before` to `after`, the series that grew.
    fn between(mtu: u16, before: &BTreeMap<String, f64>, after: BTreeMap<String, f64>) -> Self {
        let increase = after
            .into_iter()
            .map(|(k, v)| {
                let was = before.get(&k).copied().unwrap_or(0.0);
                (k, v - was)
            })
            .filter(|(_, d)| *d > 0.0)
            .collect();
        KxdpCounters { mtu, increase }
    }

    /// The sum of the series that start with `prefix`.
    fn total(&self, prefix: &str) -> f64 {
        self.increase
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            // A fold from +0: an empty sum of floats is -0, which prints as "-0".
            .fold(0.0, |sum, (_, v)| sum + v)
    }

    /// One sentence for the report.
    fn sentence(&self) -> String {
        let steered = self.total(COUNTED[0]);
        let taken = self.total(COUNTED[1]);
        let drops: Vec<String> = self
            .increase
            .iter()
            .filter_map(|(k, v)| {
                let reason = k.strip_prefix("kxdp_drops_total{reason=\"")?;
                Some(format!("{} {v:.0}", reason.trim_end_matches("\"}")))
            })
            .collect();
        format!(
            "kxdp's counters over its runs at underlay MTU {}, both nodes: {steered:.0} frames \
             steered to its sockets by the XDP program, {taken:.0} taken by its workers \
             ({:.0} lost between, which the kernel counted as {:.0} for a full RX ring and \
             {:.0} for want of a free chunk), {:.0} frames queued for transmission (a frame cut \
             for the tunnel counts each piece, segments merged for a pod count once), {:.0} not \
             queued for a full TX ring; dropped by the pipeline: {}.",
            self.mtu,
            (steered - taken).max(0.0),
            self.total(COUNTED[5]),
            self.total(COUNTED[6]),
            self.total(COUNTED[2]),
            self.total(COUNTED[3]),
            if drops.is_empty() {
                "none".to_owned()
            } else {
                drops.join(", ")
            }
        )
    }
}

/// Measure every test at the clusters' MTU (`first`: the first of `--mtus`, which also gets
/// the UDP test and the kernel with transmit offload off), adding the rows and samples, and
/// what kxdp's counters say about its runs.
pub(crate) fn measure_iperf_at(
    a: &Args,
    c: &Clusters,
    first: bool,
    rows: &mut Vec<Row>,
    counters: &mut Vec<KxdpCounters>,
    r: &mut Report,
) -> Result<(), String> {
    let mut cases: Vec<(&'static Test, u32, bool)> = Vec::new();
    for test in &TESTS {
        if test.udp {
            if first {
                cases.push((test, 1, false));
            }
            continue;
        }
        for streams in [1, 4] {
            cases.push((test, streams, false));
        }
    }
    if first {
        cases.push((&TESTS[1], 1, true));
    }
    let start = rows.len();
    for &(test, streams, tx_off) in &cases {
        rows.push(Row {
            test,
            mtu: c.mtu,
            streams,
            kxdp: Vec::new(),
            kernel: Vec::new(),
            tx_off,
        });
    }
    let before = kxdp_counters(c);
    for run in 0..a.runs {
        for (row, &(test, streams, tx_off)) in rows[start..].iter_mut().zip(&cases) {
            let kx = match &c.kxdp_failed {
                Some(why) if why.starts_with(NOT_STARTED) => Err(NOT_STARTED.to_owned()),
                _ => one_run(a, c, Which::Kxdp, test, streams),
            };
            if tx_off {
                c.kernel
                    .set_tx_offload_everywhere(false)
                    .map_err(|e| e.to_string())?;
            }
            let kernel = one_run(a, c, Which::Kernel, test, streams);
            if tx_off {
                c.kernel
                    .set_tx_offload_everywhere(true)
                    .map_err(|e| e.to_string())?;
            }
            let kernel_name = if tx_off { KERNEL_TX_OFF } else { KERNEL };
            for (path, result) in [(KXDP, &kx), (kernel_name, &kernel)] {
                r.samples
                    .push(sample(test, c.mtu, streams, path, run, result));
            }
            row.kxdp.push(kx);
            row.kernel.push(kernel);
        }
    }
    if c.kxdp_failed.is_none() {
        let k = KxdpCounters::between(c.mtu, &before, kxdp_counters(c));
        r.samples.push(json!({
            "measurement": "iperf3: kxdp's counters over its runs",
            "underlay_mtu": c.mtu,
            "increase": k.increase,
        }));
        counters.push(k);
    }
    println!("  iperf3 at MTU {} done", c.mtu);
    Ok(())
}

/// One client run of `test` with `streams` streams in cluster `which`, against a fresh
/// one-test server, bounded by the run's length and 15 s.
pub(crate) fn one_run(
    a: &Args,
    c: &Clusters,
    which: Which,
    test: &Test,
    streams: u32,
) -> Result<Run, String> {
    // Each run starts from no learnt path MTU: the UDP test's large datagrams are answered
    // with fragmentation needed, and the client's kernel would otherwise send the next TCP
    // runs to that pod in segments of the tunnel's MTU instead of its own.
    let client = c.pod_ns(which, "client-a");
    ip(Some(&client), &["route", "flush", "cache"]).map_err(|e| e.to_string())?;
    let _server = IperfServer::start(&c.pod_ns(which, test.server_pod), 5201);
    std::thread::sleep(Duration::from_millis(300));
    let secs = a.iperf_secs;
    let mut cmd = Command::new("timeout");
    cmd.arg((secs + 15).to_string())
        .args(["ip", "netns", "exec", &c.pod_ns(which, "client-a")])
        .args([
            "iperf3",
            "--json",
            "--connect-timeout",
            "3000",
            "-p",
            "5201",
        ])
        .args(["-c", test.addr, "-t", &secs.to_string()])
        .args(["-P", &streams.to_string()]);
    if test.udp {
        // Datagrams that fit the tunnel on both paths (see the report's text).
        cmd.args(["-u", "-b", "2G", "-l", "1400"]);
    }
    let out = cmd.output().map_err(|e| format!("iperf3: {e}"))?;
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// One run as a raw sample.
pub(crate) fn sample(
    test: &Test,
    mtu: u16,
    streams: u32,
    path: &str,
    run: usize,
    result: &Result<Run, String>,
) -> serde_json::Value {
    let mut s = json!({
        "measurement": "iperf3",
        "test": test.name,
        "underlay_mtu": mtu,
        "pod_mtu": if path.starts_with("kernel") {
            mtu - 50
        } else {
            crate::clusters::KXDP_POD_MTU
        },
        "streams": streams,
        "path": path,
        "run": run,
    });
    match result {
        Ok(x) => {
            s["received_gbit_s"] = json!(x.received_bps / 1e9);
            s["sent_gbit_s"] = json!(x.sent_bps / 1e9);
            s["retransmits"] = json!(x.retransmits);
            s["lost_percent"] = json!(x.lost_percent);
            s["congestion_control"] = json!(x.congestion);
        }
        Err(e) => s["error"] = json!(e),
    }
    s
}

/// The Gbit/s of the runs that gave a report, and what the others said.
fn rates(runs: &[Result<Run, String>]) -> (Vec<f64>, Vec<&str>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in runs {
        match r {
            Ok(x) => ok.push(x.received_bps / 1e9),
            Err(e) => failed.push(e.as_str()),
        }
    }
    (ok, failed)
}

/// A cell of Gbit/s: median (range), and the runs that failed.
pub(crate) fn gbps_cell(runs: &[Result<Run, String>]) -> String {
    let (ok, failed) = rates(runs);
    let mut cell = if ok.is_empty() {
        "—".to_owned()
    } else {
        let (lo, hi) = range(&ok);
        format!("{:.2} ({lo:.2}–{hi:.2})", median(&ok))
    };
    match failed.first() {
        Some(&NOT_STARTED) => cell.push_str(" (kxdp did not start: see below)"),
        Some(why) => {
            let _ = write!(
                cell,
                ", {} of {} runs failed: {why}",
                failed.len(),
                runs.len()
            );
        }
        None => {}
    }
    cell
}

/// A cell of retransmits (TCP) or loss (UDP): median (range) over the runs that gave one.
pub(crate) fn loss_cell(runs: &[Result<Run, String>]) -> String {
    let retr: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.as_ref().ok()?.retransmits.map(|n| n as f64))
        .collect();
    let lost: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.as_ref().ok()?.lost_percent)
        .collect();
    if !retr.is_empty() {
        let (lo, hi) = range(&retr);
        format!("{:.0} ({lo:.0}–{hi:.0})", median(&retr))
    } else if !lost.is_empty() {
        let sent: Vec<f64> = runs
            .iter()
            .filter_map(|r| Some(r.as_ref().ok()?.sent_bps / 1e9))
            .collect();
        format!("{:.1}% lost of {:.2} sent", median(&lost), median(&sent))
    } else {
        "—".into()
    }
}

/// The iperf3 section of the report, with the plot's points; `kxdp_failed` says, per MTU,
/// why kxdp's agents did not serve every pod.
pub(crate) fn write_iperf(
    a: &Args,
    rows: &[Row],
    kxdp_failed: &[(u16, String)],
    counters: &[KxdpCounters],
    ceilings: &[Result<Ceiling, (u16, String)>],
    node_ceilings: &[Result<NodeCeiling, (u16, String)>],
    r: &mut Report,
) {
    let _ = writeln!(
        r.md,
        "\n## iperf3 between pods (two-node clusters)\n\n\
         One cluster run by `kxdp agent`s with their defaults (adaptive mode, one worker \
         pinned to the last core the agent may use; node-a's agent on core 0, node-b's on \
         core 1), one by the kernel as a flannel node with kube-proxy runs it (every offload \
         at its default); the same pods, addresses and services. iperf3 `--json`, {} s per run, \
         median of {} runs (range), the paths alternating. Gbit/s is what the receiver got \
         (`end.sum_received`); retransmits are the sender's (`end.sum_sent.retransmits`) per \
         run; for UDP, the datagrams lost and the Gbit/s the client sent (medians). The \
         kernel's pods have the underlay's MTU less 50 (flannel's rule; the MTU column), \
         kxdp's 65535 (`--pod-mtu 65535`: large frames inside the node, cut for the tunnel \
         and merged toward pods). UDP is offered at 2 Gbit/s in \
         datagrams of 1400 bytes on both paths (`-l 1400`): iperf3's default sizes them from the \
         control connection's MSS, which would be about 64 KiB for kxdp's pods, sent with DF; \
         kxdp answers those with fragmentation needed, as a router does, and iperf3 stops on \
         the error that reaches its socket (*Message too long*). The row marked *kernel, tx offload off* is the \
         kernel path with transmit checksum offload (and with it TSO) off on every veth: shown \
         for what a weakened baseline would say, not as the comparison.\n\n\
         | test | MTU underlay / pods | streams | kxdp Gbit/s | kxdp retransmits | kernel Gbit/s | kernel retransmits | kxdp / kernel |\n\
         |---|---|---:|---:|---:|---:|---:|---:|",
        a.iperf_secs, a.runs
    );
    for row in rows {
        let (kx, _) = rates(&row.kxdp);
        let (k, _) = rates(&row.kernel);
        let ratio = if kx.is_empty() || k.is_empty() {
            "—".to_owned()
        } else {
            format!("{:.2}x", median(&kx) / median(&k).max(f64::MIN_POSITIVE))
        };
        let name = if row.tx_off {
            format!("{} — *{KERNEL_TX_OFF}*", row.test.name)
        } else {
            row.test.name.to_owned()
        };
        let _ = writeln!(
            r.md,
            "| {name} | {} / {} | {} | {} | {} | {} | {} | {ratio} |",
            row.mtu,
            row.mtu - 50,
            row.streams,
            gbps_cell(&row.kxdp),
            loss_cell(&row.kxdp),
            gbps_cell(&row.kernel),
            loss_cell(&row.kernel),
        );
        if !row.test.udp {
            for (series, runs) in [
                (KXDP, &row.kxdp),
                (if row.tx_off { KERNEL_TX_OFF } else { KERNEL }, &row.kernel),
            ] {
                if row.tx_off && series == KXDP {
                    continue;
                }
                let (ok, _) = rates(runs);
                let (lo, hi) = if ok.is_empty() {
                    (0.0, 0.0)
                } else {
                    range(&ok)
                };
                r.iperf.push(Point {
                    group: format!(
                        "{}, {} stream{}, MTU {}",
                        row.test.short,
                        row.streams,
                        if row.streams == 1 { "" } else { "s" },
                        row.mtu
                    ),
                    series,
                    median: median(&ok),
                    lo,
                    hi,
                    failed: ok.is_empty(),
                });
            }
        }
    }
    for k in counters {
        let _ = writeln!(r.md, "\n{}", k.sentence());
    }
    write_ceilings(rows, ceilings, r);
    write_node_ceilings(rows, node_ceilings, r);
    let measured: Vec<&Ceiling> = ceilings
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .filter(|c| c.means == Means::Gso)
        .collect();
    let on_node: Vec<&NodeCeiling> = node_ceilings
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .collect();
    iperf_targets(rows, &measured, &on_node, r);
    for (mtu, why) in kxdp_failed {
        let _ = writeln!(
            r.md,
            "\nAt underlay MTU {mtu} (pods {}), kxdp: {why}.",
            mtu - 50
        );
        if why.contains("Numerical result out of range") {
            let _ = writeln!(
                r.md,
                "That is the kernel refusing (`ERANGE`, `veth: Peer MTU is too large to set \
                 XDP`) an XDP program without multi-buffer support on a veth whose peer's MTU \
                 is above what one page holds (about 3.5 KiB): kxdp's XDP program is not \
                 multi-buffer (`xdp.frags`) in this build, so kxdp does not run at this MTU at \
                 all. NIC drivers (mlx5, ice, i40e) refuse such a program at jumbo MTUs too."
            );
        }
    }
}

/// The median Gbit/s of `runs`, if any gave one.
pub(crate) fn median_rate(runs: &[Result<Run, String>]) -> Option<f64> {
    let (ok, _) = rates(runs);
    (!ok.is_empty()).then(|| median(&ok))
}

/// The median retransmits of `runs`, if any gave a count.
fn median_retransmits(runs: &[Result<Run, String>]) -> Option<f64> {
    let retr: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.as_ref().ok()?.retransmits.map(|n| n as f64))
        .collect();
    (!retr.is_empty()).then(|| median(&retr))
}

/// The row of `test` at `mtu` with `streams`, against the kernel with its offloads.
pub(crate) fn row<'a>(rows: &'a [Row], test: &str, mtu: u16, streams: u32) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.test.name == test && r.mtu == mtu && r.streams == streams && !r.tx_off)
}

/// kxdp over the kernel in `row`, medians.
fn ratio(row: &Row) -> Option<f64> {
    Some(median_rate(&row.kxdp)? / median_rate(&row.kernel)?.max(f64::MIN_POSITIVE))
}

/// The throughput targets, with the ceiling where the path has one: across nodes at least
/// 0.5x the kernel at an underlay MTU of 1500 and 1.0x at 9000, on one node 0.6x, through a
/// ClusterIP no more than 10% below pod to pod, and no more retransmits than the kernel.
fn iperf_targets(rows: &[Row], ceilings: &[&Ceiling], on_node: &[&NodeCeiling], r: &mut Report) {
    let ceiling_of = |mtu: u16| ceilings.iter().find(|c| c.mtu == mtu);
    let node_ceiling_of = |mtu: u16| on_node.iter().find(|c| c.mtu == mtu);
    for mtu in [1500u16, 9000] {
        // (test, target, whether it crosses the hop the ceiling measures)
        for (test, want, across) in [
            (&TESTS[1], if mtu == 1500 { 0.5 } else { 1.0 }, true),
            (&TESTS[0], 0.6, false),
        ] {
            let target = format!(
                "iperf3 {}, underlay MTU {mtu}: kxdp / kernel ≥ {want:.1}x",
                test.short
            );
            // A row whose runs failed on either side has no ratio: the target is then not met.
            let measured_rows: Vec<(u32, Option<f64>)> = [1, 4]
                .iter()
                .filter_map(|&n| Some((n, ratio(row(rows, test.name, mtu, n)?))))
                .collect();
            if measured_rows.is_empty() {
                continue;
            }
            let found: Vec<(u32, f64)> = measured_rows
                .iter()
                .filter_map(|&(n, x)| Some((n, x?)))
                .collect();
            let mut measured = measured_rows
                .iter()
                .map(|(n, x)| {
                    let streams = format!("{n} stream{}", if *n == 1 { "" } else { "s" });
                    match x {
                        Some(x) => format!("{x:.2}x ({streams})"),
                        None => format!("none ({streams}: every run of a path failed)"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            if let (true, Some(c), Some(k)) = (
                across,
                ceiling_of(mtu),
                row(rows, test.name, mtu, 1).and_then(|row| median_rate(&row.kernel)),
            ) {
                let _ = write!(
                    measured,
                    "; the path's ceiling is {:.2}x the kernel's 1 stream",
                    c.median_gbps() / k.max(f64::MIN_POSITIVE)
                );
            }
            if let (false, Some(c)) = (across, node_ceiling_of(mtu)) {
                let of_kernel: Vec<String> = c
                    .runs
                    .iter()
                    .filter_map(|(n, runs)| {
                        let k = median_rate(&row(rows, test.name, mtu, *n)?.kernel)?;
                        let x = median_rate(runs)? / k.max(f64::MIN_POSITIVE);
                        Some(format!(
                            "{x:.2}x ({n} stream{})",
                            if *n == 1 { "" } else { "s" }
                        ))
                    })
                    .collect();
                if !of_kernel.is_empty() {
                    let _ = write!(
                        measured,
                        "; the path's ceiling (a bare forwarder) is {} the kernel's",
                        of_kernel.join(", ")
                    );
                }
            }
            r.targets.push((
                target,
                measured,
                found.len() == measured_rows.len() && found.iter().all(|(_, x)| *x >= want),
            ));
        }
        for streams in [1, 4] {
            let (Some(pod), Some(svc)) = (
                row(rows, TESTS[1].name, mtu, streams).and_then(|r| median_rate(&r.kxdp)),
                row(rows, TESTS[2].name, mtu, streams).and_then(|r| median_rate(&r.kxdp)),
            ) else {
                continue;
            };
            let share = svc / pod.max(f64::MIN_POSITIVE);
            r.targets.push((
                format!(
                    "kxdp through a ClusterIP no more than 10% below pod to pod across nodes, \
                     MTU {mtu}, {streams} stream{}",
                    if streams == 1 { "" } else { "s" }
                ),
                format!("{svc:.2} vs {pod:.2} Gbit/s ({:.0}%)", 100.0 * share),
                share >= 0.9,
            ));
        }
    }
    let (mut over, mut compared) = (Vec::new(), 0);
    for row in rows.iter().filter(|r| !r.tx_off && !r.test.udp) {
        if let (Some(kx), Some(k)) = (
            median_retransmits(&row.kxdp),
            median_retransmits(&row.kernel),
        ) {
            compared += 1;
            if kx > k {
                over.push(format!(
                    "{}, MTU {}, {} stream{}: {kx:.0} vs {k:.0}",
                    row.test.short,
                    row.mtu,
                    row.streams,
                    if row.streams == 1 { "" } else { "s" }
                ));
            }
        }
    }
    if compared > 0 {
        let measured = if over.is_empty() {
            format!("no more in any of {compared} rows (medians)")
        } else {
            format!("more in {}", over.join("; "))
        };
        r.targets.push((
            "TCP retransmits, kxdp no more than the kernel".to_owned(),
            measured,
            over.is_empty(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(gbps: f64, retr: u64) -> Result<Run, String> {
        Ok(Run {
            received_bps: gbps * 1e9,
            sent_bps: gbps * 1e9,
            retransmits: Some(retr),
            lost_percent: None,
            congestion: None,
        })
    }

    #[test]
    fn kxdp_counters_say_where_frames_went() {
        let before = counted(
            "# HELP kxdp_drops_total ...\n\
             kxdp_drops_total{reason=\"no_route\"} 2\n\
             kxdp_xdp_decisions_total{decision=\"xsk_pod\"} 10\n\
             kxdp_xdp_decisions_total{decision=\"pass_not_ipv4\"} 5\n",
        );
        assert_eq!(before.len(), 2, "{before:?}");
        let after = counted(
            "kxdp_drops_total{reason=\"no_route\"} 2\n\
             kxdp_drops_total{reason=\"too_big_for_tunnel\"} 3\n\
             kxdp_xdp_decisions_total{decision=\"xsk_pod\"} 110\n\
             kxdp_xdp_decisions_total{decision=\"xsk_vxlan\"} 50\n\
             kxdp_worker_rx_frames_total{worker=\"0\"} 140\n\
             kxdp_worker_tx_frames_total{worker=\"0\"} 137\n\
             kxdp_worker_tx_ring_full_total{worker=\"0\"} 4\n\
             kxdp_worker_rx_ring_full_total{worker=\"0\"} 7\n\
             kxdp_worker_rx_no_chunk_total{worker=\"0\"} 3\n",
        );
        let none = KxdpCounters::between(9000, &before, before.clone());
        assert!(
            none.sentence()
                .contains(", 0 frames queued for transmission"),
            "{}",
            none.sentence()
        );
        let k = KxdpCounters::between(1500, &before, after);
        assert_eq!(
            k.sentence(),
            "kxdp's counters over its runs at underlay MTU 1500, both nodes: 150 frames steered \
             to its sockets by the XDP program, 140 taken by its workers (10 lost between, which \
             the kernel counted as 7 for a full RX ring and 3 for want of a free chunk), 137 \
             frames queued for transmission (a frame cut for the tunnel counts each piece, \
             segments merged for a pod count once), 4 not queued for a full TX ring; dropped by the pipeline: too_big_for_tunnel 3."
        );
    }

    #[test]
    fn cells_show_the_median_the_range_and_the_failures() {
        let runs = vec![run(2.0, 5), run(3.0, 1), Err("iperf3: timed out".into())];
        assert_eq!(
            gbps_cell(&runs),
            "3.00 (2.00–3.00), 1 of 3 runs failed: iperf3: timed out"
        );
        assert_eq!(loss_cell(&runs), "5 (1–5)");
        let udp = vec![Ok(Run {
            received_bps: 0.6e9,
            sent_bps: 1.2e9,
            retransmits: None,
            lost_percent: Some(50.0),
            congestion: None,
        })];
        assert_eq!(loss_cell(&udp), "50.0% lost of 1.20 sent");
        let failed: Vec<Result<Run, String>> = vec![Err("no".into()), Err("no".into())];
        assert_eq!(gbps_cell(&failed), "—, 2 of 2 runs failed: no");
        assert_eq!(loss_cell(&failed), "—");
    }

    #[test]
    fn targets_judge_the_ratios_and_name_the_ceiling() {
        let row = |test: usize, streams: u32, kxdp: Result<Run, String>, kernel| Row {
            test: &TESTS[test],
            mtu: 1500,
            streams,
            kxdp: vec![kxdp],
            kernel: vec![kernel],
            tx_off: false,
        };
        let rows = [
            row(0, 1, run(10.0, 0), run(16.0, 800)),
            row(0, 4, Err("agent gone".into()), run(18.0, 900)),
            row(1, 1, run(3.0, 0), run(12.0, 200)),
            row(1, 4, run(2.5, 30), run(20.0, 20)),
            row(2, 1, run(2.8, 0), run(13.0, 200)),
        ];
        let ceiling = Ceiling {
            mtu: 1500,
            means: Means::Gso,
            fps: vec![350_000.0],
            sent: vec![350_000.0],
        };
        let on_node = NodeCeiling {
            mtu: 1500,
            runs: vec![(1, vec![run(12.0, 0)]), (4, vec![run(9.0, 0)])],
        };
        let mut r = Report::new();
        iperf_targets(&rows, &[&ceiling], &[&on_node], &mut r);
        let t: Vec<(&str, &str, bool)> = r
            .targets
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
            .collect();
        assert_eq!(
            t,
            [
                (
                    "iperf3 across nodes, underlay MTU 1500: kxdp / kernel ≥ 0.5x",
                    // 0.35 Mpps of 1398-byte segments: 3.91 Gbit/s, 0.33x the kernel's 12.
                    "0.25x (1 stream), 0.12x (4 streams); the path's ceiling is 0.33x the \
                     kernel's 1 stream",
                    false
                ),
                (
                    "iperf3 one node, underlay MTU 1500: kxdp / kernel ≥ 0.6x",
                    // The bare forwarder's 12 and 9 Gbit/s over the kernel's 16 and 18.
                    "0.62x (1 stream), none (4 streams: every run of a path failed); the \
                     path's ceiling (a bare forwarder) is 0.75x (1 stream), 0.50x (4 streams) \
                     the kernel's",
                    false
                ),
                (
                    "kxdp through a ClusterIP no more than 10% below pod to pod across nodes, \
                     MTU 1500, 1 stream",
                    "2.80 vs 3.00 Gbit/s (93%)",
                    true
                ),
                (
                    "TCP retransmits, kxdp no more than the kernel",
                    "more in across nodes, MTU 1500, 4 streams: 30 vs 20",
                    false
                ),
            ]
        );
    }
}
