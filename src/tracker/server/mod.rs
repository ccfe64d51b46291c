//! The tracker's poll loop: one thread, one `mio::Poll`, a `Slab` of connections. A connection
//! starts as a client; one that opens with `peer-hello` and proves the cluster key becomes the
//! peer link. Each turn: handle events (reads, accepts, writes), then `before_sleep`: send
//! replicated entries, fsync the journal once, advance the commit point, release the replies
//! that waited for it, flush output.
//!
//! Replication roles (see ARCHITECTURE.md): `Waiting` (restarted after a paired term: may have
//! missed writes, serves nobody until synced), `Leader` (orders every write; alone or with a
//! follower) and `Follower` (forwards writes to the leader, applies its entries).

mod ordering;
mod replication;
mod requests;

use super::commands::{self, ParseError, Request, Verb};
use super::journal::{Journal, Position};
use super::link::{self, LinkMsg};
use super::op::{Entry, Op, Origin, Token as SessionToken};
use super::password;
use super::state::{Refusal, State};
use crate::net::conn::{Conn, ReadStatus};
use crate::net::framer::{Frame, MAX_LINE, MAX_PEER_LINE};
use crate::pieces::{self, Hash};
use crate::runtime::{self, SignalPipe};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// File descriptors kept free for the journal, snapshot writes and the peer link when the
/// connection count is at its limit.
const FD_RESERVE: u64 = 32;
/// Replies waiting to be read beyond this stop the reading of a client's further requests, so a
/// client that pipelines without reading cannot make the tracker buffer without bound.
const OUTPUT_PAUSE: usize = 1 << 20;
/// A client whose unread output exceeds this (one huge reply on top of a paused queue) is
/// dropped.
const OUTPUT_CAP: usize = 32 << 20;
/// Output buffer the peer link keeps between turns: a turn of pipelined writes is ~100 KB of
/// `op` lines, and regrowing that from nothing every turn showed up in profiles.
const LINK_OUTPUT_KEEP: usize = 4 << 20;
/// Keep-alive on the peer link; silence for `LINK_TIMEOUT` means the other tracker is gone even
/// if its socket was not closed (a stopped process, a dead host).
const LINK_PING: Duration = Duration::from_secs(1);
const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// Tracker 2 redials tracker 1 with this backoff: fast enough for a restart to be noticed in
/// well under a second, slow enough not to spin.
const DIAL_MIN: Duration = Duration::from_millis(50);
const DIAL_MAX: Duration = Duration::from_secs(1);
/// The handshake must finish within this, or the half-open link is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A brand-new tracker of a pair waits this long for the other before it serves alone, so two
/// trackers started together form a pair instead of two separate logs (tracker 2 redials
/// at least every `DIAL_MAX`).
const FRESH_GRACE: Duration = Duration::from_millis(1500);
/// Largest staged snapshot accepted from the leader, in lines (a bound against a runaway link).
const MAX_SNAPSHOT_LINES: usize = 50_000_000;

pub struct Config {
    pub addrs: Vec<SocketAddr>,
    /// This tracker's number, 1-based.
    pub me: u8,
    pub data_dir: PathBuf,
    /// The shared secret of the peer link; unused by a single tracker.
    pub cluster_key: Vec<u8>,
    /// Overrides the connection limit derived from the open-file limit (tests).
    pub max_connections: Option<usize>,
    /// Journal size that triggers a snapshot (default `journal::COMPACT_BYTES`).
    pub compact_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Waiting,
    Leader,
    Follower,
}

/// A reply in a client's ordered reply queue.
enum Slot {
    Ready(String),
    /// Sent once the commit point reaches `seq`.
    Commit {
        seq: u64,
        text: String,
    },
    /// A write forwarded to the leader, waiting for its entry to come back.
    Forward {
        fid: u64,
        tag: u64,
    },
}

/// An `upload_file` whose hash lines are still arriving.
struct Upload {
    tag: u64,
    /// `None` when the request was refused: its hash lines are read and dropped.
    target: Option<(String, String, u64)>,
    hashes: Vec<Hash>,
    lines_left: usize,
    npieces: usize,
    bad: Option<String>,
}

