//! Client requests: one line `<tag> <verb> <args...>` parsed into a `Request`, with names and
//! numbers validated here, at the edge. Pure.

use crate::names::{self, NameKind};
use crate::pieces::{self, MAX_PIECES};
use std::net::SocketAddr;

/// The protocol version this tracker speaks (`hello <instance> <version>`).
pub const PROTOCOL_VERSION: u32 = 1;

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
        addr: String,
    },
    Attach {
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
    /// Followed by `hash_line_count(npieces)` hash lines.
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
    pub code: &'static str,
    pub message: String,
    /// For a malformed `upload_file` whose piece count could be read: the hash lines that
    /// follow it and must be skipped.
    pub skip_lines: usize,
}

impl ParseError {
    fn new(tag: u64, code: &'static str, message: impl Into<String>) -> Self {
        ParseError {
            tag,
            code,
            message: message.into(),
            skip_lines: 0,
        }
    }
}

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

/// Parses one request line.
pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
    let line = std::str::from_utf8(line)
        .map_err(|_| ParseError::new(0, "bad_request", "the request is not valid UTF-8"))?;
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let tag: u64 = match words.next() {
        Some(t) => t.parse().map_err(|_| {
            ParseError::new(
                0,
                "bad_request",
                format!(
                    "a request starts with a numeric tag, not '{}'",
                    t.chars().take(40).collect::<String>().escape_debug()
                ),
            )
        })?,
        None => return Err(ParseError::new(0, "bad_request", "empty request")),
    };
    let verb = words
        .next()
        .ok_or_else(|| ParseError::new(tag, "bad_request", "the request has no command"))?;
    let args: Vec<&str> = words.collect();
    let Some(usage) = usage(verb) else {
        return Err(ParseError::new(
            tag,
            "unknown_command",
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
            "bad_request",
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
            .map_err(|m| ParseError::new(tag, "invalid_name", m))
    };
    let addr = |s: &str| -> Result<String, ParseError> {
        s.parse::<SocketAddr>().map(|a| a.to_string()).map_err(|_| {
            ParseError::new(
                tag,
                "bad_request",
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
                    ParseError::new(tag, "bad_request", "the instance id must be 16 hex digits")
                })?;
            if args[1] != PROTOCOL_VERSION.to_string() {
                return Err(ParseError::new(
                    tag,
                    "bad_request",
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
                return Err(ParseError::new(tag, "no_session", "unknown session token"));
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
                .map_err(|_| fail("bad_request", "the size must be a number".into()))?;
            let npieces: u64 = args[3]
                .parse()
                .map_err(|_| fail("bad_request", "the piece count must be a number".into()))?;
            if npieces > MAX_PIECES {
                return Err(fail(
                    "bad_request",
                    format!(
                        "files of more than {MAX_PIECES} pieces ({} GiB) are not supported",
                        (MAX_PIECES * pieces::PIECE_SIZE) >> 30
                    ),
                ));
            }
            if npieces != pieces::piece_count(size) {
                return Err(fail(
                    "bad_request",
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
                        "bad_request",
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
    const MAX_PASSWORD: usize = 256;
    if p.len() > MAX_PASSWORD {
        return Err(ParseError::new(
            tag,
            "bad_request",
            format!("passwords are at most {MAX_PASSWORD} bytes"),
        ));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((e.tag, e.code), (7, "unknown_command"));
        assert!(e.message.contains("frobnicate"));
        let e = err("8 join_group");
        assert_eq!(e.code, "bad_request");
        assert!(e.message.contains("usage: join_group <group_id>"));
        assert_eq!(err("9 create_group a/b").code, "invalid_name");
        assert_eq!(err("nope").tag, 0);
        assert_eq!(err("").code, "bad_request");
        assert_eq!(parse(b"1 \xff").unwrap_err().code, "bad_request");
        assert_eq!(err("1 have g f 3-1").code, "bad_request");
        assert_eq!(err("1 login a b notanaddr").code, "bad_request");
    }

    #[test]
    fn a_bad_upload_says_how_many_hash_lines_to_skip() {
        let e = err("1 upload_file g f 10 3000");
        assert_eq!((e.code, e.skip_lines), ("bad_request", 3));
        let e = err("1 upload_file g/x f 10 1");
        assert_eq!((e.code, e.skip_lines), ("invalid_name", 1));
        assert_eq!(err("1 upload_file g f 10 x").skip_lines, 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_lines_never_panic(line: Vec<u8>) {
            let _ = parse(&line);
        }

        #[test]
        fn arbitrary_words_after_a_tag_never_panic(verb in "[a-z_]{1,14}", args in proptest::collection::vec("[ -~]{0,20}", 0..6)) {
            let line = format!("1 {verb} {}", args.join(" "));
            let _ = parse(line.as_bytes());
        }
    }
}
