//! NetworkPolicy, compiled per local pod: what the fast path asks on a flow's first packet.
//!
//! The control side evaluates every selector (pod, namespace, `ipBlock`) and resolves every
//! named port, so what reaches the dataplane is one [`PodPolicy`] per local pod: for each
//! direction, either `None` (no policy selects the pod in that direction: it is open) or a
//! [`RuleSet`], the rules of every policy that selects it in that direction (policies add up:
//! a packet is allowed when any rule allows it, and denied otherwise).
//!
//! A [`PolicyRule`] allows a packet when its peer is in the rule's [`PeerSet`] and its
//! protocol and port in the rule's [`PortSet`], or when its protocol and port are one of the
//! rule's `peer_ports` ([`PortPeers`]) and its peer among that port's peers: what an egress
//! rule's *named* port compiles into, since a name resolves per destination pod (`http` may be
//! 8080 on one pod and 80 on another): one entry per number it resolves to, holding the pods
//! where it does.
//! Ingress named ports resolve against the selected (local) pod itself, so they compile into
//! plain port ranges.
//!
//! What the tables do *not* say, and the fast path must: traffic between a pod and its own
//! node is always allowed (kubelet probes), and a pod always reaches itself (Calico and Cilium
//! both exempt both). Neither depends on any policy, so neither is compiled here: the node's
//! addresses are in [`super::NodeConfig`], the pod's in [`super::LocalPod`].
//!
//! Everything is immutable once built, `Send + Sync`, and shared by `Arc` (as
//! [`super::ServicePort`] is), so an unchanged pod's policy is reused across snapshots.
//! [`PodPolicy::evaluate`] allocates nothing: it borrows the policy names it returns.

use core::net::Ipv4Addr;
use std::sync::Arc;

/// Which way a packet crosses the local pod's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Toward the pod: the peer is the packet's source.
    Ingress,
    /// From the pod: the peer is the packet's destination.
    Egress,
}

/// A set of IPv4 addresses as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressSet {
    ranges: Arc<[(u32, u32)]>,
}

impl AddressSet {
    /// The set holding exactly the given inclusive ranges (any order, may overlap).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>) -> AddressSet {
        let mut v: Vec<(u32, u32)> = ranges
            .into_iter()
            .map(|(a, b)| (u32::from(a), u32::from(b)))
            .filter(|(a, b)| a <= b)
            .collect();
        v.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        AddressSet {
            ranges: merged.into(),
        }
    }

    /// The addresses of `cidr` (`address/prefix`, network already masked or not) less those of
    /// each of `except`: an `ipBlock`.
    pub fn from_block(network: Ipv4Addr, prefix: u8, except: &[(Ipv4Addr, u8)]) -> AddressSet {
        let (lo, hi) = cidr_range(network, prefix);
        let mut out = vec![(lo, hi)];
        for &(net, len) in except {
            let (xlo, xhi) = cidr_range(net, len);
            out = out
                .into_iter()
                .flat_map(|(a, b)| {
                    let mut keep = Vec::with_capacity(2);
                    if xhi < a || xlo > b {
                        keep.push((a, b));
                    } else {
                        if xlo > a {
                            keep.push((a, xlo - 1));
                        }
                        if xhi < b {
                            keep.push((xhi + 1, b));
                        }
                    }
                    keep
                })
                .collect();
        }
        AddressSet::from_ranges(
            out.into_iter()
                .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b))),
        )
    }

    /// The union of several sets.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a AddressSet>) -> AddressSet {
        AddressSet::from_ranges(sets.into_iter().flat_map(|s| s.ranges()))
    }

    /// Whether `ip` is in the set: a binary search, O(log ranges).
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        // The first range starting after `ip`; the one before it is the only candidate.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= ip);
        i > 0 && self.ranges[i - 1].1 >= ip
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        self.ranges
            .iter()
            .map(|&(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

fn cidr_range(network: Ipv4Addr, prefix: u8) -> (u32, u32) {
    let prefix = prefix.min(32);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let lo = u32::from(network) & mask;
    (lo, lo | !mask)
}

/// The peers a rule admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSet {
    /// Any address (the rule's `from`/`to` is empty or absent).
    Any,
    /// These addresses: selected pods' addresses and `ipBlock`s, merged.
    Addresses(AddressSet),
}

impl PeerSet {
    /// Whether `ip` is admitted.
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        match self {
            PeerSet::Any => true,
            PeerSet::Addresses(set) => set.contains(ip),
        }
    }
}

/// One protocol's port range, both ends included: `port` alone is `lo == hi`, `port` with
/// `endPort` a range, a protocol without a port `1..=65535`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// The first port.
    pub lo: u16,
    /// The last port.
    pub hi: u16,
}

