//! Upload connections: one accepted peer each, answering its requests in order from the
//! catalog. A connection holds at most `MAX_OUTPUT_REPLIES` replies (so at most two pieces) of
//! output; while that is full it reads no more requests, and it resumes reading as soon as its
//! output drains (readiness is edge-triggered, so `service` reads again itself). Under an
//! upload limit (`limit::TokenBucket`, shared by all connections) a connection answers no
//! further request while the bucket is in debt and says so (`deferred`); the peer side calls
//! `service` again once the bucket allows, as no readiness event will come for those requests.
//!
//! A downloader that `watch`es a file is told of pieces it may ask for as they come (`has`
//! lines pushed between replies, `push_has`), and tells of the pieces it verifies (`has`
//! notices, which get no reply). For a file this client shared itself the pieces it is told of
//! are its super-seeding offers (`superseed::Crowd`); for a download in progress they are the
//! pieces verified since.

use super::catalog::Catalog;
use super::gate::{Access, Grants, TicketGate};
use super::limit::TokenBucket;
use super::superseed::{Crowd, WatcherId};
use super::{Socket, TOKEN_BASE};
use crate::net::conn::write_pending;
use crate::net::framer::{Frame, LineFramer, MAX_LINE};
use crate::net::secure_stream::SecureStream;
use crate::pieces::{piece_len, PIECE_SIZE};
use crate::protocol::peer::{ranges_lines, reason, Pass, Reply, Request};
use crate::runtime::Rng;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// Concurrent upload connections: each may pin two 512 KiB piece buffers, so 64 bounds the
/// seeding side to about 64 MiB even when every slot is busy. Beyond it: `err busy`, close.
pub const MAX_UPLOADS: usize = 64;

/// Replies queued per connection: one being written and one ready behind it keeps the socket
/// busy; each is at most one piece, so this is the "two pieces of output" bound.
pub const MAX_OUTPUT_REPLIES: usize = 2;

/// Replies and pushed `has` lines queued on one connection beyond which it is closed: a
/// downloader that stops reading while pieces keep being announced to it. Each line is at
/// most `MAX_RANGES_CHARS`, so this bounds a connection's pushed output to about 8 MiB.
pub const MAX_QUEUED_OUTPUT: usize = 256;

/// Bytes read per syscall from a downloader: requests are short lines, many fit in this.
const REQUEST_READ: usize = 16 * 1024;

/// Room before the payload in a piece buffer for the `piece <index> <len>\n` header, so
/// header and payload go out as one contiguous write without moving the payload.
const HEADER_ROOM: usize = 32;

/// One reply being written: `data[start..end]` is what is left to send.
struct Out {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// A piece buffer, worth keeping for the next piece.
    piece: bool,
}

pub struct UploadConn {
    /// The downloader's connection, inside its secure channel (this side the responder).
    stream: SecureStream<TcpStream>,
    input: LineFramer,
    out: VecDeque<Out>,
    /// Piece buffers already written out, reused (at most `MAX_OUTPUT_REPLIES`).
    spare: Vec<Vec<u8>>,
    /// A line was too long: answer it, then close.
    close_after: bool,
    /// The peer shut its side: answer what it asked, then close.
    eof: bool,
    /// The last file read from, so consecutive pieces do not reopen it.
    file: Option<(PathBuf, File)>,
    /// WRITABLE interest is registered (only while output is pending).
    writable: bool,
    /// The last `service` stopped answering because the upload limit's bucket was in debt.
    deferred: bool,
    /// The `(group, file)` this downloader watches: it gets `has` lines, may send `has`.
    watching: Option<(String, String)>,
    /// The files this connection's tickets opened, until when (`gate`).
    grants: Grants,
    /// Piece bytes queued on this connection, for the log line at its close.
    pub piece_bytes: u64,
}

impl UploadConn {
    pub fn new(stream: SecureStream<TcpStream>) -> Self {
        UploadConn {
            stream,
            input: LineFramer::new(MAX_LINE),
            out: VecDeque::new(),
            spare: Vec::new(),
            close_after: false,
            eof: false,
            file: None,
            writable: false,
            deferred: false,
            watching: None,
            grants: Grants::default(),
            piece_bytes: 0,
        }
    }

    /// The `(group, file)` this connection watches.
    pub fn watching(&self) -> Option<&(String, String)> {
        self.watching.as_ref()
    }

