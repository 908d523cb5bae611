//! Service NAT, masquerade and conntrack: the stage that decides a packet's translation.
//!
//! Known flows are looked up first, and only for packets that can belong to one ([`plan`]):
//! everything but pod-to-pod traffic, which looks only when it comes from a service endpoint
//! (a reply of a DNATed flow; endpoints that left every service stay listed as draining while
//! their flows live). Plain pod-to-pod traffic never touches the shared table, so it pays no
//! cache miss for it however many flows are tracked. Only then is the service table consulted.
//! A new flow to a service address on a port or protocol no service has is rejected with ICMP
//! port unreachable, as kube-proxy rejects it; an address of the service CIDR that no service
//! holds is dropped. `loadBalancerSourceRanges` are checked on a flow's first packet.
//!
//! Masquerade follows kube-proxy with flannel: a service flow is source-NATed to the gateway
//! address when a pod reaches itself (hairpin), when it arrives through a node port, external
//! IP or load-balancer address of a service with `externalTrafficPolicy: Cluster` (whoever the
//! client), or when the client is outside the cluster CIDR (node processes, external clients)
//! unless `externalTrafficPolicy: Local` preserves it; and to the node's address when the endpoint is outside the cluster (an API server on a node
//! address). Pod traffic leaving the cluster is source-NATed to the node's primary address, and
//! traffic from the node's kernel to another node's pod to the gateway address, so that
//! replies come back through the overlay to this node.
//!
//! NetworkPolicy is judged here too, on a new flow's first packet, once its translation is
//! known ([`Snapshot::flow_policy`]): egress for a local source pod on the (DNATed) destination,
//! ingress for a local destination pod on the source that reaches it. A denied flow is dropped
//! before anything is tracked; an allowed one is tracked, pod-to-pod flows included (untranslated
//! entries: the reply key mirrors the original), so its later packets and replies pass by the
//! entry without being judged. Pod-to-pod flows between pods no policy selects stay untracked.

use super::parse::{icmp_type, Ipv4Meta};
use super::{Ctx, Frame, IcmpError, Next, Origin, Verdict};
use crate::conntrack::{Direction, FlowRef, InsertError};
use crate::counters::Event;
use crate::flow::{proto, FlowKey};
use crate::reason::DropReason;
use crate::tables::{FrontendKind, Pick, RouteTarget, ServicePort, Snapshot};

/// Whether conntrack can hold a flow of this packet: TCP, UDP and ICMP echo.
#[inline]
fn trackable(meta: &Ipv4Meta) -> bool {
    match meta.key.proto {
        proto::TCP | proto::UDP => true,
        proto::ICMP => matches!(
            meta.icmp_type,
            icmp_type::ECHO_REQUEST | icmp_type::ECHO_REPLY
        ),
        _ => false,
    }
}

/// What the first pass learned about a packet for [`translate`]: its route, and whether it
/// may belong to a tracked flow (so its conntrack lines were warmed and it will look there).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) route: RouteTarget,
    pub(crate) track: bool,
    /// The packet concerns a local pod some NetworkPolicy selects
    /// ([`Snapshot::policed`]): a new flow of it is judged, and tracked when allowed.
    pub(crate) police: bool,
}

impl Plan {
    /// Placeholder until the first pass plans the packet.
    pub(crate) const UNPLANNED: Plan = Plan {
        route: RouteTarget::External,
        track: false,
        police: false,
    };
}

/// Whether a packet on `route` from `origin` may belong to a translated flow, the one rule that
/// both plans a packet ([`plan`]) and lets a fragment through ([`plan_fragment`]).
/// `from_endpoint` says whether the sender is a service endpoint (only asked where it
/// matters): its packets may be replies to reverse-NAT.
///
/// Traffic to pods, here or on another node, never is, unless it comes from an endpoint, or
/// from the node's kernel to another node (source-NATed to the gateway address); everything
/// else (services, masquerade, NodePorts, the node's own addresses) may be.
#[inline(always)]
fn may_be_translated(
    route: RouteTarget,
    origin: Origin,
    from_endpoint: impl FnOnce() -> bool,
) -> bool {
    match route {
        RouteTarget::LocalPods => from_endpoint(),
        RouteTarget::RemoteNode(_) => origin == Origin::Host || from_endpoint(),
        _ => true,
    }
}

