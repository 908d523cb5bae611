//! The `kxdp` command as an operator runs it: `kxdp trace` on the embedded default cluster and
//! on a manifest file, as text and as JSON (typed fields), and the errors for a bad flag, a bad
//! manifest and a source address no pod owns; output into a pipe its reader closes; the
//! completion scripts loaded by their shells and the manual page rendered by `man`.

use std::process::Command;

use kxdp_testkit::ScratchDir;

/// A scratch folder for test `name`, removed when dropped.
fn scratch(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("cli-{name}"))
}

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
fn trace_json_is_one_object_of_typed_fields() {
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
    let endpoint = |ip: &str, port: u16| serde_json::json!({"ip": ip, "port": port});
    assert_eq!(v["entered"], serde_json::json!({"via": "uplink"}));
    assert_eq!(
        v["packet"],
        serde_json::json!({"proto": "tcp", "src": endpoint("198.19.0.7", 5000),
                           "dst": endpoint("198.18.0.10", 30080)})
    );
    assert_eq!(v["verdict"], "forward");
    assert_eq!(v["reason"], serde_json::Value::Null);
    assert_eq!(
        v["service"]["frontend"],
        serde_json::json!({"kind": "NodePort", "ip": null, "port": 30080})
    );
    assert_eq!(v["service"]["policy"], "Local");
    assert_eq!(
        v["service"]["backends"],
        serde_json::json!([endpoint("10.244.1.10", 8080)])
    );
    assert_eq!(v["service"]["chosen"], endpoint("10.244.1.10", 8080));
    assert_eq!(
        v["dnat"],
        serde_json::json!({"from": endpoint("198.18.0.10", 30080),
                           "to": endpoint("10.244.1.10", 8080)})
    );
    assert_eq!(v["snat"], serde_json::Value::Null, "Local keeps the client");
    assert_eq!(v["conntrack"]["state"], "tcp_opening");
    assert_eq!(v["packet_out"]["src"], endpoint("198.19.0.7", 5000));
    assert_eq!(
        v["exit"],
        serde_json::json!({"to": "pod", "pod": "default/web-0", "ip": "10.244.1.10"})
    );
    let events: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(events.contains(&"service_new_flow"), "{events:?}");

    // A rejection names the event the pipeline counted for it, not an invented reason.
    let (code, out, err) = kxdp(&[
        "trace",
        "--src",
        "10.244.1.11:40000",
        "--dst",
        "10.96.0.99:80",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (&v["verdict"], &v["reason"]),
        (
            &serde_json::json!("reject"),
            &serde_json::json!("icmp_port_unreachable")
        )
    );
    assert_eq!(
        v["packet_out"],
        serde_json::json!({"proto": "icmp", "src": endpoint("10.96.0.99", 0),
                           "dst": endpoint("10.244.1.11", 0)})
    );
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

    let dir = scratch("bad");
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
fn trace_names_what_the_compiler_left_out() {
    let dir = scratch("rogue");
    let manifest = dir.join("rogue.yaml");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control/tests/fixtures/cluster.yaml"
    );
    std::fs::write(
        &manifest,
        std::fs::read_to_string(fixture).unwrap()
            + "---\napiVersion: v1\nkind: Service\nmetadata: {name: rogue}\n\
               spec: {clusterIP: 8.8.8.8, ports: [{port: 53, protocol: UDP}]}\n",
    )
    .unwrap();
    let (code, out, err) = kxdp(&[
        "trace",
        "--manifest",
        manifest.to_str().unwrap(),
        "--src",
        "10.244.1.11:1",
        "--dst",
        "8.8.8.8:53",
        "--proto",
        "udp",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "kxdp: left out of the tables: Service default/rogue: spec.clusterIP: 8.8.8.8 is outside the service CIDR 10.96.0.0/12"
        ),
        "{err}"
    );
    // Not captured by the rogue service: masqueraded to the outside.
    assert!(
        !out.contains("service:") && out.contains("exit:       uplink"),
        "{out}"
    );
}

#[test]
fn cidr_flags_are_parsed_and_host_bits_refused() {
    let (code, _, err) = kxdp(&[
        "trace",
        "--service-cidr",
        "10.96.0.1/12",
        "--src",
        "10.244.1.11:1",
        "--dst",
        "10.96.0.10:80",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--service-cidr")
            && err.contains("bits set beyond the prefix length")
            && err.contains("10.96.0.0/12"),
        "{err}"
    );
    let (code, _, err) = kxdp(&[
        "trace",
        "--cluster-cidr",
        "10.244.0.0/33",
        "--src",
        "10.244.1.11:1",
        "--dst",
        "10.96.0.10:80",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--cluster-cidr") && err.contains("not an IPv4 CIDR"),
        "{err}"
    );
    // A narrower service CIDR is honoured: 10.96.0.10 is outside 10.96.1.0/24, so the web
    // service is left out and named.
    let (code, out, err) = kxdp(&[
        "trace",
        "--service-cidr",
        "10.96.1.0/24",
        "--src",
        "10.244.1.11:1",
        "--dst",
        "10.96.0.10:80",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Service default/web: spec.clusterIP: 10.96.0.10 is outside the service CIDR 10.96.1.0/24"),
        "{err}"
    );
    assert!(!out.contains("service:"), "{out}");
}

/// `kxdp … | head -1` (println on a closed pipe used to panic, and abort with 134 in a release
/// build): the command exits 0 and says nothing. Forty runs through a real pipe closed after
/// one line (the race lands either way), then runs into a pipe whose reader is closed before
/// the command starts, so its write certainly fails with EPIPE.
#[test]
fn a_reader_that_closes_the_pipe_ends_the_command_quietly() {
    let bin = env!("CARGO_BIN_EXE_kxdp");
    let script = r#"
        for i in $(seq 40); do
            "$KXDP" trace --src 10.244.1.11:40000 --dst 10.96.0.10:80 2>>"$ERR" | head -1 >/dev/null
            echo "${PIPESTATUS[0]}"
        done"#;
    let errors = std::env::temp_dir().join(format!("kxdp-pipe-{}.err", std::process::id()));
    let out = Command::new("bash")
        .args(["-c", script])
        .env("KXDP", bin)
        .env("ERR", &errors)
        .output()
        .expect("bash runs");
    let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
    let _ = std::fs::remove_file(&errors);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes: Vec<&str> = stdout.lines().collect();
    assert_eq!(codes.len(), 40, "{codes:?}");
    assert!(
        codes.iter().all(|c| *c == "0"),
        "exit codes: {codes:?}\n{stderr}"
    );
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");

    // The largest outputs (the bash completion script is ~19 KB), and the trace both ways.
    for args in [
        &["completion", "bash"][..],
        &["man"],
        &[
            "trace",
            "--src",
            "10.244.1.11:40000",
            "--dst",
            "10.96.0.10:80",
        ],
        &[
            "trace",
            "--src",
            "10.244.1.11:40000",
            "--dst",
            "10.96.0.10:80",
            "--json",
        ],
    ] {
        // The only read end is closed before the command exists: any write(2) it makes to
        // stdout fails with EPIPE (Rust ignores SIGPIPE, so no signal ends it first).
        let (reader, writer) = nix::unistd::pipe().expect("a pipe");
        drop(reader);
        let out = Command::new(bin)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("kxdp runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn completion_scripts_load_in_their_shells() {
    let bin = env!("CARGO_BIN_EXE_kxdp");
    let has = |shell: &str| {
        Command::new(shell)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // bash: the script loads, registers `kxdp`, and completes a subcommand.
    let out = Command::new("bash")
        .args([
            "-c",
            r#"source <("$KXDP" completion bash) && complete -p kxdp &&
               COMP_WORDS=(kxdp tr) COMP_CWORD=1 COMP_LINE='kxdp tr' COMP_POINT=7 &&
               _kxdp kxdp tr kxdp && echo "${COMPREPLY[@]}""#,
        ])
        .env("KXDP", bin)
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("-F _kxdp") && text.contains(" kxdp\n") && text.ends_with("trace\n"),
        "{text}"
    );
    // zsh and fish, where installed; otherwise the scripts at least name the command.
    let (_, zsh, _) = kxdp(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef kxdp"), "{zsh}");
    if has("zsh") {
        let out = Command::new("zsh")
            .args([
                "-f",
                "-c",
                r#"autoload -U compinit && compinit -u -D && source <("$KXDP" completion zsh) && print -r -- $_comps[kxdp]"#,
            ])
            .env("KXDP", bin)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "_kxdp\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("zsh is not installed: its script is checked for the command name only");
    }
    let (_, fish, _) = kxdp(&["completion", "fish"]);
    assert!(fish.contains("complete -c kxdp"), "{fish}");
    if has("fish") {
        let out = Command::new("fish")
            .args([
                "--no-config",
                "-c",
                r#""$KXDP" completion fish | source; complete -C 'kxdp tr'; complete -C 'kxdp trace --fr'"#,
            ])
            .env("KXDP", bin)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("trace\t") && text.contains("--from\t"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("fish is not installed: its script is checked for the command name only");
    }
    let (code, _, err) = kxdp(&["completion", "tcsh"]);
    assert_eq!(code, 2);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn the_manual_pages_render_without_warnings() {
    let (code, _, err) = kxdp(&["man", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no command \"nope\"") && err.contains("trace"),
        "{err}"
    );
    let man_db = Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !man_db {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "man (man-db, groff) is missing: scripts/install-deps.sh installs it"
        );
        eprintln!("SKIP the_manual_pages_render_without_warnings: no man (man-db, groff)");
        return;
    }
    let dir = scratch("man");
    for (page, args, wanted) in [
        (
            "kxdp.1",
            &["man"][..],
            &["kxdp-trace(1)", "kxdp-completion(1)", "kxdp-man(1)"][..],
        ),
        (
            "kxdp-trace.1",
            &["man", "trace"],
            &["kxdp-trace - Run one packet", "--service-cidr", "--json"],
        ),
    ] {
        let (code, roff, err) = kxdp(args);
        assert_eq!(code, 0, "{err}");
        let path = dir.join(page);
        std::fs::write(&path, &roff).unwrap();
        // As lintian checks pages: groff's warnings on, output discarded.
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(&path)
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        let text = Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(&path)
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        for w in wanted {
            assert!(text.contains(w), "{page}: {w:?} in\n{text}");
        }
    }
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
    // The agent lists at most 10000 flows per request; asking for more is refused here.
    let (code, _, err) = kxdp(&["conntrack", "--limit", "10001"]);
    assert_eq!(code, 2);
    assert!(err.contains("--limit") && err.contains("10001"), "{err}");
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
        err.contains("locked memory is limited to 65536 bytes but the UMEMs need 134217728"),
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
    // A host interface that is missing is made, but only once everything else has passed:
    // the missing kubeconfig stops the agent first, and nothing appears in this (the root)
    // namespace. (tests/tests/host_interface.rs makes pairs, in namespaces of its own.)
    let mut host = agent("lo");
    host.extend(["--host-interface", "nope1"]);
    let (code, _, err) = kxdp(&host);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
    assert!(
        !std::path::Path::new("/sys/class/net/nope1").exists(),
        "the agent made nope1 before its start-up had passed"
    );
    // The kernel end's fixed name is not kxdp's end's.
    let mut host = agent("lo");
    host.extend(["--host-interface", "kxdp0"]);
    let (code, _, err) = kxdp(&host);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--host-interface: kxdp0 is the kernel's end"),
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

#[test]
fn cores_the_machine_does_not_have_are_refused_before_anything_runs() {
    // The CPUs this process (and so kxdp, started from it) may use, as the kernel lists them;
    // the one past the last is not among them.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status")
        .trim()
        .to_owned();
    let last: usize = allowed
        .split([',', '-'])
        .filter_map(|n| n.parse().ok())
        .max()
        .expect("a CPU");
    let cpu = (last + 1).to_string();
    // Refused while the configuration is read: before preflight, the uplink or any XDP.
    let (code, _, err) = kxdp(&["agent", "--node", "n", "--uplink", "nope0", "--cores", &cpu]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("configuration: --cores: CPU {cpu} is not online"))
            && err.contains(&format!("the CPUs it may use are {allowed}")),
        "{err}"
    );
    assert!(!err.contains("preflight"), "{err}");
}
