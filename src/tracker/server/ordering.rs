//! Ordering writes: proposing (apply here or forward to the leader), appending to the
//! journal and the link, and releasing replies once their entry is committed.
//!
//! The data first, as plain types with their own tests: a client's ordered `ReplyQueue`, the
//! `Forwards` a follower has sent to its leader, and the `CommitWaiters` and `HeldFwdOks`
//! released when the commit point passes them. Then the `Server` steps that move entries and
//! replies between them, the journal and the sockets.

use super::{ConnRole, Server};
use crate::protocol::tracker::{self as proto, ErrorCode};
use crate::tracker::link::{self, LinkMsg};
use crate::tracker::op::{Entry, Op, Origin};
use crate::tracker::state::Refusal;
use std::collections::{BTreeMap, VecDeque};

/// The client request a reply answers: its connection (slab key, and the id that tells it from
/// a later connection reusing the key) and its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReplyTo {
    pub key: usize,
    pub conn_id: u64,
    pub tag: u64,
}

/// A reply in a client's ordered reply queue.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum QueuedReply {
    Ready(String),
    /// Sent once the commit point reaches `seq`.
    AfterCommit {
        seq: u64,
        text: String,
    },
    /// A write forwarded to the leader, waiting for its entry to come back.
    Forwarded {
        fid: u64,
        tag: u64,
    },
}

/// A client's replies in request order: only a ready prefix leaves, so a pipelining client
/// sees its answers in the order it asked.
///
/// The queue also keeps the client's output accounting: `queued_bytes` counts every reply text
/// it holds (a read's reply waiting behind an uncommitted write included), so the output
/// limits (`limits::output_verdict`) see every byte queued for the client, not only what has
/// reached its socket buffer.
#[derive(Debug, Default)]
pub(super) struct ReplyQueue {
    replies: VecDeque<QueuedReply>,
    /// Bytes of reply text held (each line's `\n` included), kept in step by every method.
    bytes: usize,
}

impl QueuedReply {
    /// Bytes this reply will take on the wire; a forward's outcome is not known yet.
    fn wire_bytes(&self) -> usize {
        match self {
            QueuedReply::Ready(t) | QueuedReply::AfterCommit { text: t, .. } => t.len() + 1,
            QueuedReply::Forwarded { .. } => 0,
        }
    }
}

impl ReplyQueue {
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Requests whose replies wait here (behind a write, or a write's own).
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Bytes of reply text waiting here.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    pub fn push_back(&mut self, reply: QueuedReply) {
        self.bytes += reply.wire_bytes();
        self.replies.push_back(reply);
    }

    /// The front reply's text if it may leave now (committed by `commit`).
    pub fn pop_ready(&mut self, commit: u64) -> Option<String> {
        let ready = match self.replies.front()? {
            QueuedReply::Ready(_) => true,
            QueuedReply::AfterCommit { seq, .. } => *seq <= commit,
            QueuedReply::Forwarded { .. } => false,
        };
        if !ready {
            return None;
        }
        let front = self.replies.pop_front()?;
        self.bytes -= front.wire_bytes();
        match front {
            QueuedReply::Ready(t) | QueuedReply::AfterCommit { text: t, .. } => Some(t),
            QueuedReply::Forwarded { .. } => None,
        }
    }

    /// The forward ids of this client's writes still at the leader.
    pub fn forwarded(&self) -> impl Iterator<Item = u64> + '_ {
        self.replies.iter().filter_map(|r| match r {
            QueuedReply::Forwarded { fid, .. } => Some(*fid),
            _ => None,
        })
    }

    /// The forward id of the forwarded write with this tag.
    pub fn forwarded_tag(&self, tag: u64) -> Option<u64> {
        self.replies.iter().find_map(|r| match r {
            QueuedReply::Forwarded { fid, tag: t } if *t == tag => Some(*fid),
            _ => None,
        })
    }

    /// Puts the outcome of forward `fid` in its place; whether any forward is left.
    pub fn resolve(&mut self, fid: u64, outcome: QueuedReply) -> bool {
        if let Some(slot) = self
            .replies
            .iter_mut()
            .find(|r| matches!(r, QueuedReply::Forwarded { fid: f, .. } if *f == fid))
        {
            self.bytes = self.bytes - slot.wire_bytes() + outcome.wire_bytes();
            *slot = outcome;
        }
        self.forwarded().next().is_some()
    }
}

/// A write this follower forwarded to the leader.
pub(super) struct ForwardedWrite {
    /// Who to answer; `None` for the server's own writes (a dropped connection's logout).
    pub to: Option<ReplyTo>,
    pub origin: Option<Origin>,
    pub op: Op,
}

