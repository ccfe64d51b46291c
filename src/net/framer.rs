//! Newline framing. Bytes go in as they arrive; complete lines come out in order. Framing knows
//! nothing of meaning: it yields a line, says "need more bytes", or reports a line that is too
//! long — after which the connection is to be closed, and nothing more is buffered.

/// Longest line, terminator included, on client-facing connections: large enough for a hash
/// line (1,024 SHA-1s in hex) or a piece set of a 131,072-piece file, small enough that 10,000
/// connections each holding a partial line stay within memory.
pub const MAX_LINE: usize = 64 * 1024;

/// Longest line on the authenticated peer link between trackers: an `upload` operation carries
/// all of a file's hashes on one line (524,288 × 40 hex digits for a 256 GiB file).
pub const MAX_PEER_LINE: usize = 24 * 1024 * 1024;

/// Largest single read through `read_from`: one syscall takes a piece and its header.
const SCRATCH_LEN: usize = 256 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; SCRATCH_LEN]);
}

/// One framing outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its `\n` (and without a `\r` before it).
    Line(&'a [u8]),
    /// No complete line is buffered; wait for more bytes.
    NeedMore,
    /// The unfinished line exceeds the limit; the buffer has been cleared and stays closed.
    TooLong,
}

/// A per-connection input buffer that cuts lines.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte; the consumed prefix is cut off lazily, once per
    /// `compact`, so handling many pipelined lines is not quadratic.
    start: usize,
    /// Where the search for `\n` resumes, so a long partial line is scanned once.
    scanned: usize,
    limit: usize,
    overflowed: bool,
}

