//! NetworkPolicy in the pipeline: a new flow of a selected pod is judged on its first packet
//! (egress on the source's node, ingress on the destination's, after service DNAT), an allowed
//! one is tracked so its later packets and its replies are not judged again, a denied one is
//! dropped with the direction's reason; node traffic and pods without policy are untouched,
//! and the latter never look in conntrack.

mod common;

use core::net::Ipv4Addr;
use std::sync::Arc;

use common::Env;
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::flow::{proto, FlowKey};
use kxdp_dataplane::tables::{
    AddressSet, PeerSet, PodPolicy, PolicyRule, PortRange, PortSet, RuleSet,
};
use kxdp_dataplane::wire::build::{FrameSpec, Ipv4Opts};
use kxdp_dataplane::{DropReason, Verdict};
use kxdp_testkit::{tcp_flags as f, Input, Topology};

/// A rule of policy `name` admitting `peers` (`None`: any) on TCP `port` (`None`: any port).
fn rule(name: &str, peers: Option<&[Ipv4Addr]>, port: Option<u16>) -> PolicyRule {
    PolicyRule {
        policy: name.into(),
        peers: match peers {
            None => PeerSet::Any,
            Some(ips) => {
                PeerSet::Addresses(AddressSet::from_ranges(ips.iter().map(|ip| (*ip, *ip))))
            }
        },
        ports: match port {
            None => PortSet::Any,
            Some(p) => PortSet::Ranges(
                vec![PortRange {
                    proto: proto::TCP,
                    lo: p,
                    hi: p,
                }]
                .into(),
            ),
        },
        peer_ports: Arc::new([]),
    }
}

/// The rules of one direction, all from policy `name` (no rules: a default deny).
fn rules(name: &str, rules: Vec<PolicyRule>) -> Option<RuleSet> {
    Some(RuleSet {
        rules: rules.into(),
        policies: vec![Arc::<str>::from(name)].into(),
    })
}

/// The fixture with pod A's and pod B's policies set.
fn env(a: Option<PodPolicy>, b: Option<PodPolicy>) -> Env {
    let mut t = Topology::default();
    t.pod_a.policy = a.map(Arc::new);
    t.pod_b.policy = b.map(Arc::new);
    Env::with(t, 4096)
}

/// Pod B takes TCP 8080 from pod A only, and sends nothing (so a reply judged as a new flow
/// would be dropped).
fn b_takes_8080_from_a(t: &Topology) -> PodPolicy {
    PodPolicy {
        ingress: rules(
            "default/b-in",
            vec![rule("default/b-in", Some(&[t.pod_a.ip]), Some(8080))],
        ),
        egress: rules("default/b-out", vec![]),
    }
}

fn a_to_b(t: &Topology, sport: u16, dport: u16, flags: u8) -> Input {
    Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.pod_b.ip).tcp(sport, dport, flags, b""),
    }
}

fn b_to_a(t: &Topology, sport: u16, dport: u16, flags: u8) -> Input {
    Input {
        ingress: t.pod_b.iface,
        frame: t.from_pod_b(t.pod_a.ip).tcp(sport, dport, flags, b""),
    }
}

fn from_remote_pod(t: &Topology, dst: Ipv4Addr, dport: u16) -> Input {
    let inner = t
        .inner_from_node_b(t.remote_pod_ip, dst)
        .tcp(40000, dport, f::SYN, b"");
    Input {
        ingress: t.node.uplink,
        frame: t
            .vxlan_from_node_b()
            .vxlan(49152, t.node.vxlan_port, t.node.vxlan_vni, &inner),
    }
}

#[test]
fn an_allowed_flow_is_judged_once_and_its_replies_pass_by_the_entry() {
    let t = Topology::default();
    let env = env(None, Some(b_takes_8080_from_a(&t)));
    let (v, _) = env.run(&a_to_b(&t, 40000, 8080, f::SYN));
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    assert_eq!(env.counters.read().event(Event::PolicyNewFlow), 1);
    assert_eq!(env.ct.len(), 1, "the allowed flow is tracked");
    // The reply, although pod B's egress allows nothing new: it is the allowed flow's.
    let (v, _) = env.run(&b_to_a(&t, 8080, 40000, f::SYN | f::ACK));
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    let (v, _) = env.run(&a_to_b(&t, 40000, 8080, f::ACK));
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    assert_eq!(env.counters.read().event(Event::PolicyEstablished), 2);
    assert_eq!(
        env.counters.read().event(Event::PolicyNewFlow),
        1,
        "judged once"
    );
    // A flow pod B starts itself is judged, and its egress allows none.
    let (v, _) = env.run(&b_to_a(&t, 8080, 40001, f::SYN));
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDeniedEgress));
    assert_eq!(env.counters.read().drop(DropReason::PolicyDeniedEgress), 1);
}

