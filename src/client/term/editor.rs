//! The line being typed: a buffer with a cursor, history navigation and incremental search.
//! Pure: keys in, an `Action` out; drawing is `render`'s job and completion `complete`'s.

use super::keys::Key;

/// What the caller does after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The view changed (or may have): redraw.
    Redraw,
    /// Enter: the line is done (the buffer is already empty again).
    Submit(String),
    /// Ctrl-D on an empty line: end of input.
    Eof,
    /// Ctrl-C: the line was dropped; show that and start afresh.
    Cancel,
    /// Ctrl-L: clear the screen and redraw.
    ClearScreen,
    /// Tab: the caller completes the word before the cursor.
    Complete,
}

/// Ctrl-R in progress: the query and the history entry it found.
#[derive(Debug, Clone)]
struct Search {
    query: String,
    /// Index into the history of the match shown, if any.
    found: Option<usize>,
    /// The line as it was before the search (restored by Ctrl-G).
    before: (Vec<char>, usize),
}

#[derive(Debug, Default)]
pub struct Editor {
    buf: Vec<char>,
    /// In characters, `0..=buf.len()`.
    cursor: usize,
    /// While walking the history with Up/Down: the entry shown, and the line being typed
    /// before the walk began (Down past the newest entry brings it back).
    walk: Option<(usize, Vec<char>)>,
    search: Option<Search>,
}

/// What to draw for the line.
#[derive(Debug, PartialEq, Eq)]
pub struct View {
    pub prompt: String,
    pub text: String,
    /// In characters of `text`.
    pub cursor: usize,
}

impl Editor {
    pub fn new() -> Self {
        Editor::default()
    }

    pub fn line(&self) -> String {
        self.buf.iter().collect()
    }

