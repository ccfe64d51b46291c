//! The tracker's poll loop: one thread, one `mio::Poll`, a `Slab` of connections. A connection
//! starts as a client; one that opens with `peer-hello` and proves the cluster key becomes the
//! peer link. Each turn: handle events (reads, accepts, writes), then `before_sleep`: send
//! replicated entries, fsync the journal once, advance the commit point, release the replies
//! that waited for it, flush output.
//!
//! Replication roles (see ARCHITECTURE.md): `Waiting` (restarted after a paired term: may have
//! missed writes, serves nobody until synced), `Leader` (orders every write; alone or with a
//! follower) and `Follower` (forwards writes to the leader, applies its entries).

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
        let (journal, recovered) = Journal::open(&cfg.data_dir)?;
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
            c.conn.send_line(line);
            self.dirty.push(key);
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
        // 6. Compaction.
        if self.journal.wants_compaction() {
            if let Err(e) = self.journal.compact(&self.state, self.pos) {
                log::error!("cannot write a snapshot: {e}");
            }
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

    // ----- client requests -----------------------------------------------------------------

    fn client(&mut self, key: usize) -> Option<&mut Client> {
        match self.conns.get_mut(key).map(|c| &mut c.kind) {
            Some(Kind::Client(cl)) => Some(cl),
            _ => None,
        }
    }

    /// Queues a reply in order: sent at once unless earlier replies still wait.
    fn push_reply(&mut self, key: usize, slot: Slot) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Kind::Client(cl) = &mut c.kind else {
            return;
        };
        match slot {
            Slot::Ready(text) if cl.replies.is_empty() => {
                c.conn.send_line(&text);
                if c.conn.out_pending() > OUTPUT_PAUSE {
                    c.paused = true;
                }
                self.dirty.push(key);
            }
            slot => cl.replies.push_back(slot),
        }
    }

    fn reply(&mut self, key: usize, text: String) {
        self.push_reply(key, Slot::Ready(text));
    }

    fn reply_err(&mut self, key: usize, tag: u64, code: &str, message: &str) {
        self.reply(key, format!("{tag} err {code} {message}"));
    }

    fn refuse(&mut self, key: usize, tag: u64, r: &Refusal) {
        self.reply_err(key, tag, r.code(), &r.message());
    }

    fn handle_client_line(&mut self, key: usize, line: &[u8], now: Instant) {
        // Hash lines of an upload in progress.
        if let Some(cl) = self.client(key) {
            if let Some(up) = cl.upload.as_mut() {
                up.lines_left -= 1;
                if up.bad.is_none() {
                    match std::str::from_utf8(line)
                        .ok()
                        .and_then(pieces::hashes_from_hex)
                    {
                        Some(h) if up.hashes.len() + h.len() <= up.npieces => up.hashes.extend(h),
                        _ => up.bad = Some("malformed hash line".into()),
                    }
                }
                if up.lines_left == 0 {
                    if let Some(up) = cl.upload.take() {
                        self.finish_upload(key, up);
                    }
                }
                return;
            }
        }
        // The first line of a connection may open the peer link instead.
        if line.starts_with(b"peer-hello ") {
            self.peer_hello(key, line, now);
            return;
        }
        let req = match commands::parse(line) {
            Ok(r) => r,
            Err(e) => {
                self.parse_error(key, e);
                return;
            }
        };
        if !self.serving() && !matches!(req.verb, Verb::Ping | Verb::Digest) {
            let why = "this tracker is catching up with the other tracker; use the other one";
            if let Verb::UploadFile { npieces, .. } = req.verb {
                return self.parse_error(
                    key,
                    ParseError {
                        tag: req.tag,
                        code: "unavailable",
                        message: why.into(),
                        skip_lines: pieces::hash_line_count(npieces as usize),
                    },
                );
            }
            return self.reply_err(key, req.tag, "unavailable", why);
        }
        self.handle_request(key, req);
    }

    fn parse_error(&mut self, key: usize, e: ParseError) {
        if e.skip_lines > 0 {
            if let Some(cl) = self.client(key) {
                cl.upload = Some(Upload {
                    tag: e.tag,
                    target: None,
                    hashes: Vec::new(),
                    lines_left: e.skip_lines,
                    npieces: 0,
                    bad: Some(format!("{} {}", e.code, e.message)),
                });
                return;
            }
        }
        self.reply_err(key, e.tag, e.code, &e.message);
    }

    fn handle_request(&mut self, key: usize, req: Request) {
        let Some(cl) = self.client(key) else {
            return;
        };
        let tag = req.tag;
        let origin = cl.instance.map(|instance| Origin { instance, tag });
        let session = cl.session.clone();
        let from = self.conns.get(key).map(|c| (key, c.id, tag));
        // Everything but these needs a session.
        let needs_session = !matches!(
            req.verb,
            Verb::Hello { .. }
                | Verb::CreateUser { .. }
                | Verb::Login { .. }
                | Verb::Attach { .. }
                | Verb::UploadFile { .. }
                | Verb::Ping
                | Verb::Digest
        );
        // (An upload's retry is recognised after its hash lines, which must be read first.)
        if let Some(o) = origin.filter(|_| !matches!(req.verb, Verb::UploadFile { .. })) {
            if let Some(stored) = self.state.dedup(&o).map(str::to_string) {
                return self.answer_retry(key, tag, req.verb, stored);
            }
        }
        let token = match (&session, needs_session) {
            (Some(t), _) => t.clone(),
            (None, true) => return self.refuse(key, tag, &Refusal::NotLoggedIn),
            (None, false) => String::new(),
        };
        match req.verb {
            Verb::Hello { instance } => {
                if let Some(cl) = self.client(key) {
                    cl.instance = Some(instance);
                }
                self.reply(key, format!("{tag} ok {}", self.cfg.me));
            }
            Verb::Ping => self.reply(key, format!("{tag} ok pong")),
            Verb::Digest => {
                let d = self.state.digest();
                let role = match self.role {
                    Role::Leader if self.link_live() => "leader-paired",
                    Role::Leader => "leader-solo",
                    Role::Follower => "follower",
                    Role::Waiting => "waiting",
                };
                self.reply(key, format!("{tag} ok {d} {} {role}", self.pos.seq));
            }
            Verb::CreateUser { user, password } => {
                if self.state.user_exists(&user) {
                    return self.refuse(key, tag, &Refusal::UserExists);
                }
                let pw_hash = password::hash_password(&password);
                self.propose(origin, Op::CreateUser { user, pw_hash }, from);
            }
            Verb::Login {
                user,
                password,
                addr,
            } => {
                if session.is_some() {
                    return self.refuse(key, tag, &Refusal::AlreadyLoggedIn);
                }
                if let Err(r) = self.state.check_login(&user, &password) {
                    return self.refuse(key, tag, &r);
                }
                let token = new_token();
                let tracker = self.cfg.me;
                self.propose(
                    origin,
                    Op::Login {
                        token,
                        user,
                        addr,
                        tracker,
                    },
                    from,
                );
            }
            Verb::Attach { token, addr } => {
                if session.is_some() {
                    return self.refuse(key, tag, &Refusal::AlreadyLoggedIn);
                }
                let tracker = self.cfg.me;
                self.propose(
                    origin,
                    Op::Attach {
                        token,
                        addr,
                        tracker,
                    },
                    from,
                );
            }
            Verb::Logout => {
                if let Some(cl) = self.client(key) {
                    cl.session = None;
                }
                self.propose(origin, Op::Logout { token }, from);
            }
            Verb::CreateGroup { group } => {
                self.propose(origin, Op::CreateGroup { token, group }, from)
            }
            Verb::JoinGroup { group } => self.propose(origin, Op::JoinGroup { token, group }, from),
            Verb::LeaveGroup { group } => {
                self.propose(origin, Op::LeaveGroup { token, group }, from)
            }
            Verb::AcceptRequest { group, user } => {
                self.propose(origin, Op::AcceptRequest { token, group, user }, from)
            }
            Verb::StopShare { group, file } => {
                self.propose(origin, Op::StopShare { token, group, file }, from)
            }
            Verb::Have {
                group,
                file,
                pieces,
            } => self.propose(
                None,
                Op::Have {
                    token,
                    group,
                    file,
                    pieces,
                },
                from,
            ),
            Verb::ListGroups => {
                let r = self.state.list_groups(&token);
                self.reply_list(key, tag, r, "");
            }
            Verb::ListRequests { group } => {
                let r = self.state.list_requests(&token, &group);
                self.reply_list(key, tag, r, "");
            }
            Verb::ListFiles { group } => {
                let r = self.state.list_files(&token, &group);
                self.reply_list(key, tag, r, "");
            }
            Verb::Peers { group, file } => {
                let r = self.state.peers(&token, &group, &file);
                self.reply_list(key, tag, r, "");
            }
            Verb::DownloadFile { group, file } => {
                let r = self.state.download(&token, &group, &file).map(|d| {
                    let mut lines: Vec<String> = pieces::hash_lines(d.hashes)
                        .map(|h| format!("h {h}"))
                        .collect();
                    lines.extend(d.peers);
                    (lines, format!(" {} {}", d.size, d.hashes.len()))
                });
                match r {
                    Ok((lines, extra)) => self.reply_list(key, tag, Ok(lines), &extra),
                    Err(e) => self.refuse(key, tag, &e),
                }
            }
            Verb::UploadFile {
                group,
                file,
                size,
                npieces,
            } => {
                let lines = pieces::hash_line_count(npieces as usize);
                let up = Upload {
                    tag,
                    target: Some((group, file, size)),
                    hashes: Vec::with_capacity(npieces as usize),
                    lines_left: lines,
                    npieces: npieces as usize,
                    bad: None,
                };
                if lines == 0 {
                    self.finish_upload(key, up);
                } else if let Some(cl) = self.client(key) {
                    cl.upload = Some(up);
                }
            }
        }
    }

    /// A request whose write already happened (the client re-sent it after losing its
    /// tracker): answer with the original reply once it is committed, never apply it twice.
    fn answer_retry(&mut self, key: usize, tag: u64, verb: Verb, stored: String) {
        let reattach = match verb {
            // The first attempt created the session at a tracker that may be gone.
            Verb::Login { addr, .. } => Some((stored.clone(), addr)),
            Verb::Attach { token, addr } => Some((token, addr)),
            _ => None,
        };
        if let Some((token, addr)) = reattach {
            if let Some(cl) = self.client(key) {
                cl.session = Some(token.clone());
            }
            let tracker = self.cfg.me;
            self.propose(
                None,
                Op::Attach {
                    token,
                    addr,
                    tracker,
                },
                None,
            );
        }
        let seq = self.pos.seq;
        self.push_commit_reply(key, seq, ok_text(tag, &stored));
    }

    fn reply_list(&mut self, key: usize, tag: u64, r: Result<Vec<String>, Refusal>, extra: &str) {
        match r {
            Ok(lines) => {
                let mut text = format!("{tag} list {}{extra}", lines.len());
                for l in lines {
                    text.push('\n');
                    text.push_str(&l);
                }
                self.reply(key, text);
            }
            Err(e) => self.refuse(key, tag, &e),
        }
    }

    fn finish_upload(&mut self, key: usize, up: Upload) {
        let tag = up.tag;
        let Some((group, file, size)) = up.target else {
            let bad = up.bad.unwrap_or_default();
            let (code, msg) = bad.split_once(' ').unwrap_or(("bad_request", ""));
            let code = code.to_string();
            return self.reply_err(key, tag, &code, msg);
        };
        if let Some(bad) = up.bad {
            return self.reply_err(key, tag, "bad_request", &bad);
        }
        if up.hashes.len() != up.npieces {
            return self.reply_err(
                key,
                tag,
                "bad_request",
                "the hash lines hold too few hashes",
            );
        }
        let Some(cl) = self.client(key) else {
            return;
        };
        let session = cl.session.clone();
        let origin = cl.instance.map(|instance| Origin { instance, tag });
        if let Some(stored) = origin.and_then(|o| self.state.dedup(&o).map(str::to_string)) {
            let seq = self.pos.seq;
            return self.push_commit_reply(key, seq, ok_text(tag, &stored));
        }
        let Some(token) = session else {
            return self.refuse(key, tag, &Refusal::NotLoggedIn);
        };
        let from = self.conns.get(key).map(|c| (key, c.id, tag));
        self.propose(
            origin,
            Op::Upload {
                token,
                group,
                file,
                size,
                hashes: up.hashes,
            },
            from,
        );
    }

    // ----- ordering writes -----------------------------------------------------------------

    /// Puts a write through the replicated log: ordered here if this tracker leads, forwarded
    /// otherwise. `from` is the client connection and tag to answer, if any.
    fn propose(&mut self, origin: Option<Origin>, op: Op, from: Option<(usize, u64, u64)>) {
        match self.role {
            Role::Leader => match self.state.apply(origin, &op) {
                Ok(reply) => {
                    let seq = self.append(origin, op.clone(), None);
                    self.after_apply(&op, from, seq, Ok(reply));
                }
                Err(r) => {
                    if let Some((key, _, tag)) = from {
                        self.refuse(key, tag, &r);
                    }
                }
            },
            Role::Follower if self.link_live() => {
                let fid = self.next_fid;
                self.next_fid += 1;
                self.send_link(&LinkMsg::Fwd {
                    fid,
                    origin,
                    op: op.clone(),
                });
                if let Some((key, _, tag)) = from {
                    self.push_reply(key, Slot::Forward { fid, tag });
                }
                self.forwards.insert(
                    fid,
                    Forward {
                        client: from,
                        origin,
                        op,
                    },
                );
            }
            _ => {
                // Not serving: only connection drops get here; their sessions do not exist in
                // a state that has not synced yet.
                if let Some((key, _, tag)) = from {
                    self.reply_err(key, tag, "unavailable", "this tracker is not serving");
                }
            }
        }
    }

    /// Appends an applied entry to the journal and sends it to the follower.
    fn append(&mut self, origin: Option<Origin>, op: Op, fid: Option<u64>) -> u64 {
        let entry = Entry {
            term: self.pos.term,
            seq: self.pos.seq + 1,
            origin,
            op,
        };
        if let Op::Term { term, solo } = entry.op {
            self.pos.term = term;
            self.pos.solo = solo;
        }
        let entry = Entry {
            term: self.pos.term,
            ..entry
        };
        self.pos.seq = entry.seq;
        let line = entry.encode();
        self.journal.append_encoded(entry.seq, &line);
        if self.paired_leader() {
            if let Some(k) = self.link {
                self.send(k, &link::op_line(fid, &line));
            }
        }
        self.pos.seq
    }

    /// What follows a successful write: bind or unbind sessions, queue the client's reply.
    fn after_apply(
        &mut self,
        op: &Op,
        from: Option<(usize, u64, u64)>,
        seq: u64,
        result: Result<String, Refusal>,
    ) {
        if result.is_ok() {
            self.bind_session(op, from);
        }
        let alive = from.filter(|(key, id, _)| {
            self.conns
                .get(*key)
                .is_some_and(|c| c.id == *id && !c.closing)
        });
        if let Some((key, _, tag)) = alive {
            match result {
                Ok(reply) => self.push_commit_reply(key, seq, ok_text(tag, &reply)),
                Err(r) => self.refuse(key, tag, &r),
            }
        }
    }

    fn push_commit_reply(&mut self, key: usize, seq: u64, text: String) {
        if seq <= self.commit {
            return self.reply(key, text);
        }
        if let Some(id) = self.conns.get(key).map(|c| c.id) {
            self.add_waiter(seq, key, id);
        }
        self.push_reply(key, Slot::Commit { seq, text });
    }

    /// Waiters stay in sequence order so `release` stops at the first uncommitted one; entries
    /// are applied in order, so this is almost always a push at the back.
    fn add_waiter(&mut self, seq: u64, key: usize, conn_id: u64) {
        let at = self.waiters.partition_point(|w| w.0 <= seq);
        self.waiters.insert(at, (seq, key, conn_id));
    }

    /// Releases every reply whose entry is now committed.
    fn release(&mut self) {
        while let Some(&(seq, key, id)) = self.waiters.front() {
            if seq > self.commit {
                break;
            }
            self.waiters.pop_front();
            if self.conns.get(key).is_some_and(|c| c.id == id) {
                self.drain_replies(key);
            }
        }
        while let Some((seq, _, _)) = self.fwd_waiters.front() {
            if *seq > self.commit {
                break;
            }
            if let Some((_, fid, reply)) = self.fwd_waiters.pop_front() {
                self.send_link(&LinkMsg::FwdOk { fid, reply });
            }
        }
    }

    /// Sends the ready prefix of a client's reply queue.
    fn drain_replies(&mut self, key: usize) {
        let commit = self.commit;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Kind::Client(cl) = &mut c.kind else {
            return;
        };
        let mut sent = false;
        while let Some(front) = cl.replies.front() {
            let ready = match front {
                Slot::Ready(_) => true,
                Slot::Commit { seq, .. } => *seq <= commit,
                Slot::Forward { .. } => false,
            };
            if !ready {
                break;
            }
            match cl.replies.pop_front() {
                Some(Slot::Ready(t)) | Some(Slot::Commit { text: t, .. }) => {
                    c.conn.send_line(&t);
                    sent = true;
                }
                _ => break,
            }
        }
        if sent {
            if c.conn.out_pending() > OUTPUT_PAUSE {
                c.paused = true;
            }
            self.dirty.push(key);
        }
    }

    /// Resolves a forwarded write's slot in its client's queue.
    fn resolve_forward(&mut self, key: usize, conn_id: u64, fid: u64, slot: Slot) {
        let commit = self.commit;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.id != conn_id {
            return;
        }
        let Kind::Client(cl) = &mut c.kind else {
            return;
        };
        let waiting_seq = match &slot {
            Slot::Commit { seq, .. } if *seq > commit => Some(*seq),
            _ => None,
        };
        for s in cl.replies.iter_mut() {
            if matches!(s, Slot::Forward { fid: f, .. } if *f == fid) {
                *s = slot;
                break;
            }
        }
        if !cl.replies.iter().any(|s| matches!(s, Slot::Forward { .. })) {
            self.resume.push(key);
        }
        if let Some(seq) = waiting_seq {
            self.add_waiter(seq, key, conn_id);
        }
        self.drain_replies(key);
    }

    // ----- roles ---------------------------------------------------------------------------

    /// This tracker starts ordering writes on its own. `other` is the tracker whose sessions
    /// are now stale (it died), or none at start-up, when our own old sessions are.
    fn become_solo_leader(&mut self, other: Option<u8>) {
        self.role = Role::Leader;
        self.syncing = false;
        let term = self.pos.term + 1;
        self.append(None, Op::Term { term, solo: true }, None);
        let stale = other.unwrap_or(self.cfg.me);
        let op = Op::Detach { tracker: stale };
        let _ = self.state.apply(None, &op);
        self.append(None, op, None);
        log::info!(
            "tracker {} leads alone (term {term}, log at {})",
            self.cfg.me,
            self.pos.seq
        );
        // Writes forwarded to a leader that is gone: order them here. Deduplication answers
        // those the old leader had already applied (and replicated to us).
        for (_, fwd) in std::mem::take(&mut self.forwards) {
            self.reproposed(fwd);
        }
    }

    fn reproposed(&mut self, fwd: Forward) {
        // The client's queue holds a Forward slot for this write; replace it with the outcome.
        let Forward { client, origin, op } = fwd;
        if let Some(o) = origin {
            if let Some(reply) = self.state.dedup(&o).map(str::to_string) {
                if let Some((key, id, tag)) = client {
                    let seq = self.pos.seq;
                    self.resolve_forward_to(key, id, tag, Ok((seq, reply)));
                }
                return;
            }
        }
        match self.state.apply(origin, &op) {
            Ok(reply) => {
                let seq = self.append(origin, op.clone(), None);
                self.bind_session(&op, client);
                if let Some((key, id, tag)) = client {
                    self.resolve_forward_to(key, id, tag, Ok((seq, reply)));
                }
            }
            Err(r) => {
                if let Some((key, id, tag)) = client {
                    self.resolve_forward_to(key, id, tag, Err(r));
                }
            }
        }
    }

    fn resolve_forward_to(
        &mut self,
        key: usize,
        id: u64,
        tag: u64,
        r: Result<(u64, String), Refusal>,
    ) {
        // Find the fid of this client's forward slot with this tag.
        let fid = match self.conns.get(key).map(|c| &c.kind) {
            Some(Kind::Client(cl)) => cl.replies.iter().find_map(|s| match s {
                Slot::Forward { fid, tag: t } if *t == tag => Some(*fid),
                _ => None,
            }),
            _ => None,
        };
        let Some(fid) = fid else {
            return;
        };
        let slot = match r {
            Ok((seq, reply)) => Slot::Commit {
                seq,
                text: ok_text(tag, &reply),
            },
            Err(e) => Slot::Ready(format!("{tag} err {} {}", e.code(), e.message())),
        };
        self.resolve_forward(key, id, fid, slot);
    }

    fn bind_session(&mut self, op: &Op, client: Option<(usize, u64, u64)>) {
        if let Op::Login { token, .. } | Op::Attach { token, .. } = op {
            match client {
                Some((key, id, _))
                    if self
                        .conns
                        .get(key)
                        .is_some_and(|c| c.id == id && !c.closing) =>
                {
                    if let Some(cl) = self.client(key) {
                        cl.session = Some(token.clone());
                    }
                }
                // The client left before its session started: end it.
                Some(_) => self.propose(
                    None,
                    Op::Logout {
                        token: token.clone(),
                    },
                    None,
                ),
                None => {}
            }
        }
    }

    fn link_lost(&mut self, _now: Instant) {
        let other = self.other();
        self.follower_ack = 0;
        self.sent_ack = 0;
        self.sent_commit = 0;
        self.leader_commit = 0;
        if self.cfg.me == 2 {
            self.schedule_dial(Instant::now());
        }
        match self.role {
            Role::Leader => {
                log::warn!("lost tracker {other}; going on alone");
                let term = self.pos.term + 1;
                self.append(None, Op::Term { term, solo: true }, None);
                let op = Op::Detach { tracker: other };
                let _ = self.state.apply(None, &op);
                self.append(None, op, None);
            }
            Role::Follower if !self.syncing => {
                log::warn!("lost the leader, tracker {other}; taking over");
                self.become_solo_leader(Some(other));
            }
            _ => {
                self.role = Role::Waiting;
                self.syncing = false;
                log::warn!("lost tracker {other} before catching up; waiting for it");
            }
        }
    }

    // ----- the peer link -------------------------------------------------------------------

    fn dial(&mut self, now: Instant) {
        self.dial_at = None;
        let addr = self.cfg.addrs[0];
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let kind = Kind::Peer(Peer {
                    phase: Phase::Dialing,
                    other: 1,
                    since: now,
                    snapshot: None,
                });
                match self.add_conn(stream, kind, Interest::READABLE | Interest::WRITABLE, now) {
                    Some(k) => self.link = Some(k),
                    None => self.schedule_dial(now),
                }
            }
            Err(e) => {
                log::debug!("cannot dial tracker 1 at {addr}: {e}");
                self.schedule_dial(now);
            }
        }
    }

    fn schedule_dial(&mut self, now: Instant) {
        self.dial_at = Some(now + self.dial_backoff);
        self.dial_backoff = (self.dial_backoff * 2).min(DIAL_MAX);
    }

    fn on_dialed(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.conn.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                log::debug!("cannot reach tracker 1: {e}");
                return self.drop_conn(key, now);
            }
        }
        match c.conn.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
            Err(e) => {
                log::debug!("cannot reach tracker 1: {e}");
                return self.drop_conn(key, now);
            }
        }
        let mine = link::nonce();
        if let Kind::Peer(p) = &mut c.kind {
            p.phase = Phase::AwaitChallenge { mine: mine.clone() };
            p.since = now;
        }
        c.last_heard = now;
        let me = self.cfg.me;
        self.send(
            key,
            &LinkMsg::Hello {
                tracker: me,
                nonce: mine,
            }
            .encode(),
        );
        self.mark_dirty(key);
    }

    /// `peer-hello` on a fresh client connection: the other tracker (or an impostor) is asking
    /// to become the peer link. It must answer the challenge with the cluster key.
    fn peer_hello(&mut self, key: usize, line: &[u8], now: Instant) {
        let msg = std::str::from_utf8(line).ok().map(LinkMsg::decode);
        let fresh =
            matches!(self.client(key), Some(cl) if cl.session.is_none() && cl.instance.is_none());
        let other = self.other();
        let theirs = match msg {
            Some(Ok(LinkMsg::Hello { tracker, nonce }))
                if fresh && self.cfg.me == 1 && tracker == other && self.cfg.addrs.len() > 1 =>
            {
                nonce
            }
            _ => {
                self.reply_err(
                    key,
                    0,
                    "bad_request",
                    "peer-link command on a client connection",
                );
                return;
            }
        };
        let mine = link::nonce();
        let mac = link::handshake_mac(&self.cfg.cluster_key, self.cfg.me, &theirs, &mine);
        if let Some(c) = self.conns.get_mut(key) {
            c.kind = Kind::Peer(Peer {
                phase: Phase::AwaitAuth {
                    mine: mine.clone(),
                    theirs,
                },
                other,
                since: now,
                snapshot: None,
            });
        }
        self.send(key, &LinkMsg::Challenge { nonce: mine, mac }.encode());
    }

    fn handle_peer_line(&mut self, key: usize, line: &[u8], now: Instant) {
        let Ok(text) = std::str::from_utf8(line) else {
            log::warn!("peer link sent invalid UTF-8; dropping it");
            return self.drop_conn(key, now);
        };
        // Snapshot body lines are not link messages.
        let receiving = matches!(self.conns.get(key).map(|c| &c.kind), Some(Kind::Peer(p)) if p.snapshot.is_some());
        if receiving && !text.starts_with("snapshot-end ") {
            if let Some(Connection {
                kind:
                    Kind::Peer(Peer {
                        snapshot: Some((_, lines)),
                        ..
                    }),
                ..
            }) = self.conns.get_mut(key)
            {
                if lines.len() < MAX_SNAPSHOT_LINES {
                    lines.push(text.to_string());
                    return;
                }
            }
            log::warn!("snapshot from the leader is too large; dropping the link");
            return self.drop_conn(key, now);
        }
        let msg = match LinkMsg::decode(text) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("peer link: {e}; dropping it");
                return self.drop_conn(key, now);
            }
        };
        let Some(Connection {
            kind: Kind::Peer(peer),
            ..
        }) = self.conns.get_mut(key)
        else {
            return;
        };
        let key_bytes = &self.cfg.cluster_key;
        match (&peer.phase, msg) {
            (Phase::AwaitChallenge { mine }, LinkMsg::Challenge { nonce, mac }) => {
                if !link::verify_mac(key_bytes, peer.other, mine, &nonce, &mac) {
                    log::error!(
                        "tracker {} failed the cluster-key check; check both use the same key file",
                        peer.other
                    );
                    return self.drop_conn(key, now);
                }
                let reply = link::handshake_mac(key_bytes, self.cfg.me, &nonce, mine);
                peer.phase = Phase::AwaitState;
                self.send(key, &LinkMsg::Auth { mac: reply }.encode());
                self.authenticated(key);
            }
            (Phase::AwaitAuth { mine, theirs }, LinkMsg::Auth { mac }) => {
                if !link::verify_mac(key_bytes, peer.other, mine, theirs, &mac) {
                    log::error!(
                        "a connection claiming to be tracker {} failed the cluster-key check",
                        peer.other
                    );
                    return self.drop_conn(key, now);
                }
                peer.phase = Phase::AwaitState;
                self.authenticated(key);
            }
            (Phase::AwaitState, LinkMsg::State { pos, digest }) => {
                self.on_peer_state(key, pos, digest)
            }
            (Phase::Live, msg) => self.on_link_msg(key, msg, now),
            (_, _) => {
                log::warn!("peer link: unexpected message during the handshake; dropping it");
                self.drop_conn(key, now);
            }
        }
    }

    /// The handshake succeeded: this connection is the peer link. Exchange log positions.
    fn authenticated(&mut self, key: usize) {
        if let Some(old) = self.link.filter(|&k| k != key) {
            // The other tracker restarted before we noticed its old link die.
            self.drop_conn(old, Instant::now());
        }
        self.link = Some(key);
        self.dial_backoff = DIAL_MIN;
        if let Some(c) = self.conns.get_mut(key) {
            c.conn.input.set_limit(MAX_PEER_LINE);
            c.conn.keep_output_capacity(LINK_OUTPUT_KEEP);
        }
        let digest = self.state.digest();
        let pos = self.pos;
        self.announced = Some((pos, digest.clone()));
        self.send(key, &LinkMsg::State { pos, digest }.encode());
    }

    fn on_peer_state(&mut self, key: usize, theirs: Position, their_digest: String) {
        let other = self.other();
        self.solo_at = None;
        let (announced, my_digest) = self.announced.take().unwrap_or_default();
        let mine = (announced.term, announced.seq);
        let i_lead = mine > (theirs.term, theirs.seq)
            || (mine == (theirs.term, theirs.seq) && self.cfg.me == 1);
        // Positions alone can coincide for different logs (two fresh trackers that each
        // served alone): the digest tells.
        let same =
            mine == (theirs.term, theirs.seq) && my_digest == their_digest && self.pos == announced;
        if let Some(Connection {
            kind: Kind::Peer(p),
            ..
        }) = self.conns.get_mut(key)
        {
            p.phase = Phase::Live;
        }
        self.last_ping = Instant::now();
        if i_lead {
            let was_waiting = self.role == Role::Waiting;
            // A waiting tracker that turns out to hold the longer log leads.
            self.role = Role::Leader;
            log::info!(
                "peer link up: tracker {} leads, tracker {other} follows",
                self.cfg.me
            );
            self.follower_ack = 0;
            if !same {
                let lines = self.state.snapshot_lines();
                let pos = self.pos;
                self.send(key, &LinkMsg::SnapshotBegin { pos }.encode());
                let count = lines.len();
                for l in lines {
                    self.send(key, &l);
                }
                self.send(key, &LinkMsg::SnapshotEnd { count }.encode());
            } else {
                self.follower_ack = self.pos.seq;
            }
            let term = self.pos.term + 1;
            self.append(None, Op::Term { term, solo: false }, None);
            let op = Op::Detach { tracker: other };
            let _ = self.state.apply(None, &op);
            self.append(None, op, None);
            if was_waiting {
                // Sessions from before this tracker's restart have no connection any more.
                let op = Op::Detach {
                    tracker: self.cfg.me,
                };
                let _ = self.state.apply(None, &op);
                self.append(None, op, None);
            }
        } else {
            log::info!(
                "peer link up: tracker {other} leads, tracker {} follows",
                self.cfg.me
            );
            if self.role == Role::Leader {
                // We served clients on a log the leader will overwrite: let them re-attach.
                self.close_all_clients();
            }
            self.role = Role::Follower;
            self.syncing = !same;
            self.leader_commit = 0;
            self.sent_ack = 0;
            if !same {
                if let Some(Connection {
                    kind: Kind::Peer(p),
                    ..
                }) = self.conns.get_mut(key)
                {
                    p.snapshot = None; // armed by snapshot-begin
                }
            }
        }
    }

    fn close_all_clients(&mut self) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.kind, Kind::Client(_)))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            if let Some(Kind::Client(cl)) = self.conns.get_mut(k).map(|c| &mut c.kind) {
                cl.session = None;
            }
            self.close(k);
        }
        self.waiters.clear();
    }

    fn on_link_msg(&mut self, key: usize, msg: LinkMsg, now: Instant) {
        match msg {
            LinkMsg::Ping => self.send(key, &LinkMsg::Pong.encode()),
            LinkMsg::Pong => {}
            LinkMsg::SnapshotBegin { pos } if self.role == Role::Follower => {
                if let Some(Connection {
                    kind: Kind::Peer(p),
                    ..
                }) = self.conns.get_mut(key)
                {
                    p.snapshot = Some((pos, Vec::new()));
                    self.syncing = true;
                }
            }
            LinkMsg::SnapshotEnd { count } if self.role == Role::Follower => {
                let taken = match self.conns.get_mut(key) {
                    Some(Connection {
                        kind: Kind::Peer(p),
                        ..
                    }) => p.snapshot.take(),
                    _ => None,
                };
                let Some((pos, lines)) = taken else {
                    return self.drop_conn(key, now);
                };
                if lines.len() != count {
                    log::error!(
                        "snapshot from the leader has {} lines, expected {count}",
                        lines.len()
                    );
                    return self.drop_conn(key, now);
                }
                match State::from_snapshot_lines(lines.iter().map(String::as_str)) {
                    Ok(state) => {
                        if let Err(e) = self
                            .journal
                            .write_snapshot(lines.iter().map(String::as_str), pos)
                        {
                            log::error!("cannot store the leader's snapshot: {e}; stopping");
                            self.shutdown = true;
                            return;
                        }
                        self.state = state;
                        self.pos = pos;
                        self.commit = self.commit.min(pos.seq);
                        self.syncing = false;
                        self.sent_ack = 0;
                        log::info!("caught up with the leader by snapshot at {}", pos.seq);
                    }
                    Err(e) => {
                        log::error!("the leader's snapshot is invalid: {e}");
                        self.drop_conn(key, now);
                    }
                }
            }
            LinkMsg::Op { fid, entry } if self.role == Role::Follower && !self.syncing => {
                if entry.seq != self.pos.seq + 1 {
                    log::error!(
                        "leader sent entry {} after {}; resyncing",
                        entry.seq,
                        self.pos.seq
                    );
                    return self.drop_conn(key, now);
                }
                let result = self.state.apply(entry.origin, &entry.op);
                if let Op::Term { term, solo } = entry.op {
                    self.pos.term = term;
                    self.pos.solo = solo;
                }
                self.pos.term = self.pos.term.max(entry.term);
                self.pos.seq = entry.seq;
                self.journal.append(&entry);
                let seq = entry.seq;
                if let Some(fwd) = fid.and_then(|f| self.forwards.remove(&f).map(|w| (f, w))) {
                    let (fid, w) = fwd;
                    self.bind_session(&entry.op, w.client);
                    if let Some((ckey, id, tag)) = w.client {
                        let slot = match result {
                            Ok(reply) => Slot::Commit {
                                seq,
                                text: ok_text(tag, &reply),
                            },
                            Err(e) => {
                                Slot::Ready(format!("{tag} err {} {}", e.code(), e.message()))
                            }
                        };
                        self.resolve_forward(ckey, id, fid, slot);
                    }
                }
            }
            LinkMsg::Commit { seq } if self.role == Role::Follower => {
                self.leader_commit = self.leader_commit.max(seq);
            }
            LinkMsg::FwdErr { fid, code, message } if self.role == Role::Follower => {
                if let Some(w) = self.forwards.remove(&fid) {
                    if let Some((ckey, id, tag)) = w.client {
                        self.resolve_forward(
                            ckey,
                            id,
                            fid,
                            Slot::Ready(format!("{tag} err {code} {message}")),
                        );
                    }
                }
            }
            LinkMsg::FwdOk { fid, reply } if self.role == Role::Follower => {
                if let Some(w) = self.forwards.remove(&fid) {
                    if let Some((ckey, id, tag)) = w.client {
                        self.resolve_forward(ckey, id, fid, Slot::Ready(ok_text(tag, &reply)));
                    }
                }
            }
            LinkMsg::Ack { seq } if self.role == Role::Leader => {
                self.follower_ack = self.follower_ack.max(seq);
            }
            LinkMsg::Fwd { fid, origin, op } if self.role == Role::Leader => {
                self.on_forwarded(fid, origin, op);
            }
            other => {
                log::warn!(
                    "peer link: unexpected {:?} as {:?}; dropping it",
                    other.encode().split(' ').next(),
                    self.role
                );
                self.drop_conn(key, now);
            }
        }
    }

    /// The leader orders a write its follower forwarded.
    fn on_forwarded(&mut self, fid: u64, origin: Option<Origin>, op: Op) {
        if let Some(o) = origin {
            if let Some(reply) = self.state.dedup(&o).map(str::to_string) {
                self.fwd_waiters.push_back((self.pos.seq, fid, reply));
                return;
            }
        }
        if matches!(op, Op::Term { .. } | Op::Detach { .. }) {
            self.send_link(&LinkMsg::FwdErr {
                fid,
                code: "bad_request".into(),
                message: "not a client operation".into(),
            });
            return;
        }
        match self.state.apply(origin, &op) {
            Ok(_) => {
                self.append(origin, op, Some(fid));
            }
            Err(r) => self.send_link(&LinkMsg::FwdErr {
                fid,
                code: r.code().to_string(),
                message: r.message(),
            }),
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
