//! Super-seeding: how a client that shared a file (its first seeder) spreads it to a crowd.
//! Each downloader that `watch`es the file sees only the pieces offered to it, a few at a time,
//! and every piece nobody holds yet is offered to exactly one downloader, so every piece leaves
//! the seeder once before any leaves it twice; the downloaders trade the rest among
//! themselves. Once every piece has left the seeder during this crowd nothing more is offered:
//! a second copy from the capped seeder would only duplicate what the downloaders trade at
//! their own speed. A downloader that has made no progress for `STALL` while lacking pieces
//! (its peers may be unreachable) is offered everything it lacks. The crowd ends (and the next
//! one starts afresh) when its last watcher leaves.
//!
//! A downloader is known to hold a piece once the seeder sent it, or once the downloader said
//! so with a `has` notice. Pure data: connections are numbered by the caller, times passed in.

use crate::pieces::PieceSet;
use crate::runtime::Rng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Pieces offered to one downloader and not yet had by it: with `PIPELINE_DEPTH` (4) requests
/// in flight it always has the next ones to ask for while a new offer is on its way, and a
/// crowd of 12 still leaves pieces in the pool to hand to whoever is fastest.
pub const OFFER_WINDOW: usize = 6;
/// A downloader that received nothing (from anyone) for this long while lacking pieces is
/// offered everything it lacks: the peers it was meant to trade with may be unreachable.
pub const STALL: Duration = Duration::from_secs(3);

/// The caller's number for a watching connection.
pub type WatcherId = usize;

#[derive(Debug)]
struct Watcher {
    /// Pieces it holds: sent to it, or announced by it.
    holds: PieceSet,
    /// Pieces it was told it may ask for and does not hold yet.
    offer: PieceSet,
    offered: usize,
    /// Offered everything it lacks (it stalled).
    open: bool,
    /// Last time it received a piece (or joined).
    progress: Instant,
}

/// Memory: a byte and a bit per piece for the counts, four bytes per piece for the pool, and
/// two piece sets per watcher — about 2.6 MiB for the largest file (524,288 pieces) and 64 KiB
/// per watcher of it.
#[derive(Debug)]
pub struct Crowd {
    npieces: usize,
    /// Watchers holding each piece (at most `MAX_UPLOADS` = 64, so a byte).
    held: Vec<u8>,
    /// Pieces in the offer of a restricted watcher: each is in at most one such offer.
    offered: PieceSet,
    /// Pieces that left the seeder during this crowd.
    sent: PieceSet,
    /// Candidates to offer, in random order (popped from the end); stale entries (held or
    /// offered meanwhile) are skipped when popped, so each check is amortised O(1).
    pool: Vec<u32>,
    watchers: BTreeMap<WatcherId, Watcher>,
    rng: Rng,
}

