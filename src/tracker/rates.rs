//! Per-address rates: registrations and failed logins, each a token bucket per source address.
//! Local to the tracker that receives the connection (not replicated: an address's history is
//! a property of the connections this tracker saw), checked in the request handlers before
//! anything is proposed. Pure: the clock is an argument, so the tests step it.
//!
//! A bucket holds up to `burst` tokens and gains `per_minute` of them a minute. A registration
//! takes one token or is refused; a failed login takes one afterwards, and a login is refused
//! while the bucket is empty (a right password too: the address is guessing).

use crate::tracker::state::Refusal;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// New users one address may register at once. A classroom or an office behind one NAT
/// registering together fits; one script's flood (26,000 in ten seconds) stops after this.
pub const REGISTRATION_BURST: u32 = 100;
/// New users one address may register a minute once its burst is spent.
pub const REGISTRATIONS_PER_MINUTE: u32 = 60;
/// Failed logins one address may make at once: typos and a forgotten password fit.
pub const FAILED_LOGIN_BURST: u32 = 20;
/// Failed logins one address may make a minute once its burst is spent: one guess every 10 s
/// (8,640 a day) instead of the thousand a second the password hash would allow.
pub const FAILED_LOGINS_PER_MINUTE: u32 = 6;
/// Addresses whose buckets are remembered. A full bucket is the same as none and is dropped
/// first; beyond that the least recently seen address is forgotten (it starts over with a
/// full burst), so memory stays bounded (~64 B an address) whatever the number of sources.
pub const MAX_ADDRESSES: usize = 65_536;

/// A bucket's size and refill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: u32,
}

impl Rate {
    /// How long one token takes to come back.
    fn token_time(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }
}

/// The configured rates (tracker flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateConfig {
    pub registrations: Rate,
    pub failed_logins: Rate,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            registrations: Rate {
                burst: REGISTRATION_BURST,
                per_minute: REGISTRATIONS_PER_MINUTE,
            },
            failed_logins: Rate {
                burst: FAILED_LOGIN_BURST,
                per_minute: FAILED_LOGINS_PER_MINUTE,
            },
        }
    }
}

/// One token bucket, kept as the moment it is full again (`full_at`): refilling then needs no
/// bookkeeping, and whole tokens are counted back from it when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// When the bucket holds `burst` tokens again; in the past means full.
    full_at: Instant,
}

impl TokenBucket {
    pub fn full(now: Instant) -> Self {
        TokenBucket { full_at: now }
    }

    /// Whole tokens held at `now`.
    pub fn tokens(&self, rate: Rate, now: Instant) -> u32 {
        let missing = self.full_at.saturating_duration_since(now);
        let t = rate.token_time().as_nanos().max(1);
        let missing_tokens = missing.as_nanos().div_ceil(t);
        u32::try_from(missing_tokens).map_or(0, |m| rate.burst.saturating_sub(m))
    }

    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }

    /// Takes one token if there is one; otherwise how long until there is.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if self.tokens(rate, now) == 0 {
            return Err(self.wait(rate, now));
        }
        self.take(rate, now);
        Ok(())
    }

    /// Takes one token whether or not there is one, never going below empty (a failure that
    /// already happened is counted; an empty bucket stays empty, it does not go into debt).
    pub fn take(&mut self, rate: Rate, now: Instant) {
        let capacity = rate.token_time() * rate.burst;
        let base = self.full_at.max(now);
        self.full_at = (base + rate.token_time()).min(now + capacity);
    }

    /// How long until one token is held (zero if one is).
    pub fn wait(&self, rate: Rate, now: Instant) -> Duration {
        let capacity = rate.token_time() * rate.burst;
        let missing = self.full_at.saturating_duration_since(now);
        missing.saturating_sub(capacity.saturating_sub(rate.token_time()))
    }
}