#[test]
fn a_denied_first_packet_is_dropped_with_its_direction_and_tracks_nothing() {
    let t = Topology::default();
    let env = env(None, Some(b_takes_8080_from_a(&t)));
    let (v, _) = env.run(&a_to_b(&t, 40000, 9090, f::SYN));
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDeniedIngress));
    // From another node, over VXLAN: judged on this node, the destination's.
    let (v, _) = env.run(&from_remote_pod(&t, t.pod_b.ip, 8080));
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDeniedIngress));
    assert_eq!(env.counters.read().drop(DropReason::PolicyDeniedIngress), 2);
    assert_eq!(env.ct.len(), 0, "a denied flow leaves no entry");
    // Egress of pod A toward the remote pod only on 53: anything else is refused here.
    let a = PodPolicy {
        ingress: None,
        egress: rules(
            "default/a-out",
            vec![rule("default/a-out", Some(&[t.remote_pod_ip]), Some(53))],
        ),
    };
    let env = self::env(Some(a), None);
    let to_remote = |dport| Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.remote_pod_ip).tcp(40000, dport, f::SYN, b""),
    };
    assert_eq!(
        env.run(&to_remote(80)).0,
        Verdict::Drop(DropReason::PolicyDeniedEgress)
    );
    assert_eq!(env.run(&to_remote(53)).0, Verdict::Transmit(t.node.uplink));
    // Leaving the cluster (masqueraded): egress is judged too.
    let out = Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.external_ip).tcp(40001, 443, f::SYN, b""),
    };
    assert_eq!(
        env.run(&out).0,
        Verdict::Drop(DropReason::PolicyDeniedEgress)
    );
}

#[test]
fn an_overlay_flow_is_judged_on_its_source_address_and_allowed_by_an_ip_block() {
    let t = Topology::default();
    let b = PodPolicy {
        ingress: rules(
            "default/b-in",
            vec![PolicyRule {
                policy: "default/b-in".into(),
                peers: PeerSet::Addresses(AddressSet::from_block(
                    Ipv4Addr::new(10, 244, 2, 0),
                    24,
                    &[],
                )),
                ports: PortSet::Any,
                peer_ports: Arc::new([]),
            }],
        ),
        egress: None,
    };
    let env = env(None, Some(b));
    let (v, _) = env.run(&from_remote_pod(&t, t.pod_b.ip, 8080));
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    assert_eq!(env.counters.read().event(Event::PolicyNewFlow), 1);
    // Pod A is outside the block.
    let (v, _) = env.run(&a_to_b(&t, 40000, 8080, f::SYN));
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDeniedIngress));
}

#[test]
fn service_traffic_is_judged_on_the_backend_after_dnat() {
    let t = Topology::default();
    // `default/api` has pod B:8443 as its only backend; pod B takes 8080 only.
    let env = env(None, Some(b_takes_8080_from_a(&t)));
    let (v, _) = env.run(&t.case_service(40000, f::SYN));
    assert_eq!(
        v,
        Verdict::Drop(DropReason::PolicyDeniedIngress),
        "8443 is not 8080"
    );
    assert_eq!(env.ct.len(), 0);
    let b = PodPolicy {
        ingress: rules(
            "default/b-in",
            vec![rule("default/b-in", Some(&[t.pod_a.ip]), Some(8443))],
        ),
        egress: rules("default/b-out", vec![]),
    };
    let env = self::env(None, Some(b));
    let (v, _) = env.run(&t.case_service(40000, f::SYN));
    assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
    // The backend's reply is reverse-translated by the service flow's entry, not judged.
    let (v, _) = env.run(&t.case_service_reply(40000));
    assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    assert_eq!(env.counters.read().event(Event::ReverseNat), 1);
    // Pod A's egress is judged on the backend too, not on the service address.
    let a = PodPolicy {
        ingress: None,
        egress: rules(
            "default/a-out",
            vec![rule("default/a-out", Some(&[t.api_cluster_ip]), None)],
        ),
    };
    let env = self::env(Some(a), None);
    let (v, _) = env.run(&t.case_service(40000, f::SYN));
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDeniedEgress));
}

