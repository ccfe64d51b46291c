//! The tracker's poll loop: one thread, one `mio::Poll`, a `Slab` of connections. Every
//! connection is a secure channel (`net::secure_stream`); an accepted one is a client, unless its
//! handshake is the cluster-key one (XXpsk0), which makes it the peer link. Each turn: handle events (reads, accepts, writes), then `before_sleep`: send
//! replicated entries, fsync the journal once, advance the commit point, release the replies
//! that waited for it, flush output.
//!
//! The replication state (role, link, commit positions, forwards, timers) is `Replica`
//! (replica.rs) with its invariant; `ordering.rs` moves writes and replies through the log,
//! `replication.rs` runs the peer link, `requests.rs` answers clients, `conn_io.rs` reads and
//! flushes connections, `turns.rs` keeps the turns fair and the output bounded.

mod accept;
mod conn_io;
mod connection;
mod heal;
mod limits;
mod login;
mod ordering;
mod quotas;
mod replica;
mod replication;
mod requests;
mod turns;

use super::journal::{Journal, Position};
use super::link::LinkMsg;
use super::op::{Op, Origin};
use super::rates::{RateConfig, Rates};
use super::state::{Limits, Refusal, State};
use crate::net::conn::{Conn, ReadStatus};
use crate::net::framer::{Frame, MAX_LINE, MAX_PEER_LINE};
use crate::net::identity::Identity;
use crate::net::secure::{psk_from_cluster_key, Conversation, Role};
use crate::net::secure_stream::SecureStream;
use crate::pieces;
use crate::protocol::tracker::{
    self as proto, ErrorCode, ErrorReply, ParseError, Reply, Request, Verb, WriteReply,
};
use crate::runtime::{self, SignalPipe};
use accept::Acceptor;
use connection::{ClientConn, ConnRole, Connection, StagedUpload, UploadTarget};
use limits::{HandshakeQueue, LoopClock, OutputVerdict, TurnBudget};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use ordering::ReplyTo;
use replica::{LinkTimes, Replica, Start};
use replication::LinkPhase;
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// File descriptors kept free for the journal, snapshot writes and the peer link when the
/// connection count is at its limit.
const FD_RESERVE: u64 = 32;
/// The peer link is dropped when this much of its output is unsent: the other tracker has
/// stopped reading, and a link that cannot keep up is better re-formed from a snapshot.
const LINK_OUTPUT_CAP: usize = 32 << 20;

pub struct Config {
    pub addrs: Vec<SocketAddr>,
    /// This tracker's number, 1-based.
    pub me: u8,
    pub data_dir: PathBuf,
    /// The shared secret of the peer link; unused by a single tracker.
    pub cluster_key: Vec<u8>,
    /// This tracker's long-term key (`<data dir>/identity.key`), proven in every handshake.
    pub identity: Identity,
    /// Overrides the connection limit derived from the open-file limit (tests).
    pub max_connections: Option<usize>,
    /// Journal size that triggers a snapshot (default `journal::COMPACT_BYTES`).
    pub compact_bytes: Option<u64>,
    /// Quotas this tracker writes into the log when it leads (`state::quota`).
    pub limits: Limits,
    /// Per-address rates, local to this tracker (`tracker::rates`).
    pub rates: RateConfig,
    /// PBKDF2 iterations for new users, told to clients in `hello` (`--kdf-iterations`); the
    /// client pays them per login, the tracker never.
    pub kdf_iterations: u32,
    /// Seconds a peer ticket issued by this tracker stays valid (`--ticket-lifetime`, default
    /// `ticket::DEFAULT_LIFETIME`, at most `ticket::MAX_LIFETIME`).
    pub ticket_lifetime: u64,
}

pub struct Server {
    cfg: Config,
    poll: Poll,
    acceptor: Acceptor,
    signals: SignalPipe,
    conns: Slab<Connection>,
    next_conn_id: u64,
    max_connections: usize,

