//! Logging in without a password on the wire (SCRAM-SHA-256, docs/PROTOCOL.md "Logging in"):
//! `login_begin` hands out salt, count and a nonce; `login` checks the proof with a few HMACs
//! (`Verifier::check`, no key derivation here) and proposes the session; `attach` checks a
//! proof of the session secret. A login of a user whose session is live takes it over: the
//! connection holding it, at either tracker, is told and closed when the login is applied.

use super::*;
use crate::auth::login::{self as proofs, SECRET_LEN};
use crate::auth::scram::{self, Verifier};
use crate::pieces::to_hex;

/// A `login_begin` answered on this connection and waiting for its `login`: everything the
/// AuthMessage needs from the tracker's side. Replaced by the next `login_begin`, consumed by
/// `login`.
pub(super) struct PendingLogin {
    pub(super) user: String,
    pub(super) cnonce: String,
    pub(super) snonce: String,
    /// The user's verifier, or the decoy for an unknown user (whose proofs never match).
    pub(super) verifier: Verifier,
}

/// The unsolicited line a taken-over session's connection gets before it is closed.
pub fn taken_over_line(user: &str) -> String {
    proto::encode_err(
        0,
        ErrorCode::SessionTakenOver,
        &format!("{user} logged in from another client"),
    )
}

impl Server {
    pub(super) fn login_begin(&mut self, key: usize, tag: u64, user: String, cnonce: String) {
        let Some(cl) = self.client(key) else {
            return;
        };
        if cl.session.is_some() {
            return self.refuse(key, tag, &Refusal::AlreadyLoggedIn);
        }
        let verifier = self
            .state
            .verifier(&user)
            .unwrap_or_else(|| Verifier::decoy(&self.decoy_secret, &user, self.cfg.kdf_iterations));
        let snonce = match proofs::random_hex(proto::NONCE_LEN) {
            Ok(n) => n,
            Err(e) => return self.reply_err(key, tag, ErrorCode::Unavailable, &e),
        };
        let words = vec![
            to_hex(&verifier.salt),
            verifier.iterations.to_string(),
            snonce.clone(),
        ];
        if let Some(cl) = self.client(key) {
            cl.login = Some(Box::new(PendingLogin {
                user,
                cnonce,
                snonce,
                verifier,
            }));
        }
        self.reply(key, Reply::Ok(words).encode(tag));
    }

    pub(super) fn login(
        &mut self,
        key: usize,
        tag: u64,
        origin: Option<Origin>,
        (user, proof, addr): (String, String, String),
    ) {
        if let Err(r) = self.allow_login(key) {
            return self.refuse(key, tag, &r);
        }
        let Some(cl) = self.client(key) else {
            return;
        };
        if cl.session.is_some() {
            return self.refuse(key, tag, &Refusal::AlreadyLoggedIn);
        }
        let Some(p) = cl.login.take().filter(|p| p.user == user) else {
            return self.reply_err(
                key,
                tag,
                ErrorCode::BadRequest,
                "send login_begin for this user on this connection first",
            );
        };
        let cb = self.conns.get(key).and_then(Connection::channel_binding);
        let msg = proofs::auth_message(
            &user,
            &p.cnonce,
            &p.snonce,
            &p.verifier.salt,
            p.verifier.iterations,
            cb,
        );
        let proof = scram::lower_hex::<{ scram::KEY_LEN }>(&proof).unwrap_or_default();
        let Some(tracker_proof) = p.verifier.check(&msg, &proof) else {
            return self.refuse(key, tag, &Refusal::BadCredentials);
        };
        let (token, secret) = match (proofs::random_hex(16), proofs::random_hex(SECRET_LEN)) {
            (Ok(t), Ok(s)) => (t, s),
            (Err(e), _) | (_, Err(e)) => {
                return self.reply_err(key, tag, ErrorCode::Unavailable, &e)
            }
        };
        // The reply is this connection's: the other tracker learns the session, not the proof.
        if let Some(cl) = self.client(key) {
            cl.login_reply = Some((
                token.clone(),
                format!("{token} {secret} {}", to_hex(&tracker_proof)),
            ));
        }
        let from = self.reply_to(key, tag);
        let tracker = self.cfg.me;
        let op = Op::Login {
            token,
            user,
            addr,
            tracker,
            secret,
            key: self.client_key(key),
        };
        self.propose(origin, op, from);
    }

