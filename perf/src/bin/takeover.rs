//! How long pods go without service while `kxdp agent` is replaced: on the agents' two-node
//! cluster (`kxdp_tests::cluster`, the demo's pods and manifest), with `--pods` more pods on
//! node-a attached by the real CNI plugin (each one more AF_XDP socket to close and bind),
//! client-a sends a UDP datagram to web-b on the other node every 0.5 ms and web-b echoes it.
//! Node-a's agent is then replaced `--rounds` times each way, one after the other:
//!
//! - **takeover**: a new agent is started while the old one runs; it prepares everything,
//!   asks the old one for its sockets (or to leave) and takes its conntrack and queues over
//!   (an upgrade);
//! - **restart**: the agent is SIGKILLed and started again at once (a crash and its
//!   supervisor).
//!
//! The gap of a round is the longest time between two echoes among the silences that begin
//! in it (from its start to the next round's, both less a millisecond, as the last echo
//! before a silence may come just before the round's action): a silence that a round starts
//! and the next one ends is the first round's. For each kind it prints the gaps' median and
//! maximum and the datagrams lost (sent in a round of that kind, never echoed), with the new
//! agent's own account of a takeover from its log (`waited_ms`: from asking the old one to
//! leave to having its state, `dark_ms`: from there to the node's interfaces its own, and
//! whether the sockets were handed over). Needs root; agents are
//! `KXDP_BIN` or the `kxdp` beside this binary (so two builds compare by running this twice,
//! each with its own `KXDP_BIN`), the plugin `KXDP_CNI_BIN` or the `kxdp-cni` beside it.
//!
//! `takeover [--rounds N] [--pods N]` (`--rounds` 1 to 50, default 10; `--pods` 0 to 60,
//! default 0); with `TAKEOVER_LOG` set it prints node-a's agent log at the end.

// A report for people: printing it is the point.
#![allow(clippy::print_stdout)]

use std::net::{Ipv4Addr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kxdp_tests::cluster::{in_netns, AgentCluster, DEMO_MANIFEST, DEMO_PODS};
use kxdp_tests::testbed::{missing_privilege, Testbed};

const USAGE: &str = "usage: takeover [--rounds N] [--pods N]
  --rounds N  replacements of each kind (1 to 50, default 10)
  --pods N    pods attached to node-a besides the demo's (0 to 60, default 0)";

/// The echo's port on web-b.
const ECHO_PORT: u16 = 9100;
/// Time between datagrams.
const SPACING: Duration = Duration::from_micros(500);
/// How long before a round's action its first silence may begin: the last echo before it.
const MARGIN: Duration = Duration::from_millis(1);

fn parse_args(flags: impl Iterator<Item = String>) -> Result<(u32, u32), String> {
    let (mut rounds, mut pods) = (10, 0);
    for (flag, value) in kxdp_perf::args::pairs(flags, USAGE)? {
        match (flag.as_str(), value.parse::<u32>()) {
            ("--rounds", Ok(n)) if (1..=50).contains(&n) => rounds = n,
            ("--pods", Ok(n)) if n <= 60 => pods = n,
            _ => return Err(format!("{flag} {value}: out of range or unknown\n{USAGE}")),
        }
    }
    Ok((rounds, pods))
}

fn main() -> ExitCode {
    let (rounds, pods) = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = missing_privilege() {
        eprintln!("takeover needs root: {why}");
        return ExitCode::from(2);
    }
    Testbed::remove_namespaces_on_panic();
    match measure(rounds, pods) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("takeover: {e}");
            ExitCode::FAILURE
        }
    }
}