/// Plan a packet: route its destination and decide whether it may belong to a tracked flow.
/// Pod-to-pod traffic not from a service endpoint never does, so it never touches conntrack,
/// unless a NetworkPolicy selects one of its local pods: then its flow is tracked, so that the
/// verdict is taken once per flow and replies pass by the entry.
#[inline]
pub(crate) fn plan(ctx: &Ctx<'_>, meta: &Ipv4Meta, origin: Origin) -> Plan {
    let key = &meta.key;
    let route = ctx.snap.route(key.dst_ip);
    let police = ctx.snap.policed(key.src_ip, key.dst_ip, route);
    let track = trackable(meta)
        && (police
            || may_be_translated(route, origin, || {
                ctx.snap
                    .services
                    .is_backend(key.src_ip, key.proto, key.src_port)
            }));
    Plan {
        route,
        track,
        police,
    }
}

/// Plan an IPv4 fragment (see `pipeline::fragment`): only the first fragment has ports, and
/// kxdp does not reassemble, so a fragment goes on, untracked, only where nothing may be
/// translated; `None` where something may (then it is dropped). Its sender is an endpoint if
/// its address is one on any port.
#[cold]
pub(crate) fn plan_fragment(snap: &Snapshot, meta: &Ipv4Meta, origin: Origin) -> Option<Plan> {
    let key = &meta.key;
    let route = snap.route(key.dst_ip);
    let translated = may_be_translated(route, origin, || {
        snap.services.is_backend_addr(key.src_ip, key.proto)
    });
    (!translated).then_some(Plan {
        route,
        track: false,
        police: snap.policed(key.src_ip, key.dst_ip, route),
    })
}

/// The NAT stage: translate a packet of a known flow, or start a flow (a service's, or
/// masqueraded), or leave it as it is; then on to output, or an ICMP error (a service without
/// endpoints), or a verdict.
#[inline]
pub(crate) fn translate(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
    origin: Origin,
    plan: Plan,
) -> Next {
    let snap = ctx.snap;
    let key = meta.key;
    let route = plan.route;
    // Known flows first: an established packet needs nothing else.
    if plan.track {
        if let Some(flow) = ctx.ct.lookup_hashed(&key, meta.hash(), ctx.now) {
            if snap.has_policies() {
                return established_policed(ctx, frame, meta, plan, &flow);
            }
            ctx.ct.update(&flow, meta.tcp_flags, ctx.now);
            return established(ctx, frame, meta, &flow);
        }
    }
    // No frontend is ever a pod address, so pod-to-pod traffic skips the service table, and
    // nothing translates it but the node's own traffic to another node's pods: it goes on as
    // it is, judged first where a policy selects one of its pods.
    let to_pods = matches!(route, RouteTarget::LocalPods | RouteTarget::RemoteNode(_));
    if to_pods && !(origin == Origin::Host && route != RouteTarget::LocalPods) {
        return match plan.police {
            true => police_untranslated(ctx, frame, meta, plan.track, route),
            false => Next::OutputUntranslated(route),
        };
    }
    let is_l4 = key.proto == proto::TCP || key.proto == proto::UDP;
    if is_l4 && origin != Origin::Overlay && !to_pods {
        if let Some((port, kind)) = snap.services.lookup(key.dst_ip, key.proto, key.dst_port) {
            return new_service_flow(ctx, frame, meta, origin, port, kind);
        }
    }
    let masquerade_to = match (route, origin) {
        (RouteTarget::External, Origin::Pod) => Some(snap.node.primary_ip()),
        // The node's own traffic to another node's pods leaves from the gateway address so the
        // replies come back over VXLAN; traffic already from it (answers to pods that reached
        // the gateway address) needs nothing.
        (RouteTarget::RemoteNode(_), Origin::Host) if key.src_ip != snap.node.gateway_ip => {
            Some(snap.node.gateway_ip)
        }
        _ => None,
    };
    let trackable = trackable(meta);
    if !to_pods && origin != Origin::Overlay && snap.services.is_service_addr(key.dst_ip) {
        return reject_unserved(meta);
    }
    if route == RouteTarget::ServiceCidr {
        return Next::Done(Verdict::Drop(DropReason::ServiceNotFound));
    }
    match masquerade_to {
        Some(_) if !trackable => Next::Done(Verdict::Drop(DropReason::UnsupportedProtocol)),
        Some(_) if key.proto == proto::ICMP && meta.icmp_type != icmp_type::ECHO_REQUEST => {
            // An echo reply leaving the cluster answers nothing we translated.
            Next::Done(Verdict::Drop(DropReason::UnsupportedProtocol))
        }
        Some(snat_ip) => {
            if let Err(r) = judge(
                ctx,
                key.src_ip,
                snat_ip,
                key.dst_ip,
                key.proto,
                key.dst_port,
            ) {
                return Next::Done(Verdict::Drop(r));
            }
            let reply = FlowKey::new(key.proto, key.dst_ip, key.dst_port, snat_ip, 0);
            match insert(ctx, key, reply, meta.tcp_flags, true) {
                Ok(to) => {
                    rewrite(frame, meta, to);
                    ctx.counters.inc(Event::MasqueradeNewFlow);
                    Next::OutputTranslated
                }
                Err(r) => Next::Done(Verdict::Drop(r)),
            }
        }
        // Not `trackable`: a fragment has a TCP or UDP protocol but no ports to track it by.
        None if plan.police => police_untranslated(ctx, frame, meta, plan.track, route),
        None => Next::OutputUntranslated(route),
    }
}

