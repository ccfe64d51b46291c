//! Replicated operations and journal entries, and their text encoding.
//!
//! An operation is one line of words separated by single spaces; the same text is a journal
//! line (`<term> <seq> <origin|-> <operation>`) and the payload of the peer link's `op`/`fwd`.
//! Everything that is not a pure function of the state (verifier, token, secret) is already chosen when an
//! operation is built, so applying it is deterministic on both trackers. Decoding validates
//! every field, because the text comes from disk and from the network.

use crate::auth::scram;
use crate::names::{self, NameKind};
use crate::pieces::{self, Hash, MAX_PIECES};
use crate::tracker::state::Limits;
use std::fmt;
use std::net::SocketAddr;

mod fields;

use fields::{
    addr, clip, decode_instance, encode_instance, key, name, optional_user, secret, solo_word,
    token, tracker, upload_hashes,
};
pub use fields::{
    check_addr, check_notice_text, check_tracker, is_key, is_secret, is_token, parse_piece_ranges,
    parse_u64, verifier_problem,
};

/// A session token: 32 lowercase hex digits, chosen at random by the tracker that took the login.
pub type Token = String;

/// Length of a token in hex digits (128 random bits).
pub const TOKEN_LEN: usize = 32;

/// Where a write came from: the client's instance id and its request tag. Deduplication keys on
/// it so a request re-sent to the other tracker after a failover is not applied twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub instance: u64,
    pub tag: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    CreateUser {
        user: String,
        /// `scram::Verifier::encode()`: the client made it; nothing in it logs in by itself.
        verifier: String,
    },
    /// Proposed only after the tracker checked the login proof; ends any other session of the
    /// user (a takeover).
    Login {
        token: Token,
        user: String,
        addr: String,
        tracker: u8,
        /// The session secret (64 lowercase hex): `attach` proves knowledge of it, and the
        /// ticket key is derived from it.
        secret: String,
        /// The client's static key (64 hex), proven in its channel's handshake: published
        /// with its address so downloaders can check they reached this client.
        key: String,
    },
    Attach {
        token: Token,
        addr: String,
        tracker: u8,
        /// As in `Login`: the attaching connection's key (a new client process, a new key).
        key: String,
    },
    Logout {
        token: Token,
    },
    Detach {
        tracker: u8,
    },
    CreateGroup {
        token: Token,
        group: String,
    },
    JoinGroup {
        token: Token,
        group: String,
    },
    LeaveGroup {
        token: Token,
        group: String,
    },
    AcceptRequest {
        token: Token,
        group: String,
        user: String,
    },
    Upload {
        token: Token,
        group: String,
        file: String,
        size: u64,
        hashes: Vec<Hash>,
    },
    /// `pieces` ascend without repeats and are not empty (the text form is a range list).
    Have {
        token: Token,
        group: String,
        file: String,
        pieces: Vec<usize>,
    },
    StopShare {
        token: Token,
        group: String,
        file: String,
    },
    Term {
        term: u64,
        solo: bool,
    },
    /// The quotas in force from here on: the leader's configured limits, appended right after
    /// each term entry it opens, so both trackers check the same numbers (`state/quota.rs`).
    Limits(Limits),
    /// A write acknowledged by a tracker that led alone during a split, applied again on top
    /// of the log that won when the pair re-formed (`tracker/replay.rs`). `op` is one that acts
    /// through a session (`Op::acts_as_user`); it is applied as `user`, whether or not the
    /// session it named still exists, because sessions are connection state and the user is
    /// who acted. `op` may also be that user's `login`: the session is then carried over
    /// orphaned (valid for `attach`), unless the user is online elsewhere.
    Redo {
        user: String,
        op: Box<Op>,
    },
    /// A write undone when a split healed (it conflicted with the winning log), to be told to
    /// the client instance that made it, or to a client of `user`, at its next command.
    Notice {
        instance: Option<u64>,
        user: Option<String>,
        /// Printable ASCII words separated by single spaces, at most `MAX_NOTICE_TEXT` bytes.
        text: String,
    },
    /// The notices of this instance or user were told; they are dropped.
    NoticeSeen {
        instance: Option<u64>,
        user: Option<String>,
    },
}

