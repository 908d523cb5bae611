//! Write the seed corpora: every named case of the fixture topology (the frames the pipeline
//! tests and benches use), as `parse` takes them (a frame) and as `pipeline` takes them (no
//! table edits, then a record of interface selector, length, frame), with table edits that
//! each case set exercises; the embedded default manifest for `manifest`; a plugin
//! configuration as a runtime hands it over for `cni`; a run of every operation for
//! `conntrack`; segmentation, fragmentation, coalescing and VXLAN headers for `wire`; and the
//! XDP decision tests' frames on each interface role for `xdp`. Run from this folder:
//! `cargo run --example seeds`. Each target's file says what its input means.

use core::net::Ipv4Addr;

use kxdp_dataplane::offload::{Encap, FrameSink, Segments};
use kxdp_dataplane::wire::build::{arp_request, FrameSpec, Ipv4Opts};
use kxdp_dataplane::wire::Icmpv4Message;
use kxdp_testkit::{tcp_flags as f, Input, Topology};

/// The corpus folders written.
const DIRS: [&str; 7] = [
    "corpus/parse",
    "corpus/pipeline",
    "corpus/manifest",
    "corpus/cni",
    "corpus/conntrack",
    "corpus/wire",
    "corpus/xdp",
];

fn write(dir: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(format!("corpus/{dir}/{name}"), bytes)
}

/// A `pipeline` record: selector, length (two bytes, and bit 6 of the selector, past 255
/// bytes), frame.
fn record(sel: u8, frame: &[u8]) -> Vec<u8> {
    let mut r = if frame.len() > 255 {
        let len = frame.len() as u16;
        vec![sel | 0x40, (len >> 8) as u8, len as u8]
    } else {
        vec![sel, frame.len() as u8]
    };
    r.extend_from_slice(frame);
    r
}

/// A `pipeline` input: the table edits (8 bytes each, see `fuzz_targets/pipeline.rs`), then
/// the records.
fn pipeline_input(edits: &[[u8; 8]], records: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![(edits.len() * 8) as u8];
    v.extend(edits.iter().flatten());
    v.extend(records.iter().flatten());
    v
}

