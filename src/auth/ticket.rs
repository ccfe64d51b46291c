//! Group tickets: how a seeder knows a downloader may have a file's bytes without asking the
//! tracker. The tracker, which knows who is in which group, writes into each peer line it
//! gives a member a ticket for that peer:
//!
//! ```text
//! K_t    = HMAC-SHA256(session secret, "groupshare-ticket-key-v2")     the seeder's ticket key
//! claim  = "groupshare-ticket-v2\0<downloader>\0<downloader key hex>\0<group>\0<file>\0<expiry>"
//! mac    = HMAC-SHA256(K_t, claim)
//! ```
//!
//! The seeder recomputes the MAC with its own `K_t` (it has the session secret from its login
//! reply) over the claim the downloader presents, with the downloader key taken from the
//! channel (the remote static key of the peer connection, not from the wire), and checks the
//! expiry against its own clock corrected by the tracker's (`TrackerClock`). A ticket is thus
//! bound to one downloader, one group, one file and one seeder, and lives `DEFAULT_LIFETIME`:
//! when a member leaves a group the tracker stops issuing, so its access ends within that.
//!
//! Pure: the time and the keys come from the caller.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// A seeder's ticket key (`K_t`).
pub type TicketKey = [u8; 32];

/// How long a ticket the tracker issues is valid, in seconds, unless `--ticket-lifetime` says
/// otherwise: long enough that a downloader refreshing its peers every 1-3 s always holds a
/// fresh one, short enough that leaving a group ends access well inside a minute.
pub const DEFAULT_LIFETIME: u64 = 30;
/// The longest lifetime a tracker may be configured with, and the furthest in the future a
/// seeder accepts an expiry (by its corrected clock): so even a misconfigured tracker cannot
/// grant more than this, and the documented bound holds.
pub const MAX_LIFETIME: u64 = 30;
/// What the documentation promises: leaving a group ends access to its files within this many
/// seconds (the lifetime, plus the seconds' rounding and the seeder's clock error).
pub const ACCESS_BOUND: u64 = 60;
/// Seconds a seeder allows beyond `MAX_LIFETIME` before it calls an expiry too far off to be
/// genuine: the tracker rounds its expiries up by one, and the seeder's view of the tracker's
/// clock may be a second or two behind (whole seconds, measured across a network hop).
pub const CLOCK_SLACK: u64 = 5;

const KEY_LABEL: &[u8] = b"groupshare-ticket-key-v2";
const CLAIM_LABEL: &[u8] = b"groupshare-ticket-v2";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The ticket key of a session, from its secret (the 32 bytes its 64 hex digits encode).
/// `None` if the secret is not 64 hex digits.
pub fn ticket_key(secret_hex: &str) -> Option<TicketKey> {
    let secret: [u8; 32] = crate::pieces::from_hex(secret_hex)?.try_into().ok()?;
    Some(ticket_key_of(&secret))
}

/// The ticket key of a session from the secret's bytes (the client keeps them as bytes).
pub fn ticket_key_of(secret: &[u8; 32]) -> TicketKey {
    hmac(secret, &[KEY_LABEL])
}

/// What a ticket says: this downloader (user and channel key) may fetch this file of this
/// group until `expiry` (the tracker's unix time, in seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    pub downloader: &'a str,
    /// The downloader's static key: the one it proved to its tracker, which the seeder checks
    /// against its own channel's handshake. `None` binds to no key (an empty word): only for a
    /// session whose key is unknown, which the tracker never issues for.
    pub downloader_key: Option<&'a [u8; 32]>,
    pub group: &'a str,
    pub file: &'a str,
    pub expiry: u64,
}

impl Claim<'_> {
    fn mac(&self, key: &TicketKey) -> [u8; 32] {
        let key_hex = self
            .downloader_key
            .map(|k| crate::pieces::to_hex(k))
            .unwrap_or_default();
        let expiry = self.expiry.to_string();
        hmac(
            key,
            &[
                CLAIM_LABEL,
                b"\0",
                self.downloader.as_bytes(),
                b"\0",
                key_hex.as_bytes(),
                b"\0",
                self.group.as_bytes(),
                b"\0",
                self.file.as_bytes(),
                b"\0",
                expiry.as_bytes(),
            ],
        )
    }
}

/// The two words of a ticket on the wire: `<expiry> <mac-hex>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub expiry: u64,
    pub mac: [u8; 32],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A ticket is a credential: logs show when it ends, not what it is.
        write!(f, "Ticket(expires {})", self.expiry)
    }
}

