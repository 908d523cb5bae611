//! The agent's state as the admin API reads it: the agent writes it as things happen (a
//! snapshot published, the source's progress, the dataplane started or stopped), the server
//! reads it to answer. Views are built on demand from it; nothing here does I/O.
//!
//! Errors are shown while they hold: the source's error (a manifest that does not parse, a
//! failing watch) until the source's next good load, and the error that kept the last change
//! from going live (a compile or dataplane failure) until the next snapshot goes live.
//! `/api/status` and `/readyz` show the first of the two that holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use hdrhistogram::Histogram;
use kxdp_dataplane::conntrack::Conntrack;
use kxdp_dataplane::counters::{CounterList, CounterValues, Event};
use kxdp_dataplane::reason::{DropReason, PassReason};
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::Snapshot;
use kxdp_xdp::runtime::WorkerStats;
use kxdp_xdp::worker::{IoCounter, IoValues, BATCH_BUCKET_BOUNDS};
use kxdp_xdp::{Decisions, XdpDecision};

use super::conns::Connections;
use super::health::{Buckets, ProxyHealth, PROGRAMMING_BUCKETS, SYNC_BUCKETS};
use super::lock;
use super::views::{
    BatchSizeView, ConntrackFillView, CountersView, FlowFilter, FlowView, FlowsView, InterfaceView,
    LatencyView, NeighborsView, RouteView, ServiceView, StatusView, WorkerView,
};

/// What the running dataplane shares with the admin API.
#[derive(Debug)]
pub struct DataplaneView {
    /// Each worker's counters.
    pub workers: Vec<WorkerStats>,
    /// The cores workers are pinned to.
    pub cores: Vec<Option<usize>>,
    /// The shared conntrack.
    pub conntrack: Arc<Conntrack>,
    /// When the pipeline's clock (conntrack expiries) was zero.
    pub clock_origin: Instant,
    /// The XDP program's decision counters (none where no program is loaded, as in a test's
    /// view).
    pub decisions: Option<Arc<Decisions>>,
}

/// The agent's state as the admin API reads it; the agent writes it.
#[derive(Debug)]
pub struct AdminState {
    pub(super) started: Instant,
    pub(super) node: String,
    pub(super) source: String,
    pub(super) stopped: AtomicBool,
    pub(super) snapshot: ArcSwapOption<Snapshot>,
    pub(super) dataplane: OnceLock<DataplaneView>,
    pub(super) inner: Mutex<Inner>,
    /// The admin listeners' connection tables (their counts and evictions are metrics).
    pub(super) listeners: Mutex<Vec<Arc<Connections>>>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) synced: bool,
    pub(super) source_errors: u64,
    /// The source's error, until its next good load.
    pub(super) source_error: Option<String>,
    /// Why the last change did not go live, until one does.
    pub(super) publish_error: Option<String>,
    pub(super) problems: Vec<String>,
    pub(super) interface_errors: Vec<String>,
    pub(super) interfaces: Vec<(String, InterfaceId, String, String)>,
    pub(super) updates: u64,
    pub(super) latency_us: Histogram<u64>,
    pub(super) latency_sum: Duration,
    pub(super) neighbors: [usize; 2],
    pub(super) draining: usize,
    /// When the oldest change not yet live was noticed (kube-proxy's `oldestPendingQueued`).
    pub(super) pending_since: Option<Instant>,
    /// When tables last went live.
    pub(super) last_updated: Option<SystemTime>,
    /// How long each publish (compile and swap) took.
    pub(super) sync_durations: Buckets,
    /// Trigger time to live, per slice change that carried one.
    pub(super) programming: Buckets,
}

impl Inner {
    fn current_error(&self) -> Option<String> {
        self.source_error
            .clone()
            .or_else(|| self.publish_error.clone())
    }
}

/// Every member of counter list `L` by its name, with its value.
fn by_name<L: CounterList>(value: impl Fn(L) -> u64) -> BTreeMap<String, u64> {
    L::ALL
        .iter()
        .map(|&m| (m.name().to_owned(), value(m)))
        .collect()
}

