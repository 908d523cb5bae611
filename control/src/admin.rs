//! The agent's admin API, and the client the `kxdp` CLI reads it with.
//!
//! Served over HTTP/1.1 on a local TCP address or a Unix socket (`unix:/path`):
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 while the dataplane runs (or has yet to start), 503 once it stopped |
//! | `/readyz` | 200 once the first snapshot is live, 503 before |
//! | `/metrics` | Prometheus text: drops per reason, events, rx/tx per worker and per interface, batch sizes, conntrack size and pressure, snapshot generation, update latency (from an hdrhistogram) |
//! | `/api/status` | [`StatusView`] |
//! | `/api/services` | [`ServiceView`] per service port |
//! | `/api/conntrack?proto=&addr=&port=&limit=` | [`FlowsView`]: flows matching every filter given |
//! | `/api/routes` | [`RouteView`] per destination |
//! | `/api/counters` | [`CountersView`] |
//! | `/api/trace?from=&src=&dst=&proto=&format=text` | a [`crate::trace::Trace`] of one packet through the live tables |
//!
//! The JSON views are what `kxdp status|services|conntrack|routes|counters --json` print.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use kxdp_dataplane::conntrack::Conntrack;
use kxdp_dataplane::counters::{CounterValues, Event};
use kxdp_dataplane::reason::{DropReason, PassReason};
use kxdp_dataplane::tables::{FrontendKind, InterfaceId, TrafficPolicy};
use kxdp_dataplane::Snapshot;
use kxdp_xdp::runtime::WorkerStats;
use kxdp_xdp::worker::BATCH_BUCKETS;

use crate::model::mac_text;
use serde::{Deserialize, Serialize};

/// Where the admin API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAddr {
    /// A TCP address (keep it on localhost).
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, as in unix:/run/kxdp.sock".into());
            }
            return Ok(AdminAddr::Unix(path.into()));
        }
        s.parse()
            .map(AdminAddr::Tcp)
            .map_err(|_| format!("{s:?} is neither ADDRESS:PORT (127.0.0.1:9901) nor unix:PATH"))
    }
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Tcp(a) => write!(f, "{a}"),
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// An interface the dataplane serves, as the API shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceView {
    /// Its name.
    pub name: String,
    /// The snapshot's number for it.
    pub id: u16,
    /// `uplink`, `host` or `pod`.
    pub role: String,
    /// The XDP attach mode it got.
    pub xdp_mode: String,
    /// Frames received, all workers.
    pub rx: u64,
    /// Frames queued for transmission, all workers.
    pub tx: u64,
}

/// One worker's I/O.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerView {
    /// Its number (= the rx queue it serves).
    pub worker: usize,
    /// The core it is pinned to, if any.
    pub core: Option<usize>,
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmission.
    pub tx: u64,
    /// Frames dropped for a full TX ring.
    pub tx_ring_full: u64,
}

/// `/api/status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// The node's name.
    pub node: String,
    /// kxdp's version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: f64,
    /// Whether the first snapshot is live.
    pub ready: bool,
    /// `kubernetes` or `manifests`.
    pub source: String,
    /// Whether the source has listed everything once.
    pub synced: bool,
    /// Source errors so far (each retried).
    pub source_errors: u64,
    /// The last of them, or the last failed compile.
    pub last_error: Option<String>,
    /// The live snapshot's generation.
    pub generation: u64,
    /// Snapshots published.
    pub updates: u64,
    /// Change noticed to snapshot live, milliseconds: p50, p99 and max over all updates.
    pub update_latency_ms: [f64; 3],
    /// Service ports in the live snapshot.
    pub services: usize,
    /// Local pods in the live snapshot.
    pub local_pods: usize,
    /// Remote nodes in the live snapshot.
    pub remote_nodes: usize,
    /// Underlay next hops needed, and how many of them have a MAC address.
    pub neighbors: [usize; 2],
    /// Flows in conntrack, and its capacity.
    pub conntrack: [usize; 2],
    /// Endpoints that left every service but still have flows.
    pub draining_endpoints: usize,
    /// The workers.
    pub workers: Vec<WorkerView>,
    /// The interfaces served.
    pub interfaces: Vec<InterfaceView>,
    /// Objects left out of the tables, each with why.
    pub problems: Vec<String>,
}

