//! `upload_file`: the path is checked, the file hashed by the peer side a few pieces a tick,
//! then announced with `upload_file` and its hash lines; once the tracker accepts, the file is
//! served and remembered for the next login.

use super::paths::check_upload_path;
use super::{App, InProgress};
use crate::client::console;
use crate::client::peers::store::part_path;
use crate::client::peers::HashJobId;
use crate::client::report;
use crate::client::shares::{self, Share};
use crate::client::shell::Command;
use crate::pieces::{self, Hash};
use crate::protocol::tracker::{Reply, Verb};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

impl App {
    /// The share being prepared is a `Share` from the start: its size and time are those the
    /// hashes must describe, and it is remembered as such once the tracker accepts it.
    pub(super) fn start_upload(&mut self, cmd: Command, path: &Path, group: String, now: Instant) {
        let share = match check_upload_path(path) {
            Ok((abs, file, size, mtime_ns)) => Share {
                group,
                file,
                size,
                mtime_ns,
                path: abs,
            },
            Err(e) => return self.fail(&e),
        };
        let unfinished = self
            .peers
            .records()
            .find(|d| d.is_active() && part_path(d.dest()) == share.path)
            .map(|d| {
                format!(
                    "{} is the unfinished download of {} from group {}; once complete it is shared by itself",
                    share.path.display(),
                    d.file(),
                    d.group()
                )
            });
        if let Some(msg) = unfinished {
            return self.fail(&msg);
        }
        if share.size > pieces::MAX_PIECES * pieces::PIECE_SIZE {
            return self.fail(&format!(
                "{} is larger than the largest file that can be shared (256 GiB)",
                share.path.display()
            ));
        }
        let job = self.next_job;
        self.next_job += 1;
        match self.peers.start_hashing(job, share.path.clone()) {
            Ok(()) => self.set_command(InProgress::Hashing { cmd, job, share }, now),
            Err(e) => self.fail(&format!("cannot read {}: {e}", share.path.display())),
        }
    }

    /// The peer side finished hashing job `job`.
    pub(super) fn on_hashed(
        &mut self,
        job: HashJobId,
        size: u64,
        hashes: Arc<Vec<Hash>>,
        now: Instant,
    ) {
        let (cmd, share) = match self.command.take() {
            Some(InProgress::Hashing { cmd, job: j, share }) if j == job => (cmd, share),
            other => {
                self.command = other;
                return;
            }
        };
        // The file must not have changed while it was hashed, or the hashes describe nothing.
        let same = std::fs::metadata(&share.path)
            .map(|m| shares::stamp(&m))
            .ok()
            == Some((share.size, share.mtime_ns));
        if !same || size != share.size || hashes.len() as u64 != pieces::piece_count(size) {
            return self.fail(&format!(
                "{} changed while it was being hashed; try again",
                share.path.display()
            ));
        }
        let extra: Vec<String> = pieces::hash_lines(&hashes).collect();
        let verb = Verb::UploadFile {
            group: share.group.clone(),
            file: share.file.clone(),
            size,
            npieces: hashes.len() as u64,
        };
        let tag = self.send(&verb, extra, now);
        self.set_command(
            InProgress::Uploading {
                cmd,
                tag,
                share,
                hashes,
            },
            now,
        );
    }

    pub(super) fn on_hash_failed(&mut self, job: HashJobId, reason: &str) {
        match self.command.take() {
            Some(InProgress::Hashing { job: j, share, .. }) if j == job => {
                self.fail(&format!("cannot read {}: {reason}", share.path.display()))
            }
            other => self.command = other,
        }
    }

    pub(super) fn on_upload_reply(
        &mut self,
        cmd: Command,
        share: Share,
        hashes: Arc<Vec<Hash>>,
        reply: Reply,
    ) {
        match reply {
            Reply::Ok(words) => {
                let npieces = hashes.len();
                self.peers.share(
                    &share.group,
                    &share.file,
                    share.path.clone(),
                    share.size,
                    hashes.clone(),
                );
                if let Some(u) = self.user.as_mut() {
                    u.active.insert((share.group.clone(), share.file.clone()));
                    if let Err(e) = u.store.remember(&share, &hashes) {
                        console::err(&format!(
                            "warning: this share will not be resumed after a restart: {e}"
                        ));
                    }
                }
                let extra = if words.first().map(String::as_str) == Some("seeder") {
                    "; the same file was already shared there, you are one more seeder"
                } else {
                    ""
                };
                self.done(&format!(
                    "uploaded {} to {} ({} bytes, {npieces} piece{}){extra}",
                    share.file,
                    share.group,
                    share.size,
                    if npieces == 1 { "" } else { "s" }
                ));
            }
            Reply::Err { code, message } => self.fail(&report::tracker_error(
                &cmd,
                Some(&share.file),
                code,
                &message,
            )),
            Reply::List { .. } => self.fail("the tracker sent an unexpected reply to upload_file"),
        }
    }
}
