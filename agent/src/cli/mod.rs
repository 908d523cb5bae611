//! `kxdp`: the operator's command.
//!
//! - `kxdp agent` runs the node's dataplane (see [`crate::run`]).
//! - `kxdp status|services|conntrack|routes|counters|policies` read a running agent's admin
//!   API and print plain tables, or with `--json` the API's JSON (see [`crate::admin`]).
//! - `kxdp trace` runs one packet through the real pipeline against tables compiled from
//!   manifest files (the embedded default cluster when none is given) or a running agent's
//!   live tables (`--agent`), and prints what each stage decided; `--json` prints the same as
//!   one JSON object (fields: see `kxdp_control::trace`).
//! - `kxdp preflight` checks what the agent will need.
//! - `kxdp uninstall` removes what kxdp put on the node (see [`crate::uninstall`]).
//! - `kxdp completion bash|zsh|fish|elvish|powershell` prints a completion script
//!   (`clap_complete`); `kxdp man [COMMAND]` prints the manual page, `kxdp(1)` or
//!   `kxdp-COMMAND(1)`, as roff (`clap_mangen`): both come from the same definitions as the
//!   parser, so they cannot fall behind it.
//!
//! Output goes to stdout in one write; a reader that goes away early (`kxdp trace … | head
//! -1`) is not an error: the command stops writing and exits 0, silently, as a reader that
//! has what it wanted expects (the way `ls | head` ends quietly, without SIGPIPE's status 141
//! failing a `pipefail` script). Other write errors are reported and exit 1.

pub mod render;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::admin::{self, AdminAddr};
use clap::{CommandFactory, Parser, Subcommand};
use kxdp_control::compile::Compiler;
use kxdp_control::json::Proto;
use kxdp_control::manifest::{parse, ManifestSource};
use kxdp_control::model::Model;
use kxdp_control::trace::{trace, trace_settings, Entry, TraceInput};

fn run_agent(args: crate::settings::AgentArgs) -> Result<String, String> {
    let config = args.resolve().map_err(|e| e.to_string())?;
    crate::logs::init_logs(config.json_logs);
    crate::logs::abort_on_panic();
    crate::run::run(config).map_err(|e| e.to_string())?;
    Ok(String::new())
}

/// GET a view and print it as JSON or as `render` prints it.
fn view<T: serde::de::DeserializeOwned + serde::Serialize>(
    args: &AdminArgs,
    path: &str,
    render: impl Fn(&T) -> String,
) -> Result<String, String> {
    let value: T = admin::get_json(&args.admin, path)?;
    if args.json {
        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
    } else {
        Ok(render(&value))
    }
}

#[derive(Parser)]
#[command(
    name = "kxdp",
    version,
    about = "kxdp, a Kubernetes node dataplane on AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node's dataplane until stopped (SIGINT/SIGTERM detach it cleanly).
    Agent(Box<crate::settings::AgentArgs>),
    /// The agent's state: source, snapshot, workers, interfaces, problems.
    Status(AdminArgs),
    /// Each service port with its frontends and backends, and their state.
    Services(AdminArgs),
    /// Flows in conntrack (filtered), and how many there are.
    Conntrack(ConntrackArgs),
    /// Where each destination goes.
    Routes(AdminArgs),
    /// Pipeline events, drops by reason, frames to the host by reason, AF_XDP I/O.
    Counters(AdminArgs),
    /// This node's pods, the NetworkPolicies selecting each, and what they allow.
    Policies(PoliciesArgs),
    /// Run one packet through the pipeline and print each stage's decision.
    Trace(TraceArgs),
    /// Check that this machine and process can run the dataplane: capabilities, locked
    /// memory, interfaces. The agent runs the same checks before it starts.
    Preflight(PreflightArgs),
    /// Remove what kxdp put on this node once its agent has stopped: the host veth pair the
    /// agent made (its routes go with it), the subnet file, and where named, the CNI
    /// configuration, plugin and addresses.
    Uninstall(crate::uninstall::UninstallArgs),
    /// Print a shell completion script (bash: `source <(kxdp completion bash)`).
    Completion(CompletionArgs),
    /// Print the manual page as roff (`kxdp man | man -l -`; `kxdp man trace` for
    /// kxdp-trace(1)).
    Man(ManArgs),
}

