//! The in-process peer-side harness shared by the `peer_*` tests: a `Node` is one `PeerSide`
//! with its own `mio::Poll`, turned by the test's one thread in bounded loops (`drive`,
//! `spin`), talking to the other nodes over real loopback sockets; and the helpers that make
//! files, hashes and download specs for them.
#![allow(dead_code)]

use groupshare::client::peers::hasher::sha1;
use groupshare::client::peers::store::{part_path, PartClaims, PartFile};
use groupshare::client::peers::{
    DownloadId, DownloadSpec, DownloadStatus, PeerEvent, PeerInfo, PeerSide,
};
use groupshare::net::identity::Identity;
use groupshare::net::secure::{Conversation, Role};
use groupshare::net::secure_stream::SecureStream;
use groupshare::pieces::{to_hex, Hash, PieceSet, PIECE_SIZE};
use groupshare::testkit::tickets;
use mio::{Events, Poll};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const GROUP: &str = "g";
/// Every wait gives up after this (a deadline against hanging, not a speed requirement); the
/// tests finish in well under a second each when right.
pub const LIMIT: Duration = Duration::from_secs(30);

pub struct Node {
    pub name: String,
    pub poll: Poll,
    pub events: Events,
    pub side: PeerSide,
    pub addr: SocketAddr,
    /// This node's static key (hex), as its tracker would publish it.
    pub key: String,
    /// Everything `tick` returned, in order.
    pub log: Vec<PeerEvent>,
    /// What this node's "tracker" answers to NeedPeers, per download.
    pub sources: HashMap<DownloadId, Vec<PeerInfo>>,
}

impl Node {
    pub fn new(name: &str) -> Node {
        let poll = Poll::new().unwrap();
        let id = Identity::generate().unwrap();
        let key = to_hex(id.public());
        let (mut side, addr) =
            PeerSide::new(poll.registry(), "127.0.0.1:0".parse().unwrap(), id).unwrap();
        tickets::admit_test_tickets(&mut side);
        Node {
            key,
            name: name.to_string(),
            poll,
            events: Events::with_capacity(256),
            side,
            addr,
            log: Vec::new(),
            sources: HashMap::new(),
        }
    }

    /// This node as a source holding `have`.
    pub fn info(&self, have: PieceSet) -> PeerInfo {
        PeerInfo {
            user: self.name.clone(),
            addr: self.addr,
            have,
            // Issued for the download when offered (`ticketed`).
            ticket: None,
            key: self.key.clone(),
        }
    }

    /// This node as a seeder of all `n` pieces.
    pub fn full_info(&self, n: usize) -> PeerInfo {
        self.info(PieceSet::full(n))
    }

    /// One loop turn, as the app does it: poll (briefly: not at all if a deadline has
    /// passed, else 2 ms), events, tick, act on NeedPeers.
    pub fn turn(&mut self) {
        let now = Instant::now();
        let timeout = match self.side.next_deadline() {
            Some(d) if d <= now => Duration::ZERO,
            _ => Duration::from_millis(2),
        };
        self.turn_for(timeout);
    }

    /// One loop turn that sleeps until the peer side's deadline (at most `max_wait`). True if
    /// the turn did not sleep at all.
    pub fn turn_paced(&mut self, max_wait: Duration) -> bool {
        let now = Instant::now();
        let timeout = match self.side.next_deadline() {
            Some(d) => d.saturating_duration_since(now).min(max_wait),
            None => max_wait,
        };
        self.turn_for(timeout);
        timeout.is_zero()
    }

