//! `kxdp trace`: one synthetic packet through the real pipeline, against a snapshot, with what
//! each stage decided.
//!
//! The packet is built as it would arrive (from a local pod through its gateway, from outside
//! on the uplink, or from the node's kernel on the host interface) and run through
//! [`process_batch`] with an empty conntrack and fresh counters, so it is the first packet of
//! its flow. The report says what the pipeline itself recorded: the events it counted, the
//! drop or pass reason of its verdict, and the conntrack entry it created (whose two keys are
//! the translations it applied); the service frontend the packet hit, with the backends a new
//! flow may be sent to; and, from the frame that leaves, the packet as it leaves and where.
//!
//! Fields of [`Trace`] (also the keys of `--json`; addresses, flows and frontends are the
//! typed objects of [`crate::json`]):
//! - `entered`: where the packet came in: `{"via": "pod", "pod": "ns/name"}`, `{"via":
//!   "uplink"}` or `{"via": "host"}`;
//! - `packet`: its flow as built, `packet_out`: as it leaves (the inner packet for VXLAN);
//! - `service`: `name`, `frontend` (`{"kind", "ip", "port"}`), `policy` (the traffic policy
//!   that applied: `Cluster` or `Local`), `backends` (every backend a new flow may get),
//!   `chosen` (the backend this flow got);
//! - `verdict`: `forward`, `drop`, `reject` (answered with an ICMP error), `to_host` or
//!   `reply` (answered in place); `reason`: for `drop` and `to_host` the
//!   [`DropReason`](kxdp_dataplane::reason::DropReason) or
//!   [`PassReason`](kxdp_dataplane::reason::PassReason), for `reject` and `reply` the
//!   [`Event`] that answered; always a name from those lists;
//! - `events`: the names of the pipeline [`Event`]s counted for this packet (the per-batch
//!   `rx_packets` and `batches` left out);
//! - `conntrack`: the flow the pipeline tracked: `original`, `reply` (as the reply is expected,
//!   translated), `state`;
//! - `dnat`, `snat`: `{"from": {ip, port}, "to": {ip, port}}`, read from that conntrack entry;
//! - `exit`: where the packet leaves: `{"to": "pod", "pod", "ip"}`, `{"to": "node", "node",
//!   "underlay_ip", "vni"}`, `{"to": "uplink"}`, `{"to": "host"}`, `{"to": "sender"}` (back
//!   where it came from) or `{"to": "interface", "id"}`;
//! - `network_policy`: what this node's NetworkPolicies say of the flow, as the pipeline judges
//!   its first packet (on the backend after DNAT, from the source that reaches the pod):
//!   `egress` for a local source pod, `ingress` for a local destination pod, each `{"pod",
//!   "verdict", "policies"}` with `verdict` one of `open` (no policy selects the pod that
//!   way), `exempt` (its own node, or itself), `allowed` (`policies`: the policy whose rule
//!   allowed it) or `denied` (`policies`: every policy selecting the pod that way, none of
//!   which allows it: their default deny); absent when neither end is a pod of this node.

use std::net::Ipv4Addr;

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::flow::FlowKey;
use kxdp_dataplane::pipeline::inspect;
use kxdp_dataplane::tables::{FrontendKind, InterfaceRole, Pick, PolicyVerdict};
use kxdp_dataplane::wire::build::FrameSpec;
use kxdp_dataplane::wire::{tcp_flags, EthernetAddress};
use kxdp_dataplane::{process_batch, Counters, Frame, Instant, Packet, Snapshot, Verdict};
use serde::{Deserialize, Serialize};

use crate::json::{Endpoint, Flow, Frontend, Policy, Proto, Translation};

/// Where the traced packet enters: `pod`, `uplink` or `host`, as `kxdp trace --from` and the
/// admin API's `/api/trace?from=` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Entry {
    /// From the local pod that owns the source address.
    Pod,
    /// From outside, on the uplink.
    Uplink,
    /// From the node's own kernel, on the host interface.
    Host,
}

impl Entry {
    /// Every entry point, in the order the tools list them.
    pub const ALL: [Entry; 3] = [Entry::Pod, Entry::Uplink, Entry::Host];
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entry::Pod => "pod",
            Entry::Uplink => "uplink",
            Entry::Host => "host",
        })
    }
}

/// An entry point name that is not `pod`, `uplink` or `host`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not pod, uplink or host")]
pub struct UnknownEntry(pub String);

