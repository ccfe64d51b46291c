//! Client requests: parsing into actions, reads answered from the state, writes proposed,
//! replies queued in request order.

use super::ordering::QueuedReply;
use super::*;
use crate::protocol::tracker::{FileLine, GroupLine, PeerLine};

impl Server {
    pub(super) fn client(&mut self, key: usize) -> Option<&mut ClientConn> {
        match self.conns.get_mut(key).map(|c| &mut c.kind) {
            Some(ConnRole::Client(cl)) => Some(cl),
            _ => None,
        }
    }

    /// Queues a reply in order: sent at once unless earlier replies still wait.
    pub(super) fn push_reply(&mut self, key: usize, slot: QueuedReply) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let ConnRole::Client(cl) = &mut c.kind else {
            return;
        };
        match slot {
            QueuedReply::Ready(text) if cl.replies.is_empty() => {
                let was_idle = c.conn.out_pending() == 0;
                c.conn.send_line(&text);
                if c.conn.out_pending() > OUTPUT_PAUSE {
                    c.paused = true;
                }
                if was_idle {
                    self.dirty.push(key);
                }
            }
            slot => cl.replies.push_back(slot),
        }
    }

    pub(super) fn reply(&mut self, key: usize, text: String) {
        self.push_reply(key, QueuedReply::Ready(text));
    }

    pub(super) fn reply_err(&mut self, key: usize, tag: u64, code: ErrorCode, message: &str) {
        self.reply(key, proto::encode_err(tag, code, message));
    }

    pub(super) fn refuse(&mut self, key: usize, tag: u64, r: &Refusal) {
        self.reply_err(key, tag, r.code(), &r.message());
    }

    pub(super) fn handle_client_line(&mut self, key: usize, line: &[u8], now: Instant) {
        // Hash lines of an upload in progress.
        if let Some(cl) = self.client(key) {
            if let Some(up) = cl.upload.as_mut() {
                up.lines_left -= 1;
                if up.bad.is_none() {
                    match std::str::from_utf8(line)
                        .ok()
                        .and_then(pieces::hashes_from_hex)
                    {
                        Some(h) if up.hashes.len() + h.len() <= up.npieces => up.hashes.extend(h),
                        _ => {
                            up.bad = Some(ErrorReply {
                                code: ErrorCode::BadRequest,
                                message: "malformed hash line".into(),
                            })
                        }
                    }
                }
                if up.lines_left == 0 {
                    if let Some(up) = cl.upload.take() {
                        self.finish_upload(key, up);
                    }
                }
                return;
            }
        }
        // The first line of a connection may open the peer link instead.
        if line.starts_with(b"peer-hello ") {
            self.peer_hello(key, line, now);
            return;
        }
        let req = match proto::parse(line) {
            Ok(r) => r,
            Err(e) => {
                self.parse_error(key, e);
                return;
            }
        };
        if !self.serving() && !matches!(req.verb, Verb::Ping | Verb::Digest) {
            let why = "this tracker is catching up with the other tracker; use the other one";
            if let Verb::UploadFile { npieces, .. } = req.verb {
                return self.parse_error(
                    key,
                    ParseError {
                        tag: req.tag,
                        code: ErrorCode::Unavailable,
                        message: why.into(),
                        skip_lines: pieces::hash_line_count(npieces as usize),
                    },
                );
            }
            return self.reply_err(key, req.tag, ErrorCode::Unavailable, why);
        }
        self.handle_request(key, req);
    }

    pub(super) fn parse_error(&mut self, key: usize, e: ParseError) {
        if e.skip_lines > 0 {
            if let Some(cl) = self.client(key) {
                cl.upload = Some(StagedUpload {
                    tag: e.tag,
                    target: None,
                    hashes: Vec::new(),
                    lines_left: e.skip_lines,
                    npieces: 0,
                    bad: Some(e.error()),
                });
                return;
            }
        }
        self.reply_err(key, e.tag, e.code, &e.message);
    }

    pub(super) fn handle_request(&mut self, key: usize, req: Request) {
        let Some(cl) = self.client(key) else {
            return;
        };
        let tag = req.tag;
        let origin = cl.instance.map(|instance| Origin { instance, tag });
        let session = cl.session.clone();
        let from = self.reply_to(key, tag);
        let needs_session = req.verb.needs_session();
        // (An upload's retry is recognised after its hash lines, which must be read first.)
        if let Some(o) = origin.filter(|_| !matches!(req.verb, Verb::UploadFile { .. })) {
            if let Some(stored) = self.state.dedup(&o).map(str::to_string) {
                return self.answer_retry(key, tag, req.verb, stored);
            }
        }
        let token = match (&session, needs_session) {
            (Some(t), _) => t.clone(),
            (None, true) => return self.refuse(key, tag, &Refusal::NotLoggedIn),
            (None, false) => String::new(),
        };
        match req.verb {
            Verb::Hello { instance } => {
                if let Some(cl) = self.client(key) {
                    cl.instance = Some(instance);
                }
                let reply = Reply::Ok(vec![self.cfg.me.to_string()]);
                self.reply(key, reply.encode(tag));
            }
            Verb::Ping => self.reply(key, Reply::Ok(vec!["pong".into()]).encode(tag)),
            Verb::Digest => {
                let d = self.state.digest();
                let role = self.repl.describe();
                let words = vec![d, self.pos.seq.to_string(), role.to_string()];
                self.reply(key, Reply::Ok(words).encode(tag));
            }
            Verb::CreateUser { user, password } => {
                if self.state.user_exists(&user) {
                    return self.refuse(key, tag, &Refusal::UserExists);
                }
                let pw_hash = password::hash_password(&password);
                self.propose(origin, Op::CreateUser { user, pw_hash }, from);
            }
            Verb::Login {
                user,
                password,
                addr,
            } => {
                if session.is_some() {
                    return self.refuse(key, tag, &Refusal::AlreadyLoggedIn);
                }
                match self.state.check_login(&user, &password) {
                    Ok(()) => {}
                    // (The password was right.) A client killed a moment ago may have its
                    // close still unread in this batch: read it now. If it is gone, its logout
                    // is proposed before this login and the log orders them so.
                    Err(Refusal::AlreadyLoggedIn) if self.reap_dead_session_of(&user) => {}
                    Err(r) => return self.refuse(key, tag, &r),
                }
                let token = match new_token() {
                    Ok(t) => t,
                    Err(e) => {
                        log::error!("{e}");
                        let why = "this tracker cannot get random bytes for a session token";
                        return self.reply_err(key, tag, ErrorCode::Unavailable, why);
                    }
                };
                let tracker = self.cfg.me;
                let key = self.client_key(key);
                self.propose(
                    origin,
                    Op::Login {
                        token,
                        user,
                        addr,
                        tracker,
                        key,
                    },
                    from,
                );
            }
            Verb::Attach { token, addr } => {
                if session.is_some() {
                    return self.refuse(key, tag, &Refusal::AlreadyLoggedIn);
                }
                let tracker = self.cfg.me;
                let key = self.client_key(key);
                self.propose(
                    origin,
                    Op::Attach {
                        token,
                        addr,
                        tracker,
                        key,
                    },
                    from,
                );
            }
            Verb::Logout => {
                if let Some(cl) = self.client(key) {
                    cl.session = None;
                }
                self.propose(origin, Op::Logout { token }, from);
            }
            Verb::CreateGroup { group } => {
                self.propose(origin, Op::CreateGroup { token, group }, from)
            }
            Verb::JoinGroup { group } => self.propose(origin, Op::JoinGroup { token, group }, from),
            Verb::LeaveGroup { group } => {
                self.propose(origin, Op::LeaveGroup { token, group }, from)
            }
            Verb::AcceptRequest { group, user } => {
                self.propose(origin, Op::AcceptRequest { token, group, user }, from)
            }
            Verb::StopShare { group, file } => {
                self.propose(origin, Op::StopShare { token, group, file }, from)
            }
            Verb::Have {
                group,
                file,
                pieces,
            } => self.propose(
                None,
                Op::Have {
                    token,
                    group,
                    file,
                    pieces,
                },
                from,
            ),
            Verb::ListGroups => {
                let r = self.state.list_groups(&token);
                self.answer(key, tag, r.map(|v| lines(&v, GroupLine::encode)));
            }
            Verb::ListRequests { group } => {
                let r = self.state.list_requests(&token, &group);
                self.answer(key, tag, r.map(Reply::list));
            }
            Verb::ListFiles { group } => {
                let r = self.state.list_files(&token, &group);
                self.answer(key, tag, r.map(|v| lines(&v, FileLine::encode)));
            }
            Verb::Peers { group, file } => {
                let r = self.state.peers(&token, &group, &file);
                self.answer(key, tag, r.map(|v| lines(&v, PeerLine::encode)));
            }
            Verb::DownloadFile { group, file } => {
                let r = self.state.download(&token, &group, &file);
                self.answer(key, tag, r.map(|d| d.to_reply()));
            }
            Verb::UploadFile {
                group,
                file,
                size,
                npieces,
            } => {
                let lines = pieces::hash_line_count(npieces as usize);
                let up = StagedUpload {
                    tag,
                    target: Some(UploadTarget { group, file, size }),
                    hashes: Vec::with_capacity(npieces as usize),
                    lines_left: lines,
                    npieces: npieces as usize,
                    bad: None,
                };
                if lines == 0 {
                    self.finish_upload(key, up);
                } else if let Some(cl) = self.client(key) {
                    cl.upload = Some(up);
                }
            }
        }
    }

    /// A request whose write already happened (the client re-sent it after losing its
    /// tracker): answer with the original reply once it is committed, never apply it twice.
    pub(super) fn answer_retry(&mut self, key: usize, tag: u64, verb: Verb, stored: String) {
        let reattach = match verb {
            // The first attempt created the session at a tracker that may be gone.
            Verb::Login { addr, .. } => Some((stored.clone(), addr)),
            Verb::Attach { token, addr } => Some((token, addr)),
            _ => None,
        };
        if let Some((token, addr)) = reattach {
            if let Some(cl) = self.client(key) {
                cl.session = Some(token.clone());
            }
            let tracker = self.cfg.me;
            let key = self.client_key(key);
            self.propose(
                None,
                Op::Attach {
                    token,
                    addr,
                    tracker,
                    key,
                },
                None,
            );
        }
        let seq = self.pos.seq;
        self.push_commit_reply(key, seq, proto::encode_ok(tag, &stored));
    }

    /// Whether `user`'s live session is in fact ending: its logout is forwarded and on its way,
    /// or this tracker's connection holding it turns out closed when read now (it is then
    /// dropped and its logout proposed). Only on the refusal path of
    /// `login`, so a scan of the connections is fine.
    pub(super) fn reap_dead_session_of(&mut self, user: &str) -> bool {
        // At a follower the close may already be handled, its logout on its way to the leader.
        let logout_in_flight = self.repl.forwards.ops().any(
            |op| matches!(op, Op::Logout { token } if self.state.session_user(token) == Some(user)),
        );
        if logout_in_flight {
            return true;
        }
        let holder = self.conns.iter().find_map(|(k, c)| match &c.kind {
            ConnRole::Client(cl) if !c.closing => cl
                .session
                .as_deref()
                .filter(|t| self.state.session_user(t) == Some(user))
                .map(|_| k),
            _ => None,
        });
        let Some(k) = holder else {
            return false;
        };
        self.on_readable(k, Instant::now(), false);
        self.conns.get(k).is_none_or(|c| c.closing)
    }

    /// A read's answer: its reply, or the refusal.
    pub(super) fn answer(&mut self, key: usize, tag: u64, r: Result<Reply, Refusal>) {
        match r {
            Ok(reply) => self.reply(key, reply.encode(tag)),
            Err(e) => self.refuse(key, tag, &e),
        }
    }

    pub(super) fn finish_upload(&mut self, key: usize, up: StagedUpload) {
        let tag = up.tag;
        let Some(UploadTarget { group, file, size }) = up.target else {
            let bad = up.bad.unwrap_or(ErrorReply {
                code: ErrorCode::BadRequest,
                message: String::new(),
            });
            return self.reply_err(key, tag, bad.code, &bad.message);
        };
        if let Some(bad) = up.bad {
            return self.reply_err(key, tag, bad.code, &bad.message);
        }
        if up.hashes.len() != up.npieces {
            return self.reply_err(
                key,
                tag,
                ErrorCode::BadRequest,
                "the hash lines hold too few hashes",
            );
        }
        let Some(cl) = self.client(key) else {
            return;
        };
        let session = cl.session.clone();
        let origin = cl.instance.map(|instance| Origin { instance, tag });
        if let Some(stored) = origin.and_then(|o| self.state.dedup(&o).map(str::to_string)) {
            let seq = self.pos.seq;
            return self.push_commit_reply(key, seq, proto::encode_ok(tag, &stored));
        }
        let Some(token) = session else {
            return self.refuse(key, tag, &Refusal::NotLoggedIn);
        };
        let from = self.reply_to(key, tag);
        self.propose(
            origin,
            Op::Upload {
                token,
                group,
                file,
                size,
                hashes: up.hashes,
            },
            from,
        );
    }
}

/// A `list` reply of typed data lines.
fn lines<T>(items: &[T], encode: fn(&T) -> String) -> Reply {
    Reply::list(items.iter().map(encode).collect())
}