    /// One loop turn polling for at most `timeout`: events, tick, answer NeedPeers from
    /// `sources`, log what `tick` returned.
    pub fn turn_for(&mut self, timeout: Duration) {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("poll: {e}"),
        }
        let now = Instant::now();
        for ev in self.events.iter() {
            assert!(PeerSide::owns(ev.token()));
            self.side.handle_event(self.poll.registry(), ev, now);
        }
        let out = self.side.tick(self.poll.registry(), Instant::now());
        for ev in &out {
            if let PeerEvent::NeedPeers { id } = ev {
                if let Some(peers) = self.sources.get(id) {
                    let peers = self.ticketed(*id, peers.clone());
                    self.side.add_peers(*id, peers);
                }
            }
        }
        self.log.extend(out);
    }

    /// Makes `peers` this node's sources for download `id`: offered now, and again on every
    /// NeedPeers.
    pub fn add_sources(&mut self, id: DownloadId, peers: Vec<PeerInfo>) {
        self.sources.insert(id, peers.clone());
        let peers = self.ticketed(id, peers);
        self.side.add_peers(id, peers);
    }

    /// `peers` with fresh tickets for download `id`, as the tracker gives them. A peer given
    /// a ticket of its own by the test keeps it.
    pub fn ticketed(&self, id: DownloadId, peers: Vec<PeerInfo>) -> Vec<PeerInfo> {
        let Some(d) = self.side.download(id) else {
            return peers;
        };
        let key: [u8; 32] = groupshare::pieces::from_hex(&self.key)
            .and_then(|k| k.try_into().ok())
            .expect("a node's key is 64 hex digits");
        let fresh = tickets::test_ticket(&d.owner, &key, d.group(), d.file());
        peers
            .into_iter()
            .map(|p| PeerInfo {
                ticket: p.ticket.or(Some(fresh)),
                ..p
            })
            .collect()
    }

    pub fn status(&self, id: DownloadId) -> DownloadStatus {
        self.side
            .downloads()
            .into_iter()
            .find(|d| d.id == id)
            .unwrap()
    }

    pub fn has(&self, ev: &PeerEvent) -> bool {
        self.log.contains(ev)
    }

    pub fn completed(&self, id: DownloadId) -> bool {
        self.has(&PeerEvent::Completed { id })
    }

    pub fn failed(&self, id: DownloadId) -> Option<String> {
        self.log.iter().find_map(|e| match e {
            PeerEvent::Failed { id: i, reason } if *i == id => Some(reason.clone()),
            _ => None,
        })
    }

    /// Every piece of download `id` reported verified so far, sorted.
    pub fn verified(&self, id: DownloadId) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .log
            .iter()
            .filter_map(|e| match e {
                PeerEvent::PiecesVerified { id: i, pieces } if *i == id => Some(pieces.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        v.sort_unstable();
        v
    }
}

/// Turns every node (`Node::turn`) until `done` holds; false if `LIMIT` passed first.
pub fn drive(nodes: &mut [&mut Node], done: impl FnMut(&[&mut Node]) -> bool) -> bool {
    drive_with(nodes, Node::turn, done)
}

/// Turns every node with `turn` until `done` holds; false if `LIMIT` passed first.
pub fn drive_with(
    nodes: &mut [&mut Node],
    mut turn: impl FnMut(&mut Node),
    mut done: impl FnMut(&[&mut Node]) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        for n in nodes.iter_mut() {
            turn(n);
        }
        if done(nodes) {
            return true;
        }
    }
    false
}

/// A fixed number of turns (to show that something does NOT happen).
pub fn spin(nodes: &mut [&mut Node], turns: usize) {
    for _ in 0..turns {
        for n in nodes.iter_mut() {
            n.turn();
        }
    }
}

/// `size` pseudo-random bytes, distinct per seed.
pub fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut r = groupshare::runtime::Rng::new(seed);
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(size);
    v
}

pub fn hashes_of(data: &[u8]) -> Arc<Vec<Hash>> {
    Arc::new(data.chunks(PIECE_SIZE as usize).map(sha1).collect())
}

pub fn npieces(data: &[u8]) -> usize {
    data.len().div_ceil(PIECE_SIZE as usize)
}

/// Writes `data` to `<dir>/<node>-<file>` and shares it from there; returns the path.
pub fn share(node: &mut Node, dir: &Path, file: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(format!("{}-{file}", node.name));
    std::fs::write(&path, data).unwrap();
    node.side.share(
        GROUP,
        file,
        path.clone(),
        data.len() as u64,
        hashes_of(data),
    );
    path
}

