//! Hand-written SVG bar charts for the bench's figures: a pure function from a `Chart` (plain
//! data) to the text of an SVG file, so the bench needs no plotting crate and no external tool.
//!
//! A chart is groups along the x axis (one per case), one bar per series in each group (one
//! colour per series, named in the legend), and optional dashed horizontal marks (a bound, a
//! goal). The y axis is linear from zero or, for values spanning decades (latencies), log10.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log10,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    /// Legend names; `Group::values[i]` belongs to `series[i]`.
    pub series: Vec<String>,
    pub groups: Vec<Group>,
    pub scale: Scale,
    pub marks: Vec<Mark>,
}

#[derive(Clone, Debug)]
pub struct Group {
    /// May hold `\n`: one line each, so long case names fit under narrow groups.
    pub label: String,
    /// One per series; `None` leaves a gap (not measured).
    pub values: Vec<Option<f64>>,
}

/// A dashed horizontal line across the plot, labelled at its right end.
#[derive(Clone, Debug)]
pub struct Mark {
    pub label: String,
    pub value: f64,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
/// Room for the tick labels and the rotated y label.
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
/// Room for the title.
const TOP: f64 = 50.0;
/// Room for three lines of group label and two rows of legend.
const BOTTOM: f64 = 110.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;
/// Tableau 10: distinguishable, and still readable in grey.
const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// The y axis: its range and where its ticks go.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub scale: Scale,
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
}

impl Axis {
    /// The smallest "nice" axis holding every finite value (non-positive ones are ignored on
    /// a log axis, where they cannot be drawn).
    pub fn fit(scale: Scale, values: impl IntoIterator<Item = f64>) -> Axis {
        let vals: Vec<f64> = values
            .into_iter()
            .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0))
            .collect();
        let max = vals.iter().cloned().fold(f64::MIN, f64::max);
        match scale {
            Scale::Linear => {
                if vals.is_empty() || max <= 0.0 {
                    return Axis {
                        scale,
                        lo: 0.0,
                        hi: 1.0,
                        ticks: vec![0.0, 1.0],
                    };
                }
                let step = nice_step(max / 5.0);
                let n = (max / step - 1e-9).ceil().max(1.0) as usize;
                Axis {
                    scale,
                    lo: 0.0,
                    hi: step * n as f64,
                    ticks: (0..=n).map(|i| step * i as f64).collect(),
                }
            }
            Scale::Log10 => {
                if vals.is_empty() {
                    return Axis {
                        scale,
                        lo: 1.0,
                        hi: 10.0,
                        ticks: vec![1.0, 10.0],
                    };
                }
                // Whole decades at the bottom; the top stops at the next 1-2-5 step, so a
                // maximum just past a decade does not waste most of a decade of height.
                let min = vals.iter().cloned().fold(f64::MAX, f64::min);
                let a = min.log10().floor() as i32;
                let hi = nice_step(max).max(10f64.powi(a + 1));
                let mut ticks: Vec<f64> = (a..)
                    .map(|e| 10f64.powi(e))
                    .take_while(|t| *t < hi * (1.0 - 1e-9))
                    .collect();
                ticks.push(hi);
                Axis {
                    scale,
                    lo: 10f64.powi(a),
                    hi,
                    ticks,
                }
            }
        }
    }

    /// Where `v` sits between the bottom (0) and the top (1) of the plot, clamped.
    pub fn frac(&self, v: f64) -> f64 {
        let f = match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log10 if v <= 0.0 => 0.0,
            Scale::Log10 => (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        };
        f.clamp(0.0, 1.0)
    }

    /// The SVG y coordinate of `v`.
    pub fn y(&self, v: f64) -> f64 {
        TOP + PLOT_H * (1.0 - self.frac(v))
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 + 1e-9 {
        1.0
    } else if f <= 2.0 + 1e-9 {
        2.0
    } else if f <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// A tick label: "0", "0.5", "250", "20k", "1.5M".
pub fn tick_label(v: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if v.abs() >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v.abs() >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// Text safe inside an element or a double-quoted attribute.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The chart's axis: every bar and every mark fits.
pub fn axis_of(c: &Chart) -> Axis {
    let values = c
        .groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().cloned())
        .chain(c.marks.iter().map(|m| m.value));
    Axis::fit(c.scale, values)
}

pub fn render(c: &Chart) -> String {
    let axis = axis_of(c);
    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text class="title" x="{:.1}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(&c.title)
    );
    let _ = writeln!(
        o,
        r#"<text class="y-label" transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + PLOT_H / 2.0,
        escape(&c.y_label)
    );
    for t in &axis.ticks {
        let y = axis.y(*t);
        let _ = writeln!(
            o,
            r##"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/>"##,
            LEFT + PLOT_W
        );
        let _ = writeln!(
            o,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            tick_label(*t)
        );
    }
    bars(&mut o, c, &axis);
    for m in &c.marks {
        let y = axis.y(m.value);
        let _ = writeln!(
            o,
            r##"<line class="mark" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#333333" stroke-dasharray="6 4"/>"##,
            LEFT + PLOT_W
        );
        let _ = writeln!(
            o,
            r#"<text class="mark-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT + PLOT_W - 4.0,
            y - 4.0,
            escape(&m.label)
        );
    }
    let bottom = TOP + PLOT_H;
    let _ = writeln!(
        o,
        r#"<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{:.1}" y2="{bottom}" stroke="black"/>"#,
        LEFT + PLOT_W
    );
    legend(&mut o, c);
    o.push_str("</svg>\n");
    o
}