/// One endpoint of a service port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendView {
    /// `address:port`.
    pub endpoint: String,
    /// `ready`, `serving-terminating` (used only when nothing is ready), `terminating` or
    /// `not-ready`.
    pub state: String,
    /// Whether it runs on this node.
    pub local: bool,
}

/// One service port (`/api/services`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceView {
    /// `namespace/name:port-name`.
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Its frontends, as `ClusterIP 10.96.0.10:80`, `NodePort *:30080`, ….
    pub frontends: Vec<String>,
    /// `internalTrafficPolicy` and `externalTrafficPolicy`: `Cluster` or `Local`.
    pub policies: [String; 2],
    /// `sessionAffinity: ClientIP`.
    pub client_ip_affinity: bool,
    /// Every endpoint with its state.
    pub backends: Vec<BackendView>,
    /// Endpoints a new flow from inside the cluster may get.
    pub usable: usize,
}

/// One flow (`/api/conntrack`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowView {
    /// `tcp`, `udp`, `icmp` or the number.
    pub proto: String,
    /// The original direction: `src:port -> dst:port`.
    pub original: String,
    /// The reply direction, as translated: `src:port -> dst:port`.
    pub reply: String,
    /// The state.
    pub state: String,
    /// Milliseconds until it expires (0 if expired and not yet collected).
    pub expires_in_ms: u64,
}

/// `/api/conntrack`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowsView {
    /// Flows matching the filters.
    pub matched: usize,
    /// Flows in the table.
    pub total: usize,
    /// The table's capacity.
    pub capacity: usize,
    /// The first `limit` matching flows.
    pub flows: Vec<FlowView>,
}

/// One route (`/api/routes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteView {
    /// The destination prefix.
    pub destination: String,
    /// What happens to packets for it.
    pub action: String,
    /// Where they leave.
    pub via: String,
    /// The MAC address of the next hop, if it has one and it is known.
    pub next_hop_mac: Option<String>,
}

/// `/api/counters`: summed over workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CountersView {
    /// Pipeline events by name.
    pub events: BTreeMap<String, u64>,
    /// Drops by reason.
    pub drops: BTreeMap<String, u64>,
    /// Frames handed to the host, by reason.
    pub passes: BTreeMap<String, u64>,
    /// AF_XDP I/O: rx, tx, tx_ring_full, copied, polls, empty_polls.
    pub io: BTreeMap<String, u64>,
    /// Batches by size: `1`, `2-3`, …, `64`.
    pub batch_sizes: Vec<(String, u64)>,
}

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
}

/// The agent's state as the admin API reads it; the agent writes it.
#[derive(Debug)]
pub struct AdminState {
    started: Instant,
    node: String,
    source: String,
    ready: AtomicBool,
    stopped: AtomicBool,
    snapshot: ArcSwapOption<Snapshot>,
    dataplane: OnceLock<DataplaneView>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    synced: bool,
    source_errors: u64,
    last_error: Option<String>,
    problems: Vec<String>,
    interfaces: Vec<(String, InterfaceId, String, String)>,
    updates: u64,
    latency_us: Histogram<u64>,
    latency_sum: Duration,
    neighbors: [usize; 2],
    draining: usize,
}

