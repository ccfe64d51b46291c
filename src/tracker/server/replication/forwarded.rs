//! Writes forwarded between the trackers: the leader ordering a write its follower forwarded,
//! and a forwarded write proposed again after a failover, its client's queued place resolved
//! with the outcome.

use super::*;

/// The outcome of a forwarded write at the leader, as its client's reply.
/// `words`: the `ok` reply's words (a fresh write's `WriteReply::words`, or a deduplicated one).
pub(super) fn forward_outcome(tag: u64, seq: u64, result: Result<&str, Refusal>) -> QueuedReply {
    match result {
        Ok(words) => QueuedReply::AfterCommit {
            seq,
            text: proto::encode_ok(tag, words),
        },
        Err(e) => QueuedReply::Ready(proto::encode_err(tag, e.code(), &e.message())),
    }
}

impl Server {
    pub(super) fn reproposed(&mut self, fwd: ForwardedWrite) {
        // The client's queue holds a Forwarded place for this write; replace it with the
        // outcome.
        let ForwardedWrite { to, origin, op } = fwd;
        if let Some(o) = origin {
            if let Some(reply) = self.state.dedup(&o).map(str::to_string) {
                if let Some(to) = to {
                    let seq = self.pos.seq;
                    self.resolve_forward_to(to, forward_outcome(to.tag, seq, Ok(&reply)));
                }
                return;
            }
        }
        match self.apply_op(origin, &op) {
            Ok(reply) => {
                let seq = self.append(origin, op.clone(), None);
                self.bind_session(&op, to);
                let words = self.reply_words(&op, to, reply.words());
                if let Some(to) = to {
                    self.resolve_forward_to(to, forward_outcome(to.tag, seq, Ok(&words)));
                }
            }
            Err(r) => {
                if let Some(to) = to {
                    self.resolve_forward_to(to, forward_outcome(to.tag, 0, Err(r)));
                }
            }
        }
    }

    /// Resolves the forwarded write of `to` (found by its tag) with `outcome`.
    pub(super) fn resolve_forward_to(&mut self, to: ReplyTo, outcome: QueuedReply) {
        let fid = match self.conns.get(to.key).map(|c| &c.kind) {
            Some(ConnRole::Client(cl)) => cl.replies.forwarded_tag(to.tag),
            _ => None,
        };
        if let Some(fid) = fid {
            self.resolve_forward(to, fid, outcome);
        }
    }

    /// The leader orders a write its follower forwarded.
    pub(super) fn on_forwarded(&mut self, fid: u64, origin: Option<Origin>, op: Op) {
        if let Some(o) = origin {
            if let Some(reply) = self.state.dedup(&o).map(str::to_string) {
                let seq = self.pos.seq;
                self.repl.fwd_oks.push(HeldFwdOk { seq, fid, reply });
                return;
            }
        }
        if matches!(op, Op::Term { .. } | Op::Detach { .. } | Op::Limits(_)) {
            self.send_link(&LinkMsg::FwdErr {
                fid,
                code: ErrorCode::BadRequest,
                message: "not a client operation".into(),
            });
            return;
        }
        match self.apply_op(origin, &op) {
            Ok(_) => {
                self.append(origin, op, Some(fid));
            }
            Err(r) => self.send_link(&LinkMsg::FwdErr {
                fid,
                code: r.code(),
                message: r.message(),
            }),
        }
    }
}