#[derive(clap::Args)]
struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
struct ManArgs {
    /// A command whose page to print (kxdp-COMMAND(1)); kxdp(1) if none.
    #[arg(value_name = "COMMAND")]
    command: Option<String>,
}

fn completion(args: CompletionArgs) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "kxdp", &mut out);
    Ok(out)
}

fn man(args: ManArgs) -> Result<Vec<u8>, String> {
    let mut cli = Cli::command();
    // Built, subcommands know their full names (`kxdp trace`, page kxdp-trace).
    cli.build();
    let page = match &args.command {
        None => cli,
        Some(name) => cli.find_subcommand(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = cli.get_subcommands().map(clap::Command::get_name).collect();
            format!("man: no command {name:?} (kxdp has {})", names.join(", "))
        })?,
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| format!("man: {e}"))?;
    Ok(out)
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The agent's debug API (its --admin): unix:PATH or ADDRESS:PORT.
    #[arg(long, env = "KXDP_ADMIN", default_value = admin::DEFAULT_ADMIN)]
    admin: AdminAddr,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ConntrackArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Only flows of this protocol.
    #[arg(long, value_enum)]
    proto: Option<Proto>,
    /// Only flows with this address in either direction.
    #[arg(long)]
    addr: Option<Ipv4Addr>,
    /// Only flows with this port in either direction.
    #[arg(long)]
    port: Option<u16>,
    /// List at most this many (all are counted).
    #[arg(
        long,
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(0..=admin::server::MAX_FLOWS_LISTED as u64),
    )]
    limit: u64,
}

#[derive(clap::Args)]
struct PoliciesArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Only this pod (`namespace/name`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pod: Option<String>,
}

fn run_policies(args: PoliciesArgs) -> Result<String, String> {
    let mut pods: Vec<admin::views::PodPolicyView> =
        admin::get_json(&args.admin.admin, "/api/policies")?;
    if let Some(want) = &args.pod {
        pods.retain(|p| &p.pod == want);
        if pods.is_empty() {
            return Err(format!("policies: no pod {want} on this node"));
        }
    }
    if args.admin.json {
        serde_json::to_string_pretty(&pods).map_err(|e| e.to_string())
    } else {
        Ok(render::policies(&pods))
    }
}

#[derive(clap::Args)]
struct PreflightArgs {
    /// An interface the dataplane is to drive (repeat for each).
    #[arg(long = "interface", value_name = "NAME")]
    interfaces: Vec<String>,
    /// Workers (one UMEM each), at most one per queue the XDP program steers.
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(kxdp_xdp::runtime::MAX_QUEUES)),
    )]
    workers: u32,
}

fn run_preflight(args: PreflightArgs) -> Result<String, String> {
    let problems = crate::preflight::check(
        &args.interfaces,
        crate::settings::umem_bytes(args.workers as usize),
    );
    if problems.is_empty() {
        return Ok("preflight: ok".into());
    }
    let lines: Vec<String> = problems.iter().map(|p| format!("preflight: {p}")).collect();
    Err(lines.join("\nkxdp: "))
}

#[derive(clap::Args)]
struct TraceArgs {
    /// Kubernetes YAML files (Services, EndpointSlices, Nodes, Pods); the embedded default
    /// cluster if none.
    #[arg(long = "manifest", value_name = "FILE")]
    manifests: Vec<PathBuf>,
    /// The node the packet is on.
    #[arg(long, default_value = "node-a")]
    node: String,
    /// Where the packet enters.
    #[arg(long, value_enum, default_value = "pod")]
    from: Entry,
    /// Source address and port (`10.244.1.11:40000`; for ICMP the port is the echo identifier).
    #[arg(long, value_parser = admin::parse_endpoint)]
    src: (Ipv4Addr, u16),
    /// Destination address and port (`10.96.0.10:80`).
    #[arg(long, value_parser = admin::parse_endpoint)]
    dst: (Ipv4Addr, u16),
    /// The protocol.
    #[arg(long, value_enum, default_value = "tcp")]
    proto: Proto,
    /// The cluster (pod) CIDR.
    #[arg(long, default_value = "10.244.0.0/16", value_parser = parse_cidr)]
    cluster_cidr: kxdp_dataplane::wire::Ipv4Cidr,
    /// The service CIDR.
    #[arg(long, default_value = "10.96.0.0/12", value_parser = parse_cidr)]
    service_cidr: kxdp_dataplane::wire::Ipv4Cidr,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Trace against a running agent's live tables (its admin API: ADDRESS:PORT or
    /// unix:PATH) instead of manifests.
    #[arg(long, value_name = "ADMIN", conflicts_with = "manifests")]
    agent: Option<AdminAddr>,
}

