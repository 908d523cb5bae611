//! Services as the dataplane sees them: frontends, backends, and a Maglev table per pool.
//!
//! A [`ServicePort`] is one port of one Kubernetes Service: every address it is reachable on
//! ([`Frontend`]s: the ClusterIP, the NodePort on each node address, external IPs and
//! load-balancer IPs), its backends with their EndpointSlice conditions, and its traffic
//! policies. It is immutable once built and shared by `Arc`, so the control side can rebuild one
//! service without touching the others.
//!
//! Backend selection follows kube-proxy: a pool holds the ready endpoints, or, when none is
//! ready, the serving-and-terminating ones (KEP-1669), so connections drain instead of being
//! refused while a rollout finishes. `Local` traffic policies restrict the pool to endpoints on
//! this node. The cluster pool follows the endpoints' topology hints as kube-proxy does
//! ([`TopologyMode`]); the local pool ignores them. Each pool carries a Maglev table over its
//! members sorted by address, so the pick depends only on the set of backends, never on the
//! order the API server listed them.

use core::net::Ipv4Addr;
use std::sync::Arc;

use super::maglev::Maglev;
use crate::flow::{self, FastMap};
use crate::wire::Ipv4Cidr;

/// How a service port is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrontendKind {
    /// The service's virtual cluster IP.
    ClusterIp,
    /// A port on every node address.
    NodePort,
    /// One of `spec.externalIPs`.
    ExternalIp,
    /// One of `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

impl FrontendKind {
    /// Whether traffic to this frontend comes from outside the cluster and so follows
    /// `externalTrafficPolicy`; ClusterIP traffic follows `internalTrafficPolicy`.
    #[inline]
    pub const fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }
}

/// One address a service port answers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frontend {
    /// What kind of address this is.
    pub kind: FrontendKind,
    /// The address; `None` for a NodePort, which answers on every address of this node.
    pub ip: Option<Ipv4Addr>,
    /// The port clients connect to (the node port for a NodePort).
    pub port: u16,
}

/// One endpoint of a service port, with its EndpointSlice conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Pod (or endpoint) address.
    pub ip: Ipv4Addr,
    /// Target port.
    pub port: u16,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// Whether the endpoint runs on this node (`nodeName` is ours).
    pub local: bool,
    /// Its `hints.forNodes`, as seen from this node.
    pub node_hint: Hint,
    /// Its `hints.forZones`, as seen from this node (in this node's zone or not).
    pub zone_hint: Hint,
}

/// An endpoint's topology hints of one kind (`forNodes` or `forZones`), resolved on the control
/// side against this node's name or zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Hint {
    /// The endpoint has no hint of this kind.
    #[default]
    None,
    /// One of its hints names this node (or this node's zone).
    Here,
    /// It has hints, none of them for this node (or zone).
    Elsewhere,
}

/// Which endpoints a cluster pool keeps by their topology hints, chosen as kube-proxy does
/// from the ready endpoints' hints: same node when every ready endpoint has a node hint and one
/// is for this node, else same zone likewise, else every endpoint (hints missing, incomplete or
/// for other places only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopologyMode {
    /// No topology: every endpoint.
    #[default]
    Any,
    /// `PreferSameNode`: the endpoints hinted for this node.
    SameNode,
    /// `PreferSameZone` (and `PreferClose`): the endpoints hinted for this node's zone.
    SameZone,
}

impl TopologyMode {
    /// The mode the ready endpoints' hints select.
    pub fn from_hints(backends: &[Backend]) -> TopologyMode {
        let ready = || backends.iter().filter(|b| b.ready);
        let mode = |hint: fn(&Backend) -> Hint| {
            ready().all(|b| hint(b) != Hint::None) && ready().any(|b| hint(b) == Hint::Here)
        };
        if mode(|b| b.node_hint) {
            TopologyMode::SameNode
        } else if mode(|b| b.zone_hint) {
            TopologyMode::SameZone
        } else {
            TopologyMode::Any
        }
    }

    /// Whether this mode keeps `b`.
    pub fn keeps(self, b: &Backend) -> bool {
        match self {
            TopologyMode::Any => true,
            TopologyMode::SameNode => b.node_hint == Hint::Here,
            TopologyMode::SameZone => b.zone_hint == Hint::Here,
        }
    }
}

impl Backend {
    /// A ready, serving, non-terminating endpoint.
    pub const fn ready(ip: Ipv4Addr, port: u16, local: bool) -> Self {
        Backend {
            ip,
            port,
            ready: true,
            serving: true,
            terminating: false,
            local,
            node_hint: Hint::None,
            zone_hint: Hint::None,
        }
    }
}

