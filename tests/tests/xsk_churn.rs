//! Pod churn on a kxdp node while traffic flows: a pod comes up (its veth is attached, a port
//! bound, the snapshot swapped), is reachable, and goes away again, while two other pods ping
//! each other throughout without losing a packet. Needs root; prints SKIP otherwise, and fails
//! under CI.

use std::sync::Arc;
use std::time::Duration;

use kxdp_dataplane::tables::{InterfaceId, LocalPod};
use kxdp_dataplane::Snapshot;
use kxdp_testkit::Topology;
use kxdp_tests::node::{mac_text, Change, KxdpNode, Managed};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::worker::{IoCounter, Mode};
use kxdp_xdp::xsk::{Port, PortConfig, Umem};

/// The workers' mode unless a test is about another: sleep in `poll`, 50 ms at most.
const WAKEUP: Mode = Mode::Wakeup { timeout_ms: 50 };

/// Pods A and B of the fixture node, each in its own namespace, on a kxdp node that serves
/// their veths (`pod0`, `pod1`; no uplink, so pod0's socket is the first on the worker's UMEM)
/// with one worker that waits as `mode` says.
fn node_with_two_pods(t: &Topology, mode: Mode) -> (Testbed, KxdpNode) {
    node_with_two_pods_configured(t, None, |c| c.mode = mode)
}

/// [`node_with_two_pods`] with the pods' veths at `pod_mtu` (if given) and the runtime's
/// configuration edited by `edit`.
fn node_with_two_pods_configured(
    t: &Topology,
    pod_mtu: Option<u16>,
    edit: impl FnOnce(&mut kxdp_xdp::runtime::Config),
) -> (Testbed, KxdpNode) {
    let (ma, mb) = (mac_text(t.pod_a.mac), mac_text(t.pod_b.mac));
    let mut tb =
        Testbed::pods_on_kxdp_node(&[(t.pod_a.ip, &ma), (t.pod_b.ip, &mb)], t.node.gateway_ip)
            .expect("testbed builds");
    if let Some(mtu) = pod_mtu {
        tb.set_kxdp_pod_mtu(mtu).expect("pod MTU");
    }
    let node = KxdpNode::start_configured(
        &tb.nodes[0].ns,
        vec![
            Managed::pod("pod0", t.pod_a.iface),
            Managed::pod("pod1", t.pod_b.iface),
        ],
        t.snapshot(),
        edit,
    )
    .expect("kxdp starts");
    (tb, node)
}

/// The fixture's pod C, `pod2` on the node, and the snapshot that has it.
fn pod_c(t: &Topology) -> (LocalPod, Arc<Snapshot>) {
    let pod = LocalPod {
        name: "default/newcomer".into(),
        ip: "10.244.1.12".parse().unwrap(),
        iface: InterfaceId(4),
        mac: kxdp_testkit::mac([0x02, 0, 0x0a, 0xf4, 0x01, 0x0c]),
        policy: None,
    };
    let mut inputs = t.inputs();
    inputs.pods.push(pod.clone());
    let snap = Arc::new(Snapshot::build(inputs).expect("a valid snapshot"));
    (pod, snap)
}

#[test]
fn pods_come_and_go_without_loss_for_the_others() {
    if skip_unless_privileged("pods_come_and_go_without_loss_for_the_others") {
        return;
    }
    let t = Topology::default();
    let (pod_c, with_c) = pod_c(&t);
    let (mut tb, node) = node_with_two_pods(&t, WAKEUP);
    let (a, b) = (
        tb.nodes[0].pods[0].ns.clone(),
        tb.nodes[0].pods[1].ns.clone(),
    );
    // Warm ARP both ways first, so the measured run is only the steady flow.
    assert_eq!(
        tb.ping(&a, t.pod_b.ip, 1, Duration::from_secs(3)).unwrap(),
        1
    );
    assert_eq!(
        tb.ping(&b, t.pod_a.ip, 1, Duration::from_secs(3)).unwrap(),
        1
    );

    // 60 pings, 50 ms apart: three seconds of traffic spanning the churn.
    let flow = tb
        .ping_flow(&a, t.pod_b.ip, 60, Duration::from_millis(50))
        .expect("ping runs");
    std::thread::sleep(Duration::from_millis(300));

    let pod = tb
        .add_kxdp_pod(0, "pod2", pod_c.ip, &mac_text(pod_c.mac))
        .expect("a pod comes up");
    node.change(Change::Add(Managed::pod("pod2", pod_c.iface), with_c))
        .expect("kxdp serves the new pod");
    let newcomer = tb
        .ping(&pod.ns, t.pod_a.ip, 3, Duration::from_secs(3))
        .unwrap();

    node.change(Change::Remove(pod_c.iface, Arc::new(t.snapshot())))
        .expect("kxdp lets the pod go");
    tb.remove_pod(&pod).expect("the pod goes away");

    let out = flow.wait_with_output().expect("ping ends by itself");
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = node.finish().expect("worker");
    assert_eq!(newcomer, 3, "the new pod was reachable through kxdp");
    assert!(
        text.contains("60 packets transmitted, 60 received"),
        "no loss for the other pods: {text}"
    );
}

