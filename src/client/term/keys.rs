//! Terminal bytes to keys. Pure: a read may end anywhere — inside an escape sequence or a
//! UTF-8 character — so the decoder keeps the unfinished tail and finishes it with the next
//! read.
//!
//! A lone ESC is not a key of its own: as in readline, it prefixes the next byte (ESC b is
//! Alt-b), so no timer is needed to tell "Escape" from the start of a sequence.

/// Longest escape sequence kept while waiting for its end; anything longer is garbage and
/// dropped (real ones are under 10 bytes).
const MAX_SEQUENCE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    /// Ctrl and a letter (`'a'..='z'`), for those with no name below.
    Ctrl(char),
    Enter,
    Tab,
    Backspace,
    Delete,
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    WordLeft,
    WordRight,
    /// Alt-Backspace: delete the word before the cursor.
    DeleteWordBack,
    /// Alt-d: delete the word after the cursor.
    DeleteWordForward,
    /// A sequence recognised but not bound to anything (F-keys, Page Up, a paste marker...).
    Ignored,
}

#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of an unfinished escape sequence or UTF-8 character.
    pending: Vec<u8>,
}

enum Step {
    Key(Key, usize),
    /// The bytes so far are the start of something longer.
    NeedMore,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Decodes `bytes` (after whatever was left from earlier reads) into keys.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Key> {
        self.pending.extend_from_slice(bytes);
        let mut keys = Vec::new();
        let mut at = 0;
        while at < self.pending.len() {
            match decode(&self.pending[at..]) {
                Step::Key(key, used) => {
                    keys.push(key);
                    at += used;
                }
                Step::NeedMore if self.pending.len() - at > MAX_SEQUENCE => {
                    keys.push(Key::Ignored);
                    at = self.pending.len();
                }
                Step::NeedMore => break,
            }
        }
        self.pending.drain(..at);
        keys
    }
}

fn decode(b: &[u8]) -> Step {
    match b[0] {
        0x1b => escape(b),
        b'\r' | b'\n' => Step::Key(Key::Enter, 1),
        b'\t' => Step::Key(Key::Tab, 1),
        0x7f | 0x08 => Step::Key(Key::Backspace, 1),
        c @ 0x01..=0x1a => Step::Key(Key::Ctrl((b'a' + c - 1) as char), 1),
        0x00 | 0x1c..=0x1f => Step::Key(Key::Ignored, 1),
        c if c < 0x80 => Step::Key(Key::Char(c as char), 1),
        c => utf8(b, c),
    }
}

fn utf8(b: &[u8], first: u8) -> Step {
    let len = match first {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return Step::Key(Key::Ignored, 1),
    };
    if b.len() < len {
        // Only wait for continuation bytes; anything else shows the character is broken.
        if b[1..].iter().all(|&c| c & 0xc0 == 0x80) {
            return Step::NeedMore;
        }
        return Step::Key(Key::Ignored, 1);
    }
    match std::str::from_utf8(&b[..len]) {
        Ok(s) => Step::Key(s.chars().next().map_or(Key::Ignored, Key::Char), len),
        Err(_) => Step::Key(Key::Ignored, 1),
    }
}

fn escape(b: &[u8]) -> Step {
    let Some(&second) = b.get(1) else {
        return Step::NeedMore;
    };
    match second {
        b'[' => csi(b),
        b'O' => match b.get(2) {
            None => Step::NeedMore,
            Some(&c) => Step::Key(ss3(c), 3),
        },
        b'b' => Step::Key(Key::WordLeft, 2),
        b'f' => Step::Key(Key::WordRight, 2),
        b'd' => Step::Key(Key::DeleteWordForward, 2),
        0x7f | 0x08 => Step::Key(Key::DeleteWordBack, 2),
        // ESC ESC: the first one was pressed alone; the second may start a sequence.
        0x1b => Step::Key(Key::Ignored, 1),
        _ => Step::Key(Key::Ignored, 2),
    }
}

fn ss3(c: u8) -> Key {
    match c {
        b'A' => Key::Up,
        b'B' => Key::Down,
        b'C' => Key::Right,
        b'D' => Key::Left,
        b'H' => Key::Home,
        b'F' => Key::End,
        _ => Key::Ignored,
    }
}

