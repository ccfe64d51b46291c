//! Transfer rate: bytes per second averaged over the last few seconds, from one-second
//! buckets. Times are passed in, so tests inject them.

use std::collections::VecDeque;
use std::time::Instant;

/// Seconds averaged over: long enough to smooth bursts of whole 512 KiB pieces, short enough
/// that `show_downloads` reflects a stall within a few seconds.
pub const RATE_WINDOW_SECS: u64 = 5;

#[derive(Debug)]
pub struct RateMeter {
    /// The moment second 0 starts; set by the first record.
    origin: Option<Instant>,
    /// (second since origin, bytes) for at most `RATE_WINDOW_SECS` recent seconds.
    buckets: VecDeque<(u64, u64)>,
}

impl Default for RateMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateMeter {
    pub fn new() -> Self {
        RateMeter {
            origin: None,
            buckets: VecDeque::new(),
        }
    }

    fn second(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        now.saturating_duration_since(origin).as_secs()
    }

    fn expire(&mut self, sec: u64) {
        while let Some(&(s, _)) = self.buckets.front() {
            if s + RATE_WINDOW_SECS <= sec {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    pub fn record(&mut self, now: Instant, bytes: u64) {
        let sec = self.second(now);
        self.expire(sec);
        match self.buckets.back_mut() {
            Some((s, b)) if *s == sec => *b += bytes,
            _ => self.buckets.push_back((sec, bytes)),
        }
    }

    /// Bytes per second over the window (or over the time since the first record, if shorter;
    /// the current, partial second counts as a whole one).
    pub fn rate(&self, now: Instant) -> f64 {
        let Some(origin) = self.origin else {
            return 0.0;
        };
        let sec = now.saturating_duration_since(origin).as_secs();
        let total: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| s + RATE_WINDOW_SECS > sec)
            .map(|(_, b)| b)
            .sum();
        let span = (sec + 1).min(RATE_WINDOW_SECS);
        total as f64 / span as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn no_data_is_zero() {
        assert_eq!(RateMeter::new().rate(Instant::now()), 0.0);
    }

    #[test]
    fn a_steady_stream_reads_as_its_rate() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        for s in 0..20 {
            m.record(t0 + Duration::from_secs(s), 1000);
            m.record(t0 + Duration::from_millis(s * 1000 + 500), 1000);
        }
        assert_eq!(m.rate(t0 + Duration::from_millis(19_900)), 2000.0);
    }

    #[test]
    fn the_first_seconds_are_not_diluted_by_the_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        m.record(t0, 3000);
        assert_eq!(m.rate(t0 + Duration::from_millis(300)), 3000.0);
        m.record(t0 + Duration::from_secs(1), 1000);
        assert_eq!(m.rate(t0 + Duration::from_millis(1500)), 2000.0);
    }

    #[test]
    fn old_data_leaves_the_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        m.record(t0, 10_000);
        assert_eq!(m.rate(t0 + Duration::from_secs(4)), 2000.0);
        assert_eq!(m.rate(t0 + Duration::from_secs(5)), 0.0);
        m.record(t0 + Duration::from_secs(30), 500);
        assert_eq!(m.rate(t0 + Duration::from_secs(30)), 100.0);
    }
}
