//! A batch of arbitrary frames on arbitrary interfaces through the pipeline of a node whose
//! tables the input describes, with conntrack kept across inputs so that later inputs meet the
//! flows earlier ones opened, under other tables (what a live table change does), and swept
//! now and then. Nothing panics, and:
//!
//! - every frame leaves through exactly one verdict, and the counters say so: the batch's
//!   frames are counted received once, and each verdict's counter (the drop and pass reasons
//!   included) moves by as many frames as got that verdict;
//! - a frame transmitted goes out an interface the snapshot knows, and a frame transmitted or
//!   replied holds an Ethernet header;
//! - checksums stay correct: where every IPv4 header of a frame (the outer one, and the inner
//!   one of VXLAN to the node's port) had a correct checksum, the frame kxdp sends or hands on
//!   has one too; and where the innermost TCP, UDP (with a checksum) or ICMP message of an
//!   unfragmented packet had a correct checksum, its innermost one of those has one after
//!   NAT, encapsulation, decapsulation or a translated or generated ICMP error;
//! - no frame grows past the largest frame kxdp handles (64 KiB).
//!
//! Input: `[n, n bytes of table edits, records...]`.
//!
//! The table edits are 8-byte records `[op, a, b, c, d, e, f, g]` applied in order to the
//! fixture node's inputs (`Topology::default().inputs()`): services and their frontends
//! (ClusterIP, NodePort, external and load-balancer IPs), endpoints (conditions and topology
//! hints), protocols, traffic policies, session affinity and source ranges added, changed or
//! removed; NetworkPolicy rule sets and rules on pods (peers, ports, named-port peers); pods,
//! remote nodes and neighbours added or removed; draining endpoints; node settings (MTUs,
//! masquerade range, NodePort addresses, extra node addresses, gateway, VNI, uplink subnet).
//! See [`edit`]. A snapshot the edits make invalid (refused by `Snapshot::build_after`) falls
//! back to the fixture. Each is built after the one built before it, as the agent builds its
//! snapshots (the service index reused, the policy epoch bumped when a policy changed).
//!
//! Building costs far more than a batch (a Maglev table per pool), so built snapshots are
//! cached by their edit bytes, and a custom mutator leaves the table section alone in 31 of
//! 32 mutations: most inputs run new frames against tables already built (the corpus's), and
//! the tables still change every few dozen executions. The cache keeps what was used lately
//! in two generations of up to 8192 snapshots each: the tables of corpus inputs, used again
//! and again, stay; those of one-off mutations leave with their generation.
//!
//! With no edits, the fixture node, or, if any record's selector has its high bit set, the
//! fixture with NetworkPolicies selecting pod B both ways and admitting nothing.
//!
//! Records: `[selector, length, frame bytes...]`, or with bit 6 of the selector set,
//! `[selector, length (2 bytes, big-endian), frame bytes...]` (frames up to 1792 bytes, a
//! chunk less its headroom, so that the MTUs matter); up to 64 per batch. The selector's low
//! six bits pick the interface (modulo 7): pod A, pod B, the uplink, the host interface, an
//! unknown interface, and the interfaces of two pods the edits may add.
#![no_main]

use core::net::Ipv4Addr;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::{CounterValues, Event};
use kxdp_dataplane::flow::proto;
use kxdp_dataplane::pipeline::Verdict;
use kxdp_dataplane::reason::{DropReason, PassReason};
use kxdp_dataplane::tables::{
    AddressSet, Backend, Frontend, FrontendKind, Hint, InterfaceId, LocalPod, PeerSet, PodPolicy,
    PolicyRule, PortPeers, PortRange, PortSet, RemoteNode, RuleSet, ServicePort, ServicePortSpec,
    SnapshotInputs, TrafficPolicy,
};
use kxdp_dataplane::wire::Ipv4Cidr;
use kxdp_dataplane::{process_batch, Counters, Instant, Snapshot};
use kxdp_testkit::{mac, FrameBuf, Topology, CHUNK_SIZE, HEADROOM};
#[path = "shared/checksum.rs"]
mod checksum;
use checksum::{be16, sum16, verifies};
use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};

