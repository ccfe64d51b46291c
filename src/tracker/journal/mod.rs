//! The tracker's durable log: a snapshot file plus the journal of entries after it, in
//! numbered segments, all in the data directory (layout in `files.rs`). Entries are appended
//! to a buffer during a loop turn and written and fdatasync'ed once at the end of the turn
//! (`flush`), so many writes share one flush.
//!
//! Compaction never stops the loop for the state's size: when the journal has grown past
//! `compact_bytes`, `compact` flushes, switches appends to a fresh segment (the fork point),
//! and forks a child that writes the state as it was at that point (`background.rs`). Once the
//! child has renamed its snapshot into place, the segments before the fork point are deleted.
//! A failed snapshot only costs disk space: its temporary file is removed, every segment is
//! kept, and it is retried with backoff. Recovery (`open`) therefore handles every crash point:
//! the snapshot names the first segment that follows it; older segments are leftovers and are
//! deleted, a leftover `snapshot.tmp` is removed.

mod background;
mod files;

use super::op::Entry;
use super::state::State;
pub use background::reexec_with_huge_pages;
use background::{Child, Compaction};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Default journal size that triggers compaction: large enough that compaction (a fork and
/// a child writing the whole state) is rare, small enough that replay at start stays quick.
/// `--compact-bytes` overrides it.
pub const COMPACT_BYTES: u64 = 64 * 1024 * 1024;

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

/// `fmt::Write` into the journal's byte buffer.
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

pub struct Journal {
    dir: PathBuf,
    /// The current segment, opened for appending.
    file: File,
    /// Live segments, oldest first, with their sizes in bytes; the last is `file`. Older ones
    /// are deleted once a snapshot covers them.
    segments: Vec<(u64, u64)>,
    /// Encoded entries not yet durable.
    buf: Vec<u8>,
    /// How much of `buf` is written (a write that failed part-way continues from here).
    buf_written: usize,
    /// Last sequence number appended (written or not).
    pub appended: u64,
    /// Last sequence number known to be on disk.
    pub durable: u64,
    /// Journal size that triggers compaction.
    pub compact_bytes: u64,
    compaction: Compaction,
    /// The next segment, created ahead of the fork point (empty; harmless if a crash leaves
    /// it: it replays as nothing).
    spare: Option<(u64, File)>,
}

impl Journal {
    /// Opens (creating if needed) the data directory, loads the snapshot and replays the
    /// journal segments after it. A torn last line (the process died mid-write) is cut off: it
    /// was never flushed, so never acknowledged. Leftovers of an interrupted compaction (a
    /// `snapshot.tmp`, segments the snapshot already covers) are removed.
    pub fn open(dir: &Path) -> Result<(Journal, Recovered), String> {
        let shown = dir.display();
        // Password verifiers and session secrets live here: 0700, every file 0600.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create data directory {shown}: {e}"))?;
        match files::remove_tmp(dir) {
            Ok(true) => {
                log::warn!("removed {shown}/snapshot.tmp, left by a snapshot that did not finish")
            }
            Ok(false) => {}
            Err(e) => return Err(format!("cannot remove {shown}/snapshot.tmp: {e}")),
        }
        let snapshot = files::read_snapshot(dir)?;
        let legacy = dir.join(files::LEGACY_JOURNAL);
        if legacy.is_file() {
            fs::rename(&legacy, files::segment_path(dir, 0))
                .and_then(|()| files::sync_dir(dir))
                .map_err(|e| format!("cannot rename {} to journal.0: {e}", legacy.display()))?;
        }
        let (mut state, mut pos, mut fresh, first, strict) = match snapshot {
            Some(s) => (
                s.state,
                s.pos,
                false,
                s.segment.unwrap_or(0),
                s.segment.is_some(),
            ),
            None => (State::new(), Position::default(), true, 0, true),
        };
        let listed = files::list_segments(dir)
            .map_err(|e| format!("cannot list data directory {shown}: {e}"))?;
        let mut segments = Vec::new();
        for n in listed {
            let path = files::segment_path(dir, n);
            if n < first {
                // Covered by the snapshot: a compaction ended before it could delete it.
                fs::remove_file(&path)
                    .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
                continue;
            }
            let len = replay_segment(&path, &mut state, &mut pos, strict)?;
            if len > 0 {
                fresh = false;
            }
            segments.push((n, len));
        }
        let current = match segments.last() {
            Some(&(n, _)) => n,
            None => {
                let n = first.max(1);
                segments.push((n, 0));
                n
            }
        };
        let path = files::segment_path(dir, current);
        let file = files::create_segment(dir, current)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            file,
            segments,
            buf: Vec::new(),
            buf_written: 0,
            appended: pos.seq,
            durable: pos.seq,
            compact_bytes: COMPACT_BYTES,
            compaction: Compaction::default(),
            spare: None,
        };
        Ok((journal, Recovered { state, pos, fresh }))
    }

    /// Queues an entry; it is on disk after the next `flush`.
    /// Queues an entry, encoded straight into the write buffer (which keeps its capacity from
    /// turn to turn); it is on disk after the next `flush`. Returns the entry's line, without
    /// the `\n`, for the leader to send the same text to its follower.
    pub fn append(&mut self, entry: &Entry) -> &str {
        let start = self.buf.len();
        entry.write_to(&mut Utf8Sink(&mut self.buf));
        let end = self.buf.len();
        self.buf.push(b'\n');
        self.appended = entry.seq;
        // Only `&str`s were written, so the slice is UTF-8.
        std::str::from_utf8(&self.buf[start..end]).unwrap_or_default()
    }

    /// Queues an entry already encoded (`Entry::encode`) as entry `seq`.
    pub fn append_encoded(&mut self, seq: u64, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.appended = seq;
    }

    /// Writes and fdatasyncs everything appended. Returns true if anything was written. An
    /// error means appended entries could not be made durable: the caller stops.
    ///
    /// A running snapshot never takes the journal's space: if the disk is full while one is
    /// being written, that snapshot is given up (its temporary file removed) and the write
    /// goes on where it stopped.
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.buf.is_empty() {
            return Ok(false);
        }
        if let Err(e) = self.write_buf() {
            let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
            if !full || self.compaction.running.is_none() {
                return Err(e);
            }
            self.abort_compaction();
            let wait = self.compaction.failed(Instant::now());
            log::error!(
                "the disk is full: the snapshot being written is given up for the journal; \
                 next try in {} s",
                wait.as_secs()
            );
            self.write_buf()?;
        }
        self.file.sync_data()?;
        self.buf.clear();
        self.buf_written = 0;
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        self.durable = self.appended;
        Ok(true)
    }

    /// Writes the rest of `buf`, remembering how far it got, so that a retry neither repeats
    /// nor skips a byte.
    fn write_buf(&mut self) -> io::Result<()> {
        while self.buf_written < self.buf.len() {
            match self.file.write(&self.buf[self.buf_written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.buf_written += n;
                    if let Some(last) = self.segments.last_mut() {
                        last.1 += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bytes of journal that a snapshot would make unnecessary.
    /// The log as the files hold it: the snapshot's position and the entries of every segment
    /// after it, in order (flush first for the entries of this turn). Healing a split reads
    /// this tracker's own writes since the divergence point here before a snapshot replaces
    /// them.
    pub fn read_log(&self) -> Result<(Position, Vec<Entry>), String> {
        let base = files::read_snapshot(&self.dir)?.map_or(Position::default(), |s| s.pos);
        let mut entries = Vec::new();
        for &(n, _) in &self.segments {
            let path = files::segment_path(&self.dir, n);
            let text = fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let e = Entry::decode(line)
                    .map_err(|e| format!("{}, line {}: {e}", path.display(), i + 1))?;
                if e.seq > base.seq {
                    entries.push(e);
                }
            }
        }
        Ok((base, entries))
    }

    fn journal_bytes(&self) -> u64 {
        self.segments.iter().map(|&(_, b)| b).sum()
    }

    fn current_segment(&self) -> u64 {
        self.segments.last().map_or(0, |&(n, _)| n)
    }

    /// Call once a loop turn, after `flush`: starts a background snapshot of `state` (at
    /// `pos`, the last entry appended) when the journal has grown past `compact_bytes`, and
    /// collects a child that has ended. The loop pays a file creation in one turn, a flush
    /// (usually of nothing) and a `fork` in the next;
    /// the snapshot's failures are logged and retried here. An error means the journal itself
    /// cannot be written: the caller stops, as on a failed `flush`.
    pub fn compact(&mut self, state: &State, pos: Position) -> io::Result<()> {
        let now = Instant::now();
        if let Some(child) = self.compaction.running {
            match background::poll(child.pid) {
                None => {}
                Some(Ok(())) => self.snapshot_done(child),
                Some(Err(e)) => self.snapshot_failed(&e, now),
            }
            return Ok(());
        }
        if self.journal_bytes() < self.compact_bytes || !self.compaction.may_start(now) {
            return Ok(());
        }
        if self.spare.is_none() {
            // This turn creates the next segment; the next one forks.
            self.spare = self.prepare_segment();
            return Ok(());
        }
        let Some(segment) = self.fork_point(pos)? else {
            return Ok(());
        };
        let forking = Instant::now();
        match background::spawn(&self.dir, state, pos, segment) {
            Ok(pid) => {
                self.compaction.started(Child {
                    pid,
                    pos,
                    segment,
                    started: now,
                });
                log::info!(
                    "snapshot at {} started in process {pid}; the loop paused {} us for it \
                     (flush {} us, fork {} us)",
                    pos.seq,
                    now.elapsed().as_micros(),
                    (forking - now).as_micros(),
                    forking.elapsed().as_micros()
                );
            }
            Err(e) => self.snapshot_failed(&format!("cannot fork: {e}"), now),
        }
        Ok(())
    }

    /// How soon `compact` has something to do without any other event: a child to collect
    /// (polled every 100 ms) or a retry that falls due; part of the loop's poll timeout.
    pub fn compaction_deadline(&self) -> Option<std::time::Duration> {
        if self.compaction.running.is_some() {
            return Some(std::time::Duration::from_millis(100));
        }
        if self.journal_bytes() < self.compact_bytes {
            return None;
        }
        self.compaction
            .retry_at()
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// The fork point: everything appended goes to disk in the current segment, and a new
    /// segment takes the entries after `pos`. Returns that segment, or `None` if no snapshot
    /// can start now (the failure is logged and retried). Errors only if the flush fails.
    fn fork_point(&mut self, pos: Position) -> io::Result<Option<u64>> {
        self.flush()?;
        if pos.seq != self.appended {
            // The snapshot must hold exactly the entries before the new segment.
            let wait = self.compaction.failed(Instant::now());
            log::warn!(
                "not compacting: the state is at {} but the journal at {}; next try in {} s",
                pos.seq,
                self.appended,
                wait.as_secs()
            );
            return Ok(None);
        }
        let Some((segment, file)) = self.spare.take().or_else(|| self.prepare_segment()) else {
            return Ok(None);
        };
        self.file = file;
        self.segments.push((segment, 0));
        Ok(Some(segment))
    }

    /// Creates the segment that will follow the next fork point, so that its directory fsync
    /// is paid in an earlier loop turn than the fork. `None` if it cannot be created (logged,
    /// retried with backoff).
    fn prepare_segment(&mut self) -> Option<(u64, File)> {
        let segment = self.current_segment() + 1;
        match files::create_segment(&self.dir, segment) {
            Ok(file) => Some((segment, file)),
            Err(e) => {
                let _ = fs::remove_file(files::segment_path(&self.dir, segment));
                self.snapshot_failed(
                    &format!("cannot create journal.{segment}: {e}"),
                    Instant::now(),
                );
                None
            }
        }
    }

    /// The snapshot covering everything before `child.segment` is in place: the older
    /// segments go.
    fn snapshot_done(&mut self, child: Child) {
        self.compaction.succeeded();
        let removed = self.drop_segments_before(child.segment);
        log::info!(
            "snapshot at {} written in the background in {} ms; {removed} journal segment(s) removed",
            child.pos.seq,
            child.started.elapsed().as_millis()
        );
    }

    /// Deletes the segments before `segment` (a snapshot in place covers them); returns how
    /// many went.
    fn drop_segments_before(&mut self, segment: u64) -> usize {
        let mut removed = 0;
        let mut kept = Vec::new();
        for (n, bytes) in std::mem::take(&mut self.segments) {
            if n >= segment {
                kept.push((n, bytes));
                continue;
            }
            match fs::remove_file(files::segment_path(&self.dir, n)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Harmless: the next start deletes what the snapshot covers.
                    log::warn!("cannot remove journal.{n}: {e}");
                }
            }
        }
        self.segments = kept;
        removed
    }

    /// Nothing is lost: every segment stays. Only the temporary file goes, so that a full
    /// disk gets its space back for the journal.
    fn snapshot_failed(&mut self, why: &str, now: Instant) {
        if let Err(e) = files::remove_tmp(&self.dir) {
            log::warn!("cannot remove snapshot.tmp: {e}");
        }
        let wait = self.compaction.failed(now);
        log::error!(
            "cannot write a snapshot: {why}; the journal keeps every entry, next try in {} s",
            wait.as_secs()
        );
    }

    /// Stops a background snapshot, if any, and removes its temporary file.
    fn abort_compaction(&mut self) {
        if let Some(child) = self.compaction.running.take() {
            background::kill(child.pid);
            let _ = files::remove_tmp(&self.dir);
        }
        self.compaction.succeeded();
    }

    /// Makes a snapshot (given as its state lines) durable in the foreground and starts a
    /// fresh segment after it: a follower's copy of the leader's state. A background snapshot
    /// (of the state being replaced) is stopped first, so it can never land over this one.
    /// Entries appended before are flushed into the old log, which the snapshot then replaces.
    pub fn write_snapshot<'a>(
        &mut self,
        lines: impl Iterator<Item = &'a str>,
        pos: Position,
    ) -> io::Result<()> {
        self.abort_compaction();
        self.flush()?;
        self.spare = None;
        let segment = self.current_segment() + 1;
        self.file = files::create_segment(&self.dir, segment)?;
        self.segments.push((segment, 0));
        files::write_snapshot_file(&self.dir, lines, pos, segment)?;
        self.drop_segments_before(segment);
        self.appended = pos.seq;
        self.durable = pos.seq;
        Ok(())
    }
}

impl Drop for Journal {
    /// A snapshot child dies with the tracker anyway (`PR_SET_PDEATHSIG`); this also reaps it.
    fn drop(&mut self) {
        self.abort_compaction();
    }
}

/// Replays one segment onto `state`, cutting a torn last line. `strict`: entries must follow
/// `pos` directly (a snapshot from before segments may be followed by entries it holds;
/// those are skipped). Returns the segment's length after the cut.
fn replay_segment(
    path: &Path,
    state: &mut State,
    pos: &mut Position,
    strict: bool,
) -> Result<u64, String> {
    let shown = path.display();
    let f = File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let total = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(f);
    let mut good_len = 0u64;
    let mut line = Vec::new();
    let mut lineno = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // end, or a torn last line
        }
        lineno += 1;
        let text = std::str::from_utf8(&line[..n - 1])
            .map_err(|_| format!("{shown}, line {lineno}: not UTF-8"))?;
        let entry = Entry::decode(text).map_err(|e| format!("{shown}, line {lineno}: {e}"))?;
        good_len += n as u64;
        if entry.seq <= pos.seq && !strict {
            continue; // already in the snapshot
        }
        if entry.seq != pos.seq + 1 {
            return Err(format!(
                "{shown}, line {lineno}: entry {} follows {}; the journal has a gap or a repeat",
                entry.seq, pos.seq
            ));
        }
        apply_entry(state, pos, &entry);
    }
    if total > good_len {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(good_len))
            .map_err(|e| format!("cannot cut the torn end of {shown}: {e}"))?;
    }
    Ok(good_len)
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

