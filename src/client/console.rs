//! The client's terminal side: lines from standard input, results to standard output, notes
//! and errors to standard error.
//!
//! Standard input is polled when it is a terminal or a pipe (made non-blocking; the original
//! flags are restored on drop). A regular file — or anything else epoll refuses, like
//! `/dev/null` — is read as a script, in chunks, only when the next line is wanted: reading a
//! file never waits for long.
//!
//! Because a terminal's standard input and output are often one open file, O_NONBLOCK on one
//! is O_NONBLOCK on both; output therefore waits for writability instead of failing.
//!
//! When standard input and output are both terminals (and the client is not `--serve`), lines
//! are edited by `term::Terminal` instead: the keys read here are handed to it, lines come
//! from it, and every output line passes through it so it can lift the prompt and status line
//! out of the way first. It lives in a thread-local because output is written from everywhere
//! (`out`, `err`) and the client has one thread. Otherwise nothing here writes a byte more
//! than the line asked for.

use super::shell::Command;
use super::term::{status, Terminal};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::time::Instant;

/// The poll token of standard input.
pub const STDIN_TOKEN: Token = Token(0);
/// Longest command line accepted: far more than any command with a long path needs.
pub const MAX_INPUT_LINE: usize = 64 * 1024;
/// Input read ahead and not yet handled, at most: a long script is read as it is consumed.
const MAX_BUFFERED: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// The line editor, while standard input and output are a terminal being edited.
    static TERM: RefCell<Option<Terminal>> = const { RefCell::new(None) };
}

/// Runs `f` on the line editor, if lines are being edited.
fn with_term<R>(f: impl FnOnce(&mut Terminal) -> R) -> Option<R> {
    TERM.with(|t| t.borrow_mut().as_mut().map(f))
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Registered with the poll; read on readiness until `EAGAIN`.
    Polled,
    /// Read with plain blocking reads when a line is wanted.
    Script,
}

/// Standard input as a source of lines.
pub struct Input {
    mode: Mode,
    terminal: bool,
    buf: Vec<u8>,
    /// Inside an over-long line: bytes are dropped up to the next newline.
    discarding: bool,
    eof: bool,
    /// In polled mode: the descriptor may hold more bytes than were read (the buffer was full).
    more: bool,
    /// The flags to restore, when they were changed.
    saved_flags: Option<libc::c_int>,
    /// Lines are edited by the `Terminal` in `TERM`; `buf` only passes bytes on to it.
    editing: bool,
}

/// What the next line is.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// A line past `MAX_INPUT_LINE` (dropped) or not UTF-8: the sentence says which.
    Bad(String),
}