/// Bytes per table edit.
const EDIT: usize = 8;
/// Snapshots kept built, per generation of the cache.
const CACHE: usize = 8192;
/// One mutation in this many may change the table section; the others change the records.
const TABLE_MUTATION_ODDS: u32 = 32;
/// Service ports kept compiled.
const PORT_CACHE: usize = 4096;
/// The longest frame a record holds: a chunk less its headroom.
const MAX_FRAME: usize = CHUNK_SIZE - HEADROOM;
/// The most frames in a batch.
const BATCH: usize = 64;
/// Interfaces of the pods the edits may add.
const ADDED_PODS: [InterfaceId; 2] = [InterfaceId(4), InterfaceId(5)];

struct World {
    t: Topology,
    /// The fixture's inputs, its service ports compiled once: an edit that leaves one alone
    /// keeps it (the same `Arc`), so building after another snapshot reuses its index
    /// entries, and no edit pays for compiling the ports it does not touch.
    inputs: SnapshotInputs,
    plain: Arc<Snapshot>,
    policed: Arc<Snapshot>,
    /// Snapshots by edit bytes.
    cache: Mutex<Cache>,
    /// Edited service ports compiled, by a hash of their spec (checked equal on a hit): a
    /// Maglev table costs more than the rest of a build, and most edits leave most ports
    /// alone. Sharing them across snapshots is also what the agent does (and `build_after`
    /// reuses them).
    ports: Mutex<HashMap<u64, Arc<ServicePort>>>,
    /// The last snapshot built, which the next one is built after.
    last_built: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    /// A batch's buffers, reused as a worker reuses UMEM chunks (bytes outside a frame are
    /// what earlier frames left there).
    bufs: Mutex<Vec<FrameBuf>>,
    ct: Conntrack,
    counters: Counters,
    clock: AtomicU64,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let t = Topology::default();
        let fixture = t.inputs();
        let plain = Arc::new(Snapshot::build(fixture.clone()).expect("the fixture is valid"));
        // Pod B selected both ways by a policy admitting nothing: every flow of it is judged.
        let mut inputs = fixture.clone();
        inputs.pods[1].policy = Some(Arc::new(PodPolicy {
            ingress: Some(rule_set("fuzz/deny")),
            egress: Some(rule_set("fuzz/deny")),
        }));
        let policed = Arc::new(Snapshot::build_after(inputs, &plain).expect("a valid node"));
        World {
            t,
            inputs: fixture,
            last_built: Mutex::new(policed.clone()),
            plain,
            policed,
            cache: Mutex::new(Cache::default()),
            ports: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(3),
            ct: Conntrack::new(ConntrackConfig {
                capacity: 4096,
                ..ConntrackConfig::default()
            }),
            bufs: Mutex::new((0..BATCH).map(|_| FrameBuf::new(&[])).collect()),
            counters: Counters::new(),
            clock: AtomicU64::new(1_000_000_000),
        }
    })
}

/// A rule set of policy `name` without rules: it admits nothing until rules are added.
fn rule_set(name: &str) -> RuleSet {
    RuleSet {
        rules: Box::new([]),
        policies: vec![Arc::<str>::from(name)].into(),
    }
}

/// A service port being edited: the fixture's compiled one while untouched.
enum Port {
    Fixture(Arc<ServicePort>),
    Edited(ServicePortSpec),
}

impl Port {
    fn spec(&mut self) -> &mut ServicePortSpec {
        if let Port::Fixture(p) = self {
            *self = Port::Edited(p.spec().clone());
        }
        match self {
            Port::Edited(spec) => spec,
            Port::Fixture(_) => unreachable!("just edited"),
        }
    }
}

/// Ports that services, frontends and rules use: the fixture's and frames' usual ones (so
/// they meet), then a spread of the rest.
fn port(p: u8) -> u16 {
    const PORTS: [u16; 16] = [
        80, 8080, 53, 443, 8443, 30080, 22, 5353, 31000, 61000, 65535, 1, 9000, 8472, 4789, 0,
    ];
    if p & 0x80 == 0 {
        PORTS[usize::from(p & 15)]
    } else {
        u16::from(p & 0x7f) * 509 + 7
    }
}

