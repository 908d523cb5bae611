//! Frames larger than an AF_XDP chunk: pods whose interfaces have an MTU far above the uplink's
//! (`--pod-mtu`), served by `kxdp agent`s on a two-node namespace cluster. Inside a node a
//! large frame reaches the other pod whole; what leaves for the tunnel is cut to its MTU.
//! Needs root; prints SKIP otherwise, and fails under CI.

use std::process::Command;
use std::time::Duration;

use kxdp_tests::clients::{checksum_errors, iperf, IperfServer};
use kxdp_tests::cluster::{metric, AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::testbed::skip_unless_privileged;

/// The pods' MTU: a pod's TCP sends segments of almost 64 KiB.
const POD_MTU: u16 = 65535;

fn cluster() -> AgentCluster {
    let mut c = AgentCluster::build_with_pod_mtu(DEMO_MANIFEST, &DEMO_PODS, Some(POD_MTU))
        .expect("the cluster builds");
    c.start(120, &["--pod-mtu", &POD_MTU.to_string()])
        .expect("the agents start");
    c
}

/// One ping of `payload` bytes with DF from `from` to `to`: whether it was answered. DF means
/// no one on the way may cut it, so an answer says it crossed whole both ways.
fn ping_whole(from: &str, to: &str, payload: u32) -> bool {
    Command::new("timeout")
        .args([
            "10", "ip", "netns", "exec", from, "ping", "-n", "-q", "-c", "1",
        ])
        .args(["-W", "3", "-M", "do", "-s", &payload.to_string(), to])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn large_frames_cross_a_node_whole() {
    if skip_unless_privileged("large_frames_cross_a_node_whole") {
        return;
    }
    let c = cluster();
    let (web, client) = (c.pod("web-a"), c.pod("client-a"));
    // The largest IPv4 packet: 18 buffers of a 4 KiB chunk each way.
    assert!(
        ping_whole(&client.ns, &web.ip.to_string(), 65_507),
        "a 64 KB DF ping between pods of one node:\n{}",
        c.log(0)
    );
    let (_, before) = c
        .metrics_get(0, "/metrics", Duration::from_secs(5))
        .expect("metrics");
    let _server = IperfServer::start(&web.ns, 5201);
    std::thread::sleep(Duration::from_millis(300));
    let bytes = iperf(&client.ns, &web.ip.to_string(), 5201, false);
    let (_, after) = c
        .metrics_get(0, "/metrics", Duration::from_secs(5))
        .expect("metrics");
    assert!(bytes > 10_000_000, "iperf3 TCP on one node: {bytes} bytes");
    let rx = |text: &str| metric(text, "kxdp_worker_rx_frames_total{worker=\"0\"}");
    let frames = rx(&after) - rx(&before);
    eprintln!("iperf3 TCP on one node: {bytes} bytes in {frames} frames");
    // Each data segment crosses once, each ACK once: with 64 KiB segments, bytes per frame is
    // in the tens of thousands; cut to 1,450-byte frames it would be below 1,000.
    assert!(
        bytes as f64 / frames > 8_000.0,
        "{bytes} bytes in {frames} frames: the stream was not carried in large frames"
    );
    // Delivered whole, each frame is sent once: the transmit counter counts frames, not the
    // dozen or more buffers a 64 KiB frame takes.
    let tx = |text: &str| metric(text, "kxdp_worker_tx_frames_total{worker=\"0\"}");
    let sent = tx(&after) - tx(&before);
    assert!(
        (0.9 * frames..=1.1 * frames + 10.0).contains(&sent),
        "{frames} frames received, {sent} counted as sent"
    );
    // Every buffer of every frame went back to the free list or to a ring.
    assert_no_chunk_held(&c, 0, "a stream of large frames");
}

/// Once a stream is over, the worker of node `node` holds no UMEM chunk: its census (once a
/// second) finds every one on the free list or in a ring.
fn assert_no_chunk_held(c: &AgentCluster, node: usize, after: &str) {
    let mut census = String::new();
    let settled = kxdp_tests::cluster::eventually(Duration::from_secs(5), || {
        census = c
            .metrics_get(node, "/metrics", Duration::from_secs(5))
            .map(|(_, m)| m)
            .unwrap_or_default();
        let chunks = |place: &str| {
            metric(
                &census,
                &format!("kxdp_worker_umem_chunks{{worker=\"0\",place=\"{place}\"}}"),
            )
        };
        chunks("held") == 0.0 && chunks("free") + chunks("kernel") > 0.0
    });
    assert!(
        settled,
        "UMEM chunks lost after {after}:\n{}",
        census
            .lines()
            .filter(|l| l.starts_with("kxdp_worker_umem_chunks"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The TCP segments namespace `ns`'s kernel dropped for a bad checksum (`InCsumErrors`).
fn tcp_checksum_errors(ns: &str) -> u64 {
    checksum_errors(ns, "Tcp:")
}

/// Ping `to` once from `from` with `payload` bytes, fragmentable (no DF): whether answered.
fn ping_fragmentable(from: &str, to: &str, payload: u32) -> bool {
    Command::new("timeout")
        .args([
            "10", "ip", "netns", "exec", from, "ping", "-n", "-q", "-c", "1",
        ])
        .args(["-W", "3", "-M", "dont", "-s", &payload.to_string(), to])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn large_frames_are_cut_for_the_tunnel_and_merged_for_the_pod() {
    if skip_unless_privileged("large_frames_are_cut_for_the_tunnel_and_merged_for_the_pod") {
        return;
    }
    let c = cluster();
    let (client, web) = (c.pod("client-a"), c.pod("web-b"));
    let metrics = |node| {
        c.metrics_get(node, "/metrics", Duration::from_secs(5))
            .expect("metrics")
            .1
    };
    let io =
        |text: &str, name: &str| metric(text, &format!("kxdp_worker_{name}_total{{worker=\"0\"}}"));
    // One run per server (each serves one client): the ClusterIP's port is 5201.
    let _servers = [
        IperfServer::start(&web.ns, 5201),
        IperfServer::start(&web.ns, 5203),
        IperfServer::start(&client.ns, 5202),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let (a0, b0) = (metrics(0), metrics(1));
    // Across nodes, to the pod and through the ClusterIP, and back.
    let to_pod = iperf(&client.ns, &web.ip.to_string(), 5203, false);
    let to_service = iperf(&client.ns, "10.96.0.20", 5201, false);
    let back = iperf(&web.ns, &client.ip.to_string(), 5202, false);
    let (a1, b1) = (metrics(0), metrics(1));
    eprintln!("iperf3 TCP across nodes with 64 KiB pod frames: {to_pod} bytes to the pod, {to_service} through the ClusterIP, {back} back");
    for (what, bytes) in [
        ("to the pod", to_pod),
        ("through the ClusterIP", to_service),
        ("back", back),
    ] {
        let interesting = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                .filter(|l| l.contains("drops") || l.contains("worker_"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            bytes > 10_000_000,
            "iperf3 TCP {what}: {bytes} bytes\nnode A:\n{}\nnode B:\n{}",
            interesting(&a1),
            interesting(&b1),
        );
    }
    // Each node cut its pod's large segments for the tunnel, and sent them as UDP GSO
    // packets the kernel took, and merged the other's for its pod.
    for (node, before, after) in [(0, &a0, &a1), (1, &b0, &b1)] {
        let cut = io(after, "cut_frames") - io(before, "cut_frames");
        let merged = io(after, "merged_frames") - io(before, "merged_frames");
        let gso = io(after, "gso_packets") - io(before, "gso_packets");
        assert!(
            cut > 100.0 && merged > 100.0 && gso > 100.0,
            "node {node}: {cut} frames cut, {gso} GSO packets, {merged} segments merged"
        );
        assert_eq!(
            io(after, "gso_failed"),
            0.0,
            "node {node}: GSO packets refused"
        );
    }
    for m in [&a1, &b1] {
        assert_eq!(
            metric(m, "kxdp_drops_total{reason=\"too_big_unsplit\"} "),
            0.0,
            "nothing too big was dropped"
        );
    }
    // Every segment and every merged frame reached TCP with a checksum that holds.
    for pod in [client, web] {
        assert_eq!(
            tcp_checksum_errors(&pod.ns),
            0,
            "TCP checksum errors in {}",
            pod.ns
        );
    }
    // Not TCP: a DF ping too big for the tunnel is answered with fragmentation needed (ping
    // fails); without DF kxdp fragments it on the way out, and the reply too.
    assert!(
        !ping_whole(&client.ns, &web.ip.to_string(), 8000),
        "DF across the tunnel"
    );
    assert!(
        ping_fragmentable(&client.ns, &web.ip.to_string(), 8000),
        "an 8000-byte ping fragmented by kxdp both ways:\n{}",
        c.log(0)
    );
}

/// At an underlay MTU of 9000 every segment from the tunnel is larger than a UMEM chunk: each
/// reaches the worker in three buffers, and those are merged for the pod as single-buffer
/// segments are, into frames of up to 18 buffers.
#[test]
fn jumbo_segments_from_the_tunnel_are_merged_for_the_pod() {
    if skip_unless_privileged("jumbo_segments_from_the_tunnel_are_merged_for_the_pod") {
        return;
    }
    let mut c = AgentCluster::build(DEMO_MANIFEST, &DEMO_PODS).expect("the cluster builds");
    c.tb.set_underlay_mtu(9000).expect("underlay MTU");
    c.tb.set_kxdp_pod_mtu(POD_MTU).expect("pod MTU");
    c.start(120, &["--pod-mtu", &POD_MTU.to_string()])
        .expect("the agents start");
    let (client, web) = (c.pod("client-a"), c.pod("web-b"));
    let metrics = || {
        c.metrics_get(1, "/metrics", Duration::from_secs(5))
            .expect("metrics")
            .1
    };
    let _server = IperfServer::start(&web.ns, 5201);
    std::thread::sleep(Duration::from_millis(300));
    let before = metrics();
    let bytes = iperf(&client.ns, &web.ip.to_string(), 5201, false);
    let after = metrics();
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    let from_tunnel = delta("kxdp_interface_rx_frames_total{interface=\"uplink\",worker=\"0\"}");
    let merged = delta("kxdp_worker_merged_frames_total{worker=\"0\"}");
    let to_pod = delta("kxdp_worker_tx_frames_total{worker=\"0\"}");
    eprintln!(
        "iperf3 TCP across a 9000-byte underlay: {bytes} bytes; node B took {from_tunnel} \
         frames from the tunnel, merged {merged}, sent {to_pod}"
    );
    assert!(bytes > 10_000_000, "iperf3 TCP: {bytes} bytes");
    // Most of the stream's segments were merged, so the pod got fewer, larger frames.
    assert!(
        merged > 0.5 * from_tunnel && to_pod < 0.7 * from_tunnel,
        "{from_tunnel} jumbo frames from the tunnel, {merged} merged, {to_pod} sent"
    );
    assert_eq!(tcp_checksum_errors(&web.ns), 0, "TCP checksum errors");
    // Every chunk of every merged frame came back with its transmit's completion.
    assert_no_chunk_held(&c, 1, "merging jumbo frames");
}

/// A kxdp node (the default topology's node A) whose pod has a 64 KiB MTU beside a flannel
/// node: the testbed, the kxdp node's snapshot and its interfaces.
fn large_pod_beside_flannel(
    t: &kxdp_testkit::Topology,
) -> (
    kxdp_tests::testbed::Testbed,
    kxdp_dataplane::Snapshot,
    Vec<kxdp_tests::node::Managed>,
) {
    use kxdp_tests::node::{fixture_and_kernel_node, mixed_inputs, Managed};
    use kxdp_tests::testbed::ip;
    let tb = fixture_and_kernel_node(t).expect("testbed builds");
    let (kx, kx_pod) = (&tb.nodes[0], &tb.nodes[0].pods[0]);
    let mtu = POD_MTU.to_string();
    ip(Some(&kx_pod.ns), &["link", "set", "eth0", "mtu", &mtu]).expect("pod MTU");
    ip(Some(&kx.ns), &["link", "set", "pod0", "mtu", &mtu]).expect("pod MTU");
    let mut inputs = mixed_inputs(t, &tb).expect("the testbed's addresses");
    inputs.node.pod_mtu = POD_MTU;
    let managed = vec![
        Managed::pod("pod0", t.pod_a.iface),
        Managed::uplink("uplink", t.node.uplink),
    ];
    let snapshot = kxdp_dataplane::Snapshot::build(inputs).expect("a snapshot");
    (tb, snapshot, managed)
}

/// A kxdp node whose pod has a 64 KiB MTU and a flannel node whose pods have 1450 (the
/// kernel's own VXLAN device): TCP both ways needs no MSS clamping, as each side's MTU bounds
/// what it sends (the kernel pod announces an MSS of 1410, the kxdp pod never sends more), and
/// the kernel's segments reach the kxdp pod merged.
#[test]
fn a_large_mtu_pod_and_a_flannel_pod_stream_both_ways() {
    use kxdp_tests::node::KxdpNode;
    use kxdp_xdp::worker::IoCounter;
    if skip_unless_privileged("a_large_mtu_pod_and_a_flannel_pod_stream_both_ways") {
        return;
    }
    let t = kxdp_testkit::Topology::default();
    let (tb, snapshot, managed) = large_pod_beside_flannel(&t);
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);
    let (kx_pod, kernel_pod) = (&kx.pods[0], &kernel.pods[0]);
    let _servers = [
        IperfServer::start(&kernel_pod.ns, 5201),
        IperfServer::start(&kx_pod.ns, 5202),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let node = KxdpNode::start(&kx.ns, managed, snapshot).expect("kxdp starts");
    let to_kernel = iperf(&kx_pod.ns, &kernel_pod.ip.to_string(), 5201, false);
    let from_kernel = iperf(&kernel_pod.ns, &kx_pod.ip.to_string(), 5202, false);
    let io = node.io();
    node.finish().expect("the worker");
    eprintln!("iperf3 TCP, 64 KiB MTU pod to a flannel pod: {to_kernel} bytes, back {from_kernel}");
    assert!(
        to_kernel > 10_000_000 && from_kernel > 10_000_000,
        "iperf3 TCP both ways: {to_kernel} {from_kernel} bytes; {io:?}"
    );
    assert!(
        io.get(IoCounter::Merged) > 100,
        "the kernel's segments merged: {io:?}"
    );
    for ns in [&kx_pod.ns, &kernel_pod.ns] {
        assert_eq!(tcp_checksum_errors(ns), 0, "TCP checksum errors in {ns}");
    }
}

/// A kxdp pod sending large segments to a flannel pod whose MTU lets its TCP take them: kxdp
/// cuts them for the tunnel and hands them to the kernel as UDP GSO packets, whose datagrams
/// the flannel node's own VXLAN device takes, checking each UDP checksum the kernel computed.
#[test]
fn segments_sent_as_udp_gso_reach_a_flannel_node_with_good_checksums() {
    if skip_unless_privileged("segments_sent_as_udp_gso_reach_a_flannel_node_with_good_checksums") {
        return;
    }
    segments_cut_for_a_flannel_node(true);
}

/// The same with UDP GSO off (`--tunnel-gso false`, and what a worker falls back to where
/// the kernel refuses GSO packets or no packet socket opens): each segment leaves as an
/// AF_XDP frame of its own, with kxdp's checksums.
#[test]
fn segments_sent_as_af_xdp_frames_reach_a_flannel_node_with_good_checksums() {
    if skip_unless_privileged(
        "segments_sent_as_af_xdp_frames_reach_a_flannel_node_with_good_checksums",
    ) {
        return;
    }
    segments_cut_for_a_flannel_node(false);
}

fn segments_cut_for_a_flannel_node(tunnel_gso: bool) {
    use kxdp_tests::node::KxdpNode;
    use kxdp_tests::testbed::ip;
    use kxdp_xdp::worker::IoCounter;
    let t = kxdp_testkit::Topology::default();
    let (tb, snapshot, managed) = large_pod_beside_flannel(&t);
    let (kx, kernel) = (&tb.nodes[0], &tb.nodes[1]);
    let (kx_pod, kernel_pod) = (&kx.pods[0], &kernel.pods[0]);
    // The flannel pod announces an MSS from its own interface's MTU: at 9000, the kxdp pod
    // sends it segments of almost 9000 bytes, which kxdp must cut for the 1450-byte tunnel.
    ip(
        Some(&kernel_pod.ns),
        &["link", "set", "eth0", "mtu", "9000"],
    )
    .expect("pod MTU");
    let _server = IperfServer::start(&kernel_pod.ns, 5201);
    std::thread::sleep(Duration::from_millis(300));
    let node = KxdpNode::start_configured(&kx.ns, managed, snapshot, |c| {
        c.tunnel_gso = tunnel_gso;
    })
    .expect("kxdp starts");
    let udp_errors = checksum_errors(&kernel.ns, "Udp:");
    let bytes = iperf(&kx_pod.ns, &kernel_pod.ip.to_string(), 5201, false);
    let io = node.io();
    node.finish().expect("the worker");
    eprintln!("iperf3 TCP, 64 KiB MTU pod to a 9000 MTU flannel pod (GSO {tunnel_gso}): {bytes} bytes; {io:?}");
    assert!(bytes > 10_000_000, "iperf3 TCP: {bytes} bytes; {io:?}");
    assert!(io.get(IoCounter::Cut) > 100, "segments cut: {io:?}");
    if tunnel_gso {
        assert!(
            io.get(IoCounter::GsoPackets) > 100 && io.get(IoCounter::GsoFailed) == 0,
            "cut frames sent as UDP GSO packets: {io:?}"
        );
    } else {
        assert_eq!(io.get(IoCounter::GsoPackets), 0, "GSO off: {io:?}");
    }
    assert_eq!(
        checksum_errors(&kernel.ns, "Udp:"),
        udp_errors,
        "UDP checksum errors on the flannel node"
    );
    assert_eq!(
        tcp_checksum_errors(&kernel_pod.ns),
        0,
        "TCP checksum errors"
    );
}

/// What the kernel answers a packet socket for a UDP GSO packet: taken, and for a GSO type
/// it does not know (as a kernel before 6.2 answers `VIRTIO_NET_HDR_GSO_UDP_L4`) an error the
/// worker reads as a refusal, which turns GSO off for the uplink, rather than as no room.
#[test]
fn the_kernel_takes_a_gso_packet_and_refuses_an_unknown_gso_type() {
    use kxdp_dataplane::offload::{gso, Encap, GsoBuf, Segments};
    use kxdp_tests::testbed::{Spec, Testbed};
    use kxdp_xdp::gso::GsoSocket;
    if skip_unless_privileged("the_kernel_takes_a_gso_packet_and_refuses_an_unknown_gso_type") {
        return;
    }
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 2,
        pods_per_node: 1,
        external: false,
    })
    .expect("testbed builds");
    let (a, b) = (&tb.nodes[0], &tb.nodes[1]);
    let mac = |ns: &str| {
        let text = tb.mac(ns, "uplink").expect("a MAC");
        let mut m = [0u8; 6];
        for (x, part) in m.iter_mut().zip(text.split(':')) {
            *x = u8::from_str_radix(part, 16).expect("hex");
        }
        kxdp_dataplane::wire::MacAddr::from_bytes(&m)
    };
    let (pa, pb) = (&a.pods[0], &b.pods[0]);
    let payload = vec![0x5a; 20_000];
    let inner = kxdp_dataplane::wire::build::FrameSpec::new(
        kxdp_dataplane::wire::MacAddr::from_bytes(&[2, 0, 0, 0, 0, 1]),
        kxdp_dataplane::wire::MacAddr::from_bytes(&[2, 0, 0, 0, 0, 2]),
        pa.ip,
        pb.ip,
    )
    .tcp(40_000, 9, kxdp_dataplane::wire::tcp_flags::ACK, &payload);
    let mut outer = kxdp_dataplane::wire::build::FrameSpec::new(mac(&a.ns), mac(&b.ns), a.ip, b.ip);
    outer.udp_checksum = false;
    let frame = outer.vxlan(51_000, 8472, 1, &inner);
    let pieces = [frame.as_slice()];
    let plan = Segments::new(&pieces, Encap::Vxlan, 1500).expect("a TCP frame");
    let mut buf = GsoBuf::new(1 << 16, 4);
    plan.emit(&mut buf).expect("cut");
    let (packet, datagrams) = buf.packet(0);
    assert!(datagrams > 10, "{datagrams} datagrams");
    let mut unknown = packet.to_vec();
    unknown[1] = 0x7f;
    assert_eq!(packet[1], gso::GSO_UDP_L4);
    let ns = a.ns.clone();
    let packet = packet.to_vec();
    let (good, bad) = std::thread::spawn(move || {
        kxdp_xdp::enter_netns(&ns).expect("node A's namespace");
        let socket =
            GsoSocket::open(kxdp_xdp::ifindex("uplink").expect("uplink")).expect("a packet socket");
        (socket.send(&packet), socket.send(&unknown))
    })
    .join()
    .expect("the sending thread");
    assert!(good.is_ok(), "a UDP GSO packet: {good:?}");
    let bad = bad.expect_err("an unknown GSO type is refused");
    assert!(
        GsoSocket::is_refusal(&bad) && !GsoSocket::is_full(&bad),
        "an unknown GSO type: {bad}"
    );
}
