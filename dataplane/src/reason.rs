//! The one numbered list of why a packet was dropped or handed to the host.
//!
//! Each reason is declared once, here, with a stable snake_case name and a sentence a person can
//! act on (see [`counter_list!`](crate::counter_list)). The counters, the metrics and `kxdp
//! trace` all use these numbers and names; a number, once given, is never reused for another
//! meaning.

crate::counter_list! {
    /// Why the pipeline dropped a packet.
    pub enum DropReason {
        FrameTooShort = 0 => ("frame_too_short", "frame shorter than an Ethernet header"),
        UnsupportedEthertype = 1 => ("unsupported_ethertype", "neither IPv4 nor ARP, from a pod (kxdp routes IPv4 only)"),
        MalformedArp = 2 => ("malformed_arp", "ARP packet truncated or not Ethernet/IPv4"),
        ArpNotRequest = 3 => ("arp_not_request", "ARP from a pod that is not a request kxdp answers"),
        TruncatedIpv4 = 4 => ("truncated_ipv4", "IPv4 header or total length runs past the frame"),
        BadIpv4Header = 5 => ("bad_ipv4_header", "IPv4 version is not 4, IHL below 5, or total length below the header"),
        Ipv4Options = 6 => ("ipv4_options", "IPv4 header carries options, which kxdp does not forward"),
        Ipv4Fragment = 7 => ("ipv4_fragment", "IPv4 fragment of traffic kxdp would translate (service, masquerade, a service endpoint's); kxdp does not reassemble"),
        TruncatedL4 = 8 => ("truncated_l4", "TCP, UDP or ICMP header runs past the IPv4 payload"),
        TtlExceeded = 9 => ("ttl_exceeded", "TTL would reach zero on forwarding, about an ICMP error or a later fragment (anything else gets time exceeded back)"),
        SpoofedSource = 10 => ("spoofed_source", "source address is not the address of the pod on this interface"),
        UnknownInterface = 11 => ("unknown_interface", "frame arrived on an interface the snapshot does not know"),
        VxlanTruncated = 12 => ("vxlan_truncated", "VXLAN header or inner Ethernet frame truncated"),
        VxlanBadFlags = 13 => ("vxlan_bad_flags", "VXLAN flags lack the I bit or set reserved bits"),
        VxlanUnknownVni = 14 => ("vxlan_unknown_vni", "VXLAN network identifier is not this cluster's"),
        VxlanUnknownSource = 15 => ("vxlan_unknown_source", "VXLAN from an underlay address that is no known node"),
        VxlanInnerNotIpv4 = 16 => ("vxlan_inner_not_ipv4", "decapsulated frame is not IPv4"),
        OverlayNotLocal = 17 => ("overlay_not_local", "decapsulated packet is not for a pod or the node here"),
        ServiceNotFound = 18 => ("service_not_found", "destination is in the service CIDR but no service port is allocated there"),
        UnsupportedProtocol = 19 => ("unsupported_protocol", "protocol kxdp cannot translate (service or masquerade traffic that is not TCP, UDP or ICMP echo)"),
        ConntrackFull = 20 => ("conntrack_full", "conntrack table full; new flow refused (established flows are never evicted)"),
        SnatPortsExhausted = 21 => ("snat_ports_exhausted", "no free source port in the masquerade range for this destination"),
        NoRoute = 22 => ("no_route", "no route to the destination"),
        NeighborUnresolved = 23 => ("neighbor_unresolved", "next hop's MAC address is not known yet"),
        TooBigUnsplit = 24 => ("too_big_unsplit", "frame larger than the link it leaves on that could not be segmented or fragmented (malformed, or no free buffer)"),
        IcmpErrorUntranslatable = 25 => ("icmp_error_untranslatable", "ICMP error too short to carry the offending header"),
        NoHeadroom = 26 => ("no_headroom", "frame buffer lacks the headroom or tailroom the rewrite needs"),
        ServiceNoLocalEndpoints = 27 => ("service_no_local_endpoints", "traffic policy Local and no usable endpoint on this node (kube-proxy drops too)"),
        ConntrackClash = 28 => ("conntrack_clash", "the translated flow's reply would collide with another tracked flow"),
        LoadBalancerSourceRange = 29 => ("load_balancer_source_range", "new flow to a load-balancer address from a source outside the service's loadBalancerSourceRanges"),
        VxlanForeignInnerSource = 30 => ("vxlan_foreign_inner_source", "decapsulated packet's source is neither in the sending node's pod CIDR nor its underlay address"),
        PolicyDeniedEgress = 31 => ("policy_denied_egress", "new flow from a local pod that NetworkPolicies select for egress, and none of them allows it"),
        PolicyDeniedIngress = 32 => ("policy_denied_ingress", "new flow to a local pod that NetworkPolicies select for ingress, and none of them allows it"),
    }
}

crate::counter_list! {
    /// Why the pipeline handed a packet to the node's own kernel stack.
    pub enum PassReason {
        NotIpv4 = 0 => ("not_ipv4", "not IPv4 (ARP, IPv6, LLDP...) on the uplink or host interface"),
        ForNode = 1 => ("for_node", "addressed to the node itself and to no service or translated flow"),
        NotOwned = 2 => ("not_owned", "IPv4 on the uplink that kxdp does not own"),
        Ipv4Unsupported = 3 => ("ipv4_unsupported", "IPv4 with options, fragmented or malformed on the uplink: the kernel decides"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::tests::check_list;

    #[test]
    fn numbers_are_dense_unique_and_round_trip() {
        check_list::<DropReason>();
        check_list::<PassReason>();
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_number(r.number()), Some(*r));
        }
        assert_eq!(DropReason::from_number(DropReason::COUNT as u8), None);
    }
}
