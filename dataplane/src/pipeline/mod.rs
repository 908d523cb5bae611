//! The pipeline: a batch of received frames in, a [`Verdict`] per frame out.
//!
//! [`process_batch`] is the only entry point. It reads the [`Snapshot`], the shared
//! [`Conntrack`] and the caller's clock, rewrites each frame in place, and never allocates,
//! locks on the established path, or makes a system call. A frame leaves through exactly one
//! verdict: transmit on an interface, reply out the interface it came in on, hand to the node's
//! kernel, or drop with a [`DropReason`].
//!
//! The stages, in the order a packet meets them; 1 to 3 run for the whole batch before
//! the rest (see [`process_batch`]):
//!
//! 1. **ingress** (this file): the interface's role decides the path; ARP is answered for pods
//!    and the host (`arp.rs`); the IPv4 header is validated once (`parse.rs`); a pod's source
//!    address must be its own;
//! 2. **decap** (`vxlan.rs`): VXLAN from a known node with our VNI is stripped and the inner
//!    packet continues as overlay traffic;
//! 3. **plan** (`nat.rs`): route the destination and decide whether the packet may belong to a
//!    tracked flow; the conntrack lines of those that may are loaded for the batch;
//! 4. **ICMP** (`icmp.rs`): pings of the gateway are answered; ICMP errors about a translated flow
//!    are translated back like the flow;
//! 5. **service NAT, NetworkPolicy and conntrack** (`nat.rs`): known flows are translated (or,
//!    tracked for policy only, passed) from conntrack; new flows to a service frontend get a
//!    Maglev-picked backend (masqueraded where kube-proxy would); pod traffic leaving the
//!    cluster is masqueraded to the node address; a new flow of a pod some NetworkPolicy
//!    selects is judged, and dropped or tracked;
//! 6. **output** (`output.rs`): route the (translated) destination: a local pod (L2 rewrite,
//!    TTL decrement), another node, the node itself, or the uplink;
//! 7. **encap** (`vxlan.rs`): VXLAN encapsulation toward another node;
//! 8. **ICMP errors** (`icmp.rs`): a packet kxdp refuses with an error (no endpoints, too big
//!    for the tunnel, TTL run out) is turned into that error, which is then output like any
//!    packet.
//!
//! # Dispatch
//!
//! Stages do not call one another (VPP's next-node index): from 4 on, each returns a `Next`
//! saying where the packet goes now, and one loop, `forward_ipv4`, carries it out. The stage
//! files import shared types and helpers (this file, `parse.rs`, `rewrite.rs`, `frame.rs`),
//! never another stage, so each rule lives in one stage and the graph has no circle; the
//! graph itself is written in one place, the loop. A test keeps it so.

mod arp;
mod frame;
mod icmp;
mod nat;
mod output;
mod parse;
mod rewrite;
mod vxlan;

pub use frame::{Frame, Split};

use crate::conntrack::Conntrack;
use crate::counters::{Counters, Event};
use crate::reason::{DropReason, PassReason};
use crate::tables::{InterfaceId, InterfaceRole, RouteTarget, Snapshot};
use crate::time::Instant;
use crate::wire::ETHERNET_HEADER_LEN;

/// What happens to a frame after the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this interface.
    Transmit(InterfaceId),
    /// Transmit the frame, now a reply, back out the interface it arrived on.
    Reply,
    /// Hand the frame to the node's kernel through the host interface. Frames the pipeline
    /// routed there carry the host interface's MAC; frames it did not parse are untouched.
    ToHost(PassReason),
    /// Drop the frame.
    Drop(DropReason),
}

/// One received frame and, after [`process_batch`], its verdict.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The frame, rewritten in place.
    pub frame: Frame<'a>,
    /// The interface it arrived on.
    pub ingress: InterfaceId,
    /// The pipeline's decision; meaningless before processing.
    pub verdict: Verdict,
}