/// `internalTrafficPolicy` / `externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster.
    #[default]
    Cluster,
    /// Only endpoints on this node; for external traffic, the client address is preserved.
    Local,
}

/// Everything the control side says about one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortSpec {
    /// `namespace/name:port-name`, for errors, traces and metrics.
    pub name: String,
    /// IP protocol number (TCP or UDP).
    pub proto: u8,
    /// Every address the port answers on.
    pub frontends: Vec<Frontend>,
    /// Every endpoint, in any order.
    pub backends: Vec<Backend>,
    /// `spec.internalTrafficPolicy`.
    pub internal_policy: TrafficPolicy,
    /// `spec.externalTrafficPolicy`.
    pub external_policy: TrafficPolicy,
    /// `spec.sessionAffinity: ClientIP` with its `timeoutSeconds`: a client keeps the backend
    /// it was sent to until that long passes without a new connection, while the backend
    /// stays usable (conntrack's [`Affinity`](crate::conntrack::Affinity) table remembers
    /// it); a client new to the table is placed by a hash of its address alone.
    pub client_ip_affinity: Option<core::time::Duration>,
    /// `spec.loadBalancerSourceRanges` (IPv4): when not empty, new flows to the load-balancer
    /// addresses are accepted only from these sources ([`ServicePort::admits`]).
    pub source_ranges: Vec<Ipv4Cidr>,
}

/// The endpoints one kind of traffic may use, with their Maglev table.
#[derive(Debug)]
struct Pool {
    members: Box<[(Ipv4Addr, u16)]>,
    maglev: Maglev,
}

impl Pool {
    /// The local pool (`only_local`) takes this node's endpoints; the cluster pool those
    /// `topology` keeps. Either way the ready ones, or when none is, the serving and
    /// terminating ones.
    fn new(backends: &[Backend], only_local: bool, topology: TopologyMode) -> Pool {
        let place = |b: &Backend| {
            if only_local {
                b.local
            } else {
                topology.keeps(b)
            }
        };
        let eligible = |usable: fn(&Backend) -> bool| -> Vec<(Ipv4Addr, u16)> {
            let mut v: Vec<_> = backends
                .iter()
                .filter(|b| place(b) && usable(b))
                .map(|b| (b.ip, b.port))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let mut members = eligible(|b| b.ready);
        if members.is_empty() {
            members = eligible(|b| b.serving && b.terminating);
        }
        let maglev = Maglev::new(&members, Maglev::size_for(members.len()));
        Pool {
            members: members.into_boxed_slice(),
            maglev,
        }
    }

    #[inline]
    fn pick(&self, hash: u64) -> Option<(Ipv4Addr, u16)> {
        let i = self.maglev.pick(hash)?;
        self.members.get(usize::from(i)).copied()
    }
}

/// What a service port's lookup decided for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Send the flow to this backend.
    Backend(Ipv4Addr, u16),
    /// The service has no usable endpoint: kube-proxy rejects with ICMP port unreachable.
    NoEndpoints,
    /// A `Local` policy applies and no usable endpoint is on this node: kube-proxy drops.
    NoLocalEndpoints,
}

/// The endpoints a new flow may get, and the traffic policy that chose them: what
/// [`ServicePort::eligible`] says for one kind of frontend and client.
#[derive(Clone, Copy, Debug)]
pub struct Eligible<'a> {
    /// The traffic policy that applies.
    pub policy: TrafficPolicy,
    pool: &'a Pool,
}

impl<'a> Eligible<'a> {
    /// The endpoints (address, port) new flows are spread over, sorted; empty when none is
    /// usable.
    pub fn backends(&self) -> &'a [(Ipv4Addr, u16)] {
        &self.pool.members
    }

    /// Whether `backend` is one of them.
    #[inline]
    pub fn contains(&self, backend: (Ipv4Addr, u16)) -> bool {
        self.pool.members.binary_search(&backend).is_ok()
    }
}

/// One compiled service port.
#[derive(Debug)]
pub struct ServicePort {
    spec: ServicePortSpec,
    cluster: Pool,
    local: Pool,
    /// The port's key in the affinity table (from its name and protocol).
    affinity_id: u64,
}

impl ServicePort {
    /// Compile a service port: choose the pools and build their Maglev tables.
    pub fn new(spec: ServicePortSpec) -> Self {
        let topology = TopologyMode::from_hints(&spec.backends);
        let cluster = Pool::new(&spec.backends, false, topology);
        let local = Pool::new(&spec.backends, true, TopologyMode::Any);
        let affinity_id = crate::conntrack::Affinity::service_id(&spec.name, spec.proto);
        ServicePort {
            spec,
            cluster,
            local,
            affinity_id,
        }
    }