    /// Whether news of the watched file may be pushed at the tracker's time `now`: only while
    /// the connection's ticket for it lasts, so a member who left hears nothing more.
    pub fn may_hear(&self, now: u64) -> bool {
        self.watching
            .as_ref()
            .is_some_and(|(g, f)| self.grants.access(g, f, now) == Access::Granted)
    }

    /// Tells the downloader it may now ask for `pieces` (ascending), and writes what it can.
    /// `Ok(false)`: the downloader is not reading; close the connection.
    pub fn push_has(
        &mut self,
        registry: &Registry,
        token: Token,
        pieces: impl IntoIterator<Item = usize>,
    ) -> io::Result<bool> {
        for r in ranges_lines(pieces) {
            self.out.push_back(small(Reply::Has(r)));
        }
        if self.out.len() > MAX_QUEUED_OUTPUT {
            return Ok(false);
        }
        self.flush()?;
        self.update_interest(registry, token)?;
        Ok(true)
    }

    fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let want_writable = !self.out.is_empty() || self.stream.output_pending() > 0;
        if want_writable != self.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, token, interest)?;
            self.writable = want_writable;
        }
        Ok(())
    }

    pub fn stream_mut(&mut self) -> &mut SecureStream<TcpStream> {
        &mut self.stream
    }

    /// True if the last `service` left requests unanswered for the upload limit: call it
    /// again at the bucket's `ready_at`.
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// Reads requests, answers them and writes replies until the socket has nothing more,
    /// the output is full, the upload limit defers it, or the connection is done: what it
    /// serves from `catalog`, to whom `gate` admits. Without `turn` (others are waiting for
    /// the limit) it only writes and reports itself deferred. `Ok(false)`: close it.
    pub fn service(
        &mut self,
        registry: &Registry,
        token: Token,
        (catalog, gate): (&mut Catalog, &TicketGate),
        mut limit: Option<&mut TokenBucket>,
        turn: bool,
        now: Instant,
    ) -> io::Result<bool> {
        let unix = crate::auth::ticket::unix_now();
        let id: WatcherId = token.0;
        self.deferred = false;
        loop {
            // Answer buffered requests while there is room for their output.
            let mut need_more = false;
            while !self.close_after && self.out.len() < MAX_OUTPUT_REPLIES {
                if !turn || limit.as_deref_mut().is_some_and(|b| !b.may_send(now)) {
                    self.deferred = true;
                    break;
                }
                match self.input.next_line() {
                    Frame::Line(line) => {
                        let mut at = At {
                            catalog: &mut *catalog,
                            watching: &mut self.watching,
                            id,
                            now,
                            gate,
                            grants: &mut self.grants,
                            // The downloader's static key, proven by this channel's
                            // handshake: its tickets must name it.
                            remote_key: self.stream.remote_static(),
                            unix,
                        };
                        let Some(out) = answer(line, &mut at, &mut self.spare, &mut self.file)
                        else {
                            continue; // a notice: no reply
                        };
                        if out.piece {
                            let bytes = (out.end - out.start) as u64;
                            self.piece_bytes += bytes;
                            if let Some(b) = limit.as_deref_mut() {
                                b.charge(bytes, now);
                            }
                        }
                        self.out.push_back(out);
                    }
                    Frame::NeedMore => {
                        need_more = true;
                        break;
                    }
                    Frame::TooLong => {
                        self.out
                            .push_back(small(Reply::Err(reason::LINE_TOO_LONG.into())));
                        self.close_after = true;
                    }
                }
            }
            let drained = self.flush()?;
            if self.close_after {
                if drained {
                    return Ok(false);
                }
                break;
            }
            if self.deferred {
                break; // resumed by the peer side when the bucket allows
            }
            if !need_more {
                // Output was full. Drained now: answer the requests already buffered (no
                // readiness event will come for them). Not drained: wait for WRITABLE, and
                // leave further requests in the socket meanwhile.
                if drained {
                    continue;
                }
                break;
            }
            if self.eof {
                if drained {
                    return Ok(false);
                }
                break;
            }
            if self.input.room() == 0 {
                continue; // the framer reports the over-long line on the next pass
            }
            match self.input.read_from(&mut self.stream, REQUEST_READ)? {
                Some(0) => self.eof = true,
                Some(_) => {}
                None => break,
            }
        }
        self.update_interest(registry, token)?;
        Ok(true)
    }

    /// Writes queued replies until done or the socket is full. True when nothing is left.
    fn flush(&mut self) -> io::Result<bool> {
        while let Some(o) = self.out.front_mut() {
            if !write_pending(&mut self.stream, &o.data[..o.end], &mut o.start)? {
                return Ok(false);
            }
            if let Some(done) = self.out.pop_front() {
                if done.piece && self.spare.len() < MAX_OUTPUT_REPLIES {
                    self.spare.push(done.data);
                }
            }
        }
        // The channel's own records (the last chunk encrypted, a handshake message).
        match io::Write::flush(&mut self.stream) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn small(reply: Reply) -> Out {
    let mut data = reply.encode().into_bytes();
    data.push(b'\n');
    let end = data.len();
    Out {
        data,
        start: 0,
        end,
        piece: false,
    }
}

fn refuse(why: &str) -> Out {
    small(Reply::Err(why.to_string()))
}

/// What answering a request may read and change besides the connection's buffers.
struct At<'a> {
    catalog: &'a mut Catalog,
    /// The connection's watched `(group, file)`.
    watching: &'a mut Option<(String, String)>,
    id: WatcherId,
    now: Instant,
    gate: &'a TicketGate,
    grants: &'a mut Grants,
    remote_key: Option<&'a [u8; 32]>,
    /// The local unix time (tickets expire by the tracker's, which `gate` derives from it).
    unix: u64,
}