impl std::str::FromStr for Entry {
    type Err = UnknownEntry;

    fn from_str(s: &str) -> Result<Entry, UnknownEntry> {
        Entry::ALL
            .into_iter()
            .find(|e| e.to_string() == s)
            .ok_or_else(|| UnknownEntry(s.to_owned()))
    }
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

/// Where the packet came in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Entered {
    /// From a local pod.
    Pod {
        /// The pod, `namespace/name`.
        pod: String,
    },
    /// From outside, on the uplink.
    Uplink,
    /// From the node's own kernel, on the host interface.
    Host,
}

impl std::fmt::Display for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entered::Pod { pod } => write!(f, "pod {pod}"),
            Entered::Uplink => f.write_str("uplink"),
            Entered::Host => f.write_str("host (the node's kernel)"),
        }
    }
}

/// What became of the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceVerdict {
    /// Sent on, translated or not.
    Forward,
    /// Dropped (`reason`: the drop reason).
    Drop,
    /// Answered with an ICMP error (`reason`: the event that sent it, e.g.
    /// `icmp_port_unreachable` for a service without endpoints, as kube-proxy rejects).
    Reject,
    /// Handed to the node's kernel (`reason`: the pass reason).
    ToHost,
    /// Answered in place (`reason`: the event, e.g. `icmp_echo_reply`).
    Reply,
}

impl std::fmt::Display for TraceVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TraceVerdict::Forward => "forward",
            TraceVerdict::Drop => "drop",
            TraceVerdict::Reject => "reject",
            TraceVerdict::ToHost => "to_host",
            TraceVerdict::Reply => "reply",
        })
    }
}

/// Where the packet leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Exit {
    /// To a pod on this node.
    Pod {
        /// The pod, `namespace/name`, if the snapshot names one at that address.
        pod: Option<String>,
        /// The pod's address.
        ip: Ipv4Addr,
    },
    /// Encapsulated in VXLAN to another node.
    Node {
        /// The node, if the snapshot knows one at that underlay address.
        node: Option<String>,
        /// The outer destination.
        underlay_ip: Ipv4Addr,
        /// The VXLAN network identifier.
        vni: u32,
    },
    /// Out of the uplink.
    Uplink,
    /// To the node's own kernel.
    Host,
    /// Back where it came from (an answer in place).
    Sender,
    /// Out of an interface the snapshot gives no role.
    Interface {
        /// The snapshot's number for it.
        id: u16,
    },
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Pod { pod: Some(p), .. } => write!(f, "local pod {p}"),
            Exit::Pod { pod: None, ip } => write!(f, "local pod {ip}"),
            Exit::Node {
                node: Some(n),
                underlay_ip,
                vni,
            } => write!(
                f,
                "remote node {n} over VXLAN (to {underlay_ip}, VNI {vni})"
            ),
            Exit::Node {
                node: None,
                underlay_ip,
                ..
            } => write!(f, "VXLAN to {underlay_ip}"),
            Exit::Uplink => f.write_str("uplink"),
            Exit::Host => f.write_str("host (the node's kernel)"),
            Exit::Sender => f.write_str("back where it came from"),
            Exit::Interface { id } => write!(f, "interface {id}"),
        }
    }
}

/// The service frontend a packet hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTrace {
    /// `namespace/name:port`.
    pub name: String,
    /// The frontend: its kind, address (none for a NodePort) and port.
    pub frontend: Frontend,
    /// The traffic policy that applies to this packet.
    pub policy: Policy,
    /// Every backend a new flow may be sent to.
    pub backends: Vec<Endpoint>,
    /// The backend this flow got, if any.
    pub chosen: Option<Endpoint>,
}

/// The conntrack entry the packet created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedFlow {
    /// The flow as its first packet arrived.
    pub original: Flow,
    /// Its replies as they are expected to arrive (translated).
    pub reply: Flow,
    /// The conntrack state (`tcp_opening`, `udp`, `icmp`, …).
    pub state: String,
}

/// What a pod's NetworkPolicies say of a flow, one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcome {
    /// No policy selects the pod this way.
    Open,
    /// Always allowed: traffic with the pod's own node, or the pod reaching itself.
    Exempt,
    /// A rule of a selecting policy allows it.
    Allowed,
    /// Policies select the pod this way and none allows it (their default deny).
    Denied,
}

