//! `kxdp trace`: one synthetic packet through the real pipeline, against a snapshot, with what
//! each stage decided.
//!
//! The packet is built as it would arrive (from a local pod through its gateway, from outside
//! on the uplink, or from the node's kernel on the host interface) and run through
//! [`process_batch`] with an empty conntrack, so it is the first packet of its flow. The
//! report says: the service frontend it hit, if any, with the backends a new flow may be sent
//! to and the one this 5-tuple gets; the verdict (forward, drop with a reason, reject, hand to
//! the host, reply); the translations applied (DNAT to a backend, SNAT or masquerade); and
//! where it leaves (a local pod, a remote node over VXLAN, the uplink, the host).
//!
//! Fields of [`Trace`] (also the keys of `--json`):
//! - `entered`: where the packet came in;
//! - `packet`: its 5-tuple as built, `packet_out`: as it leaves (the inner packet for VXLAN);
//! - `service`: `name`, `frontend` (ClusterIp, NodePort, ExternalIp, LoadBalancer),
//!   `policy` (the traffic policy that applied), `backends` (every backend a new flow may get),
//!   `chosen` (the backend this 5-tuple gets);
//! - `verdict`: `forward`, `drop`, `reject`, `to_host` or `reply`; `reason`: the drop or pass
//!   reason's stable name;
//! - `dnat`, `snat`: `before -> after`, when the pipeline rewrote the destination or source;
//! - `exit`: where the packet leaves.

use std::net::Ipv4Addr;

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::flow::FlowKey;
use kxdp_dataplane::pipeline::inspect;
use kxdp_dataplane::tables::{FrontendKind, InterfaceRole, TrafficPolicy};
use kxdp_dataplane::wire::build::FrameSpec;
use kxdp_dataplane::wire::{tcp_flags, EthernetAddress};
use kxdp_dataplane::{process_batch, Counters, Frame, Instant, Packet, Snapshot, Verdict};

/// Where the traced packet enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// From the local pod that owns the source address.
    Pod,
    /// From outside, on the uplink.
    Uplink,
    /// From the node's own kernel, on the host interface.
    Host,
}

/// The packet to trace.
#[derive(Clone, Copy, Debug)]
pub struct TraceInput {
    /// Where it enters.
    pub entry: Entry,
    /// Source address and port.
    pub src: (Ipv4Addr, u16),
    /// Destination address and port.
    pub dst: (Ipv4Addr, u16),
    /// 6 (TCP, a SYN), 17 (UDP) or 1 (ICMP echo request; the ports are ignored).
    pub proto: u8,
}

/// Why a packet could not be traced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    /// `--from pod` with a source no local pod owns.
    #[error(
        "no pod on node {node} has address {ip}: a packet from a pod starts at its own address"
    )]
    NoSuchPod {
        /// The node.
        node: String,
        /// The source address.
        ip: Ipv4Addr,
    },
    /// A protocol the tracer does not build.
    #[error("protocol {0} is not traced (tcp, udp or icmp)")]
    Protocol(u8),
}

/// The service frontend a packet hit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceTrace {
    /// `namespace/name:port`.
    pub name: String,
    /// The kind of frontend.
    pub frontend: String,
    /// The traffic policy that applies to this packet.
    pub policy: String,
    /// Every backend a new flow may be sent to (`ip:port`).
    pub backends: Vec<String>,
    /// The backend this 5-tuple gets, if any.
    pub chosen: Option<String>,
}

/// What the pipeline did with the packet; see the module docs for the fields.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Trace {
    /// Where it came in.
    pub entered: String,
    /// Its 5-tuple as built.
    pub packet: String,
    /// The frontend it hit.
    pub service: Option<ServiceTrace>,
    /// forward, drop, reject, to_host or reply.
    pub verdict: String,
    /// The drop or pass reason.
    pub reason: Option<String>,
    /// Destination translation.
    pub dnat: Option<String>,
    /// Source translation (SNAT or masquerade).
    pub snat: Option<String>,
    /// Its 5-tuple as it leaves.
    pub packet_out: Option<String>,
    /// Where it leaves.
    pub exit: Option<String>,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "other",
    }
}

fn flow_text(k: &FlowKey) -> String {
    format!(
        "{} {}:{} -> {}:{}",
        proto_name(k.proto),
        k.src_ip,
        k.src_port,
        k.dst_ip,
        k.dst_port
    )
}

/// A MAC for a sender outside the node, when the snapshot knows none.
const OUTSIDE_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);

