//! Where both cores go while one TCP stream runs from a pod to a pod on the other node, on
//! each path: `perf record -a -g -e cpu-clock` over the middle of one extra iperf3 run, every
//! sample put in one category by its call stack ([`category`]), each category given as CPU
//! time per megabyte the receiver got, so paths moving data at different rates compare by
//! what each byte costs. Below each table, the most kxdp's path could carry if its user space
//! took no time and every core ran the rest of its work ([`PathProfile::rate_without_kxdp_code`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::args::Args;
use crate::clusters::{Clusters, Which};
use crate::iperf::{one_run, TESTS};
use crate::measure::perf_installed;
use crate::report::Report;

/// How often `perf` samples each core (Hz).
const FREQ: u32 = 999;

/// The categories, in the report's order.
const CATEGORIES: [&str; 17] = [
    "pods' TCP: copies between the application and its socket",
    "veth XDP: a non-linear skb copied into the page pool",
    "copy-mode AF_XDP receive: frame copied into UMEM",
    "copy-mode AF_XDP transmit: frame copied into an skb",
    "packet socket: kxdp's GSO packets copied into an skb",
    "other copies in the kernel",
    "checksums in the kernel",
    "kxdp's user space: copies and checksums (TSO)",
    "kxdp's user space: the rest (pipeline, GRO, rings, a spinning worker's loop)",
    "AF_XDP and XDP on veth, besides copies",
    "GSO segmentation",
    "bridge, VXLAN, NAT and routing",
    "TCP/IP in the pods' kernels, besides copies",
    "skb and page allocation",
    "veth, softirq, scheduler, syscalls and the rest",
    "kxdp's workers yielding the core (`sched_yield`: nothing to do)",
    "idle",
];

/// Each category's index in [`CATEGORIES`].
const POD_TCP_COPY: usize = 0;
const VETH_COW: usize = 1;
const XSK_RX_COPY: usize = 2;
const XSK_TX_COPY: usize = 3;
const PACKET_SOCKET_COPY: usize = 4;
const OTHER_COPY: usize = 5;
const KERNEL_CHECKSUM: usize = 6;
const KXDP_COPY_AND_SUM: usize = 7;
const KXDP_REST: usize = 8;
const XDP: usize = 9;
const GSO: usize = 10;
const FORWARDING: usize = 11;
const TCP_IP: usize = 12;
const ALLOCATION: usize = 13;
const REST: usize = 14;
/// The two categories that are not work: a spinning worker's yields, and idle.
const YIELD: usize = 15;
const IDLE: usize = 16;

/// Stages a kernel stack frame belongs to, by the start of its symbol: the innermost frame
/// that matches one decides a sample that is not a copy or a checksum.
const STAGES: [(&str, usize); 36] = [
    ("skb_release", ALLOCATION),
    ("kfree_skb", ALLOCATION),
    ("consume_skb", ALLOCATION),
    ("__alloc_skb", ALLOCATION),
    ("alloc_skb", ALLOCATION),
    ("napi_consume", ALLOCATION),
    ("skb_defer_free", ALLOCATION),
    ("kmem_cache_", ALLOCATION),
    ("page_pool_", ALLOCATION),
    ("__free_pages", ALLOCATION),
    ("free_frozen", ALLOCATION),
    ("get_page_from_freelist", ALLOCATION),
    ("xsk_", XDP),
    ("__xsk", XDP),
    ("xp_", XDP),
    ("veth_xdp", XDP),
    ("bpf_prog", XDP),
    ("xdp_", XDP),
    ("skb_pp_cow", XDP),
    ("skb_segment", GSO),
    ("__udp_gso_segment", GSO),
    ("br_", FORWARDING),
    ("vxlan", FORWARDING),
    ("udp_tunnel", FORWARDING),
    ("nf_", FORWARDING),
    ("nft_", FORWARDING),
    ("ip_forward", FORWARDING),
    ("fib_", FORWARDING),
    ("packet_", REST),
    ("tcp", TCP_IP),
    ("__tcp", TCP_IP),
    ("ip_", TCP_IP),
    ("__ip", TCP_IP),
    ("inet_", TCP_IP),
    ("udp", FORWARDING),
    ("__udp", FORWARDING),
];

