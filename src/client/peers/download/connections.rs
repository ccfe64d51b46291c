//! A download's connection handling: sources added and dialed, connections driven and
//! closed, `want`/`watch` asked with the freshest ticket, and `get`s pipelined into each live
//! connection. The piece bookkeeping (verification, completion, failure) stays in the parent.

use super::*;

impl Download {
    /// Peers from the tracker, applied at the next tick.
    pub fn queue_peers(&mut self, infos: Vec<PeerInfo>) {
        if self.is_active() {
            self.new_peers.extend(infos);
        }
    }

    /// New or refreshed sources. A known user at a new address is reconnected there.
    pub(super) fn add_peers(&mut self, ctx: &mut Ctx) {
        let infos = std::mem::take(&mut self.new_peers);
        for info in infos {
            match self.peers.get_mut(&info.user) {
                Some(p) if p.banned => {}
                Some(p) if p.addr != info.addr || p.key != info.key => {
                    p.addr = info.addr;
                    p.ticket = info.ticket;
                    p.key = info.key.clone();
                    if let Some(key) = p.conn {
                        self.close(ctx, key, "address changed");
                    }
                    // After the close, which delays reconnects: the new address is tried now.
                    if let Some(p) = self.peers.get_mut(&info.user) {
                        p.retry_at = ctx.now;
                    }
                }
                Some(p) => {
                    // A fresh answer from the tracker is a reason to try again now.
                    p.retry_at = p.retry_at.min(ctx.now);
                    if info.ticket.map(|t| t.expiry) > p.ticket.map(|t| t.expiry) {
                        p.ticket = info.ticket;
                    }
                }
                None => {
                    self.peers.insert(
                        info.user.clone(),
                        Source {
                            addr: info.addr,
                            key: info.key.clone(),
                            conn: None,
                            retry_at: ctx.now,
                            bad_pieces: 0,
                            banned: false,
                            failed: HashSet::new(),
                            pieces: 0,
                            ticket: info.ticket,
                        },
                    );
                }
            }
        }
    }