/// A `pipeline` seed with tables: its name, its table edits, the records of its frames.
type TableSeed = (&'static str, Vec<[u8; 8]>, Vec<Vec<u8>>);

/// Selectors of `pipeline`'s interfaces.
mod sel {
    pub const POD_A: u8 = 0;
    pub const POD_B: u8 = 1;
    pub const UPLINK: u8 = 2;
    pub const HOST: u8 = 3;
    pub const ADDED_POD: u8 = 5;
}

/// `pipeline`'s address encoding: network `net`, host `h`; nets 8 to 15 the fixture's named
/// addresses (pod A, pod B, remote pod, node, external host, web's LB, web's ClusterIP,
/// gateway).
mod net {
    pub const UNASSIGNED: u8 = 2;
    pub const UNDERLAY: u8 = 4;
    pub const EXTERNAL: u8 = 6;
    pub const POD_A: u8 = 8;
    pub const POD_B: u8 = 9;
}

/// Indexes of `pipeline`'s port table.
mod port {
    pub const P80: u8 = 0;
    pub const P8080: u8 = 1;
    pub const P9000: u8 = 12;
    pub const P31000: u8 = 8;
}

/// The `pipeline` seeds: the fixture's cases, alone and together, plain and policed, then
/// table edits with the frames they concern.
fn pipeline(t: &Topology, cases: &[(&str, Input)]) -> std::io::Result<()> {
    let selector = |iface| {
        [t.pod_a.iface, t.pod_b.iface, t.node.uplink, t.node.host]
            .iter()
            .position(|i| *i == iface)
            .unwrap_or(4) as u8
    };
    let mut all = Vec::new();
    for (name, input) in cases {
        let r = record(selector(input.ingress), &input.frame);
        write(
            "pipeline",
            name,
            &pipeline_input(&[], std::slice::from_ref(&r)),
        )?;
        all.push(r);
    }
    // All of them in one batch, the SYNs before the packets of their flows.
    write("pipeline", "all_cases", &pipeline_input(&[], &all))?;
    let mut policed = all.clone();
    policed[0][0] |= 0x80;
    write(
        "pipeline",
        "all_cases_policed",
        &pipeline_input(&[], &policed),
    )?;

    let outside = |dst| t.from_outside(t.external_ip, dst);
    let node = t.node.primary_ip();
    let big = vec![0x5au8; 1400];
    let seeds: Vec<TableSeed> = vec![
        (
            // A UDP NodePort 31000 to pod B:80.
            "tables_nodeport_udp",
            vec![[0, 1 | 4, 0, 0, port::P31000, 1, net::POD_B, 0]],
            vec![record(sel::UPLINK, &outside(node).udp(40000, 31000, b"q"))],
        ),
        (
            // Pod B admits pod A on TCP 9000, and may reach nobody.
            "tables_policy",
            vec![
                [6, 1, 0, net::POD_A, 0, 32, 0, port::P9000],
                [5, 1, 3, 0, 0, 0, 0, 0],
            ],
            vec![
                record(
                    sel::POD_A,
                    &t.from_pod_a(t.pod_b.ip).tcp(1000, 9000, f::SYN, b""),
                ),
                record(
                    sel::POD_B,
                    &t.from_pod_b(t.pod_a.ip)
                        .tcp(9000, 1000, f::SYN | f::ACK, b""),
                ),
                record(
                    sel::POD_A,
                    &t.from_pod_a(t.pod_b.ip).tcp(1001, 9001, f::SYN, b""),
                ),
                record(
                    sel::POD_B,
                    &t.from_pod_b(t.external_ip).tcp(1002, 443, f::SYN, b""),
                ),
            ],
        ),
        (
            // Node B gone: its pods unreachable, its VXLAN unknown.
            "tables_no_node_b",
            vec![[10, 0, 0, 0, 0, 0, 0, 0]],
            vec![
                record(sel::POD_A, &t.case_encap(1001).frame),
                record(sel::UPLINK, &t.case_decap(1002).frame),
            ],
        ),
        (
            // The smallest MTUs a node takes, and frames past them.
            "tables_small_mtu",
            vec![[12, 0, 0, 0, 0, 0, 0, 0], [12, 1, 0, 0, 0, 0, 0, 0]],
            vec![
                record(
                    sel::POD_A,
                    &t.from_pod_a(t.remote_pod_ip).tcp(1003, 9000, f::ACK, &big),
                ),
                record(
                    sel::POD_A,
                    &t.from_pod_a(t.remote_pod_ip).udp(1004, 53, &big),
                ),
                record(sel::POD_A, &t.from_pod_a(t.pod_b.ip).udp(1005, 53, &big)),
                record(
                    sel::POD_A,
                    &FrameSpec {
                        ip: Ipv4Opts {
                            dont_fragment: false,
                            ..Ipv4Opts::default()
                        },
                        ..t.from_pod_a(t.external_ip)
                    }
                    .udp(1006, 53, &big),
                ),
                record(
                    sel::UPLINK,
                    &outside(t.pod_a.ip).tcp(443, 1007, f::ACK, &big),
                ),
            ],
        ),
        (
            // `default/web` with Local traffic policies and ClientIP affinity.
            "tables_web_local",
            vec![[4, 0, 1 | 2 | 4, 10, 0, 0, 0, 0]],
            vec![
                record(
                    sel::UPLINK,
                    &outside(t.web_lb_ip).tcp(50000, 80, f::SYN, b""),
                ),
                record(
                    sel::UPLINK,
                    &outside(node).tcp(50001, t.web_node_port, f::SYN, b""),
                ),
                record(
                    sel::POD_A,
                    &t.from_pod_a(t.web_cluster_ip).tcp(50002, 80, f::SYN, b""),
                ),
            ],
        ),
        (
            // A third node 198.18.0.3 with 10.244.3.0/24, its MAC known.
            "tables_new_node",
            vec![[9, net::UNDERLAY, 3, 3, 3, 4, 1, 3]],
            vec![
                record(
                    sel::POD_A,
                    &t.from_pod_a(Ipv4Addr::new(10, 244, 3, 5))
                        .tcp(1008, 80, f::SYN, b""),
                ),
                record(
                    sel::UPLINK,
                    &FrameSpec {
                        src: Ipv4Addr::new(198, 18, 0, 3),
                        ..t.vxlan_from_node_b()
                    }
                    .vxlan(
                        49152,
                        8472,
                        1,
                        &t.inner_from_node_b(Ipv4Addr::new(10, 244, 3, 5), t.pod_a.ip)
                            .udp(1, 2, b"x"),
                    ),
                ),
            ],
        ),
        (
            // A third pod 10.244.1.12 on the first added interface.
            "tables_added_pod",
            vec![[7, 12, 0, 0, 0, 0, 0, 0]],
            vec![
                record(
                    sel::ADDED_POD,
                    &FrameSpec::new(
                        kxdp_testkit::mac([2, 0, 0x0a, 0xf4, 1, 12]),
                        t.node.gateway_mac,
                        Ipv4Addr::new(10, 244, 1, 12),
                        t.pod_a.ip,
                    )
                    .tcp(1009, 80, f::SYN, b""),
                ),
                record(
                    sel::POD_A,
                    &t.from_pod_a(Ipv4Addr::new(10, 244, 1, 12))
                        .udp(1010, 53, b"q"),
                ),
                record(
                    sel::ADDED_POD,
                    &arp_request(
                        kxdp_testkit::mac([2, 0, 0x0a, 0xf4, 1, 12]),
                        Ipv4Addr::new(10, 244, 1, 12),
                        t.node.gateway_ip,
                    ),
                ),
            ],
        ),
        (
            // `default/web`'s load balancer open to the external host only.
            "tables_source_ranges",
            vec![[4, 0, 16, 0, 0, net::EXTERNAL, 7, 32]],
            vec![
                record(
                    sel::UPLINK,
                    &outside(t.web_lb_ip).tcp(50003, 80, f::SYN, b""),
                ),
                record(
                    sel::UPLINK,
                    &t.from_outside(Ipv4Addr::new(198, 19, 0, 8), t.web_lb_ip)
                        .tcp(50004, 80, f::SYN, b""),
                ),
            ],
        ),
        (
            // Pod B:8080 draining; a ClusterIP service of the unassigned block.
            "tables_draining",
            vec![
                [13, net::POD_B, 0, 0, port::P8080, 0, 0, 0],
                [0, 0, 3, 77, port::P80, 1, net::UNASSIGNED, 5],
            ],
            vec![
                record(
                    sel::POD_B,
                    &t.from_pod_b(t.pod_a.ip).tcp(8080, 1011, f::ACK, b"r"),
                ),
                record(
                    sel::POD_A,
                    &t.from_pod_a(Ipv4Addr::new(10, 96, 0, 77))
                        .tcp(1012, 80, f::SYN, b""),
                ),
                record(
                    sel::HOST,
                    &t.from_host(Ipv4Addr::new(10, 96, 0, 77))
                        .tcp(1013, 80, f::SYN, b""),
                ),
            ],
        ),
        (
            // Node settings: another masquerade range, a second node address taking
            // NodePorts, no gateway MAC.
            "tables_node",
            vec![
                [12, 2, 0, 0, 16, 0, 0, 0],
                [12, 4, net::UNDERLAY, 9, 0, 0, 0, 0],
                [12, 3, 0, 0b10, 0, 0, 0, 0],
                [11, 1, net::UNDERLAY, 254, 0, 0, 0, 0],
            ],
            vec![
                record(
                    sel::UPLINK,
                    &t.from_outside(t.external_ip, Ipv4Addr::new(198, 18, 0, 9))
                        .tcp(50005, t.web_node_port, f::SYN, b""),
                ),
                record(sel::POD_A, &t.case_egress(1014, f::SYN).frame),
            ],
        ),
    ];
    for (name, edits, mut records) in seeds {
        records.extend(all.iter().cloned());
        write("pipeline", name, &pipeline_input(&edits, &records))?;
    }
    Ok(())
}

/// A sink collecting the frames [`Segments::emit`] writes.
#[derive(Default)]
struct Frames {
    frames: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl FrameSink for Frames {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        self.pending = vec![0; len];
        Some(&mut self.pending)
    }

    fn commit(&mut self, len: usize) {
        self.frames.push(self.pending[..len].to_vec());
    }
}

/// A `wire` input: the selector, two parameters of two bytes, the last byte, the cut points,
/// the rest.
fn wire_input(sel: u8, first: u16, second: u16, last: u8, cuts: &[u16], rest: &[u8]) -> Vec<u8> {
    let mut v = vec![sel | ((cuts.len() as u8) << 4)];
    v.extend_from_slice(&first.to_be_bytes());
    v.extend_from_slice(&second.to_be_bytes());
    v.push(last);
    v.extend(cuts.iter().flat_map(|c| c.to_be_bytes()));
    v.extend_from_slice(rest);
    v
}

/// The `wire` seeds.
fn wire(t: &Topology) -> std::io::Result<()> {
    const SEGMENT: u8 = 0;
    const FRAGMENT: u8 = 1;
    const COALESCE: u8 = 2;
    const VXLAN: u8 = 3;
    const ENCAP: u8 = 4;
    const FLAG: u8 = 8;
    // The MTU is 68 plus the parameter.
    let mtu = |m: u16| m - 68;
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let tcp = FrameSpec {
        ip: Ipv4Opts {
            ident: 0x1234,
            ..Ipv4Opts::default()
        },
        ..t.from_pod_a(t.remote_pod_ip)
    }
    .tcp(40000, 8080, f::ACK | f::PSH, &payload);
    let vxlan_tcp = FrameSpec {
        udp_checksum: true,
        ..t.vxlan_to_node_b()
    }
    .vxlan(51000, 8472, 1, &tcp);
    let udp = |df: bool| {
        FrameSpec {
            ip: Ipv4Opts {
                dont_fragment: df,
                ident: 77,
                ..Ipv4Opts::default()
            },
            ..t.from_pod_a(t.remote_pod_ip)
        }
        .udp(5353, 53, &payload)
    };
    let vxlan_udp = t.vxlan_to_node_b().vxlan(51001, 8472, 1, &udp(false));
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("segment", wire_input(SEGMENT, mtu(1500), 0, 0, &[], &tcp)),
        (
            "segment_pieces",
            wire_input(SEGMENT, mtu(576), 0, 9, &[54, 1000, 1001, 2500], &tcp),
        ),
        (
            "segment_mss",
            wire_input(SEGMENT, mtu(9000), 536, 0, &[], &tcp),
        ),
        (
            "segment_dry_sink",
            wire_input(SEGMENT | FLAG, mtu(1000), 0, 2, &[], &tcp),
        ),
        (
            "segment_vxlan",
            wire_input(SEGMENT | ENCAP, mtu(1500), 0, 0, &[200], &vxlan_tcp),
        ),
        (
            "fragment",
            wire_input(FRAGMENT, mtu(1500), 0, 0, &[], &udp(false)),
        ),
        (
            "fragment_df",
            wire_input(FRAGMENT, mtu(1500), 0, 0, &[], &udp(true)),
        ),
        (
            "fragment_pieces",
            wire_input(FRAGMENT, mtu(68), 0, 5, &[40, 41, 600], &udp(false)),
        ),
        (
            "fragment_vxlan",
            wire_input(FRAGMENT | ENCAP, mtu(1400), 0, 0, &[], &vxlan_udp),
        ),
    ];
    for (name, bytes) in seeds {
        write("wire", name, &bytes)?;
    }

    // Coalescing: the segments of the TCP frame, then those of a second flow interleaved.
    let cut = |frame: &[u8], mtu: usize| {
        let mut sink = Frames::default();
        let pieces = [frame];
        Segments::new(&pieces, Encap::Plain, mtu)
            .and_then(|s| s.emit(&mut sink))
            .expect("the seed frame segments");
        sink.frames
    };
    let records = |frames: &[Vec<u8>]| -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| {
                (f.len() as u16)
                    .to_be_bytes()
                    .into_iter()
                    .chain(f.iter().copied())
            })
            .collect()
    };
    let stream = cut(&tcp, 1000);
    let other = cut(
        &t.from_pod_b(t.remote_pod_ip)
            .tcp(40001, 8080, f::ACK, &payload),
        700,
    );
    let mixed: Vec<Vec<u8>> = stream
        .iter()
        .zip(&other)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let gro = |sel: u8, max_ip_len: u16, max_buffers: u16, frames: &[Vec<u8>]| {
        wire_input(sel, max_ip_len - 20, max_buffers, 0, &[], &records(frames))
    };
    write("wire", "coalesce", &gro(COALESCE, 65535, 0, &stream))?;
    // Each segment's first 320 bytes in a buffer of their own, the rest in another.
    write(
        "wire",
        "coalesce_chained",
        &wire_input(COALESCE, 65535 - 20, 6, 20, &[], &records(&stream)),
    )?;
    write("wire", "coalesce_limits", &gro(COALESCE, 2000, 2, &stream))?;
    write(
        "wire",
        "coalesce_flows",
        &gro(COALESCE | FLAG, 65535, 0, &mixed),
    )?;

    // VXLAN headers: flannel's, and one with a reserved bit set, each before a frame.
    let mut header = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    header.extend_from_slice(&t.case_pod_to_pod(1).frame);
    write("wire", "vxlan", &wire_input(VXLAN, 0, 0, 0, &[], &header))?;
    header[7] = 1;
    write(
        "wire",
        "vxlan_reserved",
        &wire_input(VXLAN, 0, 0, 0, &[], &header),
    )?;
    Ok(())
}