fn parse_cidr(text: &str) -> Result<kxdp_dataplane::wire::Ipv4Cidr, String> {
    kxdp_control::model::parse_cidr(text).map_err(|e| e.to_string())
}

fn run_trace(args: TraceArgs) -> Result<String, String> {
    if let Some(agent) = &args.agent {
        let path = format!(
            "/api/trace?from={}&src={}:{}&dst={}:{}&proto={}{}",
            args.from,
            args.src.0,
            args.src.1,
            args.dst.0,
            args.dst.1,
            args.proto,
            if args.json { "" } else { "&format=text" }
        );
        let (status, body) = admin::get(agent, &path)?;
        return if status == 200 {
            Ok(body)
        } else {
            Err(format!("the agent says: {}", body.trim()))
        };
    }
    let mut model = Model::new();
    if args.manifests.is_empty() {
        for (_, o) in parse(
            "(embedded default)",
            kxdp_control::manifest::DEFAULT_MANIFEST,
        )
        .map_err(|e| e.to_string())?
        {
            model.apply(&o).map_err(|e| e.to_string())?;
        }
    } else {
        ManifestSource::new(args.manifests)
            .load(&mut model)
            .map_err(|e| e.to_string())?;
    }
    let settings = trace_settings(&model, &args.node, args.cluster_cidr, args.service_cidr);
    let compiled = Compiler::new(settings)
        .compile(&mut model)
        .map_err(|e| e.to_string())?;
    for p in &compiled.problems {
        eprintln!("kxdp: left out of the tables: {p}");
    }
    let input = TraceInput {
        entry: args.from,
        src: args.src,
        dst: args.dst,
        proto: args.proto.number(),
    };
    let t = trace(&compiled.snapshot, &input).map_err(|e| e.to_string())?;
    if args.json {
        serde_json::to_string_pretty(&t).map_err(|e| e.to_string())
    } else {
        Ok(t.to_string())
    }
}

/// Run the command line `std::env::args()` says; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let text = |r: Result<String, String>| {
        r.map(|mut out| {
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            if !out.is_empty() {
                out.push('\n');
            }
            out.into_bytes()
        })
    };
    let result = match cli.command {
        Command::Agent(args) => text(run_agent(*args)),
        Command::Status(a) => text(view(&a, "/api/status", render::status)),
        Command::Services(a) => text(view(&a, "/api/services", |v: &Vec<_>| render::services(v))),
        Command::Routes(a) => text(view(&a, "/api/routes", |v: &Vec<_>| render::routes(v))),
        Command::Counters(a) => text(view(&a, "/api/counters", render::counters)),
        Command::Policies(a) => text(run_policies(a)),
        Command::Conntrack(c) => {
            let mut path = format!("/api/conntrack?limit={}", c.limit);
            if let Some(p) = c.proto {
                path += &format!("&proto={p}");
            }
            if let Some(a) = c.addr {
                path += &format!("&addr={a}");
            }
            if let Some(p) = c.port {
                path += &format!("&port={p}");
            }
            text(view(&c.admin, &path, render::flows))
        }
        Command::Trace(args) => text(run_trace(args)),
        Command::Preflight(args) => text(run_preflight(args)),
        Command::Uninstall(args) => text(crate::uninstall::uninstall(&args)),
        Command::Completion(args) => completion(args),
        Command::Man(args) => man(args),
    };
    match result {
        Ok(out) => emit(&out),
        Err(e) => {
            eprintln!("kxdp: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Write `out` to stdout. A closed pipe means the reader has what it wanted: exit 0 without a
/// word (see the module docs); `println!` would panic there.
fn emit(out: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kxdp: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_takes_as_many_workers_as_the_program_has_queues() {
        let max = kxdp_xdp::runtime::MAX_QUEUES;
        let workers = |n: u32| {
            Cli::try_parse_from(["kxdp", "preflight", "--workers", &n.to_string()]).map(|c| match c
                .command
            {
                Command::Preflight(a) => a.workers,
                _ => unreachable!("preflight parses as preflight"),
            })
        };
        assert_eq!(workers(max).unwrap(), max);
        assert!(workers(max + 1).is_err());
        assert!(workers(0).is_err());
    }
}
