//! `kxdp agent` and its node's kernel: a dataplane that cannot start because another XDP
//! program holds the uplink (not ready, the program named, tried again until it goes), one on
//! a pod veth (that pod held back, the node served), a pod veth recreated under its name (released and served again), and an uplink neighbour that
//! changes (republished as the kernel announces it). Needs root; prints SKIP otherwise, and
//! fails under CI.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use kxdp_agent::admin::{self, RouteTarget, RouteView};
use kxdp_tests::cluster::{eventually, AgentCluster, DEMO_MANIFEST as MANIFEST, DEMO_PODS as PODS};
use kxdp_tests::testbed::{self, skip_unless_privileged};

/// What `ip -n ns <args>` prints; it must succeed.
fn ip(ns: &str, args: &[&str]) -> String {
    let out = testbed::ip(Some(ns), args).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Replies to three pings from pod `from` to `to`.
fn pings(c: &AgentCluster, from: &str, to: Ipv4Addr) -> u32 {
    c.tb.ping(&c.pod(from).ns, to, 3, Duration::from_secs(5))
        .expect("ping runs")
}

/// What an operator's `ip link set dev <if> xdp obj ...` leaves: a program attached through
/// netlink. Ours passes everything; clang builds it (as it builds kxdp's). Returns its id.
fn attach_foreign_program(c: &AgentCluster, ns: &str, dev: &str) -> String {
    let source = c.dir().join("foreign.c");
    std::fs::write(
        &source,
        "__attribute__((section(\"xdp\"), used)) int foreign_pass(void *ctx) { return 2; }\n\
         __attribute__((section(\"license\"), used)) char LICENSE[] = \"GPL\";\n",
    )
    .unwrap();
    let object = c.dir().join("foreign.o");
    let clang = Command::new("clang")
        .args(["-O2", "-target", "bpf", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .output()
        .expect("clang runs (scripts/install-deps.sh installs it)");
    assert!(clang.status.success(), "clang: {clang:?}");
    let object = object.display().to_string();
    ip(
        ns,
        &[
            "link", "set", "dev", dev, "xdp", "obj", &object, "sec", "xdp",
        ],
    );
    let shown = ip(ns, &["link", "show", "dev", dev]);
    shown
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no program on {dev}: {shown}"))
        .to_owned()
}

#[test]
fn another_xdp_program_on_the_uplink_keeps_the_agent_unready_until_it_goes() {
    if skip_unless_privileged(
        "another_xdp_program_on_the_uplink_keeps_the_agent_unready_until_it_goes",
    ) {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    let node_ns = c.tb.nodes[0].ns.clone();
    let id = attach_foreign_program(&c, &node_ns, "uplink");

    let manifest = c.manifest.display().to_string();
    c.start_node(0, 120, &["--manifest", &manifest]).unwrap();
    let addr = c.admin(0);
    let named = format!("(id {id}, name foreign_pass, native mode)");
    let mut last = String::new();
    let unready = eventually(Duration::from_secs(20), || {
        if let Ok((code, body)) = admin::get(&addr, "/readyz") {
            last = format!("{code} {body}");
            return code == 503 && body.contains(&named);
        }
        false
    });
    assert!(unready, "/readyz said {last:?}:\n{}", c.log(0));
    for wanted in [
        "another XDP program is attached",
        "ip link set dev uplink xdpdrv off",
        "trying again",
    ] {
        assert!(last.contains(wanted), "{wanted:?} in {last}");
    }
    assert!(
        !last.contains("CAP_BPF"),
        "not a capability problem: {last}"
    );
    // Up and waiting, not failed: alive, and it says so in its log.
    assert_eq!(admin::get(&addr, "/healthz").unwrap().0, 200);
    assert!(c.log(0).contains(&named), "{}", c.log(0));

    // The operator removes it: the agent starts on its next try.
    ip(&node_ns, &["link", "set", "dev", "uplink", "xdpdrv", "off"]);
    c.start_node(1, 120, &["--manifest", &manifest]).unwrap();
    c.wait_ready(0, Duration::from_secs(30)).unwrap();
    c.wait_ready(1, Duration::from_secs(30)).unwrap();
    let replies = pings(&c, "client-a", Ipv4Addr::new(10, 244, 2, 10));
    assert!(replies >= 2, "client-a to web-b: {replies}/3");
}

#[test]
fn another_xdp_program_on_a_pod_veth_holds_back_only_that_pod() {
    if skip_unless_privileged("another_xdp_program_on_a_pod_veth_holds_back_only_that_pod") {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    let node_ns = c.tb.nodes[0].ns.clone();
    let web_a = kxdp_control::compile::pod_interface_name("default", "web-a");
    let id = attach_foreign_program(&c, &node_ns, &web_a);
    c.start(120, &[]).expect("the agents start and are ready");

    // The node is up: its other pod reaches the other node's, each served interface in the
    // mode the kernel gave it. The held-back pod is said to be, with the program named.
    let replies = pings(&c, "client-a", Ipv4Addr::new(10, 244, 2, 10));
    assert!(replies >= 2, "client-a to web-b: {replies}/3");
    let s = c.status(0);
    let names: Vec<&str> = s.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert!(!names.contains(&web_a.as_str()), "{names:?}");
    assert!(names.contains(&"uplink"), "{names:?}");
    for i in &s.interfaces {
        // veth runs XDP in its driver.
        assert_eq!(i.xdp_mode, "native", "{i:?}");
    }
    let named = format!("(id {id}, name foreign_pass, native mode)");
    assert!(
        s.interface_errors
            .iter()
            .any(|e| e.starts_with(&format!("{web_a}: ")) && e.contains(&named)),
        "{:?}",
        s.interface_errors
    );

    // The operator removes it: the pod is served on the next try (the tries back off to one
    // every 10 s).
    ip(&node_ns, &["link", "set", "dev", &web_a, "xdpdrv", "off"]);
    assert!(
        eventually(Duration::from_secs(20), || {
            let s = c.status(0);
            s.interface_errors.is_empty() && s.interfaces.iter().any(|i| i.name == web_a)
        }),
        "{:?}\n{}",
        c.status(0),
        c.log(0)
    );
    let replies = pings(&c, "client-a", Ipv4Addr::new(10, 244, 1, 10));
    assert!(replies >= 2, "client-a to web-a: {replies}/3");
}

#[test]
fn a_recreated_pod_veth_is_served_again_and_a_changed_neighbour_republishes() {
    if skip_unless_privileged(
        "a_recreated_pod_veth_is_served_again_and_a_changed_neighbour_republishes",
    ) {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    c.start(120, &[]).expect("the agents start");
    let node_ns = c.tb.nodes[0].ns.clone();
    let web_a = kxdp_control::compile::pod_interface_name("default", "web-a");
    let served = |c: &AgentCluster| c.status(0).interfaces.iter().any(|i| i.name == web_a);
    assert!(served(&c));

    // The pod's sandbox is recreated: its veth goes, and comes back with a new ifindex.
    let pod = c.tb.nodes[0]
        .pods
        .iter()
        .find(|p| p.ip == Ipv4Addr::new(10, 244, 1, 10))
        .unwrap()
        .clone();
    let before = ip(&node_ns, &["-o", "link", "show", "dev", &web_a]);
    c.tb.remove_pod(&pod).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !served(&c)),
        "the gone veth was not released:\n{}",
        c.log(0)
    );
    let pod = c
        .add_pod_veth(0, "web-a", pod.ip, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the recreated veth: {e}"));
    let after = ip(&node_ns, &["-o", "link", "show", "dev", &web_a]);
    assert_ne!(
        before.split(':').next(),
        after.split(':').next(),
        "a new ifindex"
    );
    assert!(
        after.contains("prog/xdp"),
        "kxdp's program is on it: {after}"
    );
    let replies = pings(&c, "client-a", pod.ip);
    assert!(replies >= 2, "client-a to the recreated web-a: {replies}/3");

    // Node B's underlay MAC changes in node A's neighbour table: the route to its pods
    // follows when the kernel announces it, well before the periodic resync (10 s) would.
    let route_mac = |c: &AgentCluster| -> Option<String> {
        let routes: Vec<RouteView> = admin::get_json(&c.admin(0), "/api/routes").ok()?;
        routes.into_iter().find_map(|r| match r.target {
            RouteTarget::RemoteNode { node, next_hop, .. } if node == "node-b" => next_hop.mac,
            _ => None,
        })
    };
    let generation = c.status(0).generation;
    ip(
        &node_ns,
        &[
            "neigh",
            "replace",
            "198.18.0.11",
            "dev",
            "uplink",
            "lladdr",
            "02:00:5e:00:53:0b",
            "nud",
            "permanent",
        ],
    );
    assert!(
        eventually(Duration::from_secs(3), || route_mac(&c).as_deref()
            == Some("02:00:5e:00:53:0b")),
        "the new MAC did not go live ({:?}):\n{}",
        route_mac(&c),
        c.log(0)
    );
    assert!(c.status(0).generation > generation);
}