fn bars(o: &mut String, c: &Chart, axis: &Axis) {
    let n = c.groups.len().max(1) as f64;
    let gw = PLOT_W / n;
    let bw = gw * 0.8 / c.series.len().max(1) as f64;
    let base = axis.y(axis.lo);
    for (gi, g) in c.groups.iter().enumerate() {
        let gx = LEFT + gw * gi as f64;
        for (si, v) in g.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let top = axis.y(*v);
            let series = c.series.get(si).map(String::as_str).unwrap_or("");
            let _ = writeln!(
                o,
                r#"<rect class="bar" x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}, {}: {}</title></rect>"#,
                gx + gw * 0.1 + bw * si as f64,
                bw,
                base - top,
                COLOURS[si % COLOURS.len()],
                escape(series),
                escape(&g.label),
                tick_label(*v)
            );
        }
        let cx = gx + gw / 2.0;
        let _ = write!(
            o,
            r#"<text class="group" x="{cx:.1}" y="{:.1}" text-anchor="middle">"#,
            TOP + PLOT_H + 18.0
        );
        for (i, line) in g.label.split('\n').enumerate() {
            let dy = if i == 0 { 0.0 } else { 14.0 };
            let _ = write!(
                o,
                r#"<tspan x="{cx:.1}" dy="{dy}">{}</tspan>"#,
                escape(line)
            );
        }
        o.push_str("</text>\n");
    }
}

