//! The client's connection to the trackers, as an explicit state machine:
//!
//! ```text
//! Waiting(backoff) → Connecting(non-blocking) → Hello → [Retrying] → [Attaching] → Ready
//!        ↑__________________ on loss, refusal or timeout: the next tracker __|
//! ```
//!
//! The link numbers requests (tags from 1), keeps every request that has not been answered,
//! and after a failover re-attaches the session (`attach` with a proof of the session secret,
//! or, when the new tracker does not know the session, a fresh `login_begin`/`login` with the
//! keys kept from the user's login — never the password, which is not kept) and re-sends the
//! unanswered requests with their original tags; the trackers deduplicate writes by (instance,
//! tag), so a command in flight during a failover is carried out exactly once. At most one
//! write (any request but a read or `have`) is on the wire at a time. A session taken over by a
//! login elsewhere (`0 err session_taken_over`) is forgotten and never re-attached.
//!
//! The link owns no policy about what replies mean: it hands `(tag, Reply)` back to the app.

use crate::auth::login as proofs;
use crate::auth::scram::{self, ClientKeys};
use crate::auth::ticket::{self, TrackerClock};
use crate::client::known_trackers::{self, KnownTrackers, Trust};
use crate::cluster::TrackerEntry;
use crate::net::conn::{Conn, ReadStatus};
use crate::net::framer::{Frame, MAX_LINE};
use crate::net::identity::{Fingerprint, Identity};
use crate::net::secure::Conversation;
use crate::net::secure_stream::SecureStream;
use crate::pieces::to_hex;
use crate::protocol::tracker::{request_line, ErrorCode, Reply, ReplyReader, Verb, NONCE_LEN};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod attach;
mod requests;
mod trust;

use attach::AttachStep;
pub use trust::TrackerTrust;

/// A login's `ok <token> <secret> <tracker-proof>`, read and checked.
pub struct LoginReply {
    pub token: String,
    pub secret: [u8; proofs::SECRET_LEN],
}

impl LoginReply {
    /// Refuses a reply whose tracker proof does not show the tracker holds this user's
    /// verifier: an impostor tracker learns nothing from a proof, but gets no session either.
    pub fn parse(
        words: &[String],
        keys: &ClientKeys,
        auth_message: &[u8],
    ) -> Result<LoginReply, String> {
        let [token, secret, proof] = words else {
            return Err("the tracker sent an unexpected reply to login".to_string());
        };
        let secret = scram::lower_hex::<{ proofs::SECRET_LEN }>(secret)
            .ok_or("the tracker sent a malformed session secret")?;
        let proof = scram::lower_hex::<{ scram::KEY_LEN }>(proof).unwrap_or_default();
        if !keys.tracker_proof_is_valid(auth_message, &proof) {
            return Err(
                "the tracker could not prove it holds your password verifier; not logged in"
                    .to_string(),
            );
        }
        Ok(LoginReply {
            token: token.clone(),
            secret,
        })
    }
}

