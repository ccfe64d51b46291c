//! `download_file` and what follows it: the destination checked, the tracker's description
//! parsed, the download handed to the peer side; then, while it runs, its `peers` requests,
//! its verified pieces announced, and its end (completion note, the finished file shared and
//! remembered, or a failure warning).
//!
//! The download registry is the peer side's (`peers::DownloadRecord`): the engine's state and
//! the app's facts about each download (owner, still shared) live there under one id. The
//! engine alone decides when a download needs peers (`PeerEvent::NeedPeers`, at most once a
//! second with no source, every 3 s otherwise); here a `NeedPeers` becomes one `peers` request
//! unless one for that download is still waiting.

use super::paths::resolve_destination;
use super::{App, Background, InProgress};
use crate::client::console;
use crate::client::peers::{DownloadId, DownloadSpec};
use crate::client::report;
use crate::client::shares::{self, Share, ShareStore};
use crate::client::shell::Command;
use crate::protocol::tracker::{DownloadReply, PeerLine, Reply, Verb};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

impl App {
    /// Checks the destination (the only check of it: see `paths`) and asks the tracker for the
    /// file's description.
    pub(super) fn start_download(
        &mut self,
        cmd: Command,
        group: String,
        file: String,
        dest: &Path,
        now: Instant,
    ) {
        let dest = match resolve_destination(dest, &file) {
            Ok(d) => d,
            Err(e) => return self.fail(&e),
        };
        if let Some(d) = self.peers.downloading_to(&dest) {
            return self.fail(&format!(
                "{} is already being downloaded to {}",
                d.file(),
                dest.display()
            ));
        }
        let verb = Verb::DownloadFile {
            group: group.clone(),
            file: file.clone(),
        };
        let tag = self.send(&verb, vec![], now);
        self.set_command(
            InProgress::Downloading {
                cmd,
                tag,
                group,
                file,
                dest,
            },
            now,
        );
    }

    pub(super) fn on_download_reply(
        &mut self,
        cmd: Command,
        group: String,
        file: String,
        dest: PathBuf,
        reply: Reply,
        now: Instant,
    ) {
        let (head, lines) = match reply {
            Reply::List { head, lines } => (head, lines),
            Reply::Err { code, message } => {
                return self.fail(&report::tracker_error(&cmd, None, code, &message))
            }
            Reply::Ok(_) => {
                return self.fail("the tracker sent an unexpected reply to download_file")
            }
        };
        let DownloadReply {
            size,
            hashes,
            peers,
        } = match DownloadReply::parse(&head, &lines) {
            Ok(x) => x,
            Err(e) => {
                return self.fail(&format!(
                    "the tracker sent a malformed file description ({e})"
                ))
            }
        };
        let id = self.next_download;
        self.next_download += 1;
        let Some(user) = self.user.as_ref() else {
            return self.fail("you logged out before the download could start");
        };
        let spec = DownloadSpec {
            owner: user.name.clone(),
            group: group.clone(),
            file: file.clone(),
            size,
            hashes: Arc::new(hashes.into_owned()),
            dest: dest.clone(),
            claims: user.store.part_claims(),
        };
        if let Err(e) = self.peers.start_download(id, spec, now) {
            return self.fail(&e);
        }
        self.peers.add_peers(id, peers);
        self.done(&format!(
            "downloading {file} from {group} to {}",
            dest.display()
        ));
    }

    /// The engine needs peers for download `id`: one `peers` request, unless one is still
    /// waiting for its reply (that reply answers this need too).
    pub(super) fn ask_peers(&mut self, id: DownloadId, now: Instant) {
        if !self.logged_in() {
            return;
        }
        let Some(d) = self.peers.download(id).filter(|d| d.is_active()) else {
            return;
        };
        let waiting = Background::Peers(id);
        if self.background.values().any(|b| *b == waiting) {
            return;
        }
        let verb = Verb::Peers {
            group: d.group().to_string(),
            file: d.file().to_string(),
        };
        let tag = self.send(&verb, vec![], now);
        self.background.insert(tag, waiting);
    }

    pub(super) fn on_peers_reply(&mut self, id: DownloadId, reply: Reply) {
        let Some(d) = self.peers.download(id) else {
            return;
        };
        let npieces = d.hashes.len();
        match reply {
            Reply::List { lines, .. } => {
                let peers: Vec<PeerLine> = lines
                    .iter()
                    .filter_map(|l| PeerLine::parse(l, npieces))
                    .collect();
                log::debug!("{} peers for {}/{}", peers.len(), d.group(), d.file());
                self.peers.add_peers(id, peers);
            }
            Reply::Err { code, message } => {
                log::info!("peers of {}: {code} {message}", d.file())
            }
            Reply::Ok(_) => {}
        }
    }