/// Longest notice text: a sentence naming a few names (each at most 255 bytes).
pub const MAX_NOTICE_TEXT: usize = 1024;

/// One journal line: the operation with its log position and origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    pub seq: u64,
    pub origin: Option<Origin>,
    pub op: Op,
}

/// Length of a session secret in hex digits (256 random bits).
pub const SECRET_LEN: usize = 64;

impl Origin {
    /// `<16 hex digits>:<decimal tag>`.
    pub fn encode(&self) -> String {
        format!("{:016x}:{}", self.instance, self.tag)
    }

    /// `-` is no origin (a write without `hello`, or one the tracker made itself).
    pub fn decode(s: &str) -> Result<Option<Origin>, String> {
        if s == "-" {
            return Ok(None);
        }
        let (inst, tag) = s
            .split_once(':')
            .ok_or_else(|| format!("origin '{}' is not <instance>:<tag>", clip(s)))?;
        if inst.len() != 16 || !inst.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "instance id '{}' is not 16 lowercase hex digits",
                clip(inst)
            ));
        }
        let instance = u64::from_str_radix(inst, 16)
            .map_err(|_| format!("instance id '{}' is not hex", clip(inst)))?;
        let tag = parse_u64(tag, "request tag")?;
        Ok(Some(Origin { instance, tag }))
    }
}

/// The operations that act through a session token, binding it to `$t`: one list for both
/// `Op::token` and `Op::with_token`, so a new variant cannot be added to one and not the other.
macro_rules! acting_through {
    ($t:ident) => {
        Op::Login { token: $t, .. }
            | Op::Attach { token: $t, .. }
            | Op::Logout { token: $t }
            | Op::CreateGroup { token: $t, .. }
            | Op::JoinGroup { token: $t, .. }
            | Op::LeaveGroup { token: $t, .. }
            | Op::AcceptRequest { token: $t, .. }
            | Op::Upload { token: $t, .. }
            | Op::Have { token: $t, .. }
            | Op::StopShare { token: $t, .. }
    };
}

