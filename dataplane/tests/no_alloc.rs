//! The steady-state pipeline allocates nothing: a counting global allocator watches batches of
//! every case, new DNAT and masquerade flows included, after a warm-up, with and without
//! NetworkPolicies (flows judged, tracked, and judged again after a policy change). So do the
//! offload functions (segmentation, fragmentation, coalescing) the workers call around it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::counters::Event;
use kxdp_dataplane::offload::{
    fragment, segment, Coalescer, Encap, Fragmented, FrameSink, GroLimits,
};
use kxdp_dataplane::tables::{PeerSet, PodPolicy, PolicyRule, PortSet, RuleSet};
use kxdp_dataplane::wire::build::{FrameSpec, Ipv4Opts};
use kxdp_dataplane::{process_batch, Counters, Instant, Snapshot, Verdict};
use kxdp_testkit::{tcp_flags as f, FrameBuf, Input, Topology};
use std::sync::Arc;

struct Counting;

thread_local! {
    // Per thread: the test harness's own threads allocate whenever they like, and only the
    // thread running the pipeline is being judged.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|a| a.set(a.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_batches_allocate_nothing() {
    let t = Topology::default();
    let snap = t.snapshot();
    steady_state(&t, &snap, &table(), &Counters::new(), true);
}

fn table() -> Conntrack {
    Conntrack::new(ConntrackConfig {
        capacity: 1 << 16,
        ..ConntrackConfig::default()
    })
}

/// The same with NetworkPolicies selecting both local pods both ways (allowing everything, so
/// every case still passes): new flows are judged and tracked, pod-to-pod ones included, and
/// established ones pass by their entries, judged again once after a policy change.
#[test]
fn steady_state_batches_with_policies_allocate_nothing() {
    let mut t = Topology::default();
    let any = || {
        Some(RuleSet {
            rules: vec![PolicyRule {
                policy: "default/any".into(),
                peers: PeerSet::Any,
                ports: PortSet::Any,
                peer_ports: Arc::new([]),
            }]
            .into(),
            policies: vec![Arc::<str>::from("default/any")].into(),
        })
    };
    let policy = Arc::new(PodPolicy {
        ingress: any(),
        egress: any(),
    });
    t.pod_a.policy = Some(Arc::clone(&policy));
    t.pod_b.policy = Some(policy);
    let first = t.snapshot();
    assert!(first.has_policies());
    let (ct, counters) = (table(), Counters::new());
    steady_state(&t, &first, &ct, &counters, true);
    assert!(counters.read().event(Event::PolicyNewFlow) > 300);
    // New policies (an equal rule under another name): every flow is judged again once.
    let renamed = Arc::new(PodPolicy {
        ingress: None,
        egress: any().map(|mut r| {
            r.policies = vec![Arc::<str>::from("default/other")].into();
            r
        }),
    });
    t.pod_a.policy = Some(renamed);
    let second = Snapshot::build_after(t.inputs(), &first).unwrap();
    assert_ne!(second.policy_epoch(), first.policy_epoch());
    // No warm-up: the first round's flows are the first run's, judged again.
    steady_state(&t, &second, &ct, &counters, false);
    assert!(counters.read().event(Event::PolicyRevalidated) >= 64);
}

/// Rounds of 64 packets of every case through `snap`; every round after the first (and the
/// first too unless `warm_up`) must allocate nothing.
fn steady_state(t: &Topology, snap: &Snapshot, ct: &Conntrack, counters: &Counters, warm_up: bool) {
    let now = Instant::from_secs(10);
    // 64 packets of every case; the service and masquerade ones open new flows.
    let mut inputs: Vec<Input> = Vec::new();
    for i in 0..8u16 {
        inputs.push(t.case_pod_to_pod(1000 + i));
        inputs.push(t.case_encap(1000 + i));
        inputs.push(t.case_decap(1000 + i));
        inputs.push(t.case_service(2000 + i, f::SYN));
        inputs.push(t.case_service(2000 + i, f::ACK));
        inputs.push(t.case_service_reply(2000 + i));
        inputs.push(t.case_egress(3000 + i, f::SYN));
        inputs.push(t.case_egress(3000 + i, f::ACK));
    }
    let mut bufs: Vec<FrameBuf> = inputs.iter().map(|i| FrameBuf::new(&i.frame)).collect();
    let run = |bufs: &mut [FrameBuf], inputs: &[Input], round: u16| {
        let mut batch: Vec<_> = Vec::with_capacity(64);
        for (b, i) in bufs.iter_mut().zip(inputs) {
            b.reset(&i.frame);
        }
        let before = allocations();
        batch.extend(
            bufs.iter_mut()
                .zip(inputs)
                .map(|(b, i)| b.packet(i.ingress)),
        );
        process_batch(&mut batch, snap, ct, counters, now);
        let after = allocations();
        for p in &batch {
            assert!(
                matches!(p.verdict, Verdict::Transmit(_)),
                "round {round}: {:?}",
                p.verdict
            );
        }
        after - before
    };
    let opened = run(&mut bufs, &inputs, 0); // warm-up: opens the flows
    assert!(warm_up || opened == 0, "round 0 allocated");
    // New flows in steady state too: fresh source ports every round.
    for round in 1..50u16 {
        for (k, i) in inputs.iter_mut().enumerate() {
            let sport = 10_000 + round * 16 + (k / 8) as u16;
            match k % 8 {
                // A new pod-to-pod flow: tracked (and judged) where a policy selects a pod.
                0 => *i = t.case_pod_to_pod(sport),
                3 => *i = t.case_service(sport, f::SYN),
                4 => *i = t.case_service(sport, f::ACK),
                // Masquerade too: a source-NAT insert (port allocation) every round.
                6 => *i = t.case_egress(sport, f::SYN),
                7 => *i = t.case_egress(sport, f::ACK),
                _ => {}
            }
        }
        assert_eq!(run(&mut bufs, &inputs, round), 0, "round {round} allocated");
    }
    assert!(ct.len() > 300, "new flows were opened: {}", ct.len());
}

