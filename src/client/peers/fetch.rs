//! One download connection to one peer: a state machine (`Connecting` → `Live`) over a
//! non-blocking socket, sending requests and reading replies. Piece payloads are read straight
//! from the socket into one preallocated piece buffer; only the few bytes that arrive in the
//! same read as a header line are copied out of the line framer. What the replies mean for the
//! download is decided in `download.rs`.

use crate::net::conn::write_pending;
use crate::net::framer::{Frame, LineFramer, MAX_LINE};
use crate::net::identity::Identity;
use crate::net::secure::Conversation;
use crate::net::secure_stream::SecureStream;
use crate::pieces::{piece_len, PieceSet, PIECE_SIZE};
use crate::protocol::peer::{Ranges, Reply, Request};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::{HashSet, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes read per syscall while a header line is expected: small, because whatever payload
/// comes along with the header is copied once more; the payload itself is read in one piece.
const HEADER_READ: usize = 8 * 1024;

/// A request sent and not yet answered; replies come back in this order. (`has` notices get
/// no reply and are not awaited.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaited {
    Want,
    Watch,
    Get(usize),
}

#[derive(Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Non-blocking connect under way; WRITABLE tells when it is done.
    Connecting,
    /// Connected; `want` was sent.
    Live,
}

/// What reading found.
#[derive(Debug)]
pub enum Incoming {
    /// Nothing more now.
    Blocked,
    Closed,
    Have(PieceSet),
    /// Pushed by a watched peer: these pieces may now be asked for.
    Has(PieceSet),
    /// Piece `index` arrived whole; its bytes are `piece_data(len)`.
    Piece {
        index: usize,
        len: usize,
    },
    /// The peer refused a request.
    Refused {
        req: Awaited,
        reason: String,
    },
}

/// Where the reader is in the reply stream.
#[derive(Debug)]
enum Rx {
    Header,
    Payload {
        index: usize,
        len: usize,
        got: usize,
    },
}

/// The keys of a connection to a seeder: ours, and the one the tracker published for it.
pub struct SeederKeys<'a> {
    pub ours: &'a Identity,
    pub expected: [u8; 32],
}

pub struct FetchConn {
    pub user: String,
    pub addr: SocketAddr,
    /// Inside the secure channel, gated: nothing (not even `want`) leaves until the seeder's
    /// handshake proves `expected`, the key the tracker published for it.
    stream: SecureStream<TcpStream>,
    expected: [u8; 32],
    pub state: ConnState,
    /// Connect, or next reply, must happen by then; `None` while idle.
    pub deadline: Option<Instant>,
    /// The file's size and piece count, to check headers against.
    size: u64,
    npieces: usize,
    input: LineFramer,
    out: Vec<u8>,
    out_pos: usize,
    rx: Rx,
    /// One piece; allocated at the first piece, reused for every later one.
    buf: Vec<u8>,
    pub pending: VecDeque<Awaited>,
    /// The peer's own answer to `want`: the truth about its pieces (the tracker's is a hint).
    pub have: Option<PieceSet>,
    /// Pieces the peer refused since its last `have`; not asked for again until it re-announces.
    pub refused: HashSet<usize>,
    /// When to ask `want` again while idle (a partial source may have verified more); unused
    /// once the peer answered `watch`, as it then tells of new pieces itself.
    pub next_want: Instant,
    /// The peer answered `watch`: it pushes `has` lines and takes our `has` notices.
    pub watched: bool,
    writable: bool,
    /// The expiry of the ticket last shown on this connection (`want`/`watch`).
    pub ticket_sent: Option<u64>,
    /// When to show a fresher ticket, if the tracker has given one: halfway through the life
    /// of the last one shown.
    pub renew_at: Option<Instant>,
}

