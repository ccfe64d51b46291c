//! The upload limit (`--upload-limit`): one token bucket shared by every upload connection of
//! this client. Tokens are bytes; they accrue at `rate` per second up to a quarter second's
//! worth. A piece may be sent whenever the bucket is not in debt, and its bytes are taken
//! after the fact, so the bucket may go below zero by up to one piece: a limit below the
//! piece size still works (one piece, then a longer pause). The loop never sleeps for it: a
//! connection that finds the bucket in debt defers its next request to `ready_at`, which the
//! peer side's `next_deadline` reports and its `tick` honours. Times are passed in, so tests
//! inject them.

use std::time::{Duration, Instant};

/// Less than one byte of debt counts as none: the float arithmetic of `refill` must not leave
/// a connection a nanosecond short of its deadline and deferred again.
const SLACK: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Most tokens kept while idle: a quarter second's worth.
    burst: f64,
    /// May be negative (debt) after a piece larger than what was available.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (at least 1).
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1);
        let burst = (rate as f64 / 4.0).max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst);
        self.last = self.last.max(now);
    }

    /// True if a piece may be sent now (the bucket is not in debt).
    pub fn may_send(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > -SLACK
    }

    /// Takes `bytes` that were just queued for sending.
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        self.tokens -= bytes as f64;
    }

    /// The moment the debt is paid off (`now` if there is none).
    pub fn ready_at(&self, now: Instant) -> Instant {
        if self.tokens > -SLACK {
            return now.max(self.last);
        }
        let nanos = (-self.tokens / self.rate as f64 * 1e9).ceil() as u64;
        self.last + Duration::from_nanos(nanos)
    }
}

/// Parses a rate such as `10M`, `512K`, `1.5M`, `2G` or plain bytes (`65536`), per second;
/// K, M and G are powers of 1024, either case, optionally followed by `B`, `iB` or `/s`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("'{text}' is not a rate: give bytes per second, e.g. 10M, 512K or 65536 (K, M, G are 1024, 1024², 1024³)")
    };
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .or_else(|| t.strip_suffix(['B', 'b']))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1024u64),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024 * 1024),
        Some('g' | 'G') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let bytes = (v * mult as f64).round();
    if bytes.is_nan() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!(
            "'{text}': the upload limit must be at least 1 byte per second"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Equal within a microsecond (the arithmetic is in floating point).
    fn near(a: Instant, b: Instant) -> bool {
        a.max(b).duration_since(a.min(b)) < Duration::from_micros(1)
    }

    #[test]
    fn starts_with_a_quarter_second_and_goes_into_debt_by_one_piece() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2 * MIB, t0);
        assert!(b.may_send(t0));
        assert_eq!(b.ready_at(t0), t0);
        // 512 KiB of burst: one piece takes it all, the next one is still allowed (0 left).
        b.charge(512 * 1024, t0);
        assert!(b.may_send(t0));
        b.charge(512 * 1024, t0);
        // 512 KiB of debt at 2 MiB/s: 250 ms.
        assert!(!b.may_send(t0));
        assert!(near(b.ready_at(t0), t0 + ms(250)));
        assert!(!b.may_send(t0 + ms(249)));
        assert!(near(b.ready_at(t0 + ms(249)), t0 + ms(250)));
        assert!(b.may_send(t0 + ms(250)));
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4 * MIB, t0);
        b.charge(MIB, t0); // exactly the burst
        assert!(b.may_send(t0));
        // Ten idle seconds buy a quarter second's worth, not ten seconds' worth.
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.may_send(t1));
        b.charge(MIB, t1);
        b.charge(MIB, t1);
        assert!(!b.may_send(t1));
        assert!(near(b.ready_at(t1), t1 + ms(250)));
    }

    #[test]
    fn the_long_run_rate_is_the_limit() {
        // A sender that sends a piece whenever allowed, at exactly the moments the bucket
        // names, moves rate × time bytes, give or take the burst and one piece.
        let t0 = Instant::now();
        let rate = 3 * MIB / 2;
        let piece = 512 * 1024;
        let mut b = TokenBucket::new(rate, t0);
        let mut now = t0;
        let mut sent = 0u64;
        let end = t0 + Duration::from_secs(20);
        let mut steps = 0;
        while now < end {
            steps += 1;
            assert!(steps < 10_000, "bounded");
            if b.may_send(now) {
                b.charge(piece, now);
                sent += piece;
            } else {
                let next = b.ready_at(now);
                assert!(next > now, "a deferral always lies in the future");
                now = next;
            }
        }
        let expected = rate * 20;
        assert!(sent >= expected, "{sent} < {expected}");
        assert!(
            sent <= expected + rate / 4 + 2 * piece,
            "{sent} too far above {expected}"
        );
    }

    #[test]
    fn a_limit_below_one_piece_sends_a_piece_then_waits_longer() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100 * 1024, t0);
        assert!(b.may_send(t0));
        b.charge(512 * 1024, t0);
        // 25 KiB of burst, so 487 KiB of debt: 4.87 s.
        assert!(near(b.ready_at(t0), t0 + ms(4870)));
        assert!(!b.may_send(t0 + ms(4860)));
        assert!(b.may_send(t0 + ms(4870)));
    }

    #[test]
    fn rates_parse_with_binary_suffixes() {
        assert_eq!(parse_rate("10M"), Ok(10 * MIB));
        assert_eq!(parse_rate("512K"), Ok(512 * 1024));
        assert_eq!(parse_rate("512k"), Ok(512 * 1024));
        assert_eq!(parse_rate("65536"), Ok(65536));
        assert_eq!(parse_rate("1.5M"), Ok(3 * MIB / 2));
        assert_eq!(parse_rate("2G"), Ok(2048 * MIB));
        assert_eq!(parse_rate("10MiB"), Ok(10 * MIB));
        assert_eq!(parse_rate("10MB/s"), Ok(10 * MIB));
        for bad in ["", "M", "0", "-5K", "ten", "10X", "1e6", "0.0001"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
