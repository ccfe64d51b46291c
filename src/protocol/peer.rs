//! The peer protocol (PROTOCOL.md §3): request lines a downloader sends and the header lines a
//! seeder answers with, plus the `has` notice either side may send unprompted on a watched
//! connection. Pure: bytes in, messages out; never panics on any input. Piece payloads are not
//! framed here — the connection reads exactly `len` raw bytes after a `piece` header.

use crate::auth::ticket::Ticket;
use crate::names::{self, NameKind};
use crate::pieces::{PieceSet, MAX_PIECES, PIECE_SIZE};

/// The ticket words of `want` and `watch`: `<downloader> <expiry> <mac>`, the downloader's
/// user name and the ticket the tracker issued it for this seeder (`auth::ticket`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    pub downloader: String,
    pub ticket: Ticket,
}

/// A request from a downloader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `want <group> <file> <downloader> <expiry> <mac>`: which pieces do you hold? The
    /// ticket lets the connection `get` pieces of this file until it expires. Without the three
    /// words (`pass: None`) it is refused like a bad ticket.
    Want {
        group: String,
        file: String,
        pass: Option<Pass>,
    },
    /// `watch <group> <file> <downloader> <expiry> <mac>`: as `want`, and from now on tell me
    /// (`has`) of pieces you can serve me, and expect my own `has` notices on this connection.
    Watch {
        group: String,
        file: String,
        pass: Option<Pass>,
    },
    /// `has <ranges>`: a notice, not a request (no reply): the downloader verified these pieces.
    /// Only on a connection whose `watch` was answered.
    Has(Ranges),
    /// `get <group> <file> <index>`: send me this piece.
    Get {
        group: String,
        file: String,
        index: usize,
    },
}

/// A seeder's answer (one per request, in request order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `have <npieces> <have>`.
    Have { have: PieceSet },
    /// `piece <index> <length>`, followed by exactly `len` raw bytes.
    Piece { index: usize, len: usize },
    /// `err <reason...>`.
    Err(String),
    /// `has <ranges>`: unprompted, between replies, on a watched connection: these pieces may
    /// now be asked for. Not an answer to any request.
    Has(Ranges),
}

/// Most characters of a `has` range list: well inside `MAX_LINE`. A sender splits longer lists
/// over several lines (`ranges_lines`).
pub const MAX_RANGES_CHARS: usize = 32 * 1024;

/// A range list (`0-15,17`) as it came off the wire: only its characters and length are
/// checked here; the receiver, which knows the piece count, parses it with
/// `pieces::parse_ranges`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranges(pub String);

impl Ranges {
    fn parse(w: &str) -> Option<Ranges> {
        let ok = !w.is_empty()
            && w.len() <= MAX_RANGES_CHARS
            && w.bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b',');
        ok.then(|| Ranges(w.to_string()))
    }

    /// The pieces, if the list is well formed and every index is below `npieces`.
    pub fn to_set(&self, npieces: usize) -> Option<PieceSet> {
        crate::pieces::parse_ranges(&self.0, npieces)
    }
}

/// Ascending piece indices as range lists of at most `MAX_RANGES_CHARS` characters each.
pub fn ranges_lines(indices: impl IntoIterator<Item = usize>) -> Vec<Ranges> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    // An index takes at most 7 digits and a separator: 4,000 of them always fit.
    for i in indices {
        chunk.push(i);
        if chunk.len() == MAX_RANGES_CHARS / 8 {
            out.push(Ranges(crate::pieces::format_ranges(chunk.drain(..))));
        }
    }
    if !chunk.is_empty() {
        out.push(Ranges(crate::pieces::format_ranges(chunk)));
    }
    out
}

/// Reasons a seeder refuses; the words after `err`.
pub mod reason {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const LINE_TOO_LONG: &str = "line_too_long";
    pub const NO_SUCH_FILE: &str = "no_such_file";
    pub const BAD_INDEX: &str = "bad_index";
    pub const NOT_HELD: &str = "not_held";
    pub const READ_FAILED: &str = "read_failed";
    pub const BUSY: &str = "busy";
    /// No valid ticket for this file, or no such file here: one answer for both, so a
    /// non-member learns nothing about which files exist.
    pub const FORBIDDEN: &str = "forbidden";
    /// A `get` after the ticket its connection was granted with expired: send `want` (or
    /// `watch`) again with a fresh one.
    pub const TICKET_EXPIRED: &str = "ticket_expired";
}

fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split([' ', '\t']).filter(|w| !w.is_empty())
}

