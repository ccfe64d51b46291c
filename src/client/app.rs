//! The client's main loop: one thread, one `mio::Poll`. It reads commands from standard input
//! one at a time, runs each against the tracker link and the peer side, prints results, and
//! relays what the peer side reports (pieces to announce, peers to fetch, downloads finished).
//!
//! A command in progress is one `Pending` value: the loop reads the next line only when there
//! is none, so output follows the order of the commands. Background requests (`peers` for a
//! download, `have` batches) run beside it and never print `error: ` lines.

use super::console::{self, Input, Line, STDIN_TOKEN};
use super::have_batch::HaveBatcher;
use super::peers::{DownloadId, DownloadSpec, HashJobId, PeerEvent, PeerInfo, PeerSide};
use super::report;
use super::shares::{self, FileCheck, Share, ShareStore};
use super::shell::{self, Command};
use super::tracker_link::{LinkEvent, RequestClass, Session, TrackerLink, TRACKER_TOKEN};
use crate::names::{self, NameKind};
use crate::pieces::{self, Hash, PieceSet};
use crate::protocol::tracker::{ErrorCode, Reply};
use crate::runtime::{self, SignalPipe};
use mio::{Events, Interest, Poll, Token};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIGNAL_TOKEN: Token = Token(2);
/// A command that cannot reach any tracker for this long fails instead of waiting forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, how long to wait for the tracker to confirm the logout.
const LOGOUT_WAIT: Duration = Duration::from_secs(2);
/// How often a download with no source asks the tracker again, at most (the peer side also
/// asks through `NeedPeers`; this bounds how often one download may ask).
const PEERS_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// What the client was started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen for peers (port 0: a free port).
    pub listen: SocketAddr,
    pub trackers: Vec<SocketAddr>,
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

/// The logged-in user.
struct User {
    name: String,
    store: ShareStore,
    /// Shares being served for this session, to pause at logout.
    active: BTreeSet<(String, String)>,
}

/// A download started by this client.
struct Download {
    owner: String,
    group: String,
    file: String,
    dest: PathBuf,
    size: u64,
    hashes: Arc<Vec<Hash>>,
    /// The tag of its `peers` request in flight, if any.
    peers_tag: Option<u64>,
    last_peers: Option<Instant>,
    /// Asked for peers while one request was in flight: ask again when it returns.
    want_peers: bool,
    done: bool,
    /// False once the user ran `stop_share` for this file while it was downloading: its pieces
    /// are not announced and the finished file is not shared.
    share: bool,
}

/// The command in progress.
enum Pending {
    /// One request; its reply is the result.
    Simple {
        cmd: Command,
        tag: u64,
    },
    Login {
        cmd: Command,
        tag: u64,
        user: String,
        password: String,
    },
    /// Resuming remembered shares after a login, one at a time.
    Resuming {
        queue: VecDeque<Share>,
        step: Option<ResumeStep>,
        resumed: usize,
    },
    Hashing {
        cmd: Command,
        job: HashJobId,
        up: Upload,
    },
    Uploading {
        cmd: Command,
        tag: u64,
        up: Upload,
        hashes: Arc<Vec<Hash>>,
    },
    Downloading {
        cmd: Command,
        tag: u64,
        group: String,
        file: String,
        dest: PathBuf,
    },
    Logout {
        cmd: Command,
        tag: u64,
    },
}

/// An upload being prepared.
struct Upload {
    group: String,
    file: String,
    path: PathBuf,
    size: u64,
    mtime_ns: u128,
}

enum ResumeStep {
    Upload {
        tag: u64,
        share: Share,
        hashes: Arc<Vec<Hash>>,
    },
    Stop {
        tag: u64,
    },
}

