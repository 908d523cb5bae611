//! The cluster model compiled into the dataplane's [`Snapshot`], incrementally.
//!
//! A service's compiled ports (`Arc<ServicePort>`, Maglev tables included) are cached and
//! rebuilt only when the service or one of its slices changed; every other service's ports are
//! reused by reference. Local pods, remote nodes and the node's own configuration are rebuilt
//! when nodes or pods changed, which is cheap. [`Snapshot::build`] then indexes the whole.
//!
//! NetworkPolicies are compiled per local pod ([`crate::policy::compile_policies`]) when pods,
//! peer pods, namespaces or policies changed, and reused otherwise: [`Compiled::policies`].
//!
//! Objects that cannot be served are left out, each with a problem naming it, rather than
//! failing the whole snapshot: a pod outside the node's pod CIDR or reusing another's address,
//! a node whose pod CIDR overlaps another's, a service port claiming a frontend another already
//! holds (the first holder keeps it, as kube-proxy's first-match rules would), a service whose
//! cluster IP lies outside the service CIDR (the whole service; the problem names the field the
//! object used). Only this node's own configuration can fail a compile; the last good snapshot
//! then stays published.
//!
//! Endpoints leaving every service are reported: UDP ones for the caller to flush from
//! conntrack after publishing (`Conntrack::flush_udp_to`, as kube-proxy flushes them), the
//! others kept in the snapshot's `draining_endpoints` so replies of their open flows still get
//! translated, until the caller says no flow is left ([`Compiler::retire_draining`] with
//! `Conntrack::endpoints_with_flows`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use kxdp_dataplane::tables::{
    Backend, Frontend, FrontendKind, Hint, InterfaceId, LocalPod, NodeConfig, RemoteNode,
    ServicePort, ServicePortSpec, SnapshotError, SnapshotInputs, TrafficPolicy,
};
use kxdp_dataplane::wire::EthernetAddress;
use kxdp_dataplane::Snapshot;

use crate::model::{Model, ObjectError, ServiceInfo, SliceInfo};
use crate::policy::{compile_policies, PodPolicies};

/// What the API does not say about this node: its name, interfaces, MACs, MTU, CIDRs, VXLAN
/// and masquerade settings, and its underlay neighbours.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// This node's configuration. `name` says which Node object is this node; `pod_cidr`,
    /// `gateway_ip` and (when the Node lists an InternalIP) the first of `node_ips` come from
    /// that object.
    pub node: NodeConfig,
    /// Underlay neighbours: address to MAC.
    pub neighbors: Vec<(Ipv4Addr, EthernetAddress)>,
}

/// Why there is no snapshot: this node's own configuration is incomplete or invalid.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The API has no Node object for this node yet, or it has no IPv4 pod CIDR.
    #[error("node {0}: no Node object with an IPv4 spec.podCIDR yet")]
    NoPodCidr(String),
    /// The snapshot refused the inputs.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A compiled snapshot and what the caller must do about it.
#[derive(Debug)]
pub struct Compiled {
    /// The tables.
    pub snapshot: Arc<Snapshot>,
    /// This node's pod interfaces by name (see [`pod_interface_name`]), with their numbers:
    /// the dataplane should serve exactly these.
    pub interfaces: Vec<(String, InterfaceId)>,
    /// UDP endpoints (address, port) no service has any more: flush their flows.
    pub flush_udp: Vec<(Ipv4Addr, u16)>,
    /// How many services were recompiled.
    pub services_compiled: usize,
    /// Objects left out, each with why.
    pub problems: Vec<String>,
    /// The health-check node ports to serve, one per LoadBalancer service with
    /// `externalTrafficPolicy: Local`.
    pub health_checks: Vec<HealthCheck>,
    /// This node's pods' NetworkPolicies, by pod key: the same `Arc` as the last compile's
    /// unless [`Compiled::policies_compiled`].
    pub policies: Arc<PodPolicies>,
    /// Whether this compile rebuilt [`Compiled::policies`].
    pub policies_compiled: bool,
}

/// One service's health-check node port and what it answers: kube-proxy's
/// `ServiceHealthServer` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The service's key, `namespace/name`.
    pub service: String,
    /// `spec.healthCheckNodePort`.
    pub port: u16,
    /// This node's ready endpoints of the service, each address once (an endpoint on two
    /// ports is one), as kube-proxy's `LocalReadyEndpoints` counts them.
    pub local_endpoints: usize,
}

