//! Small SVG charts for the experiments' results: a step chart (how many clients are done
//! over time) and a bar chart (rates against a reference). Plain SVG text: no font or
//! drawing library to build, and any browser shows it.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Colours of successive series.
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// One line of a step chart: the times at which each client finished.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Finish times, in seconds.
    pub done_secs: Vec<f64>,
}

/// A round upper bound for an axis: 1, 2, 2.5 or 5 × 10^k at or above `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * mag)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
"#,
        W / 2.0,
        escape(title),
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 10.0,
        escape(x_label),
        TOP + (H - TOP - BOTTOM) / 2.0,
        TOP + (H - TOP - BOTTOM) / 2.0,
        escape(y_label),
    );
}

fn axes(out: &mut String, x_max: f64, y_max: f64, y_ticks: usize) {
    let (x0, y0, x1, y1) = (LEFT, H - BOTTOM, W - RIGHT, TOP);
    let _ = writeln!(
        out,
        r#"<path d="M{x0} {y1} V{y0} H{x1}" stroke="black" fill="none"/>"#
    );
    for i in 0..=5 {
        let v = x_max * i as f64 / 5.0;
        let x = x0 + (x1 - x0) * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + 16.0,
            trim(v)
        );
    }
    for i in 0..=y_ticks {
        let v = y_max * i as f64 / y_ticks as f64;
        let y = y0 - (y0 - y1) * i as f64 / y_ticks as f64;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text><path d="M{x0} {y} H{x1}" stroke="#ddd"/>"##,
            x0 - 6.0,
            y + 4.0,
            trim(v)
        );
    }
}

fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// Clients done over time, one step line per series.
pub fn step_chart(title: &str, series: &[Series]) -> String {
    step_chart_labelled(title, "seconds since all started", "clients done", series)
}

/// A step line per series, rising by one at each of its times (a cumulative count, e.g.
/// lookups that have found a provider by then), with the axes named.
pub fn step_chart_labelled(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    steps(title, x_label, y_label, series, false, None)
}

/// A step line per series rising to 100 % (the share of its clients done by then, so that
/// runs of different sizes compare), with a dashed vertical line at `mark` (e.g. a lower
/// bound) when given.
pub fn share_chart(
    title: &str,
    x_label: &str,
    series: &[Series],
    mark: Option<(&str, f64)>,
) -> String {
    steps(title, x_label, "% done", series, true, mark)
}