/// An address: host `h` of one of the networks the fixture uses (`net` 0 to 7: this node's
/// pods, node B's, an unassigned block, the service CIDR, the underlay, load-balancer and
/// external addresses, documentation space), or (`net` 8 to 15) one of the fixture's named
/// addresses.
fn addr(t: &Topology, net: u8, h: u8) -> Ipv4Addr {
    let named = [
        t.pod_a.ip,
        t.pod_b.ip,
        t.remote_pod_ip,
        t.node.primary_ip(),
        t.external_ip,
        t.web_lb_ip,
        t.web_cluster_ip,
        t.node.gateway_ip,
    ];
    match net % 16 {
        0 => Ipv4Addr::new(10, 244, 1, h),
        1 => Ipv4Addr::new(10, 244, 2, h),
        2 => Ipv4Addr::new(10, 244, 3, h),
        3 => Ipv4Addr::new(10, 96, 0, h),
        4 => Ipv4Addr::new(198, 18, 0, h),
        5 => Ipv4Addr::new(198, 19, 1, h),
        6 => Ipv4Addr::new(198, 19, 0, h),
        7 => Ipv4Addr::new(203, 0, 113, h),
        n => named[usize::from(n - 8)],
    }
}

/// `ip/len`, the address masked to the prefix (as the control side parses CIDRs).
fn cidr(ip: Ipv4Addr, len: u8) -> Ipv4Cidr {
    let len = len % 33;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Cidr::new(Ipv4Addr::from(u32::from(ip) & mask), len)
}

const PROTOS: [u8; 4] = [proto::TCP, proto::UDP, 132, proto::ICMP];
const KINDS: [FrontendKind; 4] = [
    FrontendKind::ClusterIp,
    FrontendKind::NodePort,
    FrontendKind::ExternalIp,
    FrontendKind::LoadBalancer,
];
const HINTS: [Hint; 3] = [Hint::None, Hint::Here, Hint::Elsewhere];

fn policy(local: bool) -> TrafficPolicy {
    if local {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    }
}

/// The node's inputs and the service ports being edited.
struct Draft<'w> {
    w: &'w World,
    inputs: SnapshotInputs,
    ports: Vec<Port>,
    /// Edits so far, for distinct names.
    n: usize,
}

impl Draft<'_> {
    fn frontend(&self, kind: u8, net: u8, h: u8, p: u8) -> Frontend {
        let kind = KINDS[usize::from(kind % 4)];
        Frontend {
            kind,
            ip: (kind != FrontendKind::NodePort).then(|| addr(&self.w.t, net, h)),
            port: port(p),
        }
    }

    /// An endpoint at `ip`; on this node when it is one of this node's pods' or its own
    /// addresses (host network), as the control side decides from `nodeName`.
    fn backend(&self, ip: Ipv4Addr, p: u8, flags: u8) -> Backend {
        let node = &self.inputs.node;
        Backend {
            ip,
            port: port(p),
            ready: flags & 1 == 0,
            serving: flags & 2 == 0,
            terminating: flags & 4 != 0,
            local: node.pod_cidr.contains_addr(&ip) || node.node_ips.contains(&ip),
            node_hint: HINTS[usize::from(flags >> 3 & 3) % 3],
            zone_hint: HINTS[usize::from(flags >> 5 & 3) % 3],
        }
    }

    /// The policy of pod `pod` (an index), made if missing.
    fn pod_policy(&mut self, pod: u8) -> Option<&mut PodPolicy> {
        let pods = &mut self.inputs.pods;
        let n = pods.len();
        let pod = pods.get_mut(usize::from(pod) % n.max(1))?;
        Some(Arc::make_mut(
            pod.policy.get_or_insert_with(Default::default),
        ))
    }
}

