//! NetworkPolicies and Namespaces as the model holds them: `networking.k8s.io/v1`
//! NetworkPolicy converted once, on arrival ([`policy_from`]), into [`PolicyInfo`], with every
//! default the API server applies made explicit (`policyTypes`, TCP, the policy's own
//! namespace for a bare `podSelector`), and Namespaces reduced to their labels
//! ([`namespace_from`]).
//!
//! A policy kxdp cannot use gets an [`ObjectError`] naming the field
//! (`NetworkPolicy ns/name: spec.ingress[0].from[1].ipBlock.cidr: ...`) and the model keeps
//! what it had for that key; other policies are unaffected. What is refused is what the API
//! server's validation refuses (unknown operators and protocols, `endPort` with a named or
//! larger port, an `except` outside its `cidr`), so a policy a real cluster accepted converts.
//!
//! IPv6 `ipBlock`s are another family's: they convert to [`Peer::OtherFamily`], which admits
//! no IPv4 address (a rule whose only peer is IPv6 admits nothing here, not everything).
//! A `cidr` with bits set beyond its prefix is taken as its network, as the API server (which
//! parses it with Go's `net.ParseCIDR`) and Calico take it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::model::{key, ObjectError};

fn err(object: &str, field: impl Into<String>, problem: impl Into<String>) -> ObjectError {
    ObjectError {
        object: object.to_owned(),
        field: field.into(),
        problem: problem.into(),
    }
}

/// The label the API server sets on every Namespace (since Kubernetes 1.21), its name: what a
/// `namespaceSelector` picks one namespace by.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What kxdp reads from a Namespace: its labels (`namespaceSelector` selects by them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// `metadata.labels`, with [`NAMESPACE_NAME_LABEL`] set to the name.
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    /// A namespace known only by name (a manifest's pods name it, no Namespace object is
    /// given): labelled as the API server would create it.
    pub fn implicit(name: &str) -> NamespaceInfo {
        NamespaceInfo {
            labels: BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())]),
        }
    }
}

/// A Namespace as kxdp sees it. [`NAMESPACE_NAME_LABEL`] is set to the name whatever the
/// object says, as the API server enforces it (a manifest may omit it).
pub fn namespace_from(ns: &Namespace) -> NamespaceInfo {
    let mut labels = ns.labels().clone();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), ns.name_any());
    NamespaceInfo { labels }
}

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `In`: the label is set to one of the values.
    In(String, Vec<String>),
    /// `NotIn`: the label is unset or set to none of the values.
    NotIn(String, Vec<String>),
    /// `Exists`: the label is set.
    Exists(String),
    /// `DoesNotExist`: the label is unset.
    DoesNotExist(String),
}

/// A label selector: every `matchLabels` pair and every requirement must hold. The empty
/// selector selects everything.
///
/// Held in a canonical form (pairs and requirements sorted, values sorted and deduplicated), so
/// two selectors that select the same way compare equal: the compiler memoises by selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    match_labels: Vec<(String, String)>,
    requirements: Vec<RequirementKey>,
}

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A requirement in sortable form: key, operator, sorted values.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RequirementKey(String, Operator, Vec<String>);

impl Selector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self
                .requirements
                .iter()
                .all(|RequirementKey(k, op, values)| {
                    let value = labels.get(k);
                    match op {
                        Operator::In => value.is_some_and(|v| values.binary_search(v).is_ok()),
                        Operator::NotIn => value.is_none_or(|v| values.binary_search(v).is_err()),
                        Operator::Exists => value.is_some(),
                        Operator::DoesNotExist => value.is_none(),
                    }
                })
    }

    /// Whether the selector is empty (selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.requirements.is_empty()
    }

    /// A selector from its parts.
    pub fn new(
        match_labels: impl IntoIterator<Item = (String, String)>,
        requirements: impl IntoIterator<Item = Requirement>,
    ) -> Selector {
        let mut match_labels: Vec<_> = match_labels.into_iter().collect();
        match_labels.sort();
        let mut requirements: Vec<RequirementKey> = requirements
            .into_iter()
            .map(|r| {
                let (k, op, mut v) = match r {
                    Requirement::In(k, v) => (k, Operator::In, v),
                    Requirement::NotIn(k, v) => (k, Operator::NotIn, v),
                    Requirement::Exists(k) => (k, Operator::Exists, Vec::new()),
                    Requirement::DoesNotExist(k) => (k, Operator::DoesNotExist, Vec::new()),
                };
                v.sort();
                v.dedup();
                RequirementKey(k, op, v)
            })
            .collect();
        requirements.sort();
        Selector {
            match_labels,
            requirements,
        }
    }
}

