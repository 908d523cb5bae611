//! Real packets through kxdp on AF_XDP: pods on a node run by a kxdp worker. A pod pings its
//! gateway (ARP and echo replies come from the pipeline: nothing in the kernel owns that
//! address), and two pods ping each other (proxy ARP, then routing between their veths with
//! MAC rewrite and TTL decrement, copied between the two ports' UMEMs). Needs root; prints SKIP
//! otherwise, and fails under CI.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::{CounterValues, Event};
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::testkit::Topology;
use kxdp_dataplane::{Counters, Instant};
use kxdp_tests::testbed::{skip_unless_privileged, Testbed};
use kxdp_xdp::worker::{Mode, Worker};
use kxdp_xdp::xsk::{Port, PortConfig};
use kxdp_xdp::{enter_netns, ifindex, IfRole, Steering};

/// Run a kxdp worker in namespace `ns` over the interfaces `pod<j>`, one per entry of
/// `ifaces`, until `stop` (or 30 s). Reports readiness on `ready`; returns the counters.
fn run_worker(
    ns: String,
    ifaces: Vec<InterfaceId>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
) -> Result<CounterValues, String> {
    let snap = Topology::default().snapshot();
    let ct = Conntrack::new(ConntrackConfig {
        capacity: 1024,
        ..ConntrackConfig::default()
    });
    let setup = (|| -> Result<_, String> {
        enter_netns(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
        let st = Steering::load().map_err(|e| e.to_string())?;
        let mut links = Vec::new();
        let mut ports = Vec::new();
        for (j, iface) in ifaces.iter().enumerate() {
            let name = format!("pod{j}");
            let index = ifindex(&name).map_err(|e| format!("{name}: {e}"))?;
            let base = 64 * j as u32;
            st.set_interface(index, IfRole::Pod, base)
                .map_err(|e| e.to_string())?;
            links.push(st.attach(index).map_err(|e| e.to_string())?);
            let port = Port::open(&name, 0, PortConfig::default()).map_err(|e| e.to_string())?;
            st.register_socket(base, port.fd())
                .map_err(|e| e.to_string())?;
            ports.push((*iface, port));
        }
        Ok((st, links, ports))
    })();
    let (_st, _links, ports) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let mut worker = Worker::new(ports, Arc::new(Counters::new()));
    worker.prime();
    let _ = ready.send(Ok(()));
    let started = WallClock::now();
    while !stop.load(Relaxed) && started.elapsed() < Duration::from_secs(30) {
        let now = Instant::from_nanos(started.elapsed().as_nanos() as u64);
        worker
            .poll_once(&snap, &ct, now, Mode::Wakeup { timeout_ms: 50 })
            .map_err(|e| e.to_string())?;
    }
    Ok(worker.counters().read())
}

/// A testbed of the fixture's pods on one kxdp node, with a worker running.
struct Running {
    tb: Testbed,
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<Result<CounterValues, String>>>,
}

impl Running {
    fn start(t: &Topology, pods: &[&kxdp_dataplane::tables::LocalPod]) -> Running {
        let macs: Vec<String> = pods
            .iter()
            .map(|p| p.mac.0.map(|b| format!("{b:02x}")).join(":"))
            .collect();
        let spec: Vec<_> = pods
            .iter()
            .zip(&macs)
            .map(|(p, m)| (p.ip, m.as_str()))
            .collect();
        let tb = Testbed::pods_on_kxdp_node(&spec, t.node.gateway_ip).expect("testbed builds");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns = tb.nodes[0].ns.clone();
        let ifaces = pods.iter().map(|p| p.iface).collect();
        let worker = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || run_worker(ns, ifaces, stop, ready_tx))
        };
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the worker reports")
            .expect("the worker starts");
        Running {
            tb,
            stop,
            worker: Some(worker),
        }
    }

    fn finish(mut self) -> CounterValues {
        self.stop.store(true, Relaxed);
        let worker = self.worker.take().expect("running");
        worker.join().expect("worker thread").expect("worker")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // On a failed assertion: stop the worker before the testbed goes.
        self.stop.store(true, Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[test]
fn a_pod_pings_its_gateway_through_af_xdp_and_the_pipeline() {
    if skip_unless_privileged("a_pod_pings_its_gateway_through_af_xdp_and_the_pipeline") {
        return;
    }
    let t = Topology::default();
    let run = Running::start(&t, &[&t.pod_a]);
    let pod = run.tb.nodes[0].pods[0].ns.clone();
    let replies = run
        .tb
        .ping(&pod, t.node.gateway_ip, 3, Duration::from_secs(5))
        .unwrap();
    let c = run.finish();
    assert_eq!(replies, 3, "pings answered through kxdp");
    assert!(
        c.event(Event::ArpReply) >= 1,
        "ARP answered by the pipeline: {c:?}"
    );
    assert!(
        c.event(Event::IcmpEchoReply) >= 3,
        "echo answered by the pipeline: {c:?}"
    );
}

#[test]
fn two_pods_on_one_node_reach_each_other_through_kxdp() {
    if skip_unless_privileged("two_pods_on_one_node_reach_each_other_through_kxdp") {
        return;
    }
    let t = Topology::default();
    let run = Running::start(&t, &[&t.pod_a, &t.pod_b]);
    let (a, b) = (
        run.tb.nodes[0].pods[0].ns.clone(),
        run.tb.nodes[0].pods[1].ns.clone(),
    );
    let deadline = Duration::from_secs(5);
    let a_to_b = run.tb.ping(&a, t.pod_b.ip, 3, deadline).unwrap();
    let b_to_a = run.tb.ping(&b, t.pod_a.ip, 3, deadline).unwrap();
    let c = run.finish();
    assert_eq!((a_to_b, b_to_a), (3, 3), "pod to pod through kxdp");
    // Requests and replies both ways, each routed by the pipeline.
    assert!(
        c.event(Event::LocalForward) >= 12,
        "routed by the pipeline: {c:?}"
    );
}
