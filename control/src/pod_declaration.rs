//! What the CNI plugin writes on a pod's veth so the agent knows the pod before the API does,
//! as Cilium's plugin tells its agent about an endpoint before `ADD` returns: the node end's
//! alias (`IFLA_IFALIAS`, shown by `ip link`) declares the pod and its address.
//!
//! ```text
//! kxdp-pod default/web-0 10.244.1.7
//! ```
//!
//! `kxdp-pod`, one space, `namespace/name` (the namespace empty when the runtime named no pod,
//! as podman does: then the name is the container ID the veth is named for), one space, the
//! IPv4 address. This module only renders and parses the text: `kxdp-cni` sets it, the agent
//! reads it from its link notifications. An alias that does not start with `kxdp-pod ` is no
//! declaration (`Ok(None)`: the test bed's veths carry none, the host pair carries another);
//! one that does but is malformed is an error naming what is wrong.

use std::net::Ipv4Addr;

use crate::compile::pod_interface_name;

/// The alias's first word.
pub const PREFIX: &str = "kxdp-pod";

/// The longest alias the kernel keeps (`IFALIASZ` less its terminating zero).
pub const MAX_ALIAS: usize = 255;

/// A pod, as its veth declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDeclaration {
    /// The pod's namespace (empty for a runtime that names no pod).
    pub namespace: String,
    /// The pod's name (the container ID for a runtime that names no pod).
    pub name: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

/// Why an alias that starts with [`PREFIX`] is not a declaration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("alias {alias:?}: {problem} (expected \"{PREFIX} NAMESPACE/NAME IPV4\")")]
pub struct DeclarationError {
    /// The alias as read.
    pub alias: String,
    /// What is wrong with it.
    pub problem: String,
}

impl PodDeclaration {
    /// The pod's model key, `namespace/name`.
    pub fn key(&self) -> String {
        crate::model::key(&self.namespace, &self.name)
    }

    /// The name the pod's veth must have: [`pod_interface_name`] of the pod.
    pub fn interface_name(&self) -> String {
        pod_interface_name(&self.namespace, &self.name)
    }

    /// The alias text, or why it cannot be one (a name with a space or a `/`, too long for
    /// the kernel).
    pub fn to_alias(&self) -> Result<String, String> {
        if self.namespace.contains(['/', ' ']) || self.name.contains(['/', ' ']) {
            return Err(format!(
                "pod {:?}/{:?}: a name with '/' or a space cannot be declared",
                self.namespace, self.name
            ));
        }
        if self.name.is_empty() {
            return Err("a pod without a name cannot be declared".into());
        }
        let text = format!("{PREFIX} {}/{} {}", self.namespace, self.name, self.ip);
        if text.len() > MAX_ALIAS {
            return Err(format!(
                "pod {}: the declaration is {} bytes, the kernel keeps at most {MAX_ALIAS}",
                self.key(),
                text.len()
            ));
        }
        Ok(text)
    }

    /// Read `alias`: `Ok(None)` when it is no declaration at all.
    pub fn parse(alias: &str) -> Result<Option<PodDeclaration>, DeclarationError> {
        let Some(rest) = alias.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let Some(rest) = rest.strip_prefix(' ') else {
            // `kxdp-podX`: another word, not ours.
            return if rest.is_empty() {
                Err(bad(alias, "no pod"))
            } else {
                Ok(None)
            };
        };
        let mut words = rest.split(' ');
        let (Some(pod), Some(ip), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad(alias, "not three words"));
        };
        let (namespace, name) = pod
            .split_once('/')
            .ok_or_else(|| bad(alias, "the pod is not NAMESPACE/NAME"))?;
        if name.is_empty() || name.contains('/') {
            return Err(bad(alias, "the pod is not NAMESPACE/NAME"));
        }
        let ip = ip
            .parse()
            .map_err(|_| bad(alias, &format!("{ip:?} is not an IPv4 address")))?;
        Ok(Some(PodDeclaration {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ip,
        }))
    }
}

fn bad(alias: &str, problem: &str) -> DeclarationError {
    DeclarationError {
        alias: alias.to_owned(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, ip: [u8; 4]) -> PodDeclaration {
        PodDeclaration {
            namespace: namespace.into(),
            name: name.into(),
            ip: ip.into(),
        }
    }

    #[test]
    fn a_declaration_prints_and_parses_back() {
        for d in [
            pod("default", "web-0", [10, 244, 1, 7]),
            // podman: no pod, the container ID.
            pod("", "0123456789abcdef", [10, 88, 0, 2]),
        ] {
            let text = d.to_alias().unwrap();
            assert_eq!(PodDeclaration::parse(&text), Ok(Some(d.clone())));
        }
        assert_eq!(
            pod("default", "web-0", [10, 244, 1, 7]).to_alias().unwrap(),
            "kxdp-pod default/web-0 10.244.1.7"
        );
        let d = pod("kube-system", "coredns-1", [10, 244, 1, 3]);
        assert_eq!(d.key(), "kube-system/coredns-1");
        assert_eq!(
            d.interface_name(),
            pod_interface_name("kube-system", "coredns-1")
        );
    }

    #[test]
    fn other_aliases_are_no_declaration() {
        for alias in ["", "kxdp host interface", "kxdp-podman", "my veth"] {
            assert_eq!(PodDeclaration::parse(alias), Ok(None), "{alias:?}");
        }
    }

    #[test]
    fn a_malformed_declaration_says_what_is_wrong() {
        for (alias, problem) in [
            ("kxdp-pod", "no pod"),
            ("kxdp-pod default/web-0", "not three words"),
            ("kxdp-pod default/web-0 10.244.1.7 x", "not three words"),
            ("kxdp-pod  default/web-0 10.244.1.7", "not three words"),
            ("kxdp-pod web-0 10.244.1.7", "NAMESPACE/NAME"),
            ("kxdp-pod default/ 10.244.1.7", "NAMESPACE/NAME"),
            ("kxdp-pod a/b/c 10.244.1.7", "NAMESPACE/NAME"),
            ("kxdp-pod default/web-0 fd00::1", "not an IPv4 address"),
            ("kxdp-pod default/web-0 10.244.1", "not an IPv4 address"),
        ] {
            let e = PodDeclaration::parse(alias).unwrap_err();
            assert!(e.to_string().contains(problem), "{alias:?}: {e}");
            assert!(e.to_string().contains(alias), "{alias:?}: {e}");
        }
    }

    #[test]
    fn what_cannot_be_declared_is_refused_by_name() {
        let e = pod("default", "a b", [10, 0, 0, 1]).to_alias().unwrap_err();
        assert!(e.contains("'/' or a space"), "{e}");
        assert!(pod("default", "", [10, 0, 0, 1]).to_alias().is_err());
        let long = "x".repeat(253);
        let e = pod("default", &long, [10, 0, 0, 1]).to_alias().unwrap_err();
        assert!(e.contains("at most 255"), "{e}");
        // The longest that fits.
        let fits = "x".repeat(MAX_ALIAS - "kxdp-pod a/ 10.0.0.1".len());
        assert!(pod("a", &fits, [10, 0, 0, 1]).to_alias().is_ok());
    }
}
