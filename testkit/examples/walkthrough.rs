//! A walk through the pipeline on the fixture node: one packet of every path, with its 5-tuple
//! before and after and the verdict (`make walkthrough`; no root needed).
#![allow(clippy::print_stdout)]

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::pipeline::inspect;
use kxdp_dataplane::{process_batch, Counters, Instant};
use kxdp_testkit::{tcp_flags as f, FrameBuf, Input, Topology};

fn describe(frame: &[u8]) -> String {
    // VXLAN: describe the inner packet.
    match inspect(frame) {
        Ok(k) if k.proto == 17 && k.dst_port == 8472 && frame.len() > 50 + 34 => {
            format!(
                "vxlan {}->{} [{}]",
                k.src_ip,
                k.dst_ip,
                describe(&frame[50..])
            )
        }
        Ok(k) => format!(
            "proto {} {}:{} -> {}:{}",
            k.proto, k.src_ip, k.src_port, k.dst_ip, k.dst_port
        ),
        Err(r) => format!("({r})"),
    }
}

fn main() {
    let t = Topology::default();
    let snap = t.snapshot();
    let ct = Conntrack::new(ConntrackConfig::default());
    let counters = Counters::new();
    let now = Instant::from_secs(1);
    let cases: Vec<(&str, Input)> = vec![
        ("pod A -> pod B, same node", t.case_pod_to_pod(40000)),
        ("pod A -> pod on node B", t.case_encap(40001)),
        ("pod on node B -> pod A", t.case_decap(40002)),
        (
            "pod A -> ClusterIP default/api",
            t.case_service(40003, f::SYN),
        ),
        ("pod B replies", t.case_service_reply(40003)),
        ("pod A -> outside the cluster", t.case_egress(40004, f::SYN)),
        (
            "outside -> NodePort default/web",
            Input {
                ingress: t.node.uplink,
                frame: t.from_outside(t.external_ip, t.node.primary_ip()).tcp(
                    50000,
                    t.web_node_port,
                    f::SYN,
                    b"",
                ),
            },
        ),
        (
            "pod A -> ClusterIP with no endpoints",
            Input {
                ingress: t.pod_a.iface,
                frame: t.from_pod_a(t.empty_cluster_ip).tcp(40005, 80, f::SYN, b""),
            },
        ),
    ];
    println!(
        "kxdp pipeline walkthrough on node {} ({})",
        t.node.name,
        t.node.primary_ip()
    );
    for (what, input) in &cases {
        let mut buf = FrameBuf::new(&input.frame);
        let mut batch = [buf.packet(input.ingress)];
        process_batch(&mut batch, &snap, &ct, &counters, now);
        let [p] = batch;
        println!("\n{what}");
        println!("  in : {}", describe(&input.frame));
        println!("  out: {}", describe(p.frame.data()));
        println!("  verdict: {:?}", p.verdict);
    }
    let c = counters.read();
    println!("\ncounters:");
    for e in Event::ALL {
        if c.event(*e) > 0 {
            println!("  {:<24} {}", e.name(), c.event(*e));
        }
    }
    println!("conntrack: {} flows", ct.len());
}