/// Update-latency histogram buckets, seconds (Prometheus `le`).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic elsewhere must not take the admin API down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AdminState {
    /// The state of a starting agent for node `node`, fed by `source`.
    pub fn new(node: &str, source: &str) -> AdminState {
        AdminState {
            started: Instant::now(),
            node: node.into(),
            source: source.into(),
            ready: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            snapshot: ArcSwapOption::empty(),
            dataplane: OnceLock::new(),
            inner: Mutex::new(Inner {
                synced: false,
                source_errors: 0,
                last_error: None,
                problems: Vec::new(),
                interfaces: Vec::new(),
                updates: 0,
                latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
                latency_sum: Duration::ZERO,
                neighbors: [0; 2],
                draining: 0,
            }),
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
        self.ready.store(true, Relaxed);
        let mut inner = lock(&self.inner);
        inner.updates += 1;
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let _ = inner.latency_us.record(us);
        inner.latency_sum += latency;
        inner.problems = problems;
    }

    /// The source's state.
    pub fn set_source(&self, synced: bool, errors: u64, last_error: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.synced = synced;
        inner.source_errors = errors;
        if last_error.is_some() {
            inner.last_error = last_error;
        }
    }

    /// The last error that kept a change from going live.
    pub fn set_error(&self, error: String) {
        lock(&self.inner).last_error = Some(error);
    }

    /// The interfaces served: name, number, role, XDP mode.
    pub fn set_interfaces(&self, interfaces: Vec<(String, InterfaceId, String, String)>) {
        lock(&self.inner).interfaces = interfaces;
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

    fn counters(&self) -> (CounterValues, Vec<kxdp_xdp::worker::IoValues>) {
        let workers: &[WorkerStats] = self.dataplane.get().map_or(&[], |d| &d.workers);
        let counters = kxdp_xdp::runtime::sum_counters(workers.iter().map(|w| w.counters.read()));
        (counters, workers.iter().map(|w| w.io.read()).collect())
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
                    WorkerView {
                        worker: i,
                        core: d.cores.get(i).copied().flatten(),
                        rx: io.rx,
                        tx: io.tx,
                        tx_ring_full: io.tx_ring_full,
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
            ready: self.ready.load(Relaxed),
            source: self.source.clone(),
            synced: inner.synced,
            source_errors: inner.source_errors,
            last_error: inner.last_error.clone(),
            generation: snap.as_ref().map_or(0, |s| s.generation),
            updates: inner.updates,
            update_latency_ms: [q(0.5), q(0.99), inner.latency_us.max() as f64 / 1000.0],
            services: snap.as_ref().map_or(0, |s| s.services.ports().len()),
            local_pods: snap.as_ref().map_or(0, |s| s.local_pods().count()),
            remote_nodes: snap.as_ref().map_or(0, |s| s.remote_nodes().len()),
            neighbors: inner.neighbors,
            conntrack: dp.map_or([0, 0], |d| [d.conntrack.len(), d.conntrack.capacity()]),
            draining_endpoints: inner.draining,
            workers,
            interfaces,
            problems: inner.problems.clone(),
        }
    }

    /// `/api/counters`.
    pub fn counters_view(&self) -> CountersView {
        let (c, io) = self.counters();
        let mut v = CountersView::default();
        for e in Event::ALL {
            v.events.insert(e.name().into(), c.events[*e as usize]);
        }
        for r in DropReason::ALL {
            v.drops
                .insert(r.name().into(), c.drops[r.number() as usize]);
        }
        for r in PassReason::ALL {
            v.passes
                .insert(r.name().into(), c.passes[r.number() as usize]);
        }
        let sum = |f: fn(&kxdp_xdp::worker::IoValues) -> u64| io.iter().map(f).sum::<u64>();
        for (name, value) in [
            ("rx", sum(|i| i.rx)),
            ("tx", sum(|i| i.tx)),
            ("tx_ring_full", sum(|i| i.tx_ring_full)),
            ("copied", sum(|i| i.copied)),
            ("polls", sum(|i| i.polls)),
            ("empty_polls", sum(|i| i.empty_polls)),
        ] {
            v.io.insert(name.into(), value);
        }
        for b in 0..BATCH_BUCKETS {
            let count = io.iter().map(|i| i.batch_sizes[b]).sum();
            v.batch_sizes.push((batch_label(b), count));
        }
        v
    }

    /// `/api/services`.
    pub fn services(&self) -> Vec<ServiceView> {
        let Some(snap) = self.snapshot() else {
            return Vec::new();
        };
        let mut out: Vec<ServiceView> = snap
            .services
            .ports()
            .iter()
            .map(|p| {
                let spec = p.spec();
                let frontends = spec
                    .frontends
                    .iter()
                    .map(|f| {
                        let kind = match f.kind {
                            FrontendKind::ClusterIp => "ClusterIP",
                            FrontendKind::NodePort => "NodePort",
                            FrontendKind::ExternalIp => "ExternalIP",
                            FrontendKind::LoadBalancer => "LoadBalancer",
                        };
                        let ip = f.ip.map_or("*".into(), |ip| ip.to_string());
                        format!("{kind} {ip}:{}", f.port)
                    })
                    .collect();
                let any_ready = spec.backends.iter().any(|b| b.ready);
                let backends = spec
                    .backends
                    .iter()
                    .map(|b| BackendView {
                        endpoint: format!("{}:{}", b.ip, b.port),
                        state: if b.ready {
                            "ready"
                        } else if b.serving && b.terminating && !any_ready {
                            "serving-terminating"
                        } else if b.terminating {
                            "terminating"
                        } else {
                            "not-ready"
                        }
                        .into(),
                        local: b.local,
                    })
                    .collect();
                let policy = |p: TrafficPolicy| match p {
                    TrafficPolicy::Cluster => "Cluster".to_owned(),
                    TrafficPolicy::Local => "Local".to_owned(),
                };
                ServiceView {
                    name: spec.name.clone(),
                    proto: proto_name(spec.proto),
                    frontends,
                    policies: [policy(spec.internal_policy), policy(spec.external_policy)],
                    client_ip_affinity: spec.client_ip_affinity,
                    backends,
                    usable: p.cluster_members().len(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `/api/routes`.
    pub fn routes(&self) -> Vec<RouteView> {
        let Some(snap) = self.snapshot() else {
            return Vec::new();
        };
        let node = &snap.node;
        let mac = |ip: Ipv4Addr| snap.next_hop_mac(ip).map(mac_text);
        let mut out = vec![RouteView {
            destination: node.pod_cidr.to_string(),
            action: format!("local pods ({})", snap.local_pods().count()),
            via: format!("pod veths, gateway {}", node.gateway_ip),
            next_hop_mac: None,
        }];
        for r in snap.remote_nodes() {
            let n = &r.node;
            out.push(RouteView {
                destination: n.pod_cidr.to_string(),
                action: format!("vxlan to {} (vni {})", n.name, node.vxlan_vni),
                via: format!("uplink, {} vtep {}", n.node_ip, mac_text(n.vtep_mac)),
                next_hop_mac: mac(next_hop(node, n.node_ip)),
            });
        }
        out.push(RouteView {
            destination: node.service_cidr.to_string(),
            action: format!("services ({} ports)", snap.services.ports().len()),
            via: "DNAT to a backend".into(),
            next_hop_mac: None,
        });
        for ip in &node.node_ips {
            out.push(RouteView {
                destination: format!("{ip}/32"),
                action: "this node (NodePorts; the rest to the kernel)".into(),
                via: "host".into(),
                next_hop_mac: None,
            });
        }
        out.push(RouteView {
            destination: node.uplink_subnet.to_string(),
            action: "underlay neighbours".into(),
            via: "uplink".into(),
            next_hop_mac: None,
        });
        if let Some(gw) = node.uplink_gateway {
            out.push(RouteView {
                destination: "0.0.0.0/0".into(),
                action: format!(
                    "outside the cluster: masquerade pods to {}",
                    node.primary_ip()
                ),
                via: format!("uplink, gateway {gw}"),
                next_hop_mac: mac(gw),
            });
        }
        out
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
                        proto: proto_name(o.proto),
                        original: format!(
                            "{}:{} -> {}:{}",
                            o.src_ip, o.src_port, o.dst_ip, o.dst_port
                        ),
                        reply: format!(
                            "{}:{} -> {}:{}",
                            r.src_ip, r.src_port, r.dst_ip, r.dst_port
                        ),
                        state: state.name().into(),
                        expires_in_ms: ms,
                    });
                }
            }
            true
        });
        view
    }

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
            status.conntrack[0] as f64,
        );
        gauge(
            "kxdp_conntrack_capacity",
            "the conntrack table's capacity",
            status.conntrack[1] as f64,
        );
        gauge(
            "kxdp_conntrack_pressure",
            "flows over capacity (new flows fail as it nears 1)",
            status.conntrack[0] as f64 / status.conntrack[1].max(1) as f64,
        );
        gauge(
            "kxdp_neighbors_wanted",
            "underlay next hops needed",
            status.neighbors[0] as f64,
        );
        gauge(
            "kxdp_neighbors_resolved",
            "underlay next hops with a known MAC",
            status.neighbors[1] as f64,
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
            &per_worker(|v| v.rx),
        );
        counter(
            &mut m,
            "kxdp_worker_tx_frames_total",
            "frames queued for transmission, per worker",
            &per_worker(|v| v.tx),
        );
        counter(
            &mut m,
            "kxdp_worker_tx_ring_full_total",
            "frames dropped for a full TX ring, per worker",
            &per_worker(|v| v.tx_ring_full),
        );
        counter(
            &mut m,
            "kxdp_worker_polls_total",
            "worker rounds",
            &per_worker(|v| v.polls),
        );
        counter(
            &mut m,
            "kxdp_worker_empty_polls_total",
            "worker rounds that found nothing",
            &per_worker(|v| v.empty_polls),
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
            io.iter().map(|i| i.rx).sum::<u64>()
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

/// The label of batch-size bucket `b`.
pub fn batch_label(b: usize) -> String {
    let lo = 1u64 << b;
    if b + 1 == BATCH_BUCKETS {
        lo.to_string()
    } else if lo == 1 {
        "1".into()
    } else {
        format!("{lo}-{}", 2 * lo - 1)
    }
}

/// The next hop toward underlay address `ip`.
fn next_hop(node: &kxdp_dataplane::tables::NodeConfig, ip: Ipv4Addr) -> Ipv4Addr {
    if node.uplink_subnet.contains_addr(&ip) {
        ip
    } else {
        node.uplink_gateway.unwrap_or(ip)
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

/// Which flows `/api/conntrack` lists: each filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// The protocol number.
    pub proto: Option<u8>,
    /// An address either direction has as source or destination.
    pub addr: Option<Ipv4Addr>,
    /// A port either direction has as source or destination.
    pub port: Option<u16>,
}

impl FlowFilter {
    fn matches(
        &self,
        o: &kxdp_dataplane::flow::FlowKey,
        r: &kxdp_dataplane::flow::FlowKey,
    ) -> bool {
        self.proto.is_none_or(|p| o.proto == p)
            && self
                .addr
                .is_none_or(|a| [o.src_ip, o.dst_ip, r.src_ip, r.dst_ip].contains(&a))
            && self
                .port
                .is_none_or(|p| [o.src_port, o.dst_port, r.src_port, r.dst_port].contains(&p))
    }

    /// A filter from `proto=tcp&addr=10.0.0.1&port=80`, naming the parameter that is wrong.
    pub fn from_query(query: &BTreeMap<String, String>) -> Result<FlowFilter, String> {
        let proto = query
            .get("proto")
            .map(|p| parse_proto(p).ok_or_else(|| format!("proto: {p:?} is not tcp, udp or icmp")))
            .transpose()?;
        let addr = query
            .get("addr")
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("addr: {a:?} is not an IPv4 address"))
            })
            .transpose()?;
        let port = query
            .get("port")
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("port: {p:?} is not a port number"))
            })
            .transpose()?;
        Ok(FlowFilter { proto, addr, port })
    }
}

