//! Real packets through kxdp: a pod pings its gateway, and the answers (ARP, then ICMP echo
//! replies) come from the pipeline running on an AF_XDP socket on the pod's veth, steered
//! there by the XDP program. Nothing in the kernel answers for the gateway address, so the
//! ping succeeds only through kxdp. Needs root; prints SKIP otherwise, and fails under CI.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::testkit::Topology;
use kxdp_dataplane::{process_batch, Counters, Frame, Instant, Packet, Verdict};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::xsk::{Desc, Port, PortConfig};
use kxdp_xdp::{enter_netns, ifindex, IfRole, Steering};

const BATCH: usize = 64;

/// The chunk base of a received frame's address (chunks are `PortConfig::default()`'s size).
fn port_chunk(addr: u64) -> u64 {
    addr & !(u64::from(PortConfig::default().frame_size) - 1)
}

/// A minimal worker for one pod interface: receive a batch, run the pipeline, send back what
/// it answers on this interface, recycle the rest. Stops when `stop` is set or after 30 s.
fn serve_pod(
    ns: String,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<u64, String> {
    let t = Topology::default();
    let snap = t.snapshot();
    let ct = Conntrack::new(ConntrackConfig {
        capacity: 1024,
        ..ConntrackConfig::default()
    });
    let counters = Counters::new();
    let setup = (|| -> Result<_, String> {
        enter_netns(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
        let st = Steering::load().map_err(|e| e.to_string())?;
        let pod0 = ifindex("pod0").map_err(|e| e.to_string())?;
        st.set_interface(pod0, IfRole::Pod, 0)
            .map_err(|e| e.to_string())?;
        let link = st.attach(pod0).map_err(|e| e.to_string())?;
        let mut port = Port::open("pod0", 0, PortConfig::default()).map_err(|e| e.to_string())?;
        st.register_socket(0, port.fd())
            .map_err(|e| e.to_string())?;
        port.fill();
        Ok((st, link, port))
    })();
    let (_st, _link, mut port) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let _ = ready.send(Ok(()));
    let started = WallClock::now();
    let mut rx = [Desc::default(); BATCH];
    let mut tx = [Desc::default(); BATCH];
    let mut drop_list = [0u64; BATCH];
    while !stop.load(Relaxed) && started.elapsed() < Duration::from_secs(30) {
        port.complete();
        if !port.wait(50).map_err(|e| e.to_string())? {
            continue;
        }
        let n = port.receive(&mut rx);
        let now = Instant::from_nanos(started.elapsed().as_nanos() as u64);
        let (mut ntx, mut ndrop) = (0, 0);
        port.with_chunks(&rx[..n], |chunks| {
            let mut packets: Vec<Packet<'_>> = Vec::with_capacity(BATCH);
            for ((chunk, head), d) in chunks.zip(&rx[..n]) {
                let frame = Frame::new(chunk, head, d.len as usize).expect("frame in its chunk");
                packets.push(Packet::new(frame, t.pod_a.iface));
            }
            process_batch(&mut packets, &snap, &ct, &counters, now);
            for (p, d) in packets.iter().zip(&rx[..n]) {
                let back = matches!(p.verdict, Verdict::Reply)
                    || p.verdict == Verdict::Transmit(t.pod_a.iface);
                if back {
                    tx[ntx] = Desc {
                        addr: port_chunk(d.addr) + p.frame.head() as u64,
                        len: p.frame.len() as u32,
                    };
                    ntx += 1;
                } else {
                    drop_list[ndrop] = d.addr;
                    ndrop += 1;
                }
            }
        });
        for addr in &drop_list[..ndrop] {
            port.recycle(*addr);
        }
        port.transmit(&tx[..ntx]);
        port.fill();
    }
    let c = counters.read();
    Ok(c.event(Event::IcmpEchoReply) + c.event(Event::ArpReply))
}

#[test]
fn a_pod_pings_its_gateway_through_af_xdp_and_the_pipeline() {
    if skip_unless_privileged("a_pod_pings_its_gateway_through_af_xdp_and_the_pipeline") {
        return;
    }
    let t = Topology::default();
    let mac = t.pod_a.mac.0.map(|b| format!("{b:02x}")).join(":");
    let tb =
        Testbed::pod_on_kxdp_node(t.pod_a.ip, &mac, t.node.gateway_ip).expect("testbed builds");
    let node_ns = tb.nodes[0].ns.clone();
    let pod_ns = tb.nodes[0].pods[0].ns.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || serve_pod(node_ns, stop, ready_tx))
    };
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the worker reports")
        .expect("the worker starts");
    let replies = tb
        .ping(&pod_ns, t.node.gateway_ip, 3, Duration::from_secs(5))
        .unwrap();
    stop.store(true, Relaxed);
    let answered = worker.join().expect("worker thread").expect("worker");
    assert_eq!(replies, 3, "pings answered through kxdp");
    assert!(
        answered >= 4,
        "ARP and echo replies came from the pipeline: {answered}"
    );
}
