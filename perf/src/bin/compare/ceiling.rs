//! The ceiling of kxdp's path across nodes: how many frames of the underlay's MTU the hop
//! every cut TCP segment takes can carry at all, measured on kxdp's own cluster with nothing
//! else running, sent both ways a worker can send them. **UDP GSO** (kxdp's way for the TCP
//! segments it cuts): a packet socket on node A's uplink hands the kernel one packet per 64
//! KiB frame, its VXLAN datagrams back to back, which the kernel cuts where a device cannot
//! carry it whole (`kxdp_xdp::gso`). **AF_XDP**: one frame per segment through a copy-mode
//! AF_XDP socket (an skb and a copy per frame, and the switch's bridge once per frame). Either
//! way node B's XDP program and the copy into its UMEM run, on a veth, on the sending core
//! (pinned to `--gen-core`); node B's uplink receives on kxdp's own sockets and a worker that
//! drops everything (busy-poll, pinned to `--worker-core`). Each frame carries `mtu - 102`
//! bytes of a TCP stream (VXLAN's 50, the inner IPv4 header's 20, TCP's with timestamps
//! 32), so the rate times that is the most TCP the hop could move with a core sending, before
//! iperf3, the pods' kernels and the rest of the path take their share.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use kxdp_control::model::parse_mac;
use kxdp_dataplane::conntrack::Conntrack;
use kxdp_dataplane::offload::GsoBuf;
use kxdp_dataplane::offload::{Encap, Segments};
use kxdp_dataplane::wire::build::FrameSpec;
use kxdp_dataplane::wire::tcp_flags;
use kxdp_dataplane::{Counters, DropReason, Packet, Snapshot, Verdict};
use kxdp_perf::generator::Generator;
use kxdp_perf::stats::{median, range};
use kxdp_testkit::Topology;
use kxdp_tests::testbed::ip;
use kxdp_xdp::gso::GsoSocket;
use kxdp_xdp::runtime::{Config, Dataplane, Managed};
use kxdp_xdp::worker::{IoCounter, Mode};
use kxdp_xdp::{enter_netns, ifindex, pin_current_thread};
use serde_json::json;

use crate::args::Args;
use crate::clusters::Clusters;
use crate::iperf::{median_rate, row, Row, TESTS};
use crate::report::Report;

/// Bytes of a TCP stream a frame of the underlay's MTU carries through VXLAN: the MTU less
/// VXLAN's 50, the inner IPv4 header's 20 and TCP's 32 (with timestamps, as Linux sends).
pub(crate) const SEGMENT_OVERHEAD: u16 = 102;

/// Frames per generator call: about 10 ms of them here, the grain of the sent count.
const BURST: u32 = 4096;

/// How node A sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Means {
    /// UDP GSO packets through a packet socket, as kxdp sends what it cut.
    Gso,
    /// One frame per segment through a copy-mode AF_XDP socket.
    AfXdp,
}

impl Means {
    fn name(self) -> &'static str {
        match self {
            Means::Gso => "UDP GSO packets (kxdp's)",
            Means::AfXdp => "AF_XDP, a frame per segment",
        }
    }
}

/// The ceiling measured at one underlay MTU, one way of sending.
pub(crate) struct Ceiling {
    pub(crate) mtu: u16,
    pub(crate) means: Means,
    /// Frames per second node B's worker received, per run.
    pub(crate) fps: Vec<f64>,
    /// Frames per second node A sent, per run.
    pub(crate) sent: Vec<f64>,
}

impl Ceiling {
    /// Gbit/s of TCP payload at `fps` frames per second.
    pub(crate) fn gbps(&self, fps: f64) -> f64 {
        fps * f64::from(self.mtu - SEGMENT_OVERHEAD) * 8.0 / 1e9
    }

    /// The median run's Gbit/s of TCP payload.
    pub(crate) fn median_gbps(&self) -> f64 {
        self.gbps(median(&self.fps))
    }

    /// The ceiling, or why it measured nothing: a median of no frames received (a generator
    /// that could not send, say) is no ceiling, and a ratio to it would read infinite.
    pub(crate) fn checked(self) -> Result<Ceiling, (u16, String)> {
        if median(&self.fps) > 0.0 {
            return Ok(self);
        }
        Err((
            self.mtu,
            format!(
                "{}: node B received nothing (median of {} runs; {:.3} Mpps sent)",
                self.means.name(),
                self.fps.len(),
                median(&self.sent) / 1e6
            ),
        ))
    }