impl Op {
    /// The verb: the first word of the text form.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::CreateUser { .. } => "create_user",
            Op::Login { .. } => "login",
            Op::Attach { .. } => "attach",
            Op::Logout { .. } => "logout",
            Op::Detach { .. } => "detach",
            Op::CreateGroup { .. } => "create_group",
            Op::JoinGroup { .. } => "join_group",
            Op::LeaveGroup { .. } => "leave_group",
            Op::AcceptRequest { .. } => "accept_request",
            Op::Upload { .. } => "upload",
            Op::Have { .. } => "have",
            Op::StopShare { .. } => "stop_share",
            Op::Term { .. } => "term",
            Op::Limits(_) => "limits",
            Op::Redo { .. } => "redo",
            Op::Notice { .. } => "notice",
            Op::NoticeSeen { .. } => "notice_seen",
        }
    }

    /// Whether the operation acts through a session as its user (what `redo` may carry).
    pub fn acts_as_user(&self) -> bool {
        matches!(
            self,
            Op::CreateGroup { .. }
                | Op::JoinGroup { .. }
                | Op::LeaveGroup { .. }
                | Op::AcceptRequest { .. }
                | Op::Upload { .. }
                | Op::Have { .. }
                | Op::StopShare { .. }
        )
    }

    /// The session token an operation acts through, if any.
    pub fn token(&self) -> Option<&str> {
        match self {
            acting_through!(token) => Some(token),
            _ => None,
        }
    }

    /// The same operation acting through session `to` instead (for `redo`).
    pub fn with_token(&self, to: &str) -> Op {
        let mut op = self.clone();
        match &mut op {
            acting_through!(token) => *token = to.to_string(),
            _ => {}
        }
        op
    }

    /// What a person typed to cause this operation, names included and secrets left out
    /// (`create_group physics`), for notices and logs.
    pub fn describe(&self) -> String {
        let v = self.verb();
        match self {
            Op::CreateUser { user, .. } => format!("{v} {user}"),
            Op::Login { user, .. } => format!("{v} {user}"),
            Op::CreateGroup { group, .. }
            | Op::JoinGroup { group, .. }
            | Op::LeaveGroup { group, .. } => format!("{v} {group}"),
            Op::AcceptRequest { group, user, .. } => format!("{v} {group} {user}"),
            Op::Upload { group, file, .. } => format!("upload_file {file} {group}"),
            Op::Have { group, file, .. } | Op::StopShare { group, file, .. } => {
                format!("{v} {group} {file}")
            }
            Op::Redo { op, .. } => op.describe(),
            _ => v.to_string(),
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(96);
        self.write_to(&mut s);
        s
    }

    /// Appends the text form to `out` (a reused buffer: the journal's, when a leader appends),
    /// without the intermediate `String`s of `format!`.
    pub fn write_to(&self, out: &mut impl fmt::Write) {
        let v = self.verb();
        // Writing into a String or a Vec cannot fail.
        let _ = match self {
            Op::CreateUser { user, verifier } => write!(out, "{v} {user} {verifier}"),
            Op::Login {
                token,
                user,
                addr,
                tracker,
                secret,
                key,
            } => write!(out, "{v} {token} {user} {addr} {tracker} {secret} {key}"),
            Op::Attach {
                token,
                addr,
                tracker,
                key,
            } => write!(out, "{v} {token} {addr} {tracker} {key}"),
            Op::Logout { token } => write!(out, "{v} {token}"),
            Op::Detach { tracker } => write!(out, "{v} {tracker}"),
            Op::CreateGroup { token, group }
            | Op::JoinGroup { token, group }
            | Op::LeaveGroup { token, group } => write!(out, "{v} {token} {group}"),
            Op::AcceptRequest { token, group, user } => {
                write!(out, "{v} {token} {group} {user}")
            }
            Op::Upload {
                token,
                group,
                file,
                size,
                hashes,
            } => {
                let hex = if hashes.is_empty() {
                    "-".to_string()
                } else {
                    pieces::hashes_to_hex(hashes)
                };
                write!(out, "{v} {token} {group} {file} {size} {hex}")
            }
            Op::Have {
                token,
                group,
                file,
                pieces,
            } => write!(
                out,
                "{v} {token} {group} {file} {}",
                pieces::format_ranges(pieces.iter().copied())
            ),
            Op::StopShare { token, group, file } => write!(out, "{v} {token} {group} {file}"),
            Op::Term { term, solo } => write!(out, "{v} {term} {}", solo_word(*solo)),
            Op::Limits(l) => write!(out, "{v} {}", l.encode()),
            Op::Redo { user, op } => {
                let _ = write!(out, "{v} {user} ");
                op.write_to(out);
                Ok(())
            }
            Op::Notice {
                instance,
                user,
                text,
            } => write!(
                out,
                "{v} {} {} {text}",
                encode_instance(instance),
                user.as_deref().unwrap_or("-")
            ),
            Op::NoticeSeen { instance, user } => write!(
                out,
                "{v} {} {}",
                encode_instance(instance),
                user.as_deref().unwrap_or("-")
            ),
        };
    }

    pub fn decode(line: &str) -> Result<Op, String> {
        let words: Vec<&str> = line.split(' ').collect();
        if words.iter().any(|w| w.is_empty()) {
            return Err("an operation is words separated by single spaces".to_string());
        }
        let (verb, args) = words
            .split_first()
            .ok_or_else(|| "empty operation".to_string())?;
        let want = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "operation '{}' takes {n} arguments, not {}",
                    clip(verb),
                    args.len()
                ))
            }
        };
        let op = match *verb {
            "redo" => {
                let user = args.first().ok_or("redo names no user")?;
                let user = name(NameKind::User, user)?;
                // Checked before decoding, so a chain of redos is refused without recursing.
                if args.get(1) == Some(&"redo") {
                    return Err("redo cannot carry 'redo'".to_string());
                }
                let inner = Op::decode(&args[1..].join(" "))?;
                if !inner.acts_as_user() && !matches!(inner, Op::Login { .. }) {
                    return Err(format!("redo cannot carry '{}'", inner.verb()));
                }
                Op::Redo {
                    user,
                    op: Box::new(inner),
                }
            }
            "notice" => {
                if args.len() < 3 {
                    return Err("notice takes an instance, a user and a text".to_string());
                }
                let text = args[2..].join(" ");
                check_notice_text(&text)?;
                Op::Notice {
                    instance: decode_instance(args[0])?,
                    user: optional_user(args[1])?,
                    text,
                }
            }
            "notice_seen" => {
                want(2)?;
                Op::NoticeSeen {
                    instance: decode_instance(args[0])?,
                    user: optional_user(args[1])?,
                }
            }
            "create_user" => {
                want(2)?;
                if scram::Verifier::parse(args[1]).is_none() {
                    return Err(verifier_problem(args[1]));
                }
                Op::CreateUser {
                    user: name(NameKind::User, args[0])?,
                    verifier: args[1].to_string(),
                }
            }
            "login" => {
                want(6)?;
                Op::Login {
                    token: token(args[0])?,
                    user: name(NameKind::User, args[1])?,
                    addr: addr(args[2])?,
                    tracker: tracker(args[3])?,
                    secret: secret(args[4])?,
                    key: key(args[5])?,
                }
            }
            "attach" => {
                want(4)?;
                Op::Attach {
                    token: token(args[0])?,
                    addr: addr(args[1])?,
                    tracker: tracker(args[2])?,
                    key: key(args[3])?,
                }
            }
            "logout" => {
                want(1)?;
                Op::Logout {
                    token: token(args[0])?,
                }
            }
            "detach" => {
                want(1)?;
                Op::Detach {
                    tracker: tracker(args[0])?,
                }
            }
            "create_group" | "join_group" | "leave_group" => {
                want(2)?;
                let token = token(args[0])?;
                let group = name(NameKind::Group, args[1])?;
                match *verb {
                    "create_group" => Op::CreateGroup { token, group },
                    "join_group" => Op::JoinGroup { token, group },
                    _ => Op::LeaveGroup { token, group },
                }
            }
            "accept_request" => {
                want(3)?;
                Op::AcceptRequest {
                    token: token(args[0])?,
                    group: name(NameKind::Group, args[1])?,
                    user: name(NameKind::User, args[2])?,
                }
            }
            "upload" => {
                want(5)?;
                let size = parse_u64(args[3], "file size")?;
                Op::Upload {
                    token: token(args[0])?,
                    group: name(NameKind::Group, args[1])?,
                    file: name(NameKind::File, args[2])?,
                    size,
                    hashes: upload_hashes(args[4], size)?,
                }
            }
            "have" => {
                want(4)?;
                Op::Have {
                    token: token(args[0])?,
                    group: name(NameKind::Group, args[1])?,
                    file: name(NameKind::File, args[2])?,
                    pieces: parse_piece_ranges(args[3])?,
                }
            }
            "stop_share" => {
                want(3)?;
                Op::StopShare {
                    token: token(args[0])?,
                    group: name(NameKind::Group, args[1])?,
                    file: name(NameKind::File, args[2])?,
                }
            }
            "term" => {
                want(2)?;
                let solo = match args[1] {
                    "solo" => true,
                    "paired" => false,
                    other => {
                        return Err(format!("term mode '{}' is not solo or paired", clip(other)))
                    }
                };
                Op::Term {
                    term: parse_u64(args[0], "term")?,
                    solo,
                }
            }
            "limits" => Op::Limits(Limits::decode(args)?),
            other => return Err(format!("unknown operation '{}'", clip(other))),
        };
        Ok(op)
    }

    /// Whether a successful application is remembered for deduplication. `have` is idempotent
    /// and would only churn the table; `term`, `detach` and `limits` are the trackers' own,
    /// never a client's request; `login` and `attach` hold proofs bound to one connection, so
    /// a retry is a fresh exchange, never an answer from the record (which would hand out a
    /// secret).
    pub fn is_write_dedup(&self) -> bool {
        match self {
            Op::Redo { op, .. } => op.is_write_dedup(),
            Op::Have { .. }
            | Op::Term { .. }
            | Op::Detach { .. }
            | Op::Limits(_)
            | Op::Login { .. }
            | Op::Attach { .. }
            | Op::Notice { .. }
            | Op::NoticeSeen { .. } => false,
            _ => true,
        }
    }
}

