//! Fixture tables for the pipeline: description, setup packets, input frame, expected verdict
//! and expected output frame (built independently with the wire builders), every output also
//! re-parsed and checksum-verified by etherparse.

mod common;

use core::net::Ipv4Addr;
use core::ops::Range;

use common::{assert_frame_eq, assert_valid, Env};
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::wire::build::{self, FrameSpec, Ipv4Opts};
use kxdp_dataplane::wire::Icmpv4Message;
use kxdp_dataplane::{DropReason, PassReason, Verdict};
use kxdp_testkit::{tcp_flags as f, Input, Topology};

struct Fixture {
    description: &'static str,
    setup: Vec<Input>,
    input: Input,
    verdict: Verdict,
    /// Expected output, with byte ranges that may differ (allocated ports, hashed source
    /// ports); `None` for drops.
    output: Option<(Vec<u8>, Vec<Range<usize>>)>,
}

fn ttl(spec: FrameSpec, ttl: u8) -> FrameSpec {
    FrameSpec {
        ip: Ipv4Opts { ttl, ..spec.ip },
        ..spec
    }
}

/// Outer UDP source port in a VXLAN frame: hashed, checked separately.
const VXLAN_SPORT: Range<usize> = 34..36;
/// TCP source port and checksum of a masqueraded packet (at IPv4 offset 14 + 20).
const MASQ_SPORT: Range<usize> = 34..36;
const TCP_CSUM: Range<usize> = 50..52;

/// VXLAN from node B carrying a UDP datagram from `inner_src` to pod A.
fn vxlan_from_b(t: &Topology, inner_src: Ipv4Addr) -> Vec<u8> {
    t.vxlan_from_node_b().vxlan(
        49152,
        8472,
        1,
        &t.inner_from_node_b(inner_src, t.pod_a.ip).udp(1, 2, b"x"),
    )
}

