//! The report's plot, as SVG: forwarded Mpps by frame size for each path, the latency
//! percentiles of each mode, and iperf3's TCP Gbit/s by test at each underlay MTU. Each bar is
//! a median with its runs' range as an error bar; a path has one colour in every panel
//! ([`SERIES`]); every axis has round ticks ([`nice_ticks`]: steps of 1, 2 or 5 × 10^n); the
//! legend has rows of its own under the panels ([`legend_layout`]), and x labels shrink to fit
//! their group, so no text overlaps.

use std::fmt::Write as _;

use crate::report::{Point, Report};

/// Every series the plot may show, with its colour: one colour per path in every panel.
pub(crate) const SERIES: [(&str, &str); 9] = [
    ("kxdp", "#d64545"),
    ("kxdp, adaptive, unpinned", "#c05fa0"),
    ("kxdp, skb generator", "#f0b429"),
    ("kxdp, wakeup", "#e8833a"),
    ("kxdp, busy-poll", "#7a1616"),
    ("kernel", "#2680c2"),
    ("kernel, tx offload off", "#9bcbf0"),
    ("XDP redirect (ceiling)", "#9aa5b1"),
    ("bare AF_XDP forwarder", "#3e4c59"),
];

/// The colour of `series`; black for one missing from [`SERIES`] (a test keeps them listed).
fn colour(series: &str) -> &'static str {
    SERIES
        .iter()
        .find(|s| s.0 == series)
        .map_or("#000000", |s| s.1)
}

const WIDTH: f64 = 960.0;
const MARGIN: f64 = 20.0;
const FONT: f64 = 12.0;
/// A panel's plotting height, and the room above (title) and below (x labels) it.
const PLOT_H: f64 = 220.0;
const TITLE_H: f64 = 40.0;
const LABELS_H: f64 = 52.0;
/// The legend's rows.
const LEGEND_ROW_H: f64 = 20.0;
/// The y axis's tick labels.
const AXIS_W: f64 = 52.0;

/// A generous width of `text` in sans-serif at `size` pixels (wider than most glyphs are).
pub(crate) fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.62
}

/// Round ticks for an axis from 0 to at least `max`: the step (1, 2 or 5 × 10^n) that gives
/// at most `target` intervals, and the top (a multiple of the step, at least `max`).
pub(crate) fn nice_ticks(max: f64, target: usize) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) || target == 0 {
        return (1.0, 1.0);
    }
    let raw = max / target as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    let top = ((max / step) * (1.0 - 1e-9)).ceil().max(1.0) * step;
    (step, top)
}

/// A tick's label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Where each legend entry goes: (x, y, width) of its box (swatch and text), in rows from
/// `top` that wrap within the plot's width.
pub(crate) fn legend_layout(names: &[&str], top: f64) -> Vec<(f64, f64, f64)> {
    let (mut x, mut y) = (MARGIN, top);
    let mut out = Vec::new();
    for name in names {
        let w = 14.0 + text_width(name, FONT);
        if x > MARGIN && x + w > WIDTH - MARGIN {
            x = MARGIN;
            y += LEGEND_ROW_H;
        }
        out.push((x, y, w));
        x += w + 18.0;
    }
    out
}

/// One panel: a title, a y unit, and its bars.
struct Panel {
    title: String,
    points: Vec<Point>,
}

