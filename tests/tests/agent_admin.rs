//! The agent's admin listeners against a hostile local user, and against a second agent given
//! the same debug socket: real `kxdp agent` processes on the two-node namespace cluster.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kxdp_agent::settings::usable_cpus;
use kxdp_tests::cluster::{
    eventually, kxdp_bin, metric, AgentCluster, DEMO_MANIFEST as MANIFEST, DEMO_PODS as PODS,
};
use kxdp_tests::testbed::skip_unless_privileged;

/// A pod scheduled on node-a whose veth the test creates later, as a CNI plugin would.
const LATE_POD: &str =
    "---\napiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: default}\n\
                        spec: {nodeName: node-a, containers: [{name: c, image: c}]}\n\
                        status: {phase: Running, podIP: 10.244.1.12}\n";

/// What the attacker does, as user `nobody`: try the debug socket; open `idle` TCP connections
/// to the metrics listener and hold them; open `slow` more that send a request line and then
/// trickle a header line every half second (reopening any the agent closes); print a line
/// when holding everything, and stop after `secs` seconds.
const ATTACK: &str = r#"
import os, socket, sys, time
host, port, idle, slow_n, secs, debug = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
print("uid", os.getuid(), flush=True)
try:
    u = socket.socket(socket.AF_UNIX)
    u.connect(debug)
    print("debug socket: connected", flush=True)
except PermissionError:
    print("debug socket: denied", flush=True)
except OSError as e:
    print("debug socket:", e, flush=True)
held, failed = [], 0
for i in range(idle):
    s = socket.socket()
    try:
        s.connect((host, port))
        held.append(s)
    except OSError:
        failed += 1
        s.close()
def trickler():
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    return s
slow = [trickler() for _ in range(slow_n)]
print("holding", len(held), "idle", len(slow), "slow", failed, "failed", flush=True)
end, reopened = time.time() + secs, 0
while time.time() < end:
    for i, s in enumerate(slow):
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            reopened += 1
            try:
                slow[i] = trickler()
            except OSError:
                pass
    time.sleep(0.5)
print("done", reopened, "reopened", flush=True)
"#;