impl<'a> Packet<'a> {
    /// A frame received on `ingress`, not yet processed.
    #[inline]
    pub fn new(frame: Frame<'a>, ingress: InterfaceId) -> Self {
        Packet {
            frame,
            ingress,
            verdict: Verdict::Drop(DropReason::FrameTooShort),
        }
    }
}

/// Where a packet entered the IPv4 stages; it decides which destinations it may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From a local pod's veth.
    Pod,
    /// From the node's kernel through the host interface.
    Host,
    /// Unencapsulated on the uplink.
    Uplink,
    /// Decapsulated from another node.
    Overlay,
}

/// Where a packet goes after a stage: what each stage from ICMP on returns, and what the
/// loop in [`forward_ipv4`] carries out.
///
/// Eight bytes, so it travels in one register. Output has two variants rather than one with a
/// flag and an optional route because those are the only two ways a packet reaches it, and
/// each then inlines as its own straight path (measured: one variant with a flag cost the
/// pod-to-pod case 8%; see [`forward_ipv4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Output (`output.rs`) a packet kxdp translated or built: it may leave the node whatever
    /// its origin, and its route is looked up afresh (its destination may have changed).
    OutputTranslated,
    /// Output a packet of no translated flow, as it is, on `route` (looked up when it was
    /// planned): traffic from the overlay or the uplink may not leave the node again.
    OutputUntranslated(RouteTarget),
    /// Encapsulate toward remote node `idx` (`vxlan.rs`).
    Encap(u32),
    /// Turn the packet into an ICMP error for its sender (`icmp.rs`).
    IcmpError(IcmpError),
    /// The packet's fate is decided.
    Done(Verdict),
}

const _: () = assert!(core::mem::size_of::<Next>() <= 8);

/// The ICMP errors kxdp answers a packet with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IcmpError {
    /// Destination unreachable, port unreachable, from the service address: a service without
    /// endpoints, as kube-proxy rejects.
    PortUnreachable,
    /// Destination unreachable, fragmentation needed, from the gateway: a DF packet other than
    /// TCP too big for the link it leaves on, whose MTU the error announces.
    FragNeeded {
        /// The largest IP packet the link takes.
        mtu: u16,
    },
    /// Time exceeded in transit, from the gateway: the TTL runs out here.
    TimeExceeded,
}

/// Everything a stage reads, besides the frame.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'s> {
    pub(crate) snap: &'s Snapshot,
    pub(crate) ct: &'s Conntrack,
    pub(crate) counters: &'s Counters,
    pub(crate) now: Instant,
}

