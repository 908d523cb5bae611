//! The typed pieces of the JSON kxdp prints: `kxdp trace --json` and the admin API's views
//! (`kxdp status|services|conntrack|routes|counters --json`) build their objects from these, so
//! an address is always `{"ip": "10.96.0.10", "port": 80}`, a flow always
//! `{"proto": "tcp", "src": {..}, "dst": {..}}`, a frontend always
//! `{"kind": "ClusterIP", "ip": "10.96.0.10", "port": 80}`, wherever they appear.
//!
//! Each type's `Display` is the short text the plain tables and the trace's text print
//! (`10.96.0.10:80`, `tcp 10.244.1.11:40000 -> 10.96.0.10:80`, `ClusterIP 10.96.0.10:80`), so
//! people and tools read the same values.

use std::fmt;
use std::net::Ipv4Addr;

use kxdp_dataplane::flow::FlowKey;
use kxdp_dataplane::tables;
use serde::{Deserialize, Serialize};

/// An IP protocol: `"tcp"`, `"udp"`, `"icmp"`, or for any other its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// Any other, by number (the pipeline tracks and serves none).
    #[serde(untagged)]
    Other(u8),
}

impl Proto {
    /// The protocol with IP protocol number `n`.
    pub fn from_number(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 => Proto::Icmp,
            n => Proto::Other(n),
        }
    }

    /// The protocols the tools take by name (`--proto`, `?proto=`), in the order they list them.
    pub const NAMED: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

    /// Its IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Other(n) => n,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::Icmp => f.write_str("icmp"),
            Proto::Other(n) => write!(f, "{n}"),
        }
    }
}

/// A protocol name that is not `tcp`, `udp` or `icmp`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not tcp, udp or icmp")]
pub struct UnknownProto(pub String);

/// Parses the names only (`tcp`, `udp`, `icmp`): the pipeline tracks and serves no other
/// protocol, so a tool asked for one by number would match nothing.
impl std::str::FromStr for Proto {
    type Err = UnknownProto;

    fn from_str(s: &str) -> Result<Proto, UnknownProto> {
        Proto::NAMED
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| UnknownProto(s.to_owned()))
    }
}

/// `--proto tcp|udp|icmp` on a command line.
#[cfg(feature = "clap")]
impl clap::ValueEnum for Proto {
    fn value_variants<'a>() -> &'a [Proto] {
        &Proto::NAMED
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            Proto::Tcp => Some(clap::builder::PossibleValue::new("tcp")),
            Proto::Udp => Some(clap::builder::PossibleValue::new("udp")),
            Proto::Icmp => Some(clap::builder::PossibleValue::new("icmp")),
            Proto::Other(_) => None,
        }
    }
}

/// An address and port (for ICMP echo, the port is the identifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// The address.
    pub ip: Ipv4Addr,
    /// The port.
    pub port: u16,
}

impl Endpoint {
    /// `ip:port`.
    pub fn new(ip: Ipv4Addr, port: u16) -> Endpoint {
        Endpoint { ip, port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// One direction of a flow: protocol, source and destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    /// The protocol.
    pub proto: Proto,
    /// Where it comes from.
    pub src: Endpoint,
    /// Where it goes.
    pub dst: Endpoint,
}

impl Flow {
    /// `src -> dst`, without the protocol.
    pub fn addresses(&self) -> String {
        format!("{} -> {}", self.src, self.dst)
    }
}

impl From<&FlowKey> for Flow {
    fn from(k: &FlowKey) -> Flow {
        Flow {
            proto: Proto::from_number(k.proto),
            src: Endpoint::new(k.src_ip, k.src_port),
            dst: Endpoint::new(k.dst_ip, k.dst_port),
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.src, self.dst)
    }
}

/// An address translation: what an address and port were, and what they became.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    /// Before.
    pub from: Endpoint,
    /// After.
    pub to: Endpoint,
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// How a service port is reached, as Kubernetes names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FrontendKind {
    /// The cluster IP.
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// A port on every node address.
    NodePort,
    /// One of `spec.externalIPs`.
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    /// One of `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

impl From<tables::FrontendKind> for FrontendKind {
    fn from(k: tables::FrontendKind) -> FrontendKind {
        match k {
            tables::FrontendKind::ClusterIp => FrontendKind::ClusterIp,
            tables::FrontendKind::NodePort => FrontendKind::NodePort,
            tables::FrontendKind::ExternalIp => FrontendKind::ExternalIp,
            tables::FrontendKind::LoadBalancer => FrontendKind::LoadBalancer,
        }
    }
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        })
    }
}