impl std::fmt::Display for PolicyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicyOutcome::Open => "open",
            PolicyOutcome::Exempt => "exempt",
            PolicyOutcome::Allowed => "allowed",
            PolicyOutcome::Denied => "denied",
        })
    }
}

/// One direction's NetworkPolicy verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDirection {
    /// The local pod judged, `namespace/name`.
    pub pod: String,
    /// What its policies say.
    pub verdict: PolicyOutcome,
    /// `allowed`: the policy that allowed it; `denied`: every policy selecting the pod this
    /// way; otherwise empty.
    pub policies: Vec<String>,
}

impl std::fmt::Display for PolicyDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.policies.join(", ");
        match self.verdict {
            PolicyOutcome::Open => write!(f, "pod {}: open (no policy selects it)", self.pod),
            PolicyOutcome::Exempt => write!(
                f,
                "pod {}: allowed (its own node or itself, whatever the policies)",
                self.pod
            ),
            PolicyOutcome::Allowed => write!(f, "pod {}: allowed by {names}", self.pod),
            PolicyOutcome::Denied => {
                write!(f, "pod {}: denied (default deny of {names})", self.pod)
            }
        }
    }
}

/// This node's NetworkPolicy verdicts on the flow, each way it judges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyTrace {
    /// The source pod's egress, if the source is a pod of this node.
    pub egress: Option<PolicyDirection>,
    /// The destination pod's ingress, if the destination is a pod of this node.
    pub ingress: Option<PolicyDirection>,
}

/// What the pipeline did with the packet; see the module docs for the fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Where it came in.
    pub entered: Entered,
    /// Its flow as built.
    pub packet: Flow,
    /// The frontend it hit.
    pub service: Option<ServiceTrace>,
    /// What became of it.
    pub verdict: TraceVerdict,
    /// Why: a drop or pass reason, or the event that answered it.
    pub reason: Option<String>,
    /// The events the pipeline counted for it.
    pub events: Vec<String>,
    /// The flow conntrack recorded.
    pub conntrack: Option<TracedFlow>,
    /// Destination translation.
    pub dnat: Option<Translation>,
    /// Source translation (SNAT or masquerade).
    pub snat: Option<Translation>,
    /// Its flow as it leaves.
    pub packet_out: Option<Flow>,
    /// Where it leaves.
    pub exit: Option<Exit>,
    /// What this node's NetworkPolicies say of the flow.
    pub network_policy: Option<NetworkPolicyTrace>,
}

/// A MAC for a sender outside the node, when the snapshot knows none.
const OUTSIDE_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);