fn selector(object: &str, field: &str, s: &LabelSelector) -> Result<Selector, ObjectError> {
    let mut requirements = Vec::new();
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let field = format!("{field}.matchExpressions[{i}]");
        let values = e.values.clone().unwrap_or_default();
        let r = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(err(
                    object,
                    format!("{field}.values"),
                    format!("must be non-empty for operator {}", e.operator),
                ))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(err(
                    object,
                    format!("{field}.values"),
                    format!("must be empty for operator {}", e.operator),
                ))
            }
            "In" => Requirement::In(e.key.clone(), values),
            "NotIn" => Requirement::NotIn(e.key.clone(), values),
            "Exists" => Requirement::Exists(e.key.clone()),
            "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
            other => {
                return Err(err(
                    object,
                    format!("{field}.operator"),
                    format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"),
                ))
            }
        };
        requirements.push(r);
    }
    Ok(Selector::new(
        s.match_labels.clone().unwrap_or_default(),
        requirements,
    ))
}

/// An IPv4 CIDR as (network, prefix length).
pub type Cidr = (Ipv4Addr, u8);

/// One `from`/`to` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Pods matching `pods` in the namespaces matching `namespaces`; `namespaces: None` is
    /// the policy's own namespace (a `podSelector` alone), `pods` empty every pod there (a
    /// `namespaceSelector` alone).
    Pods {
        /// `namespaceSelector`, or `None` for the policy's namespace.
        namespaces: Option<Selector>,
        /// `podSelector` (empty when absent).
        pods: Selector,
    },
    /// `ipBlock`: `cidr` less each of `except` (IPv4; IPv6 exceptions dropped).
    Block {
        /// `ipBlock.cidr`, masked to its network.
        cidr: Cidr,
        /// `ipBlock.except`.
        except: Vec<Cidr>,
    },
    /// An IPv6 `ipBlock`: admits no IPv4 address.
    OtherFamily,
}

/// A port of a rule: protocol, and the port (or range, or name); `port: None` is every port of
/// the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyPort {
    /// IP protocol number: 6 TCP (the default), 17 UDP, 132 SCTP.
    pub proto: u8,
    /// `port`, with `endPort`, or a name.
    pub port: Option<PortRef>,
}

/// A rule's port by number (with `endPort`: a range) or by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// `port..=endPort` (`endPort` unset: `port..=port`).
    Range(u16, u16),
    /// A container port's name.
    Name(String),
}

/// One `ingress` or `egress` rule. Empty `peers` admit every peer, empty `ports` every port:
/// the API says a missing or empty `from`/`to`/`ports` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `from` or `to`.
    pub peers: Vec<Peer>,
    /// `ports`.
    pub ports: Vec<PolicyPort>,
}

/// What kxdp reads from a NetworkPolicy, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.podSelector`: the pods of its namespace it applies to.
    pub pod_selector: Selector,
    /// `None` when Ingress is not among the policy types; else the rules (empty: deny all).
    pub ingress: Option<Vec<Rule>>,
    /// `None` when Egress is not among the policy types; else the rules (empty: deny all).
    pub egress: Option<Vec<Rule>>,
}

fn cidr(object: &str, field: &str, text: &str) -> Result<Option<Cidr>, ObjectError> {
    if text.contains(':') {
        return Ok(None);
    }
    let net: ipnet::Ipv4Net = text.parse().map_err(|_| {
        err(
            object,
            field,
            format!("{text:?} is not a CIDR (address/length, as 10.0.0.0/8)"),
        )
    })?;
    Ok(Some((net.network(), net.prefix_len())))
}