#[cfg(test)]
mod tests {
    use super::files::{segment_path, snapshot_header, SNAPSHOT, SNAPSHOT_TMP};
    use super::*;
    use crate::tracker::op::Op;

    fn entry(seq: u64, user: &str) -> Entry {
        Entry {
            term: 1,
            seq,
            origin: None,
            // A fixed hash: PBKDF2 per entry would dominate these tests.
            op: Op::CreateUser {
                user: user.into(),
                verifier: crate::auth::scram::ClientKeys::derive("pw", &[1; 16], 4096)
                    .verifier([1; 16], 4096)
                    .encode(),
            },
        }
    }

    fn replay(dir: &Path) -> Recovered {
        Journal::open(dir).map(|(_, r)| r).expect("open")
    }

    /// A journal with entries 1..=n applied to a state, flushed.
    fn filled(dir: &Path, n: u64) -> (Journal, State, Position) {
        let (mut j, r) = Journal::open(dir).expect("open");
        let (mut state, mut pos) = (r.state, r.pos);
        for i in pos.seq + 1..=pos.seq + n {
            let e = entry(i, &format!("u{i}"));
            apply_entry(&mut state, &mut pos, &e);
            j.append(&e);
        }
        j.flush().expect("flush");
        (j, state, pos)
    }

