//! Criterion benches of the pipeline's stages, named `stage/case/flows=N,services=M`, and of
//! NetworkPolicy on new flows, `policy/case/policies=N,pods=10k` (see [`policy_world`]).
//!
//! Every case is a batch of 64 frames from the shared fixture topology
//! (`kxdp_testkit`), the same cases the fixture tests check, at 1k and 1M live
//! conntrack flows and 10 and 10k services. Throughput is reported per packet. Only
//! `process_batch` is timed (two clock reads per batch of 64, about 0.6 ns a packet): before
//! each batch its frames are re-copied into their buffers, untimed, since the pipeline rewrote
//! them. That copy stands for the kernel's copy into the UMEM and, like it, leaves the frames
//! in cache; `baseline/reset` measures it alone.
//!
//! The 1M-flow tables hold 1M random flows besides the benchmark's own; the benchmark's
//! established flows (DNAT, reverse NAT, masquerade) cycle through 16k (masquerade: 4k) of
//! them, so conntrack lookups miss the CPU caches the way they do on a busy node.
//!
//! Conntrack is in anonymous memory advised for huge pages, as `Conntrack::new` makes it. With
//! `KXDP_BENCH_CONNTRACK_DIR=DIR` it is in a file in DIR (a tmpfs), as the agent keeps it to
//! outlive the process, so the two can be compared.

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::flow::{proto, FlowKey};
use kxdp_dataplane::pipeline::inspect;
use kxdp_dataplane::{process_batch, Counters, Instant, Snapshot, Verdict};
use kxdp_testkit::{tcp_flags as f, FrameBuf, Input, Topology};

const BATCH: usize = 64;

struct World {
    label: String,
    t: Topology,
    snap: Snapshot,
    ct: Conntrack,
    counters: Counters,
    /// The pipeline's clock: advanced 5 us a batch (64 packets at ~13 Mpps), so conntrack
    /// refreshes a flow's expiry, a compare-and-swap, whenever a millisecond has passed since
    /// its last packet, as on a busy node.
    clock: Cell<u64>,
}

impl World {
    /// The clock for the next batch.
    fn tick(&self) -> Instant {
        let now = self.clock.get() + 5_000;
        self.clock.set(now);
        Instant::from_nanos(now)
    }
}

fn world(flows: usize, services: usize) -> World {
    let t = Topology::with_services(services.saturating_sub(5), 10);
    let snap = t.snapshot();
    let config = ConntrackConfig {
        capacity: (flows + 100_000) as u32,
        ..ConntrackConfig::default()
    };
    let ct = match std::env::var_os("KXDP_BENCH_CONNTRACK_DIR") {
        None => Conntrack::new(config),
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(format!("bench-ct-{flows}"));
            let file = std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .expect("the conntrack file");
            // Unlinked at once: the mapping keeps it.
            let _ = std::fs::remove_file(&path);
            Conntrack::create_in(config, &file, [0; 16]).expect("conntrack in a file")
        }
    };
    let now = Instant::from_secs(100);
    // Filler flows: random clients to random backends, as service flows look in conntrack.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..flows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let client = core::net::Ipv4Addr::from(0x0af4_0000 | (x as u32 & 0xffff));
        let vip = core::net::Ipv4Addr::from(0x0a64_0000 | ((x >> 16) as u32 & 0xffff));
        let backend = core::net::Ipv4Addr::from(0x0af4_0200 | ((x >> 32) as u32 & 0xff));
        let sport = (x >> 40) as u16 | 1024;
        let orig = FlowKey::new(proto::TCP, client, sport, vip, 80);
        let reply = FlowKey::new(proto::TCP, backend, 8080, client, sport);
        let _ = ct.insert(orig, reply, f::ACK, now);
    }
    let fl = if flows >= 1_000_000 {
        "1M".into()
    } else {
        format!("{}k", flows / 1000)
    };
    let sv = if services >= 10_000 {
        "10k".into()
    } else {
        services.to_string()
    };
    World {
        label: format!("flows={fl},services={sv}"),
        t,
        snap,
        ct,
        counters: Counters::new(),
        clock: Cell::new(now.as_nanos()),
    }
}

/// Frames cycled through by a bench, and the buffers they are copied into.
struct Batch {
    inputs: Vec<Input>,
    bufs: Vec<FrameBuf>,
    next: usize,
}

impl Batch {
    fn new(inputs: Vec<Input>) -> Self {
        // Whole batches only, so a batch never wraps and needs no per-packet modulo (a
        // division costs more than some of the stages measured).
        assert_eq!(inputs.len() % BATCH, 0, "cases come in whole batches");
        let bufs = inputs
            .iter()
            .take(BATCH)
            .map(|i| FrameBuf::new(&i.frame))
            .collect();
        Batch {
            inputs,
            bufs,
            next: 0,
        }
    }

    /// Copy the next 64 frames into the buffers (untimed: it stands for the kernel's copy into
    /// the UMEM, which leaves the frames in cache as this does) and run the pipeline over them;
    /// returns the time `process_batch` took.
    fn run(&mut self, w: &World) -> Duration {
        self.run_checked(w, false)
    }