/// Applies one table edit `[op, a, b, c, d, e, f, g]` to `draft`. `op` modulo 14 picks it: 0
/// a service port (kind and protocol from `a`, its frontend from `b`, `c`, `d`, perhaps an
/// endpoint from `e`, `f`, `g`); for port `a` (modulo their number), 1 a frontend, 2 an
/// endpoint, 3 its removal, 4 its settings; for pod `a`, 5 a direction's policy set or
/// unset, 6 a rule, 8 its removal; 7 a pod; 9 a remote node (and its neighbour entry), 10 a
/// node's removal; 11 a neighbour added or removed; 12 a node setting (`a` modulo 8); 13 a
/// draining endpoint. Addresses are [`addr`]'s `(net, host)`, ports [`port`]'s indexes.
fn edit(draft: &mut Draft<'_>, r: &[u8]) {
    let [op, a, b, c, d, e, f, g]: [u8; EDIT] = r.try_into().expect("an edit record");
    let w = draft.w;
    let t = &w.t;
    draft.n += 1;
    let n = draft.n;
    let svc = |ports: &[Port]| (!ports.is_empty()).then(|| usize::from(a) % ports.len());
    match op % 14 {
        // A service port with one frontend, and perhaps one endpoint.
        0 => {
            let fe = draft.frontend(a, b, c, d);
            let mut backends = Vec::new();
            if e & 1 != 0 {
                backends.push(draft.backend(addr(t, f, g), e >> 1, e >> 4));
            }
            draft.ports.push(Port::Edited(ServicePortSpec {
                name: format!("fuzz/svc-{n}:p"),
                proto: if a & 4 != 0 { proto::UDP } else { proto::TCP },
                frontends: vec![fe],
                backends,
                internal_policy: TrafficPolicy::Cluster,
                external_policy: TrafficPolicy::Cluster,
                client_ip_affinity: None,
                source_ranges: Vec::new(),
            }));
        }
        1 => {
            if let Some(i) = svc(&draft.ports) {
                let fe = draft.frontend(b, c, d, e);
                draft.ports[i].spec().frontends.push(fe);
            }
        }
        2 => {
            if let Some(i) = svc(&draft.ports) {
                let be = draft.backend(addr(t, b, c), d, e);
                draft.ports[i].spec().backends.push(be);
            }
        }
        3 => {
            if let Some(i) = svc(&draft.ports) {
                draft.ports.remove(i);
            }
        }
        // Protocol, traffic policies, affinity, source ranges; or no frontends or endpoints.
        4 => {
            if let Some(i) = svc(&draft.ports) {
                let s = draft.ports[i].spec();
                s.internal_policy = policy(b & 1 != 0);
                s.external_policy = policy(b & 2 != 0);
                s.client_ip_affinity =
                    (b & 4 != 0).then(|| core::time::Duration::from_secs(1 + u64::from(c)));
                if b & 8 != 0 {
                    s.proto = PROTOS[usize::from(d % 4)];
                }
                if b & 16 != 0 {
                    s.source_ranges.push(cidr(addr(t, e, f), g));
                }
                if b & 32 != 0 {
                    s.backends.clear();
                }
                if b & 64 != 0 {
                    s.frontends.clear();
                }
            }
        }
        // A pod's direction selected by a policy (admitting nothing yet), or no longer.
        5 => {
            if let Some(p) = draft.pod_policy(a) {
                let dir = if b & 1 == 0 {
                    &mut p.ingress
                } else {
                    &mut p.egress
                };
                *dir = (b & 2 != 0).then(|| rule_set(&format!("fuzz/np-{n}")));
            }
        }
        // A rule in a pod's direction.
        6 => {
            let peers = if b & 2 != 0 {
                PeerSet::Any
            } else {
                let except = if b & 4 != 0 {
                    vec![(addr(t, c, d ^ 1), (e % 33).saturating_add(2).min(32))]
                } else {
                    Vec::new()
                };
                PeerSet::Addresses(AddressSet::from_block(addr(t, c, d), e % 33, &except))
            };
            let ports = if b & 8 != 0 {
                PortSet::Any
            } else {
                let lo = port(g);
                PortSet::Ranges(Box::new([PortRange {
                    proto: PROTOS[usize::from(f % 3)],
                    lo,
                    hi: lo.saturating_add(u16::from(f >> 2)),
                }]))
            };
            let peer_ports: Arc<[PortPeers]> = if b & 16 != 0 {
                Arc::new([PortPeers {
                    proto: PROTOS[usize::from(f % 2)],
                    port: port(g ^ 1),
                    peers: AddressSet::from_block(addr(t, c, d), 24 + e % 9, &[]),
                }])
            } else {
                Arc::new([])
            };
            let name: Arc<str> = format!("fuzz/np-{n}").into();
            if let Some(p) = draft.pod_policy(a) {
                let dir = if b & 1 == 0 {
                    &mut p.ingress
                } else {
                    &mut p.egress
                };
                let set = dir.get_or_insert_with(|| rule_set("fuzz/np"));
                let mut rules = set.rules.to_vec();
                rules.push(PolicyRule {
                    policy: name.clone(),
                    peers,
                    ports,
                    peer_ports,
                });
                set.rules = rules.into();
                let mut policies = set.policies.to_vec();
                policies.push(name);
                policies.sort();
                set.policies = policies.into();
            }
        }
        7 => draft.inputs.pods.push(LocalPod {
            name: format!("fuzz/pod-{n}"),
            ip: Ipv4Addr::new(10, 244, 1, a),
            iface: if b & 0x80 == 0 {
                ADDED_PODS[usize::from(b & 1)]
            } else {
                InterfaceId(u16::from(b & 7))
            },
            mac: mac([0x02, 0, 0x0a, 0xf4, 0x01, a]),
            policy: None,
        }),
        8 => {
            let pods = &mut draft.inputs.pods;
            if !pods.is_empty() {
                pods.remove(usize::from(a) % pods.len());
            }
        }
        9 => {
            let node_ip = addr(t, a, b);
            let vtep = mac([0x02, 0x6b, 0x78, 0x76, 1, d]);
            draft.inputs.nodes.push(RemoteNode {
                name: format!("fuzz/node-{n}"),
                node_ip,
                pod_cidr: cidr(Ipv4Addr::new(10, 244, c, 0), 20 + e % 9),
                vtep_mac: vtep,
            });
            if f & 1 != 0 {
                draft
                    .inputs
                    .neighbors
                    .push((node_ip, mac([0x02, 0, 0xc6, 0x12, 1, g])));
            }
        }
        10 => {
            let nodes = &mut draft.inputs.nodes;
            if !nodes.is_empty() {
                nodes.remove(usize::from(a) % nodes.len());
            }
        }
        11 => {
            let ip = addr(t, b, c);
            match a % 3 {
                0 => draft
                    .inputs
                    .neighbors
                    .push((ip, mac([0x02, 0, 0xc6, 0x12, 2, d]))),
                1 => draft.inputs.neighbors.retain(|(n, _)| *n != ip),
                _ => draft.inputs.neighbors.clear(),
            }
        }
        12 => {
            let node = &mut draft.inputs.node;
            let wide = u16::from_be_bytes([b, c]);
            match a % 8 {
                0 => node.uplink_mtu = 626 + wide % (9000 - 626 + 1),
                1 => node.pod_mtu = 576 + wide % (9000 - 576 + 1),
                2 => {
                    let lo = 32768 + wide % 32768;
                    node.masquerade_ports = lo..=lo.saturating_add(u16::from(d) * 16);
                }
                3 => {
                    node.nodeport_ips = (b & 0x80 == 0).then(|| {
                        let ips = node.node_ips.iter().enumerate();
                        ips.filter(|(i, _)| c >> (i % 8) & 1 != 0)
                            .map(|(_, ip)| *ip)
                            .collect()
                    });
                }
                4 => node.node_ips.push(addr(t, b, c)),
                5 => node.uplink_gateway = (b & 1 == 0).then(|| addr(t, c, d)),
                6 => node.vxlan_vni = u32::from_be_bytes([0, b, c, d]),
                _ => node.uplink_subnet = cidr(node.primary_ip(), 8 + b % 25),
            }
        }
        _ => draft.inputs.draining_endpoints.push((
            addr(t, a, b),
            PROTOS[usize::from(c % 2)],
            port(d),
        )),
    }
}