    /// The spec this port was compiled from.
    pub fn spec(&self) -> &ServicePortSpec {
        &self.spec
    }

    /// `namespace/name:port-name`.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether traffic arriving through `kind` keeps its client address: external traffic with
    /// `externalTrafficPolicy: Local` from a client outside the cluster.
    #[inline]
    pub fn preserves_client_ip(&self, kind: FrontendKind, internal_client: bool) -> bool {
        kind.is_external() && !internal_client && self.spec.external_policy == TrafficPolicy::Local
    }

    /// Whether a new flow from `client` through a frontend of `kind` is source-NATed (to the
    /// node's pod-network address), where kube-proxy masquerades: external frontends (node
    /// ports, external and load-balancer IPs) with `externalTrafficPolicy: Cluster` whoever the
    /// client is, pods and the node included; otherwise every client outside the cluster CIDR
    /// (the node's own processes, outside clients) unless [`ServicePort::preserves_client_ip`].
    /// (Hairpin and endpoints outside the cluster are the NAT stage's to add.)
    #[inline]
    pub fn masquerades(
        &self,
        kind: FrontendKind,
        internal_client: bool,
        cluster_cidr: &Ipv4Cidr,
        client: Ipv4Addr,
    ) -> bool {
        (kind.is_external() && self.spec.external_policy == TrafficPolicy::Cluster)
            || (!self.preserves_client_ip(kind, internal_client)
                && !cluster_cidr.contains_addr(&client))
    }

    /// Which traffic policy applies to a new flow arriving through a frontend of `kind`, and
    /// so which endpoints it may get. ClusterIP traffic follows `internalTrafficPolicy`, the
    /// rest `externalTrafficPolicy`; but `internal_client` (the client is a pod or a node of
    /// this cluster) makes it `Cluster` for an external address (load balancer, external IP,
    /// node port), as kube-proxy does. [`ServicePort::pick`] chooses among these; `kxdp trace`
    /// shows them.
    #[inline]
    pub fn eligible(&self, kind: FrontendKind, internal_client: bool) -> Eligible<'_> {
        let policy = match (kind.is_external(), internal_client) {
            (false, _) => self.spec.internal_policy,
            (true, true) => TrafficPolicy::Cluster,
            (true, false) => self.spec.external_policy,
        };
        let pool = match policy {
            TrafficPolicy::Cluster => &self.cluster,
            TrafficPolicy::Local => &self.local,
        };
        Eligible { policy, pool }
    }

    /// Choose a backend for a new flow `hash` (from the 5-tuple) from client `client`, arriving
    /// through a frontend of `kind`, among the [`ServicePort::eligible`] endpoints.
    #[inline]
    pub fn pick(
        &self,
        kind: FrontendKind,
        client: Ipv4Addr,
        internal_client: bool,
        hash: u64,
    ) -> Pick {
        let Eligible { policy, pool } = self.eligible(kind, internal_client);
        let hash = if self.spec.client_ip_affinity.is_some() {
            flow::hash_words(u64::from(u32::from(client)), 0)
        } else {
            hash
        };
        match pool.pick(hash) {
            Some((ip, port)) => Pick::Backend(ip, port),
            None if policy == TrafficPolicy::Local && !self.cluster.members.is_empty() => {
                Pick::NoLocalEndpoints
            }
            None => Pick::NoEndpoints,
        }
    }

    /// Whether a new flow from `client` may use a frontend of `kind`:
    /// `loadBalancerSourceRanges` close the load-balancer addresses (only those: NodePorts and
    /// ClusterIPs of the same service stay open) to every source outside them, pods included.
    /// As kube-proxy does, the node's own traffic (`from_node`, sent from one of `node_ips`) is
    /// let in when a range holds any address of the node.
    #[inline]
    pub fn admits(
        &self,
        kind: FrontendKind,
        client: Ipv4Addr,
        from_node: bool,
        node_ips: &[Ipv4Addr],
    ) -> bool {
        let ranges = &self.spec.source_ranges;
        let within = |ip: &Ipv4Addr| ranges.iter().any(|r| r.contains_addr(ip));
        kind != FrontendKind::LoadBalancer
            || ranges.is_empty()
            || within(&client)
            || (from_node && node_ips.iter().any(within))
    }

    /// With `sessionAffinity: ClientIP`, the port's key in the affinity table and how long a
    /// client keeps its backend without a new connection.
    #[inline]
    pub fn affinity(&self) -> Option<(u64, core::time::Duration)> {
        self.spec.client_ip_affinity.map(|t| (self.affinity_id, t))
    }

    /// The endpoints new cluster-policy flows are spread over, sorted.
    pub fn cluster_members(&self) -> &[(Ipv4Addr, u16)] {
        &self.cluster.members
    }

    /// Heap bytes this port's tables take.
    pub fn memory_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.spec.name.len()
            + self.spec.frontends.len() * core::mem::size_of::<Frontend>()
            + self.spec.backends.len() * core::mem::size_of::<Backend>()
            + self.spec.source_ranges.len() * core::mem::size_of::<Ipv4Cidr>()
            + (self.cluster.members.len() + self.local.members.len())
                * core::mem::size_of::<(Ipv4Addr, u16)>()
            + self.cluster.maglev.memory_bytes()
            + self.local.maglev.memory_bytes()
    }
}

