//! The agent's node facts over netlink, in a node namespace the test builds: the uplink's
//! address, MAC and MTU, the default gateway, a host veth's peer, link notifications as a
//! veth comes, goes up and goes, and a neighbour resolved on request (`NTF_USE`) and announced.
//! Needs root; prints SKIP otherwise, and fails under CI.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use kxdp_agent::nodefacts::{self, Link, NodeEvent, NodeNet};
use kxdp_tests::testbed::{self, skip_unless_privileged, Spec, Testbed};

/// `ip -n ns <args>`, which must succeed.
fn ip(ns: &str, args: &[&str]) {
    testbed::ip(Some(ns), args).unwrap_or_else(|e| panic!("{e}"));
}

/// Run `f` on a current-thread runtime in a thread inside namespace `ns` (netlink sockets
/// belong to the namespace of the thread that opens them).
fn in_netns<T: Send>(
    ns: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send,
) -> T {
    kxdp_tests::cluster::in_netns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
    .expect("enter the node's namespace")
}

/// The next event `want` accepts, within 5 s.
async fn next_matching(
    events: &mut (impl futures::Stream<Item = NodeEvent> + Unpin),
    what: &str,
    mut want: impl FnMut(&NodeEvent) -> bool,
) -> NodeEvent {
    let wait = async {
        while let Some(e) = events.next().await {
            if want(&e) {
                return e;
            }
        }
        panic!("the event stream ended before {what}");
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 5 s"))
}

#[test]
fn node_facts_and_their_changes_come_from_netlink() {
    if skip_unless_privileged("node_facts_and_their_changes_come_from_netlink") {
        return;
    }
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 2,
        pods_per_node: 0,
        external: false,
    })
    .expect("testbed builds");
    let (a, b) = (tb.nodes[0].clone(), tb.nodes[1].clone());
    ip(
        &a.ns,
        &[
            "route",
            "add",
            "default",
            "via",
            "198.18.0.1",
            "dev",
            "uplink",
        ],
    );
    ip(
        &a.ns,
        &[
            "link", "add", "host0", "type", "veth", "peer", "name", "kxdp0",
        ],
    );
    let b_mac = tb.mac(&b.ns, "uplink").unwrap();
    let a_ns = a.ns.clone();

    in_netns(&a.ns, move || {
        Box::pin(async move {
            let net = NodeNet::connect().unwrap();
            let uplink = net.interface("uplink").await.unwrap();
            assert_eq!(
                uplink.ipv4.map(|c| (c.address(), c.prefix_len())),
                Some((a.ip, 24))
            );
            assert_eq!(uplink.mtu, 1500);
            assert_eq!(
                net.default_gateway(uplink.index).await.unwrap(),
                Some(Ipv4Addr::new(198, 18, 0, 1))
            );
            assert_eq!(net.veth_peer("host0").await.unwrap(), "kxdp0");
            let err = net.veth_peer("uplink").await.unwrap_err().to_string();
            assert!(err.contains("not in this network namespace"), "{err}");
            let err = net.interface("nope0").await.unwrap_err().to_string();
            assert!(err.contains("interface nope0 does not exist"), "{err}");

            let mut events = nodefacts::watch().unwrap();
            // A veth appears (down), goes up, and goes.
            ip(
                &a_ns,
                &[
                    "link", "add", "kxwatch0", "type", "veth", "peer", "name", "kxwatch1",
                ],
            );
            let appeared = next_matching(
                &mut events,
                "kxwatch0 appearing",
                |e| matches!(e, NodeEvent::Link(l) if l.name == "kxwatch0"),
            )
            .await;
            let NodeEvent::Link(Link { index, up, .. }) = appeared else {
                unreachable!()
            };
            assert!(!up);
            ip(&a_ns, &["link", "set", "kxwatch0", "up"]);
            next_matching(&mut events, "kxwatch0 up", |e| {
                matches!(e, NodeEvent::Link(l) if l.name == "kxwatch0" && l.up && l.index == index)
            })
            .await;
            ip(&a_ns, &["link", "del", "kxwatch0"]);
            next_matching(&mut events, "kxwatch0 gone", |e| {
                matches!(e, NodeEvent::LinkGone { index: i, name } if *i == index && name == "kxwatch0")
            })
            .await;

            // Node B is not in the table until asked for: then the kernel ARPs for it and
            // announces the answer.
            assert!(!net
                .neighbors(uplink.index)
                .await
                .unwrap()
                .contains_key(&b.ip));
            net.solicit(uplink.index, b.ip).await.unwrap();
            let resolved = next_matching(
                &mut events,
                "node B resolved",
                |e| matches!(e, NodeEvent::Neighbor(n) if n.ip == b.ip && n.mac.is_some()),
            )
            .await;
            let NodeEvent::Neighbor(n) = resolved else {
                unreachable!()
            };
            assert_eq!(n.ifindex, uplink.index);
            assert_eq!(
                kxdp_tests::node::mac_text(n.mac.unwrap()),
                b_mac,
                "B's uplink MAC"
            );
            let table = net.neighbors(uplink.index).await.unwrap();
            assert_eq!(table.get(&b.ip), n.mac.as_ref());
            // Asking again for a known neighbour is fine too.
            net.solicit(uplink.index, b.ip).await.unwrap();
        })
    });
}

#[test]
fn notifications_the_kernel_drops_are_reported_as_lost() {
    if skip_unless_privileged("notifications_the_kernel_drops_are_reported_as_lost") {
        return;
    }
    let tb = Testbed::kernel_nodes(Spec {
        nodes: 1,
        pods_per_node: 0,
        external: false,
    })
    .expect("testbed builds");
    let ns = tb.nodes[0].ns.clone();
    ip(
        &ns,
        &[
            "link", "add", "kxlost0", "type", "veth", "peer", "name", "kxlost1",
        ],
    );
    in_netns(&ns.clone(), move || {
        Box::pin(async move {
            // A small buffer, and nobody reading while a link flaps 200 times: the kernel
            // has to drop notifications, and the stream says so.
            let mut events = nodefacts::watch_with_buffer(4096).unwrap();
            let flaps: String = (0..200)
                .map(|_| "link set kxlost0 up\nlink set kxlost0 down\n")
                .collect();
            let path = std::env::temp_dir().join(format!("{ns}-flaps"));
            std::fs::write(&path, flaps).unwrap();
            let batch = testbed::ip(Some(&ns), &["-batch", &path.to_string_lossy()]);
            let _ = std::fs::remove_file(&path);
            batch.unwrap_or_else(|e| panic!("{e}"));
            next_matching(&mut events, "notifications lost", |e| {
                matches!(e, NodeEvent::Lost)
            })
            .await;
        })
    });
}