impl Entry {
    /// `<term> <seq> <origin|-> <operation>`.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(128);
        self.write_to(&mut s);
        s
    }

    /// Appends `encode`'s text to `out`.
    pub fn write_to(&self, out: &mut impl fmt::Write) {
        let _ = write!(out, "{} {} ", self.term, self.seq);
        let _ = match &self.origin {
            Some(o) => write!(out, "{:016x}:{}", o.instance, o.tag),
            None => out.write_str("-"),
        };
        let _ = out.write_char(' ');
        self.op.write_to(out);
    }

    pub fn decode(line: &str) -> Result<Entry, String> {
        let mut parts = line.splitn(4, ' ');
        let (Some(term), Some(seq), Some(origin), Some(op)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a journal entry is '<term> <seq> <origin|-> <operation>'".to_string());
        };
        Ok(Entry {
            term: parse_u64(term, "term")?,
            seq: parse_u64(seq, "sequence number")?,
            origin: Origin::decode(origin)?,
            op: Op::decode(op)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pieces::PIECE_SIZE;
    use proptest::prelude::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    fn test_verifier() -> String {
        scram::ClientKeys::derive("pw", &[1; 16], 4096)
            .verifier([1; 16], 4096)
            .encode()
    }

    fn every_variant() -> Vec<Op> {
        let t = T.to_string();
        vec![
            Op::CreateUser {
                user: "alice".into(),
                verifier: test_verifier(),
            },
            Op::Login {
                token: t.clone(),
                user: "alice".into(),
                addr: "127.0.0.1:4000".into(),
                tracker: 1,
                secret: "5e".repeat(32),
                key: "ab".repeat(32),
            },
            Op::Attach {
                token: t.clone(),
                addr: "[::1]:4000".into(),
                tracker: 2,
                key: "cd".repeat(32),
            },
            Op::Logout { token: t.clone() },
            Op::Detach { tracker: 2 },
            Op::CreateGroup {
                token: t.clone(),
                group: "g1".into(),
            },
            Op::JoinGroup {
                token: t.clone(),
                group: "g1".into(),
            },
            Op::LeaveGroup {
                token: t.clone(),
                group: "g.1".into(),
            },
            Op::AcceptRequest {
                token: t.clone(),
                group: "g1".into(),
                user: "bob".into(),
            },
            Op::Upload {
                token: t.clone(),
                group: "g1".into(),
                file: "a.txt".into(),
                size: 2 * PIECE_SIZE + 1,
                hashes: vec![[1; 20], [2; 20], [0xab; 20]],
            },
            Op::Upload {
                token: t.clone(),
                group: "g1".into(),
                file: "empty".into(),
                size: 0,
                hashes: vec![],
            },
            Op::Have {
                token: t.clone(),
                group: "g1".into(),
                file: "a.txt".into(),
                pieces: vec![0, 1, 2, 3, 7],
            },
            Op::StopShare {
                token: t.clone(),
                group: "g1".into(),
                file: "a.txt".into(),
            },
            Op::Term {
                term: 7,
                solo: true,
            },
            Op::Term {
                term: 0,
                solo: false,
            },
            Op::Limits(Limits {
                users: 10,
                ..Limits::default()
            }),
            Op::Redo {
                user: "carol".into(),
                op: Box::new(Op::CreateGroup {
                    token: t.clone(),
                    group: "g2".into(),
                }),
            },
            Op::Notice {
                instance: Some(0xab),
                user: Some("carol".into()),
                text: "your create_group g2 was undone: group g2 already exists".into(),
            },
            Op::NoticeSeen {
                instance: None,
                user: Some("carol".into()),
            },
            Op::NoticeSeen {
                instance: Some(7),
                user: None,
            },
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        for op in every_variant() {
            let text = op.encode();
            assert!(!text.contains("  ") && !text.contains('\n'), "{text}");
            assert_eq!(Op::decode(&text), Ok(op.clone()), "{text}");
            assert_eq!(Op::decode(&text).map(|o| o.encode()), Ok(text));
        }
    }

    #[test]
    fn text_forms_are_as_documented() {
        let ops = every_variant();
        let key = "ab".repeat(32);
        assert_eq!(
            ops[1].encode(),
            format!("login {T} alice 127.0.0.1:4000 1 {} {key}", "5e".repeat(32))
        );
        assert_eq!(ops[10].encode(), format!("upload {T} g1 empty 0 -"));
        assert_eq!(ops[11].encode(), format!("have {T} g1 a.txt 0-3,7"));
        assert_eq!(ops[13].encode(), "term 7 solo");
        assert_eq!(ops[14].encode(), "term 0 paired");
        assert!(ops[15]
            .encode()
            .starts_with("limits users=10 groups=262144 files="));
        assert_eq!(ops[16].encode(), format!("redo carol create_group {T} g2"));
        assert_eq!(
            ops[17].encode(),
            "notice 00000000000000ab carol your create_group g2 was undone: group g2 already exists"
        );
        assert_eq!(ops[19].encode(), "notice_seen 0000000000000007 -");
    }

    #[test]
    fn entries_round_trip_with_and_without_origin() {
        for (i, op) in every_variant().into_iter().enumerate() {
            let origin = (i % 2 == 0).then_some(Origin {
                instance: 0x00ab_cdef_0000_0001 * i as u64,
                tag: i as u64 * 1000,
            });
            let e = Entry {
                term: 3,
                seq: 100 + i as u64,
                origin,
                op,
            };
            let text = e.encode();
            assert_eq!(Entry::decode(&text), Ok(e), "{text}");
        }
        let e = Entry::decode("1 2 - detach 1").unwrap();
        assert_eq!(e.origin, None);
        assert_eq!(
            Entry::decode("1 2 00000000000000ff:9 detach 1")
                .unwrap()
                .origin,
            Some(Origin {
                instance: 255,
                tag: 9
            })
        );
    }

    #[test]
    fn dedup_flag_excludes_have_term_detach_login_and_attach() {
        for op in every_variant() {
            let expect = !matches!(
                op,
                Op::Have { .. }
                    | Op::Term { .. }
                    | Op::Detach { .. }
                    | Op::Limits(_)
                    | Op::Login { .. }
                    | Op::Attach { .. }
                    | Op::Notice { .. }
                    | Op::NoticeSeen { .. }
            );
            assert_eq!(op.is_write_dedup(), expect, "{}", op.verb());
        }
    }

    #[test]
    fn malformed_operations_are_refused() {
        let hex3 = "ab".repeat(60);
        let bad = vec![
            String::new(),
            "nonsense".into(),
            "logout".into(),
            format!("logout {T} extra"),
            format!("logout  {T}"),
            format!("logout {T} "),
            format!("logout {}", T.to_uppercase()),
            format!("logout {}", &T[1..]),
            "create_user alice not-a-hash".into(),
            format!("create_user a/b {}", test_verifier()),
            "create_user alice pbkdf2-sha256$9000$00$00".into(),
            format!("login {T} alice 127.0.0.1 1 {}", "5e".repeat(32)),
            format!("login {T} alice 127.0.0.1:9 3 {}", "5e".repeat(32)),
            format!("login {T} alice 127.0.0.1:9 01 {}", "5e".repeat(32)),
            format!("login {T} alice 127.0.0.1:9 1"),
            format!("login {T} alice 127.0.0.1:9 1 {}", "5E".repeat(32)),
            format!("attach {T} host:9 1"),
            "detach 0".into(),
            format!("create_group {T} ."),
            format!("join_group {T} {}", "g".repeat(65)),
            format!("accept_request {T} g a..b/"),
            format!("upload {T} g f 0 {hex3}"),
            format!("upload {T} g f 1 -"),
            format!("upload {T} g f {} {hex3}", 2 * PIECE_SIZE),
            format!("upload {T} g f {} {}", 3 * PIECE_SIZE, hex3.to_uppercase()),
            format!("upload {T} g f {} {}", 3 * PIECE_SIZE, "zz".repeat(60)),
            format!("upload {T} g f +5 -"),
            format!("upload {T} g f {} -", u64::MAX),
            format!("have {T} g f 3-1"),
            format!("have {T} g f 1,1"),
            format!("have {T} g f 5,2"),
            format!("have {T} g f 0-{MAX_PIECES}"),
            format!("have {T} g f 1,,2"),
            format!("have {T} g f 99999999999999999999999"),
            format!("stop_share {T} g"),
            "term 1 both".into(),
            "term -1 solo".into(),
            "redo carol".into(),
            "redo carol term 1 solo".into(),
            format!("redo carol redo carol create_group {T} g"),
            "redo a ".repeat(100_000) + "create_group x g",
            format!("redo c/d create_group {T} g"),
            "notice - -".into(),
            "notice 1 - text".into(),
            "notice - - tab\there".into(),
            format!("notice - - {}", "x".repeat(MAX_NOTICE_TEXT + 1)),
            "notice_seen - - extra".into(),
        ];
        for b in &bad {
            let r = Op::decode(b);
            assert!(r.is_err(), "{b:?} accepted as {r:?}");
            let msg = r.unwrap_err();
            assert!(!msg.is_empty() && msg.len() < 200, "{msg}");
        }
    }

    #[test]
    fn malformed_origins_and_entries_are_refused() {
        for bad in [
            "",
            "abc:1",
            "00000000000000FF:1",
            "00000000000000ff",
            "00000000000000ff:",
            "00000000000000ff:-1",
            "000000000000000ff:1",
        ] {
            assert!(Origin::decode(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "1 2 -",
            "1 2 - ",
            "x 2 - detach 1",
            "1 02 - detach 1",
            "1 2 nope detach 1",
            "1 2 - detach 3",
        ] {
            assert!(Entry::decode(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decoders_never_panic(s in "\\PC{0,200}") {
            let _ = Op::decode(&s);
            let _ = Entry::decode(&s);
            let _ = Origin::decode(&s);
        }

        #[test]
        fn decoders_never_panic_on_near_misses(
            verb in prop::sample::select(vec![
                "create_user", "login", "attach", "logout", "detach", "create_group",
                "join_group", "leave_group", "accept_request", "upload", "have",
                "stop_share", "term", "redo", "notice", "notice_seen",
            ]),
            args in prop::collection::vec(
                prop::sample::select(vec![
                    T, "alice", "g", "f", "127.0.0.1:1", "1", "2", "0", "-", "0-3,5",
                    "solo", "1048576", "18446744073709551615", "", "ab",
                ]),
                0..6,
            ),
        ) {
            let line = format!("{verb} {}", args.join(" "));
            if let Ok(op) = Op::decode(&line) {
                prop_assert_eq!(Op::decode(&op.encode()), Ok(op));
            }
            let _ = Entry::decode(&format!("1 1 - {line}"));
        }
    }
}
