//! The report's figures: what the bench measured, turned into `svg::Chart`s and written as
//! SVG files beside the report (docs/ for `make bench`), so README and BENCHMARKS.md can show
//! them. The choice of figures lives here; the drawing lives in `svg`.

use crate::svg::{self, Chart, Group, Mark, Scale};
use crate::{Results, Settings};
use std::fmt::Write;
use std::path::Path;

/// The flash-crowd goal: every downloader done within 1.3× one download alone (issue 12).
const FLASH_CROWD_GOAL: f64 = 1.3;

/// One flash-crowd case as the chart needs it: one seeder, `finish_secs.len()` downloaders
/// started together.
#[derive(Clone, Debug)]
pub struct FlashCrowdTimes {
    /// The time one download alone takes from the same (capped) seeder.
    pub single_secs: f64,
    /// Each downloader's completion time from the common start, in start order.
    pub finish_secs: Vec<f64>,
    /// Bytes the seeder sent, in copies of the file.
    pub seeder_copies: f64,
}

/// A figure written beside the report.
#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    /// File name, relative to the report's directory.
    pub file: String,
}

/// Builds every figure there is data for, writes each to `dir`, and records them (and a note
/// for each one left out) in `r`.
pub fn write_all(s: &Settings, r: &mut Results, dir: &Path) -> Result<(), String> {
    let mut charts: Vec<(String, Chart)> = Vec::new();
    match downloads(r) {
        Some(c) => charts.push(("bench-downloads.svg".into(), c)),
        None => r
            .notes
            .push("no download was measured: the download-rate figure is left out.".into()),
    }
    if let Some(Ok(case)) = &r.flash {
        r.flash_crowd_times = case
            .crowds
            .iter()
            .map(|round| FlashCrowdTimes {
                single_secs: case.single_secs(),
                finish_secs: round.finish_secs.clone(),
                seeder_copies: round.copies(),
            })
            .collect();
    }
    if r.flash_crowd_times.is_empty() {
        r.notes
            .push("no flash-crowd completion times in this run: that figure is left out.".into());
    }
    for f in &r.flash_crowd_times {
        let n = f.finish_secs.len();
        charts.push((format!("bench-flash-crowd-{n}.svg"), flash_crowd(f)));
    }
    match latency(r) {
        Some(c) => charts.push(("bench-latency.svg".into(), c)),
        None => r
            .notes
            .push("no tracker case was measured: the latency figure is left out.".into()),
    }
    for (file, mut chart) in charts {
        if s.quick {
            chart.title.push_str(" (--quick run)");
        }
        let path = dir.join(&file);
        std::fs::write(&path, svg::render(&chart))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        r.figures.push(Figure {
            title: chart.title,
            file,
        });
    }
    Ok(())
}

/// The report's "Figures" section: each figure as an image link.
pub fn section(o: &mut String, r: &Results) {
    if r.figures.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Figures\n\nDrawn by the bench itself from this run's numbers (`src/bin/bench/charts.rs`, \
         `svg.rs`).\n"
    );
    for f in &r.figures {
        let _ = writeln!(o, "![{}]({})\n", f.title, f.file);
    }
}

/// Download rate against the bound, per seeder count (medians of the runs).
fn downloads(r: &Results) -> Option<Chart> {
    let groups: Vec<Group> = r
        .downloads
        .iter()
        .filter_map(|(n, res)| {
            let case = res.as_ref().ok()?;
            Some(Group {
                label: format!("{n} seeder{}", if *n == 1 { "" } else { "s" }),
                values: vec![
                    Some(case.median().rate.mib_s()),
                    case.bound().map(|b| b.0.mib_s()),
                ],
            })
        })
        .collect();
    if groups.is_empty() {
        return None;
    }
    Some(Chart {
        title: "Download rate against the bound (medians)".into(),
        y_label: "MiB/s".into(),
        series: vec![
            "client download".into(),
            "bound: TCP → SHA-1 → pwrite, one thread".into(),
        ],
        groups,
        scale: Scale::Linear,
        marks: Vec::new(),
    })
}

/// Each downloader's completion time, with one download alone and the goal as marks.
pub fn flash_crowd(f: &FlashCrowdTimes) -> Chart {
    Chart {
        title: format!(
            "Flash crowd: {} downloaders, one seeder (it sent {:.2} copies)",
            f.finish_secs.len(),
            f.seeder_copies
        ),
        y_label: "completion time, s".into(),
        series: vec!["downloader's completion time".into()],
        groups: f
            .finish_secs
            .iter()
            .enumerate()
            .map(|(i, t)| Group {
                label: format!("{}", i + 1),
                values: vec![Some(*t)],
            })
            .collect(),
        scale: Scale::Linear,
        marks: vec![
            Mark {
                label: format!("one download alone: {:.1} s", f.single_secs),
                value: f.single_secs,
            },
            Mark {
                label: format!("goal: {FLASH_CROWD_GOAL}× alone"),
                value: f.single_secs * FLASH_CROWD_GOAL,
            },
        ],
    }
}

/// Tracker latency percentiles against Redis, per part-A case, on a log axis (reads are tens
/// of microseconds, pipelined durable writes milliseconds).
fn latency(r: &Results) -> Option<Chart> {
    if r.load.is_empty() {
        return None;
    }
    let groups = r
        .load
        .iter()
        .map(|row| {
            let kind = if row.write { "write" } else { "read" };
            let at = ["leader", "follower", "single"]
                .into_iter()
                .find(|w| row.name.contains(w))
                .unwrap_or("");
            let anchor = r
                .redis_pair
                .iter()
                .find(|a| a.depth == row.depth && row.write && at != "single");
            Group {
                label: format!("{kind}\n{at}\ndepth {}", row.depth),
                values: vec![
                    Some(row.tracker.p50_us),
                    Some(row.tracker.p99_us),
                    row.redis.as_ref().map(|x| x.p50_us),
                    row.redis.as_ref().map(|x| x.p99_us),
                    anchor.map(|a| a.stats.p50_us),
                    anchor.map(|a| a.stats.p99_us),
                ],
            }
        })
        .collect();
    Some(Chart {
        title: "Tracker latency against Redis (part A)".into(),
        y_label: "latency, µs (log scale)".into(),
        series: vec![
            "tracker p50".into(),
            "tracker p99".into(),
            "Redis p50".into(),
            "Redis p99".into(),
            "Redis primary+replica p50".into(),
            "Redis primary+replica p99".into(),
        ],
        groups,
        scale: Scale::Log10,
        marks: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_crowd_chart_has_a_bar_per_downloader_and_both_marks() {
        let f = FlashCrowdTimes {
            single_secs: 6.0,
            finish_secs: vec![7.0, 7.5, 8.0, 6.5, 7.2, 7.9],
            seeder_copies: 1.2,
        };
        let c = flash_crowd(&f);
        assert_eq!(c.groups.len(), 6);
        assert_eq!(c.groups[2].values, vec![Some(8.0)]);
        let marks: Vec<f64> = c.marks.iter().map(|m| m.value).collect();
        assert_eq!(marks.len(), 2);
        assert!((marks[0] - 6.0).abs() < 1e-9 && (marks[1] - 7.8).abs() < 1e-9);
        assert!(c.title.contains("1.20 copies"));
    }
}