fn peer(object: &str, field: &str, p: &NetworkPolicyPeer) -> Result<Peer, ObjectError> {
    if let Some(block) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(err(
                object,
                field,
                "ipBlock may not be combined with podSelector or namespaceSelector",
            ));
        }
        let field = format!("{field}.ipBlock");
        let Some(c) = cidr(object, &format!("{field}.cidr"), &block.cidr)? else {
            return Ok(Peer::OtherFamily);
        };
        let outer = ipnet::Ipv4Net::new(c.0, c.1).expect("a parsed prefix");
        let mut except = Vec::new();
        for (i, x) in block.except.iter().flatten().enumerate() {
            let xf = format!("{field}.except[{i}]");
            if x.contains(':') {
                continue;
            }
            let Some(e) = cidr(object, &xf, x)? else {
                continue;
            };
            let inner = ipnet::Ipv4Net::new(e.0, e.1).expect("a parsed prefix");
            if !outer.contains(&inner) || inner.prefix_len() <= outer.prefix_len() {
                return Err(err(
                    object,
                    xf,
                    format!(
                        "{x:?} must be strictly within ipBlock.cidr {:?}",
                        block.cidr
                    ),
                ));
            }
            except.push(e);
        }
        return Ok(Peer::Block { cidr: c, except });
    }
    let namespaces = p
        .namespace_selector
        .as_ref()
        .map(|s| selector(object, &format!("{field}.namespaceSelector"), s))
        .transpose()?;
    let pods = p
        .pod_selector
        .as_ref()
        .map(|s| selector(object, &format!("{field}.podSelector"), s))
        .transpose()?;
    if namespaces.is_none() && pods.is_none() {
        return Err(err(
            object,
            field,
            "must set one of podSelector, namespaceSelector or ipBlock",
        ));
    }
    Ok(Peer::Pods {
        namespaces,
        pods: pods.unwrap_or_default(),
    })
}

fn policy_port(
    object: &str,
    field: &str,
    p: &NetworkPolicyPort,
) -> Result<PolicyPort, ObjectError> {
    let proto =
        crate::model::policy_proto(object, &format!("{field}.protocol"), p.protocol.as_deref())?;
    let number = |n: i32, f: &str| {
        u16::try_from(n).ok().filter(|n| *n != 0).ok_or_else(|| {
            err(
                object,
                format!("{field}.{f}"),
                format!("{n} is not a port number"),
            )
        })
    };
    let port = match (&p.port, p.end_port) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(err(
                object,
                format!("{field}.endPort"),
                "needs a numeric port",
            ))
        }
        (Some(IntOrString::Int(n)), end) => {
            let lo = number(*n, "port")?;
            let hi = match end {
                Some(e) => number(e, "endPort")?,
                None => lo,
            };
            if hi < lo {
                return Err(err(
                    object,
                    format!("{field}.endPort"),
                    format!("{hi} is below port {lo}"),
                ));
            }
            Some(PortRef::Range(lo, hi))
        }
        (Some(IntOrString::String(name)), None) => {
            if name.is_empty() {
                return Err(err(object, format!("{field}.port"), "an empty name"));
            }
            // The API server refuses a name without a letter ("80" in quotes): it would be
            // neither a number nor a name any container port could have.
            if !name.bytes().any(|b| b.is_ascii_alphabetic()) {
                return Err(err(
                    object,
                    format!("{field}.port"),
                    format!("{name:?} is not a port name (a port number is written unquoted)"),
                ));
            }
            Some(PortRef::Name(name.clone()))
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err(err(
                object,
                format!("{field}.endPort"),
                "may not be set with a named port",
            ))
        }
    };
    Ok(PolicyPort { proto, port })
}

/// One `ingress` or `egress` entry as the API object holds it: its peers (`from` or `to`) and
/// its ports.
type RawRule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

