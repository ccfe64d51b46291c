//! Pieces: the fixed piece size, piece counts, hex hash lines, piece sets (bitfields) and the
//! range lists used to report them. Shared by tracker and client; pure.

use std::fmt::Write as _;

/// Every file is cut into pieces of this size (the last may be shorter); each is checked
/// against its own SHA-1.
pub const PIECE_SIZE: u64 = 512 * 1024;
/// Largest file the system accepts: 256 GiB, so that the staged hashes of one upload stay
/// bounded (10 MiB as bytes) on the tracker.
pub const MAX_PIECES: u64 = 512 * 1024;
/// Hashes per hash line: 1,024 × 40 hex digits keeps a line well under `MAX_LINE`.
pub const HASHES_PER_LINE: usize = 1024;

pub type Hash = [u8; 20];

/// Number of pieces of a file of `size` bytes.
pub fn piece_count(size: u64) -> u64 {
    size.div_ceil(PIECE_SIZE)
}

/// Length of piece `index` of a file of `size` bytes.
pub fn piece_len(size: u64, index: u64) -> u64 {
    let start = index * PIECE_SIZE;
    size.saturating_sub(start).min(PIECE_SIZE)
}

/// Number of hash lines that carry `npieces` hashes.
pub fn hash_line_count(npieces: usize) -> usize {
    npieces.div_ceil(HASHES_PER_LINE)
}

pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Hex of concatenated hashes (one hash line, or the `upload` operation's payload).
pub fn hashes_to_hex(hashes: &[Hash]) -> String {
    let mut s = String::with_capacity(hashes.len() * 40);
    for h in hashes {
        for b in h {
            let _ = write!(s, "{b:02x}");
        }
    }
    s
}

/// Parses concatenated hex hashes; `None` unless the text is a whole number of hashes.
pub fn hashes_from_hex(s: &str) -> Option<Vec<Hash>> {
    if !s.len().is_multiple_of(40) {
        return None;
    }
    let bytes = from_hex(s)?;
    Some(
        bytes
            .chunks(20)
            .map(|c| {
                let mut h = [0u8; 20];
                h.copy_from_slice(c);
                h
            })
            .collect(),
    )
}

/// Splits hashes into hash lines of at most `HASHES_PER_LINE`.
pub fn hash_lines(hashes: &[Hash]) -> impl Iterator<Item = String> + '_ {
    hashes.chunks(HASHES_PER_LINE).map(hashes_to_hex)
}

/// A set of piece indices of one file, as a bitfield.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PieceSet {
    bits: Vec<u8>,
    len: usize,
    count: usize,
}

impl PieceSet {
    pub fn empty(npieces: usize) -> Self {
        PieceSet {
            bits: vec![0; npieces.div_ceil(8)],
            len: npieces,
            count: 0,
        }
    }

    pub fn full(npieces: usize) -> Self {
        let mut s = Self::empty(npieces);
        for i in 0..npieces {
            s.insert(i);
        }
        s
    }

