//! Multi-packet paths through the pipeline: both directions of NodePort, load-balancer,
//! hairpin, UDP service to a remote backend, and the ICMP errors of translated flows.

mod common;

use core::net::Ipv4Addr;

use common::{assert_valid, Env};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::wire::build::{FrameSpec, Ipv4Opts};
use kxdp_dataplane::wire::Icmpv4Message;
use kxdp_dataplane::{DropReason, Verdict};
use kxdp_testkit::{tcp_flags as f, Input};

/// (src, sport, dst, dport) of an output frame's IPv4 packet, VXLAN stripped.
fn tuple(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not IPv4")
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    match &s.transport {
        Some(TransportSlice::Udp(u)) if u.destination_port() == 8472 => tuple(&u.payload()[8..]),
        Some(TransportSlice::Udp(u)) => (src, u.source_port(), dst, u.destination_port()),
        Some(TransportSlice::Tcp(t)) => (src, t.source_port(), dst, t.destination_port()),
        _ => (src, 0, dst, 0),
    }
}

#[test]
fn nodeport_from_outside_is_masqueraded_and_its_replies_return_from_the_node_port() {
    let env = Env::new();
    let t = &env.t;
    let mut seen_backends = std::collections::BTreeSet::new();
    for sport in 50000..50040 {
        let syn = Input {
            ingress: t.node.uplink,
            frame: t.from_outside(t.external_ip, t.node.primary_ip()).tcp(
                sport,
                t.web_node_port,
                f::SYN,
                b"",
            ),
        };
        let (v, out) = env.run(&syn);
        assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
        assert_valid(&out, "nodeport forward");
        let (src, nat_port, backend, bport) = tuple(&out);
        assert_eq!(
            src, t.node.gateway_ip,
            "SNAT to the node's pod-network address"
        );
        assert!(t.node.masquerade_ports.contains(&nat_port));
        assert_eq!(bport, 8080);
        seen_backends.insert(backend);
        // The backend answers; from pod B directly, from the remote pod over VXLAN.
        let reply_spec =
            |src| FrameSpec::new(t.pod_b.mac, t.node.gateway_mac, src, t.node.gateway_ip);
        let reply = if backend == t.pod_b.ip {
            Input {
                ingress: t.pod_b.iface,
                frame: reply_spec(backend).tcp(8080, nat_port, f::SYN | f::ACK, b""),
            }
        } else {
            let inner = t.inner_from_node_b(backend, t.node.gateway_ip).tcp(
                8080,
                nat_port,
                f::SYN | f::ACK,
                b"",
            );
            Input {
                ingress: t.node.uplink,
                frame: t.vxlan_from_node_b().vxlan(40000, 8472, 1, &inner),
            }
        };
        let (v, out) = env.run(&reply);
        assert_eq!(v, Verdict::Transmit(t.node.uplink));
        assert_valid(&out, "nodeport reply");
        assert_eq!(
            tuple(&out),
            (t.node.primary_ip(), t.web_node_port, t.external_ip, sport)
        );
        assert_eq!(
            &out[0..6],
            &t.gateway_router_mac.0,
            "out via the uplink gateway"
        );
    }
    assert_eq!(
        seen_backends.len(),
        2,
        "Maglev spreads flows over both backends"
    );
}

#[test]
fn load_balancer_ip_is_served_like_a_node_port() {
    let env = Env::new();
    let t = &env.t;
    let (v, out) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t
            .from_outside(t.external_ip, t.web_lb_ip)
            .tcp(50000, 80, f::SYN, b""),
    });
    assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
    let (src, _, dst, dport) = tuple(&out);
    assert_eq!(src, t.node.gateway_ip);
    assert!(dst == t.pod_b.ip || dst == t.remote_pod_ip);
    assert_eq!(dport, 8080);
}

#[test]
fn hairpin_is_masqueraded_both_ways() {
    let env = Env::new();
    let t = &env.t;
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.self_cluster_ip).tcp(40000, 80, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_valid(&out, "hairpin");
    let (src, nat_port, dst, dport) = tuple(&out);
    assert_eq!((src, dst, dport), (t.node.gateway_ip, t.pod_a.ip, 8080));
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t
            .from_pod_a(t.node.gateway_ip)
            .tcp(8080, nat_port, f::SYN | f::ACK, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_valid(&out, "hairpin reply");
    assert_eq!(tuple(&out), (t.self_cluster_ip, 80, t.pod_a.ip, 40000));
    assert_eq!(env.counters.read().event(Event::Hairpin), 1);
}

#[test]
fn udp_service_to_a_remote_backend_goes_over_vxlan_and_the_reply_comes_back_translated() {
    let env = Env::new();
    let t = &env.t;
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.dns_cluster_ip).udp(33333, 53, b"query"),
    });
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_valid(&out, "dns query");
    assert_eq!(tuple(&out), (t.pod_a.ip, 33333, t.remote_pod_ip, 53));
    let inner = t
        .inner_from_node_b(t.remote_pod_ip, t.pod_a.ip)
        .udp(53, 33333, b"answer");
    let (v, out) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t.vxlan_from_node_b().vxlan(40000, 8472, 1, &inner),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_valid(&out, "dns answer");
    assert_eq!(tuple(&out), (t.dns_cluster_ip, 53, t.pod_a.ip, 33333));
}

