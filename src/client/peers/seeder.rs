//! Upload connections: one accepted peer each, answering its requests in order from the
//! catalog. A connection holds at most `MAX_OUTPUT_REPLIES` replies (so at most two pieces) of
//! output; while that is full it reads no more requests, and it resumes reading as soon as its
//! output drains (readiness is edge-triggered, so `service` reads again itself). Under an
//! upload limit (`limit::TokenBucket`, shared by all connections) a connection answers no
//! further request while the bucket is in debt and says so (`deferred`); the peer side calls
//! `service` again once the bucket allows, as no readiness event will come for those requests.

use super::catalog::Catalog;
use super::limit::TokenBucket;
use crate::net::conn::write_pending;
use crate::net::framer::{Frame, LineFramer, MAX_LINE};
use crate::pieces::{piece_len, PIECE_SIZE};
use crate::protocol::peer::{reason, Reply, Request};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
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
    stream: TcpStream,
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
}

impl UploadConn {
    pub fn new(stream: TcpStream) -> Self {
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
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// True if the last `service` left requests unanswered for the upload limit: call it
    /// again at the bucket's `ready_at`.
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// Reads requests, answers them and writes replies until the socket has nothing more,
    /// the output is full, the upload limit defers it, or the connection is done.
    /// `Ok(false)`: close it.
    pub fn service(
        &mut self,
        registry: &Registry,
        token: Token,
        catalog: &Catalog,
        mut limit: Option<&mut TokenBucket>,
        now: Instant,
    ) -> io::Result<bool> {
        self.deferred = false;
        loop {
            // Answer buffered requests while there is room for their output.
            let mut need_more = false;
            while !self.close_after && self.out.len() < MAX_OUTPUT_REPLIES {
                if limit.as_deref_mut().is_some_and(|b| !b.may_send(now)) {
                    self.deferred = true;
                    break;
                }
                match self.input.next_line() {
                    Frame::Line(line) => {
                        let out = answer(line, catalog, &mut self.spare, &mut self.file);
                        if out.piece {
                            if let Some(b) = limit.as_deref_mut() {
                                b.charge((out.end - out.start) as u64, now);
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
        let want_writable = !self.out.is_empty();
        if want_writable != self.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, token, interest)?;
            self.writable = want_writable;
        }
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
        Ok(true)
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

/// The reply to one request line: looked up by `(group, file)` in the catalog only.
fn answer(
    line: &[u8],
    catalog: &Catalog,
    spare: &mut Vec<Vec<u8>>,
    cache: &mut Option<(PathBuf, File)>,
) -> Out {
    let Some(req) = Request::parse(line) else {
        return refuse(reason::BAD_REQUEST);
    };
    let (group, file, index) = match &req {
        Request::Want { group, file } => {
            return match catalog.get(group, file) {
                Some(e) => small(Reply::Have {
                    have: e.have.clone(),
                }),
                None => refuse(reason::NO_SUCH_FILE),
            }
        }
        Request::Get { group, file, index } => (group, file, *index),
    };
    let Some(entry) = catalog.get(group, file) else {
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
    Out {
        data,
        start,
        end: HEADER_ROOM + len,
        piece: true,
    }
}