/// The ports a rule admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSet {
    /// Any protocol and port (the rule's `ports` is empty or absent).
    Any,
    /// These ranges, sorted. Empty when every port of the rule was a name that resolved to
    /// nothing (the rule then admits only its `peer_ports`).
    Ranges(Box<[PortRange]>),
}

impl PortSet {
    /// Whether (`proto`, `port`) is admitted: a linear scan, the lists being a few entries.
    #[inline]
    pub fn contains(&self, proto: u8, port: u16) -> bool {
        match self {
            PortSet::Any => true,
            PortSet::Ranges(r) => r
                .iter()
                .any(|r| r.proto == proto && r.lo <= port && port <= r.hi),
        }
    }
}

/// One rule (an entry of a policy's `ingress` or `egress`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// The policy it came from, `namespace/name`.
    pub policy: Arc<str>,
    /// Peers admitted on [`PolicyRule::ports`].
    pub peers: PeerSet,
    /// Ports admitted for [`PolicyRule::peers`].
    pub ports: PortSet,
    /// Ports admitted for some peers only, sorted by protocol and port: named ports of an
    /// egress rule, resolved per destination pod among the rule's peers.
    pub peer_ports: Arc<[PortPeers]>,
}

/// One port an egress rule's named port resolves to, and the pods (among the rule's peers)
/// where it does. A name usually resolves to a few numbers across a cluster, so a rule holds
/// a few of these, each a merged [`AddressSet`] (pods of one node are one range or a few).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPeers {
    /// The protocol.
    pub proto: u8,
    /// The port.
    pub port: u16,
    /// The peers on which the name is this port.
    pub peers: AddressSet,
}

impl PolicyRule {
    /// Whether the rule admits a packet with `peer`, `proto`, `port`.
    #[inline]
    pub fn admits(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        (self.ports.contains(proto, port) && self.peers.contains(peer))
            || self
                .peer_ports
                .iter()
                .any(|p| p.proto == proto && p.port == port && p.peers.contains(peer))
    }
}

/// The rules of every policy selecting a pod in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// The rules, in policy-name order, then as each policy lists them.
    pub rules: Box<[PolicyRule]>,
    /// Every policy selecting the pod in this direction, sorted (some may have no rule: a
    /// default deny): what a denial names.
    pub policies: Box<[Arc<str>]>,
}

/// A pod's policy, both directions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPolicy {
    /// `None`: no policy selects the pod for ingress, and any peer may reach it.
    pub ingress: Option<RuleSet>,
    /// `None`: no policy selects the pod for egress, and it may reach any peer.
    pub egress: Option<RuleSet>,
}

/// What a pod's policy says of one packet in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyVerdict<'a> {
    /// No policy selects the pod in this direction.
    Open,
    /// Policies select the pod in this direction, but the packet is one they never apply to
    /// (a pod reaching itself, traffic with its own node: [`Snapshot::flow_policy`]).
    ///
    /// [`Snapshot::flow_policy`]: super::Snapshot::flow_policy
    Exempt,
    /// Allowed by a rule of this policy (`namespace/name`), the first that matched.
    Allowed(&'a str),
    /// Denied: these policies select the pod in this direction, and none allows the packet.
    Denied(&'a [Arc<str>]),
}

impl PolicyVerdict<'_> {
    /// Whether the packet may pass.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, PolicyVerdict::Denied(_))
    }
}

impl PodPolicy {
    /// Whether some policy selects the pod, either way: else it is open both ways and the
    /// fast path need not know it ([`super::LocalPod::policy`] stays `None`).
    pub fn is_selected(&self) -> bool {
        self.ingress.is_some() || self.egress.is_some()
    }

