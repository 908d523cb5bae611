//! The namespace testbed itself: a two-node cluster of flannel-style kernel nodes carries pod
//! traffic over VXLAN, and every namespace disappears afterwards, even after a panic; kernel
//! nodes keep a flannel node's default offloads while kxdp's veths run without transmit
//! checksum offload, and the perf harness's variants (another underlay MTU, offloads off)
//! take. Needs root; prints SKIP otherwise, and fails under CI.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use kxdp_tests::testbed::{ip, skip_unless_privileged, Spec, Testbed};

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

/// `ethtool -k`'s state of feature `name` (`on`/`off`) on `dev` in namespace `ns`.
fn feature(ns: &str, dev: &str, name: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-k", dev])
        .output()
        .expect("ethtool runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} for {dev} in {ns}: {text}"))
        .to_owned()
}

/// The MTU of `dev` in namespace `ns`.
fn mtu(ns: &str, dev: &str) -> u64 {
    let out = ip(Some(ns), &["-j", "link", "show", "dev", dev]).expect("ip runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip's JSON");
    v[0]["mtu"].as_u64().expect("an MTU")
}

#[test]
fn kernel_nodes_and_kxdp_pods_keep_default_offloads_and_kxdp_uplinks_run_without_tx_checksum() {
    if skip_unless_privileged(
        "kernel_nodes_and_kxdp_pods_keep_default_offloads_and_kxdp_uplinks_run_without_tx_checksum",
    ) {
        return;
    }
    let mut tb = Testbed::kernel_nodes(Spec {
        nodes: 2,
        pods_per_node: 1,
        external: false,
    })
    .expect("testbed builds");
    let (a, b) = (tb.nodes[0].clone(), tb.nodes[1].clone());
    let pod = a.pods[0].ns.clone();
    // A flannel node's defaults: checksum and segmentation offload on every veth.
    for (ns, dev) in [
        (pod.as_str(), "eth0"),
        (a.ns.as_str(), "veth0"),
        (a.ns.as_str(), "uplink"),
        (tb.switch.as_str(), "s0"),
    ] {
        assert_eq!(feature(ns, dev, "tx-checksumming"), "on", "{dev} in {ns}");
        assert_eq!(feature(ns, dev, "tx-tcp-segmentation"), "on", "{dev}");
    }
    // The switch only switches; a node keeps bridge netfilter as the kernel sets it.
    let nf = |ns: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-n"])
            .arg("net.bridge.bridge-nf-call-iptables")
            .output()
            .expect("sysctl runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    if std::path::Path::new("/proc/sys/net/bridge").exists() {
        assert_eq!(nf(&tb.switch), "0", "the switch runs no bridge netfilter");
        assert_eq!(nf(&a.ns), "1", "a node keeps the kernel's default");
    }
    // The perf harness's variant: off everywhere, and back on with segmentation.
    tb.set_tx_offload_everywhere(false).unwrap();
    assert_eq!(feature(&pod, "eth0", "tx-checksumming"), "off");
    assert_eq!(feature(&pod, "eth0", "tx-tcp-segmentation"), "off");
    assert_eq!(feature(&tb.switch, "s1", "tx-checksumming"), "off");
    tb.set_tx_offload_everywhere(true).unwrap();
    assert_eq!(feature(&pod, "eth0", "tx-checksumming"), "on");
    assert_eq!(feature(&pod, "eth0", "tx-tcp-segmentation"), "on");
    // Another underlay MTU: the underlay at 9000, pods and flannel's devices at 8950, and an
    // 8900-byte echo that may not fragment crosses nodes.
    tb.set_underlay_mtu(9000).unwrap();
    for (ns, dev, want) in [
        (tb.switch.as_str(), "s0", 9000),
        (a.ns.as_str(), "uplink", 9000),
        (a.ns.as_str(), "flannel.1", 8950),
        (a.ns.as_str(), "cni0", 8950),
        (a.ns.as_str(), "veth0", 8950),
        (pod.as_str(), "eth0", 8950),
    ] {
        assert_eq!(mtu(ns, dev), want, "{dev} in {ns}");
    }
    let big = Command::new("timeout")
        .args(["10", "ip", "netns", "exec", &pod, "ping", "-n", "-c", "2"])
        .args(["-W", "2", "-M", "do", "-s", "8900"])
        .arg(b.pods[0].ip.to_string())
        .output()
        .expect("ping runs");
    assert!(
        big.status.success(),
        "{}",
        String::from_utf8_lossy(&big.stdout)
    );

    // kxdp's pods with the kernel's defaults; its uplinks, and the switch ports facing them,
    // without transmit checksum offload (a NIC's stand-in); its pods at another underlay's
    // MTU less 50 once asked.
    let mut kx =
        Testbed::two_kxdp_nodes(&[(Ipv4Addr::new(10, 244, 1, 10), "0a:58:0a:f4:01:0a")], &[])
            .expect("testbed builds");
    let kpod = kx.nodes[0].pods[0].ns.clone();
    for (ns, dev) in [(kpod.as_str(), "eth0"), (kx.nodes[0].ns.as_str(), "pod0")] {
        assert_eq!(feature(ns, dev, "tx-checksumming"), "on", "{dev} in {ns}");
    }
    for (ns, dev) in [
        (kx.nodes[0].ns.as_str(), "uplink"),
        (kx.switch.as_str(), "s0"),
    ] {
        assert_eq!(feature(ns, dev, "tx-checksumming"), "off", "{dev} in {ns}");
    }
    kx.set_underlay_mtu(9000).unwrap();
    assert_eq!(mtu(&kpod, "eth0"), 8950);
    assert_eq!(mtu(&kx.nodes[0].ns, "pod0"), 8950);
    assert_eq!(mtu(&kx.nodes[0].ns, "uplink"), 9000);
    // A pod added later gets the pods' MTU, as from the agent's --pod-mtu default.
    let later = kx
        .add_kxdp_pod(
            1,
            "pod1",
            Ipv4Addr::new(10, 244, 2, 10),
            "0a:58:0a:f4:02:0a",
        )
        .unwrap();
    assert_eq!(mtu(&later.ns, "eth0"), 8950);
}