impl FetchConn {
    /// Starts a non-blocking connect and registers it (READABLE | WRITABLE until connected).
    pub fn connect(
        registry: &Registry,
        token: Token,
        user: String,
        addr: SocketAddr,
        size: u64,
        deadline: Instant,
        keys: SeederKeys<'_>,
    ) -> io::Result<Self> {
        let SeederKeys {
            ours: identity,
            expected,
        } = keys;
        let mut stream = SecureStream::dial(addr, identity, Conversation::ClientClient, true)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(FetchConn {
            user,
            addr,
            stream,
            expected,
            state: ConnState::Connecting,
            deadline: Some(deadline),
            size,
            npieces: crate::pieces::piece_count(size) as usize,
            input: LineFramer::new(MAX_LINE),
            out: Vec::new(),
            out_pos: 0,
            rx: Rx::Header,
            buf: Vec::new(),
            pending: VecDeque::new(),
            have: None,
            refused: HashSet::new(),
            next_want: deadline,
            watched: false,
            writable: true,
            ticket_sent: None,
            renew_at: None,
        })
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// After WRITABLE (or an error) while connecting: `Ok(true)` once connected, `Ok(false)`
    /// if still in progress (a spurious event), `Err` if the connect failed.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.socket().take_error()? {
            return Err(e);
        }
        match self.stream.socket().peer_addr() {
            Ok(_) => {
                self.state = ConnState::Live;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn gets_in_flight(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| matches!(p, Awaited::Get(_)))
            .count()
    }

    /// Queues a request; the reply deadline starts if nothing else was awaited.
    pub fn send(&mut self, req: &Request, pending: Awaited, reply_deadline: Instant) {
        self.out.extend_from_slice(req.encode().as_bytes());
        self.out.push(b'\n');
        if self.pending.is_empty() {
            self.deadline = Some(reply_deadline);
        }
        self.pending.push_back(pending);
    }

    /// Queues a notice (`has`), which gets no reply.
    pub fn notice(&mut self, req: &Request) {
        self.out.extend_from_slice(req.encode().as_bytes());
        self.out.push(b'\n');
    }

    /// Writes what is queued; keeps WRITABLE interest only while bytes are left.
    pub fn flush(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        write_pending(&mut self.stream, &self.out, &mut self.out_pos)?;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        let records_left = match io::Write::flush(&mut self.stream) {
            Ok(()) => false,
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            Err(e) => return Err(e),
        };
        // (A gated stream holds its records until `check_seeder_key`: no interest for them.)
        let records_left = records_left && !self.stream.awaiting_approval();
        let want_writable =
            self.state == ConnState::Connecting || !self.out.is_empty() || records_left;
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

    /// The payload of the piece just returned by `read_next`.
    pub fn piece_data(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    /// After the handshake: the seeder must have proved the key the tracker published for it;
    /// then what is queued (`want`) may go. Anyone else at that address gets nothing.
    fn check_seeder_key(&mut self) -> io::Result<()> {
        if !self.stream.awaiting_approval() {
            return Ok(());
        }
        let proven = self.stream.remote_static().copied();
        if proven.is_some_and(|k| subtle::ConstantTimeEq::ct_eq(&k[..], &self.expected[..]).into())
        {
            self.stream.approve();
            match io::Write::flush(&mut self.stream) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            Err(invalid(
                "it did not prove the key the tracker published for it (another program at that address?)",
            ))
        }
    }

    /// Reads until one reply is complete (or nothing more is available). A reply that does
    /// not match what was asked is an `InvalidData` error: the peer is broken.
    pub fn read_next(&mut self, reply_deadline: Instant) -> io::Result<Incoming> {
        loop {
            if self.stream.awaiting_approval() {
                self.check_seeder_key()?;
            }
            if let Rx::Payload { index, len, got } = &mut self.rx {
                let (index, len) = (*index, *len);
                if *got < len {
                    *got += self.input.take_raw(&mut self.buf[*got..len]);
                }
                if *got < len {
                    match self.stream.read(&mut self.buf[*got..len]) {
                        Ok(0) => return Ok(Incoming::Closed),
                        Ok(n) => *got += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            return Ok(Incoming::Blocked)
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                self.rx = Rx::Header;
                self.replied(reply_deadline);
                return Ok(Incoming::Piece { index, len });
            }
            match self.input.next_line() {
                Frame::Line(line) => {
                    let reply = Reply::parse(line);
                    return self.on_header(reply, reply_deadline);
                }
                Frame::TooLong => return Err(invalid("reply line too long")),
                Frame::NeedMore => {}
            }
            match self.input.read_from(&mut self.stream, HEADER_READ)? {
                Some(0) => return Ok(Incoming::Closed),
                Some(_) => {}
                None if self.stream.awaiting_approval() => continue,
                None => return Ok(Incoming::Blocked),
            }
        }
    }

    fn replied(&mut self, reply_deadline: Instant) {
        self.pending.pop_front();
        self.deadline = (!self.pending.is_empty()).then_some(reply_deadline);
    }

    fn on_header(&mut self, reply: Option<Reply>, reply_deadline: Instant) -> io::Result<Incoming> {
        let Some(reply) = reply else {
            return Err(invalid("malformed reply"));
        };
        if let Reply::Has(ranges) = &reply {
            // Unprompted, between replies: it answers nothing and consumes no request.
            let set = pushed(ranges, self.npieces, self.watched).map_err(invalid)?;
            for i in set.iter() {
                self.refused.remove(&i);
            }
            return Ok(Incoming::Has(set));
        }
        let Some(&front) = self.pending.front() else {
            return Err(invalid("reply to nothing"));
        };
        match (reply, front) {
            (Reply::Have { have }, Awaited::Want | Awaited::Watch) => {
                if have.len() != self.npieces {
                    return Err(invalid("have with the wrong piece count"));
                }
                if front == Awaited::Watch {
                    self.watched = true;
                }
                self.replied(reply_deadline);
                self.refused.clear();
                Ok(Incoming::Have(have))
            }
            (Reply::Piece { index, len }, Awaited::Get(asked)) => {
                if index != asked || len as u64 != piece_len(self.size, index as u64) {
                    return Err(invalid("piece header does not match the request"));
                }
                if self.buf.len() < PIECE_SIZE as usize {
                    self.buf = vec![0; PIECE_SIZE as usize];
                }
                self.rx = Rx::Payload { index, len, got: 0 };
                // Zero-length payloads cannot occur (a piece has at least one byte), but the
                // payload loop would deliver it correctly anyway.
                self.read_next(reply_deadline)
            }
            (Reply::Err(reason), req) => {
                self.replied(reply_deadline);
                if let Awaited::Get(i) = req {
                    self.refused.insert(i);
                }
                Ok(Incoming::Refused { req, reason })
            }
            _ => Err(invalid("reply does not match the request")),
        }
    }
}

/// The pieces a pushed `has` line names, or why the peer is broken: only a peer that accepted
/// `watch` pushes, and only pieces of this file.
fn pushed(ranges: &Ranges, npieces: usize, watched: bool) -> Result<PieceSet, &'static str> {
    if !watched {
        return Err("has on a connection that does not watch");
    }
    ranges
        .to_set(npieces)
        .ok_or("has with pieces past the end or out of order")
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_has_is_taken_only_from_a_watched_peer_and_only_for_this_file() {
        let r = Ranges("1-2,7".into());
        let set = pushed(&r, 8, true).map(|s| s.iter().collect::<Vec<_>>());
        assert_eq!(set, Ok(vec![1, 2, 7]));
        assert!(
            pushed(&r, 8, false).is_err(),
            "the peer was never asked to watch"
        );
        assert!(pushed(&r, 7, true).is_err(), "piece 7 of a 7-piece file");
        assert!(
            pushed(&Ranges("5,2".into()), 8, true).is_err(),
            "out of order"
        );
    }
}