/// The category of one sample: its command and its stack, innermost frame first, each
/// frame (user space or kernel, symbol).
fn category(comm: &str, stack: &[(bool, &str)]) -> usize {
    let Some(&(leaf_kernel, leaf)) = stack.first() else {
        return REST;
    };
    let has = |s: &str| stack.iter().any(|f| f.1.starts_with(s));
    let copy = [
        "memcpy",
        "memmove",
        "copy_to_iter",
        "copy_from_iter",
        "copy_user",
        "copy_and_sum",
    ]
    .iter()
    .any(|c| leaf.contains(c))
        || ["skb_copy_bits", "skb_store_bits"]
            .iter()
            .any(|c| leaf.starts_with(c));
    if comm == "swapper" || ["pv_native_safe_halt", "default_idle"].contains(&leaf) {
        return IDLE;
    }
    if stack.iter().any(|f| f.1.contains("sched_yield")) {
        return YIELD;
    }
    if !leaf_kernel {
        return match comm.starts_with("kxdp-worker") {
            true if copy || leaf.contains("checksum") || leaf.contains("csum") => KXDP_COPY_AND_SUM,
            true => KXDP_REST,
            false => REST,
        };
    }
    if copy {
        return if has("skb_pp_cow_data") {
            VETH_COW
        } else if has("__xsk_rcv") {
            XSK_RX_COPY
        } else if has("__xsk_generic_xmit") {
            XSK_TX_COPY
        } else if has("packet_snd") || has("packet_sendmsg") {
            PACKET_SOCKET_COPY
        } else if has("tcp_sendmsg") || has("tcp_recvmsg") {
            POD_TCP_COPY
        } else {
            OTHER_COPY
        };
    }
    if leaf.contains("csum") {
        return KERNEL_CHECKSUM;
    }
    stack
        .iter()
        .filter(|f| f.0)
        .find_map(|f| {
            STAGES
                .iter()
                .find(|(start, _)| f.1.starts_with(start))
                .map(|s| s.1)
        })
        .unwrap_or(REST)
}

/// Samples by category.
type Counts = [u64; CATEGORIES.len()];

/// One task's samples: its command and process, and its samples by category.
#[derive(Debug)]
struct Task {
    comm: String,
    pid: u32,
    counts: Counts,
}

/// `perf script -F comm,pid,tid,ip,sym` output: per sample a line with its command and
/// `pid/tid`, then a line per frame (`address symbol`), a blank line between samples. Samples
/// by category for each task (thread id).
fn classify(script: &str) -> BTreeMap<u32, Task> {
    let mut tasks: BTreeMap<u32, Task> = BTreeMap::new();
    for sample in script.split("\n\n") {
        let mut lines = sample.lines().filter(|l| !l.trim().is_empty());
        let Some(head) = lines.next() else { continue };
        // The command may hold spaces: the ids are the last field.
        let Some((comm, ids)) = head.trim().rsplit_once(char::is_whitespace) else {
            continue;
        };
        let Some((pid, tid)) = ids.split_once('/') else {
            continue;
        };
        let (Ok(pid), Ok(tid)) = (pid.parse::<u32>(), tid.parse::<u32>()) else {
            continue;
        };
        let stack: Vec<(bool, &str)> = lines
            .filter_map(|l| {
                let (addr, sym) = l
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((l.trim(), ""));
                let kernel = addr.len() == 16 && addr.starts_with("ffff");
                u64::from_str_radix(addr, 16)
                    .ok()
                    .map(|_| (kernel, sym.trim()))
            })
            .collect();
        let comm = comm.trim();
        let task = tasks.entry(tid).or_insert_with(|| Task {
            comm: comm.to_owned(),
            pid,
            counts: [0; CATEGORIES.len()],
        });
        task.counts[category(comm, &stack)] += 1;
    }
    tasks
}

/// One path's profile: every task's samples over the recording, while the receiver got
/// `gbps`; and which processes were kxdp's agents (node A's, node B's).
pub(crate) struct PathProfile {
    tasks: BTreeMap<u32, Task>,
    gbps: f64,
    agents: [Option<u32>; 2],
}

impl PathProfile {
    /// Samples by category, all tasks.
    fn counts(&self) -> Counts {
        sum(self.tasks.values())
    }

    /// Which node's agent a task is the worker of (0 for node A), if any.
    fn worker_of(&self, t: &Task) -> Option<usize> {
        let node = self.agents.iter().position(|a| *a == Some(t.pid))?;
        t.comm.starts_with("kxdp-worker").then_some(node)
    }

