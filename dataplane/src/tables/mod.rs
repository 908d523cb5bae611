//! The snapshot: every table a worker reads, immutable once built.
//!
//! The control side builds a [`Snapshot`] from the cluster model and publishes it by swapping a
//! pointer; workers load it once per batch and never lock. Everything a packet decision needs
//! that is not per-flow state lives here; per-flow state lives in [`crate::conntrack`].
//!
//! Building resolves what can be resolved ahead of time, so the packet path does one lookup
//! where a naive design would do three: each remote node gets a ready-made VXLAN header
//! template (outer Ethernet, IPv4, UDP, VXLAN and inner Ethernet, with the outer checksum
//! pre-summed), and the uplink's next hop is resolved to a MAC address.

pub mod maglev;
pub mod policy;
pub mod route;
pub mod service;

use core::net::Ipv4Addr;
use core::ops::RangeInclusive;
use std::sync::Arc;

use crate::flow::FastMap;
use crate::wire::{checksum, vxlan, Ipv4Cidr, MacAddr};
pub use policy::{
    AddressSet, Direction, PeerSet, PodPolicy, PolicyRule, PolicyVerdict, PortPeers, PortRange,
    PortSet, RuleSet,
};
pub use route::Lpm;
pub use service::{
    frontend_key, Backend, Eligible, Frontend, FrontendKind, Hint, Pick, ServicePort,
    ServicePortSpec, ServiceTable, ServiceTableError, TopologyMode, TrafficPolicy,
};

/// An interface the dataplane drives, numbered by the I/O layer. Small and dense: tables index
/// arrays with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceId(pub u16);

/// What an interface is to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceRole {
    /// The node's NIC toward the underlay.
    Uplink,
    /// The veth toward the node's own kernel stack.
    Host,
    /// The host end of a pod's veth; the pod owns `ip`.
    Pod {
        /// The pod's address: the only source address accepted on this interface.
        ip: Ipv4Addr,
    },
}

/// This node's own configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Kubernetes node name.
    pub name: String,
    /// The node's addresses on the underlay; the first is the VXLAN source and the egress
    /// masquerade address.
    pub node_ips: Vec<Ipv4Addr>,
    /// The addresses NodePorts answer on (kube-proxy's `--nodeport-addresses`, resolved to
    /// the node's addresses inside those CIDRs); `None`: the primary address only, as
    /// kube-proxy's nftables mode does by default. See [`NodeConfig::nodeport_ips`].
    pub nodeport_ips: Option<Vec<Ipv4Addr>>,
    /// The underlay subnet of the uplink: destinations inside it are neighbours.
    pub uplink_subnet: Ipv4Cidr,
    /// The uplink's default gateway, for destinations outside the cluster and the subnet.
    pub uplink_gateway: Option<Ipv4Addr>,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// The whole cluster's pod CIDR; traffic leaving it is masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// The service CIDR; an address in it with no service is dropped.
    pub service_cidr: Ipv4Cidr,
    /// The pods' gateway: the node's address on the pod network. Pods route through it, kxdp
    /// answers ARP and ping for it, and masquerades hairpin, NodePort and node-to-pod traffic to
    /// it (where kube-proxy with flannel would pick the cni0/flannel.1 address).
    pub gateway_ip: Ipv4Addr,
    /// The MAC address pods see for every other host (proxy ARP answers with it).
    pub gateway_mac: MacAddr,
    /// The uplink interface.
    pub uplink: InterfaceId,
    /// The uplink's MAC address.
    pub uplink_mac: MacAddr,
    /// The uplink's MTU; encapsulated packets must fit in it.
    pub uplink_mtu: u16,
    /// The pods' MTU: the largest IP packet kxdp delivers to a pod whole. It may be far above
    /// the uplink's (large frames inside the node); what leaves for a smaller link is
    /// segmented or fragmented on the way out. [`NodeConfig::flannel_pod_mtu`] is flannel's.
    pub pod_mtu: u16,
    /// The host interface toward the node's kernel.
    pub host: InterfaceId,
    /// The kernel-side MAC address of the host interface: frames handed to the host carry it.
    pub host_mac: MacAddr,
    /// This node's VTEP MAC, the inner source MAC of what it encapsulates (flannel publishes it
    /// in `flannel.alpha.coreos.com/backend-data`).
    pub vtep_mac: MacAddr,
    /// VXLAN network identifier (flannel: 1).
    pub vxlan_vni: u32,
    /// VXLAN UDP port (flannel and Linux: 8472).
    pub vxlan_port: u16,
    /// Source ports for masquerade (egress, hairpin, NodePort, node to pod). Keep it out of the
    /// kernel's `ip_local_port_range` and the NodePort range so the XDP program can steer
    /// replies by port alone.
    pub masquerade_ports: RangeInclusive<u16>,
}

