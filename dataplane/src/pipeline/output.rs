//! Output: route the packet's (translated) destination and prepare the frame for it.

use super::parse::Ipv4Meta;
use super::{vxlan, Ctx, Frame, Origin, Verdict};
use crate::counters::Event;
use crate::reason::{DropReason, PassReason};
use crate::tables::RouteTarget;
use crate::wire::MacAddr;

/// Write the Ethernet addresses.
#[inline]
pub(crate) fn set_macs(frame: &mut Frame<'_>, dst: MacAddr, src: MacAddr) {
    if let Some(eth) = frame.data_mut().first_chunk_mut::<12>() {
        eth[..6].copy_from_slice(&dst.0);
        eth[6..].copy_from_slice(&src.0);
    }
}

/// Route the packet (`route`, when the caller already looked it up). `translated` says whether the NAT or ICMP stages rewrote it (or built it):
/// traffic from the overlay or the uplink may only leave the node again when it belongs to a
/// flow this node translated, so kxdp never forwards traffic it does not own back out.
#[inline]
pub(crate) fn deliver(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
    origin: Origin,
    translated: bool,
    route: Option<RouteTarget>,
) -> Verdict {
    let snap = ctx.snap;
    let node = &snap.node;
    let dst = meta.key.dst_ip;
    match route.unwrap_or_else(|| snap.route(dst)) {
        RouteTarget::LocalPods => {
            let Some(pod) = snap.local_pod(dst) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            if !super::rewrite::decrement_ttl(&mut frame.data_mut()[meta.l3..]) {
                return super::icmp::time_exceeded(ctx, frame, meta, origin);
            }
            set_macs(frame, pod.mac, node.gateway_mac);
            ctx.counters.inc(Event::LocalForward);
            Verdict::Transmit(pod.iface)
        }
        RouteTarget::RemoteNode(idx) => {
            if origin == Origin::Overlay && !translated {
                return Verdict::Drop(DropReason::OverlayNotLocal);
            }
            vxlan::encap(ctx, frame, meta, origin, idx)
        }
        // The node's own traffic comes back to it only as something kxdp built or translated
        // (a reply from the gateway, an ICMP error, a reverse-NATed answer); anything else
        // from the host to the host would loop.
        RouteTarget::Node if origin == Origin::Host && !translated => {
            Verdict::Drop(DropReason::NoRoute)
        }
        RouteTarget::Node => {
            set_macs(frame, node.host_mac, node.gateway_mac);
            Verdict::ToHost(PassReason::ForNode)
        }
        RouteTarget::ServiceCidr => Verdict::Drop(DropReason::ServiceNotFound),
        RouteTarget::ClusterUnassigned => Verdict::Drop(DropReason::NoRoute),
        RouteTarget::External => {
            if !translated {
                return match origin {
                    Origin::Uplink => Verdict::ToHost(PassReason::NotOwned),
                    Origin::Overlay => Verdict::Drop(DropReason::OverlayNotLocal),
                    Origin::Host => Verdict::Drop(DropReason::NoRoute),
                    Origin::Pod => Verdict::Drop(DropReason::UnsupportedProtocol),
                };
            }
            let Some(mac) = snap.next_hop_mac(dst) else {
                return Verdict::Drop(DropReason::NeighborUnresolved);
            };
            if !super::rewrite::decrement_ttl(&mut frame.data_mut()[meta.l3..]) {
                return super::icmp::time_exceeded(ctx, frame, meta, origin);
            }
            set_macs(frame, mac, node.uplink_mac);
            Verdict::Transmit(node.uplink)
        }
    }
}
