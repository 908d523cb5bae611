//! The steering program attached for real, on a node's uplink, with no AF_XDP socket bound:
//! as while no agent runs (one is being replaced, or restarting). Attached to outlive its
//! loader, it stays when the loader is gone; traffic it would steer (VXLAN from a known node)
//! is dropped, never answered by the node's kernel, and traffic it does not own (a ping of the
//! node) still reaches the kernel. Needs root; prints SKIP otherwise, and fails under CI.

use std::time::Duration;

use kxdp_tests::testbed::{ip, skip_unless_privileged, snmp, Spec, Testbed};
use kxdp_xdp::{enter_netns, ifindex, IfRole, Steering, XdpDecision, XdpMode};

#[test]
fn a_lasting_program_without_sockets_drops_the_dataplanes_traffic_and_leaves_the_node_reachable() {
    if skip_unless_privileged(
        "a_lasting_program_without_sockets_drops_the_dataplanes_traffic_and_leaves_the_node_reachable",
    ) {
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
    // Loaded and attached from a thread inside node A's namespace, as the agent's control
    // thread does; the thread and everything it loaded are gone before any traffic.
    let ns = a.ns.clone();
    let decisions = std::thread::spawn(move || -> Result<_, String> {
        enter_netns(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
        let st = Steering::load().map_err(|e| e.to_string())?;
        st.set_config(8472, 61000..=65535)
            .map_err(|e| e.to_string())?;
        st.set_node_ips(&[a.ip]).map_err(|e| e.to_string())?;
        st.set_vxlan_peers(&[b.ip]).map_err(|e| e.to_string())?;
        let uplink = ifindex("uplink").map_err(|e| e.to_string())?;
        st.set_interface(uplink, IfRole::Uplink, 0)
            .map_err(|e| e.to_string())?;
        let attached = st.attach_lasting(uplink, &[]).map_err(|e| e.to_string())?;
        if attached.mode != XdpMode::Native {
            return Err(format!("veth takes XDP natively, got {:?}", attached.mode));
        }
        st.decisions().map_err(|e| e.to_string())
    })
    .join()
    .expect("the loader thread")
    .expect("the program attaches");
    let shown =
        ip(Some(&a.ns), &["link", "show", "dev", "uplink"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("prog/xdp"),
        "the program outlived its loader"
    );

    let deadline = Duration::from_secs(5);
    let (no_ports, unreachables) = (
        snmp(&a.ns, "Udp", "NoPorts"),
        snmp(&a.ns, "Icmp", "OutDestUnreachs"),
    );
    // VXLAN from node B: steered to queue 0's socket slot, which is empty, so dropped.
    assert_eq!(
        tb.ping(&b.pods[0].ns, a.pods[0].ip, 3, deadline).unwrap(),
        0
    );
    // The node itself, which kxdp does not own: passed.
    assert_eq!(tb.ping(&ext, a.ip, 2, deadline).unwrap(), 2);
    let stats = decisions.read().expect("the counters");
    let n = |s: XdpDecision| stats[s as usize];
    assert!(
        n(XdpDecision::XskVxlan) >= 3,
        "VXLAN was steered: {stats:?}"
    );
    assert!(
        n(XdpDecision::NoSocket) >= 3,
        "and dropped for want of a socket: {stats:?}"
    );
    assert!(
        n(XdpDecision::PassNotOurs) >= 2,
        "the node's own traffic passed: {stats:?}"
    );
    // The node's kernel never saw the VXLAN, so it answered nothing.
    assert_eq!(snmp(&a.ns, "Udp", "NoPorts"), no_ports);
    assert_eq!(snmp(&a.ns, "Icmp", "OutDestUnreachs"), unreachables);

    // Detached as `kxdp uninstall` does: the kernel's own VXLAN path answers again.
    let ns = a.ns.clone();
    let detached = std::thread::spawn(move || -> Result<bool, String> {
        enter_netns(&ns).map_err(|e| e.to_string())?;
        let uplink = ifindex("uplink").map_err(|e| e.to_string())?;
        kxdp_xdp::detach_lasting(uplink, &[]).map_err(|e| e.to_string())
    })
    .join()
    .expect("thread");
    assert_eq!(detached, Ok(true));
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
