//! One download: its piece table, availability, peers and their connections, the `.part`
//! store and the rate. States: `Verifying` (hashing an existing `.part` a few pieces per tick)
//! → `Downloading` → `Complete` or `Failed`. Every piece is hashed before it is written; the
//! file is renamed into place once every piece is verified.

use super::catalog::{Catalog, Entry};
use super::fetch::{Awaited, ConnState, FetchConn, Incoming};
use super::hasher::sha1;
use super::picker::Availability;
use super::rate::RateMeter;
use super::store::{part_path, sync_dir, PartClaims, PartFile};
use super::table::{PeerKey, PieceTable};
use super::{
    DownloadId, DownloadSpec, DownloadState, DownloadStatus, PeerEvent, PeerInfo, Socket,
    TOKEN_BASE,
};
use crate::auth::ticket::{self, Ticket, TrackerClock};
use crate::pieces::{piece_count, Hash, PieceSet, MAX_PIECES};
use crate::protocol::peer::reason::{BAD_REQUEST, TICKET_EXPIRED};
use crate::protocol::peer::{ranges_lines, Pass, Request};
use crate::runtime::Rng;
use mio::event::Event;
use mio::{Registry, Token};
use slab::Slab;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod connections;

/// `get`s in flight per connection: a seeder holds two pieces of output, so four keeps its
/// output full while the next two requests are already waiting in its socket — enough to hide
/// loopback and LAN round trips, while a stalled peer holds back at most 2 MiB of the queue.
pub const PIPELINE_DEPTH: usize = 4;
/// A requested piece must arrive by then; each piece a peer delivers restarts the clock for
/// its other requests, so only a peer that delivers nothing for this long counts as stalled.
pub const PIECE_TIMEOUT: Duration = Duration::from_secs(20);
/// A `have` reply (or a connect) must come within this; a live peer answers in milliseconds.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Before reconnecting to a peer that closed, failed or stalled: no busy loop on a dead peer.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// How often the app is asked for fresh peers while downloading, so seeders that came back at
/// a new address (or new partial sources) are found within seconds.
pub const PEER_REFRESH: Duration = Duration::from_secs(3);
/// The refresh while fewer than `FEW_SOURCES` peers are connected: in a crowd that starts
/// together, the other downloaders become sources within a second of their first piece, and
/// the sooner they are connected the less the seeder has to send twice.
pub const PEER_REFRESH_FEW: Duration = Duration::from_secs(1);
pub const FEW_SOURCES: usize = 16;
/// The soonest NeedPeers repeats when no source is connected.
pub const NEED_PEERS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often an idle connection asks `want` again: a partial source verifies new pieces.
pub const HAVE_REFRESH: Duration = Duration::from_secs(2);
/// Pieces failing their hash from one peer before that peer is dropped for this download:
/// one could be a disk glitch at the peer, three is a pattern.
pub const MAX_BAD_PIECES: u32 = 3;
/// Pieces of an existing `.part` checked per tick on resume: 8 MiB, a few milliseconds.
pub const VERIFY_PIECES_PER_TICK: usize = 16;

/// What the download needs from the peer side while it runs.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub slots: &'a mut Slab<Socket>,
    pub catalog: &'a mut Catalog,
    pub events: &'a mut Vec<PeerEvent>,
    pub rng: &'a mut Rng,
    pub scratch: &'a mut Vec<u8>,
    /// The tracker's clock: tickets expire by it, and are renewed halfway through.
    pub clock: TrackerClock,
    /// This client's key, proven to the seeders it connects to.
    pub identity: &'a crate::net::identity::Identity,
    pub now: Instant,
}

/// A source of this download (a peer the tracker named), connected or not.
struct Source {
    addr: SocketAddr,
    /// The key the tracker published for this peer: its handshake must prove it.
    key: String,
    /// The connection's slab key while connected.
    conn: Option<PeerKey>,
    /// Earliest moment to connect again after a failure.
    retry_at: Instant,
    bad_pieces: u32,
    /// Dropped for bad pieces: never used again by this download.
    banned: bool,
    /// Pieces this peer sent corrupt: fetched from someone else.
    failed: HashSet<usize>,
    /// Verified pieces received from this peer.
    pieces: u64,
    /// The freshest ticket the tracker gave us for this peer (`want`/`watch` show it).
    ticket: Option<Ticket>,
}

