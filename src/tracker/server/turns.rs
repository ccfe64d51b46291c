//! Fair turns: a connection whose turn budget ran out waits in the backlog for the next turn,
//! a line is read only while its client may go ahead, output past the soft limit pauses reading
//! (past the hard one closes), clients are resumed when their output drains, and silent clients
//! are swept.

use super::*;

impl Server {
    /// Gives the connections left over from the last turn their turn: first the lines already
    /// framed, then the socket (edge-triggered readiness will not report those bytes again).
    pub(super) fn serve_backlog(&mut self, now: Instant) {
        let waiting = std::mem::take(&mut self.backlog);
        for (key, id) in waiting {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.id != id {
                continue;
            }
            c.in_backlog = false;
            self.handle_lines(key, now);
            self.on_readable(key, now, false);
        }
    }

    /// Puts a client connection with work left on the backlog, once.
    pub(super) fn defer_to_next_turn(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.in_backlog && !c.closing {
                c.in_backlog = true;
                self.backlog.push_back((key, c.id));
            }
        }
    }

    /// Applies the output limits (`limits::output_verdict`) to a client after what is queued
    /// for it changed: reading pauses past the soft limits, resumes below half of them (the
    /// connection is served next turn), and the connection closes past the hard limit.
    pub(super) fn check_output(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let ConnRole::Client(cl) = &c.kind else {
            return;
        };
        if c.closing {
            return;
        }
        let queued = c.conn.out_pending() + cl.replies.queued_bytes();
        match limits::output_verdict(queued, cl.replies.len(), c.paused) {
            OutputVerdict::Read => {
                if c.paused {
                    c.paused = false;
                    self.defer_to_next_turn(key);
                }
            }
            OutputVerdict::Pause => c.paused = true,
            OutputVerdict::Close => {
                log::warn!(
                    "connection {key} has {queued} bytes of replies queued and does not read \
                     them; closing it"
                );
                self.drop_conn(key, Instant::now());
            }
        }
    }

    /// Whether a client's next line may be handled now. Always, unless writes of this client
    /// are forwarded and not back yet; then only hash lines of an upload and writes that do
    /// not read the state (the leader decides them in order anyway), and none at all behind a
    /// forwarded login, attach or logout, which changes the session the next one acts as.
    pub(super) fn may_go_ahead(&self, key: usize, line: &[u8]) -> bool {
        let Some(Connection {
            kind: ConnRole::Client(cl),
            ..
        }) = self.conns.get(key)
        else {
            return true;
        };
        if cl.upload.is_some() {
            return true;
        }
        let mut pending = cl.replies.forwarded().peekable();
        if pending.peek().is_none() {
            return true;
        }
        let session_change = pending.any(|f| {
            matches!(
                self.repl.forwards.get(f).map(|w| &w.op),
                Some(Op::Login { .. } | Op::Attach { .. } | Op::Logout { .. })
            )
        });
        let verb = proto::verb_word(line);
        !session_change
            && matches!(
                verb,
                b"create_user"
                    | b"create_group"
                    | b"join_group"
                    | b"leave_group"
                    | b"accept_request"
                    | b"stop_share"
                    | b"have"
            )
    }

    /// Closes logged-in client connections not heard from for `limits::CLIENT_SILENCE` (their
    /// clients ping when idle, so this one has vanished): the drop logs the session out and
    /// the user stops being listed as a source. Connections without a session hold nothing
    /// and are left alone, as idle connections always were.
    pub(super) fn close_silent_clients(&mut self, now: Instant) {
        let silent: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.closing
                    && matches!(&c.kind, ConnRole::Client(cl) if cl.session.is_some())
                    && now >= self.clock.heard_since(c.last_heard) + limits::CLIENT_SILENCE
            })
            .map(|(k, _)| k)
            .collect();
        for key in silent {
            log::info!(
                "client connection {key} silent for {} s; closing it and ending its session",
                limits::CLIENT_SILENCE.as_secs()
            );
            self.drop_conn(key, now);
        }
    }

    /// Clients whose forwarded writes came back: their held-back line first, then whatever
    /// else they sent meanwhile.
    pub(super) fn resume_clients(&mut self, now: Instant) {
        while !self.resume.is_empty() {
            for k in std::mem::take(&mut self.resume) {
                self.handle_lines(k, now);
                self.on_readable(k, now, false);
            }
        }
    }
}