/// Buckets by source address, bounded by `MAX_ADDRESSES`.
#[derive(Debug)]
pub struct AddressBuckets {
    rate: Rate,
    cap: usize,
    buckets: HashMap<IpAddr, (TokenBucket, Instant)>,
}

/// The key of an address: IPv4 as it is (an IPv4-mapped IPv6 address too), IPv6 by its /64,
/// the block one site or host usually holds whole.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AddressBuckets {
    pub fn new(rate: Rate) -> Self {
        Self::with_cap(rate, MAX_ADDRESSES)
    }

    fn with_cap(rate: Rate, cap: usize) -> Self {
        AddressBuckets {
            rate,
            cap,
            buckets: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Whole tokens `ip` holds (a forgotten address holds a full burst).
    pub fn tokens(&self, ip: IpAddr, now: Instant) -> u32 {
        self.buckets
            .get(&source_key(ip))
            .map_or(self.rate.burst, |(b, _)| b.tokens(self.rate, now))
    }

    /// How long until `ip` holds a token.
    pub fn wait(&self, ip: IpAddr, now: Instant) -> Duration {
        self.buckets
            .get(&source_key(ip))
            .map_or(Duration::ZERO, |(b, _)| b.wait(self.rate, now))
    }

    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        self.bucket(ip, now).try_take(rate, now)
    }

    pub fn take(&mut self, ip: IpAddr, now: Instant) {
        let rate = self.rate;
        self.bucket(ip, now).take(rate, now);
    }

    fn bucket(&mut self, ip: IpAddr, now: Instant) -> &mut TokenBucket {
        let key = source_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.cap {
            self.buckets.retain(|_, (b, _)| !b.is_full(now));
            if self.buckets.len() >= self.cap {
                let oldest = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, (_, seen))| *seen)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.buckets.remove(&k);
                }
            }
        }
        let entry = self
            .buckets
            .entry(key)
            .or_insert_with(|| (TokenBucket::full(now), now));
        entry.1 = now;
        &mut entry.0
    }
}

/// Both per-address rates of one tracker.
#[derive(Debug)]
pub struct Rates {
    pub registrations: AddressBuckets,
    pub failed_logins: AddressBuckets,
}

/// "try again in 7 s", rounded up so that the advice is never too early.
fn again_in(wait: Duration) -> String {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    format!("try again in {secs} s")
}

impl Rates {
    pub fn new(cfg: RateConfig) -> Self {
        Rates {
            registrations: AddressBuckets::new(cfg.registrations),
            failed_logins: AddressBuckets::new(cfg.failed_logins),
        }
    }

    /// A `create_user` from `ip`: takes a token or is refused.
    pub fn allow_registration(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        self.registrations.try_take(ip, now).map_err(|wait| {
            Refusal::RateLimited(format!(
                "too many new users from your address; {}",
                again_in(wait)
            ))
        })
    }

    /// A `login` from `ip`: refused while its failed-login bucket is empty. Takes nothing.
    pub fn allow_login(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.failed_logins.tokens(ip, now) > 0 {
            return Ok(());
        }
        Err(Refusal::RateLimited(format!(
            "too many failed logins from your address; {}",
            again_in(self.failed_logins.wait(ip, now))
        )))
    }