/// The quoted packet inside an ICMP error in `frame`: (src, sport, dst, dport).
fn quoted(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16) {
    let q = &frame[14 + 20 + 8..];
    let ip = etherparse::Ipv4HeaderSlice::from_slice(q).unwrap();
    let l4 = &q[ip.slice().len()..];
    (
        ip.source_addr(),
        ip.destination_addr(),
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

#[test]
fn icmp_error_from_outside_about_a_masqueraded_flow_reaches_the_pod_translated() {
    let env = Env::new();
    let t = &env.t;
    let (_, out) = env.run(&t.case_egress(40000, f::SYN));
    let nat_port = u16::from_be_bytes([out[34], out[35]]);
    // A router on the path reports the masqueraded packet unreachable.
    let router = Ipv4Addr::new(198, 19, 0, 1);
    let error = FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            ..Ipv4Opts::default()
        },
        ..t.from_outside(router, t.node.primary_ip())
    }
    .icmp(Icmpv4Message::DstUnreachable, 1, [0; 4], &out[14..14 + 28]);
    let (v, back) = env.run(&Input {
        ingress: t.node.uplink,
        frame: error,
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_valid(&back, "translated error");
    let outer = etherparse::Ipv4HeaderSlice::from_slice(&back[14..]).unwrap();
    assert_eq!(
        outer.source_addr(),
        router,
        "a router keeps its own address"
    );
    assert_eq!(outer.destination_addr(), t.pod_a.ip);
    assert_eq!(quoted(&back), (t.pod_a.ip, t.external_ip, 40000, 443));
    assert!(t.node.masquerade_ports.contains(&nat_port));
    assert_eq!(env.counters.read().event(Event::IcmpErrorTranslated), 1);
}

#[test]
fn port_unreachable_from_a_backend_reaches_the_client_from_the_service_address() {
    let env = Env::new();
    let t = &env.t;
    // DNS's only backend is the remote pod: the query goes out over VXLAN.
    let (_, fwd) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.dns_cluster_ip).udp(5000, 53, b"q"),
    });
    // The remote pod has nothing on UDP 53 and says so about the DNATed datagram it got.
    let inner_quote = &fwd[64..64 + 28];
    let inner_error = FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            ..Ipv4Opts::default()
        },
        ..t.inner_from_node_b(t.remote_pod_ip, t.pod_a.ip)
    }
    .icmp(Icmpv4Message::DstUnreachable, 3, [0; 4], inner_quote);
    let (v, back) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t.vxlan_from_node_b().vxlan(40000, 8472, 1, &inner_error),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_valid(&back, "translated port unreachable");
    let outer = etherparse::Ipv4HeaderSlice::from_slice(&back[14..]).unwrap();
    assert_eq!(
        outer.source_addr(),
        t.dns_cluster_ip,
        "the backend speaks as the service"
    );
    assert_eq!(quoted(&back), (t.pod_a.ip, t.dns_cluster_ip, 5000, 53));
}

#[test]
fn frag_needed_for_a_dnated_packet_quotes_what_the_client_sent() {
    let env = Env::new();
    let t = &env.t;
    // DNS's backend is remote: a big DF datagram to it does not fit in the tunnel.
    let big = t.from_pod_a(t.dns_cluster_ip).udp(5000, 53, &[7u8; 1460]);
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: big.clone(),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_valid(&out, "frag needed");
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450, "tunnel MTU");
    let outer = etherparse::Ipv4HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!(outer.source_addr(), t.node.gateway_ip);
    assert_eq!(outer.destination_addr(), t.pod_a.ip);
    assert_eq!(quoted(&out), (t.pod_a.ip, t.dns_cluster_ip, 5000, 53));
    assert_eq!(env.counters.read().event(Event::IcmpFragNeeded), 1);
}

#[test]
fn node_to_remote_pods_is_masqueraded_to_the_gateway_address() {
    let env = Env::new();
    let t = &env.t;
    let host = |dst| t.from_host(dst);
    let (v, out) = env.run(&Input {
        ingress: t.node.host,
        frame: host(t.remote_pod_ip).tcp(45000, 9000, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    let (src, nat_port, dst, _) = tuple(&out);
    assert_eq!((src, dst), (t.node.gateway_ip, t.remote_pod_ip));
    let inner = t.inner_from_node_b(t.remote_pod_ip, t.node.gateway_ip).tcp(
        9000,
        nat_port,
        f::SYN | f::ACK,
        b"",
    );
    let (v, out) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t.vxlan_from_node_b().vxlan(40000, 8472, 1, &inner),
    });
    assert_eq!(v, Verdict::ToHost(kxdp_dataplane::PassReason::ForNode));
    assert_eq!(
        tuple(&out),
        (t.remote_pod_ip, 9000, t.node.primary_ip(), 45000)
    );
    assert_eq!(&out[0..6], &t.node.host_mac.0);
}

/// The fixture with one more service port, `default/extra:http` on 10.96.0.40:80/TCP.
fn with_extra_service(
    backends: Vec<kxdp_dataplane::tables::Backend>,
    external_policy: kxdp_dataplane::tables::TrafficPolicy,
    frontends: Vec<kxdp_dataplane::tables::Frontend>,
) -> Env {
    with_extra_spec(extra_spec(backends, external_policy, frontends))
}

fn extra_spec(
    backends: Vec<kxdp_dataplane::tables::Backend>,
    external_policy: kxdp_dataplane::tables::TrafficPolicy,
    frontends: Vec<kxdp_dataplane::tables::Frontend>,
) -> kxdp_dataplane::tables::ServicePortSpec {
    kxdp_dataplane::tables::ServicePortSpec {
        name: "default/extra:http".into(),
        proto: kxdp_dataplane::flow::proto::TCP,
        frontends,
        backends,
        internal_policy: kxdp_dataplane::tables::TrafficPolicy::Cluster,
        external_policy,
        client_ip_affinity: None,
        source_ranges: Vec::new(),
    }
}

/// The fixture with `spec` added.
fn with_extra_spec(spec: kxdp_dataplane::tables::ServicePortSpec) -> Env {
    use kxdp_dataplane::tables::ServicePort;
    let t = kxdp_testkit::Topology::default();
    let mut inputs = t.inputs();
    inputs
        .services
        .push(std::sync::Arc::new(ServicePort::new(spec)));
    Env::from_inputs(t, inputs, 4096)
}

const EXTRA_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);

fn cluster_ip(ip: Ipv4Addr) -> kxdp_dataplane::tables::Frontend {
    kxdp_dataplane::tables::Frontend {
        kind: kxdp_dataplane::tables::FrontendKind::ClusterIp,
        ip: Some(ip),
        port: 80,
    }
}