    /// Verified pieces are announced only for the user who started the download (another may
    /// have logged in meanwhile) and only while it is shared.
    pub(super) fn on_pieces_verified(&mut self, id: DownloadId, pieces: &[usize], now: Instant) {
        let user = self.user.as_ref().map(|u| u.name.as_str());
        if let Some(d) = self.peers.download(id) {
            if d.shared && user.is_none_or(|u| u == d.owner) {
                self.haves.add(d.group(), d.file(), pieces, now);
            }
        }
    }

    pub(super) fn on_download_failed(&mut self, id: DownloadId, reason: &str) {
        if let Some(d) = self.peers.download(id) {
            console::err(&format!(
                "warning: download of {} from {} failed: {reason}",
                d.file(),
                d.group()
            ));
        }
    }

    pub(super) fn on_download_complete(&mut self, id: DownloadId, now: Instant) {
        let Some(d) = self.peers.download(id) else {
            return;
        };
        let sources = report::sources_note(
            &self.peers.peer_piece_counts(id),
            self.peers.earlier_pieces(id),
        );
        console::err(&format!(
            "note: download of {} complete: {}{sources}",
            d.file(),
            d.dest().display()
        ));
        // The last piece is reported at once so the tracker counts this client as a seeder.
        let (group, file) = (d.group().to_string(), d.file().to_string());
        let stamp = std::fs::metadata(d.dest()).map(|m| shares::stamp(&m));
        let share = stamp.ok().map(|(size, mtime_ns)| Share {
            group: group.clone(),
            file: file.clone(),
            size,
            mtime_ns,
            path: d.dest().to_path_buf(),
        });
        let (owner, hashes, expected) = (d.owner.clone(), d.hashes.clone(), d.size);
        if !d.shared {
            // stop_share while it was downloading: the finished file is not shared.
            if !self.serves(&group, &file) {
                self.peers.unshare(&group, &file);
            }
            return;
        }
        self.flush_haves(now, true);
        let current = self.user.as_ref().is_some_and(|u| u.name == owner);
        if hashes.is_empty() && current && self.link.session().is_some() {
            // No piece, so no `have`: the tracker learns of the new seeder this way (the
            // same content under the same name adds a seeder).
            let verb = Verb::UploadFile {
                group: group.clone(),
                file: file.clone(),
                size: 0,
                npieces: 0,
            };
            let tag = self.send(&verb, vec![], now);
            self.background.insert(tag, Background::SeedEmpty);
        }
        if let Some(share) = share.filter(|s| s.size == expected) {
            let store = ShareStore::new(&self.config.state_dir, &owner);
            if let Err(e) = store.remember(&share, &hashes) {
                console::err(&format!(
                    "warning: {file} will not be shared after a restart: {e}"
                ));
            }
            if let Some(u) = self.user.as_mut().filter(|u| u.name == owner) {
                u.active.insert((group, file));
            }
        }
    }

    /// Cancels this user's running downloads from `group` (they left it); returns their file
    /// names. Their unreported pieces are dropped.
    pub(super) fn cancel_group_downloads(&mut self, group: &str, now: Instant) -> Vec<String> {
        let owner = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        // The registry is in the order started.
        let running: Vec<(DownloadId, String)> = self
            .peers
            .records()
            .filter(|d| d.is_active() && d.group() == group && d.owner == owner)
            .map(|d| (d.id(), d.file().to_string()))
            .collect();
        let mut stopped = Vec::new();
        for (id, file) in running {
            let reason = format!("you left group {group}");
            if self
                .peers
                .cancel_download(self.poll.registry(), id, reason, now)
            {
                stopped.push(file);
            }
        }
        self.haves.discard(|g, _| g == group);
        stopped
    }

    /// `stop_share` of a file this user is downloading: its pieces are no longer announced
    /// and the finished file will not be shared. True if there was such a download.
    pub(super) fn unshare_downloads(&mut self, group: &str, file: &str) -> bool {
        let owner = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let ids: Vec<DownloadId> = self
            .peers
            .records()
            .filter(|d| d.is_active() && d.group() == group && d.file() == file)
            .filter(|d| d.owner == owner)
            .map(|d| d.id())
            .collect();
        for &id in &ids {
            if let Some(d) = self.peers.download_mut(id) {
                d.shared = false;
            }
        }
        if !ids.is_empty() {
            self.haves.discard(|g, f| g == group && f == file);
        }
        !ids.is_empty()
    }
}
