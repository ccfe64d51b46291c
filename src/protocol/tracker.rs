//! The client ↔ tracker protocol (PROTOCOL.md §1), every line of it in one place: requests
//! (`<tag> <verb> <args...>`) parsed with their arguments validated at the edge and encoded
//! from the same variants; replies (`ok` / `list` / `err`) encoded by the tracker and
//! reassembled by the client's `ReplyReader`; the error codes; and the typed data lines of
//! `list_groups`, `list_files`, `peers` and `download_file`. Pure: bytes in, messages out;
//! never panics on any input.
//!
//! Adding a verb: one `Verb` variant, its entry in `USAGE`, its arm in `parse` and in
//! `Verb::encode` (and `Verb::is_write` if it changes state) — the compiler points at the rest.

use crate::names::{self, NameKind};
use crate::pieces::{self, Hash, PieceSet, MAX_PIECES};
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

/// The protocol version both sides speak (`hello <instance> <version>`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest password, in bytes, for the client's shell and the tracker alike. It travels as one
/// word of a request line and is hashed by the tracker; 256 bytes is far beyond any memorable
/// password and keeps lines small.
pub const MAX_PASSWORD: usize = 256;

/// Largest `list` the reader accepts; a bigger count is a protocol error rather than a reason
/// to reserve memory. (A group of a million files is far past what the tracker holds.)
pub const MAX_LIST_LINES: usize = 1 << 20;

/// The error codes of `<tag> err <code> <message>` (PROTOCOL.md, "Error codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    UnknownCommand,
    LineTooLong,
    Unavailable,
    InvalidName,
    NotLoggedIn,
    AlreadyLoggedIn,
    BadCredentials,
    NoSession,
    UserExists,
    GroupExists,
    NoSuchGroup,
    NoSuchUser,
    NoSuchFile,
    NoSuchRequest,
    NotMember,
    NotOwner,
    AlreadyMember,
    AlreadyRequested,
    NotSeeder,
    ContentMismatch,
    TooManyConnections,
    /// A code this side does not know (a newer tracker); the reader keeps its text in the
    /// message so a person still sees it. Never sent.
    Unknown,
}

/// Every code with its wire word; `Unknown` has none.
const CODES: &[(ErrorCode, &str)] = &[
    (ErrorCode::BadRequest, "bad_request"),
    (ErrorCode::UnknownCommand, "unknown_command"),
    (ErrorCode::LineTooLong, "line_too_long"),
    (ErrorCode::Unavailable, "unavailable"),
    (ErrorCode::InvalidName, "invalid_name"),
    (ErrorCode::NotLoggedIn, "not_logged_in"),
    (ErrorCode::AlreadyLoggedIn, "already_logged_in"),
    (ErrorCode::BadCredentials, "bad_credentials"),
    (ErrorCode::NoSession, "no_session"),
    (ErrorCode::UserExists, "user_exists"),
    (ErrorCode::GroupExists, "group_exists"),
    (ErrorCode::NoSuchGroup, "no_such_group"),
    (ErrorCode::NoSuchUser, "no_such_user"),
    (ErrorCode::NoSuchFile, "no_such_file"),
    (ErrorCode::NoSuchRequest, "no_such_request"),
    (ErrorCode::NotMember, "not_member"),
    (ErrorCode::NotOwner, "not_owner"),
    (ErrorCode::AlreadyMember, "already_member"),
    (ErrorCode::AlreadyRequested, "already_requested"),
    (ErrorCode::NotSeeder, "not_seeder"),
    (ErrorCode::ContentMismatch, "content_mismatch"),
    (ErrorCode::TooManyConnections, "too_many_connections"),
];

impl ErrorCode {
    /// The wire word (`unknown` for `Unknown`, which is never sent).
    pub fn as_str(self) -> &'static str {
        CODES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("unknown", |(_, w)| w)
    }

    /// `None` for a word that is not a known code.
    pub fn parse(word: &str) -> Option<ErrorCode> {
        CODES.iter().find(|(_, w)| *w == word).map(|(c, _)| *c)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal as it travels: a code and a sentence for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

/// A verb with its arguments, validated. The `tag` is in `Request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Hello {
        instance: u64,
    },
    CreateUser {
        user: String,
        password: String,
    },
    Login {
        user: String,
        password: String,
        /// `IP:PORT` where the client serves pieces, in `SocketAddr`'s canonical form.
        addr: String,
    },
    Attach {
        /// 32 lowercase hex digits.
        token: String,
        addr: String,
    },
    Logout,
    CreateGroup {
        group: String,
    },
    JoinGroup {
        group: String,
    },
    LeaveGroup {
        group: String,
    },
    ListRequests {
        group: String,
    },
    AcceptRequest {
        group: String,
        user: String,
    },
    ListGroups,
    ListFiles {
        group: String,
    },
    /// Followed by `hash_line_count(npieces)` hash lines (`pieces::hash_lines`).
    UploadFile {
        group: String,
        file: String,
        size: u64,
        npieces: u64,
    },
    DownloadFile {
        group: String,
        file: String,
    },
    Peers {
        group: String,
        file: String,
    },
    Have {
        group: String,
        file: String,
        /// Ascending piece indices.
        pieces: Vec<usize>,
    },
    StopShare {
        group: String,
        file: String,
    },
    Ping,
    Digest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub tag: u64,
    pub verb: Verb,
}