/// Events that answer with an ICMP error: the verdict is `reject`.
const ERRORS_SENT: [Event; 3] = [
    Event::IcmpPortUnreachable,
    Event::IcmpFragNeeded,
    Event::IcmpTimeExceeded,
];
/// Events that answer in place: the verdict is `reply`.
const ANSWERS: [Event; 2] = [Event::IcmpEchoReply, Event::ArpReply];

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
                Entered::Pod {
                    pod: pod.name.clone(),
                },
            )
        }
        Entry::Uplink => {
            let mac = snap.next_hop_mac(src).unwrap_or(OUTSIDE_MAC);
            (
                FrameSpec::new(mac, node.uplink_mac, src, dst),
                node.uplink,
                Entered::Uplink,
            )
        }
        Entry::Host => (
            FrameSpec::new(node.host_mac, node.gateway_mac, src, dst),
            node.host,
            Entered::Host,
        ),
    };
    let frame = match input.proto {
        6 => spec.tcp(input.src.1, input.dst.1, tcp_flags::SYN, b""),
        17 => spec.udp(input.src.1, input.dst.1, b"kxdp trace"),
        1 => spec.icmp_echo(true, input.src.1, 1, b"kxdp trace"),
        p => return Err(TraceError::Protocol(p)),
    };
    let packet = inspect(&frame).map_or(
        Flow {
            proto: Proto::from_number(input.proto),
            src: Endpoint::new(src, input.src.1),
            dst: Endpoint::new(dst, input.dst.1),
        },
        |k| Flow::from(&k),
    );
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
    let counters = Counters::new();
    process_batch(
        &mut packets,
        snap,
        &ct,
        &counters,
        Instant::from_nanos(1_000_000_000),
    );
    let verdict = packets[0].verdict;
    let out = packets[0].frame.data().to_vec();
    let counted = counters.read();
    let fired = |e: &&Event| counted.event(**e) > 0;

    let mut trace = Trace {
        entered,
        packet,
        service: None,
        verdict: TraceVerdict::Forward,
        reason: None,
        events: Event::ALL
            .iter()
            .filter(|e| !matches!(e, Event::RxPackets | Event::Batches))
            .filter(fired)
            .map(|e| e.name().to_owned())
            .collect(),
        conntrack: None,
        dnat: None,
        snat: None,
        packet_out: None,
        exit: None,
        network_policy: None,
    };
    // The flow after translation, as the pipeline judged it: the backend and the source that
    // reaches it (see below: conntrack's keys say it where the flow was tracked).
    let mut judged = (src, dst, input.dst.1);
    // The frontend, and what a new flow may get there.
    if let Some((port, kind)) = snap.services.lookup(dst, input.proto, input.dst.1) {
        let internal = node.is_internal_client(input.entry == Entry::Host, src);
        // The backend the pipeline's pick gives this first packet (no affinity remembered yet),
        // for a flow it did not track (dropped by a policy, say).
        if let (Ok(key), true) = (inspect(&frame), input.proto != 1) {
            if let Pick::Backend(b, bport) = port.pick(kind, src, internal, key.hash()) {
                let seen = snap.service_masquerade(port, kind, src, internal, b);
                judged = (seen.unwrap_or(src), b, bport);
            }
        }
        let eligible = port.eligible(kind, internal);
        let policy = eligible.policy;
        let backends = eligible
            .backends()
            .iter()
            .map(|&(ip, port)| Endpoint::new(ip, port))
            .collect();
        let frontend = Frontend {
            kind: kind.into(),
            ip: (kind != FrontendKind::NodePort).then_some(dst),
            port: input.dst.1,
        };
        trace.service = Some(ServiceTrace {
            name: port.name().to_owned(),
            frontend,
            policy: policy.into(),
            backends,
            chosen: None,
        });
    }
    // What conntrack recorded: the flow's two keys are the translations applied.
    ct.visit(|original, reply, state, _| {
        trace.conntrack = Some(TracedFlow {
            original: original.into(),
            reply: reply.into(),
            state: state.name().to_owned(),
        });
        false
    });
    if let Some(tracked) = &trace.conntrack {
        let (o, r) = (&tracked.original, &tracked.reply);
        judged = (r.dst.ip, r.src.ip, r.src.port);
        if o.dst != r.src {
            trace.dnat = Some(Translation {
                from: o.dst,
                to: r.src,
            });
            if let Some(s) = &mut trace.service {
                s.chosen = Some(r.src);
            }
        }
        if o.src != r.dst {
            trace.snat = Some(Translation {
                from: o.src,
                to: r.dst,
            });
        }
    }
    // The packet as it leaves: the inner one if it was encapsulated.
    let vxlan = |f: &[u8]| -> Option<Vec<u8>> {
        let outer = inspect(f).ok()?;
        (outer.proto == 17 && outer.dst_port == node.vxlan_port)
            .then(|| f[14 + 20 + 8 + 8..].to_vec())
    };
    let mut exit_node = None;
    let leaving: Option<FlowKey> = match verdict {
        Verdict::Transmit(_) | Verdict::Reply | Verdict::ToHost(_) => match vxlan(&out) {
            Some(inner) => {
                exit_node = inspect(&out).ok().map(|k| k.dst_ip);
                inspect(&inner).ok()
            }
            None => inspect(&out).ok(),
        },
        Verdict::Drop(_) => None,
    };
    trace.packet_out = leaving.as_ref().map(Flow::from);
    // The verdict and its reason, as the pipeline counted them.
    let error_sent = ERRORS_SENT.iter().find(fired);
    let answer = ANSWERS.iter().find(fired);
    let (verdict_class, reason): (TraceVerdict, Option<&str>) = match verdict {
        Verdict::Drop(r) => (TraceVerdict::Drop, Some(r.name())),
        _ if error_sent.is_some() => (TraceVerdict::Reject, error_sent.map(|e| e.name())),
        _ if answer.is_some() => (TraceVerdict::Reply, answer.map(|e| e.name())),
        Verdict::Reply => (TraceVerdict::Reply, None),
        Verdict::ToHost(r) => (TraceVerdict::ToHost, Some(r.name())),
        Verdict::Transmit(_) => (TraceVerdict::Forward, None),
    };
    trace.verdict = verdict_class;
    trace.reason = reason.map(str::to_owned);
    trace.exit = match verdict {
        Verdict::Drop(_) => None,
        _ if trace.verdict == TraceVerdict::Reply => Some(Exit::Sender),
        Verdict::ToHost(_) => Some(Exit::Host),
        Verdict::Reply => Some(Exit::Sender),
        Verdict::Transmit(iface) => Some(match (exit_node, snap.interface_role(iface)) {
            (Some(ip), _) => Exit::Node {
                node: snap.remote_node_by_ip(ip).map(|r| r.node.name.clone()),
                underlay_ip: ip,
                vni: node.vxlan_vni,
            },
            (None, Some(InterfaceRole::Pod { ip })) => Exit::Pod {
                pod: snap.local_pod(ip).map(|p| p.name.clone()),
                ip,
            },
            (None, Some(InterfaceRole::Uplink)) => Exit::Uplink,
            (None, Some(InterfaceRole::Host)) => Exit::Host,
            (None, None) => Exit::Interface { id: iface.0 },
        }),
    };
    trace.network_policy = network_policy(snap, src, judged, input.proto);
    Ok(trace)
}