/// Why a seeder refuses a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The MAC does not match this claim under this seeder's key: forged, altered, for another
    /// downloader, group, file or seeder.
    Forged,
    /// Genuine, but its time is over (or it claims to last longer than any tracker issues).
    Expired,
}

impl Ticket {
    /// The tracker's side: a ticket for `claim`, valid at the seeder whose key is `key`.
    pub fn issue(key: &TicketKey, claim: &Claim) -> Ticket {
        Ticket {
            expiry: claim.expiry,
            mac: claim.mac(key),
        }
    }

    /// The seeder's side: whether `claim` (whose expiry must be this ticket's) holds under its
    /// own key at the tracker's time `now`. The MAC is compared in constant time.
    pub fn check(&self, key: &TicketKey, claim: &Claim, now: u64) -> Result<(), Refused> {
        if claim.expiry != self.expiry || !bool::from(claim.mac(key).ct_eq(&self.mac)) {
            return Err(Refused::Forged);
        }
        if now > self.expiry || self.expiry > now.saturating_add(MAX_LIFETIME + CLOCK_SLACK) {
            return Err(Refused::Expired);
        }
        Ok(())
    }

    /// `<expiry> <mac-hex>`.
    pub fn encode(&self) -> String {
        format!("{} {}", self.expiry, crate::pieces::to_hex(&self.mac))
    }

    /// The two words; `None` unless the expiry is a plain decimal and the MAC 64 lowercase hex.
    pub fn parse(expiry: &str, mac: &str) -> Option<Ticket> {
        if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if mac.len() != 64 || !mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let bytes = crate::pieces::from_hex(mac)?;
        Some(Ticket {
            expiry: expiry.parse().ok()?,
            mac: bytes.try_into().ok()?,
        })
    }
}

/// This process's view of the tracker's clock: the tracker's unix time minus ours, measured
/// when the tracker told its time (`hello`). Tickets expire by the tracker's clock, so a seeder
/// whose own clock is off still ends access on time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerClock {
    /// Seconds to add to the local unix time.
    pub offset: i64,
}

impl TrackerClock {
    /// From the tracker's announced time and the local time when it arrived.
    pub fn from_times(tracker_unix: u64, local_unix: u64) -> TrackerClock {
        TrackerClock {
            offset: tracker_unix as i64 - local_unix as i64,
        }
    }

    /// The tracker's time now, given the local unix time.
    pub fn tracker_time(&self, local_unix: u64) -> u64 {
        (local_unix as i64).saturating_add(self.offset).max(0) as u64
    }
}

