//! The perf harness's own XDP programs, for real on a veth: the generator (BPF_PROG_RUN in
//! live-frames mode) sends frames out of a pod's `eth0`, and the sink attached to the node's
//! end counts and drops them. The harness's numbers are only as good as these two. Needs root;
//! prints SKIP otherwise, and fails under CI.

use kxdp_perf::programs::PerfPrograms;
use kxdp_testkit::Topology;
use kxdp_tests::node::mac_text;
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::{enter_netns, ifindex, XdpMode};

#[test]
fn the_generator_sends_what_the_sink_counts() {
    if skip_unless_privileged("the_generator_sends_what_the_sink_counts") {
        return;
    }
    let t = Topology::default();
    let tb = Testbed::pods_on_kxdp_node(&[(t.pod_a.ip, &mac_text(t.pod_a.mac))], t.node.gateway_ip)
        .expect("testbed builds");
    let (node, pod) = (tb.nodes[0].ns.clone(), tb.nodes[0].pods[0].ns.clone());
    // The pod's IPv6 link-up chatter (neighbour discovery, MLD) would reach the sink too.
    for ns in [&node, &pod] {
        kxdp_perf::ipv4_only(ns).expect("IPv6 off");
    }
    let mut spec = t.from_pod_a(t.dns_cluster_ip);
    spec.udp_checksum = false;
    let frame = spec.udp(10_000, 53, &[0x6b; 200]);
    const FRAMES: u32 = 20_000;

    let (sink, attached) = std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(&node).expect("node namespace");
            let sink = PerfPrograms::load().expect("perf programs load");
            let attached = sink
                .attach_sink(ifindex("pod0").expect("pod0"))
                .expect("the sink attaches");
            (sink, attached)
        })
        .join()
        .expect("sink thread")
    });
    assert_eq!(
        attached.mode,
        XdpMode::Native,
        "veth runs XDP in the driver"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(&pod).expect("pod namespace");
            let generator = PerfPrograms::load().expect("perf programs load");
            generator.set_flows(64).expect("flows");
            generator
                .generate(&frame, ifindex("eth0").expect("eth0"), FRAMES)
                .expect("frames generated");
        })
        .join()
        .expect("generator thread")
    });
    let (frames, bytes) = sink.sink_counts().expect("sink counters");
    drop(attached);
    // A veth's receive ring may overflow under a burst; most frames must arrive, whole.
    assert!(
        frames >= u64::from(FRAMES) / 2 && frames <= u64::from(FRAMES),
        "sink counted {frames} of {FRAMES}"
    );
    assert_eq!(
        bytes,
        frames * frame.len() as u64,
        "every frame arrived whole"
    );
}