    /// CPU µs per megabyte received in category `i`: the category's share of every core's
    /// samples, times the cores, over megabytes per second.
    fn us_per_mb(&self, i: usize, cores: f64) -> f64 {
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        if total == 0 || self.gbps <= 0.0 {
            return f64::NAN;
        }
        let share = counts[i] as f64 / total as f64;
        share * cores * 1e6 / (self.gbps * 1e3 / 8.0)
    }

    /// The most this path could move (Gbit/s) if kxdp's user space took no time and every
    /// core were kept busy with the rest of its work: the work per megabyte that remains
    /// (every category but kxdp's user space, yielding and idle: the kernel's on the path,
    /// the pods' TCP and iperf3, and whatever else ran) against every core's time.
    /// A bound, not a forecast: per-megabyte kernel costs are taken as they were at the
    /// measured rate.
    fn rate_without_kxdp_code(&self) -> f64 {
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        let kernel_work: u64 = counts
            .iter()
            .enumerate()
            .filter(|(i, _)| ![KXDP_COPY_AND_SUM, KXDP_REST, YIELD, IDLE].contains(i))
            .map(|(_, n)| n)
            .sum();
        if kernel_work == 0 {
            return f64::NAN;
        }
        self.gbps * total as f64 / kernel_work as f64
    }

    /// The name a task goes by in the report.
    fn name(&self, t: &Task) -> String {
        match self.worker_of(t) {
            Some(node) => format!("node {}'s worker", ["A", "B"][node]),
            None => format!("`{}`", t.comm),
        }
    }

    /// The busiest tasks, up to `n`: (name, share of one core in %, of which yielding in %).
    fn busiest(&self, n: usize, cores: f64) -> Vec<(String, f64, f64)> {
        let total: u64 = self.counts().iter().sum();
        let mut tasks: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.comm != "swapper")
            .collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.counts.iter().sum::<u64>()));
        tasks
            .into_iter()
            .take(n)
            .map(|t| {
                let mine: u64 = t.counts.iter().sum();
                (
                    self.name(t),
                    100.0 * cores * mine as f64 / total.max(1) as f64,
                    100.0 * t.counts[YIELD] as f64 / mine.max(1) as f64,
                )
            })
            .collect()
    }

    /// Node A's worker's samples by category, in % of its own.
    fn node_a_worker(&self) -> Option<Vec<f64>> {
        let mine = sum(self.tasks.values().filter(|t| self.worker_of(t) == Some(0)));
        let total: u64 = mine.iter().sum();
        (total > 0).then(|| {
            mine.iter()
                .map(|&n| 100.0 * n as f64 / total as f64)
                .collect()
        })
    }
}

/// The samples of `tasks` by category.
fn sum<'a>(tasks: impl Iterator<Item = &'a Task>) -> Counts {
    let mut all = [0; CATEGORIES.len()];
    for t in tasks {
        for (a, n) in all.iter_mut().zip(t.counts) {
            *a += n;
        }
    }
    all
}

/// Both paths at one underlay MTU.
pub(crate) struct StreamProfile {
    mtu: u16,
    kxdp: Result<PathProfile, String>,
    kernel: Result<PathProfile, String>,
}

/// Profile one run of the across-node test with one stream on `which`.
fn profile_path(a: &Args, c: &Clusters, which: Which) -> Result<PathProfile, String> {
    let data = std::env::temp_dir().join(format!("kxdp-perf-{}-stream.data", std::process::id()));
    let secs = format!("{}", a.iperf_secs.saturating_sub(1).max(1));
    let (run, recorded) = std::thread::scope(|s| {
        let recorder = s.spawn(|| {
            // Past the run's start (the server, the connection, slow start).
            std::thread::sleep(Duration::from_millis(800));
            Command::new("perf")
                .args(["record", "-q", "-a", "-g", "-e", "cpu-clock"])
                .args(["-F", &FREQ.to_string(), "-o"])
                .arg(&data)
                .args(["--", "sleep", &secs])
                .output()
        });
        let run = one_run(a, c, which, &TESTS[1], 1);
        (run, recorder.join())
    });
    let script = recorded
        .map_err(|_| "perf record panicked".to_owned())
        .and_then(|r| r.map_err(|e| format!("perf record: {e}")))
        .and_then(|r| {
            if r.status.success() {
                Ok(())
            } else {
                let why = String::from_utf8_lossy(&r.stderr);
                Err(format!("perf record: {}", why.trim()))
            }
        })
        .and_then(|()| {
            Command::new("perf")
                .args(["script", "-F", "comm,pid,tid,ip,sym", "-i"])
                .arg(&data)
                .output()
                .map_err(|e| format!("perf script: {e}"))
        });
    // Whatever failed, the recording goes.
    let _ = std::fs::remove_file(&data);
    let (run, script) = (run?, script?);
    Ok(PathProfile {
        tasks: classify(&String::from_utf8_lossy(&script.stdout)),
        gbps: run.received_bps / 1e9,
        agents: match which {
            Which::Kxdp => [c.kxdp.agent_pid(0), c.kxdp.agent_pid(1)],
            Which::Kernel => [None, None],
        },
    })
}