impl NodeConfig {
    /// The pod MTU flannel's VXLAN backend sets: the uplink's, less the encapsulation.
    pub fn flannel_pod_mtu(uplink_mtu: u16) -> u16 {
        uplink_mtu.saturating_sub(crate::wire::VXLAN_OVERHEAD as u16)
    }

    /// The primary node address.
    #[inline]
    pub fn primary_ip(&self) -> Ipv4Addr {
        self.node_ips[0]
    }

    /// The addresses NodePorts answer on: those configured, else the primary address (none
    /// when `node_ips` is empty, which a snapshot refuses).
    #[inline]
    pub fn nodeport_ips(&self) -> &[Ipv4Addr] {
        match &self.nodeport_ips {
            Some(ips) => ips,
            None => self.node_ips.get(..1).unwrap_or(&[]),
        }
    }

    /// Whether a client is inside the cluster as kube-proxy sees it: this node's own stack
    /// (`from_host`), or an address in the cluster CIDR (a pod, here or on another node,
    /// whichever interface its packet arrives on). Such a client may use every endpoint of an
    /// external frontend and never has its address kept toward one
    /// ([`ServicePort::eligible`](crate::tables::ServicePort::eligible)).
    #[inline]
    pub fn is_internal_client(&self, from_host: bool, src: Ipv4Addr) -> bool {
        from_host || self.cluster_cidr.contains_addr(&src)
    }
}

/// A pod on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    /// `namespace/name`.
    pub name: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The host end of its veth.
    pub iface: InterfaceId,
    /// The pod's MAC address (its end of the veth).
    pub mac: MacAddr,
    /// The NetworkPolicies selecting the pod, compiled; `None` when none selects it in either
    /// direction (then its traffic is not tracked for policy and pays nothing for it). Shared
    /// by `Arc` with the control side's compile, so an unchanged pod's policy is reused
    /// across snapshots.
    pub policy: Option<Arc<PodPolicy>>,
}

/// What the NetworkPolicies of this node's pods say of a new flow ([`Snapshot::flow_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowPolicy<'a> {
    /// The source pod's egress policy, if the source is a local pod.
    pub egress: PolicyVerdict<'a>,
    /// The destination pod's ingress policy, if the destination is a local pod.
    pub ingress: PolicyVerdict<'a>,
}

/// Another node of the overlay, kxdp or flannel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteNode {
    /// Kubernetes node name.
    pub name: String,
    /// Its underlay address (flannel's `public-ip`).
    pub node_ip: Ipv4Addr,
    /// Its pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// Its VTEP MAC.
    pub vtep_mac: MacAddr,
}

/// Where a destination address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// This node's pod CIDR: look the pod up.
    LocalPods,
    /// Another node's pod CIDR: encapsulate toward it (index into the remote nodes).
    RemoteNode(u32),
    /// One of this node's own addresses.
    Node,
    /// The service CIDR.
    ServiceCidr,
    /// Inside the cluster CIDR, in no node's pod CIDR.
    ClusterUnassigned,
    /// Outside the cluster: out the uplink.
    External,
}

/// Length of a VXLAN encapsulation template: outer Ethernet, IPv4, UDP, VXLAN, inner Ethernet.
pub const ENCAP_TEMPLATE_LEN: usize = 64;

/// A remote node with its precomputed encapsulation.
#[derive(Clone, Debug)]
pub struct RemoteNodeEntry {
    /// The node.
    pub node: RemoteNode,
    /// Ready-made headers, or `None` while the next hop's MAC is unknown.
    pub encap: Option<EncapTemplate>,
    /// The node's pod CIDR, as two words for [`RemoteNodeEntry::sends_from`].
    pods: Subnet,
}