#[test]
fn an_endpoint_outside_the_cluster_is_reached_from_the_node_address() {
    use kxdp_dataplane::tables::{Backend, TrafficPolicy};
    // Like `default/kubernetes`: the endpoint is an API server on a node address.
    let api = Ipv4Addr::new(198, 18, 0, 2);
    let env = with_extra_service(
        vec![Backend::ready(api, 6443, false)],
        TrafficPolicy::Cluster,
        vec![cluster_ip(EXTRA_VIP)],
    );
    let t = &env.t;
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(EXTRA_VIP).tcp(40000, 80, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_valid(&out, "to the API server");
    let (src, nat_port, dst, dport) = tuple(&out);
    assert_eq!((src, dst, dport), (t.node.primary_ip(), api, 6443));
    assert_eq!(&out[0..6], &t.node_b_mac.0, "straight to the neighbour");
    let (v, back) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t
            .from_outside(api, t.node.primary_ip())
            .tcp(6443, nat_port, f::SYN | f::ACK, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_eq!(tuple(&back), (EXTRA_VIP, 80, t.pod_a.ip, 40000));
}

#[test]
fn external_traffic_policy_local_applies_to_outside_clients_only() {
    use kxdp_dataplane::tables::{Backend, Frontend, FrontendKind, TrafficPolicy};
    let lb = Ipv4Addr::new(198, 19, 1, 40);
    let env = with_extra_service(
        vec![Backend::ready(Ipv4Addr::new(10, 244, 2, 20), 8080, false)],
        TrafficPolicy::Local,
        vec![Frontend {
            kind: FrontendKind::LoadBalancer,
            ip: Some(lb),
            port: 80,
        }],
    );
    let t = &env.t;
    // From outside: no local endpoint, so dropped, as kube-proxy does.
    let (v, _) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t
            .from_outside(t.external_ip, lb)
            .tcp(50000, 80, f::SYN, b""),
    });
    assert_eq!(
        v,
        Verdict::Drop(kxdp_dataplane::DropReason::ServiceNoLocalEndpoints)
    );
    // From a pod: every endpoint, the client address kept.
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(lb).tcp(40000, 80, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_eq!(tuple(&out), (t.pod_a.ip, 40000, t.remote_pod_ip, 8080));
}

#[test]
fn a_client_port_reused_toward_two_addresses_of_one_endpoint_gets_a_new_source_port() {
    use kxdp_dataplane::tables::{Backend, TrafficPolicy};
    // default/extra shares default/api's endpoint, pod B:8443.
    let env = with_extra_service(
        vec![Backend::ready(Ipv4Addr::new(10, 244, 1, 11), 8443, true)],
        TrafficPolicy::Cluster,
        vec![cluster_ip(EXTRA_VIP)],
    );
    let t = &env.t;
    let (v, first) = env.run(&t.case_service(40000, f::SYN));
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    assert_eq!(tuple(&first), (t.pod_a.ip, 40000, t.pod_b.ip, 8443));
    let (v, second) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(EXTRA_VIP).tcp(40000, 80, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    let (src, port, dst, dport) = tuple(&second);
    assert_eq!((src, dst, dport), (t.node.gateway_ip, t.pod_b.ip, 8443));
    assert!(t.node.masquerade_ports.contains(&port));
}

#[test]
fn replies_of_a_draining_endpoint_are_still_translated() {
    let t = kxdp_testkit::Topology::default();
    let env = Env::new();
    let (_, fwd) = env.run(&t.case_service(40000, f::SYN));
    assert_eq!(tuple(&fwd).2, t.pod_b.ip);
    // A new snapshot without pod B:8443 in any service, sharing the same conntrack.
    let without = |draining: Vec<(Ipv4Addr, u8, u16)>| {
        let mut inputs = t.inputs();
        inputs.services.retain(|s| s.name() != "default/api:https");
        inputs.draining_endpoints = draining;
        kxdp_dataplane::Snapshot::build(inputs).unwrap()
    };
    let reply = t.case_service_reply(40000);
    let run = |snap: &kxdp_dataplane::Snapshot| {
        let mut buf = kxdp_testkit::FrameBuf::new(&reply.frame);
        let mut batch = [buf.packet(reply.ingress)];
        kxdp_dataplane::process_batch(&mut batch, snap, &env.ct, &env.counters, env.now);
        let [p] = batch;
        tuple(p.frame.data())
    };
    let tcp = kxdp_dataplane::flow::proto::TCP;
    assert_eq!(
        run(&without(vec![(t.pod_b.ip, tcp, 8443)])),
        (t.api_cluster_ip, 443, t.pod_a.ip, 40000),
        "listed as draining: translated"
    );
    assert_eq!(
        run(&without(vec![])),
        (t.pod_b.ip, 8443, t.pod_a.ip, 40000),
        "not listed: conntrack is not consulted for plain pod traffic"
    );
}

#[test]
fn the_node_gets_replies_kxdp_builds_for_it() {
    let env = Env::new();
    let t = &env.t;
    let host = |dst| t.from_host(dst);
    // Ping of the gateway from the node.
    let (v, out) = env.run(&Input {
        ingress: t.node.host,
        frame: host(t.node.gateway_ip).icmp_echo(true, 9, 1, b"hi"),
    });
    assert_eq!(v, Verdict::ToHost(kxdp_dataplane::PassReason::ForNode));
    assert_eq!(out[34], 0, "an echo reply");
    assert_eq!(&out[0..6], &t.node.host_mac.0);
    // A service without endpoints refuses the node at once.
    let (v, out) = env.run(&Input {
        ingress: t.node.host,
        frame: host(t.empty_cluster_ip).tcp(45000, 80, f::SYN, b""),
    });
    assert_eq!(v, Verdict::ToHost(kxdp_dataplane::PassReason::ForNode));
    assert_eq!((out[34], out[35]), (3, 3), "port unreachable");
    // The node reaching a ClusterIP is masqueraded to the gateway address.
    let (v, out) = env.run(&Input {
        ingress: t.node.host,
        frame: host(t.api_cluster_ip).tcp(45001, 443, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    let (src, _, dst, dport) = tuple(&out);
    assert_eq!((src, dst, dport), (t.node.gateway_ip, t.pod_b.ip, 8443));
    // Host traffic to the host that nothing translated would loop: dropped.
    let (v, _) = env.run(&Input {
        ingress: t.node.host,
        frame: host(t.node.primary_ip()).tcp(45002, 22, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Drop(kxdp_dataplane::DropReason::NoRoute));
}

#[test]
fn the_node_answering_a_remote_pod_from_the_gateway_address_is_not_masqueraded() {
    let env = Env::new();
    let t = &env.t;
    let (v, out) = env.run(&Input {
        ingress: t.node.host,
        frame: FrameSpec::new(
            t.node.host_mac,
            t.node.gateway_mac,
            t.node.gateway_ip,
            t.remote_pod_ip,
        )
        .tcp(80, 33000, f::SYN | f::ACK, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_eq!(tuple(&out), (t.node.gateway_ip, 80, t.remote_pod_ip, 33000));
}

/// `spec` as a fragment: MF set (`more`), `offset` bytes into its datagram, DF clear.
fn fragmented(spec: FrameSpec, more: bool, offset: u16) -> FrameSpec {
    FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            more_fragments: more,
            frag_offset: offset,
            ident: 0x4242,
            ..Ipv4Opts::default()
        },
        ..spec
    }
}

#[test]
fn fragments_between_pods_are_routed_and_those_of_translated_flows_dropped() {
    use kxdp_dataplane::DropReason;
    let env = Env::new();
    let t = &env.t;
    let payload = [0x5a; 64];
    // Pod A is no UDP service's endpoint: its UDP fragments go to pod B on this node and
    // over VXLAN to the pod on node B, the first one and a later one alike, unchanged but
    // for the TTL.
    for offset in [0, 1480] {
        let frame = fragmented(t.from_pod_a(t.pod_b.ip), true, offset).udp(5000, 6000, &payload);
        let (v, out) = env.run(&Input {
            ingress: t.pod_a.iface,
            frame: frame.clone(),
        });
        assert_eq!(v, Verdict::Transmit(t.pod_b.iface), "offset {offset}");
        assert_eq!(out[14 + 8], frame[14 + 8] - 1, "TTL decremented");
        assert_eq!(
            &out[14 + 12..],
            &frame[14 + 12..],
            "addresses and payload kept"
        );
        let frame =
            fragmented(t.from_pod_a(t.remote_pod_ip), true, offset).udp(5000, 6000, &payload);
        let (v, out) = env.run(&Input {
            ingress: t.pod_a.iface,
            frame: frame.clone(),
        });
        assert_eq!(v, Verdict::Transmit(t.node.uplink), "offset {offset}");
        let inner = &out[14 + 20 + 8 + 8..];
        assert_eq!(&inner[14 + 12..], &frame[14 + 12..], "encapsulated whole");
    }
    // The last fragment (MF clear, offset set) of a big echo reply from node B's pod (ICMP:
    // no service's endpoint), decapsulated, reaches pod A.
    let inner = fragmented(
        t.inner_from_node_b(t.remote_pod_ip, t.pod_a.ip),
        false,
        1480,
    )
    .ipv4(kxdp_dataplane::wire::IpProtocol::Icmp, &payload);
    let (v, _) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t.vxlan_from_node_b().vxlan(40000, 8472, 1, &inner),
    });
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    let c = env.counters.read();
    assert_eq!(c.drop(DropReason::Ipv4Fragment), 0, "{c:?}");

    // What would be translated is dropped, named: to a ClusterIP; from a service's endpoint
    // (its packets may be replies to reverse-NAT; the remote pod serves DNS over UDP); to the
    // outside (masquerade). A pod's fragment with another's source is spoofed. Fragments on
    // the uplink are the kernel's.
    let mut spoofed = fragmented(t.from_pod_a(t.pod_b.ip), true, 0);
    spoofed.src = t.pod_b.ip;
    let (v, _) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: spoofed.udp(5000, 6000, &payload),
    });
    assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource));
    let dropped = [
        fragmented(t.from_pod_a(t.dns_cluster_ip), true, 0).udp(5000, 53, &payload),
        fragmented(t.from_pod_a(t.dns_cluster_ip), false, 1480).udp(5000, 53, &payload),
        fragmented(t.from_pod_a(t.external_ip), true, 0).udp(5000, 53, &payload),
    ];
    for frame in dropped {
        let (v, _) = env.run(&Input {
            ingress: t.pod_a.iface,
            frame,
        });
        assert_eq!(v, Verdict::Drop(DropReason::Ipv4Fragment));
    }
    let from_endpoint = fragmented(t.inner_from_node_b(t.remote_pod_ip, t.pod_a.ip), true, 0)
        .udp(53, 5000, &payload);
    let (v, _) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t.vxlan_from_node_b().vxlan(40000, 8472, 1, &from_endpoint),
    });
    assert_eq!(v, Verdict::Drop(DropReason::Ipv4Fragment));
    let c = env.counters.read();
    assert_eq!(c.drop(DropReason::Ipv4Fragment), 4, "{c:?}");
    let on_uplink = fragmented(t.from_outside(t.external_ip, t.node.primary_ip()), true, 0)
        .udp(5000, 30080, &payload);
    let (v, _) = env.run(&Input {
        ingress: t.node.uplink,
        frame: on_uplink,
    });
    assert_eq!(
        v,
        Verdict::ToHost(kxdp_dataplane::PassReason::Ipv4Unsupported)
    );
}