/// The key of a frontend in the service table: address, protocol and port in one word.
#[inline]
pub fn frontend_key(ip: Ipv4Addr, proto: u8, port: u16) -> u64 {
    (u64::from(u32::from(ip)) << 24) | (u64::from(proto) << 16) | u64::from(port)
}

/// The frontend a packet hit: the port's index and the kind of address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendEntry {
    /// Index into [`ServiceTable::ports`].
    pub port: u32,
    /// Which kind of address matched.
    pub kind: FrontendKind,
}

/// Errors building the service table; each names the objects involved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceTableError {
    /// Two service ports claim the same address, protocol and port.
    #[error("service port {second}: frontend {ip}:{port}/{proto} is already taken by {first}")]
    DuplicateFrontend {
        /// The port that had it first.
        first: String,
        /// The port that asked for it again.
        second: String,
        /// Address.
        ip: Ipv4Addr,
        /// Protocol number.
        proto: u8,
        /// Port.
        port: u16,
    },
    /// A protocol the dataplane cannot balance.
    #[error("service port {name}: protocol {proto} is not supported (only TCP and UDP)")]
    UnsupportedProtocol {
        /// The port.
        name: String,
        /// Protocol number.
        proto: u8,
    },
}

/// Every service port, indexed by frontend.
#[derive(Debug)]
pub struct ServiceTable {
    index: FastMap<u64, FrontendEntry>,
    ports: Vec<Arc<ServicePort>>,
    /// Endpoint (and draining endpoint) keys, with how many ports list each; and under port
    /// 0 (which no endpoint listens on), each endpoint address and protocol, with how many
    /// (port, service port) pairs list it.
    backends: FastMap<u64, u32>,
    /// One bit per port any endpoint listens on: most traffic is from ports no endpoint uses,
    /// and this 8 KiB filter answers for it without hashing. An update only sets bits; a
    /// stale one costs a hash lookup, and the next full build clears it.
    backend_ports: Box<[u64]>,
    node_ips: Vec<Ipv4Addr>,
    /// The node addresses NodePorts are expanded on (a subset of `node_ips`).
    nodeport_ips: Vec<Ipv4Addr>,
    /// Every ClusterIP, external IP and load-balancer address that is not one of `node_ips`,
    /// with how many frontends use it: a packet to one on a port or protocol no service has
    /// is rejected ([`ServiceTable::is_service_addr`]).
    addrs: FastMap<u32, u32>,
    draining: Vec<(Ipv4Addr, u8, u16)>,
    /// Ports changed by updates since the last full build.
    churn: usize,
}

impl ServiceTable {
    /// Index `ports`; NodePorts are expanded on every address in `nodeport_ips` (the node's
    /// other addresses, `node_ips`, get none: what they receive stays the node's). `draining` lists
    /// endpoints (address, protocol, port) that left every service but whose flows still get
    /// their replies translated (see [`ServiceTable::is_backend`]).
    pub fn new(
        ports: Vec<Arc<ServicePort>>,
        node_ips: &[Ipv4Addr],
        nodeport_ips: &[Ipv4Addr],
        draining: &[(Ipv4Addr, u8, u16)],
    ) -> Result<Self, ServiceTableError> {
        let mut t = ServiceTable {
            index: FastMap::default(),
            ports: Vec::with_capacity(ports.len()),
            backends: FastMap::default(),
            backend_ports: vec![0u64; 65536 / 64].into_boxed_slice(),
            node_ips: node_ips.to_vec(),
            nodeport_ips: nodeport_ips.to_vec(),
            addrs: FastMap::default(),
            draining: draining.to_vec(),
            churn: 0,
        };
        for p in ports {
            t.add_port(p)?;
        }
        for &(ip, proto, port) in draining {
            t.add_backend(ip, proto, port);
        }
        Ok(t)
    }