/// `tcp`, `udp` or `icmp` as a protocol number.
pub fn parse_proto(p: &str) -> Option<u8> {
    match p {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        _ => None,
    }
}

/// A URL query string's parameters (no percent-decoding is needed for what the API takes).
pub fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_string_pretty(value) {
        Ok(text) => reply(StatusCode::OK, "application/json", text),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// Answer one request.
pub fn handle(
    state: &AdminState,
    method: &hyper::Method,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    if method != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let params = query_params(query);
    match path {
        "/healthz" => {
            if state.stopped.load(Relaxed) {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "dataplane stopped\n".into(),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            }
        }
        "/readyz" => {
            if state.ready.load(Relaxed) && !state.stopped.load(Relaxed) {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                let why = lock(&state.inner)
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "waiting for the first snapshot".into());
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                )
            }
        }
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", state.metrics()),
        "/api/status" => json(&state.status()),
        "/api/services" => json(&state.services()),
        "/api/routes" => json(&state.routes()),
        "/api/counters" => json(&state.counters_view()),
        "/api/conntrack" => {
            let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
                None => 100,
                Some(Ok(l)) => l,
                Some(Err(_)) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        "limit: not a number\n".into(),
                    )
                }
            };
            match FlowFilter::from_query(&params) {
                Ok(filter) => json(&state.flows(&filter, limit)),
                Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
            }
        }
        "/api/trace" => match trace_live(state, &params) {
            Ok(t) if params.get("format").map(String::as_str) == Some("text") => {
                reply(StatusCode::OK, "text/plain", t.to_string())
            }
            Ok(t) => json(&t),
            Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no such path: {path}\n"),
        ),
    }
}

