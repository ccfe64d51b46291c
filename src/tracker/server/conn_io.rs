//! A connection's bytes: reads framed into lines and handed to the client or link
//! handlers, and queued output flushed (the dirty set at the end of a turn).

use super::*;

impl Server {
    pub(super) fn on_readable(&mut self, key: usize, now: Instant, short_read_drains: bool) {
        self.read_conn(key, now, short_read_drains, false);
    }

    /// This turn's share of the handshake queue (`limits::HandshakeQueue`), read now.
    pub(super) fn serve_handshakes(&mut self, now: Instant) {
        let conns = &mut self.conns;
        let turn = self.handshakes.take_turn(|key, id| {
            conns.get_mut(key).is_some_and(|c| {
                let live = c.id == id && !c.closing;
                if live {
                    c.handshake_queued = false;
                }
                live
            })
        });
        for (key, _) in turn {
            self.read_conn(key, now, false, true);
        }
        let waiting = self.handshakes.len();
        if waiting > 0 && !self.handshakes_waited {
            log::debug!(
                "{waiting} handshakes wait for the next turn ({} a turn)",
                limits::HANDSHAKES_PER_TURN
            );
        }
        self.handshakes_waited = waiting > 0;
    }

    /// Reads a connection; one in its handshake only on its turn from the handshake queue.
    fn read_conn(
        &mut self,
        key: usize,
        now: Instant,
        short_read_drains: bool,
        handshake_turn: bool,
    ) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.closing || c.paused || c.has_deferred() {
                return;
            }
            if !c.has_turn_left(self.turn) {
                self.defer_to_next_turn(key);
                return;
            }
            // A connection still in its handshake waits its turn in the handshake queue
            // (`serve_handshakes`, after the established clients' events): each message costs
            // key agreement, and a storm of newcomers must not hold up those already served.
            if !c.established && !matches!(c.kind, ConnRole::Link(_)) && !handshake_turn {
                if !c.handshake_queued {
                    c.handshake_queued = true;
                    let id = c.id;
                    self.handshakes.push(key, id);
                }
                return;
            }
            let status = match c.conn.fill(short_read_drains) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("connection {key}: read error: {e}");
                    self.note_link_failure(key, &e.to_string());
                    self.drop_conn(key, now);
                    return;
                }
            };
            c.last_heard = now;
            if c.conn.stream.output_pending() > 0 {
                // A handshake message the socket did not take at once.
                self.dirty.push(key);
            }
            if !c.established && c.conn.stream.is_established() {
                c.established = true;
                self.on_channel_established(key, now);
            }
            self.handle_lines(key, now);
            if self.conns.get(key).is_some_and(Connection::has_deferred) {
                return; // resumed when its forwarded writes come back
            }
            match status {
                ReadStatus::Drained => return,
                ReadStatus::Full => continue,
                ReadStatus::Closed => {
                    self.note_link_failure(key, "the other side closed the connection");
                    self.drop_conn(key, now);
                    return;
                }
            }
        }
    }

    pub(super) fn handle_lines(&mut self, key: usize, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.closing || c.paused {
                return;
            }
            if !c.has_turn_left(self.turn) {
                self.defer_to_next_turn(key);
                return;
            }
            let deferred = match &mut c.kind {
                ConnRole::Client(cl) => cl.deferred.take(),
                ConnRole::Link(_) => None,
            };
            let line = match deferred {
                Some(l) => l,
                None => match c.conn.input.next_line() {
                    Frame::Line(l) => l.to_vec(),
                    Frame::NeedMore => {
                        c.conn.input.compact();
                        return;
                    }
                    Frame::TooLong => {
                        let limit = if matches!(c.kind, ConnRole::Link(_)) {
                            MAX_PEER_LINE
                        } else {
                            MAX_LINE
                        };
                        let msg = proto::encode_err(
                            0,
                            ErrorCode::LineTooLong,
                            &format!("a line is longer than {limit} bytes"),
                        );
                        self.send(key, &msg);
                        self.drop_conn(key, now);
                        return;
                    }
                },
            };
            // While a client's forwarded write is away, only writes that cannot depend on it
            // go ahead; anything else waits, so that what a client asks next sees what it
            // wrote (a pipelined `create_user` then `login` works at the follower too).
            if !self.may_go_ahead(key, &line) {
                if let Some(ConnRole::Client(cl)) = self.conns.get_mut(key).map(|c| &mut c.kind) {
                    cl.deferred = Some(line);
                }
                return;
            }
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            let is_peer = matches!(c.kind, ConnRole::Link(_));
            if !is_peer {
                c.budget.spend(self.turn, line.len() + 1);
            }
            if is_peer {
                self.handle_peer_line(key, &line, now);
            } else {
                self.handle_client_line(key, &line, now);
            }
        }
    }

    /// Sends the output of every connection that has some.
    pub(super) fn flush_dirty(&mut self) {
        // Flushing can resume a paused reader, whose replies dirty more connections.
        while !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for k in dirty {
                self.flush_conn(k);
            }
        }
    }

    pub(super) fn flush_conn(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(&c.kind, ConnRole::Link(p) if matches!(p.phase, LinkPhase::Dialing)) {
            return;
        }
        let done = match c.conn.flush() {
            Ok(d) => d,
            Err(e) => {
                log::debug!("connection {key}: write error: {e}");
                let now = Instant::now();
                self.drop_conn(key, now);
                return;
            }
        };
        let is_link = matches!(c.kind, ConnRole::Link(_));
        if is_link && c.conn.out_pending() > LINK_OUTPUT_CAP {
            log::warn!("the other tracker does not read the link; dropping it");
            self.drop_conn(key, Instant::now());
            return;
        }
        if done == c.writable {
            let interest = if done {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.conn.stream, Token(key), interest)
                .is_ok()
            {
                c.writable = !done;
            }
        }
        if !is_link {
            self.check_output(key);
        }
    }
}
