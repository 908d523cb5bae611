//! The standard `process_*` metrics, read from `/proc/self` at each scrape (prometheus-client
//! has no process collector of its own). Names and meanings follow the Go and Python clients,
//! so dashboards made for them work: CPU time, resident and virtual memory, open and maximum
//! file descriptors, start time, threads. A file that cannot be read leaves its metrics out.

use std::fmt;

use nix::sys::resource::{getrlimit, Resource};
use nix::unistd::{sysconf, SysconfVar};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::encode::{counter, gauge};

/// What `/proc/self/stat` says, in the units the metrics use.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcStat {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Start time, seconds since boot.
    pub start_since_boot: f64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Resident set size, pages.
    pub resident_pages: u64,
}

/// Parse `/proc/<pid>/stat` (see proc(5)); `ticks` is the clock-tick rate.
pub fn parse_stat(text: &str, ticks: f64) -> Option<ProcStat> {
    // The command name, field 2, is in parentheses and may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state); field N is fields[N - 3].
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_since_boot: field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time from `/proc/stat`, seconds since the epoch.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|t| t.trim().parse().ok())
}

/// The `process_*` metrics of this process.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let enc = &mut enc;
        let ticks = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&t| t > 0)
            .unwrap_or(100) as f64;
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|&p| p > 0)
            .unwrap_or(4096) as u64;
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t, ticks));
        if let Some(s) = &stat {
            counter(
                enc,
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                s.cpu_seconds,
            )?;
            gauge(
                enc,
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(&Unit::Bytes),
                s.resident_pages * page,
            )?;
            gauge(
                enc,
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(&Unit::Bytes),
                s.virtual_bytes,
            )?;
            gauge(
                enc,
                "process_threads",
                "Number of OS threads in the process.",
                None,
                s.threads,
            )?;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_boot_time(&t));
            if let Some(boot) = boot {
                gauge(
                    enc,
                    "process_start_time",
                    "Start time of the process since unix epoch in seconds.",
                    Some(&Unit::Seconds),
                    boot as f64 + s.start_since_boot,
                )?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                enc,
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                fds.count() as u64,
            )?;
        }
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            gauge(
                enc,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                soft,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        // A real line, with a command name holding a space and a parenthesis.
        let line = "4242 (kx (dp) a) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 \
                    7 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    3 0 0 0 0 0";
        let s = parse_stat(line, 100.0).unwrap();
        assert_eq!(
            s,
            ProcStat {
                cpu_seconds: 3.0,
                threads: 7,
                start_since_boot: 1234.56,
                virtual_bytes: 987_654_321,
                resident_pages: 2048,
            }
        );
        assert_eq!(parse_stat("garbage", 100.0), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_itself() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = parse_stat(&text, 100.0).unwrap();
        assert!(
            s.threads >= 1 && s.resident_pages > 0 && s.virtual_bytes > 0,
            "{s:?}"
        );
    }
}
