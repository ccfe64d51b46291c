//! Line editing, history, completion and the status line, for a person at a terminal. Used
//! only when standard input and output are both terminals (and not `--serve`); scripts never
//! see any of it.
//!
//! - `keys`     — bytes to keys, across split reads (pure)
//! - `editor`   — the line, cursor, history walk, Ctrl-R search (pure)
//! - `history`  — per-user history file, passwords stripped
//! - `complete` — Tab completion and the argument hint (pure)
//! - `status`   — the status line's text and redraw pacing (pure)
//! - `screen`   — the bytes that draw and erase the prompt block (pure)
//! - `raw`      — raw mode on, and back off on every way out
//!
//! `Terminal` below is the I/O edge: it owns these, writes to the terminal, and is reached by
//! `console` for every line of output so output never lands inside the prompt or status.

pub mod complete;
pub mod editor;
pub mod history;
pub mod keys;
pub mod raw;
pub mod screen;
pub mod status;

use crate::client::shell::Command;
use complete::{Known, Outcome, Source};
use editor::{Action, Editor};
use history::History;
use keys::{Decoder, Key};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

const PROMPT: &str = "> ";
/// Names from the tracker older than this are refreshed in the background on Tab.
const STALE: Duration = Duration::from_secs(30);
/// Longest line the editor holds, like `console::MAX_INPUT_LINE` for scripts.
const MAX_LINE: usize = 64 * 1024;
/// Keys typed ahead while a command runs, at most.
const MAX_TYPEAHEAD: usize = 64 * 1024;

pub struct Terminal {
    raw: raw::RawMode,
    decoder: Decoder,
    editor: Editor,
    history: History,
    known: Known,
    /// When each kind of name was last learnt from the tracker.
    learnt: HashMap<Source, Instant>,
    /// A background refresh the app should send (`take_refresh`).
    refresh: Option<Command>,
    /// Keys not yet given to the editor: typed while a command ran.
    keys: VecDeque<Key>,
    /// Lines entered and not yet taken by the app.
    lines: VecDeque<String>,
    eof: bool,
    /// The app is waiting for a line: the prompt is shown.
    wanting: bool,
    /// Something is drawn; the cursor is on this row of it.
    drawn: Option<usize>,
    /// The block drawn holds the prompt (not only the status line).
    prompt_drawn: bool,
    status: Option<String>,
    throttle: status::Throttle,
    /// A status refresh was skipped (too soon): the next deadline must come back for it.
    status_owed: bool,
    history_warned: bool,
}

impl Terminal {
    /// Puts `fd` (standard input) in raw mode.
    pub fn new(fd: i32) -> std::io::Result<Terminal> {
        Ok(Terminal {
            raw: raw::RawMode::enter(fd)?,
            decoder: Decoder::new(),
            editor: Editor::new(),
            history: History::new(),
            known: Known::default(),
            learnt: HashMap::new(),
            refresh: None,
            keys: VecDeque::new(),
            lines: VecDeque::new(),
            eof: false,
            wanting: false,
            drawn: None,
            prompt_drawn: false,
            status: None,
            throttle: status::Throttle::default(),
            status_owed: false,
            history_warned: false,
        })
    }

    /// Bytes read from the terminal. Ctrl-C while a command runs interrupts it, as it did
    /// before raw mode (the key would otherwise wait unseen behind the command).
    pub fn feed(&mut self, bytes: &[u8]) {
        for key in self.decoder.feed(bytes) {
            if key == Key::Ctrl('c') && !self.wanting {
                self.keys.clear();
                // SAFETY: raising a signal this process handles (the signal pipe).
                unsafe { libc::raise(libc::SIGINT) };
                continue;
            }
            if self.keys.len() < MAX_TYPEAHEAD {
                self.keys.push_back(key);
            }
        }
    }

    /// The terminal closed (read returned 0 or failed).
    pub fn hang_up(&mut self) {
        self.eof = true;
    }

    pub fn has_line(&self) -> bool {
        !self.lines.is_empty()
    }

    pub fn finished(&self) -> bool {
        self.eof && self.lines.is_empty()
    }

    /// The next line entered, editing with the keys typed so far. Called when the app wants a
    /// line, so from here on the prompt is shown.
    pub fn next_line(&mut self) -> Option<String> {
        if let Some(line) = self.lines.pop_front() {
            return Some(line);
        }
        if self.eof {
            return None;
        }
        self.wanting = true;
        let mut changed = !self.prompt_drawn;
        while let Some(key) = self.keys.pop_front() {
            changed = true;
            if let Some(line) = self.key(key) {
                return Some(line);
            }
            if self.eof {
                return None;
            }
        }
        if changed {
            self.redraw();
        }
        None
    }

    /// The app's prompt: shown by `next_line` already; drawn here if it is not.
    pub fn prompt(&mut self) {
        self.wanting = true;
        if !self.prompt_drawn {
            self.redraw();
        }
    }