impl RemoteNodeEntry {
    /// Whether the node may send from `src` through the tunnel: an address of its pod CIDR
    /// (its pods, and its own traffic, which flannel and kxdp send from the CIDR's gateway
    /// address) or its underlay address (ICMP errors a node sends itself).
    #[inline]
    pub fn sends_from(&self, src: Ipv4Addr) -> bool {
        self.pods.contains(u32::from(src)) || src == self.node.node_ip
    }
}

/// Headers of a VXLAN packet toward one node, complete but for the outer IPv4 total length and
/// checksum and the UDP source port and length, which depend on the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapTemplate {
    /// The bytes.
    pub bytes: [u8; ENCAP_TEMPLATE_LEN],
    /// One's-complement sum of the outer IPv4 header with zero length and checksum.
    pub ip_partial_sum: u32,
}

impl EncapTemplate {
    fn new(node: &NodeConfig, remote: &RemoteNode, next_hop_mac: MacAddr) -> EncapTemplate {
        let mut b = [0u8; ENCAP_TEMPLATE_LEN];
        // Outer Ethernet.
        b[0..6].copy_from_slice(&next_hop_mac.0);
        b[6..12].copy_from_slice(&node.uplink_mac.0);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        // Outer IPv4: DF set because kxdp never fragments the outer packet (an inner packet too
        // big for the tunnel is cut before encapsulation); RFC 6864 lets the ID stay zero then.
        b[14] = 0x45;
        b[20..22].copy_from_slice(&0x4000u16.to_be_bytes());
        b[22] = 64;
        b[23] = crate::flow::proto::UDP;
        b[26..30].copy_from_slice(&node.primary_ip().octets());
        b[30..34].copy_from_slice(&remote.node_ip.octets());
        // Outer UDP: checksum zero, which RFC 7348 allows over IPv4 and every receiver accepts
        // (the inner packet carries its own). A Linux vxlan device sends one when created with
        // `udpcsum`; the perf report shows what flannel.1 does on the machine it ran on.
        b[36..38].copy_from_slice(&node.vxlan_port.to_be_bytes());
        // VXLAN.
        let mut vx = vxlan::VxlanPacket::new_unchecked(&mut b[42..50]);
        vx.set_flags(vxlan::FLAG_I);
        vx.set_vni(node.vxlan_vni);
        // Inner Ethernet: the kernel's vxlan device accepts frames for its own VTEP MAC.
        b[50..56].copy_from_slice(&remote.vtep_mac.0);
        b[56..62].copy_from_slice(&node.vtep_mac.0);
        b[62..64].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_partial_sum = checksum::sum(&b[14..34], 0);
        EncapTemplate {
            bytes: b,
            ip_partial_sum,
        }
    }
}

/// Everything a snapshot is built from.
#[derive(Clone, Debug)]
pub struct SnapshotInputs {
    /// Monotonic version, for tracing and metrics.
    pub generation: u64,
    /// This node.
    pub node: NodeConfig,
    /// Compiled service ports.
    pub services: Vec<Arc<ServicePort>>,
    /// Pods on this node.
    pub pods: Vec<LocalPod>,
    /// Other nodes.
    pub nodes: Vec<RemoteNode>,
    /// Underlay neighbours: address to MAC.
    pub neighbors: Vec<(Ipv4Addr, MacAddr)>,
    /// Endpoints (address, protocol, port) no longer in any service that conntrack still holds
    /// flows to. Their replies keep being reverse-translated, as Linux conntrack does after an
    /// endpoint leaves (a selector change, say); the control side lists them until those flows
    /// end or are flushed.
    pub draining_endpoints: Vec<(Ipv4Addr, u8, u16)>,
}