/// Trace `input` through the pipeline against `snap`.
pub fn trace(snap: &Snapshot, input: &TraceInput) -> Result<Trace, TraceError> {
    let node = &snap.node;
    let (src, dst) = (input.src.0, input.dst.0);
    let (spec, ingress, entered) = match input.entry {
        Entry::Pod => {
            let pod = snap.local_pod(src).ok_or_else(|| TraceError::NoSuchPod {
                node: node.name.clone(),
                ip: src,
            })?;
            (
                FrameSpec::new(pod.mac, node.gateway_mac, src, dst),
                pod.iface,
                format!("pod {}", pod.name),
            )
        }
        Entry::Uplink => {
            let mac = snap.next_hop_mac(src).unwrap_or(OUTSIDE_MAC);
            (
                FrameSpec::new(mac, node.uplink_mac, src, dst),
                node.uplink,
                "uplink".to_owned(),
            )
        }
        Entry::Host => (
            FrameSpec::new(node.host_mac, node.gateway_mac, src, dst),
            node.host,
            "host (the node's kernel)".to_owned(),
        ),
    };
    let frame = match input.proto {
        6 => spec.tcp(input.src.1, input.dst.1, tcp_flags::SYN, b""),
        17 => spec.udp(input.src.1, input.dst.1, b"kxdp trace"),
        1 => spec.icmp_echo(true, input.src.1, 1, b"kxdp trace"),
        p => return Err(TraceError::Protocol(p)),
    };
    let before = inspect(&frame).ok();
    let ct = Conntrack::new(ConntrackConfig {
        capacity: 16,
        ..ConntrackConfig::default()
    });
    // A UMEM-chunk-sized buffer with headroom, as the I/O layer gives the pipeline.
    const HEADROOM: usize = 256;
    let mut buf = vec![0u8; 2048];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
    let chunk = Frame::new(&mut buf, HEADROOM, frame.len()).expect("a built frame fits a chunk");
    let mut packets = [Packet::new(chunk, ingress)];
    process_batch(
        &mut packets,
        snap,
        &ct,
        &Counters::new(),
        Instant::from_nanos(1_000_000_000),
    );
    let verdict = packets[0].verdict;
    let out = packets[0].frame.data().to_vec();

    let mut trace = Trace {
        entered,
        packet: before.as_ref().map_or_else(String::new, flow_text),
        service: None,
        verdict: String::new(),
        reason: None,
        dnat: None,
        snat: None,
        packet_out: None,
        exit: None,
    };
    // The frontend, and what a new flow may get there.
    if let Some((port, kind)) = snap.services.lookup(dst, input.proto, input.dst.1) {
        let internal = input.entry != Entry::Uplink;
        let policy = match (kind.is_external(), internal) {
            (false, _) => port.spec().internal_policy,
            (true, true) => TrafficPolicy::Cluster,
            (true, false) => port.spec().external_policy,
        };
        let backends = port
            .spec()
            .backends
            .iter()
            .filter(|b| policy == TrafficPolicy::Cluster || b.local)
            .filter(|b| port.cluster_members().contains(&(b.ip, b.port)))
            .map(|b| format!("{}:{}", b.ip, b.port))
            .collect();
        let frontend = match kind {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        };
        trace.service = Some(ServiceTrace {
            name: port.name().to_owned(),
            frontend: frontend.into(),
            policy: format!("{policy:?}"),
            backends,
            chosen: None,
        });
    }
    // The packet as it leaves: the inner one if it was encapsulated.
    let vxlan = |f: &[u8]| -> Option<Vec<u8>> {
        let outer = inspect(f).ok()?;
        (outer.proto == 17 && outer.dst_port == node.vxlan_port)
            .then(|| f[14 + 20 + 8 + 8..].to_vec())
    };
    let mut exit_node = None;
    let leaving = match verdict {
        Verdict::Transmit(_) | Verdict::Reply | Verdict::ToHost(_) => match vxlan(&out) {
            Some(inner) => {
                exit_node = inspect(&out).ok().map(|k| k.dst_ip);
                inspect(&inner).ok()
            }
            None => inspect(&out).ok(),
        },
        Verdict::Drop(_) => None,
    };
    trace.packet_out = leaving.as_ref().map(flow_text);
    // A rejection is an ICMP destination unreachable sent back for a TCP or UDP packet (the
    // service has no endpoints, as kube-proxy rejects).
    let is_reject = input.proto != 1
        && leaving.as_ref().is_some_and(|k| k.proto == 1)
        && out.get(14 + 20) == Some(&3);
    // A reply in place (ARP, the gateway's echo reply) goes back as the input reversed.
    let is_reply = matches!(verdict, Verdict::Reply)
        || matches!((&before, &leaving), (Some(b), Some(a))
            if (a.src_ip, a.src_port, a.dst_ip, a.dst_port) == (b.dst_ip, b.dst_port, b.src_ip, b.src_port));
    trace.verdict = match verdict {
        _ if is_reject => "reject",
        _ if is_reply => "reply",
        Verdict::Transmit(_) => "forward",
        Verdict::Reply => "reply",
        Verdict::ToHost(_) => "to_host",
        Verdict::Drop(_) => "drop",
    }
    .into();
    trace.reason = match verdict {
        Verdict::Drop(r) => Some(r.name().into()),
        Verdict::ToHost(r) => Some(r.name().into()),
        _ if is_reject => Some("no_endpoints".into()),
        _ => None,
    };
    if let (Some(b), Some(a), false) = (&before, &leaving, is_reject || is_reply) {
        if (b.dst_ip, b.dst_port) != (a.dst_ip, a.dst_port) {
            trace.dnat = Some(format!(
                "{}:{} -> {}:{}",
                b.dst_ip, b.dst_port, a.dst_ip, a.dst_port
            ));
            if let Some(s) = &mut trace.service {
                s.chosen = Some(format!("{}:{}", a.dst_ip, a.dst_port));
            }
        }
        if (b.src_ip, b.src_port) != (a.src_ip, a.src_port) {
            trace.snat = Some(format!(
                "{}:{} -> {}:{}",
                b.src_ip, b.src_port, a.src_ip, a.src_port
            ));
        }
    }
    trace.exit = match verdict {
        _ if is_reply => Some("back where it came from".into()),
        Verdict::Transmit(iface) => Some(match (exit_node, snap.interface_role(iface)) {
            (Some(ip), _) => match snap.remote_node_by_ip(ip) {
                Some(r) => format!(
                    "remote node {} over VXLAN (to {ip}, VNI {})",
                    r.node.name, node.vxlan_vni
                ),
                None => format!("VXLAN to {ip}"),
            },
            (None, Some(InterfaceRole::Pod { ip })) => match snap.local_pod(ip) {
                Some(p) => format!("local pod {}", p.name),
                None => format!("local pod {ip}"),
            },
            (None, Some(InterfaceRole::Uplink)) => "uplink".into(),
            (None, Some(InterfaceRole::Host)) => "host (the node's kernel)".into(),
            (None, None) => format!("interface {}", iface.0),
        }),
        Verdict::Reply => Some("back where it came from".into()),
        Verdict::ToHost(_) => Some("host (the node's kernel)".into()),
        Verdict::Drop(_) => None,
    };
    Ok(trace)
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "entered:    {}", self.entered)?;
        writeln!(f, "packet:     {}", self.packet)?;
        if let Some(s) = &self.service {
            writeln!(
                f,
                "service:    {} ({}, {} policy)",
                s.name, s.frontend, s.policy
            )?;
            writeln!(
                f,
                "backends:   {}",
                if s.backends.is_empty() {
                    "none".into()
                } else {
                    s.backends.join(", ")
                }
            )?;
            if let Some(c) = &s.chosen {
                writeln!(f, "chosen:     {c}")?;
            }
        }
        match &self.reason {
            Some(r) => writeln!(f, "verdict:    {} ({r})", self.verdict)?,
            None => writeln!(f, "verdict:    {}", self.verdict)?,
        }
        if let Some(d) = &self.dnat {
            writeln!(f, "dnat:       {d}")?;
        }
        if let Some(s) = &self.snat {
            writeln!(f, "snat:       {s}")?;
        }
        if let Some(p) = &self.packet_out {
            writeln!(f, "packet out: {p}")?;
        }
        if let Some(e) = &self.exit {
            writeln!(f, "exit:       {e}")?;
        }
        Ok(())
    }
}