    /// The cursor in characters.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn searching(&self) -> bool {
        self.search.is_some()
    }

    pub fn view(&self, prompt: &str) -> View {
        match &self.search {
            Some(s) => View {
                prompt: format!("(reverse-i-search)'{}': ", s.query),
                text: self.line(),
                cursor: self.cursor,
            },
            None => View {
                prompt: prompt.to_string(),
                text: self.line(),
                cursor: self.cursor,
            },
        }
    }

    /// Replaces the characters `start..cursor` with `text` (a completion).
    pub fn replace_before_cursor(&mut self, start: usize, text: &str) {
        let start = start.min(self.cursor);
        self.buf.splice(start..self.cursor, text.chars());
        self.cursor = start + text.chars().count();
    }

    /// Handles one key; `history` is oldest first.
    pub fn key(&mut self, key: Key, history: &[String]) -> Action {
        if self.search.is_some() {
            if let Some(action) = self.search_key(key, history) {
                return action;
            }
        }
        match key {
            Key::Char(c) => {
                self.buf.insert(self.cursor, c);
                self.cursor += 1;
            }
            Key::Enter => {
                let line = self.line();
                self.clear();
                return Action::Submit(line);
            }
            Key::Tab => return Action::Complete,
            Key::Backspace | Key::Ctrl('h') if self.cursor > 0 => {
                self.cursor -= 1;
                self.buf.remove(self.cursor);
            }
            Key::Delete if self.cursor < self.buf.len() => {
                self.buf.remove(self.cursor);
            }
            Key::Ctrl('d') if self.buf.is_empty() => return Action::Eof,
            Key::Ctrl('d') if self.cursor < self.buf.len() => {
                self.buf.remove(self.cursor);
            }
            Key::Ctrl('c') => {
                self.clear();
                return Action::Cancel;
            }
            Key::Ctrl('l') => return Action::ClearScreen,
            Key::Left | Key::Ctrl('b') => self.cursor = self.cursor.saturating_sub(1),
            Key::Right | Key::Ctrl('f') => self.cursor = (self.cursor + 1).min(self.buf.len()),
            Key::Home | Key::Ctrl('a') => self.cursor = 0,
            Key::End | Key::Ctrl('e') => self.cursor = self.buf.len(),
            Key::WordLeft => self.cursor = self.word_start(),
            Key::WordRight => self.cursor = self.word_end(),
            Key::Ctrl('w') | Key::DeleteWordBack => {
                let start = self.word_start();
                self.buf.drain(start..self.cursor);
                self.cursor = start;
            }
            Key::DeleteWordForward => {
                let end = self.word_end();
                self.buf.drain(self.cursor..end);
            }
            Key::Ctrl('k') => self.buf.truncate(self.cursor),
            Key::Ctrl('u') => {
                self.buf.drain(..self.cursor);
                self.cursor = 0;
            }
            Key::Up | Key::Ctrl('p') => self.older(history),
            Key::Down | Key::Ctrl('n') => self.newer(history),
            Key::Ctrl('r') => {
                self.search = Some(Search {
                    query: String::new(),
                    found: None,
                    before: (self.buf.clone(), self.cursor),
                });
            }
            _ => {}
        }
        Action::Redraw
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.cursor = 0;
        self.walk = None;
        self.search = None;
    }

    /// Start of the word before the cursor (words end at spaces).
    fn word_start(&self) -> usize {
        let mut i = self.cursor;
        while i > 0 && self.buf[i - 1] == ' ' {
            i -= 1;
        }
        while i > 0 && self.buf[i - 1] != ' ' {
            i -= 1;
        }
        i
    }

    fn word_end(&self) -> usize {
        let mut i = self.cursor;
        while i < self.buf.len() && self.buf[i] == ' ' {
            i += 1;
        }
        while i < self.buf.len() && self.buf[i] != ' ' {
            i += 1;
        }
        i
    }

    fn show(&mut self, text: &str) {
        self.buf = text.chars().collect();
        self.cursor = self.buf.len();
    }

    fn older(&mut self, history: &[String]) {
        let next = match &self.walk {
            Some((0, _)) => return,
            Some((i, _)) => i - 1,
            None if history.is_empty() => return,
            None => history.len() - 1,
        };
        let typed = match self.walk.take() {
            Some((_, typed)) => typed,
            None => self.buf.clone(),
        };
        self.walk = Some((next, typed));
        self.show(&history[next]);
    }

    fn newer(&mut self, history: &[String]) {
        let Some((i, typed)) = self.walk.take() else {
            return;
        };
        if i + 1 < history.len() {
            self.walk = Some((i + 1, typed));
            self.show(&history[i + 1]);
        } else {
            self.buf = typed;
            self.cursor = self.buf.len();
        }
    }

    /// A key during Ctrl-R. `None`: the search ended, and the key acts on the line found.
    fn search_key(&mut self, key: Key, history: &[String]) -> Option<Action> {
        let s = self.search.as_mut()?;
        match key {
            Key::Char(c) => {
                s.query.push(c);
                let from = s.found.map_or(history.len(), |i| i + 1);
                s.found = find(history, &s.query, from);
            }
            Key::Backspace => {
                s.query.pop();
                s.found = find(history, &s.query, history.len());
            }
            Key::Ctrl('r') => {
                let from = s.found.unwrap_or(history.len());
                if let Some(i) = find(history, &s.query, from) {
                    s.found = Some(i);
                }
            }
            Key::Ctrl('g') | Key::Ctrl('c') => {
                let (buf, cursor) = s.before.clone();
                self.search = None;
                self.buf = buf;
                self.cursor = cursor;
                return Some(Action::Redraw);
            }
            _ => {
                self.search = None;
                self.walk = None;
                return None;
            }
        }
        let shown = s.found.map(|i| history[i].clone());
        match shown {
            Some(text) => {
                let at = text.find(&self.search.as_ref()?.query).unwrap_or(0);
                self.buf = text.chars().collect();
                self.cursor = text[..at].chars().count();
            }
            None => {
                let (buf, _) = &self.search.as_ref()?.before;
                if self.search.as_ref()?.query.is_empty() {
                    self.buf = buf.clone();
                    self.cursor = self.buf.len();
                }
            }
        }
        Some(Action::Redraw)
    }
}