    state: State,
    journal: Journal,
    pos: Position,
    /// Role, peer link, commit positions, forwards and waiters, dial and solo timers.
    repl: Replica,
    /// Registrations and failed logins per source address; this tracker's own.
    rates: Rates,
    dirty: Vec<usize>,
    /// Clients whose forwarded write came back: handle their buffered requests.
    resume: Vec<usize>,
    closing: Vec<usize>,
    shutdown: bool,
    /// Keys the decoy verifiers of unknown users (`login_begin` looks the same for any name).
    decoy_secret: Vec<u8>,
    /// Loop turns so far; a connection's `TurnBudget` renews when this moves on.
    turn: u64,
    /// Connections with a handshake message waiting for their turn.
    handshakes: HandshakeQueue,
    /// The handshake queue was left non-empty last turn (logged when that starts).
    handshakes_waited: bool,
    /// Client connections with work left when their turn's budget ran out (or resumed from a
    /// pause), by key and id, in the order they stopped: served first next turn, and while it
    /// is not empty the loop polls without sleeping.
    backlog: VecDeque<(usize, u64)>,
    /// Client events of this turn, handled after the listener's and the link's.
    client_events: Vec<(usize, bool, bool, bool)>,
    /// Silence is measured on the loop's own clock (see `LoopClock`).
    clock: LoopClock,
    /// The next scan for logged-in clients silent past `limits::CLIENT_SILENCE`.
    next_sweep: Instant,
    /// The peer link's Noise PSK, from the cluster key; `None` for a single tracker.
    link_psk: Option<[u8; 32]>,
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
        let decoy_secret = login::decoy_secret(&cfg.cluster_key)?;
        let pos = recovered.pos;
        let paired_config = cfg.addrs.len() > 1;
        let now = Instant::now();
        let mut server = Server {
            poll,
            acceptor: Acceptor::new(listener),
            signals,
            conns: Slab::new(),
            next_conn_id: 1,
            max_connections,
            state: recovered.state,
            journal,
            pos,
            repl: Replica::new(cfg.me, paired_config, pos.seq, now),
            rates: Rates::new(cfg.rates),
            dirty: Vec::new(),
            resume: Vec::new(),
            closing: Vec::new(),
            shutdown: false,
            decoy_secret,
            turn: 0,
            handshakes: HandshakeQueue::default(),
            handshakes_waited: false,
            backlog: VecDeque::new(),
            client_events: Vec::new(),
            clock: LoopClock::new(now),
            next_sweep: now + limits::SWEEP_EVERY,
            link_psk: paired_config.then(|| psk_from_cluster_key(&cfg.cluster_key)),
            cfg,
        };
        match server.repl.start(recovered.fresh, pos.solo, now) {
            Start::LeadAlone => server.become_solo_leader(None),
            Start::Grace => {}
            Start::WaitForOther => log::warn!(
                "this tracker's log ends in a paired term: waiting for tracker {} before serving, \
                 because it may hold acknowledged writes this tracker has not seen",
                server.repl.other()
            ),
        }
        Ok(server)
    }

    fn serving(&self) -> bool {
        self.repl.serving()
    }

    /// The request `tag` on connection `key`, to be answered later (`None` if it is gone).
    fn reply_to(&self, key: usize, tag: u64) -> Option<ReplyTo> {
        let conn_id = self.conns.get(key)?.id;
        Some(ReplyTo { key, conn_id, tag })
    }

    /// Runs until SIGINT/SIGTERM.
    ///
    /// A turn: poll; the listener, the signals and the peer link first; then the client
    /// connections left over from the last turn, then this turn's client events, each client
    /// handling at most its `TurnBudget`; timers; `before_sleep`. No client can hold a turn
    /// for longer than its budget, so accepting, timers and the link never wait behind one.
    pub fn run(&mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        while !self.shutdown {
            let polled_at = Instant::now();
            let timeout = self.poll_timeout(polled_at);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll failed: {e}"));
            }
            let now = Instant::now();
            self.turn += 1;
            if self.clock.turn_starts(polled_at, timeout, now) {
                log::info!(
                    "this tracker's loop stalled (stopped, or a turn took long); silence is \
                     counted again from now"
                );
            }
            let mut client_events = std::mem::take(&mut self.client_events);
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
                        let flags = (
                            key,
                            event.is_readable(),
                            event.is_writable(),
                            event.is_read_closed() || event.is_error(),
                        );
                        if matches!(c.kind, ConnRole::Link(_)) {
                            self.on_event(flags, now);
                        } else {
                            client_events.push(flags);
                        }
                    }
                }
            }
            self.serve_backlog(now);
            for flags in client_events.drain(..) {
                self.on_event(flags, now);
            }
            self.client_events = client_events;
            self.serve_handshakes(now);
            self.timers(now);
            self.before_sleep();
        }
        if let Err(e) = self.journal.flush() {
            return Err(format!("cannot flush the journal at shutdown: {e}"));
        }
        log::info!("tracker {} stopped; journal flushed", self.cfg.me);
        Ok(())
    }

    /// One connection's readiness: `(key, readable, writable, closed)`.
    fn on_event(
        &mut self,
        (key, readable, writable, closed): (usize, bool, bool, bool),
        now: Instant,
    ) {
        let Some(c) = self.conns.get(key) else {
            return; // closed earlier in this batch
        };
        if c.closing {
            return;
        }
        if matches!(&c.kind, ConnRole::Link(p) if matches!(p.phase, LinkPhase::Dialing)) {
            self.on_dialed(key, now);
            return;
        }
        if writable {
            self.mark_dirty(key);
        }
        if readable || closed {
            self.on_readable(key, now, !closed);
        }
    }

    /// Until the nearest timer (`Replica::next_deadline`, the silence sweep, a snapshot child
    /// to collect or a snapshot to retry); forever when nothing is timed. Zero while
    /// connections wait on the backlog or in the handshake queue.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.backlog.is_empty() || !self.handshakes.is_empty() {
            return Some(Duration::ZERO);
        }
        let timers = [
            self.repl.next_deadline(self.link_times()),
            Some(self.next_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_duration_since(now));
        [timers, self.journal.compaction_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn link_times(&self) -> Option<LinkTimes> {
        match self.conns.get(self.repl.link_key()?) {
            Some(Connection {
                last_heard,
                kind: ConnRole::Link(p),
                ..
            }) => Some(LinkTimes {
                heard: self.clock.heard_since(*last_heard),
                since: p.since,
            }),
            _ => None,
        }
    }

    // ----- connections -------------------------------------------------------------------

    fn accept(&mut self, now: Instant) {
        while let Some(stream) = self.acceptor.next() {
            if self.conns.len() >= self.max_connections {
                accept::refuse(
                    &stream,
                    "too many connections; try the other tracker or later",
                );
                continue;
            }
            self.add_conn(
                stream,
                ConnRole::Client(ClientConn::new()),
                Interest::READABLE,
                now,
            );
        }
    }

    fn add_conn(
        &mut self,
        stream: TcpStream,
        kind: ConnRole,
        interest: Interest,
        now: Instant,
    ) -> Option<usize> {
        let _ = stream.set_nodelay(true);
        let identity = &self.cfg.identity;
        let made = match (&kind, self.link_psk.as_ref()) {
            // Only tracker 2 dials, and only when paired (so with a PSK).
            (ConnRole::Link(_), psk) => SecureStream::new(
                stream,
                Role::Initiator,
                identity,
                psk,
                Conversation::TrackerTracker,
                false,
            ),
            (ConnRole::Client(_), psk) => {
                SecureStream::new(
                    stream,
                    Role::Responder,
                    identity,
                    None,
                    Conversation::ClientTracker,
                    false,
                )
                .map(|mut s| {
                    // Tracker 1 is the one tracker 2 dials.
                    if let (Some(psk), 1) = (psk, self.cfg.me) {
                        s.accept_link_too(*psk);
                    }
                    s
                })
            }
        };
        let mut stream = match made {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot start a secure channel: {e}");
                return None;
            }
        };
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
        let limit = if matches!(kind, ConnRole::Link(_)) {
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
            established: false,
            last_heard: now,
            budget: TurnBudget::default(),
            in_backlog: false,
            handshake_queued: false,
        });
        Some(key)
    }

    /// The static key connection `key`'s client proved in its handshake (64 hex). Requests
    /// are read only after the handshake, so it is there; an empty string (refused by the
    /// state as malformed) only if the connection vanished.
    fn client_key(&self, key: usize) -> String {
        self.conns
            .get(key)
            .and_then(Connection::remote_key_hex)
            .unwrap_or_default()
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
        if let Some(k) = self.repl.link_key() {
            let line = msg.encode();
            self.send(k, &line);
        }
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
            ConnRole::Client(cl) => cl.session.take(),
            ConnRole::Link(_) => None,
        };
        self.close(key);
        if let Some(token) = session {
            self.propose(None, Op::Logout { token }, None);
        }
        if self.repl.link_key() == Some(key) {
            self.link_closed(now);
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.repl.take_due_solo(now) {
            log::info!(
                "tracker {} did not appear; serving alone",
                self.repl.other()
            );
            self.become_solo_leader(None);
        }
        if self.repl.take_due_dial(now) {
            self.dial(now);
        }
        if let Some(msg) = self.repl.take_due_commit(now) {
            self.send_link(&msg);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + limits::SWEEP_EVERY;
            self.close_silent_clients(now);
        }
        let (Some(k), Some(times)) = (self.repl.link_key(), self.link_times()) else {
            return;
        };
        if self.repl.link_expired(times, now) {
            log::warn!("peer link silent for too long; dropping it");
            self.drop_conn(k, now);
        } else if self.repl.take_due_ping(now) {
            self.send_link(&LinkMsg::Ping);
        }
    }

    fn before_sleep(&mut self) {
        let now = Instant::now();
        self.resume_clients(now);
        // 1. Replies the follower's acknowledgement committed (read this turn, for entries
        //    already durable here) leave before this turn's fsync, not after it. The entries
        //    appended this turn go to the follower first, so both disks work at once; a link
        //    that would carry only a `commit` waits behind the replies (and the commit
        //    itself waits for the next entries, `COMMIT_DELAY` at most). Other output (replies to
        //    reads of this turn) still leaves after the fsync, as before.
        let appended = self.journal.appended > self.journal.durable;
        let later = std::mem::take(&mut self.dirty);
        let mut tell = self.repl.advance_commit_lazily(self.journal.durable, now);
        if appended {
            // A held-back commit rides with the entries.
            if let Some(msg) = tell.take().or_else(|| self.repl.carry_commit()) {
                self.send_link(&msg);
            }
            if let Some(k) = self.repl.link_key() {
                self.flush_conn(k);
            }
        }
        self.release();
        self.flush_dirty();
        if let Some(msg) = tell {
            self.send_link(&msg);
        }
        self.dirty.extend(later);
        // 2. One fsync for everything appended this turn.
        if let Err(e) = self.journal.flush() {
            // Acknowledging without durability would lie to clients; stopping is the only
            // honest answer.
            log::error!("cannot write the journal: {e}; stopping");
            self.shutdown = true;
            return;
        }
        // 3. Commit point, now that this turn's entries are durable here.
        self.advance_commit_and_release(self.journal.durable);
        if !self.repl.unapplied.is_empty() {
            // A follower's ack leaves before it applies what it acknowledges.
            if let Some(k) = self.repl.link_key() {
                self.flush_conn(k);
            }
            self.apply_received();
            self.resume_clients(now);
        }
        // 4. Output.
        self.flush_dirty();
        // 5. Close what was scheduled.
        let closed = !self.closing.is_empty();
        for k in std::mem::take(&mut self.closing) {
            if let Some(mut c) = self.conns.try_remove(k) {
                let _ = c.conn.flush();
                let _ = self.poll.registry().deregister(&mut c.conn.stream);
            }
        }
        if closed && self.acceptor.retry_after_close() {
            self.accept(Instant::now());
        }
        // 6. Compaction: started when due and collected when done; a child process writes
        // the snapshot. An error is the journal's own, so it stops the tracker as above.
        if let Err(e) = self.journal.compact(&self.state, self.pos) {
            log::error!("cannot write the journal: {e}; stopping");
            self.shutdown = true;
        }
    }

    /// Moves the commit point to what both trackers hold (`durable` here), tells the other
    /// tracker, and queues the replies that were waiting for it.
    fn advance_commit_and_release(&mut self, durable: u64) {
        if let Some(msg) = self.repl.advance_commit_lazily(durable, Instant::now()) {
            self.send_link(&msg);
        }
        self.release();
    }
}