    /// The table for `ports`, built from this one by removing the ports it has that `ports`
    /// lacks and adding the others (ports are told apart by identity, `Arc::ptr_eq`): the cost
    /// follows the change, not the table, so one service's update among thousands is cheap.
    /// Falls back to [`ServiceTable::new`] when the node's addresses or the draining list
    /// changed, or when updates have replaced an eighth of the table since the last full
    /// build (which also clears stale port-filter bits). Port order may differ from `ports`.
    pub fn updated(
        &self,
        ports: Vec<Arc<ServicePort>>,
        node_ips: &[Ipv4Addr],
        nodeport_ips: &[Ipv4Addr],
        draining: &[(Ipv4Addr, u8, u16)],
    ) -> Result<Self, ServiceTableError> {
        if node_ips != self.node_ips.as_slice()
            || nodeport_ips != self.nodeport_ips.as_slice()
            || draining != self.draining.as_slice()
        {
            return ServiceTable::new(ports, node_ips, nodeport_ips, draining);
        }
        let ptr = |p: &Arc<ServicePort>| Arc::as_ptr(p) as usize;
        let wanted: FastMap<usize, ()> = ports.iter().map(|p| (ptr(p), ())).collect();
        let held: FastMap<usize, ()> = self.ports.iter().map(|p| (ptr(p), ())).collect();
        let removed: Vec<usize> = (0..self.ports.len())
            .filter(|i| !wanted.contains_key(&ptr(&self.ports[*i])))
            .collect();
        let added: Vec<Arc<ServicePort>> = ports
            .into_iter()
            .filter(|p| !held.contains_key(&ptr(p)))
            .collect();
        let churn = self.churn + removed.len() + added.len();
        if churn > self.ports.len() / 8 + 16 {
            let mut all: Vec<Arc<ServicePort>> = self
                .ports
                .iter()
                .filter(|p| wanted.contains_key(&ptr(p)))
                .cloned()
                .collect();
            all.extend(added);
            return ServiceTable::new(all, node_ips, nodeport_ips, draining);
        }
        let mut t = ServiceTable {
            index: self.index.clone(),
            ports: self.ports.clone(),
            backends: self.backends.clone(),
            backend_ports: self.backend_ports.clone(),
            node_ips: self.node_ips.clone(),
            nodeport_ips: self.nodeport_ips.clone(),
            addrs: self.addrs.clone(),
            draining: self.draining.clone(),
            churn,
        };
        // Highest index first: swap_remove then moves only ports that stay.
        for &i in removed.iter().rev() {
            t.remove_port(i);
        }
        for p in added {
            t.add_port(p)?;
        }
        Ok(t)
    }

    /// The addresses frontend `fe` of a port answers on.
    fn frontend_ips<'a>(&'a self, fe: &'a Frontend) -> &'a [Ipv4Addr] {
        match &fe.ip {
            Some(ip) => core::slice::from_ref(ip),
            None => &self.nodeport_ips,
        }
    }

    /// The address of frontend `fe` that counts in `addrs`, if it has one.
    fn service_addr(&self, fe: &Frontend) -> Option<u32> {
        fe.ip
            .filter(|ip| !self.node_ips.contains(ip))
            .map(u32::from)
    }

    fn add_backend(&mut self, ip: Ipv4Addr, proto: u8, port: u16) {
        for key in [frontend_key(ip, proto, port), frontend_key(ip, proto, 0)] {
            *self.backends.entry(key).or_default() += 1;
        }
        self.backend_ports[usize::from(port) / 64] |= 1 << (port % 64);
    }

    /// Index port `sp` as the last one.
    fn add_port(&mut self, sp: Arc<ServicePort>) -> Result<(), ServiceTableError> {
        let i = self.ports.len();
        let spec = sp.spec();
        if spec.proto != flow::proto::TCP && spec.proto != flow::proto::UDP {
            return Err(ServiceTableError::UnsupportedProtocol {
                name: spec.name.clone(),
                proto: spec.proto,
            });
        }
        let mut keys = Vec::new();
        for fe in &spec.frontends {
            for &ip in self.frontend_ips(fe) {
                keys.push((frontend_key(ip, spec.proto, fe.port), fe.kind, ip, fe.port));
            }
        }
        for &(key, kind, ip, port) in &keys {
            let entry = FrontendEntry {
                port: i as u32,
                kind,
            };
            if let Some(prev) = self.index.insert(key, entry) {
                if prev.port != entry.port {
                    return Err(ServiceTableError::DuplicateFrontend {
                        first: self.ports[prev.port as usize].name().to_owned(),
                        second: spec.name.clone(),
                        ip,
                        proto: spec.proto,
                        port,
                    });
                }
            }
        }
        for b in &spec.backends {
            self.add_backend(b.ip, spec.proto, b.port);
        }
        for fe in &spec.frontends {
            if let Some(a) = self.service_addr(fe) {
                *self.addrs.entry(a).or_default() += 1;
            }
        }
        self.ports.push(sp);
        Ok(())
    }

