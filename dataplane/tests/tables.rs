//! The snapshot built from the fixture node: every class of address routes where it should,
//! both ways of finding a remote node's pod CIDR agree, and bad inputs are refused with the
//! object and field named. (Integration tests because they need `kxdp-testkit`'s fixture,
//! which the dataplane's own unit tests cannot use.)

use core::net::Ipv4Addr;

use kxdp_dataplane::tables::{InterfaceId, InterfaceRole, RemoteNode, RouteTarget, Snapshot};
use kxdp_dataplane::wire::{EthernetAddress, Ipv4Cidr};
use kxdp_testkit::Topology;

/// Whether the snapshot's block table (remote nodes by pod-CIDR block, used when every pod CIDR
/// has one length) is `state` (`"Some("` or `"None"`). The field is private and this test needs
/// only to know that the two snapshots it compares take different paths, so it reads the one
/// public view of it, the `Debug` output; a renamed field fails the test rather than passing it.
fn block_table(snap: &Snapshot, state: &str) -> bool {
    format!("{snap:?}").contains(&format!("node_blocks: {state}"))
}

#[test]
fn builds_the_fixture_node_and_routes_every_class_of_address() {
    let snap = Topology::default().snapshot();
    let t = Topology::default();
    assert_eq!(snap.route(t.pod_a.ip), RouteTarget::LocalPods);
    assert_eq!(snap.route(t.remote_pod_ip), RouteTarget::RemoteNode(0));
    assert_eq!(snap.route(t.node.primary_ip()), RouteTarget::Node);
    assert_eq!(snap.route(t.node.gateway_ip), RouteTarget::Node);
    assert_eq!(
        snap.route(Ipv4Addr::new(10, 96, 7, 7)),
        RouteTarget::ServiceCidr
    );
    assert_eq!(
        snap.route(Ipv4Addr::new(10, 244, 99, 1)),
        RouteTarget::ClusterUnassigned
    );
    assert_eq!(snap.route(t.external_ip), RouteTarget::External);
    assert!(snap.remote_node(0).unwrap().encap.is_some());
    assert_eq!(
        snap.interface_role(t.pod_a.iface),
        Some(InterfaceRole::Pod { ip: t.pod_a.ip })
    );
    assert_eq!(snap.interface_role(InterfaceId(999)), None);
}

#[test]
fn pod_cidrs_of_mixed_lengths_route_through_the_lpm_and_agree_with_the_block_table() {
    let t = Topology::default();
    let uniform = t.snapshot();
    assert!(
        block_table(&uniform, "Some("),
        "uniform pod CIDRs use the block table"
    );
    let mut inputs = t.inputs();
    // A third node with a /25: the block table no longer applies.
    inputs.nodes.push(RemoteNode {
        name: "node-c".into(),
        node_ip: Ipv4Addr::new(198, 18, 1, 3),
        pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 244, 3, 128), 25),
        vtep_mac: EthernetAddress([2, 0, 0, 0, 0, 3]),
    });
    let mixed = Snapshot::build(inputs).unwrap();
    assert!(
        block_table(&mixed, "None"),
        "mixed pod CIDRs route through the LPM"
    );
    for ip in [
        t.pod_a.ip,
        t.remote_pod_ip,
        Ipv4Addr::new(10, 244, 99, 1),
        Ipv4Addr::new(10, 96, 0, 10),
        t.external_ip,
        t.node.gateway_ip,
    ] {
        assert_eq!(uniform.route(ip), mixed.route(ip), "{ip}");
    }
    assert_eq!(
        mixed.route(Ipv4Addr::new(10, 244, 3, 200)),
        RouteTarget::RemoteNode(1)
    );
    assert_eq!(
        mixed.route(Ipv4Addr::new(10, 244, 3, 100)),
        RouteTarget::ClusterUnassigned
    );
    // node-c is outside the uplink subnet: found through the map, not the host table.
    assert_eq!(
        mixed
            .remote_node_by_ip(Ipv4Addr::new(198, 18, 1, 3))
            .map(|e| e.node.name.as_str()),
        Some("node-c")
    );
    assert_eq!(
        mixed
            .remote_node_by_ip(t.node_b.node_ip)
            .map(|e| e.node.name.as_str()),
        Some("node-b")
    );
    assert!(mixed
        .remote_node_by_ip(Ipv4Addr::new(198, 18, 0, 77))
        .is_none());
    assert_eq!(
        mixed.local_pod(t.pod_b.ip).map(|p| p.iface),
        Some(t.pod_b.iface)
    );
    assert!(mixed.local_pod(Ipv4Addr::new(10, 244, 1, 77)).is_none());
    assert!(mixed.local_pod(t.remote_pod_ip).is_none());
}

#[test]
fn a_remote_pod_cidr_outside_the_cluster_is_refused() {
    let t = Topology::default();
    let mut inputs = t.inputs();
    inputs.nodes[0].pod_cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 245, 2, 0), 24);
    let err = Snapshot::build(inputs).unwrap_err().to_string();
    assert!(err.contains("node-b") && err.contains("pod_cidr"), "{err}");
}

#[test]
fn bad_inputs_name_the_object_and_field() {
    let t = Topology::default();
    let mut inputs = t.inputs();
    inputs.node.gateway_ip = Ipv4Addr::new(10, 1, 1, 1);
    let err = Snapshot::build(inputs).unwrap_err().to_string();
    assert!(
        err.contains("gateway_ip") && err.contains(&t.node.name),
        "{err}"
    );

    let mut inputs = t.inputs();
    let mut twin = inputs.pods[0].clone();
    twin.name = "default/twin".into();
    twin.iface = InterfaceId(77);
    inputs.pods.push(twin);
    let err = Snapshot::build(inputs).unwrap_err().to_string();
    assert!(
        err.contains("default/twin") && err.contains("address"),
        "{err}"
    );

    let mut inputs = t.inputs();
    let mut clash = inputs.nodes[0].clone();
    clash.name = "node-c".into();
    inputs.nodes.push(clash);
    let err = Snapshot::build(inputs).unwrap_err().to_string();
    assert!(err.contains("node-c") && err.contains("overlaps"), "{err}");
}
