//! The admin API's JSON views: what `kxdp status|services|conntrack|routes|counters|policies
//! --json` print, the query model of `/api/conntrack`, and the views built from a snapshot alone.
//! Plain data with serde, shared by the server and the CLI.
//!
//! Values are typed fields, never text to be parsed again: addresses, ports, protocols,
//! frontends and flows are the objects of [`kxdp_control::json`] (`{"ip", "port"}`,
//! `{"proto", "src", "dst"}`, `{"kind", "ip", "port"}`), pairs of numbers are objects with
//! named fields, a route's target is an object tagged by `kind`. The CLI's plain tables are
//! rendered from these (see `crate::cli::render`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kxdp_control::json::{Flow, Frontend, Policy, Proto};
use kxdp_control::model::mac_text;
use kxdp_dataplane::wire::Ipv4Cidr;
use kxdp_dataplane::Snapshot;
use serde::{Deserialize, Serialize};

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
    /// The one CPU the kernel lets it run on, where its affinity is a single CPU.
    pub core: Option<usize>,
    /// Every CPU the kernel lets it run on now (empty if that could not be read).
    #[serde(default)]
    pub cpus: Vec<usize>,
    /// The core the agent pinned it to at start, if any: where `cpus` is known and is not
    /// this core alone, something (a cpuset change) has moved the worker since.
    #[serde(default)]
    pub pinned: Option<usize>,
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmission.
    pub tx: u64,
    /// Frames dropped for a full TX ring.
    pub tx_ring_full: u64,
}

/// Snapshot updates: change noticed to snapshot live, milliseconds, over all updates.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyView {
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The longest.
    pub max: f64,
}

/// Underlay next hops.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NeighborsView {
    /// Next hops the tables need a MAC address for.
    pub needed: usize,
    /// How many of them have one.
    pub resolved: usize,
}

/// Conntrack's fill.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackFillView {
    /// Flows in the table.
    pub flows: usize,
    /// The table's capacity.
    pub capacity: usize,
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
    /// Change noticed to snapshot live.
    pub update_latency_ms: LatencyView,
    /// Service ports in the live snapshot.
    pub services: usize,
    /// Local pods in the live snapshot.
    pub local_pods: usize,
    /// Remote nodes in the live snapshot.
    pub remote_nodes: usize,
    /// Underlay next hops needed and resolved.
    pub neighbors: NeighborsView,
    /// Flows in conntrack, and its capacity.
    pub conntrack: ConntrackFillView,
    /// Endpoints that left every service but still have flows.
    pub draining_endpoints: usize,
    /// The workers.
    pub workers: Vec<WorkerView>,
    /// The interfaces served.
    pub interfaces: Vec<InterfaceView>,
    /// Objects left out of the tables, each with why.
    pub problems: Vec<String>,
    /// Pod interfaces the tables have that could not be served or released, each with why
    /// (`name: why`); tried again after 0.5 s, doubling to 10 s.
    pub interface_errors: Vec<String>,
}

/// The state of a service's endpoint.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BackendState {
    /// Ready: new flows may get it.
    Ready,
    /// Terminating but still serving: used only when no endpoint is ready.
    ServingTerminating,
    /// Terminating: only its existing flows.
    Terminating,
    /// Not ready.
    NotReady,
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendState::Ready => "ready",
            BackendState::ServingTerminating => "serving-terminating",
            BackendState::Terminating => "terminating",
            BackendState::NotReady => "not-ready",
        })
    }
}

/// One endpoint of a service port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendView {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Its state.
    pub state: BackendState,
    /// Whether it runs on this node.
    pub local: bool,
}

/// A service port's traffic policies.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoliciesView {
    /// `internalTrafficPolicy`.
    pub internal: Policy,
    /// `externalTrafficPolicy`.
    pub external: Policy,
}

/// One service port (`/api/services`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceView {
    /// `namespace/name:port-name`.
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: Proto,
    /// Its frontends.
    pub frontends: Vec<Frontend>,
    /// Its traffic policies.
    pub policies: PoliciesView,
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
    /// The original direction, as its first packet arrived.
    pub original: Flow,
    /// The reply direction, as translated.
    pub reply: Flow,
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

/// A next hop on the underlay.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NextHopView {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC address, once known.
    pub mac: Option<String>,
}