fn fixtures(t: &Topology) -> Vec<Fixture> {
    let gw = t.node.gateway_mac;
    let pod_b_mac = t.pod_b.mac;
    let to_pod_b = |src, dst| ttl(FrameSpec::new(gw, pod_b_mac, src, dst), 63);
    let to_pod_a = |src, dst| ttl(FrameSpec::new(gw, t.pod_a.mac, src, dst), 63);
    let enc = |inner: &[u8]| {
        build::vxlan(
            t.node.uplink_mac,
            t.node_b_mac,
            t.node.primary_ip(),
            t.node_b.node_ip,
            0,
            8472,
            1,
            inner,
        )
    };
    let syn = t.case_service(40000, f::SYN);
    let mut v = vec![
        Fixture {
            description: "local/pod_to_pod: routed to pod B's interface, MACs rewritten, TTL decremented",
            setup: vec![],
            input: t.case_pod_to_pod(40000),
            verdict: Verdict::Transmit(t.pod_b.iface),
            output: Some((
                to_pod_b(t.pod_a.ip, t.pod_b.ip).tcp(40000, 9000, f::ACK, b"payload"),
                vec![],
            )),
        },
        Fixture {
            description: "vxlan/encap: to node B's pod CIDR, flannel's VNI and port, inner MAC = node B's VTEP",
            setup: vec![],
            input: t.case_encap(40000),
            verdict: Verdict::Transmit(t.node.uplink),
            output: Some((
                enc(&ttl(t.inner_to_node_b(t.pod_a.ip, t.remote_pod_ip), 63).tcp(
                    40000,
                    9000,
                    f::ACK,
                    b"payload",
                )),
                vec![VXLAN_SPORT],
            )),
        },
        Fixture {
            description: "vxlan/decap: from node B to pod A, outer headers stripped",
            setup: vec![],
            input: t.case_decap(40000),
            verdict: Verdict::Transmit(t.pod_a.iface),
            output: Some((
                to_pod_a(t.remote_pod_ip, t.pod_a.ip).tcp(9000, 40000, f::ACK, b"payload"),
                vec![],
            )),
        },
        Fixture {
            description: "service/new_flow: SYN to a ClusterIP is DNATed to its only backend",
            setup: vec![],
            input: syn.clone(),
            verdict: Verdict::Transmit(t.pod_b.iface),
            output: Some((
                to_pod_b(t.pod_a.ip, t.pod_b.ip).tcp(40000, 8443, f::SYN, b"payload"),
                vec![],
            )),
        },
        Fixture {
            description: "service/dnat_established: the flow's next packet follows conntrack",
            setup: vec![syn.clone()],
            input: t.case_service(40000, f::ACK),
            verdict: Verdict::Transmit(t.pod_b.iface),
            output: Some((
                to_pod_b(t.pod_a.ip, t.pod_b.ip).tcp(40000, 8443, f::ACK, b"payload"),
                vec![],
            )),
        },
        Fixture {
            description: "service/reverse_nat: the backend's reply comes from the service address",
            setup: vec![syn.clone()],
            input: t.case_service_reply(40000),
            verdict: Verdict::Transmit(t.pod_a.iface),
            output: Some((
                to_pod_a(t.api_cluster_ip, t.pod_a.ip).tcp(443, 40000, f::ACK, b"reply"),
                vec![],
            )),
        },
        Fixture {
            description: "masquerade/egress: pod to outside leaves from the node address and a masquerade port",
            setup: vec![],
            input: t.case_egress(40000, f::SYN),
            verdict: Verdict::Transmit(t.node.uplink),
            output: Some((
                ttl(
                    FrameSpec::new(
                        t.node.uplink_mac,
                        t.gateway_router_mac,
                        t.node.primary_ip(),
                        t.external_ip,
                    ),
                    63,
                )
                .tcp(40000, 443, f::SYN, b"payload"),
                vec![MASQ_SPORT, TCP_CSUM],
            )),
        },
        Fixture {
            description: "service/no_endpoints: ICMP port unreachable from the service address",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: t.from_pod_a(t.empty_cluster_ip).tcp(40000, 80, f::SYN, b""),
            },
            verdict: Verdict::Transmit(t.pod_a.iface),
            output: Some((
                FrameSpec {
                    ip: Ipv4Opts {
                        ttl: 63,
                        dont_fragment: false,
                        ..Ipv4Opts::default()
                    },
                    ..FrameSpec::new(gw, t.pod_a.mac, t.empty_cluster_ip, t.pod_a.ip)
                }
                .icmp(
                    Icmpv4Message::DstUnreachable,
                    3,
                    [0; 4],
                    &t.from_pod_a(t.empty_cluster_ip).tcp(40000, 80, f::SYN, b"")[14..14 + 28],
                ),
                vec![],
            )),
        },
        Fixture {
            description: "service/unallocated: an address in the service CIDR with no service is dropped",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: t.from_pod_a(Ipv4Addr::new(10, 96, 9, 9)).tcp(40000, 80, f::SYN, b""),
            },
            verdict: Verdict::Drop(DropReason::ServiceNotFound),
            output: None,
        },
        Fixture {
            description: "gateway/arp: a pod's ARP for its gateway is answered with the gateway MAC",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: build::arp_request(t.pod_a.mac, t.pod_a.ip, t.node.gateway_ip),
            },
            verdict: Verdict::Reply,
            output: Some((
                build::arp_reply(gw, t.node.gateway_ip, t.pod_a.mac, t.pod_a.ip),
                vec![],
            )),
        },
        Fixture {
            description: "gateway/arp_probe: duplicate-address probes are never answered",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: build::arp_request(t.pod_a.mac, Ipv4Addr::UNSPECIFIED, t.pod_a.ip),
            },
            verdict: Verdict::Drop(DropReason::ArpNotRequest),
            output: None,
        },
        Fixture {
            description: "gateway/ping: the gateway answers echo requests",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: t.from_pod_a(t.node.gateway_ip).icmp_echo(true, 7, 1, b"ping"),
            },
            verdict: Verdict::Transmit(t.pod_a.iface),
            output: Some((
                to_pod_a(t.node.gateway_ip, t.pod_a.ip).icmp_echo(false, 7, 1, b"ping"),
                vec![],
            )),
        },
        Fixture {
            description: "ingress/spoofed_source: a pod may only send from its own address",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: FrameSpec::new(t.pod_a.mac, gw, Ipv4Addr::new(10, 244, 1, 99), t.pod_b.ip)
                    .udp(1, 2, b"x"),
            },
            verdict: Verdict::Drop(DropReason::SpoofedSource),
            output: None,
        },
        Fixture {
            description: "ingress/ttl: TTL 1 cannot be forwarded: time exceeded goes back",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: ttl(t.from_pod_a(t.pod_b.ip), 1).udp(1, 2, b"x"),
            },
            verdict: Verdict::Transmit(t.pod_a.iface),
            output: None,
        },
        Fixture {
            description: "vxlan/too_big_no_df: without DF it leaves, to be fragmented on the way out",
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame: FrameSpec {
                    ip: Ipv4Opts {
                        dont_fragment: false,
                        ..Ipv4Opts::default()
                    },
                    ..t.from_pod_a(t.remote_pod_ip)
                }
                .udp(1, 2, &[0u8; 1452]),
            },
            verdict: Verdict::Transmit(t.node.uplink),
            output: None,
        },
        Fixture {
            description: "vxlan/unknown_source: VXLAN from an address that is no node is dropped",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: FrameSpec {
                    src: Ipv4Addr::new(198, 18, 0, 66),
                    ..t.vxlan_from_node_b()
                }
                .vxlan(
                    49152,
                    8472,
                    1,
                    &t.inner_from_node_b(t.remote_pod_ip, t.pod_a.ip).udp(1, 2, b"x"),
                ),
            },
            verdict: Verdict::Drop(DropReason::VxlanUnknownSource),
            output: None,
        },
        Fixture {
            description: "vxlan/foreign_inner_source: a known node cannot send as the outside",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: vxlan_from_b(t, t.external_ip),
            },
            verdict: Verdict::Drop(DropReason::VxlanForeignInnerSource),
            output: None,
        },
        Fixture {
            description: "vxlan/foreign_inner_source: a known node cannot send as a local pod",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: vxlan_from_b(t, t.pod_b.ip),
            },
            verdict: Verdict::Drop(DropReason::VxlanForeignInnerSource),
            output: None,
        },
        Fixture {
            description: "vxlan/node_source: a node's own underlay address may send (ICMP errors)",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: vxlan_from_b(t, t.node_b.node_ip),
            },
            verdict: Verdict::Transmit(t.pod_a.iface),
            output: None,
        },
        Fixture {
            description: "vxlan/wrong_vni: another VNI is dropped",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: t.vxlan_from_node_b().vxlan(
                    49152,
                    8472,
                    2,
                    &t.inner_from_node_b(t.remote_pod_ip, t.pod_a.ip).udp(1, 2, b"x"),
                ),
            },
            verdict: Verdict::Drop(DropReason::VxlanUnknownVni),
            output: None,
        },
        Fixture {
            description: "vxlan/overlay_not_local: decapsulated traffic is never sent back out",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: t.vxlan_from_node_b().vxlan(
                    49152,
                    8472,
                    1,
                    &t.inner_from_node_b(t.remote_pod_ip, t.external_ip).udp(1, 2, b"x"),
                ),
            },
            verdict: Verdict::Drop(DropReason::OverlayNotLocal),
            output: None,
        },
        Fixture {
            description: "uplink/not_owned: traffic for the node's own sockets goes to the kernel",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: t
                    .from_outside(t.external_ip, t.node.primary_ip())
                    .tcp(50000, 22, f::SYN, b""),
            },
            verdict: Verdict::ToHost(PassReason::ForNode),
            output: None,
        },
        Fixture {
            description: "uplink/not_ipv4: IPv6 on the uplink goes to the kernel",
            setup: vec![],
            input: Input {
                ingress: t.node.uplink,
                frame: {
                    let mut fr = t.from_outside(t.external_ip, t.node.primary_ip()).udp(1, 2, b"x");
                    fr[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                    fr
                },
            },
            verdict: Verdict::ToHost(PassReason::NotIpv4),
            output: None,
        },
        Fixture {
            description: "ingress/unknown_interface: frames from an interface the snapshot lacks",
            setup: vec![],
            input: Input {
                ingress: InterfaceId(200),
                frame: t.from_pod_a(t.pod_b.ip).udp(1, 2, b"x"),
            },
            verdict: Verdict::Drop(DropReason::UnknownInterface),
            output: None,
        },
    ];
    // Malformed IPv4 from a pod, each with its own reason.
    let good = t
        .from_pod_a(t.pod_b.ip)
        .tcp(40000, 9000, f::ACK, b"payload");
    let mut bad = |description, reason, mutate: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = good.clone();
        mutate(&mut frame);
        v.push(Fixture {
            description,
            setup: vec![],
            input: Input {
                ingress: t.pod_a.iface,
                frame,
            },
            verdict: Verdict::Drop(reason),
            output: None,
        });
    };
    bad("malformed/short_frame", DropReason::FrameTooShort, &|fr| {
        fr.truncate(10)
    });
    bad(
        "malformed/truncated_ipv4",
        DropReason::TruncatedIpv4,
        &|fr| fr.truncate(30),
    );
    bad(
        "malformed/total_len_past_frame",
        DropReason::TruncatedIpv4,
        &|fr| fr.truncate(60),
    );
    bad("malformed/bad_ihl", DropReason::BadIpv4Header, &|fr| {
        fr[14] = 0x44
    });
    bad("malformed/version_6", DropReason::BadIpv4Header, &|fr| {
        fr[14] = 0x65
    });
    bad("malformed/options", DropReason::Ipv4Options, &|fr| {
        fr[14] = 0x46
    });
    bad("malformed/fragment", DropReason::Ipv4Fragment, &|fr| {
        fr[20] |= 0x20
    });
    bad("malformed/truncated_tcp", DropReason::TruncatedL4, &|fr| {
        fr[16..18].copy_from_slice(&30u16.to_be_bytes());
    });
    bad(
        "malformed/ipv6_from_pod",
        DropReason::UnsupportedEthertype,
        &|fr| fr[12..14].copy_from_slice(&0x86ddu16.to_be_bytes()),
    );
    v
}

