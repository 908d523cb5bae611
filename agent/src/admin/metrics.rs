//! `/metrics`: the agent's state and the dataplane's counters in the Prometheus text format
//! (version 0.0.4), encoded by `prometheus-client`.
//!
//! Nothing is copied into metric objects as it happens: a [`Collector`] reads the agent's state,
//! the workers' counters and the admin listeners' connection tables when a scrape asks, and
//! [`super::process`] reads `/proc/self`. Every drop reason, pass reason and event is a series,
//! zeros included, so a rate is defined before the first packet of its kind.
//!
//! Counter lists plug in generically: any [`CounterList`] (declared with
//! `kxdp_dataplane::counter_list!`: drop and pass reasons, events, the XDP program's decisions,
//! the workers' I/O) becomes, with one call in [`AgentCollector`], either one family with a
//! label per member (`labeled`, e.g. `kxdp_drops_total{reason}`) or one family per member
//! (`per_entry`, e.g. `kxdp_worker_rx_frames_total{worker}`, named and described by the
//! member).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use kxdp_dataplane::counters::{CounterList, Event};
use kxdp_dataplane::reason::{DropReason, PassReason};
use kxdp_dataplane::tables::InterfaceId;
use kxdp_xdp::worker::{IoCounter, IoValues, BATCH_BUCKET_BOUNDS};
use kxdp_xdp::XdpDecision;

use super::conns::Connections;
use super::encode::{counter, counters, gauge, gauges, Result};
use super::lock;
use super::process::ProcessCollector;
use super::state::AdminState;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Update-latency histogram buckets, seconds (Prometheus `le`).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The Prometheus exposition of `state` and of this process.
pub fn render(state: &Arc<AdminState>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentCollector(Arc::clone(state))));
    registry.register_collector(Box::new(ProcessCollector));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        // Only a collector's own error gets here; say so rather than serve half a page.
        return format!("# kxdp: encoding the metrics failed: {e}\n");
    }
    text
}

/// One counter family for list `L`: a series per member, labelled `label="<member name>"`.
fn labeled<L: CounterList>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    value: impl Fn(L) -> u64,
) -> Result {
    counters(
        enc,
        name,
        help,
        None,
        L::ALL.iter().map(|&e| ([(label, e.name())], value(e))),
    )
}

/// One counter family per member of list `L`, named `<prefix>_<member name>_total` and
/// described by the member's help; a series per row (`rows`: label sets, e.g. one per worker).
fn per_entry<L: CounterList, R: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    prefix: &str,
    rows: &[R],
    value: impl Fn(L, usize) -> u64,
) -> Result {
    for &entry in L::ALL {
        let name = format!("{prefix}_{}", entry.name());
        let mut m = enc.encode_descriptor(&name, entry.help(), None, MetricType::Counter)?;
        for (i, labels) in rows.iter().enumerate() {
            ConstCounter::new(value(entry, i)).encode(m.encode_family(labels)?)?;
        }
    }
    Ok(())
}

/// A histogram from per-bucket counts (upper bound, count in that bucket).
fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    sum: f64,
    buckets: &[(f64, u64)],
) -> Result {
    let count = buckets.iter().map(|(_, n)| n).sum();
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(sum, count, buckets, None)
}

fn frames() -> Unit {
    Unit::Other("frames".into())
}

