//! The state of every piece of one download.
//!
//! INVARIANT: each piece is in exactly one of
//! - `Have`     — verified and written; final, never leaves this state;
//! - `InFlight` — requested from one or more peers (at most `MAX_HOLDERS`), each with a
//!   deadline; `flights[i]` lists them and is never empty;
//! - `Queued`   — wanted and not requested from anyone.
//!
//! `queue` lists exactly the queued pieces (in no order; `qpos` is each piece's position in it,
//! `NOT_QUEUED` otherwise), so choosing among them costs what is left, not the file's size;
//! `have` counts the pieces had. Every transition is a named method:
//! `acquire` (Queued/InFlight → InFlight), `hash_ok` (→ Have), `hash_failed` and `release`
//! (one holder gives up: InFlight → InFlight or Queued), `release_peer` (a peer leaves: all its
//! holds end), `timeout` (holds past their deadline end). Pure data; no sockets, no clock.

use std::collections::HashMap;
use std::time::Instant;

/// A peer connection, as the download numbers them (its slab key).
pub type PeerKey = usize;

/// Most peers one piece is requested from at once: 2 is the endgame's "also ask a second
/// peer"; more would only multiply duplicate traffic at the end of a download.
pub const MAX_HOLDERS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Queued,
    InFlight,
    Have,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub peer: PeerKey,
    pub deadline: Instant,
}

#[derive(Debug)]
pub struct PieceTable {
    state: Vec<State>,
    /// Holders of each in-flight piece; bounded by peers × pipeline depth.
    flights: HashMap<usize, Vec<Holder>>,
    queue: Vec<usize>,
    qpos: Vec<usize>,
    have: usize,
}

const NOT_QUEUED: usize = usize::MAX;