/// Node settings for tracing against a model, as node `name`: what the API does not say is
/// filled with placeholders (MACs, interface numbers), the uplink is the node address's /24
/// with its `.1` as the router, and every other node's address and that router get a
/// placeholder MAC, so a trace can say where a packet leaves without a live node to ask.
pub fn trace_settings(
    model: &crate::model::Model,
    name: &str,
    cluster_cidr: kxdp_dataplane::wire::Ipv4Cidr,
    service_cidr: kxdp_dataplane::wire::Ipv4Cidr,
) -> crate::compile::NodeSettings {
    use kxdp_dataplane::tables::{InterfaceId, NodeConfig};
    use kxdp_dataplane::wire::Ipv4Cidr;
    let placeholder = |last: u8| EthernetAddress([0x02, 0x6b, 0x78, 0, 0, last]);
    let node_ip = model
        .nodes()
        .get(name)
        .and_then(|n| n.internal_ip)
        .unwrap_or(Ipv4Addr::new(198, 18, 0, 1));
    let net = Ipv4Addr::from(u32::from(node_ip) & 0xffff_ff00);
    let router = Ipv4Addr::from(u32::from(net) + 1);
    let mut neighbors: Vec<(Ipv4Addr, EthernetAddress)> = model
        .nodes()
        .values()
        .filter_map(|n| n.underlay_ip())
        .map(|ip| (ip, placeholder(0x10)))
        .collect();
    neighbors.push((router, placeholder(0x11)));
    crate::compile::NodeSettings {
        node: NodeConfig {
            name: name.to_owned(),
            node_ips: vec![],
            uplink_subnet: Ipv4Cidr::new(net, 24),
            uplink_gateway: Some(router),
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0),
            cluster_cidr,
            service_cidr,
            gateway_ip: Ipv4Addr::UNSPECIFIED,
            gateway_mac: placeholder(0x01),
            uplink: InterfaceId(0),
            uplink_mac: placeholder(0x02),
            uplink_mtu: 1500,
            host: InterfaceId(1),
            host_mac: placeholder(0xfe),
            vtep_mac: placeholder(0x03),
            vxlan_vni: 1,
            vxlan_port: 8472,
            masquerade_ports: 61000..=65535,
        },
        neighbors,
    }
}
