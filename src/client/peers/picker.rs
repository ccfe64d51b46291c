//! Rarest-first choice: how many connected peers hold each piece, and which piece a given peer
//! should be asked for next. Availability and choice only; what is wanted comes from the caller.

use crate::pieces::PieceSet;
use crate::runtime::Rng;

/// Eligible pieces examined per choice: exact rarest-first for the first 8,192 candidates
/// (every queued piece of files up to 4 GiB), and a bounded cost per request for huge files,
/// where the caller starts the candidates at a random point.
pub const MAX_PICK_SCAN: usize = 8192;

#[derive(Debug)]
pub struct Availability {
    /// Connected peers holding each piece.
    counts: Vec<u32>,
}

impl Availability {
    pub fn new(npieces: usize) -> Self {
        Availability {
            counts: vec![0; npieces],
        }
    }

    pub fn count(&self, i: usize) -> u32 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// A peer announced (or is now known to hold) these pieces.
    pub fn add_set(&mut self, set: &PieceSet) {
        for i in set.iter() {
            if let Some(c) = self.counts.get_mut(i) {
                *c += 1;
            }
        }
    }

    /// A connected peer told of pieces it now holds (`has`): those not yet in its set `have`
    /// join it and the counts. Returns how many were new; a repeated notice changes nothing.
    pub fn announced(&mut self, have: &mut PieceSet, new: &PieceSet) -> usize {
        let mut added = 0;
        for i in new.iter() {
            if have.insert(i) {
                if let Some(c) = self.counts.get_mut(i) {
                    *c += 1;
                }
                added += 1;
            }
        }
        added
    }

    /// A peer left, or its set is about to be replaced.
    pub fn remove_set(&mut self, set: &PieceSet) {
        for i in set.iter() {
            if let Some(c) = self.counts.get_mut(i) {
                *c = c.saturating_sub(1);
            }
        }
    }

    /// Among `candidates` for which `eligible` holds, one of those held by the fewest peers,
    /// chosen uniformly at random among equals (reservoir sampling, one pass). At most
    /// `MAX_PICK_SCAN` eligible candidates are considered.
    pub fn pick(
        &self,
        candidates: impl IntoIterator<Item = usize>,
        eligible: impl Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        let mut ties = 0usize;
        for i in candidates
            .into_iter()
            .filter(|&i| eligible(i))
            .take(MAX_PICK_SCAN)
        {
            let c = self.count(i);
            match best {
                Some((bc, _)) if c > bc => {}
                Some((bc, _)) if c == bc => {
                    ties += 1;
                    if rng.below(ties) == 0 {
                        best = Some((c, i));
                    }
                }
                _ => {
                    best = Some((c, i));
                    ties = 1;
                }
            }
        }
        best.map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, items: &[usize]) -> PieceSet {
        let mut s = PieceSet::empty(n);
        for &i in items {
            s.insert(i);
        }
        s
    }

    #[test]
    fn counts_follow_peers_coming_and_going() {
        let mut a = Availability::new(4);
        a.add_set(&set(4, &[0, 1]));
        a.add_set(&set(4, &[1, 2]));
        assert_eq!(
            (a.count(0), a.count(1), a.count(2), a.count(3)),
            (1, 2, 1, 0)
        );
        a.remove_set(&set(4, &[1, 2]));
        assert_eq!((a.count(1), a.count(2)), (1, 0));
        a.remove_set(&set(4, &[3]));
        assert_eq!(a.count(3), 0, "never below zero");
    }

    #[test]
    fn pick_prefers_the_rarest_piece_the_peer_has() {
        let mut a = Availability::new(5);
        a.add_set(&PieceSet::full(5));
        a.add_set(&set(5, &[0, 1, 2, 4]));
        a.add_set(&set(5, &[0, 1, 4]));
        let mut rng = Rng::new(1);
        // counts: 0:3 1:3 2:2 3:1 4:3
        assert_eq!(a.pick(0..5, |_| true, &mut rng), Some(3));
        assert_eq!(a.pick(0..5, |i| i != 3, &mut rng), Some(2));
        assert_eq!(
            a.pick(set(5, &[0, 4]).iter(), |_| true, &mut rng)
                .map(|i| i == 0 || i == 4),
            Some(true)
        );
        assert_eq!(a.pick(set(5, &[0]).iter(), |i| i != 0, &mut rng), None);
    }

    #[test]
    fn pieces_announced_by_a_partial_peer_count_at_once_and_only_once() {
        let mut a = Availability::new(6);
        let mut peer = set(6, &[0]);
        a.add_set(&peer);
        assert_eq!(a.announced(&mut peer, &set(6, &[0, 2, 3])), 2);
        assert_eq!(a.announced(&mut peer, &set(6, &[2])), 0, "already known");
        assert_eq!((a.count(0), a.count(2), a.count(3)), (1, 1, 1));
        assert!(peer.contains(2) && peer.contains(3));
        // When the peer leaves, its announced pieces leave the counts with it.
        a.remove_set(&peer);
        assert_eq!((a.count(0), a.count(2), a.count(3)), (0, 0, 0));
    }

    #[test]
    fn rarest_first_counts_what_partial_peers_hold() {
        // A seeder holds everything; two downloaders announce what they verified. The piece
        // only the seeder holds is asked of it first; one a downloader has is left for later.
        let mut a = Availability::new(4);
        a.add_set(&PieceSet::full(4));
        let (mut p, mut q) = (PieceSet::empty(4), PieceSet::empty(4));
        a.add_set(&p);
        a.add_set(&q);
        a.announced(&mut p, &set(4, &[0, 1]));
        a.announced(&mut q, &set(4, &[1, 2]));
        let mut rng = Rng::new(3);
        assert_eq!(a.pick(0..4, |_| true, &mut rng), Some(3));
        assert_eq!(
            a.pick(0..4, |i| i != 3, &mut rng).map(|i| i == 0 || i == 2),
            Some(true)
        );
        assert_eq!(
            a.pick([1], |_| true, &mut rng),
            Some(1),
            "the only candidate"
        );
    }

    #[test]
    fn pick_is_random_among_equals() {
        let mut a = Availability::new(8);
        a.add_set(&PieceSet::full(8));
        let mut rng = Rng::new(42);
        let mut seen = [false; 8];
        for _ in 0..400 {
            if let Some(i) = a.pick(0..8, |_| true, &mut rng) {
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }
}