/// A request that cannot be carried out as written: `<tag> err <code> <message>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub tag: u64,
    pub code: ErrorCode,
    pub message: String,
    /// For a malformed `upload_file` whose piece count could be read: the hash lines that
    /// follow it and must be skipped.
    pub skip_lines: usize,
}

impl ParseError {
    fn new(tag: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        ParseError {
            tag,
            code,
            message: message.into(),
            skip_lines: 0,
        }
    }

    /// The refusal without its tag and skip count.
    pub fn error(&self) -> ErrorReply {
        ErrorReply {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Each verb's usage; the number of `<...>` words is its argument count.
const USAGE: &[(&str, &str)] = &[
    ("hello", "hello <instance> <version>"),
    ("create_user", "create_user <user_id> <password>"),
    ("login", "login <user_id> <password> <ip:port>"),
    ("attach", "attach <token> <ip:port>"),
    ("logout", "logout"),
    ("create_group", "create_group <group_id>"),
    ("join_group", "join_group <group_id>"),
    ("leave_group", "leave_group <group_id>"),
    ("list_requests", "list_requests <group_id>"),
    ("accept_request", "accept_request <group_id> <user_id>"),
    ("list_groups", "list_groups"),
    ("list_files", "list_files <group_id>"),
    (
        "upload_file",
        "upload_file <group_id> <file_name> <size> <npieces> (then the hash lines)",
    ),
    ("download_file", "download_file <group_id> <file_name>"),
    ("peers", "peers <group_id> <file_name>"),
    ("have", "have <group_id> <file_name> <ranges>"),
    ("stop_share", "stop_share <group_id> <file_name>"),
    ("ping", "ping"),
    ("digest", "digest"),
];

fn usage(verb: &str) -> Option<&'static str> {
    USAGE.iter().find(|(v, _)| *v == verb).map(|(_, u)| *u)
}

impl Verb {
    /// The verb's word on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Hello { .. } => "hello",
            Verb::CreateUser { .. } => "create_user",
            Verb::Login { .. } => "login",
            Verb::Attach { .. } => "attach",
            Verb::Logout => "logout",
            Verb::CreateGroup { .. } => "create_group",
            Verb::JoinGroup { .. } => "join_group",
            Verb::LeaveGroup { .. } => "leave_group",
            Verb::ListRequests { .. } => "list_requests",
            Verb::AcceptRequest { .. } => "accept_request",
            Verb::ListGroups => "list_groups",
            Verb::ListFiles { .. } => "list_files",
            Verb::UploadFile { .. } => "upload_file",
            Verb::DownloadFile { .. } => "download_file",
            Verb::Peers { .. } => "peers",
            Verb::Have { .. } => "have",
            Verb::StopShare { .. } => "stop_share",
            Verb::Ping => "ping",
            Verb::Digest => "digest",
        }
    }

    /// `verb args...`, without the tag (the client's tracker link adds tags itself).
    pub fn encode(&self) -> String {
        let name = self.name();
        match self {
            Verb::Hello { instance } => format!("{name} {instance:016x} {PROTOCOL_VERSION}"),
            Verb::CreateUser { user, password } => format!("{name} {user} {password}"),
            Verb::Login {
                user,
                password,
                addr,
            } => format!("{name} {user} {password} {addr}"),
            Verb::Attach { token, addr } => format!("{name} {token} {addr}"),
            Verb::CreateGroup { group }
            | Verb::JoinGroup { group }
            | Verb::LeaveGroup { group }
            | Verb::ListRequests { group }
            | Verb::ListFiles { group } => format!("{name} {group}"),
            Verb::AcceptRequest { group, user } => format!("{name} {group} {user}"),
            Verb::UploadFile {
                group,
                file,
                size,
                npieces,
            } => format!("{name} {group} {file} {size} {npieces}"),
            Verb::DownloadFile { group, file }
            | Verb::Peers { group, file }
            | Verb::StopShare { group, file } => format!("{name} {group} {file}"),
            Verb::Have {
                group,
                file,
                pieces,
            } => format!(
                "{name} {group} {file} {}",
                pieces::format_ranges(pieces.iter().copied())
            ),
            Verb::Logout | Verb::ListGroups | Verb::Ping | Verb::Digest => name.to_string(),
        }
    }

