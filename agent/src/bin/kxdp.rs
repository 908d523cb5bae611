//! `kxdp`: the operator's command (see `kxdp_agent::cli`).

fn main() -> std::process::ExitCode {
    kxdp_agent::cli::main()
}
