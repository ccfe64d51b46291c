//! The client's peer side: everything that talks to other clients or touches shared file
//! data. The upload listener and the connections it accepts (seeding), the download engine and
//! its peer connections, incremental hashing of files being shared, the piece store on disk.
//!
//! The client's main loop (`client::app`) owns the `mio::Poll`; it hands this module every
//! event whose token is `>= TOKEN_BASE`, calls `tick` once per loop turn, and acts on the
//! `PeerEvent`s that come back (reporting pieces to the tracker, fetching peers, printing notes).
//! Nothing here talks to the tracker and nothing here blocks.
//!
//! The download registry (registry.rs) is here and nowhere else: `DownloadRecord` keeps each
//! download's engine with the app's facts about it, so the app holds no second map by
//! `DownloadId`.

//!
//! Modules, one job each:
//! - `catalog`  — what this client serves: (group, file) → path and verified pieces
//! - `seeder`   — upload connections: answer `want`/`get` from the catalog, bounded output
//! - `gate`     — the ticket check at `want`/`watch` and each connection's grants
//! - `download` — one download: its peers, piece table, store; Verifying → Downloading → done
//! - `fetch`    — one download connection: connect, requests, replies, payload into a buffer
//! - `table`    — piece states (have / in flight / queued) and their named transitions
//! - `picker`   — availability counts and the rarest-first choice
//! - `store`    — the `.part` file: pwrite/pread of whole pieces, the resume check
//! - `hasher`   — SHA-1 of pieces; hashing a file to share a few pieces per tick
//! - `rate`     — bytes per second over the last few seconds
//! - `limit`    — the upload limit: a token bucket shared by every upload connection
//! - `superseed` — a first seeder's offers to a crowd: each piece to one downloader first
//!
//! Tokens: the listener and every connection live in one slab; token = `TOKEN_BASE + key`.
//! A closed connection's key is freed at once; a later event in the same batch for it finds
//! nothing (ignored) or a newer connection, for which a spurious readiness is harmless.

pub mod catalog;
pub mod download;
pub mod fetch;
pub mod gate;
pub mod hasher;
pub mod limit;
pub mod picker;
pub mod rate;
mod registry;
pub mod seeder;
pub mod slots;
pub mod store;
pub mod superseed;
pub mod table;

use crate::auth::ticket::{TicketKey, TrackerClock};
use crate::net::identity::Identity;
use crate::net::secure::{Conversation, Role};
use crate::net::secure_stream::SecureStream;
use crate::pieces::{piece_count, Hash, MAX_PIECES};
use crate::runtime::Rng;
use catalog::{Catalog, Entry};
use download::{Ctx, Download};
use gate::TicketGate;
use hasher::{HashJob, HashStep};
use limit::TokenBucket;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
pub use registry::DownloadRecord;
use seeder::{UploadConn, MAX_UPLOADS};
use slab::Slab;
use slots::UploadSlots;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
pub use store::PartClaims;

/// Bytes of files being shared hashed per tick, across all jobs: 8 MiB is a few milliseconds
/// of SHA-1, so the loop stays responsive while a large file is hashed.
pub const HASH_BYTES_PER_TICK: u64 = 8 * 1024 * 1024;

/// Tokens at or above this value belong to the peer side; the app uses those below.
pub const TOKEN_BASE: usize = 1 << 30;

/// Identifies a download for the life of the client (the app numbers them from 1).
pub type DownloadId = u64;
/// Identifies a hashing job started by `upload_file`.
pub type HashJobId = u64;

/// A peer the tracker said holds pieces of a file: a peer line of `peers` or
/// `download_file`, as the tracker protocol parses it.
pub type PeerInfo = crate::protocol::tracker::PeerLine;