fn legend(o: &mut String, c: &Chart) {
    let mut y = HEIGHT - 42.0;
    let mut x = LEFT;
    for (si, name) in c.series.iter().enumerate() {
        let w = 16.0 + 6.5 * name.chars().count() as f64 + 24.0;
        if x > LEFT && x + w > WIDTH - RIGHT {
            x = LEFT;
            y += 20.0;
        }
        let _ = writeln!(
            o,
            r#"<rect class="legend" x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            y - 10.0,
            COLOURS[si % COLOURS.len()]
        );
        let _ = writeln!(
            o,
            r#"<text class="legend-label" x="{:.1}" y="{y:.1}">{}</text>"#,
            x + 16.0,
            escape(name)
        );
        // About 6.5 px per character at 12 px sans-serif, plus a gap.
        x += w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness check: every tag closes in order, attributes are quoted, and
    /// no raw `<` or `&` (other than an entity) appears in text.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            check_text(text);
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            if let Some(decl) = tag.strip_prefix('?') {
                assert!(decl.ends_with('?'), "bad declaration <{tag}>");
            } else if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
            } else {
                let name = tag
                    .trim_end_matches('/')
                    .split_whitespace()
                    .next()
                    .expect("empty tag")
                    .to_string();
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
        assert_eq!(roots, 1, "one root element");
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let ent = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "raw & in text {text:?}"
            );
        }
        assert!(!text.contains('>'), "raw > in text {text:?}");
    }

    /// The value of attribute `name` in each element of `class`.
    fn attrs(svg: &str, class: &str, name: &str) -> Vec<f64> {
        svg.lines()
            .filter(|l| l.contains(&format!(r#"class="{class}""#)))
            .map(|l| {
                let key = format!(r#" {name}=""#);
                let from = l.find(&key).expect("attribute") + key.len();
                let len = l[from..].find('"').expect("closing quote");
                l[from..from + len].parse().expect("a number")
            })
            .collect()
    }

    fn chart(scale: Scale, a: f64, b: f64) -> Chart {
        Chart {
            title: "Rate <vs> bound & more".into(),
            y_label: "MiB/s".into(),
            series: vec!["measured".into(), "bound".into()],
            groups: vec![
                Group {
                    label: "1 seeder".into(),
                    values: vec![Some(a), Some(b)],
                },
                Group {
                    label: "2 seeders".into(),
                    values: vec![None, Some(b)],
                },
            ],
            scale,
            marks: vec![Mark {
                label: "goal".into(),
                value: b / 2.0,
            }],
        }
    }

    #[test]
    fn render_is_well_formed_and_escapes_text() {
        let svg = render(&chart(Scale::Linear, 30.0, 87.0));
        assert_well_formed(&svg);
        assert!(svg.contains("Rate &lt;vs&gt; bound &amp; more"));
        assert!(svg.starts_with("<?xml"));
        assert_well_formed(&render(&chart(Scale::Log10, 30.0, 870.0)));
    }

    #[test]
    fn render_draws_axes_ticks_labels_and_legend() {
        let svg = render(&chart(Scale::Linear, 30.0, 87.0));
        assert_eq!(svg.matches(r#"class="axis""#).count(), 2);
        for label in [
            "1 seeder",
            "2 seeders",
            "measured",
            "bound",
            "MiB/s",
            "goal",
        ] {
            assert!(svg.contains(&format!(">{label}<")), "{label} missing");
        }
        // 87 → ticks 0, 20, …, 100.
        for t in ["0", "20", "100"] {
            assert!(svg.contains(&format!(">{t}</text>")), "tick {t} missing");
        }
        assert_eq!(svg.matches(r#"class="legend""#).count(), 2);
    }

    #[test]
    fn bars_are_scaled_to_the_axis_and_gaps_are_skipped() {
        let svg = render(&chart(Scale::Linear, 30.0, 60.0));
        let heights = attrs(&svg, "bar", "height");
        // Three values (one None): 30 and 60 on an axis to 60 → half and full plot height.
        assert_eq!(heights.len(), 3);
        assert!((heights[0] - PLOT_H / 2.0).abs() < 0.2, "{heights:?}");
        assert!((heights[1] - PLOT_H).abs() < 0.2, "{heights:?}");
        let ys = attrs(&svg, "bar", "y");
        assert!((ys[1] - TOP).abs() < 0.2);
        // Bars stand on the x axis.
        for (y, h) in ys.iter().zip(&heights) {
            assert!((y + h - (TOP + PLOT_H)).abs() < 0.2);
        }
        // The mark at 30 is drawn at half height.
        let mark_y = attrs(&svg, "mark", "y1");
        assert!((mark_y[0] - (TOP + PLOT_H / 2.0)).abs() < 0.2);
    }

    #[test]
    fn log_axis_spans_whole_decades() {
        let a = Axis::fit(Scale::Log10, [35.0, 870.0, 0.0]);
        assert_eq!((a.lo, a.hi), (10.0, 1000.0));
        assert_eq!(a.ticks, vec![10.0, 100.0, 1000.0]);
        assert!((a.frac(100.0) - 0.5).abs() < 1e-9);
        assert_eq!(a.frac(0.0), 0.0);
        // Just past a decade: the top is the next 1-2-5 step, not the next decade.
        let b = Axis::fit(Scale::Log10, [190.0, 107_000.0]);
        assert_eq!((b.lo, b.hi), (100.0, 200_000.0));
        assert_eq!(b.ticks, vec![100.0, 1e3, 1e4, 1e5, 2e5]);
        let mut c = chart(Scale::Log10, 100.0, 1000.0);
        c.marks[0].value = 10.0;
        let svg = render(&c);
        let heights = attrs(&svg, "bar", "height");
        // 100 and 1000 on 10..1000: half and full height.
        assert!((heights[0] - PLOT_H / 2.0).abs() < 0.2, "{heights:?}");
        assert!((heights[1] - PLOT_H).abs() < 0.2, "{heights:?}");
    }

    #[test]
    fn linear_axis_is_nice_and_holds_every_value() {
        let a = Axis::fit(Scale::Linear, [12.0, 87.0]);
        assert_eq!(a.hi, 100.0);
        assert_eq!(a.ticks.len(), 6);
        let b = Axis::fit(Scale::Linear, [4.0]);
        assert_eq!(b.ticks, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(b.hi, 4.0);
        let empty = Axis::fit(Scale::Linear, []);
        assert_eq!((empty.lo, empty.hi), (0.0, 1.0));
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(13.0), 20.0);
        assert_eq!(nice_step(3000.0), 5000.0);
    }

    #[test]
    fn multi_line_group_labels_become_lines() {
        let mut c = chart(Scale::Linear, 1.0, 2.0);
        c.groups[0].label = "write\nleader & co".into();
        let svg = render(&c);
        assert_well_formed(&svg);
        assert!(svg.contains(r#"dy="0">write</tspan>"#));
        assert!(svg.contains(r#"dy="14">leader &amp; co</tspan>"#));
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(250.0), "250");
        assert_eq!(tick_label(20_000.0), "20k");
        assert_eq!(tick_label(1_500_000.0), "1.5M");
    }
}