    fn add(j: &mut Journal, state: &mut State, pos: &mut Position, user: &str) {
        let e = entry(pos.seq + 1, user);
        apply_entry(state, pos, &e);
        j.append(&e);
    }

    /// What the child does, in process: the snapshot as of the fork point.
    fn child_writes(dir: &Path, state: &State, pos: Position, segment: u64) {
        let lines = state.snapshot_lines();
        files::write_snapshot_file(dir, lines.iter().map(String::as_str), pos, segment)
            .expect("snapshot");
    }

    fn segments_on_disk(dir: &Path) -> Vec<u64> {
        files::list_segments(dir).expect("list")
    }

    #[test]
    fn append_returns_the_encoded_line_and_appends_back_to_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path()).expect("open");
        let (a, b, c) = (entry(1, "a"), entry(2, "b"), entry(3, "c"));
        assert_eq!(j.append(&a), a.encode());
        assert_eq!(j.append(&b), b.encode());
        j.append_encoded(3, &c.encode());
        assert_eq!(j.flush().ok(), Some(true));
        let (_, entries) = j.read_log().expect("read");
        assert_eq!(entries, [a, b, c]);
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
        let jpath = segment_path(dir.path(), 1);
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
    fn a_finished_compaction_keeps_the_state_and_drops_the_covered_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, mut state, mut pos) = filled(dir.path(), 50);
        let segment = j.fork_point(pos).expect("flush").expect("fork point");
        assert_eq!(segment, 2);
        let (snap_state, snap_pos) = (state.clone(), pos);
        // The parent keeps appending while the child writes.
        add(&mut j, &mut state, &mut pos, "late");
        j.flush().expect("flush");
        child_writes(dir.path(), &snap_state, snap_pos, segment);
        j.snapshot_done(Child {
            pid: 0,
            pos: snap_pos,
            segment,
            started: Instant::now(),
        });
        assert_eq!(segments_on_disk(dir.path()), vec![2]);
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());
        assert!(
            // One `create_user` line with its verifier is about 260 bytes; two would be over.
            j.journal_bytes() < 400,
            "only the entry after the fork point is left"
        );
        drop(j);
        let r = replay(dir.path());
        assert_eq!(r.pos.seq, 51);
        assert_eq!(r.state.digest(), state.digest());
    }

    /// Every point where a crash can stop a compaction, recovered from the files alone.
    #[test]
    fn every_crash_point_of_a_compaction_recovers_every_entry() {
        for crash in [
            "after-fork-point",
            "mid-tmp",
            "after-rename",
            "cleanup-half-done",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut j, mut state, mut pos) = filled(dir.path(), 30);
            if crash == "cleanup-half-done" {
                // A failed try first: segments 1 and 2 both precede the next fork point.
                j.fork_point(pos).expect("flush").expect("fork point");
                j.snapshot_failed("test", Instant::now());
                add(&mut j, &mut state, &mut pos, "between");
            }
            let segment = j.fork_point(pos).expect("flush").expect("fork point");
            let (snap_state, snap_pos) = (state.clone(), pos);
            add(&mut j, &mut state, &mut pos, "after");
            j.flush().expect("flush");
            match crash {
                "after-fork-point" => {}
                "mid-tmp" => std::fs::write(
                    dir.path().join(SNAPSHOT_TMP),
                    "snapshot 1 30 solo 2\nuser x",
                )
                .expect("write"),
                "after-rename" => child_writes(dir.path(), &snap_state, snap_pos, segment),
                _ => {
                    // The parent's cleanup stopped after the first removal.
                    child_writes(dir.path(), &snap_state, snap_pos, segment);
                    std::fs::remove_file(segment_path(dir.path(), 1)).expect("remove");
                }
            }
            std::mem::forget(j); // a crash runs no destructor
            let r = replay(dir.path());
            assert_eq!(r.pos.seq, pos.seq, "{crash}");
            assert_eq!(r.state.digest(), state.digest(), "{crash}");
            assert!(!dir.path().join(SNAPSHOT_TMP).exists(), "{crash}");
            if crash != "after-fork-point" && crash != "mid-tmp" {
                assert_eq!(
                    segments_on_disk(dir.path()),
                    vec![segment],
                    "{crash}: covered segments go"
                );
            }
        }
    }

    #[test]
    fn a_segment_created_ahead_of_the_fork_point_replays_as_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, state, _) = filled(dir.path(), 10);
        j.spare = j.prepare_segment();
        assert_eq!(segments_on_disk(dir.path()), vec![1, 2]);
        std::mem::forget(j); // the crash comes before the fork
        let (mut j, r) = Journal::open(dir.path()).expect("open");
        assert_eq!(r.state.digest(), state.digest());
        let (mut state, mut pos) = (r.state, r.pos);
        add(&mut j, &mut state, &mut pos, "next");
        j.flush().expect("flush");
        drop(j);
        assert_eq!(replay(dir.path()).state.digest(), state.digest());
    }

    #[test]
    fn a_failed_snapshot_keeps_every_entry_removes_its_tmp_and_backs_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, mut state, mut pos) = filled(dir.path(), 20);
        j.compact_bytes = 1;
        let segment = j.fork_point(pos).expect("flush").expect("fork point");
        // The child died with a half-written file.
        std::fs::write(dir.path().join(SNAPSHOT_TMP), "snapshot 1 20 solo 2\nuser").expect("write");
        j.snapshot_failed("No space left on device", Instant::now());
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());
        assert!(!j.compaction.may_start(Instant::now()), "backs off");
        assert_eq!(segments_on_disk(dir.path()), vec![1, segment]);
        // Entries go on, and a second, successful try covers both older segments.
        add(&mut j, &mut state, &mut pos, "x");
        let second = j.fork_point(pos).expect("flush").expect("fork point");
        assert_eq!(second, 3);
        let (snap_state, snap_pos) = (state.clone(), pos);
        add(&mut j, &mut state, &mut pos, "y");
        j.flush().expect("flush");
        let r = replay(dir.path());
        assert_eq!(
            r.state.digest(),
            state.digest(),
            "nothing lost before the retry"
        );
        child_writes(dir.path(), &snap_state, snap_pos, second);
        j.snapshot_done(Child {
            pid: 0,
            pos: snap_pos,
            segment: second,
            started: Instant::now(),
        });
        drop(j);
        let r = replay(dir.path());
        assert_eq!(r.pos.seq, 22);
        assert_eq!(r.state.digest(), state.digest());
        assert_eq!(segments_on_disk(dir.path()), vec![3]);
    }

    #[test]
    fn entries_appended_after_the_last_flush_go_into_the_old_segment_at_the_fork_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, mut state, mut pos) = filled(dir.path(), 5);
        // A dropped connection's logout, appended after the turn's flush.
        add(&mut j, &mut state, &mut pos, "unflushed");
        assert_eq!(j.durable, 5);
        j.fork_point(pos).expect("flush").expect("fork point");
        assert_eq!(j.durable, 6);
        std::mem::forget(j);
        let r = replay(dir.path());
        assert!(r.state.user_exists("unflushed"));
    }

    #[test]
    fn a_leaders_snapshot_replaces_a_divergent_log_even_if_a_crash_stops_the_cleanup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _, _) = filled(dir.path(), 40);
        // The leader's state: shorter than this tracker's own (divergent) log.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let (_, leader, lpos) = filled(dir2.path(), 10);
        let lines = leader.snapshot_lines();
        j.write_snapshot(lines.iter().map(String::as_str), lpos)
            .expect("snapshot");
        assert_eq!((j.appended, j.durable), (10, 10));
        let mut state = leader.clone();
        let mut pos = lpos;
        add(&mut j, &mut state, &mut pos, "next");
        j.flush().expect("flush");
        drop(j);
        // The old segment reappears, as if the crash came before its removal.
        std::fs::write(
            segment_path(dir.path(), 1),
            format!("{}\n", entry(1, "u1").encode()),
        )
        .expect("write");
        let r = replay(dir.path());
        assert_eq!(r.pos.seq, 11);
        assert_eq!(r.state.digest(), state.digest());
        assert!(!r.state.user_exists("u40"));
    }

    #[test]
    fn a_data_directory_from_before_segments_is_read_and_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d2 = tempfile::tempdir().expect("tempdir");
        let (_, state, pos) = filled(d2.path(), 3);
        let body = state.snapshot_lines();
        let mut text = format!("{}\n", snapshot_header(pos));
        for l in &body {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str(&format!("end {}\n", body.len()));
        std::fs::write(dir.path().join(SNAPSHOT), text).expect("write");
        // The old journal repeats entry 3 (compaction used to truncate it after the rename).
        let journal: String = (3..=5)
            .map(|i| entry(i, &format!("u{i}")).encode() + "\n")
            .collect();
        std::fs::write(dir.path().join("journal"), journal).expect("write");
        let r = replay(dir.path());
        assert_eq!(r.pos.seq, 5);
        assert!(r.state.user_exists("u5"));
        assert!(!dir.path().join("journal").exists());
        assert_eq!(segments_on_disk(dir.path()), vec![0]);
    }

    #[test]
    fn read_log_gives_the_snapshot_position_and_the_entries_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, r) = Journal::open(dir.path()).expect("open");
        let (mut state, mut pos) = (r.state, r.pos);
        for i in 1..=3 {
            add(&mut j, &mut state, &mut pos, &format!("u{i}"));
        }
        j.flush().expect("flush");
        let (base, entries) = j.read_log().expect("read");
        assert_eq!(base, Position::default());
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        // A snapshot at 3 (as a finished compaction leaves it), then one more entry.
        let segment = j.fork_point(pos).expect("flush").expect("fork point");
        child_writes(dir.path(), &state, pos, segment);
        j.snapshot_done(Child {
            pid: 0,
            pos,
            segment,
            started: Instant::now(),
        });
        add(&mut j, &mut state, &mut pos, "u4");
        j.flush().expect("flush");
        let (base, entries) = j.read_log().expect("read");
        assert_eq!(base.seq, 3);
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn a_corrupt_snapshot_or_a_gap_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(SNAPSHOT), "snapshot 1 5 solo 1\nuser x\n").expect("write");
        let e = Journal::open(dir.path()).err().expect("refused");
        assert!(e.contains("snapshot"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let line = format!("{}\n{}\n", entry(1, "a").encode(), entry(3, "c").encode());
        std::fs::write(segment_path(dir.path(), 1), line).expect("write");
        let e = Journal::open(dir.path()).err().expect("refused");
        assert!(e.contains("gap"), "{e}");
    }
}
