//! The perf harness's own instruments, for real on a veth: the generator (BPF_PROG_RUN in
//! live-frames mode, and its AF_XDP fallback) sends frames out of a pod's `eth0`, and the sink
//! attached to the node's end counts and drops them. The harness's numbers are only as good as
//! these. Needs root; prints SKIP otherwise, and fails under CI. Where the kernel refuses live
//! frames (some builds answer EPERM even to root), the refusal must be exactly that, and the
//! harness's generator must have fallen back to AF_XDP.

use std::time::{Duration, Instant};

use kxdp_perf::generator::{Generator, Means};
use kxdp_perf::programs::PerfPrograms;
use kxdp_testkit::Topology;
use kxdp_tests::node::mac_text;
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::{enter_netns, ifindex, XdpError, XdpMode};

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
    // Each generator in turn: what the sink counted of what it sent.
    let mut counted = (0, 0);
    let mut run = |make: fn(&str, &[u8], u32) -> Result<Generator, String>| {
        let means = std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&pod).expect("pod namespace");
                let mut generator = make("eth0", &frame, 64).expect("the generator opens");
                let mut sent = 0;
                let deadline = Instant::now() + Duration::from_secs(10);
                while sent < FRAMES && Instant::now() < deadline {
                    sent += generator.send(FRAMES - sent).expect("frames generated");
                }
                assert_eq!(sent, FRAMES, "the generator sent them all within 10 s");
                generator.means()
            })
            .join()
            .expect("generator thread")
        });
        // AF_XDP transmits after the call returns: give the last ring time to drain.
        std::thread::sleep(Duration::from_millis(200));
        let (frames, bytes) = sink.sink_counts().expect("sink counters");
        let (frames, bytes) = (frames - counted.0, bytes - counted.1);
        counted = (counted.0 + frames, counted.1 + bytes);
        // A veth's receive ring may overflow under a burst; most frames must arrive, whole.
        assert!(
            frames >= u64::from(FRAMES) / 2 && frames <= u64::from(FRAMES),
            "{}: sink counted {frames} of {FRAMES}",
            means.name()
        );
        assert_eq!(
            bytes,
            frames * frame.len() as u64,
            "{}: every frame arrived whole",
            means.name()
        );
        means
    };
    assert_eq!(run(Generator::af_xdp), Means::AfXdp);
    let means = run(Generator::new);
    drop(attached);
    if means == Means::AfXdp {
        // The harness fell back: only because this kernel refuses live frames outright.
        let refusal = std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&pod).expect("pod namespace");
                let progs = PerfPrograms::load().expect("perf programs load");
                progs.generate(&frame, ifindex("eth0").expect("eth0"), 1)
            })
            .join()
            .expect("probe thread")
        });
        match refusal {
            Err(XdpError::Bpf { source, .. })
                if source.kind() == libbpf_rs::ErrorKind::PermissionDenied =>
            {
                eprintln!(
                    "this kernel refuses BPF_PROG_RUN live frames (EPERM): AF_XDP fed the sink"
                );
            }
            other => panic!("the generator fell back to AF_XDP, yet live frames gave {other:?}"),
        }
    }
    // A frame larger than a UMEM chunk (the ceiling's 9000-byte datagrams) leaves through
    // AF_XDP in several descriptors, each with the room the kernel wants before it; the node's
    // end, without the sink now, takes them to its stack, which drops them.
    for (ns, dev) in [(&pod, "eth0"), (&node, "pod0")] {
        kxdp_tests::testbed::ip(Some(ns), &["link", "set", dev, "mtu", "9000"]).expect("MTU");
    }
    let big = spec.udp(10_000, 53, &[0x6b; 8900]);
    const BIG: u32 = 2_000;
    let sent = std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(&pod).expect("pod namespace");
            let mut generator = Generator::af_xdp("eth0", &big, 64).expect("the generator opens");
            let mut sent = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            while sent < BIG && Instant::now() < deadline {
                sent += generator.send(BIG - sent).expect("frames generated");
            }
            sent
        })
        .join()
        .expect("generator thread")
    });
    assert_eq!(sent, BIG, "9000-byte frames through AF_XDP within 10 s");
}
