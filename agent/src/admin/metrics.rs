//! `/metrics`: the Prometheus exposition of the agent's state and the dataplane's counters.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use kxdp_dataplane::counters::Event;
use kxdp_dataplane::reason::{DropReason, PassReason};
use kxdp_dataplane::tables::InterfaceId;
use kxdp_xdp::runtime::WorkerStats;
use kxdp_xdp::worker::{IoCounter, BATCH_BUCKETS};
use kxdp_xdp::XdpDecision;

use super::state::{lock, AdminState};

/// Update-latency histogram buckets, seconds (Prometheus `le`).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl AdminState {
    /// The Prometheus exposition.
    pub fn metrics(&self) -> String {
        let mut m = String::new();
        let status = self.status();
        let (c, io) = self.counters();
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = writeln!(
                m,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "kxdp_up",
            "1 while the dataplane runs",
            f64::from(u8::from(!self.stopped.load(Relaxed))),
        );
        gauge(
            "kxdp_ready",
            "1 once the first snapshot is live",
            f64::from(u8::from(status.ready)),
        );
        gauge(
            "kxdp_snapshot_generation",
            "generation of the live snapshot",
            status.generation as f64,
        );
        gauge(
            "kxdp_services",
            "service ports in the live snapshot",
            status.services as f64,
        );
        gauge(
            "kxdp_local_pods",
            "local pods in the live snapshot",
            status.local_pods as f64,
        );
        gauge(
            "kxdp_remote_nodes",
            "remote nodes in the live snapshot",
            status.remote_nodes as f64,
        );
        gauge(
            "kxdp_conntrack_flows",
            "flows in the conntrack table",
            status.conntrack.flows as f64,
        );
        gauge(
            "kxdp_conntrack_capacity",
            "the conntrack table's capacity",
            status.conntrack.capacity as f64,
        );
        gauge(
            "kxdp_conntrack_pressure",
            "flows over capacity (new flows fail as it nears 1)",
            status.conntrack.flows as f64 / status.conntrack.capacity.max(1) as f64,
        );
        gauge(
            "kxdp_neighbors_wanted",
            "underlay next hops needed",
            status.neighbors.needed as f64,
        );
        gauge(
            "kxdp_neighbors_resolved",
            "underlay next hops with a known MAC",
            status.neighbors.resolved as f64,
        );
        gauge(
            "kxdp_draining_endpoints",
            "endpoints gone from every service with flows left",
            status.draining_endpoints as f64,
        );
        gauge(
            "kxdp_problems",
            "objects left out of the tables",
            status.problems.len() as f64,
        );
        gauge(
            "kxdp_source_synced",
            "1 once the source listed everything",
            f64::from(u8::from(status.synced)),
        );
        let counter = |m: &mut String, name: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(m, "{name}{labels} {v}");
            }
        };
        counter(
            &mut m,
            "kxdp_source_errors_total",
            "source errors (each retried)",
            &[(String::new(), status.source_errors)],
        );
        counter(
            &mut m,
            "kxdp_snapshot_updates_total",
            "snapshots published",
            &[(String::new(), status.updates)],
        );
        let drops: Vec<(String, u64)> = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.name()),
                    c.drops[r.number() as usize],
                )
            })
            .collect();
        counter(
            &mut m,
            "kxdp_drops_total",
            "frames dropped, by reason",
            &drops,
        );
        let passes: Vec<(String, u64)> = PassReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.name()),
                    c.passes[r.number() as usize],
                )
            })
            .collect();
        counter(
            &mut m,
            "kxdp_to_host_total",
            "frames handed to the node's kernel, by reason",
            &passes,
        );
        let events: Vec<(String, u64)> = Event::ALL
            .iter()
            .map(|e| (format!("{{event=\"{}\"}}", e.name()), c.events[*e as usize]))
            .collect();
        let decisions = self.xdp_decisions();
        let xdp: Vec<(String, u64)> = XdpDecision::ALL
            .iter()
            .map(|d| {
                (
                    format!("{{decision=\"{}\"}}", d.name()),
                    decisions[usize::from(d.number())],
                )
            })
            .collect();
        counter(
            &mut m,
            "kxdp_xdp_decisions_total",
            "packets the XDP program steered to kxdp or passed to the kernel, by decision",
            &xdp,
        );
        counter(&mut m, "kxdp_events_total", "pipeline events", &events);
        let per_worker = |f: fn(&kxdp_xdp::worker::IoValues) -> u64| -> Vec<(String, u64)> {
            io.iter()
                .enumerate()
                .map(|(w, v)| (format!("{{worker=\"{w}\"}}"), f(v)))
                .collect()
        };
        counter(
            &mut m,
            "kxdp_worker_rx_frames_total",
            "frames received, per worker",
            &per_worker(|v| v.get(IoCounter::Rx)),
        );
        counter(
            &mut m,
            "kxdp_worker_tx_frames_total",
            "frames queued for transmission, per worker",
            &per_worker(|v| v.get(IoCounter::Tx)),
        );
        counter(
            &mut m,
            "kxdp_worker_tx_ring_full_total",
            "frames dropped for a full TX ring, per worker",
            &per_worker(|v| v.get(IoCounter::TxRingFull)),
        );
        counter(
            &mut m,
            "kxdp_worker_polls_total",
            "worker rounds",
            &per_worker(|v| v.get(IoCounter::Polls)),
        );
        counter(
            &mut m,
            "kxdp_worker_empty_polls_total",
            "worker rounds that found nothing",
            &per_worker(|v| v.get(IoCounter::EmptyPolls)),
        );
        let (mut rx, mut tx) = (Vec::new(), Vec::new());
        let workers: &[WorkerStats] = self.dataplane.get().map_or(&[], |d| &d.workers);
        for i in &status.interfaces {
            for (w, stats) in workers.iter().enumerate() {
                let (r, t) = stats.io.interface(InterfaceId(i.id));
                let labels = format!("{{interface=\"{}\",worker=\"{w}\"}}", i.name);
                rx.push((labels.clone(), r));
                tx.push((labels, t));
            }
        }
        counter(
            &mut m,
            "kxdp_interface_rx_frames_total",
            "frames received, per interface and worker",
            &rx,
        );
        counter(
            &mut m,
            "kxdp_interface_tx_frames_total",
            "frames queued for transmission, per interface and worker",
            &tx,
        );
        let _ = writeln!(
            m,
            "# HELP kxdp_batch_size frames per received batch\n# TYPE kxdp_batch_size histogram"
        );
        let mut cumulative = 0;
        for b in 0..BATCH_BUCKETS {
            cumulative += io.iter().map(|i| i.batch_sizes[b]).sum::<u64>();
            let _ = writeln!(
                m,
                "kxdp_batch_size_bucket{{le=\"{}\"}} {cumulative}",
                (2u64 << b) - 1
            );
        }
        let _ = writeln!(m, "kxdp_batch_size_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(m, "kxdp_batch_size_count {cumulative}");
        let _ = writeln!(
            m,
            "kxdp_batch_size_sum {}",
            io.iter().map(|i| i.get(IoCounter::Rx)).sum::<u64>()
        );
        let inner = lock(&self.inner);
        let _ = writeln!(
            m,
            "# HELP kxdp_snapshot_update_latency_seconds change noticed to snapshot live\n\
             # TYPE kxdp_snapshot_update_latency_seconds histogram"
        );
        for le in LATENCY_BUCKETS {
            let n = inner.latency_us.count_between(0, (le * 1e6) as u64);
            let _ = writeln!(
                m,
                "kxdp_snapshot_update_latency_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            m,
            "kxdp_snapshot_update_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
             kxdp_snapshot_update_latency_seconds_sum {}\n\
             kxdp_snapshot_update_latency_seconds_count {}",
            inner.latency_us.len(),
            inner.latency_sum.as_secs_f64(),
            inner.latency_us.len()
        );
        m
    }
}
