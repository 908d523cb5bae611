//! kxdp's perf harness: the pieces its programs share.
//!
//! [`kube_proxy`] writes the nftables rules kube-proxy's nftables mode would generate for a
//! snapshot's services, so the kernel baseline serves exactly what kxdp serves; [`in_namespace`]
//! and [`stats`] are what every measurement uses.

/// Run `f` on a thread inside network namespace `ns`.
pub fn in_namespace<T: Send>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            kxdp_xdp::enter_netns(ns).map_err(|e| format!("entering {ns}: {e}"))?;
            f()
        })
        .join()
        .map_err(|_| "a namespace thread panicked".to_owned())?
    })
}

pub mod stats {
    //! Medians and spreads of repeated measurements.

    /// The median of `v` (the upper one for an even count); 0 for none.
    pub fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// The smallest and largest of `v`.
    pub fn range(v: &[f64]) -> (f64, f64) {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }
}

pub mod kube_proxy {
    //! kube-proxy's nftables mode, as rules for `nft -f`: the same table, chains, maps and
    //! verdicts its proxier writes (`pkg/proxy/nftables/proxier.go`, Kubernetes 1.31+), for
    //! the service ports of a kxdp snapshot. Differences that do not change the per-packet work
    //! are kept small: chain names are `service-<n>`, `external-<n>` and `endpoint-<n>-<m>`
    //! rather than hashes with the service's name, and there is no firewall chain
    //! (`loadBalancerSourceRanges` is not used here).
    //!
    //! Per packet the kernel then does what a kube-proxy node does: in `nat-prerouting`, one
    //! concatenated-key map lookup (`service-ips`, or `service-nodeports` for a local address),
    //! a jump to the service chain, `numgen random` over the endpoints, a DNAT in the endpoint
    //! chain, with conntrack keeping the translation; masquerade in `nat-postrouting` for what
    //! was marked; and in the filter chains, the reject for services without endpoints and the
    //! drop for unknown ClusterIP ports.

    use std::fmt::Write as _;

    use kxdp_dataplane::tables::{FrontendKind, TrafficPolicy};
    use kxdp_dataplane::Snapshot;