/// A hash of every field of `spec`.
fn spec_hash(spec: &ServicePortSpec) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    let ServicePortSpec {
        name,
        proto,
        frontends,
        backends,
        internal_policy,
        external_policy,
        client_ip_affinity,
        source_ranges,
    } = spec;
    (
        name,
        proto,
        frontends,
        backends,
        internal_policy,
        external_policy,
    )
        .hash(&mut h);
    (client_ip_affinity, source_ranges).hash(&mut h);
    h.finish()
}

/// The snapshot `edits` describe, built after the last one built, or `None` if it is invalid.
fn build(w: &World, edits: &[u8]) -> Option<Arc<Snapshot>> {
    let mut inputs = w.inputs.clone();
    let ports = core::mem::take(&mut inputs.services);
    let mut draft = Draft {
        w,
        inputs,
        ports: ports.into_iter().map(Port::Fixture).collect(),
        n: 0,
    };
    for r in edits.chunks_exact(EDIT) {
        edit(&mut draft, r);
    }
    let Draft {
        mut inputs, ports, ..
    } = draft;
    // A pod no policy selects either way has none, as the control side compiles it.
    for pod in &mut inputs.pods {
        if pod.policy.as_ref().is_some_and(|p| !p.is_selected()) {
            pod.policy = None;
        }
    }
    let mut compiled = w.ports.lock().unwrap();
    if compiled.len() >= PORT_CACHE {
        compiled.clear();
    }
    inputs.services = ports
        .into_iter()
        .map(|p| match p {
            Port::Fixture(p) => p,
            Port::Edited(spec) => {
                let entry = compiled
                    .entry(spec_hash(&spec))
                    .or_insert_with(|| Arc::new(ServicePort::new(spec.clone())));
                if *entry.spec() != spec {
                    *entry = Arc::new(ServicePort::new(spec));
                }
                entry.clone()
            }
        })
        .collect();
    drop(compiled);
    inputs.generation = w.generation.fetch_add(1, Ordering::Relaxed);
    let mut last = w.last_built.lock().unwrap();
    let snap = Arc::new(Snapshot::build_after(inputs, &last).ok()?);
    *last = snap.clone();
    Some(snap)
}