/// The local unix time in seconds (0 before 1970: a broken clock refuses tickets, not panics).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const NOW: u64 = 1_800_000_000;

    fn claim<'a>(key: Option<&'a [u8; 32]>) -> Claim<'a> {
        Claim {
            downloader: "bob",
            downloader_key: key,
            group: "physics",
            file: "report.pdf",
            expiry: NOW + DEFAULT_LIFETIME,
        }
    }

    fn key() -> TicketKey {
        ticket_key(SECRET).expect("a 64-hex secret")
    }

    #[test]
    fn a_ticket_holds_for_its_claim_until_it_expires() {
        let dk = [9u8; 32];
        let t = Ticket::issue(&key(), &claim(Some(&dk)));
        assert_eq!(t.check(&key(), &claim(Some(&dk)), NOW), Ok(()));
        assert_eq!(
            t.check(&key(), &claim(Some(&dk)), NOW + DEFAULT_LIFETIME),
            Ok(()),
            "the last second"
        );
        assert_eq!(
            t.check(&key(), &claim(Some(&dk)), NOW + DEFAULT_LIFETIME + 1),
            Err(Refused::Expired)
        );
    }

    #[test]
    fn every_other_claim_or_key_is_refused() {
        let dk = [9u8; 32];
        let good = claim(Some(&dk));
        let t = Ticket::issue(&key(), &good);
        let other_key = [8u8; 32];
        let wrong = [
            Claim {
                downloader: "mallory",
                ..good
            },
            Claim {
                downloader_key: Some(&other_key),
                ..good
            },
            Claim {
                downloader_key: None,
                ..good
            },
            Claim {
                group: "chemistry",
                ..good
            },
            Claim {
                file: "other.pdf",
                ..good
            },
            Claim {
                expiry: good.expiry + 1,
                ..good
            },
        ];
        for c in wrong {
            assert_eq!(t.check(&key(), &c, NOW), Err(Refused::Forged), "{c:?}");
        }
        let other_seeder = ticket_key(&"ab".repeat(32)).expect("a 64-hex secret");
        assert_eq!(
            t.check(&other_seeder, &good, NOW),
            Err(Refused::Forged),
            "a ticket for another seeder"
        );
        let mut tampered = t;
        tampered.mac[31] ^= 1;
        assert_eq!(tampered.check(&key(), &good, NOW), Err(Refused::Forged));
        let mut later = t;
        later.expiry += 100;
        assert_eq!(
            later.check(
                &key(),
                &Claim {
                    expiry: later.expiry,
                    ..good
                },
                NOW
            ),
            Err(Refused::Forged),
            "an expiry moved by the holder"
        );
    }

    #[test]
    fn a_genuine_ticket_lasting_longer_than_any_tracker_issues_is_refused() {
        let c = Claim {
            expiry: NOW + MAX_LIFETIME + CLOCK_SLACK + 1,
            ..claim(None)
        };
        let t = Ticket::issue(&key(), &c);
        assert_eq!(t.check(&key(), &c, NOW), Err(Refused::Expired));
    }

    #[test]
    fn the_secret_must_be_64_hex_digits() {
        assert!(ticket_key(SECRET).is_some());
        assert!(ticket_key(&SECRET[..62]).is_none());
        assert!(ticket_key(&SECRET.replace('0', "g")).is_none());
        assert_ne!(ticket_key(SECRET), ticket_key(&"ab".repeat(32)));
    }

    #[test]
    fn wire_words_round_trip_and_junk_is_refused() {
        let t = Ticket::issue(&key(), &claim(None));
        let enc = t.encode();
        let (e, m) = enc.split_once(' ').expect("two words");
        assert_eq!(Ticket::parse(e, m), Some(t));
        assert!(
            !format!("{t:?}").contains(&m[..8]),
            "the MAC stays out of logs"
        );
        for (e, m) in [
            ("", m),
            ("-1", m),
            ("+5", m),
            ("99999999999999999999", m),
            (e, &m[..63]),
            (e, &m.to_uppercase()),
            (e, "zz"),
        ] {
            assert_eq!(Ticket::parse(e, m), None, "{e} {m}");
        }
    }

    #[test]
    fn the_tracker_clock_corrects_the_local_one() {
        let c = TrackerClock::from_times(1000, 990);
        assert_eq!(c.tracker_time(995), 1005);
        let behind = TrackerClock::from_times(990, 1000);
        assert_eq!(behind.tracker_time(1000), 990);
        assert_eq!(behind.tracker_time(3), 0, "never before 1970");
        assert_eq!(TrackerClock::default().tracker_time(42), 42);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn only_the_exact_claim_under_the_exact_key_passes(
            secret in "[0-9a-f]{64}", user in "[a-z]{1,8}", other in "[a-z]{1,8}",
            group in "[a-z]{1,8}", file in "[a-z.]{1,8}", dk: [u8; 32], flip in 0usize..32,
            age in 0u64..(2 * DEFAULT_LIFETIME),
        ) {
            let k = ticket_key(&secret).expect("64 hex");
            let c = Claim { downloader: &user, downloader_key: Some(&dk), group: &group,
                file: &file, expiry: NOW + DEFAULT_LIFETIME };
            let t = Ticket::issue(&k, &c);
            let now = NOW + age;
            let expect = if age <= DEFAULT_LIFETIME { Ok(()) } else { Err(Refused::Expired) };
            prop_assert_eq!(t.check(&k, &c, now), expect);
            let (e, m) = t.encode().split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))
                .expect("two words");
            prop_assert_eq!(Ticket::parse(&e, &m), Some(t));
            if other != user {
                let wrong = Claim { downloader: &other, ..c };
                prop_assert_eq!(t.check(&k, &wrong, NOW), Err(Refused::Forged));
            }
            let mut bad = t;
            bad.mac[flip] ^= 0x80;
            prop_assert_eq!(bad.check(&k, &c, NOW), Err(Refused::Forged));
            let mut k2 = k;
            k2[flip] ^= 1;
            prop_assert_eq!(t.check(&k2, &c, NOW), Err(Refused::Forged));
        }
    }
}
