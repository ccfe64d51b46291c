//! The peer link: dialing, taking over a channel keyed by the cluster key, exchanging positions, snapshots, entries,
//! acks and commits, and what losing the other tracker means. The decisions (who leads, which
//! role follows, what to tell the other side) are `Replica`'s (replica.rs); this file does the
//! I/O they call for on the link's connection, the journal and the state.

use super::ordering::{ForwardedWrite, HeldFwdOk, QueuedReply, ReplyTo};
use super::replica::{AfterLinkClosed, Announced, Role};
use super::{ConnRole, Connection, Server};
use crate::net::framer::MAX_PEER_LINE;
use crate::net::secure::Conversation;
use crate::protocol::tracker::{self as proto, ErrorCode};
use crate::tracker::journal::Position;
use crate::tracker::link::{self, LinkMsg};
use crate::tracker::op::{Op, Origin};
use crate::tracker::state::{Refusal, State};
use mio::net::TcpStream;
use mio::Interest;
use std::io;
use std::time::Instant;

mod forwarded;

use forwarded::forward_outcome;

/// Output buffer the peer link keeps between turns: a turn of pipelined writes is ~100 KB of
/// `op` lines, and regrowing that from nothing every turn showed up in profiles.
const LINK_OUTPUT_KEEP: usize = 4 << 20;
/// Largest staged snapshot accepted from the leader, in lines (a bound against a runaway link).
const MAX_SNAPSHOT_LINES: usize = 50_000_000;

/// Where a peer-link connection is in its handshake.
pub(super) enum LinkPhase {
    /// Tracker 2's outgoing connect in progress.
    Dialing,
    /// Connected; the secure handshake (XXpsk0, the cluster key) is under way.
    Handshaking,
    /// Authenticated by the handshake; waiting for the other's `state`.
    AwaitState,
    Live,
}

/// Snapshot lines being received from the leader, and the log position they stand for.
pub(super) struct IncomingSnapshot {
    pos: Position,
    lines: Vec<String>,
}

/// A connection to (or claiming to be) the other tracker.
pub(super) struct LinkConn {
    pub phase: LinkPhase,
    /// When the current phase began, for the handshake timeout.
    pub since: Instant,
    snapshot: Option<IncomingSnapshot>,
}

impl LinkConn {
    pub fn dialing(now: Instant) -> LinkConn {
        LinkConn {
            phase: LinkPhase::Dialing,
            since: now,
            snapshot: None,
        }
    }
}

impl Server {
    /// This tracker starts ordering writes on its own. `other` is the tracker whose sessions
    /// are now stale (it died), or none at start-up, when our own old sessions are.
    pub(super) fn become_solo_leader(&mut self, other: Option<u8>) {
        self.repl.lead_alone();
        self.open_solo_term(other.unwrap_or(self.repl.me()));
        log::info!(
            "tracker {} leads alone (term {}, log at {})",
            self.repl.me(),
            self.pos.term,
            self.pos.seq
        );
        // Writes forwarded to a leader that is gone: order them here. Deduplication answers
        // those the old leader had already applied (and replicated to us).
        let forwards: Vec<ForwardedWrite> = self.repl.forwards.take_all().collect();
        for fwd in forwards {
            self.reproposed(fwd);
        }
        // The writes of a lost split still to be proposed again are applied here now.
        self.replay_step();
    }

    /// A new solo term, and the sessions held at tracker `stale` orphaned.
    fn open_solo_term(&mut self, stale: u8) {
        let term = self.pos.term + 1;
        self.append(None, Op::Term { term, solo: true }, None);
        self.detach(stale);
        self.repl.solo_term_began(self.pos.seq);
    }

    /// Sessions attached at tracker `tracker` lose their connection (orphaned, still valid
    /// for `attach`).
    fn detach(&mut self, tracker: u8) {
        let op = Op::Detach { tracker };
        let _ = self.state.apply(None, &op);
        self.append(None, op, None);
    }

    pub(super) fn bind_session(&mut self, op: &Op, to: Option<ReplyTo>) {
        if let Op::Login { token, .. } | Op::Attach { token, .. } = op {
            match to {
                Some(to)
                    if self
                        .conns
                        .get(to.key)
                        .is_some_and(|c| c.id == to.conn_id && !c.closing) =>
                {
                    if let Some(cl) = self.client(to.key) {
                        cl.session = Some(token.clone());
                    }
                }
                // The client left before its session started: end it.
                Some(_) => self.propose(
                    None,
                    Op::Logout {
                        token: token.clone(),
                    },
                    None,
                ),
                None => {}
            }
        }
    }

