//! The data directory's files: names, the numbered journal segments, and the snapshot file
//! (written to a temporary name, fsynced, renamed, directory fsynced; read back validated).
//!
//! ```text
//! snapshot          snapshot <term> <seq> <solo|paired> <segment>
//!                   <state lines>
//!                   end <count>
//! journal.<n>       one entry a line; replayed in order of n, from the snapshot's <segment>
//! snapshot.tmp      a snapshot being written; removed at start if a crash left it
//! ```

use super::Position;
use crate::tracker::state::State;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const SNAPSHOT: &str = "snapshot";
pub const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// The single journal file of data directories written before segments existed; it is
/// renamed to segment 0 at start.
pub const LEGACY_JOURNAL: &str = "journal";
const SEGMENT_PREFIX: &str = "journal.";

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{n}"))
}

/// The journal segments in the directory, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix(SEGMENT_PREFIX))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// Creates an empty segment and makes its name durable, so entries fsynced into it later are
/// found after a power loss.
pub fn create_segment(dir: &Path, n: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(segment_path(dir, n))?;
    sync_dir(dir)?;
    Ok(f)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `snapshot.tmp` if present: a snapshot that did not finish is never needed (the
/// journal segments still hold everything it would have held).
pub fn remove_tmp(dir: &Path) -> io::Result<bool> {
    match fs::remove_file(dir.join(SNAPSHOT_TMP)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a snapshot durably: `snapshot.tmp`, fsync, rename over `snapshot`, directory fsync.
/// `segment` is the first journal segment that follows it. On failure the temporary file is
/// removed, so a full disk gets its space back.
pub fn write_snapshot_file<'a>(
    dir: &Path,
    lines: impl Iterator<Item = &'a str>,
    pos: Position,
    segment: u64,
) -> io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let written = (|| {
        // Made anew with its final mode (a stale temporary may have had another): the state
        // holds password verifiers and session secrets.
        let _ = fs::remove_file(&tmp);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(1 << 20, f);
        writeln!(w, "{} {segment}", snapshot_header(pos))?;
        let mut count = 0u64;
        for l in lines {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
            count += 1;
        }
        writeln!(w, "end {count}")?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(SNAPSHOT))
    })();
    if let Err(e) = written {
        let _ = remove_tmp(dir);
        return Err(e);
    }
    sync_dir(dir)
}

/// What a snapshot file holds.
pub struct Snapshot {
    pub state: State,
    pub pos: Position,
    /// The first journal segment after it; `None` in a snapshot from before segments (its
    /// journal may repeat entries the snapshot already holds).
    pub segment: Option<u64>,
}

/// Reads and validates `snapshot`; `None` if there is none.
pub fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, String> {
    let path = dir.join(SNAPSHOT);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse_snapshot(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn snapshot_header(pos: Position) -> String {
    format!(
        "snapshot {} {} {}",
        pos.term,
        pos.seq,
        if pos.solo { "solo" } else { "paired" }
    )
}

/// Parses `snapshot <term> <seq> <mode> [<segment>]`.
pub fn parse_snapshot_header(line: &str) -> Result<(Position, Option<u64>), String> {
    let w: Vec<&str> = line.split(' ').collect();
    let (term, seq, mode, segment) = match w.as_slice() {
        ["snapshot", term, seq, mode] => (term, seq, mode, None),
        ["snapshot", term, seq, mode, seg] => (
            term,
            seq,
            mode,
            Some(
                seg.parse()
                    .map_err(|_| "bad journal segment in snapshot header")?,
            ),
        ),
        _ => return Err(format!("not a snapshot header: '{}'", line.escape_debug())),
    };
    let pos = Position {
        term: term.parse().map_err(|_| "bad term in snapshot header")?,
        seq: seq
            .parse()
            .map_err(|_| "bad sequence number in snapshot header")?,
        solo: match *mode {
            "solo" => true,
            "paired" => false,
            _ => return Err("bad mode in snapshot header".into()),
        },
    };
    Ok((pos, segment))
}

/// Parses a whole snapshot file: header, state lines, `end <count>`.
fn parse_snapshot(text: &str) -> Result<Snapshot, String> {
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.first().copied().ok_or("empty snapshot")?;
    let (pos, segment) = parse_snapshot_header(header)?;
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
    Ok(Snapshot {
        state,
        pos,
        segment,
    })
}
