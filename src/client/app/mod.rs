//! The client's main loop: one thread, one `mio::Poll`. It reads commands from standard input
//! one at a time, runs each against the tracker link and the peer side, prints results, and
//! relays what the peer side reports (pieces to announce, peers to fetch, downloads finished).
//!
//! A command in progress is one `InProgress` value: the loop reads the next line only when
//! there is none, so output follows the order of the commands. Background requests (`peers`
//! for a download, `have` batches) run beside it and never print `error: ` lines.
//!
//! This file holds the loop, shutdown and the dispatch of commands and peer-side events; each
//! concern has a file of its own:
//! - `session`  — login, resuming remembered shares, logout, the session's active shares
//! - `replies`  — link events; each tracker reply routed to what it answers
//! - `simple`   — commands answered by one reply: the request, how the reply is shown
//! - `upload`   — `upload_file`: hashing, then the request; the share served and remembered
//! - `download` — `download_file`: start, `peers` refresh, announced pieces, completion
//! - `paths`    — the local paths a user names: the file to share, the destination
//!
//! There is one download registry, the peer side's (`peers::DownloadRecord`): the app keeps
//! no per-download state of its own.

mod download;
mod paths;
mod replies;
mod session;
mod simple;
mod upload;

use super::console::{self, Input, Line, STDIN_TOKEN};
use super::have_batch::HaveBatcher;
use super::peers::{DownloadId, HashJobId, PeerEvent, PeerSide};
use super::report;
use super::shares::Share;
use super::shell::{self, Command};
use super::term::status::Snapshot;
use super::tracker_link::{TrackerLink, TRACKER_TOKEN};
use crate::pieces::Hash;
use crate::protocol::tracker::Verb;
use crate::runtime::{self, SignalPipe};
use mio::{Events, Interest, Poll, Token};
use session::{LoginStep, ResumeStep, User};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIGNAL_TOKEN: Token = Token(2);
/// A command that cannot reach any tracker for this long fails instead of waiting forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, how long to wait for the tracker to confirm the logout.
const LOGOUT_WAIT: Duration = Duration::from_secs(2);

/// What the client was started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen for peers (port 0: a free port).
    pub listen: SocketAddr,
    /// The tracker_info lines (addresses and pins), tracker 1 first.
    pub trackers: Vec<crate::cluster::TrackerEntry>,
    /// The tracker_info file's name, for messages that send a person to edit it.
    pub info_file: String,
    /// Index of the tracker to try first.
    pub preferred: usize,
    pub state_dir: PathBuf,
    /// Keep running (seeding) at end of input, until SIGINT/SIGTERM.
    pub serve: bool,
    /// Print the chosen port (the user asked for port 0, or a tracker's address).
    pub announce_port: bool,
    /// `--upload-limit`: bytes per second for all uploads together; `None` is unlimited.
    pub upload_limit: Option<u64>,
}

/// The command in progress, with the tag of the request whose reply it waits for.
enum InProgress {
    /// One request; its reply is the result.
    Simple {
        cmd: Command,
        tag: u64,
    },
    Login {
        cmd: Command,
        tag: u64,
        user: String,
        step: LoginStep,
    },
    /// A command that needs the tracker's `hello` first (`create_user` needs its KDF count).
    AwaitingTracker {
        cmd: Command,
    },
    /// Resuming remembered shares after a login, one at a time.
    Resuming {
        queue: VecDeque<Share>,
        step: Option<ResumeStep>,
        resumed: usize,
    },
    /// `upload_file` while the peer side hashes the file.
    Hashing {
        cmd: Command,
        job: HashJobId,
        share: Share,
    },
    Uploading {
        cmd: Command,
        tag: u64,
        share: Share,
        hashes: Arc<Vec<Hash>>,
    },
    Downloading {
        cmd: Command,
        tag: u64,
        group: String,
        file: String,
        /// Resolved and checked when the command was given.
        dest: PathBuf,
    },
    Logout {
        cmd: Command,
        tag: u64,
    },
}

impl InProgress {
    /// The request this command waits for, if it waits for the tracker.
    fn tag(&self) -> Option<u64> {
        match self {
            InProgress::Simple { tag, .. }
            | InProgress::Login { tag, .. }
            | InProgress::Uploading { tag, .. }
            | InProgress::Downloading { tag, .. }
            | InProgress::Logout { tag, .. } => Some(*tag),
            InProgress::Resuming { step, .. } => step.as_ref().map(ResumeStep::tag),
            InProgress::Hashing { .. } | InProgress::AwaitingTracker { .. } => None,
        }
    }
}

