//! Pods keep their connections while the agent is replaced: node-a's agent is replaced ten
//! times, alternately by a new agent taking over from the running one and by a restart after
//! SIGKILL, while long-lived TCP connections run through every kind of translation (a
//! ClusterIP, a NodePort from outside, egress masquerade, and pod to pod without one), each
//! once with only the server speaking and once with only the client, beside a UDP stream
//! through masquerade and an iperf3 TCP stream through a ClusterIP. No connection may break,
//! no reset may be sent or received anywhere, and node-a's kernel must answer nothing for the
//! dataplane (no RST, no ICMP unreachable) while no agent runs. The longest silence of each
//! connection is printed. Needs root; prints SKIP otherwise, and fails under CI.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kxdp_tests::cluster::{in_netns, AgentCluster};
use kxdp_tests::cluster::{DEMO_MANIFEST as MANIFEST, DEMO_PODS as PODS};
use kxdp_tests::testbed::{skip_unless_privileged, snmp};

/// How often a speaking side writes.
const TICK: Duration = Duration::from_millis(5);

/// A silence longer than this is a connection that stopped flowing, not a replacement's gap
/// (TCP retransmits within a second of one).
const STALLED: Duration = Duration::from_secs(3);

/// Resets and unreachables counted in namespace `ns`.
fn resets(ns: &str) -> [u64; 3] {
    [
        snmp(ns, "Tcp", "OutRsts"),
        snmp(ns, "Tcp", "EstabResets"),
        snmp(ns, "Icmp", "OutDestUnreachs"),
    ]
}

/// What one side of a connection saw: an error, if it broke, and its longest wait for data.
type Outcome = Result<Duration, String>;