fn measure(rounds: u32, pods: u32) -> Result<(), String> {
    let max_run = 600;
    let mut c = AgentCluster::build(DEMO_MANIFEST, &DEMO_PODS)?;
    c.start(max_run, &[])?;
    // The plugin's addresses start at the subnet's first; the manifest's pods have fixed
    // ones there, which the agent would refuse a second time: pods given one of them are left
    // attached but not counted.
    let fixed: Vec<Ipv4Addr> = c.pods.iter().map(|p| p.ip).collect();
    let mut served = 0;
    for i in 0.. {
        if served == pods {
            break;
        }
        let name = format!("extra-{i}");
        c.attach_pods_by_plugin(&[(name.as_str(), 0)])?;
        if !fixed.contains(&c.pod(&name).ip) {
            served += 1;
        }
    }
    let manifest = c.manifest.display().to_string();
    let args = ["--manifest", manifest.as_str()];

    let stop = Arc::new(AtomicBool::new(false));
    let echo = in_netns(&c.pod("web-b").ns, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT))
    })?
    .map_err(|e| format!("the echo's socket: {e}"))?;
    echo.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let echoer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Relaxed) {
                if let Ok((n, from)) = echo.recv_from(&mut buf) {
                    let _ = echo.send_to(&buf[..n], from);
                }
            }
        })
    };
    let udp = in_netns(&c.pod("client-a").ns, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
    })?
    .map_err(|e| format!("the client's socket: {e}"))?;
    udp.connect((c.pod("web-b").ip, ECHO_PORT))
        .map_err(|e| e.to_string())?;
    udp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            // When each datagram was sent (by sequence number), when echoes came, and which.
            let (mut sent_at, mut echoes, mut echoed) = (Vec::new(), Vec::new(), Vec::new());
            let mut buf = [0u8; 64];
            let mut next = Instant::now();
            while !stop.load(Relaxed) {
                if Instant::now() >= next {
                    let seq = sent_at.len() as u64;
                    sent_at.push(Instant::now());
                    let _ = udp.send(&seq.to_be_bytes());
                    next += SPACING;
                }
                while let Ok(n) = udp.recv(&mut buf) {
                    if let Ok(seq) = <[u8; 8]>::try_from(&buf[..n]) {
                        echoes.push(Instant::now());
                        echoed.push(u64::from_be_bytes(seq));
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            (sent_at, echoes, echoed)
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // (kind, start) of every round.
    let mut starts: Vec<(usize, Instant)> = Vec::new();
    for round in 0..2 * rounds {
        let kind = (round % 2) as usize;
        starts.push((kind, Instant::now()));
        if kind == 0 {
            if let Some(mut old) = c.replace_node(0, max_run, &args)? {
                let status = old.wait().map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err(format!("the replaced agent exited {status}:\n{}", c.log(0)));
                }
            }
        } else {
            c.kill(0)?;
            c.start_node(0, max_run, &args)?;
        }
        c.wait_ready(0, Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(700));
    }
    let end = Instant::now();
    stop.store(true, Relaxed);
    let (sent_at, echoes, echoed) = stream.join().map_err(|_| "the stream panicked")?;
    let _ = echoer.join();
    let sent = sent_at.len();
    let mut came = vec![false; sent];
    for seq in echoed {
        if let Some(c) = came.get_mut(seq as usize) {
            *c = true;
        }
    }

    let mut gaps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // Datagrams sent in each kind of round whose echo never came.
    let mut lost = [0usize; 2];
    for (i, (kind, start)) in starts.iter().enumerate() {
        let until = starts.get(i + 1).map_or(end, |(_, s)| *s);
        let longest = echoes
            .windows(2)
            .filter(|p| p[0] + MARGIN >= *start && p[0] + MARGIN < until)
            .map(|p| (p[1] - p[0]).as_secs_f64() * 1e3)
            .fold(0.0, f64::max);
        gaps[*kind].push(longest);
        lost[*kind] += sent_at
            .iter()
            .zip(&came)
            .filter(|(at, came)| !**came && **at + MARGIN >= *start && **at + MARGIN < until)
            .count();
    }
    let log = c.log(0);
    if std::env::var_os("TAKEOVER_LOG").is_some() {
        eprintln!("{log}");
    }
    let field = |line: &str, name: &str| -> Option<f64> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        line[at..].split_whitespace().next()?.parse().ok()
    };
    let took: Vec<(f64, f64)> = log
        .lines()
        .filter(|l| l.contains("took over"))
        .filter_map(|l| Some((field(l, "waited_ms")?, field(l, "dark_ms")?)))
        .collect();
    println!(
        "takeover: node-a with {} pods ({} attached by the plugin), a UDP datagram every {:?} \
         pod to pod across nodes: {} of {sent} echoed",
        2 + pods,
        pods,
        SPACING,
        echoes.len()
    );
    for (kind, name) in ["takeover", "restart after SIGKILL"].iter().enumerate() {
        let mut g = gaps[kind].clone();
        g.sort_by(f64::total_cmp);
        println!(
            "  {name}: longest silence per round, median {:.1} ms, max {:.1} ms; {} datagrams \
             lost in all, {:.1} ms of the stream ({} rounds: {})",
            g[g.len() / 2],
            g[g.len() - 1],
            lost[kind],
            lost[kind] as f64 * SPACING.as_secs_f64() * 1e3,
            g.len(),
            gaps[kind]
                .iter()
                .map(|v| format!("{v:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !took.is_empty() {
        let mean = |f: fn(&(f64, f64)) -> f64| took.iter().map(f).sum::<f64>() / took.len() as f64;
        let handed = log
            .lines()
            .filter(|l| l.contains("its sockets were handed over"))
            .count();
        println!(
            "  the new agent's account of a takeover (mean of {}): waited {:.1} ms for the old \
             one to leave, {:.1} ms until the node's interfaces were its own (dark_ms); sockets \
             handed over in {handed} of them",
            took.len(),
            mean(|t| t.0),
            mean(|t| t.1)
        );
    }
    Ok(())
}
