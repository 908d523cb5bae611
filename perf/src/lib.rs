//! kxdp's perf harness: the pieces its programs share.
//!
//! [`kube_proxy`] writes the nftables rules kube-proxy's nftables mode would generate for a
//! snapshot's services, so the kernel baseline serves exactly what kxdp serves; [`pktgen`]
//! drives the kernel's packet generator where the kernel has one; [`programs`] loads the
//! harness's own XDP programs (a live-frames generator, a counting sink, a redirector);
//! [`generator`] sends a pod's frames by live frames or, where the kernel refuses those, AF_XDP;
//! [`baseline`] is the bare AF_XDP forwarder kxdp is measured against; [`iperf3`] reads an
//! iperf3 client's JSON report; [`in_namespace`], [`ipv4_only`] and [`stats`] are what every
//! measurement uses.

pub mod provenance {
    //! What a report records about where its figures come from: the commit and the machine.

    /// The commit measured: `git rev-parse --short HEAD`, with `-dirty` when the work tree has
    /// changes (untracked files included) outside the results folder `out` the run writes;
    /// `unknown` outside a git checkout.
    pub fn commit(out: Option<&std::path::Path>) -> String {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
            return "unknown".into();
        };
        let mut status = vec!["status", "--porcelain", "--", "."];
        let exclude = out.map(|d| format!(":(exclude){}", d.display()));
        if let Some(x) = &exclude {
            status.push(x);
        }
        let dirty = git(&status).is_none_or(|s| !s.trim().is_empty());
        format!("{}{}", head.trim(), if dirty { "-dirty" } else { "" })
    }

    /// The machine this ran on.
    pub fn machine() -> String {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        format!(
            "{model}, {cores} cores, {mem:.0} GiB, Linux {}; load average before the run: {}",
            kernel.trim(),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

pub mod args {
    //! The `--flag value` pairs a harness program is run with.

    /// Each flag of `flags` (the arguments after the program's name) with the value after it,
    /// in order; a flag without one is an error that ends with `usage`.
    pub fn pairs(
        flags: impl Iterator<Item = String>,
        usage: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let mut it = flags;
        let mut pairs = Vec::new();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{usage}"))?;
            pairs.push((flag, value));
        }
        Ok(pairs)
    }
}

pub mod baseline;
pub mod generator;
pub mod programs;

pub mod iperf3 {
    //! What an iperf3 client's `--json` report says about a run: the rate the receiver got,
    //! the rate sent, TCP's retransmits and UDP's loss, or the error iperf3 gave.

    use serde_json::Value;

    /// One client run.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Run {
        /// Bits per second the receiver got (`end.sum_received`, all streams).
        pub received_bps: f64,
        /// Bits per second the sender sent (`end.sum_sent`).
        pub sent_bps: f64,
        /// TCP segments the sender retransmitted (`end.sum_sent.retransmits`); none for UDP.
        pub retransmits: Option<u64>,
        /// UDP datagrams lost on the way, in percent (`end.sum_received.lost_percent`); none
        /// for TCP.
        pub lost_percent: Option<f64>,
        /// The sender's TCP congestion control (`end.sender_tcp_congestion`).
        pub congestion: Option<String>,
    }

    /// Parse a client's `--json` report; an error names what iperf3 said, or what is missing.
    pub fn parse(json: &str) -> Result<Run, String> {
        if json.trim().is_empty() {
            return Err("iperf3 printed nothing (killed by its time limit?)".into());
        }
        let v: Value =
            serde_json::from_str(json).map_err(|e| format!("iperf3's report is not JSON: {e}"))?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(format!("iperf3: {e}"));
        }
        let end = &v["end"];
        let sum = |name: &str| {
            end.get(name)
                .filter(|s| s.is_object())
                .ok_or_else(|| format!("iperf3's report has no end.{name}"))
        };
        let (sent, received) = (sum("sum_sent")?, sum("sum_received")?);
        let bps = |s: &Value, what: &str| {
            s["bits_per_second"]
                .as_f64()
                .ok_or_else(|| format!("iperf3's report has no end.{what}.bits_per_second"))
        };
        let udp = v["start"]["test_start"]["protocol"].as_str() == Some("UDP");
        Ok(Run {
            received_bps: bps(received, "sum_received")?,
            sent_bps: bps(sent, "sum_sent")?,
            retransmits: if udp {
                None
            } else {
                sent["retransmits"].as_u64()
            },
            lost_percent: if udp {
                received["lost_percent"].as_f64()
            } else {
                None
            },
            congestion: end["sender_tcp_congestion"].as_str().map(str::to_owned),
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tcp_gives_the_received_rate_and_the_senders_retransmits() {
            let json = r#"{"start": {"test_start": {"protocol": "TCP", "num_streams": 4}},
                "end": {"streams": [],
                  "sum_sent": {"bytes": 1572732928, "bits_per_second": 12564988644.25, "retransmits": 4, "sender": true},
                  "sum_received": {"bytes": 1572732928, "bits_per_second": 12562466974.99, "sender": true},
                  "sender_tcp_congestion": "cubic", "receiver_tcp_congestion": "cubic"}}"#;
            assert_eq!(
                parse(json).unwrap(),
                Run {
                    received_bps: 12562466974.99,
                    sent_bps: 12564988644.25,
                    retransmits: Some(4),
                    lost_percent: None,
                    congestion: Some("cubic".into()),
                }
            );
        }

        #[test]
        fn udp_gives_the_received_rate_and_the_loss() {
            let json = r#"{"start": {"test_start": {"protocol": "UDP"}},
                "end": {"sum": {"bits_per_second": 2000000000.0, "lost_percent": 0, "sender": true},
                  "sum_sent": {"bits_per_second": 2000000000.0, "lost_percent": 0, "sender": true},
                  "sum_received": {"bits_per_second": 1500000000.0, "lost_packets": 25, "packets": 100, "lost_percent": 25.0, "sender": false}}}"#;
            let run = parse(json).unwrap();
            assert_eq!(run.received_bps, 1.5e9);
            assert_eq!(run.sent_bps, 2e9);
            assert_eq!((run.retransmits, run.lost_percent), (None, Some(25.0)));
        }

        #[test]
        fn a_failed_run_says_why() {
            let json = r#"{"start": {}, "intervals": [], "end": {},
                "error": "unable to connect to server: Connection refused"}"#;
            assert_eq!(
                parse(json).unwrap_err(),
                "iperf3: unable to connect to server: Connection refused"
            );
            assert!(parse("").unwrap_err().contains("nothing"));
            assert!(parse("{").unwrap_err().contains("not JSON"));
            assert!(parse(r#"{"end": {}}"#)
                .unwrap_err()
                .contains("end.sum_sent"));
        }
    }
}

