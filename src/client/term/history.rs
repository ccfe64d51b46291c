//! Lines typed at the terminal, kept per user in `<state>/<user>/history` (mode 0600).
//!
//! Passwords never reach it: a `create_user` or `login` line is kept as the command and the
//! user name only, in memory too, so Up recalls `login alice ` and the password is typed
//! again. Lines typed before a login are kept in memory and written to the file of the user
//! who logs in next; another user logging in on the same client sees only their own.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Entries kept in memory and on disk: plenty to search, small to load (a few tens of KiB).
pub const MAX_ENTRIES: usize = 1000;
/// The file is rewritten down to `MAX_ENTRIES` once it holds this many lines, so appending
/// stays cheap and the file stays bounded.
const REWRITE_AT: usize = 2 * MAX_ENTRIES;

#[derive(Debug, Default)]
pub struct History {
    entries: Vec<String>,
    /// The logged-in user's file; `None` before a login (memory only).
    file: Option<PathBuf>,
    /// Lines in the file (to know when to rewrite it).
    file_lines: usize,
}

/// What of `line` may be remembered: passwords removed, control characters dropped, blank
/// lines not at all.
pub fn sanitize(line: &str) -> Option<String> {
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    let mut words = clean.split_whitespace();
    let first = words.next()?;
    if first == "create_user" || first == "login" {
        return Some(match words.next() {
            Some(user) => format!("{first} {user}"),
            None => first.to_string(),
        });
    }
    Some(clean.trim().to_string())
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    /// Oldest first.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Remembers a submitted line (sanitized; a repeat of the last entry is not added again).
    /// Returns an error sentence if the file could not be written.
    pub fn add(&mut self, line: &str) -> Result<(), String> {
        let Some(entry) = sanitize(line) else {
            return Ok(());
        };
        if self.entries.last() == Some(&entry) {
            return Ok(());
        }
        self.entries.push(entry.clone());
        if self.entries.len() > MAX_ENTRIES {
            let extra = self.entries.len() - MAX_ENTRIES;
            self.entries.drain(..extra);
        }
        let Some(path) = self.file.clone() else {
            return Ok(());
        };
        if self.file_lines + 1 >= REWRITE_AT {
            self.rewrite(&path)
        } else {
            self.file_lines += 1;
            append(&path, &[entry])
        }
    }

    /// `user` logged in: their file is loaded, and what was typed since the last login (before
    /// it) is added to it.
    pub fn login(&mut self, user_dir: &Path) -> Result<(), String> {
        let path = user_dir.join("history");
        let typed = std::mem::take(&mut self.entries);
        let text = match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        // Sanitized again: a file written by hand or by an older client must not put a
        // password back on the screen.
        let mut loaded: Vec<String> = text.lines().filter_map(sanitize).collect();
        self.file_lines = loaded.len();
        let start = loaded.len().saturating_sub(MAX_ENTRIES);
        loaded.drain(..start);
        self.entries = loaded;
        self.file = Some(path.clone());
        for line in typed {
            self.add(&line)?;
        }
        Ok(())
    }

    /// The session ended: nothing more is written, and the next user does not see this one's
    /// lines.
    pub fn logout(&mut self) {
        self.file = None;
        self.entries.clear();
        self.file_lines = 0;
    }

    fn rewrite(&mut self, path: &Path) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        append(&tmp, &self.entries)?;
        fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        self.file_lines = self.entries.len();
        Ok(())
    }
}

fn append(path: &Path, lines: &[String]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn passwords_are_stripped() {
        assert_eq!(
            sanitize("login alice s3cret").as_deref(),
            Some("login alice")
        );
        assert_eq!(
            sanitize("  create_user bob  pw extra").as_deref(),
            Some("create_user bob")
        );
        assert_eq!(sanitize("login").as_deref(), Some("login"));
        assert_eq!(sanitize("   "), None);
        assert_eq!(
            sanitize("list_files g\u{1b}[2J").as_deref(),
            Some("list_files g[2J")
        );
    }

    #[test]
    fn lines_before_login_go_to_the_users_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::new();
        h.add("create_user alice pw1").unwrap();
        h.add("login alice pw1").unwrap();
        h.login(&dir.path().join("alice")).unwrap();
        h.add("list_groups").unwrap();
        h.add("list_groups").unwrap();
        let path = dir.path().join("alice/history");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "create_user alice\nlogin alice\nlist_groups\n");
        assert!(!text.contains("pw1"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        h.logout();
        assert!(h.entries().is_empty());
        h.add("login bob pw2").unwrap();
        h.login(&dir.path().join("bob")).unwrap();
        assert_eq!(h.entries(), ["login bob"]);
        h.logout();
        h.login(&dir.path().join("alice")).unwrap();
        assert_eq!(h.entries().len(), 3);
    }

    #[test]
    fn the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::new();
        h.login(dir.path()).unwrap();
        for i in 0..(REWRITE_AT + 10) {
            h.add(&format!("list_files g{i}")).unwrap();
        }
        let lines = fs::read_to_string(dir.path().join("history"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= REWRITE_AT, "{lines} lines");
        assert_eq!(h.entries().len(), MAX_ENTRIES);
        assert_eq!(
            h.entries().last().map(String::as_str),
            Some(format!("list_files g{}", REWRITE_AT + 9).as_str())
        );
    }

    #[test]
    fn a_password_written_into_the_file_by_hand_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("history"), "login alice pw\nhelp\n").unwrap();
        let mut h = History::new();
        h.login(dir.path()).unwrap();
        assert_eq!(h.entries(), ["login alice", "help"]);
    }
}