    /// `run`, asserting (when `check`) that every frame was transmitted.
    fn run_checked(&mut self, w: &World, check: bool) -> Duration {
        let n = self.inputs.len();
        let start = self.next;
        self.next = (self.next + BATCH) % n;
        let inputs = &self.inputs;
        let mut bufs = self.bufs.iter_mut();
        let mut packets: [_; BATCH] = core::array::from_fn(|k| {
            let input = &inputs[start + k];
            let b = bufs.next().expect("64 buffers");
            b.reset(&input.frame);
            b.packet(input.ingress)
        });
        let now = w.tick();
        let start = WallClock::now();
        process_batch(&mut packets, &w.snap, &w.ct, &w.counters, now);
        let took = start.elapsed();
        if check {
            all_transmitted(w, &packets);
        }
        black_box(&packets);
        took
    }
}

/// Assert that every packet of a batch was transmitted: the path a case names.
fn all_transmitted(w: &World, packets: &[kxdp_dataplane::Packet<'_>]) {
    for p in packets {
        assert!(
            matches!(p.verdict, Verdict::Transmit(_)),
            "{}: {:?}",
            w.label,
            p.verdict
        );
    }
}

fn ports(n: u16) -> impl Iterator<Item = u16> {
    (0..n).map(|i| 1024 + i)
}

fn bench_world(c: &mut Criterion, w: &World) {
    let t = &w.t;
    let label = w.label.as_str();
    let group = |c: &mut Criterion, stage: &str, case: &str, mut batch: Batch| {
        // Every frame of the case must take the path it names.
        batch.run_checked(w, true);
        let mut g = c.benchmark_group(stage);
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(BenchmarkId::new(case, label), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| batch.run(w)).sum())
        });
        g.finish();
    };

    // parse/ipv4: validation and 5-tuple extraction only.
    {
        let frames: Vec<Vec<u8>> = ports(BATCH as u16)
            .map(|p| t.case_pod_to_pod(p).frame)
            .collect();
        let mut g = c.benchmark_group("parse");
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(BenchmarkId::new("ipv4", label), |b| {
            b.iter(|| {
                for fr in &frames {
                    let _ = black_box(inspect(black_box(fr)));
                }
            })
        });
        g.finish();
    }

    group(
        c,
        "local",
        "pod_to_pod",
        Batch::new(ports(BATCH as u16).map(|p| t.case_pod_to_pod(p)).collect()),
    );
    group(
        c,
        "vxlan",
        "encap",
        Batch::new(ports(4096).map(|p| t.case_encap(p)).collect()),
    );
    group(
        c,
        "vxlan",
        "decap",
        Batch::new(ports(4096).map(|p| t.case_decap(p)).collect()),
    );

    // Established service flows: open 16k, then bench their next packets and replies.
    let established = 16_384u16;
    let mut opener = Batch::new(
        ports(established)
            .map(|p| t.case_service(p, f::SYN))
            .collect(),
    );
    for _ in 0..usize::from(established) / BATCH {
        let _ = opener.run(w);
    }
    group(
        c,
        "service",
        "dnat_established",
        Batch::new(
            ports(established)
                .map(|p| t.case_service(p, f::ACK))
                .collect(),
        ),
    );
    group(
        c,
        "service",
        "reverse_nat",
        Batch::new(
            ports(established)
                .map(|p| t.case_service_reply(p))
                .collect(),
        ),
    );

    // Masquerade: 4k established egress flows.
    let mut opener = Batch::new(ports(4096).map(|p| t.case_egress(p, f::SYN)).collect());
    for _ in 0..4096 / BATCH {
        let _ = opener.run(w);
    }
    group(
        c,
        "masquerade",
        "egress",
        Batch::new(ports(4096).map(|p| t.case_egress(p, f::ACK)).collect()),
    );

    // New flows: each batch opens 64 flows never seen.
    bench_new_flows(c, w, "service", "new_flow", |sport| {
        t.case_service(sport, f::SYN)
    });
}

/// `stage/case/label` over batches of 64 flows never seen, made by `case(sport)`: only
/// process_batch is timed, and the flows are removed afterwards so the table stays at its size.
fn bench_new_flows(
    c: &mut Criterion,
    w: &World,
    stage: &str,
    case: &str,
    make: impl Fn(u16) -> Input,
) {
    let mut g = c.benchmark_group(stage);
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut sport = 20_000u16;
    let mut checked = false;
    let mut bufs: Vec<FrameBuf> = (0..BATCH).map(|_| FrameBuf::new(&[0u8; 64])).collect();
    g.bench_function(BenchmarkId::new(case, &w.label), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let inputs: Vec<Input> = (0..BATCH)
                    .map(|_| {
                        sport = if sport >= 60_000 { 20_000 } else { sport + 1 };
                        make(sport)
                    })
                    .collect();
                let mut packets: Vec<_> = bufs
                    .iter_mut()
                    .zip(&inputs)
                    .map(|(b, i)| {
                        b.reset(&i.frame);
                        b.packet(i.ingress)
                    })
                    .collect();
                let now = w.tick();
                let start = WallClock::now();
                process_batch(&mut packets, &w.snap, &w.ct, &w.counters, now);
                total += start.elapsed();
                if !checked {
                    // The first batch must pass whole, or this measures something else.
                    all_transmitted(w, &packets);
                    checked = true;
                }
                drop(packets);
                for i in &inputs {
                    let key = inspect(&i.frame).expect("valid");
                    if let Some(flow) = w.ct.lookup(&key, now) {
                        w.ct.remove(&flow);
                    }
                }
            }
            total
        })
    });
    g.finish();
}

