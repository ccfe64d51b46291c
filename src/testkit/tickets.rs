//! Tickets for in-process peer tests, which have no tracker to issue them: every test seeder
//! uses one session secret (`TEST_SECRET`), so a test can issue a ticket any of them accepts.

use crate::auth::ticket::{self, Claim, Ticket, TicketKey, TrackerClock};
use crate::client::peers::PeerSide;

/// The session secret of every in-process test seeder.
pub const TEST_SECRET: &str = "7e57000000000000000000000000000000000000000000000000000000007e57";

pub fn test_key() -> TicketKey {
    ticket::ticket_key(TEST_SECRET).expect("TEST_SECRET is 64 hex digits")
}

/// Makes `side` a seeder that accepts tickets under `TEST_SECRET`, its clock the tracker's.
pub fn admit_test_tickets(side: &mut PeerSide) {
    side.set_tickets(Some(test_key()), TrackerClock::default());
}

/// A ticket for `downloader`, whose channel key is `key`, to fetch `group`/`file` from any test
/// seeder, valid for the longest lifetime a tracker issues.
pub fn test_ticket(downloader: &str, key: &[u8; 32], group: &str, file: &str) -> Ticket {
    let claim = Claim {
        downloader,
        downloader_key: Some(key),
        group,
        file,
        expiry: ticket::unix_now() + ticket::MAX_LIFETIME,
    };
    Ticket::issue(&test_key(), &claim)
}
