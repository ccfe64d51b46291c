//! Replies: `<tag> ok [words]`, `<tag> list <n> [words]` with n data lines, `<tag> err <code>
//! <message>`. The tracker encodes them; the client's `ReplyReader` reassembles them from lines.

use super::error::ErrorCode;

/// Largest `list` the reader accepts; a bigger count is a protocol error rather than a reason
/// to reserve memory. (A group of a million files is far past what the tracker holds.)
pub const MAX_LIST_LINES: usize = 1 << 20;

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
    /// `login`: the session token and the session secret, `<token> <secret>`.
    Token(String),
    /// `attach`: the session's user.
    User(String),
    /// `upload_file` of a name new in the group: `ok new`.
    NewFile,
    /// `upload_file` of content already shared under that name: `ok seeder`.
    Seeder,
    /// `stop_share` that took away the last complete copy online: `ok last-online-copy`.
    LastOnlineCopy,
}

impl WriteReply {
    /// The words after `ok`, `""` for a plain one.
    pub fn words(&self) -> &str {
        match self {
            WriteReply::Done => "",
            WriteReply::Token(w) | WriteReply::User(w) => w,
            WriteReply::NewFile => "new",
            WriteReply::Seeder => "seeder",
            WriteReply::LastOnlineCopy => "last-online-copy",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tracker::error::CODES;
    use proptest::prelude::*;

    #[test]
    fn unknown_error_codes_keep_their_text() {
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

    }
}