/// The agent's metrics, read from its state when a scrape asks.
#[derive(Debug)]
struct AgentCollector(Arc<AdminState>);

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result {
        let state = &self.0;
        let enc = &mut enc;
        let status = state.status();
        gauges(
            enc,
            "kxdp_build_info",
            "kxdp's version as a label; always 1",
            [([("version", env!("CARGO_PKG_VERSION"))], 1)],
        )?;
        let up = !state.stopped.load(std::sync::atomic::Ordering::Relaxed);
        gauge(
            enc,
            "kxdp_up",
            "1 while the dataplane runs",
            None,
            i64::from(up),
        )?;
        gauge(
            enc,
            "kxdp_ready",
            "1 once the first snapshot is live",
            None,
            i64::from(status.ready),
        )?;
        let plain: [(&str, &str, u64); 9] = [
            (
                "kxdp_snapshot_generation",
                "generation of the live snapshot",
                status.generation,
            ),
            (
                "kxdp_services",
                "service ports in the live snapshot",
                status.services as u64,
            ),
            (
                "kxdp_local_pods",
                "local pods in the live snapshot",
                status.local_pods as u64,
            ),
            (
                "kxdp_remote_nodes",
                "remote nodes in the live snapshot",
                status.remote_nodes as u64,
            ),
            (
                "kxdp_conntrack_flows",
                "flows in the conntrack table",
                status.conntrack.flows as u64,
            ),
            (
                "kxdp_conntrack_capacity",
                "the conntrack table's capacity",
                status.conntrack.capacity as u64,
            ),
            (
                "kxdp_neighbors_wanted",
                "underlay next hops needed",
                status.neighbors.needed as u64,
            ),
            (
                "kxdp_neighbors_resolved",
                "underlay next hops with a known MAC",
                status.neighbors.resolved as u64,
            ),
            (
                "kxdp_draining_endpoints",
                "endpoints gone from every service with flows left",
                status.draining_endpoints as u64,
            ),
        ];
        for (name, help, value) in plain {
            gauge(enc, name, help, None, value)?;
        }
        gauge(
            enc,
            "kxdp_conntrack_pressure",
            "flows over capacity (new flows fail as it nears 1)",
            Some(&Unit::Other("ratio".into())),
            status.conntrack.flows as f64 / status.conntrack.capacity.max(1) as f64,
        )?;
        gauge(
            enc,
            "kxdp_problems",
            "objects left out of the tables",
            None,
            status.problems.len() as u64,
        )?;
        gauge(
            enc,
            "kxdp_interface_errors",
            "pod interfaces that could not be served or released (tried again)",
            None,
            status.interface_errors.len() as u64,
        )?;
        gauge(
            enc,
            "kxdp_source_synced",
            "1 once the source listed everything",
            None,
            i64::from(status.synced),
        )?;
        counter(
            enc,
            "kxdp_source_errors",
            "source errors: manifest loads that failed, watch errors (each retried)",
            None,
            status.source_errors,
        )?;
        counter(
            enc,
            "kxdp_snapshot_updates",
            "snapshots published",
            None,
            status.updates,
        )?;

        let (c, io) = state.counters();
        labeled(
            enc,
            "kxdp_drops",
            "frames dropped, by reason",
            "reason",
            |r: DropReason| c.drops[r.index()],
        )?;
        labeled(
            enc,
            "kxdp_to_host",
            "frames handed to the node's kernel, by reason",
            "reason",
            |r: PassReason| c.passes[r.index()],
        )?;
        labeled(
            enc,
            "kxdp_events",
            "pipeline events",
            "event",
            |e: Event| c.events[e.index()],
        )?;
        let decisions = state.xdp_decisions();
        labeled(
            enc,
            "kxdp_xdp_decisions",
            "packets the XDP program steered to kxdp, dropped or passed to the kernel, by decision",
            "decision",
            |d: XdpDecision| decisions[d.index()],
        )?;
        let workers: Vec<[(&str, String); 1]> =
            (0..io.len()).map(|w| [("worker", w.to_string())]).collect();
        per_entry(enc, "kxdp_worker", &workers, |k: IoCounter, w| io[w].get(k))?;

        let dp_workers = state.dataplane.get().map_or(&[][..], |d| &d.workers[..]);
        let mut chunks = Vec::new();
        for (w, stats) in dp_workers.iter().enumerate() {
            let c = stats.io.chunks();
            for (place, n) in [("free", c.free), ("kernel", c.kernel), ("held", c.held())] {
                chunks.push(([("worker", w.to_string()), ("place", place.to_owned())], n));
            }
        }
        gauges(
            enc,
            "kxdp_worker_umem_chunks",
            "UMEM chunks by where they were at the worker's last census (once a second, between \
             batches): free, the kernel's (fill and TX rings), or held by the worker (lost)",
            chunks,
        )?;
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        for i in &status.interfaces {
            for (w, stats) in dp_workers.iter().enumerate() {
                let (r, t) = stats.io.interface(InterfaceId(i.id));
                let labels = [("interface", i.name.clone()), ("worker", w.to_string())];
                rx.push((labels.clone(), r));
                tx.push((labels, t));
            }
        }
        counters(
            enc,
            "kxdp_interface_rx",
            "frames received, per interface and worker",
            Some(&frames()),
            rx,
        )?;
        counters(
            enc,
            "kxdp_interface_tx",
            "frames queued for transmission, per interface and worker",
            Some(&frames()),
            tx,
        )?;

        let total = io
            .iter()
            .fold(IoValues::default(), |total, i| total.plus(i));
        let batches: Vec<(f64, u64)> = BATCH_BUCKET_BOUNDS
            .iter()
            .zip(total.batch_sizes)
            .map(|(&(_, max), n)| (max as f64, n))
            .collect();
        histogram(
            enc,
            "kxdp_batch_size",
            "frames per received batch",
            Some(&frames()),
            total.get(IoCounter::Rx) as f64,
            &batches,
        )?;

        let (latency, latency_sum) = {
            let inner = lock(&state.inner);
            let mut below = 0;
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
            for le in LATENCY_BUCKETS {
                let cumulative = inner.latency_us.count_between(0, (le * 1e6) as u64);
                buckets.push((le, cumulative.saturating_sub(below)));
                below = cumulative;
            }
            buckets.push((f64::INFINITY, inner.latency_us.len().saturating_sub(below)));
            (buckets, inner.latency_sum.as_secs_f64())
        };
        histogram(
            enc,
            "kxdp_snapshot_update_latency",
            "change noticed to snapshot live",
            Some(&Unit::Seconds),
            latency_sum,
            &latency,
        )?;
        let (sync, programming, last_sync) = {
            let inner = lock(&state.inner);
            let last = inner.last_updated.map_or(0.0, |t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64()
            });
            (
                inner.sync_durations.clone(),
                inner.programming.clone(),
                last,
            )
        };
        histogram(
            enc,
            "kxdp_sync_duration",
            "how long a publish took, compiling the changes and making the tables live \
             (mirrors kube-proxy's sync_proxy_rules_duration_seconds)",
            Some(&Unit::Seconds),
            sync.sum(),
            &sync.buckets(),
        )?;
        histogram(
            enc,
            "kxdp_network_programming_duration",
            "from an EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time to its \
             change live in the workers, one observation per slice change that carries it \
             (mirrors kube-proxy's network_programming_duration_seconds)",
            Some(&Unit::Seconds),
            programming.sum(),
            &programming.buckets(),
        )?;
        gauge(
            enc,
            "kxdp_last_sync_timestamp",
            "when tables last went live, Unix time; 0 before the first \
             (mirrors kube-proxy's sync_proxy_rules_last_timestamp_seconds)",
            Some(&Unit::Seconds),
            last_sync,
        )?;

        let listeners: Vec<Arc<Connections>> = lock(&state.listeners).clone();
        let by_listener = |f: fn(&Connections) -> u64| {
            listeners
                .iter()
                .map(move |l| ([("listener", l.name)], f(l)))
                .collect::<Vec<_>>()
        };
        gauges(
            enc,
            "kxdp_admin_connections",
            "connections the admin listener holds now",
            by_listener(|l| l.open() as u64),
        )?;
        counters(
            enc,
            "kxdp_admin_connections_accepted",
            "connections accepted by the admin listener",
            None,
            by_listener(Connections::accepted),
        )?;
        counters(
            enc,
            "kxdp_admin_connections_evicted",
            "connections closed to make room for a newer one at the listener's limit",
            None,
            by_listener(Connections::evicted),
        )?;
        counters(
            enc,
            "kxdp_admin_connections_timed_out",
            "connections closed for headers or a response that took too long",
            None,
            by_listener(Connections::timed_out),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
    use kxdp_dataplane::counters::Counters;
    use kxdp_xdp::runtime::WorkerStats;
    use kxdp_xdp::worker::IoCounters;

    use crate::admin::state::DataplaneView;

    /// A running agent's state, as far as the metrics see it: two workers whose pipelines
    /// counted something, three interfaces (one with a name that needs escaping in a label), a live
    /// snapshot, a source error and an admin listener.
    fn busy_state() -> Arc<AdminState> {
        let state = Arc::new(AdminState::new("node-a", "manifests"));
        let workers: Vec<WorkerStats> = (0..2)
            .map(|w| {
                let counters = Arc::new(Counters::new());
                counters.dropped(DropReason::NoRoute);
                counters.passed(PassReason::ForNode);
                counters.add(Event::RxPackets, 10 + w);
                // The I/O counters have no writer outside their worker: zeros.
                let io = Arc::new(IoCounters::default());
                WorkerStats {
                    counters,
                    io,
                    tid: 0,
                }
            })
            .collect();
        state.set_dataplane(DataplaneView {
            workers,
            cores: vec![Some(0), None],
            conntrack: Arc::new(Conntrack::new(ConntrackConfig {
                capacity: 1024,
                ..ConntrackConfig::default()
            })),
            clock_origin: Instant::now(),
            decisions: None,
        });
        state.set_interfaces(vec![
            (
                "uplink".into(),
                InterfaceId(0),
                "uplink".into(),
                "native".into(),
            ),
            (
                "kx0123\"pod\\a\nb".into(),
                InterfaceId(1),
                "pod".into(),
                "generic".into(),
            ),
            (
                "host0".into(),
                InterfaceId(2),
                "host".into(),
                "native".into(),
            ),
        ]);
        let snap = kxdp_testkit::Topology::with_services(2, 2).snapshot();
        state.published(Arc::new(snap), Duration::from_millis(3), vec![]);
        state.synced_in(Duration::from_micros(300));
        let live = std::time::SystemTime::now();
        state.programmed(&[live - Duration::from_secs(2)], live);
        state.set_source(true, 2, Some("cluster.yaml: document 1: broken".into()));
        state.add_listener(Arc::new(Connections::new(
            "metrics",
            crate::admin::Limits::METRICS,
        )));
        state
    }

    /// The value of the series `series` (name and labels, as written).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn every_metric_of_before_is_there_with_its_value() {
        let m = render(&busy_state());
        for reason in DropReason::ALL {
            value(
                &m,
                &format!("kxdp_drops_total{{reason=\"{}\"}}", reason.name()),
            );
        }
        assert_eq!(value(&m, "kxdp_drops_total{reason=\"no_route\"}"), 2.0);
        assert_eq!(value(&m, "kxdp_to_host_total{reason=\"for_node\"}"), 2.0);
        assert_eq!(value(&m, "kxdp_events_total{event=\"rx_packets\"}"), 21.0);
        for name in [
            "kxdp_worker_rx_frames_total",
            "kxdp_worker_tx_frames_total",
            "kxdp_worker_tx_ring_full_total",
            "kxdp_worker_copied_frames_total",
            "kxdp_worker_rx_ring_full_total",
            "kxdp_worker_rx_no_chunk_total",
            "kxdp_worker_gso_packets_total",
            "kxdp_worker_gso_failed_total",
            "kxdp_worker_polls_total",
            "kxdp_worker_empty_polls_total",
        ] {
            value(&m, &format!("{name}{{worker=\"1\"}}"));
        }
        // Label values escaped.
        value(
            &m,
            "kxdp_interface_rx_frames_total{interface=\"kx0123\\\"pod\\\\a\\nb\",worker=\"1\"}",
        );
        value(
            &m,
            "kxdp_interface_tx_frames_total{interface=\"uplink\",worker=\"0\"}",
        );
        // The finite bounds are the worker's, the last a full batch (64), then +Inf.
        let les: Vec<&str> = m
            .lines()
            .filter_map(|l| l.strip_prefix("kxdp_batch_size_frames_bucket{le=\""))
            .filter_map(|l| l.split_once('"').map(|(le, _)| le))
            .collect();
        let mut expected: Vec<String> = BATCH_BUCKET_BOUNDS
            .iter()
            .map(|(_, max)| max.to_string())
            .collect();
        assert_eq!(expected.last().map(String::as_str), Some("64"));
        expected.push("+Inf".into());
        assert_eq!(les, expected, "{m}");
        value(&m, "kxdp_batch_size_frames_count");
        for decision in XdpDecision::ALL {
            let series = format!(
                "kxdp_xdp_decisions_total{{decision=\"{}\"}}",
                decision.name()
            );
            assert_eq!(value(&m, &series), 0.0, "no program: zeros");
        }
        assert_eq!(
            value(
                &m,
                "kxdp_snapshot_update_latency_seconds_bucket{le=\"0.0025\"}"
            ),
            0.0
        );
        assert_eq!(
            value(
                &m,
                "kxdp_snapshot_update_latency_seconds_bucket{le=\"0.005\"}"
            ),
            1.0
        );
        assert_eq!(value(&m, "kxdp_snapshot_update_latency_seconds_count"), 1.0);
        assert_eq!(value(&m, "kxdp_snapshot_updates_total"), 1.0);
        assert_eq!(value(&m, "kxdp_sync_duration_seconds_count"), 1.0);
        assert!(value(&m, "kxdp_last_sync_timestamp_seconds") > 1.7e9);
        // One slice change with a trigger time 2 s before its tables went live.
        assert_eq!(
            value(
                &m,
                "kxdp_network_programming_duration_seconds_bucket{le=\"1\"}"
            ),
            0.0
        );
        assert_eq!(
            value(
                &m,
                "kxdp_network_programming_duration_seconds_bucket{le=\"2\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&m, "kxdp_network_programming_duration_seconds_count"),
            1.0
        );
        assert_eq!(value(&m, "kxdp_source_errors_total"), 2.0);
        assert_eq!(value(&m, "kxdp_ready"), 1.0);
        assert_eq!(value(&m, "kxdp_up"), 1.0);
        assert_eq!(value(&m, "kxdp_conntrack_capacity"), 1024.0);
        assert_eq!(value(&m, "kxdp_conntrack_pressure_ratio"), 0.0);
        for gauge in [
            "kxdp_snapshot_generation",
            "kxdp_services",
            "kxdp_local_pods",
            "kxdp_remote_nodes",
            "kxdp_conntrack_flows",
            "kxdp_neighbors_wanted",
            "kxdp_neighbors_resolved",
            "kxdp_draining_endpoints",
            "kxdp_problems",
            "kxdp_interface_errors",
            "kxdp_source_synced",
        ] {
            value(&m, gauge);
        }
        assert_eq!(
            value(
                &m,
                &format!(
                    "kxdp_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            1.0
        );
        assert_eq!(
            value(&m, "kxdp_admin_connections{listener=\"metrics\"}"),
            0.0
        );
        value(
            &m,
            "kxdp_admin_connections_evicted_total{listener=\"metrics\"}",
        );
        assert!(value(&m, "process_cpu_seconds_total") >= 0.0);
        for process in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(value(&m, process) > 0.0, "{process}");
        }
    }

    /// `promtool check metrics` on the whole exposition: a SKIP line without promtool, a
    /// failure under CI=true. `scripts/install-deps.sh` unpacks it from Debian's prometheus
    /// package into `~/.cache/kxdp/tools`, which the Makefile puts on PATH.
    #[test]
    fn promtool_accepts_the_exposition() {
        let text = render(&busy_state());
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let why = format!(
                    "SKIP promtool_accepts_the_exposition: promtool not found on PATH ({e}); \
                     run scripts/install-deps.sh and the tests through make, or put promtool \
                     on PATH"
                );
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                eprintln!("{why}");
                return;
            }
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}\n{}{}\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
