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
//! this node. Each pool carries a Maglev table over its members sorted by address, so the pick
//! depends only on the set of backends, never on the order the API server listed them.

use core::net::Ipv4Addr;
use std::sync::Arc;

use super::maglev::Maglev;
use crate::flow::{self, FastMap};

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
    /// `spec.sessionAffinity: ClientIP`: the pick hashes the client address only, so every
    /// connection from one client lands on the same backend while the backend set is stable.
    pub client_ip_affinity: bool,
}

/// The endpoints one kind of traffic may use, with their Maglev table.
#[derive(Debug)]
struct Pool {
    members: Box<[(Ipv4Addr, u16)]>,
    maglev: Maglev,
}

impl Pool {
    fn new(backends: &[Backend], only_local: bool) -> Pool {
        let eligible = |usable: fn(&Backend) -> bool| -> Vec<(Ipv4Addr, u16)> {
            let mut v: Vec<_> = backends
                .iter()
                .filter(|b| (!only_local || b.local) && usable(b))
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

/// One compiled service port.
#[derive(Debug)]
pub struct ServicePort {
    spec: ServicePortSpec,
    cluster: Pool,
    local: Pool,
}

impl ServicePort {
    /// Compile a service port: choose the pools and build their Maglev tables.
    pub fn new(spec: ServicePortSpec) -> Self {
        let cluster = Pool::new(&spec.backends, false);
        let local = Pool::new(&spec.backends, true);
        ServicePort {
            spec,
            cluster,
            local,
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

    /// Choose a backend for a new flow `hash` (from the 5-tuple) from client `client`, arriving
    /// through a frontend of `kind`. `internal_client` says the client is a pod or a node of
    /// this cluster: like kube-proxy, such clients of an external address (load balancer,
    /// external IP, node port) use every endpoint whatever `externalTrafficPolicy` says.
    #[inline]
    pub fn pick(
        &self,
        kind: FrontendKind,
        client: Ipv4Addr,
        internal_client: bool,
        hash: u64,
    ) -> Pick {
        let policy = match (kind.is_external(), internal_client) {
            (false, _) => self.spec.internal_policy,
            (true, true) => TrafficPolicy::Cluster,
            (true, false) => self.spec.external_policy,
        };
        let hash = if self.spec.client_ip_affinity {
            flow::hash_words(u64::from(u32::from(client)), 0)
        } else {
            hash
        };
        let pool = match policy {
            TrafficPolicy::Cluster => &self.cluster,
            TrafficPolicy::Local => &self.local,
        };
        match pool.pick(hash) {
            Some((ip, port)) => Pick::Backend(ip, port),
            None if policy == TrafficPolicy::Local && !self.cluster.members.is_empty() => {
                Pick::NoLocalEndpoints
            }
            None => Pick::NoEndpoints,
        }
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
    backends: FastMap<u64, ()>,
    /// One bit per port any endpoint listens on: most traffic is from ports no endpoint uses,
    /// and this 8 KiB filter answers for it without hashing.
    backend_ports: Box<[u64]>,
}

impl ServiceTable {
    /// Index `ports`; NodePorts are expanded on every address in `node_ips`. `draining` lists
    /// endpoints (address, protocol, port) that left every service but whose flows still get
    /// their replies translated (see [`ServiceTable::is_backend`]).
    pub fn new(
        ports: Vec<Arc<ServicePort>>,
        node_ips: &[Ipv4Addr],
        draining: &[(Ipv4Addr, u8, u16)],
    ) -> Result<Self, ServiceTableError> {
        let mut index: FastMap<u64, FrontendEntry> = FastMap::default();
        let mut backends: FastMap<u64, ()> = FastMap::default();
        let mut backend_ports = vec![0u64; 65536 / 64].into_boxed_slice();
        for (i, sp) in ports.iter().enumerate() {
            let spec = sp.spec();
            if spec.proto != flow::proto::TCP && spec.proto != flow::proto::UDP {
                return Err(ServiceTableError::UnsupportedProtocol {
                    name: spec.name.clone(),
                    proto: spec.proto,
                });
            }
            for fe in &spec.frontends {
                let ips = match fe.ip {
                    Some(ip) => core::slice::from_ref(&ip).to_vec(),
                    None => node_ips.to_vec(),
                };
                for ip in ips {
                    let key = frontend_key(ip, spec.proto, fe.port);
                    let entry = FrontendEntry {
                        port: i as u32,
                        kind: fe.kind,
                    };
                    if let Some(prev) = index.insert(key, entry) {
                        if prev.port != entry.port {
                            return Err(ServiceTableError::DuplicateFrontend {
                                first: ports[prev.port as usize].name().to_owned(),
                                second: spec.name.clone(),
                                ip,
                                proto: spec.proto,
                                port: fe.port,
                            });
                        }
                    }
                }
            }
            for b in &spec.backends {
                backends.insert(frontend_key(b.ip, spec.proto, b.port), ());
                backend_ports[usize::from(b.port) / 64] |= 1 << (b.port % 64);
            }
        }
        for &(ip, proto, port) in draining {
            backends.insert(frontend_key(ip, proto, port), ());
            backend_ports[usize::from(port) / 64] |= 1 << (port % 64);
        }
        Ok(ServiceTable {
            index,
            ports,
            backends,
            backend_ports,
        })
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

    /// Whether `ip:port/proto` is an endpoint of some service port, or a draining one. Only
    /// packets from an endpoint can be replies of a DNATed flow, so only they need a conntrack
    /// lookup on the reply path.
    #[inline]
    pub fn is_backend(&self, ip: Ipv4Addr, proto: u8, port: u16) -> bool {
        self.backend_ports[usize::from(port) / 64] & (1 << (port % 64)) != 0
            && self.backends.contains_key(&frontend_key(ip, proto, port))
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
            + self.backends.capacity() * (core::mem::size_of::<u64>() + 1)
            + self.backend_ports.len() * 8
            + self.ports.iter().map(|p| p.memory_bytes()).sum::<usize>()
    }
}
