//! The replication state of one tracker as plain data: its role, the peer link's phase, the
//! commit and ack positions, the writes forwarded to the leader and the replies waiting for a
//! commit, and the dial and solo timers. No sockets, no journal, no clock of its own: the
//! server reports what happened (`link_up`, `link_closed`, `snapshot_installed`, …), does the
//! I/O the answer asks for (`replication.rs` on the link, `ordering.rs` for writes), and asks
//! `next_deadline` how long it may sleep.
//!
//! INVARIANT:
//! - `role` is exactly one of
//!   - `Waiting`  — serves nobody but `ping` and `digest`: restarted after a paired term (the
//!     other may hold acknowledged writes), fresh and inside its grace, or it lost the leader
//!     before it had caught up;
//!   - `Syncing`  — a follower whose state is not the leader's yet (a snapshot is expected or
//!     arriving): serves nobody, applies no entries, sends no acks;
//!   - `Follower` — holds the leader's state: serves reads, forwards writes, applies and acks
//!     the leader's entries;
//!   - `Leader`   — orders every write; paired while `link` is `Live`, alone otherwise.
//! - `Syncing` and `Follower` only while `link` is `Live`: `link_closed` moves a `Follower` to
//!   `Leader` (taking over) and a `Syncing` one to `Waiting`.
//! - `link` is `Down`, `Pending(key)` (tracker 2's dial in progress, or a connection that has
//!   proved the cluster key and awaits the other's `state`) or `Live(key)` once both states
//!   were exchanged. One link at most; `key` is its slab key in the server.
//! - Positions: `commit` ≤ the durable seq, and only grows, except that an installed snapshot
//!   caps it at the snapshot's seq. It starts at the recovered log's end; from there a paired
//!   leader moves it only up to min(durable, `follower_ack`), a lone leader up to durable, a
//!   follower up to min(durable, `leader_commit`). `sent_commit` ≤ `commit`; `sent_ack` ≤
//!   durable. `follower_ack` and `sent_commit` mean something to a leader only,
//!   `leader_commit` and `sent_ack` to a follower only; all four restart at 0 with each link.
//! - `forwards` holds every write sent to the leader and not yet answered; whoever takes over
//!   as leader re-orders all of them (`Forwards::take_all`).
//! - `waiters` is sorted by seq; `release` pops exactly those at or below `commit`.
//!   `fwd_oks` (a leader's answers to deduplicated forwarded retries) likewise.
//! - `replay` holds the writes of a split this tracker lost, still to be proposed again on the
//!   leader's log (`tracker/replay.rs`); while it is not empty a follower serves nobody, so its
//!   clients go where those writes are being decided. `split_ack` is set only by a leader that
//!   lost a live link (the follower's last ack then) and cleared when this tracker's log is
//!   known to be the pair's again (it leads a re-formed pair, the logs are equal, or the
//!   leader's snapshot was installed).
//! - Timers: `dial_at` is set only at tracker 2 of a pair and acted on only while `link` is
//!   `Down`; `solo_at` is set only while fresh and `Waiting`, and cleared by leading or by the
//!   link coming up; `solo_from` is the seq at which the current solo term began.
//!
//! `check_invariant` checks what the fields alone can show; the tests run it after every
//! transition of random event sequences.

use super::ordering::{CommitWaiters, Forwards, HeldFwdOks};
use crate::tracker::journal::Position;
use crate::tracker::link::LinkMsg;
use crate::tracker::op::Entry;
use crate::tracker::replay::Replay;
use crate::tracker::state::Notice;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Keep-alive on the peer link; silence for `LINK_TIMEOUT` means the other tracker is gone even
/// if its socket was not closed (a stopped process, a dead host).
pub(super) const LINK_PING: Duration = Duration::from_secs(1);
pub(super) const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a paired leader may keep a new commit point from its follower when nothing else
/// goes there: the commit usually rides on the next batch of entries instead of waking the
/// follower on its own. Only the follower's clients with forwarded writes wait for it, and for
/// them it goes at once (`advance_commit_lazily`).
pub(super) const COMMIT_DELAY: Duration = Duration::from_millis(1);
/// Tracker 2 redials tracker 1 with this backoff: fast enough for a restart to be noticed in
/// well under a second, slow enough not to spin.
pub(super) const DIAL_MIN: Duration = Duration::from_millis(50);
pub(super) const DIAL_MAX: Duration = Duration::from_secs(1);
/// The handshake must finish within this, or the half-open link is dropped.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A brand-new tracker of a pair waits this long for the other before it serves alone, so two
/// trackers started together form a pair instead of two separate logs (tracker 2 redials
/// at least every `DIAL_MAX`).
pub(super) const FRESH_GRACE: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Waiting,
    Syncing,
    Follower,
    Leader,
}

/// The peer link as replication sees it (the handshake's own steps live on the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
    Down,
    Pending(usize),
    Live(usize),
}

/// The position and digest this tracker announced on the link: the leader is chosen from the
/// announced values on both sides, so both reach the same verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Announced {
    pub pos: Position,
    pub digest: String,
}