/// Output buffers like a worker's UMEM: fixed chunks of one preallocated region.
struct Chunks {
    region: Vec<u8>,
    chunk: usize,
    lens: Vec<usize>,
}

impl Chunks {
    fn new(chunk: usize, count: usize) -> Self {
        Chunks {
            region: vec![0; chunk * count],
            chunk,
            lens: Vec::with_capacity(count),
        }
    }

    fn frame(&self, i: usize) -> &[u8] {
        &self.region[i * self.chunk..][..self.lens[i]]
    }
}

impl FrameSink for Chunks {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        let at = self.lens.len() * self.chunk;
        (len <= self.chunk && at < self.region.len()).then(|| &mut self.region[at..at + self.chunk])
    }

    fn commit(&mut self, len: usize) {
        self.lens.push(len);
    }
}

/// Cuts `frame` as a multi-buffer frame arrives: 200 bytes (headers and some payload) in the
/// first buffer, 4 KiB in each after.
fn as_pieces(frame: &[u8]) -> Vec<&[u8]> {
    let (first, rest) = frame.split_at(200);
    let mut pieces = vec![first];
    pieces.extend(rest.chunks(4096));
    pieces
}

#[test]
fn offload_allocates_nothing() {
    let t = Topology::default();
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i * 7) as u8).collect();
    let tcp = t
        .from_pod_a(t.remote_pod_ip)
        .tcp(40000, 8080, f::ACK | f::PSH, &payload);
    let tcp_vxlan = t.vxlan_to_node_b().vxlan(50000, 8472, 1, &tcp);
    let udp = FrameSpec {
        ip: Ipv4Opts {
            dont_fragment: false,
            ..Ipv4Opts::default()
        },
        ..t.from_pod_a(t.remote_pod_ip)
    }
    .udp(5000, 53, &payload);
    let udp_vxlan = t.vxlan_to_node_b().vxlan(50000, 8472, 1, &udp);
    let segments = [
        (as_pieces(&tcp), Encap::Plain),
        (as_pieces(&tcp_vxlan), Encap::Vxlan),
    ];
    let fragments = [
        (as_pieces(&udp), Encap::Plain),
        (as_pieces(&udp_vxlan), Encap::Vxlan),
    ];
    let mut out = Chunks::new(2048, 256);
    let mut coalescer: Box<Coalescer<64>> = Box::default();
    let mut merged = vec![0u8; 65536];

    for round in 0..3 {
        let before = allocations();
        for (frame, encap) in &segments {
            out.lens.clear();
            assert!(segment(frame, *encap, 1500, &mut out).unwrap() > 40);
        }
        for (frame, encap) in &fragments {
            out.lens.clear();
            let done = fragment(frame, *encap, 1500, &mut out).unwrap();
            assert!(matches!(done, Fragmented::Frames(n) if n > 40));
        }
        // Coalesce the plain segments back, a batch of 41 frames.
        out.lens.clear();
        segment(&segments[0].0, Encap::Plain, 1500, &mut out).unwrap();
        let n = out.lens.len();
        let mut batch: [&[u8]; 64] = [&[]; 64];
        for (i, frame) in batch[..n].iter_mut().enumerate() {
            *frame = out.frame(i);
        }
        let batch = &batch[..n];
        let run = coalescer.coalesce(batch, GroLimits::KERNEL).unwrap()[0];
        assert_eq!(run.segments, n);
        assert_eq!(
            coalescer.write_merged(&run, batch, &mut merged),
            Some(tcp.len())
        );
        assert_eq!(allocations() - before, 0, "round {round} allocated");
    }
}
