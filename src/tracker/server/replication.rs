//! Replication roles and the peer link: dialing, the cluster-key handshake, choosing the
//! leader, snapshots, entries, acks and commits, losing the other tracker.

use super::*;

impl Server {
    /// This tracker starts ordering writes on its own. `other` is the tracker whose sessions
    /// are now stale (it died), or none at start-up, when our own old sessions are.
    pub(super) fn become_solo_leader(&mut self, other: Option<u8>) {
        self.role = Role::Leader;
        self.syncing = false;
        let term = self.pos.term + 1;
        self.append(None, Op::Term { term, solo: true }, None);
        let stale = other.unwrap_or(self.cfg.me);
        let op = Op::Detach { tracker: stale };
        let _ = self.state.apply(None, &op);
        self.append(None, op, None);
        self.solo_from = Some(self.pos.seq);
        log::info!(
            "tracker {} leads alone (term {term}, log at {})",
            self.cfg.me,
            self.pos.seq
        );
        // Writes forwarded to a leader that is gone: order them here. Deduplication answers
        // those the old leader had already applied (and replicated to us).
        for (_, fwd) in std::mem::take(&mut self.forwards) {
            self.reproposed(fwd);
        }
    }

    pub(super) fn reproposed(&mut self, fwd: Forward) {
        // The client's queue holds a Forward slot for this write; replace it with the outcome.
        let Forward { client, origin, op } = fwd;
        if let Some(o) = origin {
            if let Some(reply) = self.state.dedup(&o).map(str::to_string) {
                if let Some((key, id, tag)) = client {
                    let seq = self.pos.seq;
                    self.resolve_forward_to(key, id, tag, Ok((seq, reply)));
                }
                return;
            }
        }
        match self.state.apply(origin, &op) {
            Ok(reply) => {
                let seq = self.append(origin, op.clone(), None);
                self.bind_session(&op, client);
                if let Some((key, id, tag)) = client {
                    self.resolve_forward_to(key, id, tag, Ok((seq, reply.words().to_string())));
                }
            }
            Err(r) => {
                if let Some((key, id, tag)) = client {
                    self.resolve_forward_to(key, id, tag, Err(r));
                }
            }
        }
    }

    pub(super) fn resolve_forward_to(
        &mut self,
        key: usize,
        id: u64,
        tag: u64,
        r: Result<(u64, String), Refusal>,
    ) {
        // Find the fid of this client's forward slot with this tag.
        let fid = match self.conns.get(key).map(|c| &c.kind) {
            Some(Kind::Client(cl)) => cl.replies.iter().find_map(|s| match s {
                Slot::Forward { fid, tag: t } if *t == tag => Some(*fid),
                _ => None,
            }),
            _ => None,
        };
        let Some(fid) = fid else {
            return;
        };
        let slot = match r {
            Ok((seq, reply)) => Slot::Commit {
                seq,
                text: proto::encode_ok(tag, &reply),
            },
            Err(e) => Slot::Ready(proto::encode_err(tag, e.code(), &e.message())),
        };
        self.resolve_forward(key, id, fid, slot);
    }

    pub(super) fn bind_session(&mut self, op: &Op, client: Option<(usize, u64, u64)>) {
        if let Op::Login { token, .. } | Op::Attach { token, .. } = op {
            match client {
                Some((key, id, _))
                    if self
                        .conns
                        .get(key)
                        .is_some_and(|c| c.id == id && !c.closing) =>
                {
                    if let Some(cl) = self.client(key) {
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

    pub(super) fn link_lost(&mut self, _now: Instant) {
        let other = self.other();
        self.follower_ack = 0;
        self.sent_ack = 0;
        self.sent_commit = 0;
        self.leader_commit = 0;
        if self.cfg.me == 2 {
            self.schedule_dial(Instant::now());
        }
        match self.role {
            Role::Leader => {
                log::warn!("lost tracker {other}; going on alone");
                let term = self.pos.term + 1;
                self.append(None, Op::Term { term, solo: true }, None);
                let op = Op::Detach { tracker: other };
                let _ = self.state.apply(None, &op);
                self.append(None, op, None);
                self.solo_from = Some(self.pos.seq);
            }
            Role::Follower if !self.syncing => {
                log::warn!("lost the leader, tracker {other}; taking over");
                self.become_solo_leader(Some(other));
            }
            _ => {
                self.role = Role::Waiting;
                self.syncing = false;
                log::warn!("lost tracker {other} before catching up; waiting for it");
            }
        }
    }

    // ----- the peer link -------------------------------------------------------------------

    pub(super) fn dial(&mut self, now: Instant) {
        self.dial_at = None;
        let addr = self.cfg.addrs[0];
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let kind = Kind::Peer(Peer {
                    phase: Phase::Dialing,
                    other: 1,
                    since: now,
                    snapshot: None,
                });
                match self.add_conn(stream, kind, Interest::READABLE | Interest::WRITABLE, now) {
                    Some(k) => self.link = Some(k),
                    None => self.schedule_dial(now),
                }
            }
            Err(e) => {
                log::debug!("cannot dial tracker 1 at {addr}: {e}");
                self.schedule_dial(now);
            }
        }
    }

    pub(super) fn schedule_dial(&mut self, now: Instant) {
        self.dial_at = Some(now + self.dial_backoff);
        self.dial_backoff = (self.dial_backoff * 2).min(DIAL_MAX);
    }

    pub(super) fn on_dialed(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.conn.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                log::debug!("cannot reach tracker 1: {e}");
                return self.drop_conn(key, now);
            }
        }
        match c.conn.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
            Err(e) => {
                log::debug!("cannot reach tracker 1: {e}");
                return self.drop_conn(key, now);
            }
        }
        let mine = link::nonce();
        if let Kind::Peer(p) = &mut c.kind {
            p.phase = Phase::AwaitChallenge { mine: mine.clone() };
            p.since = now;
        }
        c.last_heard = now;
        let me = self.cfg.me;
        self.send(
            key,
            &LinkMsg::Hello {
                tracker: me,
                nonce: mine,
            }
            .encode(),
        );
        self.mark_dirty(key);
    }