struct Client {
    instance: Option<u64>,
    session: Option<SessionToken>,
    /// The token of a `login`/`attach` in flight, so a drop before it completes is cleaned up.
    replies: VecDeque<Slot>,
    upload: Option<Upload>,
    /// A request line read but held back until forwarded writes return.
    deferred: Option<Vec<u8>>,
}

enum Phase {
    /// Tracker 2's outgoing connect in progress.
    Dialing,
    AwaitChallenge {
        mine: String,
    },
    AwaitAuth {
        mine: String,
        theirs: String,
    },
    /// Authenticated; waiting for the other's `state`.
    AwaitState,
    Live,
}

struct Peer {
    phase: Phase,
    other: u8,
    since: Instant,
    /// Snapshot lines being received from the leader.
    snapshot: Option<(Position, Vec<String>)>,
}

enum Kind {
    Client(Client),
    Peer(Peer),
}

struct Connection {
    conn: Conn<TcpStream>,
    /// Distinguishes this connection from a later one that reuses the slab key.
    id: u64,
    kind: Kind,
    writable: bool,
    paused: bool,
    closing: bool,
    last_heard: Instant,
}

/// A write this follower forwarded to the leader.
struct Forward {
    client: Option<(usize, u64, u64)>, // key, connection id, tag
    origin: Option<Origin>,
    op: Op,
}

pub struct Server {
    cfg: Config,
    poll: Poll,
    listener: TcpListener,
    signals: SignalPipe,
    conns: Slab<Connection>,
    next_conn_id: u64,
    max_connections: usize,
    /// A spare descriptor released on EMFILE to accept and refuse one connection, so a full
    /// descriptor table never leaves the edge-triggered listener stuck with a pending backlog.
    spare_fd: Option<std::fs::File>,

    state: State,
    journal: Journal,
    pos: Position,
    role: Role,
    /// The key of the live (or handshaking) peer link in `conns`.
    link: Option<usize>,
    /// Follower: a snapshot from the leader is expected before it may serve.
    syncing: bool,
    commit: u64,
    follower_ack: u64,
    leader_commit: u64,
    sent_ack: u64,
    sent_commit: u64,
    next_fid: u64,
    forwards: BTreeMap<u64, Forward>,
    /// Client replies waiting for a commit, in sequence order.
    waiters: VecDeque<(u64, usize, u64)>,
    /// Leader: `fwd-ok` answers to deduplicated forwarded retries, released at commit.
    fwd_waiters: VecDeque<(u64, u64, String)>,
    dirty: Vec<usize>,
    /// Clients whose forwarded write came back: handle their buffered requests.
    resume: Vec<usize>,
    closing: Vec<usize>,
    dial_at: Option<Instant>,
    dial_backoff: Duration,
    /// Log position at which this tracker last began leading alone: writes after it exist
    /// only here until a follower catches up.
    solo_from: Option<u64>,
    /// A fresh tracker's deadline for serving alone if the other never shows up.
    solo_at: Option<Instant>,
    /// The position and digest this tracker announced on the link: the leader is chosen from
    /// the announced values on both sides, so both reach the same verdict.
    announced: Option<(Position, String)>,
    last_ping: Instant,
    shutdown: bool,
    /// Accepting stopped for lack of descriptors: retry when connections close, since the
    /// edge-triggered listener will not report the waiting backlog again.
    accept_blocked: bool,
}

