//! Fuzz-style robustness: random, truncated and mutated frames on every interface never panic,
//! never leave a frame outside its buffer, and always get a verdict.

mod common;

use common::Env;
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::{process_batch, Frame, Packet, Verdict};
use kxdp_testkit::tcp_flags as f;

fn seeds(env: &Env) -> Vec<Vec<u8>> {
    let t = &env.t;
    let mut v: Vec<Vec<u8>> = vec![
        t.case_pod_to_pod(1).frame,
        t.case_encap(2).frame,
        t.case_decap(3).frame,
        t.case_service(4, f::SYN).frame,
        t.case_service_reply(4).frame,
        t.case_egress(5, f::SYN).frame,
        t.from_pod_a(t.empty_cluster_ip)
            .tcp(6, 80, f::SYN, b"")
            .to_vec(),
        t.from_pod_a(t.node.gateway_ip)
            .icmp_echo(true, 1, 1, b"ping"),
        kxdp_dataplane::wire::build::arp_request(t.pod_a.mac, t.pod_a.ip, t.node.gateway_ip),
        t.from_outside(t.external_ip, t.node.primary_ip())
            .tcp(7, t.web_node_port, f::SYN, b""),
        t.from_pod_a(t.dns_cluster_ip).udp(8, 53, &[0u8; 1460]),
    ];
    // An ICMP error quoting a translated packet, so mutations reach the translation code.
    let (_, out) = env.run(&t.case_egress(9, f::SYN));
    v.push(t.from_outside(t.external_ip, t.node.primary_ip()).icmp(
        kxdp_dataplane::wire::Icmpv4Message::DstUnreachable,
        3,
        [0; 4],
        &out[14..42],
    ));
    v
}

#[test]
fn random_truncated_and_mutated_frames_never_panic() {
    let env = Env::new();
    let seeds = seeds(&env);
    // Some flows exist, so mutations of their packets hit conntrack too.
    for s in 9000..9010 {
        env.run(&env.t.case_egress(s, f::SYN));
        env.run(&env.t.case_service(s, f::SYN));
    }
    let ifaces = [0u16, 1, 2, 3, 4, 200];
    let mut rng = fastrand::Rng::with_seed(0x6b78_6470_2024);
    // Batches of 1 to 64 frames, so the two-pass batch (and its conntrack warm-up) sees
    // mixtures of every kind of packet.
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
    let mut verdicts = std::collections::BTreeSet::new();
    let mut frames_seen = 0u32;
    for iter in 0..8_000u32 {
        let n = 1 + rng.usize(..64);
        let mut layout = Vec::with_capacity(n);
        for buf in bufs.iter_mut().take(n) {
            let mut frame = if rng.usize(..8) == 0 {
                (0..rng.usize(..200)).map(|_| rng.u8(..)).collect()
            } else {
                seeds[rng.usize(..seeds.len())].clone()
            };
            for _ in 0..rng.usize(..4) {
                match rng.usize(..4) {
                    0 if !frame.is_empty() => {
                        let i = rng.usize(..frame.len());
                        frame[i] = rng.u8(..);
                    }
                    1 => frame.truncate(rng.usize(..frame.len() + 1)),
                    2 => {
                        // Bias mutations to the headers, where the parsing decisions are.
                        let i = rng.usize(..frame.len().clamp(1, 80));
                        if let Some(b) = frame.get_mut(i) {
                            *b ^= 1 << rng.usize(..8);
                        }
                    }
                    _ => frame.extend((0..rng.usize(..16)).map(|_| rng.u8(..))),
                }
            }
            // Vary head- and tailroom so rewrites that need room are refused, not overrun.
            let head = rng.usize(..128);
            let cap = (head + frame.len() + rng.usize(..128)).min(buf.len());
            let len = frame.len().min(cap - head.min(cap));
            let head = head.min(cap - len);
            buf[head..head + len].copy_from_slice(&frame[..len]);
            // One frame in eight continues in a tail of further buffers (multi-buffer AF_XDP),
            // which the pipeline must never read past its first buffer for.
            let tail = if rng.u8(..8) == 0 {
                rng.usize(..70_000)
            } else {
                0
            };
            layout.push((
                head,
                len,
                cap,
                tail,
                InterfaceId(ifaces[rng.usize(..ifaces.len())]),
            ));
        }
        let mut batch: Vec<Packet<'_>> = bufs
            .iter_mut()
            .zip(&layout)
            .map(|(buf, &(head, len, cap, tail, ingress))| {
                let frame = Frame::new(&mut buf[..cap], head, len).unwrap();
                Packet::new(frame.with_tail(tail), ingress)
            })
            .collect();
        process_batch(&mut batch, &env.snap, &env.ct, &env.counters, env.now);
        for p in &batch {
            frames_seen += 1;
            verdicts.insert(
                format!("{:?}", p.verdict)
                    .split('(')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
            if let Verdict::Transmit(i) = p.verdict {
                assert!(i.0 < 4, "iteration {iter}: transmit on {i:?}");
            }
            assert!(
                p.frame.tail() <= 70_000,
                "iteration {iter}: a tail never grows"
            );
            if !matches!(p.verdict, Verdict::Drop(_)) {
                // Whatever leaves is at least an Ethernet header.
                assert!(p.frame.len() >= 14, "iteration {iter}: {:?}", p.verdict);
            }
        }
    }
    assert!(frames_seen > 200_000, "only {frames_seen} frames");
    // The mutations must have reached every kind of outcome, or they are not exploring.
    for want in ["Transmit", "Reply", "ToHost", "Drop"] {
        assert!(
            verdicts.contains(want),
            "no {want} verdict in {frames_seen} frames"
        );
    }
}
