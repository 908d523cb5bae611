//! Output: route the packet's (translated) destination and prepare the frame for it.
//!
//! The last stage for most packets: a local pod gets the frame with its TTL decremented and
//! its L2 header rewritten; another node's pods lead on to encapsulation ([`Next::Encap`]); a
//! TTL that runs out here leads to an ICMP error ([`Next::IcmpError`]). A packet larger than
//! the link it leaves on (a pod's, or the uplink's) is marked to be cut on the way out, or
//! answered with fragmentation needed (`too_big`).

use super::parse::Ipv4Meta;
use super::rewrite::{decrement_ttl, set_macs};
use super::{too_big, Ctx, Frame, IcmpError, Next, Origin, Verdict};
use crate::counters::Event;
use crate::reason::{DropReason, PassReason};
use crate::tables::RouteTarget;

/// Route the packet (`route`, when the caller already looked it up). `translated` says whether
/// the NAT or ICMP stages rewrote it (or built it): traffic from the overlay or the uplink may
/// only leave the node again when it belongs to a flow this node translated, so kxdp never
/// forwards traffic it does not own back out.
///
/// Always inlined, at both of the pipeline loop's call sites ([`Next::OutputTranslated`],
/// [`Next::OutputUntranslated`]), so each specializes to a straight path: outlined, or
/// inlined once behind a flag, it cost the pod-to-pod case 3 to 8% (measured side by side).
#[inline(always)]
pub(crate) fn deliver(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &Ipv4Meta,
    origin: Origin,
    translated: bool,
    route: Option<RouteTarget>,
) -> Next {
    let snap = ctx.snap;
    let node = &snap.node;
    let dst = meta.key.dst_ip;
    let verdict = match route.unwrap_or_else(|| snap.route(dst)) {
        RouteTarget::LocalPods => {
            let Some(pod) = snap.local_pod(dst) else {
                return Next::Done(Verdict::Drop(DropReason::NoRoute));
            };
            // TTL and MACs through one borrow of the frame: a packet too big for the pod
            // that turns into an ICMP error is rewritten whole, addresses included.
            let d = frame.data_mut();
            if !decrement_ttl(&mut d[meta.l3()..]) {
                return Next::IcmpError(IcmpError::TimeExceeded);
            }
            set_macs(d, pod.mac, node.gateway_mac);
            if meta.ip_len() > usize::from(node.pod_mtu) {
                if let Some(next) = too_big(frame, meta, node.pod_mtu, 0) {
                    return next;
                }
            }
            ctx.counters.inc(Event::LocalForward);
            Verdict::Transmit(pod.iface)
        }
        RouteTarget::RemoteNode(idx) => {
            if origin == Origin::Overlay && !translated {
                return Next::Done(Verdict::Drop(DropReason::OverlayNotLocal));
            }
            return Next::Encap(idx);
        }
        // The node's own traffic comes back to it only as something kxdp built or translated
        // (a reply from the gateway, an ICMP error, a reverse-NATed answer); anything else
        // from the host to the host would loop.
        RouteTarget::Node if origin == Origin::Host && !translated => {
            Verdict::Drop(DropReason::NoRoute)
        }
        RouteTarget::Node => {
            set_macs(frame.data_mut(), node.host_mac, node.gateway_mac);
            Verdict::ToHost(PassReason::ForNode)
        }
        RouteTarget::ServiceCidr => Verdict::Drop(DropReason::ServiceNotFound),
        RouteTarget::ClusterUnassigned => Verdict::Drop(DropReason::NoRoute),
        RouteTarget::External => {
            if !translated {
                return Next::Done(match origin {
                    Origin::Uplink => Verdict::ToHost(PassReason::NotOwned),
                    Origin::Overlay => Verdict::Drop(DropReason::OverlayNotLocal),
                    Origin::Host => Verdict::Drop(DropReason::NoRoute),
                    Origin::Pod => Verdict::Drop(DropReason::UnsupportedProtocol),
                });
            }
            let Some(mac) = snap.next_hop_mac(dst) else {
                return Next::Done(Verdict::Drop(DropReason::NeighborUnresolved));
            };
            let d = frame.data_mut();
            if !decrement_ttl(&mut d[meta.l3()..]) {
                return Next::IcmpError(IcmpError::TimeExceeded);
            }
            set_macs(d, mac, node.uplink_mac);
            if meta.ip_len() > usize::from(node.uplink_mtu) {
                if let Some(next) = too_big(frame, meta, node.uplink_mtu, 0) {
                    return next;
                }
            }
            Verdict::Transmit(node.uplink)
        }
    };
    Next::Done(verdict)
}