    /// Whether the verb changes the state and is deduplicated by `(instance, tag)`: a client
    /// keeps at most one of these on the wire. `have` changes state too but is idempotent and
    /// not deduplicated, so it is not a write in this sense.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Verb::CreateUser { .. }
                | Verb::Login { .. }
                | Verb::Attach { .. }
                | Verb::Logout
                | Verb::CreateGroup { .. }
                | Verb::JoinGroup { .. }
                | Verb::LeaveGroup { .. }
                | Verb::AcceptRequest { .. }
                | Verb::UploadFile { .. }
                | Verb::StopShare { .. }
        )
    }

    /// Whether the verb needs a session before anything else (`upload_file` needs one too,
    /// but is checked after its hash lines).
    pub fn needs_session(&self) -> bool {
        !matches!(
            self,
            Verb::Hello { .. }
                | Verb::CreateUser { .. }
                | Verb::Login { .. }
                | Verb::Attach { .. }
                | Verb::UploadFile { .. }
                | Verb::Ping
                | Verb::Digest
        )
    }
}

impl Request {
    pub fn new(tag: u64, verb: Verb) -> Self {
        Request { tag, verb }
    }

    /// The request line `<tag> <verb> <args...>`, without the newline. An `upload_file`'s hash
    /// lines follow it separately (`pieces::hash_lines`).
    pub fn encode(&self) -> String {
        format!("{} {}", self.tag, self.verb.encode())
    }

    /// Parses one request line.
    pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
        parse(line)
    }
}

/// The verb word of a request line, for decisions taken before the line is parsed (whether a
/// request may overtake forwarded writes); `""` if there is none.
pub fn verb_word(line: &[u8]) -> &[u8] {
    line.split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty())
        .nth(1)
        .unwrap_or(b"")
}

