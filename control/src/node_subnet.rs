//! What the agent tells the node's CNI plugin about the node's pod network, as flannel tells
//! its plugin through `/run/flannel/subnet.env`: a file of `KEY=value` lines.
//!
//! ```text
//! KXDP_NETWORK=10.244.0.0/16
//! KXDP_SUBNET=10.244.1.0/24
//! KXDP_GATEWAY=10.244.1.1
//! KXDP_MTU=1450
//! ```
//!
//! `KXDP_SUBNET` is the node's podCIDR, the range the plugin hands addresses out of;
//! `KXDP_GATEWAY` the pods' gateway, which the agent answers for; `KXDP_NETWORK` the cluster's
//! pod CIDR; `KXDP_MTU` what the pods' interfaces are set to (the agent's `--pod-mtu`). This
//! module only renders and parses the text: the agent writes it (atomically) and `kxdp-cni`
//! reads it. Parsing ignores blank lines, `#` comments and keys it does not know, so a newer
//! agent may add keys an older plugin skips; each error names the key.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The default path of the file: where the agent writes it and the plugin reads it unless
/// told otherwise.
pub const DEFAULT_PATH: &str = "/run/kxdp/subnet.env";

/// The node's pod network, as the file says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSubnet {
    /// The cluster's pod CIDR.
    pub network: Ipv4Net,
    /// This node's pod CIDR.
    pub subnet: Ipv4Net,
    /// The pods' gateway, inside `subnet`.
    pub gateway: Ipv4Addr,
    /// The pods' MTU.
    pub mtu: u16,
}

/// Why the file's text is not a node subnet: the key and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct NodeSubnetError {
    /// The key at fault (`KXDP_SUBNET`, ...), or `line N` for a line without `=`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn error(key: &str, problem: impl Into<String>) -> NodeSubnetError {
    NodeSubnetError {
        key: key.into(),
        problem: problem.into(),
    }
}

impl NodeSubnet {
    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "KXDP_NETWORK={}\nKXDP_SUBNET={}\nKXDP_GATEWAY={}\nKXDP_MTU={}\n",
            self.network,
            self.subnet.trunc(),
            self.gateway,
            self.mtu
        )
    }

    /// Read the file's text; every key but `KXDP_NETWORK` is required, and the gateway must
    /// be an address of the subnet that is neither its network nor its broadcast address.
    pub fn parse(text: &str) -> Result<NodeSubnet, NodeSubnetError> {
        let (mut network, mut subnet, mut gateway, mut mtu) = (None, None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(error(&format!("line {}", n + 1), "not KEY=value"));
            };
            let value = value.trim();
            let cidr = |key: &str| {
                value
                    .parse::<Ipv4Net>()
                    .map(|c| c.trunc())
                    .map_err(|_| error(key, format!("{value:?} is not an IPv4 CIDR")))
            };
            match key.trim() {
                "KXDP_NETWORK" => network = Some(cidr("KXDP_NETWORK")?),
                "KXDP_SUBNET" => subnet = Some(cidr("KXDP_SUBNET")?),
                "KXDP_GATEWAY" => {
                    gateway = Some(value.parse::<Ipv4Addr>().map_err(|_| {
                        error("KXDP_GATEWAY", format!("{value:?} is not an IPv4 address"))
                    })?);
                }
                "KXDP_MTU" => {
                    mtu = Some(value.parse::<u16>().ok().filter(|m| *m >= 576).ok_or_else(
                        || error("KXDP_MTU", format!("{value:?} is not an MTU (576-65535)")),
                    )?);
                }
                _ => {}
            }
        }
        let subnet = subnet.ok_or_else(|| error("KXDP_SUBNET", "missing"))?;
        let gateway = gateway.ok_or_else(|| error("KXDP_GATEWAY", "missing"))?;
        let mtu = mtu.ok_or_else(|| error("KXDP_MTU", "missing"))?;
        if subnet.prefix_len() > 30 {
            return Err(error(
                "KXDP_SUBNET",
                format!("{subnet} has no room for a gateway and a pod (at most /30)"),
            ));
        }
        if !subnet.contains(&gateway)
            || gateway == subnet.network()
            || gateway == subnet.broadcast()
        {
            return Err(error(
                "KXDP_GATEWAY",
                format!("{gateway} is not a host address of KXDP_SUBNET {subnet}"),
            ));
        }
        Ok(NodeSubnet {
            network: network.unwrap_or(subnet),
            subnet,
            gateway,
            mtu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeSubnet {
        NodeSubnet {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.1.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            mtu: 1450,
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let text = sample().render();
        assert_eq!(
            text,
            "KXDP_NETWORK=10.244.0.0/16\nKXDP_SUBNET=10.244.1.0/24\nKXDP_GATEWAY=10.244.1.1\nKXDP_MTU=1450\n"
        );
        assert_eq!(NodeSubnet::parse(&text), Ok(sample()));
    }

    #[test]
    fn skips_comments_and_unknown_keys_and_defaults_the_network() {
        let text = "# written by kxdp\n\nKXDP_SUBNET=10.244.1.7/24\nKXDP_GATEWAY=10.244.1.1\n\
                    KXDP_MTU=1450\nKXDP_FUTURE=x\n";
        let parsed = NodeSubnet::parse(text).unwrap();
        assert_eq!(parsed.subnet, "10.244.1.0/24".parse().unwrap());
        assert_eq!(parsed.network, parsed.subnet);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("KXDP_GATEWAY=10.244.1.1\nKXDP_MTU=1450\n", "KXDP_SUBNET"),
            (
                "KXDP_SUBNET=10.244.1.0/24\nKXDP_GATEWAY=10.244.2.1\nKXDP_MTU=1450\n",
                "KXDP_GATEWAY",
            ),
            (
                "KXDP_SUBNET=10.244.1.0/24\nKXDP_GATEWAY=10.244.1.0\nKXDP_MTU=1450\n",
                "KXDP_GATEWAY",
            ),
            (
                "KXDP_SUBNET=10.244.1.0/24\nKXDP_GATEWAY=10.244.1.1\nKXDP_MTU=99\n",
                "KXDP_MTU",
            ),
            (
                "KXDP_SUBNET=10.244.1.0/31\nKXDP_GATEWAY=10.244.1.1\nKXDP_MTU=1450\n",
                "KXDP_SUBNET",
            ),
            ("KXDP_SUBNET=banana\n", "KXDP_SUBNET"),
            ("KXDP_SUBNET\n", "line 1"),
        ];
        for (text, key) in cases {
            let e = NodeSubnet::parse(text).unwrap_err();
            assert_eq!(e.key, key, "{text:?}: {e}");
        }
    }
}
