//! `kxdp`: the operator's command. `kxdp trace` runs one packet through the real pipeline
//! against tables compiled from manifest files (the embedded default cluster when none is
//! given) and prints what each stage decided; `--json` prints the same as one JSON object
//! (fields: see `kxdp_control::trace`). `kxdp preflight` checks what the agent will need. The
//! agent and the other commands come with issue 5.

// The command's output is its point.
#![allow(clippy::print_stdout)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kxdp_control::compile::Compiler;
use kxdp_control::manifest::{parse, ManifestSource};
use kxdp_control::model::Model;
use kxdp_control::trace::{trace, trace_settings, Entry, TraceInput};

/// The cluster `kxdp trace` uses when no manifest is given.
const DEFAULT_MANIFEST: &str = include_str!("../../manifests/default.yaml");

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
    /// Run one packet through the pipeline and print each stage's decision.
    Trace(TraceArgs),
    /// Check that this machine and process can run the dataplane: capabilities, locked
    /// memory, interfaces. The agent runs the same checks before it starts.
    Preflight(PreflightArgs),
}

#[derive(clap::Args)]
struct PreflightArgs {
    /// An interface the dataplane is to drive (repeat for each).
    #[arg(long = "interface", value_name = "NAME")]
    interfaces: Vec<String>,
    /// Workers (one UMEM each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
}

/// Bytes of one worker's UMEM (`kxdp_xdp::xsk::PortConfig::default()`: 16384 chunks of 2 KiB).
const UMEM_BYTES: u64 = 16384 * 2048;

fn run_preflight(args: PreflightArgs) -> Result<String, String> {
    let problems =
        kxdp_control::preflight::check(&args.interfaces, UMEM_BYTES * u64::from(args.workers));
    if problems.is_empty() {
        return Ok("preflight: ok".into());
    }
    let lines: Vec<String> = problems.iter().map(|p| format!("preflight: {p}")).collect();
    Err(lines.join("\nkxdp: "))
}

#[derive(Clone, Copy, ValueEnum)]
enum From {
    /// From the local pod that owns the source address.
    Pod,
    /// From outside, on the uplink.
    Uplink,
    /// From the node's own kernel.
    Host,
}

#[derive(Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
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
    from: From,
    /// Source address and port (`10.244.1.11:40000`; for ICMP the port is the echo identifier).
    #[arg(long, value_parser = parse_endpoint)]
    src: (Ipv4Addr, u16),
    /// Destination address and port (`10.96.0.10:80`).
    #[arg(long, value_parser = parse_endpoint)]
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
}

fn parse_endpoint(text: &str) -> Result<(Ipv4Addr, u16), String> {
    let (ip, port) = text.split_once(':').unwrap_or((text, "0"));
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    Ok((ip, port))
}

fn parse_cidr(text: &str) -> Result<kxdp_dataplane::wire::Ipv4Cidr, String> {
    kxdp_control::model::parse_cidr(text).ok_or_else(|| format!("{text:?} is not an IPv4 CIDR"))
}

fn run_trace(args: TraceArgs) -> Result<String, String> {
    let mut model = Model::new();
    if args.manifests.is_empty() {
        for (_, o) in parse("(embedded default)", DEFAULT_MANIFEST).map_err(|e| e.to_string())? {
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
    let input = TraceInput {
        entry: match args.from {
            From::Pod => Entry::Pod,
            From::Uplink => Entry::Uplink,
            From::Host => Entry::Host,
        },
        src: args.src,
        dst: args.dst,
        proto: match args.proto {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        },
    };
    let t = trace(&compiled.snapshot, &input).map_err(|e| e.to_string())?;
    if args.json {
        serde_json::to_string_pretty(&t).map_err(|e| e.to_string())
    } else {
        Ok(t.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => run_trace(args),
        Command::Preflight(args) => run_preflight(args),
    };
    match result {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kxdp: {e}");
            ExitCode::FAILURE
        }
    }
}