impl LineFramer {
    pub fn new(limit: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
            overflowed: false,
        }
    }

    /// Bytes received but not yet returned as lines.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// How many more bytes may be read before the limit is certainly exceeded; read at most
    /// this much so the buffer never grows past `limit`.
    pub fn room(&self) -> usize {
        if self.overflowed {
            0
        } else {
            self.limit.saturating_sub(self.pending())
        }
    }

    /// Appends received bytes. Call `compact` (or `next_line` until `NeedMore`) between reads.
    pub fn push(&mut self, data: &[u8]) {
        if !self.overflowed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Reads once from `r` — at most `max` bytes and never past the limit — and appends what
    /// came. `Some(0)` means the peer closed, `None` that nothing was there (`WouldBlock`).
    /// The bytes land in a per-thread scratch buffer first: zero-filling a fresh 64 KiB of the
    /// connection's own buffer before every read cost more than the kernel's copy.
    pub fn read_from<R: std::io::Read>(
        &mut self,
        r: &mut R,
        max: usize,
    ) -> std::io::Result<Option<usize>> {
        let want = max.min(self.room()).min(SCRATCH_LEN);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            loop {
                match r.read(&mut scratch[..want]) {
                    Ok(n) => {
                        self.compact();
                        self.buf.extend_from_slice(&scratch[..n]);
                        return Ok(Some(n));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Frame<'_> {
        if self.overflowed {
            return Frame::TooLong;
        }
        let from = self.scanned.max(self.start);
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let end = from + pos;
                let line_start = self.start;
                if end + 1 - line_start > self.limit {
                    return self.overflow();
                }
                self.start = end + 1;
                self.scanned = self.start;
                let mut line = &self.buf[line_start..end];
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                Frame::Line(line)
            }
            None => {
                self.scanned = self.buf.len();
                if self.pending() >= self.limit {
                    return self.overflow();
                }
                Frame::NeedMore
            }
        }
    }

    fn overflow(&mut self) -> Frame<'static> {
        self.overflowed = true;
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
        Frame::TooLong
    }

    /// Changes the line limit: a connection that authenticated as the other tracker may send
    /// the longer lines of the peer link.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Moves up to `dst.len()` raw bytes buffered after the last returned line into `dst`, as
    /// if they had been consumed: the peer protocol reads a piece's payload this way when a read
    /// brought the payload's first bytes in with its header line. Returns how many were moved.
    pub fn take_raw(&mut self, dst: &mut [u8]) -> usize {
        if self.overflowed {
            return 0;
        }
        let n = dst.len().min(self.pending());
        dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        self.scanned = self.scanned.max(self.start);
        n
    }

    /// Drops the consumed prefix; keeps the allocation small for idle connections.
    pub fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.drain(..self.start);
        self.scanned -= self.start.min(self.scanned);
        self.start = 0;
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &mut LineFramer) -> Vec<String> {
        let mut out = Vec::new();
        while let Frame::Line(l) = f.next_line() {
            out.push(String::from_utf8_lossy(l).into_owned());
        }
        out
    }

    #[test]
    fn yields_every_complete_line_in_order_and_keeps_partial_ones() {
        let mut f = LineFramer::new(100);
        f.push(b"a\nbb\r\nc");
        assert_eq!(lines(&mut f), ["a", "bb"]);
        assert_eq!(f.next_line(), Frame::NeedMore);
        f.push(b"c\n\n");
        assert_eq!(lines(&mut f), ["cc", ""]);
        f.compact();
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn a_line_over_the_limit_is_too_long_and_the_buffer_stops_growing() {
        let mut f = LineFramer::new(8);
        f.push(b"12345678");
        assert_eq!(f.next_line(), Frame::TooLong);
        f.push(b"more\n");
        assert_eq!(f.next_line(), Frame::TooLong);
        assert_eq!(f.pending(), 0);
        assert_eq!(f.room(), 0);
    }

    #[test]
    fn a_line_exactly_at_the_limit_passes() {
        let mut f = LineFramer::new(8);
        f.push(b"1234567\n");
        assert_eq!(lines(&mut f), ["1234567"]);
        let mut f = LineFramer::new(8);
        f.push(b"12345678\n");
        assert_eq!(f.next_line(), Frame::TooLong);
    }

    #[test]
    fn take_raw_moves_bytes_after_a_line_and_lines_resume_after_them() {
        let mut f = LineFramer::new(100);
        f.push(b"piece 0 3\nabcnext\n");
        assert_eq!(f.next_line(), Frame::Line(b"piece 0 3"));
        let mut dst = [0u8; 3];
        assert_eq!(f.take_raw(&mut dst), 3);
        assert_eq!(&dst, b"abc");
        assert_eq!(lines(&mut f), ["next"]);
        assert_eq!(f.take_raw(&mut dst), 0);
    }

    #[test]
    fn read_from_never_exceeds_the_limit() {
        let mut f = LineFramer::new(10);
        let mut src: &[u8] = b"ab\ncdefghijklmnop";
        assert_eq!(f.read_from(&mut src, 64).unwrap(), Some(10));
        assert_eq!(f.pending(), 10);
        assert_eq!(lines(&mut f), ["ab"]);
        // The line was consumed: room for 3 more bytes only, the rest stays in the source.
        assert_eq!(f.read_from(&mut src, 64).unwrap(), Some(3));
        assert_eq!(f.pending(), 10);
        assert_eq!(f.next_line(), Frame::TooLong);
        let mut empty: &[u8] = b"";
        let mut g = LineFramer::new(10);
        assert_eq!(
            g.read_from(&mut empty, 64).unwrap(),
            Some(0),
            "end of input"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any bytes, cut anywhere: framing never panics, never yields a line over the limit,
        /// and never holds more than the limit.
        #[test]
        fn arbitrary_bytes_in_arbitrary_chunks(data: Vec<u8>, cuts: Vec<usize>, limit in 1usize..64) {
            let mut f = LineFramer::new(limit);
            let mut rest = &data[..];
            for c in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let n = (*c).min(rest.len());
                let (now, later) = rest.split_at(n);
                rest = later;
                let room = f.room();
                f.push(&now[..now.len().min(room)]);
                loop {
                    match f.next_line() {
                        Frame::Line(l) => proptest::prop_assert!(l.len() < limit),
                        Frame::NeedMore => break,
                        Frame::TooLong => break,
                    }
                }
                proptest::prop_assert!(f.pending() <= limit);
            }
        }
    }
}
