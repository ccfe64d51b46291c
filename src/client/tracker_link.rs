//! The client's connection to the trackers, as an explicit state machine:
//!
//! ```text
//! Waiting(backoff) → Connecting(non-blocking) → Hello → [Retrying] → [Attaching] → Ready
//!        ↑__________________ on loss, refusal or timeout: the next tracker __|
//! ```
//!
//! The link numbers requests (tags from 1), keeps every request that has not been answered,
//! and after a failover re-attaches the session (`attach`, or `login` with the remembered
//! credentials when the new tracker does not know the session) and re-sends the unanswered
//! requests with their original tags; the trackers deduplicate writes by (instance, tag), so a
//! command in flight during a failover is carried out exactly once. At most one write (any
//! request but a read or `have`) is on the wire at a time.
//!
//! The link owns no policy about what replies mean: it hands `(tag, Reply)` back to the app.

use crate::client::known_trackers::{self, KnownTrackers, Trust};
use crate::cluster::TrackerEntry;
use crate::net::conn::{Conn, ReadStatus};
use crate::net::framer::{Frame, MAX_LINE};
use crate::net::identity::{Fingerprint, Identity};
use crate::net::secure::{Conversation, Role};
use crate::net::secure_stream::SecureStream;
use crate::protocol::tracker::{request_line, ErrorCode, Reply, ReplyReader, Verb};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The poll token of the tracker connection (the peer side uses tokens ≥ `peers::TOKEN_BASE`).
pub const TRACKER_TOKEN: Token = Token(1);
/// A connection attempt, `hello` or re-attach that takes longer than this is given up and the
/// other tracker tried: on loopback or a LAN a live tracker answers in milliseconds.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// A tracker that answers nothing for this long while requests wait is taken for dead. Long
/// enough for a tracker that is waiting on its peer's fsync, short enough that a user waits
/// for a hung tracker no longer than for a slow command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Backoff after every tracker was tried in vain: doubles from the first value to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How a request relates to deduplication and ordering on the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    /// Changes nothing: may be pipelined freely.
    Read,
    /// Changes state: at most one on the wire at a time.
    Write,
    /// `have`: idempotent, pipelined freely.
    Have,
}

impl RequestClass {
    /// The class of a request: `have` apart, writes are the verbs the trackers deduplicate.
    pub fn of(verb: &Verb) -> RequestClass {
        match verb {
            Verb::Have { .. } => RequestClass::Have,
            v if v.is_write() => RequestClass::Write,
            _ => RequestClass::Read,
        }
    }
}

/// The logged-in session the link re-attaches after a failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub password: String,
    pub token: String,
}

/// Who the trackers are and how their keys are checked: the tracker_info entries (with their
/// pins), the known_trackers file for trust on first use, and this process's own key.
pub struct TrackerTrust {
    /// One per tracker, tracker 1 first.
    pub entries: Vec<TrackerEntry>,
    /// The tracker_info file's name, for messages that send a person to edit it.
    pub info_file: String,
    /// Remembered keys; `None` checks pins only and trusts an unpinned key without
    /// remembering it (the link's own unit tests).
    pub known: Option<KnownTrackers>,
    /// This client's static key for this run: proven to the trackers, which publish it to
    /// downloaders.
    pub identity: Identity,
}

impl TrackerTrust {
    /// Unpinned trackers, nothing remembered (tests).
    pub fn unpinned(addrs: &[SocketAddr], identity: Identity) -> TrackerTrust {
        TrackerTrust {
            entries: addrs
                .iter()
                .enumerate()
                .map(|(i, &addr)| TrackerEntry {
                    addr,
                    pin: None,
                    line: i + 1,
                })
                .collect(),
            info_file: "tracker_info".into(),
            known: None,
            identity,
        }
    }

    /// Accepts or refuses the key `tracker` proved; `Ok(Some(note))` on first use.
    fn check(&mut self, tracker: usize, key: &[u8; 32]) -> Result<Option<String>, String> {
        let entry = &self.entries[tracker];
        let fp = Fingerprint::of(key);
        match &mut self.known {
            Some(known) => match known.verify(entry, &self.info_file, &fp)? {
                Trust::FirstUse => Ok(Some(format!(
                    "note: first connection to tracker {} ({}): trusting its key {fp}, remembered in {}; \
                     to pin it, put the fingerprint after the address in {}",
                    tracker + 1,
                    entry.addr,
                    known.path().display(),
                    self.info_file
                ))),
                Trust::Pinned | Trust::Known => Ok(None),
            },
            None => match known_trackers::decide(entry.pin.as_ref(), None, &fp) {
                known_trackers::Decision::PinMismatch => Err(format!(
                    "refusing tracker {}: it proved key {fp}, but {} line {} pins another",
                    entry.addr, self.info_file, entry.line
                )),
                _ => Ok(None),
            },
        }
    }
}