/// What a background request was for.
#[derive(Debug, PartialEq, Eq)]
enum Background {
    /// `peers` for this download (at most one waits at a time).
    Peers(DownloadId),
    Have,
    /// The `upload_file` that makes a finished download of an empty file (no pieces, so no
    /// `have`) count as a seeder.
    SeedEmpty,
    /// A request whose command was abandoned; its reply is dropped.
    Abandoned,
    /// `list_groups`/`list_files` refreshing the names Tab completes.
    Names(Command),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Stage {
    Running,
    /// Input ended: waiting for downloads, then logging out (with `--serve`, until a signal).
    Draining,
    /// Logging out before exit (after `exit`, end of input or a signal), until the deadline.
    Closing {
        deadline: Instant,
    },
    Done,
}

pub struct App {
    poll: Poll,
    input: Input,
    signals: SignalPipe,
    link: TrackerLink,
    peers: PeerSide,
    config: Config,
    /// The address announced to peers (the bound listener).
    advertise: SocketAddr,
    user: Option<User>,
    command: Option<InProgress>,
    /// When the command in progress started (for `COMMAND_TIMEOUT`).
    command_since: Instant,
    background: HashMap<u64, Background>,
    next_download: DownloadId,
    next_job: HashJobId,
    haves: HaveBatcher,
    stage: Stage,
    /// The logout tag while closing.
    closing_tag: Option<u64>,
    /// "No tracker is reachable" was reported; the next connection says so with a note.
    outage: bool,
    prompted: bool,
}

/// Runs the client until it exits; returns the process exit code.
pub fn run(config: Config) -> i32 {
    match App::new(config) {
        Ok(mut app) => app.run(),
        Err(e) => {
            console::err(&format!("error: {e}"));
            1
        }
    }
}

impl App {
    fn new(config: Config) -> Result<App, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let registry = poll.registry();
        let mut signals =
            SignalPipe::new().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        registry
            .register(&mut signals.receiver, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(|e| format!("cannot watch signals: {e}"))?;
        // This run's key: proven to the trackers, which publish it to downloaders, and to the
        // peers themselves. Never written anywhere.
        let identity = crate::net::identity::Identity::generate()?;
        let (mut peers, bound) = PeerSide::new(registry, config.listen, identity.clone())
            .map_err(|e| format!("cannot listen for peers on {}: {e}", config.listen))?;
        peers.set_upload_limit(config.upload_limit, Instant::now());
        if config.announce_port {
            console::err(&format!("note: listening for peers on {bound}"));
        }
        if bound.ip().is_unspecified() {
            console::err(&format!(
                "warning: {bound} is not an address other peers can reach; give this machine's IP address"
            ));
        }
        let instance = runtime::random_u64()?;
        let known = crate::client::known_trackers::KnownTrackers::load(&config.state_dir)?;
        let trust = crate::client::tracker_link::TrackerTrust {
            entries: config.trackers.clone(),
            info_file: config.info_file.clone(),
            known: Some(known),
            identity,
        };
        let now = Instant::now();
        let link = TrackerLink::new(trust, config.preferred, instance, bound, now);
        let input = Input::new(registry, !config.serve);
        Ok(App {
            poll,
            input,
            signals,
            link,
            peers,
            advertise: bound,
            config,
            user: None,
            command: None,
            command_since: now,
            background: HashMap::new(),
            next_download: 1,
            next_job: 1,
            haves: HaveBatcher::default(),
            stage: Stage::Running,
            closing_tag: None,
            outage: false,
            prompted: false,
        })
    }

    fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        while self.stage != Stage::Done {
            self.maybe_prompt();
            // The clock is read after the deadlines: a deadline of "now" (hashing in
            // progress) must give a zero timeout, not a few nanoseconds that the poll rounds
            // up to a whole millisecond of sleep.
            let deadline = self.next_deadline();
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    console::err(&format!("error: the event loop failed: {e}"));
                    return 1;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    STDIN_TOKEN => self.input.on_ready(),
                    SIGNAL_TOKEN if self.signals.take() => self.on_signal(now),
                    TRACKER_TOKEN => self.link.handle_event(self.poll.registry(), event, now),
                    t if PeerSide::owns(t) => {
                        self.peers.handle_event(self.poll.registry(), event, now)
                    }
                    _ => {}
                }
            }
            self.turn(now);
        }
        self.link.flush_now();
        self.link.close(self.poll.registry());
        self.input.restore();
        0
    }

    /// One pass over everything that may have work after events or timers.
    fn turn(&mut self, now: Instant) {
        self.link.tick(self.poll.registry(), now);
        for ev in self.link.take_events() {
            self.on_link_event(ev, now);
        }
        for ev in self.peers.tick(self.poll.registry(), now) {
            self.on_peer_event(ev, now);
        }
        self.flush_haves(now, false);
        self.check_timeouts(now);
        self.read_commands(now);
        self.check_end(now);
        let busy = self.peers.has_active_downloads() || !self.peers.hashing().is_empty();
        self.input.progress(now, busy, || Snapshot {
            downloads: self.peers.downloads(),
            hashing: self.peers.hashing(),
        });
        if let Some(cmd) = self.input.take_refresh().filter(|_| self.logged_in()) {
            let verb = match &cmd {
                Command::ListFiles { group } => Verb::ListFiles {
                    group: group.clone(),
                },
                _ => Verb::ListGroups,
            };
            let tag = self.send(&verb, vec![], now);
            self.background.insert(tag, Background::Names(cmd));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = [
            self.peers.next_deadline(),
            self.link.next_deadline(),
            self.input.next_deadline(),
            self.haves.deadline().filter(|_| self.logged_in()),
            self.command
                .as_ref()
                .map(|_| self.command_since + COMMAND_TIMEOUT),
            match self.stage {
                Stage::Closing { deadline } => Some(deadline),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        d.sort();
        d.first().copied()
    }

    fn maybe_prompt(&mut self) {
        if self.input.is_terminal()
            && self.stage == Stage::Running
            && self.command.is_none()
            && !self.prompted
            && !self.input.has_line()
        {
            console::prompt();
            self.prompted = true;
        }
    }

    /// Sends one request (with `upload_file`'s hash lines in `extra`); returns its tag.
    fn send(&mut self, verb: &Verb, extra: Vec<String>, now: Instant) -> u64 {
        self.link.send(self.poll.registry(), verb, extra, now)
    }

    fn set_command(&mut self, c: InProgress, now: Instant) {
        self.command = Some(c);
        self.command_since = now;
    }

    /// The command in progress failed: exactly one `error: ` line.
    fn fail(&mut self, msg: &str) {
        console::err(&format!("error: {msg}"));
        self.command = None;
    }

    fn done(&mut self, result: &str) {
        if !result.is_empty() {
            console::out(result);
        }
        self.command = None;
    }

    fn logged_in(&self) -> bool {
        self.user.is_some()
    }

    // ---- input and shutdown ---------------------------------------------------------------

    fn read_commands(&mut self, now: Instant) {
        while self.command.is_none() && self.stage == Stage::Running {
            match self.input.next_line() {
                None => {
                    if self.input.finished() {
                        self.on_end_of_input(now);
                    }
                    return;
                }
                Some(Line::Bad(msg)) => {
                    self.prompted = false;
                    console::err(&format!("error: {msg}"));
                }
                Some(Line::Text(text)) => {
                    self.prompted = false;
                    match shell::parse_line(&text) {
                        Ok(None) => {}
                        Ok(Some(cmd)) => self.start(cmd, now),
                        Err(msg) => console::err(&format!("error: {msg}")),
                    }
                }
            }
        }
    }

    fn on_end_of_input(&mut self, now: Instant) {
        if self.input.is_terminal() && self.prompted {
            console::out("");
        }
        self.stage = Stage::Draining;
        if self.config.serve {
            // Draining never closes with --serve: only a signal ends the client.
            log::info!("end of input: serving until SIGINT or SIGTERM");
            return;
        }
        self.check_end(now);
    }

    fn check_end(&mut self, now: Instant) {
        match self.stage {
            Stage::Draining
                if !self.config.serve
                    && self.command.is_none()
                    && !self.peers.has_active_downloads() =>
            {
                self.begin_closing(now)
            }
            Stage::Closing { deadline } if now >= deadline || self.closing_tag.is_none() => {
                self.stage = Stage::Done
            }
            _ => {}
        }
    }

    fn on_signal(&mut self, now: Instant) {
        log::info!("signal received: shutting down");
        match self.stage {
            Stage::Closing { .. } | Stage::Done => self.stage = Stage::Done,
            _ => {
                if self.command.is_some() {
                    // The command in progress is cut short; say so once.
                    console::err("error: interrupted");
                    self.command = None;
                }
                self.begin_closing(now);
            }
        }
    }

    /// Reports what is pending, logs out if logged in, and ends the loop when the tracker
    /// confirms (or after `LOGOUT_WAIT`).
    fn begin_closing(&mut self, now: Instant) {
        self.flush_haves(now, true);
        if self.user.is_some() && self.link.session().is_some() {
            let tag = self.send(&Verb::Logout, vec![], now);
            self.closing_tag = Some(tag);
            self.stage = Stage::Closing {
                deadline: now + LOGOUT_WAIT,
            };
        } else {
            self.stage = Stage::Done;
        }
    }

    // ---- commands -------------------------------------------------------------------------

    fn start(&mut self, cmd: Command, now: Instant) {
        use Command::*;
        let needs_login = !matches!(
            cmd,
            CreateUser { .. } | Login { .. } | ShowDownloads | Help | Exit
        );
        if needs_login && !self.logged_in() {
            return self.fail("you are not logged in (use: login <user_id> <password>)");
        }
        if let Some(verb) = simple::request(&cmd) {
            return self.simple(&verb, cmd, now);
        }
        match &cmd {
            Help => {
                for line in shell::help_text().lines() {
                    console::out(line);
                }
            }
            ShowDownloads => {
                for d in self.peers.downloads() {
                    console::out(&report::download_line(&d));
                }
            }
            Exit => {
                self.stage = Stage::Draining;
                self.config.serve = false;
                // Exit does not wait for downloads: it logs out now.
                self.begin_closing(now);
            }
            Login { user, password } => {
                let (user, password) = (user.clone(), password.clone());
                self.start_login(cmd, user, password, now)
            }
            Logout => self.start_logout(cmd, now),
            CreateUser { .. } => self.start_create_user(cmd, now),
            UploadFile { path, group } => {
                let (path, group) = (path.clone(), group.clone());
                self.start_upload(cmd, &path, group, now)
            }
            DownloadFile { group, file, dest } => {
                let (group, file, dest) = (group.clone(), file.clone(), dest.clone());
                self.start_download(cmd, group, file, &dest, now)
            }
            // Sent above.
            CreateGroup { .. } | JoinGroup { .. } | LeaveGroup { .. } => {}
            ListRequests { .. } | AcceptRequest { .. } | ListGroups | ListFiles { .. } => {}
            StopShare { .. } => {}
        }
    }

    /// Sends a command answered by one reply (`simple::on_simple_reply` shows it).
    fn simple(&mut self, verb: &Verb, cmd: Command, now: Instant) {
        let tag = self.send(verb, vec![], now);
        self.set_command(InProgress::Simple { cmd, tag }, now);
    }

    fn check_timeouts(&mut self, now: Instant) {
        if self.link.is_ready() {
            // The clock runs only while no tracker is ready: a slow command on a live tracker
            // is the link's business (it fails over when the tracker stops answering).
            self.command_since = now;
            return;
        }
        if now < self.command_since + COMMAND_TIMEOUT {
            return;
        }
        if let Some(tag) = self.command.as_ref().and_then(InProgress::tag) {
            self.link.abandon(tag);
            self.background.insert(tag, Background::Abandoned);
            self.fail("no tracker is reachable; try again later");
        }
    }

    // ---- peer side ------------------------------------------------------------------------

    fn on_peer_event(&mut self, ev: PeerEvent, now: Instant) {
        match ev {
            PeerEvent::PiecesVerified { id, pieces } => self.on_pieces_verified(id, &pieces, now),
            PeerEvent::NeedPeers { id } => self.ask_peers(id, now),
            PeerEvent::Completed { id } => self.on_download_complete(id, now),
            PeerEvent::Failed { id, reason } => self.on_download_failed(id, &reason),
            PeerEvent::Hashed { job, size, hashes } => self.on_hashed(job, size, hashes, now),
            PeerEvent::HashFailed { job, reason } => self.on_hash_failed(job, &reason),
        }
    }

    /// Sends batched `have` reports when due (or now, when `force`), while logged in.
    fn flush_haves(&mut self, now: Instant, force: bool) {
        if self.haves.is_empty() || !self.logged_in() || !(force || self.haves.due(now)) {
            return;
        }
        for have in self.haves.take() {
            let tag = self.send(&have, vec![], now);
            self.background.insert(tag, Background::Have);
        }
    }
}