/// Pods of the NetworkPolicy cluster ([`kxdp_testkit::netpol`]).
const POLICY_PODS: u32 = 10_000;

/// The fixture's pods A and B as pods of the NetworkPolicy cluster: both in namespace `ns-0`,
/// app `app-0` (selected by policy `np-0` whenever there is one); A `tier: db`, B `tier: web`.
const POD_A: u32 = 0;
const POD_B: u32 = 5_000;

/// The 1k-flow, 10-service world with the fixture's pods in a cluster of [`POLICY_PODS`] pods
/// in 100 namespaces, and `policies` NetworkPolicies compiled for its node as the agent
/// compiles them. Pod B's `http` port is 8443, the one `default/api` sends to, so the cases'
/// flows are allowed: A's egress by `np-0`'s named port `http` to any namespace's pods, B's
/// ingress from A (an `app-0` pod of a team-t0 namespace) on `http`, or 9000-9199.
fn policy_world(policies: u32) -> World {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kxdp_control::model::{Model, Object};
    use kxdp_control::policy::compile_policies;
    use kxdp_testkit::netpol;

    let mut w = world(1_000, 10);
    let t = &w.t;
    let mut model = Model::new();
    let mut apply = |o: Object| {
        model.apply(&o).expect("a valid object");
    };
    for i in 0..netpol::NAMESPACES {
        apply(Object::Namespace(Box::new(json::<Namespace>(
            netpol::namespace(i),
        ))));
    }
    for k in 0..POLICY_PODS {
        // Elsewhere: 40 nodes of 250 pods.
        let (node, ip) = match k {
            POD_A => (1, t.pod_a.ip),
            POD_B => (1, t.pod_b.ip),
            _ => (
                2 + k % 40,
                core::net::Ipv4Addr::new(10, 244, 2 + (k % 40) as u8, (k / 40 % 250 + 2) as u8),
            ),
        };
        let pod = netpol::pod(k, node, ip, 8443);
        if node == 1 {
            apply(Object::Pod(Box::new(json::<Pod>(pod.clone()))));
        }
        apply(Object::PeerPod(Box::new(json::<Pod>(pod))));
    }
    for i in 0..policies {
        apply(Object::NetworkPolicy(Box::new(json::<NetworkPolicy>(
            netpol::policy(i, 0),
        ))));
    }
    let compiled = compile_policies(&model, Some("node-1"));
    let policy = |k: u32| {
        compiled
            .get(&format!("ns-0/p-{k}"))
            .filter(|p| p.is_selected())
            .cloned()
    };
    let mut inputs = t.inputs();
    inputs.pods[0].policy = policy(POD_A);
    inputs.pods[1].policy = policy(POD_B);
    assert_eq!(
        inputs.pods.iter().all(|p| p.policy.is_some()),
        policies > 0,
        "with policies, both pods are selected"
    );
    w.snap = Snapshot::build(inputs).expect("valid");
    w.label = format!("policies={policies},pods=10k");
    w
}

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// policy/*: what NetworkPolicy adds to a flow, at 0, 10 and 1000 policies over 10k pods. A
/// new ClusterIP flow is judged on its first packet (A's egress, B's ingress after DNAT); a new
/// pod-to-pod flow is judged and, with policies, tracked (without, it never is).
fn bench_policy(c: &mut Criterion) {
    for policies in [0, 10, 1000] {
        let w = policy_world(policies);
        let t = &w.t;
        bench_new_flows(c, &w, "policy", "new_flow", |sport| {
            t.case_service(sport, f::SYN)
        });
        bench_new_flows(c, &w, "policy", "pod_new_flow", |sport| {
            t.case_pod_to_pod(sport)
        });
    }
}

fn pipeline(c: &mut Criterion) {
    {
        // baseline/reset: copying 64 frames into their buffers, done untimed before every batch
        // above.
        let t = Topology::default();
        let frames: Vec<Vec<u8>> = ports(BATCH as u16).map(|p| t.case_encap(p).frame).collect();
        let mut bufs: Vec<FrameBuf> = frames.iter().map(|f| FrameBuf::new(f)).collect();
        let mut g = c.benchmark_group("baseline");
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function("reset", |b| {
            b.iter(|| {
                for (buf, fr) in bufs.iter_mut().zip(&frames) {
                    buf.reset(black_box(fr));
                }
            })
        });
        g.finish();
    }
    for (flows, services) in [
        (1_000, 10),
        (1_000, 10_000),
        (1_000_000, 10),
        (1_000_000, 10_000),
    ] {
        let w = world(flows, services);
        bench_world(c, &w);
    }
    bench_policy(c);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
