//! The tracker's whole state as plain data: users, groups, files, sessions and the
//! deduplication table. It changes only through `apply`, which is deterministic (no clock, no
//! randomness), so both trackers applying the same operations in the same order hold the same
//! state — `digest` checks that. Sockets, files and time stay outside.
//!
//! - this file    — the model (`State`, `Group`, `File`, `Session`), `apply` and the queries
//! - `snapshot`   — the canonical snapshot lines, loading them back, `digest`
//! - `invariants` — `check_invariants` and the property test that operations keep them
//! - `dedup`      — the table of each client instance's last write, bounded, with its eviction
//! - `quota`      — `Limits`: per-user and per-group quotas and the state's overall budget

mod dedup;
mod invariants;
pub mod quota;
mod snapshot;

#[cfg(test)]
mod fixtures;

pub use dedup::MAX_DEDUP;
pub use quota::Limits;
use quota::Usage;

use crate::auth::scram::Verifier;
use crate::auth::ticket::{self, Ticket};
use crate::names::{self, NameKind};
use crate::pieces::{self, Hash, PieceSet, MAX_PIECES};
use crate::protocol::tracker::{
    DownloadReply, ErrorCode, FileLine, GroupLine, PeerLine, WriteReply,
};
use crate::tracker::op::{self, Op, Origin, Token};
use dedup::DedupTable;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Largest file whose partial sources are offered in peer lines: its bitfield (2 hex digits
/// per 8 pieces) plus the user and address must stay inside a 64 KiB client line.
pub const MAX_PARTIAL_PIECES: usize = 240 * 1024;

/// Why an operation or query was refused. `code()` is the wire's error code; `message()` the
/// sentence shown to a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotLoggedIn,
    AlreadyLoggedIn,
    BadCredentials,
    NoSession,
    UserExists,
    /// The group.
    GroupExists(String),
    /// The group.
    NoSuchGroup(String),
    /// The user.
    NoSuchUser(String),
    /// Group, file.
    NoSuchFile(String, String),
    /// Group, user.
    NoSuchRequest(String, String),
    /// The group.
    NotMember(String),
    /// The group.
    NotOwner(String),
    /// The group.
    AlreadyMember(String),
    /// The group.
    AlreadyRequested(String),
    /// Group, file.
    NotSeeder(String, String),
    /// Group, file.
    ContentMismatch(String, String),
    InvalidName(String),
    BadRequest(String),
    /// A per-user or per-group quota (`quota.rs`); the sentence says which.
    QuotaExceeded(String),
    /// The state's overall budget is spent (`quota.rs`); the sentence says which.
    TrackerFull(String),
    /// Too many requests of one kind from one address (`tracker::rates`); not a state
    /// refusal, but answered the same way.
    RateLimited(String),
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NotLoggedIn => ErrorCode::NotLoggedIn,
            Refusal::AlreadyLoggedIn => ErrorCode::AlreadyLoggedIn,
            Refusal::BadCredentials => ErrorCode::BadCredentials,
            Refusal::NoSession => ErrorCode::NoSession,
            Refusal::UserExists => ErrorCode::UserExists,
            Refusal::GroupExists(_) => ErrorCode::GroupExists,
            Refusal::NoSuchGroup(_) => ErrorCode::NoSuchGroup,
            Refusal::NoSuchUser(_) => ErrorCode::NoSuchUser,
            Refusal::NoSuchFile(..) => ErrorCode::NoSuchFile,
            Refusal::NoSuchRequest(..) => ErrorCode::NoSuchRequest,
            Refusal::NotMember(_) => ErrorCode::NotMember,
            Refusal::NotOwner(_) => ErrorCode::NotOwner,
            Refusal::AlreadyMember(_) => ErrorCode::AlreadyMember,
            Refusal::AlreadyRequested(_) => ErrorCode::AlreadyRequested,
            Refusal::NotSeeder(..) => ErrorCode::NotSeeder,
            Refusal::ContentMismatch(..) => ErrorCode::ContentMismatch,
            Refusal::InvalidName(_) => ErrorCode::InvalidName,
            Refusal::BadRequest(_) => ErrorCode::BadRequest,
            Refusal::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Refusal::TrackerFull(_) => ErrorCode::TrackerFull,
            Refusal::RateLimited(_) => ErrorCode::RateLimited,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NotLoggedIn => "you are not logged in".to_string(),
            Refusal::AlreadyLoggedIn => {
                "this user is already logged in (here or from another client)".to_string()
            }
            Refusal::BadCredentials => "wrong user id or password".to_string(),
            Refusal::NoSession => "that session no longer exists; log in again".to_string(),
            Refusal::UserExists => "that user id is already taken".to_string(),
            Refusal::GroupExists(g) => format!("group {g} already exists"),
            Refusal::NoSuchGroup(g) => format!("there is no group {g}"),
            Refusal::NoSuchUser(u) => format!("there is no user {u}"),
            Refusal::NoSuchFile(g, f) => format!("there is no file {f} in group {g}"),
            Refusal::NoSuchRequest(g, u) => format!("{u} has not asked to join group {g}"),
            Refusal::NotMember(g) => format!("you are not a member of group {g}"),
            Refusal::NotOwner(g) => format!("only the owner of group {g} may do that"),
            Refusal::AlreadyMember(g) => format!("you are already a member of group {g}"),
            Refusal::AlreadyRequested(g) => format!("you have already asked to join group {g}"),
            Refusal::NotSeeder(g, f) => format!("you do not share {f} in group {g}"),
            Refusal::ContentMismatch(g, f) => {
                format!("a file named {f} with different content is already shared in group {g}")
            }
            Refusal::InvalidName(m)
            | Refusal::BadRequest(m)
            | Refusal::QuotaExceeded(m)
            | Refusal::TrackerFull(m)
            | Refusal::RateLimited(m) => m.clone(),
        }
    }
}

/// A file shared in a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub size: u64,
    /// One SHA-1 per piece: `piece_count(size)` of them, at most `MAX_PIECES`.
    pub hashes: Vec<Hash>,
    /// Who holds pieces: a full set is a seeder, a partial one a downloader that reported
    /// pieces with `have`. Never empty of seeders: the file goes when its last seeder does.
    pub sharers: BTreeMap<String, PieceSet>,
}

impl File {
    fn npieces(&self) -> usize {
        self.hashes.len()
    }

    pub fn seeders(&self) -> usize {
        self.sharers.values().filter(|s| s.is_full()).count()
    }

    /// Whether anyone but `user` who is online (`online`) has the whole file.
    fn other_complete_copy_online(&self, user: &str, online: impl Fn(&str) -> bool) -> bool {
        self.sharers
            .iter()
            .any(|(u, have)| u != user && have.is_full() && online(u))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub owner: String,
    /// In join order: ownership passes to the earliest-joined member when the owner leaves.
    pub members: Vec<String>,
    /// Pending join requests, in request order.
    pub requests: Vec<String>,
    pub files: BTreeMap<String, File>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Where the user's client serves pieces.
    pub addr: String,
    /// The tracker the client is connected to; `None` once that tracker died (orphaned: not
    /// online, but still valid for `attach`).
    pub tracker: Option<u8>,
    /// 64 lowercase hex: the session secret the login reply gave the client. `attach` proves
    /// knowledge of it; the ticket key is derived from it.
    pub secret: String,
    /// The client's static key (64 hex) from its channel's handshake, published in peer lines.
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// User → password verifier (`Verifier::encode()`): nothing in it logs in by itself.
    users: BTreeMap<String, String>,
    groups: BTreeMap<String, Group>,
    sessions: BTreeMap<Token, Session>,
    /// User → token of the user's one session; the index of `sessions`.
    user_sessions: BTreeMap<String, Token>,
    /// Each client instance's last deduplicated write; replicated state (in snapshots).
    dedup: DedupTable,
    /// The quotas in force: set by `Op::Limits` entries, so both trackers use the same.
    limits: Limits,
    /// Groups owned per user, files and piece hashes in all: what the quotas count, derived
    /// from `groups` and kept in step by `apply` (not in snapshots).
    usage: Usage,
    /// Writes undone when a split healed, oldest first, until their client is told; at most
    /// `MAX_NOTICES` (the oldest goes first).
    notices: Vec<Notice>,
}

/// At most this many notices are kept: each is a sentence (≤ 1 KiB), told once, and a split
/// undoes only the writes that conflict, so a few are normal and thousands mean nobody reads.
pub const MAX_NOTICES: usize = 1024;

/// The session a `redo` acts through while it is applied; no real token looks like it (those
/// are 32 hex digits), so it can never collide with one.
const REDO_TOKEN: &str = "redo";

/// A write undone when a split healed, for the client instance that made it or a client of
/// the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub instance: Option<u64>,
    pub user: Option<String>,
    pub text: String,
}