    /// Number of pieces of the file (not the number present).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == self.len
    }

    pub fn contains(&self, i: usize) -> bool {
        i < self.len && self.bits[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Adds a piece; false if out of range or already present.
    pub fn insert(&mut self, i: usize) -> bool {
        if i >= self.len || self.contains(i) {
            return false;
        }
        self.bits[i / 8] |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }

    pub fn remove(&mut self, i: usize) -> bool {
        if !self.contains(i) {
            return false;
        }
        self.bits[i / 8] &= !(0x80 >> (i % 8));
        self.count -= 1;
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(move |&i| self.contains(i))
    }

    /// The wire form: `all` when full, otherwise `b` and the bitfield's hex.
    pub fn to_wire(&self) -> String {
        if self.is_full() {
            "all".to_string()
        } else {
            format!("b{}", to_hex(&self.bits))
        }
    }

    /// Parses the wire form for a file of `npieces` pieces.
    pub fn from_wire(s: &str, npieces: usize) -> Option<Self> {
        if s == "all" {
            return Some(Self::full(npieces));
        }
        let bits = from_hex(s.strip_prefix('b')?)?;
        if bits.len() != npieces.div_ceil(8) {
            return None;
        }
        let mut set = Self::empty(npieces);
        for i in 0..npieces {
            if bits[i / 8] & (0x80 >> (i % 8)) != 0 {
                set.insert(i);
            }
        }
        Some(set)
    }

    /// The set as a range list (`0-15,17`), empty string for the empty set.
    pub fn to_ranges(&self) -> String {
        format_ranges(self.iter())
    }
}

/// Formats ascending indices as a range list: `0-15,17,20-31`.
pub fn format_ranges(indices: impl IntoIterator<Item = usize>) -> String {
    let mut out = String::new();
    let mut run: Option<(usize, usize)> = None;
    let flush = |out: &mut String, (a, b): (usize, usize)| {
        if !out.is_empty() {
            out.push(',');
        }
        if a == b {
            let _ = write!(out, "{a}");
        } else {
            let _ = write!(out, "{a}-{b}");
        }
    };
    for i in indices {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some(r) => {
                flush(&mut out, r);
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some(r) = run {
        flush(&mut out, r);
    }
    out
}

/// Parses a range list of pieces of a file of `npieces` pieces. The ranges must ascend without
/// overlapping, which bounds the work to `npieces`; `None` if malformed or out of range.
pub fn parse_ranges(s: &str, npieces: usize) -> Option<PieceSet> {
    let mut set = PieceSet::empty(npieces);
    let mut next = 0usize;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let a = part.parse::<usize>().ok()?;
                (a, a)
            }
        };
        if a < next || a > b || b >= npieces {
            return None;
        }
        for i in a..=b {
            set.insert(i);
        }
        next = b + 1;
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_arithmetic() {
        assert_eq!(piece_count(0), 0);
        assert_eq!(piece_count(1), 1);
        assert_eq!(piece_count(PIECE_SIZE), 1);
        assert_eq!(piece_count(PIECE_SIZE + 1), 2);
        assert_eq!(piece_len(PIECE_SIZE + 1, 1), 1);
        assert_eq!(piece_len(PIECE_SIZE + 1, 0), PIECE_SIZE);
        assert_eq!(piece_len(10, 5), 0);
        assert_eq!(hash_line_count(1024), 1);
        assert_eq!(hash_line_count(1025), 2);
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let hashes: Vec<Hash> = (0..3u8).map(|i| [i; 20]).collect();
        let hex = hashes_to_hex(&hashes);
        assert_eq!(hex.len(), 120);
        assert_eq!(hashes_from_hex(&hex).unwrap(), hashes);
        assert!(hashes_from_hex(&hex[1..]).is_none());
        assert!(hashes_from_hex(&"zz".repeat(20)).is_none());
    }

    #[test]
    fn piece_set_wire_forms() {
        let mut s = PieceSet::empty(10);
        assert!(s.insert(0) && s.insert(9) && !s.insert(9) && !s.insert(10));
        assert_eq!(s.count(), 2);
        assert_eq!(s.to_wire(), "b8040");
        assert_eq!(PieceSet::from_wire("b8040", 10).unwrap(), s);
        assert!(PieceSet::from_wire("b80", 10).is_none());
        assert!(PieceSet::from_wire("all", 10).unwrap().is_full());
        assert_eq!(PieceSet::full(10).to_wire(), "all");
        assert_eq!(s.to_ranges(), "0,9");
    }

    #[test]
    fn ranges_round_trip() {
        let idx = vec![0, 1, 2, 3, 5, 7, 8];
        let r = format_ranges(idx.iter().copied());
        assert_eq!(r, "0-3,5,7-8");
        assert_eq!(parse_ranges(&r, 9).unwrap().iter().collect::<Vec<_>>(), idx);
        assert!(parse_ranges("0-3,2", 9).is_none(), "overlap refused");
        assert!(parse_ranges("5,1", 9).is_none(), "descending refused");
        assert!(parse_ranges(&r, 8).is_none());
        assert!(parse_ranges("3-1", 9).is_none());
        assert!(parse_ranges("", 9).is_none());
        assert!(parse_ranges("1,,2", 9).is_none());
    }
}