#[test]
fn a_closed_port_gives_its_chunks_back() {
    if skip_unless_privileged("a_closed_port_gives_its_chunks_back") {
        return;
    }
    on_a_node_with_two_pods(|| {
        // 2048 chunks, half of them in fill rings: leaked rings would exhaust it in a few rounds.
        let umem = Umem::new(PortConfig {
            frames: 2048,
            ..PortConfig::default()
        })
        .expect("UMEM");
        let mut first = Port::open_shared("pod0", 0, &umem).expect("first port");
        first.fill();
        let before = umem.free_chunks();
        for round in 0..8 {
            let mut port = open_when_released("pod1", &umem);
            port.fill();
            assert!(
                umem.free_chunks() < before,
                "round {round}: the fill ring took chunks"
            );
            drop(port);
            assert_eq!(umem.free_chunks(), before, "round {round}: all came back");
        }
    });
}

#[test]
fn a_port_fills_only_its_share_so_the_next_gets_chunks() {
    if skip_unless_privileged("a_port_fills_only_its_share_so_the_next_gets_chunks") {
        return;
    }
    on_a_node_with_two_pods(|| {
        // As many chunks as one fill ring has entries: filled to the ring, the first port
        // would hold them all.
        let config = PortConfig {
            frames: 2048,
            ring_size: 2048,
            ..PortConfig::default()
        };
        let umem = Umem::new(config).expect("UMEM");
        let mut first = Port::open_shared("pod0", 0, &umem).expect("first port");
        first.fill();
        assert_eq!(umem.free_chunks(), 2048 - 1024, "alone: half the UMEM");
        let mut second = Port::open_shared("pod1", 0, &umem).expect("second port");
        second.fill();
        assert_eq!(
            umem.free_chunks(),
            2048 - 1024 - 512,
            "the second port gets its share, and chunks stay free for frames in flight"
        );
        // Filling again takes nothing more: both rings hold their shares.
        first.fill();
        second.fill();
        assert_eq!(umem.free_chunks(), 512);
    });
}

#[test]
fn a_umems_first_socket_refused_a_busy_queue_binds_on_the_next_try() {
    if skip_unless_privileged("a_umems_first_socket_refused_a_busy_queue_binds_on_the_next_try") {
        return;
    }
    on_a_node_with_two_pods(|| {
        // The queue held by another UMEM's socket, as a predecessor's is while it leaves.
        let holder = Port::open("pod0", 0, PortConfig::default()).expect("the holder");
        let umem = Umem::new(PortConfig {
            frames: 2048,
            ..PortConfig::default()
        })
        .expect("UMEM");
        let busy = Port::open_shared("pod0", 0, &umem).expect_err("the queue is held");
        assert_eq!(busy.kind(), std::io::ErrorKind::ResourceBusy, "{busy}");
        drop(holder);
        // The failed try gave the UMEM's rings back: the retry takes them and they work
        // (libxdp copied them from freed memory before, and the fill below crashed).
        let mut port = open_when_released("pod0", &umem);
        port.fill();
        assert_eq!(umem.free_chunks(), 1024, "the fill ring took its share");
    });
}