impl AdminState {
    /// The state of a starting agent for node `node`, fed by `source`.
    pub fn new(node: &str, source: &str) -> AdminState {
        AdminState {
            started: Instant::now(),
            node: node.into(),
            source: source.into(),
            stopped: AtomicBool::new(false),
            snapshot: ArcSwapOption::empty(),
            dataplane: OnceLock::new(),
            inner: Mutex::new(Inner {
                synced: false,
                source_errors: 0,
                source_error: None,
                publish_error: None,
                problems: Vec::new(),
                interface_errors: Vec::new(),
                interfaces: Vec::new(),
                updates: 0,
                latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
                latency_sum: Duration::ZERO,
                neighbors: [0; 2],
                draining: 0,
                pending_since: None,
                last_updated: None,
                sync_durations: Buckets::new(&SYNC_BUCKETS),
                programming: Buckets::new(&PROGRAMMING_BUCKETS),
            }),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// The dataplane started.
    pub fn set_dataplane(&self, view: DataplaneView) {
        let _ = self.dataplane.set(view);
    }

    /// The dataplane stopped (by itself or on request): `/healthz` fails from now on.
    pub fn set_stopped(&self) {
        self.stopped.store(true, Relaxed);
    }

    /// A snapshot went live, `latency` after the change behind it was noticed.
    pub fn published(&self, snapshot: Arc<Snapshot>, latency: Duration, problems: Vec<String>) {
        self.snapshot.store(Some(snapshot));
        let mut inner = lock(&self.inner);
        inner.updates += 1;
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let _ = inner.latency_us.record(us);
        inner.latency_sum += latency;
        inner.problems = problems;
        inner.publish_error = None;
        inner.pending_since = None;
        inner.last_updated = Some(SystemTime::now());
    }

    /// A change was noticed at `at` and waits to go live (kube-proxy's `QueuedUpdate`): the
    /// oldest one waiting is kept until a snapshot goes live.
    pub fn queued(&self, at: Instant) {
        lock(&self.inner).pending_since.get_or_insert(at);
    }

    /// The proxier's health at `now` (`wall` by the wall clock), as `/healthz` answers it.
    pub fn proxy_health(&self, wall: SystemTime, now: Instant) -> ProxyHealth {
        let inner = lock(&self.inner);
        ProxyHealth::at(
            now,
            wall,
            inner.pending_since,
            inner.last_updated,
            self.stopped.load(Relaxed),
        )
    }

    /// A publish took `took` (compiling and making the tables live), as kube-proxy's
    /// `sync_proxy_rules_duration_seconds` measures a sync.
    pub fn synced_in(&self, took: Duration) {
        lock(&self.inner).sync_durations.observe(took.as_secs_f64());
    }

    /// The tables went live at `live` with slice changes triggered at `triggers`: one
    /// programming-latency observation each (a trigger time in the future, a skewed clock,
    /// counts as zero).
    pub fn programmed(&self, triggers: &[SystemTime], live: SystemTime) {
        let mut inner = lock(&self.inner);
        for t in triggers {
            let latency = live.duration_since(*t).unwrap_or_default();
            inner.programming.observe(latency.as_secs_f64());
        }
    }

    /// The source's state: whether it has listed everything once, the errors it has had so
    /// far, and the one that holds now (`None` once it loads again: the error is cleared).
    pub fn set_source(&self, synced: bool, errors: u64, error: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.synced = synced;
        inner.source_errors = errors;
        inner.source_error = error;
    }

    /// The error that kept the last change from going live (cleared when one goes live).
    pub fn set_error(&self, error: String) {
        lock(&self.inner).publish_error = Some(error);
    }

    /// The error that holds now: the source's, else why the last change did not go live.
    pub fn current_error(&self) -> Option<String> {
        lock(&self.inner).current_error()
    }

    pub(super) fn add_listener(&self, connections: Arc<Connections>) {
        lock(&self.listeners).push(connections);
    }

    /// The interfaces served: name, number, role, XDP mode.
    pub fn set_interfaces(&self, interfaces: Vec<(String, InterfaceId, String, String)>) {
        lock(&self.inner).interfaces = interfaces;
    }

    /// Whether pod interface `name` is served: XDP attached, every worker's socket bound and
    /// the snapshot that has its pod published (the reconciler reports its interfaces after
    /// all three).
    pub fn serves_pod_interface(&self, name: &str) -> bool {
        lock(&self.inner)
            .interfaces
            .iter()
            .any(|(n, _, role, _)| n == name && role == "pod")
    }

    /// The pod interfaces that could not be served or released (each `name: why`), tried
    /// again until they are.
    pub fn set_interface_errors(&self, errors: Vec<String>) {
        lock(&self.inner).interface_errors = errors;
    }

    /// Next hops needed and resolved; endpoints draining.
    pub fn set_neighbors_and_draining(&self, neighbors: [usize; 2], draining: usize) {
        let mut inner = lock(&self.inner);
        inner.neighbors = neighbors;
        inner.draining = draining;
    }

    /// The live snapshot, if any.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// Whether the agent is ready: a snapshot has gone live (one stays live from then on, each
    /// replacing the last). `/readyz` also wants the dataplane running.
    pub(super) fn ready(&self) -> bool {
        self.snapshot.load().is_some()
    }

    pub(super) fn counters(&self) -> (CounterValues, Vec<IoValues>) {
        let workers: &[WorkerStats] = self.dataplane.get().map_or(&[], |d| &d.workers);
        let counters = kxdp_xdp::runtime::sum_counters(workers.iter().map(|w| w.counters.read()));
        (counters, workers.iter().map(|w| w.io.read()).collect())
    }

    /// The XDP program's decisions so far (zeros before the dataplane starts, or if the map
    /// cannot be read).
    pub(super) fn xdp_decisions(&self) -> [u64; XdpDecision::COUNT] {
        self.dataplane
            .get()
            .and_then(|d| d.decisions.as_ref()?.read().ok())
            .unwrap_or([0; XdpDecision::COUNT])
    }

    /// `/api/status`.
    pub fn status(&self) -> StatusView {
        let snap = self.snapshot();
        let inner = lock(&self.inner);
        let q = |p: f64| inner.latency_us.value_at_quantile(p) as f64 / 1000.0;
        let dp = self.dataplane.get();
        let workers = dp.map_or_else(Vec::new, |d| {
            d.workers
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let io = w.io.read();
                    let cpus = crate::settings::thread_cpus(w.tid).unwrap_or_default();
                    WorkerView {
                        worker: i,
                        core: match cpus[..] {
                            [one] => Some(one),
                            _ => None,
                        },
                        cpus,
                        pinned: d.cores.get(i).copied().flatten(),
                        rx: io.get(IoCounter::Rx),
                        tx: io.get(IoCounter::Tx),
                        tx_ring_full: io.get(IoCounter::TxRingFull),
                    }
                })
                .collect()
        });
        let interfaces = inner
            .interfaces
            .iter()
            .map(|(name, id, role, mode)| {
                let (rx, tx) = dp.map_or((0, 0), |d| {
                    d.workers.iter().fold((0, 0), |(rx, tx), w| {
                        let (r, t) = w.io.interface(*id);
                        (rx + r, tx + t)
                    })
                });
                InterfaceView {
                    name: name.clone(),
                    id: id.0,
                    role: role.clone(),
                    xdp_mode: mode.clone(),
                    rx,
                    tx,
                }
            })
            .collect();
        StatusView {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            ready: self.ready(),
            source: self.source.clone(),
            synced: inner.synced,
            source_errors: inner.source_errors,
            last_error: inner.current_error(),
            generation: snap.as_ref().map_or(0, |s| s.generation),
            updates: inner.updates,
            update_latency_ms: LatencyView {
                p50: q(0.5),
                p99: q(0.99),
                max: inner.latency_us.max() as f64 / 1000.0,
            },
            services: snap.as_ref().map_or(0, |s| s.services.ports().len()),
            local_pods: snap.as_ref().map_or(0, |s| s.local_pods().count()),
            remote_nodes: snap.as_ref().map_or(0, |s| s.remote_nodes().len()),
            neighbors: NeighborsView {
                needed: inner.neighbors[0],
                resolved: inner.neighbors[1],
            },
            conntrack: dp.map_or_else(ConntrackFillView::default, |d| ConntrackFillView {
                flows: d.conntrack.len(),
                capacity: d.conntrack.capacity(),
            }),
            draining_endpoints: inner.draining,
            workers,
            interfaces,
            problems: inner.problems.clone(),
            interface_errors: inner.interface_errors.clone(),
        }
    }