/// Why a snapshot could not be built; each names the object at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// A field of the node's own configuration is invalid.
    #[error("node {node}: {field}: {problem}")]
    BadNodeConfig {
        /// Node name.
        node: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Two pods claim one interface or one address.
    #[error("pod {second}: {what} is already used by pod {first}")]
    PodConflict {
        /// The pod listed first.
        first: String,
        /// The pod listed second.
        second: String,
        /// "interface N" or "address A".
        what: String,
    },
    /// A local pod's address is outside this node's pod CIDR.
    #[error("pod {pod}: address {ip} is outside this node's pod CIDR {cidr}")]
    PodOutsideCidr {
        /// The pod.
        pod: String,
        /// Its address.
        ip: Ipv4Addr,
        /// The node's pod CIDR.
        cidr: Ipv4Cidr,
    },
    /// A remote node's pod CIDR overlaps another's or this node's.
    #[error("node {node}: pod CIDR {cidr} overlaps node {other}")]
    OverlappingPodCidr {
        /// The node.
        node: String,
        /// Its CIDR.
        cidr: Ipv4Cidr,
        /// The node it overlaps.
        other: String,
    },
    /// The service table could not be built.
    #[error(transparent)]
    Service(#[from] ServiceTableError),
}

/// The immutable tables a worker reads.
#[derive(Debug)]
pub struct Snapshot {
    /// Monotonic version.
    pub generation: u64,
    /// This node.
    pub node: NodeConfig,
    /// Service ports by frontend.
    pub services: ServiceTable,
    local_subnet: Subnet,
    service_subnet: Subnet,
    cluster_subnet: Subnet,
    /// Remote nodes by pod-CIDR block of the cluster CIDR (index + 1, 0 = unassigned), when
    /// every node's pod CIDR has the same length (flannel's `SubnetLen`); else `None` and
    /// `cluster_routes` decides.
    node_blocks: Option<(u8, Box<[u32]>)>,
    cluster_routes: Lpm<RouteTarget>,
    pods: Vec<LocalPod>,
    /// Pods by offset in the pod CIDR (index + 1, 0 = none).
    pod_slots: Box<[u32]>,
    interfaces: Vec<Option<InterfaceRole>>,
    remote_nodes: Vec<RemoteNodeEntry>,
    nodes_by_ip: FastMap<u32, u32>,
    /// Remote nodes by host offset in the uplink subnet (index + 1, 0 = none), when the subnet
    /// is /16 or narrower: the VXLAN source check on every decapsulated packet is one load.
    uplink_hosts: Option<(Subnet, Box<[u32]>)>,
    neighbors: FastMap<u32, MacAddr>,
    gateway_mac: Option<MacAddr>,
    /// Whether some local pod has a policy: when not, the packet path asks nothing more.
    policed: bool,
    /// See [`Snapshot::policy_epoch`].
    policy_epoch: u32,
}

fn cidr_overlaps(a: &Ipv4Cidr, b: &Ipv4Cidr) -> bool {
    a.contains_subnet(b) || b.contains_subnet(a)
}

/// A CIDR as two words, so membership is one AND and one compare on the packet path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Subnet {
    base: u32,
    mask: u32,
    len: u8,
}

impl Subnet {
    fn new(cidr: Ipv4Cidr) -> Subnet {
        let len = cidr.prefix_len();
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        Subnet {
            base: u32::from(cidr.address()) & mask,
            mask,
            len,
        }
    }

    #[inline]
    fn contains(&self, ip: u32) -> bool {
        ip & self.mask == self.base
    }

    /// Index of `ip`'s sub-block of prefix length `sub_len` within this subnet.
    #[inline]
    fn block(&self, ip: u32, sub_len: u8) -> usize {
        ((ip - self.base) >> (32 - u32::from(sub_len))) as usize
    }
}

/// Longest pod CIDR prefix kxdp indexes directly (a /16 holds 65,536 pod slots).
const MIN_POD_PREFIX: u8 = 16;
/// Most pod-CIDR blocks in the cluster CIDR indexed directly (e.g. /8 cluster, /24 nodes).
const MAX_NODE_BLOCK_BITS: u8 = 16;

impl Snapshot {
    /// Build and validate a snapshot.
    pub fn build(inputs: SnapshotInputs) -> Result<Snapshot, SnapshotError> {
        Self::build_from(inputs, None)
    }

    /// Build and validate a snapshot, reusing `previous`'s service index where the service
    /// ports are the same (`Arc::ptr_eq`): see [`ServiceTable::updated`]. The result is the
    /// same as [`Snapshot::build`]'s, except perhaps the order of `services.ports()`.
    pub fn build_after(
        inputs: SnapshotInputs,
        previous: &Snapshot,
    ) -> Result<Snapshot, SnapshotError> {
        Self::build_from(inputs, Some(previous))
    }