fn rules(
    object: &str,
    field: &str,
    peers_name: &str,
    list: &[RawRule<'_>],
) -> Result<Vec<Rule>, ObjectError> {
    let mut out = Vec::new();
    for (i, &(peers, ports)) in list.iter().enumerate() {
        let mut rule = Rule::default();
        for (j, p) in peers.into_iter().flatten().enumerate() {
            rule.peers
                .push(peer(object, &format!("{field}[{i}].{peers_name}[{j}]"), p)?);
        }
        for (j, p) in ports.into_iter().flatten().enumerate() {
            rule.ports
                .push(policy_port(object, &format!("{field}[{i}].ports[{j}]"), p)?);
        }
        out.push(rule);
    }
    Ok(out)
}

/// A NetworkPolicy as kxdp sees it.
pub fn policy_from(np: &NetworkPolicy) -> Result<PolicyInfo, ObjectError> {
    let namespace = np.namespace().unwrap_or_default();
    let object = format!("NetworkPolicy {}", key(&namespace, &np.name_any()));
    let Some(spec) = &np.spec else {
        return Err(err(&object, "spec", "missing"));
    };
    let pod_selector = match &spec.pod_selector {
        Some(s) => selector(&object, "spec.podSelector", s)?,
        None => Selector::default(),
    };
    let ingress_list: Vec<_> = spec
        .ingress
        .iter()
        .flatten()
        .map(|r| (r.from.as_ref(), r.ports.as_ref()))
        .collect();
    let egress_list: Vec<_> = spec
        .egress
        .iter()
        .flatten()
        .map(|r| (r.to.as_ref(), r.ports.as_ref()))
        .collect();
    let ingress = rules(&object, "spec.ingress", "from", &ingress_list)?;
    let egress = rules(&object, "spec.egress", "to", &egress_list)?;
    // As the API server defaults `policyTypes`: Ingress always, Egress when there are egress
    // rules (`egress: []` is no egress rule).
    let (mut has_ingress, mut has_egress) = (false, false);
    match spec.policy_types.as_deref() {
        None | Some([]) => {
            has_ingress = true;
            has_egress = !egress.is_empty();
        }
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => has_ingress = true,
                    "Egress" => has_egress = true,
                    other => {
                        return Err(err(
                            &object,
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {other:?} (Ingress, Egress)"),
                        ))
                    }
                }
            }
        }
    }
    Ok(PolicyInfo {
        namespace,
        pod_selector,
        ingress: has_ingress.then_some(ingress),
        egress: has_egress.then_some(egress),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn np(spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}))
        .unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_made_explicit() {
        let p = policy_from(&np(json!({"podSelector": {}}))).unwrap();
        assert_eq!(p.namespace, "ns");
        assert!(p.pod_selector.is_empty());
        assert_eq!(p.ingress, Some(vec![]), "Ingress is always implied");
        assert_eq!(p.egress, None, "no egress rules: no Egress");
        let p = policy_from(&np(json!({"podSelector": {},
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": "dns"}]}]})))
        .unwrap();
        assert_eq!(p.ingress, Some(vec![]));
        assert_eq!(
            p.egress,
            Some(vec![Rule {
                peers: vec![],
                ports: vec![
                    PolicyPort {
                        proto: 17,
                        port: Some(PortRef::Range(53, 53))
                    },
                    PolicyPort {
                        proto: 6,
                        port: Some(PortRef::Name("dns".into()))
                    },
                ],
            }])
        );
        let p = policy_from(&np(json!({"podSelector": {}, "policyTypes": ["Egress"],
            "ingress": [{}], "egress": []})))
        .unwrap();
        assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
    }

    #[test]
    fn peers_convert_and_ip_blocks_are_masked() {
        let p = policy_from(&np(json!({"podSelector": {}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"a": "1"}}},
            {"namespaceSelector": {}},
            {"ipBlock": {"cidr": "10.1.2.3/16", "except": ["10.1.9.0/24", "fd00::/64"]}},
            {"ipBlock": {"cidr": "fd00::/8"}}]}]})))
        .unwrap();
        let peers = &p.ingress.unwrap()[0].peers;
        assert_eq!(
            peers[0],
            Peer::Pods {
                namespaces: None,
                pods: Selector::new([("a".into(), "1".into())], [])
            }
        );
        assert_eq!(
            peers[1],
            Peer::Pods {
                namespaces: Some(Selector::default()),
                pods: Selector::default()
            }
        );
        assert_eq!(
            peers[2],
            Peer::Block {
                cidr: (ip("10.1.0.0"), 16),
                except: vec![(ip("10.1.9.0"), 24)]
            }
        );
        assert_eq!(peers[3], Peer::OtherFamily);
    }

    #[test]
    fn selectors_match_as_the_api_defines() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let s = Selector::new(
            [("app".into(), "web".into())],
            [
                Requirement::In("tier".into(), vec!["a".into(), "b".into()]),
                Requirement::NotIn("env".into(), vec!["prod".into()]),
                Requirement::Exists("team".into()),
                Requirement::DoesNotExist("legacy".into()),
            ],
        );
        let base = [("app", "web"), ("tier", "b"), ("team", "x")];
        assert!(s.matches(&labels(&base)));
        assert!(
            s.matches(&labels(&[
                ("app", "web"),
                ("tier", "a"),
                ("team", "x"),
                ("env", "dev")
            ])),
            "NotIn holds for another value"
        );
        for (why, l) in [
            (
                "matchLabels",
                vec![("app", "db"), ("tier", "b"), ("team", "x")],
            ),
            ("In", vec![("app", "web"), ("tier", "c"), ("team", "x")]),
            ("In, label unset", vec![("app", "web"), ("team", "x")]),
            (
                "NotIn",
                vec![
                    ("app", "web"),
                    ("tier", "b"),
                    ("team", "x"),
                    ("env", "prod"),
                ],
            ),
            ("Exists", vec![("app", "web"), ("tier", "b")]),
            (
                "DoesNotExist",
                vec![("app", "web"), ("tier", "b"), ("team", "x"), ("legacy", "")],
            ),
        ] {
            assert!(!s.matches(&labels(&l)), "{why}");
        }
        assert!(Selector::default().matches(&BTreeMap::new()));
    }

    #[test]
    fn namespaces_carry_their_name_label_as_the_api_server_sets_it() {
        let ns: Namespace = serde_json::from_value(json!({"apiVersion": "v1",
            "kind": "Namespace", "metadata": {"name": "prod", "labels": {"team": "a"}}}))
        .unwrap();
        let info = namespace_from(&ns);
        assert_eq!(info.labels[NAMESPACE_NAME_LABEL], "prod");
        assert_eq!(info.labels["team"], "a");
        assert_eq!(
            NamespaceInfo::implicit("dev").labels[NAMESPACE_NAME_LABEL],
            "dev"
        );
    }

    #[test]
    fn what_the_api_server_refuses_is_refused_naming_the_field() {
        let object = "NetworkPolicy ns/p";
        for (spec, field, problem) in [
            (
                json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}),
                "spec.podSelector.matchExpressions[0].operator",
                "unknown operator",
            ),
            (
                json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
                "spec.podSelector.matchExpressions[0].values",
                "must be non-empty",
            ),
            (
                json!({"podSelector": {"matchExpressions":
                    [{"key": "a", "operator": "Exists", "values": ["x"]}]}}),
                "spec.podSelector.matchExpressions[0].values",
                "must be empty",
            ),
            (
                json!({"podSelector": {}, "ingress": [{}, {"from": [{"ipBlock": {"cidr": "10.0.0/8"}}]}]}),
                "spec.ingress[1].from[0].ipBlock.cidr",
                "is not a CIDR",
            ),
            (
                json!({"podSelector": {}, "egress": [{"to": [{"ipBlock":
                    {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}),
                "spec.egress[0].to[0].ipBlock.except[0]",
                "strictly within",
            ),
            (
                json!({"podSelector": {}, "egress": [{"to": [{"ipBlock":
                    {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}]}]}),
                "spec.egress[0].to[0].ipBlock.except[0]",
                "strictly within",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"},
                    "podSelector": {}}]}]}),
                "spec.ingress[0].from[0]",
                "may not be combined",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"from": [{}]}]}),
                "spec.ingress[0].from[0]",
                "must set one of",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}),
                "spec.ingress[0].ports[0].protocol",
                "unknown protocol",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}),
                "spec.ingress[0].ports[0].port",
                "not a port number",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "below port",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "named port",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "needs a numeric port",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": "80"}]}]}),
                "spec.ingress[0].ports[0].port",
                "not a port name",
            ),
            (
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Both"]}),
                "spec.policyTypes[1]",
                "unknown policy type",
            ),
        ] {
            let e = policy_from(&np(spec.clone())).expect_err(&spec.to_string());
            assert_eq!(e.object, object);
            assert_eq!(e.field, field, "{spec}");
            assert!(e.problem.contains(problem), "{spec}: {}", e.problem);
        }
    }
}