impl Server {
    pub fn new(cfg: Config) -> Result<Server, String> {
        let addr = *cfg
            .addrs
            .get(usize::from(cfg.me).wrapping_sub(1))
            .ok_or_else(|| format!("there is no tracker {} in the tracker_info file", cfg.me))?;
        let (mut journal, recovered) = Journal::open(&cfg.data_dir)?;
        if let Some(b) = cfg.compact_bytes {
            journal.compact_bytes = b;
        }
        let poll = Poll::new().map_err(|e| format!("cannot create the poll: {e}"))?;
        let mut listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("cannot register the listener: {e}"))?;
        let mut signals =
            SignalPipe::new().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        poll.registry()
            .register(&mut signals.receiver, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("cannot register the signal pipe: {e}"))?;
        let fd_limit = runtime::raise_fd_limit();
        let max_connections = cfg
            .max_connections
            .unwrap_or_else(|| fd_limit.saturating_sub(FD_RESERVE).max(1) as usize);
        log::info!(
            "tracker {} listening on {addr}; open-file limit {fd_limit}, so up to {max_connections} connections",
            cfg.me
        );
        let pos = recovered.pos;
        let paired_config = cfg.addrs.len() > 1;
        let now = Instant::now();
        let mut server = Server {
            spare_fd: std::fs::File::open("/dev/null").ok(),
            poll,
            listener,
            signals,
            conns: Slab::new(),
            next_conn_id: 1,
            max_connections,
            state: recovered.state,
            journal,
            pos,
            role: Role::Waiting,
            link: None,
            syncing: false,
            commit: pos.seq,
            follower_ack: 0,
            leader_commit: 0,
            sent_ack: 0,
            sent_commit: 0,
            next_fid: 1,
            forwards: BTreeMap::new(),
            waiters: VecDeque::new(),
            fwd_waiters: VecDeque::new(),
            dirty: Vec::new(),
            resume: Vec::new(),
            closing: Vec::new(),
            dial_at: if cfg.me == 2 && paired_config {
                Some(now)
            } else {
                None
            },
            dial_backoff: DIAL_MIN,
            solo_at: None,
            solo_from: None,
            announced: None,
            last_ping: now,
            shutdown: false,
            accept_blocked: false,
            cfg,
        };
        if !paired_config || (pos.solo && !recovered.fresh) {
            server.become_solo_leader(None);
        } else if recovered.fresh {
            server.solo_at = Some(now + FRESH_GRACE);
        } else {
            log::warn!(
                "this tracker's log ends in a paired term: waiting for tracker {} before serving, \
                 because it may hold acknowledged writes this tracker has not seen",
                server.other()
            );
        }
        Ok(server)
    }

    fn other(&self) -> u8 {
        if self.cfg.me == 1 {
            2
        } else {
            1
        }
    }

    fn serving(&self) -> bool {
        match self.role {
            Role::Waiting => false,
            Role::Leader => true,
            Role::Follower => !self.syncing,
        }
    }

    fn paired_leader(&self) -> bool {
        self.role == Role::Leader && self.link_live()
    }

    fn link_live(&self) -> bool {
        self.link
            .and_then(|k| self.conns.get(k))
            .is_some_and(|c| matches!(&c.kind, Kind::Peer(p) if matches!(p.phase, Phase::Live)))
    }

    /// Runs until SIGINT/SIGTERM.
    pub fn run(&mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        while !self.shutdown {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll failed: {e}"));
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    SIGNALS => {
                        if self.signals.take() {
                            log::info!("signal received: shutting down");
                            self.shutdown = true;
                        }
                    }
                    Token(key) => {
                        let Some(c) = self.conns.get(key) else {
                            continue; // closed earlier in this batch
                        };
                        if c.closing {
                            continue;
                        }
                        if matches!(&c.kind, Kind::Peer(p) if matches!(p.phase, Phase::Dialing)) {
                            self.on_dialed(key, now);
                            continue;
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let closed = event.is_read_closed() || event.is_error();
                            self.on_readable(key, now, !closed);
                        }
                    }
                }
            }
            self.timers(now);
            self.before_sleep();
        }
        if let Err(e) = self.journal.flush() {
            return Err(format!("cannot flush the journal at shutdown: {e}"));
        }
        log::info!("tracker {} stopped; journal flushed", self.cfg.me);
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.cfg.addrs.len() < 2 {
            return None;
        }
        let now = Instant::now();
        let mut t = LINK_PING;
        for at in [self.dial_at, self.solo_at].into_iter().flatten() {
            t = t.min(at.saturating_duration_since(now));
        }
        Some(t)
    }

    // ----- connections -------------------------------------------------------------------

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= self.max_connections {
                        refuse(
                            stream,
                            "too many connections; try the other tracker or later",
                        );
                        continue;
                    }
                    self.add_conn(stream, Kind::Client(Client::new()), Interest::READABLE, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_exhaustion(&e) => {
                    // Out of descriptors: free the spare, accept and refuse one, retry. Without a
                    // spare left, stop; the next connection event (or a close) retries.
                    // (accept reports EMFILE even with an empty backlog, so only the retry
                    // tells whether anything is waiting.)
                    let Some(spare) = self.spare_fd.take() else {
                        log::warn!("out of file descriptors: {e}");
                        self.accept_blocked = true;
                        return;
                    };
                    drop(spare);
                    let retry = self.listener.accept();
                    if let Ok((stream, _)) = &retry {
                        refuse_ref(stream, "too many connections; try the other tracker");
                    }
                    let drained = retry.is_err();
                    drop(retry);
                    self.spare_fd = std::fs::File::open("/dev/null").ok();
                    if self.spare_fd.is_none() {
                        self.accept_blocked = true;
                        return;
                    }
                    if drained {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        kind: Kind,
        interest: Interest,
        now: Instant,
    ) -> Option<usize> {
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            log::warn!("cannot register a connection: {e}");
            return None;
        }
        let limit = if matches!(kind, Kind::Peer(_)) {
            MAX_PEER_LINE
        } else {
            MAX_LINE
        };
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        entry.insert(Connection {
            conn: Conn::new(stream, limit),
            id,
            kind,
            writable: interest.is_writable(),
            paused: false,
            closing: false,
            last_heard: now,
        });
        Some(key)
    }

    fn mark_dirty(&mut self, key: usize) {
        self.dirty.push(key);
    }

    /// Schedules a connection to close after this turn; its last output is flushed first.
    fn close(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.closing {
                c.closing = true;
                self.closing.push(key);
            }
        }
    }

    fn send(&mut self, key: usize, line: &str) {
        if let Some(c) = self.conns.get_mut(key) {
            let was_idle = c.conn.out_pending() == 0;
            c.conn.send_line(line);
            // Output already pending is either queued for this turn's flush or waiting for
            // WRITABLE; listing the connection once is enough.
            if was_idle {
                self.dirty.push(key);
            }
        }
    }

    fn send_link(&mut self, msg: &LinkMsg) {
        if let Some(k) = self.link {
            let line = msg.encode();
            self.send(k, &line);
        }
    }

    fn on_readable(&mut self, key: usize, now: Instant, short_read_drains: bool) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.closing || c.paused || c.has_deferred() {
                return;
            }
            let status = match c.conn.fill(short_read_drains) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("connection {key}: read error: {e}");
                    self.drop_conn(key, now);
                    return;
                }
            };
            c.last_heard = now;
            self.handle_lines(key, now);
            if self.conns.get(key).is_some_and(Connection::has_deferred) {
                return; // resumed when its forwarded writes come back
            }
            match status {
                ReadStatus::Drained => return,
                ReadStatus::Full => continue,
                ReadStatus::Closed => {
                    self.drop_conn(key, now);
                    return;
                }
            }
        }
    }

    fn handle_lines(&mut self, key: usize, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.closing || c.paused {
                return;
            }
            let deferred = match &mut c.kind {
                Kind::Client(cl) => cl.deferred.take(),
                Kind::Peer(_) => None,
            };
            let line = match deferred
                .map(Ok)
                .unwrap_or_else(|| match c.conn.input.next_line() {
                    Frame::Line(l) => Ok(l.to_vec()),
                    other => Err(other == Frame::NeedMore),
                }) {
                Ok(l) => l,
                Err(true) => {
                    c.conn.input.compact();
                    return;
                }
                Err(false) => {
                    let limit = if matches!(c.kind, Kind::Peer(_)) {
                        MAX_PEER_LINE
                    } else {
                        MAX_LINE
                    };
                    let msg = format!("0 err line_too_long a line is longer than {limit} bytes");
                    self.send(key, &msg);
                    self.drop_conn(key, now);
                    return;
                }
            };
            // While a client's forwarded write is away, only writes that cannot depend on it
            // go ahead; anything else waits, so that what a client asks next sees what it
            // wrote (a pipelined `create_user` then `login` works at the follower too).
            if !self.may_go_ahead(key, &line) {
                if let Some(Kind::Client(cl)) = self.conns.get_mut(key).map(|c| &mut c.kind) {
                    cl.deferred = Some(line);
                }
                return;
            }
            let Some(c) = self.conns.get(key) else {
                return;
            };
            let is_peer = matches!(c.kind, Kind::Peer(_));
            if is_peer {
                self.handle_peer_line(key, &line, now);
            } else {
                self.handle_client_line(key, &line, now);
            }
        }
    }

    /// Whether a client's next line may be handled now. Always, unless writes of this client
    /// are forwarded and not back yet; then only hash lines of an upload and writes that do
    /// not read the state (the leader decides them in order anyway), and none at all behind a
    /// forwarded login, attach or logout, which changes the session the next one acts as.
    fn may_go_ahead(&self, key: usize, line: &[u8]) -> bool {
        let Some(Connection {
            kind: Kind::Client(cl),
            ..
        }) = self.conns.get(key)
        else {
            return true;
        };
        let pending: Vec<u64> = cl
            .replies
            .iter()
            .filter_map(|s| match s {
                Slot::Forward { fid, .. } => Some(*fid),
                _ => None,
            })
            .collect();
        if pending.is_empty() || cl.upload.is_some() {
            return true;
        }
        let session_change = pending.iter().any(|f| {
            matches!(
                self.forwards.get(f).map(|w| &w.op),
                Some(Op::Login { .. } | Op::Attach { .. } | Op::Logout { .. })
            )
        });
        let verb = line
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|w| !w.is_empty())
            .nth(1)
            .unwrap_or(b"");
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

    /// A connection ended (peer closed, error, protocol violation): clean up what it held.
    fn drop_conn(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.closing {
            return;
        }
        let session = match &mut c.kind {
            Kind::Client(cl) => cl.session.take(),
            Kind::Peer(_) => None,
        };
        self.close(key);
        if let Some(token) = session {
            self.propose(None, Op::Logout { token }, None);
        }
        if self.link == Some(key) {
            self.link = None;
            let was_up = matches!(
                self.conns.get(key).map(|c| &c.kind),
                Some(Kind::Peer(p)) if matches!(p.phase, Phase::Live)
            );
            if was_up {
                self.link_lost(now);
            } else if self.cfg.me == 2 {
                if self.role == Role::Waiting && self.solo_at.is_some() {
                    // Fresh, and tracker 1 is not running: nothing to wait for.
                    self.solo_at = None;
                    self.become_solo_leader(None);
                }
                self.schedule_dial(now);
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        if let Some(at) = self.solo_at {
            if now >= at && self.role == Role::Waiting {
                self.solo_at = None;
                log::info!("tracker {} did not appear; serving alone", self.other());
                self.become_solo_leader(None);
            }
        }
        if let Some(at) = self.dial_at {
            if now >= at && self.link.is_none() {
                self.dial(now);
            }
        }
        if let Some(k) = self.link {
            let (heard, since, live) = match self.conns.get(k) {
                Some(Connection {
                    last_heard,
                    kind: Kind::Peer(p),
                    ..
                }) => (*last_heard, p.since, matches!(p.phase, Phase::Live)),
                _ => return,
            };
            if (!live && now.duration_since(since) > HANDSHAKE_TIMEOUT)
                || now.duration_since(heard) > LINK_TIMEOUT
            {
                log::warn!("peer link silent for too long; dropping it");
                self.drop_conn(k, now);
            } else if live && now.duration_since(self.last_ping) >= LINK_PING {
                self.last_ping = now;
                self.send_link(&LinkMsg::Ping);
            }
        }
    }

    fn before_sleep(&mut self) {
        let now = Instant::now();
        while !self.resume.is_empty() {
            for k in std::mem::take(&mut self.resume) {
                // The held-back line first, then whatever else the client sent meanwhile.
                self.handle_lines(k, now);
                self.on_readable(k, now, false);
            }
        }
        // 1. Entries go to the follower before our own fsync, so both disks work at once.
        if let Some(k) = self.link {
            self.flush_conn(k);
        }
        // 2. One fsync for everything appended this turn.
        if let Err(e) = self.journal.flush() {
            // Acknowledging without durability would lie to clients; stopping is the only
            // honest answer.
            log::error!("cannot write the journal: {e}; stopping");
            self.shutdown = true;
            return;
        }
        // 3. Commit point.
        match self.role {
            Role::Leader => {
                let c = if self.link_live() {
                    self.journal.durable.min(self.follower_ack)
                } else {
                    self.journal.durable
                };
                if c > self.commit {
                    self.commit = c;
                }
                if self.link_live() && self.commit > self.sent_commit {
                    self.sent_commit = self.commit;
                    let seq = self.commit;
                    self.send_link(&LinkMsg::Commit { seq });
                }
            }
            Role::Follower => {
                if self.journal.durable > self.sent_ack && !self.syncing {
                    self.sent_ack = self.journal.durable;
                    let seq = self.sent_ack;
                    self.send_link(&LinkMsg::Ack { seq });
                }
                let c = self.journal.durable.min(self.leader_commit);
                if c > self.commit {
                    self.commit = c;
                }
            }
            Role::Waiting => {}
        }
        self.release();
        // 4. Output.
        // Flushing can resume a paused reader, whose replies dirty more connections.
        while !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for k in dirty {
                self.flush_conn(k);
            }
        }
        // 5. Close what was scheduled.
        let closed = !self.closing.is_empty();
        for k in std::mem::take(&mut self.closing) {
            if let Some(mut c) = self.conns.try_remove(k) {
                let _ = c.conn.flush();
                let _ = self.poll.registry().deregister(&mut c.conn.stream);
            }
        }
        if closed && self.accept_blocked {
            self.accept_blocked = false;
            if self.spare_fd.is_none() {
                self.spare_fd = std::fs::File::open("/dev/null").ok();
            }
            self.accept(Instant::now());
        }
        // 6. Compaction: started when due and collected when done; a child process writes
        // the snapshot. An error is the journal's own, so it stops the tracker as above.
        if let Err(e) = self.journal.compact(&self.state, self.pos) {
            log::error!("cannot write the journal: {e}; stopping");
            self.shutdown = true;
        }
    }

    fn flush_conn(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(&c.kind, Kind::Peer(p) if matches!(p.phase, Phase::Dialing)) {
            return;
        }
        let done = match c.conn.flush() {
            Ok(d) => d,
            Err(e) => {
                log::debug!("connection {key}: write error: {e}");
                let now = Instant::now();
                self.drop_conn(key, now);
                return;
            }
        };
        if c.conn.out_pending() > OUTPUT_CAP {
            log::warn!("connection {key} does not read its replies; dropping it");
            self.drop_conn(key, Instant::now());
            return;
        }
        if done == c.writable {
            let interest = if done {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.conn.stream, Token(key), interest)
                .is_ok()
            {
                c.writable = !done;
            }
        }
        let resume = c.paused && c.conn.out_pending() < OUTPUT_PAUSE / 2;
        if resume {
            c.paused = false;
            // Edge-triggered: bytes that arrived while paused raise no new event.
            self.on_readable(key, Instant::now(), false);
        }
    }
}

