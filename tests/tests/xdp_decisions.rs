//! The XDP steering program's decisions on fixture packets, through BPF_PROG_TEST_RUN: the
//! program runs in the kernel on each frame, attached nowhere, and its counters say what it
//! decided. Needs root (CAP_BPF); prints SKIP otherwise, and fails under CI.

use core::net::Ipv4Addr;

use kxdp_dataplane::wire::Icmpv4Message;
use kxdp_testkit::{tcp_flags as f, Topology};
use kxdp_tests::testbed::skip_unless_privileged;
use kxdp_xdp::{action, IfRole, Steering, XdpDecision};

/// The loopback device: it exists in every namespace and has one rx queue, which is all
/// BPF_PROG_TEST_RUN needs to give the program an ingress interface. Nothing is attached to it.
const IFINDEX: u32 = 1;

/// The XDP action and the counters that moved.
type Decision = (u32, Vec<XdpDecision>);

fn decide(st: &Steering, frame: &[u8]) -> Decision {
    let before = st.stats().unwrap();
    let verdict = st.test_run(frame, IFINDEX).unwrap();
    let after = st.stats().unwrap();
    let moved = XdpDecision::ALL
        .iter()
        .copied()
        .filter(|s| after[*s as usize] > before[*s as usize])
        .collect();
    (verdict, moved)
}

#[test]
fn steers_only_what_belongs_to_the_dataplane() {
    if skip_unless_privileged("steers_only_what_belongs_to_the_dataplane") {
        return;
    }
    let t = Topology::default();
    let snap = t.snapshot();
    let st = Steering::load().expect("the XDP program loads");
    st.sync(&snap).unwrap();
    let node = t.node.primary_ip();
    let outside = |dst| t.from_outside(t.external_ip, dst);
    let steered = |stat| (action::DROP, vec![stat, XdpDecision::NoSocket]);
    let passed = |stat| (action::PASS, vec![stat]);

    // An interface kxdp does not manage: everything passes.
    st.set_interface(IFINDEX, IfRole::Unmanaged, 0).unwrap();
    assert_eq!(
        decide(&st, &outside(node).tcp(1, 30080, f::SYN, b"")),
        passed(XdpDecision::PassUnmanaged)
    );

    // A pod's veth: everything is the dataplane's. With no socket on the queue (no agent
    // runs) the frame is dropped: the node's kernel must not answer for the dataplane.
    st.set_interface(IFINDEX, IfRole::Pod, 0).unwrap();
    let pod_frame = t.case_pod_to_pod(1).frame;
    assert_eq!(decide(&st, &pod_frame), steered(XdpDecision::XskPod));

    st.set_interface(IFINDEX, IfRole::Uplink, 0).unwrap();
    let vxlan = t.case_decap(1).frame;
    let cases: Vec<(&str, Vec<u8>, Decision)> = vec![
        (
            "VXLAN from node B",
            vxlan.clone(),
            steered(XdpDecision::XskVxlan),
        ),
        (
            "VXLAN from an unknown address",
            {
                let inner = t
                    .inner_from_node_b(t.remote_pod_ip, t.pod_a.ip)
                    .udp(1, 2, b"x");
                kxdp_dataplane::wire::build::FrameSpec {
                    src: Ipv4Addr::new(198, 18, 0, 66),
                    ..t.vxlan_from_node_b()
                }
                .vxlan(49152, 8472, 1, &inner)
            },
            (action::DROP, vec![XdpDecision::DropUnknownPeer]),
        ),
        (
            "NodePort",
            outside(node).tcp(50000, t.web_node_port, f::SYN, b""),
            steered(XdpDecision::XskService),
        ),
        (
            "load-balancer IP",
            outside(t.web_lb_ip).tcp(50000, 80, f::SYN, b""),
            steered(XdpDecision::XskService),
        ),
        (
            "node's SSH",
            outside(node).tcp(50000, 22, f::SYN, b""),
            passed(XdpDecision::PassNotOurs),
        ),
        (
            "masquerade reply",
            outside(node).tcp(443, 62000, f::SYN | f::ACK, b""),
            steered(XdpDecision::XskMasqReply),
        ),
        (
            "reply below the range",
            outside(node).tcp(443, 40000, f::ACK, b""),
            passed(XdpDecision::PassNotOurs),
        ),
        (
            "echo reply to a masqueraded ping",
            outside(node).icmp_echo(false, 62001, 1, b"x"),
            steered(XdpDecision::XskMasqReply),
        ),
        (
            "echo reply to the node's own ping",
            outside(node).icmp_echo(false, 7, 1, b"x"),
            passed(XdpDecision::PassNotOurs),
        ),
        (
            "port unreachable quoting a masqueraded flow",
            {
                let quoted = kxdp_dataplane::wire::build::FrameSpec::new(
                    t.node.uplink_mac,
                    t.gateway_router_mac,
                    node,
                    t.external_ip,
                )
                .udp(62002, 53, b"q");
                outside(node).icmp(Icmpv4Message::DstUnreachable, 3, [0; 4], &quoted[14..42])
            },
            steered(XdpDecision::XskMasqReply),
        ),
        (
            "IPv4 with options",
            {
                let mut fr = outside(node).tcp(50000, t.web_node_port, f::SYN, b"");
                fr[14] = 0x46;
                fr
            },
            passed(XdpDecision::PassMalformed),
        ),
        (
            "truncated",
            outside(node).tcp(50000, t.web_node_port, f::SYN, b"")[..30].to_vec(),
            passed(XdpDecision::PassMalformed),
        ),
        (
            "ARP",
            kxdp_dataplane::wire::build::arp_request(t.gateway_router_mac, t.external_ip, node),
            passed(XdpDecision::PassNotIpv4),
        ),
    ];
    for (what, frame, want) in cases {
        assert_eq!(decide(&st, &frame), want, "{what}");
    }

    // Maps follow the snapshot: without node B, its VXLAN is no longer steered but dropped.
    let mut inputs = t.inputs();
    inputs.nodes.clear();
    let snap = kxdp_dataplane::Snapshot::build(inputs).unwrap();
    st.sync(&snap).unwrap();
    assert_eq!(
        decide(&st, &vxlan),
        (action::DROP, vec![XdpDecision::DropUnknownPeer])
    );
}