/// Built snapshots by edit bytes (`None` for edits that make an invalid node), in two
/// generations: a lookup finds either and keeps what it finds in the young one; when that is
/// full, it becomes the old one and the old one is dropped.
#[derive(Default)]
struct Cache {
    young: HashMap<Vec<u8>, Option<Arc<Snapshot>>>,
    old: HashMap<Vec<u8>, Option<Arc<Snapshot>>>,
}

impl Cache {
    fn get(&mut self, edits: &[u8]) -> Option<Option<Arc<Snapshot>>> {
        if let Some(s) = self.young.get(edits) {
            return Some(s.clone());
        }
        let s = self.old.remove(edits)?;
        self.insert(edits, s.clone());
        Some(s)
    }

    fn insert(&mut self, edits: &[u8], s: Option<Arc<Snapshot>>) {
        if self.young.len() >= CACHE {
            self.old = core::mem::take(&mut self.young);
        }
        self.young.insert(edits.to_vec(), s);
    }
}

/// The snapshot for table section `edits`, from the cache or built.
fn snapshot(w: &World, edits: &[u8], policed: bool) -> Arc<Snapshot> {
    if edits.is_empty() {
        return if policed { &w.policed } else { &w.plain }.clone();
    }
    let mut cache = w.cache.lock().unwrap();
    let s = cache.get(edits).unwrap_or_else(|| {
        let s = build(w, edits);
        cache.insert(edits, s.clone());
        s
    });
    s.unwrap_or_else(|| w.plain.clone())
}