/// A decimal index below `MAX_PIECES`; the bound is checked here, once, at the edge.
fn parse_index(w: &str) -> Option<usize> {
    if w.is_empty() || w.len() > 7 || !w.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: u64 = w.parse().ok()?;
    (i < MAX_PIECES).then_some(i as usize)
}

fn name(kind: NameKind, w: &str) -> Option<String> {
    names::is_valid(kind, w).then(|| w.to_string())
}

fn pass(user: &str, expiry: &str, mac: &str) -> Option<Pass> {
    Some(Pass {
        downloader: name(NameKind::User, user)?,
        ticket: Ticket::parse(expiry, mac)?,
    })
}

fn encode_pass(verb: &str, group: &str, file: &str, pass: &Option<Pass>) -> String {
    match pass {
        Some(p) => format!(
            "{verb} {group} {file} {} {}",
            p.downloader,
            p.ticket.encode()
        ),
        None => format!("{verb} {group} {file}"),
    }
}

impl Request {
    /// Parses one request line (without its terminator). `None` means `err bad_request`.
    pub fn parse(line: &[u8]) -> Option<Request> {
        let line = std::str::from_utf8(line).ok()?;
        let w: Vec<&str> = words(line).take(7).collect();
        match w.as_slice() {
            ["want", g, f] => Some(Request::Want {
                group: name(NameKind::Group, g)?,
                file: name(NameKind::File, f)?,
                pass: None,
            }),
            ["want", g, f, u, e, m] => Some(Request::Want {
                group: name(NameKind::Group, g)?,
                file: name(NameKind::File, f)?,
                pass: Some(pass(u, e, m)?),
            }),
            ["get", g, f, i] => Some(Request::Get {
                group: name(NameKind::Group, g)?,
                file: name(NameKind::File, f)?,
                index: parse_index(i)?,
            }),
            ["watch", g, f] => Some(Request::Watch {
                group: name(NameKind::Group, g)?,
                file: name(NameKind::File, f)?,
                pass: None,
            }),
            ["watch", g, f, u, e, m] => Some(Request::Watch {
                group: name(NameKind::Group, g)?,
                file: name(NameKind::File, f)?,
                pass: Some(pass(u, e, m)?),
            }),
            ["has", r] => Some(Request::Has(Ranges::parse(r)?)),
            _ => None,
        }
    }

    /// The request line, without the terminator.
    pub fn encode(&self) -> String {
        match self {
            Request::Want { group, file, pass } => encode_pass("want", group, file, pass),
            Request::Get { group, file, index } => format!("get {group} {file} {index}"),
            Request::Watch { group, file, pass } => encode_pass("watch", group, file, pass),
            Request::Has(r) => format!("has {}", r.0),
        }
    }
}

impl Reply {
    /// Parses one reply header line. `None` is a protocol violation by the seeder.
    pub fn parse(line: &[u8]) -> Option<Reply> {
        let line = std::str::from_utf8(line).ok()?;
        let mut it = words(line);
        match it.next()? {
            "has" => {
                let r = Ranges::parse(it.next()?)?;
                it.next().is_none().then_some(Reply::Has(r))
            }
            "have" => {
                let n = parse_count(it.next()?)?;
                let have = PieceSet::from_wire(it.next()?, n)?;
                it.next().is_none().then_some(Reply::Have { have })
            }
            "piece" => {
                let index = parse_index(it.next()?)?;
                let len = it.next()?;
                if len.is_empty() || len.len() > 7 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let len: u64 = len.parse().ok()?;
                if len > PIECE_SIZE || it.next().is_some() {
                    return None;
                }
                Some(Reply::Piece {
                    index,
                    len: len as usize,
                })
            }
            "err" => {
                let reason: Vec<&str> = it.collect();
                if reason.is_empty() {
                    return None;
                }
                Some(Reply::Err(reason.join(" ")))
            }
            _ => None,
        }
    }

    /// The header line, without the terminator.
    pub fn encode(&self) -> String {
        match self {
            Reply::Have { have } => format!("have {} {}", have.len(), have.to_wire()),
            Reply::Piece { index, len } => format!("piece {index} {len}"),
            Reply::Err(reason) => format!("err {reason}"),
            Reply::Has(r) => format!("has {}", r.0),
        }
    }
}