#[test]
fn a_ttl_running_out_here_gets_time_exceeded_from_the_gateway() {
    use kxdp_dataplane::DropReason;
    let env = Env::new();
    let t = &env.t;
    let last_hop = |spec: FrameSpec| FrameSpec {
        ip: Ipv4Opts {
            ttl: 1,
            ..Ipv4Opts::default()
        },
        ..spec
    };
    // To a pod on this node, to the pod on node B (the tunnel), and through the DNS ClusterIP
    // to its remote backend: each comes back as time exceeded from the gateway address,
    // quoting what the client sent.
    for (to, port) in [
        (t.pod_b.ip, 6000),
        (t.remote_pod_ip, 6000),
        (t.dns_cluster_ip, 53),
    ] {
        let (v, out) = env.run(&Input {
            ingress: t.pod_a.iface,
            frame: last_hop(t.from_pod_a(to)).udp(5000, port, b"probe"),
        });
        assert_eq!(v, Verdict::Transmit(t.pod_a.iface), "to {to}");
        assert_valid(&out, "time exceeded");
        let icmp = &out[34..];
        assert_eq!((icmp[0], icmp[1]), (11, 0), "time exceeded in transit");
        let outer = etherparse::Ipv4HeaderSlice::from_slice(&out[14..]).unwrap();
        assert_eq!(outer.source_addr(), t.node.gateway_ip);
        assert_eq!(outer.destination_addr(), t.pod_a.ip);
        assert_eq!(quoted(&out), (t.pod_a.ip, to, 5000, port));
    }
    assert_eq!(env.counters.read().event(Event::IcmpTimeExceeded), 3);
    // Never an error about an error.
    let error = last_hop(t.from_pod_a(t.pod_b.ip)).icmp(
        Icmpv4Message::DstUnreachable,
        3,
        [0; 4],
        &[0x45; 28],
    );
    let (v, _) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: error,
    });
    assert_eq!(v, Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(env.counters.read().event(Event::IcmpTimeExceeded), 3);
}