/// Writes at the leader, by forward id (`fid`, unique for this tracker's lifetime).
pub(super) struct Forwards {
    next_fid: u64,
    by_fid: BTreeMap<u64, ForwardedWrite>,
}

impl Default for Forwards {
    fn default() -> Self {
        Forwards {
            next_fid: 1,
            by_fid: BTreeMap::new(),
        }
    }
}

impl Forwards {
    /// Records a write about to be sent; its forward id.
    pub fn add(&mut self, w: ForwardedWrite) -> u64 {
        let fid = self.next_fid;
        self.next_fid += 1;
        self.by_fid.insert(fid, w);
        fid
    }

    pub fn get(&self, fid: u64) -> Option<&ForwardedWrite> {
        self.by_fid.get(&fid)
    }

    /// The leader answered forward `fid`.
    pub fn remove(&mut self, fid: u64) -> Option<ForwardedWrite> {
        self.by_fid.remove(&fid)
    }

    /// Every write still out, oldest first (the leader is gone: they are ordered here now).
    pub fn take_all(&mut self) -> impl Iterator<Item = ForwardedWrite> {
        std::mem::take(&mut self.by_fid).into_values()
    }
}

/// A client reply that waits for entry `seq` to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CommitWaiter {
    pub seq: u64,
    pub key: usize,
    pub conn_id: u64,
}

/// Commit waiters in sequence order, so `pop_committed` stops at the first uncommitted one.
#[derive(Debug, Default)]
pub(super) struct CommitWaiters(VecDeque<CommitWaiter>);

impl CommitWaiters {
    /// Entries are applied in order, so this is almost always a push at the back.
    pub fn add(&mut self, w: CommitWaiter) {
        if self.0.back().is_none_or(|b| b.seq <= w.seq) {
            self.0.push_back(w);
        } else {
            let at = self.0.partition_point(|b| b.seq <= w.seq);
            self.0.insert(at, w);
        }
    }

    pub fn pop_committed(&mut self, commit: u64) -> Option<CommitWaiter> {
        if self.0.front()?.seq > commit {
            return None;
        }
        self.0.pop_front()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A leader's `fwd-ok` to a deduplicated forwarded retry: the stored reply may belong to an
/// entry not yet committed, so it leaves once everything up to `seq` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HeldFwdOk {
    pub seq: u64,
    pub fid: u64,
    pub reply: String,
}

#[derive(Debug, Default)]
pub(super) struct HeldFwdOks(VecDeque<HeldFwdOk>);

impl HeldFwdOks {
    /// Held at the log's end, so pushes come in sequence order.
    pub fn push(&mut self, h: HeldFwdOk) {
        self.0.push_back(h);
    }

    pub fn pop_committed(&mut self, commit: u64) -> Option<HeldFwdOk> {
        if self.0.front()?.seq > commit {
            return None;
        }
        self.0.pop_front()
    }
}

impl Server {
    /// Puts a write through the replicated log: ordered here if this tracker leads, forwarded
    /// otherwise. `to` is the client request to answer, if any.
    pub(super) fn propose(&mut self, origin: Option<Origin>, op: Op, to: Option<ReplyTo>) {
        use super::replica::Role;
        match self.repl.role() {
            Role::Leader => match self.apply_op(origin, &op) {
                Ok(reply) => {
                    let seq = self.append(origin, op.clone(), None);
                    self.after_apply(&op, to, seq, Ok(reply.words().to_string()));
                }
                Err(r) => {
                    if let Some(to) = to {
                        self.refuse(to.key, to.tag, &r);
                    }
                }
            },
            Role::Follower | Role::Syncing if self.repl.link_live() => {
                let msg_op = op.clone();
                let fid = self.repl.forwards.add(ForwardedWrite { to, origin, op });
                self.send_link(&LinkMsg::Fwd {
                    fid,
                    origin,
                    op: msg_op,
                });
                if let Some(to) = to {
                    self.push_reply(to.key, QueuedReply::Forwarded { fid, tag: to.tag });
                }
            }
            _ => {
                // Not serving: only connection drops get here; their sessions do not exist in
                // a state that has not synced yet.
                if let Some(to) = to {
                    self.reply_err(
                        to.key,
                        to.tag,
                        ErrorCode::Unavailable,
                        "this tracker is not serving",
                    );
                }
            }
        }
    }