    /// The table cell: Mpps received (of those sent) and Gbit/s, medians with their ranges.
    pub(crate) fn cell(&self) -> String {
        let (lo, hi) = range(&self.fps);
        format!(
            "{:.3} Mpps ({:.3}–{:.3}) of {:.3} sent = {:.2} Gbit/s ({:.2}–{:.2})",
            median(&self.fps) / 1e6,
            lo / 1e6,
            hi / 1e6,
            median(&self.sent) / 1e6,
            self.median_gbps(),
            self.gbps(lo),
            self.gbps(hi)
        )
    }
}

/// The worker's whole work on node B: drop every frame (it has been received, which is what
/// is measured). No reason fits a frame dropped on purpose; the counters are not read.
fn drop_all(
    packets: &mut [Packet<'_>],
    _snap: &Snapshot,
    _conntrack: &Conntrack,
    _counters: &Counters,
    _now: kxdp_dataplane::Instant,
) {
    for p in packets {
        p.verdict = Verdict::Drop(DropReason::UnsupportedEthertype);
    }
}

/// Stop kxdp's agents (this runs last at an MTU) and measure the ceiling, `a.runs` runs of
/// `a.seconds`.
pub(crate) fn measure_ceiling(
    a: &Args,
    c: &mut Clusters,
    r: &mut Report,
) -> Result<[Ceiling; 2], String> {
    for node in 0..2 {
        c.kxdp.stop(node)?;
        // A stopped agent leaves its XDP program in place for a successor to adopt.
        ip(
            Some(&c.kxdp.tb.nodes[node].ns),
            &["link", "set", "dev", "uplink", "xdp", "off"],
        )
        .map_err(|e| e.to_string())?;
    }
    let tb = &c.kxdp.tb;
    let (ns_a, ns_b) = (tb.nodes[0].ns.clone(), tb.nodes[1].ns.clone());
    let mac = |ns: &str| {
        let text = tb.mac(ns, "uplink").map_err(|e| e.to_string())?;
        parse_mac(text.trim()).ok_or_else(|| format!("{ns}: uplink MAC {text}"))
    };
    let (mac_a, mac_b) = (mac(&ns_a)?, mac(&ns_b)?);
    // Node B's steering takes VXLAN from a known node to one of its addresses: the default
    // topology's, which its worker's tables are built from (the switch forwards by MAC).
    let t = Topology::default();
    let mut inputs = t.inputs();
    inputs.node.uplink_mtu = c.mtu;
    let mut spec = FrameSpec::new(mac_a, mac_b, t.node_b.node_ip, t.node.node_ips[0]);
    spec.udp_checksum = false;
    let size = usize::from(c.mtu) + 14;
    let frame = spec.udp(10_000, inputs.node.vxlan_port, &vec![0x6b; size - 42]);
    // What kxdp cuts: a pod's 64 KiB TCP segment in VXLAN.
    let pod = FrameSpec::new(mac_a, mac_b, t.pod_a.ip, t.pod_b.ip);
    let inner = pod.tcp(40_000, 5201, tcp_flags::ACK, &vec![0x6b; 65_000]);
    let large = spec.vxlan(10_000, inputs.node.vxlan_port, 1, &inner);
    let mut ceilings = [Means::Gso, Means::AfXdp].map(|means| Ceiling {
        mtu: c.mtu,
        means,
        fps: Vec::new(),
        sent: Vec::new(),
    });
    for run in 0..a.runs {
        for ceiling in &mut ceilings {
            let config = Config {
                netns: Some(ns_b.clone()),
                workers: vec![Some(a.worker_core)],
                mode: Mode::BusyPoll,
                forwarding: drop_all,
                max_run: Some(Duration::from_secs_f64(a.seconds + 60.0)),
                ..Config::default()
            };
            let snapshot = Snapshot::build(inputs.clone()).map_err(|e| e.to_string())?;
            let dp = Dataplane::start(
                config,
                vec![Managed::uplink("uplink", t.node.uplink)],
                snapshot,
            )?;
            let measured = window(a, &dp, &ns_a, |sent, stop| match ceiling.means {
                Means::AfXdp => send_frames(&frame, sent, stop),
                Means::Gso => send_gso(&large, c.mtu, sent, stop),
            });
            let io = dp.io();
            dp.finish()?;
            let (fps, offered) = measured?;
            r.samples.push(json!({
                "measurement": "ceiling across nodes: node A's uplink to node B's AF_XDP socket",
                "means": ceiling.means.name(),
                "underlay_mtu": c.mtu,
                "frame_bytes": size,
                "run": run,
                "received_fps": fps,
                "sent_fps": offered,
                "tcp_payload_gbps": ceiling.gbps(fps),
                "rx_ring_full": io.get(IoCounter::RxRingFull),
                "rx_no_chunk": io.get(IoCounter::RxNoChunk),
            }));
            ceiling.fps.push(fps);
            ceiling.sent.push(offered);
        }
    }
    for ceiling in &ceilings {
        println!(
            "  ceiling at MTU {}, {}: {}",
            c.mtu,
            ceiling.means.name(),
            ceiling.cell()
        );
    }
    Ok(ceilings)
}

/// Run `send` in node A's namespace on the generator's core and measure, once it is sending
/// and warmed up, the frames per second node B's worker received and `send` counted sent.
fn window(
    a: &Args,
    dp: &Dataplane,
    ns_a: &str,
    send: impl FnOnce(&AtomicU64, &AtomicBool) -> Result<(), String> + Send,
) -> Result<(f64, f64), String> {
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        let generator = s.spawn(|| -> Result<(), String> {
            enter_netns(ns_a).map_err(|e| e.to_string())?;
            pin_current_thread(a.gen_core).map_err(|e| format!("pinning the generator: {e}"))?;
            send(&sent, &stop)
        });
        // The window opens once the generator has sent something, after a warm-up; it is
        // given up if the generator has failed meanwhile.
        let started = Instant::now();
        while sent.load(Relaxed) == 0
            && !generator.is_finished()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(500));
        let read = || {
            (
                dp.io().get(IoCounter::Rx),
                sent.load(Relaxed),
                Instant::now(),
            )
        };
        let (f0, s0, t0) = read();
        std::thread::sleep(Duration::from_secs_f64(a.seconds));
        let (f1, s1, t1) = read();
        stop.store(true, Relaxed);
        let secs = (t1 - t0).as_secs_f64();
        generator
            .join()
            .map_err(|_| "the generator panicked".to_owned())?
            .map(|()| ((f1 - f0) as f64 / secs, (s1 - s0) as f64 / secs))
    })
}