/// The IPv4 headers of a frame: the outer one at 14, then, for VXLAN (UDP to the node's port
/// with the I flag), the inner one at 64. Each is `(offset, header length)`.
fn ipv4_headers(f: &[u8], vxlan_port: u16) -> [Option<(usize, usize)>; 2] {
    let header = |l3: usize| {
        if f.len() < l3 + 20 || be16(f, l3 - 2) != 0x0800 || f[l3] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(f[l3] & 0x0f) * 4;
        (ihl >= 20 && f.len() >= l3 + ihl).then_some((l3, ihl))
    };
    let outer = header(14);
    let vxlan = outer == Some((14, 20))
        && f[14 + 9] == proto::UDP
        && f.len() >= 64 + 20
        && be16(f, 36) == vxlan_port
        && f[42] == 0x08;
    [outer, if vxlan { header(64) } else { None }]
}

/// Whether every IPv4 header `ipv4_headers` finds has a correct checksum, and there is one.
fn headers_verify(f: &[u8], vxlan_port: u16) -> Option<bool> {
    let [outer, inner] = ipv4_headers(f, vxlan_port);
    let ok = |(at, len): (usize, usize)| verifies(sum16(0, &f[at..at + len]));
    outer.map(|o| ok(o) && inner.is_none_or(ok))
}

/// The checksum of the innermost packet's TCP segment, UDP datagram (with a checksum) or
/// ICMP message, if it is one of those, unfragmented and whole: whether it verifies.
fn l4_verifies(f: &[u8], vxlan_port: u16) -> Option<bool> {
    let [outer, inner] = ipv4_headers(f, vxlan_port);
    let (l3, ihl) = inner.or(outer)?;
    let total = usize::from(be16(f, l3 + 2));
    if be16(f, l3 + 6) & 0x3fff != 0 || total < ihl || f.len() < l3 + total {
        return None;
    }
    let l4 = &f[l3 + ihl..l3 + total];
    let pseudo = || {
        let s = sum16(0, &f[l3 + 12..l3 + 20]);
        s + u64::from(f[l3 + 9]) + l4.len() as u64
    };
    match f[l3 + 9] {
        proto::TCP if l4.len() >= 20 => Some(verifies(sum16(pseudo(), l4))),
        proto::UDP if l4.len() >= 8 && be16(l4, 6) != 0 => Some(verifies(sum16(pseudo(), l4))),
        proto::ICMP if l4.len() >= 8 => Some(verifies(sum16(0, l4))),
        _ => None,
    }
}