impl Crowd {
    /// A crowd for a file of `npieces`; `rng` shuffles the order pieces are offered in, so two
    /// seeders of one file offer different pieces to the same downloader.
    pub fn new(npieces: usize, rng: &mut Rng) -> Crowd {
        let mut rng = Rng::new(rng.next_u64());
        let mut pool: Vec<u32> = (0..npieces as u32).collect();
        shuffle(&mut pool, &mut rng);
        Crowd {
            npieces,
            held: vec![0; npieces],
            offered: PieceSet::empty(npieces),
            sent: PieceSet::empty(npieces),
            pool,
            watchers: BTreeMap::new(),
            rng,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// True once every piece has left the seeder during this crowd.
    pub fn all_sent(&self) -> bool {
        self.sent.is_full()
    }

    /// A downloader starts watching; returns what it is offered (its `have` answer).
    pub fn join(&mut self, id: WatcherId, now: Instant) -> PieceSet {
        self.leave(id);
        self.watchers.insert(
            id,
            Watcher {
                holds: PieceSet::empty(self.npieces),
                offer: PieceSet::empty(self.npieces),
                offered: 0,
                open: false,
                progress: now,
            },
        );
        self.top_up(id, now);
        self.watchers
            .get(&id)
            .map_or_else(|| PieceSet::empty(self.npieces), |w| w.offer.clone())
    }

    /// What a watcher may ask for now: its current offer (`None` if it does not watch). The
    /// answer to a `watch` that only renews the watcher's ticket, which must not reset its
    /// place in the crowd.
    pub fn offer(&self, id: WatcherId) -> Option<PieceSet> {
        self.watchers.get(&id).map(|w| w.offer.clone())
    }

    /// The downloader has these pieces (it said so, or they were just sent to it).
    pub fn holds(&mut self, id: WatcherId, pieces: impl IntoIterator<Item = usize>, now: Instant) {
        let Some(w) = self.watchers.get_mut(&id) else {
            return;
        };
        for i in pieces {
            if i >= self.npieces || !w.holds.insert(i) {
                continue;
            }
            w.progress = now;
            self.held[i] = self.held[i].saturating_add(1);
            if w.offer.remove(i) {
                w.offered -= 1;
                if !w.open {
                    self.offered.remove(i);
                }
            }
        }
    }

    /// Piece `i` is leaving the seeder for `id`.
    pub fn sent(&mut self, id: WatcherId, i: usize, now: Instant) {
        if i < self.npieces {
            self.sent.insert(i);
            self.holds(id, [i], now);
        }
    }

    /// The downloader's connection closed: its offers return to the pool, and what it held no
    /// longer counts as being out in the crowd.
    pub fn leave(&mut self, id: WatcherId) {
        let Some(w) = self.watchers.remove(&id) else {
            return;
        };
        for i in w.holds.iter() {
            self.held[i] = self.held[i].saturating_sub(1);
            if self.held[i] == 0 {
                self.pool.push(i as u32);
            }
        }
        if !w.open {
            for i in w.offer.iter() {
                self.offered.remove(i);
                self.pool.push(i as u32);
            }
        }
        if self.pool.len() > 2 * self.npieces {
            // Stale entries from many watchers coming and going: keep the pool bounded.
            let (held, offered) = (&self.held, &self.offered);
            self.pool
                .retain(|&i| held[i as usize] == 0 && !offered.contains(i as usize));
            self.pool.sort_unstable();
            self.pool.dedup();
            shuffle(&mut self.pool, &mut self.rng);
        }
    }

    /// Tops up every watcher's offer and opens those that stalled. Returns the new offers to tell each watcher, in watcher order.
    pub fn poll(&mut self, now: Instant) -> Vec<(WatcherId, Vec<usize>)> {
        let ids: Vec<WatcherId> = self.watchers.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| {
                let new = self.top_up(id, now);
                (!new.is_empty()).then_some((id, new))
            })
            .collect()
    }

    /// When `poll` next has a stall to act on.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.watchers
            .values()
            .filter(|w| !w.open && !w.holds.is_full())
            .map(|w| w.progress + STALL)
            .min()
    }

    fn top_up(&mut self, id: WatcherId, now: Instant) -> Vec<usize> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Vec::new();
        };
        let mut new = Vec::new();
        if !w.open && !w.holds.is_full() && now >= w.progress + STALL {
            log::info!(
                "super-seeding: a downloader received nothing for {STALL:?} with {} of {} pieces; offering it every piece it lacks",
                w.holds.count(),
                self.npieces
            );
            w.open = true;
            // Its restricted offers become ordinary ones: free them for others too.
            for i in w.offer.iter() {
                self.offered.remove(i);
            }
        }
        if w.open {
            for i in 0..self.npieces {
                if !w.holds.contains(i) && w.offer.insert(i) {
                    w.offered += 1;
                    new.push(i);
                }
            }
            return new;
        }
        while w.offered < OFFER_WINDOW {
            let Some(i) = self.pool.pop() else {
                break;
            };
            let i = i as usize;
            if self.held[i] > 0 || self.offered.contains(i) || w.offer.contains(i) {
                continue; // stale: taken meanwhile
            }
            self.offered.insert(i);
            w.offer.insert(i);
            w.offered += 1;
            new.push(i);
        }
        new.sort_unstable();
        new
    }
}

