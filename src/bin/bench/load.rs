//! The load generator: one thread, one `mio::Poll`, N non-blocking connections, each keeping
//! `depth` requests in flight. It speaks either the tracker's line protocol or Redis' RESP
//! replies (requests to Redis are inline commands). Latency is measured per request, from the
//! moment it is queued to the moment its whole reply has been parsed.

use crate::tls::TlsStream;
use groupshare::net::secure_stream::SecureStream;
use groupshare::protocol::tracker::{Reply, ReplyReader};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    /// `<tag> ok ...`, `<tag> err ...`, `<tag> list <n> ...` + n data lines.
    Tracker,
    /// `+...`, `-...`, `:...`, `$-1`, `$<n>` + n bytes + CRLF.
    Redis,
    /// Redis, but each request is two commands (`SET` then `WAIT`): two replies make one.
    RedisPairs,
}

/// How one case runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub depth: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one case measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Replies completed inside the measurement window.
    pub replies: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The slowest reply: a stall of the loop shows here long before it moves the p99.
    pub max_us: f64,
    /// Error replies (anywhere in the run) and the first of them.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.replies as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Incremental reply parser for one connection.
#[derive(Default)]
struct Parser {
    /// Tracker: the protocol's own reply reader (a `list` collects its data lines).
    tracker: ReplyReader,
    /// RedisPairs: the error of the pair's first reply, if any.
    err: Option<String>,
    /// RedisPairs: the first reply of the current pair has arrived.
    half: bool,
}

enum Parsed {
    /// Consumed this many bytes without finishing a reply.
    Partial(usize),
    /// Consumed this many bytes and finished a reply (error text if it was one).
    Reply(usize, Option<String>),
    /// Nothing complete in the buffer.
    NeedMore,
}

impl Parser {
    fn step(&mut self, proto: Proto, buf: &[u8]) -> Result<Parsed, String> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            return Ok(Parsed::NeedMore);
        };
        let line = &buf[..nl];
        let used = nl + 1;
        match proto {
            Proto::RedisPairs => match self.step(Proto::Redis, buf)? {
                Parsed::Reply(k, err) if !self.half => {
                    self.half = true;
                    self.err = err;
                    Ok(Parsed::Partial(k))
                }
                Parsed::Reply(k, err) => {
                    self.half = false;
                    Ok(Parsed::Reply(k, self.err.take().or(err)))
                }
                other => Ok(other),
            },
            Proto::Tracker => {
                let text = String::from_utf8_lossy(line);
                let text = text.strip_suffix('\r').unwrap_or(&text);
                match self.tracker.feed(text) {
                    Ok(None) => Ok(Parsed::Partial(used)),
                    Ok(Some((tag, r @ Reply::Err { .. }))) => {
                        Ok(Parsed::Reply(used, Some(r.encode(tag))))
                    }
                    Ok(Some(_)) => Ok(Parsed::Reply(used, None)),
                    Err(e) => Err(format!("unexpected tracker reply: {e}")),
                }
            }
            Proto::Redis => match line.first() {
                Some(b'+') | Some(b':') => Ok(Parsed::Reply(used, None)),
                Some(b'-') => Ok(Parsed::Reply(
                    used,
                    Some(String::from_utf8_lossy(line).trim_end().to_string()),
                )),
                Some(b'$') => {
                    let n: i64 = std::str::from_utf8(&line[1..])
                        .ok()
                        .and_then(|s| s.trim_end().parse().ok())
                        .ok_or_else(|| format!("malformed bulk header {line:?}"))?;
                    if n < 0 {
                        return Ok(Parsed::Reply(used, None));
                    }
                    let total = used + n as usize + 2;
                    if buf.len() < total {
                        Ok(Parsed::NeedMore)
                    } else {
                        Ok(Parsed::Reply(total, None))
                    }
                }
                _ => Err(format!(
                    "unexpected Redis reply: {:?}",
                    String::from_utf8_lossy(line)
                )),
            },
        }
    }
}