/// What a background request was for.
enum Background {
    Peers(DownloadId),
    Have,
    /// The `upload_file` that makes a finished download of an empty file (no pieces, so no
    /// `have`) count as a seeder.
    SeedEmpty,
    /// A request whose command was abandoned; its reply is dropped.
    Abandoned,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Stage {
    Running,
    /// Input ended: waiting for downloads, then logging out.
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
    pending: Option<Pending>,
    /// When the pending command started (for `COMMAND_TIMEOUT`).
    pending_since: Instant,
    background: HashMap<u64, Background>,
    downloads: HashMap<DownloadId, Download>,
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
        let (mut peers, bound) = PeerSide::new(registry, config.listen)
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
        let instance = runtime::random_u64();
        let now = Instant::now();
        let link = TrackerLink::new(
            config.trackers.clone(),
            config.preferred,
            instance,
            bound,
            now,
        );
        let input = Input::new(registry);
        Ok(App {
            poll,
            input,
            signals,
            link,
            peers,
            advertise: bound,
            config,
            user: None,
            pending: None,
            pending_since: now,
            background: HashMap::new(),
            downloads: HashMap::new(),
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
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = [
            self.peers.next_deadline(),
            self.link.next_deadline(),
            self.haves.deadline().filter(|_| self.logged_in()),
            self.pending
                .as_ref()
                .map(|_| self.pending_since + COMMAND_TIMEOUT),
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
            && self.pending.is_none()
            && !self.prompted
            && !self.input.has_line()
        {
            console::prompt();
            self.prompted = true;
        }
    }

    fn send(&mut self, class: RequestClass, line: String, extra: Vec<String>, now: Instant) -> u64 {
        self.link
            .send(self.poll.registry(), class, line, extra, now)
    }

    fn set_pending(&mut self, p: Pending, now: Instant) {
        self.pending = Some(p);
        self.pending_since = now;
    }

    /// The command in progress failed: exactly one `error: ` line.
    fn fail(&mut self, msg: &str) {
        console::err(&format!("error: {msg}"));
        self.pending = None;
    }

    fn done(&mut self, result: &str) {
        if !result.is_empty() {
            console::out(result);
        }
        self.pending = None;
    }

    // ---- input ----------------------------------------------------------------------------

    fn read_commands(&mut self, now: Instant) {
        while self.pending.is_none() && self.stage == Stage::Running {
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
        if self.config.serve {
            log::info!("end of input: serving until SIGINT or SIGTERM");
            // Stay in Running with no input; only a signal ends the client.
            self.stage = Stage::Draining;
            return;
        }
        self.stage = Stage::Draining;
        self.check_end(now);
    }

    fn check_end(&mut self, now: Instant) {
        match self.stage {
            Stage::Draining
                if !self.config.serve
                    && self.pending.is_none()
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
                if self.pending.is_some() {
                    // The command in progress is cut short; say so once.
                    console::err("error: interrupted");
                    self.pending = None;
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
            let tag = self.send(RequestClass::Write, "logout".into(), vec![], now);
            self.closing_tag = Some(tag);
            self.stage = Stage::Closing {
                deadline: now + LOGOUT_WAIT,
            };
        } else {
            self.stage = Stage::Done;
        }
    }

    // ---- commands -------------------------------------------------------------------------

    fn logged_in(&self) -> bool {
        self.user.is_some()
    }

    fn start(&mut self, cmd: Command, now: Instant) {
        use Command::*;
        let needs_login = !matches!(
            cmd,
            CreateUser { .. } | Login { .. } | ShowDownloads | Help | Exit
        );
        if needs_login && !self.logged_in() {
            return self.fail("you are not logged in (use: login <user_id> <password>)");
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
            CreateUser { user, password } => {
                let tag = self.send(
                    RequestClass::Write,
                    format!("create_user {user} {password}"),
                    vec![],
                    now,
                );
                self.set_pending(Pending::Simple { cmd, tag }, now);
            }
            Login { user, password } => {
                if let Some(u) = &self.user {
                    return self.fail(&format!(
                        "you are already logged in as {}; log out first",
                        u.name
                    ));
                }
                let line = format!("login {user} {password} {}", self.advertise);
                let tag = self.send(RequestClass::Write, line, vec![], now);
                let (user, password) = (user.clone(), password.clone());
                self.set_pending(
                    Pending::Login {
                        cmd,
                        tag,
                        user,
                        password,
                    },
                    now,
                );
            }
            CreateGroup { group } => self.simple(
                RequestClass::Write,
                format!("create_group {group}"),
                cmd.clone(),
                now,
            ),
            JoinGroup { group } => self.simple(
                RequestClass::Write,
                format!("join_group {group}"),
                cmd.clone(),
                now,
            ),
            LeaveGroup { group } => self.simple(
                RequestClass::Write,
                format!("leave_group {group}"),
                cmd.clone(),
                now,
            ),
            ListRequests { group } => self.simple(
                RequestClass::Read,
                format!("list_requests {group}"),
                cmd.clone(),
                now,
            ),
            AcceptRequest { group, user } => self.simple(
                RequestClass::Write,
                format!("accept_request {group} {user}"),
                cmd.clone(),
                now,
            ),
            ListGroups => self.simple(RequestClass::Read, "list_groups".into(), cmd.clone(), now),
            ListFiles { group } => self.simple(
                RequestClass::Read,
                format!("list_files {group}"),
                cmd.clone(),
                now,
            ),
            StopShare { group, file } => self.simple(
                RequestClass::Write,
                format!("stop_share {group} {file}"),
                cmd.clone(),
                now,
            ),
            Logout => {
                let tag = self.send(RequestClass::Write, "logout".into(), vec![], now);
                self.set_pending(Pending::Logout { cmd, tag }, now);
            }
            UploadFile { path, group } => {
                let (path, group) = (path.clone(), group.clone());
                self.start_upload(cmd, &path, group, now)
            }
            DownloadFile { group, file, dest } => {
                let (group, file, dest) = (group.clone(), file.clone(), dest.clone());
                self.start_download(cmd, group, file, &dest, now)
            }
        }
    }

    fn simple(&mut self, class: RequestClass, line: String, cmd: Command, now: Instant) {
        let tag = self.send(class, line, vec![], now);
        self.set_pending(Pending::Simple { cmd, tag }, now);
    }

    fn start_upload(&mut self, cmd: Command, path: &Path, group: String, now: Instant) {
        let up = match check_upload_path(path) {
            Ok((abs, file, size, mtime_ns)) => Upload {
                group,
                file,
                path: abs,
                size,
                mtime_ns,
            },
            Err(e) => return self.fail(&e),
        };
        if let Some(d) = self
            .downloads
            .values()
            .find(|d| !d.done && super::peers::store::part_path(&d.dest) == up.path)
        {
            return self.fail(&format!(
                "{} is the unfinished download of {} from group {}; once complete it is shared by itself",
                up.path.display(),
                d.file,
                d.group
            ));
        }
        if up.size > pieces::MAX_PIECES * pieces::PIECE_SIZE {
            return self.fail(&format!(
                "{} is larger than the largest file that can be shared (256 GiB)",
                up.path.display()
            ));
        }
        let job = self.next_job;
        self.next_job += 1;
        match self.peers.start_hashing(job, up.path.clone()) {
            Ok(()) => self.set_pending(Pending::Hashing { cmd, job, up }, now),
            Err(e) => self.fail(&format!("cannot read {}: {e}", up.path.display())),
        }
    }

    fn start_download(
        &mut self,
        cmd: Command,
        group: String,
        file: String,
        dest: &Path,
        now: Instant,
    ) {
        let dest = match resolve_destination(dest, &file) {
            Ok(d) => d,
            Err(e) => return self.fail(&e),
        };
        if let Some(d) = self.downloads.values().find(|d| !d.done && d.dest == dest) {
            return self.fail(&format!(
                "{} is already being downloaded to {}",
                d.file,
                dest.display()
            ));
        }
        let tag = self.send(
            RequestClass::Read,
            format!("download_file {group} {file}"),
            vec![],
            now,
        );
        self.set_pending(
            Pending::Downloading {
                cmd,
                tag,
                group,
                file,
                dest,
            },
            now,
        );
    }

    fn check_timeouts(&mut self, now: Instant) {
        if self.link.is_ready() {
            // The clock runs only while no tracker is ready: a slow command on a live tracker
            // is the link's business (it fails over when the tracker stops answering).
            self.pending_since = now;
            return;
        }
        if self.pending.is_none() || now < self.pending_since + COMMAND_TIMEOUT {
            return;
        }
        let tag = match &self.pending {
            Some(Pending::Simple { tag, .. })
            | Some(Pending::Login { tag, .. })
            | Some(Pending::Uploading { tag, .. })
            | Some(Pending::Downloading { tag, .. })
            | Some(Pending::Logout { tag, .. }) => Some(*tag),
            Some(Pending::Resuming {
                step: Some(ResumeStep::Upload { tag, .. } | ResumeStep::Stop { tag }),
                ..
            }) => Some(*tag),
            _ => None,
        };
        if let Some(tag) = tag {
            self.link.abandon(tag);
            self.background.insert(tag, Background::Abandoned);
            self.fail("no tracker is reachable; try again later");
        }
    }

    // ---- tracker link ---------------------------------------------------------------------

    fn on_link_event(&mut self, ev: LinkEvent, now: Instant) {
        match ev {
            LinkEvent::Connected {
                tracker,
                addr,
                switched,
            } => {
                log::info!("connected to tracker {tracker} ({addr})");
                let after_outage = std::mem::take(&mut self.outage);
                if switched {
                    console::err(&format!(
                        "note: switched to tracker {tracker} ({addr}); your session continues there"
                    ));
                } else if after_outage {
                    console::err(&format!("note: connected to tracker {tracker} ({addr})"));
                }
            }
            LinkEvent::Unreachable => {
                self.outage = true;
                console::err("warning: no tracker is reachable; still trying");
            }
            LinkEvent::SessionLost { reason } => {
                console::err(&format!("warning: your session ended: {reason}"));
                self.pause_shares();
                self.user = None;
            }
            LinkEvent::Reply { tag, reply } => self.on_reply(tag, reply, now),
        }
    }

    fn on_reply(&mut self, tag: u64, reply: Reply, now: Instant) {
        if self.closing_tag == Some(tag) {
            self.closing_tag = None;
            self.pause_shares();
            self.user = None;
            self.link.set_session(None);
            self.stage = Stage::Done;
            return;
        }
        if let Some(bg) = self.background.remove(&tag) {
            return self.on_background_reply(bg, reply, now);
        }
        let Some(pending) = self.pending.take() else {
            log::debug!("reply {tag} for nothing in progress");
            return;
        };
        match pending {
            Pending::Simple { cmd, tag: t } if t == tag => self.on_simple_reply(cmd, reply, now),
            Pending::Login {
                cmd,
                tag: t,
                user,
                password,
            } if t == tag => self.on_login_reply(cmd, user, password, reply, now),
            Pending::Logout { cmd, tag: t } if t == tag => match reply {
                Reply::Ok(_) => self.after_logout("logged out"),
                Reply::Err {
                    code: ErrorCode::NotLoggedIn,
                    ..
                } => self.after_logout("logged out"),
                Reply::Err { code, message } => {
                    self.fail(&report::tracker_error(&cmd, None, code, &message))
                }
                Reply::List { .. } => self.fail("the tracker sent an unexpected reply"),
            },
            Pending::Uploading {
                cmd,
                tag: t,
                up,
                hashes,
            } if t == tag => self.on_upload_reply(cmd, up, hashes, reply),
            Pending::Downloading {
                cmd,
                tag: t,
                group,
                file,
                dest,
            } if t == tag => self.on_download_reply(cmd, group, file, dest, reply, now),
            Pending::Resuming {
                queue,
                step,
                resumed,
            } => self.on_resume_reply(queue, step, resumed, tag, reply, now),
            other => {
                log::debug!("reply {tag} does not belong to the command in progress");
                self.pending = Some(other);
            }
        }
    }

    fn on_simple_reply(&mut self, cmd: Command, reply: Reply, now: Instant) {
        use Command::*;
        let (code, message) = match reply {
            Reply::Err { code, message } => (code, message),
            Reply::Ok(_) => {
                let result = match &cmd {
                    CreateUser { user, .. } => format!("created user {user}"),
                    CreateGroup { group } => format!("created group {group}"),
                    JoinGroup { group } => format!("asked to join group {group}"),
                    LeaveGroup { group } => {
                        self.drop_group_shares(group);
                        let stopped = self.cancel_group_downloads(group, now);
                        if stopped.is_empty() {
                            format!("left group {group}")
                        } else {
                            format!(
                                "left group {group} (stopped downloading {}; the .part is kept)",
                                stopped.join(", ")
                            )
                        }
                    }
                    AcceptRequest { group, user } => {
                        format!("{user} is now a member of group {group}")
                    }
                    StopShare { group, file } => {
                        self.drop_share(group, file);
                        self.unshare_downloads(group, file);
                        format!("stopped sharing {file} in group {group}")
                    }
                    _ => String::new(),
                };
                return self.done(&result);
            }
            Reply::List { lines, .. } => {
                for line in lines {
                    let w: Vec<&str> = line.split_ascii_whitespace().collect();
                    let out = match (&cmd, w.as_slice()) {
                        (ListGroups, [g, members, owner]) => {
                            format!("{g}  {members} member{}, owner {owner}", plural(members))
                        }
                        (ListFiles { .. }, [f, size, seeders]) => format!(
                            "{f}  {}  {seeders} seeder{}",
                            size.parse::<f64>()
                                .map(report::human_bytes)
                                .unwrap_or_else(|_| size.to_string()),
                            plural(seeders)
                        ),
                        _ => line.clone(),
                    };
                    console::out(&out);
                }
                return self.done("");
            }
        };
        // A stop_share of a share the tracker no longer has still stops it here.
        if let (StopShare { group, file }, ErrorCode::NotSeeder) = (&cmd, code) {
            let known = self
                .user
                .as_ref()
                .is_some_and(|u| u.active.contains(&(group.clone(), file.clone())));
            if known {
                self.drop_share(group, file);
            }
            // A download that has not reported a piece yet is not a sharer at the tracker,
            // but would become one: stopping that is what the user asked for.
            if self.unshare_downloads(group, file) {
                self.drop_share(group, file);
                return self.done(&format!("stopped sharing {file} in group {group}"));
            }
        }
        self.fail(&report::tracker_error(&cmd, None, code, &message));
    }

    fn on_login_reply(
        &mut self,
        cmd: Command,
        user: String,
        password: String,
        reply: Reply,
        now: Instant,
    ) {
        let token = match reply {
            Reply::Ok(words) if !words.is_empty() => words[0].clone(),
            Reply::Ok(_) | Reply::List { .. } => {
                return self.fail("the tracker sent an unexpected reply to login")
            }
            Reply::Err { code, message } => {
                return self.fail(&report::tracker_error(&cmd, None, code, &message))
            }
        };
        self.link.set_session(Some(Session {
            user: user.clone(),
            password,
            token,
        }));
        // Pieces of another user's downloads, verified while logged out, are not this
        // user's to announce.
        let others: BTreeSet<(String, String)> = self
            .downloads
            .values()
            .filter(|d| d.owner != user)
            .map(|d| (d.group.clone(), d.file.clone()))
            .collect();
        self.haves
            .discard(|g, f| others.contains(&(g.to_string(), f.to_string())));
        let store = ShareStore::new(&self.config.state_dir, &user);
        let remembered = match store.load() {
            Ok(s) => s,
            Err(e) => {
                console::err(&format!(
                    "warning: your remembered shares cannot be resumed: {e}"
                ));
                Vec::new()
            }
        };
        self.user = Some(User {
            name: user,
            store,
            active: BTreeSet::new(),
        });
        self.resume_next(remembered.into(), 0, now);
    }

    /// Resumes the next remembered share, or finishes the login when none is left.
    fn resume_next(&mut self, mut queue: VecDeque<Share>, resumed: usize, now: Instant) {
        let Some(user) = self.user.as_ref() else {
            return;
        };
        let store = user.store.clone();
        if let Some(share) = queue.pop_front() {
            let what = format!("{} in group {}", share.file, share.group);
            let problem = match shares::check_file(&share) {
                FileCheck::Unchanged => match store.load_hashes(&share) {
                    Ok(hashes) => {
                        let npieces = hashes.len();
                        let extra: Vec<String> = pieces::hash_lines(&hashes).collect();
                        let line = format!(
                            "upload_file {} {} {} {npieces}",
                            share.group, share.file, share.size
                        );
                        let tag = self.send(RequestClass::Write, line, extra, now);
                        let step = ResumeStep::Upload {
                            tag,
                            share,
                            hashes: Arc::new(hashes),
                        };
                        self.pending = Some(Pending::Resuming {
                            queue,
                            step: Some(step),
                            resumed,
                        });
                        return;
                    }
                    Err(e) => e,
                },
                FileCheck::Changed => {
                    format!("{} changed since it was shared", share.path.display())
                }
                FileCheck::Missing(why) => why,
            };
            console::err(&format!("warning: no longer sharing {what}: {problem}"));
            let _ = store.forget(&share.group, &share.file);
            let tag = self.send(
                RequestClass::Write,
                format!("stop_share {} {}", share.group, share.file),
                vec![],
                now,
            );
            self.pending = Some(Pending::Resuming {
                queue,
                step: Some(ResumeStep::Stop { tag }),
                resumed,
            });
            return;
        }
        let name = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let result = match resumed {
            0 => format!("logged in as {name}"),
            1 => format!("logged in as {name} (resumed 1 share)"),
            n => format!("logged in as {name} (resumed {n} shares)"),
        };
        // Pieces reported while logged out go out now.
        self.flush_haves(now, true);
        self.done(&result);
    }

    fn on_resume_reply(
        &mut self,
        queue: VecDeque<Share>,
        step: Option<ResumeStep>,
        mut resumed: usize,
        tag: u64,
        reply: Reply,
        now: Instant,
    ) {
        match step {
            Some(ResumeStep::Upload {
                tag: t,
                share,
                hashes,
            }) if t == tag => match reply {
                Reply::Ok(_) => {
                    self.peers.share(
                        &share.group,
                        &share.file,
                        share.path.clone(),
                        share.size,
                        hashes,
                    );
                    if let Some(u) = self.user.as_mut() {
                        u.active.insert((share.group.clone(), share.file.clone()));
                    }
                    resumed += 1;
                }
                Reply::Err { code, message } => {
                    let cmd = Command::UploadFile {
                        path: share.path.clone(),
                        group: share.group.clone(),
                    };
                    let why = report::tracker_error(&cmd, Some(&share.file), code, &message);
                    console::err(&format!(
                        "warning: could not resume sharing {} in group {}: {why}",
                        share.file, share.group
                    ));
                    if matches!(
                        code,
                        ErrorCode::ContentMismatch
                            | ErrorCode::NoSuchGroup
                            | ErrorCode::NotMember
                            | ErrorCode::InvalidName
                    ) {
                        if let Some(u) = &self.user {
                            let _ = u.store.forget(&share.group, &share.file);
                        }
                    }
                }
                Reply::List { .. } => {}
            },
            Some(ResumeStep::Stop { tag: t }) if t == tag => {}
            other => {
                self.pending = Some(Pending::Resuming {
                    queue,
                    step: other,
                    resumed,
                });
                return;
            }
        }
        self.resume_next(queue, resumed, now);
    }

    fn after_logout(&mut self, result: &str) {
        self.pause_shares();
        self.user = None;
        self.link.set_session(None);
        self.done(result);
    }

    /// Stops serving every share of the session (they resume at the next login).
    fn pause_shares(&mut self) {
        if let Some(u) = self.user.as_mut() {
            for (g, f) in std::mem::take(&mut u.active) {
                self.peers.unshare(&g, &f);
            }
        }
    }

    fn drop_share(&mut self, group: &str, file: &str) {
        self.peers.unshare(group, file);
        if let Some(u) = self.user.as_mut() {
            u.active.remove(&(group.to_string(), file.to_string()));
            if let Err(e) = u.store.forget(group, file) {
                console::err(&format!("warning: {e}"));
            }
        }
    }

    fn drop_group_shares(&mut self, group: &str) {
        let mine: Vec<String> = match &self.user {
            Some(u) => u
                .active
                .iter()
                .filter(|(g, _)| g == group)
                .map(|(_, f)| f.clone())
                .collect(),
            None => return,
        };
        for f in mine {
            self.drop_share(group, &f);
        }
        // Remembered but paused shares of the group end too.
        if let Some(u) = &self.user {
            if let Ok(all) = u.store.load() {
                for s in all.iter().filter(|s| s.group == group) {
                    let _ = u.store.forget(&s.group, &s.file);
                }
            }
        }
    }

    /// Cancels this user's running downloads from `group` (they left it); returns their file
    /// names. Their unreported pieces are dropped.
    fn cancel_group_downloads(&mut self, group: &str, now: Instant) -> Vec<String> {
        let owner = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let mut ids: Vec<DownloadId> = self
            .downloads
            .iter()
            .filter(|(_, d)| !d.done && d.group == group && d.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let mut stopped = Vec::new();
        for id in ids {
            let reason = format!("you left group {group}");
            if self
                .peers
                .cancel_download(self.poll.registry(), id, reason, now)
            {
                if let Some(d) = self.downloads.get_mut(&id) {
                    d.done = true;
                    stopped.push(d.file.clone());
                }
            }
        }
        self.haves.discard(|g, _| g == group);
        stopped
    }

    /// `stop_share` of a file this user is downloading: its pieces are no longer announced
    /// and the finished file will not be shared. True if there was such a download.
    fn unshare_downloads(&mut self, group: &str, file: &str) -> bool {
        let owner = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let mut any = false;
        for d in self.downloads.values_mut() {
            if !d.done && d.group == group && d.file == file && d.owner == owner {
                d.share = false;
                any = true;
            }
        }
        if any {
            self.haves.discard(|g, f| g == group && f == file);
        }
        any
    }

    fn on_upload_reply(&mut self, cmd: Command, up: Upload, hashes: Arc<Vec<Hash>>, reply: Reply) {
        match reply {
            Reply::Ok(words) => {
                let npieces = hashes.len();
                self.peers.share(
                    &up.group,
                    &up.file,
                    up.path.clone(),
                    up.size,
                    hashes.clone(),
                );
                let share = Share {
                    group: up.group.clone(),
                    file: up.file.clone(),
                    size: up.size,
                    mtime_ns: up.mtime_ns,
                    path: up.path.clone(),
                };
                if let Some(u) = self.user.as_mut() {
                    u.active.insert((up.group.clone(), up.file.clone()));
                    if let Err(e) = u.store.remember(&share, &hashes) {
                        console::err(&format!(
                            "warning: this share will not be resumed after a restart: {e}"
                        ));
                    }
                }
                let extra = if words.first().map(String::as_str) == Some("seeder") {
                    "; the same file was already shared there, you are one more seeder"
                } else {
                    ""
                };
                self.done(&format!(
                    "uploaded {} to {} ({} bytes, {npieces} piece{}){extra}",
                    up.file,
                    up.group,
                    up.size,
                    if npieces == 1 { "" } else { "s" }
                ));
            }
            Reply::Err { code, message } => {
                self.fail(&report::tracker_error(&cmd, Some(&up.file), code, &message))
            }
            Reply::List { .. } => self.fail("the tracker sent an unexpected reply to upload_file"),
        }
    }

    fn on_download_reply(
        &mut self,
        cmd: Command,
        group: String,
        file: String,
        dest: PathBuf,
        reply: Reply,
        now: Instant,
    ) {
        let (head, lines) = match reply {
            Reply::List { head, lines } => (head, lines),
            Reply::Err { code, message } => {
                return self.fail(&report::tracker_error(&cmd, None, code, &message))
            }
            Reply::Ok(_) => {
                return self.fail("the tracker sent an unexpected reply to download_file")
            }
        };
        let (size, hashes, peers) = match parse_download_reply(&head, &lines) {
            Ok(x) => x,
            Err(e) => {
                return self.fail(&format!(
                    "the tracker sent a malformed file description ({e})"
                ))
            }
        };
        let id = self.next_download;
        self.next_download += 1;
        let hashes = Arc::new(hashes);
        let spec = DownloadSpec {
            group: group.clone(),
            file: file.clone(),
            size,
            hashes: hashes.clone(),
            dest: dest.clone(),
        };
        if let Err(e) = self.peers.start_download(id, spec, now) {
            return self.fail(&e);
        }
        let owner = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        self.downloads.insert(
            id,
            Download {
                owner,
                group: group.clone(),
                file: file.clone(),
                dest: dest.clone(),
                size,
                hashes,
                peers_tag: None,
                last_peers: Some(now),
                want_peers: false,
                done: false,
                share: true,
            },
        );
        self.peers.add_peers(id, peers, now);
        self.done(&format!(
            "downloading {file} from {group} to {}",
            dest.display()
        ));
    }

    fn on_background_reply(&mut self, bg: Background, reply: Reply, now: Instant) {
        match bg {
            Background::Abandoned => {}
            Background::Have => {
                if let Reply::Err { code, message } = reply {
                    log::debug!("have refused: {code} {message}");
                }
            }
            Background::SeedEmpty => {
                if let Reply::Err { code, message } = reply {
                    log::info!("empty file not registered as seeded: {code} {message}");
                }
            }
            Background::Peers(id) => {
                let Some(d) = self.downloads.get_mut(&id) else {
                    return;
                };
                d.peers_tag = None;
                let npieces = d.hashes.len();
                match reply {
                    Reply::List { lines, .. } => {
                        let peers: Vec<PeerInfo> = lines
                            .iter()
                            .filter_map(|l| parse_peer_line(l, npieces))
                            .collect();
                        log::debug!("{} peers for {}/{}", peers.len(), d.group, d.file);
                        self.peers.add_peers(id, peers, now);
                    }
                    Reply::Err { code, message } => {
                        log::info!("peers of {}: {code} {message}", d.file)
                    }
                    Reply::Ok(_) => {}
                }
                if std::mem::take(&mut d.want_peers) {
                    self.ask_peers(id, now);
                }
            }
        }
    }

    // ---- peer side ------------------------------------------------------------------------

    fn on_peer_event(&mut self, ev: PeerEvent, now: Instant) {
        match ev {
            PeerEvent::PiecesVerified { id, pieces } => {
                let user = self.user.as_ref().map(|u| u.name.as_str());
                if let Some(d) = self.downloads.get(&id) {
                    // Announced only for the user who started it (another may log in
                    // meanwhile) and only while it is shared.
                    if d.share && user.is_none_or(|u| u == d.owner) {
                        self.haves.add(&d.group, &d.file, &pieces, now);
                    }
                }
            }
            PeerEvent::NeedPeers { id } => self.ask_peers(id, now),
            PeerEvent::Completed { id } => self.on_download_complete(id, now),
            PeerEvent::Failed { id, reason } => {
                if let Some(d) = self.downloads.get_mut(&id) {
                    d.done = true;
                    console::err(&format!(
                        "warning: download of {} from {} failed: {reason}",
                        d.file, d.group
                    ));
                }
            }
            PeerEvent::Hashed { job, size, hashes } => match self.pending.take() {
                Some(Pending::Hashing { cmd, job: j, up }) if j == job => {
                    self.on_hashed(cmd, up, size, hashes, now)
                }
                other => self.pending = other,
            },
            PeerEvent::HashFailed { job, reason } => match self.pending.take() {
                Some(Pending::Hashing { job: j, up, .. }) if j == job => {
                    self.fail(&format!("cannot read {}: {reason}", up.path.display()))
                }
                other => self.pending = other,
            },
        }
    }

    fn on_hashed(
        &mut self,
        cmd: Command,
        up: Upload,
        size: u64,
        hashes: Arc<Vec<Hash>>,
        now: Instant,
    ) {
        // The file must not have changed while it was hashed, or the hashes describe nothing.
        let same = std::fs::metadata(&up.path).map(|m| shares::stamp(&m)).ok()
            == Some((up.size, up.mtime_ns));
        if !same || size != up.size || hashes.len() as u64 != pieces::piece_count(size) {
            return self.fail(&format!(
                "{} changed while it was being hashed; try again",
                up.path.display()
            ));
        }
        let extra: Vec<String> = pieces::hash_lines(&hashes).collect();
        let line = format!(
            "upload_file {} {} {} {}",
            up.group,
            up.file,
            size,
            hashes.len()
        );
        let tag = self.send(RequestClass::Write, line, extra, now);
        self.set_pending(
            Pending::Uploading {
                cmd,
                tag,
                up,
                hashes,
            },
            now,
        );
    }

    fn on_download_complete(&mut self, id: DownloadId, now: Instant) {
        let Some(d) = self.downloads.get_mut(&id) else {
            return;
        };
        d.done = true;
        let sources = report::sources_note(
            &self.peers.peer_piece_counts(id),
            self.peers.earlier_pieces(id),
        );
        console::err(&format!(
            "note: download of {} complete: {}{sources}",
            d.file,
            d.dest.display()
        ));
        // The last piece is reported at once so the tracker counts this client as a seeder.
        let (group, file) = (d.group.clone(), d.file.clone());
        let stamp = std::fs::metadata(&d.dest).map(|m| shares::stamp(&m));
        let share = stamp.ok().map(|(size, mtime_ns)| Share {
            group: group.clone(),
            file: file.clone(),
            size,
            mtime_ns,
            path: d.dest.clone(),
        });
        let (owner, hashes, expected) = (d.owner.clone(), d.hashes.clone(), d.size);
        if !d.share {
            // stop_share while it was downloading: the finished file is not shared.
            let shared_otherwise = self
                .user
                .as_ref()
                .is_some_and(|u| u.active.contains(&(group.clone(), file.clone())));
            if !shared_otherwise {
                self.peers.unshare(&group, &file);
            }
            return;
        }
        self.flush_haves(now, true);
        let current = self.user.as_ref().is_some_and(|u| u.name == owner);
        if hashes.is_empty() && current && self.link.session().is_some() {
            // No piece, so no `have`: the tracker learns of the new seeder this way (the
            // same content under the same name adds a seeder).
            let tag = self.send(
                RequestClass::Write,
                format!("upload_file {group} {file} 0 0"),
                vec![],
                now,
            );
            self.background.insert(tag, Background::SeedEmpty);
        }
        if let Some(share) = share.filter(|s| s.size == expected) {
            let store = ShareStore::new(&self.config.state_dir, &owner);
            if let Err(e) = store.remember(&share, &hashes) {
                console::err(&format!(
                    "warning: {file} will not be shared after a restart: {e}"
                ));
            }
            if let Some(u) = self.user.as_mut().filter(|u| u.name == owner) {
                u.active.insert((group, file));
            }
        }
    }

    fn ask_peers(&mut self, id: DownloadId, now: Instant) {
        if !self.logged_in() {
            return;
        }
        let Some(d) = self.downloads.get_mut(&id) else {
            return;
        };
        if d.done {
            return;
        }
        if d.peers_tag.is_some() || d.last_peers.is_some_and(|t| now < t + PEERS_MIN_INTERVAL) {
            d.want_peers = d.peers_tag.is_some();
            return;
        }
        let line = format!("peers {} {}", d.group, d.file);
        d.last_peers = Some(now);
        let tag = self
            .link
            .send(self.poll.registry(), RequestClass::Read, line, vec![], now);
        if let Some(d) = self.downloads.get_mut(&id) {
            d.peers_tag = Some(tag);
        }
        self.background.insert(tag, Background::Peers(id));
    }

    /// Sends batched `have` reports when due (or now, when `force`), while logged in.
    fn flush_haves(&mut self, now: Instant, force: bool) {
        if self.haves.is_empty() || !self.logged_in() || !(force || self.haves.due(now)) {
            return;
        }
        for (g, f, ranges) in self.haves.take() {
            let tag = self.send(
                RequestClass::Have,
                format!("have {g} {f} {ranges}"),
                vec![],
                now,
            );
            self.background.insert(tag, Background::Have);
        }
    }
}

fn plural(n: &str) -> &'static str {
    if n == "1" {
        ""
    } else {
        "s"
    }
}

/// Checks a path given to `upload_file`: exists, regular, readable, and its file name obeys
/// the naming rules. Returns the absolute path, file name, size and modification time.
pub fn check_upload_path(path: &Path) -> Result<(PathBuf, String, u64, u128), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown} does not exist"),
        std::io::ErrorKind::PermissionDenied => {
            format!("{shown} cannot be read (permission denied)")
        }
        _ => format!("cannot read {shown}: {e}"),
    })?;
    if meta.is_dir() {
        return Err(format!(
            "{shown} is a directory; only regular files can be shared"
        ));
    }
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("{shown} cannot be read (permission denied)")
        }
        _ => format!("cannot read {shown}: {e}"),
    })?;
    let abs = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve {shown}: {e}"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{shown} has no usable file name"))?
        .to_string();
    names::check(NameKind::File, &name)
        .map_err(|e| format!("{e} (rename the file to share it)"))?;
    let (size, mtime) = shares::stamp(&meta);
    Ok((abs, name, size, mtime))
}

