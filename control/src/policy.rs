//! NetworkPolicies compiled per pod into the dataplane's [`PodPolicy`]: every selector
//! evaluated and every named port resolved here, so the fast path sees address ranges and port
//! ranges only.
//!
//! The semantics are the Kubernetes API's (`networking.k8s.io/v1`):
//! - a pod selected by no policy in a direction is open in that direction (`None`);
//! - a pod selected by some is allowed, in that direction, exactly what one of their rules
//!   allows (policies add up; a policy with no rule in a direction denies all there);
//! - a rule admits a peer when any of its peers matches (empty `from`/`to`: any peer), on any
//!   of its ports (empty `ports`: any port);
//! - a peer is pods by `podSelector` in the policy's namespace, by `namespaceSelector` (every
//!   pod of the selected namespaces) or both ANDed, or an `ipBlock` less its `except`s. Pod
//!   peers are matched by the pod's address, as Calico matches them (IP sets); pods without
//!   an address are not peers yet;
//! - a numeric port (with `endPort`, a range) matches that destination port; a named port
//!   matches the container port of that name and protocol on the destination: for ingress the
//!   selected pod itself (resolved here into a plain range), for egress each destination pod
//!   (resolved into exact (address, protocol, port) entries for every pod among the rule's
//!   peers; where the API is silent, a pod whose address an `ipBlock` admits counts as among
//!   them). A name no pod defines, or an address that is no pod, matches nothing.
//!
//! Node traffic and a pod's traffic to itself are always allowed, whatever the policies: the
//! fast path applies both (see [`kxdp_dataplane::tables::policy`]).
//!
//! Peers are every pod of the cluster ([`Model::policy_pods`]) that has an address and is not
//! on the host network (a host-network pod speaks with its node's address, which only an
//! `ipBlock` can name, as in Calico); namespaces are those the model holds, and, for a
//! namespace only pods name (a manifest without its Namespace object), one labelled as the API
//! server labels a new one ([`NamespaceInfo::implicit`]). Pods a veth
//! declares before the API lists them carry no labels, so no policy selects them yet: they get
//! no entry, and the caller treats a pod without one as selected by none.
//!
//! Cost: a full compile per change of pods, namespaces or policies. Pod peer selections are
//! memoised per (namespace scope, selector), so policies sharing selectors (the common case:
//! `app=...` in each namespace) evaluate each once; policies selecting no compiled pod cost one
//! selector test per pod of their namespace; rules repeated across policies compile once (see
//! `TemplateMemo`). `make perf-control` measures it at 10k pods and 10k policies.
//!
//! An egress rule's named port compiles into one [`PortPeers`] per number it resolves to,
//! holding the peers where it does as merged address ranges: a name that is `8080` on every
//! pod of the cluster is one entry of a few ranges, not one entry per pod, so a new flow's
//! verdict stays a few binary searches however many pods the rule names.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use kxdp_dataplane::tables::{
    AddressSet, PeerSet, PodPolicy, PolicyRule, PortPeers, PortRange, PortSet, RuleSet,
};

use crate::model::{Model, PodInfo};
use crate::netpol::{NamespaceInfo, Peer, PortRef, Rule, Selector};

/// Compiled policies, by pod key (`namespace/name`).
pub type PodPolicies = BTreeMap<String, Arc<PodPolicy>>;

