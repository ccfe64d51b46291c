//! Healing a split without losing writes, as plain data.
//!
//! When the link between the trackers breaks while both run, each leads alone and acknowledges
//! writes alone. When the pair re-forms, the greater log wins and the other tracker's state is
//! replaced by the winner's snapshot. Before that happens, the losing tracker takes the entries
//! of its log that the winner may not hold (`divergence`, `items`), keeps them durably (the
//! `replay` file in its data directory, `encode_items`/`decode_items`), and once it follows the
//! winner proposes each again, oldest first, on top of the winner's log (`Item::proposal`).
//! `State::apply` validates each again at the leader: a write that conflicts with none applies,
//! one that does (the same new user or group created on both sides) is refused there and
//! becomes a notice for the client that made it (`undone_notice`).
//!
//! What is re-proposed, and how:
//! - `create_user`, `logout`, `notice`, `notice_seen` and `redo` as they are;
//! - writes made through a session (`create_group` … `stop_share`, `have`) as `redo <user>`:
//!   sessions are connection state, and the session a write named may be gone or unknown at
//!   the winner, but the user who acted is known (from the loser's log or state, or the
//!   winner's);
//! - `login` as `redo <user> login …`: the session is carried over orphaned, so the client
//!   (disconnected when the losing tracker starts following) attaches it wherever it lands;
//!   not if the user is online at the winner (that client logs in again with its credentials);
//! - `attach`, `term`, `detach` not at all: they are about connections and the log.

use crate::tracker::journal::Position;
use crate::tracker::op::{Entry, Op, MAX_NOTICE_TEXT};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Where this tracker's log stops being known to be at the other tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Entries after this seq may be missing at the other tracker.
    pub after: u64,
    /// Entries after `after` up to this seq belong to the last paired term: the other tracker
    /// may hold them already (sent, not acknowledged before the link broke); deduplication
    /// answers those, so they are proposed like the rest.
    pub tail_until: u64,
    /// Entries of the solo stretch were folded into the snapshot by compaction before the
    /// split healed, so they cannot be proposed again (a split longer than a compaction).
    pub compacted: bool,
}

/// The divergence point of a log: the end of its last paired stretch (a follower received
/// every entry of it from the leader, so the leader holds them), or earlier, `split_ack`, the
/// last entry the follower had acknowledged when this tracker lost it as leader. `base` is the
/// snapshot's position; `entries` the journal after it.
pub fn divergence(entries: &[Entry], base: Position, split_ack: Option<u64>) -> Divergence {
    let mut solo = base.solo;
    let mut last_paired = (!solo).then_some(base.seq);
    for e in entries {
        if let Op::Term { solo: s, .. } = e.op {
            solo = s;
        }
        if !solo {
            last_paired = Some(e.seq);
        }
    }
    let paired_end = last_paired.unwrap_or(base.seq);
    let after = match split_ack {
        Some(a) if a >= base.seq && a < paired_end => a,
        _ => paired_end,
    };
    Divergence {
        after,
        tail_until: paired_end,
        compacted: last_paired.is_none() && base.seq > 0,
    }
}

/// One entry to propose again, with the user who made it when it acts through a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub user: Option<String>,
    /// From the tail of the last paired term (see `Divergence::tail_until`).
    pub tail: bool,
    pub entry: Entry,
}

/// What to do with an item now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    Propose(Op),
    /// A write made through a session whose user nobody knows any more: it cannot be applied.
    NoUser,
    /// A write made as a user whose creation was undone in this heal: the name belongs to
    /// someone else at the winner, so it is undone too, never done as them.
    UserUndone(String),
}