fn ok_text(tag: u64, reply: &str) -> String {
    if reply.is_empty() {
        format!("{tag} ok")
    } else {
        format!("{tag} ok {reply}")
    }
}

fn new_token() -> SessionToken {
    let mut b = [0u8; 16];
    if runtime::random_bytes(&mut b).is_err() {
        let a = runtime::random_u64().to_le_bytes();
        let c = runtime::random_u64().to_le_bytes();
        b[..8].copy_from_slice(&a);
        b[8..].copy_from_slice(&c);
    }
    pieces::to_hex(&b)
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Tells a connection we cannot take it, without blocking: one short line into an empty socket
/// buffer always fits.
fn refuse(stream: TcpStream, why: &str) {
    refuse_ref(&stream, why);
}

fn refuse_ref(stream: &TcpStream, why: &str) {
    use std::io::Write;
    let mut s = stream;
    let _ = s.write(format!("0 err too_many_connections {why}\n").as_bytes());
}

impl Connection {
    /// A client line waits for this client's forwarded writes (see `may_go_ahead`).
    fn has_deferred(&self) -> bool {
        matches!(&self.kind, Kind::Client(cl) if cl.deferred.is_some())
    }
}

impl Client {
    fn new() -> Self {
        Client {
            instance: None,
            session: None,
            replies: VecDeque::new(),
            upload: None,
            deferred: None,
        }
    }
}
