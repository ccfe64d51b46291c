//! Batching of `have` reports: pieces a download verified are reported to the tracker in
//! batches (one line per file every `FLUSH_DELAY`, or sooner when many are pending) rather than
//! one request per piece. Pure: the app supplies the clock.

use crate::pieces::format_ranges;
use crate::protocol::tracker::Verb;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a verified piece may wait before it is reported: other peers learn of it through
/// the tracker only after this, so it is short; many pieces verify within it and share a line.
pub const FLUSH_DELAY: Duration = Duration::from_millis(500);
/// Pending pieces that trigger a report at once, whatever the delay.
pub const FLUSH_COUNT: usize = 4096;
/// Longest range list on one `have` line: the line (tag, verb, names of at most 64 and 255
/// bytes, ranges) stays under 60 KiB, well inside the protocol's 64 KiB `MAX_LINE`.
pub const MAX_RANGES_LEN: usize = 60 * 1024 - 512;

/// Pieces verified and not yet reported, per (group, file).
#[derive(Debug, Default)]
pub struct HaveBatcher {
    pending: BTreeMap<(String, String), BTreeSet<usize>>,
    count: usize,
    /// When the oldest unreported piece was added.
    since: Option<Instant>,
}

impl HaveBatcher {
    pub fn add(&mut self, group: &str, file: &str, pieces: &[usize], now: Instant) {
        if pieces.is_empty() {
            return;
        }
        let set = self
            .pending
            .entry((group.to_string(), file.to_string()))
            .or_default();
        for &p in pieces {
            if set.insert(p) {
                self.count += 1;
            }
        }
        self.since.get_or_insert(now);
    }

    /// Drops the unreported pieces of every file for which `which(group, file)` holds: they
    /// must not be announced (the user left the group or stopped sharing the file).
    pub fn discard(&mut self, mut which: impl FnMut(&str, &str) -> bool) {
        self.pending.retain(|(g, f), _| !which(g, f));
        self.count = self.pending.values().map(BTreeSet::len).sum();
        if self.count == 0 {
            self.since = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// When the pending pieces must be reported.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + FLUSH_DELAY)
    }

    pub fn due(&self, now: Instant) -> bool {
        self.count >= FLUSH_COUNT || self.deadline().is_some_and(|d| now >= d)
    }

    /// Takes every pending piece as `(group, file, ranges)` lines, each ranges list short
    /// enough for one request line.
    pub fn take(&mut self) -> Vec<Verb> {
        let mut out = Vec::new();
        for ((group, file), set) in std::mem::take(&mut self.pending) {
            for pieces in split_ranges(set.into_iter(), MAX_RANGES_LEN) {
                out.push(Verb::Have {
                    group: group.clone(),
                    file: file.clone(),
                    pieces,
                });
            }
        }
        self.count = 0;
        self.since = None;
        out
    }
}

/// Splits ascending indices into runs of pieces whose range lists are at most `max_len` bytes
/// each, so that every `have` line fits the protocol's line limit.
pub fn split_ranges(indices: impl Iterator<Item = usize>, max_len: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut cur_len = 0;
    // Build greedily: whole runs are appended while they fit.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in indices {
        match runs.last_mut() {
            Some((_, b)) if i == *b + 1 => *b = i,
            _ => runs.push((i, i)),
        }
    }
    for (a, b) in runs {
        let len = format_ranges(a..=b).len();
        if !cur.is_empty() && cur_len + 1 + len > max_len {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        cur_len += len + usize::from(cur_len > 0);
        cur.extend(a..=b);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(group: &str, file: &str, pieces: &[usize]) -> Verb {
        Verb::Have {
            group: group.into(),
            file: file.into(),
            pieces: pieces.to_vec(),
        }
    }

    #[test]
    fn pieces_wait_for_the_delay_or_the_count() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::default();
        assert!(!b.due(t0) && b.deadline().is_none());
        b.add("g", "f", &[3, 1, 2], t0);
        b.add("g", "f", &[2, 7], t0 + Duration::from_millis(100));
        assert!(!b.due(t0 + Duration::from_millis(499)));
        assert!(b.due(t0 + FLUSH_DELAY));
        assert_eq!(b.take(), vec![have("g", "f", &[1, 2, 3, 7])]);
        assert!(b.is_empty() && b.deadline().is_none());
        let many: Vec<usize> = (0..FLUSH_COUNT).collect();
        b.add("g", "f", &many, t0);
        assert!(b.due(t0));
    }

    #[test]
    fn discarded_files_are_not_reported() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::default();
        b.add("g", "f", &[1, 2], t0);
        b.add("g", "other", &[5], t0);
        b.add("h", "f", &[0], t0);
        b.discard(|g, f| g == "g" && f == "f");
        assert_eq!(
            b.take(),
            vec![have("g", "other", &[5]), have("h", "f", &[0])]
        );
        b.add("g", "f", &[1], t0);
        b.discard(|g, _| g == "g");
        assert!(b.is_empty() && b.deadline().is_none() && !b.due(t0 + FLUSH_DELAY));
    }

    #[test]
    fn long_range_lists_are_split_and_cover_every_piece() {
        let idx: Vec<usize> = (0..200_000).step_by(2).collect();
        let lines = split_ranges(idx.iter().copied(), MAX_RANGES_LEN);
        assert!(lines.len() > 1);
        let mut all = Vec::new();
        for l in &lines {
            assert!(format_ranges(l.iter().copied()).len() <= MAX_RANGES_LEN);
            all.extend(l.iter().copied());
        }
        assert_eq!(all, idx);
    }
}