/// A frame larger than a buffer (multi-buffer AF_XDP): the pipeline reads and rewrites the
/// headers in the first buffer, keeps the tail, and marks for cutting what is too big for the
/// link it leaves on: TCP segmented whatever its DF, other packets fragmented without DF or
/// answered with fragmentation needed (naming that link's MTU) with it.
#[test]
fn large_frames_are_forwarded_with_their_tail_and_cut_only_for_smaller_links() {
    use kxdp_dataplane::Split;
    let env = Env::new();
    let t = &env.t;
    let payload = vec![7u8; 60_000];
    let no_df = |spec: FrameSpec| FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            ..spec.ip
        },
        ..spec
    };
    // A pod's 60 KB TCP segment to a remote pod: encapsulated, to be segmented at the uplink's
    // MTU with the outer headers repeated; the tail is kept.
    let big_tcp = t.from_pod_a(t.remote_pod_ip).tcp(40000, 80, 0x18, &payload);
    let (v, out, tail, split) = env.run_large(t.pod_a.iface, &big_tcp, 1500);
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_eq!(
        split,
        Some(Split {
            mtu: 1500,
            vxlan: true
        })
    );
    assert_eq!(
        out.len() + tail,
        big_tcp.len() + 50,
        "encapsulated, tail kept"
    );
    // The same to a local pod whose MTU (1450 in the fixture) it exceeds: segmented, plain.
    let local = t.from_pod_a(t.pod_b.ip).tcp(40000, 80, 0x18, &payload);
    let (v, out, tail, split) = env.run_large(t.pod_a.iface, &local, 1500);
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    assert_eq!(
        split,
        Some(Split {
            mtu: 1450,
            vxlan: false
        })
    );
    assert_eq!(out.len() + tail, local.len());
    // Leaving the cluster (masqueraded): cut at the uplink's MTU, plain; the translation is
    // in the first buffer.
    let egress = t.from_pod_a(t.external_ip).tcp(40001, 443, 0x02, &payload);
    let (v, out, _, split) = env.run_large(t.pod_a.iface, &egress, 1500);
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_eq!(
        split,
        Some(Split {
            mtu: 1500,
            vxlan: false
        })
    );
    let src = Ipv4Addr::new(out[26], out[27], out[28], out[29]);
    assert_eq!(src, t.node.primary_ip(), "masqueraded");
    // UDP without DF is fragmented; with DF it is answered, from the first buffer alone.
    let udp = no_df(t.from_pod_a(t.remote_pod_ip)).udp(5000, 53, &payload);
    let (v, _, _, split) = env.run_large(t.pod_a.iface, &udp, 1500);
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_eq!(
        split,
        Some(Split {
            mtu: 1500,
            vxlan: true
        })
    );
    let udp_df = t.from_pod_a(t.remote_pod_ip).udp(5000, 53, &payload);
    let (v, out, tail, split) = env.run_large(t.pod_a.iface, &udp_df, 1500);
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_eq!((tail, split), (0, None), "the error is small and whole");
    assert_valid(&out, "fragmentation needed for a large frame");
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1450,
        "the tunnel's MTU"
    );
    // A frame that fits its link leaves whole and unmarked.
    let small = t.from_pod_a(t.pod_b.ip).tcp(40002, 80, 0x18, &[1u8; 1000]);
    let (v, _, tail, split) = env.run_large(t.pod_a.iface, &small, 600);
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    assert_eq!((tail, split), (small.len() - 600, None));
    // A total length beyond the frame's bytes, tail included, is truncated.
    let mut short = big_tcp.clone();
    short.truncate(big_tcp.len() - 1);
    let (v, ..) = env.run_large(t.pod_a.iface, &short, 1500);
    assert_eq!(v, Verdict::Drop(DropReason::TruncatedIpv4));
}

/// What the pipeline marks for cutting, `offload` cuts into frames that fit the link and are
/// valid: the pipeline's `Split` (the link's MTU, whether VXLAN) is all the cutter needs, and
/// the frame is its rewritten first buffer followed by the untouched tail.
#[test]
fn frames_marked_for_splitting_are_cut_by_offload_to_fit() {
    use kxdp_dataplane::offload::{fragment, segment, Encap, Fragmented, FrameSink};

    #[derive(Default)]
    struct Frames(Vec<Vec<u8>>);
    impl FrameSink for Frames {
        fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
            self.0.push(vec![0; len]);
            self.0.last_mut().map(|b| &mut b[..])
        }
        fn commit(&mut self, _len: usize) {}
    }

    let env = Env::new();
    let t = &env.t;
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let udp_spec = FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            ..Ipv4Opts::default()
        },
        ..t.from_pod_a(t.remote_pod_ip)
    };
    let cases = [
        (
            "tcp to a remote pod",
            t.from_pod_a(t.remote_pod_ip).tcp(40000, 80, 0x18, &payload),
        ),
        (
            "tcp to a local pod",
            t.from_pod_a(t.pod_b.ip).tcp(40000, 80, 0x18, &payload),
        ),
        (
            "tcp leaving the cluster",
            t.from_pod_a(t.external_ip).tcp(40001, 443, 0x10, &payload),
        ),
        ("udp to a remote pod", udp_spec.udp(5000, 53, &payload)),
    ];
    for (what, frame) in cases {
        let first = 1500;
        let (v, out, tail, split) = env.run_large(t.pod_a.iface, &frame, first);
        assert!(matches!(v, Verdict::Transmit(_)), "{what}: {v:?}");
        let split = split.unwrap_or_else(|| panic!("{what}: not marked"));
        let encap = if split.vxlan {
            Encap::Vxlan
        } else {
            Encap::Plain
        };
        let pieces = [&out[..], &frame[first..]];
        assert_eq!(pieces[1].len(), tail);
        let mtu = usize::from(split.mtu);
        let mut sink = Frames::default();
        let n = if frame[23] == 6 {
            segment(&pieces, encap, mtu, &mut sink).unwrap()
        } else {
            match fragment(&pieces, encap, mtu, &mut sink).unwrap() {
                Fragmented::Frames(n) => n,
                other => panic!("{what}: {other:?}"),
            }
        };
        assert_eq!(n, sink.0.len());
        assert!(n > 1, "{what}");
        // Every frame fits and is valid, and the payload arrives whole and in order.
        let mut data = Vec::new();
        for (i, f) in sink.0.iter().enumerate() {
            assert!(f.len() - 14 <= mtu, "{what}: frame {i} exceeds {mtu}");
            assert_valid(f, &format!("{what}: frame {i}"));
            let inner = if split.vxlan { &f[50..] } else { &f[..] };
            let l4 = &inner[34..];
            data.extend_from_slice(if inner[23] == 6 {
                &l4[usize::from(l4[12] >> 4) * 4..]
            } else {
                l4
            });
        }
        let skip = if frame[23] == 6 { 0 } else { 8 };
        assert_eq!(data[skip..], payload[..], "{what}: payload");
    }
}

