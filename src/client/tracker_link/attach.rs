//! After `hello`: the session re-attached on a new tracker (`attach` with a proof of the
//! session secret, or a fresh `login_begin`/`login` with the kept keys), a session lost or
//! taken over, and the link made ready.

use super::*;

/// Where a re-attach stands (`LinkState::Attaching`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum AttachStep {
    /// `attach` sent.
    Attach,
    /// The tracker did not know the session: `login_begin` sent with this nonce.
    Begin { cnonce: String },
    /// `login` sent with the proof over this AuthMessage.
    Login { auth_message: Vec<u8> },
}

impl TrackerLink {
    /// After `hello`: a write that was in flight is re-sent *before* the session is
    /// re-attached. The trackers remember one (tag, reply) per instance — the last successful
    /// write — and `attach` is itself a write; re-sending after it would miss the record and
    /// apply the write a second time. Before it, the tracker answers a write that already
    /// happened with its original reply (no session needed for that), and one that did not
    /// with `not_logged_in`, which sends it again after the attach.
    pub(super) fn after_hello(&mut self, registry: &Registry, now: Instant) {
        if self.session.is_some() {
            if let Some(w) = self
                .in_flight
                .iter()
                .find(|r| r.class == RequestClass::Write)
            {
                let conn = self.conn.as_mut().expect("connected");
                conn.send_line(&request_line(w.tag, &w.line));
                for x in &w.extra {
                    conn.send_line(x);
                }
                self.state = LinkState::Retrying {
                    tag: w.tag,
                    since: now,
                };
                self.flush(registry, now);
                return;
            }
        }
        self.attach_or_ready(registry, now);
    }

    pub(super) fn attach_or_ready(&mut self, registry: &Registry, now: Instant) {
        match self.session.clone() {
            Some(s) => {
                let proof = proofs::attach_proof(&s.secret, &s.token, self.channel_binding());
                let attach = Verb::Attach {
                    token: s.token,
                    proof: to_hex(&proof),
                    addr: self.advertise.to_string(),
                };
                self.send_attach_step(&attach, AttachStep::Attach, now);
                self.flush(registry, now);
            }
            None => self.become_ready(registry, now),
        }
    }

    pub(super) fn send_attach_step(&mut self, verb: &Verb, step: AttachStep, now: Instant) {
        let tag = self.take_tag();
        let line = request_line(tag, &verb.encode());
        if let Some(conn) = self.conn.as_mut() {
            conn.send_line(&line);
        }
        self.state = LinkState::Attaching {
            tag,
            step,
            since: now,
        };
    }

    /// One step of re-attaching: `attach`; when the tracker does not know the session, a
    /// login with the kept keys (`login_begin`, then `login`, the tracker's proof checked).
    pub(super) fn on_attach_reply(
        &mut self,
        registry: &Registry,
        step: AttachStep,
        reply: Reply,
        now: Instant,
    ) {
        let Some(s) = self.session.clone() else {
            return self.become_ready(registry, now);
        };
        match (step, reply) {
            (AttachStep::Attach, Reply::Ok(_)) => self.become_ready(registry, now),
            (
                AttachStep::Attach,
                Reply::Err {
                    code: ErrorCode::NoSession,
                    ..
                },
            ) => {
                let cnonce = match proofs::random_hex(NONCE_LEN) {
                    Ok(n) => n,
                    Err(e) => return self.session_lost(registry, e, now),
                };
                let begin = Verb::LoginBegin {
                    user: s.user.clone(),
                    cnonce: cnonce.clone(),
                };
                self.send_attach_step(&begin, AttachStep::Begin { cnonce }, now);
                self.flush(registry, now);
            }
            (AttachStep::Begin { cnonce }, Reply::Ok(words)) => {
                let (salt, count) = (to_hex(&s.salt), s.iterations.to_string());
                let [w_salt, w_count, snonce] = words.as_slice() else {
                    return self.fail(registry, now, true);
                };
                if *w_salt != salt || *w_count != count {
                    let reason = format!(
                        "the tracker no longer has the password of {} that this client logged in with",
                        s.user
                    );
                    return self.session_lost(registry, reason, now);
                }
                let auth_message = proofs::auth_message(
                    &s.user,
                    &cnonce,
                    snonce,
                    &s.salt,
                    s.iterations,
                    self.channel_binding(),
                );
                let login = Verb::Login {
                    user: s.user.clone(),
                    proof: to_hex(&s.keys.proof(&auth_message)),
                    addr: self.advertise.to_string(),
                };
                self.send_attach_step(&login, AttachStep::Login { auth_message }, now);
                self.flush(registry, now);
            }
            (AttachStep::Login { auth_message }, Reply::Ok(words)) => {
                match LoginReply::parse(&words, &s.keys, &auth_message) {
                    Ok(r) => {
                        if let Some(sess) = self.session.as_mut() {
                            sess.token = r.token;
                            sess.secret = r.secret;
                        }
                        self.become_ready(registry, now);
                    }
                    Err(e) => self.session_lost(registry, e, now),
                }
            }
            (_, Reply::Err { code, message }) => {
                let reason = match code {
                    ErrorCode::BadCredentials => {
                        format!("the tracker no longer accepts the password of {}", s.user)
                    }
                    _ => message,
                };
                self.session_lost(registry, reason, now);
            }
            (_, Reply::List { .. }) => self.fail(registry, now, true),
        }
    }

    pub(super) fn session_lost(&mut self, registry: &Registry, reason: String, now: Instant) {
        self.session = None;
        self.events.push(LinkEvent::SessionLost { reason });
        self.become_ready(registry, now);
    }

    pub(super) fn become_ready(&mut self, registry: &Registry, now: Instant) {
        self.state = LinkState::Ready;
        self.last_sent = now;
        self.failures = 0;
        self.reported_unreachable = false;
        let switched = self.last_ready.is_some_and(|i| i != self.current);
        self.last_ready = Some(self.current);
        self.events.push(LinkEvent::Connected {
            tracker: self.current + 1,
            addr: self.tracker_addr(),
            switched,
        });
        // Re-send what was unanswered on the previous connection, same tags, same order.
        let conn = self.conn.as_mut().expect("connected");
        for r in &self.in_flight {
            conn.send_line(&request_line(r.tag, &r.line));
            for x in &r.extra {
                conn.send_line(x);
            }
        }
        if !self.in_flight.is_empty() {
            self.waiting_since = Some(now);
        }
        self.pump(registry, now);
    }
}