/// The health-check node ports of `model`'s services, for node `this_node`.
pub fn health_checks(model: &Model, this_node: &str) -> Vec<HealthCheck> {
    model
        .services()
        .iter()
        .filter_map(|(key, info)| {
            let port = info.health_check_node_port?;
            let local: BTreeSet<Ipv4Addr> = model
                .slices_of(key)
                .filter(|s| !s.ports.is_empty())
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.ready && e.node.as_deref() == Some(this_node))
                .map(|e| e.ip)
                .collect();
            Some(HealthCheck {
                service: key.clone(),
                port,
                local_endpoints: local.len(),
            })
        })
        .collect()
}

/// A service's compiled ports, the frontends they claimed and their endpoints.
#[derive(Debug, Default)]
struct Cached {
    ports: Vec<Arc<ServicePort>>,
    claims: Vec<u64>,
    endpoints: BTreeSet<(Ipv4Addr, u8, u16)>,
    problems: Vec<String>,
}

/// The compiler's state between compiles.
#[derive(Debug)]
pub struct Compiler {
    settings: NodeSettings,
    services: BTreeMap<String, Cached>,
    /// The last snapshot built, whose service index the next one updates.
    last: Option<Arc<Snapshot>>,
    /// Frontend key to the service holding it.
    claims: HashMap<u64, String>,
    /// Services that lost a frontend to another: retried when any service lets one go.
    conflicted: BTreeSet<String>,
    /// How many services (ports) use each endpoint.
    endpoint_users: HashMap<(Ipv4Addr, u8, u16), u32>,
    draining: BTreeSet<(Ipv4Addr, u8, u16)>,
    interfaces: InterfaceNumbers,
    /// The addresses NodePorts were claimed on.
    nodeport_ips: Vec<Ipv4Addr>,
    /// This node's `topology.kubernetes.io/zone`, as the last compile saw it.
    zone: Option<String>,
    /// The last compiled policies; `None` before the first compile.
    policies: Option<Arc<PodPolicies>>,
    generation: u64,
}

/// The host-side interface name of pod `namespace/name`: `kx` and 12 hex digits of the 64-bit
/// FNV-1a hash of `namespace.name`, 14 characters, within Linux's 15. A CNI plugin (and the
/// test topologies) name the host end of a pod's veth this way, so the agent recognises it
/// without being told, as Calico's `cali…` names work.
pub fn pod_interface_name(namespace: &str, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain(*b".").chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("kx{:012x}", h >> 16)
}

