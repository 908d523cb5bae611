//! A batch of arbitrary frames on arbitrary interfaces through the fixture node's pipeline,
//! with conntrack kept across inputs so that later inputs meet the flows earlier ones opened
//! (and swept now and then): nothing panics, and no frame grows past the largest frame kxdp
//! handles (64 KiB).
//!
//! Input: records of `[interface selector, length, frame bytes...]`, up to 64 per batch; the
//! selector picks pod A, pod B, the uplink, the host interface or an unknown interface, and
//! its high bit the snapshot (the plain fixture, or one where NetworkPolicies select pod B).
#![no_main]

use std::sync::OnceLock;

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::tables::{InterfaceId, PodPolicy};
use kxdp_dataplane::{process_batch, Counters, Instant, Snapshot};
use kxdp_testkit::{FrameBuf, Topology};
use libfuzzer_sys::fuzz_target;

struct World {
    t: Topology,
    plain: Snapshot,
    policed: Snapshot,
    ct: Conntrack,
    counters: Counters,
    clock: std::sync::atomic::AtomicU64,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let t = Topology::default();
        let plain = t.snapshot();
        // Pod B selected both ways by a policy admitting nothing: every flow of it is judged.
        let mut inputs = t.inputs();
        inputs.pods[1].policy = Some(std::sync::Arc::new(PodPolicy {
            ingress: Some(deny_all()),
            egress: Some(deny_all()),
        }));
        let policed = Snapshot::build(inputs).expect("a valid node");
        World {
            t,
            plain,
            policed,
            ct: Conntrack::new(ConntrackConfig {
                capacity: 4096,
                ..ConntrackConfig::default()
            }),
            counters: Counters::new(),
            clock: std::sync::atomic::AtomicU64::new(1_000_000_000),
        }
    })
}

fn deny_all() -> kxdp_dataplane::tables::RuleSet {
    kxdp_dataplane::tables::RuleSet {
        rules: Box::new([]),
        policies: vec![std::sync::Arc::<str>::from("fuzz/deny")].into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let t = &w.t;
    let ifaces = [
        t.pod_a.iface,
        t.pod_b.iface,
        t.node.uplink,
        t.node.host,
        InterfaceId(200),
    ];
    let mut rest = data;
    let mut frames: Vec<(InterfaceId, &[u8])> = Vec::new();
    let mut policed = false;
    while let [sel, len, tail @ ..] = rest {
        if frames.len() == 64 {
            break;
        }
        let len = usize::from(*len).min(tail.len());
        policed |= sel & 0x80 != 0;
        frames.push((ifaces[usize::from(sel & 0x7f) % ifaces.len()], &tail[..len]));
        rest = &tail[len..];
    }
    let mut bufs: Vec<FrameBuf> = frames.iter().map(|(_, f)| FrameBuf::new(f)).collect();
    let mut packets: Vec<_> = bufs
        .iter_mut()
        .zip(&frames)
        .map(|(b, (iface, _))| b.packet(*iface))
        .collect();
    let snap = if policed { &w.policed } else { &w.plain };
    // A millisecond a batch: flows age and expire as inputs go by.
    let now = w
        .clock
        .fetch_add(1_000_000, std::sync::atomic::Ordering::Relaxed);
    process_batch(
        &mut packets,
        snap,
        &w.ct,
        &w.counters,
        Instant::from_nanos(now),
    );
    for p in &packets {
        assert!(
            p.frame.data().len() <= 64 * 1024,
            "a frame grew out of bounds"
        );
    }
    if now.is_multiple_of(64_000_000) {
        w.ct.gc(Instant::from_nanos(now), 1024);
    }
});
