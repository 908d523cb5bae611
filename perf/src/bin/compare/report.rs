//! The report being written: its markdown, the figures the plot needs and the targets met or
//! not ([`Report`]), the number formats its tables share, and the machine it ran on.

use kxdp_perf::stats::{median, range};

use crate::paths::Path;

/// The report being written.
pub(crate) struct Report {
    pub(crate) md: String,
    /// (size, flows, destination, path, median Mpps) for the plot.
    pub(crate) pps: Vec<(usize, u32, &'static str, Path, f64)>,
    /// (path name, p50, p99, p99.9 in µs) for the plot.
    pub(crate) latency: Vec<(String, [f64; 3])>,
    /// The targets: (target, what was measured, met).
    pub(crate) targets: Vec<(String, String, bool)>,
}

pub(crate) fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

pub(crate) fn spread(v: &[f64], f: impl Fn(f64) -> String) -> String {
    let (lo, hi) = range(v);
    format!("{} ({}–{})", f(median(v)), f(lo), f(hi))
}

/// The machine this ran on.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem:.0} GiB, Linux {}; load average before the run: {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