/// What the app needs to start a download (from the tracker's `download_file` reply).
#[derive(Clone, Debug)]
pub struct DownloadSpec {
    /// The user whose session started it (see `DownloadRecord::owner`).
    pub owner: String,
    pub group: String,
    pub file: String,
    pub size: u64,
    pub hashes: Arc<Vec<Hash>>,
    /// Final path; the data goes to `<dest>.part` until every piece is verified.
    pub dest: PathBuf,
    /// The `.part` files this user's downloads created (only those are ever resumed).
    pub claims: PartClaims,
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

/// What a slab entry holds: one socket of the peer side.
pub enum Socket {
    Listener(TcpListener),
    Upload(Box<UploadConn>),
    /// A connection of this download; the download owns it.
    Fetch(DownloadId),
}

/// The peer side. See the module documentation.
pub struct PeerSide {
    /// What a download borrows while it runs (`Shared::ctx`).
    shared: Shared,
    /// The download registry, in the order started (see `DownloadRecord`).
    downloads: Vec<DownloadRecord>,
    hash_jobs: Vec<HashJob>,
    uploads: usize,
    /// Each upload connection's source address and last activity: the per-address cap and
    /// the idle close (`slots.rs`).
    upload_slots: UploadSlots,
    /// `--upload-limit`: one bucket for all uploads together; `None` is unlimited.
    upload_limit: Option<TokenBucket>,
    /// Upload connections the limit deferred, resumed in this order (fair) once it allows.
    throttled: VecDeque<usize>,
}

/// The parts of the peer side a download works with: apart from `downloads`, so a download
/// can be driven with them lent as its `Ctx` while it is borrowed from the registry.
struct Shared {
    slots: Slab<Socket>,
    catalog: Catalog,
    events: Vec<PeerEvent>,
    rng: Rng,
    /// One piece of scratch space for hashing and resume checks, reused.
    scratch: Vec<u8>,
    /// The session's ticket key and the tracker's clock: who may fetch what (`gate`).
    gate: TicketGate,
    /// This client's static key for this run (the one its tracker publishes): proven to
    /// downloaders as the seeder, and to seeders as the downloader.
    identity: Identity,
}

impl Shared {
    fn ctx<'a>(&'a mut self, registry: &'a Registry, now: Instant) -> Ctx<'a> {
        Ctx {
            registry,
            slots: &mut self.slots,
            catalog: &mut self.catalog,
            events: &mut self.events,
            rng: &mut self.rng,
            scratch: &mut self.scratch,
            clock: self.gate.clock(),
            identity: &self.identity,
            now,
        }
    }
}

impl PeerSide {
    /// Binds the upload listener on `listen` (port 0 picks a free port) and registers it.
    /// Returns the side and the address actually bound.
    pub fn new(
        registry: &Registry,
        listen: SocketAddr,
        identity: Identity,
    ) -> io::Result<(PeerSide, SocketAddr)> {
        let mut listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let mut slots = Slab::new();
        let entry = slots.vacant_entry();
        registry.register(
            &mut listener,
            Token(TOKEN_BASE + entry.key()),
            Interest::READABLE,
        )?;
        entry.insert(Socket::Listener(listener));
        let side = PeerSide {
            shared: Shared {
                slots,
                catalog: Catalog::default(),
                events: Vec::new(),
                rng: Rng::new(crate::runtime::seed_u64()),
                scratch: Vec::new(),
                gate: TicketGate::default(),
                identity,
            },
            downloads: Vec::new(),
            hash_jobs: Vec::new(),
            uploads: 0,
            upload_slots: UploadSlots::default(),
            upload_limit: None,
            throttled: VecDeque::new(),
        };
        Ok((side, addr))
    }

    /// True if `token` belongs to the peer side.
    pub fn owns(token: mio::Token) -> bool {
        token.0 >= TOKEN_BASE
    }

