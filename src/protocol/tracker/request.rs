//! Requests: one line `<tag> <verb> <args...>`, parsed into a `Request` with names, numbers
//! and addresses validated here, at the edge, and encoded from the same `Verb`.

use super::error::{ErrorCode, ErrorReply};
use super::{NONCE_LEN, PROTOCOL_VERSION};
use crate::auth::scram;
use crate::names::{self, NameKind};
use crate::pieces::{self, MAX_PIECES};
use std::net::SocketAddr;

/// A verb with its arguments, validated. The `tag` is in `Request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Hello {
        instance: u64,
    },
    CreateUser {
        user: String,
        /// `scram::Verifier::encode()`, checked here to be well formed: never the password.
        verifier: String,
    },
    /// The first half of a login: the tracker answers salt, count and its nonce.
    LoginBegin {
        user: String,
        /// 32 lowercase hex digits, fresh per attempt.
        cnonce: String,
    },
    Login {
        user: String,
        /// The SCRAM client proof over the AuthMessage (`auth::login`), 64 lowercase hex.
        proof: String,
        /// `IP:PORT` where the client serves pieces, in `SocketAddr`'s canonical form.
        addr: String,
    },
    Attach {
        /// 32 lowercase hex digits.
        token: String,
        /// HMAC of the session secret over the token and the channel (`auth::login`), 64 hex.
        proof: String,
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
    ("create_user", "create_user <user_id> <verifier>"),
    ("login_begin", "login_begin <user_id> <cnonce>"),
    ("login", "login <user_id> <proof> <ip:port>"),
    ("attach", "attach <token> <proof> <ip:port>"),
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
            Verb::LoginBegin { .. } => "login_begin",
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
            Verb::CreateUser { user, verifier } => format!("{name} {user} {verifier}"),
            Verb::LoginBegin { user, cnonce } => format!("{name} {user} {cnonce}"),
            Verb::Login { user, proof, addr } => format!("{name} {user} {proof} {addr}"),
            Verb::Attach { token, proof, addr } => format!("{name} {token} {proof} {addr}"),
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
    /// not deduplicated, so it is not a write in this sense; nor are `login` and `attach`,
    /// whose proofs hold only on the connection that made them (a retry is a new exchange).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Verb::CreateUser { .. }
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
                | Verb::LoginBegin { .. }
                | Verb::Login { .. }
                | Verb::Attach { .. }
                | Verb::UploadFile { .. }
                | Verb::Ping
                | Verb::Digest
        )
    }
}

/// A request line from its tag and an encoded verb (`Verb::encode`): for callers that keep the
/// verb's words and choose the tag later (a client re-sending after a failover).
pub fn line(tag: u64, verb_words: &str) -> String {
    format!("{tag} {verb_words}")
}

impl Request {
    pub fn new(tag: u64, verb: Verb) -> Self {
        Request { tag, verb }
    }

    /// The request line `<tag> <verb> <args...>`, without the newline. An `upload_file`'s hash
    /// lines follow it separately (`pieces::hash_lines`).
    pub fn encode(&self) -> String {
        line(self.tag, &self.verb.encode())
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
        "create_user" => {
            let user = name(NameKind::User, args[0])?;
            if scram::Verifier::parse(args[1]).is_none() {
                return Err(ParseError::new(
                    tag,
                    BadRequest,
                    "the verifier is not scram-sha256$<iterations>$<salt>$<stored>$<server> in lowercase hex",
                ));
            }
            Verb::CreateUser {
                user,
                verifier: args[1].to_string(),
            }
        }
        "login_begin" => Verb::LoginBegin {
            user: name(NameKind::User, args[0])?,
            cnonce: hex_word(tag, args[1], NONCE_LEN, "the client nonce")?,
        },
        "login" => Verb::Login {
            user: name(NameKind::User, args[0])?,
            proof: hex_word(tag, args[1], scram::KEY_LEN, "the proof")?,
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
                proof: hex_word(tag, args[1], scram::KEY_LEN, "the proof")?,
                addr: addr(args[2])?,
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

/// Exactly `bytes` bytes in lowercase hex: nonces and proofs have one spelling.
fn hex_word(tag: u64, s: &str, bytes: usize, what: &str) -> Result<String, ParseError> {
    if s.len() != bytes * 2 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ParseError::new(
            tag,
            ErrorCode::BadRequest,
            format!("{what} must be {} lowercase hex digits", bytes * 2),
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tracker::strategy::{addr, name};
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
            ok("1 hello 00000000000000ff 2"),
            Verb::Hello { instance: 255 }
        );
        assert_eq!(
            ok(&format!("2 login al {} 127.0.0.1:5", "ab".repeat(32))),
            Verb::Login {
                user: "al".into(),
                proof: "ab".repeat(32),
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
        let proof = "0f".repeat(32);
        assert_eq!(
            err(&format!("1 login a {proof} notanaddr")).code,
            ErrorCode::BadRequest
        );
        assert_eq!(err("1 login a pw 127.0.0.1:1").code, ErrorCode::BadRequest);
        assert_eq!(
            err(&format!("1 attach xyz {proof} 127.0.0.1:1")).code,
            ErrorCode::NoSession
        );
        let token = "ab".repeat(16);
        assert_eq!(
            err(&format!("1 attach {token} short 127.0.0.1:1")).code,
            ErrorCode::BadRequest
        );
        // A password where the verifier belongs is refused: it never reaches the state.
        assert_eq!(err("1 create_user a hunter2").code, ErrorCode::BadRequest);
        assert_eq!(
            err(&format!("1 login_begin a {}", "AB".repeat(16))).code,
            ErrorCode::BadRequest
        );
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
            "1 hello 00000000000000ff 2"
        );
    }

    fn verb() -> impl Strategy<Value = Verb> {
        let verifier = (any::<[u8; 16]>(), any::<[u8; 32]>(), 4096u32..=1_000_000).prop_map(
            |(salt, key, iterations)| {
                scram::Verifier {
                    iterations,
                    salt,
                    stored_key: key,
                    server_key: key,
                }
                .encode()
            },
        );
        prop_oneof![
            any::<u64>().prop_map(|instance| Verb::Hello { instance }),
            (name(), verifier).prop_map(|(user, verifier)| Verb::CreateUser { user, verifier }),
            (name(), "[0-9a-f]{32}").prop_map(|(user, cnonce)| Verb::LoginBegin { user, cnonce }),
            (name(), "[0-9a-f]{64}", addr()).prop_map(|(user, proof, addr)| Verb::Login {
                user,
                proof,
                addr
            }),
            ("[0-9a-f]{32}", "[0-9a-f]{64}", addr())
                .prop_map(|(token, proof, addr)| Verb::Attach { token, proof, addr }),
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

    }
}