/// A packet of a translated flow, accounted for: translate it.
#[inline(always)]
fn established(ctx: &Ctx<'_>, frame: &mut Frame<'_>, meta: &mut Ipv4Meta, flow: &FlowRef) -> Next {
    rewrite(frame, meta, flow.translated());
    ctx.counters.inc(match flow.direction {
        Direction::Original => Event::NatEstablished,
        Direction::Reply => Event::ReverseNat,
    });
    Next::OutputTranslated
}

/// A packet of a tracked flow where some local pod has a NetworkPolicy: apart, so that a node
/// without any pays one test per packet for them. Any tracked flow, not only those
/// `plan.police` names: a service flow's client packets name the service address, and its
/// backend may be the selected pod. A flow judged under other policies is judged again
/// ([`revalidate`]); one tracked only for its policy passes untranslated.
#[inline(never)]
fn established_policed(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
    plan: Plan,
    flow: &FlowRef,
) -> Next {
    let judged = ctx.ct.policy_epoch(flow);
    if judged != ctx.snap.policy_epoch() {
        if let Err(r) = revalidate(ctx, flow, judged) {
            return Next::Done(Verdict::Drop(r));
        }
    }
    ctx.ct.update(flow, meta.tcp_flags, ctx.now);
    if plan.police && flow.translated() == meta.key {
        // A flow tracked only for NetworkPolicy: allowed when it began.
        ctx.counters.inc(Event::PolicyEstablished);
        return Next::OutputUntranslated(plan.route);
    }
    established(ctx, frame, meta, flow)
}

/// A packet of no translated flow and no tracked one, to or from a local pod a NetworkPolicy
/// selects: a new flow's first packet. Judged ([`judge`]); an allowed one is tracked untranslated
/// (original and reply keys mirror each other), so the rest of the flow and its replies pass by
/// the entry. Packets conntrack cannot hold (fragments, ICMP other than echo, protocols
/// other than TCP, UDP and ICMP) are judged each on its own: SCTP on its ports, the others
/// as having port 0, which only a rule without ports admits.
#[cold]
#[inline(never)]
fn police_untranslated(
    ctx: &Ctx<'_>,
    frame: &Frame<'_>,
    meta: &Ipv4Meta,
    track: bool,
    route: RouteTarget,
) -> Next {
    let key = meta.key;
    let port = match key.proto {
        proto::SCTP => super::parse::sctp_dst_port(frame.data(), meta),
        _ => key.dst_port,
    };
    if let Err(r) = judge(ctx, key.src_ip, key.src_ip, key.dst_ip, key.proto, port) {
        return Next::Done(Verdict::Drop(r));
    }
    if !track {
        return Next::OutputUntranslated(route);
    }
    match ctx.ct.insert(key, key.reversed(), meta.tcp_flags, ctx.now) {
        Ok(flow) => {
            stamp(ctx, &flow);
            ctx.counters.inc(Event::PolicyNewFlow);
            Next::OutputUntranslated(route)
        }
        Err(InsertError::Full) => Next::Done(Verdict::Drop(DropReason::ConntrackFull)),
        Err(_) => Next::Done(Verdict::Drop(DropReason::ConntrackClash)),
    }
}

