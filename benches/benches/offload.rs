//! Criterion benches of the software offloads and the checksum under them:
//!
//! - `tso/{plain,vxlan}/mss=N`: one 64 KiB TCP frame (the largest IPv4 packet: 65535 bytes,
//!   outer packet for VXLAN), given as 4 KiB pieces as a multi-buffer AF_XDP frame is, cut at
//!   MSS 1448 (a 1500-byte path with TCP timestamps) and 8948 (a 9000-byte one). One iteration
//!   is one frame; throughput is in segments, so the time per segment is the inverse.
//! - `gro/44x1448`: a batch of 44 in-order segments of 1448 bytes coalesced into one run (what
//!   a 64 KiB send looks like after segmentation); throughput in segments. Coalescing reads
//!   headers only, so this is the whole per-batch cost before the I/O side chains the buffers.
//! - `checksum/{sum,copy_and_sum}/N`: the Internet checksum over N bytes, alone and fused with
//!   a copy, at the sizes segmentation sees (an MSS, a whole frame).
//! - `checksum/partial/{hand_on,complete}`: what a worker does for a pod's 64 KiB TCP frame
//!   whose checksum the pod left partial, in 4 KiB pieces: readying it to be handed on in
//!   AF_XDP TX metadata (the pseudo-header sum written), or that and completing it in
//!   software, where the kernel has no TX metadata.
//!
//! Output buffers are preallocated and reused, as a worker's UMEM chunks are; nothing in the
//! timed loops allocates.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kxdp_dataplane::offload::{partial, segment, Coalescer, Encap, FrameSink, GroLimits, Segments};
use kxdp_dataplane::wire::checksum;
use kxdp_testkit::{tcp_flags as f, Topology};

/// Reused output buffers of one size.
struct Chunks {
    region: Vec<u8>,
    chunk: usize,
    used: usize,
}

impl Chunks {
    fn new(chunk: usize, count: usize) -> Self {
        Chunks {
            region: vec![0; chunk * count],
            chunk,
            used: 0,
        }
    }
}

impl FrameSink for Chunks {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        let at = self.used * self.chunk;
        (len <= self.chunk && at < self.region.len()).then(|| &mut self.region[at..at + self.chunk])
    }

    fn commit(&mut self, _len: usize) {
        self.used += 1;
    }
}

/// A pod's 64 KiB TCP segment toward the remote pod: plain, or as kxdp encapsulates it.
fn big_frame(t: &Topology, encap: Encap) -> Vec<u8> {
    let overhead = match encap {
        Encap::Plain => 0,
        Encap::Vxlan => 50,
    };
    let payload: Vec<u8> = (0..65535 - 40 - overhead).map(|i| (i * 7) as u8).collect();
    let inner = t
        .from_pod_a(t.remote_pod_ip)
        .tcp(40000, 8080, f::ACK | f::PSH, &payload);
    match encap {
        Encap::Plain => inner,
        Encap::Vxlan => t.vxlan_to_node_b().vxlan(50000, 8472, 1, &inner),
    }
}

fn tso(c: &mut Criterion) {
    let t = Topology::default();
    for (name, encap) in [("plain", Encap::Plain), ("vxlan", Encap::Vxlan)] {
        let frame = big_frame(&t, encap);
        // 4 KiB buffers, the first holding every header.
        let pieces: Vec<&[u8]> = frame.chunks(4096).collect();
        let mut g = c.benchmark_group(format!("tso/{name}"));
        for mss in [1448, 8948] {
            // The MSS asked for as the MTU less the headers (no TCP options here).
            let headers = Segments::new(&pieces, encap, 65535).unwrap().header_len() - 14;
            let plan = Segments::new(&pieces, encap, mss + headers).unwrap();
            assert_eq!(plan.mss(), mss);
            let count = plan.count();
            let mut out = Chunks::new(plan.max_frame_len(), count);
            g.throughput(Throughput::Elements(count as u64));
            g.bench_function(BenchmarkId::new("mss", mss), |b| {
                b.iter(|| {
                    out.used = 0;
                    segment(black_box(&pieces), encap, mss + headers, &mut out).unwrap()
                })
            });
        }
        g.finish();
    }
}

fn gro(c: &mut Criterion) {
    let t = Topology::default();
    let payload: Vec<u8> = (0..44 * 1448).map(|i| (i * 3) as u8).collect();
    let frame = t
        .from_pod_a(t.remote_pod_ip)
        .tcp(40000, 8080, f::ACK | f::PSH, &payload);
    let mut out = Chunks::new(1514, 44);
    assert_eq!(
        segment(&[&frame[..]], Encap::Plain, 1488, &mut out).unwrap(),
        44
    );
    let batch: Vec<&[u8]> = out.region.chunks(1514).collect();
    let mut coalescer = Box::new(Coalescer::<64>::new());
    let runs = coalescer.coalesce(&batch, GroLimits::KERNEL).unwrap();
    assert_eq!((runs.len(), runs[0].segments), (1, 44));

    let mut g = c.benchmark_group("gro");
    g.throughput(Throughput::Elements(44));
    g.bench_function("44x1448", |b| {
        b.iter(|| {
            let runs = coalescer
                .coalesce(black_box(&batch), GroLimits::KERNEL)
                .unwrap();
            black_box(runs[0].tcp_checksum)
        })
    });
    g.finish();
}

fn checksums(c: &mut Criterion) {
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 + i / 7) as u8).collect();
    let mut dst = vec![0u8; data.len()];
    let mut g = c.benchmark_group("checksum");
    for len in [20, 1448, 65536] {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("sum", len), |b| {
            b.iter(|| checksum::sum(black_box(&data[..len]), 0))
        });
        if len > 20 {
            g.bench_function(BenchmarkId::new("copy_and_sum", len), |b| {
                b.iter(|| checksum::copy_and_sum(&mut dst[..len], black_box(&data[..len])))
            });
        }
    }
    let mut frame = big_frame(&Topology::default(), Encap::Plain);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function(BenchmarkId::new("partial", "hand_on"), |b| {
        b.iter(|| partial::prepare(black_box(&mut frame), 34))
    });
    g.bench_function(BenchmarkId::new("partial", "complete"), |b| {
        b.iter(|| {
            let req = partial::prepare(black_box(&mut frame), 34).expect("TCP");
            let mut pieces: [&[u8]; 16] = [&[]; 16];
            for (p, c) in pieces.iter_mut().zip(frame.chunks(4096)) {
                *p = c;
            }
            partial::completed(&pieces, req)
        })
    });
    g.finish();
}

criterion_group!(benches, tso, gro, checksums);
criterion_main!(benches);