    /// Appends an applied entry to the journal and sends it to the follower.
    pub(super) fn append(&mut self, origin: Option<Origin>, op: Op, fid: Option<u64>) -> u64 {
        let entry = Entry {
            term: self.pos.term,
            seq: self.pos.seq + 1,
            origin,
            op,
        };
        let is_term = matches!(entry.op, Op::Term { .. });
        if let Op::Term { term, solo } = entry.op {
            self.pos.term = term;
            self.pos.solo = solo;
        }
        let entry = Entry {
            term: self.pos.term,
            ..entry
        };
        self.pos.seq = entry.seq;
        if fid.is_some() && self.repl.paired_leader() {
            self.repl.forwarded_entry(entry.seq);
        }
        let line = self.journal.append(&entry);
        // The follower gets the journal's own bytes: one encoding, no intermediate `String`.
        let link = self.repl.link_key().filter(|_| self.repl.paired_leader());
        if let Some(c) = link.and_then(|k| self.conns.get_mut(k)) {
            let was_idle = c.conn.out_pending() == 0;
            link::send_op(&mut c.conn, fid, line);
            if was_idle {
                self.dirty.extend(link);
            }
        }
        let seq = self.pos.seq;
        if is_term {
            self.write_limits();
        }
        seq
    }

    /// What follows a successful write: bind or unbind sessions, queue the client's reply.
    pub(super) fn after_apply(
        &mut self,
        op: &Op,
        to: Option<ReplyTo>,
        seq: u64,
        result: Result<String, Refusal>,
    ) {
        if result.is_ok() {
            self.bind_session(op, to);
        }
        let result = result.map(|words| self.reply_words(op, to, &words));
        let alive = to.filter(|to| {
            self.conns
                .get(to.key)
                .is_some_and(|c| c.id == to.conn_id && !c.closing)
        });
        if let Some(to) = alive {
            match result {
                Ok(reply) => self.push_commit_reply(to.key, seq, proto::encode_ok(to.tag, &reply)),
                Err(r) => self.refuse(to.key, to.tag, &r),
            }
        }
    }

    pub(super) fn push_commit_reply(&mut self, key: usize, seq: u64, text: String) {
        if seq <= self.repl.commit() {
            return self.reply(key, text);
        }
        if let Some(conn_id) = self.conns.get(key).map(|c| c.id) {
            self.repl.waiters.add(CommitWaiter { seq, key, conn_id });
        }
        self.push_reply(key, QueuedReply::AfterCommit { seq, text });
    }

    /// Releases every reply whose entry is now committed.
    pub(super) fn release(&mut self) {
        let commit = self.repl.commit();
        while let Some(w) = self.repl.waiters.pop_committed(commit) {
            if self.conns.get(w.key).is_some_and(|c| c.id == w.conn_id) {
                self.drain_replies(w.key);
            }
        }
        while let Some(HeldFwdOk { fid, reply, .. }) = self.repl.fwd_oks.pop_committed(commit) {
            self.send_link(&LinkMsg::FwdOk { fid, reply });
        }
    }

    /// Sends the ready prefix of a client's reply queue.
    pub(super) fn drain_replies(&mut self, key: usize) {
        let commit = self.repl.commit();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let ConnRole::Client(cl) = &mut c.kind else {
            return;
        };
        let was_idle = c.conn.out_pending() == 0;
        let mut sent = false;
        while let Some(text) = cl.replies.pop_ready(commit) {
            c.conn.send_line(&text);
            sent = true;
        }
        if sent {
            if was_idle {
                self.dirty.push(key);
            }
            // Replies moved from the queue to the socket's buffer: the total is the same, but
            // the count of those waiting behind writes fell.
            self.check_output(key);
        }
    }

