//! The deduplication table: each client instance's last replicated write and its reply, so a
//! write re-sent after a failover is answered again instead of applied twice. It is part of
//! the replicated state (snapshots carry it), so eviction must be the same on both trackers:
//! entries are ordered by a counter of recorded writes, never by a clock.

use crate::tracker::op::Origin;
use std::collections::BTreeMap;

/// Instances remembered for deduplication. A client needs its entry only while it may still
/// re-send a write after a failover, i.e. for a few seconds; 65,536 live clients is far beyond
/// one tracker pair's load, and at ~100 bytes an entry the table stays under ~10 MiB.
pub const MAX_DEDUP: usize = 65_536;

/// A deduplicated write of one client instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DedupEntry {
    pub(super) tag: u64,
    /// The reply words after `ok`, single-spaced (`login`'s are `<token> <secret>`), or empty;
    /// snapshot lines end with them.
    pub(super) reply: String,
    /// Value of the table's clock when written: orders eviction.
    pub(super) written: u64,
}

/// Invariant (checked by `check`): `order` is exactly the inverse of `entries`' `written`
/// positions, every position is below `clock`, and there are at most `MAX_DEDUP` entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct DedupTable {
    /// Instance → its last deduplicated write.
    entries: BTreeMap<u64, DedupEntry>,
    /// `written` → instance: the eviction order of `entries`.
    order: BTreeMap<u64, u64>,
    /// Counts recorded writes; in snapshots, so both trackers evict the same entry.
    clock: u64,
}

impl DedupTable {
    /// Remembers `reply` as the last write of `origin`'s instance, replacing its previous one;
    /// at the bound, the instance written least recently is forgotten.
    pub(super) fn record(&mut self, origin: Origin, reply: &str) {
        if let Some(old) = self.entries.remove(&origin.instance) {
            self.order.remove(&old.written);
        } else if self.entries.len() >= MAX_DEDUP {
            if let Some((_, instance)) = self.order.pop_first() {
                self.entries.remove(&instance);
            }
        }
        let written = self.clock;
        self.clock += 1;
        self.order.insert(written, origin.instance);
        self.entries.insert(
            origin.instance,
            DedupEntry {
                tag: origin.tag,
                reply: reply.to_string(),
                written,
            },
        );
    }

    /// The stored reply if `origin` is exactly the last recorded write of its instance.
    pub(super) fn reply(&self, origin: &Origin) -> Option<&str> {
        self.entries
            .get(&origin.instance)
            .filter(|e| e.tag == origin.tag)
            .map(|e| e.reply.as_str())
    }