/// The ICMP error `out` carries: (from, to, type, code).
fn icmp_error(out: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, u8) {
    let s = SlicedPacket::from_ethernet(out).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not IPv4")
    };
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else {
        panic!("not ICMP: {:?}", s.transport)
    };
    (
        ip.header().source_addr(),
        ip.header().destination_addr(),
        icmp.type_u8(),
        icmp.code_u8(),
    )
}

#[test]
fn a_service_address_on_a_port_it_lacks_is_rejected_and_an_unallocated_one_dropped() {
    let env = Env::new();
    let t = &env.t;
    let unreachable = |from, to| (from, to, 3, 3);
    // From a pod: a ClusterIP's other TCP port, a protocol it lacks, a ping.
    let cases: [(&str, FrameSpec, Vec<u8>); 3] = [
        ("tcp port 81", t.from_pod_a(t.web_cluster_ip), Vec::new()),
        ("udp port 80", t.from_pod_a(t.web_cluster_ip), Vec::new()),
        ("echo", t.from_pod_a(t.web_cluster_ip), Vec::new()),
    ];
    for (what, spec, _) in cases {
        let frame = match what {
            "tcp port 81" => spec.tcp(40000, 81, f::SYN, b""),
            "udp port 80" => spec.udp(40000, 80, b"x"),
            _ => spec.icmp_echo(true, 7, 1, b"hi"),
        };
        let (v, out) = env.run(&Input {
            ingress: t.pod_a.iface,
            frame,
        });
        assert_eq!(v, Verdict::Transmit(t.pod_a.iface), "{what}");
        assert_valid(&out, what);
        assert_eq!(
            icmp_error(&out),
            unreachable(t.web_cluster_ip, t.pod_a.ip),
            "{what}"
        );
    }
    // A load-balancer address from outside, on a port it lacks: back out of the uplink.
    let (v, out) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t
            .from_outside(t.external_ip, t.web_lb_ip)
            .tcp(50000, 81, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    assert_eq!(icmp_error(&out), unreachable(t.web_lb_ip, t.external_ip));
    assert_eq!(env.counters.read().event(Event::IcmpPortUnreachable), 4);
    // An address of the service CIDR no service holds: dropped, as kube-proxy drops it.
    let (v, _) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t
            .from_pod_a(Ipv4Addr::new(10, 96, 0, 98))
            .tcp(40001, 80, f::SYN, b""),
    });
    assert_eq!(v, Verdict::Drop(DropReason::ServiceNotFound));
    // An ICMP error to a service address is never answered with another.
    let quoted = t.from_pod_b(t.node.gateway_ip).udp(1, 2, b"");
    let (v, _) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.web_cluster_ip).icmp(
            Icmpv4Message::DstUnreachable,
            3,
            [0; 4],
            &quoted[14..14 + 28],
        ),
    });
    assert_eq!(v, Verdict::Drop(DropReason::ServiceNotFound));
    // The node's own address is never a rejecting service address, even as an external IP:
    // what no node port takes there is the node's kernel's.
    let env = with_extra_service(
        vec![kxdp_dataplane::tables::Backend::ready(
            t.pod_b.ip, 8080, true,
        )],
        kxdp_dataplane::tables::TrafficPolicy::Cluster,
        vec![kxdp_dataplane::tables::Frontend {
            kind: kxdp_dataplane::tables::FrontendKind::ExternalIp,
            ip: Some(t.node.primary_ip()),
            port: 8000,
        }],
    );
    let (v, _) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t
            .from_outside(t.external_ip, t.node.primary_ip())
            .tcp(50000, 22, f::SYN, b""),
    });
    assert_eq!(v, Verdict::ToHost(kxdp_dataplane::PassReason::ForNode));
}

#[test]
fn node_ports_and_load_balancers_of_cluster_policy_masquerade_pods_and_the_node() {
    let env = Env::new();
    let t = &env.t;
    for (what, dst, dport) in [
        ("node port", t.node.primary_ip(), t.web_node_port),
        ("load balancer", t.web_lb_ip, 80),
    ] {
        // A local pod: masqueraded, so the reply comes back through the node.
        let (v, out) = env.run(&Input {
            ingress: t.pod_a.iface,
            frame: t.from_pod_a(dst).tcp(40000, dport, f::SYN, b""),
        });
        assert!(matches!(v, Verdict::Transmit(_)), "{what}: {v:?}");
        let (src, nat_port, _, bport) = tuple(&out);
        assert_eq!((src, bport), (t.node.gateway_ip, 8080), "{what} from a pod");
        assert!(t.node.masquerade_ports.contains(&nat_port));
        // The node itself: masqueraded too.
        let (v, out) = env.run(&Input {
            ingress: t.node.host,
            frame: t.from_host(dst).tcp(41000, dport, f::SYN, b""),
        });
        assert!(matches!(v, Verdict::Transmit(_)), "{what}: {v:?}");
        assert_eq!(tuple(&out).0, t.node.gateway_ip, "{what} from the node");
    }
    // The ClusterIP of the same service keeps a pod's address.
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.web_cluster_ip).tcp(40001, 80, f::SYN, b""),
    });
    assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
    assert_eq!(tuple(&out).0, t.pod_a.ip);
}

