//! The report's plot, as SVG: forwarded Mpps by frame size for each path, and the latency
//! percentiles of each mode.

use std::fmt::Write as _;

use crate::paths::Path;
use crate::report::Report;

/// The SVG: throughput by frame size per path (many flows), and latency percentiles.
pub(crate) fn svg(r: &Report, flows: u32) -> String {
    let colors = ["#9aa5b1", "#52606d", "#d64545", "#f0b429", "#2680c2"];
    let mut s = String::new();
    let (w, h) = (900.0, 400.0);
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    // Left: Mpps by frame size.
    let sizes: Vec<usize> = {
        let mut v: Vec<usize> = r
            .pps
            .iter()
            .filter(|p| p.1 == flows && p.2 == "ClusterIP")
            .map(|p| p.0)
            .collect();
        v.dedup();
        v
    };
    let max = r.pps.iter().map(|p| p.4).fold(0.1, f64::max);
    let (x0, y0, ph, pw) = (50.0, 320.0, 260.0, 480.0);
    let _ = writeln!(s, "<text x=\"{x0}\" y=\"30\" font-size=\"14\">Forwarded Mpps by frame size ({flows} flows, ClusterIP across nodes)</text>");
    let _ = writeln!(
        s,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"black\"/>",
        x0 + pw
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = y0 - ph * f64::from(i) / 4.0;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">{v:.2}</text><line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/>", x0 - 5.0, x0 + pw);
    }
    let group = pw / sizes.len().max(1) as f64;
    for (gi, size) in sizes.iter().enumerate() {
        for (pi, path) in Path::ALL.iter().enumerate() {
            let v = r
                .pps
                .iter()
                .find(|p| p.0 == *size && p.1 == flows && p.2 == "ClusterIP" && p.3 == *path)
                .map_or(0.0, |p| p.4);
            let bw = group / 6.0;
            let x = x0 + group * gi as f64 + bw * (pi as f64 + 0.5);
            let bh = ph * v / max;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{}\"/>",
                y0 - bh,
                colors[pi]
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{size} B</text>",
            x0 + group * (gi as f64 + 0.5),
            y0 + 16.0
        );
    }
    for (pi, path) in Path::ALL.iter().enumerate() {
        let y = 350.0 + 0.0 * pi as f64;
        let x = x0 + 105.0 * pi as f64;
        let _ = writeln!(s, "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>", y, colors[pi], x + 14.0, y + 9.0, path.name().split(':').next().unwrap_or(""));
    }
    // Right: latency percentiles.
    let (lx, lw) = (620.0, 240.0);
    let lmax = r.latency.iter().flat_map(|l| l.1).fold(1.0, f64::max);
    let _ = writeln!(
        s,
        "<text x=\"{lx}\" y=\"30\" font-size=\"14\">UDP echo round trip (µs)</text>"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{lx}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"black\"/>",
        lx + lw
    );
    for (qi, q) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let group = lw / 3.0;
        for (li, (_, v)) in r.latency.iter().enumerate() {
            let bw = group / 5.0;
            let x = lx + group * qi as f64 + bw * (li as f64 + 0.5);
            let bh = ph * v[qi] / lmax;
            let color = [colors[2], colors[4], colors[0], colors[3]][li.min(3)];
            let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{:.0}</text>", y0 - bh, x + bw / 2.0, y0 - bh - 3.0, v[qi]);
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{q}</text>",
            lx + group * (qi as f64 + 0.5),
            y0 + 16.0
        );
    }
    for (li, (name, _)) in r.latency.iter().enumerate() {
        let y = 342.0 + 13.0 * li as f64;
        let _ = writeln!(s, "<rect x=\"{lx}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>", [colors[2], colors[4], colors[0], colors[3]][li.min(3)], lx + 14.0, y + 9.0);
    }
    s.push_str("</svg>\n");
    s
}
