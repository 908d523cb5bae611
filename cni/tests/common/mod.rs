//! What both integration tests share: running the built plugin as a runtime runs it.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// The plugin binary cargo built for these tests.
const BIN: &str = env!("CARGO_BIN_EXE_kxdp-cni");

/// Run the plugin inside network namespace `node` (`nsenter --net=`, which leaves /sys as it
/// is), with `env` its only `CNI_*` variables and `stdin` its input: whether it succeeded,
/// its stdout and its stderr.
pub(crate) fn run_plugin(node: &str, env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .arg(BIN)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", "/nonexistent/cni/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsenter runs (util-linux)");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("the plugin reads its configuration");
    let out = child.wait_with_output().expect("the plugin runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
