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

/// Under `panic = "abort"` (the demo's and the perf harness's release builds) no `Drop` runs:
/// their panic hook must remove the namespaces. The test runs itself again as a child that
/// installs the hook, builds a testbed, forgets it (so no guard can remove it, as under abort)
/// and panics; the child's namespaces must be gone when it exits.
#[test]
fn the_panic_hook_removes_namespaces_that_no_guard_will() {
    const CHILD: &str = "KXDP_TESTBED_PANIC_CHILD";
    if std::env::var_os(CHILD).is_some() {
        Testbed::remove_namespaces_on_panic();
        let tb = Testbed::kernel_nodes(Spec {
            nodes: 1,
            pods_per_node: 1,
            external: false,
        })
        .expect("testbed builds");
        eprintln!("prefix={}", tb.prefix());
        assert!(!Testbed::live_namespaces(tb.prefix()).is_empty());
        std::mem::forget(tb);
        panic!("the child panics with its testbed forgotten");
    }
    if skip_unless_privileged("the_panic_hook_removes_namespaces_that_no_guard_will") {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_panic_hook_removes_namespaces_that_no_guard_will",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prefix = stderr
        .lines()
        .find_map(|l| l.strip_prefix("prefix="))
        .unwrap_or_else(|| panic!("the child built its testbed: {stdout}{stderr}"));
    // Whatever the child left is removed before anything is asserted.
    let left = Testbed::live_namespaces(prefix);
    Testbed::remove_namespaces(prefix);
    assert!(
        !out.status.success(),
        "the child panicked: {stdout}{stderr}"
    );
    assert!(
        stderr.contains("panic: removed ") && !stderr.contains("panic: removed 0 "),
        "the hook removed the namespaces: {stderr}"
    );
    assert_eq!(left, Vec::<String>::new());
}