    pub(super) fn attach(
        &mut self,
        key: usize,
        tag: u64,
        origin: Option<Origin>,
        (token, proof, addr): (String, String, String),
    ) {
        let Some(cl) = self.client(key) else {
            return;
        };
        if cl.session.is_some() {
            return self.refuse(key, tag, &Refusal::AlreadyLoggedIn);
        }
        let cb = self.conns.get(key).and_then(Connection::channel_binding);
        // A wrong proof reads like an unknown token: the answer says nothing of which tokens
        // exist.
        let valid = self
            .state
            .session_secret(&token)
            .and_then(scram::lower_hex::<SECRET_LEN>)
            .is_some_and(|secret| proofs::attach_proof_is_valid(&secret, &token, cb, &proof));
        if !valid {
            return self.refuse(key, tag, &Refusal::NoSession);
        }
        let from = self.reply_to(key, tag);
        let tracker = self.cfg.me;
        self.propose(
            origin,
            Op::Attach {
                token,
                addr,
                tracker,
                key: self.client_key(key),
            },
            from,
        );
    }

    /// Applies an operation to the state; a login that replaced a live session ends that
    /// session's connection here, if this tracker holds it. Every path that applies a
    /// client's operation in the loop goes through this.
    pub(super) fn apply_op(
        &mut self,
        origin: Option<Origin>,
        op: &Op,
    ) -> Result<WriteReply, Refusal> {
        let displaced = match op {
            Op::Login { user, .. } => self.state.live_session_of(user).cloned(),
            _ => None,
        };
        let result = self.state.apply(origin, op);
        if let (Ok(_), Some(old), Op::Login { user, .. }) = (&result, displaced, op) {
            self.end_taken_over(&old, user);
        }
        result
    }

    /// Tells the connection holding session `token` that `user` logged in elsewhere, and
    /// closes it. Only on a takeover, so a scan of the connections is fine.
    fn end_taken_over(&mut self, token: &str, user: &str) {
        let holder = self.conns.iter_mut().find_map(|(k, c)| match &mut c.kind {
            ConnRole::Client(cl) if !c.closing && cl.session.as_deref() == Some(token) => {
                cl.session = None;
                Some(k)
            }
            _ => None,
        });
        if let Some(k) = holder {
            log::info!("session of {user} taken over by a new login; closing its connection");
            self.send(k, &taken_over_line(user));
            self.close(k);
        }
    }

    /// The words of a write's `ok` for the client at `to`: a login's carry the session secret
    /// and the tracker's proof, which only the connection that logged in ever sees.
    pub(super) fn reply_words(&mut self, op: &Op, to: Option<ReplyTo>, words: &str) -> String {
        if let (Op::Login { token, .. }, Some(to)) = (op, to) {
            if let Some(cl) = self.client(to.key) {
                if let Some((t, full)) = cl.login_reply.take() {
                    if t == *token {
                        return full;
                    }
                }
            }
        }
        words.to_string()
    }
}

/// The decoy key for unknown users' `login_begin` answers: from the cluster key, so both
/// trackers and every restart answer alike for the same name; a single tracker draws one at
/// start.
pub(super) fn decoy_secret(cluster_key: &[u8]) -> Result<Vec<u8>, String> {
    if cluster_key.is_empty() {
        return Ok(proofs::random_array::<32>()?.to_vec());
    }
    Ok(
        Verifier::decoy(cluster_key, "groupshare-decoy-key", scram::MIN_ITERATIONS)
            .stored_key
            .to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_taken_over_line_is_an_unsolicited_error_naming_the_user() {
        let line = taken_over_line("alice");
        assert_eq!(
            line,
            "0 err session_taken_over alice logged in from another client"
        );
        let mut r = proto::ReplyReader::default();
        match r.feed(&line) {
            Ok(Some((0, Reply::Err { code, .. }))) => {
                assert_eq!(code, ErrorCode::SessionTakenOver)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_decoy_key_is_stable_for_a_cluster_key() {
        assert_eq!(decoy_secret(b"k").unwrap(), decoy_secret(b"k").unwrap());
        assert_ne!(decoy_secret(b"k").unwrap(), decoy_secret(b"j").unwrap());
        assert_eq!(decoy_secret(b"").unwrap().len(), 32);
    }
}