/// What a route does with packets, tagged by `kind`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteTarget {
    /// This node's pods, on their veths.
    LocalPods {
        /// How many.
        pods: usize,
        /// The pods' gateway address.
        gateway: Ipv4Addr,
    },
    /// Another node's pods, over VXLAN on the uplink.
    RemoteNode {
        /// The node.
        node: String,
        /// Its VXLAN endpoint.
        underlay_ip: Ipv4Addr,
        /// Its VTEP MAC.
        vtep_mac: String,
        /// The VXLAN network identifier.
        vni: u32,
        /// The next hop toward it.
        next_hop: NextHopView,
    },
    /// Service ports: DNAT to a backend.
    Services {
        /// How many service ports.
        ports: usize,
    },
    /// This node's own address: NodePorts, the rest to the kernel.
    Node,
    /// Underlay neighbours, on the uplink.
    Underlay,
    /// Outside the cluster: out of the uplink, pods masqueraded.
    Outside {
        /// The node address pods are masqueraded to.
        masquerade_to: Ipv4Addr,
        /// The uplink's gateway.
        next_hop: NextHopView,
    },
}

/// One route (`/api/routes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteView {
    /// The destination prefix.
    pub destination: Ipv4Net,
    /// Where packets for it go (`kind` and its fields).
    #[serde(flatten)]
    pub target: RouteTarget,
}

/// How many batches had a size in `min..=max`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchSizeView {
    /// The smallest size counted here.
    pub min: u64,
    /// The largest.
    pub max: u64,
    /// Batches of such a size.
    pub batches: u64,
}

impl BatchSizeView {
    /// The sizes counted, as a label: `1`, `2-3`, …, `64`.
    pub fn label(&self) -> String {
        match (self.min, self.max) {
            (lo, hi) if lo == hi => lo.to_string(),
            (lo, hi) => format!("{lo}-{hi}"),
        }
    }
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
    /// The XDP program's decisions (steered to kxdp, dropped or passed to the kernel, and why).
    pub xdp: BTreeMap<String, u64>,
    /// AF_XDP I/O: rx, tx, tx_ring_full, copied, polls, empty_polls.
    pub io: BTreeMap<String, u64>,
    /// Batches by size: 1, 2-3, …, 64.
    pub batch_sizes: Vec<BatchSizeView>,
}