/// Parses one request line.
pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
    use ErrorCode::{BadRequest, InvalidName};
    let line = std::str::from_utf8(line)
        .map_err(|_| ParseError::new(0, BadRequest, "the request is not valid UTF-8"))?;
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let tag: u64 = match words.next() {
        Some(t) => t.parse().map_err(|_| {
            ParseError::new(
                0,
                BadRequest,
                format!(
                    "a request starts with a numeric tag, not '{}'",
                    t.chars().take(40).collect::<String>().escape_debug()
                ),
            )
        })?,
        None => return Err(ParseError::new(0, BadRequest, "empty request")),
    };
    let verb = words
        .next()
        .ok_or_else(|| ParseError::new(tag, BadRequest, "the request has no command"))?;
    let args: Vec<&str> = words.collect();
    let Some(usage) = usage(verb) else {
        return Err(ParseError::new(
            tag,
            ErrorCode::UnknownCommand,
            format!(
                "unknown command '{}'",
                verb.chars().take(64).collect::<String>().escape_debug()
            ),
        ));
    };
    let expected = usage
        .split(' ')
        .skip(1)
        .take_while(|w| w.starts_with('<'))
        .count();
    if args.len() != expected {
        let mut e = ParseError::new(
            tag,
            BadRequest,
            format!("wrong number of arguments; usage: {usage}"),
        );
        if verb == "upload_file" && args.len() == 4 {
            e.skip_lines = upload_skip(args[3]);
        }
        return Err(e);
    }
    let name = |kind: NameKind, s: &str| -> Result<String, ParseError> {
        names::check(kind, s)
            .map(|_| s.to_string())
            .map_err(|m| ParseError::new(tag, InvalidName, m))
    };
    let addr = |s: &str| -> Result<String, ParseError> {
        s.parse::<SocketAddr>().map(|a| a.to_string()).map_err(|_| {
            ParseError::new(
                tag,
                BadRequest,
                format!("'{}' is not an IP:PORT address", s.escape_debug()),
            )
        })
    };
    let group = |i: usize| name(NameKind::Group, args[i]);
    let file = |i: usize| name(NameKind::File, args[i]);
    let verb = match verb {
        "hello" => {
            let instance = u64::from_str_radix(args[0], 16)
                .ok()
                .filter(|_| args[0].len() == 16)
                .ok_or_else(|| {
                    ParseError::new(tag, BadRequest, "the instance id must be 16 hex digits")
                })?;
            if args[1] != PROTOCOL_VERSION.to_string() {
                return Err(ParseError::new(
                    tag,
                    BadRequest,
                    format!(
                        "protocol version {} is not supported; this tracker speaks {PROTOCOL_VERSION}",
                        args[1].escape_debug()
                    ),
                ));
            }
            Verb::Hello { instance }
        }
        "create_user" => Verb::CreateUser {
            user: name(NameKind::User, args[0])?,
            password: password(tag, args[1])?,
        },
        "login" => Verb::Login {
            user: name(NameKind::User, args[0])?,
            password: password(tag, args[1])?,
            addr: addr(args[2])?,
        },
        "attach" => {
            let token = args[0];
            if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError::new(
                    tag,
                    ErrorCode::NoSession,
                    "unknown session token",
                ));
            }
            Verb::Attach {
                token: token.to_ascii_lowercase(),
                addr: addr(args[1])?,
            }
        }
        "logout" => Verb::Logout,
        "create_group" => Verb::CreateGroup { group: group(0)? },
        "join_group" => Verb::JoinGroup { group: group(0)? },
        "leave_group" => Verb::LeaveGroup { group: group(0)? },
        "list_requests" => Verb::ListRequests { group: group(0)? },
        "accept_request" => Verb::AcceptRequest {
            group: group(0)?,
            user: name(NameKind::User, args[1])?,
        },
        "list_groups" => Verb::ListGroups,
        "list_files" => Verb::ListFiles { group: group(0)? },
        "upload_file" => {
            let skip = upload_skip(args[3]);
            let fail = |code, msg: String| {
                let mut e = ParseError::new(tag, code, msg);
                e.skip_lines = skip;
                e
            };
            let g = group(0).map_err(|e| fail(e.code, e.message))?;
            let f = file(1).map_err(|e| fail(e.code, e.message))?;
            let size: u64 = args[2]
                .parse()
                .map_err(|_| fail(BadRequest, "the size must be a number".into()))?;
            let npieces: u64 = args[3]
                .parse()
                .map_err(|_| fail(BadRequest, "the piece count must be a number".into()))?;
            if npieces > MAX_PIECES {
                return Err(fail(
                    BadRequest,
                    format!(
                        "files of more than {MAX_PIECES} pieces ({} GiB) are not supported",
                        (MAX_PIECES * pieces::PIECE_SIZE) >> 30
                    ),
                ));
            }
            if npieces != pieces::piece_count(size) {
                return Err(fail(
                    BadRequest,
                    format!(
                        "a file of {size} bytes has {} pieces, not {npieces}",
                        pieces::piece_count(size)
                    ),
                ));
            }
            Verb::UploadFile {
                group: g,
                file: f,
                size,
                npieces,
            }
        }
        "download_file" => Verb::DownloadFile {
            group: group(0)?,
            file: file(1)?,
        },
        "peers" => Verb::Peers {
            group: group(0)?,
            file: file(1)?,
        },
        "have" => Verb::Have {
            group: group(0)?,
            file: file(1)?,
            pieces: pieces::parse_ranges(args[2], MAX_PIECES as usize)
                .ok_or_else(|| {
                    ParseError::new(
                        tag,
                        BadRequest,
                        "pieces must be ascending ranges such as 0-15,17",
                    )
                })?
                .iter()
                .collect(),
        },
        "stop_share" => Verb::StopShare {
            group: group(0)?,
            file: file(1)?,
        },
        "ping" => Verb::Ping,
        "digest" => Verb::Digest,
        _ => unreachable!("every verb in USAGE is handled"),
    };
    Ok(Request { tag, verb })
}

/// The hash lines that follow an `upload_file` with this piece-count word, if it is a usable
/// number; a client that sent a garbled count cannot be followed and gets its lines refused.
fn upload_skip(npieces: &str) -> usize {
    npieces
        .parse::<u64>()
        .ok()
        .filter(|&n| n <= MAX_PIECES)
        .map_or(0, |n| pieces::hash_line_count(n as usize))
}

/// Passwords are single words (no whitespace can reach here) of bounded length.
fn password(tag: u64, p: &str) -> Result<String, ParseError> {
    if p.len() > MAX_PASSWORD {
        return Err(ParseError::new(
            tag,
            ErrorCode::BadRequest,
            format!("passwords are at most {MAX_PASSWORD} bytes"),
        ));
    }
    Ok(p.to_string())
}

/// A reply from the tracker, without its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `ok [words...]`
    Ok(Vec<String>),
    /// `list <n> [words...]` and its n data lines.
    List {
        head: Vec<String>,
        lines: Vec<String>,
    },
    /// `err <code> <message...>`
    Err { code: ErrorCode, message: String },
}

impl Reply {
    pub fn list(lines: Vec<String>) -> Reply {
        Reply::List {
            head: Vec::new(),
            lines,
        }
    }

