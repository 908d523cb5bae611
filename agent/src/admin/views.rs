//! The admin API's JSON views: what `kxdp status|services|conntrack|routes|counters --json`
//! print, the query model of `/api/conntrack`, and the views built from a snapshot alone.
//! Plain data with serde, shared by the server and the CLI.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kxdp_control::model::mac_text;
use kxdp_dataplane::tables::{FrontendKind, TrafficPolicy};
use kxdp_dataplane::Snapshot;
use kxdp_xdp::worker::BATCH_BUCKETS;
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
    /// The XDP program's decisions (steered to kxdp or passed to the kernel, and why).
    pub xdp: BTreeMap<String, u64>,
    /// AF_XDP I/O: rx, tx, tx_ring_full, copied, polls, empty_polls.
    pub io: BTreeMap<String, u64>,
    /// Batches by size: `1`, `2-3`, …, `64`.
    pub batch_sizes: Vec<(String, u64)>,
}

/// `/api/services`: every service port of `snap`, by name.
pub fn services(snap: &Snapshot) -> Vec<ServiceView> {
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

/// `/api/routes`: where each destination of `snap` goes.
pub fn routes(snap: &Snapshot) -> Vec<RouteView> {
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

pub(crate) fn proto_name(proto: u8) -> String {
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
    pub(crate) fn matches(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_labels_cover_one_to_sixty_four() {
        let labels: Vec<String> = (0..BATCH_BUCKETS).map(batch_label).collect();
        assert_eq!(labels, ["1", "2-3", "4-7", "8-15", "16-31", "32-63", "64"]);
    }
}