/// A perf program's exit: success, or `name: error` on stderr and failure.
pub fn exit(name: &str, result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turn IPv6 off on every interface of network namespace `ns`. A link that comes up sends
/// IPv6 duplicate address detection, router solicitations and MLD reports for a couple of
/// seconds: a sink would count them as forwarded frames, and a generator's veth as offered
/// ones. The harness measures IPv4 only.
pub fn ipv4_only(ns: &str) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw"])
        .args([
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])
        .output()
        .map_err(|e| format!("sysctl in {ns}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "turning IPv6 off in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `f` on a thread inside network namespace `ns`.
pub fn in_namespace<T: Send>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            kxdp_xdp::enter_netns(ns).map_err(|e| format!("entering {ns}: {e}"))?;
            f()
        })
        .join()
        .map_err(|_| "a namespace thread panicked".to_owned())?
    })
}

pub mod stats {
    //! Medians and spreads of repeated measurements.

    /// The median of `v` (the upper one for an even count); 0 for none.
    pub fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// The smallest and largest of `v`.
    pub fn range(v: &[f64]) -> (f64, f64) {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }
}

pub mod pktgen {
    //! The kernel's packet generator (`/proc/net/pktgen`, the `pktgen` module), as the
    //! documented interface drives it (`Documentation/networking/pktgen.rst` and the kernel's
    //! `samples/pktgen/`): a device added to the kernel thread of one core, its packet set
    //! line by line, then `start` on the control file, which returns when `stop` is written
    //! (or the writer gets a signal). pktgen is per network namespace, so every command runs
    //! in a process inside the generator's namespace (`/proc/net` is the namespace of the
    //! process, not of a thread that entered another).
    //!
    //! The packets are UDP over IPv4 as in a template frame: its MAC and IP addresses and UDP
    //! ports, its length, no UDP checksum; for many flows the UDP source port steps through
    //! `flows` values from the template's.