    /// The reply's text: its line and, for a list, its data lines, joined by `\n` without a
    /// final newline.
    pub fn encode(&self, tag: u64) -> String {
        match self {
            Reply::Ok(words) if words.is_empty() => format!("{tag} ok"),
            Reply::Ok(words) => format!("{tag} ok {}", words.join(" ")),
            Reply::List { head, lines } => {
                let mut text = format!("{tag} list {}", lines.len());
                for w in head {
                    text.push(' ');
                    text.push_str(w);
                }
                for l in lines {
                    text.push('\n');
                    text.push_str(l);
                }
                text
            }
            Reply::Err { code, message } => format!("{tag} err {code} {message}"),
        }
    }
}

/// What a successful write answers after `ok`. The trackers keep its words for
/// deduplication (a retried write gets them again), so they are stored as text: `words`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteReply {
    /// A plain `ok`.
    Done,
    /// `login`: the session token.
    Token(String),
    /// `attach`: the session's user.
    User(String),
    /// `upload_file` of a name new in the group: `ok new`.
    NewFile,
    /// `upload_file` of content already shared under that name: `ok seeder`.
    Seeder,
}

impl WriteReply {
    /// The words after `ok`, `""` for a plain one.
    pub fn words(&self) -> &str {
        match self {
            WriteReply::Done => "",
            WriteReply::Token(w) | WriteReply::User(w) => w,
            WriteReply::NewFile => "new",
            WriteReply::Seeder => "seeder",
        }
    }
}

/// `<tag> ok [words]` for reply words kept as one string (a write's stored reply), without
/// splitting them first.
pub fn encode_ok(tag: u64, words: &str) -> String {
    if words.is_empty() {
        format!("{tag} ok")
    } else {
        format!("{tag} ok {words}")
    }
}

/// `<tag> err <code> <message>`.
pub fn encode_err(tag: u64, code: ErrorCode, message: &str) -> String {
    format!("{tag} err {code} {message}")
}

/// A `list` reply still collecting its data lines.
#[derive(Debug)]
struct PartialList {
    tag: u64,
    head: Vec<String>,
    expected: usize,
    lines: Vec<String>,
}

/// Assembles replies from lines: most replies are one line, `list` collects its data lines.
#[derive(Debug, Default)]
pub struct ReplyReader {
    partial: Option<PartialList>,
}

impl ReplyReader {
    /// Feeds one line; returns a complete reply when there is one, an error for a line that
    /// is not a reply.
    pub fn feed(&mut self, line: &str) -> Result<Option<(u64, Reply)>, String> {
        if let Some(mut p) = self.partial.take() {
            p.lines.push(line.to_string());
            if p.lines.len() == p.expected {
                let reply = Reply::List {
                    head: p.head,
                    lines: p.lines,
                };
                return Ok(Some((p.tag, reply)));
            }
            self.partial = Some(p);
            return Ok(None);
        }
        let mut words = line.split_ascii_whitespace();
        let tag: u64 = words
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("reply without a tag: {line:?}"))?;
        match words.next() {
            Some("ok") => Ok(Some((tag, Reply::Ok(words.map(str::to_string).collect())))),
            Some("err") => {
                let word = words.next().unwrap_or("unknown");
                let rest = words.collect::<Vec<_>>().join(" ");
                let (code, message) = match ErrorCode::parse(word) {
                    Some(c) => (c, rest),
                    None if rest.is_empty() => (ErrorCode::Unknown, word.to_string()),
                    None => (ErrorCode::Unknown, format!("{word} {rest}")),
                };
                Ok(Some((tag, Reply::Err { code, message })))
            }
            Some("list") => {
                let n: usize = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n <= MAX_LIST_LINES)
                    .ok_or_else(|| format!("bad list count: {line:?}"))?;
                let head = words.map(str::to_string).collect();
                if n == 0 {
                    return Ok(Some((
                        tag,
                        Reply::List {
                            head,
                            lines: Vec::new(),
                        },
                    )));
                }
                self.partial = Some(PartialList {
                    tag,
                    head,
                    expected: n,
                    lines: Vec::with_capacity(n.min(1024)),
                });
                Ok(None)
            }
            _ => Err(format!("unknown reply: {line:?}")),
        }
    }
}

/// One line of `list_groups`: `<group> <members> <owner>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLine {
    pub group: String,
    pub members: usize,
    pub owner: String,
}

impl GroupLine {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.group, self.members, self.owner)
    }

    pub fn parse(line: &str) -> Option<GroupLine> {
        match line.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
            [group, members, owner] => Some(GroupLine {
                group: group.to_string(),
                members: members.parse().ok()?,
                owner: owner.to_string(),
            }),
            _ => None,
        }
    }
}