/// What `snap`'s policies say of a flow from `client` that reaches `dst:port` from `seen`
/// (`judged`), as [`Snapshot::flow_policy`] judges it in the pipeline; `None` when neither end
/// is a pod of this node.
fn network_policy(
    snap: &Snapshot,
    client: Ipv4Addr,
    judged: (Ipv4Addr, Ipv4Addr, u16),
    proto: u8,
) -> Option<NetworkPolicyTrace> {
    let (seen, dst, port) = judged;
    let verdicts = snap.flow_policy(client, seen, dst, proto, port);
    let one = |pod: Ipv4Addr, verdict: PolicyVerdict<'_>| {
        let local = snap.local_pod(pod)?;
        let (verdict, policies) = match verdict {
            PolicyVerdict::Open => (PolicyOutcome::Open, vec![]),
            PolicyVerdict::Exempt => (PolicyOutcome::Exempt, vec![]),
            PolicyVerdict::Allowed(p) => (PolicyOutcome::Allowed, vec![p.to_owned()]),
            PolicyVerdict::Denied(ps) => (
                PolicyOutcome::Denied,
                ps.iter().map(|p| p.to_string()).collect(),
            ),
        };
        Some(PolicyDirection {
            pod: local.name.clone(),
            verdict,
            policies,
        })
    };
    let egress = one(client, verdicts.egress);
    let ingress = one(dst, verdicts.ingress);
    (egress.is_some() || ingress.is_some()).then_some(NetworkPolicyTrace { egress, ingress })
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "entered:    {}", self.entered)?;
        writeln!(f, "packet:     {}", self.packet)?;
        if let Some(s) = &self.service {
            writeln!(
                f,
                "service:    {} ({}, {} policy)",
                s.name, s.frontend.kind, s.policy
            )?;
            let backends: Vec<String> = s.backends.iter().map(Endpoint::to_string).collect();
            writeln!(
                f,
                "backends:   {}",
                if backends.is_empty() {
                    "none".into()
                } else {
                    backends.join(", ")
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
        if !self.events.is_empty() {
            writeln!(f, "events:     {}", self.events.join(", "))?;
        }
        if let Some(d) = &self.dnat {
            writeln!(f, "dnat:       {d}")?;
        }
        if let Some(s) = &self.snat {
            writeln!(f, "snat:       {s}")?;
        }
        if let Some(c) = &self.conntrack {
            writeln!(
                f,
                "conntrack:  {}, replies expected as {}",
                c.state,
                c.reply.addresses()
            )?;
        }
        if let Some(p) = &self.packet_out {
            writeln!(f, "packet out: {p}")?;
        }
        if let Some(e) = &self.exit {
            writeln!(f, "exit:       {e}")?;
        }
        if let Some(p) = &self.network_policy {
            if let Some(e) = &p.egress {
                writeln!(f, "egress:     {e}")?;
            }
            if let Some(i) = &p.ingress {
                writeln!(f, "ingress:    {i}")?;
            }
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
            nodeport_ips: None,
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
            pod_mtu: 1450,
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