/// Whether `name` follows [`pod_interface_name`]'s convention (`kx` and 12 lowercase hex
/// digits): the node's end of a pod's veth, as opposed to kxdp's own links (`kxdp0`).
pub fn is_pod_interface_name(name: &str) -> bool {
    name.len() == 14
        && name
            .strip_prefix("kx")
            .is_some_and(|h| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The MAC of a pod that has no `kxdp.io/mac` annotation: `0a:58` and its IPv4 address, the
/// convention OVN-Kubernetes uses, which the CNI plugin sets on the pod's interface.
pub fn pod_mac(ip: Ipv4Addr) -> EthernetAddress {
    let o = ip.octets();
    EthernetAddress([0x0a, 0x58, o[0], o[1], o[2], o[3]])
}

/// Interface numbers of pod interfaces: stable while a pod lives, reused after it goes.
#[derive(Debug)]
struct InterfaceNumbers {
    by_name: BTreeMap<String, InterfaceId>,
    free: BTreeSet<u16>,
    next: u16,
}

impl InterfaceNumbers {
    fn new(first: u16) -> Self {
        InterfaceNumbers {
            by_name: BTreeMap::new(),
            free: BTreeSet::new(),
            next: first,
        }
    }

    /// Keep exactly `names`, numbering new ones.
    fn assign(&mut self, names: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .by_name
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            if let Some(id) = self.by_name.remove(&n) {
                self.free.insert(id.0);
            }
        }
        for n in names {
            if !self.by_name.contains_key(n) {
                let id = self.free.pop_first().unwrap_or_else(|| {
                    self.next += 1;
                    self.next - 1
                });
                self.by_name.insert(n.clone(), InterfaceId(id));
            }
        }
    }
}

fn frontend_claim(ip: Ipv4Addr, proto: u8, port: u16) -> u64 {
    kxdp_dataplane::tables::frontend_key(ip, proto, port)
}

impl Compiler {
    /// A compiler for the node `settings` describe.
    pub fn new(settings: NodeSettings) -> Compiler {
        let first = settings.node.uplink.0.max(settings.node.host.0) + 1;
        Compiler {
            nodeport_ips: settings.node.nodeport_ips().to_vec(),
            settings,
            services: BTreeMap::new(),
            last: None,
            claims: HashMap::new(),
            conflicted: BTreeSet::new(),
            endpoint_users: HashMap::new(),
            draining: BTreeSet::new(),
            interfaces: InterfaceNumbers::new(first),
            zone: None,
            policies: None,
            generation: 0,
        }
    }

    /// Replace the underlay neighbours (the kernel resolved more, or one changed); the next
    /// compile uses them. Returns whether they differ from the last ones.
    pub fn set_neighbors(&mut self, mut neighbors: Vec<(Ipv4Addr, EthernetAddress)>) -> bool {
        neighbors.sort_by_key(|(ip, _)| *ip);
        let changed = neighbors != self.settings.neighbors;
        self.settings.neighbors = neighbors;
        changed
    }

    /// The next hops this node needs MAC addresses for: the uplink gateway and every other
    /// node's underlay address inside the uplink subnet.
    pub fn wanted_neighbors(&self, model: &Model) -> Vec<Ipv4Addr> {
        let node = &self.settings.node;
        let mut wanted: Vec<Ipv4Addr> = model
            .nodes()
            .iter()
            .filter(|(name, _)| **name != node.name)
            .filter_map(|(_, n)| n.underlay_ip())
            .filter(|ip| node.uplink_subnet.contains_addr(ip))
            .collect();
        wanted.extend(node.uplink_gateway);
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// Endpoints listed as draining (left every service, flows may remain).
    pub fn draining(&self) -> impl Iterator<Item = &(Ipv4Addr, u8, u16)> {
        self.draining.iter()
    }

    /// Stop listing the draining endpoints for which `has_flows` says no flow is left; the
    /// next compile leaves them out.
    pub fn retire_draining(&mut self, mut has_flows: impl FnMut(&(Ipv4Addr, u8, u16)) -> bool) {
        self.draining.retain(|e| has_flows(e));
    }

    /// Compile what changed in `model` into a new snapshot.
    pub fn compile(&mut self, model: &mut Model) -> Result<Compiled, CompileError> {
        // The node first: if it cannot be configured, the changes stay in the model for the
        // next compile.
        let node = self.node_config(model)?;
        let changes = model.take_changes();
        let mut problems = Vec::new();
        if node.nodeport_ips() != self.nodeport_ips.as_slice() {
            // NodePorts are claimed per NodePort address: reclaim them all.
            self.nodeport_ips = node.nodeport_ips().to_vec();
            let all: Vec<String> = self.services.keys().cloned().collect();
            self.conflicted.extend(all);
        }
        let mut dirty: BTreeSet<String> = changes.services.into_iter().collect();
        // Topology hints are resolved against this node's zone: a new zone recompiles all.
        let zone = model.nodes().get(&node.name).and_then(|n| n.zone.clone());
        if zone != self.zone {
            self.zone = zone.clone();
            dirty.extend(self.services.keys().cloned());
        }
        let mut released = false;
        for key in &dirty {
            released |= self.release(key);
        }
        if released {
            dirty.extend(std::mem::take(&mut self.conflicted));
            for key in &dirty {
                self.release(key);
            }
        }
        let mut removed = BTreeSet::new();
        let mut added = BTreeSet::new();
        for key in &dirty {
            if let Some(old) = self.services.remove(key) {
                for e in old.endpoints {
                    let users = self.endpoint_users.entry(e).or_default();
                    *users -= 1;
                    if *users == 0 {
                        self.endpoint_users.remove(&e);
                        removed.insert(e);
                    }
                }
            }
            let Some(info) = model.services().get(key) else {
                continue;
            };
            let slices: Vec<&SliceInfo> = model.slices_of(key).collect();
            let cached = self.compile_service(key, info, &slices, &node, zone.as_deref());
            for e in &cached.endpoints {
                let users = self.endpoint_users.entry(*e).or_default();
                *users += 1;
                if *users == 1 {
                    added.insert(*e);
                }
            }
            self.services.insert(key.clone(), cached);
        }
        let mut flush_udp = Vec::new();
        for e in removed.difference(&added) {
            if e.1 == 17 {
                flush_udp.push((e.0, e.2));
            } else {
                self.draining.insert(*e);
            }
        }
        for e in &added {
            self.draining.remove(e);
        }
        let services: Vec<Arc<ServicePort>> = self
            .services
            .values()
            .flat_map(|c| c.ports.iter().cloned())
            .collect();
        for c in self.services.values() {
            problems.extend(c.problems.iter().cloned());
        }
        // Policies depend on pods (selected and peers), namespaces and policies only.
        let reused = (!changes.pods && !changes.policy)
            .then(|| self.policies.clone())
            .flatten();
        let policies_compiled = reused.is_none();
        let policies =
            reused.unwrap_or_else(|| Arc::new(compile_policies(model, Some(&node.name))));
        self.policies = Some(Arc::clone(&policies));
        let pods = self.local_pods(model, &node, &policies, &mut problems);
        let nodes = self.remote_nodes(model, &node, &mut problems);
        let interfaces: Vec<(String, InterfaceId)> = self
            .interfaces
            .by_name
            .iter()
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        self.generation += 1;
        let inputs = SnapshotInputs {
            generation: self.generation,
            node,
            services,
            pods,
            nodes,
            neighbors: self.settings.neighbors.clone(),
            draining_endpoints: self.draining.iter().copied().collect(),
        };
        let snapshot = Arc::new(match &self.last {
            Some(last) => Snapshot::build_after(inputs, last)?,
            None => Snapshot::build(inputs)?,
        });
        self.last = Some(Arc::clone(&snapshot));
        Ok(Compiled {
            snapshot,
            interfaces,
            flush_udp,
            services_compiled: dirty.len(),
            problems,
            health_checks: health_checks(model, &self.settings.node.name),
            policies,
            policies_compiled,
        })
    }

    /// Give up the frontends service `key` holds; true if it held any.
    fn release(&mut self, key: &str) -> bool {
        let Some(c) = self.services.get_mut(key) else {
            return false;
        };
        let claims = std::mem::take(&mut c.claims);
        for k in &claims {
            if self.claims.get(k).map(String::as_str) == Some(key) {
                self.claims.remove(k);
            }
        }
        !claims.is_empty()
    }

    /// This node's configuration: the settings, with what its Node object says.
    fn node_config(&self, model: &Model) -> Result<NodeConfig, CompileError> {
        let mut node = self.settings.node.clone();
        let info = model
            .nodes()
            .get(&node.name)
            .and_then(|n| n.pod_cidr.map(|c| (n, c)));
        let Some((info, cidr)) = info else {
            return Err(CompileError::NoPodCidr(node.name.clone()));
        };
        node.pod_cidr = cidr;
        // Peers address encapsulated frames to the VTEP MAC the Node object publishes.
        if let Some(mac) = info.vtep_mac {
            node.vtep_mac = mac;
        }
        let net = u32::from(cidr.network().address());
        node.gateway_ip = Ipv4Addr::from(net + 1);
        if let Some(ip) = info.internal_ip {
            if !node.node_ips.contains(&ip) {
                node.node_ips.insert(0, ip);
            }
        }
        Ok(node)
    }

    fn compile_service(
        &mut self,
        key: &str,
        info: &ServiceInfo,
        slices: &[&SliceInfo],
        node: &NodeConfig,
        zone: Option<&str>,
    ) -> Cached {
        let mut cached = Cached::default();
        // kube-apiserver allocates cluster IPs from the service CIDR and refuses others; one
        // outside it (a typo, or 8.8.8.8 in a manifest) would capture traffic for that address.
        if let Some(ip) = info.cluster_ip {
            if !node.service_cidr.contains_addr(&ip) {
                cached.problems.push(
                    ObjectError {
                        object: format!("Service {key}"),
                        field: info.cluster_ip_field.clone(),
                        problem: format!(
                            "{ip} is outside the service CIDR {}: the service is left out",
                            node.service_cidr
                        ),
                    }
                    .to_string(),
                );
                return cached;
            }
        }
        for p in &info.ports {
            let name = format!("{key}:{}", p.name);
            let mut frontends = Vec::new();
            let mut candidates: Vec<(Frontend, Vec<Ipv4Addr>)> = Vec::new();
            if let Some(ip) = info.cluster_ip {
                candidates.push((
                    frontend(FrontendKind::ClusterIp, Some(ip), p.port),
                    vec![ip],
                ));
            }
            if let Some(np) = p.node_port {
                candidates.push((
                    frontend(FrontendKind::NodePort, None, np),
                    node.nodeport_ips().to_vec(),
                ));
            }
            for ip in &info.external_ips {
                candidates.push((
                    frontend(FrontendKind::ExternalIp, Some(*ip), p.port),
                    vec![*ip],
                ));
            }
            for ip in &info.load_balancer_ips {
                candidates.push((
                    frontend(FrontendKind::LoadBalancer, Some(*ip), p.port),
                    vec![*ip],
                ));
            }
            for (fe, addrs) in candidates {
                let keys: Vec<u64> = addrs
                    .iter()
                    .map(|a| frontend_claim(*a, p.proto, fe.port))
                    .collect();
                let taken = keys
                    .iter()
                    .find_map(|k| self.claims.get(k).filter(|holder| *holder != key));
                if let Some(holder) = taken {
                    cached.problems.push(format!(
                        "service port {name}: frontend {:?} {}:{} is already taken by service {holder}",
                        fe.kind,
                        fe.ip.map_or("(node addresses)".into(), |ip| ip.to_string()),
                        fe.port
                    ));
                    self.conflicted.insert(key.to_owned());
                    continue;
                }
                for k in keys {
                    self.claims.insert(k, key.to_owned());
                    cached.claims.push(k);
                }
                frontends.push(fe);
            }
            if frontends.is_empty() {
                continue;
            }
            let backends = backends(p.proto, &p.name, slices, &node.name, zone);
            cached
                .endpoints
                .extend(backends.iter().map(|b| (b.ip, p.proto, b.port)));
            let policy = |local| {
                if local {
                    TrafficPolicy::Local
                } else {
                    TrafficPolicy::Cluster
                }
            };
            cached
                .ports
                .push(Arc::new(ServicePort::new(ServicePortSpec {
                    name,
                    proto: p.proto,
                    frontends,
                    backends,
                    internal_policy: policy(info.internal_local),
                    external_policy: policy(info.external_local),
                    client_ip_affinity: info
                        .client_ip_affinity
                        .map(|s| std::time::Duration::from_secs(u64::from(s))),
                    source_ranges: info.source_ranges.clone(),
                })));
        }
        cached
    }

    /// This node's pods: the API's (or manifest's), then those their veths declare that the
    /// API does not list (yet). A declaration is used only where its veth has the pod's
    /// name and its address is inside the pod CIDR and free; the API's pod wins over the
    /// declaration of the same pod, with a problem when the two disagree on the address.
    fn local_pods(
        &mut self,
        model: &Model,
        node: &NodeConfig,
        policies: &PodPolicies,
        problems: &mut Vec<String>,
    ) -> Vec<LocalPod> {
        // (key, interface, address, MAC)
        let mut chosen: Vec<(String, String, Ipv4Addr, EthernetAddress)> = Vec::new();
        let mut seen: HashMap<Ipv4Addr, String> = HashMap::new();
        for (key, pod) in model.pods() {
            if pod.node != node.name {
                continue;
            }
            if !node.pod_cidr.contains_addr(&pod.ip) {
                problems.push(format!(
                    "pod {key}: address {} is outside this node's pod CIDR {}",
                    pod.ip, node.pod_cidr
                ));
                continue;
            }
            if let Some(first) = seen.get(&pod.ip) {
                problems.push(format!(
                    "pod {key}: address {} is already used by pod {first}",
                    pod.ip
                ));
                continue;
            }
            seen.insert(pod.ip, key.clone());
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            let mac = pod.mac.unwrap_or_else(|| pod_mac(pod.ip));
            chosen.push((key.clone(), pod_interface_name(ns, name), pod.ip, mac));
        }
        for (ifname, declared) in model.declared() {
            let key = declared.key();
            if let Some(pod) = model.pods().get(&key) {
                if pod.node == node.name && pod.ip != declared.ip {
                    problems.push(format!(
                        "pod {key}: its veth {ifname} declares {}, the API says {}: using the \
                         API's",
                        declared.ip, pod.ip
                    ));
                }
                continue;
            }
            if *ifname != declared.interface_name() {
                problems.push(format!(
                    "pod {key}: declared on veth {ifname}, but its veth is named {}: ignored",
                    declared.interface_name()
                ));
                continue;
            }
            if !node.pod_cidr.contains_addr(&declared.ip) {
                problems.push(format!(
                    "pod {key}: its veth {ifname} declares {}, outside this node's pod CIDR {}: \
                     ignored",
                    declared.ip, node.pod_cidr
                ));
                continue;
            }
            if let Some(first) = seen.get(&declared.ip) {
                problems.push(format!(
                    "pod {key}: its veth {ifname} declares {}, already used by pod {first}: \
                     ignored",
                    declared.ip
                ));
                continue;
            }
            seen.insert(declared.ip, key.clone());
            chosen.push((key, ifname.clone(), declared.ip, pod_mac(declared.ip)));
        }
        let names: BTreeSet<String> = chosen.iter().map(|(_, n, _, _)| n.clone()).collect();
        self.interfaces.assign(&names);
        chosen
            .into_iter()
            .map(|(key, ifname, ip, mac)| LocalPod {
                ip,
                iface: self.interfaces.by_name[&ifname],
                mac,
                // Open both ways is no policy: its traffic stays untracked. A pod only its
                // veth declares has no labels yet, so no entry: open until the API lists it.
                policy: policies.get(&key).filter(|p| p.is_selected()).cloned(),
                name: key,
            })
            .collect()
    }

    fn remote_nodes(
        &self,
        model: &Model,
        node: &NodeConfig,
        problems: &mut Vec<String>,
    ) -> Vec<RemoteNode> {
        let mut out: Vec<RemoteNode> = Vec::new();
        for (name, info) in model.nodes() {
            if *name == node.name {
                continue;
            }
            let (Some(cidr), Some(ip), Some(mac)) =
                (info.pod_cidr, info.underlay_ip(), info.vtep_mac)
            else {
                problems.push(format!(
                    "node {name}: not in the overlay yet (needs spec.podCIDR, an address and flannel's backend-data VtepMAC)"
                ));
                continue;
            };
            let clash = std::iter::once((node.name.as_str(), node.pod_cidr))
                .chain(out.iter().map(|r| (r.name.as_str(), r.pod_cidr)))
                .find(|(_, other)| other.contains_subnet(&cidr) || cidr.contains_subnet(other));
            if let Some((other, _)) = clash {
                problems.push(format!(
                    "node {name}: pod CIDR {cidr} overlaps node {other}'s"
                ));
                continue;
            }
            out.push(RemoteNode {
                name: name.clone(),
                node_ip: ip,
                pod_cidr: cidr,
                vtep_mac: mac,
            });
        }
        out
    }
}

fn frontend(kind: FrontendKind, ip: Option<Ipv4Addr>, port: u16) -> Frontend {
    Frontend { kind, ip, port }
}

/// Service port `name`/`proto`'s endpoints from all its slices, each address once (the most
/// usable conditions win when slices disagree during an update).
///
/// Each endpoint's topology hints are resolved here against this node's name and `zone` (its
/// `topology.kubernetes.io/zone` label), so the dataplane's pools choose by them as kube-proxy
/// does. kxdp reads the hints only, as kube-proxy does: `trafficDistribution` (and the older
/// `service.kubernetes.io/topology-mode` annotation) reach it through the hints the
/// EndpointSlice controller writes for them.
fn backends(
    proto: u8,
    name: &str,
    slices: &[&SliceInfo],
    this_node: &str,
    zone: Option<&str>,
) -> Vec<Backend> {
    let hint = |names: &[String], here: Option<&str>| {
        if names.is_empty() {
            Hint::None
        } else if here.is_some_and(|h| names.iter().any(|n| n == h)) {
            Hint::Here
        } else {
            Hint::Elsewhere
        }
    };
    let mut by_addr: BTreeMap<(Ipv4Addr, u16), Backend> = BTreeMap::new();
    for s in slices {
        for (_, _, port) in s.ports.iter().filter(|(n, p, _)| n == name && *p == proto) {
            for ep in &s.endpoints {
                let b = Backend {
                    ip: ep.ip,
                    port: *port,
                    ready: ep.ready,
                    serving: ep.serving,
                    terminating: ep.terminating,
                    local: ep.node.as_deref() == Some(this_node),
                    node_hint: hint(&ep.for_nodes, Some(this_node)),
                    zone_hint: hint(&ep.for_zones, zone),
                };
                let rank = |b: &Backend| (b.ready, b.serving, !b.terminating);
                by_addr
                    .entry((ep.ip, *port))
                    .and_modify(|old| {
                        if rank(&b) > rank(old) {
                            *old = b;
                        }
                    })
                    .or_insert(b);
            }
        }
    }
    by_addr.into_values().collect()
}