/// Run `f` on a thread in the namespace of a kxdp node with two pods (`pod0`, `pod1`), the
/// test bed kept until it returns.
fn on_a_node_with_two_pods(f: impl FnOnce() + Send + 'static) {
    let t = Topology::default();
    let (ma, mb) = (mac_text(t.pod_a.mac), mac_text(t.pod_b.mac));
    let tb = Testbed::pods_on_kxdp_node(&[(t.pod_a.ip, &ma), (t.pod_b.ip, &mb)], t.node.gateway_ip)
        .expect("testbed builds");
    let ns = tb.nodes[0].ns.clone();
    std::thread::spawn(move || {
        kxdp_xdp::enter_netns(&ns).expect("node namespace");
        f();
    })
    .join()
    .expect("the port thread passes");
}

/// A port on `ifname`'s queue 0, once the kernel has freed the queue from the socket closed
/// there a moment ago (it does so from a work queue, after the close returns).
fn open_when_released(ifname: &str, umem: &std::rc::Rc<Umem>) -> Port {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Port::open_shared(ifname, 0, umem) {
            Ok(port) => return port,
            Err(e)
                if e.kind() == std::io::ErrorKind::ResourceBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("a port on {ifname}: {e}"),
        }
    }
}

#[test]
fn new_pods_come_up_after_the_first_pod_went() {
    if skip_unless_privileged("new_pods_come_up_after_the_first_pod_went") {
        return;
    }
    let t = Topology::default();
    // Only the pod: its snapshot still has pod A, and this one comes up without it.
    let (pod_c, _) = pod_c(&t);
    let (mut tb, node) = node_with_two_pods(&t, WAKEUP);
    let mut inputs = t.inputs();
    inputs.pods.retain(|p| p.ip != t.pod_a.ip);
    let without_a = Snapshot::build(inputs.clone()).expect("a valid snapshot");
    node.change(Change::Remove(t.pod_a.iface, Arc::new(without_a)))
        .expect("kxdp lets pod A go");
    let pod_a = tb.nodes[0].pods[0].clone();
    tb.remove_pod(&pod_a).expect("pod A goes away");

    let pod = tb
        .add_kxdp_pod(0, "pod2", pod_c.ip, &mac_text(pod_c.mac))
        .expect("a pod comes up");
    inputs.pods.push(pod_c.clone());
    let with_c = Snapshot::build(inputs).expect("a valid snapshot");
    node.change(Change::Add(
        Managed::pod("pod2", pod_c.iface),
        Arc::new(with_c),
    ))
    .expect("kxdp serves the new pod");
    let replies = tb
        .ping(&pod.ns, t.pod_b.ip, 3, Duration::from_secs(5))
        .unwrap();
    let io = node.io();
    let _ = node.finish().expect("worker");
    assert_eq!(replies, 3, "the new pod reaches pod B: {io:?}");
    // Pod A's socket was the one the UMEM is shared through: the newcomer got its own UMEM.
    assert!(
        io.get(IoCounter::Copied) > 0,
        "frames copied between UMEMs: {io:?}"
    );
}

/// Four pods served and let go in turn, `rounds` times in all, by a node whose worker waits
/// as `mode` says; then one is served once more and must answer a ping. (In turn: the kernel
/// releases a detached XDP link a moment after its last descriptor closes, so an interface
/// attached again at once may still find the hook busy.)
fn pods_in_turn(mode: Mode, rounds: usize) {
    let t = Topology::default();
    let (mut tb, node) = node_with_two_pods(&t, mode);
    let mut pods = Vec::new();
    for i in 0..4u8 {
        let pod = LocalPod {
            name: format!("default/churn-{i}"),
            ip: std::net::Ipv4Addr::new(10, 244, 1, 20 + i),
            iface: InterfaceId(4 + u16::from(i)),
            mac: kxdp_testkit::mac([0x02, 0, 0x0a, 0xf4, 0x01, 20 + i]),
            policy: None,
        };
        let name = format!("pod{}", 2 + i);
        let ns = tb
            .add_kxdp_pod(0, &name, pod.ip, &mac_text(pod.mac))
            .expect("a pod comes up");
        let mut inputs = t.inputs();
        inputs.pods.push(pod.clone());
        let snap = Arc::new(Snapshot::build(inputs).expect("a valid snapshot"));
        pods.push((name, pod, ns, snap));
    }
    let without = Arc::new(t.snapshot());
    for round in 0..rounds {
        let (name, pod, _, with) = &pods[round % pods.len()];
        node.change(Change::Add(Managed::pod(name, pod.iface), Arc::clone(with)))
            .unwrap_or_else(|e| panic!("round {round}: kxdp serves {name}: {e}"));
        node.change(Change::Remove(pod.iface, Arc::clone(&without)))
            .unwrap_or_else(|e| panic!("round {round}: kxdp lets {name} go: {e}"));
    }
    let (name, pod, ns, with) = &pods[rounds % pods.len()];
    node.change(Change::Add(Managed::pod(name, pod.iface), Arc::clone(with)))
        .expect("kxdp serves a pod once more");
    let replies = tb
        .ping(&ns.ns, t.pod_a.ip, 3, Duration::from_secs(3))
        .unwrap();
    let _ = node.finish().expect("worker");
    assert_eq!(replies, 3, "a pod is reachable after {rounds} rounds");
}