impl Notice {
    /// Whether this notice is for a client with this instance id or session user.
    fn is_for(&self, instance: Option<u64>, user: Option<&str>) -> bool {
        (self.instance.is_some() && self.instance == instance)
            || (self.user.is_some() && self.user.as_deref() == user)
    }
}

fn check_name(kind: NameKind, s: &str) -> Result<(), Refusal> {
    names::check(kind, s).map_err(Refusal::InvalidName)
}

fn check_key(key: &str) -> Result<(), Refusal> {
    if op::is_key(key) {
        Ok(())
    } else {
        Err(Refusal::BadRequest(
            "client key is not 64 lowercase hex digits".to_string(),
        ))
    }
}

fn session_fields(addr: &str, tracker: u8) -> Result<(), Refusal> {
    op::check_addr(addr).map_err(Refusal::BadRequest)?;
    op::check_tracker(tracker).map_err(Refusal::BadRequest)
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// The user of an attached session: the one kind of session that may act.
    fn actor(&self, token: &str) -> Result<String, Refusal> {
        match self.sessions.get(token) {
            Some(s) if s.tracker.is_some() => Ok(s.user.clone()),
            _ => Err(Refusal::NotLoggedIn),
        }
    }

    fn group_ref(&self, group: &str) -> Result<&Group, Refusal> {
        check_name(NameKind::Group, group)?;
        self.groups
            .get(group)
            .ok_or_else(|| Refusal::NoSuchGroup(group.to_string()))
    }

    /// The group, if `user` is a member of it.
    fn member_group(&self, user: &str, group: &str) -> Result<&Group, Refusal> {
        let g = self.group_ref(group)?;
        if g.members.iter().any(|m| m == user) {
            Ok(g)
        } else {
            Err(Refusal::NotMember(group.to_string()))
        }
    }

    fn member_group_mut(&mut self, user: &str, group: &str) -> Result<&mut Group, Refusal> {
        self.member_group(user, group)?;
        self.groups
            .get_mut(group)
            .ok_or_else(|| Refusal::NoSuchGroup(group.to_string()))
    }

    fn user_attached(&self, user: &str) -> bool {
        self.user_sessions
            .get(user)
            .and_then(|t| self.sessions.get(t))
            .is_some_and(|s| s.tracker.is_some())
    }

    /// Deterministic. On `Ok`, what the write answers (its words are what a retry gets). A
    /// successful write with an origin is recorded for deduplication; checking for a duplicate
    /// before applying is the caller's job (`dedup`).
    pub fn apply(&mut self, origin: Option<Origin>, op: &Op) -> Result<WriteReply, Refusal> {
        let counted = quota::group_counted(op);
        if let Some(g) = counted {
            self.uncount_group(g);
        }
        let result = self.apply_op(op);
        if let Some(g) = counted {
            self.count_group(g);
        }
        let reply = result?;
        if let Some(o) = origin {
            if op.is_write_dedup() {
                self.dedup.record(o, reply.words());
            }
        }
        Ok(reply)
    }

    /// The stored reply if `origin` is exactly the last deduplicated write of its instance.
    pub fn dedup(&self, origin: &Origin) -> Option<&str> {
        self.dedup.reply(origin)
    }

    fn apply_op(&mut self, op: &Op) -> Result<WriteReply, Refusal> {
        match op {
            Op::CreateUser { user, verifier } => {
                check_name(NameKind::User, user)?;
                if Verifier::parse(verifier).is_none() {
                    return Err(Refusal::BadRequest(
                        "the password verifier is malformed".to_string(),
                    ));
                }
                if self.users.contains_key(user) {
                    return Err(Refusal::UserExists);
                }
                self.check_new_user()?;
                self.users.insert(user.clone(), verifier.clone());
                Ok(WriteReply::Done)
            }
            Op::Login {
                token,
                user,
                addr,
                tracker,
                secret,
                key,
            } => {
                check_name(NameKind::User, user)?;
                check_key(key)?;
                if !op::is_token(token) {
                    return Err(Refusal::BadRequest("malformed session token".to_string()));
                }
                if !op::is_secret(secret) {
                    return Err(Refusal::BadRequest("malformed session secret".to_string()));
                }
                session_fields(addr, *tracker)?;
                if !self.users.contains_key(user) {
                    return Err(Refusal::BadCredentials);
                }
                if self.sessions.get(token).is_some_and(|s| s.user != *user) {
                    return Err(Refusal::BadRequest(
                        "session token already in use".to_string(),
                    ));
                }
                // One session per user: the proof was checked before this was proposed, so
                // an earlier session, live or orphaned, is taken over (its tracker tells its
                // connection and closes it).
                if let Some(old) = self.user_sessions.remove(user) {
                    self.sessions.remove(&old);
                }
                self.sessions.insert(
                    token.clone(),
                    Session {
                        user: user.clone(),
                        addr: addr.clone(),
                        tracker: Some(*tracker),
                        secret: secret.clone(),
                        key: key.clone(),
                    },
                );
                self.user_sessions.insert(user.clone(), token.clone());
                Ok(WriteReply::Token(format!("{token} {secret}")))
            }
            Op::Attach {
                token,
                addr,
                tracker,
                key,
            } => {
                session_fields(addr, *tracker)?;
                check_key(key)?;
                let s = self.sessions.get_mut(token).ok_or(Refusal::NoSession)?;
                s.addr = addr.clone();
                s.tracker = Some(*tracker);
                s.key = key.clone();
                Ok(WriteReply::User(s.user.clone()))
            }
            Op::Logout { token } => {
                // Also proposed when a connection drops, possibly after the session is gone.
                if let Some(s) = self.sessions.remove(token) {
                    self.user_sessions.remove(&s.user);
                }
                Ok(WriteReply::Done)
            }
            Op::Detach { tracker } => {
                op::check_tracker(*tracker).map_err(Refusal::BadRequest)?;
                for s in self.sessions.values_mut() {
                    if s.tracker == Some(*tracker) {
                        s.tracker = None;
                    }
                }
                Ok(WriteReply::Done)
            }
            Op::CreateGroup { token, group } => {
                let user = self.actor(token)?;
                check_name(NameKind::Group, group)?;
                if self.groups.contains_key(group) {
                    return Err(Refusal::GroupExists(group.clone()));
                }
                self.check_new_group(&user)?;
                self.groups.insert(
                    group.clone(),
                    Group {
                        owner: user.clone(),
                        members: vec![user],
                        requests: Vec::new(),
                        files: BTreeMap::new(),
                    },
                );
                Ok(WriteReply::Done)
            }
            Op::JoinGroup { token, group } => {
                let user = self.actor(token)?;
                let g = self.group_ref(group)?;
                if !g.members.contains(&user) && !g.requests.contains(&user) {
                    self.check_new_request(group, g)?;
                }
                let g = self
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| Refusal::NoSuchGroup(group.clone()))?;
                if g.members.contains(&user) {
                    return Err(Refusal::AlreadyMember(group.clone()));
                }
                if g.requests.contains(&user) {
                    return Err(Refusal::AlreadyRequested(group.clone()));
                }
                g.requests.push(user);
                Ok(WriteReply::Done)
            }
            Op::LeaveGroup { token, group } => {
                let user = self.actor(token)?;
                let g = self.member_group_mut(&user, group)?;
                g.members.retain(|m| *m != user);
                if g.members.is_empty() {
                    self.groups.remove(group);
                    return Ok(WriteReply::Done);
                }
                if g.owner == user {
                    g.owner = g.members[0].clone();
                }
                for f in g.files.values_mut() {
                    f.sharers.remove(&user);
                }
                // Partial sources cannot serve a whole file, so they do not keep it listed.
                g.files.retain(|_, f| f.seeders() > 0);
                Ok(WriteReply::Done)
            }
            Op::AcceptRequest { token, group, user } => {
                let owner = self.actor(token)?;
                check_name(NameKind::User, user)?;
                let g = self.group_ref(group)?;
                if g.owner != owner {
                    return Err(Refusal::NotOwner(group.clone()));
                }
                if !self.users.contains_key(user) {
                    return Err(Refusal::NoSuchUser(user.clone()));
                }
                let g = self
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| Refusal::NoSuchGroup(group.clone()))?;
                let pos = g
                    .requests
                    .iter()
                    .position(|r| r == user)
                    .ok_or_else(|| Refusal::NoSuchRequest(group.clone(), user.clone()))?;
                g.requests.remove(pos);
                g.members.push(user.clone());
                Ok(WriteReply::Done)
            }
            Op::Upload {
                token,
                group,
                file,
                size,
                hashes,
            } => {
                let user = self.actor(token)?;
                check_name(NameKind::File, file)?;
                let n = pieces::piece_count(*size);
                if n > MAX_PIECES || hashes.len() as u64 != n {
                    return Err(Refusal::BadRequest(format!(
                        "a file of {size} bytes needs {n} piece hashes (at most {MAX_PIECES}), not {}",
                        hashes.len()
                    )));
                }
                let g = self.member_group(&user, group)?;
                if !g.files.contains_key(file) {
                    self.check_new_file(group, g, hashes.len())?;
                }
                let g = self.member_group_mut(&user, group)?;
                let full = PieceSet::full(hashes.len());
                match g.files.get_mut(file) {
                    None => {
                        g.files.insert(
                            file.clone(),
                            File {
                                size: *size,
                                hashes: hashes.clone(),
                                sharers: BTreeMap::from([(user, full)]),
                            },
                        );
                        Ok(WriteReply::NewFile)
                    }
                    Some(f) if f.size == *size && f.hashes == *hashes => {
                        f.sharers.insert(user, full);
                        Ok(WriteReply::Seeder)
                    }
                    Some(_) => Err(Refusal::ContentMismatch(group.clone(), file.clone())),
                }
            }
            Op::Have {
                token,
                group,
                file,
                pieces,
            } => {
                let user = self.actor(token)?;
                check_name(NameKind::File, file)?;
                let g = self.member_group_mut(&user, group)?;
                let f = g
                    .files
                    .get_mut(file)
                    .ok_or_else(|| Refusal::NoSuchFile(group.clone(), file.clone()))?;
                let n = f.npieces();
                if pieces.is_empty() {
                    return Err(Refusal::BadRequest("have names no pieces".to_string()));
                }
                if let Some(bad) = pieces.iter().find(|&&i| i >= n) {
                    return Err(Refusal::BadRequest(format!(
                        "piece {bad} is out of range: {file} has {n} pieces"
                    )));
                }
                let set = f.sharers.entry(user).or_insert_with(|| PieceSet::empty(n));
                for &i in pieces {
                    set.insert(i);
                }
                Ok(WriteReply::Done)
            }
            Op::StopShare { token, group, file } => {
                let user = self.actor(token)?;
                check_name(NameKind::File, file)?;
                // Read before the change: whether this user's copy was the last complete one
                // anybody online holds.
                let was_last = self
                    .member_group(&user, group)?
                    .files
                    .get(file)
                    .is_some_and(|f| {
                        f.sharers.get(&user).is_some_and(PieceSet::is_full)
                            && !f.other_complete_copy_online(&user, |u| self.user_attached(u))
                    });
                let g = self.member_group_mut(&user, group)?;
                let f = g
                    .files
                    .get_mut(file)
                    .ok_or_else(|| Refusal::NoSuchFile(group.clone(), file.clone()))?;
                if f.sharers.remove(&user).is_none() {
                    return Err(Refusal::NotSeeder(group.clone(), file.clone()));
                }
                if f.seeders() == 0 {
                    g.files.remove(file);
                }
                Ok(if was_last {
                    WriteReply::LastOnlineCopy
                } else {
                    WriteReply::Done
                })
            }
            // Terms are the replication layer's business; the state only carries them.
            Op::Term { .. } => Ok(WriteReply::Done),
            Op::Limits(limits) => {
                // Lowering a limit below what the state holds refuses new things only; nothing
                // held is removed.
                self.limits = *limits;
                Ok(WriteReply::Done)
            }
            Op::Redo { user, op } => self.apply_as(user, op),
            Op::Notice {
                instance,
                user,
                text,
            } => {
                op::check_notice_text(text).map_err(Refusal::BadRequest)?;
                if self.notices.len() >= MAX_NOTICES {
                    self.notices.remove(0);
                }
                self.notices.push(Notice {
                    instance: *instance,
                    user: user.clone(),
                    text: text.clone(),
                });
                Ok(WriteReply::Done)
            }
            Op::NoticeSeen { instance, user } => {
                self.notices
                    .retain(|n| !n.is_for(*instance, user.as_deref()));
                Ok(WriteReply::Done)
            }
        }
    }

    /// A write made during a split, applied again as `user` (`Op::Redo`): through a session
    /// that exists only while it is applied, so the write is validated exactly as the user's
    /// own would be, whether or not the session it was made through still exists.
    fn apply_as(&mut self, user: &str, op: &Op) -> Result<WriteReply, Refusal> {
        if let Op::Login {
            token,
            user: who,
            addr,
            tracker,
            secret,
            key,
        } = op
        {
            return self.carry_session(user, who, token, (addr, *tracker, secret, key));
        }
        if !op.acts_as_user() {
            return Err(Refusal::BadRequest(format!(
                "{} cannot be applied again as a user",
                op.verb()
            )));
        }
        check_name(NameKind::User, user)?;
        if !self.users.contains_key(user) {
            return Err(Refusal::NoSuchUser(user.to_string()));
        }
        let session = Session {
            user: user.to_string(),
            addr: "0.0.0.0:0".to_string(),
            tracker: Some(1),
            // Never seen by a client: the session lives only while the write is applied.
            secret: "0".repeat(op::SECRET_LEN),
            key: "0".repeat(64),
        };
        self.sessions.insert(REDO_TOKEN.to_string(), session);
        let result = self.apply_op(&op.with_token(REDO_TOKEN));
        self.sessions.remove(REDO_TOKEN);
        result
    }

    /// A session started during a split, carried over orphaned: its client may `attach` it
    /// wherever it lands. Not if the user is online elsewhere (that session stays; this one is
    /// not needed: the client logs in again).
    fn carry_session(
        &mut self,
        user: &str,
        who: &str,
        token: &str,
        (addr, tracker, secret, key): (&str, u8, &str, &str),
    ) -> Result<WriteReply, Refusal> {
        if who != user {
            return Err(Refusal::BadRequest(
                "a carried-over login must be the user's own".to_string(),
            ));
        }
        check_name(NameKind::User, user)?;
        if !op::is_token(token) {
            return Err(Refusal::BadRequest("malformed session token".to_string()));
        }
        session_fields(addr, tracker)?;
        if !op::is_secret(secret) {
            return Err(Refusal::BadRequest("malformed session secret".to_string()));
        }
        if !op::is_key(key) {
            return Err(Refusal::BadRequest("malformed client key".to_string()));
        }
        if !self.users.contains_key(user) {
            return Err(Refusal::NoSuchUser(user.to_string()));
        }
        if self.sessions.get(token).is_some_and(|s| s.user != user) {
            return Err(Refusal::BadRequest(
                "session token already in use".to_string(),
            ));
        }
        // The reply is the token either way: it is what a retry of that login is answered
        // with (deduplication), and re-attaching it tells that client where it stands.
        if self.user_attached(user) {
            return Ok(WriteReply::Token(token.to_string()));
        }
        if let Some(old) = self.user_sessions.remove(user) {
            self.sessions.remove(&old);
        }
        self.sessions.insert(
            token.to_string(),
            Session {
                user: user.to_string(),
                addr: addr.to_string(),
                tracker: None,
                secret: secret.to_string(),
                key: key.to_string(),
            },
        );
        self.user_sessions
            .insert(user.to_string(), token.to_string());
        Ok(WriteReply::Token(token.to_string()))
    }

    /// Whether any write undone by a healed split is waiting to be told (the common case,
    /// none, costs one check per command).
    pub fn has_notices(&self) -> bool {
        !self.notices.is_empty()
    }

    /// The notices for a client with this instance id or session user, oldest first.
    pub fn notices_for(&self, instance: Option<u64>, user: Option<&str>) -> Vec<&Notice> {
        self.notices
            .iter()
            .filter(|n| n.is_for(instance, user))
            .collect()
    }

    /// The user of a session that exists, attached or orphaned.
    pub fn session_user(&self, token: &str) -> Option<&str> {
        self.sessions.get(token).map(|s| s.user.as_str())
    }

    pub fn user_exists(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The user's verifier, for `login_begin` and the proof check before a `login` is
    /// proposed (no password ever reaches the tracker).
    pub fn verifier(&self, user: &str) -> Option<Verifier> {
        self.users.get(user).and_then(|v| Verifier::parse(v))
    }

    /// The token of `user`'s session while a client holds it (attached, not orphaned): the
    /// session a login of that user takes over.
    pub fn live_session_of(&self, user: &str) -> Option<&Token> {
        self.user_sessions
            .get(user)
            .filter(|_| self.user_attached(user))
    }

    /// A session's secret (64 lowercase hex), for checking an `attach` proof.
    pub fn session_secret(&self, token: &str) -> Option<&str> {
        self.sessions.get(token).map(|s| s.secret.as_str())
    }

    /// Every group, by name.
    pub fn list_groups(&self, token: &str) -> Result<Vec<GroupLine>, Refusal> {
        self.actor(token)?;
        Ok(self
            .groups
            .iter()
            .map(|(name, g)| GroupLine {
                group: name.clone(),
                members: g.members.len(),
                owner: g.owner.clone(),
            })
            .collect())
    }

    /// Pending requesters in request order; owner only.
    pub fn list_requests(&self, token: &str, group: &str) -> Result<Vec<String>, Refusal> {
        let user = self.actor(token)?;
        let g = self.group_ref(group)?;
        if g.owner != user {
            return Err(Refusal::NotOwner(group.to_string()));
        }
        Ok(g.requests.clone())
    }

    /// The group's files, by name; members only.
    pub fn list_files(&self, token: &str, group: &str) -> Result<Vec<FileLine>, Refusal> {
        let user = self.actor(token)?;
        let g = self.member_group(&user, group)?;
        Ok(g.files
            .iter()
            .map(|(name, f)| FileLine {
                file: name.clone(),
                size: f.size,
                seeders: f.seeders(),
                copies_tenths: self.copies_online_tenths(f),
            })
            .collect())
    }

    /// Complete copies held by online sessions, in tenths, rounded down: every piece an online
    /// seeder or partial source holds counts, so two halves make one copy. An empty file has
    /// no pieces: each online holder is one copy.
    fn copies_online_tenths(&self, f: &File) -> u64 {
        let online = f.sharers.iter().filter(|(u, _)| self.user_attached(u));
        match f.npieces() as u64 {
            0 => online.count() as u64 * 10,
            n => online.map(|(_, have)| have.count() as u64).sum::<u64>() * 10 / n,
        }
    }

    fn member_file(
        &self,
        token: &str,
        group: &str,
        file: &str,
    ) -> Result<(String, &File), Refusal> {
        let user = self.actor(token)?;
        check_name(NameKind::File, file)?;
        let g = self.member_group(&user, group)?;
        let f = g
            .files
            .get(file)
            .ok_or_else(|| Refusal::NoSuchFile(group.to_string(), file.to_string()))?;
        Ok((user, f))
    }

    /// Online holders of pieces of `f`, `requester` excluded, by user name, each with the
    /// requester's ticket for it valid until `expiry`. A partial source's bitfield must fit a
    /// client line (`MAX_LINE`): for files too large for that (over ~250,000 pieces) only
    /// complete seeders are offered. Only members get here (`member_file`), so a user who left
    /// the group gets no more tickets from the moment the leave is applied.
    fn peer_lines(
        &self,
        f: &File,
        requester: &str,
        group: &str,
        file: &str,
        expiry: u64,
    ) -> Vec<PeerLine> {
        // The requester's static key (checked when its session was made, `op::is_key`).
        let requester_key: Option<[u8; 32]> = self
            .user_sessions
            .get(requester)
            .and_then(|t| self.sessions.get(t))
            .and_then(|s| pieces::from_hex(&s.key)?.try_into().ok());
        f.sharers
            .iter()
            .filter(|(u, _)| u.as_str() != requester)
            .filter(|(_, set)| set.is_full() || set.len() <= MAX_PARTIAL_PIECES)
            .filter_map(|(u, set)| {
                let s = self.sessions.get(self.user_sessions.get(u)?)?;
                s.tracker?;
                // Checked when the session was made (`op::is_secret`).
                let ticket_key = ticket::ticket_key(&s.secret)?;
                let claim = ticket::Claim {
                    downloader: requester,
                    // The requester's channel key: the seeder checks its handshake proved it.
                    downloader_key: requester_key.as_ref(),
                    group,
                    file,
                    expiry,
                };
                Some(PeerLine {
                    user: u.clone(),
                    // Checked when the session was made (`op::check_addr`).
                    addr: s.addr.parse().ok()?,
                    have: set.clone(),
                    key: s.key.clone(),
                    ticket: Some(Ticket::issue(&ticket_key, &claim)),
                })
            })
            .collect()
    }

    /// The `download_file` answer; its peer lines carry tickets valid until `expiry` (the
    /// caller's clock: `apply` and the queries never read one).
    pub fn download(
        &self,
        token: &str,
        group: &str,
        file: &str,
        expiry: u64,
    ) -> Result<DownloadReply<'_>, Refusal> {
        let (user, f) = self.member_file(token, group, file)?;
        Ok(DownloadReply {
            size: f.size,
            hashes: Cow::Borrowed(&f.hashes),
            peers: self.peer_lines(f, &user, group, file, expiry),
        })
    }

    /// The `peers` answer, tickets valid until `expiry`.
    pub fn peers(
        &self,
        token: &str,
        group: &str,
        file: &str,
        expiry: u64,
    ) -> Result<Vec<PeerLine>, Refusal> {
        let (user, f) = self.member_file(token, group, file)?;
        Ok(self.peer_lines(f, &user, group, file, expiry))
    }

    /// Tokens of the sessions attached at `tracker`.
    pub fn sessions_at(&self, tracker: u8) -> Vec<Token> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.tracker == Some(tracker))
            .map(|(t, _)| t.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::pieces::PIECE_SIZE;

    fn redo(user: &str, op: Op) -> Op {
        Op::Redo {
            user: user.into(),
            op: Box::new(op),
        }
    }

    #[test]
    fn redo_acts_as_the_user_whatever_became_of_the_session() {
        let mut st = State::new();
        ok(&mut st, create_user("alice"));
        // No session at all: done as alice all the same, and refused as she would be.
        ok(&mut st, redo("alice", create_group(9, "g")));
        assert_eq!(st.groups["g"].owner, "alice");
        assert_eq!(
            refused(&mut st, redo("alice", create_group(9, "g"))),
            Refusal::GroupExists("g".into())
        );
        assert_eq!(
            refused(&mut st, redo("zed", create_group(9, "h"))),
            Refusal::NoSuchUser("zed".into())
        );
        assert!(matches!(
            refused(&mut st, redo("alice", Op::Logout { token: tok(9) })),
            Refusal::BadRequest(_)
        ));
        assert!(
            st.sessions.is_empty(),
            "the session it acted through is gone"
        );
    }

    #[test]
    fn a_carried_over_login_is_orphaned_and_gives_way_to_a_user_online_elsewhere() {
        let mut st = State::new();
        ok(&mut st, create_user("alice"));
        ok(&mut st, create_user("bob"));
        assert_eq!(ok(&mut st, redo("alice", login(1, "alice", 2))), tok(1));
        assert_eq!(
            st.sessions[&tok(1)].tracker,
            None,
            "valid for attach, not online"
        );
        ok(&mut st, login(2, "bob", 1));
        let before = st.clone();
        assert_eq!(ok(&mut st, redo("bob", login(3, "bob", 2))), tok(3));
        assert_eq!(st, before, "bob is online: his live session stays");
        assert!(matches!(
            refused(&mut st, redo("bob", login(1, "bob", 2))),
            Refusal::BadRequest(_)
        ));
        assert!(matches!(
            refused(&mut st, redo("alice", login(4, "bob", 2))),
            Refusal::BadRequest(_)
        ));
    }

    /// The typed form of a data line as the wire shows it, so the expectations below read as
    /// the client would see them.
    fn gl(line: &str) -> GroupLine {
        GroupLine::parse(line).expect("a group line")
    }

    fn fl(line: &str) -> FileLine {
        FileLine::parse(line).expect("a file line")
    }

    /// A peer line of a 3-piece file; the fixtures' sessions all have the key `abab…`.
    fn pl(line: &str) -> PeerLine {
        PeerLine::parse(&format!("{line} {}", "ab".repeat(32)), 3)
            .expect("a peer line of a 3-piece file")
    }

    /// Ticket expiry for the queries; the tickets themselves are checked on their own.
    const EXP: u64 = 1_800_000_030;

    /// Peer lines without their tickets, to compare with `pl`.
    fn bare(r: Result<Vec<PeerLine>, Refusal>) -> Result<Vec<PeerLine>, Refusal> {
        r.map(|v| {
            v.into_iter()
                .map(|p| {
                    assert!(p.ticket.is_some(), "every peer line carries a ticket");
                    PeerLine { ticket: None, ..p }
                })
                .collect()
        })
    }

    #[test]
    fn refusal_codes_match_the_protocol() {
        let s = String::new;
        let all = [
            (Refusal::NotLoggedIn, ErrorCode::NotLoggedIn),
            (Refusal::AlreadyLoggedIn, ErrorCode::AlreadyLoggedIn),
            (Refusal::BadCredentials, ErrorCode::BadCredentials),
            (Refusal::NoSession, ErrorCode::NoSession),
            (Refusal::UserExists, ErrorCode::UserExists),
            (Refusal::GroupExists(s()), ErrorCode::GroupExists),
            (Refusal::NoSuchGroup(s()), ErrorCode::NoSuchGroup),
            (Refusal::NoSuchUser(s()), ErrorCode::NoSuchUser),
            (Refusal::NoSuchFile(s(), s()), ErrorCode::NoSuchFile),
            (Refusal::NoSuchRequest(s(), s()), ErrorCode::NoSuchRequest),
            (Refusal::NotMember(s()), ErrorCode::NotMember),
            (Refusal::NotOwner(s()), ErrorCode::NotOwner),
            (Refusal::AlreadyMember(s()), ErrorCode::AlreadyMember),
            (Refusal::AlreadyRequested(s()), ErrorCode::AlreadyRequested),
            (Refusal::NotSeeder(s(), s()), ErrorCode::NotSeeder),
            (
                Refusal::ContentMismatch(s(), s()),
                ErrorCode::ContentMismatch,
            ),
            (Refusal::InvalidName(s()), ErrorCode::InvalidName),
            (Refusal::BadRequest(s()), ErrorCode::BadRequest),
            (Refusal::QuotaExceeded(s()), ErrorCode::QuotaExceeded),
            (Refusal::TrackerFull(s()), ErrorCode::TrackerFull),
            (Refusal::RateLimited(s()), ErrorCode::RateLimited),
        ];
        for (r, code) in all {
            assert_eq!(r.code(), code);
        }
        assert_eq!(
            Refusal::NotMember("g".into()).message(),
            "you are not a member of group g"
        );
    }

    #[test]
    fn create_user_refuses_a_taken_name() {
        let mut st = world();
        assert_eq!(refused(&mut st, create_user("alice")), Refusal::UserExists);
        assert!(st.user_exists("alice") && !st.user_exists("dave"));
    }

    #[test]
    fn create_user_refuses_bad_names_and_hashes() {
        let mut st = State::new();
        let e = refused(&mut st, create_user("a/b"));
        assert_eq!(e.code(), ErrorCode::InvalidName);
        for plain in ["plain", "pbkdf2-sha256$1$00$00"] {
            let e = refused(
                &mut st,
                Op::CreateUser {
                    user: "a".into(),
                    verifier: plain.into(),
                },
            );
            assert_eq!(e.code(), ErrorCode::BadRequest);
        }
    }

    #[test]
    fn the_verifier_and_the_live_session_are_what_a_login_checks_against() {
        let mut st = State::new();
        ok(&mut st, create_user("alice"));
        assert_eq!(
            st.verifier("alice").map(|v| v.encode()),
            Some(PW.to_string())
        );
        assert!(st.verifier("nobody").is_none());
        assert_eq!(st.live_session_of("alice"), None);
        ok(&mut st, login(1, "alice", 1));
        assert_eq!(st.live_session_of("alice"), Some(&tok(1)));
        assert_eq!(st.session_secret(&tok(1)), Some(secret(1).as_str()));
        ok(&mut st, Op::Detach { tracker: 1 });
        assert_eq!(
            st.live_session_of("alice"),
            None,
            "orphaned: nobody to tell"
        );
    }

    #[test]
    fn login_returns_the_token_and_attaches_the_session() {
        let mut st = State::new();
        ok(&mut st, create_user("alice"));
        let reply = format!("{} {}", tok(1), secret(1));
        assert_eq!(ok(&mut st, login(1, "alice", 2)), reply, "token and secret");
        assert_eq!(st.session_user(&tok(1)), Some("alice"));
        assert_eq!(st.sessions_at(2), vec![tok(1)]);
        assert!(st.sessions_at(1).is_empty());
    }

    #[test]
    fn login_takes_over_a_user_with_an_attached_session() {
        let mut st = world();
        ok(&mut st, login(9, "alice", 2));
        assert_eq!(st.session_user(&tok(1)), None, "the old session ended");
        assert_eq!(st.live_session_of("alice"), Some(&tok(9)));
        assert_eq!(st.list_groups(&tok(1)), Err(Refusal::NotLoggedIn));
    }

    #[test]
    fn login_refuses_unknown_users_and_bad_fields() {
        let mut st = world();
        assert_eq!(
            refused(&mut st, login(9, "dave", 1)),
            Refusal::BadCredentials
        );
        assert_eq!(
            refused(&mut st, login(9, "a b", 1)).code(),
            ErrorCode::InvalidName
        );
        let mut op = login(9, "dave", 3);
        assert_eq!(refused(&mut st, op.clone()).code(), ErrorCode::BadRequest);
        if let Op::Login { tracker, addr, .. } = &mut op {
            *tracker = 1;
            *addr = "nowhere".into();
        }
        assert_eq!(refused(&mut st, op).code(), ErrorCode::BadRequest);
        let mut st = State::new();
        ok(&mut st, create_user("dave"));
        let e = refused(
            &mut st,
            Op::Login {
                token: "XYZ".into(),
                user: "dave".into(),
                addr: ADDR.into(),
                tracker: 1,
                secret: secret(1),
                key: "ab".repeat(32),
            },
        );
        assert_eq!(e.code(), ErrorCode::BadRequest);
        let mut op = login(9, "dave", 1);
        if let Op::Login { secret, .. } = &mut op {
            *secret = "short".into();
        }
        assert_eq!(refused(&mut st, op).code(), ErrorCode::BadRequest);
    }

    #[test]
    fn login_refuses_a_token_of_another_user() {
        let mut st = world();
        ok(&mut st, create_user("dave"));
        assert_eq!(
            refused(&mut st, login(1, "dave", 1)).code(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn login_replaces_an_orphaned_session() {
        let mut st = world();
        ok(&mut st, Op::Detach { tracker: 1 });
        assert_eq!(st.session_user(&tok(1)), Some("alice"), "orphan kept");
        ok(&mut st, login(9, "alice", 2));
        assert_eq!(st.session_user(&tok(1)), None, "orphan replaced");
        assert_eq!(st.session_user(&tok(9)), Some("alice"));
    }

    #[test]
    fn attach_moves_a_session_and_answers_the_user() {
        let mut st = world();
        ok(&mut st, Op::Detach { tracker: 1 });
        let r = ok(
            &mut st,
            Op::Attach {
                token: tok(1),
                addr: "10.0.0.1:9".into(),
                tracker: 2,
                key: "ab".repeat(32),
            },
        );
        assert_eq!(r, "alice");
        assert_eq!(st.sessions_at(2), vec![tok(1), tok(2)]);
        assert_eq!(st.list_groups(&tok(1)).map(|v| v.len()), Ok(1));
    }

    #[test]
    fn attach_refuses_an_unknown_token() {
        let mut st = world();
        let op = Op::Attach {
            token: tok(9),
            addr: ADDR.into(),
            tracker: 1,
            key: "ab".repeat(32),
        };
        assert_eq!(refused(&mut st, op), Refusal::NoSession);
    }

    #[test]
    fn logout_ends_the_session_and_tolerates_unknown_tokens() {
        let mut st = world();
        ok(&mut st, Op::Logout { token: tok(2) });
        assert_eq!(st.session_user(&tok(2)), None);
        assert_eq!(st.list_groups(&tok(2)), Err(Refusal::NotLoggedIn));
        ok(&mut st, Op::Logout { token: tok(2) });
        ok(&mut st, login(2, "bob", 1));
    }

    #[test]
    fn detach_orphans_only_that_trackers_sessions() {
        let mut st = world();
        ok(&mut st, Op::Detach { tracker: 1 });
        assert!(st.sessions_at(1).is_empty());
        assert_eq!(st.sessions_at(2), vec![tok(2)]);
        assert_eq!(st.session_user(&tok(3)), Some("carol"));
        assert_eq!(st.list_groups(&tok(3)), Err(Refusal::NotLoggedIn));
        assert_eq!(
            refused(&mut st, create_group(1, "h")),
            Refusal::NotLoggedIn,
            "an orphaned session may not act"
        );
    }

    #[test]
    fn ops_need_a_session() {
        let mut st = world();
        for op in [
            create_group(9, "h"),
            join(9, "g"),
            leave(9, "g"),
            accept(9, "g", "bob"),
            upload(9, "g", "f", 1),
            have(9, "g", "f", &[0]),
            stop(9, "g", "f"),
        ] {
            assert_eq!(refused(&mut st, op), Refusal::NotLoggedIn);
        }
        assert_eq!(st.list_groups(&tok(9)), Err(Refusal::NotLoggedIn));
        assert_eq!(st.list_files(&tok(9), "g"), Err(Refusal::NotLoggedIn));
        assert_eq!(st.list_requests(&tok(9), "g"), Err(Refusal::NotLoggedIn));
        assert_eq!(
            bare(st.peers(&tok(9), "g", "f", EXP)),
            Err(Refusal::NotLoggedIn)
        );
    }

    #[test]
    fn create_group_makes_the_creator_owner_and_member() {
        let st = world();
        assert_eq!(st.list_groups(&tok(3)), Ok(vec![gl("g 2 alice")]));
    }

    #[test]
    fn create_group_refuses_a_taken_name() {
        let mut st = world();
        assert_eq!(
            refused(&mut st, create_group(3, "g")),
            Refusal::GroupExists("g".into())
        );
        assert_eq!(
            refused(&mut st, create_group(3, "..")).code(),
            ErrorCode::InvalidName
        );
    }

    #[test]
    fn join_group_files_a_request_in_order() {
        let mut st = world();
        ok(&mut st, create_user("dave"));
        ok(&mut st, login(4, "dave", 2));
        ok(&mut st, join(4, "g"));
        ok(&mut st, join(3, "g"));
        assert_eq!(
            st.list_requests(&tok(1), "g"),
            Ok(vec!["dave".to_string(), "carol".to_string()])
        );
    }

    #[test]
    fn join_group_refusals() {
        let mut st = world();
        assert_eq!(
            refused(&mut st, join(3, "nope")),
            Refusal::NoSuchGroup("nope".into())
        );
        assert_eq!(
            refused(&mut st, join(2, "g")),
            Refusal::AlreadyMember("g".into())
        );
        ok(&mut st, join(3, "g"));
        assert_eq!(
            refused(&mut st, join(3, "g")),
            Refusal::AlreadyRequested("g".into())
        );
    }

    #[test]
    fn accept_request_admits_the_requester() {
        let mut st = world();
        ok(&mut st, join(3, "g"));
        ok(&mut st, accept(1, "g", "carol"));
        assert_eq!(st.list_requests(&tok(1), "g"), Ok(vec![]));
        assert_eq!(st.list_files(&tok(3), "g"), Ok(vec![]));
        assert_eq!(st.list_groups(&tok(3)), Ok(vec![gl("g 3 alice")]));
    }

    #[test]
    fn accept_request_refusals() {
        let mut st = world();
        ok(&mut st, join(3, "g"));
        assert_eq!(
            refused(&mut st, accept(1, "nope", "carol")),
            Refusal::NoSuchGroup("nope".into())
        );
        assert_eq!(
            refused(&mut st, accept(2, "g", "carol")),
            Refusal::NotOwner("g".into())
        );
        assert_eq!(
            refused(&mut st, accept(1, "g", "zed")),
            Refusal::NoSuchUser("zed".into())
        );
        assert_eq!(
            refused(&mut st, accept(1, "g", "bob")),
            Refusal::NoSuchRequest("g".into(), "bob".into())
        );
        assert_eq!(
            st.list_requests(&tok(2), "g"),
            Err(Refusal::NotOwner("g".into()))
        );
        assert_eq!(
            st.list_requests(&tok(1), "nope"),
            Err(Refusal::NoSuchGroup("nope".into()))
        );
    }

    #[test]
    fn leave_group_refusals() {
        let mut st = world();
        assert_eq!(
            refused(&mut st, leave(3, "nope")),
            Refusal::NoSuchGroup("nope".into())
        );
        assert_eq!(
            refused(&mut st, leave(3, "g")),
            Refusal::NotMember("g".into())
        );
    }

    #[test]
    fn leaving_owner_hands_ownership_to_the_earliest_joined_member() {
        let mut st = world();
        ok(&mut st, join(3, "g"));
        ok(&mut st, accept(1, "g", "carol"));
        ok(&mut st, leave(1, "g"));
        assert_eq!(st.list_groups(&tok(3)), Ok(vec![gl("g 2 bob")]));
        assert_eq!(st.list_requests(&tok(2), "g"), Ok(vec![]));
        ok(&mut st, leave(2, "g"));
        assert_eq!(st.list_groups(&tok(3)), Ok(vec![gl("g 1 carol")]));
    }

    #[test]
    fn last_member_leaving_deletes_the_group_with_files_and_requests() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, join(3, "g"));
        ok(&mut st, leave(2, "g"));
        ok(&mut st, leave(1, "g"));
        assert_eq!(st.list_groups(&tok(3)), Ok(vec![]));
        // The name is free again, with nothing left over.
        ok(&mut st, create_group(3, "g"));
        assert_eq!(st.list_files(&tok(3), "g"), Ok(vec![]));
        assert_eq!(st.list_requests(&tok(3), "g"), Ok(vec![]));
    }

    #[test]
    fn leaving_ends_the_leavers_shares() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "only_alice", 1));
        ok(&mut st, upload(1, "g", "both", 5));
        ok(&mut st, upload(2, "g", "both", 5));
        ok(&mut st, upload(2, "g", "bob_partial_of_alice", 9));
        ok(&mut st, Op::Logout { token: tok(2) });
        ok(&mut st, login(2, "bob", 2));
        ok(&mut st, have(2, "g", "only_alice", &[0]));
        ok(&mut st, leave(1, "g"));
        assert_eq!(
            st.list_files(&tok(2), "g"),
            Ok(vec![
                fl("bob_partial_of_alice 1048577 1 1.0"),
                fl("both 1048577 1 1.0")
            ]),
            "a file whose only seeder left goes, even with a partial source"
        );
    }

    #[test]
    fn upload_of_a_new_name_creates_the_file() {
        let mut st = world();
        assert_eq!(ok(&mut st, upload(1, "g", "f", 1)), "new");
        assert_eq!(
            st.list_files(&tok(2), "g"),
            Ok(vec![fl(&format!("f {} 1 1.0", 2 * PIECE_SIZE + 1))])
        );
    }

    #[test]
    fn upload_of_the_same_content_adds_a_seeder() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        assert_eq!(ok(&mut st, upload(2, "g", "f", 1)), "seeder");
        assert_eq!(ok(&mut st, upload(2, "g", "f", 1)), "seeder", "idempotent");
        assert_eq!(
            st.list_files(&tok(2), "g"),
            Ok(vec![fl(&format!("f {} 2 2.0", 2 * PIECE_SIZE + 1))])
        );
    }

    #[test]
    fn upload_of_different_content_under_a_taken_name_is_a_mismatch() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        assert_eq!(
            refused(&mut st, upload(2, "g", "f", 2)),
            Refusal::ContentMismatch("g".into(), "f".into())
        );
        let other_size = Op::Upload {
            token: tok(2),
            group: "g".into(),
            file: "f".into(),
            size: 2 * PIECE_SIZE + 2,
            hashes: vec![[1; 20], [2; 20], [3; 20]],
        };
        assert_eq!(
            refused(&mut st, other_size).code(),
            ErrorCode::ContentMismatch
        );
    }

    #[test]
    fn upload_refusals() {
        let mut st = world();
        assert_eq!(
            refused(&mut st, upload(3, "g", "f", 1)),
            Refusal::NotMember("g".into())
        );
        assert_eq!(
            refused(&mut st, upload(1, "nope", "f", 1)),
            Refusal::NoSuchGroup("nope".into())
        );
        assert_eq!(
            refused(&mut st, upload(1, "g", "a/b", 1)).code(),
            ErrorCode::InvalidName
        );
        let wrong_count = Op::Upload {
            token: tok(1),
            group: "g".into(),
            file: "f".into(),
            size: 1,
            hashes: vec![],
        };
        assert_eq!(refused(&mut st, wrong_count).code(), ErrorCode::BadRequest);
    }

    #[test]
    fn empty_files_can_be_shared() {
        let mut st = world();
        let op = Op::Upload {
            token: tok(1),
            group: "g".into(),
            file: "empty".into(),
            size: 0,
            hashes: vec![],
        };
        assert_eq!(ok(&mut st, op), "new");
        let d = st.download(&tok(2), "g", "empty", EXP).unwrap();
        assert_eq!((d.size, d.hashes.len()), (0, 0));
        let seeder = PeerLine::parse(
            &format!("p alice 127.0.0.1:7001 all {}", "ab".repeat(32)),
            0,
        );
        assert_eq!(
            bare(Ok(d.peers)),
            Ok(vec![seeder.expect("a peer line of an empty file")])
        );
        let st2 = round_trip(&st);
        assert_eq!(st2.digest(), st.digest());
    }

    #[test]
    fn have_makes_a_partial_source_then_a_seeder() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, have(2, "g", "f", &[0, 2]));
        assert_eq!(
            bare(st.peers(&tok(1), "g", "f", EXP)),
            Ok(vec![pl("p bob 127.0.0.1:7002 ba0")])
        );
        assert_eq!(
            st.list_files(&tok(1), "g").unwrap()[0],
            fl("f 1048577 1 1.6")
        );
        ok(&mut st, have(2, "g", "f", &[1]));
        assert_eq!(
            bare(st.peers(&tok(1), "g", "f", EXP)),
            Ok(vec![pl("p bob 127.0.0.1:7002 all")])
        );
        assert_eq!(
            st.list_files(&tok(1), "g").unwrap()[0],
            fl("f 1048577 2 2.0")
        );
    }

    #[test]
    fn partial_sources_of_huge_files_are_not_offered_but_seeders_are() {
        let mut st = world();
        let n = MAX_PARTIAL_PIECES + 1;
        ok(
            &mut st,
            Op::Upload {
                token: tok(1),
                group: "g".into(),
                file: "huge".into(),
                size: n as u64 * crate::pieces::PIECE_SIZE,
                hashes: vec![[7; 20]; n],
            },
        );
        ok(&mut st, have(2, "g", "huge", &[0]));
        let peers = bare(st.peers(&tok(3), "g", "huge", EXP));
        // carol is not a member: refused; alice (the seeder) is offered to bob, bob to no one.
        assert!(peers.is_err());
        let to_bob = bare(st.peers(&tok(2), "g", "huge", EXP)).unwrap();
        assert_eq!(to_bob.len(), 1);
        let line = to_bob[0].encode();
        assert!(line.starts_with("p alice ") && line.contains(" all "));
        let d = st.download(&tok(1), "g", "huge", EXP).unwrap();
        assert!(
            d.peers.is_empty(),
            "bob's partial bitfield would not fit a line"
        );
    }

    #[test]
    fn have_refusals() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        assert_eq!(
            refused(&mut st, have(2, "g", "nope", &[0])),
            Refusal::NoSuchFile("g".into(), "nope".into())
        );
        assert_eq!(
            refused(&mut st, have(3, "g", "f", &[0])),
            Refusal::NotMember("g".into())
        );
        assert_eq!(
            refused(&mut st, have(2, "g", "f", &[0, 3])).code(),
            ErrorCode::BadRequest
        );
        assert_eq!(
            refused(&mut st, have(2, "g", "f", &[])).code(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn stop_share_by_the_last_seeder_removes_the_file() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, upload(2, "g", "f", 1));
        ok(&mut st, stop(1, "g", "f"));
        assert_eq!(
            st.list_files(&tok(1), "g").unwrap(),
            vec![fl("f 1048577 1 1.0")]
        );
        ok(&mut st, stop(2, "g", "f"));
        assert_eq!(st.list_files(&tok(1), "g"), Ok(vec![]));
    }

    #[test]
    fn stop_share_by_a_partial_source_keeps_the_file() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, have(2, "g", "f", &[1]));
        ok(&mut st, stop(2, "g", "f"));
        assert_eq!(bare(st.peers(&tok(1), "g", "f", EXP)), Ok(vec![]));
        assert_eq!(
            st.list_files(&tok(1), "g").unwrap(),
            vec![fl("f 1048577 1 1.0")]
        );
    }

    #[test]
    fn stop_share_says_when_it_took_the_last_complete_copy_online() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, upload(2, "g", "f", 1));
        // Another complete copy is online: a plain ok.
        assert_eq!(ok(&mut st, stop(1, "g", "f")), "");
        ok(&mut st, upload(1, "g", "f", 1));
        // Bob's copy is complete but offline; a partial one online does not count.
        ok(&mut st, Op::Logout { token: tok(2) });
        ok(&mut st, join(3, "g"));
        ok(&mut st, accept(1, "g", "carol"));
        ok(&mut st, have(3, "g", "f", &[0, 1]));
        assert_eq!(ok(&mut st, stop(1, "g", "f")), "last-online-copy");
        // A partial source stopping never takes a complete copy away.
        assert_eq!(ok(&mut st, stop(3, "g", "f")), "");
    }

    #[test]
    fn copies_online_count_every_piece_online_holders_have() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, join(3, "g"));
        ok(&mut st, accept(1, "g", "carol"));
        ok(&mut st, have(2, "g", "f", &[0]));
        ok(&mut st, have(3, "g", "f", &[1, 2]));
        // 3 + 1 + 2 pieces of 3: two copies.
        assert_eq!(
            st.list_files(&tok(1), "g").unwrap()[0],
            fl("f 1048577 1 2.0")
        );
        ok(&mut st, Op::Logout { token: tok(3) });
        // 4 of 3 pieces: 1.33 copies, shown rounded down.
        assert_eq!(
            st.list_files(&tok(1), "g").unwrap()[0],
            fl("f 1048577 1 1.3")
        );
        ok(&mut st, Op::Logout { token: tok(1) });
        assert_eq!(
            st.list_files(&tok(2), "g").unwrap()[0],
            fl("f 1048577 1 0.3")
        );
    }

    #[test]
    fn stop_share_refusals() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        assert_eq!(
            refused(&mut st, stop(2, "g", "f")),
            Refusal::NotSeeder("g".into(), "f".into())
        );
        assert_eq!(
            refused(&mut st, stop(2, "g", "nope")),
            Refusal::NoSuchFile("g".into(), "nope".into())
        );
        assert_eq!(
            refused(&mut st, stop(3, "g", "f")),
            Refusal::NotMember("g".into())
        );
    }

    #[test]
    fn files_persist_across_logout_but_offline_peers_are_not_offered() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, Op::Logout { token: tok(1) });
        assert_eq!(
            st.list_files(&tok(2), "g").unwrap(),
            vec![fl("f 1048577 1 0.0")]
        );
        assert_eq!(bare(st.peers(&tok(2), "g", "f", EXP)), Ok(vec![]));
        ok(&mut st, login(7, "alice", 2));
        assert_eq!(
            bare(st.peers(&tok(2), "g", "f", EXP)),
            Ok(vec![pl("p alice 127.0.0.1:7007 all")])
        );
        ok(&mut st, Op::Detach { tracker: 2 });
        ok(&mut st, login(2, "bob", 1));
        assert_eq!(
            bare(st.peers(&tok(2), "g", "f", EXP)),
            Ok(vec![]),
            "orphans are offline"
        );
    }

    #[test]
    fn each_peer_line_carries_a_ticket_for_the_requester_under_that_peers_key() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        let lines = st.peers(&tok(2), "g", "f", EXP).unwrap();
        let t = lines[0].ticket.expect("a ticket");
        assert_eq!(t.expiry, EXP);
        let alice = ticket::ticket_key(&secret(1)).unwrap();
        // Bob's session key (the fixtures' sessions all hold this one).
        let bob_channel = [0xab; 32];
        let claim = ticket::Claim {
            downloader: "bob",
            downloader_key: Some(&bob_channel),
            group: "g",
            file: "f",
            expiry: EXP,
        };
        assert_eq!(t.check(&alice, &claim, EXP - 30), Ok(()));
        let other_channel = ticket::Claim {
            downloader_key: Some(&[0xcd; 32]),
            ..claim
        };
        assert!(
            t.check(&alice, &other_channel, EXP - 30).is_err(),
            "bound to bob's channel key"
        );
        let bobs_key = ticket::ticket_key(&secret(2)).unwrap();
        assert!(
            t.check(&bobs_key, &claim, EXP - 30).is_err(),
            "bound to alice"
        );
        let as_carol = ticket::Claim {
            downloader: "carol",
            ..claim
        };
        assert!(
            t.check(&alice, &as_carol, EXP - 30).is_err(),
            "bound to bob"
        );
        let d = st.download(&tok(2), "g", "f", EXP).unwrap();
        assert_eq!(d.peers, lines, "download_file issues the same tickets");
    }

    #[test]
    fn a_member_who_left_gets_no_more_tickets() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        assert!(st.peers(&tok(2), "g", "f", EXP).is_ok());
        ok(&mut st, leave(2, "g"));
        assert_eq!(
            st.peers(&tok(2), "g", "f", EXP),
            Err(Refusal::NotMember("g".into()))
        );
        assert!(st.download(&tok(2), "g", "f", EXP).is_err());
    }

    #[test]
    fn download_gives_size_hashes_and_peers_but_not_the_requester() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, upload(2, "g", "f", 1));
        let d = st.download(&tok(2), "g", "f", EXP).unwrap();
        assert_eq!(d.size, 2 * PIECE_SIZE + 1);
        assert_eq!(&d.hashes[..], &[[1; 20], [2; 20], [3; 20]]);
        assert_eq!(
            bare(Ok(d.peers)),
            Ok(vec![pl("p alice 127.0.0.1:7001 all")])
        );
        assert_eq!(
            st.download(&tok(3), "g", "f", EXP).map(|d| d.size),
            Err(Refusal::NotMember("g".into()))
        );
        assert_eq!(
            st.download(&tok(1), "g", "x", EXP).map(|d| d.size),
            Err(Refusal::NoSuchFile("g".into(), "x".into()))
        );
        assert_eq!(
            st.list_files(&tok(3), "g"),
            Err(Refusal::NotMember("g".into()))
        );
    }

    #[test]
    fn term_changes_nothing() {
        let mut st = world();
        let before = st.digest();
        assert_eq!(
            ok(
                &mut st,
                Op::Term {
                    term: 4,
                    solo: true
                }
            ),
            ""
        );
        assert_eq!(st.digest(), before);
    }

    #[test]
    fn dedup_remembers_the_last_write_of_each_instance() {
        let mut st = world();
        let o1 = Origin {
            instance: 7,
            tag: 1,
        };
        let o2 = Origin {
            instance: 7,
            tag: 2,
        };
        st.apply(Some(o1), &create_group(1, "h")).unwrap();
        assert_eq!(st.dedup(&o1), Some(""));
        st.apply(Some(o2), &upload(1, "h", "f", 1)).unwrap();
        assert_eq!(st.dedup(&o1), None, "only the last write is kept");
        assert_eq!(st.dedup(&o2), Some("new"));
        // Refused writes and exempt operations are not recorded.
        let o3 = Origin {
            instance: 7,
            tag: 3,
        };
        assert!(st.apply(Some(o3), &create_group(1, "h")).is_err());
        st.apply(Some(o3), &have(1, "h", "f", &[0])).unwrap();
        st.apply(
            Some(o3),
            &Op::Term {
                term: 1,
                solo: true,
            },
        )
        .unwrap();
        st.apply(Some(o3), &Op::Detach { tracker: 2 }).unwrap();
        assert_eq!(st.dedup(&o3), None);
        assert_eq!(st.dedup(&o2), Some("new"));
        let back = round_trip(&st);
        assert_eq!(back.dedup(&o2), Some("new"));
    }
}