    fn proto(p: u8) -> &'static str {
        if p == 17 {
            "udp"
        } else {
            "tcp"
        }
    }

    /// The ruleset for `snap`'s service ports (table `ip kube-proxy`, replaced if present).
    pub fn ruleset(snap: &Snapshot) -> String {
        let cluster_cidr = snap.node.cluster_cidr;
        let service_cidr = snap.node.service_cidr;
        let mut service_ips = Vec::new();
        let mut node_ports = Vec::new();
        let mut no_endpoints = Vec::new();
        let mut cluster_ips = Vec::new();
        let mut chains = String::new();
        for (n, port) in snap.services.ports().iter().enumerate() {
            let spec = port.spec();
            let p = proto(spec.proto);
            let ready: Vec<_> = spec.backends.iter().filter(|b| b.ready).collect();
            for f in &spec.frontends {
                if let (FrontendKind::ClusterIp, Some(ip)) = (f.kind, f.ip) {
                    cluster_ips.push(ip.to_string());
                }
            }
            if ready.is_empty() {
                for f in &spec.frontends {
                    if let Some(ip) = f.ip {
                        no_endpoints.push(format!("{ip} . {p} . {} : goto reject-chain", f.port));
                    }
                }
                continue;
            }
            let endpoints: Vec<String> = (0..ready.len())
                .map(|m| format!("endpoint-{n}-{m}"))
                .collect();
            let vmap: Vec<String> = endpoints
                .iter()
                .enumerate()
                .map(|(m, e)| format!("{m} : goto {e}"))
                .collect();
            let cluster_ip = spec
                .frontends
                .iter()
                .find(|f| f.kind == FrontendKind::ClusterIp)
                .and_then(|f| f.ip.map(|ip| (ip, f.port)));
            let _ = writeln!(chains, "\tchain service-{n} {{");
            if let Some((ip, port)) = cluster_ip {
                let _ = writeln!(
                    chains,
                    "\t\tip daddr {ip} {p} dport {port} ip saddr != {cluster_cidr} jump mark-for-masquerade"
                );
            }
            let _ = writeln!(
                chains,
                "\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
                ready.len(),
                vmap.join(", ")
            );
            // External traffic: masqueraded to any endpoint (Cluster), or kept to local
            // endpoints with the client's address (Local).
            let local: Vec<usize> = (0..ready.len()).filter(|m| ready[*m].local).collect();
            let _ = writeln!(chains, "\tchain external-{n} {{");
            match spec.external_policy {
                TrafficPolicy::Cluster => {
                    let _ = writeln!(
                        chains,
                        "\t\tjump mark-for-masquerade\n\t\tgoto service-{n}\n\t}}"
                    );
                }
                TrafficPolicy::Local if local.is_empty() => {
                    let _ = writeln!(chains, "\t\tdrop\n\t}}");
                }
                TrafficPolicy::Local => {
                    let vmap: Vec<String> = local
                        .iter()
                        .enumerate()
                        .map(|(i, m)| format!("{i} : goto endpoint-{n}-{m}"))
                        .collect();
                    let _ = writeln!(
                        chains,
                        "\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
                        local.len(),
                        vmap.join(", ")
                    );
                }
            }
            for (m, b) in ready.iter().enumerate() {
                let _ = writeln!(
                    chains,
                    "\tchain endpoint-{n}-{m} {{\n\t\tip saddr {} jump mark-for-masquerade\n\t\tmeta l4proto {p} dnat to {}:{}\n\t}}",
                    b.ip, b.ip, b.port
                );
            }
            for f in &spec.frontends {
                match (f.kind, f.ip) {
                    (FrontendKind::NodePort, _) => {
                        node_ports.push(format!("{p} . {} : goto external-{n}", f.port));
                    }
                    (FrontendKind::ClusterIp, Some(ip)) => {
                        service_ips.push(format!("{ip} . {p} . {} : goto service-{n}", f.port));
                    }
                    (_, Some(ip)) => {
                        service_ips.push(format!("{ip} . {p} . {} : goto external-{n}", f.port));
                    }
                    (_, None) => {}
                }
            }
        }
        let elements = |v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {} }};", v.join(", "))
            }
        };
        cluster_ips.sort();
        cluster_ips.dedup();
        format!(
            "table ip kube-proxy {{}}\n\
             delete table ip kube-proxy\n\
             table ip kube-proxy {{\n\
             \tcomment \"rules for kube-proxy\"\n\
             \tset cluster-ips {{ type ipv4_addr;{cips} }}\n\
             \tmap service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict;{sips} }}\n\
             \tmap service-nodeports {{ type inet_proto . inet_service : verdict;{nps} }}\n\
             \tmap no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict;{noep} }}\n\
             \tchain filter-input {{ type filter hook input priority -110; policy accept;\n\
             \t\tct state new jump service-endpoints-check\n\t}}\n\
             \tchain filter-forward {{ type filter hook forward priority -110; policy accept;\n\
             \t\tct state new jump service-endpoints-check\n\
             \t\tct state new jump cluster-ips-check\n\t}}\n\
             \tchain filter-output {{ type filter hook output priority -110; policy accept;\n\
             \t\tct state new jump service-endpoints-check\n\
             \t\tct state new jump cluster-ips-check\n\t}}\n\
             \tchain service-endpoints-check {{\n\
             \t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}}\n\
             \tchain cluster-ips-check {{\n\
             \t\tip daddr @cluster-ips reject\n\
             \t\tip daddr {service_cidr} drop\n\t}}\n\
             \tchain reject-chain {{\n\t\treject\n\t}}\n\
             \tchain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
             \t\tjump services\n\t}}\n\
             \tchain nat-output {{ type nat hook output priority -100; policy accept;\n\
             \t\tjump services\n\t}}\n\
             \tchain nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             \t\tjump masquerading\n\t}}\n\
             \tchain masquerading {{\n\
             \t\tmeta mark & 0x00004000 == 0 return\n\
             \t\tmeta mark set meta mark ^ 0x00004000\n\
             \t\tmasquerade fully-random\n\t}}\n\
             \tchain mark-for-masquerade {{\n\
             \t\tmeta mark set meta mark | 0x00004000\n\t}}\n\
             \tchain services {{\n\
             \t\tip daddr . meta l4proto . th dport vmap @service-ips\n\
             \t\tfib daddr type local meta l4proto . th dport vmap @service-nodeports\n\t}}\n\
             {chains}}}\n",
            cips = elements(&cluster_ips),
            sips = elements(&service_ips),
            nps = elements(&node_ports),
            noep = elements(&no_endpoints),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use kxdp_dataplane::testkit::Topology;

        #[test]
        fn every_service_port_is_served_as_kube_proxy_serves_it() {
            let snap = Topology::default().snapshot();
            let rules = ruleset(&snap);
            // ClusterIPs through the service chain, NodePorts and load balancers through the
            // external one, a service without endpoints rejected.
            for wanted in [
                "10.96.0.53 . udp . 53 : goto service-",
                "tcp . 30080 : goto external-",
                "198.19.1.10 . tcp . 80 : goto external-",
                "10.96.0.99 . tcp . 80 : goto reject-chain",
                "meta l4proto udp dnat to 10.244.2.20:53",
                "ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "masquerade fully-random",
            ] {
                assert!(rules.contains(wanted), "{wanted:?} in\n{rules}");
            }
        }
    }
}
