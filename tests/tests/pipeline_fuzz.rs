//! Fuzz-style robustness: random, truncated and mutated frames on every interface never panic,
//! never leave a frame outside its buffer, and always get a verdict.

mod common;

use common::Env;
use kxdp_dataplane::tables::InterfaceId;
use kxdp_dataplane::testkit::tcp_flags as f;
use kxdp_dataplane::{process_batch, Frame, Packet, Verdict};

/// xorshift64*: deterministic, so a failure reproduces from its iteration number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

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
    let mut rng = Rng(0x6b78_6470_2024);
    let mut buf = vec![0u8; 2048];
    let mut verdicts = std::collections::BTreeSet::new();
    for iter in 0..200_000u32 {
        let mut frame = if rng.below(8) == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..rng.below(4) {
            match rng.below(4) {
                0 if !frame.is_empty() => {
                    let i = rng.below(frame.len());
                    frame[i] = rng.next() as u8;
                }
                1 => frame.truncate(rng.below(frame.len() + 1)),
                2 => {
                    // Bias mutations to the headers, where the parsing decisions are.
                    let i = rng.below(frame.len().clamp(1, 80));
                    if let Some(b) = frame.get_mut(i) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                _ => frame.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
            }
        }
        // Vary head- and tailroom so the rewrites that need room are refused, not overrun.
        let head = rng.below(128);
        let cap = (head + frame.len() + rng.below(128)).min(buf.len());
        if head + frame.len() > cap {
            continue;
        }
        buf[head..head + frame.len()].copy_from_slice(&frame);
        let ingress = InterfaceId(ifaces[rng.below(ifaces.len())]);
        let fr = Frame::new(&mut buf[..cap], head, frame.len()).unwrap();
        let mut batch = [Packet::new(fr, ingress)];
        process_batch(&mut batch, &env.snap, &env.ct, &env.counters, env.now);
        let [p] = batch;
        assert!(p.frame.head() + p.frame.len() <= cap, "iteration {iter}");
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
    }
    // The mutations must have reached every kind of outcome, or they are not exploring.
    for want in ["Transmit", "Reply", "ToHost", "Drop"] {
        assert!(verdicts.contains(want), "no {want} verdict in 200k frames");
    }
}