/// Checks a `want`/`watch` ticket; a good one for a file served here grants the connection
/// that file. False for everything else, which the caller answers `forbidden` alike.
fn admit(at: &mut At, pass: Option<&Pass>, group: &str, file: &str) -> bool {
    let Some(expiry) = at.gate.admit(pass, at.remote_key, group, file, at.unix) else {
        return false;
    };
    if at.catalog.get(group, file).is_none() {
        return false;
    }
    at.grants.grant(group, file, expiry);
    true
}

/// A watcher of `(group, file)` leaves its crowd (its connection closed or it watches another
/// file); the crowd goes with its last watcher.
pub fn leave_crowd(catalog: &mut Catalog, watching: Option<&(String, String)>, id: WatcherId) {
    let Some((g, f)) = watching else {
        return;
    };
    if let Some(e) = catalog.get_mut(g, f) {
        if let Some(c) = e.crowd.as_mut() {
            c.leave(id);
            if c.is_empty() {
                e.crowd = None;
            }
        }
    }
}

/// The `have` answer to `watch`: a super-seeded file's offer to this downloader, or every
/// verified piece.
fn watch(at: &mut At, group: &str, file: &str) -> Out {
    let renewal = at
        .watching
        .as_ref()
        .is_some_and(|(g, f)| g == group && f == file);
    if renewal {
        // A fresh ticket for the file already watched: its place in the crowd stays.
        if let Some(e) = at.catalog.get(group, file) {
            let have = match e.crowd.as_ref().and_then(|c| c.offer(at.id)) {
                Some(offer) => offer,
                None => e.have.clone(),
            };
            return small(Reply::Have { have });
        }
    }
    leave_crowd(at.catalog, at.watching.as_ref(), at.id);
    *at.watching = None;
    let Some(e) = at.catalog.get_mut(group, file) else {
        return refuse(reason::FORBIDDEN);
    };
    *at.watching = Some((group.to_string(), file.to_string()));
    if !e.super_seeds() {
        return small(Reply::Have {
            have: e.have.clone(),
        });
    }
    let n = e.have.len();
    let crowd = e
        .crowd
        .get_or_insert_with(|| Crowd::new(n, &mut Rng::new(crate::runtime::seed_u64())));
    small(Reply::Have {
        have: crowd.join(at.id, at.now),
    })
}