pub fn spec(file: &str, data: &[u8], dest: PathBuf) -> DownloadSpec {
    DownloadSpec {
        owner: "me".into(),
        group: GROUP.into(),
        file: file.into(),
        size: data.len() as u64,
        hashes: hashes_of(data),
        claims: claims_for(&dest),
        dest,
    }
}

/// Where the test downloads record their `.part` files: beside the destination.
pub fn claims_for(dest: &Path) -> PartClaims {
    PartClaims::new(
        dest.parent()
            .expect("a destination in a directory")
            .join(".claims"),
    )
}

/// A `.part` left behind by an earlier run of this client: created (and so claimed) the way the
/// client creates one, then filled with `bytes`.
pub fn leave_part(dest: &Path, bytes: &[u8]) {
    let part = part_path(dest);
    drop(PartFile::open(&part, bytes.len() as u64, &claims_for(dest)).expect("create the .part"));
    std::fs::write(&part, bytes).expect("fill the .part");
}

/// The channel key of downloader `me` (one per test process), which `t`'s tickets name.
pub fn me() -> &'static Identity {
    static ME: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    ME.get_or_init(|| Identity::generate().expect("randomness for a test key"))
}

/// `want <group> <file>` or `watch <group> <file>` with a good ticket for downloader `me`
/// appended, as a downloader sends them; any other line as it is.
pub fn t(line: &str) -> String {
    match line.split(' ').collect::<Vec<_>>().as_slice() {
        [verb @ ("want" | "watch"), group, file] => {
            let ticket = tickets::test_ticket("me", me().public(), group, file);
            format!("{verb} {group} {file} me {}", ticket.encode())
        }
        _ => line.to_string(),
    }
}

/// Starts download 1 of `file` at `d` from `sources`.
pub fn start(d: &mut Node, file: &str, data: &[u8], dest: &Path, sources: Vec<PeerInfo>) {
    d.side
        .start_download(1, spec(file, data, dest.to_path_buf()), Instant::now())
        .unwrap();
    d.add_sources(1, sources);
}

/// A scripted peer's key: what the "tracker" publishes for it, proven in its handshakes.
pub struct FakeKey {
    pub id: Identity,
}

impl FakeKey {
    pub fn new() -> FakeKey {
        FakeKey {
            id: Identity::generate().unwrap(),
        }
    }

    /// The key of downloader `me`, whose tickets `t` makes.
    pub fn me() -> FakeKey {
        FakeKey { id: me().clone() }
    }

    pub fn hex(&self) -> String {
        to_hex(self.id.public())
    }

    /// The seeder's side of an accepted connection (non-blocking; the handshake completes as
    /// the stream is read).
    pub fn accept(&self, s: std::net::TcpStream) -> SecureStream<std::net::TcpStream> {
        s.set_nonblocking(true).unwrap();
        SecureStream::new(
            s,
            Role::Responder,
            &self.id,
            None,
            Conversation::ClientClient,
            false,
        )
        .unwrap()
    }

    /// The downloader's side of a connection to a node's seeder (non-blocking, not checking
    /// the seeder's key: these tests speak to the seeder on purpose).
    pub fn connect(&self, addr: SocketAddr) -> SecureStream<std::net::TcpStream> {
        self.over(std::net::TcpStream::connect(addr).unwrap())
    }

    /// As `connect`, over a socket already connected (from another loopback address, say).
    pub fn over(&self, s: std::net::TcpStream) -> SecureStream<std::net::TcpStream> {
        s.set_nonblocking(true).unwrap();
        let mut s = SecureStream::new(
            s,
            Role::Initiator,
            &self.id,
            None,
            Conversation::ClientClient,
            false,
        )
        .unwrap();
        let _ = std::io::Write::flush(&mut s); // the first handshake message
        s
    }
}

/// A key no peer holds, for sources nobody answers for.
pub fn some_key() -> String {
    "5a".repeat(32)
}
