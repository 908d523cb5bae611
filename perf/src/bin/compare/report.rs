//! The report being written: its markdown, the figures the plot needs, the targets met or not
//! and every run's raw sample ([`Report`]), the number formats its tables share, the machine
//! it ran on and the commit it measured.

use kxdp_perf::stats::{median, range};

/// One bar of the plot: a median with the range of its runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point {
    /// Where on the x axis (a frame size, a test, a percentile).
    pub(crate) group: String,
    /// Which path: the plot's legend entry, one colour across every panel.
    pub(crate) series: &'static str,
    pub(crate) median: f64,
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    /// No run gave a number (drawn as a mark, not a bar of 0).
    pub(crate) failed: bool,
}

impl Point {
    /// The point of `runs` (median and range).
    pub(crate) fn of(group: String, series: &'static str, runs: &[f64]) -> Point {
        let (lo, hi) = if runs.is_empty() {
            (0.0, 0.0)
        } else {
            range(runs)
        };
        Point {
            group,
            series,
            median: median(runs),
            lo,
            hi,
            failed: runs.is_empty(),
        }
    }
}

/// The report being written.
pub(crate) struct Report {
    pub(crate) md: String,
    /// Mpps through a ClusterIP across nodes by frame size (many flows), for the plot.
    pub(crate) pps: Vec<Point>,
    /// TCP Gbit/s by test, for the plot.
    pub(crate) iperf: Vec<Point>,
    /// Round trips (µs) by percentile, for the plot.
    pub(crate) latency: Vec<Point>,
    /// The targets: (target, what was measured, met).
    pub(crate) targets: Vec<(String, String, bool)>,
    /// Every run of every measurement, as measured (`samples.json`).
    pub(crate) samples: Vec<serde_json::Value>,
}

impl Report {
    pub(crate) fn new() -> Report {
        Report {
            md: String::new(),
            pps: Vec::new(),
            iperf: Vec::new(),
            latency: Vec::new(),
            targets: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// The raw samples as a JSON document, one sample a line, with what they were measured
    /// on.
    pub(crate) fn samples_json(&self, commit: &str, machine: &str, profile: &str) -> String {
        let header = serde_json::json!({"commit": commit, "machine": machine, "profile": profile});
        let lines: Vec<String> = self.samples.iter().map(|s| format!("  {s}")).collect();
        let header = header.to_string();
        format!(
            "{},\n \"samples\": [\n{}\n]}}\n",
            header.strip_suffix('}').unwrap_or(&header),
            lines.join(",\n")
        )
    }
}

pub(crate) fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

pub(crate) fn spread(v: &[f64], f: impl Fn(f64) -> String) -> String {
    let (lo, hi) = range(v);
    format!("{} ({}–{})", f(median(v)), f(lo), f(hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kxdp_perf::provenance::commit;

    #[test]
    fn samples_are_one_json_document_a_sample_a_line() {
        let mut r = Report::new();
        r.samples
            .push(serde_json::json!({"measurement": "pps", "run": 0}));
        r.samples
            .push(serde_json::json!({"measurement": "pps", "run": 1}));
        let text = r.samples_json("abc123-dirty", "a machine", "short");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["commit"], "abc123-dirty");
        assert_eq!(v["samples"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["samples"][1]["run"], 1);
        assert!(text.lines().any(|l| l.contains("\"run\":1")), "{text}");
    }

    #[test]
    fn the_commit_is_heads_short_id() {
        let c = commit(None);
        // In this repository's checkout: hex digits, perhaps marked dirty.
        let id = c.strip_suffix("-dirty").unwrap_or(&c);
        assert!(
            c == "unknown" || (id.len() >= 7 && id.chars().all(|x| x.is_ascii_hexdigit())),
            "{c}"
        );
    }
}
