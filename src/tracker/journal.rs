//! The tracker's durable log: a snapshot file plus an append-only journal of entries after it,
//! both in the data directory. Entries are appended to a buffer during a loop turn and written
//! and fdatasync'ed once at the end of the turn (`flush`), so many writes share one flush. When
//! the journal grows past `COMPACT_BYTES`, the state is written as a new snapshot (temporary
//! name, fsync, rename) and the journal starts empty.

use super::op::Entry;
use super::state::State;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Default journal size that triggers compaction: large enough that compaction (which writes
/// the whole state while the loop waits) is rare, small enough that replay at start stays
/// quick. `--compact-bytes` overrides it.
pub const COMPACT_BYTES: u64 = 64 * 1024 * 1024;

const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const JOURNAL: &str = "journal";

/// Where the log stands: the last entry's term and sequence number, and whether that term was
/// one where this tracker ran alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub term: u64,
    pub seq: u64,
    pub solo: bool,
}

/// What `open` recovered.
pub struct Recovered {
    pub state: State,
    pub pos: Position,
    /// True when neither a snapshot nor a journal entry existed: a brand-new tracker.
    pub fresh: bool,
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Encoded entries not yet written.
    buf: Vec<u8>,
    /// Bytes in the journal file since the last snapshot.
    size: u64,
    /// Last sequence number appended (written or not).
    pub appended: u64,
    /// Last sequence number known to be on disk.
    pub durable: u64,
    /// Journal size that triggers compaction.
    pub compact_bytes: u64,
}

impl Journal {
    /// Opens (creating if needed) the data directory, loads the snapshot and replays the
    /// journal. A torn last line (the process died mid-write) is cut off: it was never flushed,
    /// so never acknowledged.
    pub fn open(dir: &Path) -> Result<(Journal, Recovered), String> {
        // Password verifiers and session secrets live here: 0700, every file 0600.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        let snap_path = dir.join(SNAPSHOT);
        let (mut state, mut pos, mut fresh) = match fs::read_to_string(&snap_path) {
            Ok(text) => {
                let (state, pos) =
                    parse_snapshot(&text).map_err(|e| format!("{}: {e}", snap_path.display()))?;
                (state, pos, false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (State::new(), Position::default(), true)
            }
            Err(e) => return Err(format!("cannot read {}: {e}", snap_path.display())),
        };
        let jpath = dir.join(JOURNAL);
        let mut good_len = 0u64;
        if let Ok(f) = File::open(&jpath) {
            let mut reader = BufReader::new(f);
            let mut line = Vec::new();
            let mut lineno = 0;
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| format!("cannot read {}: {e}", jpath.display()))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break; // end, or a torn last line
                }
                lineno += 1;
                let text = std::str::from_utf8(&line[..n - 1])
                    .map_err(|_| format!("{}, line {lineno}: not UTF-8", jpath.display()))?;
                let entry = Entry::decode(text)
                    .map_err(|e| format!("{}, line {lineno}: {e}", jpath.display()))?;
                good_len += n as u64;
                if entry.seq <= pos.seq {
                    continue; // already in the snapshot
                }
                if entry.seq != pos.seq + 1 {
                    return Err(format!(
                        "{}, line {lineno}: entry {} follows {}; the journal has a gap",
                        jpath.display(),
                        entry.seq,
                        pos.seq
                    ));
                }
                fresh = false;
                apply_entry(&mut state, &mut pos, &entry);
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&jpath)
            .map_err(|e| format!("cannot open {}: {e}", jpath.display()))?;
        if file.metadata().map(|m| m.len()).unwrap_or(0) > good_len {
            file.set_len(good_len)
                .map_err(|e| format!("cannot cut the torn end of {}: {e}", jpath.display()))?;
        }
        let journal = Journal {
            dir: dir.to_path_buf(),
            file,
            buf: Vec::new(),
            size: good_len,
            appended: pos.seq,
            durable: pos.seq,
            compact_bytes: COMPACT_BYTES,
        };
        Ok((journal, Recovered { state, pos, fresh }))
    }

    /// Queues an entry; it is on disk after the next `flush`.
    pub fn append(&mut self, entry: &Entry) {
        self.append_encoded(entry.seq, &entry.encode());
    }

    /// Queues an entry already encoded (`Entry::encode`) as entry `seq`.
    pub fn append_encoded(&mut self, seq: u64, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.appended = seq;
    }

    /// Writes and fdatasyncs everything appended. Returns true if anything was written.
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.buf.is_empty() {
            return Ok(false);
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        self.size += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        self.durable = self.appended;
        Ok(true)
    }

    pub fn wants_compaction(&self) -> bool {
        self.size >= self.compact_bytes
    }

    /// Writes `state` at `pos` as the snapshot and empties the journal. Call after `flush`.
    pub fn compact(&mut self, state: &State, pos: Position) -> io::Result<()> {
        self.write_snapshot(state.snapshot_lines().iter().map(String::as_str), pos)
    }

    /// Makes a snapshot (given as its state lines) durable and starts an empty journal: used
    /// for compaction and when a follower receives the leader's state.
    pub fn write_snapshot<'a>(
        &mut self,
        lines: impl Iterator<Item = &'a str>,
        pos: Position,
    ) -> io::Result<()> {
        self.buf.clear();
        let tmp = self.dir.join(SNAPSHOT_TMP);
        {
            // Made anew with its final mode (a stale temporary may have had another).
            let _ = fs::remove_file(&tmp);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut w = io::BufWriter::new(f);
            writeln!(w, "{}", snapshot_header(pos))?;
            let mut count = 0u64;
            for l in lines {
                w.write_all(l.as_bytes())?;
                w.write_all(b"\n")?;
                count += 1;
            }
            writeln!(w, "end {count}")?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(SNAPSHOT))?;
        File::open(&self.dir)?.sync_all()?;
        let jpath = self.dir.join(JOURNAL);
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&jpath)?;
        self.file.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&jpath)?;
        self.size = 0;
        self.appended = pos.seq;
        self.durable = pos.seq;
        Ok(())
    }
}