/// `/api/trace`: one packet through the live tables.
fn trace_live(
    state: &AdminState,
    params: &BTreeMap<String, String>,
) -> Result<crate::trace::Trace, String> {
    use crate::trace::{trace, Entry, TraceInput};
    let snap = state.snapshot().ok_or("no snapshot is live yet")?;
    let endpoint = |name: &str| -> Result<(Ipv4Addr, u16), String> {
        let text = params.get(name).ok_or(format!("{name}: missing"))?;
        parse_endpoint(text).map_err(|e| format!("{name}: {e}"))
    };
    let entry = match params.get("from").map_or("pod", String::as_str) {
        "pod" => Entry::Pod,
        "uplink" => Entry::Uplink,
        "host" => Entry::Host,
        other => return Err(format!("from: {other:?} is not pod, uplink or host")),
    };
    let proto = params.get("proto").map_or("tcp", String::as_str);
    let input = TraceInput {
        entry,
        src: endpoint("src")?,
        dst: endpoint("dst")?,
        proto: parse_proto(proto).ok_or(format!("proto: {proto:?} is not tcp, udp or icmp"))?,
    };
    trace(&snap, &input).map_err(|e| e.to_string())
}

/// `10.0.0.1:80` (the port may be left out: 0).
pub fn parse_endpoint(text: &str) -> Result<(Ipv4Addr, u16), String> {
    let (ip, port) = text.split_once(':').unwrap_or((text, "0"));
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    Ok((ip, port))
}