/// `ESC [ params final`: parameters are digits and `;`, the final byte is in 0x40..=0x7e.
fn csi(b: &[u8]) -> Step {
    let Some(end) = b[2..].iter().position(|c| (0x40..=0x7e).contains(c)) else {
        return Step::NeedMore;
    };
    let params = &b[2..2 + end];
    let used = 2 + end + 1;
    let modified = params.ends_with(b";5") || params.ends_with(b";3");
    let key = match (b[2 + end], params) {
        (b'A', _) => Key::Up,
        (b'B', _) => Key::Down,
        (b'C', _) if modified => Key::WordRight,
        (b'D', _) if modified => Key::WordLeft,
        (b'C', _) => Key::Right,
        (b'D', _) => Key::Left,
        (b'H', _) => Key::Home,
        (b'F', _) => Key::End,
        (b'~', b"1" | b"7") => Key::Home,
        (b'~', b"4" | b"8") => Key::End,
        (b'~', b"3") => Key::Delete,
        _ => Key::Ignored,
    };
    Step::Key(key, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_are_characters_and_control_keys() {
        let mut d = Decoder::new();
        assert_eq!(
            d.feed(b"ab\t\r\x7f\x03\x04\x12"),
            vec![
                Key::Char('a'),
                Key::Char('b'),
                Key::Tab,
                Key::Enter,
                Key::Backspace,
                Key::Ctrl('c'),
                Key::Ctrl('d'),
                Key::Ctrl('r'),
            ]
        );
    }

    #[test]
    fn arrows_in_both_encodings() {
        let mut d = Decoder::new();
        assert_eq!(
            d.feed(b"\x1b[A\x1b[B\x1bOC\x1bOD\x1b[H\x1b[4~\x1b[3~"),
            vec![
                Key::Up,
                Key::Down,
                Key::Right,
                Key::Left,
                Key::Home,
                Key::End,
                Key::Delete
            ]
        );
        assert_eq!(
            d.feed(b"\x1b[1;5C\x1b[1;5D\x1bb\x1b\x7f"),
            vec![
                Key::WordRight,
                Key::WordLeft,
                Key::WordLeft,
                Key::DeleteWordBack
            ]
        );
    }

    #[test]
    fn a_sequence_split_across_reads_is_one_key() {
        let mut d = Decoder::new();
        assert_eq!(d.feed(b"x\x1b"), vec![Key::Char('x')]);
        assert_eq!(d.feed(b"["), vec![]);
        assert_eq!(d.feed(b"1;5"), vec![]);
        assert_eq!(d.feed(b"Cy"), vec![Key::WordRight, Key::Char('y')]);
        // Every split point of a mixed input gives the same keys.
        let all = "a\x1b[A\u{e9}\x1b[3~\u{1f600}\x1bOB\r".as_bytes();
        let whole = Decoder::new().feed(all);
        for cut in 0..all.len() {
            let mut d = Decoder::new();
            let mut keys = d.feed(&all[..cut]);
            keys.extend(d.feed(&all[cut..]));
            assert_eq!(keys, whole, "split at {cut}");
        }
        assert_eq!(whole.len(), 7);
    }

    #[test]
    fn unicode_is_decoded_and_broken_bytes_skipped() {
        let mut d = Decoder::new();
        assert_eq!(d.feed("é".as_bytes()), vec![Key::Char('é')]);
        assert_eq!(d.feed(b"\xc3x"), vec![Key::Ignored, Key::Char('x')]);
        assert_eq!(d.feed(b"\xff"), vec![Key::Ignored]);
    }

    #[test]
    fn unknown_or_endless_sequences_are_dropped() {
        let mut d = Decoder::new();
        assert_eq!(
            d.feed(b"\x1b[200~x\x1b[15~"),
            vec![Key::Ignored, Key::Char('x'), Key::Ignored]
        );
        let mut endless = b"\x1b[".to_vec();
        endless.extend(std::iter::repeat_n(b'1', 40));
        assert_eq!(d.feed(&endless), vec![Key::Ignored]);
        assert_eq!(d.feed(b"z"), vec![Key::Char('z')]);
    }
}
