//! Messages of the peer link between the two trackers (PROTOCOL.md, section 2). Pure: encoding
//! and decoding. The link is authenticated by its secure channel (Noise XXpsk0 keyed by the
//! cluster key, `net::secure`), so no message here carries a proof of its own.

use super::journal::Position;
use super::op::{Entry, Op, Origin};
use crate::protocol::tracker::ErrorCode;

/// One line of the peer link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkMsg {
    State {
        pos: Position,
        digest: String,
    },
    SnapshotBegin {
        pos: Position,
    },
    SnapshotEnd {
        count: usize,
    },
    Op {
        fid: Option<u64>,
        entry: Entry,
    },
    Ack {
        seq: u64,
    },
    Commit {
        seq: u64,
    },
    Fwd {
        fid: u64,
        origin: Option<Origin>,
        op: Op,
    },
    FwdErr {
        fid: u64,
        code: ErrorCode,
        message: String,
    },
    FwdOk {
        fid: u64,
        reply: String,
    },
    Ping,
    Pong,
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("bad {what} '{}' on the peer link", s.escape_debug()))
}

fn opt_num(s: &str, what: &str) -> Result<Option<u64>, String> {
    if s == "-" {
        Ok(None)
    } else {
        num(s, what).map(Some)
    }
}

fn mode(solo: bool) -> &'static str {
    if solo {
        "solo"
    } else {
        "paired"
    }
}

fn parse_mode(s: &str) -> Result<bool, String> {
    match s {
        "solo" => Ok(true),
        "paired" => Ok(false),
        _ => Err(format!("bad mode '{}' on the peer link", s.escape_debug())),
    }
}

/// Splits off the first word; the rest keeps its inner spaces.
fn split1(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    }
}

impl LinkMsg {
    pub fn encode(&self) -> String {
        match self {
            LinkMsg::State { pos, digest } => {
                format!("state {} {} {} {digest}", pos.term, pos.seq, mode(pos.solo))
            }
            LinkMsg::SnapshotBegin { pos } => {
                format!("snapshot-begin {} {} {}", pos.term, pos.seq, mode(pos.solo))
            }
            LinkMsg::SnapshotEnd { count } => format!("snapshot-end {count}"),
            LinkMsg::Op { fid, entry } => op_line(*fid, &entry.encode()),
            LinkMsg::Ack { seq } => format!("ack {seq}"),
            LinkMsg::Commit { seq } => format!("commit {seq}"),
            LinkMsg::Fwd { fid, origin, op } => {
                let origin = origin.map_or("-".to_string(), |o| o.encode());
                format!("fwd {fid} {origin} {}", op.encode())
            }
            LinkMsg::FwdErr { fid, code, message } => format!("fwd-err {fid} {code} {message}"),
            LinkMsg::FwdOk { fid, reply } => format!("fwd-ok {fid} {reply}").trim_end().to_string(),
            LinkMsg::Ping => "ping".into(),
            LinkMsg::Pong => "pong".into(),
        }
    }

    /// Decodes one line; an error naming the verb for anything that is not a well-formed link
    /// message (snapshot body lines never get here: the receiver collects them first).
    pub fn decode(line: &str) -> Result<LinkMsg, String> {
        let (verb, rest) = split1(line);
        let words: Vec<&str> = rest.split(' ').filter(|w| !w.is_empty()).collect();
        let bad = || format!("malformed '{verb}' on the peer link");
        Ok(match verb {
            "state" => match words.as_slice() {
                [t, s, m, d] => LinkMsg::State {
                    pos: Position {
                        term: num(t, "term")?,
                        seq: num(s, "sequence number")?,
                        solo: parse_mode(m)?,
                    },
                    digest: d.to_string(),
                },
                _ => return Err(bad()),
            },
            "snapshot-begin" => match words.as_slice() {
                [t, s, m] => LinkMsg::SnapshotBegin {
                    pos: Position {
                        term: num(t, "term")?,
                        seq: num(s, "sequence number")?,
                        solo: parse_mode(m)?,
                    },
                },
                _ => return Err(bad()),
            },
            "snapshot-end" => match words.as_slice() {
                [c] => LinkMsg::SnapshotEnd {
                    count: num(c, "count")?,
                },
                _ => return Err(bad()),
            },
            "op" => {
                let (fid, rest) = split1(rest);
                LinkMsg::Op {
                    fid: opt_num(fid, "forward id")?,
                    entry: Entry::decode(rest)?,
                }
            }
            "ack" => match words.as_slice() {
                [s] => LinkMsg::Ack {
                    seq: num(s, "sequence number")?,
                },
                _ => return Err(bad()),
            },
            "commit" => match words.as_slice() {
                [s] => LinkMsg::Commit {
                    seq: num(s, "sequence number")?,
                },
                _ => return Err(bad()),
            },
            "fwd" => {
                let (fid, rest) = split1(rest);
                let (origin, rest) = split1(rest);
                LinkMsg::Fwd {
                    fid: num(fid, "forward id")?,
                    origin: Origin::decode(origin)?,
                    op: Op::decode(rest)?,
                }
            }
            "fwd-err" => {
                let (fid, rest) = split1(rest);
                let (code, message) = split1(rest);
                LinkMsg::FwdErr {
                    fid: num(fid, "forward id")?,
                    code: ErrorCode::parse(code)
                        .ok_or_else(|| format!("unknown error code {:?} on the peer link", code))?,
                    message: message.to_string(),
                }
            }
            "fwd-ok" => {
                let (fid, reply) = split1(rest);
                LinkMsg::FwdOk {
                    fid: num(fid, "forward id")?,
                    reply: reply.to_string(),
                }
            }
            "ping" => LinkMsg::Ping,
            "pong" => LinkMsg::Pong,
            _ => {
                return Err(format!(
                    "unknown peer-link message '{}'",
                    verb.escape_debug()
                ))
            }
        })
    }
}