    fn key(&mut self, key: Key) -> Option<String> {
        if matches!(key, Key::Char(_)) && self.editor.line().len() >= MAX_LINE {
            return None;
        }
        let before = self.editor.view(PROMPT);
        match self.editor.key(key, self.history.entries()) {
            Action::Redraw => {}
            Action::Submit(line) => {
                self.finish_line(&format!("{PROMPT}{line}\n"));
                if let Err(e) = self.history.add(&line) {
                    self.warn_history(&e);
                }
                return Some(line);
            }
            Action::Cancel => {
                self.finish_line(&format!("{}{}^C\n", before.prompt, before.text));
                self.wanting = true;
            }
            Action::Eof => {
                self.eof = true;
                self.wanting = false;
            }
            Action::ClearScreen => {
                self.drawn = None;
                crate::client::console::write_all(1, screen::clear_screen().as_bytes());
            }
            Action::Complete => self.complete(),
        }
        self.redraw();
        None
    }

    /// Leaves `text` where the prompt was (the line as entered) and hides the prompt.
    fn finish_line(&mut self, text: &str) {
        self.wanting = false;
        self.print(1, text);
    }

    fn complete(&mut self) {
        let line = self.editor.line();
        let cursor = self.editor.cursor();
        let list_dir = |dir: &Path| -> Vec<complete::Entry> {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return Vec::new();
            };
            rd.flatten()
                .take(10_000)
                .map(|e| {
                    let is_dir = e.path().is_dir();
                    (e.file_name().to_string_lossy().into_owned(), is_dir)
                })
                .collect()
        };
        let c = complete::complete(&line, cursor, &self.known, &list_dir);
        let word: String = line.chars().skip(c.start).take(cursor - c.start).collect();
        match c.outcome(&word) {
            Outcome::Insert(text) => self.editor.replace_before_cursor(c.start, &text),
            Outcome::Show(all) => self.print(1, &format!("{}\n", all.join("  "))),
            Outcome::Nothing => {}
        }
        if let Some(src) = complete::source(&line, cursor) {
            let fresh = self.learnt.get(&src).is_some_and(|t| t.elapsed() < STALE);
            if !fresh {
                self.refresh = Some(match src {
                    Source::Groups => Command::ListGroups,
                    Source::Files(group) => Command::ListFiles { group },
                });
            }
        }
    }

    /// A background request that would refresh stale completion names, once.
    pub fn take_refresh(&mut self) -> Option<Command> {
        self.refresh.take()
    }

    /// What the tracker answered to `cmd`: a listing (`Some`, the tracker's lines, name
    /// first) or a plain success (`None`).
    pub fn learn(&mut self, cmd: &Command, list: Option<&[String]>) {
        if let Some(src) = self.known.learn(cmd, list) {
            self.learnt.insert(src, Instant::now());
        }
    }

    /// A user logged in: their history (in their state directory) is loaded.
    pub fn logged_in(&mut self, user_dir: &Path) {
        if let Err(e) = self.history.login(user_dir) {
            self.warn_history(&e);
        }
        // The first Tab after a login should already know the groups.
        self.refresh = Some(Command::ListGroups);
    }

    pub fn logged_out(&mut self) {
        self.history.logout();
        self.known = Known::default();
        self.learnt.clear();
    }

    fn warn_history(&mut self, e: &str) {
        if !std::mem::replace(&mut self.history_warned, true) {
            self.print(2, &format!("warning: history is not kept: {e}\n"));
        }
    }

    /// The status line from what is running now, at most every `status::REFRESH` — except
    /// that it appears and goes at once when transfers start or end (`busy`), so a finished
    /// download's line never lingers under its completion note.
    pub fn progress(
        &mut self,
        now: Instant,
        busy: bool,
        snapshot: impl FnOnce() -> status::Snapshot,
    ) {
        if busy != self.status.is_some() {
            self.throttle = status::Throttle::default();
        }
        if !self.throttle.due(now) {
            self.status_owed = true;
            return;
        }
        self.status_owed = false;
        let text = status::text(&snapshot());
        if text != self.status {
            self.status = text;
            self.redraw();
        }
    }

    /// When `progress` wants to be called again.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.status.is_some() || self.status_owed {
            self.throttle.next()
        } else {
            None
        }
    }

    /// Writes `text` (whole lines) to `fd` above the prompt block, then draws the block again.
    pub fn print(&mut self, fd: i32, text: &str) {
        if let Some(row) = self.drawn.take() {
            crate::client::console::write_all(1, screen::erase(row).as_bytes());
        }
        crate::client::console::write_all(fd, text.as_bytes());
        self.redraw();
    }

    fn redraw(&mut self) {
        let mut out = String::new();
        if let Some(row) = self.drawn.take() {
            out.push_str(&screen::erase(row));
        }
        let view = self.editor.view(PROMPT);
        let hint = if self.editor.searching() {
            None
        } else {
            complete::hint(&view.text)
        };
        let line = self.wanting.then_some((&view, hint.as_deref()));
        self.prompt_drawn = line.is_some();
        if line.is_some() || self.status.is_some() {
            let (bytes, row) = screen::draw(line, self.status.as_deref(), columns());
            out.push_str(&bytes);
            self.drawn = Some(row);
        }
        crate::client::console::write_all(1, out.as_bytes());
    }

    /// Erases the block and puts the terminal back (the client is exiting).
    pub fn restore(&mut self) {
        if let Some(row) = self.drawn.take() {
            crate::client::console::write_all(1, screen::erase(row).as_bytes());
        }
        self.raw.restore();
    }
}

/// The terminal's width, 80 if it cannot be asked.
fn columns() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize for a terminal descriptor, or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}
