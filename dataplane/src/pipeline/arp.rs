//! Proxy ARP for pods and the host interface.
//!
//! A pod's veth is point to point: whatever address the pod asks for (its gateway, or a
//! neighbour it believes is on-link), the answer is the gateway MAC, and kxdp routes. Requests
//! for the asker's own address (duplicate-address probes, gratuitous ARP) are never answered,
//! or the pod would think its address taken.

use core::net::Ipv4Addr;

use super::rewrite::set_macs;
use super::{Ctx, Frame, Verdict};
use crate::counters::Event;
use crate::reason::DropReason;
use crate::wire::{ArpPacket, ARP_ETHERNET_IPV4_LEN as ARP_LEN, ETHERNET_HEADER_LEN};

#[cold]
pub(crate) fn answer(ctx: &Ctx<'_>, frame: &mut Frame<'_>) -> Verdict {
    let Some(arp) = frame
        .data()
        .get(ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ARP_LEN)
    else {
        return Verdict::Drop(DropReason::MalformedArp);
    };
    // Ethernet (1), IPv4 (0x0800), 6-byte hardware and 4-byte protocol addresses.
    if arp[0..6] != [0, 1, 8, 0, 6, 4] {
        return Verdict::Drop(DropReason::MalformedArp);
    }
    let view = ArpPacket::new_unchecked(arp);
    if u16::from(view.operation()) != 1 {
        return Verdict::Drop(DropReason::ArpNotRequest);
    }
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(view.source_hardware_addr());
    let sender_ip =
        Ipv4Addr::from(<[u8; 4]>::try_from(view.source_protocol_addr()).unwrap_or([0; 4]));
    let target_ip =
        Ipv4Addr::from(<[u8; 4]>::try_from(view.target_protocol_addr()).unwrap_or([0; 4]));
    if sender_ip.is_unspecified() || sender_ip == target_ip {
        return Verdict::Drop(DropReason::ArpNotRequest);
    }
    let gw = ctx.snap.node.gateway_mac;
    let d = &mut frame.data_mut()[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ARP_LEN];
    let mut reply = ArpPacket::new_unchecked(d);
    reply.set_operation(crate::wire::ArpOperation::Reply);
    reply.set_target_hardware_addr(&sender_mac);
    reply.set_target_protocol_addr(&sender_ip.octets());
    reply.set_source_hardware_addr(&gw.0);
    reply.set_source_protocol_addr(&target_ip.octets());
    set_macs(
        frame.data_mut(),
        crate::wire::EthernetAddress(sender_mac),
        gw,
    );
    ctx.counters.inc(Event::ArpReply);
    Verdict::Reply
}