impl PieceTable {
    pub fn new(npieces: usize) -> Self {
        PieceTable {
            state: vec![State::Queued; npieces],
            flights: HashMap::new(),
            queue: (0..npieces).collect(),
            qpos: (0..npieces).collect(),
            have: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    pub fn have_count(&self) -> usize {
        self.have
    }

    pub fn queued_count(&self) -> usize {
        self.queue.len()
    }

    /// The queued pieces, in no particular order.
    pub fn queued(&self) -> &[usize] {
        &self.queue
    }

    fn enqueue(&mut self, i: usize) {
        self.qpos[i] = self.queue.len();
        self.queue.push(i);
    }

    fn dequeue(&mut self, i: usize) {
        let at = self.qpos[i];
        self.queue.swap_remove(at);
        if let Some(&moved) = self.queue.get(at) {
            self.qpos[moved] = at;
        }
        self.qpos[i] = NOT_QUEUED;
    }

    pub fn in_flight_count(&self) -> usize {
        self.flights.len()
    }

    pub fn is_complete(&self) -> bool {
        self.have == self.state.len()
    }

    pub fn is_queued(&self, i: usize) -> bool {
        self.state.get(i) == Some(&State::Queued)
    }

    pub fn is_have(&self, i: usize) -> bool {
        self.state.get(i) == Some(&State::Have)
    }

    pub fn holders(&self, i: usize) -> &[Holder] {
        self.flights.get(&i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Queued → InFlight, or InFlight → InFlight with one more holder (endgame). False (and no
    /// change) if the piece is had, already held by `peer`, or has `MAX_HOLDERS` holders.
    pub fn acquire(&mut self, i: usize, peer: PeerKey, deadline: Instant) -> bool {
        match self.state.get(i) {
            Some(State::Queued) => {
                self.state[i] = State::InFlight;
                self.dequeue(i);
                self.flights.insert(i, vec![Holder { peer, deadline }]);
                true
            }
            Some(State::InFlight) => {
                let holders = self.flights.entry(i).or_default();
                if holders.len() >= MAX_HOLDERS || holders.iter().any(|h| h.peer == peer) {
                    return false;
                }
                holders.push(Holder { peer, deadline });
                true
            }
            _ => false,
        }
    }

    /// The piece was verified and written: → Have, whatever its state. True if newly had; a
    /// second copy arriving later finds it had and is ignored.
    pub fn hash_ok(&mut self, i: usize) -> bool {
        match self.state.get(i) {
            Some(State::Queued) => self.dequeue(i),
            Some(State::InFlight) => {
                self.flights.remove(&i);
            }
            _ => return false,
        }
        self.state[i] = State::Have;
        self.have += 1;
        true
    }

    /// `peer`'s copy failed its hash: its hold ends and the piece is queued again unless
    /// another peer still holds it.
    pub fn hash_failed(&mut self, i: usize, peer: PeerKey) {
        self.release(i, peer);
    }

    /// `peer` will not deliver `i` (refused it, or delivered it already): its hold ends.
    /// Returns true if the piece went back to the queue.
    pub fn release(&mut self, i: usize, peer: PeerKey) -> bool {
        let Some(holders) = self.flights.get_mut(&i) else {
            return false;
        };
        holders.retain(|h| h.peer != peer);
        if holders.is_empty() {
            self.flights.remove(&i);
            self.state[i] = State::Queued;
            self.enqueue(i);
            return true;
        }
        false
    }

    /// `peer` is gone: every hold it had ends. Returns the pieces that went back to the queue.
    pub fn release_peer(&mut self, peer: PeerKey) -> Vec<usize> {
        let held: Vec<usize> = self
            .flights
            .iter()
            .filter(|(_, hs)| hs.iter().any(|h| h.peer == peer))
            .map(|(&i, _)| i)
            .collect();
        let mut requeued: Vec<usize> = held
            .into_iter()
            .filter(|&i| self.release(i, peer))
            .collect();
        requeued.sort_unstable();
        requeued
    }

    /// Ends every hold whose deadline is at or before `now`; returns the (piece, peer) pairs
    /// that expired, so the caller can treat those peers as stalled.
    pub fn timeout(&mut self, now: Instant) -> Vec<(usize, PeerKey)> {
        let expired: Vec<(usize, PeerKey)> = self
            .flights
            .iter()
            .flat_map(|(&i, hs)| {
                hs.iter()
                    .filter(|h| h.deadline <= now)
                    .map(move |h| (i, h.peer))
            })
            .collect();
        for &(i, peer) in &expired {
            self.release(i, peer);
        }
        expired
    }

    /// `peer` delivered something: its other holds get a fresh deadline (a peer working
    /// through a pipeline is slow, not stalled).
    pub fn extend(&mut self, peer: PeerKey, deadline: Instant) {
        for hs in self.flights.values_mut() {
            for h in hs.iter_mut().filter(|h| h.peer == peer) {
                h.deadline = h.deadline.max(deadline);
            }
        }
    }

    /// The earliest deadline of any hold.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.flights.values().flatten().map(|h| h.deadline).min()
    }

    /// Endgame: an in-flight piece that `peer` does not hold and that has room for another
    /// holder, for which `eligible` is true; the one with the earliest deadline (the latest).
    pub fn endgame_candidate(
        &self,
        peer: PeerKey,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.flights
            .iter()
            .filter(|(&i, hs)| {
                hs.len() < MAX_HOLDERS && hs.iter().all(|h| h.peer != peer) && eligible(i)
            })
            .min_by_key(|(&i, hs)| (hs.iter().map(|h| h.deadline).min(), i))
            .map(|(&i, _)| i)
    }

    /// Checks the invariant (tests and debug builds).
    pub fn check_invariant(&self) -> bool {
        let queued_ok = self
            .queue
            .iter()
            .enumerate()
            .all(|(at, &i)| self.qpos[i] == at)
            && self
                .state
                .iter()
                .enumerate()
                .all(|(i, s)| (*s == State::Queued) == (self.qpos[i] != NOT_QUEUED));
        let have = self.state.iter().filter(|s| **s == State::Have).count();
        let in_flight_ok = self.state.iter().enumerate().all(|(i, s)| {
            (*s == State::InFlight)
                == self
                    .flights
                    .get(&i)
                    .is_some_and(|hs| !hs.is_empty() && hs.len() <= MAX_HOLDERS)
        });
        queued_ok
            && have == self.have
            && in_flight_ok
            && self.flights.keys().all(|&i| i < self.state.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: u64) -> Instant {
        thread_local!(static T0: Instant = Instant::now());
        T0.with(|t0| *t0 + Duration::from_secs(s))
    }

    #[test]
    fn acquire_moves_a_queued_piece_in_flight() {
        let mut tb = PieceTable::new(3);
        assert!(tb.acquire(1, 7, t(10)));
        assert!(!tb.is_queued(1));
        assert_eq!(
            tb.holders(1),
            &[Holder {
                peer: 7,
                deadline: t(10)
            }]
        );
        assert_eq!(tb.queued_count(), 2);
        assert!(!tb.acquire(1, 7, t(10)), "same peer twice");
        assert!(!tb.acquire(9, 7, t(10)), "out of range");
        assert!(tb.check_invariant());
    }

    #[test]
    fn acquire_allows_a_second_holder_but_not_a_third() {
        let mut tb = PieceTable::new(1);
        assert!(tb.acquire(0, 1, t(1)));
        assert!(tb.acquire(0, 2, t(1)));
        assert!(!tb.acquire(0, 3, t(1)));
        assert!(tb.check_invariant());
    }

    #[test]
    fn hash_ok_makes_a_piece_had_once() {
        let mut tb = PieceTable::new(2);
        tb.acquire(0, 1, t(1));
        tb.acquire(0, 2, t(1));
        assert!(tb.hash_ok(0));
        assert!(!tb.hash_ok(0), "a second copy is harmless");
        assert!(tb.is_have(0));
        assert!(tb.holders(0).is_empty());
        assert!(!tb.acquire(0, 3, t(1)));
        tb.release(0, 2);
        assert!(tb.is_have(0), "a late release does not un-have");
        assert!(tb.hash_ok(1), "a queued piece found valid on disk");
        assert!(tb.is_complete());
        assert!(tb.check_invariant());
    }

    #[test]
    fn hash_failed_requeues_unless_another_peer_holds_it() {
        let mut tb = PieceTable::new(1);
        tb.acquire(0, 1, t(1));
        tb.acquire(0, 2, t(1));
        tb.hash_failed(0, 1);
        assert!(!tb.is_queued(0));
        tb.hash_failed(0, 2);
        assert!(tb.is_queued(0));
        assert_eq!(tb.queued_count(), 1);
        assert!(tb.check_invariant());
    }

    #[test]
    fn release_peer_returns_its_pieces_to_the_queue() {
        let mut tb = PieceTable::new(4);
        tb.acquire(0, 1, t(1));
        tb.acquire(2, 1, t(1));
        tb.acquire(3, 2, t(1));
        tb.acquire(3, 1, t(1));
        assert_eq!(tb.release_peer(1), vec![0, 2]);
        assert!(tb.is_queued(0) && tb.is_queued(2) && !tb.is_queued(3));
        let mut q = tb.queued().to_vec();
        q.sort_unstable();
        assert_eq!(q, vec![0, 1, 2]);
        assert_eq!(
            tb.holders(3),
            &[Holder {
                peer: 2,
                deadline: t(1)
            }]
        );
        assert!(tb.check_invariant());
    }

    #[test]
    fn timeout_ends_expired_holds_only() {
        let mut tb = PieceTable::new(3);
        tb.acquire(0, 1, t(5));
        tb.acquire(1, 2, t(50));
        assert!(tb.timeout(t(4)).is_empty());
        assert_eq!(tb.next_deadline(), Some(t(5)));
        assert_eq!(tb.timeout(t(5)), vec![(0, 1)]);
        assert!(tb.is_queued(0) && !tb.is_queued(1));
        assert!(tb.check_invariant());
    }

    #[test]
    fn extend_pushes_back_a_working_peers_deadlines() {
        let mut tb = PieceTable::new(2);
        tb.acquire(0, 1, t(5));
        tb.acquire(1, 2, t(5));
        tb.extend(1, t(20));
        assert_eq!(tb.timeout(t(10)), vec![(1, 2)]);
    }

    #[test]
    fn endgame_candidate_picks_the_latest_piece_held_by_another_peer() {
        let mut tb = PieceTable::new(4);
        tb.acquire(0, 1, t(9));
        tb.acquire(1, 1, t(3));
        tb.acquire(2, 3, t(1));
        tb.acquire(2, 4, t(1));
        assert_eq!(tb.endgame_candidate(2, |_| true), Some(1));
        assert_eq!(tb.endgame_candidate(2, |i| i != 1), Some(0));
        assert_eq!(tb.endgame_candidate(1, |_| true), None);
    }
}