    /// Drop port `i`, moving the last port into its place.
    fn remove_port(&mut self, i: usize) {
        let sp = Arc::clone(&self.ports[i]);
        let spec = sp.spec();
        for fe in &spec.frontends {
            for &ip in self.frontend_ips(fe).to_vec().iter() {
                let key = frontend_key(ip, spec.proto, fe.port);
                if self.index.get(&key).is_some_and(|e| e.port as usize == i) {
                    self.index.remove(&key);
                }
            }
        }
        for fe in &spec.frontends {
            if let Some(a) = self.service_addr(fe) {
                if let Some(n) = self.addrs.get_mut(&a) {
                    *n -= 1;
                    if *n == 0 {
                        self.addrs.remove(&a);
                    }
                }
            }
        }
        for b in &spec.backends {
            for key in [
                frontend_key(b.ip, spec.proto, b.port),
                frontend_key(b.ip, spec.proto, 0),
            ] {
                if let Some(n) = self.backends.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.backends.remove(&key);
                    }
                }
            }
        }
        let last = self.ports.len() - 1;
        if i != last {
            let moved = Arc::clone(&self.ports[last]);
            let spec = moved.spec();
            for fe in &spec.frontends {
                for &ip in self.frontend_ips(fe).to_vec().iter() {
                    let key = frontend_key(ip, spec.proto, fe.port);
                    if let Some(e) = self.index.get_mut(&key) {
                        if e.port as usize == last {
                            e.port = i as u32;
                        }
                    }
                }
            }
        }
        self.ports.swap_remove(i);
    }

    /// The service port answering on `ip:port/proto`, if any.
    #[inline]
    pub fn lookup(
        &self,
        ip: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Option<(&ServicePort, FrontendKind)> {
        let e = self.index.get(&frontend_key(ip, proto, port))?;
        Some((&self.ports[e.port as usize], e.kind))
    }

    /// Whether `ip` is a ClusterIP, external IP or load-balancer address of some service (and
    /// not an address of this node): a new flow to it that no frontend takes is rejected, as
    /// kube-proxy rejects traffic to a ClusterIP's invalid ports.
    #[inline]
    pub fn is_service_addr(&self, ip: Ipv4Addr) -> bool {
        !self.addrs.is_empty() && self.addrs.contains_key(&u32::from(ip))
    }

    /// Whether `ip:port/proto` is an endpoint of some service port, or a draining one. Only
    /// packets from an endpoint can be replies of a DNATed flow, so only they need a conntrack
    /// lookup on the reply path.
    #[inline]
    pub fn is_backend(&self, ip: Ipv4Addr, proto: u8, port: u16) -> bool {
        // Port 0's bit is set only if an endpoint claims port 0, so the address-only keys
        // filed under it answer here at most for such an endpoint, and then cost a conntrack
        // lookup, nothing more.
        self.backend_ports[usize::from(port) / 64] & (1 << (port % 64)) != 0
            && self.backends.contains_key(&frontend_key(ip, proto, port))
    }

    /// Whether `ip` is an endpoint (or draining endpoint) of some `proto` service port, on
    /// any port: for fragments, whose ports are unknown.
    pub fn is_backend_addr(&self, ip: Ipv4Addr, proto: u8) -> bool {
        self.backends.contains_key(&frontend_key(ip, proto, 0))
    }

    /// Every service port, in index order.
    pub fn ports(&self) -> &[Arc<ServicePort>] {
        &self.ports
    }

    /// How many frontends (address, protocol, port) are indexed.
    pub fn frontend_count(&self) -> usize {
        self.index.len()
    }

    /// Approximate heap bytes of the table and its ports.
    pub fn memory_bytes(&self) -> usize {
        let entry = core::mem::size_of::<(u64, FrontendEntry)>() + 1;
        self.index.capacity() * entry
            + self.backends.capacity() * (core::mem::size_of::<(u64, u32)>() + 1)
            + self.backend_ports.len() * 8
            + self.ports.iter().map(|p| p.memory_bytes()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastrand::Rng;

    fn port(i: u32, backends: u32, salt: u32) -> Arc<ServicePort> {
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i);
        Arc::new(ServicePort::new(ServicePortSpec {
            name: format!("ns/svc-{i}:p{salt}"),
            proto: if i % 3 == 0 { 17 } else { 6 },
            frontends: vec![
                Frontend {
                    kind: FrontendKind::ClusterIp,
                    ip: Some(vip),
                    port: 80,
                },
                Frontend {
                    kind: FrontendKind::NodePort,
                    ip: None,
                    port: 30000 + i as u16,
                },
            ],
            // Backends overlap between services (counted, not set).
            backends: (0..backends)
                .map(|j| {
                    Backend::ready(
                        Ipv4Addr::new(10, 244, 1, ((i + j) % 50) as u8),
                        8080 + (salt % 3) as u16,
                        false,
                    )
                })
                .collect(),
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Cluster,
            client_ip_affinity: None,
            source_ranges: Vec::new(),
        }))
    }

    /// Everything a lookup can tell, in a canonical order.
    fn view(t: &ServiceTable, node_ips: &[Ipv4Addr]) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..64u32 {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i);
            for proto in [6, 17] {
                if let Some((p, k)) = t.lookup(vip, proto, 80) {
                    out.push(format!("{vip}/{proto} {} {k:?}", p.name()));
                }
                for ip in node_ips {
                    if let Some((p, k)) = t.lookup(*ip, proto, 30000 + i as u16) {
                        out.push(format!("{ip}:{}/{proto} {} {k:?}", 30000 + i, p.name()));
                    }
                }
            }
        }
        for h in 0..50u8 {
            for port in 8080..8083 {
                for proto in [6, 17] {
                    if t.is_backend(Ipv4Addr::new(10, 244, 1, h), proto, port) {
                        out.push(format!("backend 10.244.1.{h}:{port}/{proto}"));
                    }
                }
            }
        }
        for i in 0..64u32 {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i);
            if t.is_service_addr(vip) {
                out.push(format!("service address {vip}"));
            }
        }
        let mut names: Vec<&str> = t.ports().iter().map(|p| p.name()).collect();
        names.sort();
        out.extend(names.into_iter().map(String::from));
        out
    }

    #[test]
    fn eligible_endpoints_are_the_ones_pick_chooses_from() {
        let remote = Backend::ready(Ipv4Addr::new(10, 244, 2, 7), 8080, false);
        // The only local endpoint is terminating but still serving: the local pool falls back
        // to it (KEP-1669) although a ready endpoint exists elsewhere.
        let local = Backend {
            ready: false,
            terminating: true,
            ..Backend::ready(Ipv4Addr::new(10, 244, 1, 9), 8080, true)
        };
        let sp = ServicePort::new(ServicePortSpec {
            name: "ns/web:http".into(),
            proto: 6,
            frontends: Vec::new(),
            backends: vec![remote, local],
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Local,
            client_ip_affinity: None,
            source_ranges: Vec::new(),
        });
        let client = Ipv4Addr::new(198, 19, 0, 7);
        for (kind, internal, policy, backend) in [
            (FrontendKind::NodePort, false, TrafficPolicy::Local, local),
            (FrontendKind::NodePort, true, TrafficPolicy::Cluster, remote),
            (
                FrontendKind::ClusterIp,
                false,
                TrafficPolicy::Cluster,
                remote,
            ),
        ] {
            let eligible = sp.eligible(kind, internal);
            assert_eq!(eligible.policy, policy, "{kind:?}, internal {internal}");
            assert_eq!(eligible.backends(), [(backend.ip, backend.port)]);
            for hash in 0..64 {
                assert_eq!(
                    sp.pick(kind, client, internal, hash),
                    Pick::Backend(backend.ip, backend.port)
                );
            }
        }
    }

    #[test]
    fn topology_hints_choose_the_cluster_pool_as_kube_proxy_does() {
        use Hint::{Elsewhere as There, Here, None as Unhinted};
        let ep = |last, node_hint, zone_hint| Backend {
            node_hint,
            zone_hint,
            ..Backend::ready(Ipv4Addr::new(10, 244, 2, last), 8080, false)
        };
        let members = |backends: Vec<Backend>| {
            let sp = ServicePort::new(ServicePortSpec {
                name: "ns/web:http".into(),
                proto: 6,
                frontends: Vec::new(),
                backends,
                internal_policy: TrafficPolicy::Cluster,
                external_policy: TrafficPolicy::Cluster,
                client_ip_affinity: None,
                source_ranges: Vec::new(),
            });
            let m: Vec<u8> = sp
                .cluster_members()
                .iter()
                .map(|b| b.0.octets()[3])
                .collect();
            (m, sp.local.members.len())
        };
        // (case, endpoints, the cluster pool).
        let cases: Vec<(&str, Vec<Backend>, Vec<u8>)> = vec![
            (
                "every endpoint has a zone hint, one for this zone",
                vec![ep(1, Unhinted, Here), ep(2, Unhinted, There)],
                vec![1],
            ),
            (
                "one endpoint lacks a zone hint: hints ignored",
                vec![ep(1, Unhinted, Here), ep(2, Unhinted, Unhinted)],
                vec![1, 2],
            ),
            (
                "hints for other zones only: hints ignored",
                vec![ep(1, Unhinted, There), ep(2, Unhinted, There)],
                vec![1, 2],
            ),
            (
                "node hints, one for this node, before zone hints",
                vec![ep(1, There, Here), ep(2, Here, There), ep(3, There, Here)],
                vec![2],
            ),
            (
                "node hints incomplete: zone hints",
                vec![ep(1, Unhinted, Here), ep(2, Here, There)],
                vec![1],
            ),
            (
                "node hints for other nodes only: zone hints",
                vec![ep(1, There, Here), ep(2, There, There)],
                vec![1],
            ),
        ];
        for (what, backends, want) in cases {
            assert_eq!(members(backends).0, want, "{what}");
        }
        // Only ready endpoints decide: an unready one without hints changes nothing, and
        // none is in the pool.
        let mut unready = ep(3, Unhinted, Unhinted);
        unready.ready = false;
        assert_eq!(
            members(vec![ep(1, Unhinted, Here), ep(2, Unhinted, There), unready]).0,
            [1]
        );
        // With no ready endpoint the serving, terminating ones serve, hints or not.
        let draining = |last, zone_hint| Backend {
            ready: false,
            terminating: true,
            ..ep(last, Unhinted, zone_hint)
        };
        assert_eq!(
            members(vec![draining(1, Here), draining(2, There)]).0,
            [1, 2]
        );
        // The local pool ignores hints.
        let mut local = ep(4, Unhinted, There);
        local.local = true;
        assert_eq!(members(vec![ep(1, Unhinted, Here), local]), (vec![1], 1));
    }

    #[test]
    fn updates_answer_as_a_fresh_build_does() {
        let node_ips = [Ipv4Addr::new(198, 18, 0, 1)];
        let mut rng = Rng::with_seed(7);
        let mut ports: Vec<Arc<ServicePort>> = (0..40).map(|i| port(i, 3, 0)).collect();
        let mut table = ServiceTable::new(ports.clone(), &node_ips, &node_ips, &[]).unwrap();
        for round in 0..300u32 {
            // Replace, remove or add a few ports.
            for _ in 0..rng.usize(1..=3) {
                let i = rng.u32(..64);
                let at = ports
                    .iter()
                    .position(|p| p.name().starts_with(&format!("ns/svc-{i}:")));
                match (at, rng.usize(..3)) {
                    (Some(k), 0) => {
                        ports.swap_remove(k);
                    }
                    (Some(k), _) => ports[k] = port(i, rng.u32(..5), round),
                    (None, _) => ports.push(port(i, rng.u32(..5), round)),
                }
            }
            let updated = table
                .updated(ports.clone(), &node_ips, &node_ips, &[])
                .unwrap();
            let fresh = ServiceTable::new(ports.clone(), &node_ips, &node_ips, &[]).unwrap();
            assert_eq!(
                view(&updated, &node_ips),
                view(&fresh, &node_ips),
                "round {round}"
            );
            table = updated;
        }
        // A duplicate frontend is refused by an update as by a build.
        let mut dup = ports.clone();
        let clash = Arc::new(ServicePort::new(ports[0].spec().clone()));
        dup.push(clash);
        assert!(matches!(
            table.updated(dup, &node_ips, &node_ips, &[]),
            Err(ServiceTableError::DuplicateFrontend { .. })
        ));
    }
    #[test]
    fn node_ports_answer_only_on_the_nodeport_addresses() {
        let allowed = Ipv4Addr::new(198, 18, 0, 1);
        let other = Ipv4Addr::new(198, 19, 5, 1);
        let node_ips = [allowed, other];
        // Port 1's NodePort is 30001 (`port` numbers them 30000 + i).
        let ports = vec![port(1, 2, 0)];
        let table = ServiceTable::new(ports.clone(), &node_ips, &[allowed], &[]).unwrap();
        assert!(table.lookup(allowed, 6, 30001).is_some());
        assert!(table.lookup(other, 6, 30001).is_none());
        // The other address is still the node's: not a service address to reject on.
        assert!(!table.is_service_addr(other));
        // An update that widens the addresses answers on both, as a fresh build does.
        let wider = table.updated(ports, &node_ips, &node_ips, &[]).unwrap();
        assert!(wider.lookup(other, 6, 30001).is_some());
    }
}