/// A piece count: `0..=MAX_PIECES`.
fn parse_count(w: &str) -> Option<usize> {
    if w.is_empty() || w.len() > 7 || !w.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = w.parse().ok()?;
    (n <= MAX_PIECES).then_some(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip() {
        let pass = Pass {
            downloader: "bob".into(),
            ticket: Ticket {
                expiry: 1_800_000_030,
                mac: [0xa5; 32],
            },
        };
        let reqs = [
            Request::Want {
                group: "g1".into(),
                file: "a.bin".into(),
                pass: None,
            },
            Request::Want {
                group: "g1".into(),
                file: "a.bin".into(),
                pass: Some(pass.clone()),
            },
            Request::Watch {
                group: "g".into(),
                file: "a.bin".into(),
                pass: Some(pass),
            },
            Request::Get {
                group: "g".into(),
                file: "f-1_x".into(),
                index: 524_287,
            },
            Request::Watch {
                group: "g".into(),
                file: "a.bin".into(),
                pass: None,
            },
            Request::Has(Ranges("0-15,17".into())),
        ];
        for r in reqs {
            assert_eq!(Request::parse(r.encode().as_bytes()), Some(r));
        }
        assert_eq!(
            Request::parse(b"get\tg  f 3"),
            Some(Request::Get {
                group: "g".into(),
                file: "f".into(),
                index: 3
            })
        );
    }

    #[test]
    fn malformed_requests_are_rejected() {
        for bad in [
            &b""[..],
            b"want",
            b"want g",
            b"want g f extra",
            b"want g f bob 1800000030",
            b"want g f bob 1800000030 abcd",
            b"want g f b/b 1800000030 a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            b"watch g f bob -1 a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
            b"want g f bob 1 a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5 x",
            b"get g f",
            b"get g f -1",
            b"get g f 524288",
            b"get g f 99999999999999999999",
            b"get g f +1",
            b"get g ../etc 1",
            b"get g a/b 1",
            b"want \xff f",
            b"fetch g f 1",
            b"watch g",
            b"has",
            b"has 1 2",
            b"has 1;2",
            b"has -x",
        ] {
            assert_eq!(
                Request::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn replies_round_trip() {
        let mut set = PieceSet::empty(10);
        set.insert(3);
        let replies = [
            Reply::Have { have: set },
            Reply::Have {
                have: PieceSet::full(3),
            },
            Reply::Have {
                have: PieceSet::empty(0),
            },
            Reply::Piece {
                index: 7,
                len: 524_288,
            },
            Reply::Piece { index: 0, len: 1 },
            Reply::Err("no_such_file".into()),
            Reply::Err("busy now".into()),
            Reply::Has(Ranges("3".into())),
        ];
        for r in replies {
            assert_eq!(Reply::parse(r.encode().as_bytes()), Some(r));
        }
    }

    #[test]
    fn malformed_replies_are_rejected() {
        for bad in [
            &b"piece 1 524289"[..],
            b"piece 1",
            b"piece x 1",
            b"piece 1 2 3",
            b"have 10",
            b"have 10 b00",
            b"have 9999999 all",
            b"err",
            b"ok",
            b"\xfe",
            b"has",
            b"has 1 2",
            b"has a",
        ] {
            assert_eq!(
                Reply::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn has_ranges_are_checked_against_the_piece_count_by_the_receiver() {
        let r = Ranges("0-2,5".into());
        let set = r.to_set(8).map(|s| s.iter().collect::<Vec<_>>());
        assert_eq!(set, Some(vec![0, 1, 2, 5]));
        assert_eq!(r.to_set(5), None, "index 5 of a 5-piece file");
        assert_eq!(Ranges("3-1".into()).to_set(8), None);
        assert_eq!(Ranges(",,".into()).to_set(8), None);
    }

    #[test]
    fn long_range_lists_are_split_into_lines_that_fit() {
        let every_other = (0..100_000).filter(|i| i % 2 == 0);
        let lines = ranges_lines(every_other);
        assert!(lines.len() > 1);
        let mut seen = 0;
        for l in &lines {
            assert!(l.0.len() <= MAX_RANGES_CHARS);
            seen += l.to_set(100_000).map_or(0, |s| s.count());
        }
        assert_eq!(seen, 50_000);
        assert!(ranges_lines(std::iter::empty()).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::parse(&bytes);
            let _ = Reply::parse(&bytes);
        }

        #[test]
        fn parsed_requests_re_encode_to_an_equivalent_line(
            g in "[a-z]{1,8}", f in "[a-z.]{1,8}", i in 0usize..600_000) {
            let line = format!("get {g} {f} {i}");
            match Request::parse(line.as_bytes()) {
                Some(r) => prop_assert_eq!(Request::parse(r.encode().as_bytes()), Some(r)),
                None => prop_assert!(i >= 524_288 || f == "." || f == ".."),
            }
        }
    }
}