/// Something the app must hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A line for the person as it is (`note: ...` on first trust of a tracker's key,
    /// `warning: refusing tracker ...` when a tracker proves a key other than the pinned or
    /// remembered one).
    Notice(String),
    /// The answer to the request with this tag.
    Reply { tag: u64, reply: Reply },
    /// The link is ready on a tracker (1-based number in the info file); `switched` when it
    /// was ready on another tracker before.
    Connected {
        tracker: usize,
        addr: SocketAddr,
        switched: bool,
    },
    /// Every tracker was tried and none answered; the link keeps trying. Once per outage.
    Unreachable,
    /// The session could not be re-attached after a failover (the reason is a sentence).
    SessionLost { reason: String },
}

#[derive(Clone, Debug)]
struct QueuedRequest {
    tag: u64,
    class: RequestClass,
    /// `verb args...` without the tag.
    line: String,
    /// Data lines that follow the request (upload_file's hash lines).
    extra: Vec<String>,
    /// Sent again once after `not_logged_in` with a session that the link thought attached.
    retried_session: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    /// No connection; the next attempt at `until`.
    Waiting { until: Instant },
    /// Non-blocking connect in progress.
    Connecting { since: Instant },
    /// `hello` sent with this tag.
    Hello { tag: u64, since: Instant },
    /// The write that was in flight when the last tracker went away, re-sent (this tag)
    /// before the session is re-attached: see `after_hello`.
    Retrying { tag: u64, since: Instant },
    /// `attach` (or, when `via_login`, `login`) sent with this tag.
    Attaching {
        tag: u64,
        via_login: bool,
        since: Instant,
    },
    /// Requests flow.
    Ready,
}

/// The tracker connection. See the module documentation.
pub struct TrackerLink {
    trackers: Vec<SocketAddr>,
    trust: TrackerTrust,
    /// (tracker, key) pairs already refused and reported, so a retry loop does not repeat it.
    refused: Vec<(usize, [u8; 32])>,
    /// Index of the tracker being tried or used.
    current: usize,
    /// Index of the tracker the link was last ready on, for the "switched" note.
    last_ready: Option<usize>,
    state: LinkState,
    /// The connection, inside its secure channel (gated: nothing is sent after the handshake
    /// until the tracker's key is checked).
    conn: Option<Conn<SecureStream<TcpStream>>>,
    reader: ReplyReader,
    /// Sent in `hello`: the trackers deduplicate writes per instance.
    instance: u64,
    /// Address this client serves pieces at, sent with `login` and `attach`.
    advertise: SocketAddr,
    next_tag: u64,
    /// Sent on the current connection (or to re-send on the next), unanswered, in tag order.
    in_flight: VecDeque<QueuedRequest>,
    /// Not sent yet: held while a write is in flight or the link is not ready.
    queue: VecDeque<QueuedRequest>,
    session: Option<Session>,
    /// Failed attempts since the link was last ready (drives the backoff).
    failures: u32,
    /// Whether `Unreachable` was reported for the current outage.
    reported_unreachable: bool,
    /// When the oldest in-flight request started waiting for progress.
    waiting_since: Option<Instant>,
    events: Vec<LinkEvent>,
}