/// One address a service port answers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontend {
    /// Its kind.
    pub kind: FrontendKind,
    /// The address; `null` for a NodePort, which answers on every node address.
    pub ip: Option<Ipv4Addr>,
    /// The port.
    pub port: u16,
}

impl From<&tables::Frontend> for Frontend {
    fn from(f: &tables::Frontend) -> Frontend {
        Frontend {
            kind: f.kind.into(),
            ip: f.ip,
            port: f.port,
        }
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{} {ip}:{}", self.kind, self.port),
            None => write!(f, "{} *:{}", self.kind, self.port),
        }
    }
}

/// `internalTrafficPolicy` or `externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// Any endpoint in the cluster.
    Cluster,
    /// Only endpoints on this node.
    Local,
}

impl From<tables::TrafficPolicy> for Policy {
    fn from(p: tables::TrafficPolicy) -> Policy {
        match p {
            tables::TrafficPolicy::Cluster => Policy::Cluster,
            tables::TrafficPolicy::Local => Policy::Local,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Cluster => "Cluster",
            Policy::Local => "Local",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_serialize_as_typed_fields_and_print_as_the_tables_do() {
        let flow = Flow::from(&FlowKey::new(
            6,
            Ipv4Addr::new(10, 244, 1, 11),
            40000,
            Ipv4Addr::new(10, 96, 0, 10),
            80,
        ));
        assert_eq!(
            serde_json::to_value(flow).unwrap(),
            json!({"proto": "tcp", "src": {"ip": "10.244.1.11", "port": 40000},
                   "dst": {"ip": "10.96.0.10", "port": 80}})
        );
        assert_eq!(flow.to_string(), "tcp 10.244.1.11:40000 -> 10.96.0.10:80");
        let np = Frontend {
            kind: FrontendKind::NodePort,
            ip: None,
            port: 30080,
        };
        assert_eq!(
            serde_json::to_value(np).unwrap(),
            json!({"kind": "NodePort", "ip": null, "port": 30080})
        );
        assert_eq!(np.to_string(), "NodePort *:30080");
        let cip = Frontend::from(&tables::Frontend {
            kind: tables::FrontendKind::ClusterIp,
            ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
            port: 80,
        });
        assert_eq!(serde_json::to_value(cip).unwrap()["kind"], "ClusterIP");
        assert_eq!(cip.to_string(), "ClusterIP 10.96.0.10:80");
        for p in [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Other(47)] {
            let text = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Proto>(&text).unwrap(), p, "{text}");
            assert_eq!(Proto::from_number(p.number()), p);
        }
        assert_eq!(serde_json::to_string(&Proto::Other(47)).unwrap(), "47");
    }

    #[test]
    fn proto_names_parse_back_and_others_are_named_in_the_error() {
        for p in Proto::NAMED {
            assert_eq!(p.to_string().parse::<Proto>(), Ok(p));
            // The name on a command line is the name in the JSON.
            assert_eq!(serde_json::to_value(p).unwrap(), p.to_string());
        }
        let err = "sctp".parse::<Proto>().unwrap_err();
        assert_eq!(err.to_string(), r#""sctp" is not tcp, udp or icmp"#);
        assert!(
            "47".parse::<Proto>().is_err(),
            "only names: no tool serves 47"
        );
        assert!("TCP".parse::<Proto>().is_err());
    }
}