    /// `peer-hello` on a fresh client connection: the other tracker (or an impostor) is asking
    /// to become the peer link. It must answer the challenge with the cluster key.
    pub(super) fn peer_hello(&mut self, key: usize, line: &[u8], now: Instant) {
        let msg = std::str::from_utf8(line).ok().map(LinkMsg::decode);
        let fresh =
            matches!(self.client(key), Some(cl) if cl.session.is_none() && cl.instance.is_none());
        let other = self.other();
        let theirs = match msg {
            Some(Ok(LinkMsg::Hello { tracker, nonce }))
                if fresh && self.cfg.me == 1 && tracker == other && self.cfg.addrs.len() > 1 =>
            {
                nonce
            }
            _ => {
                self.reply_err(
                    key,
                    0,
                    ErrorCode::BadRequest,
                    "peer-link command on a client connection",
                );
                return;
            }
        };
        let mine = link::nonce();
        let mac = link::handshake_mac(&self.cfg.cluster_key, self.cfg.me, &theirs, &mine);
        if let Some(c) = self.conns.get_mut(key) {
            c.kind = Kind::Peer(Peer {
                phase: Phase::AwaitAuth {
                    mine: mine.clone(),
                    theirs,
                },
                other,
                since: now,
                snapshot: None,
            });
        }
        self.send(key, &LinkMsg::Challenge { nonce: mine, mac }.encode());
    }