#[test]
fn load_balancer_source_ranges_close_only_the_load_balancer_addresses() {
    use kxdp_dataplane::tables::{Backend, Frontend, FrontendKind, TrafficPolicy};
    use kxdp_dataplane::wire::Ipv4Cidr;
    let t = kxdp_testkit::Topology::default();
    let lb = Ipv4Addr::new(198, 19, 1, 40);
    let allowed = Ipv4Addr::new(203, 0, 113, 9);
    let refused = t.external_ip;
    assert!(!Ipv4Cidr::new(Ipv4Addr::new(203, 0, 113, 0), 24).contains_addr(&refused));
    let spec = |ranges: Vec<Ipv4Cidr>| {
        let mut s = extra_spec(
            vec![Backend::ready(t.pod_b.ip, 8080, true)],
            TrafficPolicy::Cluster,
            vec![
                cluster_ip(EXTRA_VIP),
                Frontend {
                    kind: FrontendKind::LoadBalancer,
                    ip: Some(lb),
                    port: 80,
                },
                Frontend {
                    kind: FrontendKind::NodePort,
                    ip: None,
                    port: 30400,
                },
            ],
        );
        s.source_ranges = ranges;
        s
    };
    let outside = Ipv4Cidr::new(Ipv4Addr::new(203, 0, 113, 0), 24);
    let env = with_extra_spec(spec(vec![outside]));
    let syn = |ingress, frame| Input { ingress, frame };
    let run = |env: &Env, input| env.run(&input).0;
    let lb_from = |src| t.from_outside(src, lb).tcp(50000, 80, f::SYN, b"");
    assert!(matches!(
        run(&env, syn(t.node.uplink, lb_from(allowed))),
        Verdict::Transmit(_)
    ));
    let refusal = Verdict::Drop(DropReason::LoadBalancerSourceRange);
    assert_eq!(run(&env, syn(t.node.uplink, lb_from(refused))), refusal);
    // Pods and the node are outside the range too.
    let pod = t.from_pod_a(lb).tcp(40000, 80, f::SYN, b"");
    assert_eq!(run(&env, syn(t.pod_a.iface, pod)), refusal);
    let node = t.from_host(lb).tcp(40000, 80, f::SYN, b"");
    assert_eq!(run(&env, syn(t.node.host, node.clone())), refusal);
    assert_eq!(
        env.counters
            .read()
            .drop(DropReason::LoadBalancerSourceRange),
        3
    );
    // The node port and the ClusterIP of the same service stay open to everyone.
    let np = t
        .from_outside(refused, t.node.primary_ip())
        .tcp(50001, 30400, f::SYN, b"");
    assert!(matches!(
        run(&env, syn(t.node.uplink, np)),
        Verdict::Transmit(_)
    ));
    let vip = t.from_pod_a(EXTRA_VIP).tcp(40001, 80, f::SYN, b"");
    assert!(matches!(
        run(&env, syn(t.pod_a.iface, vip)),
        Verdict::Transmit(_)
    ));
    // A range holding a node address lets the node in, from any of its addresses.
    let node_range = Ipv4Cidr::new(t.node.primary_ip(), 32);
    let env = with_extra_spec(spec(vec![outside, node_range]));
    assert!(matches!(
        run(&env, syn(t.node.host, node)),
        Verdict::Transmit(_)
    ));
}

#[test]
fn client_ip_affinity_keeps_a_backend_until_the_timeout_and_across_endpoint_changes() {
    use core::time::Duration;
    use kxdp_dataplane::tables::{Backend, Frontend, FrontendKind, TrafficPolicy};
    use kxdp_dataplane::Snapshot;
    let lb = Ipv4Addr::new(198, 19, 1, 40);
    let backend = |last| Backend::ready(Ipv4Addr::new(10, 244, 2, last), 8080, false);
    let spec = |backends: Vec<Backend>| {
        let mut s = extra_spec(
            backends,
            TrafficPolicy::Cluster,
            vec![Frontend {
                kind: FrontendKind::LoadBalancer,
                ip: Some(lb),
                port: 80,
            }],
        );
        s.client_ip_affinity = Some(Duration::from_secs(10));
        s
    };
    let snapshot = |backends| {
        let t = kxdp_testkit::Topology::default();
        let mut inputs = t.inputs();
        inputs.services.push(std::sync::Arc::new(
            kxdp_dataplane::tables::ServicePort::new(spec(backends)),
        ));
        Snapshot::build(inputs).unwrap()
    };
    let three = vec![backend(20), backend(21), backend(22)];
    let mut env = with_extra_spec(spec(three.clone()));
    let start = env.now;
    let t = env.t.clone();
    let mut sport = 50000;
    let mut connect = |env: &Env, client| {
        sport += 1;
        let (v, out) = env.run(&Input {
            ingress: t.node.uplink,
            frame: t.from_outside(client, lb).tcp(sport, 80, f::SYN, b""),
        });
        assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
        tuple(&out).2
    };
    let clients: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect();
    let first: Vec<Ipv4Addr> = clients.iter().map(|c| connect(&env, *c)).collect();
    // More endpoints: the Maglev table moves some clients, the affinity table none of them.
    let five = [three.clone(), vec![backend(23), backend(24)]].concat();
    env.snap = snapshot(five.clone());
    env.now = start + Duration::from_secs(9);
    let kept: Vec<Ipv4Addr> = clients.iter().map(|c| connect(&env, *c)).collect();
    assert_eq!(kept, first, "every client keeps its backend");
    // Each new connection refreshed the entries: 9 s more, still kept.
    env.now = start + Duration::from_secs(18);
    let kept: Vec<Ipv4Addr> = clients.iter().map(|c| connect(&env, *c)).collect();
    assert_eq!(kept, first);
    // 10 s without a new connection: placed afresh, over all five endpoints (a fresh table on
    // the same endpoints places them the same way).
    env.now = start + Duration::from_secs(28);
    let fresh = Env::from_inputs(
        t.clone(),
        {
            let mut inputs = t.inputs();
            inputs.services.push(std::sync::Arc::new(
                kxdp_dataplane::tables::ServicePort::new(spec(five.clone())),
            ));
            inputs
        },
        4096,
    );
    let placed: Vec<Ipv4Addr> = clients.iter().map(|c| connect(&env, *c)).collect();
    let expected: Vec<Ipv4Addr> = clients.iter().map(|c| connect(&fresh, *c)).collect();
    assert_eq!(placed, expected);
    assert_ne!(placed, first, "some clients moved to the new endpoints");
    // A client's backend that goes away: that client moves, the others stay.
    let gone = placed[0];
    let remaining: Vec<Backend> = five.iter().copied().filter(|b| b.ip != gone).collect();
    env.snap = snapshot(remaining);
    env.now = start + Duration::from_secs(29);
    let after: Vec<Ipv4Addr> = clients.iter().map(|c| connect(&env, *c)).collect();
    for (i, (a, b)) in placed.iter().zip(&after).enumerate() {
        if *a == gone {
            assert_ne!(b, a, "client {i} left its removed backend");
        } else {
            assert_eq!(b, a, "client {i} kept its backend");
        }
    }
    assert_eq!(env.ct.affinity().len(env.now), clients.len());
}

