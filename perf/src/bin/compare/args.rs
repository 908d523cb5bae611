//! The command line: the flags with their defaults, and the `--long` profile; checked before
//! anything is built.

use std::path::PathBuf;

const USAGE: &str =
    "usage: compare [--long] [--seconds S] [--runs R] [--latency-runs R] [--sizes 64,1500] \
                     [--flows 1,10000] [--cpu-rate PPS] [--rps N] [--gen-core G] \
                     [--worker-core W] [--mtus 1500,9000] [--out DIR] \
                     [--skip pps,profile,cpu,iperf,latency]";

/// The command line.
#[derive(Clone)]
pub(crate) struct Args {
    pub(crate) seconds: f64,
    pub(crate) runs: usize,
    /// Runs of each latency path: more than of the rest, as a p99 of one run of 2000
    /// requests moves with this machine's scheduling noise from run to run.
    pub(crate) latency_runs: usize,
    pub(crate) sizes: Vec<usize>,
    pub(crate) flows: Vec<u32>,
    pub(crate) cpu_rate: u64,
    pub(crate) rps: u32,
    pub(crate) iperf_secs: u32,
    /// Underlay MTUs of the two-node clusters (iperf3; latency at 1500).
    pub(crate) mtus: Vec<u16>,
    pub(crate) gen_core: usize,
    pub(crate) worker_core: usize,
    pub(crate) out: Option<PathBuf>,
    pub(crate) skip: Vec<String>,
    pub(crate) profile: &'static str,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 2.0,
        runs: 3,
        latency_runs: 9,
        sizes: vec![64, 1500],
        flows: vec![1, 10_000],
        cpu_rate: 100_000,
        rps: 1000,
        iperf_secs: 3,
        mtus: vec![1500, 9000],
        gen_core: 0,
        worker_core: 1,
        out: None,
        skip: Vec::new(),
        profile: "short",
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        if flag == "--long" {
            a.seconds = 5.0;
            a.runs = 5;
            a.latency_runs = 15;
            a.sizes = vec![64, 256, 512, 1024, 1500];
            a.iperf_secs = 10;
            a.profile = "long";
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}\n{USAGE}");
        let list = |what: &str| -> Result<Vec<u64>, String> {
            value
                .split(',')
                .map(|s| s.parse().map_err(|_| bad(what)))
                .collect()
        };
        match flag.as_str() {
            "--seconds" => {
                a.seconds = value.parse().map_err(|_| bad("seconds"))?;
                if !(0.5..=600.0).contains(&a.seconds) {
                    return Err(bad("0.5 to 600 seconds"));
                }
            }
            "--runs" => a.runs = value.parse().map_err(|_| bad("a count"))?,
            "--latency-runs" => a.latency_runs = value.parse().map_err(|_| bad("a count"))?,
            "--sizes" => {
                a.sizes = list("frame sizes")?
                    .into_iter()
                    .map(|n| n as usize)
                    .collect();
                if a.sizes.iter().any(|n| !(60..=1514).contains(n)) {
                    return Err(bad("frame sizes from 60 to 1514"));
                }
            }
            "--flows" => {
                a.flows = list("flow counts")?.into_iter().map(|n| n as u32).collect();
                if a.flows.iter().any(|n| !(1..=50_000).contains(n)) {
                    return Err(bad("flow counts from 1 to 50000"));
                }
            }
            "--mtus" => {
                a.mtus = list("underlay MTUs")?
                    .into_iter()
                    .map(|n| u16::try_from(n).unwrap_or(0))
                    .collect();
                if a.mtus.iter().any(|n| !(1280..=9000).contains(n)) {
                    return Err(bad("underlay MTUs from 1280 to 9000"));
                }
            }
            "--cpu-rate" => a.cpu_rate = value.parse().map_err(|_| bad("packets per second"))?,
            "--rps" => a.rps = value.parse().map_err(|_| bad("requests per second"))?,
            "--gen-core" => a.gen_core = value.parse().map_err(|_| bad("a core number"))?,
            "--worker-core" => a.worker_core = value.parse().map_err(|_| bad("a core number"))?,
            "--out" => a.out = Some(value.into()),
            "--skip" => a.skip = value.split(',').map(str::to_owned).collect(),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.runs == 0 || a.latency_runs == 0 || a.cpu_rate == 0 || !(1..=100_000).contains(&a.rps) {
        return Err(format!(
            "--runs, --latency-runs, --cpu-rate and --rps (at most 100000) must be positive\n{USAGE}"
        ));
    }
    Ok(a)
}