/// The entries after `d.after` worth proposing again, each with its user resolved from the
/// `login` entries before it or, failing that, `user_of` (the losing tracker's sessions).
pub fn items(
    entries: &[Entry],
    d: Divergence,
    user_of: impl Fn(&str) -> Option<String>,
) -> Vec<Item> {
    let mut logins: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.seq > d.after) {
        if let Op::Login { token, user, .. } = &e.op {
            logins.insert(token, user);
        }
        // (A login's own user is the one it names: found through `logins` just above.)
        if !replayed(&e.op) {
            continue;
        }
        let user = redone(&e.op).then(|| {
            e.op.token()
                .and_then(|t| logins.get(t).map(|u| u.to_string()).or_else(|| user_of(t)))
        });
        out.push(Item {
            user: user.flatten(),
            tail: e.seq <= d.tail_until,
            entry: e.clone(),
        });
    }
    out
}

/// Whether an operation is proposed again at all (module header).
fn replayed(op: &Op) -> bool {
    !matches!(op, Op::Term { .. } | Op::Detach { .. } | Op::Attach { .. })
}

/// Whether an operation is proposed again as `redo <user>`.
fn redone(op: &Op) -> bool {
    op.acts_as_user() || matches!(op, Op::Login { .. })
}

impl Item {
    /// The operation to propose, as far as the item alone tells; `user_of` finds a session's
    /// user in the winner's state, for a write whose user the loser did not know.
    /// `Replay::proposal` also knows which users this heal undid.
    pub fn proposal(&self, user_of: impl Fn(&str) -> Option<String>) -> Proposal {
        let op = &self.entry.op;
        if !redone(op) {
            return Proposal::Propose(op.clone());
        }
        let user = self.user.clone().or_else(|| op.token().and_then(&user_of));
        match user {
            Some(user) => Proposal::Propose(Op::Redo {
                user,
                op: Box::new(op.clone()),
            }),
            None => Proposal::NoUser,
        }
    }

    /// The user a conflict concerns, for the log: the user created, or the user who acted.
    pub fn concerns(&self) -> String {
        match &self.entry.op {
            Op::CreateUser { user, .. } | Op::Redo { user, .. } => user.clone(),
            _ => self.user.clone().unwrap_or_else(|| "-".to_string()),
        }
    }
}

/// The notice that tells the client of an undone write why, or `None` when nobody can be told
/// (a write without an instance or a user). `acked_by` is the tracker that had acknowledged
/// it; `why` the refusal's sentence; `user_is_theirs`: the user the write acted as is the same
/// person at the winner (false when that user's creation was undone: the name now belongs to
/// someone else, so only the client instance is told, never the winner's user of that name).
pub fn undone_notice(item: &Item, acked_by: u8, why: &str, user_is_theirs: bool) -> Option<Op> {
    let instance = item.entry.origin.map(|o| o.instance);
    let user = match &item.entry.op {
        Op::CreateUser { .. } => None,
        _ if !user_is_theirs => None,
        Op::Redo { user, .. } => Some(user.clone()),
        _ => item.user.clone(),
    };
    if instance.is_none() && user.is_none() {
        return None;
    }
    let text = format!(
        "while the trackers were cut off from each other, tracker {acked_by} acknowledged your \
         {}, but the other tracker had accepted a conflicting write meanwhile, so it was undone \
         ({})",
        item.entry.op.describe(),
        why
    );
    Some(Op::Notice {
        instance,
        user,
        text: notice_text(&text),
    })
}

/// Printable words separated by single spaces, cut to `MAX_NOTICE_TEXT` bytes.
fn notice_text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    let mut out = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > MAX_NOTICE_TEXT {
        out.truncate(MAX_NOTICE_TEXT);
        out = out.trim_end().to_string();
    }
    if out.is_empty() {
        out.push_str("a write was undone");
    }
    out
}

/// The `replay` file: one item a line, `<user|-> <tail|new> <journal entry>`.
pub fn encode_items<'a>(items: impl Iterator<Item = &'a Item>) -> String {
    let mut out = String::new();
    for it in items {
        out.push_str(it.user.as_deref().unwrap_or("-"));
        out.push_str(if it.tail { " tail " } else { " new " });
        out.push_str(&it.entry.encode());
        out.push('\n');
    }
    out
}