    /// What the policies selecting the pod in `direction` allow; `None` when none selects it.
    #[inline]
    pub fn rules(&self, direction: Direction) -> Option<&RuleSet> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }

    /// [`PodPolicy::evaluate`], or for a packet policies never apply to (`exempt`),
    /// [`PolicyVerdict::Exempt`] where some policy selects the pod in `direction`.
    #[inline]
    pub fn evaluate_unless(
        &self,
        exempt: bool,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> PolicyVerdict<'_> {
        match (exempt, self.rules(direction)) {
            (true, Some(_)) => PolicyVerdict::Exempt,
            (true, None) => PolicyVerdict::Open,
            (false, _) => self.evaluate(direction, peer, proto, port),
        }
    }

    /// The verdict on a packet between the pod and `peer` (its source for ingress, its
    /// destination for egress), with protocol `proto` and destination port `port` (the pod's
    /// own port for ingress, the peer's for egress; 0 for protocols without ports).
    ///
    /// Cost: rules are tried in order until one admits; each costs a port-list scan (a few
    /// entries), a binary search of its address ranges, and, for egress rules with named
    /// ports, a binary search of their per-peer entries. So O(rules × log ranges), no
    /// allocation; paid once per flow (the verdict goes into conntrack).
    pub fn evaluate(
        &self,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> PolicyVerdict<'_> {
        let Some(set) = self.rules(direction) else {
            return PolicyVerdict::Open;
        };
        match set.rules.iter().find(|r| r.admits(peer, proto, port)) {
            Some(rule) => PolicyVerdict::Allowed(&rule.policy),
            None => PolicyVerdict::Denied(&set.policies),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn address_sets_merge_and_search() {
        let set = AddressSet::from_ranges([
            (ip("10.0.0.5"), ip("10.0.0.9")),
            (ip("10.0.0.1"), ip("10.0.0.4")),
            (ip("10.0.1.0"), ip("10.0.1.0")),
            (ip("10.0.0.8"), ip("10.0.0.12")),
        ]);
        assert_eq!(
            set.ranges().collect::<Vec<_>>(),
            vec![
                (ip("10.0.0.1"), ip("10.0.0.12")),
                (ip("10.0.1.0"), ip("10.0.1.0"))
            ],
            "adjacent and overlapping ranges merge"
        );
        for (a, want) in [
            ("10.0.0.0", false),
            ("10.0.0.1", true),
            ("10.0.0.12", true),
            ("10.0.0.13", false),
            ("10.0.1.0", true),
            ("10.0.1.1", false),
            ("255.255.255.255", false),
        ] {
            assert_eq!(set.contains(ip(a)), want, "{a}");
        }
        assert!(!AddressSet::default().contains(ip("0.0.0.0")));
    }

    #[test]
    fn ip_blocks_carve_out_their_exceptions() {
        let block = AddressSet::from_block(
            ip("10.0.0.0"),
            16,
            &[
                (ip("10.0.1.0"), 24),
                (ip("10.0.0.0"), 24),
                (ip("10.0.1.128"), 25),
            ],
        );
        assert_eq!(
            block.ranges().collect::<Vec<_>>(),
            vec![(ip("10.0.2.0"), ip("10.0.255.255"))]
        );
        let all = AddressSet::from_block(ip("0.0.0.0"), 0, &[(ip("10.0.0.0"), 8)]);
        assert!(all.contains(ip("0.0.0.0")) && all.contains(ip("255.255.255.255")));
        assert!(!all.contains(ip("10.1.2.3")));
        let host = AddressSet::from_block(ip("192.0.2.7"), 32, &[]);
        assert_eq!(host.ranges().count(), 1);
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
    }

    #[test]
    fn verdicts_name_the_policy_or_the_default_deny() {
        let a: Arc<str> = "ns/a".into();
        let b: Arc<str> = "ns/b".into();
        let policy = PodPolicy {
            ingress: Some(RuleSet {
                rules: vec![PolicyRule {
                    policy: a.clone(),
                    peers: PeerSet::Addresses(AddressSet::from_block(ip("10.1.0.0"), 24, &[])),
                    ports: PortSet::Ranges(
                        vec![PortRange {
                            proto: 6,
                            lo: 80,
                            hi: 90,
                        }]
                        .into(),
                    ),
                    peer_ports: Arc::new([]),
                }]
                .into(),
                policies: vec![a.clone(), b.clone()].into(),
            }),
            egress: Some(RuleSet {
                rules: vec![PolicyRule {
                    policy: b.clone(),
                    peers: PeerSet::Addresses(AddressSet::default()),
                    ports: PortSet::Ranges(Box::new([])),
                    peer_ports: vec![
                        PortPeers {
                            proto: 6,
                            port: 80,
                            peers: AddressSet::from_block(ip("10.2.0.2"), 32, &[]),
                        },
                        PortPeers {
                            proto: 6,
                            port: 8080,
                            peers: AddressSet::from_block(ip("10.2.0.1"), 32, &[]),
                        },
                    ]
                    .into(),
                }]
                .into(),
                policies: vec![b.clone()].into(),
            }),
        };
        use Direction::*;
        assert_eq!(
            policy.evaluate(Ingress, ip("10.1.0.9"), 6, 85),
            PolicyVerdict::Allowed("ns/a")
        );
        assert_eq!(
            policy.evaluate(Ingress, ip("10.1.0.9"), 17, 85),
            PolicyVerdict::Denied(&[a.clone(), b.clone()])
        );
        assert!(!policy.evaluate(Ingress, ip("10.1.1.9"), 6, 85).is_allowed());
        assert_eq!(
            policy.evaluate(Egress, ip("10.2.0.1"), 6, 8080),
            PolicyVerdict::Allowed("ns/b")
        );
        assert!(!policy.evaluate(Egress, ip("10.2.0.1"), 6, 80).is_allowed());
        assert!(policy.evaluate(Egress, ip("10.2.0.2"), 6, 80).is_allowed());
        assert_eq!(
            PodPolicy::default().evaluate(Egress, ip("1.1.1.1"), 6, 1),
            PolicyVerdict::Open
        );
    }

    #[test]
    fn compiled_policy_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Arc<PodPolicy>>();
    }
}
