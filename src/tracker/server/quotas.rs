//! The server's side of quotas and rates: the per-address checks the request handlers call
//! first (`allow_registration`, `allow_login`; failed logins are noted wherever a
//! `bad_credentials` refusal is sent), and the leader's `Op::Limits` entry after each term it
//! opens, which carries its configured quotas to the state of both trackers
//! (`tracker::state::quota`, `tracker::rates`).

use super::*;
use std::net::{IpAddr, Ipv4Addr};

impl Server {
    /// The connection's source address. A socket whose peer cannot be read any more (reset)
    /// counts as one shared unknown address, so it is limited too.
    fn source_ip(&self, key: usize) -> IpAddr {
        self.conns
            .get(key)
            .and_then(|c| c.conn.stream.socket().peer_addr().ok())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
    }

    /// A `create_user` from connection `key`: takes one of its address's registrations.
    pub(super) fn allow_registration(&mut self, key: usize) -> Result<(), Refusal> {
        let ip = self.source_ip(key);
        self.rates.allow_registration(ip, Instant::now())
    }

    /// A `login` from connection `key`: refused while its address has no failed logins left.
    pub(super) fn allow_login(&self, key: usize) -> Result<(), Refusal> {
        self.rates.allow_login(self.source_ip(key), Instant::now())
    }

    /// A login from connection `key` was refused for its credentials.
    pub(super) fn note_failed_login(&mut self, key: usize) {
        let ip = self.source_ip(key);
        self.rates.note_failed_login(ip, Instant::now());
    }

    /// After a term entry this leader appended: its configured quotas, if the state does not
    /// hold them already. Both trackers apply the entry, so both check the same numbers.
    pub(super) fn write_limits(&mut self) {
        let op = Op::Limits(self.cfg.limits);
        if self.state.limits() == self.cfg.limits {
            return;
        }
        log::info!("quotas in force from here on: {}", self.cfg.limits);
        if self.state.apply(None, &op).is_ok() {
            self.append(None, op, None);
        }
    }
}
