//! Healing a split at the tracker whose log is replaced (the decisions are in
//! `tracker/replay.rs`): before the leader's snapshot replaces this tracker's log, the writes
//! it acknowledged that the leader may not hold are read from the journal and kept in the
//! `replay` file; once this tracker follows, they are forwarded to the leader in order, a
//! window at a time (or, if it leads alone again first, applied here), each validated again by `State::apply`.
//! A refused one is logged with the user it concerns and becomes a notice, which the next
//! command of that client (or of a client of that user) is answered with: `write_undone`.

use super::ordering::ForwardedWrite;
use super::replica::Role;
use super::Server;
use crate::protocol::tracker::{ErrorCode, Verb};
use crate::tracker::link::LinkMsg;
use crate::tracker::op::Op;
use crate::tracker::replay::{self, Item, Proposal};
use crate::tracker::state::{Notice, MAX_NOTICES};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// The writes still to be proposed again, in the data directory; present only while a heal is
/// under way.
const REPLAY: &str = "replay";
const REPLAY_TMP: &str = "replay.tmp";

impl Server {
    fn replay_path(&self, name: &str) -> PathBuf {
        self.cfg.data_dir.join(name)
    }

    /// The leader's snapshot is about to replace this tracker's log: keep the entries it may
    /// not hold, durably, first. An error means they could not be kept; the caller stops
    /// rather than lose them.
    pub(super) fn keep_unshared_writes(&mut self) -> Result<(), String> {
        self.load_replay();
        // A log that ends in a paired term, of a tracker that did not lose its follower, has
        // nothing the leader lacks: a restarted follower catching up reads no journal.
        if !self.pos.solo && self.repl.split_ack().is_none() {
            return Ok(());
        }
        self.journal
            .flush()
            .map_err(|e| format!("cannot write the journal: {e}"))?;
        let (base, entries) = self.journal.read_log()?;
        let d = replay::divergence(&entries, base, self.repl.split_ack());
        if d.compacted {
            log::warn!(
                "this tracker's log since its last snapshot (at {}) is all solo: writes it \
                 acknowledged alone before that snapshot, if any, were compacted into it and \
                 cannot be proposed again to tracker {}",
                base.seq,
                self.repl.other()
            );
        }
        let state = &self.state;
        let items = replay::items(&entries, d, |t| state.session_user(t).map(str::to_string));
        if items.is_empty() {
            return Ok(());
        }
        log::warn!(
            "this tracker acknowledged {} writes since entry {} that tracker {} may not hold; \
             they are proposed again on its log once this tracker follows it",
            items.len(),
            d.after,
            self.repl.other()
        );
        self.repl.replay.extend(items);
        self.store_replay()
            .map_err(|e| format!("cannot keep the writes to propose again: {e}"))
    }