/// One line of `list_files`: `<file> <size> <seeders>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLine {
    pub file: String,
    pub size: u64,
    pub seeders: usize,
}

impl FileLine {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.file, self.size, self.seeders)
    }

    pub fn parse(line: &str) -> Option<FileLine> {
        match line.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
            [file, size, seeders] => Some(FileLine {
                file: file.to_string(),
                size: size.parse().ok()?,
                seeders: seeders.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// A peer line of `peers` and `download_file`: `p <user> <addr> <have>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLine {
    pub user: String,
    pub addr: SocketAddr,
    /// The tracker's view of the peer's pieces: a hint, the peer's own `have` is the truth.
    pub have: PieceSet,
}

impl PeerLine {
    pub fn encode(&self) -> String {
        format!("p {} {} {}", self.user, self.addr, self.have.to_wire())
    }

    /// `None` if malformed or if the piece set does not fit a file of `npieces` pieces.
    pub fn parse(line: &str, npieces: usize) -> Option<PeerLine> {
        match line.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
            ["p", user, addr, have] => Some(PeerLine {
                user: user.to_string(),
                addr: addr.parse().ok()?,
                have: PieceSet::from_wire(have, npieces)?,
            }),
            _ => None,
        }
    }
}

/// The reply to `download_file`: `list <n> <size> <npieces>`, the hash lines `h <hex>`, then
/// the peer lines. Borrows the hashes when the tracker encodes it (up to 10 MiB of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadReply<'a> {
    pub size: u64,
    pub hashes: Cow<'a, [Hash]>,
    pub peers: Vec<PeerLine>,
}

