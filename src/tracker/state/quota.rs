//! Quotas of the replicated state: how much one user or one group may hold, and an overall
//! budget for the whole state. They are checked inside `State::apply`, so both trackers refuse
//! the same operations.
//!
//! The numbers in force are part of the state (`State::limits`), not of each tracker's
//! configuration: the leader writes its configured `Limits` into the log as an `Op::Limits`
//! entry right after every term entry it opens (`Server::append`), and snapshots carry them.
//! A follower therefore always checks with the leader's numbers, whatever its own flags say;
//! its flags take effect when it leads. Every refusal is checked before anything changes.

use super::{Group, Refusal, State};
use crate::tracker::op::Op;
use std::collections::BTreeMap;
use std::fmt;

/// Users the whole state may hold. 2^20: a million users (the compaction benchmark's state)
/// fit, and at a few hundred bytes each they stay well inside a tracker's memory.
pub const MAX_USERS: u64 = 1 << 20;
/// Groups in the whole state. 2^18: four times as many groups as a busy tracker would hold.
pub const MAX_GROUPS: u64 = 1 << 18;
/// Files in the whole state (each holds its hashes and sharers in memory and in snapshots).
pub const MAX_FILES: u64 = 1 << 20;
/// Piece hashes in the whole state: 20 bytes each, so 2^23 is 160 MiB of hashes — sixteen
/// files of the largest size, or 4 PiB of shared data in 512 KiB pieces.
pub const MAX_STATE_PIECES: u64 = 1 << 23;
/// Groups one user may create (and so own). Owning is cheap, but unbounded creation is how one
/// account fills the state; 1,000 leaves any person and most scripts room.
pub const MAX_GROUPS_PER_USER: u64 = 1_000;
/// Files one group may list: a `list_files` reply stays a few hundred KiB at most.
pub const MAX_FILES_PER_GROUP: u64 = 10_000;
/// Pending join requests one group may have: an owner can still read `list_requests`, and
/// strangers cannot bury a group's real requests under millions of their own.
pub const MAX_REQUESTS_PER_GROUP: u64 = 1_000;

/// The quotas and the budget, identical at both trackers because they travel in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub users: u64,
    pub groups: u64,
    pub files: u64,
    /// Piece hashes over every file of every group.
    pub pieces: u64,
    pub groups_per_user: u64,
    pub files_per_group: u64,
    pub requests_per_group: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            users: MAX_USERS,
            groups: MAX_GROUPS,
            files: MAX_FILES,
            pieces: MAX_STATE_PIECES,
            groups_per_user: MAX_GROUPS_PER_USER,
            files_per_group: MAX_FILES_PER_GROUP,
            requests_per_group: MAX_REQUESTS_PER_GROUP,
        }
    }
}

/// The text form's keys, in their one canonical order.
const KEYS: [&str; 7] = [
    "users",
    "groups",
    "files",
    "pieces",
    "groups_per_user",
    "files_per_group",
    "requests_per_group",
];

impl Limits {
    fn values(&self) -> [u64; 7] {
        [
            self.users,
            self.groups,
            self.files,
            self.pieces,
            self.groups_per_user,
            self.files_per_group,
            self.requests_per_group,
        ]
    }

    /// `users=N groups=N ...`: every key, in order (the journal's and the snapshot's form).
    pub fn encode(&self) -> String {
        let words: Vec<String> = KEYS
            .iter()
            .zip(self.values())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        words.join(" ")
    }

    /// The words of `encode`, exactly: every key once, in order, canonical numbers.
    pub fn decode(words: &[&str]) -> Result<Limits, String> {
        if words.len() != KEYS.len() {
            return Err(format!(
                "limits take {} key=value words, not {}",
                KEYS.len(),
                words.len()
            ));
        }
        let mut v = [0u64; 7];
        for ((slot, key), word) in v.iter_mut().zip(KEYS).zip(words) {
            let value = word
                .strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .ok_or_else(|| format!("expected {key}=<number> in the limits"))?;
            *slot = crate::tracker::op::parse_u64(value, key)?;
        }
        Ok(Limits {
            users: v[0],
            groups: v[1],
            files: v[2],
            pieces: v[3],
            groups_per_user: v[4],
            files_per_group: v[5],
            requests_per_group: v[6],
        })
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// What the state holds that quotas count, kept up to date so that no check scans the state
/// (at the budget's 262,144 groups a scan per `create_group` would stall the loop). Derived
/// from the groups: `of` recomputes it, and `check_invariants` compares the two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Owner → groups owned; no zero entries, so equal states have equal usage.
    owned: BTreeMap<String, u64>,
    files: u64,
    pieces: u64,
}

impl Usage {
    pub fn of<'a>(groups: impl IntoIterator<Item = &'a Group>) -> Usage {
        let mut u = Usage::default();
        for g in groups {
            u.count(Some(g));
        }
        u
    }

    /// Adds what `g` holds.
    fn count(&mut self, g: Option<&Group>) {
        let Some(g) = g else { return };
        *self.owned.entry(g.owner.clone()).or_default() += 1;
        self.files += g.files.len() as u64;
        self.pieces += g.files.values().map(|f| f.hashes.len() as u64).sum::<u64>();
    }

