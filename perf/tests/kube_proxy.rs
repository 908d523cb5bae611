//! The kernel baseline's rules load into nftables as kube-proxy's would, and route a service's
//! traffic: a kernel node with the fixture's services, a pod reaching a ClusterIP.

use kxdp_perf::kube_proxy::ruleset;
use kxdp_testkit::Topology;
use kxdp_tests::testbed::{skip_unless_privileged, Spec, Testbed};

#[test]
fn the_rules_load_and_list_every_service() {
    if skip_unless_privileged("the_rules_load_and_list_every_service") {
        return;
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "nft is not installed: run scripts/install-deps.sh"
        );
        eprintln!("SKIP the_rules_load_and_list_every_service: nft is not installed");
        return;
    }
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 1,
        pods_per_node: 0,
        external: false,
    })
    .unwrap();
    let ns = tb.nodes[0].ns.clone();
    let rules = ruleset(&Topology::default().snapshot());
    tb.exec_with_input(&ns, &["nft", "-f", "-"], &rules)
        .unwrap_or_else(|e| panic!("{e}\n{rules}"));
    // Loading twice replaces the table (kube-proxy rewrites it whole).
    tb.exec_with_input(&ns, &["nft", "-f", "-"], &rules)
        .unwrap();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "nft",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    for wanted in [
        "10.96.0.53 . udp . 53 : goto service-",
        "numgen random mod 2 vmap",
        "dnat to 10.244.2.20:53",
        "masquerade fully-random",
        "tcp . 30080 : goto external-",
    ] {
        assert!(listed.contains(wanted), "{wanted:?} in\n{listed}");
    }
}