    /// The link's connection `key` is gone: act on what the replica decides.
    pub(super) fn link_closed(&mut self, now: Instant) {
        self.apply_received();
        let other = self.repl.other();
        self.replay_link_lost();
        match self.repl.link_closed(now) {
            AfterLinkClosed::GoOnAlone => {
                log::warn!("lost tracker {other}; going on alone");
                self.open_solo_term(other);
            }
            AfterLinkClosed::TakeOver => {
                log::warn!("lost the leader, tracker {other}; taking over");
                self.become_solo_leader(Some(other));
            }
            AfterLinkClosed::Wait => {
                log::warn!("lost tracker {other} before catching up; waiting for it");
            }
            // Fresh, and tracker 1 is not running: nothing to wait for.
            AfterLinkClosed::ServeAloneNow => self.become_solo_leader(None),
            AfterLinkClosed::Nothing => {}
        }
    }

    // ----- the handshake -------------------------------------------------------------------

    pub(super) fn dial(&mut self, now: Instant) {
        let addr = self.cfg.addrs[0];
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let kind = ConnRole::Link(LinkConn::dialing(now));
                match self.add_conn(stream, kind, Interest::READABLE | Interest::WRITABLE, now) {
                    Some(k) => self.repl.link_dialed(k),
                    None => self.repl.schedule_dial(now),
                }
            }
            Err(e) => {
                log::debug!("cannot dial tracker 1 at {addr}: {e}");
                self.repl.schedule_dial(now);
            }
        }
    }

    pub(super) fn on_dialed(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.conn.stream.socket().take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                log::debug!("cannot reach tracker 1: {e}");
                return self.drop_conn(key, now);
            }
        }
        match c.conn.stream.socket().peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
            Err(e) => {
                log::debug!("cannot reach tracker 1: {e}");
                return self.drop_conn(key, now);
            }
        }
        if let ConnRole::Link(p) = &mut c.kind {
            p.phase = LinkPhase::Handshaking;
            p.since = now;
        }
        c.last_heard = now;
        // The first handshake message is in the channel's output.
        self.mark_dirty(key);
    }

    /// `peer-hello` (the old HMAC handshake) on a client connection: the link is a separate
    /// secure channel keyed by the cluster key now, so this is never a way in.
    pub(super) fn peer_hello(&mut self, key: usize, _line: &[u8], _now: Instant) {
        self.reply_err(
            key,
            0,
            ErrorCode::BadRequest,
            "peer-link command on a client connection",
        );
    }

    /// Says why the peer link (or a connection trying to be it) failed. A wrong cluster key
    /// shows only as a handshake that fails (tracker 1) or a connection closed on it (tracker
    /// 2); an altered or injected record after the handshake fails authentication.
    pub(super) fn note_link_failure(&self, key: usize, why: &str) {
        let Some(c) = self.conns.get(key) else {
            return;
        };
        if c.conn.stream.conversation() != Conversation::TrackerTracker {
            return;
        }
        if !c.conn.stream.is_established() {
            log::error!(
                "the peer link failed the cluster-key check in its secure handshake ({why}); \
                 check both trackers use the same key file"
            );
        } else {
            log::warn!("peer link: {why}; dropping it");
        }
    }

    /// A connection's secure handshake just ended: a client's channel needs nothing more; one
    /// made with the cluster key (tracker 2 dialing us, or our own dial) is the peer link.
    pub(super) fn on_channel_established(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.conn.stream.conversation() != Conversation::TrackerTracker {
            return;
        }
        let other = self.repl.other();
        if let ConnRole::Client(_) = c.kind {
            c.kind = ConnRole::Link(LinkConn {
                phase: LinkPhase::Handshaking,
                since: now,
                snapshot: None,
            });
        }
        if let Some(fp) = c.conn.stream.remote_fingerprint() {
            log::info!("tracker {other} proved the cluster key; its key is {fp}");
        }
        if let ConnRole::Link(p) = &mut c.kind {
            p.phase = LinkPhase::AwaitState;
        }
        self.authenticated(key);
    }

    pub(super) fn handle_peer_line(&mut self, key: usize, line: &[u8], now: Instant) {
        let Ok(text) = std::str::from_utf8(line) else {
            log::warn!("peer link sent invalid UTF-8; dropping it");
            return self.drop_conn(key, now);
        };
        // Snapshot body lines are not link messages.
        if let Some(Connection {
            kind:
                ConnRole::Link(LinkConn {
                    snapshot: Some(snap),
                    ..
                }),
            ..
        }) = self.conns.get_mut(key)
        {
            if !text.starts_with("snapshot-end ") {
                if snap.lines.len() < MAX_SNAPSHOT_LINES {
                    snap.lines.push(text.to_string());
                    return;
                }
                log::warn!("snapshot from the leader is too large; dropping the link");
                return self.drop_conn(key, now);
            }
        }
        let msg = match LinkMsg::decode(text) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("peer link: {e}; dropping it");
                return self.drop_conn(key, now);
            }
        };
        let Some(Connection {
            kind: ConnRole::Link(peer),
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        match (&peer.phase, msg) {
            (LinkPhase::AwaitState, LinkMsg::State { pos, digest }) => {
                self.on_peer_state(key, pos, digest)
            }
            (LinkPhase::Live, msg) => self.on_link_msg(key, msg, text, now),
            (_, _) => {
                log::warn!("peer link: unexpected message during the handshake; dropping it");
                self.drop_conn(key, now);
            }
        }
    }

    /// The handshake succeeded: this connection is the peer link. Exchange log positions.
    fn authenticated(&mut self, key: usize) {
        if let Some(old) = self.repl.link_key().filter(|&k| k != key) {
            // The other tracker restarted before we noticed its old link die.
            self.drop_conn(old, Instant::now());
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.conn.input.set_limit(MAX_PEER_LINE);
            c.conn.keep_output_capacity(LINK_OUTPUT_KEEP);
        }
        let digest = self.state.digest();
        let pos = self.pos;
        self.repl.link_authenticated(
            key,
            Announced {
                pos,
                digest: digest.clone(),
            },
        );
        self.send(key, &LinkMsg::State { pos, digest }.encode());
    }

    fn on_peer_state(&mut self, key: usize, theirs: Position, their_digest: String) {
        let other = self.repl.other();
        let me = self.repl.me();
        if let Some(Connection {
            kind: ConnRole::Link(p),
            ..
        }) = self.conns.get_mut(key)
        {
            p.phase = LinkPhase::Live;
        }
        let v = self
            .repl
            .link_up(theirs, &their_digest, self.pos, Instant::now());
        if v.lead {
            log::info!("peer link up: tracker {me} leads, tracker {other} follows");
            if !v.same {
                let lines = self.state.snapshot_lines();
                let pos = self.pos;
                self.send(key, &LinkMsg::SnapshotBegin { pos }.encode());
                let count = lines.len();
                for l in lines {
                    self.send(key, &l);
                }
                self.send(key, &LinkMsg::SnapshotEnd { count }.encode());
            }
            let term = self.pos.term + 1;
            self.append(None, Op::Term { term, solo: false }, None);
            self.detach(other);
            if v.was == Role::Waiting {
                // Sessions from before this tracker's restart have no connection any more.
                self.detach(me);
            }
        } else {
            log::info!("peer link up: tracker {other} leads, tracker {me} follows");
            if v.loses_solo_writes {
                log::warn!(
                    "both trackers led alone (the link broke while both were running); \
                     tracker {other}'s log wins, and the writes this tracker acknowledged \
                     alone are proposed again on it"
                );
            }
            if v.was == Role::Leader {
                // We served clients on a log the leader will overwrite: let them re-attach.
                self.close_all_clients();
            }
            if !v.same {
                if let Some(Connection {
                    kind: ConnRole::Link(p),
                    ..
                }) = self.conns.get_mut(key)
                {
                    p.snapshot = None; // armed by snapshot-begin
                }
            } else {
                // Writes of an unfinished heal (from the replay file) go on at once.
                self.replay_step();
            }
        }
    }

    fn close_all_clients(&mut self) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.kind, ConnRole::Client(_)))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            if let Some(ConnRole::Client(cl)) = self.conns.get_mut(k).map(|c| &mut c.kind) {
                cl.session = None;
            }
            self.close(k);
        }
        self.repl.waiters.clear();
    }

    // ----- a live link ---------------------------------------------------------------------

    /// `text` is the message as received (an `op`'s entry is journaled as the leader wrote it).
    fn on_link_msg(&mut self, key: usize, msg: LinkMsg, text: &str, now: Instant) {
        if !matches!(msg, LinkMsg::Op { .. }) {
            // Everything else acts on the state the entries before it made.
            self.apply_received();
        }
        match msg {
            LinkMsg::Ping => self.send(key, &LinkMsg::Pong.encode()),
            LinkMsg::Pong => {}
            LinkMsg::SnapshotBegin { pos } if self.repl.following() => {
                if let Some(Connection {
                    kind: ConnRole::Link(p),
                    ..
                }) = self.conns.get_mut(key)
                {
                    p.snapshot = Some(IncomingSnapshot {
                        pos,
                        lines: Vec::new(),
                    });
                    self.repl.snapshot_begins();
                }
            }
            LinkMsg::SnapshotEnd { count } if self.repl.following() => {
                let taken = match self.conns.get_mut(key) {
                    Some(Connection {
                        kind: ConnRole::Link(p),
                        ..
                    }) => p.snapshot.take(),
                    _ => None,
                };
                let Some(IncomingSnapshot { pos, lines }) = taken else {
                    return self.drop_conn(key, now);
                };
                if lines.len() != count {
                    log::error!(
                        "snapshot from the leader has {} lines, expected {count}",
                        lines.len()
                    );
                    return self.drop_conn(key, now);
                }
                self.install_snapshot(key, pos, &lines, now);
            }
            LinkMsg::Op { fid, entry } if self.repl.role() == Role::Follower => {
                if entry.seq != self.pos.seq + 1 {
                    log::error!(
                        "leader sent entry {} after {}; resyncing",
                        entry.seq,
                        self.pos.seq
                    );
                    return self.drop_conn(key, now);
                }
                if let Op::Term { term, solo } = entry.op {
                    self.pos.term = term;
                    self.pos.solo = solo;
                }
                self.pos.term = self.pos.term.max(entry.term);
                self.pos.seq = entry.seq;
                // The leader's own journal line, not decoded and encoded again.
                match link::op_entry_text(text) {
                    Some(line) => self.journal.append_encoded(entry.seq, line),
                    None => {
                        self.journal.append(&entry);
                    }
                }
                // Applied after this turn's fsync and ack (`apply_received`): the leader waits
                // for the ack, not for the apply.
                self.repl.unapplied.push((fid, entry));
            }
            LinkMsg::Commit { seq } if self.repl.following() => self.repl.leader_committed(seq),
            LinkMsg::FwdErr { fid, code, message } if self.repl.following() => {
                self.replay_answered(fid, Some(&message));
                if let Some(to) = self.repl.forwards.remove(fid).and_then(|w| w.to) {
                    let outcome = QueuedReply::Ready(proto::encode_err(to.tag, code, &message));
                    self.resolve_forward(to, fid, outcome);
                }
            }
            LinkMsg::FwdOk { fid, reply } if self.repl.following() => {
                self.replay_answered(fid, None);
                if let Some(to) = self.repl.forwards.remove(fid).and_then(|w| w.to) {
                    let outcome = QueuedReply::Ready(proto::encode_ok(to.tag, &reply));
                    self.resolve_forward(to, fid, outcome);
                }
            }
            LinkMsg::Ack { seq } if self.repl.role() == Role::Leader => self.repl.acked(seq),
            LinkMsg::Fwd { fid, origin, op } if self.repl.role() == Role::Leader => {
                self.on_forwarded(fid, origin, op);
            }
            other => {
                log::warn!(
                    "peer link: unexpected {:?} as {:?}; dropping it",
                    other.encode().split(' ').next(),
                    self.repl.role()
                );
                self.drop_conn(key, now);
            }
        }
    }

    /// Applies the entries received from the leader (already journaled) to the state, and
    /// answers the forwarded writes among them.
    pub(super) fn apply_received(&mut self) {
        for (fid, entry) in std::mem::take(&mut self.repl.unapplied) {
            // `apply_op`: the state's `apply` plus what a login's takeover does to the old
            // session's connection at this tracker.
            let result = self.apply_op(entry.origin, &entry.op);
            if let Some(f) = fid {
                self.replay_answered(f, None);
            }
            let Some((fid, w)) = fid.and_then(|f| self.repl.forwards.remove(f).map(|w| (f, w)))
            else {
                continue;
            };
            self.bind_session(&entry.op, w.to);
            if let Some(to) = w.to {
                let words = match &result {
                    Ok(r) => Ok(self.reply_words(&entry.op, w.to, r.words())),
                    Err(e) => Err(e.clone()),
                };
                let words = words.as_deref().map_err(Clone::clone);
                let outcome = forward_outcome(to.tag, entry.seq, words);
                self.resolve_forward(to, fid, outcome);
            }
        }
    }

    /// The leader's snapshot arrived whole: make it this tracker's state, durably.
    fn install_snapshot(&mut self, key: usize, pos: Position, lines: &[String], now: Instant) {
        match State::from_snapshot_lines(lines.iter().map(String::as_str)) {
            Ok(state) => {
                // What this tracker acknowledged alone is in the journal the snapshot is about
                // to replace: keep it first.
                if let Err(e) = self.keep_unshared_writes() {
                    log::error!("{e}; stopping rather than lose them");
                    self.shutdown = true;
                    return;
                }
                if let Err(e) = self
                    .journal
                    .write_snapshot(lines.iter().map(String::as_str), pos)
                {
                    log::error!("cannot store the leader's snapshot: {e}; stopping");
                    self.shutdown = true;
                    return;
                }
                self.state = state;
                self.pos = pos;
                self.repl.snapshot_installed(pos.seq);
                log::info!("caught up with the leader by snapshot at {}", pos.seq);
                self.replay_step();
            }
            Err(e) => {
                log::error!("the leader's snapshot is invalid: {e}");
                self.drop_conn(key, now);
            }
        }
    }
}