/// The reply to one request line: looked up by `(group, file)` in the catalog only. `None` for
/// a `has` notice, which gets no reply.
fn answer(
    line: &[u8],
    at: &mut At,
    spare: &mut Vec<Vec<u8>>,
    cache: &mut Option<(PathBuf, File)>,
) -> Option<Out> {
    let Some(req) = Request::parse(line) else {
        return Some(refuse(reason::BAD_REQUEST));
    };
    let (group, file, index) = match &req {
        Request::Want { group, file, pass } => {
            if !admit(at, pass.as_ref(), group, file) {
                return Some(refuse(reason::FORBIDDEN));
            }
            return Some(match at.catalog.get(group, file) {
                Some(e) => small(Reply::Have {
                    have: e.have.clone(),
                }),
                None => refuse(reason::FORBIDDEN),
            });
        }
        Request::Watch { group, file, pass } => {
            if !admit(at, pass.as_ref(), group, file) {
                return Some(refuse(reason::FORBIDDEN));
            }
            return Some(watch(at, group, file));
        }
        Request::Has(ranges) => {
            let (id, now) = (at.id, at.now);
            let Some((g, f)) = at.watching.as_ref() else {
                return None; // only meaningful on a watched connection; harmless otherwise
            };
            if let Some(e) = at.catalog.get_mut(g, f) {
                let set = ranges.to_set(e.have.len());
                if let (Some(c), Some(set)) = (e.crowd.as_mut(), set) {
                    c.holds(id, set.iter(), now);
                }
            }
            return None;
        }
        Request::Get { group, file, index } => (group, file, *index),
    };
    match at.grants.access(group, file, at.gate.now(at.unix)) {
        Access::Granted => Some(serve(at, group, file, index, spare, cache)),
        Access::Expired => Some(refuse(reason::TICKET_EXPIRED)),
        Access::None => Some(refuse(reason::FORBIDDEN)),
    }
}

/// A `get`: the piece, read from the catalog entry's file.
fn serve(
    at: &mut At,
    group: &str,
    file: &str,
    index: usize,
    spare: &mut Vec<Vec<u8>>,
    cache: &mut Option<(PathBuf, File)>,
) -> Out {
    let watched = at
        .watching
        .as_ref()
        .is_some_and(|(g, f)| g == group && f == file);
    let Some(entry) = at.catalog.get_mut(group, file) else {
        return refuse(reason::NO_SUCH_FILE);
    };
    if index >= entry.have.len() {
        return refuse(reason::BAD_INDEX);
    }
    if !entry.have.contains(index) {
        return refuse(reason::NOT_HELD);
    }
    let len = piece_len(entry.size, index as u64) as usize;
    if cache
        .as_ref()
        .map(|(p, _)| p != &entry.path)
        .unwrap_or(true)
    {
        match File::open(&entry.path) {
            Ok(f) => *cache = Some((entry.path.clone(), f)),
            Err(e) => {
                log::warn!("cannot open {} to serve it: {e}", entry.path.display());
                *cache = None;
                return refuse(reason::READ_FAILED);
            }
        }
    }
    let Some((_, f)) = cache.as_ref() else {
        return refuse(reason::READ_FAILED);
    };
    let mut data = spare.pop().unwrap_or_default();
    // Sized once; reused buffers are not zeroed again.
    data.resize(HEADER_ROOM + PIECE_SIZE as usize, 0);
    let header = format!("{}\n", Reply::Piece { index, len }.encode());
    let start = HEADER_ROOM - header.len();
    data[start..HEADER_ROOM].copy_from_slice(header.as_bytes());
    if let Err(e) = f.read_exact_at(
        &mut data[HEADER_ROOM..HEADER_ROOM + len],
        index as u64 * PIECE_SIZE,
    ) {
        log::warn!("cannot read piece {index} of {}: {e}", entry.path.display());
        spare.push(data);
        return refuse(reason::READ_FAILED);
    }
    if let (true, Some(c)) = (watched, entry.crowd.as_mut()) {
        c.sent(at.id, index, at.now);
    }
    Out {
        data,
        start,
        end: HEADER_ROOM + len,
        piece: true,
    }
}