#[test]
fn the_node_and_the_pod_itself_are_always_allowed() {
    let t = Topology::default();
    let deny_all = PodPolicy {
        ingress: rules("default/deny", vec![]),
        egress: rules("default/deny", vec![]),
    };
    let env = env(None, Some(deny_all));
    // The node's kernel (kubelet probes) to pod B, and pod B's answer.
    let probe = Input {
        ingress: t.node.host,
        frame: t.from_host(t.pod_b.ip).tcp(50000, 8080, f::SYN, b""),
    };
    assert_eq!(env.run(&probe).0, Verdict::Transmit(t.pod_b.iface));
    let answer = Input {
        ingress: t.pod_b.iface,
        frame: t
            .from_pod_b(t.node.primary_ip())
            .tcp(8080, 50000, f::SYN | f::ACK, b""),
    };
    assert!(matches!(env.run(&answer).0, Verdict::ToHost(_)));
    // Pod B to its own address: only the fast path's own rule admits it.
    let own = Input {
        ingress: t.pod_b.iface,
        frame: t.from_pod_b(t.pod_b.ip).tcp(40000, 8080, f::SYN, b""),
    };
    assert_eq!(env.run(&own).0, Verdict::Transmit(t.pod_b.iface));
    // Pod A (no policy) is denied by B's ingress.
    assert_eq!(
        env.run(&a_to_b(&t, 40000, 8080, f::SYN)).0,
        Verdict::Drop(DropReason::PolicyDeniedIngress)
    );
}

/// Whether a packet looks in conntrack is seen by planting an entry that would translate it:
/// a packet that looks is rewritten, one that does not goes as it is.
#[test]
fn only_flows_of_selected_pods_look_in_conntrack() {
    let t = Topology::default();
    let env = env(None, Some(b_takes_8080_from_a(&t)));
    let decoy = Ipv4Addr::new(10, 244, 2, 99);
    for (dst, decoy_port) in [(t.remote_pod_ip, 8080), (t.pod_b.ip, 8081)] {
        let original = FlowKey::new(proto::TCP, t.pod_a.ip, 41000, dst, 8080);
        let reply = FlowKey::new(proto::TCP, decoy, decoy_port, t.pod_a.ip, 41000);
        env.ct.insert(original, reply, f::SYN, env.now).unwrap();
    }
    // Pod A (no policy) to the remote pod (none either): no lookup, the packet is untouched.
    let (v, out) = env.run(&Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.remote_pod_ip).tcp(41000, 8080, f::ACK, b""),
    });
    assert_eq!(v, Verdict::Transmit(t.node.uplink));
    let has = |ip: Ipv4Addr| out.windows(4).any(|w| w == ip.octets());
    assert!(
        has(t.remote_pod_ip) && !has(decoy),
        "not rewritten: conntrack was not consulted"
    );
    // Pod A to pod B, whom a policy selects: the lookup finds the planted entry.
    let (v, _) = env.run(&a_to_b(&t, 41000, 8080, f::ACK));
    assert_eq!(
        v,
        Verdict::Transmit(t.node.uplink),
        "translated toward the decoy"
    );
    assert_eq!(env.counters.read().event(Event::NatEstablished), 1);
}

/// The fixture's snapshot inputs with pod A's and pod B's policies set.
fn inputs_with(
    t: &Topology,
    a: Option<Arc<PodPolicy>>,
    b: Option<Arc<PodPolicy>>,
) -> kxdp_dataplane::tables::SnapshotInputs {
    let mut t = t.clone();
    t.pod_a.policy = a;
    t.pod_b.policy = b;
    t.inputs()
}

/// Publish a snapshot with these policies after the current one, as the control side does.
fn publish(env: &mut Env, a: Option<Arc<PodPolicy>>, b: Option<Arc<PodPolicy>>) {
    let inputs = inputs_with(&env.t, a, b);
    env.snap = kxdp_dataplane::Snapshot::build_after(inputs, &env.snap).expect("valid");
}

