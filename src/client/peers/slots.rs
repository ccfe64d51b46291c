//! Who holds this seeder's upload slots: each upload connection's source address and when it
//! was last active, so that silent connections cannot hold the slots (`MAX_UPLOADS`) and one
//! address cannot take them all. Plain data; the peer side asks `admit` before it accepts a
//! connection, `touch`es a connection whenever it is serviced, and closes what `idle` returns.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Upload connections one source address may hold at once. A downloader opens one connection
/// to each seeder, so this is many downloaders behind one address (a NAT, a shared host, the
/// bench's crowd on loopback); a quarter of `MAX_UPLOADS`, so at least four addresses are
/// needed to fill the slots, and connections beyond it get `err busy`.
pub const MAX_UPLOADS_PER_ADDR: usize = 16;

/// An upload connection with no readiness (no request read, no reply written) for this long
/// is closed. A live downloader asks for pieces or reads them long before this; one that
/// watches a seeder holding nothing it needs is closed and reconnects when it learns of new
/// pieces from the tracker, so the slot goes to someone who is downloading.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(30);

/// The upload connections, by slab key.
#[derive(Debug, Default)]
pub struct UploadSlots {
    by_key: HashMap<usize, Slot>,
    per_addr: HashMap<IpAddr, usize>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    addr: IpAddr,
    active: Instant,
}

impl UploadSlots {
    /// Whether a connection from `addr` may take a slot, `MAX_UPLOADS` being `max_total`.
    pub fn admits(&self, addr: IpAddr, max_total: usize) -> Result<(), &'static str> {
        if self.by_key.len() >= max_total {
            return Err("every upload slot is taken");
        }
        if self.per_addr.get(&addr).copied().unwrap_or(0) >= MAX_UPLOADS_PER_ADDR {
            return Err("this address holds its share of upload slots");
        }
        Ok(())
    }

    /// Connection `key` from `addr` took a slot.
    pub fn taken(&mut self, key: usize, addr: IpAddr, now: Instant) {
        if let Some(old) = self.by_key.insert(key, Slot { addr, active: now }) {
            self.release_addr(old.addr);
        }
        *self.per_addr.entry(addr).or_insert(0) += 1;
    }

    /// Connection `key` was serviced (it sent or read something).
    pub fn touch(&mut self, key: usize, now: Instant) {
        if let Some(s) = self.by_key.get_mut(&key) {
            s.active = now;
        }
    }

    /// Connection `key` closed.
    pub fn released(&mut self, key: usize) {
        if let Some(s) = self.by_key.remove(&key) {
            self.release_addr(s.addr);
        }
    }

    fn release_addr(&mut self, addr: IpAddr) {
        if let Some(n) = self.per_addr.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&addr);
            }
        }
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.by_key.len()
    }

    /// Connections idle for `UPLOAD_IDLE` at `now`.
    pub fn idle(&self, now: Instant) -> Vec<usize> {
        self.by_key
            .iter()
            .filter(|(_, s)| now >= s.active + UPLOAD_IDLE)
            .map(|(k, _)| *k)
            .collect()
    }

    /// When the next connection becomes idle, if any is open.
    pub fn next_idle(&self) -> Option<Instant> {
        self.by_key.values().map(|s| s.active + UPLOAD_IDLE).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_gets_at_most_its_share_and_others_still_get_in() {
        let now = Instant::now();
        let mut s = UploadSlots::default();
        for k in 0..MAX_UPLOADS_PER_ADDR {
            assert_eq!(s.admits(ip(2), 64), Ok(()));
            s.taken(k, ip(2), now);
        }
        assert!(s.admits(ip(2), 64).is_err(), "the 17th from one address");
        assert_eq!(s.admits(ip(1), 64), Ok(()), "another address is let in");
        s.released(3);
        assert_eq!(s.admits(ip(2), 64), Ok(()), "a slot freed is usable again");
        assert_eq!(s.held(), MAX_UPLOADS_PER_ADDR - 1);
    }

    #[test]
    fn the_total_is_capped_whatever_the_addresses() {
        let now = Instant::now();
        let mut s = UploadSlots::default();
        for k in 0..4 {
            s.taken(k, ip(k as u8), now);
        }
        assert!(s.admits(ip(9), 4).is_err());
        s.released(0);
        s.released(0);
        assert_eq!(s.admits(ip(9), 4), Ok(()), "a double release counts once");
    }

    #[test]
    fn silent_connections_become_idle_and_touched_ones_do_not() {
        let t0 = Instant::now();
        let mut s = UploadSlots::default();
        s.taken(1, ip(2), t0);
        s.taken(2, ip(2), t0);
        assert_eq!(s.next_idle(), Some(t0 + UPLOAD_IDLE));
        s.touch(2, t0 + UPLOAD_IDLE / 2);
        assert!(s.idle(t0 + UPLOAD_IDLE / 2).is_empty());
        assert_eq!(s.idle(t0 + UPLOAD_IDLE), vec![1]);
        s.released(1);
        assert_eq!(s.next_idle(), Some(t0 + UPLOAD_IDLE / 2 + UPLOAD_IDLE));
    }
}