    /// Resolves a forwarded write's place in its client's queue with its outcome.
    pub(super) fn resolve_forward(&mut self, to: ReplyTo, fid: u64, outcome: QueuedReply) {
        let commit = self.repl.commit();
        let Some(c) = self.conns.get_mut(to.key) else {
            return;
        };
        if c.id != to.conn_id {
            return;
        }
        let ConnRole::Client(cl) = &mut c.kind else {
            return;
        };
        let waiting_seq = match &outcome {
            QueuedReply::AfterCommit { seq, .. } if *seq > commit => Some(*seq),
            _ => None,
        };
        if !cl.replies.resolve(fid, outcome) {
            self.resume.push(to.key);
        }
        if let Some(seq) = waiting_seq {
            self.repl.waiters.add(CommitWaiter {
                seq,
                key: to.key,
                conn_id: to.conn_id,
            });
        }
        self.drain_replies(to.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(t: &str) -> QueuedReply {
        QueuedReply::Ready(t.into())
    }

    #[test]
    fn pop_ready_keeps_request_order_behind_an_uncommitted_write() {
        let mut q = ReplyQueue::default();
        q.push_back(ready("1 ok"));
        q.push_back(QueuedReply::AfterCommit {
            seq: 5,
            text: "2 ok".into(),
        });
        q.push_back(ready("3 ok"));
        assert_eq!(q.pop_ready(4).as_deref(), Some("1 ok"));
        assert_eq!(q.pop_ready(4), None, "the read behind the write waits too");
        assert_eq!(q.pop_ready(5).as_deref(), Some("2 ok"));
        assert_eq!(q.pop_ready(5).as_deref(), Some("3 ok"));
        assert!(q.is_empty());
    }

    #[test]
    fn queued_bytes_count_every_reply_held_including_those_behind_a_write() {
        let mut q = ReplyQueue::default();
        q.push_back(QueuedReply::AfterCommit {
            seq: 5,
            text: "1 ok".into(),
        });
        q.push_back(ready("2 ok big reply"));
        q.push_back(QueuedReply::Forwarded { fid: 9, tag: 3 });
        assert_eq!(q.len(), 3);
        assert_eq!(
            q.queued_bytes(),
            5 + 15,
            "a forward counts once its outcome is in"
        );
        assert!(!q.resolve(9, ready("3 ok")));
        assert_eq!(q.queued_bytes(), 5 + 15 + 5);
        assert_eq!(q.pop_ready(5).as_deref(), Some("1 ok"));
        assert_eq!(q.queued_bytes(), 15 + 5);
        while q.pop_ready(5).is_some() {}
        assert_eq!((q.len(), q.queued_bytes()), (0, 0));
    }

    #[test]
    fn resolve_replaces_the_forward_in_place_and_says_whether_any_is_left() {
        let mut q = ReplyQueue::default();
        q.push_back(QueuedReply::Forwarded { fid: 7, tag: 1 });
        q.push_back(QueuedReply::Forwarded { fid: 8, tag: 2 });
        assert_eq!(q.forwarded().collect::<Vec<_>>(), [7, 8]);
        assert_eq!(q.forwarded_tag(2), Some(8));
        assert_eq!(q.pop_ready(u64::MAX), None);
        assert!(q.resolve(8, ready("2 ok")), "forward 7 is still out");
        assert_eq!(q.pop_ready(u64::MAX), None, "2's answer waits behind 1's");
        assert!(!q.resolve(7, ready("1 ok")));
        assert_eq!(q.pop_ready(0).as_deref(), Some("1 ok"));
        assert_eq!(q.pop_ready(0).as_deref(), Some("2 ok"));
    }

    #[test]
    fn forwards_get_increasing_ids_and_take_all_returns_them_oldest_first() {
        let mut f = Forwards::default();
        let w = |tag| ForwardedWrite {
            to: None,
            origin: Some(Origin { instance: 1, tag }),
            op: Op::Logout { token: "t".into() },
        };
        let a = f.add(w(1));
        let b = f.add(w(2));
        assert!(a >= 1 && b > a);
        assert!(f.get(a).is_some());
        assert!(f.remove(a).is_some() && f.remove(a).is_none());
        f.add(w(3));
        let tags: Vec<u64> = f
            .take_all()
            .filter_map(|w| w.origin.map(|o| o.tag))
            .collect();
        assert_eq!(tags, [2, 3]);
        assert_eq!(f.take_all().count(), 0);
    }

    #[test]
    fn commit_waiters_stay_sorted_and_pop_only_what_is_committed() {
        let mut ws = CommitWaiters::default();
        for seq in [3, 5, 4, 9] {
            ws.add(CommitWaiter {
                seq,
                key: seq as usize,
                conn_id: 1,
            });
        }
        let mut out = Vec::new();
        while let Some(w) = ws.pop_committed(5) {
            out.push(w.seq);
        }
        assert_eq!(out, [3, 4, 5]);
        assert_eq!(ws.pop_committed(8), None);
        assert_eq!(ws.pop_committed(9).map(|w| w.seq), Some(9));
    }

    #[test]
    fn held_fwd_oks_leave_at_their_commit() {
        let mut h = HeldFwdOks::default();
        h.push(HeldFwdOk {
            seq: 2,
            fid: 1,
            reply: "x".into(),
        });
        assert_eq!(h.pop_committed(1), None);
        assert_eq!(h.pop_committed(2).map(|h| h.fid), Some(1));
    }
}