/// Run the pipeline over a batch: every packet's frame is rewritten in place and its
/// [`Packet::verdict`] set. `now` is the caller's monotonic clock, read once per batch.
///
/// The batch runs in two passes over chunks of [`CHUNK`] packets (VPP's way): the first does
/// ingress (interface role, ARP, validation, decapsulation) and collects the flow hashes of
/// the packets that will look in conntrack, whose lines are then warmed together; the second
/// does the rest. At a million flows those lines
/// are cache misses, and warming them all before using any lets the misses overlap.
pub fn process_batch(
    packets: &mut [Packet<'_>],
    snapshot: &Snapshot,
    conntrack: &Conntrack,
    counters: &Counters,
    now: Instant,
) {
    let ctx = Ctx {
        snap: snapshot,
        ct: conntrack,
        counters,
        now,
    };
    counters.inc(Event::Batches);
    counters.add(Event::RxPackets, packets.len() as u64);
    let mut stages = [Stage::Done(Verdict::Drop(DropReason::FrameTooShort)); CHUNK];
    let mut hashes = [0u64; CHUNK];
    for chunk in packets.chunks_mut(CHUNK) {
        let mut tracked = 0;
        for (p, stage) in chunk.iter_mut().zip(stages.iter_mut()) {
            *stage = ingress(&ctx, &mut p.frame, p.ingress);
            if let Stage::Ipv4(meta, origin, plan) = stage {
                // A pod's and the node's TCP and UDP checksums are left to the way out, as
                // their stacks leave them to the device (`offload::partial`); a datagram sent
                // without a checksum keeps none.
                if matches!(origin, Origin::Pod | Origin::Host)
                    && parse::has_l4_checksum(&p.frame, meta)
                {
                    p.frame.set_checksum_offload(Some(meta.l4()));
                }
                *plan = nat::plan(&ctx, meta, *origin);
                if plan.track {
                    hashes[tracked] = meta.hash();
                    tracked += 1;
                }
            } else if matches!(stage, Stage::Done(Verdict::Drop(DropReason::Ipv4Fragment))) {
                // Refused as a fragment: a second look, apart.
                *stage = fragment(ctx.snap, &p.frame, p.ingress);
            }
        }
        conntrack.prefetch(&hashes[..tracked]);
        for (p, stage) in chunk.iter_mut().zip(stages.iter()) {
            let verdict = match *stage {
                Stage::Done(v) => v,
                Stage::Ipv4(meta, origin, plan) => {
                    forward_ipv4(&ctx, &mut p.frame, meta, origin, plan)
                }
            };
            match verdict {
                Verdict::Transmit(_) => counters.inc(Event::Transmitted),
                Verdict::Reply => counters.inc(Event::Replied),
                Verdict::ToHost(r) => counters.passed(r),
                Verdict::Drop(r) => counters.dropped(r),
            }
            p.verdict = verdict;
        }
    }
}

/// Packets per pass of [`process_batch`]: one AF_XDP batch.
pub const CHUNK: usize = 64;

/// Where a packet stands between the two passes.
#[derive(Clone, Copy)]
enum Stage {
    /// Decided at ingress.
    Done(Verdict),
    /// A validated IPv4 packet, to continue from `origin` as planned.
    Ipv4(parse::Ipv4Meta, Origin, nat::Plan),
}

pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;

/// The first pass: everything that depends on the interface the frame came in on.
#[inline]
fn ingress(ctx: &Ctx<'_>, frame: &mut Frame<'_>, ingress: InterfaceId) -> Stage {
    let Some(role) = ctx.snap.interface_role(ingress) else {
        return Stage::Done(Verdict::Drop(DropReason::UnknownInterface));
    };
    let data = frame.data();
    if data.len() < ETHERNET_HEADER_LEN {
        return Stage::Done(Verdict::Drop(DropReason::FrameTooShort));
    }
    let ethertype = u16::from_be_bytes([data[12], data[13]]);
    match role {
        InterfaceRole::Pod { ip } => {
            if ethertype == ETHERTYPE_ARP {
                return Stage::Done(arp::answer(ctx, frame));
            }
            if ethertype != ETHERTYPE_IPV4 {
                return Stage::Done(Verdict::Drop(DropReason::UnsupportedEthertype));
            }
            match parse::parse_ipv4(frame.data(), ETHERNET_HEADER_LEN, frame.tail()) {
                Ok(meta) if meta.key.src_ip != ip => {
                    Stage::Done(Verdict::Drop(DropReason::SpoofedSource))
                }
                Ok(meta) => Stage::Ipv4(meta, Origin::Pod, nat::Plan::UNPLANNED),
                Err(r) => Stage::Done(Verdict::Drop(r)),
            }
        }
        InterfaceRole::Host => {
            if ethertype == ETHERTYPE_ARP {
                return Stage::Done(arp::answer(ctx, frame));
            }
            if ethertype != ETHERTYPE_IPV4 {
                return Stage::Done(Verdict::Drop(DropReason::UnsupportedEthertype));
            }
            match parse::parse_ipv4(frame.data(), ETHERNET_HEADER_LEN, frame.tail()) {
                Ok(meta) => Stage::Ipv4(meta, Origin::Host, nat::Plan::UNPLANNED),
                Err(r) => Stage::Done(Verdict::Drop(r)),
            }
        }
        InterfaceRole::Uplink => {
            if ethertype != ETHERTYPE_IPV4 {
                return Stage::Done(Verdict::ToHost(PassReason::NotIpv4));
            }
            let Ok(meta) = parse::parse_ipv4(frame.data(), ETHERNET_HEADER_LEN, frame.tail())
            else {
                return Stage::Done(Verdict::ToHost(PassReason::Ipv4Unsupported));
            };
            if vxlan::is_ours(ctx, &meta) {
                return match vxlan::decap(ctx, frame, &meta) {
                    Ok(inner) => Stage::Ipv4(inner, Origin::Overlay, nat::Plan::UNPLANNED),
                    Err(r) => Stage::Done(Verdict::Drop(r)),
                };
            }
            Stage::Ipv4(meta, Origin::Uplink, nat::Plan::UNPLANNED)
        }
    }
}

/// A frame [`ingress`] refused as an IPv4 fragment: from a pod or the host interface, or
/// decapsulated from the overlay (the frame then holds the inner packet; on the uplink, only
/// an inner packet is refused so, an outer fragment goes to the kernel).
///
/// kxdp does not reassemble, and only the first fragment has the ports a translation is keyed
/// by, so a fragment goes on only where nothing would be translated: between pods, here or
/// across nodes; not from a service endpoint (its packets may be replies to reverse-NAT), and
/// not from the node's kernel to another node (source-NATed). Those take the common path with
/// zero ports, which plans no conntrack lookup and finds no frontend, masquerade or ICMP to
/// answer on a pod-to-pod route. Everything else stays dropped: service traffic, masquerade,
/// NodePorts, the node's own addresses. Which is which is [`nat::plan_fragment`]'s to say, by
/// the same rule that plans every packet. (A decapsulated fragment is not counted as
/// `vxlan_decap`.)
///
/// Called from the first pass only for a stage already found not to be IPv4: measured side by
/// side (interleaved runs of both bench binaries), a call from [`ingress`] itself, or a second
/// call site of [`forward_ipv4`], cost the common path 7 to 33%; this placement costs nothing
/// measurable.
#[cold]
#[inline(never)]
fn fragment(snap: &Snapshot, frame: &Frame<'_>, ingress: InterfaceId) -> Stage {
    let drop = |r| Stage::Done(Verdict::Drop(r));
    let (origin, pod) = match snap.interface_role(ingress) {
        Some(InterfaceRole::Pod { ip }) => (Origin::Pod, Some(ip)),
        Some(InterfaceRole::Host) => (Origin::Host, None),
        Some(InterfaceRole::Uplink) => (Origin::Overlay, None),
        None => return drop(DropReason::UnknownInterface),
    };
    let meta = match parse::parse_fragment(frame.data(), ETHERNET_HEADER_LEN, frame.tail()) {
        Ok(meta) => meta,
        Err(r) => return drop(r),
    };
    if pod.is_some_and(|ip| ip != meta.key.src_ip) {
        return drop(DropReason::SpoofedSource);
    }
    match nat::plan_fragment(snap, &meta, origin) {
        Some(plan) => Stage::Ipv4(meta, origin, plan),
        None => drop(DropReason::Ipv4Fragment),
    }
}

/// The IPv4 stages after ingress, ICMP and NAT first, then wherever each [`Next`] leads.
///
/// The one place the stage graph is written. The loop ends: output leads to encapsulation or
/// a verdict, encapsulation to a verdict, and any of them to at most one ICMP error, which is
/// output in turn but never answered with another (it is small enough for the tunnel, the
/// snapshot guarantees the uplink MTU for that, and starts with a fresh TTL).
///
/// The stages of the common paths are inlined here, output at both its call sites so that
/// each way into it is a straight path (see `output::deliver`): measured side by side against
/// stages calling stages, no bench case is slower, and encapsulation is faster.
#[inline]
fn forward_ipv4(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    mut meta: parse::Ipv4Meta,
    origin: Origin,
    plan: nat::Plan,
) -> Verdict {
    let mut next = match icmp::input(ctx, frame, &mut meta) {
        Some(next) => next,
        None => nat::translate(ctx, frame, &mut meta, origin, plan),
    };
    loop {
        next = match next {
            Next::OutputTranslated => output::deliver(ctx, frame, &meta, origin, true, None),
            Next::OutputUntranslated(route) => {
                output::deliver(ctx, frame, &meta, origin, false, Some(route))
            }
            Next::Encap(idx) => vxlan::encap(ctx, frame, &mut meta, idx),
            Next::IcmpError(error) => icmp::error(ctx, frame, &mut meta, error),
            Next::Done(verdict) => return verdict,
        };
    }
}

/// A packet of `meta.ip_len()` bytes leaving on a link that takes IP packets of `mtu` bytes
/// once `overhead` bytes of VXLAN encapsulation are added (0 for none): what the kernel does with a
/// packet too big for its route. TCP (not a fragment) is segmented, as the kernel's GSO cuts a
/// large segment whatever its DF bit (the stream is the sender's, only its cut changes);
/// anything else with DF is answered with fragmentation needed ([`IcmpError::FragNeeded`],
/// announcing `mtu - overhead`); without DF it is fragmented. Returns the [`Next`] of the
/// error, or `None` after marking the frame to be cut ([`Frame::set_split`]) on the way out.
#[cold]
#[inline(never)]
pub(crate) fn too_big(
    frame: &mut Frame<'_>,
    meta: &parse::Ipv4Meta,
    mtu: u16,
    overhead: u16,
) -> Option<Next> {
    let fragment = frame
        .data()
        .get(meta.l3() + 6..meta.l3() + 8)
        .is_some_and(|f| parse::be16(f, 0) & 0x3fff != 0);
    if meta.dont_frag && (meta.key.proto != crate::flow::proto::TCP || fragment) {
        return Some(Next::IcmpError(IcmpError::FragNeeded {
            mtu: mtu - overhead,
        }));
    }
    frame.set_split(Split {
        mtu,
        vxlan: overhead != 0,
    });
    None
}

/// Validate an Ethernet/IPv4 frame the way the pipeline's ingress does and return its 5-tuple,
/// without touching any table. For `kxdp trace`, tests, and the parse benchmark.
pub fn inspect(frame: &[u8]) -> Result<crate::flow::FlowKey, DropReason> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(DropReason::FrameTooShort);
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return Err(DropReason::UnsupportedEthertype);
    }
    parse::parse_ipv4(frame, ETHERNET_HEADER_LEN, 0).map(|m| m.key)
}

