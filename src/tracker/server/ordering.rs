//! Ordering writes: proposing (apply here or forward to the leader), appending to the
//! journal and the link, and releasing replies once their entry is committed.

use super::*;

impl Server {
    /// Puts a write through the replicated log: ordered here if this tracker leads, forwarded
    /// otherwise. `from` is the client connection and tag to answer, if any.
    pub(super) fn propose(
        &mut self,
        origin: Option<Origin>,
        op: Op,
        from: Option<(usize, u64, u64)>,
    ) {
        match self.role {
            Role::Leader => match self.state.apply(origin, &op) {
                Ok(reply) => {
                    let seq = self.append(origin, op.clone(), None);
                    self.after_apply(&op, from, seq, Ok(reply.words().to_string()));
                }
                Err(r) => {
                    if let Some((key, _, tag)) = from {
                        self.refuse(key, tag, &r);
                    }
                }
            },
            Role::Follower if self.link_live() => {
                let fid = self.next_fid;
                self.next_fid += 1;
                self.send_link(&LinkMsg::Fwd {
                    fid,
                    origin,
                    op: op.clone(),
                });
                if let Some((key, _, tag)) = from {
                    self.push_reply(key, Slot::Forward { fid, tag });
                }
                self.forwards.insert(
                    fid,
                    Forward {
                        client: from,
                        origin,
                        op,
                    },
                );
            }
            _ => {
                // Not serving: only connection drops get here; their sessions do not exist in
                // a state that has not synced yet.
                if let Some((key, _, tag)) = from {
                    self.reply_err(
                        key,
                        tag,
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
        if let Op::Term { term, solo } = entry.op {
            self.pos.term = term;
            self.pos.solo = solo;
        }
        let entry = Entry {
            term: self.pos.term,
            ..entry
        };
        self.pos.seq = entry.seq;
        let line = entry.encode();
        self.journal.append_encoded(entry.seq, &line);
        if self.paired_leader() {
            if let Some(k) = self.link {
                self.send(k, &link::op_line(fid, &line));
            }
        }
        self.pos.seq
    }

    /// What follows a successful write: bind or unbind sessions, queue the client's reply.
    pub(super) fn after_apply(
        &mut self,
        op: &Op,
        from: Option<(usize, u64, u64)>,
        seq: u64,
        result: Result<String, Refusal>,
    ) {
        if result.is_ok() {
            self.bind_session(op, from);
        }
        let alive = from.filter(|(key, id, _)| {
            self.conns
                .get(*key)
                .is_some_and(|c| c.id == *id && !c.closing)
        });
        if let Some((key, _, tag)) = alive {
            match result {
                Ok(reply) => self.push_commit_reply(key, seq, proto::encode_ok(tag, &reply)),
                Err(r) => self.refuse(key, tag, &r),
            }
        }
    }

    pub(super) fn push_commit_reply(&mut self, key: usize, seq: u64, text: String) {
        if seq <= self.commit {
            return self.reply(key, text);
        }
        if let Some(id) = self.conns.get(key).map(|c| c.id) {
            self.add_waiter(seq, key, id);
        }
        self.push_reply(key, Slot::Commit { seq, text });
    }

    /// Waiters stay in sequence order so `release` stops at the first uncommitted one; entries
    /// are applied in order, so this is almost always a push at the back.
    pub(super) fn add_waiter(&mut self, seq: u64, key: usize, conn_id: u64) {
        if self.waiters.back().is_none_or(|w| w.0 <= seq) {
            self.waiters.push_back((seq, key, conn_id));
        } else {
            let at = self.waiters.partition_point(|w| w.0 <= seq);
            self.waiters.insert(at, (seq, key, conn_id));
        }
    }

    /// Releases every reply whose entry is now committed.
    pub(super) fn release(&mut self) {
        while let Some(&(seq, key, id)) = self.waiters.front() {
            if seq > self.commit {
                break;
            }
            self.waiters.pop_front();
            if self.conns.get(key).is_some_and(|c| c.id == id) {
                self.drain_replies(key);
            }
        }
        while let Some((seq, _, _)) = self.fwd_waiters.front() {
            if *seq > self.commit {
                break;
            }
            if let Some((_, fid, reply)) = self.fwd_waiters.pop_front() {
                self.send_link(&LinkMsg::FwdOk { fid, reply });
            }
        }
    }

    /// Sends the ready prefix of a client's reply queue.
    pub(super) fn drain_replies(&mut self, key: usize) {
        let commit = self.commit;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Kind::Client(cl) = &mut c.kind else {
            return;
        };
        let was_idle = c.conn.out_pending() == 0;
        let mut sent = false;
        while let Some(front) = cl.replies.front() {
            let ready = match front {
                Slot::Ready(_) => true,
                Slot::Commit { seq, .. } => *seq <= commit,
                Slot::Forward { .. } => false,
            };
            if !ready {
                break;
            }
            match cl.replies.pop_front() {
                Some(Slot::Ready(t)) | Some(Slot::Commit { text: t, .. }) => {
                    c.conn.send_line(&t);
                    sent = true;
                }
                _ => break,
            }
        }
        if sent {
            if c.conn.out_pending() > OUTPUT_PAUSE {
                c.paused = true;
            }
            if was_idle {
                self.dirty.push(key);
            }
        }
    }

    /// Resolves a forwarded write's slot in its client's queue.
    pub(super) fn resolve_forward(&mut self, key: usize, conn_id: u64, fid: u64, slot: Slot) {
        let commit = self.commit;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.id != conn_id {
            return;
        }
        let Kind::Client(cl) = &mut c.kind else {
            return;
        };
        let waiting_seq = match &slot {
            Slot::Commit { seq, .. } if *seq > commit => Some(*seq),
            _ => None,
        };
        for s in cl.replies.iter_mut() {
            if matches!(s, Slot::Forward { fid: f, .. } if *f == fid) {
                *s = slot;
                break;
            }
        }
        if !cl.replies.iter().any(|s| matches!(s, Slot::Forward { .. })) {
            self.resume.push(key);
        }
        if let Some(seq) = waiting_seq {
            self.add_waiter(seq, key, conn_id);
        }
        self.drain_replies(key);
    }
}