/// Serve every connection on `listener` until `stop`: the first byte says who speaks
/// (`S`erver or `C`lient); the speaker writes 8 bytes every [`TICK`], the other reads them.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Outcome>> {
    listener.set_nonblocking(true).unwrap();
    let mut handles = Vec::new();
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                let stop = Arc::clone(&stop);
                handles.push(std::thread::spawn(move || {
                    let mut mode = [0u8];
                    conn.read_exact(&mut mode).map_err(|e| e.to_string())?;
                    talk(conn, mode[0] == b'S', &stop)
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    handles
}

/// Speak (write every [`TICK`]) or listen until `stop`; the longest wait between reads (and
/// from the last read to the stop), zero for the speaker.
fn talk(mut conn: TcpStream, speak: bool, stop: &AtomicBool) -> Outcome {
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    let mut n = 0u64;
    let mut buf = [0u8; 4096];
    while !stop.load(Relaxed) {
        if speak {
            n += 1;
            conn.write_all(&n.to_be_bytes())
                .map_err(|e| format!("writing: {e}"))?;
            std::thread::sleep(TICK);
        } else {
            match conn.read(&mut buf) {
                // The speaker closes once told to stop; before that, a close is a break.
                Ok(0) if stop.load(Relaxed) => break,
                Ok(0) => return Err("closed by the peer".into()),
                Ok(_) => {
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("reading: {e}")),
            }
        }
    }
    if !speak {
        longest = longest.max(last.elapsed());
    }
    Ok(longest)
}

#[test]
fn established_flows_of_every_kind_survive_ten_agent_replacements_without_a_reset() {
    if skip_unless_privileged(
        "established_flows_of_every_kind_survive_ten_agent_replacements_without_a_reset",
    ) {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    let manifest = c.manifest.display().to_string();
    let args = ["--manifest", manifest.as_str()];
    c.start(600, &[]).expect("the agents start");
    let ns = |name: &str| c.pod(name).ns.clone();
    let (ext_ns, ext_ip) = c.tb.external.clone().expect("an external client");
    let node_a = c.tb.nodes[0].clone();
    let stop = Arc::new(AtomicBool::new(false));

    // Servers: the web pods on 8080 (the ClusterIP's and the NodePort's endpoints), the
    // outside host on 9000 (TCP) and 9001 (UDP echo).
    let mut servers = Vec::new();
    for (netns, port) in [
        (ns("web-a"), 8080),
        (ns("web-b"), 8080),
        (ext_ns.clone(), 9000),
    ] {
        let listener = in_netns(&netns, || {
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        })
        .unwrap()
        .unwrap();
        let stop = Arc::clone(&stop);
        servers.push(std::thread::spawn(move || serve(listener, stop)));
    }
    let echo = in_netns(&ext_ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9001)))
        .unwrap()
        .unwrap();
    echo.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let echo_stop = Arc::clone(&stop);
    let echoer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !echo_stop.load(Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });

    // Clients: (name, namespace, destination), each once per speaker.
    let web_b = c.pod("web-b").ip;
    let paths = [
        (
            "clusterip",
            ns("client-a"),
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80),
        ),
        (
            "nodeport",
            ext_ns.clone(),
            SocketAddrV4::new(node_a.ip, 30080),
        ),
        (
            "masquerade",
            ns("client-a"),
            SocketAddrV4::new(ext_ip, 9000),
        ),
        ("pod-to-pod", ns("client-a"), SocketAddrV4::new(web_b, 8080)),
    ];
    let mut clients = Vec::new();
    for (name, netns, dst) in paths {
        for speaker in [b'S', b'C'] {
            let mut conn = in_netns(&netns, || {
                TcpStream::connect_timeout(&dst.into(), Duration::from_secs(5))
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: connecting to {dst}: {e}"));
            conn.write_all(&[speaker]).unwrap();
            let stop = Arc::clone(&stop);
            let label = format!(
                "{name} ({} speaks)",
                if speaker == b'S' { "server" } else { "client" }
            );
            clients.push((
                label,
                std::thread::spawn(move || talk(conn, speaker == b'C', &stop)),
            ));
        }
    }
    // UDP through masquerade: a datagram every 2 ms, echoed; the longest wait for an echo.
    let udp = in_netns(&ns("client-a"), || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
    })
    .unwrap()
    .unwrap();
    udp.connect((ext_ip, 9001)).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let udp_stop = Arc::clone(&stop);
    let udp_stream = std::thread::spawn(move || {
        let (mut sent, mut echoes) = (0u64, Vec::new());
        let mut buf = [0u8; 64];
        while !udp_stop.load(Relaxed) {
            sent += 1;
            let _ = udp.send(&sent.to_be_bytes());
            while let Ok(n) = udp.recv(&mut buf) {
                if n == 8 {
                    echoes.push(Instant::now());
                }
            }
        }
        (sent, echoes)
    });
    // iperf3 through the iperf ClusterIP (served by web-b) for the whole run; both ends
    // bounded in time, even if the test fails before the client connects.
    let mut iperf_server = Command::new("timeout")
        .args([
            "60",
            "ip",
            "netns",
            "exec",
            &ns("web-b"),
            "iperf3",
            "-s",
            "-1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (scripts/install-deps.sh installs it)");
    std::thread::sleep(Duration::from_millis(300));
    let iperf = Command::new("timeout")
        .args([
            "60",
            "ip",
            "netns",
            "exec",
            &ns("client-a"),
            "iperf3",
            "-c",
            "10.96.0.20",
            "-t",
            "25",
            "-J",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3 runs");

    std::thread::sleep(Duration::from_secs(1));
    let watched: Vec<String> = [
        node_a.ns.clone(),
        ext_ns.clone(),
        ns("client-a"),
        ns("web-a"),
        ns("web-b"),
    ]
    .to_vec();
    let before: Vec<[u64; 3]> = watched.iter().map(|n| resets(n)).collect();
    let mut rounds = Vec::new();
    for round in 0..10 {
        let started = Instant::now();
        rounds.push(started);
        if round % 2 == 0 {
            // An upgrade: the new agent takes over from the running one.
            let old = c.replace_node(0, 600, &args).unwrap();
            let mut old = old.expect("an agent ran");
            let status = old.wait().unwrap();
            assert!(
                status.success(),
                "the replaced agent exited {status}:\n{}",
                c.log(0)
            );
        } else {
            // A crash, and the supervisor's restart.
            c.kill(0).unwrap();
            c.start_node(0, 600, &args).unwrap();
        }
        c.wait_ready(0, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        eprintln!(
            "round {round}: {} ready after {:?}",
            if round % 2 == 0 {
                "takeover"
            } else {
                "restart"
            },
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    let after: Vec<[u64; 3]> = watched.iter().map(|n| resets(n)).collect();
    stop.store(true, Relaxed);

    let mut broken = Vec::new();
    for (label, handle) in clients {
        match handle.join().expect("client thread") {
            Ok(longest) if longest > STALLED => {
                broken.push(format!("{label}: stalled, silent for {longest:?}"))
            }
            Ok(longest) => eprintln!("{label}: longest silence {longest:?}"),
            Err(e) => broken.push(format!("{label}: {e}")),
        }
    }
    for server in servers {
        for handle in server.join().expect("server thread") {
            match handle.join().expect("server connection") {
                Ok(longest) if longest > STALLED => {
                    broken.push(format!("a server's side: stalled, silent for {longest:?}"))
                }
                Ok(longest) if longest > Duration::ZERO => {
                    eprintln!("a server reading its client: longest silence {longest:?}")
                }
                Ok(_) => {}
                Err(e) => broken.push(format!("a server's side: {e}")),
            }
        }
    }
    let (sent, echoes) = udp_stream.join().unwrap();
    let echoed = echoes.len() as u64;
    // The longest wait between echoes in each round, from its start to the next one's.
    let mut longest = [Duration::ZERO; 2];
    for pair in echoes.windows(2) {
        if let Some(round) = rounds.iter().rposition(|r| *r <= pair[1]) {
            let gap = pair[1] - pair[0];
            longest[round % 2] = longest[round % 2].max(gap);
        }
    }
    eprintln!(
        "UDP through masquerade (a datagram every 2 ms): {echoed} of {sent} echoed; longest \
         silence {:?} in a takeover, {:?} in a restart after SIGKILL",
        longest[0], longest[1]
    );
    echoer.join().unwrap();
    let iperf = iperf.wait_with_output().unwrap();
    kxdp_tests::clients::stop_bounded(&mut iperf_server);
    let report: serde_json::Value = serde_json::from_slice(&iperf.stdout).unwrap_or_default();
    eprintln!(
        "iperf3 through the ClusterIP: {:.2} Gbit/s, {} retransmits",
        report["end"]["sum_sent"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9,
        report["end"]["sum_sent"]["retransmits"]
    );
    assert!(
        broken.is_empty(),
        "connections broke: {broken:#?}\n{}",
        c.log(0)
    );
    assert!(
        iperf.status.success(),
        "iperf3 through the ClusterIP failed: {}{}",
        String::from_utf8_lossy(&iperf.stdout),
        String::from_utf8_lossy(&iperf.stderr)
    );
    assert!(echoed > sent / 2, "UDP: {echoed} of {sent} echoed");
    for ((n, b), a) in watched.iter().zip(&before).zip(&after) {
        assert_eq!(
            b, a,
            "resets or unreachables (OutRsts, EstabResets, OutDestUnreachs) in {n}"
        );
    }
    let log = c.log(0);
    for line in log.lines().filter(|l| {
        [
            "took over",
            "SIGTERM",
            "adopted",
            "handed",
            "stopping",
            "TIMING",
        ]
        .iter()
        .any(|w| l.contains(w))
    }) {
        eprintln!("{line}");
    }
    assert_eq!(
        log.matches("took over from the running agent").count(),
        5,
        "{log}"
    );
    // Every upgrade took the running agent's sockets over, none bound afresh.
    assert_eq!(
        log.matches("its sockets were handed over").count(),
        5,
        "{log}"
    );
    assert!(!log.contains("nothing was handed over"), "{log}");
    // Every agent after the first took the flows over: none found the table empty.
    let adopted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("conntrack adopted"))
        .collect();
    assert_eq!(adopted.len(), 10, "{log}");
    assert!(
        adopted.iter().all(|l| !l.contains(" flows=0 ")),
        "{adopted:#?}"
    );
}

#[test]
fn a_state_file_of_another_layout_is_refused_and_replaced_saying_why() {
    if skip_unless_privileged("a_state_file_of_another_layout_is_refused_and_replaced_saying_why") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    let manifest = c.manifest.display().to_string();
    let args = ["--manifest", manifest.as_str()];
    c.start_node(0, 120, &args).unwrap();
    c.wait_ready(0, Duration::from_secs(30)).unwrap();
    c.kill(0).unwrap();
    // What a later kxdp with another layout would have left.
    let path = c.state_dir(0).join("conntrack");
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    let layout = kxdp_dataplane::conntrack::LAYOUT;
    file.write_all_at(&(layout + 1).to_le_bytes(), 8).unwrap();
    drop(file);
    c.start_node(0, 120, &args).unwrap();
    c.wait_ready(0, Duration::from_secs(30)).unwrap();
    let log = c.log(0);
    let said = format!(
        "conntrack starts empty: the file there was not taken state_dir={} reason=its layout \
         version is {}, this agent's is {layout}",
        c.state_dir(0).display(),
        layout + 1
    );
    assert!(log.contains(&said), "{said:?} in:\n{log}");
    let mut header = [0u8; 12];
    let file = std::fs::File::open(&path).unwrap();
    file.read_exact_at(&mut header, 0).unwrap();
    assert_eq!(
        &header[8..12],
        &layout.to_le_bytes(),
        "a new file in its place"
    );
}