impl TrackerLink {
    /// A link that will try `trackers[preferred]` first. Call `tick` to start connecting.
    pub fn new(
        trust: TrackerTrust,
        preferred: usize,
        instance: u64,
        advertise: SocketAddr,
        now: Instant,
    ) -> Self {
        let trackers: Vec<SocketAddr> = trust.entries.iter().map(|e| e.addr).collect();
        assert!(!trackers.is_empty());
        TrackerLink {
            current: preferred.min(trackers.len() - 1),
            trackers,
            trust,
            refused: Vec::new(),
            last_ready: None,
            state: LinkState::Waiting { until: now },
            conn: None,
            reader: ReplyReader::default(),
            instance,
            advertise,
            next_tag: 1,
            in_flight: VecDeque::new(),
            queue: VecDeque::new(),
            session: None,
            failures: 0,
            reported_unreachable: false,
            waiting_since: None,
            events: Vec::new(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state == LinkState::Ready
    }

    /// The Noise handshake hash of the current tracker connection (`None` before its
    /// handshake ends): login and attach proofs bind to it.
    pub fn channel_binding(&self) -> Option<[u8; 32]> {
        self.conn.as_ref()?.stream.channel_binding()
    }

    /// This client's static public key, as the trackers learn it from the handshake.
    pub fn public_key(&self) -> &[u8; 32] {
        self.trust.identity.public()
    }

    /// The address of the tracker in use (or being tried).
    pub fn tracker_addr(&self) -> SocketAddr {
        self.trackers[self.current]
    }

    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Sets the session to re-attach after a failover (after `login`), or clears it (logout).
    pub fn set_session(&mut self, session: Option<Session>) {
        self.session = session;
    }

    /// Queues a request (plus data lines: `upload_file`'s hash lines) and returns its tag.
    pub fn send(
        &mut self,
        registry: &Registry,
        verb: &Verb,
        extra: Vec<String>,
        now: Instant,
    ) -> u64 {
        let (class, line) = (RequestClass::of(verb), verb.encode());
        let tag = self.take_tag();
        self.queue.push_back(QueuedRequest {
            tag,
            class,
            line,
            extra,
            retried_session: false,
        });
        self.pump(registry, now);
        tag
    }

    /// Forgets a request that the app no longer waits for (it gave up on it).
    pub fn abandon(&mut self, tag: u64) {
        self.queue.retain(|r| r.tag != tag);
        // An in-flight request keeps its place so replies still line up; its reply is
        // delivered and ignored by the app.
    }

    fn take_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<LinkEvent> {
        std::mem::take(&mut self.events)
    }

    /// The next moment `tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            LinkState::Waiting { until } => Some(until),
            LinkState::Connecting { since }
            | LinkState::Hello { since, .. }
            | LinkState::Attaching { since, .. } => Some(since + HANDSHAKE_TIMEOUT),
            LinkState::Retrying { since, .. } => Some(since + REPLY_TIMEOUT),
            LinkState::Ready => self.waiting_since.map(|t| t + REPLY_TIMEOUT),
        }
    }