    use std::net::Ipv4Addr;

    /// Where the interface lives.
    pub const DIR: &str = "/proc/net/pktgen";

    /// Whether this kernel has pktgen (in the namespace of this process).
    pub fn available() -> bool {
        std::path::Path::new(DIR).join("pgctrl").exists()
    }

    /// What [`script`] sends.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Packets {
        /// Destination MAC, source MAC, source IP, destination IP, source and destination
        /// UDP port, frame length (without the FCS: pktgen's `pkt_size`).
        pub dst_mac: [u8; 6],
        /// See `dst_mac`.
        pub src_mac: [u8; 6],
        /// See `dst_mac`.
        pub src: Ipv4Addr,
        /// See `dst_mac`.
        pub dst: Ipv4Addr,
        /// See `dst_mac`.
        pub sport: u16,
        /// See `dst_mac`.
        pub dport: u16,
        /// See `dst_mac`.
        pub len: usize,
    }

    impl Packets {
        /// The packets of an Ethernet + IPv4 (no options) + UDP template frame.
        pub fn of_frame(frame: &[u8]) -> Result<Packets, String> {
            if frame.len() < 60 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 {
                return Err("the template is not a plain IPv4 frame of 60 bytes or more".into());
            }
            if frame[23] != 17 {
                return Err("the template is not UDP".into());
            }
            let b = |r: std::ops::Range<usize>| frame[r].to_vec();
            let addr =
                |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
            let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
            Ok(Packets {
                dst_mac: b(0..6).try_into().expect("six bytes"),
                src_mac: b(6..12).try_into().expect("six bytes"),
                src: addr(26),
                dst: addr(30),
                sport: port(34),
                dport: port(36),
                len: frame.len(),
            })
        }
    }

    fn mac(m: &[u8; 6]) -> String {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// A shell script that resets pktgen and sets the kernel thread of `core` to send
    /// `packets` out of `dev`, over `flows` UDP source ports, flat out or at `rate` packets
    /// per second, until stopped. It does not start: write `start` to `pgctrl` for that.
    pub fn script(
        dev: &str,
        core: usize,
        packets: &Packets,
        flows: u32,
        rate: Option<u64>,
    ) -> String {
        let last_port = u32::from(packets.sport)
            .saturating_add(flows.max(1) - 1)
            .min(u32::from(u16::MAX));
        let mut lines = vec![
            ("pgctrl".to_owned(), "reset".to_owned()),
            (format!("kpktgend_{core}"), "rem_device_all".into()),
            (format!("kpktgend_{core}"), format!("add_device {dev}")),
        ];
        let device = [
            "count 0".to_owned(),
            // veth does not share skbs between transmits: a fresh one per packet.
            "clone_skb 0".into(),
            format!("pkt_size {}", packets.len),
            "flag NO_TIMESTAMP".into(),
            format!("dst_mac {}", mac(&packets.dst_mac)),
            format!("src_mac {}", mac(&packets.src_mac)),
            format!("src_min {}", packets.src),
            format!("src_max {}", packets.src),
            format!("dst_min {}", packets.dst),
            format!("dst_max {}", packets.dst),
            format!("udp_src_min {}", packets.sport),
            format!("udp_src_max {last_port}"),
            format!("udp_dst_min {}", packets.dport),
            format!("udp_dst_max {}", packets.dport),
            match rate {
                Some(pps) => format!("ratep {pps}"),
                None => "delay 0".into(),
            },
        ];
        lines.extend(device.into_iter().map(|c| (dev.to_owned(), c)));
        let mut s = String::from("set -e\n");
        for (file, command) in lines {
            s.push_str(&format!("echo '{command}' > {DIR}/{file}\n"));
        }
        s
    }

    /// Packets sent so far, from the device's status file (`pkts-sofar: N`).
    pub fn sent(status: &str) -> Option<u64> {
        let (_, rest) = status.split_once("pkts-sofar:")?;
        rest.split_whitespace().next()?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn template() -> Vec<u8> {
            let mut f = vec![0u8; 64];
            f[0..6].copy_from_slice(&[0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x01]);
            f[6..12].copy_from_slice(&[0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x02]);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14] = 0x45;
            f[23] = 17;
            f[26..30].copy_from_slice(&[10, 244, 0, 2]);
            f[30..34].copy_from_slice(&[10, 96, 0, 10]);
            f[34..36].copy_from_slice(&10_000u16.to_be_bytes());
            f[36..38].copy_from_slice(&53u16.to_be_bytes());
            f
        }

        #[test]
        fn the_script_sends_the_templates_packets_over_its_flows() {
            let p = Packets::of_frame(&template()).unwrap();
            let s = script("eth0", 1, &p, 10_000, None);
            let lines: Vec<&str> = s.lines().collect();
            assert_eq!(lines[0], "set -e");
            assert_eq!(lines[1], "echo 'reset' > /proc/net/pktgen/pgctrl");
            assert_eq!(
                lines[3],
                "echo 'add_device eth0' > /proc/net/pktgen/kpktgend_1"
            );
            for want in [
                "echo 'pkt_size 64' > /proc/net/pktgen/eth0",
                "echo 'clone_skb 0' > /proc/net/pktgen/eth0",
                "echo 'dst_mac 0a:58:0a:f4:00:01' > /proc/net/pktgen/eth0",
                "echo 'src_min 10.244.0.2' > /proc/net/pktgen/eth0",
                "echo 'dst_max 10.96.0.10' > /proc/net/pktgen/eth0",
                "echo 'udp_src_min 10000' > /proc/net/pktgen/eth0",
                "echo 'udp_src_max 19999' > /proc/net/pktgen/eth0",
                "echo 'udp_dst_max 53' > /proc/net/pktgen/eth0",
                "echo 'delay 0' > /proc/net/pktgen/eth0",
            ] {
                assert!(lines.contains(&want), "{want} missing from\n{s}");
            }
            assert!(!s.contains("start"), "set up only");
            let one = script("eth0", 0, &p, 1, Some(100_000));
            assert!(one.contains("'udp_src_max 10000'") && one.contains("'ratep 100000'"));
            // The port range stops at 65535.
            assert!(script("eth0", 0, &p, 100_000, None).contains("'udp_src_max 65535'"));
        }

        #[test]
        fn templates_that_are_not_udp_over_ipv4_are_refused() {
            let mut f = template();
            f[23] = 6;
            assert!(Packets::of_frame(&f).unwrap_err().contains("UDP"));
            assert!(Packets::of_frame(&f[..40]).is_err());
        }

        #[test]
        fn the_count_sent_comes_from_the_status_file() {
            let status = "Params: count 0  min_pkt_size: 64  max_pkt_size: 64\n\
                          Current:\n     pkts-sofar: 1234567  errors: 0\n";
            assert_eq!(sent(status), Some(1_234_567));
            assert_eq!(sent("Result: Idle"), None);
        }
    }
}