    /// `/api/counters`.
    pub fn counters_view(&self) -> CountersView {
        let (c, io) = self.counters();
        let decisions = self.xdp_decisions();
        let total = io
            .iter()
            .fold(IoValues::default(), |total, i| total.plus(i));
        CountersView {
            events: by_name(|e: Event| c.events[e.index()]),
            drops: by_name(|r: DropReason| c.drops[r.index()]),
            passes: by_name(|r: PassReason| c.passes[r.index()]),
            xdp: by_name(|d: XdpDecision| decisions[d.index()]),
            io: by_name(|k: IoCounter| total.get(k)),
            batch_sizes: BATCH_BUCKET_BOUNDS
                .iter()
                .zip(total.batch_sizes)
                .map(|(&(min, max), batches)| BatchSizeView { min, max, batches })
                .collect(),
        }
    }

    /// `/api/services`.
    pub fn services(&self) -> Vec<ServiceView> {
        self.snapshot()
            .map_or_else(Vec::new, |snap| super::views::services(&snap))
    }

    /// `/api/policies`.
    pub fn policies(&self) -> Vec<super::views::PodPolicyView> {
        self.snapshot()
            .map_or_else(Vec::new, |snap| super::views::policies(&snap))
    }

    /// `/api/routes`.
    pub fn routes(&self) -> Vec<RouteView> {
        self.snapshot()
            .map_or_else(Vec::new, |snap| super::views::routes(&snap))
    }