/// A connection of the generator: Redis in plain TCP or TLS, a tracker inside its secure
/// channel.
pub enum BenchStream {
    Plain(TcpStream),
    Secure(Box<SecureStream<TcpStream>>),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A set-up blocking connection, handed to `Conns::new`.
pub enum SetUp {
    Plain(std::net::TcpStream),
    Secure(Box<SecureStream<std::net::TcpStream>>),
    Tls(Box<TlsStream<std::net::TcpStream>>),
}

impl Read for SetUp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            SetUp::Plain(s) => s.read(buf),
            SetUp::Secure(s) => s.read(buf),
            SetUp::Tls(s) => s.read(buf),
        }
    }
}

impl Write for SetUp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SetUp::Plain(s) => s.write(buf),
            SetUp::Secure(s) => s.write(buf),
            SetUp::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SetUp::Plain(s) => s.flush(),
            SetUp::Secure(s) => s.flush(),
            SetUp::Tls(s) => s.flush(),
        }
    }
}

impl From<std::net::TcpStream> for SetUp {
    fn from(s: std::net::TcpStream) -> SetUp {
        SetUp::Plain(s)
    }
}

impl From<SecureStream<std::net::TcpStream>> for SetUp {
    fn from(s: SecureStream<std::net::TcpStream>) -> SetUp {
        SetUp::Secure(Box::new(s))
    }
}

fn nonblocking(s: std::net::TcpStream) -> Result<TcpStream, String> {
    s.set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(TcpStream::from_std(s))
}

impl Read for BenchStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BenchStream::Plain(s) => s.read(buf),
            BenchStream::Secure(s) => s.read(buf),
            BenchStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for BenchStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            BenchStream::Plain(s) => s.write(buf),
            BenchStream::Secure(s) => s.write(buf),
            BenchStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            BenchStream::Plain(s) => s.flush(),
            BenchStream::Secure(s) => s.flush(),
            BenchStream::Tls(s) => s.flush(),
        }
    }
}

impl BenchStream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            BenchStream::Plain(s) => s,
            BenchStream::Secure(s) => s.as_mut(),
            BenchStream::Tls(s) => &mut s.sock,
        }
    }
}

/// A set of established connections the generator drives; they stay open between cases and
/// keep their tag counters (tracker tags must never repeat for one instance: deduplication).
pub struct Conns {
    pub streams: Vec<BenchStream>,
    pub next_tag: Vec<u64>,
}