/// The poll token of the tracker connection (the peer side uses tokens ≥ `peers::TOKEN_BASE`).
pub const TRACKER_TOKEN: Token = Token(1);
/// A connection attempt, `hello` or re-attach that takes longer than this is given up and the
/// other tracker tried: on loopback or a LAN a live tracker answers in milliseconds.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// A tracker that answers nothing for this long while requests wait is taken for dead. Long
/// enough for a tracker that is waiting on its peer's fsync, short enough that a user waits
/// for a hung tracker no longer than for a slow command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// A logged-in link that has sent nothing for this long sends a `ping`: the tracker closes a
/// logged-in connection it has not heard from for 25 s (and ends its session), so an idle
/// client pings twice within that, and a frozen or vanished one stops being listed as a
/// source. An application ping rather than TCP keepalive because a stopped process's socket
/// still answers keepalive probes from the kernel; only the program itself can say it runs.
/// The ping's reply also tells an idle client that its tracker still answers.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
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
#[derive(Clone)]
pub struct Session {
    pub user: String,
    /// Derived once at `login` (the slow step); kept so a failover to a tracker that lost the
    /// session can log in again without the password, which the client does not keep.
    pub keys: Rc<ClientKeys>,
    /// The salt and count the keys were derived with: a re-login needs the same.
    pub salt: [u8; scram::SALT_LEN],
    pub iterations: u32,
    pub token: String,
    /// The session secret from the login reply; `attach` proves knowledge of it.
    pub secret: [u8; proofs::SECRET_LEN],
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and secret stay out of logs.
        write!(f, "Session({}, {})", self.user, self.token)
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
    /// A correct login of this user from another client ended this session (the tracker's
    /// sentence); the link forgot it and will not log in again by itself.
    TakenOver { message: String },
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

#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Re-attaching the session: the request of `step` sent with this tag.
    Attaching {
        tag: u64,
        step: AttachStep,
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
    /// The PBKDF2 count the current tracker wants for new users (its `hello` reply).
    kdf_iterations: Option<u32>,
    /// Failed attempts since the link was last ready (drives the backoff).
    failures: u32,
    /// Whether `Unreachable` was reported for the current outage.
    reported_unreachable: bool,
    /// When the oldest in-flight request started waiting for progress.
    waiting_since: Option<Instant>,
    /// When the last request went out on this connection: the keepalive's clock.
    last_sent: Instant,
    /// The tag of the keepalive `ping` in flight; its reply is the link's own.
    keepalive: Option<u64>,
    events: Vec<LinkEvent>,
    /// The tracker's clock as its last `hello` reply told it: tickets expire by it.
    clock: TrackerClock,
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
            kdf_iterations: None,
            clock: TrackerClock::default(),
            failures: 0,
            reported_unreachable: false,
            waiting_since: None,
            last_sent: now,
            keepalive: None,
            events: Vec::new(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state == LinkState::Ready
    }

    /// The PBKDF2 count for new users that the tracker named in `hello`; `None` before the
    /// first `hello` is answered.
    pub fn kdf_iterations(&self) -> Option<u32> {
        self.kdf_iterations
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

    /// The tracker's clock relative to this machine's, from the last `hello` reply.
    pub fn tracker_clock(&self) -> TrackerClock {
        self.clock
    }

    /// Sets the session to re-attach after a failover (after `login`), or clears it (logout).
    pub fn set_session(&mut self, session: Option<Session>) {
        self.session = session;
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<LinkEvent> {
        std::mem::take(&mut self.events)
    }

    /// The next moment `tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            LinkState::Waiting { until } => Some(*until),
            LinkState::Connecting { since }
            | LinkState::Hello { since, .. }
            | LinkState::Attaching { since, .. } => Some(*since + HANDSHAKE_TIMEOUT),
            LinkState::Retrying { since, .. } => Some(*since + REPLY_TIMEOUT),
            LinkState::Ready => self
                .waiting_since
                .map(|t| t + REPLY_TIMEOUT)
                .or_else(|| self.keepalive_due()),
        }
    }

    /// When an idle, logged-in link sends its keepalive `ping`; `None` while it is not idle.
    fn keepalive_due(&self) -> Option<Instant> {
        let idle = self.session.is_some()
            && self.keepalive.is_none()
            && self.in_flight.is_empty()
            && self.queue.is_empty();
        idle.then_some(self.last_sent + KEEPALIVE_IDLE)
    }

    /// Runs the link's timers: connection attempts, handshake and reply timeouts.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        match self.state.clone() {
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
                } else if self.keepalive_due().is_some_and(|at| now >= at) {
                    let tag = self.take_tag();
                    self.keepalive = Some(tag);
                    self.queue.push_back(QueuedRequest {
                        tag,
                        class: RequestClass::Read,
                        line: Verb::Ping.encode(),
                        extra: Vec::new(),
                        retried_session: false,
                    });
                    self.pump(registry, now);
                }
            }
            _ => {}
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        let addr = self.tracker_addr();
        log::debug!("connecting to tracker {addr}");
        let stream = SecureStream::dial(
            addr,
            &self.trust.identity,
            Conversation::ClientTracker,
            true,
        );
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

    fn flush(&mut self, registry: &Registry, now: Instant) {
        if let Some(conn) = self.conn.as_mut() {
            if let Err(e) = conn.flush() {
                log::info!("lost tracker {}: {e}", self.trackers[self.current]);
                self.fail(registry, now, true);
            }
        }
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
    use crate::net::secure::Role;

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

    /// A session as the app makes it after a login with password "pw" at 4096 iterations.
    fn session(token: &str) -> Session {
        Session {
            user: "alice".into(),
            keys: Rc::new(ClientKeys::derive("pw", &[5; 16], 4096)),
            salt: [5; 16],
            iterations: 4096,
            token: token.into(),
            secret: [7; proofs::SECRET_LEN],
        }
    }

    /// A link against a scripted tracker on loopback: checks the hello / attach / re-login /
    /// re-send sequence over a real socket, driven by a real poll. Tracker 2 does not know
    /// the session, so the link logs in again with the kept keys, and checks the tracker's
    /// proof.
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
            assert!(line.contains(" hello 00000000000000ab 2"), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} ok 1 4096").unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap();
            let want = format!(" attach tok123 {} 127.0.0.1:7000\n", {
                let p = proofs::attach_proof(&[7; 32], "tok123", rd.channel_binding());
                to_hex(&p)
            });
            assert!(line.ends_with(&want), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} ok alice").unwrap();
            line.clear();
            rd.read_line(&mut line).unwrap();
            assert_eq!(line, "3 create_group g\n");
            // Dies without answering.
        });
        let t2 = std::thread::spawn(move || {
            let mut rd = accept_tracker(&l2);
            let read = |rd: &mut ScriptedTracker| {
                let mut line = String::new();
                rd.read_line(&mut line).unwrap();
                line
            };
            let line = read(&mut rd);
            assert!(line.contains(" hello 00000000000000ab 2"), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} ok 2 4096").unwrap();
            // The write in flight comes first, before the attach; it did not happen here.
            assert_eq!(read(&mut rd), "3 create_group g\n");
            writeln!(rd, "3 err not_logged_in log in first").unwrap();
            let line = read(&mut rd);
            assert!(line.contains(" attach tok123 "), "{line}");
            let tag = line.split(' ').next().unwrap().to_string();
            writeln!(rd, "{tag} err no_session unknown").unwrap();
            // A fresh login with the kept keys: no password on the wire.
            let line = read(&mut rd);
            let words: Vec<&str> = line.trim_end().split(' ').collect();
            assert_eq!(words[1..3], ["login_begin", "alice"], "{line}");
            let cnonce = words[3].to_string();
            writeln!(
                rd,
                "{} ok {} 4096 {}",
                words[0],
                "05".repeat(16),
                "ee".repeat(16)
            )
            .unwrap();
            let line = read(&mut rd);
            let words: Vec<&str> = line.trim_end().split(' ').collect();
            assert_eq!(words[1..3], ["login", "alice"], "{line}");
            let keys = ClientKeys::derive("pw", &[5; 16], 4096);
            let verifier = keys.verifier([5; 16], 4096);
            let cb = rd.channel_binding();
            let msg = proofs::auth_message("alice", &cnonce, &"ee".repeat(16), &[5; 16], 4096, cb);
            let proof = scram::lower_hex::<32>(words[3]).unwrap();
            let tracker_proof = verifier.check(&msg, &proof).expect("a valid proof");
            writeln!(
                rd,
                "{} ok tok456 {} {}",
                words[0],
                "08".repeat(32),
                to_hex(&tracker_proof)
            )
            .unwrap();
            assert_eq!(read(&mut rd), "3 create_group g\n");
            writeln!(rd, "3 ok").unwrap();
            let _ = read(&mut rd);
        });

        let mut poll = mio::Poll::new().unwrap();
        let mut got = Vec::new();
        let mut link = link_to(&addrs, 0xab);
        let reg = poll.registry().try_clone().unwrap();
        link.set_session(Some(session("tok123")));
        drive(&mut link, &mut poll, &mut got, |g| {
            g.iter().any(|e| matches!(e, LinkEvent::Connected { .. }))
        });
        let tag = link.send(
            &reg,
            &Verb::CreateGroup { group: "g".into() },
            vec![],
            Instant::now(),
        );
        assert_eq!(tag, 3, "hello is 1, attach 2");
        drive(&mut link, &mut poll, &mut got, |g| {
            g.iter()
                .any(|e| matches!(e, LinkEvent::Reply { tag: 3, .. }))
        });
        assert!(got.iter().any(|e| matches!(
            e,
            LinkEvent::Connected {
                tracker: 2,
                switched: true,
                ..
            }
        )));
        let s = link.session().expect("still logged in");
        assert_eq!((s.token.as_str(), s.secret), ("tok456", [8; 32]));
        assert_eq!(link.kdf_iterations(), Some(4096));
        t1.join().unwrap();
        link.close(&reg);
        t2.join().unwrap();
    }

    #[test]
    fn a_tracker_that_cannot_prove_the_verifier_ends_the_session() {
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = vec![l1.local_addr().unwrap()];
        let t1 = scripted(
            l1,
            vec![
                (" hello ", "{tag} ok 1 4096"),
                (" attach tok ", "{tag} err no_session unknown"),
                (" login_begin alice ", "{tag} ok 05050505050505050505050505050505 4096 abab"),
                (" login alice ", "{tag} ok tok2 0808080808080808080808080808080808080808080808080808080808080808 0000000000000000000000000000000000000000000000000000000000000000"),
            ],
        );
        let mut poll = mio::Poll::new().unwrap();
        let reg = poll.registry().try_clone().unwrap();
        let mut link = link_to(&addrs, 0xcd);
        link.set_session(Some(session("tok")));
        let mut got = Vec::new();
        drive(&mut link, &mut poll, &mut got, |g| {
            g.iter().any(|e| matches!(e, LinkEvent::SessionLost { .. }))
        });
        assert!(link.session().is_none());
        link.close(&reg);
        t1.join().unwrap();
    }

    #[test]
    fn a_taken_over_session_is_forgotten_and_not_attached_again() {
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = vec![l1.local_addr().unwrap()];
        let t1 = scripted(
            l1,
            vec![
                (" hello ", "{tag} ok 1 4096"),
                (" attach tok ", "{tag} ok alice"),
                (
                    " list_groups",
                    "0 err session_taken_over alice logged in from another client",
                ),
            ],
        );
        let mut poll = mio::Poll::new().unwrap();
        let reg = poll.registry().try_clone().unwrap();
        let mut link = link_to(&addrs, 0xcd);
        link.set_session(Some(session("tok")));
        let mut got = Vec::new();
        link.send(&reg, &Verb::ListGroups, vec![], Instant::now());
        drive(&mut link, &mut poll, &mut got, |g| {
            g.iter().any(|e| matches!(e, LinkEvent::TakenOver { .. }))
        });
        assert!(link.session().is_none());
        link.close(&reg);
        t1.join().unwrap();
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

        /// The handshake hash the client's proofs are bound to.
        fn channel_binding(&self) -> Option<[u8; 32]> {
            self.0.get_ref().channel_binding()
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

    /// A link to `addrs` that has not connected yet, as client instance `instance`.
    fn link_to(addrs: &[SocketAddr], instance: u64) -> TrackerLink {
        let me = "127.0.0.1:7000".parse().expect("literal address");
        TrackerLink::new(trust(addrs), 0, instance, me, Instant::now())
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
                (" hello ", "{tag} ok 1 4096"),
                (" attach tok ", "{tag} ok alice"),
                (" create_group g", ""),
            ],
        );
        // Tracker 2 knows the write happened: the retry gets the original reply, before attach.
        let t2 = scripted(
            l2,
            vec![
                (" hello ", "{tag} ok 2 4096"),
                ("create_group g", "{tag} ok"),
                (" attach tok ", "{tag} ok alice"),
                (" list_groups", "{tag} list 1\ng 1 alice"),
            ],
        );
        let mut poll = mio::Poll::new().unwrap();
        let reg = poll.registry().try_clone().unwrap();
        let mut link = link_to(&addrs, 0xcd);
        link.set_session(Some(session("tok")));
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

    #[test]
    fn an_idle_logged_in_link_pings_and_keeps_the_reply_to_itself() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = vec![l.local_addr().unwrap()];
        let t = scripted(
            l,
            vec![
                (" hello ", "{tag} ok 1"),
                (" attach tok ", "{tag} ok alice"),
                (" list_groups", "{tag} list 0"),
                (" ping", "{tag} ok pong"),
            ],
        );
        let mut poll = mio::Poll::new().unwrap();
        let reg = poll.registry().try_clone().unwrap();
        let mut link = link_to(&addrs, 0xef);
        link.set_session(Some(session("tok")));
        let mut got = Vec::new();
        let r = link.send(&reg, &Verb::ListGroups, vec![], Instant::now());
        drive(&mut link, &mut poll, &mut got, |g| {
            g.iter()
                .any(|e| matches!(e, LinkEvent::Reply { tag, .. } if *tag == r))
        });
        // Idle now: the next deadline is the keepalive, KEEPALIVE_IDLE after the last request.
        let due = link.next_deadline().expect("a keepalive is due");
        assert!(due >= Instant::now() + KEEPALIVE_IDLE - Duration::from_secs(1));
        // Its time comes (the clock is the caller's): one `ping`, answered, and no event.
        link.tick(&reg, due);
        let ping = link.keepalive.expect("a ping in flight");
        assert_eq!(link.keepalive_due(), None, "one ping at a time");
        let mut events = mio::Events::with_capacity(16);
        let deadline = Instant::now() + Duration::from_secs(10);
        while link.keepalive.is_some() {
            assert!(Instant::now() < deadline, "the ping was not answered");
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for e in events.iter() {
                link.handle_event(&reg, e, due);
            }
            got.extend(link.take_events());
        }
        assert!(
            !got.iter()
                .any(|e| matches!(e, LinkEvent::Reply { tag, .. } if *tag == ping)),
            "the ping's reply is the link's own: {got:?}"
        );
        // Without a session there is nothing to keep alive.
        link.set_session(None);
        assert_eq!(link.keepalive_due(), None);
        link.close(&reg);
        t.join().unwrap();
    }
}