/// The newest entry before index `before` that contains `query`.
fn find(history: &[String], query: &str, before: usize) -> Option<usize> {
    if query.is_empty() {
        return None;
    }
    history[..before.min(history.len())]
        .iter()
        .rposition(|h| h.contains(query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(e: &mut Editor, s: &str) {
        for c in s.chars() {
            e.key(Key::Char(c), &[]);
        }
    }

    #[test]
    fn typing_moving_and_deleting() {
        let mut e = Editor::new();
        typed(&mut e, "list_fles g");
        for _ in 0..5 {
            e.key(Key::Left, &[]);
        }
        e.key(Key::Char('i'), &[]);
        assert_eq!(e.line(), "list_files g");
        e.key(Key::Ctrl('a'), &[]);
        e.key(Key::Delete, &[]);
        assert_eq!((e.line().as_str(), e.cursor()), ("ist_files g", 0));
        e.key(Key::End, &[]);
        e.key(Key::Backspace, &[]);
        assert_eq!(e.line(), "ist_files ");
        e.key(Key::Ctrl('u'), &[]);
        assert_eq!(e.line(), "");
    }

    #[test]
    fn words_are_deleted_and_skipped() {
        let mut e = Editor::new();
        typed(&mut e, "upload_file /tmp/a b  ");
        assert_eq!(e.key(Key::Ctrl('w'), &[]), Action::Redraw);
        assert_eq!(e.line(), "upload_file /tmp/a ");
        e.key(Key::DeleteWordBack, &[]);
        assert_eq!(e.line(), "upload_file ");
        e.key(Key::WordLeft, &[]);
        assert_eq!(e.cursor(), 0);
        e.key(Key::WordRight, &[]);
        assert_eq!(e.cursor(), 11);
        e.key(Key::Home, &[]);
        e.key(Key::DeleteWordForward, &[]);
        assert_eq!(e.line(), " ");
        typed(&mut e, "ab");
        e.key(Key::Left, &[]);
        e.key(Key::Ctrl('k'), &[]);
        assert_eq!(e.line(), "a");
    }

    #[test]
    fn enter_ctrl_c_and_ctrl_d() {
        let mut e = Editor::new();
        typed(&mut e, "help");
        assert_eq!(e.key(Key::Ctrl('d'), &[]), Action::Redraw);
        assert_eq!(e.key(Key::Enter, &[]), Action::Submit("help".into()));
        assert_eq!(e.line(), "");
        typed(&mut e, "oops");
        assert_eq!(e.key(Key::Ctrl('c'), &[]), Action::Cancel);
        assert_eq!(e.line(), "");
        assert_eq!(e.key(Key::Ctrl('d'), &[]), Action::Eof);
        assert_eq!(e.key(Key::Ctrl('l'), &[]), Action::ClearScreen);
        assert_eq!(e.key(Key::Tab, &[]), Action::Complete);
    }

    #[test]
    fn up_and_down_walk_the_history_and_come_back() {
        let h = vec!["one".to_string(), "two".to_string()];
        let mut e = Editor::new();
        typed(&mut e, "draft");
        e.key(Key::Up, &h);
        assert_eq!(e.line(), "two");
        e.key(Key::Up, &h);
        e.key(Key::Up, &h);
        assert_eq!(e.line(), "one");
        e.key(Key::Down, &h);
        assert_eq!(e.line(), "two");
        e.key(Key::Down, &h);
        assert_eq!(e.line(), "draft");
        e.key(Key::Down, &h);
        assert_eq!(e.line(), "draft");
    }

    #[test]
    fn ctrl_r_finds_older_matches_and_enter_submits_one() {
        let h: Vec<String> = [
            "list_groups",
            "join_group physics",
            "list_files physics",
            "help",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut e = Editor::new();
        e.key(Key::Ctrl('r'), &h);
        assert!(e.view("> ").prompt.starts_with("(reverse-i-search)"));
        for c in "phy".chars() {
            e.key(Key::Char(c), &h);
        }
        assert_eq!(e.line(), "list_files physics");
        assert_eq!(e.view("> ").prompt, "(reverse-i-search)'phy': ");
        e.key(Key::Ctrl('r'), &h);
        assert_eq!(e.line(), "join_group physics");
        e.key(Key::Ctrl('r'), &h);
        assert_eq!(e.line(), "join_group physics", "no older match: stays");
        assert_eq!(
            e.key(Key::Enter, &h),
            Action::Submit("join_group physics".into())
        );
        assert!(!e.searching());
    }

    #[test]
    fn ctrl_g_restores_and_other_keys_edit_the_match() {
        let h = vec!["list_groups".to_string()];
        let mut e = Editor::new();
        typed(&mut e, "x");
        e.key(Key::Ctrl('r'), &h);
        e.key(Key::Char('g'), &h);
        assert_eq!(e.line(), "list_groups");
        e.key(Key::Ctrl('g'), &h);
        assert_eq!(e.line(), "x");
        e.key(Key::Ctrl('r'), &h);
        e.key(Key::Char('l'), &h);
        e.key(Key::End, &h);
        assert!(!e.searching());
        e.key(Key::Char('!'), &h);
        assert_eq!(e.line(), "list_groups!");
    }

    #[test]
    fn a_completion_replaces_the_word_before_the_cursor() {
        let mut e = Editor::new();
        typed(&mut e, "list_f g");
        e.key(Key::WordLeft, &[]);
        e.key(Key::Left, &[]);
        e.replace_before_cursor(0, "list_files");
        assert_eq!(e.line(), "list_files g");
        assert_eq!(e.cursor(), 10);
    }
}