/// Compile the policies of the pods node `node` serves (`Some(node)`: the model's
/// [`Kind::Pod`](crate::model::Kind::Pod) pods on that node), or of every pod (`None`, for
/// `trace` and tests). Every pod compiled for gets an entry, open both ways when no policy
/// selects it.
pub fn compile_policies(model: &Model, node: Option<&str>) -> PodPolicies {
    let all: Vec<(&str, &PodInfo)> = model.policy_pods().map(|(k, p)| (k.as_str(), p)).collect();
    let targets: Vec<(&str, &PodInfo)> = match node {
        Some(n) => model
            .pods()
            .iter()
            .filter(|(_, p)| p.node == n)
            .map(|(k, p)| (k.as_str(), p))
            .collect(),
        None => all.clone(),
    };
    let mut by_namespace: HashMap<&str, Vec<(&str, &PodInfo)>> = HashMap::new();
    for &(key, pod) in &all {
        by_namespace
            .entry(pod.namespace.as_str())
            .or_default()
            .push((key, pod));
    }
    let mut targets_by_namespace: HashMap<&str, Vec<(&str, &PodInfo)>> = HashMap::new();
    for &(key, pod) in &targets {
        targets_by_namespace
            .entry(pod.namespace.as_str())
            .or_default()
            .push((key, pod));
    }
    // Every namespace with its labels: the model's, and those only pods name.
    let implicit: Vec<(String, NamespaceInfo)> = by_namespace
        .keys()
        .filter(|ns| !model.namespaces().contains_key(**ns))
        .map(|ns| ((*ns).to_owned(), NamespaceInfo::implicit(ns)))
        .collect();
    let namespaces: Vec<(&str, &NamespaceInfo)> = model
        .namespaces()
        .iter()
        .map(|(n, i)| (n.as_str(), i))
        .chain(implicit.iter().map(|(n, i)| (n.as_str(), i)))
        .collect();
    let mut peers = PeerMemo {
        all: &all,
        namespaces: &namespaces,
        by_namespace: &by_namespace,
        memo: HashMap::new(),
    };
    #[derive(Default)]
    struct Acc {
        ingress: Option<(Vec<PolicyRule>, Vec<Arc<str>>)>,
        egress: Option<(Vec<PolicyRule>, Vec<Arc<str>>)>,
    }
    let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut templates = TemplateMemo::default();
    for (policy_key, policy) in model.policies() {
        let selected: Vec<(&str, &PodInfo)> = targets_by_namespace
            .get(policy.namespace.as_str())
            .into_iter()
            .flatten()
            .filter(|(_, p)| policy.pod_selector.matches(&p.labels))
            .copied()
            .collect();
        if selected.is_empty() {
            continue;
        }
        let name: Arc<str> = policy_key.as_str().into();
        if let Some(rules) = &policy.ingress {
            let templates: Vec<Arc<Template>> = rules
                .iter()
                .map(|r| templates.get(r, &policy.namespace, &mut peers, false))
                .collect();
            for (key, pod) in &selected {
                let (out, names) = acc
                    .entry(key)
                    .or_default()
                    .ingress
                    .get_or_insert_with(Default::default);
                out.extend(templates.iter().map(|t| t.rule(&name, Some(pod))));
                names.push(name.clone());
            }
        }
        if let Some(rules) = &policy.egress {
            let templates: Vec<Arc<Template>> = rules
                .iter()
                .map(|r| templates.get(r, &policy.namespace, &mut peers, true))
                .collect();
            for (key, _) in &selected {
                let (out, names) = acc
                    .entry(key)
                    .or_default()
                    .egress
                    .get_or_insert_with(Default::default);
                out.extend(templates.iter().map(|t| t.rule(&name, None)));
                names.push(name.clone());
            }
        }
    }
    let set = |d: Option<(Vec<PolicyRule>, Vec<Arc<str>>)>| {
        d.map(|(rules, mut policies)| {
            policies.sort();
            RuleSet {
                rules: rules.into(),
                policies: policies.into(),
            }
        })
    };
    targets
        .iter()
        .map(|&(key, _)| {
            let a = acc.remove(key).unwrap_or_default();
            let policy = PodPolicy {
                ingress: set(a.ingress),
                egress: set(a.egress),
            };
            (key.to_owned(), Arc::new(policy))
        })
        .collect()
}

/// Where a pod selector looks: one namespace, or the namespaces a selector picks.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Scope {
    Namespace(String),
    Selected(Selector),
}

/// The addresses of the pods of a (scope, pod selector), each evaluated once per compile.
struct PeerMemo<'a> {
    /// Every pod a policy may name.
    all: &'a [(&'a str, &'a PodInfo)],
    namespaces: &'a [(&'a str, &'a NamespaceInfo)],
    by_namespace: &'a HashMap<&'a str, Vec<(&'a str, &'a PodInfo)>>,
    memo: HashMap<(Scope, Selector), Arc<AddressSet>>,
}

impl<'a> PeerMemo<'a> {
    fn pods(&mut self, scope: Scope, pods: &Selector) -> Arc<AddressSet> {
        let k = (scope, pods.clone());
        if let Some(hit) = self.memo.get(&k) {
            return hit.clone();
        }
        let namespaces: Vec<&str> = match &k.0 {
            Scope::Namespace(ns) => vec![ns.as_str()],
            Scope::Selected(sel) => self
                .namespaces
                .iter()
                .filter(|(_, ns)| sel.matches(&ns.labels))
                .map(|(name, _)| *name)
                .collect(),
        };
        let found: Vec<&PodInfo> = namespaces
            .iter()
            .flat_map(|ns| self.by_namespace.get(ns).into_iter().flatten())
            .filter(|(_, p)| pods.matches(&p.labels))
            .map(|(_, p)| *p)
            .collect();
        let v = Arc::new(AddressSet::from_ranges(found.iter().map(|p| (p.ip, p.ip))));
        self.memo.insert(k, v.clone());
        v
    }
}

/// Rules compiled once per compile, shared by the policies that repeat them: the same rule
/// (in the same namespace, where a peer depends on it) in the same direction. Common rules
/// (egress to DNS and a named port in every namespace, say) would otherwise resolve their
/// named ports against every pod once per policy.
#[derive(Default)]
struct TemplateMemo {
    memo: HashMap<(Option<String>, bool, Rule), Arc<Template>>,
}

