//! Tickets for in-process peer tests, which have no tracker to issue them: every test seeder
//! uses one session secret (`TEST_SECRET`), so a test can issue a ticket any of them accepts.

use crate::auth::ticket::{self, Claim, Ticket, TicketKey, TrackerClock};
use crate::client::peers::{PeerInfo, PeerSide};

/// The session secret of every in-process test seeder.
pub const TEST_SECRET: &str = "7e57000000000000000000000000000000000000000000000000000000007e57";

pub fn test_key() -> TicketKey {
    ticket::ticket_key(TEST_SECRET).expect("TEST_SECRET is 64 hex digits")
}

/// Makes `side` a seeder that accepts tickets under `TEST_SECRET`, its clock the tracker's.
pub fn admit_test_tickets(side: &mut PeerSide) {
    side.set_tickets(Some(test_key()), TrackerClock::default());
}

/// A ticket for `downloader` to fetch `group`/`file` from any test seeder, valid for the
/// longest lifetime a tracker issues.
pub fn test_ticket(downloader: &str, group: &str, file: &str) -> Ticket {
    let claim = Claim {
        downloader,
        downloader_key: None,
        group,
        file,
        expiry: ticket::unix_now() + ticket::MAX_LIFETIME,
    };
    Ticket::issue(&test_key(), &claim)
}

/// `peers`, each with a fresh test ticket for `downloader` and `group`/`file`.
pub fn with_test_tickets(
    peers: Vec<PeerInfo>,
    downloader: &str,
    group: &str,
    file: &str,
) -> Vec<PeerInfo> {
    let t = test_ticket(downloader, group, file);
    peers
        .into_iter()
        .map(|p| PeerInfo {
            ticket: Some(t),
            ..p
        })
        .collect()
}