pub mod kube_proxy {
    //! kube-proxy's nftables mode, as rules for `nft -f`: the same table, chains, maps and
    //! verdicts its proxier writes (`pkg/proxy/nftables/proxier.go`, Kubernetes 1.31+), for
    //! the service ports of a kxdp snapshot. Differences that do not change the per-packet work
    //! are kept small: chain names are `service-<n>`, `external-<n>` and `endpoint-<n>-<m>`
    //! rather than hashes with the service's name, and there is no firewall chain
    //! (`loadBalancerSourceRanges` is not used here).
    //!
    //! Per packet the kernel then does what a kube-proxy node does: in `nat-prerouting`, one
    //! concatenated-key map lookup (`service-ips`, or `service-nodeports` for a local address),
    //! a jump to the service chain, `numgen random` over the endpoints, a DNAT in the endpoint
    //! chain, with conntrack keeping the translation; masquerade in `nat-postrouting` for what
    //! was marked; and in the filter chains, the reject for services without endpoints and the
    //! drop for unknown ClusterIP ports.

    use std::fmt::Write as _;

    use kxdp_dataplane::tables::{FrontendKind, TrafficPolicy};
    use kxdp_dataplane::Snapshot;

    fn proto(p: u8) -> &'static str {
        if p == 17 {
            "udp"
        } else {
            "tcp"
        }
    }

    /// The ruleset for `snap`'s service ports (table `ip kube-proxy`, replaced if present).
    pub fn ruleset(snap: &Snapshot) -> String {
        let cluster_cidr = snap.node.cluster_cidr;
        let service_cidr = snap.node.service_cidr;
        let mut service_ips = Vec::new();
        let mut node_ports = Vec::new();
        let mut no_endpoints = Vec::new();
        let mut cluster_ips = Vec::new();
        let mut chains = String::new();
        for (n, port) in snap.services.ports().iter().enumerate() {
            let spec = port.spec();
            let p = proto(spec.proto);
            let ready: Vec<_> = spec.backends.iter().filter(|b| b.ready).collect();
            for f in &spec.frontends {
                if let (FrontendKind::ClusterIp, Some(ip)) = (f.kind, f.ip) {
                    cluster_ips.push(ip.to_string());
                }
            }
            if ready.is_empty() {
                for f in &spec.frontends {
                    if let Some(ip) = f.ip {
                        no_endpoints.push(format!("{ip} . {p} . {} : goto reject-chain", f.port));
                    }
                }
                continue;
            }
            let endpoints: Vec<String> = (0..ready.len())
                .map(|m| format!("endpoint-{n}-{m}"))
                .collect();
            let vmap: Vec<String> = endpoints
                .iter()
                .enumerate()
                .map(|(m, e)| format!("{m} : goto {e}"))
                .collect();
            let cluster_ip = spec
                .frontends
                .iter()
                .find(|f| f.kind == FrontendKind::ClusterIp)
                .and_then(|f| f.ip.map(|ip| (ip, f.port)));
            let _ = writeln!(chains, "\tchain service-{n} {{");
            if let Some((ip, port)) = cluster_ip {
                let _ = writeln!(
                    chains,
                    "\t\tip daddr {ip} {p} dport {port} ip saddr != {cluster_cidr} jump mark-for-masquerade"
                );
            }
            let _ = writeln!(
                chains,
                "\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
                ready.len(),
                vmap.join(", ")
            );
            // External traffic: masqueraded to any endpoint (Cluster), or kept to local
            // endpoints with the client's address (Local).
            let local: Vec<usize> = (0..ready.len()).filter(|m| ready[*m].local).collect();
            let _ = writeln!(chains, "\tchain external-{n} {{");
            match spec.external_policy {
                TrafficPolicy::Cluster => {
                    let _ = writeln!(
                        chains,
                        "\t\tjump mark-for-masquerade\n\t\tgoto service-{n}\n\t}}"
                    );
                }
                TrafficPolicy::Local if local.is_empty() => {
                    let _ = writeln!(chains, "\t\tdrop\n\t}}");
                }
                TrafficPolicy::Local => {
                    let vmap: Vec<String> = local
                        .iter()
                        .enumerate()
                        .map(|(i, m)| format!("{i} : goto endpoint-{n}-{m}"))
                        .collect();
                    let _ = writeln!(
                        chains,
                        "\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
                        local.len(),
                        vmap.join(", ")
                    );
                }
            }
            for (m, b) in ready.iter().enumerate() {
                let _ = writeln!(
                    chains,
                    "\tchain endpoint-{n}-{m} {{\n\t\tip saddr {} jump mark-for-masquerade\n\t\tmeta l4proto {p} dnat to {}:{}\n\t}}",
                    b.ip, b.ip, b.port
                );
            }
            for f in &spec.frontends {
                match (f.kind, f.ip) {
                    (FrontendKind::NodePort, _) => {
                        node_ports.push(format!("{p} . {} : goto external-{n}", f.port));
                    }
                    (FrontendKind::ClusterIp, Some(ip)) => {
                        service_ips.push(format!("{ip} . {p} . {} : goto service-{n}", f.port));
                    }
                    (_, Some(ip)) => {
                        service_ips.push(format!("{ip} . {p} . {} : goto external-{n}", f.port));
                    }
                    (_, None) => {}
                }
            }
        }
        let elements = |v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {} }};", v.join(", "))
            }
        };
        cluster_ips.sort();
        cluster_ips.dedup();
        format!(
            "table ip kube-proxy {{}}\n\
             delete table ip kube-proxy\n\
             table ip kube-proxy {{\n\
             \tcomment \"rules for kube-proxy\"\n\
             \tset cluster-ips {{ type ipv4_addr;{cips} }}\n\
             \tmap service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict;{sips} }}\n\
             \tmap service-nodeports {{ type inet_proto . inet_service : verdict;{nps} }}\n\
             \tmap no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict;{noep} }}\n\
             \tchain filter-input {{ type filter hook input priority -110; policy accept;\n\
             \t\tct state new jump service-endpoints-check\n\t}}\n\
             \tchain filter-forward {{ type filter hook forward priority -110; policy accept;\n\
             \t\tct state new jump service-endpoints-check\n\
             \t\tct state new jump cluster-ips-check\n\t}}\n\
             \tchain filter-output {{ type filter hook output priority -110; policy accept;\n\
             \t\tct state new jump service-endpoints-check\n\
             \t\tct state new jump cluster-ips-check\n\t}}\n\
             \tchain service-endpoints-check {{\n\
             \t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}}\n\
             \tchain cluster-ips-check {{\n\
             \t\tip daddr @cluster-ips reject\n\
             \t\tip daddr {service_cidr} drop\n\t}}\n\
             \tchain reject-chain {{\n\t\treject\n\t}}\n\
             \tchain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
             \t\tjump services\n\t}}\n\
             \tchain nat-output {{ type nat hook output priority -100; policy accept;\n\
             \t\tjump services\n\t}}\n\
             \tchain nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             \t\tjump masquerading\n\t}}\n\
             \tchain masquerading {{\n\
             \t\tmeta mark & 0x00004000 == 0 return\n\
             \t\tmeta mark set meta mark ^ 0x00004000\n\
             \t\tmasquerade fully-random\n\t}}\n\
             \tchain mark-for-masquerade {{\n\
             \t\tmeta mark set meta mark | 0x00004000\n\t}}\n\
             \tchain services {{\n\
             \t\tip daddr . meta l4proto . th dport vmap @service-ips\n\
             \t\tfib daddr type local meta l4proto . th dport vmap @service-nodeports\n\t}}\n\
             {chains}}}\n",
            cips = elements(&cluster_ips),
            sips = elements(&service_ips),
            nps = elements(&node_ports),
            noep = elements(&no_endpoints),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use kxdp_testkit::Topology;

        #[test]
        fn every_service_port_is_served_as_kube_proxy_serves_it() {
            let snap = Topology::default().snapshot();
            let rules = ruleset(&snap);
            // ClusterIPs through the service chain, NodePorts and load balancers through the
            // external one, a service without endpoints rejected.
            for wanted in [
                "10.96.0.53 . udp . 53 : goto service-",
                "tcp . 30080 : goto external-",
                "198.19.1.10 . tcp . 80 : goto external-",
                "10.96.0.99 . tcp . 80 : goto reject-chain",
                "meta l4proto udp dnat to 10.244.2.20:53",
                "ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "masquerade fully-random",
            ] {
                assert!(rules.contains(wanted), "{wanted:?} in\n{rules}");
            }
        }
    }
}
