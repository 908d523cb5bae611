//! The namespace testbed itself: a two-node cluster of flannel-style kernel nodes carries pod
//! traffic over VXLAN, and every namespace disappears afterwards, even after a panic.
//! Needs root; prints SKIP otherwise, and fails under CI.

use std::time::Duration;

use kxdp_tests::testbed::{skip_unless_privileged, Spec, Testbed};

fn spec() -> Spec {
    Spec {
        nodes: 2,
        pods_per_node: 2,
        external: true,
    }
}

#[test]
fn kernel_vxlan_nodes_carry_pod_traffic_and_are_removed_afterwards() {
    if skip_unless_privileged("kernel_vxlan_nodes_carry_pod_traffic_and_are_removed_afterwards") {
        return;
    }
    let tb = Testbed::kernel_nodes(spec()).expect("testbed builds");
    let prefix = tb.prefix().to_owned();
    let (a, b) = (&tb.nodes[0], &tb.nodes[1]);
    let deadline = Duration::from_secs(5);
    // Same node, through the cni0 bridge.
    assert_eq!(
        tb.ping(&a.pods[0].ns, a.pods[1].ip, 3, deadline).unwrap(),
        3
    );
    // Across nodes, over flannel.1 and the underlay.
    let before = tb.tx_packets(&a.ns, "flannel.1").unwrap();
    assert_eq!(
        tb.ping(&a.pods[0].ns, b.pods[1].ip, 3, deadline).unwrap(),
        3
    );
    assert!(
        tb.tx_packets(&a.ns, "flannel.1").unwrap() >= before + 3,
        "not through VXLAN"
    );
    assert_eq!(
        tb.ping(&b.pods[0].ns, a.pods[0].ip, 3, deadline).unwrap(),
        3
    );
    // The external client reaches the nodes on the underlay, and not the pods (no route).
    let (ext, _) = tb.external.clone().unwrap();
    assert_eq!(tb.ping(&ext, a.ip, 2, deadline).unwrap(), 2);
    assert_eq!(
        tb.ping(&ext, a.pods[0].ip, 1, Duration::from_secs(1))
            .unwrap(),
        0
    );
    assert!(Testbed::live_namespaces(&prefix).len() >= 8);
    drop(tb);
    assert_eq!(Testbed::live_namespaces(&prefix), Vec::<String>::new());
}

#[test]
fn namespaces_are_removed_when_a_test_panics() {
    if skip_unless_privileged("namespaces_are_removed_when_a_test_panics") {
        return;
    }
    let mut prefix = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let tb = Testbed::kernel_nodes(Spec {
            nodes: 1,
            pods_per_node: 1,
            external: false,
        })
        .expect("testbed builds");
        prefix = tb.prefix().to_owned();
        assert!(!Testbed::live_namespaces(&prefix).is_empty());
        panic!("a failing test");
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    assert_eq!(Testbed::live_namespaces(&prefix), Vec::<String>::new());
}