/// Send `frame` out of the uplink through a copy-mode AF_XDP socket until `stop`.
fn send_frames(frame: &[u8], sent: &AtomicU64, stop: &AtomicBool) -> Result<(), String> {
    let mut g = Generator::af_xdp("uplink", frame, 64)?;
    while !stop.load(Relaxed) {
        sent.fetch_add(u64::from(g.send(BURST)?), Relaxed);
    }
    Ok(())
}

/// Cut `large` for `mtu` as kxdp does into UDP GSO packets, and send them out of the uplink
/// through a packet socket until `stop`, counting the datagrams.
fn send_gso(large: &[u8], mtu: u16, sent: &AtomicU64, stop: &AtomicBool) -> Result<(), String> {
    let pieces = [large];
    let plan = Segments::new(&pieces, Encap::Vxlan, usize::from(mtu)).map_err(|e| e.to_string())?;
    let mut gso = GsoBuf::new(256 << 10, 8);
    plan.emit(&mut gso).map_err(|e| e.to_string())?;
    let socket = GsoSocket::open(ifindex("uplink").map_err(|e| e.to_string())?)
        .map_err(|e| format!("packet socket: {e}"))?;
    while !stop.load(Relaxed) {
        for k in 0..gso.len() {
            let (packet, datagrams) = gso.packet(k);
            match socket.send(packet) {
                Ok(()) => {
                    sent.fetch_add(datagrams as u64, Relaxed);
                }
                // No room now: a moment for the device to drain.
                Err(e) if GsoSocket::is_full(&e) => std::thread::yield_now(),
                Err(e) => return Err(format!("sending a UDP GSO packet: {e}")),
            }
        }
    }
    Ok(())
}

