//! The CLI's plain tables for people, from the admin API's views.

use std::fmt::Write as _;

use crate::admin::views::{PodPolicyView, WorkerView};
use crate::admin::{CountersView, FlowsView, RouteTarget, RouteView, ServiceView, StatusView};

/// Columns padded to their widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `kxdp status`.
pub fn status(s: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  kxdp {}  up {:.0} s  {}",
        s.node,
        s.version,
        s.uptime_s,
        if s.ready { "ready" } else { "NOT READY" }
    );
    let _ = writeln!(
        out,
        "source {} ({}, {} errors)  snapshot generation {} ({} updates, latency p50 {:.2} ms, p99 {:.2} ms)",
        s.source,
        if s.synced { "synced" } else { "syncing" },
        s.source_errors,
        s.generation,
        s.updates,
        s.update_latency_ms.p50,
        s.update_latency_ms.p99
    );
    let _ = writeln!(
        out,
        "tables: {} service ports, {} local pods, {} remote nodes, neighbours {}/{} resolved, {} draining endpoints",
        s.services,
        s.local_pods,
        s.remote_nodes,
        s.neighbors.resolved,
        s.neighbors.needed,
        s.draining_endpoints
    );
    let _ = writeln!(
        out,
        "conntrack: {} of {} flows ({:.1}%)",
        s.conntrack.flows,
        s.conntrack.capacity,
        100.0 * s.conntrack.flows as f64 / s.conntrack.capacity.max(1) as f64
    );
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker.to_string(),
                where_it_runs(w),
                w.rx.to_string(),
                w.tx.to_string(),
                w.tx_ring_full.to_string(),
            ]
        })
        .collect();
    out += &table(&["WORKER", "CORE", "RX", "TX", "TX_RING_FULL"], &rows);
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.id.to_string(),
                i.role.clone(),
                i.xdp_mode.clone(),
                i.rx.to_string(),
                i.tx.to_string(),
            ]
        })
        .collect();
    out += &table(&["INTERFACE", "ID", "ROLE", "XDP", "RX", "TX"], &rows);
    if !s.problems.is_empty() {
        out.push_str("\nleft out of the tables:\n");
        for p in &s.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    if !s.interface_errors.is_empty() {
        out.push_str("\npod interfaces not served (trying again):\n");
        for e in &s.interface_errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

/// `kxdp services`: one row per backend, the service's columns on its first row.
pub fn services(list: &[ServiceView]) -> String {
    let mut rows = Vec::new();
    for s in list {
        let frontends: Vec<String> = s.frontends.iter().map(|f| f.to_string()).collect();
        let frontends = frontends.join(", ");
        let proto = s.proto.to_string();
        let policy = format!("{}/{}", s.policies.internal, s.policies.external);
        if s.backends.is_empty() {
            rows.push(vec![
                s.name.clone(),
                proto,
                frontends,
                policy,
                "(none: connections are refused)".into(),
                String::new(),
            ]);
            continue;
        }
        for (i, b) in s.backends.iter().enumerate() {
            let first = i == 0;
            let state = if b.local {
                format!("{} local", b.state)
            } else {
                b.state.to_string()
            };
            rows.push(vec![
                if first { s.name.clone() } else { String::new() },
                if first { proto.clone() } else { String::new() },
                if first {
                    frontends.clone()
                } else {
                    String::new()
                },
                if first { policy.clone() } else { String::new() },
                format!("{}:{}", b.ip, b.port),
                state,
            ]);
        }
    }
    table(
        &[
            "SERVICE PORT",
            "PROTO",
            "FRONTENDS",
            "POLICY INT/EXT",
            "BACKEND",
            "STATE",
        ],
        &rows,
    )
}

/// `kxdp conntrack`.
pub fn flows(v: &FlowsView) -> String {
    let rows: Vec<Vec<String>> = v
        .flows
        .iter()
        .map(|f| {
            vec![
                f.original.proto.to_string(),
                f.original.addresses(),
                f.reply.addresses(),
                f.state.clone(),
                format!("{:.1}", f.expires_in_ms as f64 / 1000.0),
            ]
        })
        .collect();
    let mut out = table(&["PROTO", "ORIGINAL", "REPLY", "STATE", "EXPIRES_S"], &rows);
    let _ = writeln!(
        out,
        "{} flows matched ({} listed); {} of {} in the table",
        v.matched,
        v.flows.len(),
        v.total,
        v.capacity
    );
    out
}

/// `kxdp routes`.
pub fn routes(list: &[RouteView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let (action, via, mac) = match &r.target {
                RouteTarget::LocalPods { pods, gateway } => (
                    format!("local pods ({pods})"),
                    format!("pod veths, gateway {gateway}"),
                    None,
                ),
                RouteTarget::RemoteNode {
                    node,
                    underlay_ip,
                    vtep_mac,
                    vni,
                    next_hop,
                } => (
                    format!("vxlan to {node} (vni {vni})"),
                    format!("uplink, {underlay_ip} vtep {vtep_mac}"),
                    next_hop.mac.clone(),
                ),
                RouteTarget::Services { ports } => (
                    format!("services ({ports} ports)"),
                    "DNAT to a backend".into(),
                    None,
                ),
                RouteTarget::Node => (
                    "this node (NodePorts; the rest to the kernel)".into(),
                    "host".into(),
                    None,
                ),
                RouteTarget::Underlay => ("underlay neighbours".into(), "uplink".into(), None),
                RouteTarget::Outside {
                    masquerade_to,
                    next_hop,
                } => (
                    format!("outside the cluster: masquerade pods to {masquerade_to}"),
                    format!("uplink, gateway {}", next_hop.ip),
                    next_hop.mac.clone(),
                ),
            };
            vec![
                r.destination.to_string(),
                action,
                via,
                mac.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["DESTINATION", "ACTION", "VIA", "NEXT HOP MAC"], &rows)
}

/// `kxdp counters`: what is not zero, then the I/O and batch sizes.
pub fn counters(c: &CountersView) -> String {
    let mut rows = Vec::new();
    for (kind, map) in [
        ("event", &c.events),
        ("drop", &c.drops),
        ("to_host", &c.passes),
        ("xdp", &c.xdp),
    ] {
        for (name, v) in map.iter().filter(|(_, v)| **v != 0) {
            rows.push(vec![kind.to_owned(), name.clone(), v.to_string()]);
        }
    }
    for (name, v) in &c.io {
        rows.push(vec!["io".into(), name.clone(), v.to_string()]);
    }
    let mut out = table(&["KIND", "COUNTER", "VALUE"], &rows);
    let sizes: Vec<String> = c
        .batch_sizes
        .iter()
        .map(|s| format!("{}: {}", s.label(), s.batches))
        .collect();
    let _ = writeln!(out, "batches by size: {}", sizes.join(", "));
    let zero_drops = c.drops.values().filter(|v| **v == 0).count();
    let _ = writeln!(
        out,
        "({zero_drops} drop reasons at zero not shown; --json has all)"
    );
    out
}

/// `kxdp policies`: per pod, each direction open or what its selecting policies allow.
pub fn policies(pods: &[PodPolicyView]) -> String {
    let mut out = String::new();
    for p in pods {
        out += &format!("{} {}\n", p.pod, p.ip);
        for (name, d) in [("ingress", &p.ingress), ("egress", &p.egress)] {
            let Some(d) = d else {
                out += &format!("  {name}: open (no policy selects it)\n");
                continue;
            };
            out += &format!("  {name}: selected by {}\n", d.policies.join(", "));
            if d.rules.is_empty() {
                out += "    denies everything\n";
            }
            let (peer_word, port_word) = match name {
                "ingress" => ("from", "to"),
                _ => ("to", "on"),
            };
            for r in &d.rules {
                let peers = match &r.peers {
                    None => "any peer".to_owned(),
                    Some(list) if list.is_empty() => "no address".to_owned(),
                    Some(list) => {
                        let more = r.peer_ranges.saturating_sub(list.len());
                        let mut text = list.join(", ");
                        if more > 0 {
                            text += &format!(" and {more} more ranges");
                        }
                        text
                    }
                };
                let mut ports = match &r.ports {
                    None => "any port".to_owned(),
                    Some(list) if list.is_empty() => "no numbered port".to_owned(),
                    Some(list) => list.join(", "),
                };
                if !r.named_ports.is_empty() {
                    let named: Vec<String> = r
                        .named_ports
                        .iter()
                        .map(|(port, n)| match n {
                            1 => format!("{port} (1 range)"),
                            n => format!("{port} ({n} ranges)"),
                        })
                        .collect();
                    ports += &format!(", and per destination pod {}", named.join(", "));
                }
                out += &format!(
                    "    {}: {peer_word} {peers} {port_word} {ports}\n",
                    r.policy
                );
            }
        }
    }
    if pods.is_empty() {
        out += "no pods on this node\n";
    }
    out
}

/// A worker's CORE column: the core it runs on, or the CPUs it may run on (`0-3`), and the
/// core it was pinned to where that differs.
fn where_it_runs(w: &WorkerView) -> String {
    let now = match (w.core, &w.cpus[..]) {
        (Some(core), _) => core.to_string(),
        (None, []) => "-".into(),
        (None, cpus) => crate::settings::cpu_list(cpus),
    };
    match w.pinned {
        Some(p) if w.core != Some(p) && !w.cpus.is_empty() => format!("{now} (pinned to {p})"),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{
        BackendState, BackendView, BatchSizeView, FlowView, NextHopView, PoliciesView,
    };
    use kxdp_control::json::{Flow, Frontend, FrontendKind, Policy, Proto};
    use std::net::Ipv4Addr;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long cell".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(t, "A          BB\nlong cell  x\ns          y\n");
    }

    #[test]
    fn a_worker_shows_where_it_runs_and_where_it_was_pinned() {
        let w = |core, cpus: &[usize], pinned| WorkerView {
            core,
            cpus: cpus.to_vec(),
            pinned,
            ..WorkerView::default()
        };
        assert_eq!(where_it_runs(&w(Some(3), &[3], Some(3))), "3");
        assert_eq!(where_it_runs(&w(None, &[0, 1, 2, 3, 6], None)), "0-3,6");
        // A cpuset change moved it off the core it was pinned to.
        assert_eq!(
            where_it_runs(&w(None, &[0, 1, 2], Some(3))),
            "0-2 (pinned to 3)"
        );
        assert_eq!(where_it_runs(&w(Some(0), &[0], Some(3))), "0 (pinned to 3)");
        // Not read (an older agent's status): what it was pinned to, if anything.
        assert_eq!(where_it_runs(&w(Some(3), &[], None)), "3");
        assert_eq!(where_it_runs(&w(None, &[], None)), "-");
    }

    #[test]
    fn services_list_every_backend_and_say_when_there_is_none() {
        let svc = |name: &str, backends: Vec<BackendView>| ServiceView {
            name: name.into(),
            proto: Proto::Tcp,
            frontends: vec![
                Frontend {
                    kind: FrontendKind::ClusterIp,
                    ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
                    port: 80,
                },
                Frontend {
                    kind: FrontendKind::NodePort,
                    ip: None,
                    port: 30080,
                },
            ],
            policies: PoliciesView {
                internal: Policy::Cluster,
                external: Policy::Local,
            },
            client_ip_affinity: false,
            usable: backends.len(),
            backends,
        };
        let b = |ip: [u8; 4], local| BackendView {
            ip: ip.into(),
            port: 8080,
            state: BackendState::Ready,
            local,
        };
        let text = services(&[
            svc(
                "default/web:http",
                vec![b([10, 244, 1, 10], true), b([10, 244, 2, 10], false)],
            ),
            svc("default/empty:http", vec![]),
        ]);
        assert_eq!(
            text,
            "SERVICE PORT        PROTO  FRONTENDS                                  POLICY INT/EXT  BACKEND                          STATE
default/web:http    tcp    ClusterIP 10.96.0.10:80, NodePort *:30080  Cluster/Local   10.244.1.10:8080                 ready local
                                                                                      10.244.2.10:8080                 ready
default/empty:http  tcp    ClusterIP 10.96.0.10:80, NodePort *:30080  Cluster/Local   (none: connections are refused)
"
        );
    }

    /// The tables print what they printed when the views were text: the same cells from
    /// typed fields.
    #[test]
    fn routes_flows_and_batches_print_as_before() {
        let hop = |ip: [u8; 4], mac: Option<&str>| NextHopView {
            ip: ip.into(),
            mac: mac.map(str::to_owned),
        };
        let routes_view = [
            RouteView {
                destination: "10.244.1.0/24".parse().unwrap(),
                target: RouteTarget::LocalPods {
                    pods: 2,
                    gateway: [10, 244, 1, 1].into(),
                },
            },
            RouteView {
                destination: "10.244.2.0/24".parse().unwrap(),
                target: RouteTarget::RemoteNode {
                    node: "node-b".into(),
                    underlay_ip: [198, 18, 0, 11].into(),
                    vtep_mac: "02:6b:78:00:00:03".into(),
                    vni: 1,
                    next_hop: hop([198, 18, 0, 11], Some("02:6b:78:00:00:10")),
                },
            },
            RouteView {
                destination: "10.96.0.0/12".parse().unwrap(),
                target: RouteTarget::Services { ports: 4 },
            },
            RouteView {
                destination: "198.18.0.10/32".parse().unwrap(),
                target: RouteTarget::Node,
            },
            RouteView {
                destination: "198.18.0.0/24".parse().unwrap(),
                target: RouteTarget::Underlay,
            },
            RouteView {
                destination: "0.0.0.0/0".parse().unwrap(),
                target: RouteTarget::Outside {
                    masquerade_to: [198, 18, 0, 10].into(),
                    next_hop: hop([198, 18, 0, 1], None),
                },
            },
        ];
        assert_eq!(
            routes(&routes_view),
            "DESTINATION     ACTION                                               VIA                                         NEXT HOP MAC
10.244.1.0/24   local pods (2)                                       pod veths, gateway 10.244.1.1               -
10.244.2.0/24   vxlan to node-b (vni 1)                              uplink, 198.18.0.11 vtep 02:6b:78:00:00:03  02:6b:78:00:00:10
10.96.0.0/12    services (4 ports)                                   DNAT to a backend                           -
198.18.0.10/32  this node (NodePorts; the rest to the kernel)        host                                        -
198.18.0.0/24   underlay neighbours                                  uplink                                      -
0.0.0.0/0       outside the cluster: masquerade pods to 198.18.0.10  uplink, gateway 198.18.0.1                  -
"
        );
        let key = |s: [u8; 4], sp, d: [u8; 4], dp| {
            Flow::from(&kxdp_dataplane::flow::FlowKey::new(
                6,
                s.into(),
                sp,
                d.into(),
                dp,
            ))
        };
        let flows_view = FlowsView {
            matched: 3,
            total: 5,
            capacity: 1024,
            flows: vec![FlowView {
                original: key([10, 244, 1, 11], 40000, [10, 96, 0, 10], 80),
                reply: key([10, 244, 2, 10], 8080, [10, 244, 1, 11], 40000),
                state: "tcp_established".into(),
                expires_in_ms: 86_399_500,
            }],
        };
        assert_eq!(
            flows(&flows_view),
            "PROTO  ORIGINAL                            REPLY                                  STATE            EXPIRES_S
tcp    10.244.1.11:40000 -> 10.96.0.10:80  10.244.2.10:8080 -> 10.244.1.11:40000  tcp_established  86399.5
3 flows matched (1 listed); 5 of 1024 in the table
"
        );
        let mut c = CountersView::default();
        c.drops.insert("no_route".into(), 0);
        c.batch_sizes = kxdp_xdp::worker::BATCH_BUCKET_BOUNDS
            .iter()
            .enumerate()
            .map(|(b, &(min, max))| BatchSizeView {
                min,
                max,
                batches: b as u64,
            })
            .collect();
        assert!(
            counters(&c).contains(
                "batches by size: 1: 0, 2-3: 1, 4-7: 2, 8-15: 3, 16-31: 4, 32-63: 5, 64: 6\n"
            ),
            "{}",
            counters(&c)
        );
    }
}