    pub(super) fn connect_due(&mut self, ctx: &mut Ctx) {
        let due: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.banned && p.conn.is_none() && p.retry_at <= ctx.now)
            .map(|(u, _)| u.clone())
            .collect();
        for user in due {
            self.connect(ctx, user);
        }
    }

    pub(super) fn connect(&mut self, ctx: &mut Ctx, user: String) {
        let Some(peer) = self.peers.get_mut(&user) else {
            return;
        };
        let entry = ctx.slots.vacant_entry();
        let key = entry.key();
        let token = Token(TOKEN_BASE + key);
        let Some(expected) = crate::pieces::from_hex(&peer.key).and_then(|k| k.try_into().ok())
        else {
            log::debug!(
                "download {}: {user} has no valid key; not connecting",
                self.id
            );
            peer.retry_at = ctx.now + RECONNECT_DELAY;
            return;
        };
        match FetchConn::connect(
            ctx.registry,
            token,
            user.clone(),
            peer.addr,
            self.size,
            ctx.now + CONNECT_TIMEOUT,
            super::super::fetch::SeederKeys {
                ours: ctx.identity,
                expected,
            },
        ) {
            Ok(conn) => {
                entry.insert(Socket::Fetch(self.id));
                peer.conn = Some(key);
                self.conns.insert(key, conn);
            }
            Err(e) => {
                log::debug!(
                    "download {}: cannot connect to {user} at {}: {e}",
                    self.id,
                    peer.addr
                );
                peer.retry_at = ctx.now + RECONNECT_DELAY;
            }
        }
    }

    /// Closes a connection: its pieces go back to the queue, its pieces leave availability.
    pub(super) fn close(&mut self, ctx: &mut Ctx, key: PeerKey, why: &str) {
        if let Some(conn) = self.conns.remove(&key) {
            self.drop_conn(ctx, key, conn, why);
        }
    }

    pub(super) fn drop_conn(
        &mut self,
        ctx: &mut Ctx,
        key: PeerKey,
        mut conn: FetchConn,
        why: &str,
    ) {
        log::debug!(
            "download {}: closing connection to {} ({why})",
            self.id,
            conn.user
        );
        conn.deregister(ctx.registry);
        ctx.slots.try_remove(key);
        if !self.table.release_peer(key).is_empty() {
            self.dirty = true;
        }
        if let Some(have) = &conn.have {
            self.avail.remove_set(have);
        }
        if let Some(p) = self.peers.get_mut(&conn.user) {
            if p.conn == Some(key) {
                p.conn = None;
                p.retry_at = ctx.now + RECONNECT_DELAY;
            }
        }
    }

    /// Readiness for one of this download's connections.
    pub fn on_event(&mut self, ctx: &mut Ctx, key: PeerKey, event: &Event) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return; // closed earlier in this batch; the slot may belong to a newer connection
        };
        match self.drive(ctx, key, &mut conn, event) {
            Ok(()) if self.state == DownloadState::Downloading => {
                self.conns.insert(key, conn);
            }
            Ok(()) => self.drop_conn(ctx, key, conn, "download over"),
            Err(why) => self.drop_conn(ctx, key, conn, &why),
        }
        self.after_io(ctx);
    }

    pub(super) fn drive(
        &mut self,
        ctx: &mut Ctx,
        key: PeerKey,
        conn: &mut FetchConn,
        event: &Event,
    ) -> Result<(), String> {
        let token = Token(TOKEN_BASE + key);
        if conn.state == ConnState::Connecting {
            if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                return Ok(());
            }
            match conn.finish_connect() {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    self.ask(ctx, conn, true);
                    conn.next_want = ctx.now + HAVE_REFRESH;
                }
                Err(e) => return Err(format!("connect failed: {e}")),
            }
        }
        loop {
            let incoming = conn
                .read_next(ctx.now + PIECE_TIMEOUT)
                .map_err(|e| format!("{e}"))?;
            match incoming {
                Incoming::Blocked => break,
                Incoming::Closed => return Err("peer closed the connection".into()),
                Incoming::Have(set) => {
                    let first = conn.have.is_none();
                    if let Some(old) = conn.have.replace(set) {
                        self.avail.remove_set(&old);
                    }
                    if let Some(new) = &conn.have {
                        self.avail.add_set(new);
                    }
                    conn.next_want = ctx.now + HAVE_REFRESH;
                    if first && conn.watched {
                        // What this download had before the peer watched it (a resumed
                        // `.part`, pieces from others): a super-seeder offers none of those.
                        let had = (0..self.table.len()).filter(|&i| self.table.is_have(i));
                        for r in ranges_lines(had) {
                            conn.notice(&Request::Has(r));
                        }
                    }
                }
                Incoming::Has(set) => {
                    let Some(have) = conn.have.as_mut() else {
                        return Err("has before have".into());
                    };
                    if self.avail.announced(have, &set) > 0 {
                        self.dirty = true;
                    }
                }
                Incoming::Piece { index, len } => {
                    self.on_piece(ctx, key, conn, index, len)?;
                    // The next request goes now, not once the socket is drained: the seeder
                    // works on it while the pieces already in our socket are hashed and written.
                    if self.fill(ctx, key, conn) > 0 {
                        conn.flush(ctx.registry, token)
                            .map_err(|e| format!("{e}"))?;
                    }
                }
                Incoming::Refused { req, reason } => {
                    log::debug!(
                        "download {}: {} refused {req:?}: {reason}",
                        self.id,
                        conn.user
                    );
                    match req {
                        // A peer that does not know `watch`: ask it `want`, now and then.
                        Awaited::Watch if reason.starts_with(BAD_REQUEST) => {
                            self.ask(ctx, conn, false);
                        }
                        Awaited::Want | Awaited::Watch => {
                            return Err(format!("peer refused: {reason}"))
                        }
                        Awaited::Get(i) => {
                            if self.table.release(i, key) {
                                self.dirty = true;
                            }
                            if reason.starts_with(TICKET_EXPIRED) {
                                // Renew with the freshest ticket at once, and ask the tracker
                                // for fresher ones now rather than at the next refresh.
                                conn.renew_at = Some(ctx.now);
                                self.next_refresh = ctx.now;
                            }
                        }
                    }
                }
            }
            if self.failure.is_some() || self.table.is_complete() {
                return Ok(());
            }
        }
        self.fill(ctx, key, conn);
        conn.flush(ctx.registry, token).map_err(|e| format!("{e}"))
    }

    /// Tops up one connection's pipeline: rarest-first among the queued pieces the peer has;
    /// when it has none, the endgame: a piece already in flight elsewhere, the latest first.
    /// Returns how many `get`s it queued.
    pub(super) fn fill(&mut self, ctx: &mut Ctx, key: PeerKey, conn: &mut FetchConn) -> usize {
        if self.state != DownloadState::Downloading || conn.state != ConnState::Live {
            return 0;
        }
        let Some(have) = &conn.have else {
            return 0;
        };
        let no_failed = HashSet::new();
        let failed = self
            .peers
            .get(&conn.user)
            .map(|p| &p.failed)
            .unwrap_or(&no_failed);
        let mut picks = Vec::new();
        while conn.gets_in_flight() + picks.len() < PIPELINE_DEPTH {
            let ok = |i: usize| !failed.contains(&i) && !conn.refused.contains(&i);
            let table = &self.table;
            let mut pick = None;
            let queue = table.queued();
            if !queue.is_empty() {
                // A random starting point, so that a bounded scan of a huge queue is fair.
                let start = ctx.rng.below(queue.len());
                let candidates = queue[start..].iter().chain(&queue[..start]).copied();
                pick = self
                    .avail
                    .pick(candidates, |i| have.contains(i) && ok(i), ctx.rng);
            }
            if pick.is_none() {
                pick = table.endgame_candidate(key, |i| have.contains(i) && ok(i));
            }
            let Some(i) = pick else {
                break;
            };
            self.table.acquire(i, key, ctx.now + PIECE_TIMEOUT);
            picks.push(i);
        }
        let added = picks.len();
        for i in picks {
            let req = Request::Get {
                group: self.group.clone(),
                file: self.file.clone(),
                index: i,
            };
            conn.send(&req, Awaited::Get(i), ctx.now + PIECE_TIMEOUT);
        }
        added
    }

    /// Tells every watched peer of the pieces verified since, and offers every live connection
    /// the pieces that became available.
    pub(super) fn fill_all(&mut self, ctx: &mut Ctx) {
        let mut news = std::mem::take(&mut self.unannounced);
        news.sort_unstable();
        let notices: Vec<Request> = ranges_lines(news).into_iter().map(Request::Has).collect();
        let keys: Vec<PeerKey> = self.conns.keys().copied().collect();
        for key in keys {
            let Some(mut conn) = self.conns.remove(&key) else {
                continue;
            };
            if conn.watched {
                for n in &notices {
                    conn.notice(n);
                }
            }
            let added = self.fill(ctx, key, &mut conn);
            // A notice alone waits for the next `get` on a connection with pieces in flight
            // (it follows the next piece from that peer, within milliseconds): one wake-up of
            // the seeder per piece rather than two.
            if added == 0 && conn.gets_in_flight() > 0 {
                self.conns.insert(key, conn);
                continue;
            }
            match conn.flush(ctx.registry, Token(TOKEN_BASE + key)) {
                Ok(()) => {
                    self.conns.insert(key, conn);
                }
                Err(e) => self.drop_conn(ctx, key, conn, &format!("{e}")),
            }
        }
    }

    /// Sends `watch` (or `want`) with the freshest ticket for this peer, and notes when to
    /// renew it: halfway through its remaining life by the tracker's clock.
    pub(super) fn ask(&self, ctx: &Ctx, conn: &mut FetchConn, watch: bool) {
        let ticket = self.peers.get(&conn.user).and_then(|p| p.ticket);
        let pass = ticket.map(|ticket| Pass {
            downloader: self.owner.clone(),
            ticket,
        });
        let (group, file) = (self.group.clone(), self.file.clone());
        let (req, awaited) = if watch {
            (Request::Watch { group, file, pass }, Awaited::Watch)
        } else {
            (Request::Want { group, file, pass }, Awaited::Want)
        };
        conn.send(&req, awaited, ctx.now + REPLY_TIMEOUT);
        conn.ticket_sent = ticket.map(|t| t.expiry);
        conn.renew_at = ticket.map(|t| {
            let left = t
                .expiry
                .saturating_sub(ctx.clock.tracker_time(ticket::unix_now()));
            ctx.now + Duration::from_secs(left) / 2
        });
    }

    /// How soon to ask for peers again: sooner while few are connected.
    pub(super) fn refresh_interval(&self) -> Duration {
        if self.conns.len() < FEW_SOURCES {
            PEER_REFRESH_FEW
        } else {
            PEER_REFRESH
        }
    }
}