/// The `op` line for an entry already encoded as its journal line: the leader encodes each
/// entry once and sends the same text it journals.
pub fn op_line(fid: Option<u64>, journal_line: &str) -> String {
    match fid {
        Some(f) => format!("op {f} {journal_line}"),
        None => format!("op - {journal_line}"),
    }
}

/// Queues `op_line(fid, journal_line)` on `conn` without building it first.
pub fn send_op<S: std::io::Read + std::io::Write>(
    conn: &mut crate::net::conn::Conn<S>,
    fid: Option<u64>,
    journal_line: &str,
) {
    match fid {
        Some(f) => conn.send_bytes(format!("op {f} ").as_bytes()),
        None => conn.send_bytes(b"op - "),
    }
    conn.send_line(journal_line);
}

/// The journal line an `op` line carries (`op <fid|-> <entry>`), as the leader journaled it.
pub fn op_entry_text(op_line: &str) -> Option<&str> {
    let rest = op_line.strip_prefix("op ")?;
    rest.split_once(' ').map(|(_, entry)| entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_op_queues_the_same_bytes_as_op_line_and_the_follower_finds_the_entry_again() {
        let entry = Entry {
            term: 2,
            seq: 41,
            origin: Some(Origin {
                instance: 0xab,
                tag: 7,
            }),
            op: Op::Logout {
                token: "0123456789abcdef0123456789abcdef".into(),
            },
        };
        let line = entry.encode();
        for fid in [None, Some(12)] {
            let mut conn = crate::net::conn::Conn::new(std::io::Cursor::new(Vec::new()), 1 << 16);
            send_op(&mut conn, fid, &line);
            assert_eq!(conn.flush().ok(), Some(true));
            let sent = String::from_utf8(conn.stream.get_ref().clone()).expect("utf-8");
            assert_eq!(sent, format!("{}\n", op_line(fid, &line)));
            assert_eq!(op_entry_text(sent.trim_end()), Some(line.as_str()));
            assert_eq!(
                LinkMsg::decode(sent.trim_end()),
                Ok(LinkMsg::Op {
                    fid,
                    entry: entry.clone()
                })
            );
        }
        assert_eq!(op_entry_text("ack 3"), None);
        assert_eq!(op_entry_text("op 3"), None);
    }

    #[test]
    fn messages_round_trip() {
        let pos = Position {
            term: 3,
            seq: 9,
            solo: true,
        };
        let msgs = vec![
            LinkMsg::State {
                pos,
                digest: "dd".into(),
            },
            LinkMsg::SnapshotBegin { pos },
            LinkMsg::SnapshotEnd { count: 4 },
            LinkMsg::Op {
                fid: Some(5),
                entry: Entry {
                    term: 3,
                    seq: 10,
                    origin: Some(Origin {
                        instance: 0xabc,
                        tag: 7,
                    }),
                    op: Op::Detach { tracker: 2 },
                },
            },
            LinkMsg::Op {
                fid: None,
                entry: Entry {
                    term: 3,
                    seq: 11,
                    origin: None,
                    op: Op::Term {
                        term: 4,
                        solo: false,
                    },
                },
            },
            LinkMsg::Ack { seq: 1 },
            LinkMsg::Commit { seq: 2 },
            LinkMsg::Fwd {
                fid: 6,
                origin: None,
                op: Op::Logout {
                    token: "0".repeat(32),
                },
            },
            LinkMsg::FwdErr {
                fid: 6,
                code: ErrorCode::NotMember,
                message: "you are not a member".into(),
            },
            LinkMsg::FwdOk {
                fid: 6,
                reply: "seeder".into(),
            },
            LinkMsg::Ping,
            LinkMsg::Pong,
        ];
        for m in msgs {
            let line = m.encode();
            assert_eq!(LinkMsg::decode(&line), Ok(m), "{line}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "op",
            "op 1",
            "fwd x - y",
            "state 1 2",
            "ack -1",
            "peer-hello",
            "zzz",
        ] {
            assert!(LinkMsg::decode(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_link_lines_never_panic(line in "\\PC{0,200}") {
            let _ = LinkMsg::decode(&line);
        }

        #[test]
        fn arbitrary_words_after_a_verb_never_panic(
            verb in proptest::sample::select(vec!["op", "fwd", "fwd-err", "fwd-ok", "state", "snapshot-begin", "ack", "commit", "peer-hello"]),
            rest in "[ -~]{0,80}",
        ) {
            let _ = LinkMsg::decode(&format!("{verb} {rest}"));
        }
    }
}