impl Conns {
    /// Takes blocking streams (set up already) and makes them non-blocking.
    pub fn new<T: Into<SetUp>>(streams: Vec<T>, first_tag: u64) -> Result<Conns, String> {
        let n = streams.len();
        let streams = streams
            .into_iter()
            .map(|s| match s.into() {
                SetUp::Plain(s) => nonblocking(s).map(BenchStream::Plain),
                SetUp::Secure(s) => {
                    s.socket()
                        .set_nonblocking(true)
                        .map_err(|e| format!("set_nonblocking: {e}"))?;
                    let _ = s.socket().set_nodelay(true);
                    Ok(BenchStream::Secure(Box::new(
                        s.map_socket(TcpStream::from_std),
                    )))
                }
                SetUp::Tls(s) => {
                    s.sock
                        .set_nonblocking(true)
                        .map_err(|e| format!("set_nonblocking: {e}"))?;
                    Ok(BenchStream::Tls(Box::new(
                        s.map_socket(TcpStream::from_std),
                    )))
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Conns {
            streams,
            next_tag: vec![first_tag; n],
        })
    }

    /// Runs one case: `make(conn, tag, out)` appends one request to `out`.
    pub fn run(
        &mut self,
        proto: Proto,
        plan: Plan,
        mut make: impl FnMut(usize, u64, &mut Vec<u8>),
    ) -> Result<Stats, String> {
        let n = self.streams.len();
        let mut poll = Poll::new().map_err(|e| format!("mio poll: {e}"))?;
        for (i, s) in self.streams.iter_mut().enumerate() {
            poll.registry()
                .register(
                    s.source(),
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("register: {e}"))?;
        }
        let result = self.drive(&mut poll, proto, plan, &mut make, n);
        for s in self.streams.iter_mut() {
            let _ = poll.registry().deregister(s.source());
        }
        result
    }

    fn drive(
        &mut self,
        poll: &mut Poll,
        proto: Proto,
        plan: Plan,
        make: &mut impl FnMut(usize, u64, &mut Vec<u8>),
        n: usize,
    ) -> Result<Stats, String> {
        let mut sent: Vec<VecDeque<Instant>> = vec![VecDeque::new(); n];
        let mut inbuf: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut outbuf: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut parsers: Vec<Parser> = (0..n).map(|_| Parser::default()).collect();
        let mut scratch = vec![0u8; 256 * 1024];
        let mut samples: Vec<u64> = Vec::with_capacity(1 << 20);
        let mut stats = Stats::default();
        let mut events = Events::with_capacity(1024);

        let start = Instant::now();
        let m_start = start + plan.warmup;
        let m_end = m_start + plan.measure;
        let drain_limit = m_end + Duration::from_secs(30);

        // Prime every connection.
        for i in 0..n {
            self.refill(i, plan.depth, &mut sent[i], &mut outbuf[i], make, start);
            self.flush(i, &mut outbuf[i])?;
        }
        loop {
            let now = Instant::now();
            let sending = now < m_end;
            let inflight: usize = sent.iter().map(VecDeque::len).sum();
            if !sending && inflight == 0 {
                break;
            }
            if now > drain_limit {
                return Err(format!(
                    "{inflight} replies still outstanding 30 s after the case ended"
                ));
            }
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .map_err(|e| format!("poll: {e}"))?;
            for ev in events.iter() {
                let i = ev.token().0;
                if ev.is_readable() {
                    loop {
                        match self.streams[i].read(&mut scratch) {
                            Ok(0) => {
                                return Err(format!(
                                    "connection {i} closed by the server ({} requests in flight)",
                                    sent[i].len()
                                ))
                            }
                            Ok(k) => inbuf[i].extend_from_slice(&scratch[..k]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(e) => return Err(format!("read on connection {i}: {e}")),
                        }
                    }
                    let now = Instant::now();
                    let mut pos = 0;
                    loop {
                        match parsers[i].step(proto, &inbuf[i][pos..])? {
                            Parsed::NeedMore => break,
                            Parsed::Partial(k) => pos += k,
                            Parsed::Reply(k, err) => {
                                pos += k;
                                let t0 = sent[i].pop_front().ok_or_else(|| {
                                    format!("connection {i}: a reply nobody asked for")
                                })?;
                                if let Some(e) = err {
                                    stats.errors += 1;
                                    stats.first_error.get_or_insert(e);
                                }
                                if now >= m_start && now < m_end {
                                    stats.replies += 1;
                                }
                                if t0 >= m_start && t0 < m_end {
                                    samples.push((now - t0).as_nanos() as u64);
                                }
                            }
                        }
                    }
                    inbuf[i].drain(..pos);
                    if now < m_end {
                        self.refill(i, plan.depth, &mut sent[i], &mut outbuf[i], make, now);
                    }
                }
                // Also when `outbuf` is empty: a secure stream may hold records for the socket.
                self.flush(i, &mut outbuf[i])?;
            }
        }
        stats.secs = plan.measure.as_secs_f64();
        samples.sort_unstable();
        stats.p50_us = percentile(&samples, 0.50);
        stats.p99_us = percentile(&samples, 0.99);
        stats.max_us = percentile(&samples, 1.0);
        Ok(stats)
    }

    fn refill(
        &mut self,
        i: usize,
        depth: usize,
        sent: &mut VecDeque<Instant>,
        out: &mut Vec<u8>,
        make: &mut impl FnMut(usize, u64, &mut Vec<u8>),
        now: Instant,
    ) {
        while sent.len() < depth {
            let tag = self.next_tag[i];
            self.next_tag[i] += 1;
            make(i, tag, out);
            sent.push_back(now);
        }
    }

    fn flush(&mut self, i: usize, out: &mut Vec<u8>) -> Result<(), String> {
        let mut done = 0;
        while done < out.len() {
            match self.streams[i].write(&out[done..]) {
                Ok(0) => return Err(format!("connection {i}: write returned 0")),
                Ok(k) => done += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write on connection {i}: {e}")),
            }
        }
        out.drain(..done);
        match self.streams[i].flush() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(format!("write on connection {i}: {e}")),
        }
    }
}

/// Nearest-rank percentile of sorted nanosecond samples, in microseconds.
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}