/// A packet (either way) of a tracked flow judged under other policies than the snapshot's
/// (or never judged: tracked before its pod was selected): judge the flow again as its first
/// packet was ([`judge`], on the keys conntrack holds), so a connection the new policies do
/// not allow stops at its next packet, whichever way that goes. An allowed flow is stamped
/// with the snapshot's epoch, and judged no more; a denied one is not refreshed (it expires
/// unless the policies allow it again first) and each of its packets is dropped.
#[cold]
#[inline(never)]
fn revalidate(ctx: &Ctx<'_>, flow: &FlowRef, judged: u32) -> Result<(), DropReason> {
    let (original, reply) = (flow.original, flow.reply);
    // The first packet after translation is the reverse of the reply key.
    judge(
        ctx,
        original.src_ip,
        reply.dst_ip,
        reply.src_ip,
        original.proto,
        reply.src_port,
    )?;
    ctx.ct
        .set_policy_epoch(flow, judged, ctx.snap.policy_epoch());
    ctx.counters.inc(Event::PolicyRevalidated);
    Ok(())
}

/// Remember that a flow just tracked was judged under the snapshot's policies.
#[inline]
fn stamp(ctx: &Ctx<'_>, flow: &FlowRef) {
    if ctx.snap.has_policies() {
        ctx.ct.set_policy_epoch(flow, 0, ctx.snap.policy_epoch());
    }
}

/// The NetworkPolicy verdict on a new flow from `client`, reaching `dst:port` from `src`
/// (see [`Snapshot::flow_policy`]): egress is judged before ingress, each named in the drop.
#[inline]
fn judge(
    ctx: &Ctx<'_>,
    client: core::net::Ipv4Addr,
    src: core::net::Ipv4Addr,
    dst: core::net::Ipv4Addr,
    proto: u8,
    port: u16,
) -> Result<(), DropReason> {
    if !ctx.snap.has_policies() {
        return Ok(());
    }
    let verdict = ctx.snap.flow_policy(client, src, dst, proto, port);
    if !verdict.egress.is_allowed() {
        return Err(DropReason::PolicyDeniedEgress);
    }
    if !verdict.ingress.is_allowed() {
        return Err(DropReason::PolicyDeniedIngress);
    }
    Ok(())
}

/// A packet to a service address on a port or protocol no frontend has: rejected with ICMP
/// port unreachable as kube-proxy rejects traffic to a ClusterIP's invalid ports, so clients
/// fail at once instead of timing out. Never in answer to an ICMP error.
#[cold]
fn reject_unserved(meta: &Ipv4Meta) -> Next {
    if meta.is_icmp_error() {
        return Next::Done(Verdict::Drop(DropReason::ServiceNotFound));
    }
    Next::IcmpError(IcmpError::PortUnreachable)
}