/// Profile both paths at `c`'s MTU (kxdp's only where its agents serve the pods).
pub(crate) fn measure_stream_profile(a: &Args, c: &Clusters, r: &mut Report) -> StreamProfile {
    let (kxdp, kernel) = if !perf_installed() {
        let why = "`perf` is not installed (Debian: `linux-perf`)".to_owned();
        (Err(why.clone()), Err(why))
    } else {
        let kxdp = match &c.kxdp_failed {
            Some(why) => Err(why.clone()),
            None => profile_path(a, c, Which::Kxdp),
        };
        (kxdp, profile_path(a, c, Which::Kernel))
    };
    for (path, p) in [("kxdp", &kxdp), ("kernel", &kernel)] {
        r.samples.push(match p {
            Ok(p) => json!({
                "measurement": "where the cores go, one TCP stream across nodes",
                "underlay_mtu": c.mtu,
                "path": path,
                "gbps": p.gbps,
                "samples": CATEGORIES.iter().zip(p.counts()).map(|(k, n)| (k.to_string(), n)).collect::<BTreeMap<_, _>>(),
                "tasks": p.tasks.iter().map(|(tid, t)| json!({
                    "tid": tid,
                    "name": p.name(t),
                    "samples": CATEGORIES.iter().zip(t.counts).filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect::<BTreeMap<_, _>>(),
                })).collect::<Vec<_>>(),
            }),
            Err(e) => json!({
                "measurement": "where the cores go, one TCP stream across nodes",
                "underlay_mtu": c.mtu,
                "path": path,
                "error": e,
            }),
        });
    }
    println!("  stream profile at MTU {} done", c.mtu);
    StreamProfile {
        mtu: c.mtu,
        kxdp,
        kernel,
    }
}