/// How a tracker begins, from what its journal recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// A single tracker, or the log ends in a solo term (this one ran last): serve at once.
    LeadAlone,
    /// Brand new: wait `FRESH_GRACE` for the other before serving alone.
    Grace,
    /// The log ends in a paired term: the other may hold acknowledged writes; wait for it.
    WaitForOther,
}

/// What the server must do now that the link's connection is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterLinkClosed {
    /// Was the leader: open a new solo term and orphan the other's sessions.
    GoOnAlone,
    /// Was a follower with the leader's state: become leader and re-order the forwards.
    TakeOver,
    /// Had not caught up yet: now `Waiting` for the other to come back.
    Wait,
    /// The handshake failed at a fresh tracker 2: tracker 1 is not running, serve alone now.
    ServeAloneNow,
    /// Only a handshake failed; nothing changes but the redial.
    Nothing,
}

/// The outcome of both sides announcing their positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Verdict {
    pub lead: bool,
    /// Same position and digest on both sides: no snapshot is needed.
    pub same: bool,
    /// The role before this verdict.
    pub was: Role,
    /// This tracker led alone, wrote since, and now follows a different log: its state is
    /// about to be replaced, and those writes proposed again on the leader's log (heal.rs).
    pub loses_solo_writes: bool,
}

/// When the link's connection was last heard from and when its current phase began.
#[derive(Clone, Copy, Debug)]
pub(super) struct LinkTimes {
    pub heard: Instant,
    pub since: Instant,
}

pub(super) struct Replica {
    me: u8,
    paired: bool,
    role: Role,
    link: Link,
    commit: u64,
    follower_ack: u64,
    sent_commit: u64,
    leader_commit: u64,
    sent_ack: u64,
    /// Leader: entries that answer the follower's forwarded writes and are not yet told
    /// committed, in seq order (their clients wait at the follower for that `commit`).
    fwd_seqs: VecDeque<u64>,
    /// Leader: a commit point not yet told to the follower goes by then at the latest.
    commit_due: Option<Instant>,
    /// Follower: entries received (journaled, in `pos`) and not yet applied to the state, with
    /// their forward ids. Applied once the turn's `ack` is out, or before anything reads the
    /// state (`Server::apply_received`); empty at the end of every turn.
    pub unapplied: Vec<(Option<u64>, Entry)>,
    /// Writes forwarded to the leader and not yet answered.
    pub forwards: Forwards,
    /// Client replies waiting for a commit, in sequence order.
    pub waiters: CommitWaiters,
    /// Leader: `fwd-ok` answers to deduplicated forwarded retries, released at commit.
    pub fwd_oks: HeldFwdOks,
    /// The writes of a lost split still to be proposed again (heal.rs).
    pub replay: Replay,
    /// Notices told by this tracker whose `notice_seen` is still on its way through the log
    /// (a follower forwards it): not told twice meanwhile. Emptied whenever the state holds no
    /// notice, and bounded like the notices themselves.
    pub told: Vec<Notice>,
    /// The follower's last ack when this tracker, leading, lost it: entries after it may be
    /// missing at the other tracker.
    split_ack: Option<u64>,
    dial_at: Option<Instant>,
    dial_backoff: Duration,
    solo_at: Option<Instant>,
    solo_from: Option<u64>,
    announced: Option<Announced>,
    last_ping: Instant,
}

impl Replica {
    /// `paired`: the tracker_info file names two trackers. `commit`: the recovered log's end
    /// (all of it was acknowledged or never will be).
    pub fn new(me: u8, paired: bool, commit: u64, now: Instant) -> Replica {
        Replica {
            me,
            paired,
            role: Role::Waiting,
            link: Link::Down,
            commit,
            follower_ack: 0,
            sent_commit: 0,
            leader_commit: 0,
            sent_ack: 0,
            fwd_seqs: VecDeque::new(),
            commit_due: None,
            unapplied: Vec::new(),
            forwards: Forwards::default(),
            waiters: CommitWaiters::default(),
            fwd_oks: HeldFwdOks::default(),
            replay: Replay::default(),
            told: Vec::new(),
            split_ack: None,
            dial_at: (me == 2 && paired).then_some(now),
            dial_backoff: DIAL_MIN,
            solo_at: None,
            solo_from: None,
            announced: None,
            last_ping: now,
        }
    }

    /// Decides how to begin from the recovered log (`fresh`: there was none).
    pub fn start(&mut self, fresh: bool, log_ends_solo: bool, now: Instant) -> Start {
        if !self.paired || (log_ends_solo && !fresh) {
            Start::LeadAlone
        } else if fresh {
            self.solo_at = Some(now + FRESH_GRACE);
            Start::Grace
        } else {
            Start::WaitForOther
        }
    }

    pub fn me(&self) -> u8 {
        self.me
    }