#[cfg(test)]
mod tests {
    /// The stage files, by module name.
    const STAGES: [(&str, &str); 5] = [
        ("arp", include_str!("arp.rs")),
        ("icmp", include_str!("icmp.rs")),
        ("nat", include_str!("nat.rs")),
        ("output", include_str!("output.rs")),
        ("vxlan", include_str!("vxlan.rs")),
    ];

    /// The leading identifier of `s`.
    fn ident(s: &str) -> &str {
        let s = s.trim_start();
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }

    /// The module each `super::` or `pipeline::` path in `source` starts with, members of
    /// `super::{...}` groups included.
    fn modules_named(source: &str) -> Vec<&str> {
        let mut names = Vec::new();
        for prefix in ["super::", "pipeline::"] {
            for (at, _) in source.match_indices(prefix) {
                let rest = &source[at + prefix.len()..];
                match rest.strip_prefix('{') {
                    Some(group) => {
                        let group = &group[..group.find('}').unwrap_or(group.len())];
                        names.extend(group.split(',').map(ident));
                    }
                    None => names.push(ident(rest)),
                }
            }
        }
        names
    }

    /// Stages don't call stages (STYLE habit 12): each returns a `Next` and `forward_ipv4`
    /// carries it out, so no stage file names another stage.
    #[test]
    fn no_stage_file_names_another_stage() {
        for (name, source) in STAGES {
            let named = modules_named(source);
            assert!(named.contains(&"Ctx"), "{name}.rs: the check reads nothing");
            for (other, _) in STAGES {
                assert!(
                    other == name || !named.contains(&other),
                    "pipeline/{name}.rs names stage `{other}`: return a `Next` instead"
                );
            }
        }
    }
}