/// What the counters say happened between `before` and `after`, against the verdicts.
fn check_counters(before: &CounterValues, after: &CounterValues, verdicts: &[Verdict]) {
    let delta = |e: Event| after.event(e) - before.event(e);
    let count = |f: fn(&Verdict) -> bool| verdicts.iter().filter(|v| f(v)).count() as u64;
    assert_eq!(delta(Event::Batches), 1, "batches");
    assert_eq!(delta(Event::RxPackets), verdicts.len() as u64, "received");
    assert_eq!(
        delta(Event::Transmitted),
        count(|v| matches!(v, Verdict::Transmit(_))),
        "transmitted"
    );
    assert_eq!(
        delta(Event::Replied),
        count(|v| matches!(v, Verdict::Reply)),
        "replied"
    );
    assert_eq!(
        delta(Event::PassedToHost),
        count(|v| matches!(v, Verdict::ToHost(_))),
        "passed"
    );
    assert_eq!(
        delta(Event::Dropped),
        count(|v| matches!(v, Verdict::Drop(_))),
        "dropped"
    );
    for r in DropReason::ALL {
        let n = verdicts.iter().filter(|v| **v == Verdict::Drop(*r)).count() as u64;
        assert_eq!(after.drop(*r) - before.drop(*r), n, "drops for {r:?}");
    }
    for r in PassReason::ALL {
        let n = verdicts
            .iter()
            .filter(|v| **v == Verdict::ToHost(*r))
            .count() as u64;
        assert_eq!(after.pass(*r) - before.pass(*r), n, "passes for {r:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let t = &w.t;
    let ifaces = [
        t.pod_a.iface,
        t.pod_b.iface,
        t.node.uplink,
        t.node.host,
        InterfaceId(200),
        ADDED_PODS[0],
        ADDED_PODS[1],
    ];
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (edits, mut rest) = rest.split_at(n);
    let edits = &edits[..n - n % EDIT];
    let mut frames: Vec<(InterfaceId, &[u8])> = Vec::new();
    let mut policed = false;
    while let [sel, tail @ ..] = rest {
        if frames.len() == BATCH {
            break;
        }
        let (len, tail) = match tail {
            [hi, lo, tail @ ..] if sel & 0x40 != 0 => {
                (usize::from(u16::from_be_bytes([*hi, *lo])), tail)
            }
            [len, tail @ ..] if sel & 0x40 == 0 => (usize::from(*len), tail),
            _ => break,
        };
        let len = len.min(tail.len()).min(MAX_FRAME);
        policed |= sel & 0x80 != 0;
        frames.push((ifaces[usize::from(sel & 0x3f) % ifaces.len()], &tail[..len]));
        rest = &tail[len..];
    }
    let snap = snapshot(w, edits, policed);
    let vxlan_port = snap.node.vxlan_port;
    // What held of each frame as it came.
    let before: Vec<(Option<bool>, Option<bool>)> = frames
        .iter()
        .map(|(_, f)| (headers_verify(f, vxlan_port), l4_verifies(f, vxlan_port)))
        .collect();
    let mut bufs = w.bufs.lock().unwrap();
    let mut packets: Vec<_> = bufs
        .iter_mut()
        .zip(&frames)
        .map(|(b, (iface, f))| {
            b.reset(f);
            b.packet(*iface)
        })
        .collect();
    // A millisecond a batch: flows age and expire as inputs go by.
    let now = w.clock.fetch_add(1_000_000, Ordering::Relaxed);
    let counted = w.counters.read();
    process_batch(
        &mut packets,
        &snap,
        &w.ct,
        &w.counters,
        Instant::from_nanos(now),
    );
    let verdicts: Vec<Verdict> = packets.iter().map(|p| p.verdict).collect();
    check_counters(&counted, &w.counters.read(), &verdicts);
    for (i, (p, (ip_ok, l4_ok))) in packets.iter().zip(before).enumerate() {
        let out = p.frame.data();
        assert!(out.len() <= 64 * 1024, "a frame grew out of bounds");
        let what = || {
            format!(
                "frame {i} from {:?}: {:?}, {out:02x?}",
                p.ingress, p.verdict
            )
        };
        match p.verdict {
            Verdict::Drop(_) => continue,
            Verdict::Transmit(to) => {
                assert!(snap.interface_role(to).is_some(), "{}: unknown", what());
                assert!(out.len() >= 14, "{}: no Ethernet header", what());
            }
            Verdict::Reply => assert!(out.len() >= 14, "{}: no Ethernet header", what()),
            Verdict::ToHost(_) => {}
        }
        if ip_ok == Some(true) {
            let now_ok = headers_verify(out, vxlan_port);
            assert!(now_ok != Some(false), "{}: IPv4 header checksum", what());
        }
        if l4_ok == Some(true) {
            let now_ok = l4_verifies(out, vxlan_port);
            assert!(now_ok != Some(false), "{}: L4 checksum", what());
        }
    }
    if now.is_multiple_of(64_000_000) {
        w.ct.gc(Instant::from_nanos(now), 1024);
    }
});

// libFuzzer's own mutations, on the records alone but for one mutation in
// `TABLE_MUTATION_ODDS`, which may change anything.
fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let head = match data[..size].first() {
        Some(&n) => 1 + usize::from(n).min(size - 1),
        None => 0,
    };
    if head == 0 || head >= max_size || seed.is_multiple_of(TABLE_MUTATION_ODDS) {
        return fuzzer_mutate(data, size, max_size);
    }
    head + fuzzer_mutate(&mut data[head..], size - head, max_size - head)
});
