//! The `kxdp` command as an operator runs it: `kxdp trace` on the embedded default cluster and
//! on a manifest file, as text and as JSON, and the errors for a bad flag, a bad manifest and
//! a source address no pod owns.

use std::process::Command;

fn kxdp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kxdp"))
        .args(args)
        .output()
        .expect("kxdp runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trace_on_the_embedded_cluster_prints_each_stage() {
    let (code, out, err) = kxdp(&[
        "trace",
        "--src",
        "10.244.1.11:40000",
        "--dst",
        "10.96.0.53:53",
        "--proto",
        "udp",
    ]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "entered:    pod default/client",
        "service:    kube-system/dns:dns (ClusterIP, Cluster policy)",
        "backends:   10.244.2.20:53",
        "verdict:    forward",
        "dnat:       10.96.0.53:53 -> 10.244.2.20:53",
        "exit:       remote node node-b over VXLAN (to 198.18.0.11, VNI 1)",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
}

#[test]
fn trace_json_is_one_object() {
    let (code, out, err) = kxdp(&[
        "trace",
        "--from",
        "uplink",
        "--src",
        "198.19.0.7:5000",
        "--dst",
        "198.18.0.10:30080",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["verdict"], "forward");
    assert_eq!(v["service"]["frontend"], "NodePort");
    assert_eq!(v["service"]["policy"], "Local");
    assert_eq!(v["exit"], "local pod default/web-0");
}

#[test]
fn trace_reads_manifest_files_and_names_bad_ones() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control/tests/fixtures/cluster.yaml"
    );
    let (code, out, err) = kxdp(&[
        "trace",
        "--manifest",
        fixture,
        "--src",
        "10.244.1.11:1",
        "--dst",
        "10.96.0.99:80",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("verdict:    drop (service_not_found)"),
        "no such service here: {out}"
    );

    let dir = std::env::temp_dir().join(format!("kxdp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: many}]}\n",
    )
    .unwrap();
    let (code, _, err) = kxdp(&[
        "trace",
        "--manifest",
        bad.to_str().unwrap(),
        "--src",
        "1.2.3.4:1",
        "--dst",
        "1.2.3.5:2",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.yaml")
            && err.contains("Service default/x")
            && err.contains("spec.ports[0].port"),
        "{err}"
    );
}

#[test]
fn bad_flags_and_foreign_sources_are_named() {
    let (code, _, err) = kxdp(&[
        "trace",
        "--src",
        "10.244.1.11:1",
        "--dst",
        "10.96.0.10:eighty",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--dst") && err.contains("eighty"), "{err}");
    let (code, _, err) = kxdp(&["trace", "--src", "10.244.1.99:1", "--dst", "10.96.0.10:80"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no pod on node node-a has address 10.244.1.99"),
        "{err}"
    );
}

/// Whether this process is root with all capabilities (the preflight tests drop some from
/// there); prints SKIP otherwise, and fails under CI where a skip is a failure.
fn privileged(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid0 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|v| v.split_whitespace().next() == Some("0"));
    let tools = ["setpriv", "prlimit"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if uid0 && tools {
        return true;
    }
    let why = "needs root and util-linux's setpriv and prlimit";
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: cannot run under CI: {why}"
    );
    eprintln!("SKIP {test}: {why}");
    false
}

fn run_with(wrapper: &[&str], args: &[&str]) -> (i32, String) {
    let out = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(env!("CARGO_BIN_EXE_kxdp"))
        .args(args)
        .output()
        .expect("the wrapper runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn preflight_names_what_is_missing_and_how_to_run() {
    if !privileged("preflight_names_what_is_missing_and_how_to_run") {
        return;
    }
    let (code, out, err) = kxdp(&["preflight", "--interface", "lo"]);
    assert_eq!((code, out.trim()), (0, "preflight: ok"), "{err}");

    let (code, err) = run_with(
        &["setpriv", "--bounding-set=-net_admin,-bpf,-sys_admin"],
        &["preflight", "--interface", "lo", "--interface", "nope0"],
    );
    assert_eq!(code, 1, "{err}");
    for wanted in [
        "missing capability cap_net_admin",
        "missing capability cap_bpf",
        "setcap cap_net_admin",
        "interface nope0 does not exist",
    ] {
        assert!(err.contains(wanted), "{wanted:?} in {err}");
    }
    assert!(
        !err.contains("missing capability cap_net_raw"),
        "cap_net_raw was kept: {err}"
    );

    let (code, err) = run_with(
        &[
            "prlimit",
            "--memlock=65536",
            "setpriv",
            "--bounding-set=-ipc_lock",
        ],
        &["preflight", "--workers", "2"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("locked memory is limited to 65536 bytes but the UMEMs need 67108864"),
        "{err}"
    );
    // With cap_ipc_lock the limit does not matter.
    let (code, err) = run_with(
        &["prlimit", "--memlock=65536"],
        &["preflight", "--workers", "2"],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn agent_settings_are_checked_before_anything_runs() {
    let (code, _, err) = kxdp(&["agent", "--uplink", "lo"]);
    assert_eq!(code, 1);
    assert!(err.contains("--node") && err.contains("KXDP_NODE"), "{err}");
    let (code, _, err) = kxdp(&["agent", "--node", "n", "--cores", "1,1"]);
    assert_eq!(code, 1);
    assert!(err.contains("--cores") && err.contains("twice"), "{err}");
    let (code, _, err) = kxdp(&["agent", "--node", "n", "--config", "/nonexistent/kxdp.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/kxdp.yaml"), "{err}");
    // The environment counts as a flag: the node comes from it, the bad mode is named.
    let out = Command::new(env!("CARGO_BIN_EXE_kxdp"))
        .args(["agent", "--mode", "spin"])
        .env("KXDP_NODE", "node-a")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("--mode") && err.contains("spin"), "{err}");
}

#[test]
fn the_cli_says_when_no_agent_answers() {
    for cmd in ["status", "services", "conntrack", "routes", "counters"] {
        let (code, _, err) = kxdp(&[cmd, "--admin", "unix:/nonexistent/kxdp.sock"]);
        assert_eq!(code, 1, "{cmd}");
        assert!(
            err.contains("cannot reach the kxdp agent's admin API at unix:/nonexistent/kxdp.sock"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn agent_refuses_to_start_without_capabilities_memory_or_its_uplink() {
    if !privileged("agent_refuses_to_start_without_capabilities_memory_or_its_uplink") {
        return;
    }
    // Every case fails in preflight, before the agent touches any interface. Should preflight
    // ever pass here, the missing kubeconfig still stops the agent before it starts a dataplane
    // in this (the root) namespace.
    let agent = |uplink: &'static str| -> Vec<&'static str> {
        vec![
            "agent",
            "--node",
            "node-a",
            "--uplink",
            uplink,
            "--admin",
            "127.0.0.1:0",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ]
    };
    let (code, err) = run_with(
        &["setpriv", "--bounding-set=-net_admin,-bpf,-sys_admin"],
        &agent("lo"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("preflight: missing capability cap_net_admin")
            && err.contains("preflight: missing capability cap_bpf"),
        "{err}"
    );
    let (code, _, err) = kxdp(&agent("nope0"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("preflight: interface nope0 does not exist"),
        "{err}"
    );
    // The host interface must exist, and be a veth whose peer is in this namespace.
    let mut host = agent("lo");
    host.extend(["--host-interface", "nope1"]);
    let (code, _, err) = kxdp(&host);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("preflight: interface nope1 does not exist"),
        "{err}"
    );
    let mut host = agent("lo");
    host.extend(["--host-interface", "lo"]);
    let (code, _, err) = kxdp(&host);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--host-interface lo: interface lo is not a veth"),
        "{err}"
    );
    let mut two = agent("lo");
    two.extend(["--cores", "0,1"]);
    let (code, err) = run_with(
        &[
            "prlimit",
            "--memlock=65536",
            "setpriv",
            "--bounding-set=-ipc_lock",
        ],
        &two,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("preflight: locked memory is limited to 65536 bytes"),
        "{err}"
    );
}