impl DownloadReply<'_> {
    pub fn to_reply(&self) -> Reply {
        let mut lines: Vec<String> = pieces::hash_lines(&self.hashes)
            .map(|h| format!("h {h}"))
            .collect();
        lines.extend(self.peers.iter().map(PeerLine::encode));
        Reply::List {
            head: vec![self.size.to_string(), self.hashes.len().to_string()],
            lines,
        }
    }

    /// Parses the head words and data lines of the `list` reply. A malformed peer line is
    /// skipped (the download can go on with the others); anything else malformed is an error.
    pub fn parse(head: &[String], lines: &[String]) -> Result<DownloadReply<'static>, String> {
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
                if let Some(p) = PeerLine::parse(l, npieces) {
                    peers.push(p);
                }
            } else {
                return Err(format!("unexpected line {l:?}"));
            }
        }
        if hashes.len() != npieces {
            return Err(format!("{} hashes for {npieces} pieces", hashes.len()));
        }
        Ok(DownloadReply {
            size,
            hashes: Cow::Owned(hashes),
            peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> Verb {
        parse(line.as_bytes()).map(|r| r.verb).unwrap()
    }

    fn err(line: &str) -> ParseError {
        parse(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_every_verb() {
        assert_eq!(
            ok("1 hello 00000000000000ff 1"),
            Verb::Hello { instance: 255 }
        );
        assert_eq!(
            ok("2 login al pw 127.0.0.1:5"),
            Verb::Login {
                user: "al".into(),
                password: "pw".into(),
                addr: "127.0.0.1:5".into()
            }
        );
        assert_eq!(ok("3\tlist_groups"), Verb::ListGroups);
        assert_eq!(
            ok("4 upload_file g f 524289 2"),
            Verb::UploadFile {
                group: "g".into(),
                file: "f".into(),
                size: 524289,
                npieces: 2
            }
        );
        assert_eq!(
            ok("5 have g f 0-2,4"),
            Verb::Have {
                group: "g".into(),
                file: "f".into(),
                pieces: vec![0, 1, 2, 4]
            }
        );
        assert_eq!(ok("6 ping"), Verb::Ping);
    }

    #[test]
    fn refusals_carry_the_tag_and_a_reason() {
        let e = err("7 frobnicate x");
        assert_eq!((e.tag, e.code), (7, ErrorCode::UnknownCommand));
        assert!(e.message.contains("frobnicate"));
        let e = err("8 join_group");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("usage: join_group <group_id>"));
        assert_eq!(err("9 create_group a/b").code, ErrorCode::InvalidName);
        assert_eq!(err("nope").tag, 0);
        assert_eq!(err("").code, ErrorCode::BadRequest);
        assert_eq!(parse(b"1 \xff").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(err("1 have g f 3-1").code, ErrorCode::BadRequest);
        assert_eq!(err("1 login a b notanaddr").code, ErrorCode::BadRequest);
        assert_eq!(err("1 attach xyz 127.0.0.1:1").code, ErrorCode::NoSession);
        let long = format!("1 create_user a {}", "p".repeat(MAX_PASSWORD + 1));
        assert_eq!(err(&long).code, ErrorCode::BadRequest);
        let max = format!("1 create_user a {}", "p".repeat(MAX_PASSWORD));
        assert!(parse(max.as_bytes()).is_ok());
    }

    #[test]
    fn a_bad_upload_says_how_many_hash_lines_to_skip() {
        let e = err("1 upload_file g f 10 3000");
        assert_eq!((e.code, e.skip_lines), (ErrorCode::BadRequest, 3));
        let e = err("1 upload_file g/x f 10 1");
        assert_eq!((e.code, e.skip_lines), (ErrorCode::InvalidName, 1));
        assert_eq!(err("1 upload_file g f 10 x").skip_lines, 0);
    }

    #[test]
    fn every_usage_names_a_verb_that_encodes_to_it() {
        for (word, usage) in USAGE {
            assert!(usage.starts_with(word));
        }
        let v = Verb::Have {
            group: "g".into(),
            file: "f".into(),
            pieces: vec![0, 1, 2, 5],
        };
        assert_eq!(Request::new(9, v).encode(), "9 have g f 0-2,5");
        assert_eq!(
            Request::new(1, Verb::Hello { instance: 255 }).encode(),
            "1 hello 00000000000000ff 1"
        );
    }

    #[test]
    fn error_codes_round_trip_and_unknown_ones_keep_their_text() {
        for (code, word) in CODES {
            assert_eq!(ErrorCode::parse(word), Some(*code));
            assert_eq!(code.as_str(), *word);
        }
        let mut r = ReplyReader::default();
        assert_eq!(
            r.feed("4 err frobbed it broke").unwrap(),
            Some((
                4,
                Reply::Err {
                    code: ErrorCode::Unknown,
                    message: "frobbed it broke".into()
                }
            ))
        );
    }

    fn feed_all(r: &mut ReplyReader, lines: &[&str]) -> Vec<(u64, Reply)> {
        lines.iter().filter_map(|l| r.feed(l).unwrap()).collect()
    }

    #[test]
    fn reads_ok_err_and_list_replies() {
        let mut r = ReplyReader::default();
        let got = feed_all(
            &mut r,
            &[
                "1 ok",
                "2 ok tok123",
                "3 err no_such_group there is no group g",
                "4 list 2 9 1",
                "a 1 x",
                "b 2 y",
                "5 list 0",
            ],
        );
        assert_eq!(
            got,
            vec![
                (1, Reply::Ok(vec![])),
                (2, Reply::Ok(vec!["tok123".into()])),
                (
                    3,
                    Reply::Err {
                        code: ErrorCode::NoSuchGroup,
                        message: "there is no group g".into()
                    }
                ),
                (
                    4,
                    Reply::List {
                        head: vec!["9".into(), "1".into()],
                        lines: vec!["a 1 x".into(), "b 2 y".into()]
                    }
                ),
                (5, Reply::list(vec![])),
            ]
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let mut r = ReplyReader::default();
        assert!(r.feed("ok").is_err());
        assert!(r.feed("1 what").is_err());
        assert!(r.feed("1 list x").is_err());
        assert!(r.feed("1 list 99999999999").is_err());
        assert!(r.feed(&format!("1 list {}", MAX_LIST_LINES + 1)).is_err());
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
        let d = DownloadReply::parse(&head, &lines).unwrap();
        assert_eq!(d.size, pieces::PIECE_SIZE + 1);
        assert_eq!(&d.hashes[..], &hashes[..]);
        assert_eq!(d.peers.len(), 2);
        assert!(d.peers[0].have.is_full());
        assert_eq!(d.peers[1].have.count(), 1);
        assert!(DownloadReply::parse(&["5".into(), "2".into()], &[]).is_err());
        assert!(DownloadReply::parse(&head, &lines[1..]).is_err());
        assert!(DownloadReply::parse(&head, &["x".into()]).is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}".prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    fn addr() -> impl Strategy<Value = String> {
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((ip, port)).to_string())
    }

    fn verb() -> impl Strategy<Value = Verb> {
        let pw = "[!-~]{0,40}".prop_filter("non-empty", |s| !s.is_empty());
        prop_oneof![
            any::<u64>().prop_map(|instance| Verb::Hello { instance }),
            (name(), pw.clone()).prop_map(|(user, password)| Verb::CreateUser { user, password }),
            (name(), pw, addr()).prop_map(|(user, password, addr)| Verb::Login {
                user,
                password,
                addr
            }),
            ("[0-9a-f]{32}", addr()).prop_map(|(token, addr)| Verb::Attach { token, addr }),
            Just(Verb::Logout),
            name().prop_map(|group| Verb::CreateGroup { group }),
            name().prop_map(|group| Verb::JoinGroup { group }),
            name().prop_map(|group| Verb::LeaveGroup { group }),
            name().prop_map(|group| Verb::ListRequests { group }),
            (name(), name()).prop_map(|(group, user)| Verb::AcceptRequest { group, user }),
            Just(Verb::ListGroups),
            name().prop_map(|group| Verb::ListFiles { group }),
            (name(), name(), 0u64..=MAX_PIECES * pieces::PIECE_SIZE).prop_map(
                |(group, file, size)| Verb::UploadFile {
                    group,
                    file,
                    size,
                    npieces: pieces::piece_count(size)
                }
            ),
            (name(), name()).prop_map(|(group, file)| Verb::DownloadFile { group, file }),
            (name(), name()).prop_map(|(group, file)| Verb::Peers { group, file }),
            (
                name(),
                name(),
                proptest::collection::btree_set(0usize..5000, 1..40)
            )
                .prop_map(|(group, file, set)| Verb::Have {
                    group,
                    file,
                    pieces: set.into_iter().collect()
                }),
            (name(), name()).prop_map(|(group, file)| Verb::StopShare { group, file }),
            Just(Verb::Ping),
            Just(Verb::Digest),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let word = "[!-~]{1,12}";
        prop_oneof![
            proptest::collection::vec(word, 0..4).prop_map(Reply::Ok),
            (
                proptest::collection::vec(word, 0..3),
                proptest::collection::vec("[!-~][ !-~]{0,30}", 0..5)
            )
                .prop_map(|(head, lines)| Reply::List { head, lines }),
            (0..CODES.len(), "[!-~]{1,10}( [!-~]{1,10}){0,4}").prop_map(|(i, message)| {
                Reply::Err {
                    code: CODES[i].0,
                    message,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_lines_never_panic(line: Vec<u8>) {
            let _ = parse(&line);
        }

        #[test]
        fn arbitrary_words_after_a_tag_never_panic(verb in "[a-z_]{1,14}", args in proptest::collection::vec("[ -~]{0,20}", 0..6)) {
            let line = format!("1 {verb} {}", args.join(" "));
            let _ = parse(line.as_bytes());
        }

        #[test]
        fn requests_round_trip(tag: u64, verb in verb()) {
            let req = Request::new(tag, verb);
            prop_assert_eq!(parse(req.encode().as_bytes()), Ok(req));
        }

        #[test]
        fn replies_round_trip(tag: u64, reply in reply()) {
            let mut r = ReplyReader::default();
            let mut got = None;
            for line in reply.encode(tag).split('\n') {
                prop_assert!(got.is_none());
                got = r.feed(line).unwrap();
            }
            prop_assert_eq!(got, Some((tag, reply)));
        }

        #[test]
        fn arbitrary_reply_lines_never_panic(lines in proptest::collection::vec("[ -~]{0,40}", 0..8)) {
            let mut r = ReplyReader::default();
            for l in &lines {
                let _ = r.feed(l);
            }
        }

        #[test]
        fn data_lines_round_trip(
            g in name(), f in name(), n: usize, size: u64, owner in name(),
            ip: [u8; 4], port: u16, npieces in 0usize..2000, bits: Vec<bool>,
        ) {
            let gl = GroupLine { group: g.clone(), members: n, owner };
            prop_assert_eq!(GroupLine::parse(&gl.encode()), Some(gl));
            let fl = FileLine { file: f, size, seeders: n };
            prop_assert_eq!(FileLine::parse(&fl.encode()), Some(fl));
            let mut have = PieceSet::empty(npieces);
            for (i, b) in bits.iter().enumerate().take(npieces) {
                if *b { have.insert(i); }
            }
            let pl = PeerLine { user: g, addr: SocketAddr::from((ip, port)), have };
            prop_assert_eq!(PeerLine::parse(&pl.encode(), npieces), Some(pl));
        }

        #[test]
        fn download_replies_round_trip(size in 0u64..(3000 * pieces::PIECE_SIZE), seed: u8, users in proptest::collection::btree_set(name(), 0..4)) {
            let n = pieces::piece_count(size) as usize;
            let hashes: Vec<Hash> = (0..n).map(|i| [(i as u8) ^ seed; 20]).collect();
            let peers = users.into_iter().enumerate().map(|(i, user)| PeerLine {
                user,
                addr: SocketAddr::from(([127, 0, 0, 1], i as u16)),
                have: PieceSet::full(n),
            }).collect();
            let d = DownloadReply { size, hashes: Cow::Owned(hashes), peers };
            let Reply::List { head, lines } = d.to_reply() else { panic!("a list") };
            prop_assert_eq!(DownloadReply::parse(&head, &lines), Ok(d));
        }
    }
}