    /// `/api/conntrack`: flows matching `filter`, the first `limit` of them listed.
    pub fn flows(&self, filter: &FlowFilter, limit: usize) -> FlowsView {
        let Some(dp) = self.dataplane.get() else {
            return FlowsView::default();
        };
        let ct = &dp.conntrack;
        let now = dp.clock_origin.elapsed();
        let mut view = FlowsView {
            total: ct.len(),
            capacity: ct.capacity(),
            ..FlowsView::default()
        };
        ct.visit(|o, r, state, expiry| {
            if filter.matches(o, r) {
                view.matched += 1;
                if view.flows.len() < limit {
                    let ms = expiry.as_millis().saturating_sub(now.as_millis() as u64);
                    view.flows.push(FlowView {
                        original: o.into(),
                        reply: r.into(),
                        state: state.name().into(),
                        expires_in_ms: ms,
                    });
                }
            }
            true
        });
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_while_they_hold_and_are_counted() {
        let state = AdminState::new("node-a", "manifests");
        state.set_source(true, 0, None);
        assert_eq!(state.status().last_error, None);
        state.set_source(true, 1, Some("cluster.yaml: document 2: bad".into()));
        state.set_error("compile: node node-a: no Node object".into());
        let s = state.status();
        assert_eq!(s.source_errors, 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("cluster.yaml: document 2: bad"),
            "the source's error first"
        );
        // The next good load clears it (the count stays); the compile error shows.
        state.set_source(true, 1, None);
        let s = state.status();
        assert_eq!(s.source_errors, 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("compile: node node-a: no Node object")
        );
        // A snapshot going live clears that.
        let snap = kxdp_testkit::Topology::with_services(1, 1).snapshot();
        state.published(Arc::new(snap), Duration::from_millis(1), vec![]);
        assert_eq!(state.status().last_error, None);
        assert_eq!(state.current_error(), None);
    }
}