    /// Handles one readiness event for a peer-side token. Events for tokens that were closed
    /// earlier in the same batch are ignored.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        let Some(key) = event.token().0.checked_sub(TOKEN_BASE) else {
            return;
        };
        match self.shared.slots.get_mut(key) {
            None => {}
            Some(Socket::Listener(_)) => self.accept(registry, key),
            Some(Socket::Upload(_)) => self.service_upload(registry, key, now, false),
            Some(Socket::Fetch(id)) => {
                let id = *id;
                let Some(record) = self.downloads.iter_mut().find(|d| d.id() == id) else {
                    return;
                };
                let mut ctx = self.shared.ctx(registry, now);
                record.engine.on_event(&mut ctx, key, event);
            }
        }
    }

    /// Lets upload connection `key` read and answer; closes it when it is done; remembers it
    /// for `tick` if the upload limit deferred it. `queued`: this is its turn from the queue of
    /// deferred connections.
    fn service_upload(&mut self, registry: &Registry, key: usize, now: Instant, queued: bool) {
        // Under the limit, a connection with news while others wait for their turn only
        // writes and joins the queue, or the ones asking most often would starve the rest.
        let turn = queued || self.upload_limit.is_none() || self.throttled.is_empty();
        let Some(Socket::Upload(conn)) = self.shared.slots.get_mut(key) else {
            return;
        };
        self.upload_slots.touch(key, now);
        let token = Token(TOKEN_BASE + key);
        let keep = match conn.service(
            registry,
            token,
            (&mut self.shared.catalog, &self.shared.gate),
            self.upload_limit.as_mut(),
            turn,
            now,
        ) {
            Ok(keep) => keep,
            Err(e) => {
                log::debug!("upload connection closed: {e}");
                false
            }
        };
        if !keep {
            self.drop_upload(registry, key);
        } else if conn.deferred() && !self.throttled.contains(&key) {
            self.throttled.push_back(key);
        }
    }

    fn drop_upload(&mut self, registry: &Registry, key: usize) {
        if let Some(Socket::Upload(mut conn)) = self.shared.slots.try_remove(key) {
            let _ = registry.deregister(conn.stream_mut());
            seeder::leave_crowd(&mut self.shared.catalog, conn.watching(), TOKEN_BASE + key);
            log::info!(
                "upload connection closed: {} bytes of pieces sent on it",
                conn.piece_bytes
            );
            self.uploads -= 1;
            self.upload_slots.released(key);
        }
    }

    /// The ticket key of the logged-in session (`None`: logged out, serve no one) and the
    /// tracker's clock, which tickets expire by (the downloads renew theirs by it too).
    pub fn set_tickets(&mut self, key: Option<TicketKey>, clock: TrackerClock) {
        self.shared.gate = TicketGate::new(key, clock);
    }

    /// Limits all uploads together to `rate` bytes per second (`None`: unlimited).
    pub fn set_upload_limit(&mut self, rate: Option<u64>, now: Instant) {
        self.upload_limit = rate.map(|r| TokenBucket::new(r, now));
    }

    /// Accepts until the listener has no more; past `MAX_UPLOADS`, or past
    /// `slots::MAX_UPLOADS_PER_ADDR` from one address, `err busy` and close.
    fn accept(&mut self, registry: &Registry, key: usize) {
        let mut accepted = Vec::new();
        if let Some(Socket::Listener(listener)) = self.shared.slots.get(key) {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => accepted.push(stream),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Out of descriptors, typically; the pending peers wait for the next
                        // connection's readiness or retry themselves.
                        log::warn!("cannot accept a peer connection: {e}");
                        break;
                    }
                }
            }
        }
        for stream in accepted {
            self.add_upload(registry, stream);
        }
    }

    fn add_upload(&mut self, registry: &Registry, mut stream: TcpStream) {
        let Ok(peer) = stream.peer_addr() else {
            return; // already gone
        };
        let admitted = if self.uploads >= MAX_UPLOADS {
            Err("every upload slot is taken")
        } else {
            self.upload_slots.admits(peer.ip(), MAX_UPLOADS)
        };
        if let Err(why) = admitted {
            log::debug!("refused an upload connection from {peer}: {why}");
            // Best effort, in clear instead of a handshake (it tells nothing): a fresh
            // socket's buffer takes this short line, and the downloader reports it.
            let _ = stream.write(b"err busy\n");
            return;
        }
        let mut stream = match SecureStream::new(
            stream,
            Role::Responder,
            &self.shared.identity,
            None,
            Conversation::ClientClient,
            false,
        ) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot start a secure channel for a peer: {e}");
                return;
            }
        };
        let entry = self.shared.slots.vacant_entry();
        let token = Token(TOKEN_BASE + entry.key());
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
            log::warn!("cannot register a peer connection: {e}");
            return;
        }
        self.upload_slots
            .taken(entry.key(), peer.ip(), Instant::now());
        entry.insert(Socket::Upload(Box::new(UploadConn::new(stream))));
        self.uploads += 1;
        // Requests may already be waiting; edge-triggered readiness reports them anyway, as
        // the registration happens after they arrived.
    }

    /// Runs deadlines (piece timeouts, reconnects, peer refresh), advances hashing and resume
    /// verification a few pieces at a time, and returns what happened since the last call.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Vec<PeerEvent> {
        let mut budget = HASH_BYTES_PER_TICK;
        let mut i = 0;
        while i < self.hash_jobs.len() && budget > 0 {
            let step = self.hash_jobs[i].step(&mut self.shared.scratch, budget);
            budget = 0; // one job per tick keeps the per-tick bound simple
            let job = self.hash_jobs[i].id;
            match step {
                HashStep::More => i += 1,
                HashStep::Done { size, hashes } => {
                    self.hash_jobs.remove(i);
                    self.shared
                        .events
                        .push(PeerEvent::Hashed { job, size, hashes });
                }
                HashStep::Failed(reason) => {
                    self.hash_jobs.remove(i);
                    self.shared
                        .events
                        .push(PeerEvent::HashFailed { job, reason });
                }
            }
        }
        let mut ctx = self.shared.ctx(registry, now);
        for record in &mut self.downloads {
            record.engine.tick(&mut ctx);
        }
        self.resume_throttled(registry, now);
        for key in self.upload_slots.idle(now) {
            log::info!(
                "closing an upload connection idle for {} s",
                slots::UPLOAD_IDLE.as_secs()
            );
            self.drop_upload(registry, key);
        }
        let tracker_now = self.shared.gate.now(crate::auth::ticket::unix_now());
        for key in seeder::announce(
            &mut self.shared.slots,
            &mut self.shared.catalog,
            registry,
            now,
            tracker_now,
        ) {
            self.drop_upload(registry, key);
        }
        std::mem::take(&mut self.shared.events)
    }

    /// Once the upload limit allows, serves the deferred connections oldest first; those it
    /// defers again go to the back. A closed key is skipped; a reused one gets a harmless
    /// extra `service`.
    fn resume_throttled(&mut self, registry: &Registry, now: Instant) {
        let mut n = self.throttled.len();
        while n > 0 && self.upload_limit.as_mut().is_none_or(|b| b.may_send(now)) {
            n -= 1;
            let Some(key) = self.throttled.pop_front() else {
                break;
            };
            self.service_upload(registry, key, now, true);
        }
    }

    /// The earliest moment `tick` has work to do (a deadline), or `None` if it only needs to run
    /// after events. Hashing in progress returns `Some(now)`: the loop must not sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        if !self.hash_jobs.is_empty() || !self.shared.events.is_empty() {
            return Some(now);
        }
        let throttled = match (&self.upload_limit, self.throttled.is_empty()) {
            (Some(b), false) => Some(b.ready_at(now)),
            (None, false) => Some(now),
            _ => None,
        };
        self.downloads
            .iter()
            .filter_map(|d| d.engine.next_deadline(now))
            .chain(throttled)
            .chain(self.shared.catalog.crowd_deadline())
            .chain(self.upload_slots.next_idle())
            .min()
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
        let npieces = piece_count(size).min(MAX_PIECES) as usize;
        if hashes.len() != npieces {
            log::warn!(
                "share of {file}: {} hashes for {npieces} pieces",
                hashes.len()
            );
        }
        self.shared
            .catalog
            .insert(group, file, Entry::share(path, size, npieces));
    }

    /// Stops serving `(group, file)` (a complete download of it included).
    pub fn unshare(&mut self, group: &str, file: &str) {
        self.shared.catalog.remove(group, file);
    }

    /// Starts hashing `path` a few pieces per `tick`; ends in `Hashed` or `HashFailed`.
    pub fn start_hashing(&mut self, job: HashJobId, path: PathBuf) -> io::Result<()> {
        self.hash_jobs.push(HashJob::open(job, path)?);
        Ok(())
    }

    /// `upload_file` hashing in progress: file name, bytes hashed, bytes in all.
    pub fn hashing(&self) -> Vec<(String, u64, u64)> {
        self.hash_jobs
            .iter()
            .map(|j| {
                let (path, done, size) = j.progress();
                let name = path.file_name().unwrap_or(path.as_os_str());
                (name.to_string_lossy().into_owned(), done, size)
            })
            .collect()
    }

    /// Upload connections currently open (at most `seeder::MAX_UPLOADS`); for tests and
    /// diagnostics.
    pub fn upload_connections(&self) -> usize {
        self.uploads
    }
}
