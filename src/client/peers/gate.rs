//! Who may fetch what from this seeder: the ticket check at `want`/`watch` and what each upload
//! connection was granted by it. A downloader shows a ticket the tracker issued it for this
//! seeder (`auth::ticket`); a good one grants its connection that one file until the ticket's
//! expiry, by the tracker's clock. Anything else — no ticket, a forged or expired one, a ticket
//! for a file this client does not serve — gets the same `err forbidden`, so a non-member
//! learns nothing, not even which files exist. A `get` for a file the connection holds no
//! grant for is `forbidden`; one after its grant expired is `ticket_expired`, and a new
//! `want`/`watch` with a fresh ticket renews the grant on the same connection.
//!
//! Pure: the local clock is passed in.

use crate::auth::ticket::{Claim, TicketKey, TrackerClock};
use crate::protocol::peer::Pass;

/// Files one connection may hold grants for at a time: a downloader opens one connection per
/// download, so one is the norm; the oldest grant goes beyond this.
pub const MAX_GRANTS: usize = 8;

/// This seeder's side of the tickets: its key (from the session secret; none while logged
/// out, when nothing is served to anyone) and the tracker's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct TicketGate {
    key: Option<TicketKey>,
    clock: TrackerClock,
}

impl TicketGate {
    pub fn new(key: Option<TicketKey>, clock: TrackerClock) -> TicketGate {
        TicketGate { key, clock }
    }

    pub fn clock(&self) -> TrackerClock {
        self.clock
    }

    /// The tracker's time now.
    pub fn now(&self, local_unix: u64) -> u64 {
        self.clock.tracker_time(local_unix)
    }

    /// Whether `pass` lets the downloader on a channel whose remote static key is `remote_key`
    /// fetch `(group, file)`; its expiry if so. A ticket names the key its downloader proved to
    /// its tracker, so one shown over another channel (stolen, replayed) does not pass.
    pub fn admit(
        &self,
        pass: Option<&Pass>,
        remote_key: Option<&[u8; 32]>,
        group: &str,
        file: &str,
        local_unix: u64,
    ) -> Option<u64> {
        let (key, pass) = (self.key.as_ref()?, pass?);
        let claim = Claim {
            downloader: &pass.downloader,
            downloader_key: remote_key,
            group,
            file,
            expiry: pass.ticket.expiry,
        };
        match pass.ticket.check(key, &claim, self.now(local_unix)) {
            Ok(()) => Some(pass.ticket.expiry),
            Err(why) => {
                log::debug!(
                    "refused a ticket of {} for {group}/{file}: {why:?}",
                    pass.downloader
                );
                None
            }
        }
    }
}

/// A connection's standing for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    Expired,
    /// Never granted on this connection.
    None,
}

/// What one connection was granted: `(group, file, expiry)`, at most `MAX_GRANTS`.
#[derive(Clone, Debug, Default)]
pub struct Grants(Vec<(String, String, u64)>);

impl Grants {
    /// Grants `(group, file)` until `expiry`; a later grant of the same file replaces it.
    pub fn grant(&mut self, group: &str, file: &str, expiry: u64) {
        self.0.retain(|(g, f, _)| !(g == group && f == file));
        if self.0.len() == MAX_GRANTS {
            self.0.remove(0);
        }
        self.0.push((group.to_string(), file.to_string(), expiry));
    }

    /// The connection's standing for `(group, file)` at the tracker's time `now`.
    pub fn access(&self, group: &str, file: &str, now: u64) -> Access {
        match self.0.iter().find(|(g, f, _)| g == group && f == file) {
            Some((_, _, expiry)) if now <= *expiry => Access::Granted,
            Some(_) => Access::Expired,
            None => Access::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ticket::{ticket_key, Ticket};

    const NOW: u64 = 1_800_000_000;

    fn key() -> TicketKey {
        ticket_key(&"5e".repeat(32)).expect("a 64-hex secret")
    }

    fn pass_for(user: &str, group: &str, file: &str, expiry: u64) -> Pass {
        let claim = Claim {
            downloader: user,
            downloader_key: None,
            group,
            file,
            expiry,
        };
        Pass {
            downloader: user.into(),
            ticket: Ticket::issue(&key(), &claim),
        }
    }

    #[test]
    fn a_good_ticket_is_admitted_by_the_seeder_it_was_made_for_only() {
        let gate = TicketGate::new(Some(key()), TrackerClock::default());
        let p = pass_for("bob", "g", "f", NOW + 30);
        assert_eq!(gate.admit(Some(&p), None, "g", "f", NOW), Some(NOW + 30));
        assert_eq!(gate.admit(Some(&p), None, "g", "other", NOW), None);
        assert_eq!(gate.admit(None, None, "g", "f", NOW), None, "no ticket");
        let other = TicketGate::new(ticket_key(&"ab".repeat(32)), TrackerClock::default());
        assert_eq!(other.admit(Some(&p), None, "g", "f", NOW), None);
        let logged_out = TicketGate::default();
        assert_eq!(logged_out.admit(Some(&p), None, "g", "f", NOW), None);
        let k = [3u8; 32];
        assert_eq!(
            gate.admit(Some(&p), Some(&k), "g", "f", NOW),
            None,
            "a ticket made for no channel key does not fit a channel that has one"
        );
    }

    #[test]
    fn expiry_is_judged_by_the_trackers_clock() {
        let p = pass_for("bob", "g", "f", NOW + 30);
        // This machine's clock is 100 s behind the tracker's.
        let behind = TicketGate::new(Some(key()), TrackerClock::from_times(NOW, NOW - 100));
        assert_eq!(
            behind.admit(Some(&p), None, "g", "f", NOW - 100 + 30),
            Some(NOW + 30)
        );
        assert_eq!(behind.admit(Some(&p), None, "g", "f", NOW - 100 + 31), None);
    }

    #[test]
    fn grants_are_per_file_expire_and_are_renewed() {
        let mut g = Grants::default();
        assert_eq!(g.access("g", "f", NOW), Access::None);
        g.grant("g", "f", NOW + 2);
        assert_eq!(g.access("g", "f", NOW + 2), Access::Granted);
        assert_eq!(g.access("g", "f", NOW + 3), Access::Expired);
        assert_eq!(g.access("g", "x", NOW), Access::None);
        g.grant("g", "f", NOW + 30);
        assert_eq!(g.access("g", "f", NOW + 3), Access::Granted);
        for i in 0..MAX_GRANTS {
            g.grant("g", &format!("f{i}"), NOW + 30);
        }
        assert_eq!(g.access("g", "f", NOW), Access::None, "the oldest went");
        assert_eq!(g.0.len(), MAX_GRANTS);
    }
}