/// Tells watchers what they may now ask for: the pieces downloads verified (to the watchers of
/// those files) and the crowds' new offers; only watchers whose ticket lasts at the tracker's
/// time `tracker_now` (a lapsed one hears its offers when it renews). Returns the upload
/// connections to close (not reading, or broken).
pub fn announce(
    slots: &mut Slab<Socket>,
    catalog: &mut Catalog,
    registry: &Registry,
    now: Instant,
    tracker_now: u64,
) -> Vec<usize> {
    let mut news: HashMap<usize, Vec<usize>> = HashMap::new();
    let verified = catalog.take_verified();
    if !verified.is_empty() {
        let mut by_file: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (g, f, i) in verified {
            by_file.entry((g, f)).or_default().push(i);
        }
        for (key, slot) in slots.iter() {
            if let Socket::Upload(conn) = slot {
                if let Some(pieces) = conn.watching().and_then(|w| by_file.get(w)) {
                    news.entry(key).or_default().extend(pieces);
                }
            }
        }
    }
    for crowd in catalog.crowds_mut() {
        for (id, pieces) in crowd.poll(now) {
            if let Some(key) = id.checked_sub(TOKEN_BASE) {
                news.entry(key).or_default().extend(pieces);
            }
        }
    }
    let mut close = Vec::new();
    for (key, mut pieces) in news {
        let Some(Socket::Upload(conn)) = slots.get_mut(key) else {
            continue;
        };
        if !conn.may_hear(tracker_now) {
            continue;
        }
        pieces.sort_unstable();
        pieces.dedup();
        match conn.push_has(registry, Token(TOKEN_BASE + key), pieces) {
            Ok(true) => {}
            Ok(false) => {
                log::debug!("upload connection closed: the downloader does not read");
                close.push(key);
            }
            Err(e) => {
                log::debug!("upload connection closed: {e}");
                close.push(key);
            }
        }
    }
    close
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ticket::{ticket_key, Claim, Ticket};
    use crate::client::peers::catalog::Entry;
    use crate::client::peers::superseed::OFFER_WINDOW;
    use crate::pieces::PieceSet;

    const N: usize = 20;

    /// This seeder's session secret in these tests.
    const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

    fn gate() -> TicketGate {
        TicketGate::new(ticket_key(SECRET), Default::default())
    }

    /// `want g f` or `watch g f` with a ticket for downloader `me`, valid 30 s more; other
    /// lines as they are.
    fn t(line: &str) -> String {
        let w: Vec<&str> = line.split(' ').collect();
        let [verb @ ("want" | "watch"), group, file] = w[..] else {
            return line.to_string();
        };
        let expiry = crate::auth::ticket::unix_now() + 30;
        let claim = Claim {
            downloader: "me",
            downloader_key: None,
            group,
            file,
            expiry,
        };
        let key = ticket_key(SECRET).unwrap_or_default();
        let ticket = Ticket::issue(&key, &claim);
        format!("{verb} {group} {file} me {}", ticket.encode())
    }

    /// One connection's side of answering: its watched file, its grants and its id.
    struct Conn {
        watching: Option<(String, String)>,
        grants: Grants,
        id: WatcherId,
        spare: Vec<Vec<u8>>,
        cache: Option<(PathBuf, File)>,
    }

    impl Conn {
        fn new(id: WatcherId) -> Conn {
            Conn {
                watching: None,
                grants: Grants::default(),
                id,
                spare: Vec::new(),
                cache: None,
            }
        }

        /// The reply's header line (`None`: no reply); `want`/`watch` get a good ticket.
        fn ask(&mut self, catalog: &mut Catalog, line: &str, now: Instant) -> Option<String> {
            self.ask_as_is(catalog, &t(line), now, crate::auth::ticket::unix_now())
        }

        /// The reply to exactly this line, at local unix time `unix`.
        fn ask_as_is(
            &mut self,
            catalog: &mut Catalog,
            line: &str,
            now: Instant,
            unix: u64,
        ) -> Option<String> {
            let gate = gate();
            let mut at = At {
                catalog,
                watching: &mut self.watching,
                id: self.id,
                now,
                gate: &gate,
                grants: &mut self.grants,
                remote_key: None,
                unix,
            };
            let out = answer(line.as_bytes(), &mut at, &mut self.spare, &mut self.cache)?;
            let text = String::from_utf8_lossy(&out.data[out.start..out.end]).to_string();
            Some(text.lines().next().unwrap_or("").to_string())
        }
    }

    fn offer(reply: Option<String>) -> PieceSet {
        let reply = reply.unwrap_or_default();
        let Some(Reply::Have { have }) = Reply::parse(reply.as_bytes()) else {
            panic!("not a have reply: {reply:?}");
        };
        have
    }

    /// A catalog with `f` in group `g`, shared by this client, backed by a real file.
    fn shared(dir: &std::path::Path) -> Catalog {
        let path = dir.join("f");
        std::fs::write(&path, vec![7u8; N * PIECE_SIZE as usize]).unwrap_or_default();
        let mut c = Catalog::default();
        c.insert("g", "f", Entry::share(path, N as u64 * PIECE_SIZE, N));
        c
    }

    #[test]
    fn watchers_of_a_shared_file_are_offered_different_pieces() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cat = shared(dir.path());
        let now = Instant::now();
        let (mut a, mut b) = (Conn::new(1), Conn::new(2));
        let oa = offer(a.ask(&mut cat, "watch g f", now));
        let ob = offer(b.ask(&mut cat, "watch g f", now));
        assert_eq!((oa.count(), ob.count()), (OFFER_WINDOW, OFFER_WINDOW));
        assert!(oa.iter().all(|i| !ob.contains(i)));
        // A plain `want` still sees every piece.
        let all = offer(Conn::new(3).ask(&mut cat, "want g f", now));
        assert!(all.is_full());
    }

    #[test]
    fn a_piece_sent_or_announced_is_replaced_by_a_new_offer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cat = shared(dir.path());
        let now = Instant::now();
        let mut a = Conn::new(1);
        let oa = offer(a.ask(&mut cat, "watch g f", now));
        let mut it = oa.iter();
        let (sent, told) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        let header = a.ask(&mut cat, &format!("get g f {sent}"), now);
        assert_eq!(header, Some(format!("piece {sent} {PIECE_SIZE}")));
        assert_eq!(
            a.ask(&mut cat, &format!("has {told}"), now),
            None,
            "no reply"
        );
        let news: Vec<(WatcherId, Vec<usize>)> =
            cat.crowds_mut().flat_map(|c| c.poll(now)).collect();
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].0, 1);
        assert_eq!(news[0].1.len(), 2);
        assert!(news[0].1.iter().all(|i| !oa.contains(*i)));
        // A newcomer is not offered what already left the seeder or is held.
        let ob = offer(Conn::new(2).ask(&mut cat, "watch g f", now));
        assert!(!ob.contains(sent) && !ob.contains(told));
    }

    #[test]
    fn the_crowd_ends_with_its_last_watcher() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cat = shared(dir.path());
        let now = Instant::now();
        let mut a = Conn::new(1);
        let mut b = Conn::new(2);
        a.ask(&mut cat, "watch g f", now);
        b.ask(&mut cat, "watch g f", now);
        leave_crowd(&mut cat, a.watching.as_ref(), a.id);
        assert!(cat.get("g", "f").is_some_and(|e| e.crowd.is_some()));
        leave_crowd(&mut cat, b.watching.as_ref(), b.id);
        assert!(cat.get("g", "f").is_some_and(|e| e.crowd.is_none()));
    }

    #[test]
    fn watchers_of_a_download_see_its_verified_pieces_and_are_told_of_new_ones() {
        let mut cat = Catalog::default();
        let part = PathBuf::from("/nonexistent/f.part");
        let mut have = PieceSet::empty(N);
        have.insert(4);
        cat.insert(
            "g",
            "f",
            Entry::download(part.clone(), N as u64 * PIECE_SIZE, have),
        );
        let now = Instant::now();
        let mut a = Conn::new(1);
        let seen = offer(a.ask(&mut cat, "watch g f", now));
        assert_eq!(seen.iter().collect::<Vec<_>>(), vec![4]);
        assert!(
            cat.get("g", "f").is_some_and(|e| e.crowd.is_none()),
            "not super-seeded"
        );
        cat.mark("g", "f", &part, 9);
        cat.mark("g", "f", &part, 9);
        assert_eq!(cat.take_verified(), vec![("g".into(), "f".into(), 9)]);
        assert!(cat.take_verified().is_empty());
        a.ask(&mut cat, "want g f", now);
        assert_eq!(
            a.ask(&mut cat, "get g f 10", now),
            Some("err not_held".into())
        );
    }

    #[test]
    fn notices_and_watches_of_unknown_files_change_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cat = shared(dir.path());
        let now = Instant::now();
        let mut a = Conn::new(1);
        assert_eq!(
            a.ask(&mut cat, "has 0-3", now),
            None,
            "not watching: ignored"
        );
        assert_eq!(
            a.ask(&mut cat, "watch g nope", now),
            Some("err forbidden".into()),
            "a good ticket for a file not served here: the same answer as a bad ticket"
        );
        assert!(a.watching.is_none());
        assert!(cat.get("g", "f").is_some_and(|e| e.crowd.is_none()));
        a.ask(&mut cat, "watch g f", now);
        assert_eq!(
            a.ask(&mut cat, "has 0-99", now),
            None,
            "past the end: ignored"
        );
    }

    #[test]
    fn without_a_good_ticket_nothing_is_served_and_nothing_is_revealed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cat = shared(dir.path());
        let now = Instant::now();
        let unix = crate::auth::ticket::unix_now();
        let mut c = Conn::new(1);
        let good = t("want g f");
        // The MAC's last hex digit changed (to another digit whatever it was).
        let last = if good.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}", &good[..good.len() - 1]);
        let other_user = good.replace(" me ", " mallory ");
        for line in [
            "want g f",
            "watch g f",
            "get g f 0",
            "want g nope",
            forged.as_str(),
            other_user.as_str(),
        ] {
            assert_eq!(
                c.ask_as_is(&mut cat, line, now, unix),
                Some("err forbidden".into()),
                "{line}"
            );
        }
        assert_eq!(
            c.ask_as_is(&mut cat, "get g f 0", now, unix),
            Some("err forbidden".into()),
            "no grant from the refused tickets"
        );
        assert!(c.watching.is_none());
        assert!(cat.get("g", "f").is_some_and(|e| e.crowd.is_none()));
    }

    #[test]
    fn a_get_after_the_ticket_expired_is_refused_until_a_fresh_one_comes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cat = shared(dir.path());
        let now = Instant::now();
        let unix = crate::auth::ticket::unix_now();
        let mut c = Conn::new(1);
        assert!(c
            .ask_as_is(&mut cat, &t("want g f"), now, unix)
            .is_some_and(|r| r.starts_with("have ")));
        let piece = format!("piece 0 {PIECE_SIZE}");
        assert_eq!(
            c.ask_as_is(&mut cat, "get g f 0", now, unix + 30),
            Some(piece)
        );
        assert_eq!(
            c.ask_as_is(&mut cat, "get g f 0", now, unix + 31),
            Some("err ticket_expired".into())
        );
        // The old ticket, shown again, no longer opens anything.
        let stale = t("want g f");
        assert_eq!(
            c.ask_as_is(&mut cat, &stale, now, unix + 31),
            Some("err forbidden".into())
        );
        assert!(c
            .ask_as_is(&mut cat, &t("want g f"), now, unix)
            .is_some_and(|r| r.starts_with("have ")));
        assert!(c
            .ask_as_is(&mut cat, "get g f 1", now, unix)
            .is_some_and(|r| r.starts_with("piece 1 ")));
    }

    #[test]
    fn a_renewed_watch_keeps_the_watchers_place_in_the_crowd() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cat = shared(dir.path());
        let now = Instant::now();
        let mut a = Conn::new(1);
        let first = offer(a.ask(&mut cat, "watch g f", now));
        let sent = first.iter().next().unwrap_or(0);
        a.ask(&mut cat, &format!("get g f {sent}"), now);
        let again = offer(a.ask(&mut cat, "watch g f", now));
        assert!(!again.contains(sent), "what it holds is not offered again");
        assert!(
            first
                .iter()
                .filter(|&i| i != sent)
                .all(|i| again.contains(i)),
            "the rest of its offer stands"
        );
    }

    #[test]
    fn a_watcher_hears_news_only_while_its_ticket_lasts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        // A responder's channel starts with the first bytes; none come in this test.
        let id = crate::net::identity::Identity::generate().unwrap_or_else(|e| panic!("{e}"));
        let stream = crate::net::secure_stream::SecureStream::new(
            TcpStream::from_std(s),
            crate::net::secure::Role::Responder,
            &id,
            None,
            crate::net::secure::Conversation::ClientClient,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut conn = UploadConn::new(stream);
        assert!(!conn.may_hear(100), "not watching");
        conn.watching = Some(("g".into(), "f".into()));
        assert!(!conn.may_hear(100), "watching without a grant");
        conn.grants.grant("g", "f", 100);
        assert!(conn.may_hear(100));
        assert!(!conn.may_hear(101), "the ticket ran out");
    }
}