#[test]
fn a_policy_change_stops_a_flow_it_no_longer_allows_both_ways_at_its_next_packet() {
    let t = Topology::default();
    let allowed = Arc::new(b_takes_8080_from_a(&t));
    let mut env = env(None, Some((*allowed).clone()));
    assert_eq!(
        env.run(&a_to_b(&t, 40000, 8080, f::SYN)).0,
        Verdict::Transmit(t.pod_b.iface)
    );
    assert_eq!(
        env.run(&b_to_a(&t, 8080, 40000, f::SYN | f::ACK)).0,
        Verdict::Transmit(t.pod_a.iface)
    );
    let first = env.snap.policy_epoch();

    // The same policies, compiled again (a new Arc, equal): same epoch, nothing judged again.
    publish(&mut env, None, Some(Arc::new((*allowed).clone())));
    assert_eq!(env.snap.policy_epoch(), first);
    assert_eq!(
        env.run(&a_to_b(&t, 40000, 8080, f::ACK)).0,
        Verdict::Transmit(t.pod_b.iface)
    );
    assert_eq!(env.counters.read().event(Event::PolicyRevalidated), 0);

    // Pod B now takes 8080 from the remote pod only: the live connection stops, both ways,
    // though its entry is still there.
    let remote_only = PodPolicy {
        ingress: rules(
            "default/b-in",
            vec![rule("default/b-in", Some(&[t.remote_pod_ip]), Some(8080))],
        ),
        egress: None,
    };
    publish(&mut env, None, Some(Arc::new(remote_only)));
    assert_ne!(env.snap.policy_epoch(), first);
    assert_eq!(
        env.run(&a_to_b(&t, 40000, 8080, f::ACK)).0,
        Verdict::Drop(DropReason::PolicyDeniedIngress)
    );
    assert_eq!(
        env.run(&b_to_a(&t, 8080, 40000, f::ACK)).0,
        Verdict::Drop(DropReason::PolicyDeniedIngress),
        "a reply does not revive the flow"
    );
    assert_eq!(
        env.ct.len(),
        1,
        "the entry stays, and keeps the flow judged as A's"
    );

    // Allowed again: the flow goes on, judged once more, then not again.
    publish(&mut env, None, Some(allowed));
    assert_eq!(
        env.run(&a_to_b(&t, 40000, 8080, f::ACK)).0,
        Verdict::Transmit(t.pod_b.iface)
    );
    assert_eq!(
        env.run(&b_to_a(&t, 8080, 40000, f::ACK)).0,
        Verdict::Transmit(t.pod_a.iface)
    );
    assert_eq!(env.counters.read().event(Event::PolicyRevalidated), 1);
}

#[test]
fn a_policy_change_stops_a_service_flow_to_a_backend_it_no_longer_allows() {
    let t = Topology::default();
    // Pod A has no policy; its flow to `default/api` reaches pod B:8443, which has none yet.
    let mut env = env(None, None);
    assert_eq!(
        env.run(&t.case_service(40000, f::SYN)).0,
        Verdict::Transmit(t.pod_b.iface)
    );
    assert_eq!(
        env.run(&t.case_service_reply(40000)).0,
        Verdict::Transmit(t.pod_a.iface)
    );
    // Pod B is now selected, and takes only 8080: the client's next packet, addressed to the
    // service, is stopped too, not only the backend's replies.
    publish(&mut env, None, Some(Arc::new(b_takes_8080_from_a(&t))));
    assert_eq!(
        env.run(&t.case_service(40000, f::ACK)).0,
        Verdict::Drop(DropReason::PolicyDeniedIngress)
    );
    assert_eq!(
        env.run(&t.case_service_reply(40000)).0,
        Verdict::Drop(DropReason::PolicyDeniedIngress)
    );
    // A flow the new policies still allow goes on: pod A to the outside (masqueraded) was
    // tracked before pod A's policy existed, and pod A's egress allows it.
    let out = |flags| Input {
        ingress: t.pod_a.iface,
        frame: t.from_pod_a(t.external_ip).tcp(40001, 443, flags, b""),
    };
    assert_eq!(env.run(&out(f::SYN)).0, Verdict::Transmit(t.node.uplink));
    let a_out = PodPolicy {
        ingress: None,
        egress: rules(
            "default/a-out",
            vec![rule("default/a-out", Some(&[t.external_ip]), None)],
        ),
    };
    publish(
        &mut env,
        Some(Arc::new(a_out)),
        Some(Arc::new(b_takes_8080_from_a(&t))),
    );
    assert_eq!(env.run(&out(f::ACK)).0, Verdict::Transmit(t.node.uplink));
    // And pod A's egress now denies the service flow as well: egress is judged first.
    assert_eq!(
        env.run(&t.case_service(40000, f::ACK)).0,
        Verdict::Drop(DropReason::PolicyDeniedEgress)
    );
}

