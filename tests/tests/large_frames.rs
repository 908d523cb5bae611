//! Frames larger than an AF_XDP chunk: pods whose interfaces have an MTU far above the uplink's
//! (`--pod-mtu`), served by `kxdp agent`s on a two-node namespace cluster. Inside a node a
//! large frame reaches the other pod whole; what leaves for the tunnel is cut to its MTU.
//! Needs root; prints SKIP otherwise, and fails under CI.

use std::process::Command;
use std::time::Duration;

use kxdp_tests::clients::{iperf, IperfServer};
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
}