/// `frame` (Ethernet, IPv4, TCP or UDP) with its L4 checksum as a stack offloading it leaves
/// it: the folded pseudo-header sum, not complemented.
fn with_partial_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    use kxdp_dataplane::wire::checksum::{fold, pseudo_header};
    let at = if frame[23] == 6 { 34 + 16 } else { 34 + 6 };
    let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    let len = u16::from_be_bytes([frame[16], frame[17]]) - 20;
    let value = !fold(pseudo_header(ip(26), ip(30), frame[23], len));
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
    frame
}

/// A pod's TCP and UDP checksums are left to the way out, partial as its stack leaves them or
/// not: the mark stays on the L4 header through NAT and encapsulation (and goes when the packet
/// becomes an ICMP error), and the checksum completed at the mark on the way out is right.
/// Packets from the overlay, and UDP without a checksum, keep theirs.
#[test]
fn a_pods_checksums_are_left_to_the_way_out_through_nat_and_encapsulation() {
    use kxdp_dataplane::offload::partial::{completed, prepare};
    let env = Env::new();
    let t = &env.t;
    let run = |input: &Input| {
        let mut buf = kxdp_testkit::FrameBuf::new(&input.frame);
        let mut batch = [buf.packet(input.ingress)];
        kxdp_dataplane::process_batch(&mut batch, &env.snap, &env.ct, &env.counters, env.now);
        let [mut p] = batch;
        let mark = p.frame.checksum_offload();
        let mut out = p.frame.data().to_vec();
        if let Some(l4) = mark {
            let req = prepare(p.frame.data_mut(), l4).expect("an L4 header at the mark");
            let value = completed(&[p.frame.data()], req);
            p.frame.data_mut()[req.field()..req.field() + 2].copy_from_slice(&value.to_be_bytes());
            out = p.frame.data().to_vec();
        }
        (p.verdict, mark, out)
    };
    let from_a = |dst| Input {
        ingress: t.pod_a.iface,
        frame: with_partial_checksum(t.from_pod_a(dst).tcp(41000, 80, f::SYN, b"hello")),
    };
    // To a ClusterIP: DNAT to a backend, here or on node B (encapsulated, the mark moved by
    // the outer headers).
    let mut seen = std::collections::BTreeSet::new();
    for sport in 41000..41040 {
        let mut input = from_a(t.web_cluster_ip);
        input.frame[34..36].copy_from_slice(&u16::to_be_bytes(sport));
        input.frame = with_partial_checksum(input.frame);
        let (v, mark, out) = run(&input);
        assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
        let vxlan = v == Verdict::Transmit(t.node.uplink);
        assert_eq!(mark, Some(if vxlan { 84 } else { 34 }), "{v:?}");
        assert_valid(&out, "service, completed");
        seen.insert(vxlan);
    }
    assert_eq!(seen.len(), 2, "backends here and on node B");
    // Masqueraded out of the cluster; UDP to a pod here.
    let (_, mark, out) = run(&from_a(t.external_ip));
    assert_eq!(mark, Some(34));
    assert_valid(&out, "masqueraded, completed");
    let udp = Input {
        ingress: t.pod_a.iface,
        frame: with_partial_checksum(t.from_pod_a(t.pod_b.ip).udp(5000, 53, b"query")),
    };
    let (v, mark, out) = run(&udp);
    assert_eq!((v, mark), (Verdict::Transmit(t.pod_b.iface), Some(34)));
    assert_valid(&out, "UDP, completed");
    // A complete checksum from a pod is left to the way out too, and comes out right.
    let full = Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.pod_b.ip).tcp(41000, 80, f::SYN, b"hello"),
    };
    let (_, mark, out) = run(&full);
    assert_eq!(mark, Some(34));
    assert_valid(&out, "a complete checksum, completed again");
    // UDP without a checksum keeps none; the overlay's packets keep theirs.
    let mut spec = t.from_pod_a(t.pod_b.ip);
    spec.udp_checksum = false;
    let bare = Input {
        ingress: t.pod_a.iface,
        frame: spec.udp(5000, 53, b"query"),
    };
    assert_eq!(run(&bare).1, None, "UDP without a checksum");
    let inner = t
        .inner_from_node_b(t.remote_pod_ip, t.pod_a.ip)
        .tcp(8080, 41000, f::ACK, b"data");
    let overlay = Input {
        ingress: t.node.uplink,
        frame: t
            .vxlan_from_node_b()
            .vxlan(40000, 8472, 1, &with_partial_checksum(inner)),
    };
    let (v, mark, _) = run(&overlay);
    assert_eq!(
        (v, mark),
        (Verdict::Transmit(t.pod_a.iface), None),
        "from the overlay"
    );
    // An error quoting a pod's packet is unmarked.
    let mut spent = from_a(t.pod_b.ip);
    spent.frame[22] = 1;
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&spent.frame[14..34]).unwrap();
    let mut h = ip.to_header();
    h.header_checksum = h.calc_header_checksum();
    spent.frame[14..34].copy_from_slice(&h.to_bytes());
    let (v, mark, out) = run(&spent);
    assert_eq!((v, mark), (Verdict::Transmit(t.pod_a.iface), None));
    assert_eq!(icmp_error(&out).2, 11, "time exceeded");
}
