//! The client's peer side: everything that talks to other clients or touches shared file
//! data. The upload listener and the connections it accepts (seeding), the download engine and
//! its peer connections, incremental hashing of files being shared, the piece store on disk.
//!
//! The client's main loop (`client::app`) owns the `mio::Poll`; it hands this module every
//! event whose token is `>= TOKEN_BASE`, calls `tick` once per loop turn, and acts on the
//! `PeerEvent`s that come back (reporting pieces to the tracker, fetching peers, printing notes).
//! Nothing here talks to the tracker and nothing here blocks.

pub mod hasher;
pub mod picker;
pub mod rate;
pub mod store;
pub mod table;

use crate::pieces::{Hash, PieceSet};
use mio::event::Event;
use mio::Registry;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Tokens at or above this value belong to the peer side; the app uses those below.
pub const TOKEN_BASE: usize = 1 << 30;

/// Identifies a download for the life of the client (the app numbers them from 1).
pub type DownloadId = u64;
/// Identifies a hashing job started by `upload_file`.
pub type HashJobId = u64;

/// A peer the tracker said holds pieces of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub user: String,
    pub addr: SocketAddr,
    /// The tracker's view of the peer's pieces: a hint, the peer's own `have` is the truth.
    pub have: PieceSet,
}

/// What the app needs to start a download (from the tracker's `download_file` reply).
#[derive(Clone, Debug)]
pub struct DownloadSpec {
    pub group: String,
    pub file: String,
    pub size: u64,
    pub hashes: Arc<Vec<Hash>>,
    /// Final path; the data goes to `<dest>.part` until every piece is verified.
    pub dest: PathBuf,
}

/// One line of `show_downloads`.
#[derive(Clone, Debug, PartialEq)]
pub struct DownloadStatus {
    pub id: DownloadId,
    pub group: String,
    pub file: String,
    pub state: DownloadState,
    pub pieces_done: usize,
    pub pieces_total: usize,
    /// Bytes per second averaged over the last few seconds.
    pub rate: f64,
    /// Peers currently connected for this download.
    pub peers: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DownloadState {
    /// Checking the pieces of an existing `.part` file before resuming.
    Verifying,
    Downloading,
    Complete,
    Failed(String),
}

/// Things that happened on the peer side that the app must act on.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    /// These pieces were verified and written (or found valid in a resumed `.part`); the app
    /// reports them to the tracker with `have` (batched) — they are already being served.
    PiecesVerified { id: DownloadId, pieces: Vec<usize> },
    /// The download has no usable source (or its periodic refresh is due): ask the tracker for
    /// peers and call `add_peers`.
    NeedPeers { id: DownloadId },
    /// Every piece verified and the file renamed into place; it is now shared like an upload.
    Completed { id: DownloadId },
    /// The download stopped for good (disk error, destination taken...); `.part` is kept.
    Failed { id: DownloadId, reason: String },
    /// `upload_file` hashing finished.
    Hashed {
        job: HashJobId,
        size: u64,
        hashes: Arc<Vec<Hash>>,
    },
    /// `upload_file` hashing failed (file vanished, unreadable...).
    HashFailed { job: HashJobId, reason: String },
}

/// The peer side. See the module documentation.
pub struct PeerSide {}

impl PeerSide {
    /// Binds the upload listener on `listen` (port 0 picks a free port) and registers it.
    /// Returns the side and the address actually bound.
    pub fn new(registry: &Registry, listen: SocketAddr) -> io::Result<(PeerSide, SocketAddr)> {
        let _ = (registry, listen);
        todo!("implemented by the peer-side work")
    }

    /// True if `token` belongs to the peer side.
    pub fn owns(token: mio::Token) -> bool {
        token.0 >= TOKEN_BASE
    }

    /// Handles one readiness event for a peer-side token. Events for tokens that were closed
    /// earlier in the same batch are ignored.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        let _ = (registry, event, now);
        todo!()
    }

    /// Runs deadlines (piece timeouts, reconnects, peer refresh), advances hashing and resume
    /// verification a few pieces at a time, and returns what happened since the last call.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Vec<PeerEvent> {
        let _ = (registry, now);
        todo!()
    }

    /// The earliest moment `tick` has work to do (a deadline), or `None` if it only needs to run
    /// after events. Hashing in progress returns `Some(now)`: the loop must not sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        todo!()
    }

    /// Starts serving a whole file under `(group, file)`. Replaces an earlier share of the same
    /// name.
    pub fn share(
        &mut self,
        group: &str,
        file: &str,
        path: PathBuf,
        size: u64,
        hashes: Arc<Vec<Hash>>,
    ) {
        let _ = (group, file, path, size, hashes);
        todo!()
    }

    /// Stops serving `(group, file)` (a complete download of it included).
    pub fn unshare(&mut self, group: &str, file: &str) {
        let _ = (group, file);
        todo!()
    }

    /// Starts hashing `path` a few pieces per `tick`; ends in `Hashed` or `HashFailed`.
    pub fn start_hashing(&mut self, job: HashJobId, path: PathBuf) -> io::Result<()> {
        let _ = (job, path);
        todo!()
    }

    /// Starts (or resumes from `<dest>.part`) a download. Errors (destination exists, directory
    /// not writable) are sentences for the user.
    pub fn start_download(
        &mut self,
        id: DownloadId,
        spec: DownloadSpec,
        now: Instant,
    ) -> Result<(), String> {
        let _ = (id, spec, now);
        todo!()
    }

    /// Adds or refreshes the sources of a download (addresses may have changed).
    pub fn add_peers(&mut self, id: DownloadId, peers: Vec<PeerInfo>, now: Instant) {
        let _ = (id, peers, now);
        todo!()
    }

    /// Every download in the order started.
    pub fn downloads(&self) -> Vec<DownloadStatus> {
        todo!()
    }

    /// True while any download is still running (end of input waits for these).
    pub fn has_active_downloads(&self) -> bool {
        todo!()
    }
}