    pub fn other(&self) -> u8 {
        if self.me == 1 {
            2
        } else {
            1
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn commit(&self) -> u64 {
        self.commit
    }

    /// Whether client requests are served (`ping` and `digest` always are): not by a follower
    /// still proposing the writes of a lost split again.
    pub fn serving(&self) -> bool {
        match self.role {
            Role::Leader => true,
            Role::Follower => self.replay.is_empty(),
            Role::Syncing | Role::Waiting => false,
        }
    }

    /// See `split_ack` on the struct.
    pub fn split_ack(&self) -> Option<u64> {
        self.split_ack
    }

    /// A follower, caught up or not.
    pub fn following(&self) -> bool {
        matches!(self.role, Role::Syncing | Role::Follower)
    }

    #[cfg(test)]
    pub fn link(&self) -> Link {
        self.link
    }

    pub fn link_key(&self) -> Option<usize> {
        match self.link {
            Link::Down => None,
            Link::Pending(k) | Link::Live(k) => Some(k),
        }
    }

    pub fn link_live(&self) -> bool {
        matches!(self.link, Link::Live(_))
    }

    pub fn paired_leader(&self) -> bool {
        self.role == Role::Leader && self.link_live()
    }

    /// The role word of the `digest` reply.
    pub fn describe(&self) -> &'static str {
        match self.role {
            Role::Leader if self.link_live() => "leader-paired",
            Role::Leader => "leader-solo",
            Role::Syncing | Role::Follower => "follower",
            Role::Waiting => "waiting",
        }
    }

    /// This tracker orders writes on its own from now on; the caller opens the solo term and
    /// then reports where it began (`solo_term_began`).
    pub fn lead_alone(&mut self) {
        self.role = Role::Leader;
        self.solo_at = None;
    }

    pub fn solo_term_began(&mut self, seq: u64) {
        self.solo_from = Some(seq);
    }

    /// Tracker 2's dial is under way on connection `key`.
    pub fn link_dialed(&mut self, key: usize) {
        self.link = Link::Pending(key);
    }

    /// Connection `key` proved the cluster key and is now the link; this tracker announces
    /// `announced`. An older link must have been closed first (`link_closed`).
    pub fn link_authenticated(&mut self, key: usize, announced: Announced) {
        self.link = Link::Pending(key);
        self.dial_backoff = DIAL_MIN;
        self.announced = Some(announced);
    }

    /// Both sides announced their positions: choose the leader (the greater position; tracker
    /// 1 on a tie) and take the matching role. `pos_now` is this tracker's log now, which may
    /// have moved since it announced.
    pub fn link_up(
        &mut self,
        theirs: Position,
        their_digest: &str,
        pos_now: Position,
        now: Instant,
    ) -> Verdict {
        self.solo_at = None;
        let Announced {
            pos: announced,
            digest: my_digest,
        } = self.announced.take().unwrap_or_default();
        let mine = (announced.term, announced.seq);
        let their = (theirs.term, theirs.seq);
        let lead = mine > their || (mine == their && self.me == 1);
        // Positions alone can coincide for different logs (two fresh trackers that each
        // served alone): the digest tells.
        let same = mine == their && my_digest == their_digest && pos_now == announced;
        if let Link::Pending(k) = self.link {
            self.link = Link::Live(k);
        }
        self.last_ping = now;
        let was = self.role;
        let loses_solo_writes = !lead
            && was == Role::Leader
            && !same
            && self.solo_from.is_some_and(|from| pos_now.seq > from);
        if lead || same {
            self.split_ack = None;
        }
        if lead {
            // A waiting tracker that turns out to hold the longer log leads.
            self.role = Role::Leader;
            self.follower_ack = if same { pos_now.seq } else { 0 };
            self.sent_commit = 0;
            self.fwd_seqs.clear();
            self.commit_due = None;
        } else {
            self.role = if same { Role::Follower } else { Role::Syncing };
            self.leader_commit = 0;
            self.sent_ack = 0;
        }
        Verdict {
            lead,
            same,
            was,
            loses_solo_writes,
        }
    }

    /// The link's connection is gone (closed, silent, or replaced by a newer one).
    pub fn link_closed(&mut self, now: Instant) -> AfterLinkClosed {
        let was_live = self.link_live();
        self.link = Link::Down;
        if !was_live {
            if self.me != 2 {
                return AfterLinkClosed::Nothing;
            }
            self.schedule_dial(now);
            if self.role == Role::Waiting && self.solo_at.take().is_some() {
                return AfterLinkClosed::ServeAloneNow;
            }
            return AfterLinkClosed::Nothing;
        }
        if self.role == Role::Leader && self.follower_ack > 0 {
            let ack = self.follower_ack;
            self.split_ack = Some(self.split_ack.map_or(ack, |a| a.min(ack)));
        }
        self.follower_ack = 0;
        self.sent_ack = 0;
        self.sent_commit = 0;
        self.leader_commit = 0;
        if self.me == 2 {
            self.schedule_dial(now);
        }
        match self.role {
            Role::Leader => AfterLinkClosed::GoOnAlone,
            Role::Follower => AfterLinkClosed::TakeOver,
            Role::Syncing | Role::Waiting => {
                self.role = Role::Waiting;
                AfterLinkClosed::Wait
            }
        }
    }

    /// `snapshot-begin` from the leader: whether it is expected here (this tracker follows).
    pub fn snapshot_begins(&mut self) -> bool {
        if self.following() {
            self.role = Role::Syncing;
            true
        } else {
            false
        }
    }

    /// The leader's snapshot at `seq` replaced this tracker's state and is durable.
    pub fn snapshot_installed(&mut self, seq: u64) {
        self.split_ack = None;
        self.commit = self.commit.min(seq);
        self.role = Role::Follower;
        self.sent_ack = 0;
    }

    /// Leader: the follower has `seq` on disk.
    pub fn acked(&mut self, seq: u64) {
        self.follower_ack = self.follower_ack.max(seq);
    }

    /// Follower: the leader committed up to `seq`.
    pub fn leader_committed(&mut self, seq: u64) {
        self.leader_commit = self.leader_commit.max(seq);
    }

    /// Moves the commit point once `durable` is on this tracker's disk; returns what to tell
    /// the other tracker (a leader's `commit`, a follower's `ack`), if anything.
    pub fn advance_commit(&mut self, durable: u64) -> Option<LinkMsg> {
        match self.role {
            Role::Leader => {
                let c = if self.link_live() {
                    durable.min(self.follower_ack)
                } else {
                    durable
                };
                self.commit = self.commit.max(c);
                if self.link_live() && self.commit > self.sent_commit {
                    self.sent_commit = self.commit;
                    return Some(LinkMsg::Commit { seq: self.commit });
                }
                None
            }
            Role::Follower | Role::Syncing => {
                let mut msg = None;
                if self.role == Role::Follower && durable > self.sent_ack {
                    self.sent_ack = durable;
                    msg = Some(LinkMsg::Ack { seq: durable });
                }
                self.commit = self.commit.max(durable.min(self.leader_commit));
                msg
            }
            Role::Waiting => None,
        }
    }

    /// Leader: entry `seq` answers a write the follower forwarded.
    pub fn forwarded_entry(&mut self, seq: u64) {
        self.fwd_seqs.push_back(seq);
    }

    /// `advance_commit`, except that a paired leader tells the follower its new commit point
    /// at once only if it commits an entry a follower's client waits for; otherwise the commit
    /// waits for `carry_commit` (entries going to the follower anyway) or `COMMIT_DELAY`
    /// (`take_due_commit`). A follower's `ack` always goes at once.
    pub fn advance_commit_lazily(&mut self, durable: u64, now: Instant) -> Option<LinkMsg> {
        if !self.paired_leader() {
            return self.advance_commit(durable);
        }
        self.commit = self.commit.max(durable.min(self.follower_ack));
        if self.commit <= self.sent_commit {
            return None;
        }
        let mut waited_for = false;
        while self.fwd_seqs.front().is_some_and(|&s| s <= self.commit) {
            self.fwd_seqs.pop_front();
            waited_for = true;
        }
        if waited_for {
            return self.carry_commit();
        }
        self.commit_due.get_or_insert(now + COMMIT_DELAY);
        None
    }

    /// Leader: the commit point not yet told, to go with what is sent to the follower now.
    pub fn carry_commit(&mut self) -> Option<LinkMsg> {
        self.commit_due = None;
        if !self.paired_leader() || self.commit <= self.sent_commit {
            return None;
        }
        self.sent_commit = self.commit;
        Some(LinkMsg::Commit { seq: self.commit })
    }

    /// Leader: the commit point that waited `COMMIT_DELAY` for a batch to ride on.
    pub fn take_due_commit(&mut self, now: Instant) -> Option<LinkMsg> {
        if self.commit_due.is_some_and(|at| now >= at) {
            return self.carry_commit();
        }
        None
    }

    pub fn schedule_dial(&mut self, now: Instant) {
        self.dial_at = Some(now + self.dial_backoff);
        self.dial_backoff = (self.dial_backoff * 2).min(DIAL_MAX);
    }

    /// Whether to dial now (tracker 2, no link, backoff over); clears the timer if so.
    pub fn take_due_dial(&mut self, now: Instant) -> bool {
        let due = self.link == Link::Down && self.dial_at.is_some_and(|at| now >= at);
        if due {
            self.dial_at = None;
        }
        due
    }

    /// Whether the fresh-start grace just ran out while still waiting: serve alone.
    pub fn take_due_solo(&mut self, now: Instant) -> bool {
        if self.solo_at.is_some_and(|at| now >= at) {
            self.solo_at = None;
            return self.role == Role::Waiting;
        }
        false
    }

    /// Whether the live link is due a `ping`; counts it as sent.
    pub fn take_due_ping(&mut self, now: Instant) -> bool {
        let due = self.link_live() && now >= self.last_ping + LINK_PING;
        if due {
            self.last_ping = now;
        }
        due
    }

    /// Whether the link's connection has been silent, or stuck in its handshake, too long.
    pub fn link_expired(&self, t: LinkTimes, now: Instant) -> bool {
        (!self.link_live() && now >= t.since + HANDSHAKE_TIMEOUT) || now >= t.heard + LINK_TIMEOUT
    }

    /// The earliest moment a timer needs the loop: the redial, the end of the fresh-start
    /// grace, the next ping, the link's silence or handshake limit, a held-back commit. `None`: nothing is timed
    /// (a single tracker), so the loop may sleep until a socket wakes it.
    pub fn next_deadline(&self, link: Option<LinkTimes>) -> Option<Instant> {
        let dial = self.dial_at.filter(|_| self.link == Link::Down);
        let link_deadline = link.map(|t| {
            let phase = if self.link_live() {
                self.last_ping + LINK_PING
            } else {
                t.since + HANDSHAKE_TIMEOUT
            };
            phase.min(t.heard + LINK_TIMEOUT)
        });
        let commit = self.commit_due.filter(|_| self.paired_leader());
        [dial, self.solo_at, link_deadline, commit]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
impl Replica {
    /// The invariant above, as far as the fields show it; `durable` is the journal's durable
    /// seq.
    pub fn check_invariant(&self, durable: u64) -> bool {
        let link_for_followers = !self.following() || self.link_live();
        let positions = self.commit <= durable
            && match self.role {
                Role::Leader => self.sent_commit <= self.commit,
                Role::Syncing | Role::Follower => self.sent_ack <= durable,
                Role::Waiting => true,
            };
        let timers = (self.dial_at.is_none() || (self.me == 2 && self.paired))
            && (self.solo_at.is_none() || self.role == Role::Waiting);
        let reset_without_link = self.link_live()
            || (
                self.follower_ack,
                self.sent_commit,
                self.leader_commit,
                self.sent_ack,
            ) == (0, 0, 0, 0);
        link_for_followers && positions && timers && reset_without_link
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pos(term: u64, seq: u64) -> Position {
        Position {
            term,
            seq,
            solo: false,
        }
    }

    fn announced(p: Position, digest: &str) -> Announced {
        Announced {
            pos: p,
            digest: digest.into(),
        }
    }

    /// A replica of tracker `me` whose link on key 7 has just authenticated.
    fn authenticated(me: u8, mine: Position, digest: &str, now: Instant) -> Replica {
        let mut r = Replica::new(me, true, mine.seq, now);
        r.link_authenticated(7, announced(mine, digest));
        r
    }

    #[test]
    fn start_leads_alone_single_or_after_a_solo_term_and_waits_after_a_paired_one() {
        let now = Instant::now();
        assert_eq!(
            Replica::new(1, false, 0, now).start(true, false, now),
            Start::LeadAlone
        );
        assert_eq!(
            Replica::new(1, true, 5, now).start(false, true, now),
            Start::LeadAlone
        );
        assert_eq!(
            Replica::new(1, true, 5, now).start(false, false, now),
            Start::WaitForOther
        );
        let mut fresh = Replica::new(1, true, 0, now);
        assert_eq!(fresh.start(true, false, now), Start::Grace);
        assert!(!fresh.serving());
        assert_eq!(fresh.next_deadline(None), Some(now + FRESH_GRACE));
        assert!(!fresh.take_due_solo(now));
        assert!(fresh.take_due_solo(now + FRESH_GRACE));
        assert_eq!(fresh.next_deadline(None), None, "the grace fires once");
    }

    #[test]
    fn link_up_the_greater_position_leads_and_tracker_1_wins_a_tie() {
        let now = Instant::now();
        let mut r = authenticated(2, pos(3, 10), "d", now);
        let v = r.link_up(pos(3, 9), "x", pos(3, 10), now);
        assert!(v.lead && !v.same);
        assert_eq!((r.role(), r.link()), (Role::Leader, Link::Live(7)));

        let mut r = authenticated(2, pos(3, 10), "d", now);
        let v = r.link_up(pos(3, 10), "d", pos(3, 10), now);
        assert!(!v.lead && v.same);
        assert_eq!(
            r.role(),
            Role::Follower,
            "same log: no snapshot, serves at once"
        );

        let mut r = authenticated(1, pos(3, 10), "d", now);
        assert!(r.link_up(pos(3, 10), "d", pos(3, 10), now).lead);
    }

    #[test]
    fn link_up_a_follower_of_another_log_syncs_and_serves_only_after_the_snapshot() {
        let now = Instant::now();
        let mut r = authenticated(2, pos(1, 4), "mine", now);
        let v = r.link_up(pos(1, 4), "theirs", pos(1, 4), now);
        assert!(!v.lead && !v.same, "equal positions, different digests");
        assert_eq!(r.role(), Role::Syncing);
        assert!(!r.serving());
        assert_eq!(r.advance_commit(4), None, "no acks while syncing");
        assert!(r.snapshot_begins());
        r.snapshot_installed(4);
        assert_eq!(r.role(), Role::Follower);
        assert!(r.serving());
        assert_eq!(r.advance_commit(4), Some(LinkMsg::Ack { seq: 4 }));
    }

    #[test]
    fn link_up_a_solo_leader_that_wrote_and_now_follows_is_told_it_loses_those_writes() {
        let now = Instant::now();
        let mut r = Replica::new(1, true, 0, now);
        r.lead_alone();
        r.solo_term_began(5);
        r.link_authenticated(3, announced(pos(2, 8), "a"));
        let v = r.link_up(pos(4, 6), "b", pos(2, 8), now);
        assert!(!v.lead && v.loses_solo_writes);
        assert_eq!(v.was, Role::Leader);
    }

    #[test]
    fn link_closed_a_leader_remembers_the_followers_last_ack_until_the_logs_are_one_again() {
        let now = Instant::now();
        let mut r = authenticated(1, pos(1, 5), "d", now);
        r.link_up(pos(1, 5), "d", pos(1, 5), now);
        r.acked(7);
        assert_eq!(r.split_ack(), None);
        assert_eq!(r.link_closed(now), AfterLinkClosed::GoOnAlone);
        assert_eq!(r.split_ack(), Some(7));
        // It loses the heal: the ack is what the snapshot's install needs, then it is gone.
        r.link_authenticated(8, announced(pos(2, 9), "a"));
        let v = r.link_up(pos(3, 9), "b", pos(2, 9), now);
        assert!(!v.lead);
        assert_eq!(r.split_ack(), Some(7));
        assert!(r.snapshot_begins());
        r.snapshot_installed(9);
        assert_eq!(r.split_ack(), None);
    }

    #[test]
    fn a_follower_with_writes_to_propose_again_serves_nobody_until_they_are_decided() {
        use crate::tracker::op::{Entry, Op};
        use crate::tracker::replay::Item;
        let now = Instant::now();
        let mut r = authenticated(2, pos(1, 3), "d", now);
        r.link_up(pos(1, 3), "d", pos(1, 3), now);
        assert!(r.serving());
        let item = Item {
            user: None,
            tail: false,
            entry: Entry {
                term: 1,
                seq: 3,
                origin: None,
                op: Op::Detach { tracker: 1 },
            },
        };
        r.replay.extend([item]);
        assert!(
            !r.serving(),
            "its clients must go where the writes are decided"
        );
        let it = r.replay.take_next().expect("queued");
        r.replay.sent(4, it);
        assert!(!r.serving());
        assert!(r.replay.answered(4).is_some());
        assert!(r.serving());
    }

    #[test]
    fn advance_commit_a_paired_leader_waits_for_the_follower_ack() {
        let now = Instant::now();
        let mut r = authenticated(1, pos(1, 2), "d", now);
        r.link_up(pos(1, 0), "e", pos(1, 2), now);
        assert_eq!(
            r.advance_commit(5),
            Some(LinkMsg::Commit { seq: 2 }),
            "the recovered log's end was committed before the link"
        );
        assert_eq!(
            r.advance_commit(5),
            None,
            "the follower has acked nothing more"
        );
        assert_eq!(r.commit(), 2);
        r.acked(4);
        assert_eq!(r.advance_commit(5), Some(LinkMsg::Commit { seq: 4 }));
        assert_eq!(r.advance_commit(5), None, "told once");
        r.acked(9);
        assert_eq!(
            r.advance_commit(5),
            Some(LinkMsg::Commit { seq: 5 }),
            "own disk bounds it"
        );
    }

    /// A paired leader at `pos(1, 2)` whose follower had the same log.
    fn paired_leader(now: Instant) -> Replica {
        let mut r = authenticated(1, pos(1, 2), "d", now);
        r.link_up(pos(1, 2), "d", pos(1, 2), now);
        r
    }

    #[test]
    fn a_lazy_commit_waits_for_a_batch_to_ride_on_or_the_delay() {
        let now = Instant::now();
        let mut r = paired_leader(now);
        r.acked(4);
        assert_eq!(r.advance_commit_lazily(4, now), None, "held back");
        assert_eq!(
            r.commit(),
            4,
            "the commit point itself moved: replies leave"
        );
        assert_eq!(r.next_deadline(None), Some(now + COMMIT_DELAY));
        assert_eq!(r.take_due_commit(now), None, "not due yet");
        assert_eq!(
            r.carry_commit(),
            Some(LinkMsg::Commit { seq: 4 }),
            "rides on the next entries"
        );
        assert_eq!(r.carry_commit(), None, "told once");
        assert_eq!(r.next_deadline(None), None, "no timer left");
        r.acked(6);
        assert_eq!(r.advance_commit_lazily(6, now), None);
        let later = now + COMMIT_DELAY / 2;
        r.acked(7);
        assert_eq!(r.advance_commit_lazily(7, later), None);
        assert_eq!(
            r.next_deadline(None),
            Some(now + COMMIT_DELAY),
            "the first held commit sets the deadline"
        );
        assert_eq!(
            r.take_due_commit(now + COMMIT_DELAY),
            Some(LinkMsg::Commit { seq: 7 }),
            "no batch came: it goes alone, with everything committed since"
        );
        assert_eq!(r.take_due_commit(now + COMMIT_DELAY * 2), None);
    }

    #[test]
    fn a_lazy_commit_goes_at_once_when_it_commits_a_forwarded_write() {
        let now = Instant::now();
        let mut r = paired_leader(now);
        r.forwarded_entry(4);
        r.forwarded_entry(6);
        r.acked(3);
        assert_eq!(
            r.advance_commit_lazily(9, now),
            None,
            "3 answers no forward"
        );
        r.acked(5);
        assert_eq!(
            r.advance_commit_lazily(9, now),
            Some(LinkMsg::Commit { seq: 5 }),
            "4 was forwarded: its client waits at the follower"
        );
        assert_eq!(r.take_due_commit(now + COMMIT_DELAY), None, "nothing held");
        r.acked(9);
        assert_eq!(
            r.advance_commit_lazily(9, now),
            Some(LinkMsg::Commit { seq: 9 })
        );
        r.acked(10);
        assert_eq!(r.advance_commit_lazily(10, now), None, "no forward left");
    }

    #[test]
    fn a_follower_and_a_lone_leader_are_never_lazy() {
        let now = Instant::now();
        let mut f = authenticated(2, pos(1, 3), "d", now);
        f.link_up(pos(1, 3), "d", pos(1, 3), now);
        assert_eq!(
            f.advance_commit_lazily(5, now),
            Some(LinkMsg::Ack { seq: 5 })
        );
        let mut l = paired_leader(now);
        l.acked(3);
        assert_eq!(l.advance_commit_lazily(3, now), None);
        l.link_closed(now);
        assert_eq!(l.carry_commit(), None, "no link, nothing to tell");
        assert_eq!(l.next_deadline(None), None, "and no timer");
        assert_eq!(l.advance_commit_lazily(8, now), None);
        assert_eq!(l.commit(), 8, "alone, its own disk is the commit point");
    }

    #[test]
    fn advance_commit_a_follower_acks_its_disk_and_commits_what_both_hold() {
        let now = Instant::now();
        let mut r = authenticated(2, pos(1, 3), "d", now);
        r.link_up(pos(1, 3), "d", pos(1, 3), now);
        r.leader_committed(2);
        assert_eq!(r.advance_commit(3), Some(LinkMsg::Ack { seq: 3 }));
        assert_eq!(
            r.commit(),
            3,
            "the recovered log's end was committed already"
        );
        r.leader_committed(6);
        assert_eq!(r.advance_commit(5), Some(LinkMsg::Ack { seq: 5 }));
        assert_eq!(r.commit(), 5);
        assert_eq!(r.advance_commit(5), None);
    }

    #[test]
    fn a_lone_leader_commits_its_own_disk() {
        let now = Instant::now();
        let mut r = Replica::new(1, false, 0, now);
        r.lead_alone();
        assert_eq!(r.advance_commit(3), None);
        assert_eq!(r.commit(), 3);
        assert_eq!(r.describe(), "leader-solo");
    }

    #[test]
    fn link_closed_the_leader_goes_on_the_follower_takes_over_the_syncing_one_waits() {
        let now = Instant::now();
        let mut leader = authenticated(1, pos(1, 5), "d", now);
        leader.link_up(pos(1, 5), "d", pos(1, 5), now);
        assert!(leader.paired_leader());
        assert_eq!(leader.link_closed(now), AfterLinkClosed::GoOnAlone);
        assert_eq!((leader.role(), leader.link()), (Role::Leader, Link::Down));
        assert_eq!(leader.next_deadline(None), None, "tracker 1 never dials");

        let mut follower = authenticated(2, pos(1, 5), "d", now);
        follower.link_up(pos(1, 5), "d", pos(1, 5), now);
        assert_eq!(follower.link_closed(now), AfterLinkClosed::TakeOver);
        assert_eq!(follower.next_deadline(None), Some(now + DIAL_MIN));

        let mut syncing = authenticated(2, pos(1, 5), "d", now);
        syncing.link_up(pos(1, 9), "e", pos(1, 5), now);
        assert_eq!(syncing.link_closed(now), AfterLinkClosed::Wait);
        assert_eq!(syncing.role(), Role::Waiting);
    }

    #[test]
    fn link_closed_during_the_handshake_redials_and_ends_a_fresh_tracker_2s_grace() {
        let now = Instant::now();
        let mut r = Replica::new(2, true, 0, now);
        assert_eq!(r.start(true, false, now), Start::Grace);
        assert!(r.take_due_dial(now));
        r.link_dialed(4);
        assert_eq!(r.link_closed(now), AfterLinkClosed::ServeAloneNow);
        r.lead_alone();
        r.link_dialed(5);
        assert_eq!(r.link_closed(now), AfterLinkClosed::Nothing);
        assert_eq!(r.role(), Role::Leader);
    }

    #[test]
    fn schedule_dial_backs_off_to_the_maximum_and_a_handshake_resets_it() {
        let now = Instant::now();
        let mut r = Replica::new(2, true, 0, now);
        let mut waits = Vec::new();
        for _ in 0..8 {
            r.schedule_dial(now);
            waits.push(r.next_deadline(None).map(|d| d - now));
        }
        assert_eq!(waits[0], Some(DIAL_MIN));
        assert_eq!(waits[1], Some(DIAL_MIN * 2));
        assert_eq!(waits[7], Some(DIAL_MAX));
        r.link_authenticated(1, Announced::default());
        r.link_closed(now);
        assert_eq!(r.next_deadline(None), Some(now + DIAL_MIN));
        assert!(!r.take_due_dial(now));
        assert!(r.take_due_dial(now + DIAL_MIN));
    }

    #[test]
    fn next_deadline_follows_the_link_ping_silence_and_handshake_limits() {
        let now = Instant::now();
        let mut r = authenticated(1, pos(1, 1), "d", now);
        let t = LinkTimes {
            heard: now,
            since: now,
        };
        assert_eq!(r.next_deadline(Some(t)), Some(now + HANDSHAKE_TIMEOUT));
        assert!(r.link_expired(t, now + HANDSHAKE_TIMEOUT));
        r.link_up(pos(1, 1), "d", pos(1, 1), now);
        assert_eq!(r.next_deadline(Some(t)), Some(now + LINK_PING));
        assert!(!r.take_due_ping(now));
        assert!(r.take_due_ping(now + LINK_PING));
        let later = LinkTimes {
            heard: now + LINK_PING,
            since: now,
        };
        assert_eq!(r.next_deadline(Some(later)), Some(now + LINK_PING * 2));
        assert!(
            !r.link_expired(later, now + HANDSHAKE_TIMEOUT),
            "live: silence counts"
        );
        assert!(r.link_expired(later, now + LINK_PING + LINK_TIMEOUT));
    }

    #[test]
    fn a_dial_timer_is_ignored_while_a_link_exists() {
        let now = Instant::now();
        let mut r = Replica::new(2, true, 0, now);
        r.link_dialed(3);
        assert_eq!(r.next_deadline(None), None);
        assert!(!r.take_due_dial(now));
    }

    /// What can happen to a replica, in any order; each is applied only where the server
    /// would report it (a `snapshot-end` only while syncing, and so on).
    #[derive(Clone, Debug)]
    enum Event {
        Authenticated,
        Up { ahead: bool, same: bool },
        Closed,
        SnapshotBegins,
        SnapshotInstalled(u64),
        Acked(u64),
        LeaderCommitted(u64),
        Durable(u64),
        Tick(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Authenticated),
            (any::<bool>(), any::<bool>()).prop_map(|(ahead, same)| Event::Up { ahead, same }),
            Just(Event::Closed),
            Just(Event::SnapshotBegins),
            (0u64..50).prop_map(Event::SnapshotInstalled),
            (0u64..50).prop_map(Event::Acked),
            (0u64..50).prop_map(Event::LeaderCommitted),
            (0u64..5).prop_map(Event::Durable),
            (0u64..3000).prop_map(Event::Tick),
        ]
    }

    /// The link's connection closes, and the server does what it is told.
    fn close(r: &mut Replica, now: Instant) {
        if r.link_key().is_some() {
            match r.link_closed(now) {
                AfterLinkClosed::TakeOver | AfterLinkClosed::ServeAloneNow => r.lead_alone(),
                _ => {}
            }
        }
    }

    proptest! {
        #[test]
        fn the_invariant_holds_after_every_transition(
            me in 1u8..=2,
            fresh in any::<bool>(),
            solo_log in any::<bool>(),
            events in proptest::collection::vec(event(), 0..60),
        ) {
            let mut now = Instant::now();
            let mut durable = 10;
            let mut r = Replica::new(me, true, durable, now);
            if r.start(fresh, solo_log, now) == Start::LeadAlone {
                r.lead_alone();
            }
            prop_assert!(r.check_invariant(durable));
            let mut key = 0;
            for ev in events {
                let before = r.commit();
                let mut snapshot = false;
                match ev {
                    Event::Authenticated => {
                        // A newer link replaces the old one, which is closed first.
                        close(&mut r, now);
                        key += 1;
                        let pos = Position { term: 1, seq: durable, solo: false };
                        r.link_authenticated(key, Announced { pos, digest: "d".into() });
                    }
                    Event::Up { ahead, same } => {
                        if matches!(r.link, Link::Pending(_)) {
                            let mine = Position { term: 1, seq: durable, solo: false };
                            let theirs = Position {
                                term: 1,
                                seq: if ahead { durable + 5 } else { durable },
                                solo: false,
                            };
                            let digest = if same { "d" } else { "e" };
                            r.link_up(theirs, digest, mine, now);
                        }
                    }
                    Event::Closed => close(&mut r, now),
                    Event::SnapshotBegins => {
                        r.snapshot_begins();
                    }
                    Event::SnapshotInstalled(seq) => {
                        if r.role() == Role::Syncing {
                            r.snapshot_installed(seq);
                            durable = seq;
                            snapshot = true;
                        }
                    }
                    Event::Acked(seq) => {
                        if r.paired_leader() {
                            r.acked(seq.min(durable));
                        }
                    }
                    Event::LeaderCommitted(seq) => {
                        if r.following() {
                            r.leader_committed(seq);
                        }
                    }
                    Event::Durable(n) => {
                        durable += n;
                        r.advance_commit(durable);
                    }
                    Event::Tick(ms) => {
                        now += Duration::from_millis(ms);
                        if r.take_due_solo(now) {
                            r.lead_alone();
                        }
                        if r.take_due_dial(now) {
                            key += 1;
                            r.link_dialed(key);
                        }
                    }
                }
                prop_assert!(r.check_invariant(durable), "{:?} after {:?}", r.role(), ev);
                prop_assert!(snapshot || r.commit() >= before, "commit went back");
            }
        }
    }
}