    /// Entries by instance: the snapshot's order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (u64, &DedupEntry)> {
        self.entries.iter().map(|(&instance, e)| (instance, e))
    }

    pub(super) fn clock(&self) -> u64 {
        self.clock
    }

    /// A table from loaded entries, with the eviction order rebuilt; two entries at one
    /// position are refused. The rest of the invariant is left to `check`, which the
    /// snapshot loader runs with the state's other checks.
    pub(super) fn from_entries(
        entries: BTreeMap<u64, DedupEntry>,
        clock: u64,
    ) -> Result<DedupTable, String> {
        let mut order = BTreeMap::new();
        for (&instance, e) in &entries {
            if order.insert(e.written, instance).is_some() {
                return Err(format!(
                    "two deduplicated writes share the position {}",
                    e.written
                ));
            }
        }
        Ok(DedupTable {
            entries,
            order,
            clock,
        })
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.entries.len() > MAX_DEDUP {
            return Err("the dedup table is over its bound".to_string());
        }
        if self.order.len() != self.entries.len() {
            return Err("the dedup order is out of step with the table".to_string());
        }
        for (w, instance) in &self.order {
            if self.entries.get(instance).map(|e| e.written) != Some(*w) {
                return Err("the dedup order is out of step with the table".to_string());
            }
            if *w >= self.clock {
                return Err("a dedup entry is newer than the clock".to_string());
            }
        }
        if let Some(e) = self.entries.values().find(|e| {
            e.reply.contains(['\n', '\t'])
                || e.reply.starts_with(' ')
                || e.reply.ends_with(' ')
                || e.reply.contains("  ")
        }) {
            return Err(format!(
                "dedup reply '{}' is not single-spaced words",
                e.reply.escape_debug()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::op::Op;
    use crate::tracker::state::fixtures::{round_trip, tok};
    use crate::tracker::state::State;

    fn origin(instance: u64, tag: u64) -> Origin {
        Origin { instance, tag }
    }

    #[test]
    fn record_keeps_only_the_last_tag_of_an_instance() {
        let mut t = DedupTable::default();
        t.record(origin(7, 1), "");
        t.record(origin(8, 1), "new");
        assert_eq!(t.reply(&origin(7, 1)), Some(""));
        t.record(origin(7, 2), "seeder");
        assert_eq!(t.reply(&origin(7, 1)), None, "an older tag is forgotten");
        assert_eq!(t.reply(&origin(7, 2)), Some("seeder"));
        assert_eq!(t.reply(&origin(8, 1)), Some("new"));
        assert_eq!(t.reply(&origin(9, 1)), None);
        assert_eq!(t.clock(), 3);
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn record_at_the_bound_evicts_the_least_recently_written() {
        let mut t = DedupTable::default();
        for i in 0..MAX_DEDUP as u64 {
            t.record(origin(i, 1), "");
        }
        t.record(origin(0, 2), "");
        t.record(origin(u64::MAX, 1), "");
        assert_eq!(t.entries().count(), MAX_DEDUP);
        assert_eq!(t.reply(&origin(1, 1)), None, "the oldest went");
        assert_eq!(
            t.reply(&origin(0, 2)),
            Some(""),
            "a refreshed instance stays"
        );
        assert_eq!(t.reply(&origin(u64::MAX, 1)), Some(""));
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn from_entries_rebuilds_the_same_table() {
        let mut t = DedupTable::default();
        t.record(origin(3, 1), "x");
        t.record(origin(1, 1), "");
        t.record(origin(3, 2), "y");
        let entries = t.entries().map(|(i, e)| (i, e.clone())).collect();
        assert_eq!(DedupTable::from_entries(entries, t.clock()), Ok(t));
    }

    #[test]
    fn from_entries_refuses_two_writes_at_one_position() {
        let e = |tag| DedupEntry {
            tag,
            reply: String::new(),
            written: 0,
        };
        let entries = BTreeMap::from([(1, e(1)), (2, e(2))]);
        assert!(DedupTable::from_entries(entries, 1).is_err());
    }

    #[test]
    fn check_refuses_positions_past_the_clock_and_replies_that_are_not_single_spaced() {
        let e = |reply: &str| DedupEntry {
            tag: 1,
            reply: reply.to_string(),
            written: 0,
        };
        let past_clock = DedupTable::from_entries(BTreeMap::from([(1, e(""))]), 0);
        assert!(past_clock.and_then(|t| t.check()).is_err());
        for bad in ["a  b", "a ", " a", "a\nb", "a\tb"] {
            let t = DedupTable::from_entries(BTreeMap::from([(1, e(bad))]), 1);
            assert!(t.and_then(|t| t.check()).is_err(), "{bad:?}");
        }
        for fine in ["a", "a b", ""] {
            let t = DedupTable::from_entries(BTreeMap::from([(1, e(fine))]), 1);
            assert_eq!(t.and_then(|t| t.check()), Ok(()), "{fine:?}");
        }
    }

    #[test]
    fn dedup_evicts_the_least_recently_written_instance() {
        let mut st = State::new();
        let logout = Op::Logout { token: tok(1) };
        for i in 0..MAX_DEDUP as u64 {
            st.apply(
                Some(Origin {
                    instance: i,
                    tag: 1,
                }),
                &logout,
            )
            .unwrap();
        }
        // Instance 0 is refreshed, so instance 1 becomes the oldest.
        st.apply(
            Some(Origin {
                instance: 0,
                tag: 2,
            }),
            &logout,
        )
        .unwrap();
        st.apply(
            Some(Origin {
                instance: u64::MAX,
                tag: 1,
            }),
            &logout,
        )
        .unwrap();
        assert_eq!(st.check_invariants(), Ok(()));
        assert_eq!(
            st.dedup(&Origin {
                instance: 1,
                tag: 1
            }),
            None
        );
        assert_eq!(
            st.dedup(&Origin {
                instance: 0,
                tag: 2
            }),
            Some("")
        );
        assert_eq!(
            st.dedup(&Origin {
                instance: 2,
                tag: 1
            }),
            Some("")
        );
        let back = round_trip(&st);
        assert_eq!(back, st);
    }
}
