//! The steady-state pipeline allocates nothing: a counting global allocator watches batches of
//! every case, new DNAT and masquerade flows included, after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kxdp_dataplane::conntrack::{Conntrack, ConntrackConfig};
use kxdp_dataplane::{process_batch, Counters, Instant, Verdict};
use kxdp_testkit::{tcp_flags as f, FrameBuf, Input, Topology};

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
    let ct = Conntrack::new(ConntrackConfig {
        capacity: 1 << 16,
        ..ConntrackConfig::default()
    });
    let counters = Counters::new();
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
        process_batch(&mut batch, &snap, &ct, &counters, now);
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
    run(&mut bufs, &inputs, 0); // warm-up: opens the flows
                                // New flows in steady state too: fresh source ports every round.
    for round in 1..50u16 {
        for (k, i) in inputs.iter_mut().enumerate() {
            let sport = 10_000 + round * 16 + (k / 8) as u16;
            match k % 8 {
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