    /// Takes away what `g` holds (exactly what `count` added for it).
    fn forget(&mut self, g: Option<&Group>) {
        let Some(g) = g else { return };
        if let Some(n) = self.owned.get_mut(&g.owner) {
            *n -= 1;
            if *n == 0 {
                self.owned.remove(&g.owner);
            }
        }
        self.files -= g.files.len() as u64;
        self.pieces -= g.files.values().map(|f| f.hashes.len() as u64).sum::<u64>();
    }
}

/// The one group whose owner, files or hashes `op` may change; the others change none.
pub(super) fn group_counted(op: &Op) -> Option<&str> {
    match op {
        Op::CreateGroup { group, .. }
        | Op::LeaveGroup { group, .. }
        | Op::Upload { group, .. }
        | Op::StopShare { group, .. } => Some(group),
        // A healed split's write counts as the write it carries.
        Op::Redo { op, .. } => group_counted(op),
        _ => None,
    }
}

/// `1 group`, `2 groups`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn full(what: &str, n: u64, flag: &str) -> Refusal {
    Refusal::TrackerFull(format!(
        "the tracker holds {n} {what}, as many as it is set up for; ask its operator to raise {flag}"
    ))
}

impl State {
    /// The quotas in force (the last `Op::Limits` applied, or the defaults).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Before an operation that changes group `name`: its share of the usage is taken out…
    pub(super) fn uncount_group(&mut self, name: &str) {
        self.usage.forget(self.groups.get(name));
    }

    /// …and put back afterwards, as it is then (gone, changed, or as it was after a refusal).
    pub(super) fn count_group(&mut self, name: &str) {
        self.usage.count(self.groups.get(name));
    }

    pub(super) fn check_new_user(&self) -> Result<(), Refusal> {
        let n = self.users.len() as u64;
        if n >= self.limits.users {
            return Err(full("users", n, "--max-users"));
        }
        Ok(())
    }

    pub(super) fn check_new_group(&self, owner: &str) -> Result<(), Refusal> {
        let n = self.groups.len() as u64;
        if n >= self.limits.groups {
            return Err(full("groups", n, "--max-groups"));
        }
        let owned = self.usage.owned.get(owner).copied().unwrap_or(0);
        if owned >= self.limits.groups_per_user {
            return Err(Refusal::QuotaExceeded(format!(
                "you own {}, the most one user may own; leave one to create another",
                count(owned, "group")
            )));
        }
        Ok(())
    }

    pub(super) fn check_new_request(&self, group: &str, g: &Group) -> Result<(), Refusal> {
        let n = g.requests.len() as u64;
        if n >= self.limits.requests_per_group {
            return Err(Refusal::QuotaExceeded(format!(
                "group {group} has {}, the most it may have; try again once its owner has answered some",
                count(n, "pending join request")
            )));
        }
        Ok(())
    }

