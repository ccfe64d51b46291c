//! What comes back from the tracker link: connection notes, the end of a session, and each
//! reply routed by its tag to the command in progress, a background request or the logout at
//! exit.

use super::{App, Background, InProgress, Stage};
use crate::client::console;
use crate::client::tracker_link::LinkEvent;
use crate::protocol::tracker::Reply;
use std::time::Instant;

impl App {
    pub(super) fn on_link_event(&mut self, ev: LinkEvent, now: Instant) {
        match ev {
            LinkEvent::Connected {
                tracker,
                addr,
                switched,
            } => {
                log::info!("connected to tracker {tracker} ({addr})");
                self.sync_tickets();
                let after_outage = std::mem::take(&mut self.outage);
                if switched {
                    console::err(&format!(
                        "note: switched to tracker {tracker} ({addr}); your session continues there"
                    ));
                } else if after_outage {
                    console::err(&format!("note: connected to tracker {tracker} ({addr})"));
                }
                if matches!(self.command, Some(InProgress::AwaitingTracker { .. })) {
                    if let Some(InProgress::AwaitingTracker { cmd }) = self.command.take() {
                        self.start_create_user(cmd, now);
                    }
                }
            }
            LinkEvent::Notice(line) => console::err(&line),
            LinkEvent::Unreachable => {
                self.outage = true;
                console::err("warning: no tracker is reachable; still trying");
            }
            LinkEvent::SessionLost { reason } => {
                console::err(&format!("warning: your session ended: {reason}"));
                self.pause_shares();
                self.user = None;
                self.sync_tickets();
            }
            LinkEvent::TakenOver { message } => {
                // Not an error of the command at hand: the user logged in elsewhere. This
                // client does not log in again by itself (that would take the session back).
                console::err(&format!(
                    "note: you were logged out: {message}; this client does not log in again by itself"
                ));
                self.input.logged_out();
                self.pause_shares();
                self.user = None;
            }
            LinkEvent::Reply { tag, reply } => self.on_reply(tag, reply, now),
        }
    }

    fn on_reply(&mut self, tag: u64, reply: Reply, now: Instant) {
        if self.closing_tag == Some(tag) {
            self.closing_tag = None;
            self.end_session();
            self.stage = Stage::Done;
            return;
        }
        if let Some(bg) = self.background.remove(&tag) {
            return self.on_background_reply(bg, reply);
        }
        let Some(command) = self.command.take() else {
            log::debug!("reply {tag} for nothing in progress");
            return;
        };
        match command {
            InProgress::Simple { cmd, tag: t } if t == tag => self.on_simple_reply(cmd, reply, now),
            InProgress::Login {
                cmd,
                tag: t,
                user,
                step,
            } if t == tag => self.on_login_reply(cmd, user, step, reply, now),
            InProgress::Logout { cmd, tag: t } if t == tag => self.on_logout_reply(cmd, reply),
            InProgress::Uploading {
                cmd,
                tag: t,
                share,
                hashes,
            } if t == tag => self.on_upload_reply(cmd, share, hashes, reply),
            InProgress::Downloading {
                cmd,
                tag: t,
                group,
                file,
                dest,
            } if t == tag => self.on_download_reply(cmd, group, file, dest, reply, now),
            InProgress::Resuming {
                queue,
                step,
                resumed,
            } => self.on_resume_reply(queue, step, resumed, tag, reply, now),
            other => {
                log::debug!("reply {tag} does not belong to the command in progress");
                self.command = Some(other);
            }
        }
    }

    fn on_background_reply(&mut self, bg: Background, reply: Reply) {
        match bg {
            Background::Abandoned => {}
            Background::Names(cmd) => {
                if let Reply::List { lines, .. } = &reply {
                    self.input.learn(&cmd, Some(lines));
                }
            }
            Background::Have => {
                if let Reply::Err { code, message } = reply {
                    log::debug!("have refused: {code} {message}");
                }
            }
            Background::SeedEmpty => {
                if let Reply::Err { code, message } = reply {
                    log::info!("empty file not registered as seeded: {code} {message}");
                }
            }
            Background::Peers(id) => self.on_peers_reply(id, reply),
        }
    }
}