    /// Runs the link's timers: connection attempts, handshake and reply timeouts.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        match self.state {
            LinkState::Waiting { until } if now >= until => self.connect(registry, now),
            LinkState::Connecting { since }
            | LinkState::Hello { since, .. }
            | LinkState::Attaching { since, .. }
                if now >= since + HANDSHAKE_TIMEOUT =>
            {
                log::info!("tracker {} did not answer in time", self.tracker_addr());
                self.fail(registry, now, true);
            }
            LinkState::Retrying { since, .. } if now >= since + REPLY_TIMEOUT => {
                log::info!("tracker {} did not answer in time", self.tracker_addr());
                self.fail(registry, now, true);
            }
            LinkState::Ready => {
                if let Some(t) = self.waiting_since {
                    if now >= t + REPLY_TIMEOUT {
                        log::warn!("tracker {} stopped answering", self.tracker_addr());
                        self.fail(registry, now, true);
                    }
                }
            }
            _ => {}
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        let addr = self.tracker_addr();
        log::debug!("connecting to tracker {addr}");
        let stream = TcpStream::connect(addr).and_then(|s| {
            SecureStream::new(
                s,
                Role::Initiator,
                &self.trust.identity,
                None,
                Conversation::ClientTracker,
                true,
            )
            .map_err(|e| std::io::Error::other(e.to_string()))
        });
        match stream {
            Ok(mut stream) => {
                if let Err(e) = registry.register(
                    &mut stream,
                    TRACKER_TOKEN,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    log::warn!("cannot register the tracker connection: {e}");
                    self.fail(registry, now, true);
                    return;
                }
                self.conn = Some(Conn::new(stream, MAX_LINE));
                self.reader = ReplyReader::default();
                self.state = LinkState::Connecting { since: now };
            }
            Err(e) => {
                log::debug!("cannot connect to tracker {addr}: {e}");
                self.fail(registry, now, true);
            }
        }
    }

    /// Drops the connection and schedules the next attempt: at once at the other tracker, with
    /// backoff once both were tried in vain. `advance` moves to the other tracker.
    fn fail(&mut self, registry: &Registry, now: Instant, advance: bool) {
        if let Some(mut c) = self.conn.take() {
            let _ = registry.deregister(&mut c.stream);
        }
        // In-flight requests stay where they are: they are re-sent, same tags, once the next
        // connection is ready; the queue behind them follows.
        self.waiting_since = None;
        self.failures += 1;
        if advance {
            self.current = (self.current + 1) % self.trackers.len();
        }
        let n = self.trackers.len() as u32;
        let delay = if !self.failures.is_multiple_of(n) {
            Duration::ZERO
        } else {
            let rounds = (self.failures / n).saturating_sub(1).min(10);
            (BACKOFF_MIN * 2u32.pow(rounds)).min(BACKOFF_MAX)
        };
        if self.failures >= n && !self.reported_unreachable {
            self.reported_unreachable = true;
            self.events.push(LinkEvent::Unreachable);
        }
        self.state = LinkState::Waiting { until: now + delay };
    }

    /// Handles a readiness event of the tracker connection.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        if event.token() != TRACKER_TOKEN || self.conn.is_none() {
            return;
        }
        if let LinkState::Connecting { .. } = self.state {
            let conn = self.conn.as_mut().expect("checked above");
            match conn.stream.socket().take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    log::debug!("cannot connect to tracker {}: {e}", self.tracker_addr());
                    return self.fail(registry, now, true);
                }
            }
            match conn.stream.socket().peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
                Err(e) => {
                    log::debug!("cannot connect to tracker {}: {e}", self.tracker_addr());
                    return self.fail(registry, now, true);
                }
            }
            let tag = self.take_tag();
            let hello = Verb::Hello {
                instance: self.instance,
            };
            let hello = request_line(tag, &hello.encode());
            self.conn.as_mut().expect("checked").send_line(&hello);
            self.state = LinkState::Hello { tag, since: now };
        }
        self.service(registry, now);
    }

    /// Writes what is queued, reads what arrived, and acts on complete replies.
    fn service(&mut self, registry: &Registry, now: Instant) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.flush() {
            log::info!("lost tracker {}: {e}", self.trackers[self.current]);
            return self.fail(registry, now, true);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let status = match conn.fill(false) {
                Ok(s) => s,
                Err(e) => {
                    log::info!("lost tracker {}: {e}", self.trackers[self.current]);
                    return self.fail(registry, now, true);
                }
            };
            if conn.stream.awaiting_approval() {
                if !self.approve_tracker_key(registry, now) {
                    return;
                }
                continue;
            }
            loop {
                let Some(conn) = self.conn.as_mut() else {
                    return;
                };
                let line = match conn.input.next_line() {
                    Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                    Frame::NeedMore => break,
                    Frame::TooLong => {
                        log::warn!(
                            "tracker {} sent a line that is too long",
                            self.tracker_addr()
                        );
                        return self.fail(registry, now, true);
                    }
                };
                match self.reader.feed(&line) {
                    Ok(Some((tag, reply))) => self.on_reply(registry, tag, reply, now),
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("tracker {}: {e}", self.tracker_addr());
                        return self.fail(registry, now, true);
                    }
                }
            }
            match status {
                ReadStatus::Drained => break,
                ReadStatus::Full => continue,
                ReadStatus::Closed => {
                    log::info!("tracker {} closed the connection", self.tracker_addr());
                    return self.fail(registry, now, true);
                }
            }
        }
        self.flush(registry, now);
    }

    /// The handshake ended: the tracker's key must be the pinned or remembered one (or is
    /// remembered now) before `hello` and anything after it leave. False when refused (the
    /// connection is then dropped and the other tracker tried, the person told once).
    fn approve_tracker_key(&mut self, registry: &Registry, now: Instant) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let Some(key) = conn.stream.remote_static().copied() else {
            self.fail(registry, now, true);
            return false;
        };
        match self.trust.check(self.current, &key) {
            Ok(note) => {
                if let Some(note) = note {
                    self.events.push(LinkEvent::Notice(note));
                }
                conn.stream.approve();
                true
            }
            Err(why) => {
                log::warn!("{why}");
                if !self.refused.contains(&(self.current, key)) {
                    self.refused.push((self.current, key));
                    self.events
                        .push(LinkEvent::Notice(format!("warning: {why}")));
                }
                // Nothing was sent after the handshake: the wrong tracker never saw a request.
                self.fail(registry, now, true);
                false
            }
        }
    }

    fn flush(&mut self, registry: &Registry, now: Instant) {
        if let Some(conn) = self.conn.as_mut() {
            if let Err(e) = conn.flush() {
                log::info!("lost tracker {}: {e}", self.trackers[self.current]);
                self.fail(registry, now, true);
            }
        }
    }

    fn on_reply(&mut self, registry: &Registry, tag: u64, reply: Reply, now: Instant) {
        match self.state {
            LinkState::Hello { tag: t, .. } if t == tag => match reply {
                Reply::Ok(words) => {
                    log::debug!(
                        "tracker {} is tracker {}",
                        self.tracker_addr(),
                        words.join(" ")
                    );
                    self.after_hello(registry, now);
                }
                Reply::Err { code, message } => {
                    log::info!("tracker {} refused: {code} {message}", self.tracker_addr());
                    self.fail(registry, now, true);
                }
                Reply::List { .. } => self.fail(registry, now, true),
            },
            LinkState::Retrying { tag: t, .. } if t == tag => {
                let not_done =
                    matches!(&reply, Reply::Err { code, .. } if *code == ErrorCode::NotLoggedIn);
                if !not_done {
                    let line = self
                        .in_flight
                        .iter()
                        .find(|r| r.tag == tag)
                        .map(|r| r.line.clone());
                    if matches!(&reply, Reply::Ok(_))
                        && line.as_deref() == Some(Verb::Logout.name())
                    {
                        self.session = None;
                    }
                    if let Some(pos) = self.in_flight.iter().position(|r| r.tag == tag) {
                        self.in_flight.remove(pos);
                    }
                    self.events.push(LinkEvent::Reply { tag, reply });
                }
                self.attach_or_ready(registry, now);
            }
            LinkState::Attaching {
                tag: t, via_login, ..
            } if t == tag => match reply {
                Reply::Ok(words) => {
                    if via_login {
                        if let (Some(s), Some(token)) = (self.session.as_mut(), words.first()) {
                            s.token = token.clone();
                        }
                    }
                    self.become_ready(registry, now);
                }
                Reply::Err {
                    code: ErrorCode::NoSession,
                    ..
                } if !via_login => {
                    self.send_login(now);
                }
                Reply::Err { code, message } => {
                    let user = self.session.take().map(|s| s.user).unwrap_or_default();
                    let reason = match code {
                        ErrorCode::AlreadyLoggedIn => {
                            format!("{user} is logged in from another client")
                        }
                        ErrorCode::BadCredentials => {
                            format!("the tracker no longer accepts the password of {user}")
                        }
                        _ => message,
                    };
                    self.events.push(LinkEvent::SessionLost { reason });
                    self.become_ready(registry, now);
                }
                Reply::List { .. } => self.fail(registry, now, true),
            },
            LinkState::Ready => self.deliver(registry, tag, reply, now),
            _ => log::debug!(
                "unexpected reply {tag} from tracker {}",
                self.tracker_addr()
            ),
        }
    }

    /// After `hello`: a write that was in flight is re-sent *before* the session is
    /// re-attached. The trackers remember one (tag, reply) per instance — the last successful
    /// write — and `attach` is itself a write; re-sending after it would miss the record and
    /// apply the write a second time. Before it, the tracker answers a write that already
    /// happened with its original reply (no session needed for that), and one that did not
    /// with `not_logged_in`, which sends it again after the attach.
    fn after_hello(&mut self, registry: &Registry, now: Instant) {
        if self.session.is_some() {
            if let Some(w) = self
                .in_flight
                .iter()
                .find(|r| r.class == RequestClass::Write)
            {
                let conn = self.conn.as_mut().expect("connected");
                conn.send_line(&request_line(w.tag, &w.line));
                for x in &w.extra {
                    conn.send_line(x);
                }
                self.state = LinkState::Retrying {
                    tag: w.tag,
                    since: now,
                };
                self.flush(registry, now);
                return;
            }
        }
        self.attach_or_ready(registry, now);
    }

    fn attach_or_ready(&mut self, registry: &Registry, now: Instant) {
        match self.session.clone() {
            Some(s) => {
                let tag = self.take_tag();
                let attach = Verb::Attach {
                    token: s.token,
                    addr: self.advertise.to_string(),
                };
                let line = request_line(tag, &attach.encode());
                self.conn.as_mut().expect("connected").send_line(&line);
                self.state = LinkState::Attaching {
                    tag,
                    via_login: false,
                    since: now,
                };
                self.flush(registry, now);
            }
            None => self.become_ready(registry, now),
        }
    }

    fn send_login(&mut self, now: Instant) {
        let s = self.session.clone().expect("attaching has a session");
        let tag = self.take_tag();
        let login = Verb::Login {
            user: s.user,
            password: s.password,
            addr: self.advertise.to_string(),
        };
        let line = request_line(tag, &login.encode());
        self.conn.as_mut().expect("connected").send_line(&line);
        self.state = LinkState::Attaching {
            tag,
            via_login: true,
            since: now,
        };
    }

    fn become_ready(&mut self, registry: &Registry, now: Instant) {
        self.state = LinkState::Ready;
        self.failures = 0;
        self.reported_unreachable = false;
        let switched = self.last_ready.is_some_and(|i| i != self.current);
        self.last_ready = Some(self.current);
        self.events.push(LinkEvent::Connected {
            tracker: self.current + 1,
            addr: self.tracker_addr(),
            switched,
        });
        // Re-send what was unanswered on the previous connection, same tags, same order.
        let conn = self.conn.as_mut().expect("connected");
        for r in &self.in_flight {
            conn.send_line(&request_line(r.tag, &r.line));
            for x in &r.extra {
                conn.send_line(x);
            }
        }
        if !self.in_flight.is_empty() {
            self.waiting_since = Some(now);
        }
        self.pump(registry, now);
    }

    /// Sends queued requests while the link is ready and no write is held back.
    fn pump(&mut self, registry: &Registry, now: Instant) {
        if self.state != LinkState::Ready {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while let Some(front) = self.queue.front() {
            if front.class == RequestClass::Write
                && self
                    .in_flight
                    .iter()
                    .any(|r| r.class == RequestClass::Write)
            {
                break;
            }
            let r = self.queue.pop_front().expect("front exists");
            conn.send_line(&request_line(r.tag, &r.line));
            for x in &r.extra {
                conn.send_line(x);
            }
            if self.in_flight.is_empty() {
                self.waiting_since = Some(now);
            }
            self.in_flight.push_back(r);
        }
        self.flush(registry, now);
    }

    fn deliver(&mut self, registry: &Registry, tag: u64, reply: Reply, now: Instant) {
        let Some(pos) = self.in_flight.iter().position(|r| r.tag == tag) else {
            log::debug!(
                "tracker {} answered unknown request {tag}",
                self.tracker_addr()
            );
            return;
        };
        if pos != 0 {
            log::warn!(
                "tracker {} answered request {tag} out of order",
                self.tracker_addr()
            );
        }
        // A session the link believed attached is unknown on this connection (a login answered
        // from the deduplication record after a failover): attach again and re-send, once.
        if matches!(&reply, Reply::Err { code, .. } if *code == ErrorCode::NotLoggedIn)
            && self.session.is_some()
            && !self.in_flight[pos].retried_session
        {
            for r in self.in_flight.iter_mut() {
                r.retried_session = true;
            }
            log::debug!(
                "session not attached on tracker {}; attaching again",
                self.tracker_addr()
            );
            // Reconnect to the same tracker: hello, attach, then re-send every request.
            if let Some(mut c) = self.conn.take() {
                let _ = registry.deregister(&mut c.stream);
            }
            self.waiting_since = None;
            self.state = LinkState::Waiting { until: now };
            return;
        }
        self.in_flight.remove(pos);
        self.waiting_since = if self.in_flight.is_empty() {
            None
        } else {
            Some(now)
        };
        self.events.push(LinkEvent::Reply { tag, reply });
        self.pump(registry, now);
    }

    /// Drops the connection for good (exit).
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.flush();
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// Tries to write what is queued without waiting for readiness (used at exit).
    pub fn flush_now(&mut self) -> bool {
        match self.conn.as_mut() {
            Some(c) => c.flush().unwrap_or(true),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_class_follows_the_verb() {
        let g = || "g".to_string();
        let have = Verb::Have {
            group: g(),
            file: g(),
            pieces: vec![0],
        };
        assert_eq!(RequestClass::of(&have), RequestClass::Have);
        assert_eq!(
            RequestClass::of(&Verb::JoinGroup { group: g() }),
            RequestClass::Write
        );
        assert_eq!(RequestClass::of(&Verb::Logout), RequestClass::Write);
        assert_eq!(RequestClass::of(&Verb::ListGroups), RequestClass::Read);
        let download = Verb::DownloadFile {
            group: g(),
            file: g(),
        };
        assert_eq!(RequestClass::of(&download), RequestClass::Read);
    }

    /// A link against a scripted tracker on loopback: checks the hello / attach / re-send
    /// sequence over a real socket, driven by a real poll.
    #[test]
    fn failover_reattaches_and_resends_unanswered_requests_with_their_tags() {
        use std::io::Write;
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = vec![l1.local_addr().unwrap(), l2.local_addr().unwrap()];
        let t1 = std::thread::spawn(move || {
            let mut rd = accept_tracker(&l1);
            let mut line = String::new();
            rd.read_line(&mut line).unwrap();
            assert!(line.contains(" hello 00000000000000ab 1"), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} ok 1").unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert!(line.ends_with(" login alice pw 127.0.0.1:7000\n"), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} ok tok123").unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert_eq!(line, "3 create_group g\n");
            // Dies without answering.
        });
        let t2 = std::thread::spawn(move || {
            let mut rd = accept_tracker(&l2);
            let mut line = String::new();
            rd.read_line(&mut line).unwrap();
            assert!(line.contains(" hello 00000000000000ab 1"), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} ok 2").unwrap();
            // The write in flight comes first, before the attach; it did not happen here.
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert_eq!(line, "3 create_group g\n");
            writeln!(rd, "3 err not_logged_in log in first").unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert!(line.contains(" attach tok123 127.0.0.1:7000"), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} err no_session unknown").unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert!(line.contains(" login alice pw 127.0.0.1:7000"), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} ok tok456").unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert_eq!(line, "3 create_group g\n");
            writeln!(rd, "3 ok").unwrap();
            line.clear();
            let _ = rd.read_line(&mut line);
        });

        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(16);
        let now = Instant::now();
        let mut link = TrackerLink::new(
            trust(&addrs),
            0,
            0xab,
            "127.0.0.1:7000".parse().unwrap(),
            now,
        );
        let reg = poll.registry().try_clone().unwrap();
        let mut got = Vec::new();
        let mut step = |link: &mut TrackerLink, got: &mut Vec<LinkEvent>| {
            let now = Instant::now();
            link.tick(&reg, now);
            let timeout = link
                .next_deadline()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            poll.poll(&mut events, Some(timeout)).unwrap();
            for e in events.iter() {
                link.handle_event(&reg, e, Instant::now());
            }
            got.extend(link.take_events());
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let login = link.send(
            &reg.try_clone().unwrap(),
            &Verb::Login {
                user: "alice".into(),
                password: "pw".into(),
                addr: "127.0.0.1:7000".into(),
            },
            vec![],
            now,
        );
        while !got
            .iter()
            .any(|e| matches!(e, LinkEvent::Reply { tag, .. } if *tag == login))
        {
            assert!(Instant::now() < deadline);
            step(&mut link, &mut got);
        }
        link.set_session(Some(Session {
            user: "alice".into(),
            password: "pw".into(),
            token: "tok123".into(),
        }));
        let tag = link.send(
            &reg.try_clone().unwrap(),
            &Verb::CreateGroup { group: "g".into() },
            vec![],
            Instant::now(),
        );
        assert_eq!(tag, 3);
        while !got
            .iter()
            .any(|e| matches!(e, LinkEvent::Reply { tag: 3, .. }))
        {
            assert!(Instant::now() < deadline, "{got:?}");
            step(&mut link, &mut got);
        }
        assert!(got.iter().any(|e| matches!(
            e,
            LinkEvent::Connected {
                tracker: 2,
                switched: true,
                ..
            }
        )));
        assert_eq!(link.session().unwrap().token, "tok456");
        t1.join().unwrap();
        link.close(&reg);
        t2.join().unwrap();
    }

    /// A scripted tracker: for each step, reads a line that must contain `expect` and answers
    /// `reply` (with `{tag}` replaced by the line's tag; no answer when `reply` is empty).
    /// The tracker's side of one accepted connection: the secure handshake as responder, then
    /// lines read and written through the channel.
    struct ScriptedTracker(std::io::BufReader<SecureStream<std::net::TcpStream>>);

    impl ScriptedTracker {
        fn read_line(&mut self, buf: &mut String) -> std::io::Result<usize> {
            std::io::BufRead::read_line(&mut self.0, buf)
        }
    }

    impl std::io::Write for ScriptedTracker {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::io::Write::write_all(self.0.get_mut(), buf)?;
            std::io::Write::flush(self.0.get_mut())?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            std::io::Write::flush(self.0.get_mut())
        }
    }

    fn accept_tracker(l: &std::net::TcpListener) -> ScriptedTracker {
        let (s, _) = l.accept().unwrap();
        let id = Identity::generate().unwrap();
        let mut s = SecureStream::new(
            s,
            Role::Responder,
            &id,
            None,
            Conversation::ClientTracker,
            false,
        )
        .unwrap();
        s.handshake_blocking().unwrap();
        ScriptedTracker(std::io::BufReader::new(s))
    }

    fn trust(addrs: &[SocketAddr]) -> TrackerTrust {
        TrackerTrust::unpinned(addrs, Identity::generate().unwrap())
    }

    fn scripted(
        l: std::net::TcpListener,
        steps: Vec<(&'static str, &'static str)>,
    ) -> std::thread::JoinHandle<()> {
        use std::io::Write;
        std::thread::spawn(move || {
            let mut rd = accept_tracker(&l);
            for (expect, reply) in steps {
                let mut line = String::new();
                rd.read_line(&mut line).unwrap();
                assert!(line.contains(expect), "expected {expect:?}, got {line:?}");
                if !reply.is_empty() {
                    let tag = line.split(' ').next().unwrap();
                    writeln!(rd, "{}", reply.replace("{tag}", tag)).unwrap();
                }
            }
            let mut rest = String::new();
            let _ = rd.read_line(&mut rest);
        })
    }

    /// Drives the link until `done` holds for the events so far (bounded).
    fn drive(
        link: &mut TrackerLink,
        poll: &mut mio::Poll,
        got: &mut Vec<LinkEvent>,
        done: impl Fn(&[LinkEvent]) -> bool,
    ) {
        let reg = poll.registry().try_clone().unwrap();
        let mut events = mio::Events::with_capacity(16);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(got) {
            assert!(Instant::now() < deadline, "{got:?}");
            link.tick(&reg, Instant::now());
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for e in events.iter() {
                link.handle_event(&reg, e, Instant::now());
            }
            got.extend(link.take_events());
        }
    }

    #[test]
    fn a_write_that_already_happened_is_answered_once_and_then_the_session_attached() {
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = vec![l1.local_addr().unwrap(), l2.local_addr().unwrap()];
        // Tracker 1 takes the write and dies without answering.
        let t1 = scripted(
            l1,
            vec![
                (" hello ", "{tag} ok 1"),
                (" attach tok ", "{tag} ok alice"),
                (" create_group g", ""),
            ],
        );
        // Tracker 2 knows the write happened: the retry gets the original reply, before attach.
        let t2 = scripted(
            l2,
            vec![
                (" hello ", "{tag} ok 2"),
                ("create_group g", "{tag} ok"),
                (" attach tok 127.0.0.1:7000", "{tag} ok alice"),
                (" list_groups", "{tag} list 1\ng 1 alice"),
            ],
        );
        let mut poll = mio::Poll::new().unwrap();
        let reg = poll.registry().try_clone().unwrap();
        let mut link = TrackerLink::new(
            trust(&addrs),
            0,
            0xcd,
            "127.0.0.1:7000".parse().unwrap(),
            Instant::now(),
        );
        link.set_session(Some(Session {
            user: "alice".into(),
            password: "pw".into(),
            token: "tok".into(),
        }));
        let mut got = Vec::new();
        let w = link.send(
            &reg,
            &Verb::CreateGroup { group: "g".into() },
            vec![],
            Instant::now(),
        );
        let r = link.send(&reg, &Verb::ListGroups, vec![], Instant::now());
        drive(&mut link, &mut poll, &mut got, |g| {
            g.iter()
                .any(|e| matches!(e, LinkEvent::Reply { tag, .. } if *tag == r))
        });
        let replies: Vec<u64> = got
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Reply { tag, .. } => Some(*tag),
                _ => None,
            })
            .collect();
        assert_eq!(replies, vec![w, r], "each request answered once, in order");
        link.close(&reg);
        t1.join().unwrap();
        t2.join().unwrap();
    }
}