impl Input {
    /// `edit`: line editing is allowed (not `--serve`); it is used if standard input and
    /// output are both terminals.
    pub fn new(registry: &Registry, edit: bool) -> Self {
        let fd: RawFd = 0;
        // SAFETY: isatty and fcntl only inspect or change the flags of descriptor 0.
        let terminal = unsafe { libc::isatty(fd) } == 1;
        let mut input = Input {
            mode: Mode::Script,
            terminal,
            buf: Vec::new(),
            discarding: false,
            eof: false,
            more: false,
            saved_flags: None,
            editing: false,
        };
        if registry
            .register(&mut SourceFd(&fd), STDIN_TOKEN, Interest::READABLE)
            .is_ok()
        {
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags >= 0
                && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } == 0
            {
                input.saved_flags = Some(flags);
                input.mode = Mode::Polled;
                input.more = true;
                // Release builds abort on panic (no unwinding, no Drop): put the terminal
                // back from the panic hook too, or the user's shell inherits O_NONBLOCK.
                let previous = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    // SAFETY: restores the flags read above.
                    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
                    previous(info);
                }));
            } else {
                let _ = registry.deregister(&mut SourceFd(&fd));
            }
        }
        // SAFETY: isatty only inspects descriptor 1.
        if edit && terminal && input.mode == Mode::Polled && unsafe { libc::isatty(1) } == 1 {
            match Terminal::new(fd) {
                Ok(t) => {
                    TERM.with(|cell| *cell.borrow_mut() = Some(t));
                    input.editing = true;
                }
                Err(e) => log::warn!("no line editing: cannot set the terminal's modes: {e}"),
            }
        }
        log::debug!(
            "standard input: {:?}, terminal: {terminal}, editing: {}",
            input.mode,
            input.editing
        );
        input
    }

    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Standard input is readable (its poll event).
    pub fn on_ready(&mut self) {
        self.more = true;
        self.read_available();
        if self.editing {
            let bytes = std::mem::take(&mut self.buf);
            let eof = self.eof;
            with_term(|t| {
                t.feed(&bytes);
                if eof {
                    t.hang_up();
                }
            });
        }
    }

    fn read_available(&mut self) {
        if self.mode != Mode::Polled {
            return;
        }
        // The editor takes every read at once (`on_ready`), so its reads are not held back.
        while self.more && !self.eof && (self.editing || self.buf.len() < MAX_BUFFERED) {
            match read_chunk(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.more = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("cannot read standard input: {e}");
                    self.eof = true;
                }
            }
        }
    }

    /// The next complete line, if one is available now (reading a script if needed). At end
    /// of input an unterminated last line counts as a line.
    pub fn next_line(&mut self) -> Option<Line> {
        if self.editing {
            return with_term(Terminal::next_line).flatten().map(Line::Text);
        }
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                return Some(to_line(line));
            }
            if self.buf.len() > MAX_INPUT_LINE {
                self.buf.clear();
                if !self.discarding {
                    self.discarding = true;
                    return Some(Line::Bad(format!(
                        "the line is longer than {MAX_INPUT_LINE} bytes and was ignored"
                    )));
                }
            }
            if self.eof {
                if self.buf.is_empty() || self.discarding {
                    self.buf.clear();
                    return None;
                }
                return Some(to_line(std::mem::take(&mut self.buf)));
            }
            match self.mode {
                Mode::Script => match read_chunk(&mut self.buf) {
                    Ok(0) => self.eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("cannot read standard input: {e}");
                        self.eof = true;
                    }
                },
                Mode::Polled => {
                    if !self.more {
                        return None;
                    }
                    self.read_available();
                    if !self.eof && !self.buf.contains(&b'\n') && self.buf.len() <= MAX_INPUT_LINE {
                        return None;
                    }
                }
            }
        }
    }

    /// True once the input has ended and every line was taken.
    pub fn finished(&self) -> bool {
        if self.editing {
            return with_term(|t| t.finished()).unwrap_or(true);
        }
        self.eof && self.buf.is_empty()
    }

    /// True if a complete line is buffered (no prompt is due).
    pub fn has_line(&self) -> bool {
        if self.editing {
            return with_term(|t| t.has_line()).unwrap_or(false);
        }
        self.buf.contains(&b'\n')
    }

    /// The tracker's answer to `cmd` (a listing, or `None` for a plain success): names for
    /// Tab completion.
    pub fn learn(&mut self, cmd: &Command, list: Option<&[String]>) {
        with_term(|t| t.learn(cmd, list));
    }

    /// A user logged in (`user_dir`: their state directory, which keeps their history).
    pub fn logged_in(&mut self, user_dir: &Path) {
        with_term(|t| t.logged_in(user_dir));
    }

    pub fn logged_out(&mut self) {
        with_term(Terminal::logged_out);
    }

    /// A `list_groups`/`list_files` to send in the background because completion names are
    /// stale; its reply goes to `learn`.
    pub fn take_refresh(&mut self) -> Option<Command> {
        with_term(Terminal::take_refresh).flatten()
    }

    /// Feeds the status line; `busy`: a download or hashing runs. `snapshot` is only called
    /// when a redraw is due.
    pub fn progress(
        &mut self,
        now: Instant,
        busy: bool,
        snapshot: impl FnOnce() -> status::Snapshot,
    ) {
        with_term(|t| t.progress(now, busy, snapshot));
    }

    /// When the status line wants `progress` again.
    pub fn next_deadline(&self) -> Option<Instant> {
        with_term(|t| t.next_deadline()).flatten()
    }

    /// Puts standard input back as it was.
    pub fn restore(&mut self) {
        if let Some(mut t) = TERM.with(|cell| cell.borrow_mut().take()) {
            t.restore();
        }
        if let Some(flags) = self.saved_flags.take() {
            // SAFETY: restores the flags read in `new`.
            unsafe { libc::fcntl(0, libc::F_SETFL, flags) };
        }
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.restore();
    }
}

fn to_line(mut bytes: Vec<u8>) -> Line {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    match String::from_utf8(bytes) {
        Ok(s) => Line::Text(s),
        Err(_) => Line::Bad("the line is not valid UTF-8 text".to_string()),
    }
}

fn read_chunk(buf: &mut Vec<u8>) -> io::Result<usize> {
    let len = buf.len();
    buf.resize(len + CHUNK, 0);
    // SAFETY: reads into the spare bytes just reserved.
    let n = unsafe { libc::read(0, buf[len..].as_mut_ptr().cast(), CHUNK) };
    if n < 0 {
        buf.truncate(len);
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len + n as usize);
    Ok(n as usize)
}

/// Writes all of `data` to `fd`, waiting for writability if the descriptor is non-blocking.
pub(crate) fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writes from a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
            }
            // A closed stdout (EPIPE) or similar: nobody reads; drop the output.
            _ => return,
        }
    }
}

/// A result line on standard output.
pub fn out(line: &str) {
    let mut s = String::with_capacity(line.len() + 1);
    s.push_str(line);
    s.push('\n');
    if with_term(|t| t.print(1, &s)).is_none() {
        write_all(1, s.as_bytes());
    }
}

/// The prompt, when standard input is a terminal.
pub fn prompt() {
    if with_term(Terminal::prompt).is_none() {
        write_all(1, b"> ");
    }
}

/// A line on standard error (`error: `, `note: ` and `warning: ` lines).
pub fn err(line: &str) {
    let mut s = String::with_capacity(line.len() + 1);
    s.push_str(line);
    s.push('\n');
    if with_term(|t| t.print(2, &s)).is_none() {
        write_all(2, s.as_bytes());
    }
}