/// A new flow to a service frontend: pick a backend, track it, translate it.
#[cold]
fn new_service_flow(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
    origin: Origin,
    port: &ServicePort,
    kind: FrontendKind,
) -> Next {
    let key = meta.key;
    let node = &ctx.snap.node;
    let from_node = origin == Origin::Host;
    if !port.admits(kind, key.src_ip, from_node, &node.node_ips) {
        return Next::Done(Verdict::Drop(DropReason::LoadBalancerSourceRange));
    }
    let internal = node.is_internal_client(from_node, key.src_ip);
    let (ip, bport) = match pick(ctx, port, kind, key.src_ip, internal, meta.hash()) {
        Pick::Backend(ip, bport) => (ip, bport),
        Pick::NoEndpoints => return Next::IcmpError(IcmpError::PortUnreachable),
        Pick::NoLocalEndpoints => {
            return Next::Done(Verdict::Drop(DropReason::ServiceNoLocalEndpoints))
        }
    };
    let hairpin = ip == key.src_ip;
    let snat_to = ctx
        .snap
        .service_masquerade(port, kind, key.src_ip, internal, ip);
    if let Err(r) = judge(
        ctx,
        key.src_ip,
        snat_to.unwrap_or(key.src_ip),
        ip,
        key.proto,
        bport,
    ) {
        return Next::Done(Verdict::Drop(r));
    }
    let tracked = match snat_to {
        Some(snat_ip) => {
            let reply = FlowKey::new(key.proto, ip, bport, snat_ip, 0);
            insert(ctx, key, reply, meta.tcp_flags, true)
        }
        None => {
            let reply = FlowKey::new(key.proto, ip, bport, key.src_ip, key.src_port);
            match insert(ctx, key, reply, meta.tcp_flags, false) {
                // The client already uses this port toward the same endpoint through another
                // address: give this flow a new source port, as Linux NAT resolves the clash.
                Err(DropReason::ConntrackClash) => {
                    let reply = FlowKey::new(key.proto, ip, bport, node.gateway_ip, 0);
                    insert(ctx, key, reply, meta.tcp_flags, true)
                }
                other => other,
            }
        }
    };
    match tracked {
        Ok(to) => {
            rewrite(frame, meta, to);
            ctx.counters.inc(Event::ServiceNewFlow);
            if hairpin {
                ctx.counters.inc(Event::Hairpin);
            }
            Next::OutputTranslated
        }
        Err(r) => Next::Done(Verdict::Drop(r)),
    }
}

/// Choose a new flow's backend: with session affinity, the one this client was last sent to
/// while it stays eligible, else the port's own pick, remembered (or counted when the affinity
/// table has no room for the client: the flow is still served).
#[inline]
fn pick(
    ctx: &Ctx<'_>,
    port: &ServicePort,
    kind: FrontendKind,
    client: core::net::Ipv4Addr,
    internal: bool,
    hash: u64,
) -> Pick {
    let Some((service, timeout)) = port.affinity() else {
        return port.pick(kind, client, internal, hash);
    };
    let table = ctx.ct.affinity();
    let kept = table
        .lookup(service, client, ctx.now)
        .filter(|b| port.eligible(kind, internal).contains(*b));
    let chosen = match kept {
        Some((ip, bport)) => Pick::Backend(ip, bport),
        None => port.pick(kind, client, internal, hash),
    };
    if let Pick::Backend(ip, bport) = chosen {
        let expires = ctx.now + timeout;
        if !table.remember(service, client, (ip, bport), expires, ctx.now) {
            ctx.counters.inc(Event::AffinityTableFull);
        }
    }
    chosen
}

/// Track a new flow; returns the 5-tuple its original-direction packets are rewritten to.
fn insert(
    ctx: &Ctx<'_>,
    original: FlowKey,
    reply: FlowKey,
    tcp_flags: u8,
    snat: bool,
) -> Result<FlowKey, DropReason> {
    let result = if snat {
        let ports = ctx.snap.node.masquerade_ports.clone();
        ctx.ct
            .insert_snat(original, reply, ports, tcp_flags, ctx.now)
    } else {
        ctx.ct.insert(original, reply, tcp_flags, ctx.now)
    };
    match result {
        Ok(flow) => {
            stamp(ctx, &flow);
            Ok(flow.translated())
        }
        Err(InsertError::Full) => Err(DropReason::ConntrackFull),
        Err(InsertError::PortsExhausted) => Err(DropReason::SnatPortsExhausted),
        Err(InsertError::Clash) => Err(DropReason::ConntrackClash),
    }
}

/// Rewrite the packet's addresses and ports to `to`, with incremental checksum updates.
#[inline]
pub(crate) fn rewrite(frame: &mut Frame<'_>, meta: &mut Ipv4Meta, to: FlowKey) {
    // The headers; a payload beyond this buffer is not read.
    let d = frame.data_mut();
    let end = (meta.l3() + meta.ip_len()).min(d.len());
    let ip = &mut d[meta.l3()..end];
    super::rewrite::nat(ip, &meta.key, &to, meta.icmp_type);
    meta.key = to;
    meta.hash = 0;
}