/// The ceiling of kxdp's path across nodes, beside what kxdp and the kernel moved.
pub(crate) fn write_ceilings(
    rows: &[Row],
    ceilings: &[Result<Ceiling, (u16, String)>],
    r: &mut Report,
) {
    let intro = format!(
        "\n**The ceiling of kxdp's path across nodes.** Every TCP segment kxdp sends to another \
         node leaves node A's uplink as a datagram of at most the underlay's MTU, and on a veth \
         the switch's bridge, node B's XDP program and the copy into node B's AF_XDP socket \
         run on the sending core. kxdp hands the kernel the segments it cuts from a pod's 64 \
         KiB frame as UDP GSO packets (one per frame, or two where IPv4's length limit cuts \
         it), which the kernel divides into datagrams where a device cannot carry them whole: \
         here at the switch port facing node B, whose peer's XDP program turns its GSO off. \
         The ceiling is that hop alone, measured on kxdp's own cluster with its agents \
         stopped: node A sending as fast as one core (the generator's) allows, into node B's \
         uplink, where kxdp's own sockets and a worker on the other core receive and drop \
         what comes; sent kxdp's way (UDP GSO packets through a packet socket), and for \
         comparison as one frame per segment through a copy-mode AF_XDP socket (an skb, a \
         copy and the bridge per frame). Each datagram stands for a segment of MTU less \
         {SEGMENT_OVERHEAD} bytes of TCP payload (VXLAN's 50, the inner IPv4 header's 20, \
         TCP's with timestamps 32). The kernel's path has no such hop: its 64 KiB GSO packets \
         cross the veths and the switch whole, as no XDP program turns GSO off on its way. \
         Median of the runs (range).\n\n\
         | underlay MTU | sent as | datagrams received by node B (ceiling) | kxdp, TCP across \
         nodes, 1 stream | kernel, same | kxdp / ceiling | ceiling / kernel |\n\
         |---:|---|---:|---:|---:|---:|---:|"
    );
    write_section(r, &intro, ceilings, |c, md| {
        let Some(row) = row(rows, TESTS[1].name, c.mtu, 1) else {
            return;
        };
        let (kx, k) = (median_rate(&row.kxdp), median_rate(&row.kernel));
        let cell = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.2} Gbit/s"));
        let ceiling = Some(c.median_gbps());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.mtu,
            c.means.name(),
            c.cell(),
            cell(kx),
            cell(k),
            percent(kx, ceiling),
            times(ceiling, k),
        );
    });
}

/// A ceiling's part of the report: `intro` (its text and its table's head), the rows
/// `write_rows` writes for each ceiling measured, and the MTUs where none was, with why.
pub(crate) fn write_section<C>(
    r: &mut Report,
    intro: &str,
    ceilings: &[Result<C, (u16, String)>],
    mut write_rows: impl FnMut(&C, &mut String),
) {
    if ceilings.is_empty() {
        return;
    }
    let _ = writeln!(r.md, "{intro}");
    let mut failed = Vec::new();
    for c in ceilings {
        match c {
            Ok(c) => write_rows(c, &mut r.md),
            Err((mtu, why)) => failed.push(format!("at underlay MTU {mtu}: {why}")),
        }
    }
    if !failed.is_empty() {
        let _ = writeln!(
            r.md,
            "\nThis ceiling was not measured {}.",
            failed.join("; ")
        );
    }
}

/// `a` as a percentage of `b`, or a dash where either is missing.
pub(crate) fn percent(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.0}%", 100.0 * a / b.max(f64::MIN_POSITIVE)),
        _ => "—".to_owned(),
    }
}

/// `a` over `b` as a ratio, or a dash where either is missing.
pub(crate) fn times(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b.max(f64::MIN_POSITIVE)),
        _ => "—".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ceiling_that_received_nothing_is_not_measured() {
        let ceiling = |fps: Vec<f64>| Ceiling {
            mtu: 9000,
            means: Means::AfXdp,
            sent: vec![0.0; fps.len()],
            fps,
        };
        assert!(ceiling(vec![0.0, 120_000.0, 130_000.0]).checked().is_ok());
        let (mtu, why) = ceiling(vec![0.0, 0.0, 130_000.0])
            .checked()
            .err()
            .expect("a median of nothing is refused");
        assert_eq!(mtu, 9000);
        assert!(
            why.starts_with("AF_XDP, a frame per segment: node B received nothing"),
            "{why}"
        );
    }
}
