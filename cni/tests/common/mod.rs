//! What the integration tests share: running the built plugin as a runtime runs it.

use std::path::Path;

/// The plugin binary cargo built for these tests.
const BIN: &str = env!("CARGO_BIN_EXE_kxdp-cni");

/// Run the plugin inside network namespace `node` with `env` its only `CNI_*` variables and
/// `stdin` its input ([`kxdp_tests::cni::run_plugin`]): whether it succeeded, its stdout and
/// its stderr.
pub(crate) fn run_plugin(node: &str, env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    kxdp_tests::cni::run_plugin(Path::new(BIN), node, env, stdin).expect("the plugin runs")
}