fn steps(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    percent: bool,
    mark: Option<(&str, f64)>,
) -> String {
    let clients = series
        .iter()
        .map(|s| s.done_secs.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max = if percent { 100.0 } else { clients as f64 };
    let t_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.done_secs.iter().copied())
            .chain(mark.map(|(_, t)| t))
            .fold(0.0, f64::max),
    );
    let mut out = String::new();
    frame(&mut out, title, x_label, y_label);
    axes(
        &mut out,
        t_max,
        y_max,
        if percent { 10 } else { clients.min(10) },
    );
    let (x0, y0, x1, y1) = (LEFT, H - BOTTOM, W - RIGHT, TOP);
    let px = |t: f64| x0 + (x1 - x0) * t / t_max;
    let py = |v: f64| y0 - (y0 - y1) * v / y_max;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut times = s.done_secs.clone();
        times.sort_by(f64::total_cmp);
        // Each finish raises the line by one client (or by its share of the series).
        let step = if percent {
            100.0 / times.len().max(1) as f64
        } else {
            1.0
        };
        // Finishes that land on the same tenth of a pixel make one step: a crowd of
        // 100,000 mirrors draws a few thousand steps, not 100,000.
        let mut d = format!("M{} {}", px(0.0), py(0.0));
        let mut at_x = String::new();
        // Finishes so far, not yet drawn as the rise at `at_x`.
        let mut risen: Option<usize> = None;
        for (n, t) in times.iter().enumerate() {
            let x = format!("{:.1}", px(*t));
            if x != at_x {
                if let Some(k) = risen.take() {
                    let _ = write!(d, " V{:.1}", py(k as f64 * step));
                }
                let _ = write!(d, " H{x}");
                at_x = x;
            }
            risen = Some(n + 1);
        }
        if let Some(k) = risen {
            let _ = write!(d, " V{:.1}", py(k as f64 * step));
        }
        let _ = writeln!(
            out,
            r#"<path d="{d}" stroke="{colour}" stroke-width="2.5" fill="none"/>"#
        );
        // Legend bottom right: the lines rise from the bottom left.
        let ly = y0 - 18.0 * (series.len() - i) as f64 - 8.0;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{}" width="14" height="4" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            x1 - 230.0,
            ly - 4.0,
            x1 - 210.0,
            ly + 1.0,
            escape(&s.name)
        );
    }
    if let Some((name, t)) = mark {
        let _ = writeln!(
            out,
            r#"<path d="M{:.1} {y1} V{y0}" stroke="black" stroke-dasharray="5 4"/><text x="{:.1}" y="{}" text-anchor="start">{}</text>"#,
            px(t),
            px(t) + 4.0,
            y1 + 12.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Horizontal bars of `(label, value)`, with a dashed line at `reference` (e.g. the sum of
/// the links) when given.
pub fn bar_chart(
    title: &str,
    unit: &str,
    bars: &[(String, f64)],
    reference: Option<(&str, f64)>,
) -> String {
    let v_max = nice_max(
        bars.iter()
            .map(|(_, v)| *v)
            .chain(reference.map(|(_, r)| r))
            .fold(0.0, f64::max),
    );
    let mut out = String::new();
    frame(&mut out, title, unit, "");
    let (x0, y0, x1, y1) = (LEFT + 150.0, H - BOTTOM, W - RIGHT, TOP + 10.0);
    let _ = writeln!(
        out,
        r#"<path d="M{x0} {y1} V{y0} H{x1}" stroke="black" fill="none"/>"#
    );
    let px = |v: f64| x0 + (x1 - x0) * v / v_max;
    for i in 0..=5 {
        let v = v_max * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            px(v),
            y0 + 16.0,
            trim(v)
        );
    }
    let slot = (y0 - y1) / bars.len().max(1) as f64;
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = y1 + slot * i as f64 + slot * 0.2;
        let _ = writeln!(
            out,
            r#"<rect x="{x0}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{:.1}" y="{:.1}">{}</text>"#,
            px(*v) - x0,
            slot * 0.6,
            COLOURS[i % COLOURS.len()],
            x0 - 6.0,
            y + slot * 0.35,
            escape(label),
            px(*v) + 4.0,
            y + slot * 0.35,
            trim(*v)
        );
    }
    if let Some((name, r)) = reference {
        let _ = writeln!(
            out,
            r#"<path d="M{:.1} {y1} V{y0}" stroke="black" stroke-dasharray="5 4"/><text x="{:.1}" y="{}" text-anchor="end">{}</text>"#,
            px(r),
            px(r) - 4.0,
            y1 - 2.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_every_series_and_bar() {
        let svg = step_chart(
            "flash <crowd>",
            &[
                Series {
                    name: "Commons".into(),
                    done_secs: vec![1.0, 2.5, 3.0],
                },
                Series {
                    name: "nginx".into(),
                    done_secs: vec![4.0, 9.0, 12.0],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("flash &lt;crowd&gt;") && svg.contains("Commons") && svg.contains("nginx")
        );
        assert_eq!(svg.matches("stroke-width=\"2.5\"").count(), 2);
        let bars = bar_chart(
            "rates",
            "Mbit/s",
            &[("a".into(), 370.0), ("b".into(), 240.0)],
            Some(("links", 400.0)),
        );
        assert_eq!(bars.matches("<rect x=\"220\"").count(), 2);
        assert!(bars.contains("stroke-dasharray"));
        let share = share_chart(
            "flash crowd",
            "seconds",
            &[Series {
                name: "4 mirrors".into(),
                done_secs: vec![10.0, 20.0, 30.0, 40.0],
            }],
            Some(("bound", 25.0)),
        );
        // Quarter steps up to 100 %, the mark dashed.
        assert!(
            share.contains("V287.5") && share.contains("V40.0"),
            "{share}"
        );
        assert!(share.contains("stroke-dasharray") && share.contains(">bound<"));
        // Finishes closer than a tenth of a pixel are one step up to the last one's level.
        let crowd = share_chart(
            "crowd",
            "seconds",
            &[Series {
                name: "many".into(),
                done_secs: (0..100_000).map(|i| 10.0 + f64::from(i / 1000)).collect(),
            }],
            None,
        );
        let path = crowd
            .lines()
            .find(|l| l.contains("stroke-width=\"2.5\""))
            .expect("the series' line");
        assert_eq!(path.matches(" H").count(), 100, "{path}");
        assert!(path.contains("V40.0\""), "ends at 100 %: {path}");
        assert_eq!(nice_max(373.0), 500.0);
        assert_eq!(nice_max(12.0), 20.0);
    }
}