fn shuffle(v: &mut [u32], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crowd(n: usize) -> Crowd {
        Crowd::new(n, &mut Rng::new(7))
    }

    #[test]
    fn each_piece_is_offered_to_one_watcher_at_a_time() {
        let t = Instant::now();
        let mut c = crowd(40);
        let a = c.join(1, t);
        let b = c.join(2, t);
        assert_eq!(a.count(), OFFER_WINDOW);
        assert_eq!(b.count(), OFFER_WINDOW);
        assert!(a.iter().all(|i| !b.contains(i)), "{a:?} and {b:?} overlap");
        assert!(c.poll(t).is_empty(), "both windows are full");
    }

    #[test]
    fn a_piece_sent_is_replaced_by_a_fresh_offer_never_one_held_elsewhere() {
        let t = Instant::now();
        let mut c = crowd(20);
        let a = c.join(1, t);
        let b = c.join(2, t);
        let first = a.iter().next().unwrap_or(0);
        c.sent(1, first, t);
        // Watcher 2 reports a piece it got from watcher 1: not out of the pool twice.
        c.holds(2, [first], t);
        let new = c.poll(t);
        assert_eq!(new.len(), 1, "only watcher 1's window has room: {new:?}");
        let (id, offers) = &new[0];
        assert_eq!(*id, 1);
        assert_eq!(offers.len(), 1);
        assert!(!a.contains(offers[0]) && !b.contains(offers[0]) && offers[0] != first);
    }

    #[test]
    fn a_watcher_announcing_an_offered_piece_gets_another_in_its_place() {
        let t = Instant::now();
        let mut c = crowd(20);
        let a = c.join(1, t);
        let offered = a.iter().next().unwrap_or(0);
        c.holds(1, [offered], t);
        let new = c.poll(t);
        assert_eq!(new.len(), 1);
        assert!(!new[0].1.contains(&offered));
    }

    #[test]
    fn every_piece_leaves_once_and_then_nothing_more_is_offered_until_a_stall() {
        let t = Instant::now();
        let n = 10;
        let mut c = crowd(n);
        let mut offers: Vec<PieceSet> = vec![c.join(1, t), c.join(2, t)];
        let mut sent = 0;
        // Serve every offered piece; new offers keep coming until the pool is dry.
        for _ in 0..n {
            for (k, id) in [1usize, 2].into_iter().enumerate() {
                let first = offers[k].iter().next();
                if let Some(i) = first {
                    offers[k].remove(i);
                    c.sent(id, i, t);
                    sent += 1;
                }
            }
            for (id, new) in c.poll(t) {
                for i in new {
                    offers[id - 1].insert(i);
                }
            }
            if c.all_sent() {
                break;
            }
        }
        assert!(c.all_sent());
        assert_eq!(sent, n, "each piece left the seeder exactly once");
        assert!(offers.iter().all(PieceSet::is_empty), "{offers:?}");
        assert!(c.poll(t).is_empty(), "they trade the rest among themselves");
        // Neither announces anything from the other: both stall and get what they lack.
        let late: Vec<(WatcherId, usize)> = c
            .poll(t + STALL)
            .into_iter()
            .map(|(id, v)| (id, v.len()))
            .collect();
        let total: usize = late.iter().map(|x| x.1).sum();
        assert_eq!(late.len(), 2);
        assert_eq!(total, n, "each is offered the pieces the other one got");
    }

    #[test]
    fn a_stalled_watcher_is_offered_everything_it_lacks() {
        let t = Instant::now();
        let mut c = crowd(30);
        c.join(1, t);
        c.holds(1, [0, 1], t);
        assert_eq!(c.next_deadline(), Some(t + STALL));
        let before = c.poll(t + STALL - Duration::from_millis(1));
        assert!(before.iter().all(|(_, v)| v.len() <= 2), "{before:?}");
        let after = c.poll(t + STALL);
        let offered: usize = after.iter().map(|(_, v)| v.len()).sum();
        assert_eq!(offered, 30 - 2 - OFFER_WINDOW, "the rest of what it lacks");
        assert_eq!(
            c.next_deadline(),
            None,
            "open watchers have no stall deadline"
        );
    }

    #[test]
    fn watchers_coming_and_going_keep_the_pool_bounded_and_every_piece_offerable() {
        let t = Instant::now();
        let n = 16;
        let mut c = crowd(n);
        for round in 0..1_000 {
            let got = c.join(round, t);
            if let Some(i) = got.iter().next() {
                c.sent(round, i, t);
            }
            c.leave(round);
            assert!(c.pool.len() <= 2 * n + OFFER_WINDOW + 1, "{}", c.pool.len());
        }
        // Nobody holds anything now: a newcomer can be offered any piece.
        let mut seen = PieceSet::empty(n);
        for id in 0..n {
            for i in c.join(10_000 + id, t).iter() {
                seen.insert(i);
            }
        }
        assert!(seen.is_full(), "{seen:?}");
    }

    #[test]
    fn a_watcher_leaving_returns_its_offers_and_its_pieces_to_the_pool() {
        let t = Instant::now();
        let n = OFFER_WINDOW * 2;
        let mut c = crowd(n);
        let a = c.join(1, t);
        let b = c.join(2, t);
        assert_eq!(a.count() + b.count(), n, "the pool is dry");
        let third = c.join(3, t);
        assert!(third.is_empty());
        let got = a.iter().next().unwrap_or(0);
        c.sent(1, got, t);
        c.leave(1);
        let new: Vec<usize> = c
            .poll(t)
            .into_iter()
            .filter(|(id, _)| *id == 3)
            .flat_map(|(_, v)| v)
            .collect();
        assert_eq!(new.len(), OFFER_WINDOW, "{new:?}");
        assert!(new.iter().all(|i| a.contains(*i)));
        assert!(
            new.contains(&got),
            "held only by a watcher that left: fresh again"
        );
        c.leave(2);
        c.leave(3);
        assert!(c.is_empty());
    }
}