#[test]
fn an_interface_slot_is_reused_after_its_pod_goes() {
    if skip_unless_privileged("an_interface_slot_is_reused_after_its_pod_goes") {
        return;
    }
    // The XDP program's socket map holds MAX_INTERFACES interfaces at once; a node serves
    // far more pods than that over its life.
    pods_in_turn(WAKEUP, kxdp_xdp::runtime::MAX_INTERFACES as usize + 8);
}

#[test]
fn a_busy_polling_worker_never_holds_up_changes() {
    if skip_unless_privileged("a_busy_polling_worker_never_holds_up_changes") {
        return;
    }
    // Each change wakes the workers with a datagram; a busy-polling worker never sleeps, so
    // never drains them. Several hundred changes (more datagrams than the socket buffer
    // holds) must not block the control thread.
    pods_in_turn(Mode::BusyPoll, 300);
}

#[test]
fn an_add_that_fails_leaves_nothing_behind() {
    if skip_unless_privileged("an_add_that_fails_leaves_nothing_behind") {
        return;
    }
    let t = Topology::default();
    let (mut tb, node) = node_with_two_pods(&t, WAKEUP);
    let (pod_c, with_c) = pod_c(&t);
    let pod = tb
        .add_kxdp_pod(0, "pod2", pod_c.ip, &mac_text(pod_c.mac))
        .expect("a pod comes up");
    // Another AF_XDP socket holds the new veth's queue: the worker cannot bind there, after
    // the program was attached.
    let ns = tb.nodes[0].ns.clone();
    let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let holder = std::thread::spawn(move || {
        kxdp_xdp::enter_netns(&ns).expect("node namespace");
        let umem = Umem::new(PortConfig {
            frames: 2048,
            ..PortConfig::default()
        })
        .expect("UMEM");
        let port = Port::open_shared("pod2", 0, &umem).expect("a socket on pod2's queue");
        held.0.send(()).unwrap();
        let _ = release.1.recv();
        drop(port);
    });
    held.1.recv().expect("the queue is held");
    let add = || {
        node.change(Change::Add(
            Managed::pod("pod2", pod_c.iface),
            Arc::clone(&with_c),
        ))
    };
    let e = add().expect_err("the worker cannot bind a held queue");
    release.0.send(()).unwrap();
    holder.join().expect("the holder lets go");
    // Nothing of the failed add is left: once the queue is free, the pod is served. The
    // kernel releases a detached link, and the holder's queue, a moment after the last
    // descriptor closes, so for that moment the hook may read as taken by kxdp's own program
    // and the queue as held (tried again, as the agent does); a leaked attachment or socket
    // would hold them for good.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let passing = |e: &str| e.contains("another XDP program") || e.contains("holds the queue");
    let served = loop {
        match add() {
            Err(e) if passing(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other,
        }
    };
    served.unwrap_or_else(|e2| panic!("served after the failed add ({e}): {e2}"));
    let replies = tb
        .ping(&pod.ns, t.pod_a.ip, 3, Duration::from_secs(3))
        .unwrap();
    let _ = node.finish().expect("worker");
    assert_eq!(replies, 3, "the pod is reachable");
}

/// The sink segments are cut into: a frame that fits a chunk lands in one; a larger one (a
/// segment for a jumbo uplink) is spread over as many chunks as it takes, in order, marked as
/// continuing; nothing is taken that is not handed back, and a full list is out of buffers.
#[test]
fn a_chunk_sink_spreads_large_frames_over_chunks_and_leaks_none() {
    use kxdp_dataplane::offload::FrameSink;
    use kxdp_xdp::xsk::{ChunkSink, Desc};
    if skip_unless_privileged("a_chunk_sink_spreads_large_frames_over_chunks_and_leaks_none") {
        return;
    }
    let umem = Umem::new(PortConfig {
        frames: 64,
        ..PortConfig::default()
    })
    .expect("UMEM");
    let free = umem.free_chunks();
    let mut out = Vec::with_capacity(8);
    let mut scratch = vec![0u8; 1 << 16];
    let big: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
    {
        let mut sink = ChunkSink::new(&umem, 0, &mut out, &mut scratch);
        sink.buffer(100).expect("a chunk")[..100].fill(0xab);
        sink.commit(100);
        sink.buffer(big.len()).expect("the scratch buffer")[..big.len()].copy_from_slice(&big);
        sink.commit(big.len());
        // A buffer handed out and not committed goes back with the sink.
        sink.buffer(10).expect("a chunk");
    }
    assert_eq!(out.len(), 4, "one chunk, then three: {out:?}");
    assert_eq!(umem.free_chunks(), free - 4, "the open chunk came back");
    assert!(!out[0].more && out[1].more && out[2].more && !out[3].more);
    assert_eq!(umem.frame(out[0]), &[0xab; 100][..]);
    let spread: Vec<u8> = out[1..]
        .iter()
        .flat_map(|d: &Desc| umem.frame(*d).to_vec())
        .collect();
    assert_eq!(spread, big, "the large frame, in order");
    // Four more descriptors fit the list's capacity of eight; a three-chunk frame after them
    // does not.
    {
        let mut sink = ChunkSink::new(&umem, 0, &mut out, &mut scratch);
        for _ in 0..3 {
            sink.buffer(64).expect("a chunk");
            sink.commit(64);
        }
        assert!(sink.buffer(big.len()).is_none(), "out of list");
    }
    assert_eq!(out.len(), 7);
    for d in out.drain(..) {
        umem.recycle(d.addr);
    }
    assert_eq!(umem.free_chunks(), free, "every chunk back");
}

#[test]
fn frames_the_kernel_drops_before_a_socket_are_counted() {
    if skip_unless_privileged("frames_the_kernel_drops_before_a_socket_are_counted") {
        return;
    }
    let t = Topology::default();
    // Rings of 8 entries: a 40 KB frame needs 11 buffers, more than a socket's RX ring and
    // fill ring can ever hold, so the kernel drops every one before the worker sees it.
    let (tb, node) = node_with_two_pods_configured(&t, Some(65535), |c| {
        c.mode = WAKEUP;
        c.port = PortConfig {
            ring_size: 8,
            ..PortConfig::default()
        };
    });
    let a = tb.nodes[0].pods[0].ns.clone();
    let lost = |io: &kxdp_xdp::worker::IoValues| {
        io.get(IoCounter::RxRingFull) + io.get(IoCounter::RxNoChunk)
    };
    assert_eq!(
        tb.ping(&a, t.pod_b.ip, 3, Duration::from_secs(3)).unwrap(),
        3
    );
    // A census (once a second, while the worker runs) has read the sockets: nothing lost.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        tb.ping(&a, t.pod_b.ip, 2, Duration::from_secs(3)).unwrap(),
        2
    );
    assert_eq!(lost(&node.io()), 0, "small echoes fit the rings");
    let big = tb
        .ping_bytes(&a, t.pod_b.ip, 4, 40_000, Duration::from_secs(6))
        .unwrap();
    assert_eq!(big, 0, "no 40 KB echo fits rings of 8");
    // Keep the worker awake past its next census.
    let flow = tb
        .ping_flow(&a, t.pod_b.ip, 12, Duration::from_millis(200))
        .expect("ping runs");
    let out = flow.wait_with_output().expect("ping ends by itself");
    assert!(String::from_utf8_lossy(&out.stdout).contains("12 received"));
    let io = node.io();
    assert!(
        lost(&io) >= 4,
        "the 4 dropped echoes are counted: ring full {}, no chunk {}",
        io.get(IoCounter::RxRingFull),
        io.get(IoCounter::RxNoChunk)
    );
}