/// The `xdp` seeds: the XDP decision tests' frames on the uplink, the fixture's cases on
/// every role, and frames for the variant tables (selector bit 7).
fn xdp(t: &Topology, cases: &[(&str, Input)]) -> std::io::Result<()> {
    const ABSENT: u8 = 0;
    const UNMANAGED: u8 = 1;
    const UPLINK: u8 = 2;
    const POD: u8 = 3;
    const HOST: u8 = 4;
    const VARIANT: u8 = 0x80;
    let input = |sel: u8, frame: &[u8]| [&[sel][..], frame].concat();
    for (name, case) in cases {
        let role = if case.ingress == t.node.uplink {
            UPLINK
        } else {
            POD
        };
        write("xdp", name, &input(role, &case.frame))?;
    }
    let node = t.node.primary_ip();
    let outside = |dst| t.from_outside(t.external_ip, dst);
    let quoted = FrameSpec::new(t.node.uplink_mac, t.gateway_router_mac, node, t.external_ip)
        .udp(62002, 53, b"q");
    let mut options = outside(node).tcp(50000, t.web_node_port, f::SYN, b"");
    options[14] = 0x46;
    let vxlan_from = |src: Ipv4Addr, port: u16| {
        FrameSpec {
            src,
            ..t.vxlan_from_node_b()
        }
        .vxlan(
            49152,
            port,
            1,
            &t.inner_from_node_b(t.remote_pod_ip, t.pod_a.ip)
                .udp(1, 2, b"x"),
        )
    };
    let second = Ipv4Addr::new(198, 18, 0, 3);
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "unmanaged",
            UNMANAGED,
            outside(node).tcp(1, 30080, f::SYN, b""),
        ),
        ("absent", ABSENT, outside(node).tcp(1, 30080, f::SYN, b"")),
        (
            "host",
            HOST,
            t.from_host(t.external_ip).tcp(2, 443, f::SYN, b""),
        ),
        (
            "vxlan_unknown_peer",
            UPLINK,
            vxlan_from(Ipv4Addr::new(198, 18, 0, 66), 8472),
        ),
        (
            "nodeport",
            UPLINK,
            outside(node).tcp(50000, t.web_node_port, f::SYN, b""),
        ),
        (
            "load_balancer",
            UPLINK,
            outside(t.web_lb_ip).tcp(50000, 80, f::SYN, b""),
        ),
        ("ssh", UPLINK, outside(node).tcp(50000, 22, f::SYN, b"")),
        (
            "masquerade_reply",
            UPLINK,
            outside(node).tcp(443, 62000, f::SYN | f::ACK, b""),
        ),
        (
            "echo_reply",
            UPLINK,
            outside(node).icmp_echo(false, 62001, 1, b"x"),
        ),
        (
            "port_unreachable",
            UPLINK,
            outside(node).icmp(Icmpv4Message::DstUnreachable, 3, [0; 4], &quoted[14..42]),
        ),
        ("ip_options", UPLINK, options),
        (
            "truncated",
            UPLINK,
            outside(node).tcp(50000, t.web_node_port, f::SYN, b"")[..30].to_vec(),
        ),
        (
            "arp",
            UPLINK,
            arp_request(t.gateway_router_mac, t.external_ip, node),
        ),
        // A jumbo frame: past a page, so the kernel hands the program a multi-buffer frame.
        (
            "jumbo",
            UPLINK,
            outside(node).tcp(50000, t.web_node_port, f::ACK, &[0x6a; 8946]),
        ),
        (
            "variant_vxlan",
            UPLINK | VARIANT,
            vxlan_from(t.node_b.node_ip, 4789),
        ),
        (
            "variant_external_ip",
            UPLINK | VARIANT,
            outside(Ipv4Addr::new(203, 0, 113, 5)).udp(1, 5353, b"q"),
        ),
        (
            "variant_nodeport",
            UPLINK | VARIANT,
            outside(second).udp(1, 31053, b"q"),
        ),
        (
            "variant_masquerade",
            UPLINK | VARIANT,
            outside(second).tcp(443, 40001, f::ACK, b""),
        ),
        ("variant_pod", POD | VARIANT, t.case_pod_to_pod(1).frame),
    ];
    for (name, sel, frame) in seeds {
        write("xdp", name, &input(sel, &frame))?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let t = Topology::default();
    let cases: Vec<(&str, Input)> = vec![
        ("pod_to_pod", t.case_pod_to_pod(1000)),
        ("encap", t.case_encap(1001)),
        ("decap", t.case_decap(1002)),
        ("service_syn", t.case_service(1003, f::SYN)),
        ("service_ack", t.case_service(1003, f::ACK)),
        ("service_reply", t.case_service_reply(1003)),
        ("egress_syn", t.case_egress(1004, f::SYN)),
    ];
    for dir in DIRS {
        std::fs::create_dir_all(dir)?;
    }
    for (name, input) in &cases {
        write("parse", name, &input.frame)?;
    }
    pipeline(&t, &cases)?;
    wire(&t)?;
    xdp(&t, &cases)?;
    write(
        "manifest",
        "default",
        include_str!("../../../control/manifests/default.yaml").as_bytes(),
    )?;
    // The plugin's entry of deploy/kxdp.yaml's conflist, as a runtime passes it (name and
    // version from the list), with a previous plugin's result.
    write(
        "cni",
        "config",
        br#"{"cniVersion":"1.1.0","name":"kxdp","type":"kxdp-cni","subnetFile":"/run/kxdp/subnet.env","dataDir":"/var/lib/kxdp/ipam","agentAddress":"127.0.0.1:9901","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0}]}}"#,
    )?;
    // conntrack: records of (operation, four key bytes); each operation a few times over
    // colliding keys, then an adoption and a removal.
    let mut ops = Vec::new();
    for (i, op) in [0u8, 1, 0, 3, 1, 2, 4, 5, 6, 0, 1, 5, 2, 3]
        .iter()
        .enumerate()
    {
        let i = i as u8;
        ops.extend([*op, 0x80 | i, i / 2, 0x02 | (i << 2), i]);
    }
    write("conntrack", "ops", &ops)?;
    Ok(())
}