/// `/api/services`: every service port of `snap`, by name.
pub fn services(snap: &Snapshot) -> Vec<ServiceView> {
    let mut out: Vec<ServiceView> = snap
        .services
        .ports()
        .iter()
        .map(|p| {
            let spec = p.spec();
            let any_ready = spec.backends.iter().any(|b| b.ready);
            let backends = spec
                .backends
                .iter()
                .map(|b| BackendView {
                    ip: b.ip,
                    port: b.port,
                    state: if b.ready {
                        BackendState::Ready
                    } else if b.serving && b.terminating && !any_ready {
                        BackendState::ServingTerminating
                    } else if b.terminating {
                        BackendState::Terminating
                    } else {
                        BackendState::NotReady
                    },
                    local: b.local,
                })
                .collect();
            ServiceView {
                name: spec.name.clone(),
                proto: Proto::from_number(spec.proto),
                frontends: spec.frontends.iter().map(Frontend::from).collect(),
                policies: PoliciesView {
                    internal: spec.internal_policy.into(),
                    external: spec.external_policy.into(),
                },
                client_ip_affinity: spec.client_ip_affinity.is_some(),
                backends,
                usable: p.cluster_members().len(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The dataplane's CIDR as `ipnet` prints and parses it.
fn net(c: Ipv4Cidr) -> Ipv4Net {
    Ipv4Net::new(c.address(), c.prefix_len()).expect("a prefix length of at most 32")
}

/// `/api/routes`: where each destination of `snap` goes.
pub fn routes(snap: &Snapshot) -> Vec<RouteView> {
    let node = &snap.node;
    let hop = |ip: Ipv4Addr| NextHopView {
        ip,
        mac: snap.next_hop_mac(ip).map(mac_text),
    };
    let mut out = vec![RouteView {
        destination: net(node.pod_cidr),
        target: RouteTarget::LocalPods {
            pods: snap.local_pods().count(),
            gateway: node.gateway_ip,
        },
    }];
    for r in snap.remote_nodes() {
        let n = &r.node;
        out.push(RouteView {
            destination: net(n.pod_cidr),
            target: RouteTarget::RemoteNode {
                node: n.name.clone(),
                underlay_ip: n.node_ip,
                vtep_mac: mac_text(n.vtep_mac),
                vni: node.vxlan_vni,
                next_hop: hop(next_hop(node, n.node_ip)),
            },
        });
    }
    out.push(RouteView {
        destination: net(node.service_cidr),
        target: RouteTarget::Services {
            ports: snap.services.ports().len(),
        },
    });
    for ip in &node.node_ips {
        out.push(RouteView {
            destination: Ipv4Net::from(*ip),
            target: RouteTarget::Node,
        });
    }
    out.push(RouteView {
        destination: net(node.uplink_subnet),
        target: RouteTarget::Underlay,
    });
    if let Some(gw) = node.uplink_gateway {
        out.push(RouteView {
            destination: Ipv4Net::default(),
            target: RouteTarget::Outside {
                masquerade_to: node.primary_ip(),
                next_hop: hop(gw),
            },
        });
    }
    out
}

/// The next hop toward underlay address `ip`.
fn next_hop(node: &kxdp_dataplane::tables::NodeConfig, ip: Ipv4Addr) -> Ipv4Addr {
    if node.uplink_subnet.contains_addr(&ip) {
        ip
    } else {
        node.uplink_gateway.unwrap_or(ip)
    }
}

/// Which flows `/api/conntrack` lists: each filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// The protocol.
    pub proto: Option<Proto>,
    /// An address either direction has as source or destination.
    pub addr: Option<Ipv4Addr>,
    /// A port either direction has as source or destination.
    pub port: Option<u16>,
}

impl FlowFilter {
    pub(crate) fn matches(
        &self,
        o: &kxdp_dataplane::flow::FlowKey,
        r: &kxdp_dataplane::flow::FlowKey,
    ) -> bool {
        self.proto.is_none_or(|p| o.proto == p.number())
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
            .map(|p| p.parse().map_err(|e| format!("proto: {e}")))
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

/// The most address ranges a rule's view lists (`peer_ranges` counts them all).
pub const MAX_PEER_RANGES_LISTED: usize = 32;

/// One of this node's pods and the NetworkPolicies selecting it, as compiled
/// (`/api/policies`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodPolicyView {
    /// `namespace/name`.
    pub pod: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// `None`: no policy selects it for ingress, which is open.
    pub ingress: Option<DirectionPolicyView>,
    /// `None`: no policy selects it for egress, which is open.
    pub egress: Option<DirectionPolicyView>,
}

/// What the policies selecting a pod in one direction allow; anything else is denied.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirectionPolicyView {
    /// Every policy selecting the pod in this direction (`namespace/name`).
    pub policies: Vec<String>,
    /// Their rules; none: everything is denied.
    pub rules: Vec<PolicyRuleView>,
}

/// One rule: the peers it admits on its ports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyRuleView {
    /// The policy it belongs to.
    pub policy: String,
    /// `None`: any peer; else the first [`MAX_PEER_RANGES_LISTED`] address ranges
    /// (`10.244.1.5`, `10.0.0.0-10.95.255.255`) of the pods and blocks it admits.
    pub peers: Option<Vec<String>>,
    /// How many address ranges the peers are.
    pub peer_ranges: usize,
    /// `None`: any port; else `tcp/80`, `udp/9000-9100` (SCTP by its number, `132/80`).
    pub ports: Option<Vec<String>>,
    /// Named ports of an egress rule, resolved per destination pod: each number the name
    /// is somewhere (`tcp/8080`) and how many address ranges hold the pods where it is.
    pub named_ports: Vec<(String, usize)>,
}

/// `/api/policies`: every pod this node serves and what selects it, in pod order.
pub fn policies(snap: &Snapshot) -> Vec<PodPolicyView> {
    use kxdp_dataplane::tables::{PeerSet, PortSet, RuleSet};
    let proto = |p: u8| Proto::from_number(p).to_string();
    let port_name = |p: u8, lo: u16, hi: u16| match lo == hi {
        true => format!("{}/{lo}", proto(p)),
        false => format!("{}/{lo}-{hi}", proto(p)),
    };
    let direction = |set: &Option<RuleSet>| {
        set.as_ref().map(|set| DirectionPolicyView {
            policies: set.policies.iter().map(|p| p.to_string()).collect(),
            rules: set
                .rules
                .iter()
                .map(|r| {
                    let (peers, peer_ranges) = match &r.peers {
                        PeerSet::Any => (None, 0),
                        PeerSet::Addresses(a) => {
                            let listed = a
                                .ranges()
                                .take(MAX_PEER_RANGES_LISTED)
                                .map(|(lo, hi)| {
                                    if lo == hi {
                                        lo.to_string()
                                    } else {
                                        format!("{lo}-{hi}")
                                    }
                                })
                                .collect();
                            (Some(listed), a.ranges().count())
                        }
                    };
                    let ports = match &r.ports {
                        PortSet::Any => None,
                        PortSet::Ranges(ranges) => Some(
                            ranges
                                .iter()
                                .map(|p| port_name(p.proto, p.lo, p.hi))
                                .collect(),
                        ),
                    };
                    PolicyRuleView {
                        policy: r.policy.to_string(),
                        peers,
                        peer_ranges,
                        ports,
                        named_ports: r
                            .peer_ports
                            .iter()
                            .map(|p| (port_name(p.proto, p.port, p.port), p.peers.ranges().count()))
                            .collect(),
                    }
                })
                .collect(),
        })
    };
    let mut out: Vec<PodPolicyView> = snap
        .local_pods()
        .map(|p| {
            let (ingress, egress) = p.policy.as_ref().map_or((None, None), |pol| {
                (direction(&pol.ingress), direction(&pol.egress))
            });
            PodPolicyView {
                pod: p.name.clone(),
                ip: p.ip,
                ingress,
                egress,
            }
        })
        .collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kxdp_xdp::worker::BATCH_BUCKET_BOUNDS;

    #[test]
    fn policies_show_each_pod_open_or_what_selects_it() {
        use kxdp_dataplane::tables::{
            AddressSet, PeerSet, PodPolicy, PolicyRule, PortPeers, PortRange, PortSet, RuleSet,
        };
        use std::sync::Arc;
        let mut t = kxdp_testkit::Topology::default();
        let (a, b) = (t.pod_a.ip, t.pod_b.ip);
        t.pod_b.policy = Some(Arc::new(PodPolicy {
            ingress: Some(RuleSet {
                rules: vec![PolicyRule {
                    policy: "default/b-in".into(),
                    peers: PeerSet::Addresses(AddressSet::from_ranges([
                        (a, a),
                        (Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 255)),
                    ])),
                    ports: PortSet::Ranges(
                        vec![PortRange {
                            proto: 6,
                            lo: 8080,
                            hi: 8090,
                        }]
                        .into(),
                    ),
                    peer_ports: Arc::new([PortPeers {
                        proto: 6,
                        port: 80,
                        peers: AddressSet::from_ranges([(a, a)]),
                    }]),
                }]
                .into(),
                policies: vec![Arc::<str>::from("default/b-in")].into(),
            }),
            egress: Some(RuleSet {
                rules: Vec::new().into(),
                policies: vec![Arc::<str>::from("default/deny-out")].into(),
            }),
        }));
        let snap = t.snapshot();
        let views = policies(&snap);
        let by_ip = |ip| views.iter().find(|v| v.ip == ip).expect("every local pod");
        let open = by_ip(a);
        assert_eq!((&open.ingress, &open.egress), (&None, &None), "{open:?}");
        let b = by_ip(b);
        let ingress = b.ingress.as_ref().expect("selected for ingress");
        assert_eq!(ingress.policies, ["default/b-in"]);
        assert_eq!(
            ingress.rules,
            [PolicyRuleView {
                policy: "default/b-in".into(),
                peers: Some(vec!["10.0.0.0-10.0.0.255".into(), a.to_string()]),
                peer_ranges: 2,
                ports: Some(vec!["tcp/8080-8090".into()]),
                named_ports: vec![("tcp/80".into(), 1)],
            }]
        );
        let egress = b.egress.as_ref().expect("selected for egress");
        assert_eq!(
            (egress.policies.as_slice(), egress.rules.len()),
            (&["default/deny-out".to_owned()][..], 0)
        );
        let text = crate::cli::render::policies(&views);
        assert!(
            text.contains("  ingress: selected by default/b-in\n")
                && text.contains("default/b-in: from 10.0.0.0-10.0.0.255, ")
                && text.contains(" to tcp/8080-8090, and per destination pod tcp/80 (1 range)\n")
                && text.contains("  egress: selected by default/deny-out\n    denies everything\n")
                && text.contains("  egress: open (no policy selects it)\n"),
            "{text}"
        );
    }

    #[test]
    fn batch_labels_cover_one_to_sixty_four() {
        let labels: Vec<String> = BATCH_BUCKET_BOUNDS
            .iter()
            .map(|&(min, max)| BatchSizeView {
                min,
                max,
                batches: 0,
            })
            .map(|s| s.label())
            .collect();
        assert_eq!(labels, ["1", "2-3", "4-7", "8-15", "16-31", "32-63", "64"]);
    }
}