/// Bind the admin API's listener (before anything else starts, so a taken address fails the
/// start). A stale Unix socket file is replaced.
pub async fn bind(addr: &AdminAddr) -> std::io::Result<Listener> {
    match addr {
        AdminAddr::Tcp(a) => tokio::net::TcpListener::bind(a).await.map(Listener::Tcp),
        AdminAddr::Unix(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(p);
            tokio::net::UnixListener::bind(p).map(|l| Listener::Unix(l, p.clone()))
        }
    }
}

/// A bound admin listener.
#[derive(Debug)]
pub enum Listener {
    /// On TCP.
    Tcp(tokio::net::TcpListener),
    /// On a Unix socket (removed when dropped).
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Serve the admin API until the task is dropped.
pub async fn serve(listener: Listener, state: Arc<AdminState>) {
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = handle(&state, req.method(), req.uri().path(), req.uri().query());
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match conn {
                Conn::Tcp(s) => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                        .await
                }
                Conn::Unix(s) => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "admin API connection");
            }
        });
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// GET `path` from the admin API at `addr`: the status and the body. For the CLI (blocking,
/// bounded by a 10 s timeout).
pub fn get(addr: &AdminAddr, path: &str) -> Result<(u16, String), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let timeout = Some(Duration::from_secs(10));
    let mut raw = Vec::new();
    let io = |e: std::io::Error| {
        format!("cannot reach the kxdp agent's admin API at {addr}: {e} (is the agent running? --admin says where it listens)")
    };
    match addr {
        AdminAddr::Tcp(a) => {
            let mut s =
                std::net::TcpStream::connect_timeout(a, Duration::from_secs(10)).map_err(io)?;
            s.set_read_timeout(timeout).map_err(io)?;
            s.write_all(request.as_bytes()).map_err(io)?;
            s.read_to_end(&mut raw).map_err(io)?;
        }
        AdminAddr::Unix(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p).map_err(io)?;
            s.set_read_timeout(timeout).map_err(io)?;
            s.write_all(request.as_bytes()).map_err(io)?;
            s.read_to_end(&mut raw).map_err(io)?;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("the admin API at {addr} sent no HTTP response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("the admin API at {addr} sent a bad status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        text = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET a JSON view, failing with the API's own message on a non-200 answer.
pub fn get_json<T: serde::de::DeserializeOwned>(addr: &AdminAddr, path: &str) -> Result<T, String> {
    let (status, body) = get(addr, path)?;
    if status != 200 {
        return Err(format!("{path}: {status}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{path}: unexpected answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_parse_and_print_back() {
        for text in ["127.0.0.1:9901", "unix:/run/kxdp/agent.sock"] {
            let a: AdminAddr = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
        }
        assert!("unix:".parse::<AdminAddr>().is_err());
        let e = "localhost".parse::<AdminAddr>().unwrap_err();
        assert!(e.contains("unix:PATH"), "{e}");
    }

    #[test]
    fn batch_labels_cover_one_to_sixty_four() {
        let labels: Vec<String> = (0..BATCH_BUCKETS).map(batch_label).collect();
        assert_eq!(labels, ["1", "2-3", "4-7", "8-15", "16-31", "32-63", "64"]);
    }

    #[test]
    fn flow_filters_name_the_bad_parameter() {
        let q = query_params(Some("proto=udp&addr=10.0.0.1&port=53"));
        let f = FlowFilter::from_query(&q).unwrap();
        assert_eq!(
            f,
            FlowFilter {
                proto: Some(17),
                addr: Some(Ipv4Addr::new(10, 0, 0, 1)),
                port: Some(53)
            }
        );
        let e = FlowFilter::from_query(&query_params(Some("port=http"))).unwrap_err();
        assert!(e.starts_with("port:"), "{e}");
        let e = FlowFilter::from_query(&query_params(Some("proto=sctp"))).unwrap_err();
        assert!(e.starts_with("proto:"), "{e}");
    }

    #[test]
    fn a_starting_agent_is_healthy_but_not_ready_and_metrics_say_so() {
        let state = AdminState::new("node-a", "manifests");
        let get = |p: &str| handle(&state, &hyper::Method::GET, p, None).status();
        assert_eq!(get("/healthz"), StatusCode::OK);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        let m = state.metrics();
        assert!(m.contains("kxdp_ready 0\n"), "{m}");
        assert!(
            m.contains("kxdp_drops_total{reason=\"neighbor_unresolved\"} 0"),
            "{m}"
        );
        state.set_stopped();
        assert_eq!(get("/healthz"), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
