//! The steering program attached for real, on a node's uplink, with no AF_XDP socket bound:
//! as when the agent is down or starting. Traffic the program would steer (VXLAN from a known
//! node) and traffic it does not own (a ping of the node) must both still reach the kernel.
//! Needs root; prints SKIP otherwise, and fails under CI.

use std::sync::mpsc;
use std::time::Duration;

use kxdp_tests::testbed::{skip_unless_privileged, Spec, Testbed};
use kxdp_xdp::{enter_netns, ifindex, IfRole, Steering, XdpDecision, XdpMode};

#[test]
fn an_attached_program_without_sockets_leaves_the_node_reachable() {
    if skip_unless_privileged("an_attached_program_without_sockets_leaves_the_node_reachable") {
        return;
    }
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 2,
        pods_per_node: 1,
        external: true,
    })
    .expect("testbed builds");
    let (a, b) = (tb.nodes[0].clone(), tb.nodes[1].clone());
    let (ext, _) = tb.external.clone().expect("external client");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // The program is loaded and attached from a thread inside node A's namespace, as the
    // agent's control thread would; it is detached when that thread drops the link.
    let worker = std::thread::spawn(move || -> Result<[u64; XdpDecision::COUNT], String> {
        let result = (|| -> Result<_, String> {
            enter_netns(&a.ns).map_err(|e| format!("entering {}: {e}", a.ns))?;
            let st = Steering::load().map_err(|e| e.to_string())?;
            st.set_config(8472, 61000..=65535)
                .map_err(|e| e.to_string())?;
            st.set_node_ips(&[a.ip]).map_err(|e| e.to_string())?;
            st.set_vxlan_peers(&[b.ip]).map_err(|e| e.to_string())?;
            let uplink = ifindex("uplink").map_err(|e| e.to_string())?;
            st.set_interface(uplink, IfRole::Uplink, 0)
                .map_err(|e| e.to_string())?;
            let link = st.attach(uplink).map_err(|e| e.to_string())?;
            if link.mode != XdpMode::Native {
                return Err(format!("veth takes XDP natively, got {:?}", link.mode));
            }
            Ok((st, link))
        })();
        let (st, link) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = ready_tx.send(Err(e.clone()));
                return Err(e);
            }
        };
        let _ = ready_tx.send(Ok(()));
        let _ = stop_rx.recv_timeout(Duration::from_secs(30));
        let stats = st.stats().map_err(|e| e.to_string())?;
        drop(link);
        Ok(stats)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the worker reports")
        .expect("the program attaches");

    let (a, b) = (&tb.nodes[0], &tb.nodes[1]);
    let deadline = Duration::from_secs(5);
    // VXLAN from node B: steered to queue 0's socket slot, which is empty, so passed.
    assert_eq!(
        tb.ping(&b.pods[0].ns, a.pods[0].ip, 3, deadline).unwrap(),
        3
    );
    // The node itself, which kxdp does not own: passed.
    assert_eq!(tb.ping(&ext, a.ip, 2, deadline).unwrap(), 2);
    stop_tx.send(()).unwrap();
    let stats = worker.join().expect("worker thread").expect("worker");
    let n = |s: XdpDecision| stats[s as usize];
    assert!(
        n(XdpDecision::XskVxlan) >= 3,
        "VXLAN was steered: {stats:?}"
    );
    assert!(
        n(XdpDecision::NoSocket) >= 3,
        "and passed for want of a socket: {stats:?}"
    );
    assert!(
        n(XdpDecision::PassNotOurs) >= 2,
        "the node's own traffic passed: {stats:?}"
    );
    // Detached: still reachable.
    assert_eq!(
        tb.ping(&b.pods[0].ns, a.pods[0].ip, 2, deadline).unwrap(),
        2
    );
}

#[test]
fn interfaces_without_native_xdp_get_generic_mode() {
    if skip_unless_privileged("interfaces_without_native_xdp_get_generic_mode") {
        return;
    }
    // A bridge device has no XDP in its driver (and, unlike dummy, is in every kernel); it
    // lives in the testbed's namespace.
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 1,
        pods_per_node: 0,
        external: false,
    })
    .expect("testbed builds");
    let ns = tb.nodes[0].ns.clone();
    kxdp_tests::testbed::ip(Some(&ns), &["link", "add", "br-generic", "type", "bridge"])
        .unwrap_or_else(|e| panic!("{e}"));
    let mode = std::thread::spawn(move || -> Result<XdpMode, String> {
        enter_netns(&ns).map_err(|e| e.to_string())?;
        let st = Steering::load().map_err(|e| e.to_string())?;
        let index = ifindex("br-generic").map_err(|e| e.to_string())?;
        let attached = st.attach(index).map_err(|e| e.to_string())?;
        Ok(attached.mode)
    })
    .join()
    .expect("thread")
    .expect("attaches");
    assert_eq!(mode, XdpMode::Generic);
}
