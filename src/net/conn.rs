//! A non-blocking stream with a line framer on the way in and a byte queue on the way out.
//! Poll loops own these; this module does the read/write syscalls and nothing else.

use super::framer::LineFramer;
use std::io::{self, ErrorKind, Read, Write};

/// Largest read in one syscall: one piece plus its header line fits, fewer syscalls per piece.
const READ_CHUNK: usize = 256 * 1024;

/// Writes `buf[*pos..]` to a non-blocking stream until it is all written or the socket is
/// full, advancing `*pos`. `Ok(true)` when everything was written. The one write loop every
/// connection in both programs uses.
pub fn write_pending<W: Write>(stream: &mut W, buf: &[u8], pos: &mut usize) -> io::Result<bool> {
    while *pos < buf.len() {
        match stream.write(&buf[*pos..]) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "peer stopped reading")),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// What a `fill` found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// The socket has no more bytes now (`WouldBlock`).
    Drained,
    /// The framer is full: handle its lines, then call `fill` again (edge-triggered readiness
    /// will not report the bytes still waiting in the socket).
    Full,
    /// The peer closed its side.
    Closed,
}

/// A buffered connection over any non-blocking stream.
#[derive(Debug)]
pub struct Conn<S> {
    pub stream: S,
    pub input: LineFramer,
    out: Vec<u8>,
    /// Bytes of `out` already written; the sent prefix is cut once it is large.
    out_pos: usize,
    /// Output capacity kept once everything is sent: small for the many idle client
    /// connections, large for the peer link, whose every turn would otherwise regrow it.
    keep_capacity: usize,
}

impl<S: Read + Write> Conn<S> {
    pub fn new(stream: S, line_limit: usize) -> Self {
        Conn {
            stream,
            input: LineFramer::new(line_limit),
            out: Vec::new(),
            out_pos: 0,
            keep_capacity: 64 * 1024,
        }
    }

    /// Sets how much output capacity survives an empty queue (see `keep_capacity`).
    pub fn keep_output_capacity(&mut self, bytes: usize) {
        self.keep_capacity = bytes;
    }

    /// Reads until the socket is drained, the framer is full or the peer closed.
    ///
    /// With `short_read_drains`, a short read counts as drained: the kernel had no more, and
    /// bytes arriving later raise a new readiness edge — this saves a `WouldBlock` read per
    /// request. Pass false when the event said the peer closed (its end-of-file raises no
    /// further edge, so it must be read now) or when resuming a paused reader.
    pub fn fill(&mut self, short_read_drains: bool) -> io::Result<ReadStatus> {
        loop {
            let want = self.input.room().min(READ_CHUNK);
            if want == 0 {
                return Ok(ReadStatus::Full);
            }
            match self.input.read_from(&mut self.stream, want)? {
                Some(0) => return Ok(ReadStatus::Closed),
                Some(n) if n < want && short_read_drains => return Ok(ReadStatus::Drained),
                Some(_) => {}
                None => return Ok(ReadStatus::Drained),
            }
        }
    }

    /// Reads raw bytes (not lines) into `buf`: used by the peer protocol for piece payloads.
    pub fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.stream.read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues a line; the `\n` is added.
    pub fn send_line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.push(b'\n');
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet written.
    pub fn out_pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes queued bytes until done or the socket is full. `Ok(true)` when nothing is left,
    /// in this queue or in the stream's own (a secure channel's records: its `flush` says
    /// `WouldBlock` while some wait for the socket).
    pub fn flush(&mut self) -> io::Result<bool> {
        write_pending(&mut self.stream, &self.out, &mut self.out_pos)?;
        if self.out_pos == self.out.len() {
            match self.stream.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
            self.out.clear();
            self.out_pos = 0;
            // Idle connections should not pin a large reply's allocation.
            if self.out.capacity() > self.keep_capacity {
                self.out = Vec::new();
            }
            Ok(true)
        } else {
            if self.out_pos > 64 * 1024 {
                self.out.drain(..self.out_pos);
                self.out_pos = 0;
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::framer::Frame;
    use super::*;
    use std::collections::VecDeque;

    /// A fake stream: reads come from a queue (then WouldBlock), writes accept `cap` bytes.
    struct Fake {
        input: VecDeque<u8>,
        closed: bool,
        written: Vec<u8>,
        cap: usize,
    }
    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return if self.closed {
                    Ok(0)
                } else {
                    Err(ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.input.len()).min(3);
            for b in buf.iter_mut().take(n) {
                *b = self.input.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
    }
    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.cap == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.cap);
            self.cap -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn fake(input: &[u8], closed: bool, cap: usize) -> Conn<Fake> {
        Conn::new(
            Fake {
                input: input.iter().copied().collect(),
                closed,
                written: Vec::new(),
                cap,
            },
            16,
        )
    }

    #[test]
    fn fill_drains_in_small_reads_and_reports_close() {
        let mut c = fake(b"hello\nworld\n", true, 0);
        assert_eq!(c.fill(false).unwrap(), ReadStatus::Closed);
        assert_eq!(c.input.next_line(), Frame::Line(b"hello"));
        assert_eq!(c.input.next_line(), Frame::Line(b"world"));
        let mut c = fake(b"abc", false, 0);
        assert_eq!(c.fill(false).unwrap(), ReadStatus::Drained);
        assert_eq!(c.input.next_line(), Frame::NeedMore);
        // A short read stops at once when allowed to: no WouldBlock read needed.
        let mut c = fake(b"ab\ncd", false, 0);
        assert_eq!(c.fill(true).unwrap(), ReadStatus::Drained);
        assert_eq!(
            c.stream.input.len(),
            2,
            "one short read of 3 bytes, then stop"
        );
    }

    #[test]
    fn fill_stops_when_the_framer_is_full() {
        let mut c = fake(&[b'x'; 40], false, 0);
        assert_eq!(c.fill(false).unwrap(), ReadStatus::Full);
        assert_eq!(c.input.next_line(), Frame::TooLong);
    }

    #[test]
    fn flush_keeps_what_the_socket_did_not_take() {
        let mut c = fake(b"", false, 4);
        c.send_line("abcdef");
        assert!(!c.flush().unwrap());
        assert_eq!(c.out_pending(), 3);
        c.stream.cap = 100;
        assert!(c.flush().unwrap());
        assert_eq!(c.stream.written, b"abcdef\n");
    }
}