#[test]
fn fragments_between_selected_pods_are_judged_one_by_one_and_never_tracked() {
    let t = Topology::default();
    let open_to = |name: &str, peer: Ipv4Addr| PodPolicy {
        ingress: rules(name, vec![rule(name, Some(&[peer]), None)]),
        egress: None,
    };
    let env = env(
        Some(open_to("default/a-in", t.pod_b.ip)),
        Some(open_to("default/b-in", t.pod_a.ip)),
    );
    let fragment = |spec: FrameSpec| {
        FrameSpec {
            ip: Ipv4Opts {
                dont_fragment: false,
                more_fragments: true,
                ident: 7,
                ..Ipv4Opts::default()
            },
            ..spec
        }
        .udp(5000, 6000, &[0x5a; 64])
    };
    // Both ways: a fragment carries no ports to track a flow by, so each is judged alone and
    // none leaves an entry (the second way would otherwise clash with the first's).
    for _ in 0..2 {
        let (v, _) = env.run(&Input {
            ingress: t.pod_a.iface,
            frame: fragment(t.from_pod_a(t.pod_b.ip)),
        });
        assert_eq!(v, Verdict::Transmit(t.pod_b.iface));
        let (v, _) = env.run(&Input {
            ingress: t.pod_b.iface,
            frame: fragment(t.from_pod_b(t.pod_a.ip)),
        });
        assert_eq!(v, Verdict::Transmit(t.pod_a.iface));
    }
    assert_eq!(env.ct.len(), 0);
    // From another pod on node B (no service's endpoint, whose fragments are refused before
    // any policy), which pod B's policy does not name: denied.
    let inner = FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            more_fragments: true,
            ..Ipv4Opts::default()
        },
        ..t.inner_from_node_b(Ipv4Addr::new(10, 244, 2, 21), t.pod_b.ip)
    }
    .udp(5000, 6000, &[0x5a; 64]);
    let (v, _) = env.run(&Input {
        ingress: t.node.uplink,
        frame: t
            .vxlan_from_node_b()
            .vxlan(49152, t.node.vxlan_port, t.node.vxlan_vni, &inner),
    });
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDeniedIngress));
}

#[test]
fn sctp_is_judged_on_its_port_and_an_sctp_fragment_as_having_none() {
    let t = Topology::default();
    let sctp_6000 = PolicyRule {
        ports: PortSet::Ranges(
            vec![PortRange {
                proto: proto::SCTP,
                lo: 6000,
                hi: 6000,
            }]
            .into(),
        ),
        ..rule("default/b-in", Some(&[t.pod_a.ip]), None)
    };
    let env = env(
        None,
        Some(PodPolicy {
            ingress: rules("default/b-in", vec![sctp_6000]),
            egress: None,
        }),
    );
    let whole = |port| t.from_pod_a(t.pod_b.ip).sctp(5000, port, &[0x5a; 64]);
    let run = |frame| {
        env.run(&Input {
            ingress: t.pod_a.iface,
            frame,
        })
        .0
    };
    assert_eq!(run(whole(6000)), Verdict::Transmit(t.pod_b.iface));
    assert_eq!(
        run(whole(6001)),
        Verdict::Drop(DropReason::PolicyDeniedIngress)
    );
    // A first fragment holds the ports, but fragments are judged as having none: only a rule
    // without ports admits them, as for TCP and UDP.
    let fragment = FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            more_fragments: true,
            ..Ipv4Opts::default()
        },
        ..t.from_pod_a(t.pod_b.ip)
    }
    .sctp(5000, 6000, &[0x5a; 64]);
    assert_eq!(
        run(fragment),
        Verdict::Drop(DropReason::PolicyDeniedIngress)
    );
}