    fn build_from(
        inputs: SnapshotInputs,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, SnapshotError> {
        let SnapshotInputs {
            generation,
            node,
            services,
            pods,
            nodes,
            neighbors,
            draining_endpoints,
        } = inputs;
        let bad = |field: &'static str, problem: String| SnapshotError::BadNodeConfig {
            node: node.name.clone(),
            field,
            problem,
        };
        if node.node_ips.is_empty() {
            return Err(bad(
                "node_ips",
                "at least one node address is required".into(),
            ));
        }
        if !node.pod_cidr.contains_addr(&node.gateway_ip) {
            return Err(bad(
                "gateway_ip",
                format!(
                    "{} is outside the pod CIDR {}",
                    node.gateway_ip, node.pod_cidr
                ),
            ));
        }
        if !node.cluster_cidr.contains_subnet(&node.pod_cidr) {
            return Err(bad(
                "pod_cidr",
                format!(
                    "{} is outside the cluster CIDR {}",
                    node.pod_cidr, node.cluster_cidr
                ),
            ));
        }
        if node.pod_cidr.prefix_len() < MIN_POD_PREFIX {
            return Err(bad(
                "pod_cidr",
                format!("{} is wider than /{MIN_POD_PREFIX}", node.pod_cidr),
            ));
        }
        if node.vxlan_vni >= 1 << 24 {
            return Err(bad(
                "vxlan_vni",
                format!("{} does not fit in 24 bits", node.vxlan_vni),
            ));
        }
        if node.masquerade_ports.is_empty() {
            return Err(bad("masquerade_ports", "the range is empty".into()));
        }
        if usize::from(node.uplink_mtu) < 576 + crate::wire::VXLAN_OVERHEAD {
            return Err(bad(
                "uplink_mtu",
                format!(
                    "{} leaves less than 576 bytes inside the tunnel",
                    node.uplink_mtu
                ),
            ));
        }
        if node.pod_mtu < 576 {
            return Err(bad(
                "pod_mtu",
                format!("{} is below IPv4's minimum of 576", node.pod_mtu),
            ));
        }

        let services = match previous {
            Some(prev) => prev.services.updated(
                services,
                &node.node_ips,
                node.nodeport_ips(),
                &draining_endpoints,
            )?,
            None => ServiceTable::new(
                services,
                &node.node_ips,
                node.nodeport_ips(),
                &draining_endpoints,
            )?,
        };
        let neighbors: FastMap<u32, MacAddr> = neighbors
            .into_iter()
            .map(|(ip, mac)| (u32::from(ip), mac))
            .collect();
        let gateway_mac = node
            .uplink_gateway
            .and_then(|gw| neighbors.get(&u32::from(gw)).copied());

        let mut interfaces: Vec<Option<InterfaceRole>> = Vec::new();
        let mut set_role = |id: InterfaceId, role: InterfaceRole| {
            let i = usize::from(id.0);
            if interfaces.len() <= i {
                interfaces.resize(i + 1, None);
            }
            let prev = interfaces[i].replace(role);
            prev.is_none()
        };
        if !set_role(node.uplink, InterfaceRole::Uplink)
            || !set_role(node.host, InterfaceRole::Host)
        {
            return Err(bad(
                "host",
                "the uplink and host interfaces must differ".into(),
            ));
        }

        let local_subnet = Subnet::new(node.pod_cidr);
        let mut pod_list: Vec<LocalPod> = Vec::with_capacity(pods.len());
        let mut pod_slots = vec![0u32; 1usize << (32 - u32::from(local_subnet.len))];
        let mut by_iface: FastMap<u16, String> = FastMap::default();
        for pod in pods {
            if !node.pod_cidr.contains_addr(&pod.ip) {
                return Err(SnapshotError::PodOutsideCidr {
                    pod: pod.name,
                    ip: pod.ip,
                    cidr: node.pod_cidr,
                });
            }
            let slot = (u32::from(pod.ip) - local_subnet.base) as usize;
            if pod_slots[slot] != 0 {
                let first = &pod_list[pod_slots[slot] as usize - 1];
                return Err(SnapshotError::PodConflict {
                    first: first.name.clone(),
                    second: pod.name,
                    what: format!("address {}", pod.ip),
                });
            }
            if let Some(first) = by_iface.get(&pod.iface.0) {
                return Err(SnapshotError::PodConflict {
                    first: first.clone(),
                    second: pod.name,
                    what: format!("interface {}", pod.iface.0),
                });
            }
            if !set_role(pod.iface, InterfaceRole::Pod { ip: pod.ip }) {
                return Err(bad(
                    "uplink",
                    format!("pod {} uses the uplink or host interface", pod.name),
                ));
            }
            by_iface.insert(pod.iface.0, pod.name.clone());
            pod_list.push(pod);
            pod_slots[slot] = pod_list.len() as u32;
        }

        // The cluster CIDR's routes for pod CIDRs of mixed lengths; see `node_blocks`.
        let mut cluster_routes = Lpm::new();
        let mut add = |cidr: Ipv4Cidr, t: RouteTarget| {
            cluster_routes
                .insert(cidr.address(), cidr.prefix_len(), t)
                .map(|_| ())
                .ok();
        };
        add(node.cluster_cidr, RouteTarget::ClusterUnassigned);
        add(node.pod_cidr, RouteTarget::LocalPods);

        let mut remote_nodes = Vec::with_capacity(nodes.len());
        let mut nodes_by_ip: FastMap<u32, u32> = FastMap::default();
        for remote in nodes {
            if !node.cluster_cidr.contains_subnet(&remote.pod_cidr) {
                return Err(SnapshotError::BadNodeConfig {
                    node: remote.name,
                    field: "pod_cidr",
                    problem: format!(
                        "{} is outside the cluster CIDR {}",
                        remote.pod_cidr, node.cluster_cidr
                    ),
                });
            }
            if cidr_overlaps(&remote.pod_cidr, &node.pod_cidr) {
                return Err(SnapshotError::OverlappingPodCidr {
                    node: remote.name,
                    cidr: remote.pod_cidr,
                    other: node.name.clone(),
                });
            }
            if let Some(other) = remote_nodes
                .iter()
                .find(|e: &&RemoteNodeEntry| cidr_overlaps(&e.node.pod_cidr, &remote.pod_cidr))
            {
                return Err(SnapshotError::OverlappingPodCidr {
                    node: remote.name,
                    cidr: remote.pod_cidr,
                    other: other.node.name.clone(),
                });
            }
            let next_hop = if node.uplink_subnet.contains_addr(&remote.node_ip) {
                Some(remote.node_ip)
            } else {
                node.uplink_gateway
            };
            let encap = next_hop
                .and_then(|nh| neighbors.get(&u32::from(nh)))
                .map(|mac| EncapTemplate::new(&node, &remote, *mac));
            let idx = remote_nodes.len() as u32;
            add(remote.pod_cidr, RouteTarget::RemoteNode(idx));
            nodes_by_ip.insert(u32::from(remote.node_ip), idx);
            remote_nodes.push(RemoteNodeEntry {
                pods: Subnet::new(remote.pod_cidr),
                node: remote,
                encap,
            });
        }
        let uplink_subnet = Subnet::new(node.uplink_subnet);
        let uplink_hosts = (uplink_subnet.len >= 16).then(|| {
            let mut hosts = vec![0u32; 1usize << (32 - u32::from(uplink_subnet.len))];
            for (ip, idx) in &nodes_by_ip {
                if uplink_subnet.contains(*ip) {
                    hosts[(ip - uplink_subnet.base) as usize] = idx + 1;
                }
            }
            (uplink_subnet, hosts.into_boxed_slice())
        });
        // Routing is a cascade of subnet compares (see `route`); inside the cluster CIDR,
        // nodes are found by block index when every pod CIDR has one length.
        let cluster_subnet = Subnet::new(node.cluster_cidr);
        let service_subnet = Subnet::new(node.service_cidr);
        let block_len = node.pod_cidr.prefix_len();
        let uniform = remote_nodes
            .iter()
            .all(|e| e.node.pod_cidr.prefix_len() == block_len);
        let node_blocks =
            (uniform && block_len - cluster_subnet.len <= MAX_NODE_BLOCK_BITS).then(|| {
                let mut blocks =
                    vec![0u32; 1usize << (block_len - cluster_subnet.len)].into_boxed_slice();
                for (i, e) in remote_nodes.iter().enumerate() {
                    let ip = u32::from(e.node.pod_cidr.address());
                    blocks[cluster_subnet.block(ip, block_len)] = i as u32 + 1;
                }
                (block_len, blocks)
            });

        let policed = pod_list.iter().any(|p| p.policy.is_some());
        let policy_epoch = match previous {
            Some(prev) if prev.same_policies(&pod_list) => prev.policy_epoch,
            Some(prev) => prev.policy_epoch.wrapping_add(1).max(1),
            None => 1,
        };
        Ok(Snapshot {
            generation,
            node,
            services,
            local_subnet,
            service_subnet,
            cluster_subnet,
            node_blocks,
            cluster_routes,
            pods: pod_list,
            pod_slots: pod_slots.into_boxed_slice(),
            interfaces,
            remote_nodes,
            nodes_by_ip,
            uplink_hosts,
            neighbors,
            gateway_mac,
            policed,
            policy_epoch,
        })
    }

