//! A dataplane handing its sockets to its successor: two pods ping each other every 5 ms
//! while a second dataplane with the same state directory starts and takes the first one's
//! AF_XDP sockets, UMEM and flows over. The frames that arrive meanwhile wait in the sockets'
//! rings, so not one ping is lost (binding sockets afresh loses tens of milliseconds of them).
//! A successor asking for a layout the running dataplane does not know is refused, and the
//! running one goes on serving. Needs root; prints SKIP otherwise, and fails under CI.

use std::path::PathBuf;
use std::time::Duration;

use kxdp_testkit::Topology;
use kxdp_tests::node::{mac_text, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::worker::Mode;

/// A state directory on a tmpfs, removed when dropped.
struct StateDir(PathBuf);

impl StateDir {
    fn new(test: &str) -> StateDir {
        let dir = PathBuf::from(format!("/dev/shm/kxdp-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pods A and B on a kxdp node (`pod0`, `pod1`), and a way to start a dataplane on them with
/// state directory `dir`.
fn two_pods(t: &Topology) -> Testbed {
    let (ma, mb) = (mac_text(t.pod_a.mac), mac_text(t.pod_b.mac));
    Testbed::pods_on_kxdp_node(&[(t.pod_a.ip, &ma), (t.pod_b.ip, &mb)], t.node.gateway_ip)
        .expect("testbed builds")
}

fn start(t: &Topology, tb: &Testbed, dir: &StateDir) -> KxdpNode {
    KxdpNode::start_configured(
        &tb.nodes[0].ns,
        vec![
            Managed::pod("pod0", t.pod_a.iface),
            Managed::pod("pod1", t.pod_b.iface),
        ],
        t.snapshot(),
        |c| {
            c.mode = Mode::Wakeup { timeout_ms: 50 };
            c.state_dir = Some(dir.0.clone());
        },
    )
    .expect("kxdp starts")
}

#[test]
fn a_successor_takes_the_sockets_over_without_losing_a_packet() {
    if skip_unless_privileged("a_successor_takes_the_sockets_over_without_losing_a_packet") {
        return;
    }
    let t = Topology::default();
    let dir = StateDir::new("handover");
    let tb = two_pods(&t);
    let first = start(&t, &tb, &dir);
    let (a, b) = (
        tb.nodes[0].pods[0].ns.clone(),
        tb.nodes[0].pods[1].ns.clone(),
    );
    // Warm ARP both ways first, so the measured run is only the steady flow.
    for (from, to) in [(&a, t.pod_b.ip), (&b, t.pod_a.ip)] {
        assert_eq!(tb.ping(from, to, 1, Duration::from_secs(3)).unwrap(), 1);
    }
    // 400 pings, 5 ms apart: two seconds of traffic spanning three takeovers.
    let flow = tb
        .ping_flow(&a, t.pod_b.ip, 400, Duration::from_millis(5))
        .expect("ping runs");
    let mut running = first;
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        let next = start(&t, &tb, &dir);
        assert!(
            running.replaced(),
            "round {round}: the running dataplane handed over"
        );
        let handed = next.taken().and_then(|taken| taken.handover.clone());
        assert_eq!(
            handed,
            Some(Ok(2)),
            "round {round}: both pods' sockets taken up"
        );
        running
            .finish()
            .expect("the replaced dataplane stops cleanly");
        running = next;
    }
    let out = flow.wait_with_output().expect("ping ends by itself");
    let text = String::from_utf8_lossy(&out.stdout);
    let counters = running.finish().expect("worker");
    assert!(
        text.contains("400 packets transmitted, 400 received"),
        "no ping lost across three takeovers: {text}"
    );
    assert!(
        counters.events.iter().sum::<u64>() > 0,
        "the last one served"
    );
}

#[test]
fn a_successor_asking_for_another_layout_is_refused_and_nothing_stops() {
    if skip_unless_privileged("a_successor_asking_for_another_layout_is_refused_and_nothing_stops")
    {
        return;
    }
    let t = Topology::default();
    let dir = StateDir::new("handover-refused");
    let tb = two_pods(&t);
    let node = start(&t, &tb, &dir);
    let asked = kxdp_xdp::handover::VERSION + 1;
    let refused = kxdp_xdp::handover::request_layout(&dir.0, asked)
        .map(|umems| umems.len())
        .expect_err("an unknown layout is refused");
    assert!(
        refused.to_string().contains(&format!("layout {asked}")),
        "the refusal says why: {refused}"
    );
    assert!(!node.replaced(), "the running dataplane kept its sockets");
    let a = tb.nodes[0].pods[0].ns.clone();
    assert_eq!(
        tb.ping(&a, t.pod_b.ip, 3, Duration::from_secs(3)).unwrap(),
        3,
        "and goes on serving"
    );
    node.finish().expect("worker");
}