/// The section: per MTU, the busiest tasks, and a table of CPU µs per MB received by
/// category on both paths, with node A's worker's own time by category.
pub(crate) fn write_stream_profiles(profiles: &[StreamProfile], r: &mut Report) {
    if profiles.is_empty() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let _ = writeln!(
        r.md,
        "\n## Where the cores go in a TCP stream across nodes\n\n\
         One more run of the across-node test with one stream on each path, every core sampled \
         (`perf record -a -g -e cpu-clock -F {FREQ}`) over its middle; each sample goes to one \
         category by its call stack: a copy by the code that called it, anything else by the \
         innermost stage it ran in. The table gives CPU time per megabyte the receiver got \
         (the category's share of all {cores:.0} cores' samples, over the run's rate), so the \
         two paths compare by what each byte costs, and how node A's kxdp worker spends its \
         own time. On a veth the receiving side runs in the sender's transmit: node A's \
         worker, sending the segments it cut through its packet socket, also runs the \
         switch's bridge and node B's XDP program and the copy into node B's UMEM, and node \
         B's worker, sending to the pod, runs the pod's TCP receive. A worker yielding the \
         core had nothing to do (its loop between yields, looking at empty rings, counts \
         under kxdp's user space); idle is time no task wanted."
    );
    for p in profiles {
        let (kx, ke) = (p.kxdp.as_ref(), p.kernel.as_ref());
        let _ = writeln!(r.md, "\n### Underlay MTU {}\n", p.mtu);
        for (path, x) in [("kxdp", kx), ("kernel", ke)] {
            let line = match x {
                Err(e) => format!("not profiled: {e}"),
                Ok(q) => format!(
                    "{:.2} Gbit/s; the busiest tasks, each as a share of one core: {}",
                    q.gbps,
                    q.busiest(4, cores)
                        .iter()
                        .map(|(name, share, yielding)| {
                            if *yielding >= 0.5 {
                                format!("{name} {share:.0}% ({yielding:.0}% of it yielding)")
                            } else {
                                format!("{name} {share:.0}%")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let _ = writeln!(r.md, "- {path}: {line}.");
        }
        let _ = writeln!(
            r.md,
            "\n| where | kxdp µs/MB | kernel µs/MB | kxdp: node A's worker, % of its time |\n\
             |---|---:|---:|---:|"
        );
        let cell = |x: Result<&PathProfile, &String>, i: usize| {
            x.map_or("—".to_owned(), |p| {
                format!("{:.1}", p.us_per_mb(i, cores))
            })
        };
        let worker = kx.ok().and_then(PathProfile::node_a_worker);
        for (i, name) in CATEGORIES.iter().enumerate() {
            let w = worker
                .as_ref()
                .map_or("—".to_owned(), |w| format!("{:.1}", w[i]));
            let _ = writeln!(r.md, "| {name} | {} | {} | {w} |", cell(kx, i), cell(ke, i));
        }
        let busy = |x: Result<&PathProfile, &String>| {
            x.map_or("—".to_owned(), |p| {
                let work = (0..CATEGORIES.len()).filter(|&i| i != YIELD && i != IDLE);
                format!("{:.1}", work.map(|i| p.us_per_mb(i, cores)).sum::<f64>())
            })
        };
        let w = worker.as_ref().map_or("—".to_owned(), |w| {
            format!("{:.1}", 100.0 - w[YIELD] - w[IDLE])
        });
        let _ = writeln!(
            r.md,
            "| **all but yielding and idle** | **{}** | **{}** | **{w}** |",
            busy(kx),
            busy(ke)
        );
        if let (Ok(k), Ok(e)) = (kx, ke) {
            let bound = k.rate_without_kxdp_code();
            if bound.is_finite() && e.gbps > 0.0 {
                let _ = writeln!(
                    r.md,
                    "\nWhat the kernel's part of kxdp's path allows by itself: with kxdp's user \
                     space taking no time and all {cores:.0} cores kept busy with the rest of \
                     kxdp's row (the kernel's copies, XDP, skbs and bridge, the pods' TCP and \
                     iperf3, and whatever else ran, at the cost per megabyte measured here), a \
                     stream could reach at most {bound:.2} \
                     Gbit/s, {:.2}x the kernel path's {:.2} in this profile.",
                    bound / e.gbps,
                    e.gbps
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples in `perf script -F comm,pid,tid,ip,sym`'s form.
    const SCRIPT: &str = "iperf3 10/11\n\
        \tffffffff81f00030 __pi_memcpy\n\
        \tffffffff81e8db61 skb_copy_bits\n\
        \tffffffff81e8db62 skb_pp_cow_data\n\
        \tffffffff81e0075f veth_xdp_rcv_skb\n\n\
        kxdp-worker-0 20/21\n\
        \tffffffff81f00030 __pi_memcpy\n\
        \tffffffff81e8db61 __xsk_rcv\n\
        \tffffffff81e8db62 packet_sendmsg\n\n\
        kxdp-worker-0 20/21\n\
        \tffffffff81000001 _raw_spin_unlock_irqrestore\n\
        \tffffffff81000002 xsk_cq_submit\n\
        \tffffffff81000003 __xsk_generic_xmit\n\n\
        kxdp-worker-0 20/21\n\
        \t55d0c0ffee kxdp_dataplane::offload::pieces::Cursor::copy_and_sum\n\n\
        kxdp-worker-0 20/21\n\
        \tffffffff81000012 __dev_queue_xmit\n\
        \tffffffff81000013 packet_snd\n\
        \tffffffff81000014 packet_sendmsg\n\n\
        kxdp-worker-0 30/31\n\
        \t55d0c0ffef kxdp_dataplane::pipeline::process_batch\n\n\
        kxdp-worker-0 30/31\n\
        \tffffffff81000010 do_sched_yield\n\
        \tffffffff81000011 __x64_sys_sched_yield\n\
        \t7f0000001000 __sched_yield\n\n\
        iperf3 10/11\n\
        \tffffffff81000004 _copy_to_iter\n\
        \tffffffff81000005 tcp_recvmsg_locked\n\n\
        iperf3 10/11\n\
        \tffffffff81000006 kmem_cache_free\n\
        \tffffffff81000007 skb_release_data\n\
        \tffffffff81000008 tcp_v4_rcv\n\n\
        iperf3 10/11\n\
        \tffffffff81000009 csum_partial\n\
        \tffffffff8100000a tcp_v4_rcv\n\n\
        opt cgu.0 40/40\n\
        \t55d0c0ff00 llvm::InlineFunctionImpl\n\n\
        swapper 0/0\n\
        \tffffffff8100000b pv_native_safe_halt\n\n";

    fn counts(expect: &[(usize, u64)]) -> Counts {
        let mut want = [0u64; CATEGORIES.len()];
        for &(i, n) in expect {
            want[i] = n;
        }
        want
    }

    #[test]
    fn a_copy_goes_to_its_caller_and_anything_else_to_its_innermost_stage() {
        let tasks = classify(SCRIPT);
        let of = |tid: u32| tasks.get(&tid).map(|t| (t.comm.as_str(), t.pid, t.counts));
        // The pod's receive copy, veth's copy of a non-linear skb, an skb freed in TCP's
        // receive, a checksum.
        assert_eq!(
            of(11),
            Some((
                "iperf3",
                10,
                counts(&[
                    (POD_TCP_COPY, 1),
                    (VETH_COW, 1),
                    (KERNEL_CHECKSUM, 1),
                    (ALLOCATION, 1)
                ])
            ))
        );
        // Into UMEM under the packet socket's send; the completion ring's lock; TSO's copy;
        // the packet socket's send, not copying.
        assert_eq!(
            of(21),
            Some((
                "kxdp-worker-0",
                20,
                counts(&[
                    (XSK_RX_COPY, 1),
                    (KXDP_COPY_AND_SUM, 1),
                    (XDP, 1),
                    (REST, 1)
                ])
            ))
        );
        // The pipeline; a yield.
        assert_eq!(
            of(31),
            Some(("kxdp-worker-0", 30, counts(&[(KXDP_REST, 1), (YIELD, 1)])))
        );
        // A command with a space in its name: user space, not kxdp's.
        assert_eq!(of(40), Some(("opt cgu.0", 40, counts(&[(REST, 1)]))));
        assert_eq!(of(0), Some(("swapper", 0, counts(&[(IDLE, 1)]))));
        assert_eq!(tasks.len(), 5);
    }

    #[test]
    fn cost_per_megabyte_is_the_share_of_the_cores_over_the_rate() {
        let p = PathProfile {
            tasks: classify(SCRIPT),
            gbps: 8.0,
            agents: [Some(20), Some(30)],
        };
        // One of 12 samples is the pod's copy: 1/12 of 2 cores, over 1000 MB/s.
        assert!((p.us_per_mb(POD_TCP_COPY, 2.0) - 2e6 / 12.0 / 1000.0).abs() < 1e-9);
        // Node A's worker (process 20): its four samples, one each in four categories.
        let a = p.node_a_worker().expect("node A's worker sampled");
        assert_eq!(
            (a[XSK_RX_COPY], a[KXDP_COPY_AND_SUM], a[XDP], a[REST]),
            (25.0, 25.0, 25.0, 25.0)
        );
        // Tasks by share of one core: iperf3 4 of 12 samples of 2 cores, 67%; node B's
        // worker yields half its time.
        let busiest = p.busiest(2, 2.0);
        assert_eq!(busiest[0].0, "`iperf3`");
        assert!((busiest[0].1 - 200.0 * 4.0 / 12.0).abs() < 1e-9);
        assert_eq!(busiest[1].0, "node A's worker");
        let b = p.busiest(3, 2.0);
        assert_eq!((b[2].0.as_str(), b[2].2), ("node B's worker", 50.0));
        // Without kxdp's user space (2 samples) and yielding (1) and idle (1), 8 of 12
        // samples remain: at most 12/8 of the measured rate.
        assert!((p.rate_without_kxdp_code() - 8.0 * 12.0 / 8.0).abs() < 1e-9);
        let none = PathProfile {
            tasks: BTreeMap::new(),
            gbps: 8.0,
            agents: [None, None],
        };
        assert!(none.us_per_mb(POD_TCP_COPY, 2.0).is_nan() && none.node_a_worker().is_none());
    }
}