    /// A file new to `g` with `npieces` hashes. Called from `apply`, while `g`'s own share
    /// is out of `usage` (`uncount_group`).
    pub(super) fn check_new_file(
        &self,
        group: &str,
        g: &Group,
        npieces: usize,
    ) -> Result<(), Refusal> {
        let in_group = g.files.len() as u64;
        if in_group >= self.limits.files_per_group {
            return Err(Refusal::QuotaExceeded(format!(
                "group {group} already has {}, the most one group may have",
                count(in_group, "file")
            )));
        }
        // `g`'s own share is out of `usage` while an operation on it is applied.
        let files = self.usage.files + in_group;
        if files >= self.limits.files {
            return Err(full("files", files, "--max-files"));
        }
        let own: u64 = g.files.values().map(|f| f.hashes.len() as u64).sum();
        let pieces = self.usage.pieces + own;
        if pieces.saturating_add(npieces as u64) > self.limits.pieces {
            return Err(full("piece hashes", pieces, "--max-state-pieces"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::protocol::tracker::ErrorCode;
    use crate::tracker::op::Op;

    fn with(limits: Limits) -> State {
        let mut st = world();
        ok(&mut st, Op::Limits(limits));
        st
    }

    /// A refusal that leaves the state exactly as it was.
    fn refused_unchanged(st: &mut State, op: Op) -> Refusal {
        let before = st.digest();
        let r = refused(st, op);
        assert_eq!(st.digest(), before, "a refusal changed the state");
        r
    }

    #[test]
    fn limits_round_trip_through_their_text_form() {
        let l = Limits {
            users: 1,
            groups: 2,
            files: 3,
            pieces: 4,
            groups_per_user: 5,
            files_per_group: 6,
            requests_per_group: 7,
        };
        let text = l.encode();
        assert_eq!(
            text,
            "users=1 groups=2 files=3 pieces=4 groups_per_user=5 files_per_group=6 requests_per_group=7"
        );
        let words: Vec<&str> = text.split(' ').collect();
        assert_eq!(Limits::decode(&words), Ok(l));
        assert!(Limits::decode(&words[1..]).is_err());
        let mut swapped = words.clone();
        swapped.swap(0, 1);
        assert!(Limits::decode(&swapped).is_err(), "order is canonical");
        let mut bad = words.clone();
        bad[0] = "users=01";
        assert!(Limits::decode(&bad).is_err(), "numbers are canonical");
    }

    #[test]
    fn the_user_budget_refuses_the_next_user() {
        // world() holds alice, bob and carol.
        let mut st = with(Limits {
            users: 4,
            ..Limits::default()
        });
        ok(&mut st, create_user("dave"));
        let r = refused_unchanged(&mut st, create_user("erin"));
        assert_eq!(r.code(), ErrorCode::TrackerFull);
        assert!(r.message().contains("--max-users"), "{}", r.message());
        // A taken name is still a taken name, whatever the budget.
        assert_eq!(refused(&mut st, create_user("dave")), Refusal::UserExists);
    }

    #[test]
    fn groups_owned_per_user_are_bounded_and_a_leave_makes_room() {
        // world(): alice owns g.
        let mut st = with(Limits {
            groups_per_user: 2,
            ..Limits::default()
        });
        ok(&mut st, create_group(1, "h"));
        let r = refused_unchanged(&mut st, create_group(1, "i"));
        assert_eq!(r.code(), ErrorCode::QuotaExceeded);
        // Others are not affected.
        ok(&mut st, create_group(3, "i"));
        ok(&mut st, leave(1, "h"));
        ok(&mut st, create_group(1, "j"));
    }

    #[test]
    fn an_inherited_group_counts_for_its_new_owner() {
        // world(): alice owns g, bob is a member.
        let mut st = with(Limits {
            groups_per_user: 1,
            ..Limits::default()
        });
        ok(&mut st, create_group(2, "h"));
        ok(&mut st, leave(2, "h"));
        ok(&mut st, leave(1, "g"));
        // bob owns g now: his one group.
        let r = refused_unchanged(&mut st, create_group(2, "i"));
        assert_eq!(r.code(), ErrorCode::QuotaExceeded);
        ok(&mut st, create_group(1, "i"));
    }

    #[test]
    fn the_group_budget_refuses_the_next_group() {
        let mut st = with(Limits {
            groups: 2,
            ..Limits::default()
        });
        ok(&mut st, create_group(3, "h"));
        let r = refused_unchanged(&mut st, create_group(3, "i"));
        assert_eq!(r.code(), ErrorCode::TrackerFull);
        // An existing name is still reported as taken.
        assert_eq!(
            refused(&mut st, create_group(3, "h")),
            Refusal::GroupExists("h".into())
        );
    }

    #[test]
    fn pending_requests_per_group_are_bounded() {
        let mut st = with(Limits {
            requests_per_group: 1,
            ..Limits::default()
        });
        ok(&mut st, join(3, "g"));
        ok(&mut st, create_user("dave"));
        ok(&mut st, login(4, "dave", 1));
        let r = refused_unchanged(&mut st, join(4, "g"));
        assert_eq!(r.code(), ErrorCode::QuotaExceeded);
        // Accepting one makes room.
        ok(&mut st, accept(1, "g", "carol"));
        ok(&mut st, join(4, "g"));
    }

    #[test]
    fn files_per_group_are_bounded_but_another_seeder_is_not_a_new_file() {
        let mut st = with(Limits {
            files_per_group: 1,
            ..Limits::default()
        });
        ok(&mut st, upload(1, "g", "f", 1));
        let r = refused_unchanged(&mut st, upload(1, "g", "f2", 2));
        assert_eq!(r.code(), ErrorCode::QuotaExceeded);
        assert_eq!(ok(&mut st, upload(2, "g", "f", 1)), "seeder");
        ok(&mut st, create_group(1, "h"));
        ok(&mut st, upload(1, "h", "f2", 2));
    }

    #[test]
    fn the_file_and_piece_budgets_count_every_group() {
        let mut st = with(Limits {
            files: 2,
            ..Limits::default()
        });
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, create_group(1, "h"));
        ok(&mut st, upload(1, "h", "f", 1));
        let r = refused_unchanged(&mut st, upload(1, "h", "f2", 2));
        assert_eq!(r.code(), ErrorCode::TrackerFull);

        // Each fixture upload holds 3 piece hashes: 7 allow two files, not three.
        let mut st = with(Limits {
            pieces: 7,
            ..Limits::default()
        });
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, upload(1, "g", "f2", 2));
        let r = refused_unchanged(&mut st, upload(1, "g", "f3", 3));
        assert_eq!(r.code(), ErrorCode::TrackerFull);
        assert!(r.message().contains("--max-state-pieces"));
    }

    #[test]
    fn limits_are_kept_by_snapshots_and_the_default_is_not_written() {
        let st = world();
        assert!(!st.snapshot_lines().iter().any(|l| l.starts_with("limits")));
        let lowered = Limits {
            files: 9,
            ..Limits::default()
        };
        let st = with(lowered);
        let back = round_trip(&st);
        assert_eq!(back.limits(), lowered);
        assert_eq!(back.digest(), st.digest());
        assert_ne!(
            st.digest(),
            world().digest(),
            "the limits are in the digest"
        );
    }
}