/// Draw `p` with its top-left corner at (x, y) and width `w`.
fn draw_panel(s: &mut String, p: &Panel, x: f64, y: f64, w: f64) {
    // The title shrinks to its panel's width (bold glyphs run wider).
    let title_font = (w / text_width(&p.title, 1.1)).min(14.0);
    let _ = writeln!(
        s,
        "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"{title_font:.1}\" font-weight=\"bold\">{}</text>",
        y + 18.0,
        esc(&p.title)
    );
    let (x0, y0) = (x + AXIS_W, y + TITLE_H + PLOT_H);
    let pw = w - AXIS_W - 10.0;
    let max = p
        .points
        .iter()
        .filter(|q| !q.failed)
        .map(|q| q.hi.max(q.median))
        .fold(0.0, f64::max);
    let (step, top) = nice_ticks(max, 5);
    let ypos = |v: f64| y0 - PLOT_H * v / top;
    let mut v = 0.0;
    while v <= top * (1.0 + 1e-9) {
        let ty = ypos(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x0:.1}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#e4e7eb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 + pw,
            x0 - 6.0,
            ty + 4.0,
            tick_label(v, step)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{:.1}\" y2=\"{y0:.1}\" stroke=\"#323f4b\"/>\
         <line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{:.1}\" stroke=\"#323f4b\"/>",
        x0 + pw,
        y0 - PLOT_H
    );
    let mut groups: Vec<&str> = Vec::new();
    for q in &p.points {
        if !groups.contains(&q.group.as_str()) {
            groups.push(&q.group);
        }
    }
    let series: Vec<&str> = SERIES
        .iter()
        .map(|s| s.0)
        .filter(|name| p.points.iter().any(|q| q.series == *name))
        .collect();
    let gw = pw / groups.len().max(1) as f64;
    // Bars at most 36 px wide, centred in their group.
    let bw = (gw / (series.len() as f64 + 1.0)).min(36.0);
    let inset = (gw - bw * series.len() as f64) / 2.0;
    // x labels: one line per ", "-separated part, shrunk to fit the group.
    let lines: Vec<Vec<&str>> = groups.iter().map(|g| g.split(", ").collect()).collect();
    let widest = lines
        .iter()
        .flatten()
        .map(|l| text_width(l, 1.0))
        .fold(0.0, f64::max);
    let label_font = (0.92 * gw / widest.max(1.0)).min(11.0);
    for (gi, group) in groups.iter().enumerate() {
        let gx = x0 + gw * gi as f64;
        for (line, text) in lines[gi].iter().enumerate() {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"{label_font:.1}\">{}</text>",
                gx + gw / 2.0,
                y0 + 14.0 + (label_font + 2.0) * line as f64,
                esc(text)
            );
        }
        for (si, name) in series.iter().enumerate() {
            let Some(q) = p
                .points
                .iter()
                .find(|q| q.group == *group && q.series == *name)
            else {
                continue;
            };
            let bx = gx + inset + bw * si as f64;
            let c = colour(name);
            if q.failed {
                // No number: a cross on the axis rather than a bar of 0.
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{c}\" font-weight=\"bold\">✕</text>",
                    bx + bw / 2.0,
                    y0 - 3.0
                );
                continue;
            }
            let top_y = ypos(q.median);
            let _ = writeln!(
                s,
                "<rect x=\"{bx:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{c}\"><title>{}: {}: {:.3} ({:.3}–{:.3})</title></rect>",
                bw * 0.9,
                y0 - top_y,
                esc(name),
                esc(group),
                q.median,
                q.lo,
                q.hi
            );
            if q.hi > q.lo {
                let cx = bx + bw * 0.45;
                let (ylo, yhi) = (ypos(q.lo), ypos(q.hi));
                let cap = (bw * 0.25).min(4.0);
                let _ = writeln!(
                    s,
                    "<path d=\"M{cx:.1} {ylo:.1}V{yhi:.1}M{:.1} {ylo:.1}H{:.1}M{:.1} {yhi:.1}H{:.1}\" stroke=\"#1f2933\" stroke-width=\"1.2\" fill=\"none\"/>",
                    cx - cap,
                    cx + cap,
                    cx - cap,
                    cx + cap
                );
            }
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The figure's closing lines, each within its width.
fn footer(runs: usize, latency_runs: usize) -> [String; 2] {
    [
        format!(
            "Bars: median of {runs} runs ({latency_runs} for latency); whiskers: their range; \
             ✕: no number."
        ),
        "kxdp: adaptive mode (its default) unless named. Numbers in report.md, every run in \
         samples.json."
            .to_owned(),
    ]
}

/// The SVG of the report's figures: Mpps through a ClusterIP by frame size (`flows` flows),
/// latency percentiles, iperf3 TCP by underlay MTU; `commit` and the runs (`latency_runs` of
/// each latency path) in the caption.
pub(crate) fn svg(
    r: &Report,
    flows: u32,
    commit: &str,
    runs: usize,
    latency_runs: usize,
) -> String {
    let mut rows: Vec<Vec<Panel>> = Vec::new();
    let mut first = Vec::new();
    if !r.pps.is_empty() {
        first.push(Panel {
            title: format!(
                "Forwarded Mpps, UDP to a ClusterIP across nodes, {flows} flow{}",
                if flows == 1 { "" } else { "s" }
            ),
            points: r.pps.clone(),
        });
    }
    if !r.latency.is_empty() {
        first.push(Panel {
            title: "UDP echo round trip through a ClusterIP (µs)".into(),
            points: r.latency.clone(),
        });
    }
    if !first.is_empty() {
        rows.push(first);
    }
    // iperf3: a panel per MTU (the group's last part, which the panel's title then says).
    let mut mtus: Vec<&str> = Vec::new();
    for q in &r.iperf {
        let mtu = q.group.rsplit(", ").next().unwrap_or("");
        if !mtus.contains(&mtu) {
            mtus.push(mtu);
        }
    }
    let iperf: Vec<Panel> = mtus
        .iter()
        .map(|mtu| {
            let suffix = format!(", {mtu}");
            Panel {
                title: format!("iperf3 TCP between pods (Gbit/s), underlay {mtu}"),
                points: r
                    .iperf
                    .iter()
                    .filter_map(|q| {
                        let group = q.group.strip_suffix(&suffix)?.to_owned();
                        Some(Point { group, ..q.clone() })
                    })
                    .collect(),
            }
        })
        .collect();
    if !iperf.is_empty() {
        rows.push(iperf);
    }
    let names: Vec<&str> = SERIES
        .iter()
        .map(|s| s.0)
        .filter(|n| {
            r.pps
                .iter()
                .chain(&r.iperf)
                .chain(&r.latency)
                .any(|q| q.series == *n)
        })
        .collect();
    let panels_h = rows.len() as f64 * (TITLE_H + PLOT_H + LABELS_H);
    let legend_top = 44.0 + panels_h;
    let legend = legend_layout(&names, legend_top);
    let legend_bottom = legend.last().map_or(legend_top, |l| l.1) + LEGEND_ROW_H;
    let footer = footer(runs, latency_runs);
    let height = legend_bottom + 14.0 * footer.len() as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"DejaVu Sans, Arial, sans-serif\" \
         font-size=\"{FONT}\" fill=\"#1f2933\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{MARGIN}\" y=\"24\" font-size=\"16\" font-weight=\"bold\">kxdp against the \
         kernel path (flannel VXLAN + kube-proxy nftables), commit {}</text>",
        esc(commit)
    );
    for (ri, row) in rows.iter().enumerate() {
        let y = 36.0 + ri as f64 * (TITLE_H + PLOT_H + LABELS_H);
        let w = (WIDTH - 2.0 * MARGIN) / row.len() as f64;
        for (pi, panel) in row.iter().enumerate() {
            draw_panel(&mut s, panel, MARGIN + w * pi as f64, y, w - 10.0);
        }
    }
    for (name, (x, y, _)) in names.iter().zip(&legend) {
        let _ = writeln!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y + 2.0,
            colour(name),
            x + 14.0,
            y + 11.0,
            esc(name)
        );
    }
    // One line each: at 11 px the two together run past the right edge.
    for (i, line) in footer.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{MARGIN}\" y=\"{:.1}\" font-size=\"11\" fill=\"#52606d\">{}</text>",
            legend_bottom + 12.0 + 14.0 * i as f64,
            esc(line)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(nice_ticks(6.03, 5), (2.0, 8.0));
        assert_eq!(nice_ticks(1087.0, 5), (500.0, 1500.0));
        assert_eq!(nice_ticks(1.0, 5), (0.2, 1.0));
        assert_eq!(nice_ticks(10.0, 5), (2.0, 10.0));
        assert_eq!(nice_ticks(0.0, 5), (1.0, 1.0));
        assert_eq!(nice_ticks(f64::NAN, 5), (1.0, 1.0));
        let (step, top) = nice_ticks(0.242, 5);
        assert!((step - 0.05).abs() < 1e-12 && (top - 0.25).abs() < 1e-12);
        // Every maximum over many magnitudes: a step of 1, 2 or 5 × 10^n, at most 5
        // intervals, the top at or above the maximum by less than a step.
        let mut max = 1e-4;
        while max < 1e7 {
            let (step, top) = nice_ticks(max, 5);
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-9),
                "{max}: step {step}"
            );
            assert!(top >= max * (1.0 - 1e-9) && top - max < step * (1.0 + 1e-9));
            assert!((top / step).round() <= 5.0, "{max}: {top}/{step}");
            max *= 1.37;
        }
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(1000.0, 500.0), "1000");
    }

    #[test]
    fn the_footer_fits_the_width() {
        for line in footer(100, 100) {
            assert!(MARGIN + text_width(&line, 11.0) <= WIDTH - MARGIN, "{line}");
        }
    }

    #[test]
    fn legend_entries_do_not_overlap_and_fit_the_width() {
        let names: Vec<&str> = SERIES.iter().map(|s| s.0).collect();
        let boxes = legend_layout(&names, 500.0);
        assert_eq!(boxes.len(), names.len());
        for (i, a) in boxes.iter().enumerate() {
            assert!(
                a.0 >= MARGIN && a.0 + a.2 <= WIDTH - MARGIN,
                "{:?} inside",
                names[i]
            );
            for b in &boxes[i + 1..] {
                let apart = a.1 != b.1 || a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0;
                assert!(apart, "{a:?} and {b:?} overlap");
            }
        }
        assert!(
            boxes.iter().any(|b| b.1 > 500.0),
            "eight entries need two rows"
        );
    }

    fn point(group: &str, series: &'static str, median: f64) -> Point {
        Point {
            group: group.into(),
            series,
            median,
            lo: median * 0.9,
            hi: median * 1.1,
            failed: false,
        }
    }

    #[test]
    fn every_series_has_its_own_colour_in_every_panel() {
        let mut colours: Vec<&str> = SERIES.iter().map(|s| s.1).collect();
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(colours.len(), SERIES.len());
        for name in ["kxdp", "kernel", crate::iperf::KERNEL_TX_OFF] {
            assert_ne!(colour(name), "#000000", "{name} is listed");
        }
        for path in crate::paths::Path::ALL {
            assert_ne!(colour(path.series()), "#000000", "{path:?} is listed");
        }
        let mut r = Report::new();
        r.pps.push(point("64 B", "kxdp", 1.2));
        r.pps.push(point("64 B", "kernel", 0.2));
        r.latency.push(point("p50", "kxdp", 70.0));
        r.latency.push(point("p50", "kernel", 25.0));
        r.iperf
            .push(point("one node, 1 stream, MTU 1500", "kxdp", 2.4));
        r.iperf
            .push(point("one node, 1 stream, MTU 1500", "kernel", 13.0));
        let text = svg(&r, 10_000, "abc1234", 3, 9);
        // kxdp red and the kernel blue in each of the three panels, in the legend once more.
        assert_eq!(text.matches("fill=\"#d64545\"><title>").count(), 3);
        assert_eq!(text.matches("fill=\"#2680c2\"><title>").count(), 3);
        assert!(text.contains("commit abc1234"));
        // Error bars: one whisker per bar.
        assert_eq!(
            text.matches("stroke=\"#1f2933\" stroke-width=\"1.2\"")
                .count(),
            6
        );
    }
}