pub struct Download {
    pub id: DownloadId,
    /// The user downloading: the name our tickets were issued to.
    owner: String,
    pub group: String,
    pub file: String,
    size: u64,
    hashes: Arc<Vec<Hash>>,
    dest: PathBuf,
    part: PathBuf,
    /// Where the claim on `part` is recorded; released once the file is in place.
    claims: PartClaims,
    state: DownloadState,
    store: Option<PartFile>,
    table: PieceTable,
    avail: Availability,
    peers: HashMap<String, Source>,
    conns: HashMap<PeerKey, FetchConn>,
    rate: RateMeter,
    /// Next piece to check while Verifying.
    verify_next: usize,
    /// Pieces found valid in a resumed `.part` while Verifying.
    earlier: u64,
    /// Verified since the last tick, reported as one PiecesVerified.
    verified: Vec<usize>,
    next_refresh: Instant,
    last_need_peers: Option<Instant>,
    /// Pieces went back to the queue or a peer announced more: connections may request.
    dirty: bool,
    /// A disk error met while handling a connection; the download fails after it.
    failure: Option<String>,
    /// From `add_peers`, waiting for the next tick.
    new_peers: Vec<PeerInfo>,
    /// Verified since the watched peers were last told (`has` notices).
    unannounced: Vec<usize>,
}