impl TemplateMemo {
    fn get(
        &mut self,
        rule: &Rule,
        namespace: &str,
        peers: &mut PeerMemo<'_>,
        egress: bool,
    ) -> Arc<Template> {
        // Only a `podSelector` alone looks in the policy's own namespace.
        let in_namespace = rule.peers.iter().any(|p| {
            matches!(
                p,
                Peer::Pods {
                    namespaces: None,
                    ..
                }
            )
        });
        let key = (
            in_namespace.then(|| namespace.to_owned()),
            egress,
            rule.clone(),
        );
        if let Some(hit) = self.memo.get(&key) {
            return hit.clone();
        }
        let t = Arc::new(Template::new(rule, namespace, peers, egress));
        self.memo.insert(key, t.clone());
        t
    }
}

/// A rule with its peers compiled, before its named ports are resolved (which for ingress
/// depends on the selected pod).
struct Template {
    peers: PeerSet,
    /// `None`: any port.
    ranges: Option<Vec<PortRange>>,
    /// Named ports: name, protocol.
    names: Vec<(String, u8)>,
    /// Egress named ports, resolved per peer.
    peer_ports: Arc<[PortPeers]>,
}

impl Template {
    fn new(rule: &Rule, namespace: &str, memo: &mut PeerMemo<'_>, egress: bool) -> Template {
        let mut pod_peers: Vec<Arc<AddressSet>> = Vec::new();
        let peers = if rule.peers.is_empty() {
            PeerSet::Any
        } else {
            let mut sets = Vec::new();
            for p in &rule.peers {
                match p {
                    Peer::Pods { namespaces, pods } => {
                        let scope = match namespaces {
                            None => Scope::Namespace(namespace.to_owned()),
                            Some(sel) => Scope::Selected(sel.clone()),
                        };
                        let found = memo.pods(scope, pods);
                        pod_peers.push(found);
                    }
                    Peer::Block { cidr, except } => {
                        sets.push(AddressSet::from_block(cidr.0, cidr.1, except));
                    }
                    Peer::OtherFamily => {}
                }
            }
            PeerSet::Addresses(AddressSet::union(
                sets.iter().chain(pod_peers.iter().map(|p| &**p)),
            ))
        };
        let mut names = Vec::new();
        let ranges = if rule.ports.is_empty() {
            None
        } else {
            let mut ranges = Vec::new();
            for p in &rule.ports {
                match &p.port {
                    None => ranges.push(PortRange {
                        proto: p.proto,
                        lo: 0,
                        hi: u16::MAX,
                    }),
                    Some(PortRef::Range(lo, hi)) => ranges.push(PortRange {
                        proto: p.proto,
                        lo: *lo,
                        hi: *hi,
                    }),
                    Some(PortRef::Name(n)) => names.push((n.clone(), p.proto)),
                }
            }
            Some(ranges)
        };
        let mut by_port: BTreeMap<(u8, u16), Vec<(Ipv4Addr, Ipv4Addr)>> = BTreeMap::new();
        if egress && !names.is_empty() {
            // Every pod among the peers: those a pod peer selected, and any pod whose address
            // an ipBlock (or "any peer") admits.
            let admits = |p: &PodInfo| peers.contains(p.ip);
            for (_, pod) in memo.all.iter().filter(|(_, p)| admits(p)) {
                for (name, proto) in &names {
                    for (_, pr, port) in pod
                        .named_ports
                        .iter()
                        .filter(|(n, pr, _)| n == name && pr == proto)
                    {
                        by_port
                            .entry((*pr, *port))
                            .or_default()
                            .push((pod.ip, pod.ip));
                    }
                }
            }
        }
        let peer_ports: Vec<PortPeers> = by_port
            .into_iter()
            .map(|((proto, port), ranges)| PortPeers {
                proto,
                port,
                peers: AddressSet::from_ranges(ranges),
            })
            .collect();
        Template {
            peers,
            ranges,
            names,
            peer_ports: peer_ports.into(),
        }
    }

    /// The rule for one selected pod: `local` resolves ingress named ports.
    fn rule(&self, policy: &Arc<str>, local: Option<&PodInfo>) -> PolicyRule {
        let ports = match &self.ranges {
            None => PortSet::Any,
            Some(r) => {
                let mut r = r.clone();
                if let Some(pod) = local {
                    for (name, proto) in &self.names {
                        r.extend(
                            pod.named_ports
                                .iter()
                                .filter(|(n, pr, _)| n == name && pr == proto)
                                .map(|(_, pr, port)| PortRange {
                                    proto: *pr,
                                    lo: *port,
                                    hi: *port,
                                }),
                        );
                    }
                }
                r.sort_unstable();
                r.dedup();
                PortSet::Ranges(r.into())
            }
        };
        PolicyRule {
            policy: policy.clone(),
            peers: self.peers.clone(),
            ports,
            peer_ports: self.peer_ports.clone(),
        }
    }
}
