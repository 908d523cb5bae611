//! The CLI's plain tables for people, from the admin API's views.

use std::fmt::Write as _;

use crate::admin::{CountersView, FlowsView, RouteView, ServiceView, StatusView};

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
        s.update_latency_ms[0],
        s.update_latency_ms[1]
    );
    let _ = writeln!(
        out,
        "tables: {} service ports, {} local pods, {} remote nodes, neighbours {}/{} resolved, {} draining endpoints",
        s.services, s.local_pods, s.remote_nodes, s.neighbors[1], s.neighbors[0], s.draining_endpoints
    );
    let _ = writeln!(
        out,
        "conntrack: {} of {} flows ({:.1}%)",
        s.conntrack[0],
        s.conntrack[1],
        100.0 * s.conntrack[0] as f64 / s.conntrack[1].max(1) as f64
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
                w.core.map_or("-".into(), |c| c.to_string()),
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
    out
}

/// `kxdp services`: one row per backend, the service's columns on its first row.
pub fn services(list: &[ServiceView]) -> String {
    let mut rows = Vec::new();
    for s in list {
        let frontends = s.frontends.join(", ");
        let policy = format!("{}/{}", s.policies[0], s.policies[1]);
        if s.backends.is_empty() {
            rows.push(vec![
                s.name.clone(),
                s.proto.clone(),
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
                b.state.clone()
            };
            rows.push(vec![
                if first { s.name.clone() } else { String::new() },
                if first {
                    s.proto.clone()
                } else {
                    String::new()
                },
                if first {
                    frontends.clone()
                } else {
                    String::new()
                },
                if first { policy.clone() } else { String::new() },
                b.endpoint.clone(),
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
                f.proto.clone(),
                f.original.clone(),
                f.reply.clone(),
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
            vec![
                r.destination.clone(),
                r.action.clone(),
                r.via.clone(),
                r.next_hop_mac.clone().unwrap_or_else(|| "-".into()),
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
        .map(|(label, n)| format!("{label}: {n}"))
        .collect();
    let _ = writeln!(out, "batches by size: {}", sizes.join(", "));
    let zero_drops = c.drops.values().filter(|v| **v == 0).count();
    let _ = writeln!(
        out,
        "({zero_drops} drop reasons at zero not shown; --json has all)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::BackendView;

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
    fn services_list_every_backend_and_say_when_there_is_none() {
        let svc = |name: &str, backends: Vec<BackendView>| ServiceView {
            name: name.into(),
            proto: "tcp".into(),
            frontends: vec!["ClusterIP 10.96.0.10:80".into()],
            policies: ["Cluster".into(), "Cluster".into()],
            client_ip_affinity: false,
            usable: backends.len(),
            backends,
        };
        let b = |e: &str, local| BackendView {
            endpoint: e.into(),
            state: "ready".into(),
            local,
        };
        let text = services(&[
            svc(
                "default/web:http",
                vec![b("10.244.1.10:8080", true), b("10.244.2.10:8080", false)],
            ),
            svc("default/empty:http", vec![]),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("default/web:http") && lines[1].ends_with("ready local"));
        assert!(lines[2].trim_start().starts_with("10.244.2.10:8080"));
        assert!(lines[3].contains("(none: connections are refused)"));
    }
}