impl Download {
    /// Checks the destination and opens (or resumes) `<dest>.part`.
    pub fn start(
        id: DownloadId,
        spec: DownloadSpec,
        now: Instant,
        catalog: &mut Catalog,
    ) -> Result<Download, String> {
        let npieces = piece_count(spec.size);
        if npieces > MAX_PIECES || spec.hashes.len() as u64 != npieces {
            return Err(format!(
                "the tracker's description of {} is inconsistent ({} bytes, {} hashes)",
                spec.file,
                spec.size,
                spec.hashes.len()
            ));
        }
        let dest = spec.dest;
        if dest.exists() {
            return Err(format!("{} already exists", dest.display()));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(format!("directory {} does not exist", dir.display()));
        }
        let part = part_path(&dest);
        let (store, existed) = PartFile::open(&part, spec.size, &spec.claims).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                format!("will not write {}: {e}", part.display())
            } else {
                format!(
                    "cannot write {} (is {} writable?): {e}",
                    part.display(),
                    dir.display()
                )
            }
        })?;
        let npieces = npieces as usize;
        if catalog.get(&spec.group, &spec.file).is_none() {
            catalog.insert(
                &spec.group,
                &spec.file,
                Entry::download(part.clone(), spec.size, PieceSet::empty(npieces)),
            );
        }
        Ok(Download {
            id,
            owner: spec.owner,
            group: spec.group,
            file: spec.file,
            size: spec.size,
            hashes: spec.hashes,
            dest,
            part,
            state: if existed && npieces > 0 {
                DownloadState::Verifying
            } else {
                DownloadState::Downloading
            },
            claims: spec.claims,
            store: Some(store),
            table: PieceTable::new(npieces),
            avail: Availability::new(npieces),
            peers: HashMap::new(),
            conns: HashMap::new(),
            rate: RateMeter::new(),
            verify_next: 0,
            earlier: 0,
            verified: Vec::new(),
            next_refresh: now + PEER_REFRESH_FEW,
            last_need_peers: None,
            dirty: false,
            failure: None,
            new_peers: Vec::new(),
            unannounced: Vec::new(),
        })
    }

    pub fn dest(&self) -> &std::path::Path {
        &self.dest
    }

    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            DownloadState::Verifying | DownloadState::Downloading
        )
    }

    pub fn status(&self, now: Instant) -> DownloadStatus {
        DownloadStatus {
            id: self.id,
            group: self.group.clone(),
            file: self.file.clone(),
            state: self.state.clone(),
            pieces_done: self.table.have_count(),
            pieces_total: self.table.len(),
            rate: if self.is_active() {
                self.rate.rate(now)
            } else {
                0.0
            },
            peers: self
                .conns
                .values()
                .filter(|c| c.state == ConnState::Live)
                .count(),
        }
    }

    /// Verified pieces received from each peer, by user.
    pub fn peer_piece_counts(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .peers
            .iter()
            .map(|(u, p)| (u.clone(), p.pieces))
            .collect();
        v.sort();
        v
    }

    /// Pieces found valid in a resumed `.part` (not fetched by this run).
    pub fn earlier_pieces(&self) -> u64 {
        self.earlier
    }

    fn on_piece(
        &mut self,
        ctx: &mut Ctx,
        key: PeerKey,
        conn: &mut FetchConn,
        index: usize,
        len: usize,
    ) -> Result<(), String> {
        if self.table.is_have(index) {
            return Ok(()); // a second copy (endgame): harmless
        }
        let data = conn.piece_data(len);
        let good = self.hashes.get(index).is_some_and(|h| sha1(data) == *h);
        let Some(peer) = self.peers.get_mut(&conn.user) else {
            return Err("unknown peer".into());
        };
        if !good {
            self.table.hash_failed(index, key);
            self.dirty = true;
            peer.bad_pieces += 1;
            peer.failed.insert(index);
            log::warn!(
                "download {}: piece {index} from {} failed its hash",
                self.id,
                conn.user
            );
            if peer.bad_pieces >= MAX_BAD_PIECES {
                peer.banned = true;
                return Err(format!("{} pieces failed their hash", peer.bad_pieces));
            }
            return Ok(());
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        if let Err(e) = store.write_piece(index, data) {
            self.failure = Some(format!("cannot write {}: {e}", self.part.display()));
            return Ok(());
        }
        self.table.hash_ok(index);
        self.table.extend(key, ctx.now + PIECE_TIMEOUT);
        ctx.catalog.mark(&self.group, &self.file, &self.part, index);
        self.verified.push(index);
        self.unannounced.push(index);
        peer.pieces += 1;
        self.rate.record(ctx.now, len as u64);
        Ok(())
    }

    /// After I/O: disk failure, completion, pieces to hand to other connections.
    fn after_io(&mut self, ctx: &mut Ctx) {
        if let Some(reason) = self.failure.take() {
            self.fail(ctx, reason);
            return;
        }
        if self.state == DownloadState::Downloading && self.table.is_complete() {
            self.finish(ctx);
            return;
        }
        if (self.dirty || !self.unannounced.is_empty()) && self.state == DownloadState::Downloading
        {
            self.dirty = false;
            self.fill_all(ctx);
        }
    }

    fn report_verified(&mut self, ctx: &mut Ctx) {
        if !self.verified.is_empty() {
            let mut pieces = std::mem::take(&mut self.verified);
            pieces.sort_unstable();
            ctx.events.push(PeerEvent::PiecesVerified {
                id: self.id,
                pieces,
            });
        }
    }

    fn close_all(&mut self, ctx: &mut Ctx, why: &str) {
        let keys: Vec<PeerKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(ctx, key, why);
        }
    }

    fn fail(&mut self, ctx: &mut Ctx, reason: String) {
        log::warn!("download {} of {} failed: {reason}", self.id, self.file);
        self.close_all(ctx, "download failed");
        self.store = None;
        self.report_verified(ctx);
        self.state = DownloadState::Failed(reason.clone());
        ctx.events.push(PeerEvent::Failed {
            id: self.id,
            reason,
        });
    }

    /// Stops the download for good at the user's request (e.g. they left its group): its
    /// connections close, its pieces are no longer served, the `.part` is kept for a later
    /// resume. No event: the app asked for it. False if it was not running.
    pub fn cancel(&mut self, ctx: &mut Ctx, reason: String) -> bool {
        if !self.is_active() {
            return false;
        }
        self.close_all(ctx, "download cancelled");
        self.store = None;
        self.verified.clear();
        self.new_peers.clear();
        if ctx
            .catalog
            .get(&self.group, &self.file)
            .is_some_and(|e| e.path == self.part)
        {
            ctx.catalog.remove(&self.group, &self.file);
        }
        self.state = DownloadState::Failed(reason);
        true
    }

    /// Every piece verified: flush, rename into place, make the rename durable, and serve the
    /// file from there. Writeback started as pieces landed, so the flush is short.
    fn finish(&mut self, ctx: &mut Ctx) {
        self.close_all(ctx, "download complete");
        if let Some(Err(e)) = self.store.take().map(|s| s.sync()) {
            let reason = format!("cannot flush {} to disk: {e}", self.part.display());
            return self.fail(ctx, reason);
        }
        if self.dest.exists() {
            let reason = format!(
                "{} was created by something else meanwhile; the data is in {}",
                self.dest.display(),
                self.part.display()
            );
            return self.fail(ctx, reason);
        }
        if let Err(e) = std::fs::rename(&self.part, &self.dest) {
            let reason = format!(
                "cannot rename {} to {}: {e}",
                self.part.display(),
                self.dest.display()
            );
            return self.fail(ctx, reason);
        }
        self.claims.release(&self.part);
        if let Some(dir) = self.dest.parent() {
            if let Err(e) = sync_dir(dir) {
                // The file is complete and in place; only its survival of a power loss in the
                // next few seconds is in doubt, which is no reason to fail the download.
                log::warn!("cannot fsync {} after the rename: {e}", dir.display());
            }
        }
        ctx.catalog.insert(
            &self.group,
            &self.file,
            Entry::download(
                self.dest.clone(),
                self.size,
                PieceSet::full(self.table.len()),
            ),
        );
        self.report_verified(ctx);
        self.state = DownloadState::Complete;
        ctx.events.push(PeerEvent::Completed { id: self.id });
    }

    /// Deadlines, resume verification, reconnects, peer refresh; once per loop turn.
    pub fn tick(&mut self, ctx: &mut Ctx) {
        if !self.new_peers.is_empty() {
            self.add_peers(ctx);
        }
        match self.state {
            DownloadState::Verifying => self.verify_step(ctx),
            DownloadState::Downloading => self.tick_downloading(ctx),
            _ => {}
        }
        if self.is_active() {
            self.after_io(ctx);
        }
        self.report_verified(ctx);
    }

    fn verify_step(&mut self, ctx: &mut Ctx) {
        let Some(store) = &self.store else {
            return;
        };
        let end = (self.verify_next + VERIFY_PIECES_PER_TICK).min(self.table.len());
        for i in self.verify_next..end {
            match store.check_piece(i, &self.hashes[i], ctx.scratch) {
                Ok(true) => {
                    self.earlier += 1;
                    self.table.hash_ok(i);
                    ctx.catalog.mark(&self.group, &self.file, &self.part, i);
                    self.verified.push(i);
                }
                Ok(false) => {}
                Err(e) => {
                    self.failure = Some(format!("cannot read {}: {e}", self.part.display()));
                    return;
                }
            }
        }
        self.verify_next = end;
        if end == self.table.len() {
            self.state = DownloadState::Downloading;
            self.connect_due(ctx);
        }
    }

    fn tick_downloading(&mut self, ctx: &mut Ctx) {
        let now = ctx.now;
        let mut stalled: HashSet<PeerKey> = self
            .table
            .timeout(now)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        stalled.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
                .map(|(&k, _)| k),
        );
        for key in stalled {
            self.close(ctx, key, "stalled");
        }
        // Idle connections ask again what the peer holds: a partial source grows.
        let idle: Vec<PeerKey> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.state == ConnState::Live
                    && !c.watched
                    && c.pending.is_empty()
                    && c.next_want <= now
            })
            .map(|(&k, _)| k)
            .collect();
        // Connections whose ticket is halfway through its life, when the tracker has given a
        // fresher one: the same request again on the same connection renews the grant.
        let renew: Vec<PeerKey> = self
            .conns
            .iter()
            .filter(|(k, c)| {
                !idle.contains(k)
                    && c.state == ConnState::Live
                    && c.renew_at.is_some_and(|t| t <= now)
                    && !c
                        .pending
                        .iter()
                        .any(|p| matches!(p, Awaited::Want | Awaited::Watch))
                    && self
                        .peers
                        .get(&c.user)
                        .and_then(|p| p.ticket)
                        .is_some_and(|t| Some(t.expiry) > c.ticket_sent)
            })
            .map(|(&k, _)| k)
            .collect();
        for key in idle.into_iter().chain(renew) {
            if let Some(mut conn) = self.conns.remove(&key) {
                let watch = conn.watched;
                self.ask(ctx, &mut conn, watch);
                conn.next_want = now + HAVE_REFRESH;
                match conn.flush(ctx.registry, Token(TOKEN_BASE + key)) {
                    Ok(()) => {
                        self.conns.insert(key, conn);
                    }
                    Err(e) => self.drop_conn(ctx, key, conn, &format!("{e}")),
                }
            }
        }
        self.connect_due(ctx);
        let no_source = self.conns.is_empty();
        let since_last = self
            .last_need_peers
            .map(|t| now.saturating_duration_since(t));
        if now >= self.next_refresh
            || (no_source && since_last.is_none_or(|d| d >= NEED_PEERS_MIN_INTERVAL))
        {
            ctx.events.push(PeerEvent::NeedPeers { id: self.id });
            self.last_need_peers = Some(now);
            self.next_refresh = now + self.refresh_interval();
        }
    }

    /// The earliest moment `tick` has work for this download.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        match self.state {
            DownloadState::Verifying => return Some(now),
            DownloadState::Downloading => {}
            _ => return None,
        }
        if !self.verified.is_empty()
            || !self.unannounced.is_empty()
            || self.dirty
            || self.table.is_complete()
            || !self.new_peers.is_empty()
        {
            return Some(now);
        }
        let mut next = self.next_refresh;
        if self.conns.is_empty() {
            let t = self
                .last_need_peers
                .map_or(now, |t| t + NEED_PEERS_MIN_INTERVAL);
            next = next.min(t);
        }
        let candidates = self
            .table
            .next_deadline()
            .into_iter()
            .chain(self.conns.values().filter_map(|c| c.deadline))
            .chain(
                self.conns
                    .values()
                    .filter(|c| c.state == ConnState::Live && !c.watched && c.pending.is_empty())
                    .map(|c| c.next_want),
            )
            .chain(
                self.peers
                    .values()
                    .filter(|p| !p.banned && p.conn.is_none())
                    .map(|p| p.retry_at),
            )
            .chain(self.conns.values().filter_map(|c| {
                let fresher = self
                    .peers
                    .get(&c.user)
                    .and_then(|p| p.ticket)
                    .is_some_and(|t| Some(t.expiry) > c.ticket_sent);
                c.renew_at.filter(|_| fresher && c.state == ConnState::Live)
            }));
        Some(candidates.fold(next, Instant::min))
    }
}