    /// Writes the `replay` file (temporary name, fsync, rename, directory fsync), or removes
    /// it when nothing is left.
    fn store_replay(&self) -> io::Result<()> {
        let path = self.replay_path(REPLAY);
        if self.repl.replay.is_empty() {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        } else {
            let tmp = self.replay_path(REPLAY_TMP);
            // The writes of a split (sessions and secrets among them): 0600 like every file of
            // the data directory.
            let _ = fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(replay::encode_items(self.repl.replay.remaining()).as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
        }
        File::open(&self.cfg.data_dir)?.sync_all()
    }

    /// Reads the `replay` file an earlier run left (it stopped during a heal), once.
    fn load_replay(&mut self) {
        if self.repl.replay.loaded {
            return;
        }
        self.repl.replay.loaded = true;
        let path = self.replay_path(REPLAY);
        match fs::read_to_string(&path) {
            Ok(text) => match replay::decode_items(&text) {
                Ok(items) => {
                    log::warn!(
                        "{} writes of an unfinished heal are still to be proposed again ({})",
                        items.len(),
                        path.display()
                    );
                    self.repl.replay.extend(items);
                }
                Err(e) => log::error!(
                    "{}: {e}; the writes it holds are not proposed again",
                    path.display()
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::error!("cannot read {}: {e}", path.display()),
        }
    }

    /// Moves the heal on: a follower sends the next writes to the leader (`Replay::take_next`
    /// says how many), a leader applies every one here; anyone else waits.
    pub(super) fn replay_step(&mut self) {
        self.load_replay();
        if self.repl.replay.is_empty() {
            return;
        }
        let leading = self.repl.role() == Role::Leader;
        let following = self.repl.role() == Role::Follower && self.repl.link_live();
        if !leading && !following {
            return;
        }
        while let Some(mut it) = self.repl.replay.take_next() {
            if let Some(o) = it.entry.origin {
                // The leader's state is ours: a write it already holds is deduplicated.
                if self.state.dedup(&o).is_some() {
                    continue;
                }
            }
            let state = &self.state;
            let proposal = self
                .repl
                .replay
                .proposal(&mut it, |t| state.session_user(t).map(str::to_string));
            let op = match proposal {
                Proposal::Propose(op) => op,
                Proposal::NoUser => {
                    self.replay_undone(it, "the session it was made in is unknown");
                    continue;
                }
                Proposal::UserUndone(u) => {
                    let why = format!("it was made as {u}, whose creation was undone");
                    self.replay_undone(it, &why);
                    continue;
                }
            };
            let origin = it.entry.origin;
            if leading {
                match self.state.apply(origin, &op) {
                    Ok(_) => {
                        self.append(origin, op, None);
                    }
                    Err(r) => self.replay_undone(it, &r.message()),
                }
                continue;
            }
            let fid = self.repl.forwards.add(ForwardedWrite {
                to: None,
                origin,
                op: op.clone(),
            });
            self.send_link(&LinkMsg::Fwd { fid, origin, op });
            self.repl.replay.sent(fid, it);
        }
        if self.repl.replay.is_empty() {
            self.replay_finished();
        }
    }

    /// The leader decided forward `fid`: `refused` holds why, if it refused. Not a replay's
    /// forward: nothing to do.
    pub(super) fn replay_answered(&mut self, fid: u64, refused: Option<&str>) {
        let Some(it) = self.repl.replay.answered(fid) else {
            return;
        };
        if let Some(why) = refused {
            self.replay_undone(it, why);
        }
        self.replay_step();
    }

    /// The link broke with writes of the heal at the leader: they are decided again wherever
    /// this tracker goes next (deduplication answers those the leader had applied).
    pub(super) fn replay_link_lost(&mut self) {
        for fid in self.repl.replay.link_lost() {
            self.repl.forwards.remove(fid);
        }
    }

    fn replay_undone(&mut self, it: Item, why: &str) {
        if let Op::Notice { .. } = it.entry.op {
            log::error!("a notice of an undone write was refused: {why}");
            return;
        }
        // A write of the last paired term's tail was sent to the other tracker before the link
        // broke; the deduplication check before it catches those it holds, so a refusal is
        // still most likely a conflict, and is told as one.
        let when = if it.tail {
            "just before the trackers lost each other"
        } else {
            "while the trackers were apart"
        };
        log::error!(
            "split healed with a conflict: '{}' (user {}), acknowledged by tracker {} {when}, \
             is undone: {why}",
            it.entry.op.describe(),
            it.concerns(),
            self.repl.me()
        );
        if let Some(notice) = self.repl.replay.undone(&it, self.repl.me(), why) {
            self.repl.replay.notice_next(notice);
        }
    }

    fn replay_finished(&mut self) {
        if let Err(e) = self.store_replay() {
            log::warn!("cannot remove the finished replay file: {e}");
        }
        log::info!("split healed: every write this tracker acknowledged alone was proposed again");
    }

    /// A person's command from a client that has notices waiting is answered with them
    /// instead (`write_undone`; the command is not run), and the notices are dropped.
    /// Returns whether it was answered.
    pub(super) fn tell_notices(
        &mut self,
        key: usize,
        tag: u64,
        verb: &Verb,
        instance: Option<u64>,
        session: Option<&str>,
    ) -> bool {
        if !self.state.has_notices() {
            self.repl.told.clear();
            return false;
        }
        if !is_a_persons_command(verb) {
            return false;
        }
        let user = session.and_then(|t| self.state.session_user(t));
        let told = &self.repl.told;
        let notes: Vec<Notice> = self
            .state
            .notices_for(instance, user)
            .into_iter()
            .filter(|n| !told.contains(n))
            .cloned()
            .collect();
        if notes.is_empty() {
            return false;
        }
        let texts: Vec<&str> = notes.iter().map(|n| n.text.as_str()).collect();
        let text = format!(
            "{}. This command was not run; repeat it",
            texts.join(". Also: ")
        );
        self.repl.told.extend(notes);
        if self.repl.told.len() > MAX_NOTICES {
            let extra = self.repl.told.len() - MAX_NOTICES;
            self.repl.told.drain(..extra);
        }
        let seen = Op::NoticeSeen {
            instance,
            user: user.map(str::to_string),
        };
        self.reply_err(key, tag, ErrorCode::WriteUndone, &text);
        self.propose(None, seen, None);
        true
    }
}

/// The verbs a person types and reads the answer of (not the client's own background
/// requests, nor `login`, whose refusal would end a session, nor `upload_file`, whose hash
/// lines follow).
fn is_a_persons_command(verb: &Verb) -> bool {
    matches!(
        verb,
        Verb::CreateUser { .. }
            | Verb::CreateGroup { .. }
            | Verb::JoinGroup { .. }
            | Verb::LeaveGroup { .. }
            | Verb::ListRequests { .. }
            | Verb::AcceptRequest { .. }
            | Verb::ListGroups
            | Verb::ListFiles { .. }
            | Verb::DownloadFile { .. }
            | Verb::StopShare { .. }
    )
}