/// Reads the `replay` file back, every field validated (it comes from disk).
pub fn decode_items(text: &str) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |e: String| format!("line {}: {e}", i + 1);
        let mut parts = line.splitn(3, ' ');
        let (Some(user), Some(tail), Some(entry)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(err("not '<user|-> <tail|new> <entry>'".to_string()));
        };
        let user = match user {
            "-" => None,
            u => {
                crate::names::check(crate::names::NameKind::User, u).map_err(err)?;
                Some(u.to_string())
            }
        };
        let tail = match tail {
            "tail" => true,
            "new" => false,
            _ => return Err(err("the second word is not tail or new".to_string())),
        };
        out.push(Item {
            user,
            tail,
            entry: Entry::decode(entry).map_err(err)?,
        });
    }
    Ok(out)
}

/// Writes of a heal at the leader at once: a window keeps its disk busy with a turn's worth
/// (thousands of `have`s heal in a few round trips, not thousands), and bounds what is resent
/// if the link breaks.
pub const REPLAY_WINDOW: usize = 256;

/// The writes still to be proposed again, oldest first, and those the leader is deciding.
/// The leader applies them in the order sent, so each is decided on top of everything before
/// it; only a `create_user` must be answered before anything after it is sent, because what
/// follows may act as that user, and must not be done as the other side's user of that name
/// if this one's creation is undone (`Proposal::UserUndone`).
#[derive(Debug, Default)]
pub struct Replay {
    queue: VecDeque<Item>,
    /// The writes at the leader, by forward id (ascending: the order they were sent).
    in_flight: BTreeMap<u64, Item>,
    /// Users whose creation this heal undid (their name is someone else's at the winner).
    undone_users: BTreeSet<String>,
    /// The `replay` file of an earlier run has been read.
    pub loaded: bool,
}

impl Replay {
    /// What to propose for `item` (`Item::proposal`, and nothing as a user undone here); a
    /// user found through `user_of` is kept in the item, for the notice and the log.
    pub fn proposal(&self, item: &mut Item, user_of: impl Fn(&str) -> Option<String>) -> Proposal {
        if item.user.is_none() && redone(&item.entry.op) {
            item.user = item.entry.op.token().and_then(user_of);
        }
        match item.proposal(|_| None) {
            Proposal::Propose(Op::Redo { user, .. }) if self.undone_users.contains(&user) => {
                Proposal::UserUndone(user)
            }
            p => p,
        }
    }

    /// `item` was refused at the leader (or could not be proposed): remember a user whose
    /// creation that undid. Returns the notice for its client, if anyone can be told.
    pub fn undone(&mut self, item: &Item, acked_by: u8, why: &str) -> Option<Op> {
        let theirs = item
            .user
            .as_ref()
            .is_none_or(|u| !self.undone_users.contains(u));
        if let Op::CreateUser { user, .. } = &item.entry.op {
            self.undone_users.insert(user.clone());
        }
        undone_notice(item, acked_by, why, theirs)
    }

    pub fn extend(&mut self, items: impl IntoIterator<Item = Item>) {
        self.queue.extend(items);
    }

    /// A notice of an undone write goes next, as part of the heal: the heal is over (and the
    /// tracker serves again) only once every notice is in the log, so the client's next
    /// command finds it wherever it lands.
    pub fn notice_next(&mut self, notice: Op) {
        self.queue.push_front(Item {
            user: None,
            tail: false,
            entry: Entry {
                term: 0,
                seq: 0,
                origin: None,
                op: notice,
            },
        });
    }

    /// Nothing queued and nothing at the leader.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// The next item to propose, unless the window is full or a `create_user` is still at
    /// the leader.
    pub fn take_next(&mut self) -> Option<Item> {
        let barrier = self
            .in_flight
            .values()
            .any(|it| matches!(it.entry.op, Op::CreateUser { .. }));
        if barrier || self.in_flight.len() >= REPLAY_WINDOW {
            return None;
        }
        self.queue.pop_front()
    }