/// The attacker's processes, stopped if still running when dropped.
struct Attacker {
    children: Vec<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Attacker {
    /// As many processes as the open-files limit this test may give one needs (each gets
    /// that limit with `prlimit`), together holding `idle` connections; the first also runs
    /// the `slow` ones.
    fn start(ns: &str, debug_socket: &str, idle: u32, slow: u32, secs: u32) -> Attacker {
        // Raising a hard limit takes CAP_SYS_RESOURCE, which a container may not grant:
        // stay within ours.
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        let per_process = (hard.min(1 << 20) as u32).saturating_sub(slow + 100);
        let processes = idle.div_ceil(per_process);
        let (tx, lines) = mpsc::channel();
        let mut children = Vec::new();
        for i in 0..processes {
            let mine = (idle - i * per_process).min(per_process);
            let slow = if i == 0 { slow } else { 0 };
            let nofile = format!("--nofile={}", mine + slow + 100);
            let mut child = Command::new("timeout")
                .args([
                    &(secs + 60).to_string(),
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "prlimit",
                ])
                .args([
                    nofile.as_str(),
                    "setpriv",
                    "--reuid",
                    "nobody",
                    "--regid",
                    "nogroup",
                ])
                .args([
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                    ATTACK,
                    "127.0.0.1",
                    "9901",
                ])
                .args([
                    &mine.to_string(),
                    &slow.to_string(),
                    &secs.to_string(),
                    debug_socket,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the attacker starts");
            let stdout = child.stdout.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            children.push(child);
        }
        Attacker {
            children,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait (at most `timeout`) until every process said a line starting with `prefix`;
    /// returns those lines.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .seen
                .iter()
                .filter(|l| l.starts_with(prefix))
                .cloned()
                .collect();
            if found.len() >= self.children.len() {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the attacker said no {prefix:?} within {timeout:?}: {:?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        // `timeout` passes SIGTERM on to the attacker; SIGKILL would orphan it.
        for child in &self.children {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_local_user_flooding_the_metrics_listener_starves_neither_health_nor_pods() {
    if skip_unless_privileged(
        "a_local_user_flooding_the_metrics_listener_starves_neither_health_nor_pods",
    ) {
        return;
    }
    let manifest = MANIFEST.to_owned() + LATE_POD;
    let mut c = AgentCluster::build(&manifest, &PODS).expect("the cluster builds");
    c.start(180, &[]).expect("the agents start");
    let node_ns = c.tb.nodes[0].ns.clone();
    let debug_socket = c.admin(0).to_string();
    let debug_path = debug_socket.trim_start_matches("unix:");
    let answers = |c: &AgentCluster, path: &str| {
        let start = Instant::now();
        let got = c.metrics_get(0, path, Duration::from_secs(2));
        let took = start.elapsed();
        match got {
            Ok((200, body)) if took < Duration::from_secs(2) => body,
            other => panic!(
                "{path} under attack: {other:?} after {took:?}:\n{}",
                c.log(0)
            ),
        }
    };
    // kube-proxy's proxier health: {"lastUpdated": ...,"currentTime": ...}.
    for path in ["/healthz", "/livez"] {
        let health: serde_json::Value = serde_json::from_str(&answers(&c, path)).unwrap();
        assert!(health["lastUpdated"].is_string(), "{path}: {health}");
        assert!(health["currentTime"].is_string(), "{path}: {health}");
    }

    // 20,000 idle connections and 200 trickling ones, from user nobody.
    let mut attacker = Attacker::start(&node_ns, debug_path, 20_000, 200, 60);
    for uid in attacker.wait_for("uid", Duration::from_secs(20)) {
        assert_eq!(uid, "uid 65534");
    }
    for debug in attacker.wait_for("debug socket", Duration::from_secs(5)) {
        assert_eq!(
            debug, "debug socket: denied",
            "the debug API is its owner's only"
        );
    }
    let (mut idle, mut slow) = (0, 0);
    for holding in attacker.wait_for("holding", Duration::from_secs(120)) {
        // "holding N idle M slow F failed"
        let words: Vec<&str> = holding.split(' ').collect();
        assert_eq!(
            words.get(5),
            Some(&"0"),
            "every connect succeeded: {holding}"
        );
        idle += words[1].parse::<u32>().unwrap();
        slow += words[3].parse::<u32>().unwrap();
    }
    assert_eq!((idle, slow), (20_000, 200));

    // Meanwhile, health and metrics answer, every time, within 2 s.
    for _ in 0..5 {
        answers(&c, "/healthz");
        let m = answers(&c, "/metrics");
        assert_eq!(metric(&m, "kxdp_up"), 1.0);
        std::thread::sleep(Duration::from_millis(300));
    }
    // The agent holds a bounded number of descriptors, not one per attacking connection.
    let pid = c.agent_pid(0).expect("node-a's agent runs");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(fds < 1000, "the agent holds {fds} descriptors");

    // A pod's veth created during the attack is served: a ping through it works.
    let pod = c
        .add_pod_veth(
            0,
            "late",
            Ipv4Addr::new(10, 244, 1, 12),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("the late veth during the attack: {e}"));
    let replies =
        c.tb.ping(
            &pod.ns,
            Ipv4Addr::new(10, 244, 1, 11),
            3,
            Duration::from_secs(6),
        )
        .unwrap();
    assert!(
        replies >= 2,
        "late pod to client-a during the attack: {replies}/3"
    );

    // Still answering, and the metrics show what happened to the attack.
    answers(&c, "/healthz");
    let m = answers(&c, "/metrics");
    let evicted = metric(
        &m,
        "kxdp_admin_connections_evicted_total{listener=\"metrics\"}",
    );
    assert!(evicted >= 19_000.0, "{evicted} evicted");
    let held = metric(&m, "kxdp_admin_connections{listener=\"metrics\"}");
    assert!(held <= 256.0, "{held} held");
    // Trickled headers time out (5 s after their connection began): every slow connection,
    // and the attacker opens it again.
    let timed_out = |m: &str| {
        metric(
            m,
            "kxdp_admin_connections_timed_out_total{listener=\"metrics\"}",
        )
    };
    let mut last = String::new();
    assert!(
        eventually(Duration::from_secs(15), || {
            last = answers(&c, "/metrics");
            timed_out(&last) >= 200.0
        }),
        "{}",
        last.lines()
            .filter(|l| l.starts_with("kxdp_admin"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The metrics listener shows no debug view to anyone.
    let (code, _) = c
        .metrics_get(0, "/api/conntrack", Duration::from_secs(2))
        .unwrap();
    assert_eq!(code, 404);
    drop(attacker);
}

#[test]
fn a_second_agent_on_the_same_admin_socket_refuses_to_start_and_a_stale_one_is_replaced() {
    if skip_unless_privileged(
        "a_second_agent_on_the_same_admin_socket_refuses_to_start_and_a_stale_one_is_replaced",
    ) {
        return;
    }
    let mut c = AgentCluster::build(MANIFEST, &PODS).expect("the cluster builds");
    let manifest = c.manifest.display().to_string();
    c.start_node(0, 120, &["--manifest", &manifest]).unwrap();
    c.wait_ready(0, Duration::from_secs(30)).unwrap();
    let socket = c.admin(0).to_string();
    let path = socket.trim_start_matches("unix:").to_owned();

    // A second agent, in node-b's namespace (nothing else shared), given node-a's socket.
    let node_b = c.tb.nodes[1].ns.clone();
    let out = Command::new("timeout")
        .args(["30", "ip", "netns", "exec", &node_b])
        .arg(kxdp_bin().unwrap())
        .args([
            "agent",
            "--node",
            "node-b",
            "--uplink",
            "uplink",
            "--max-run",
            "10",
            "--state-dir",
            "none",
        ])
        .args(["--manifest", &manifest, "--admin", &socket])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let pid = c.agent_pid(0).unwrap();
    assert!(
        err.contains(&path) && err.contains(&format!("live kxdp agent (pid {pid})")),
        "{err}"
    );
    let xdp = kxdp_tests::testbed::ip(Some(&node_b), &["link", "show", "uplink"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "it stopped before attaching anything"
    );
    // The first agent's socket is still there and answers.
    let status = c.status(0);
    assert!(status.ready, "{status:?}");

    // A socket left behind by an agent that died (nothing listens) is replaced.
    let stale = c.admin(1).to_string();
    drop(std::os::unix::net::UnixListener::bind(stale.trim_start_matches("unix:")).unwrap());
    // (`--cores auto`, the default, said: the agent may run on every CPU, and pins its worker
    // to the last.)
    c.start_node(1, 120, &["--manifest", &manifest, "--cores", "auto"])
        .unwrap();
    c.wait_ready(1, Duration::from_secs(30)).unwrap();
    assert!(c.log(1).contains("replaced a stale socket"), "{}", c.log(1));
    let pid = c.agent_pid(1).unwrap();
    let allowed = usable_cpus().unwrap();
    let last = allowed.last().unwrap().to_string();
    let worker = worker_task(pid);
    assert_eq!(cpus_allowed(&format!("{worker}/status")), last);
    if allowed.len() > 1 {
        assert_ne!(cpus_allowed(&format!("/proc/{pid}/status")), last);
    }
    // The status says where the worker runs, as the kernel has it: moved after the start (as
    // a cpuset change moves it), it reports the move beside the core it was pinned to.
    let w = &c.status(1).workers[0];
    let last_cpu = *allowed.last().unwrap();
    assert_eq!(
        (w.core, w.cpus.clone(), w.pinned),
        (Some(last_cpu), vec![last_cpu], Some(last_cpu))
    );
    // (Where the agent may use one CPU alone, nothing can move the worker.)
    if allowed.len() > 1 {
        let tid = worker.rsplit('/').next().unwrap();
        let first = allowed[0];
        let moved = Command::new("taskset")
            .args(["-p", "-c", &first.to_string(), tid])
            .output()
            .unwrap();
        assert!(moved.status.success(), "{moved:?}");
        let w = &c.status(1).workers[0];
        assert_eq!(
            (w.core, w.cpus.clone(), w.pinned),
            (Some(first), vec![first], Some(last_cpu))
        );
        let every = allowed
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let widened = Command::new("taskset")
            .args(["-p", "-c", &every, tid])
            .output()
            .unwrap();
        assert!(widened.status.success(), "{widened:?}");
        let w = &c.status(1).workers[0];
        assert_eq!((w.core, &w.cpus), (None, &allowed), "{w:?}");
    }

    // At exit each agent removes its own socket.
    assert_eq!(c.stop(1), Ok(true), "{}", c.log(1));
    assert!(!std::path::Path::new(stale.trim_start_matches("unix:")).exists());
    assert!(
        std::path::Path::new(&path).exists(),
        "node-a's is not node-b's to remove"
    );
}

/// The `Cpus_allowed_list` of a task's `status` file: the CPUs it may run on (`0-1`, `1`).
fn cpus_allowed(status: &str) -> String {
    let text = std::fs::read_to_string(status).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned()
}

/// `/proc/PID/task/TID` of agent `pid`'s worker thread.
fn worker_task(pid: u32) -> String {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|t| t.unwrap().path())
        .find(|t| {
            std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "kxdp-worker-0")
        })
        .expect("the agent has a thread kxdp-worker-0")
        .display()
        .to_string()
}