/// Applies a logged entry to the state and the position. Entries in the log already passed
/// validation at the leader, so a refusal here only means the operation changed nothing.
pub fn apply_entry(state: &mut State, pos: &mut Position, entry: &Entry) {
    let _ = state.apply(entry.origin, &entry.op);
    if let super::op::Op::Term { term, solo } = entry.op {
        pos.term = term;
        pos.solo = solo;
    }
    pos.seq = entry.seq;
}

pub fn snapshot_header(pos: Position) -> String {
    format!(
        "snapshot {} {} {}",
        pos.term,
        pos.seq,
        if pos.solo { "solo" } else { "paired" }
    )
}

pub fn parse_snapshot_header(line: &str) -> Result<Position, String> {
    let w: Vec<&str> = line.split(' ').collect();
    match w.as_slice() {
        ["snapshot", term, seq, mode] => Ok(Position {
            term: term.parse().map_err(|_| "bad term in snapshot header")?,
            seq: seq
                .parse()
                .map_err(|_| "bad sequence number in snapshot header")?,
            solo: match *mode {
                "solo" => true,
                "paired" => false,
                _ => return Err("bad mode in snapshot header".into()),
            },
        }),
        _ => Err(format!("not a snapshot header: '{}'", line.escape_debug())),
    }
}

/// Parses a whole snapshot file: header, state lines, `end <count>`.
fn parse_snapshot(text: &str) -> Result<(State, Position), String> {
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.first().copied().ok_or("empty snapshot")?;
    let pos = parse_snapshot_header(header)?;
    let end = lines.pop().ok_or("empty snapshot")?;
    let count: usize = end
        .strip_prefix("end ")
        .and_then(|c| c.parse().ok())
        .ok_or("snapshot is incomplete (no end line)")?;
    let body = &lines[1..];
    if body.len() != count {
        return Err(format!(
            "snapshot has {} lines, its end line says {count}",
            body.len()
        ));
    }
    let state = State::from_snapshot_lines(body.iter().copied())?;
    Ok((state, pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::op::Op;

    fn entry(seq: u64, user: &str) -> Entry {
        Entry {
            term: 1,
            seq,
            origin: None,
            op: Op::CreateUser {
                user: user.into(),
                pw_hash: crate::tracker::password::hash_password("pw"),
            },
        }
    }

    fn replay(dir: &Path) -> Recovered {
        Journal::open(dir).map(|(_, r)| r).expect("open")
    }

    #[test]
    fn flushed_entries_are_replayed_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, r) = Journal::open(dir.path()).expect("open");
        assert!(r.fresh);
        j.append(&entry(1, "a"));
        j.append(&entry(2, "b"));
        assert_eq!(j.durable, 0, "nothing is durable before the flush");
        assert!(j.flush().expect("flush"));
        assert_eq!(j.durable, 2);
        drop(j);
        let r = replay(dir.path());
        assert!(!r.fresh);
        assert_eq!(r.pos.seq, 2);
        assert!(r.state.user_exists("a") && r.state.user_exists("b"));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_never_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path()).expect("open");
        j.append(&entry(1, "a"));
        j.flush().expect("flush");
        drop(j);
        let jpath = dir.path().join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&jpath).expect("open");
        f.write_all(b"1 2 - create_user half").expect("write");
        drop(f);
        let (mut j, r) = Journal::open(dir.path()).expect("open");
        assert_eq!(r.pos.seq, 1);
        assert!(!r.state.user_exists("half"));
        // The next entry lands on a clean line.
        j.append(&entry(2, "b"));
        j.flush().expect("flush");
        drop(j);
        let r = replay(dir.path());
        assert_eq!(r.pos.seq, 2);
        assert!(r.state.user_exists("b"));
    }

    #[test]
    fn compaction_keeps_the_state_and_empties_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, r) = Journal::open(dir.path()).expect("open");
        let mut state = r.state;
        let mut pos = r.pos;
        for i in 1..=50 {
            let e = entry(i, &format!("u{i}"));
            apply_entry(&mut state, &mut pos, &e);
            j.append(&e);
        }
        j.flush().expect("flush");
        j.compact(&state, pos).expect("compact");
        assert_eq!(
            std::fs::metadata(dir.path().join(JOURNAL))
                .expect("journal")
                .len(),
            0
        );
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());
        // Entries after the snapshot replay on top of it.
        let e = entry(51, "late");
        apply_entry(&mut state, &mut pos, &e);
        j.append(&e);
        j.flush().expect("flush");
        drop(j);
        let r = replay(dir.path());
        assert_eq!(r.pos.seq, 51);
        assert_eq!(r.state.digest(), state.digest());
    }

    #[test]
    fn a_corrupt_snapshot_or_a_gap_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(SNAPSHOT), "snapshot 1 5 solo\nuser x\n").expect("write");
        let e = Journal::open(dir.path()).err().expect("refused");
        assert!(e.contains("snapshot"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let line = format!("{}\n{}\n", entry(1, "a").encode(), entry(3, "c").encode());
        std::fs::write(dir.path().join(JOURNAL), line).expect("write");
        let e = Journal::open(dir.path()).err().expect("refused");
        assert!(e.contains("gap"), "{e}");
    }
}