    /// `item` went to the leader as forward `fid`.
    pub fn sent(&mut self, fid: u64, item: Item) {
        self.in_flight.insert(fid, item);
    }

    /// The leader decided forward `fid`: its item, if it was this replay's.
    pub fn answered(&mut self, fid: u64) -> Option<Item> {
        self.in_flight.remove(&fid)
    }

    /// The link to the leader broke: the writes at the leader go back to the front, in their
    /// order, to be decided again wherever this tracker goes next (deduplication answers those
    /// the leader had applied); their forward ids, to be withdrawn.
    pub fn link_lost(&mut self) -> Vec<u64> {
        let fids: Vec<u64> = self.in_flight.keys().copied().collect();
        for (_, item) in std::mem::take(&mut self.in_flight).into_iter().rev() {
            self.queue.push_front(item);
        }
        fids
    }

    /// Everything not decided yet, oldest first (what the `replay` file must hold).
    pub fn remaining(&self) -> impl Iterator<Item = &Item> {
        self.in_flight.values().chain(self.queue.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::op::Origin;
    use crate::tracker::state::State;

    const PW: &str = "scram-sha256$4096$00112233445566778899aabbccddeeff$\
                      0000000000000000000000000000000000000000000000000000000000000000$\
                      1111111111111111111111111111111111111111111111111111111111111111";

    fn tok(n: u8) -> String {
        format!("{n:032x}")
    }

    fn e(seq: u64, instance: u64, op: Op) -> Entry {
        Entry {
            term: 1,
            seq,
            origin: (instance > 0).then_some(Origin { instance, tag: seq }),
            op,
        }
    }

    fn user(u: &str) -> Op {
        Op::CreateUser {
            user: u.into(),
            verifier: PW.into(),
        }
    }

    /// Bob (token 2) is a client of tracker 1 (the winner in these tests), everyone else of
    /// tracker 2.
    fn login(n: u8, u: &str) -> Op {
        Op::Login {
            token: tok(n),
            user: u.into(),
            addr: "127.0.0.1:9".into(),
            tracker: if n == 2 { 1 } else { 2 },
            secret: format!("{n:064x}"),
            key: "ab".repeat(32),
        }
    }

    fn group(n: u8, g: &str) -> Op {
        Op::CreateGroup {
            token: tok(n),
            group: g.into(),
        }
    }

    fn term(seq: u64, solo: bool) -> Entry {
        e(seq, 0, Op::Term { term: seq, solo })
    }

    fn pos(seq: u64, solo: bool) -> Position {
        Position { term: 1, seq, solo }
    }

    #[test]
    fn divergence_is_the_end_of_the_last_paired_stretch() {
        let log = vec![
            term(1, false),
            e(2, 1, user("a")),
            term(3, true),
            e(4, 0, Op::Detach { tracker: 1 }),
            e(5, 1, user("b")),
        ];
        let d = divergence(&log, pos(0, false), None);
        assert_eq!((d.after, d.tail_until, d.compacted), (2, 2, false));
        // A leader that lost its follower: the unacknowledged tail of the paired term too.
        let d = divergence(&log, pos(0, false), Some(1));
        assert_eq!((d.after, d.tail_until), (1, 2));
        // Two brand-new trackers: everything since the start.
        let fresh = vec![term(1, true), e(2, 1, user("a"))];
        assert_eq!(divergence(&fresh, pos(0, false), None).after, 0);
        // A tracker that followed to the end never led alone: nothing.
        let follower = vec![term(1, false), e(2, 1, user("a"))];
        assert_eq!(divergence(&follower, pos(0, false), None).after, 2);
        // A solo stretch compacted into the snapshot cannot be recovered from the journal.
        let d = divergence(&[e(8, 1, user("c"))], pos(7, true), None);
        assert!(d.compacted);
        assert_eq!(d.after, 7);
    }

    #[test]
    fn items_skip_attach_and_term_entries_and_name_the_user_of_each_write() {
        let log = vec![
            term(1, false),
            term(2, true),
            e(3, 0, Op::Detach { tracker: 1 }),
            e(4, 9, user("carol")),
            e(5, 9, login(3, "carol")),
            e(6, 9, group(3, "g3")),
            e(7, 8, group(1, "g1")),
            e(8, 8, Op::Logout { token: tok(1) }),
            e(9, 7, group(5, "g5")),
            e(
                10,
                7,
                Op::Attach {
                    token: tok(5),
                    addr: "127.0.0.1:9".into(),
                    tracker: 2,
                    key: "ab".repeat(32),
                },
            ),
        ];
        let d = divergence(&log, pos(0, false), None);
        let known = |t: &str| (t == tok(1)).then(|| "alice".to_string());
        let it = items(&log, d, known);
        let seqs: Vec<u64> = it.iter().map(|i| i.entry.seq).collect();
        assert_eq!(seqs, [4, 5, 6, 7, 8, 9]);
        let it: Vec<Item> = it
            .into_iter()
            .filter(|i| i.entry.seq != 5 && i.entry.seq != 8)
            .collect();
        assert_eq!(it[0].user, None, "create_user acts through no session");
        assert_eq!(
            it[1].user.as_deref(),
            Some("carol"),
            "from the login before it"
        );
        assert_eq!(
            it[2].user.as_deref(),
            Some("alice"),
            "from the loser's sessions"
        );
        assert_eq!(it[3].user, None, "unknown here");
        // The winner may know the last one's session.
        let winner = |t: &str| (t == tok(5)).then(|| "erin".to_string());
        match it[3].proposal(winner) {
            Proposal::Propose(Op::Redo { user, op }) => {
                assert_eq!(user, "erin");
                assert_eq!(*op, group(5, "g5"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(it[3].proposal(|_| None), Proposal::NoUser);
        assert_eq!(it[0].proposal(|_| None), Proposal::Propose(user("carol")));
    }

    /// The heal itself, without sockets: the winner's state, the loser's items re-applied one
    /// by one through `State::apply`, as the leader does for forwarded writes.
    fn heal(winner: &mut State, loser_items: &[Item]) -> Vec<(String, Option<Op>)> {
        let mut undone = Vec::new();
        let mut r = Replay::default();
        r.extend(loser_items.iter().cloned());
        while let Some(mut it) = r.take_next() {
            if let Some(o) = it.entry.origin {
                if winner.dedup(&o).is_some() {
                    continue;
                }
            }
            let why = match r.proposal(&mut it, |t| winner.session_user(t).map(str::to_string)) {
                Proposal::Propose(op) => match winner.apply(it.entry.origin, &op) {
                    Ok(_) => continue,
                    Err(e) => e.message(),
                },
                Proposal::NoUser => "unknown session".to_string(),
                Proposal::UserUndone(u) => format!("user {u} was undone"),
            };
            let notice = r.undone(&it, 2, &why);
            if let Some(n) = &notice {
                winner.apply(None, n).expect("a notice applies");
            }
            undone.push((it.concerns(), notice));
        }
        undone
    }

    fn apply_all(st: &mut State, log: &[Entry]) {
        for e in log {
            let _ = st.apply(e.origin, &e.op);
        }
    }

    #[test]
    fn a_healed_split_keeps_every_write_that_conflicts_with_none_and_notes_the_one_that_does() {
        // Before the split, both hold alice with a session and group g.
        let common = vec![
            term(1, false),
            e(2, 1, user("alice")),
            e(3, 1, login(1, "alice")),
            e(4, 1, group(1, "g")),
            e(5, 2, user("bob")),
            e(6, 2, login(2, "bob")),
        ];
        let mut winner = State::new();
        apply_all(&mut winner, &common);
        let mut loser_state = winner.clone();
        // The winner (tracker 1) alone: bob creates "dup" and "w"; carol appears.
        let winner_solo = vec![
            term(7, true),
            e(8, 0, Op::Detach { tracker: 2 }),
            e(9, 2, group(2, "dup")),
            e(10, 2, group(2, "w")),
            e(11, 3, user("carol")),
        ];
        apply_all(&mut winner, &winner_solo);
        // The loser (tracker 2) alone: alice creates "dup" and "l", carol is created here too
        // with another password, dave is new, makes a group and asks to join g.
        let loser_solo = vec![
            term(7, true),
            e(8, 0, Op::Detach { tracker: 1 }),
            e(9, 11, group(1, "dup")),
            e(10, 11, group(1, "l")),
            e(11, 12, user("carol")),
            e(12, 12, login(7, "carol")),
            e(13, 12, group(7, "carol-g")),
            e(14, 13, user("dave")),
            e(15, 13, login(8, "dave")),
            e(16, 13, group(8, "dave-g")),
            e(
                17,
                13,
                Op::JoinGroup {
                    token: tok(8),
                    group: "g".into(),
                },
            ),
            e(18, 11, Op::Logout { token: tok(1) }),
        ];
        let mut loser_log = common.clone();
        loser_log.extend(loser_solo.iter().cloned());
        apply_all(&mut loser_state, &loser_solo);
        let d = divergence(&loser_log, pos(0, false), None);
        assert_eq!(d.after, 6);
        let it = items(&loser_log, d, |t| {
            loser_state.session_user(t).map(str::to_string)
        });
        let undone = heal(&mut winner, &it);
        let concerned: Vec<&str> = undone.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(
            concerned,
            ["alice", "carol", "carol", "carol"],
            "{undone:?}"
        );
        // What conflicts with nothing is at the winner.
        assert!(winner.user_exists("dave"));
        let groups: Vec<String> = winner
            .snapshot_lines()
            .into_iter()
            .filter(|l| l.starts_with("group "))
            .collect();
        assert_eq!(
            groups,
            [
                "group dave-g dave",
                "group dup bob",
                "group g alice",
                "group l alice",
                "group w bob"
            ]
        );
        assert!(winner
            .snapshot_lines()
            .contains(&"request g dave".to_string()));
        assert_eq!(winner.check_invariants(), Ok(()));
        // Sessions started during the split are carried over orphaned (dave's); alice's logout
        // during the split ends hers at the winner too.
        assert_eq!(winner.session_user(&tok(8)), Some("dave"));
        // `session <token> <user> <addr> <tracker|-> <secret>`: orphaned.
        assert!(winner.snapshot_lines().iter().any(|l| {
            l.starts_with(&format!("session {} dave ", tok(8))) && l.split(' ').nth(4) == Some("-")
        }));
        assert_eq!(winner.session_user(&tok(1)), None);
        // alice's client is told at its next command, by instance or by name.
        let texts = |i: Option<u64>, u: Option<&str>| -> Vec<String> {
            winner
                .notices_for(i, u)
                .iter()
                .map(|n| n.text.clone())
                .collect()
        };
        let for_alice = texts(Some(11), None);
        assert_eq!(for_alice.len(), 1);
        assert!(for_alice[0].contains("create_group dup"), "{for_alice:?}");
        assert_eq!(texts(None, Some("alice")), for_alice);
        // carol's creation lost: only the client that created her is told, never the winner's
        // carol; and what that client did as carol is undone with it, not done as the other
        // carol.
        let for_creator = texts(Some(12), None);
        assert_eq!(for_creator.len(), 3, "{for_creator:?}");
        assert!(for_creator[0].contains("create_user carol"));
        assert!(texts(None, Some("carol")).is_empty());
        assert!(!winner
            .snapshot_lines()
            .contains(&"group carol-g carol".to_string()));
        // Told once: the notices go.
        winner
            .apply(
                None,
                &Op::NoticeSeen {
                    instance: Some(12),
                    user: None,
                },
            )
            .expect("notice_seen");
        assert!(winner.notices_for(Some(12), None).is_empty());
        assert_eq!(winner.notices_for(Some(11), None).len(), 1);
    }

    #[test]
    fn a_write_the_winner_already_holds_is_not_applied_twice() {
        let common = vec![
            term(1, false),
            e(2, 1, user("alice")),
            e(3, 1, login(1, "alice")),
        ];
        let mut winner = State::new();
        apply_all(&mut winner, &common);
        // The tail: sent to the follower (now the winner) before the link broke.
        let tail = e(4, 1, group(1, "g"));
        apply_all(&mut winner, std::slice::from_ref(&tail));
        let mut loser_log = common.clone();
        loser_log.extend([tail, term(5, true), e(6, 0, Op::Detach { tracker: 2 })]);
        let d = divergence(&loser_log, pos(0, false), Some(3));
        let it = items(&loser_log, d, |_| None);
        assert_eq!(it.len(), 1);
        assert!(it[0].tail);
        let before = winner.digest();
        assert!(heal(&mut winner, &it).is_empty());
        assert_eq!(winner.digest(), before, "deduplicated, not applied again");
    }

    #[test]
    fn the_replay_file_round_trips_and_refuses_garbage() {
        let it = vec![
            Item {
                user: Some("alice".into()),
                tail: false,
                entry: e(9, 11, group(1, "dup")),
            },
            Item {
                user: None,
                tail: true,
                entry: e(10, 0, user("z")),
            },
        ];
        let text = encode_items(it.iter());
        assert_eq!(decode_items(&text), Ok(it));
        for bad in [
            "x",
            "- new",
            "a/b new 1 1 - detach 1",
            "- maybe 1 1 - detach 1",
            "- new 1 x",
        ] {
            assert!(decode_items(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replay_sends_a_window_waits_behind_a_new_user_and_requeues_in_order_when_the_link_breaks() {
        let new_user = |seq| Item {
            user: None,
            tail: false,
            entry: e(seq, 1, user(&format!("u{seq}"))),
        };
        let write = |seq| Item {
            user: Some("alice".into()),
            tail: false,
            entry: e(seq, 1, group(1, &format!("g{seq}"))),
        };
        let mut r = Replay::default();
        r.extend([write(1), write(2), new_user(3), write(4)]);
        for fid in [7, 8, 9] {
            let it = r.take_next().expect("within the window");
            r.sent(fid, it);
        }
        assert_eq!(
            r.take_next(),
            None,
            "what follows a new user waits for its answer"
        );
        assert_eq!(r.answered(5), None, "not ours");
        assert_eq!(
            r.answered(8).map(|i| i.entry.seq),
            Some(2),
            "answers in any order"
        );
        assert_eq!(r.take_next(), None);
        assert_eq!(r.answered(9).map(|i| i.entry.seq), Some(3));
        let fourth = r.take_next().expect("after the new user's answer");
        r.sent(10, fourth);
        assert_eq!(r.link_lost(), [7, 10]);
        let order: Vec<u64> = r.remaining().map(|i| i.entry.seq).collect();
        assert_eq!(order, [1, 4], "back at the front, in their order");
        assert!(!r.is_empty());
        let mut many = Replay::default();
        many.extend((0..REPLAY_WINDOW as u64 + 1).map(write));
        for fid in 0..REPLAY_WINDOW as u64 {
            let it = many.take_next().expect("within the window");
            many.sent(fid, it);
        }
        assert_eq!(many.take_next(), None, "the window is full");
    }

    #[test]
    fn notices_are_one_clean_line() {
        let it = Item {
            user: Some("alice".into()),
            tail: false,
            entry: e(9, 11, group(1, "dup")),
        };
        let Some(Op::Notice {
            text,
            instance,
            user: told,
        }) = undone_notice(&it, 2, "group dup\nalready  exists", true)
        else {
            panic!("a notice");
        };
        assert_eq!(instance, Some(11));
        assert_eq!(told.as_deref(), Some("alice"));
        assert!(
            crate::tracker::op::check_notice_text(&text).is_ok(),
            "{text}"
        );
        assert!(text.contains("tracker 2 acknowledged your create_group dup"));
        assert!(text.ends_with("(group dup already exists)"), "{text}");
        let anonymous = Item {
            user: None,
            tail: false,
            entry: e(9, 0, user("x")),
        };
        assert_eq!(undone_notice(&anonymous, 1, "taken", true), None);
    }

    /// The user-visible records of a state (users, groups, members, requests, files, hashes,
    /// sharers): what a split must not lose. Sessions and the dedup table are connection and
    /// retry bookkeeping.
    fn content(st: &State) -> Vec<String> {
        let kept = [
            "user ", "group ", "member ", "request ", "file ", "hashes ", "share ",
        ];
        st.snapshot_lines()
            .into_iter()
            .filter(|l| kept.iter().any(|k| l.starts_with(k)))
            .collect()
    }

    fn arb_write() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let tok = || (1u8..=5).prop_map(tok);
        let group = || prop::sample::select(vec!["g0", "g1", "g2"]).prop_map(String::from);
        let name = || prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(String::from);
        prop_oneof![
            1 => prop::sample::select(vec!["d", "e"]).prop_map(user),
            1 => (4u8..=5).prop_map(|n| login(n, if n == 4 { "d" } else { "e" })),
            3 => (tok(), group()).prop_map(|(t, g)| Op::CreateGroup { token: t, group: g }),
            3 => (tok(), group()).prop_map(|(t, g)| Op::JoinGroup { token: t, group: g }),
            1 => (tok(), group()).prop_map(|(t, g)| Op::LeaveGroup { token: t, group: g }),
            3 => (tok(), group(), name())
                .prop_map(|(t, g, u)| Op::AcceptRequest { token: t, group: g, user: u }),
            2 => (tok(), group(), 0u8..2).prop_map(|(t, g, c)| Op::Upload {
                token: t,
                group: g,
                file: "f".into(),
                size: 1,
                hashes: vec![[c; 20]],
            }),
            1 => (tok(), group()).prop_map(|(t, g)| Op::StopShare {
                token: t,
                group: g,
                file: "f".into(),
            }),
            1 => tok().prop_map(|t| Op::Logout { token: t }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// With nothing written at the winner, nothing can conflict: every write the loser
        /// acknowledged alone, applied again on the winner's log, gives the loser's content.
        #[test]
        fn every_write_that_conflicts_with_none_survives_the_heal(
            writes in proptest::collection::vec(arb_write(), 0..40),
            leader_acked_tail in proptest::prelude::any::<bool>(),
        ) {
            let mut common = vec![term(1, false)];
            for (i, u) in ["a", "b", "c"].iter().enumerate() {
                common.push(e(common.len() as u64 + 1, 1, user(u)));
                common.push(e(common.len() as u64 + 1, 1, login(i as u8 + 1, u)));
            }
            let mut winner = State::new();
            apply_all(&mut winner, &common);
            let mut loser = winner.clone();
            let mut log = common.clone();
            let mut seq = log.len() as u64;
            for (op, instance) in [(Op::Term { term: 2, solo: true }, 0), (Op::Detach { tracker: 1 }, 0)]
                .into_iter()
                .chain(writes.into_iter().map(|w| (w, 7)))
            {
                seq += 1;
                let entry = e(seq, instance, op);
                // Only what the loser acknowledged is in its log.
                if loser.apply(entry.origin, &entry.op).is_ok() {
                    log.push(entry);
                } else {
                    seq -= 1;
                }
            }
            apply_all(&mut winner, &[term(seq + 100, true), e(seq + 101, 0, Op::Detach { tracker: 2 })]);
            let split_ack = leader_acked_tail.then_some(common.len() as u64 - 1);
            let d = divergence(&log, pos(0, false), split_ack);
            let it = items(&log, d, |t| loser.session_user(t).map(str::to_string));
            let undone = heal(&mut winner, &it);
            proptest::prop_assert!(undone.is_empty(), "{:?}", undone);
            proptest::prop_assert_eq!(content(&winner), content(&loser));
            proptest::prop_assert_eq!(winner.check_invariants(), Ok(()));
        }
    }
}
