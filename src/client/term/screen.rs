//! Drawing the block at the bottom of the terminal: the edit line (prompt, text, a dimmed
//! hint) and the status line under it. Pure: returns the bytes to write and where the cursor
//! was left, so the next draw can first erase exactly this block.
//!
//! Positions are counted in characters, one column each (names and commands are ASCII; a
//! wide character in a path may misplace the cursor, never the text).

use super::editor::View;

/// Dim on, dim off.
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";
/// From the cursor to the end of the screen.
const ERASE_DOWN: &str = "\x1b[J";

/// Moves from the cursor's row in a drawn block (`row` rows below its top) to the block's
/// first column and erases the block.
pub fn erase(row: usize) -> String {
    let mut s = String::new();
    if row > 0 {
        s.push_str(&format!("\x1b[{row}A"));
    }
    s.push('\r');
    s.push_str(ERASE_DOWN);
    s
}

/// Clears the whole screen (Ctrl-L) before a draw.
pub fn clear_screen() -> &'static str {
    "\x1b[H\x1b[2J"
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Draws the block from the first column of an empty row. `line`: the edit line and its
/// hint; `status`: the status line. Returns the bytes and the row of the cursor within the
/// block (for `erase`).
pub fn draw(
    line: Option<(&View, Option<&str>)>,
    status: Option<&str>,
    cols: usize,
) -> (String, usize) {
    let cols = cols.max(2);
    let mut out = String::new();
    let mut at_row = 0;
    let (mut crow, mut ccol) = (0, 0);
    if let Some((view, hint)) = line {
        let len = view.prompt.chars().count() + view.text.chars().count();
        out.push_str(&view.prompt);
        out.push_str(&view.text);
        // A row filled exactly leaves the terminal waiting to wrap: start the next row now so
        // the cursor can be placed on it.
        if len > 0 && len % cols == 0 {
            out.push_str("\r\n");
        }
        let end_col = len % cols;
        if let Some(h) = hint.filter(|_| view.cursor == view.text.chars().count()) {
            let room = cols - 1 - end_col;
            if room > 0 && !h.is_empty() {
                out.push_str(DIM);
                out.push_str(&truncate(h, room));
                out.push_str(RESET);
            }
        }
        at_row = len / cols;
        let pos = view.prompt.chars().count() + view.cursor;
        crow = pos / cols;
        ccol = pos % cols;
    }
    if let Some(s) = status {
        if line.is_some() {
            out.push_str("\r\n");
            at_row += 1;
        }
        out.push_str(&truncate(s, cols - 1));
    }
    if at_row > crow {
        out.push_str(&format!("\x1b[{}A", at_row - crow));
    }
    out.push('\r');
    if ccol > 0 {
        out.push_str(&format!("\x1b[{ccol}C"));
    }
    (out, crow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(text: &str, cursor: usize) -> View {
        View {
            prompt: "> ".into(),
            text: text.into(),
            cursor,
        }
    }

    #[test]
    fn a_short_line_with_hint_and_status() {
        let v = view("login", 5);
        let (out, row) = draw(Some((&v, Some(" <user_id>"))), Some("downloading f 5%"), 80);
        assert_eq!(
            out,
            "> login\x1b[2m <user_id>\x1b[0m\r\ndownloading f 5%\x1b[1A\r\x1b[7C"
        );
        assert_eq!(row, 0);
        assert_eq!(erase(row), "\r\x1b[J");
    }

    #[test]
    fn the_hint_shows_only_with_the_cursor_at_the_end_and_never_wraps() {
        let v = view("login", 2);
        let (out, _) = draw(Some((&v, Some(" <user_id>"))), None, 80);
        assert_eq!(out, "> login\r\x1b[4C");
        let v = view("login", 5);
        let (out, _) = draw(Some((&v, Some(" <user_id>"))), None, 10);
        assert_eq!(out, "> login\x1b[2m <\x1b[0m\r\x1b[7C");
    }

    #[test]
    fn long_lines_wrap_and_the_cursor_row_is_tracked() {
        // 2 + 18 = 20 characters on 10 columns: two full rows, the cursor on a third.
        let v = view("abcdefghijklmnopqr", 18);
        let (out, row) = draw(Some((&v, None)), Some("status"), 10);
        assert!(out.starts_with("> abcdefghijklmnopqr\r\n\r\nstatus"));
        assert_eq!(row, 2);
        assert!(out.ends_with("\x1b[1A\r"));
        assert_eq!(erase(row), "\x1b[2A\r\x1b[J");
        let v = view("abcdefghijklmnopqr", 3);
        let (_, row) = draw(Some((&v, None)), None, 10);
        assert_eq!(row, 0);
    }

    #[test]
    fn a_status_line_alone_is_cut_to_the_width() {
        let (out, row) = draw(None, Some("0123456789abc"), 10);
        assert_eq!(out, "012345678\r");
        assert_eq!(row, 0);
    }
}