#[test]
fn every_fixture_gives_its_verdict_and_output() {
    let t = Topology::default();
    let mut failures = Vec::new();
    for fx in fixtures(&t) {
        let env = Env::new();
        for s in &fx.setup {
            let (v, _) = env.run(s);
            assert!(
                matches!(v, Verdict::Transmit(_)),
                "{}: setup got {v:?}",
                fx.description
            );
        }
        let (verdict, out) = env.run(&fx.input);
        if verdict != fx.verdict {
            failures.push(format!(
                "{}: verdict {verdict:?}, want {:?}",
                fx.description, fx.verdict
            ));
            continue;
        }
        if let Some((want, mask)) = &fx.output {
            assert_valid(&out, fx.description);
            assert_frame_eq(&out, want, mask, fx.description);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vxlan_source_port_follows_the_inner_flow() {
    let env = Env::new();
    let t = &env.t;
    let mut ports = std::collections::BTreeSet::new();
    for sport in 40000..40064 {
        let (_, a) = env.run(&t.case_encap(sport));
        let (_, b) = env.run(&t.case_encap(sport));
        let port = u16::from_be_bytes([a[34], a[35]]);
        assert_eq!(a, b, "same flow, same outer header");
        assert!((32768..61000).contains(&port), "{port}");
        ports.insert(port);
    }
    assert!(
        ports.len() > 50,
        "64 flows spread over only {} ports",
        ports.len()
    );
}

#[test]
fn masquerade_port_is_in_range_and_the_reply_is_translated_back() {
    let env = Env::new();
    let t = &env.t;
    let (v, out) = env.run(&t.case_egress(40000, f::SYN));
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    let port = u16::from_be_bytes([out[34], out[35]]);
    assert!(t.node.masquerade_ports.contains(&port), "{port}");
    let reply = Input {
        ingress: t.node.uplink,
        frame: t.from_outside(t.external_ip, t.node.primary_ip()).tcp(
            443,
            port,
            f::SYN | f::ACK,
            b"hello",
        ),
    };
    let (v, out) = env.run(&reply);
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_valid(&out, "egress reply");
    let want = ttl(
        FrameSpec::new(t.node.gateway_mac, t.pod_a.mac, t.external_ip, t.pod_a.ip),
        63,
    )
    .tcp(443, 40000, f::SYN | f::ACK, b"hello");
    assert_frame_eq(&out, &want, &[], "egress reply");
}