    /// A login from `ip` failed (wrong user or password).
    pub fn note_failed_login(&mut self, ip: IpAddr, now: Instant) {
        self.failed_logins.take(ip, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tracker::ErrorCode;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_one_token_per_interval() {
        let rate = Rate {
            burst: 3,
            per_minute: 6, // one every 10 s
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(t0);
        assert_eq!(b.tokens(rate, t0), 3);
        for _ in 0..3 {
            assert_eq!(b.try_take(rate, t0), Ok(()));
        }
        assert_eq!(b.try_take(rate, t0), Err(secs(10)));
        assert_eq!(b.try_take(rate, t0 + secs(4)), Err(secs(6)));
        assert_eq!(b.try_take(rate, t0 + secs(10)), Ok(()));
        assert_eq!(b.try_take(rate, t0 + secs(10)), Err(secs(10)));
        // Long idle: back to the burst, never beyond it.
        assert_eq!(b.tokens(rate, t0 + secs(3600)), 3);
        assert!(b.is_full(t0 + secs(3600)));
    }

    #[test]
    fn taking_from_an_empty_bucket_does_not_go_into_debt() {
        let rate = Rate {
            burst: 2,
            per_minute: 60,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(t0);
        for _ in 0..10 {
            b.take(rate, t0);
        }
        assert_eq!(b.tokens(rate, t0), 0);
        assert_eq!(b.wait(rate, t0), secs(1), "one interval, not ten");
        assert_eq!(b.tokens(rate, t0 + secs(1)), 1);
        assert_eq!(b.tokens(rate, t0 + secs(2)), 2);
    }

    #[test]
    fn registrations_are_counted_per_address() {
        let cfg = RateConfig {
            registrations: Rate {
                burst: 2,
                per_minute: 1,
            },
            ..RateConfig::default()
        };
        let mut r = Rates::new(cfg);
        let t0 = Instant::now();
        assert_eq!(r.allow_registration(A, t0), Ok(()));
        assert_eq!(r.allow_registration(A, t0), Ok(()));
        let refused = r.allow_registration(A, t0).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::RateLimited);
        assert_eq!(
            refused.message(),
            "too many new users from your address; try again in 60 s"
        );
        assert_eq!(r.allow_registration(B, t0), Ok(()), "another address");
        assert_eq!(r.allow_registration(A, t0 + secs(60)), Ok(()));
    }

    #[test]
    fn failed_logins_close_the_address_until_a_token_returns() {
        let cfg = RateConfig {
            failed_logins: Rate {
                burst: 2,
                per_minute: 6,
            },
            ..RateConfig::default()
        };
        let mut r = Rates::new(cfg);
        let t0 = Instant::now();
        assert_eq!(r.allow_login(A, t0), Ok(()));
        r.note_failed_login(A, t0);
        assert_eq!(r.allow_login(A, t0), Ok(()));
        r.note_failed_login(A, t0);
        let refused = r.allow_login(A, t0 + secs(3)).unwrap_err();
        assert_eq!(
            refused.message(),
            "too many failed logins from your address; try again in 7 s"
        );
        assert_eq!(r.allow_login(B, t0), Ok(()));
        assert_eq!(r.allow_login(A, t0 + secs(10)), Ok(()));
        // Checking takes nothing: only failures count.
        for _ in 0..100 {
            assert_eq!(r.allow_login(A, t0 + secs(10)), Ok(()));
        }
    }

    #[test]
    fn ipv6_sources_share_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(source_key(mapped), A);
        assert_eq!(
            source_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn the_table_stays_bounded_dropping_full_buckets_first_then_the_oldest() {
        let rate = Rate {
            burst: 1,
            per_minute: 1,
        };
        let mut t = AddressBuckets::with_cap(rate, 3);
        let t0 = Instant::now();
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 1, n));
        t.take(ip(1), t0);
        t.take(ip(2), t0 + secs(5));
        t.take(ip(3), t0 + secs(6));
        assert_eq!(t.len(), 3);
        // At 61 s ip(1) is full again: dropped to make room, nothing else forgotten.
        t.take(ip(4), t0 + secs(61));
        assert_eq!(t.len(), 3);
        assert_eq!(t.tokens(ip(2), t0 + secs(61)), 0);
        assert_eq!(t.tokens(ip(3), t0 + secs(61)), 0);
        // None full: the least recently seen (ip(2)) goes.
        t.take(ip(5), t0 + secs(61));
        assert_eq!(t.len(), 3);
        assert_eq!(t.tokens(ip(2), t0 + secs(61)), 1, "forgotten: a full burst");
        assert_eq!(t.tokens(ip(3), t0 + secs(61)), 0);
    }
}