    /// Whether `pods` have the policies this snapshot's pods have, pod by pod (by address):
    /// the same compiled `Arc`, or equal ones.
    fn same_policies(&self, pods: &[LocalPod]) -> bool {
        let selected = |pods: &[LocalPod]| pods.iter().filter(|p| p.policy.is_some()).count();
        selected(&self.pods) == selected(pods)
            && pods.iter().all(|p| {
                let before = self.local_pod(p.ip).and_then(|q| q.policy.as_ref());
                match (before, &p.policy) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                }
            })
    }

    /// The role of an interface, if the snapshot knows it.
    #[inline]
    pub fn interface_role(&self, id: InterfaceId) -> Option<InterfaceRole> {
        self.interfaces.get(usize::from(id.0)).copied().flatten()
    }

    /// Where `dst` leads: the node's own addresses, then this node's pod CIDR, the service
    /// CIDR, another node's pod CIDR (by block index), the rest of the cluster CIDR, outside.
    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> RouteTarget {
        let ip = u32::from(dst);
        if dst == self.node.gateway_ip || self.is_node_ip(dst) {
            return RouteTarget::Node;
        }
        if self.local_subnet.contains(ip) {
            return RouteTarget::LocalPods;
        }
        if self.service_subnet.contains(ip) {
            return RouteTarget::ServiceCidr;
        }
        if !self.cluster_subnet.contains(ip) {
            return RouteTarget::External;
        }
        match &self.node_blocks {
            Some((len, blocks)) => match blocks[self.cluster_subnet.block(ip, *len)] {
                0 => RouteTarget::ClusterUnassigned,
                n => RouteTarget::RemoteNode(n - 1),
            },
            None => self
                .cluster_routes
                .lookup(dst)
                .copied()
                .unwrap_or(RouteTarget::ClusterUnassigned),
        }
    }

    /// The pod on this node with address `ip`.
    #[inline]
    pub fn local_pod(&self, ip: Ipv4Addr) -> Option<&LocalPod> {
        let ip = u32::from(ip);
        if !self.local_subnet.contains(ip) {
            return None;
        }
        match self.pod_slots[(ip - self.local_subnet.base) as usize] {
            0 => None,
            n => self.pods.get(n as usize - 1),
        }
    }

    /// The policy of the local pod with address `ip`, if it has one.
    #[inline]
    pub fn pod_policy(&self, ip: Ipv4Addr) -> Option<&PodPolicy> {
        self.local_pod(ip)?.policy.as_deref()
    }

    /// Whether a packet from `src` to `dst` (routed to `route`) concerns a local pod some
    /// NetworkPolicy selects: its source, or its destination when that is a local pod. Its flow
    /// is then tracked, and its first packet judged by [`Snapshot::flow_policy`]. One flag
    /// when no local pod has a policy.
    #[inline]
    pub fn policed(&self, src: Ipv4Addr, dst: Ipv4Addr, route: RouteTarget) -> bool {
        self.policed
            && (self.pod_policy(src).is_some()
                || (route == RouteTarget::LocalPods && self.pod_policy(dst).is_some()))
    }

    /// The address a new flow from `client` through frontend `kind` of `port` is masqueraded
    /// to on its way to backend `backend`, or `None` where the client's address is kept:
    /// the node's primary address toward an endpoint outside the cluster (the API server on a
    /// node address, say), as flannel's masquerade rule would make it; the gateway address
    /// for a hairpin (the client is the backend) and wherever kube-proxy masquerades
    /// ([`ServicePort::masquerades`]). `internal`: [`NodeConfig::is_internal_client`].
    #[inline]
    pub fn service_masquerade(
        &self,
        port: &ServicePort,
        kind: FrontendKind,
        client: Ipv4Addr,
        internal: bool,
        backend: Ipv4Addr,
    ) -> Option<Ipv4Addr> {
        let node = &self.node;
        if self.route(backend) == RouteTarget::External {
            Some(node.primary_ip())
        } else if backend == client || port.masquerades(kind, internal, &node.cluster_cidr, client)
        {
            Some(node.gateway_ip)
        } else {
            None
        }
    }

    /// Whether some local pod has a policy.
    #[inline]
    pub fn has_policies(&self) -> bool {
        self.policed
    }

    /// Which policies this snapshot enforces: never 0, kept by [`Snapshot::build_after`] while
    /// every local pod's policy stays the same, bumped when one changes. A tracked flow
    /// remembers the epoch it was judged under ([`Conntrack::policy_epoch`]), and a packet of
    /// a flow judged under another one has its flow judged again.
    ///
    /// [`Conntrack::policy_epoch`]: crate::conntrack::Conntrack::policy_epoch
    #[inline]
    pub fn policy_epoch(&self) -> u32 {
        self.policy_epoch
    }

    /// Whether `ip` is this node as its pods see it: the gateway address or a node address.
    #[inline]
    pub fn is_this_node(&self, ip: Ipv4Addr) -> bool {
        ip == self.node.gateway_ip || self.is_node_ip(ip)
    }

    /// The NetworkPolicy verdicts on a new flow, as this node enforces them: egress for its
    /// source when that is a local pod, ingress for its destination when that is a local pod.
    ///
    /// `client` is the flow's original source; `src` the source that reaches the destination
    /// (the masquerade address where the flow is source-NATed, else `client`); `dst`, `proto`
    /// and `port` its destination after service DNAT (the backend). Egress is judged on the
    /// backend, ingress sees `src`: the address that reaches the pod (`ipBlock` sees a
    /// masqueraded NodePort client as this node's gateway address, a client kept by
    /// `externalTrafficPolicy: Local` as itself).
    ///
    /// Always allowed ([`PolicyVerdict::Exempt`]) whatever the policies: a pod reaching itself
    /// (`client == dst`, a hairpin through a service included), egress to this node's own
    /// addresses, and ingress from them (`client` is the node: kubelet probes, host-network
    /// pods). Another node's addresses are ordinary peers.
    #[inline]
    pub fn flow_policy(
        &self,
        client: Ipv4Addr,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> FlowPolicy<'_> {
        let mut verdicts = FlowPolicy {
            egress: PolicyVerdict::Open,
            ingress: PolicyVerdict::Open,
        };
        if !self.policed {
            return verdicts;
        }
        let hairpin = client == dst;
        if let Some(policy) = self.pod_policy(client) {
            let exempt = hairpin || self.is_this_node(dst);
            verdicts.egress = policy.evaluate_unless(exempt, Direction::Egress, dst, proto, port);
        }
        if let Some(policy) = self.pod_policy(dst) {
            let exempt = hairpin || self.is_this_node(client);
            verdicts.ingress = policy.evaluate_unless(exempt, Direction::Ingress, src, proto, port);
        }
        verdicts
    }

    /// Every pod on this node.
    pub fn local_pods(&self) -> impl Iterator<Item = &LocalPod> {
        self.pods.iter()
    }

    /// A remote node by route index.
    #[inline]
    pub fn remote_node(&self, idx: u32) -> Option<&RemoteNodeEntry> {
        self.remote_nodes.get(idx as usize)
    }

    /// Every remote node.
    pub fn remote_nodes(&self) -> &[RemoteNodeEntry] {
        &self.remote_nodes
    }

    /// The remote node whose underlay address is `ip`.
    #[inline]
    pub fn remote_node_by_ip(&self, ip: Ipv4Addr) -> Option<&RemoteNodeEntry> {
        let ip = u32::from(ip);
        let idx = match &self.uplink_hosts {
            Some((subnet, hosts)) if subnet.contains(ip) => {
                hosts[(ip - subnet.base) as usize].checked_sub(1)?
            }
            _ => *self.nodes_by_ip.get(&ip)?,
        };
        self.remote_nodes.get(idx as usize)
    }

    /// Whether `ip` is one of this node's underlay addresses.
    #[inline]
    pub fn is_node_ip(&self, ip: Ipv4Addr) -> bool {
        self.node.node_ips.contains(&ip)
    }

    /// The MAC address of the uplink next hop toward `dst` (outside the cluster).
    #[inline]
    pub fn next_hop_mac(&self, dst: Ipv4Addr) -> Option<MacAddr> {
        if self.node.uplink_subnet.contains_addr(&dst) {
            self.neighbors.get(&u32::from(dst)).copied()
        } else {
            self.gateway_mac
        }
    }
}
