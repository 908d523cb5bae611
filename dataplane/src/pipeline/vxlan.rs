//! VXLAN (RFC 7348) as flannel's backend speaks it: decapsulation from known nodes (at
//! ingress) of what those nodes may send, encapsulation from the remote node's precomputed
//! template (after output, which leads here with [`Next::Encap`]). A DF packet too big for the
//! tunnel, or one whose TTL runs out here, leads on to an ICMP error ([`Next::IcmpError`]).

use super::parse::{self, Ipv4Meta};
use super::rewrite::decrement_ttl;
use super::{too_big, Ctx, Frame, IcmpError, Next, Verdict};
use crate::counters::Event;
use crate::flow::proto;
use crate::reason::DropReason;
use crate::tables::ENCAP_TEMPLATE_LEN;
use crate::wire::{
    checksum, vxlan::VxlanPacket, ETHERNET_HEADER_LEN, UDP_HEADER_LEN, VXLAN_HEADER_LEN,
    VXLAN_OVERHEAD,
};

/// Outer UDP source ports come from this range, like Linux's vxlan driver with the default
/// `ip_local_port_range`, so ECMP and RSS on the underlay spread flows.
const SRC_PORT_MIN: u16 = 32768;
const SRC_PORT_SPAN: u64 = 61000 - 32768;

/// Whether an uplink packet is VXLAN addressed to this node.
#[inline]
pub(crate) fn is_ours(ctx: &Ctx<'_>, meta: &Ipv4Meta) -> bool {
    meta.key.proto == proto::UDP
        && meta.key.dst_port == ctx.snap.node.vxlan_port
        && ctx.snap.is_node_ip(meta.key.dst_ip)
}

/// Strip the outer headers of a VXLAN packet from a known node and validate the inner packet.
///
/// The underlay is closed: the inner source must be the sending node's, an address of its pod
/// CIDR (its pods, and its own traffic, which flannel and kxdp send from the CIDR's gateway
/// address) or its underlay address (ICMP errors a node sends itself), so a packet forged with
/// a known node's outer address cannot pose as another node's pod, a local pod or the outside.
#[inline]
pub(crate) fn decap(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    outer: &Ipv4Meta,
) -> Result<Ipv4Meta, DropReason> {
    let vx_at = outer.l4() + UDP_HEADER_LEN;
    let inner_at = vx_at + VXLAN_HEADER_LEN;
    let end = outer.l3() + outer.ip_len();
    // The inner Ethernet header must be in this buffer too (a tail holds payload only).
    if end < inner_at + ETHERNET_HEADER_LEN || frame.len() < inner_at + ETHERNET_HEADER_LEN {
        return Err(DropReason::VxlanTruncated);
    }
    let vx = VxlanPacket::new_unchecked(&frame.data()[vx_at..inner_at]);
    if !vx.has_valid_flags() {
        return Err(DropReason::VxlanBadFlags);
    }
    if vx.vni() != ctx.snap.node.vxlan_vni {
        return Err(DropReason::VxlanUnknownVni);
    }
    let Some(sender) = ctx.snap.remote_node_by_ip(outer.key.src_ip) else {
        return Err(DropReason::VxlanUnknownSource);
    };
    // Cut Ethernet padding after the outer packet, then the outer headers.
    let ok = frame.set_len(end) && frame.pull_head(inner_at);
    debug_assert!(ok, "bounds were checked above");
    let d = frame.data();
    if u16::from_be_bytes([d[12], d[13]]) != super::ETHERTYPE_IPV4 {
        return Err(DropReason::VxlanInnerNotIpv4);
    }
    let inner = parse::parse_ipv4(d, ETHERNET_HEADER_LEN, frame.tail())?;
    if !sender.sends_from(inner.key.src_ip) {
        return Err(DropReason::VxlanForeignInnerSource);
    }
    ctx.counters.inc(Event::VxlanDecap);
    Ok(inner)
}

/// Encapsulate toward remote node `idx`.
#[inline]
pub(crate) fn encap(ctx: &Ctx<'_>, frame: &mut Frame<'_>, meta: &mut Ipv4Meta, idx: u32) -> Next {
    let node = &ctx.snap.node;
    let Some(remote) = ctx.snap.remote_node(idx) else {
        return Next::Done(Verdict::Drop(DropReason::NoRoute));
    };
    let Some(template) = &remote.encap else {
        return Next::Done(Verdict::Drop(DropReason::NeighborUnresolved));
    };
    if meta.ip_len() + VXLAN_OVERHEAD > usize::from(node.uplink_mtu) {
        if let Some(next) = too_big(frame, meta, node.uplink_mtu, VXLAN_OVERHEAD as u16) {
            return next;
        }
    }
    debug_assert_eq!(meta.l3(), ETHERNET_HEADER_LEN);
    if !decrement_ttl(&mut frame.data_mut()[meta.l3()..]) {
        return Next::IcmpError(IcmpError::TimeExceeded);
    }
    // Ethernet padding after the packet is cut (rarely there: asked only then; the same test
    // inside `Frame::set_len` cost every caller an instruction a packet, in callgrind).
    let inner_len = meta.l3() + meta.ip_len();
    let cut = frame.total_len() == inner_len || frame.set_len(inner_len);
    if !(cut && frame.push_head(VXLAN_OVERHEAD)) {
        return Next::Done(Verdict::Drop(DropReason::NoHeadroom));
    }
    // Saturated for an inner packet within 50 bytes of 64 KiB (marked to be cut, so never
    // sent as it is: see `offload`'s headers).
    let outer_ip_len = (VXLAN_OVERHEAD + meta.ip_len()).min(usize::from(u16::MAX)) as u16;
    let src_port = SRC_PORT_MIN + ((u64::from(meta.hash() as u32) * SRC_PORT_SPAN) >> 32) as u16;
    let d = frame.data_mut();
    d[..ENCAP_TEMPLATE_LEN].copy_from_slice(&template.bytes);
    d[16..18].copy_from_slice(&outer_ip_len.to_be_bytes());
    let csum = checksum::fold(template.ip_partial_sum + u32::from(outer_ip_len));
    d[24..26].copy_from_slice(&csum.to_be_bytes());
    d[34..36].copy_from_slice(&src_port.to_be_bytes());
    d[38..40].copy_from_slice(&(outer_ip_len - 20).to_be_bytes());
    ctx.counters.inc(Event::VxlanEncap);
    Next::Done(Verdict::Transmit(node.uplink))
}