/// Where a download of `file` to `dest` goes: into `dest` if it is a directory, otherwise at
/// `dest`. An existing file there, or a missing parent directory, is an error.
pub fn resolve_destination(dest: &Path, file: &str) -> Result<PathBuf, String> {
    let target = if dest.is_dir() {
        dest.join(file)
    } else {
        dest.to_path_buf()
    };
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(format!(
            "{} already exists; choose another destination",
            target.display()
        ));
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(format!("the directory {} does not exist", parent.display()));
    }
    let parent = std::fs::canonicalize(&parent)
        .map_err(|e| format!("cannot use {}: {e}", parent.display()))?;
    Ok(parent.join(target.file_name().unwrap_or_default()))
}

/// Parses `download_file`'s reply: head `<size> <npieces>`, data lines `h <hex>` (hashes) and
/// `p <user> <addr> <have>` (peers).
pub fn parse_download_reply(
    head: &[String],
    lines: &[String],
) -> Result<(u64, Vec<Hash>, Vec<PeerInfo>), String> {
    let (size, npieces): (u64, usize) = match head {
        [s, n] => (
            s.parse().map_err(|_| "bad size")?,
            n.parse().map_err(|_| "bad piece count")?,
        ),
        _ => return Err("bad header".into()),
    };
    if pieces::piece_count(size) != npieces as u64 {
        return Err("piece count does not match the size".into());
    }
    let mut hashes = Vec::with_capacity(npieces);
    let mut peers = Vec::new();
    for l in lines {
        if let Some(hex) = l.strip_prefix("h ") {
            hashes.extend(pieces::hashes_from_hex(hex.trim()).ok_or("bad hash line")?);
        } else if l.starts_with("p ") {
            if let Some(p) = parse_peer_line(l, npieces) {
                peers.push(p);
            }
        } else {
            return Err(format!("unexpected line {l:?}"));
        }
    }
    if hashes.len() != npieces {
        return Err(format!("{} hashes for {npieces} pieces", hashes.len()));
    }
    Ok((size, hashes, peers))
}