    pub(super) fn handle_peer_line(&mut self, key: usize, line: &[u8], now: Instant) {
        let Ok(text) = std::str::from_utf8(line) else {
            log::warn!("peer link sent invalid UTF-8; dropping it");
            return self.drop_conn(key, now);
        };
        // Snapshot body lines are not link messages.
        let receiving = matches!(self.conns.get(key).map(|c| &c.kind), Some(Kind::Peer(p)) if p.snapshot.is_some());
        if receiving && !text.starts_with("snapshot-end ") {
            if let Some(Connection {
                kind:
                    Kind::Peer(Peer {
                        snapshot: Some((_, lines)),
                        ..
                    }),
                ..
            }) = self.conns.get_mut(key)
            {
                if lines.len() < MAX_SNAPSHOT_LINES {
                    lines.push(text.to_string());
                    return;
                }
            }
            log::warn!("snapshot from the leader is too large; dropping the link");
            return self.drop_conn(key, now);
        }
        let msg = match LinkMsg::decode(text) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("peer link: {e}; dropping it");
                return self.drop_conn(key, now);
            }
        };
        let Some(Connection {
            kind: Kind::Peer(peer),
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        let key_bytes = &self.cfg.cluster_key;
        match (&peer.phase, msg) {
            (Phase::AwaitChallenge { mine }, LinkMsg::Challenge { nonce, mac }) => {
                if !link::verify_mac(key_bytes, peer.other, mine, &nonce, &mac) {
                    log::error!(
                        "tracker {} failed the cluster-key check; check both use the same key file",
                        peer.other
                    );
                    return self.drop_conn(key, now);
                }
                let reply = link::handshake_mac(key_bytes, self.cfg.me, &nonce, mine);
                peer.phase = Phase::AwaitState;
                self.send(key, &LinkMsg::Auth { mac: reply }.encode());
                self.authenticated(key);
            }
            (Phase::AwaitAuth { mine, theirs }, LinkMsg::Auth { mac }) => {
                if !link::verify_mac(key_bytes, peer.other, mine, theirs, &mac) {
                    log::error!(
                        "a connection claiming to be tracker {} failed the cluster-key check",
                        peer.other
                    );
                    return self.drop_conn(key, now);
                }
                peer.phase = Phase::AwaitState;
                self.authenticated(key);
            }
            (Phase::AwaitState, LinkMsg::State { pos, digest }) => {
                self.on_peer_state(key, pos, digest)
            }
            (Phase::Live, msg) => self.on_link_msg(key, msg, now),
            (_, _) => {
                log::warn!("peer link: unexpected message during the handshake; dropping it");
                self.drop_conn(key, now);
            }
        }
    }

    /// The handshake succeeded: this connection is the peer link. Exchange log positions.
    pub(super) fn authenticated(&mut self, key: usize) {
        if let Some(old) = self.link.filter(|&k| k != key) {
            // The other tracker restarted before we noticed its old link die.
            self.drop_conn(old, Instant::now());
        }
        self.link = Some(key);
        self.dial_backoff = DIAL_MIN;
        if let Some(c) = self.conns.get_mut(key) {
            c.conn.input.set_limit(MAX_PEER_LINE);
            c.conn.keep_output_capacity(LINK_OUTPUT_KEEP);
        }
        let digest = self.state.digest();
        let pos = self.pos;
        self.announced = Some((pos, digest.clone()));
        self.send(key, &LinkMsg::State { pos, digest }.encode());
    }

    pub(super) fn on_peer_state(&mut self, key: usize, theirs: Position, their_digest: String) {
        let other = self.other();
        self.solo_at = None;
        let (announced, my_digest) = self.announced.take().unwrap_or_default();
        let mine = (announced.term, announced.seq);
        let i_lead = mine > (theirs.term, theirs.seq)
            || (mine == (theirs.term, theirs.seq) && self.cfg.me == 1);
        // Positions alone can coincide for different logs (two fresh trackers that each
        // served alone): the digest tells.
        let same =
            mine == (theirs.term, theirs.seq) && my_digest == their_digest && self.pos == announced;
        if let Some(Connection {
            kind: Kind::Peer(p),
            ..
        }) = self.conns.get_mut(key)
        {
            p.phase = Phase::Live;
        }
        self.last_ping = Instant::now();
        if i_lead {
            let was_waiting = self.role == Role::Waiting;
            // A waiting tracker that turns out to hold the longer log leads.
            self.role = Role::Leader;
            log::info!(
                "peer link up: tracker {} leads, tracker {other} follows",
                self.cfg.me
            );
            self.follower_ack = 0;
            if !same {
                let lines = self.state.snapshot_lines();
                let pos = self.pos;
                self.send(key, &LinkMsg::SnapshotBegin { pos }.encode());
                let count = lines.len();
                for l in lines {
                    self.send(key, &l);
                }
                self.send(key, &LinkMsg::SnapshotEnd { count }.encode());
            } else {
                self.follower_ack = self.pos.seq;
            }
            let term = self.pos.term + 1;
            self.append(None, Op::Term { term, solo: false }, None);
            let op = Op::Detach { tracker: other };
            let _ = self.state.apply(None, &op);
            self.append(None, op, None);
            if was_waiting {
                // Sessions from before this tracker's restart have no connection any more.
                let op = Op::Detach {
                    tracker: self.cfg.me,
                };
                let _ = self.state.apply(None, &op);
                self.append(None, op, None);
            }
        } else {
            log::info!(
                "peer link up: tracker {other} leads, tracker {} follows",
                self.cfg.me
            );
            if self.role == Role::Leader {
                // We served clients on a log the leader will overwrite: let them re-attach.
                if !same && self.solo_from.is_some_and(|from| self.pos.seq > from) {
                    log::error!(
                        "both trackers led alone (the link broke while both were running); \
                         tracker {other}'s longer log wins and replaces this tracker's writes \
                         since the break"
                    );
                }
                self.close_all_clients();
            }
            self.role = Role::Follower;
            self.syncing = !same;
            self.leader_commit = 0;
            self.sent_ack = 0;
            if !same {
                if let Some(Connection {
                    kind: Kind::Peer(p),
                    ..
                }) = self.conns.get_mut(key)
                {
                    p.snapshot = None; // armed by snapshot-begin
                }
            }
        }
    }

    pub(super) fn close_all_clients(&mut self) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.kind, Kind::Client(_)))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            if let Some(Kind::Client(cl)) = self.conns.get_mut(k).map(|c| &mut c.kind) {
                cl.session = None;
            }
            self.close(k);
        }
        self.waiters.clear();
    }

    pub(super) fn on_link_msg(&mut self, key: usize, msg: LinkMsg, now: Instant) {
        match msg {
            LinkMsg::Ping => self.send(key, &LinkMsg::Pong.encode()),
            LinkMsg::Pong => {}
            LinkMsg::SnapshotBegin { pos } if self.role == Role::Follower => {
                if let Some(Connection {
                    kind: Kind::Peer(p),
                    ..
                }) = self.conns.get_mut(key)
                {
                    p.snapshot = Some((pos, Vec::new()));
                    self.syncing = true;
                }
            }
            LinkMsg::SnapshotEnd { count } if self.role == Role::Follower => {
                let taken = match self.conns.get_mut(key) {
                    Some(Connection {
                        kind: Kind::Peer(p),
                        ..
                    }) => p.snapshot.take(),
                    _ => None,
                };
                let Some((pos, lines)) = taken else {
                    return self.drop_conn(key, now);
                };
                if lines.len() != count {
                    log::error!(
                        "snapshot from the leader has {} lines, expected {count}",
                        lines.len()
                    );
                    return self.drop_conn(key, now);
                }
                match State::from_snapshot_lines(lines.iter().map(String::as_str)) {
                    Ok(state) => {
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
                        self.commit = self.commit.min(pos.seq);
                        self.syncing = false;
                        self.sent_ack = 0;
                        log::info!("caught up with the leader by snapshot at {}", pos.seq);
                    }
                    Err(e) => {
                        log::error!("the leader's snapshot is invalid: {e}");
                        self.drop_conn(key, now);
                    }
                }
            }
            LinkMsg::Op { fid, entry } if self.role == Role::Follower && !self.syncing => {
                if entry.seq != self.pos.seq + 1 {
                    log::error!(
                        "leader sent entry {} after {}; resyncing",
                        entry.seq,
                        self.pos.seq
                    );
                    return self.drop_conn(key, now);
                }
                let result = self.state.apply(entry.origin, &entry.op);
                if let Op::Term { term, solo } = entry.op {
                    self.pos.term = term;
                    self.pos.solo = solo;
                }
                self.pos.term = self.pos.term.max(entry.term);
                self.pos.seq = entry.seq;
                self.journal.append(&entry);
                let seq = entry.seq;
                if let Some(fwd) = fid.and_then(|f| self.forwards.remove(&f).map(|w| (f, w))) {
                    let (fid, w) = fwd;
                    self.bind_session(&entry.op, w.client);
                    if let Some((ckey, id, tag)) = w.client {
                        let slot = match result {
                            Ok(reply) => Slot::Commit {
                                seq,
                                text: proto::encode_ok(tag, reply.words()),
                            },
                            Err(e) => Slot::Ready(proto::encode_err(tag, e.code(), &e.message())),
                        };
                        self.resolve_forward(ckey, id, fid, slot);
                    }
                }
            }
            LinkMsg::Commit { seq } if self.role == Role::Follower => {
                self.leader_commit = self.leader_commit.max(seq);
            }
            LinkMsg::FwdErr { fid, code, message } if self.role == Role::Follower => {
                if let Some(w) = self.forwards.remove(&fid) {
                    if let Some((ckey, id, tag)) = w.client {
                        self.resolve_forward(
                            ckey,
                            id,
                            fid,
                            Slot::Ready(proto::encode_err(tag, code, &message)),
                        );
                    }
                }
            }
            LinkMsg::FwdOk { fid, reply } if self.role == Role::Follower => {
                if let Some(w) = self.forwards.remove(&fid) {
                    if let Some((ckey, id, tag)) = w.client {
                        self.resolve_forward(
                            ckey,
                            id,
                            fid,
                            Slot::Ready(proto::encode_ok(tag, &reply)),
                        );
                    }
                }
            }
            LinkMsg::Ack { seq } if self.role == Role::Leader => {
                self.follower_ack = self.follower_ack.max(seq);
            }
            LinkMsg::Fwd { fid, origin, op } if self.role == Role::Leader => {
                self.on_forwarded(fid, origin, op);
            }
            other => {
                log::warn!(
                    "peer link: unexpected {:?} as {:?}; dropping it",
                    other.encode().split(' ').next(),
                    self.role
                );
                self.drop_conn(key, now);
            }
        }
    }

    /// The leader orders a write its follower forwarded.
    pub(super) fn on_forwarded(&mut self, fid: u64, origin: Option<Origin>, op: Op) {
        if let Some(o) = origin {
            if let Some(reply) = self.state.dedup(&o).map(str::to_string) {
                self.fwd_waiters.push_back((self.pos.seq, fid, reply));
                return;
            }
        }
        if matches!(op, Op::Term { .. } | Op::Detach { .. }) {
            self.send_link(&LinkMsg::FwdErr {
                fid,
                code: ErrorCode::BadRequest,
                message: "not a client operation".into(),
            });
            return;
        }
        match self.state.apply(origin, &op) {
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