/// Parses `p <user> <addr> <have>`; `None` if malformed.
pub fn parse_peer_line(line: &str, npieces: usize) -> Option<PeerInfo> {
    let w: Vec<&str> = line.split_ascii_whitespace().collect();
    match w.as_slice() {
        ["p", user, addr, have] => Some(PeerInfo {
            user: user.to_string(),
            addr: addr.parse().ok()?,
            have: PieceSet::from_wire(have, npieces)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_is_resolved_and_existing_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let got = resolve_destination(d, "f.bin").unwrap();
        assert_eq!(got, std::fs::canonicalize(d).unwrap().join("f.bin"));
        let got = resolve_destination(&d.join("other name"), "f.bin").unwrap();
        assert!(got.ends_with("other name"));
        std::fs::write(d.join("f.bin"), b"x").unwrap();
        assert!(resolve_destination(d, "f.bin")
            .unwrap_err()
            .contains("already exists"));
        assert!(resolve_destination(&d.join("f.bin"), "g")
            .unwrap_err()
            .contains("already exists"));
        assert!(resolve_destination(&d.join("nodir/x"), "g")
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn upload_paths_are_checked_locally() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check_upload_path(&d.join("nope"))
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_upload_path(d).unwrap_err().contains("directory"));
        std::fs::write(d.join("bad name"), b"x").unwrap();
        assert!(check_upload_path(&d.join("bad name"))
            .unwrap_err()
            .contains("file name"));
        std::fs::write(d.join("ok.txt"), b"hello").unwrap();
        let (abs, name, size, _) = check_upload_path(&d.join("ok.txt")).unwrap();
        assert!(abs.is_absolute());
        assert_eq!((name.as_str(), size), ("ok.txt", 5));
    }

    #[test]
    fn download_replies_are_parsed() {
        let hashes: Vec<Hash> = vec![[1; 20], [2; 20]];
        let head = vec![(pieces::PIECE_SIZE + 1).to_string(), "2".to_string()];
        let lines = vec![
            format!("h {}", pieces::hashes_to_hex(&hashes)),
            "p bob 127.0.0.1:5000 all".to_string(),
            "p carol 127.0.0.1:5001 b80".to_string(),
            "p broken".to_string(),
        ];
        let (size, h, peers) = parse_download_reply(&head, &lines).unwrap();
        assert_eq!(size, pieces::PIECE_SIZE + 1);
        assert_eq!(h, hashes);
        assert_eq!(peers.len(), 2);
        assert!(peers[0].have.is_full());
        assert_eq!(peers[1].have.count(), 1);
        assert!(parse_download_reply(&["5".into(), "2".into()], &[]).is_err());
        assert!(parse_download_reply(&head, &lines[1..]).is_err());
    }
}
