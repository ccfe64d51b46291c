//! Remembered shares: what a user shared from this machine, kept on disk so that `login` can
//! resume sharing (after a logout or a restart of the client) without hashing again.
//!
//! Layout, under the state directory (`$XDG_STATE_HOME/groupshare`, else
//! `$HOME/.local/state/groupshare`, or `--state-dir`):
//!
//! ```text
//! <state>/<user>/shares                   header line, then one share a line:
//!                                         <group> <file> <size> <mtime-ns> <absolute path>
//! <state>/<user>/hashes/<group>/<file>    the piece hashes, 20 raw bytes each
//! ```
//!
//! The path is last on its line so it may contain spaces; a backslash and control bytes in it
//! are written as `\xHH`. Every file is written to a temporary name and renamed, so a crash
//! leaves the old or the new version, never half of one. User, group and file names obey the
//! naming rules, so they are safe path components.

use super::peers::store::{write_durably, PartClaims};
use crate::names::{self, NameKind};
use crate::pieces::{piece_count, Hash};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const HEADER: &str = "groupshare-shares 1";

/// One remembered share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub group: String,
    pub file: String,
    /// Size and modification time when the hashes were taken: if either changed since, the
    /// hashes are stale and the share is not resumed.
    pub size: u64,
    pub mtime_ns: u128,
    /// Absolute path of the shared data.
    pub path: PathBuf,
}

/// What `check_file` found about a share's local file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileCheck {
    Unchanged,
    /// The file is there but differs (size or time) from when it was hashed.
    Changed,
    /// Gone, not a regular file, or unreadable; the sentence says which.
    Missing(String),
}

/// The default state directory, from the environment.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return Some(p.join("groupshare"));
        }
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/groupshare"))
}

/// Size and modification time (nanoseconds since the epoch) of a file.
pub fn stamp(meta: &fs::Metadata) -> (u64, u128) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (meta.len(), mtime)
}

/// Compares a share with its file on disk now.
pub fn check_file(share: &Share) -> FileCheck {
    match fs::metadata(&share.path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            FileCheck::Missing(format!("{} no longer exists", share.path.display()))
        }
        Err(e) => FileCheck::Missing(format!("cannot read {}: {e}", share.path.display())),
        Ok(m) if !m.is_file() => FileCheck::Missing(format!(
            "{} is no longer a regular file",
            share.path.display()
        )),
        Ok(m) => {
            if stamp(&m) == (share.size, share.mtime_ns) {
                FileCheck::Unchanged
            } else {
                FileCheck::Changed
            }
        }
    }
}

/// The remembered shares of one user.
#[derive(Clone, Debug)]
pub struct ShareStore {
    dir: PathBuf,
}

impl ShareStore {
    /// The store of `user` under `state_dir`. Nothing is created until something is saved.
    pub fn new(state_dir: &Path, user: &str) -> Self {
        debug_assert!(names::is_valid(NameKind::User, user));
        ShareStore {
            dir: state_dir.join(user),
        }
    }

    /// Where this user's downloads record the `.part` files they created.
    pub fn part_claims(&self) -> PartClaims {
        PartClaims::new(self.dir.join("parts"))
    }

    fn list_path(&self) -> PathBuf {
        self.dir.join("shares")
    }

    fn hashes_path(&self, group: &str, file: &str) -> PathBuf {
        self.dir.join("hashes").join(group).join(file)
    }

    /// Every remembered share; none if nothing was saved yet. A damaged file is an error that
    /// names it, never a panic.
    pub fn load(&self) -> Result<Vec<Share>, String> {
        let path = self.list_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        parse_list(&bytes).map_err(|e| format!("{} is damaged: {e}", path.display()))
    }

    /// The saved hashes of a share, checked against its size.
    pub fn load_hashes(&self, share: &Share) -> Result<Vec<Hash>, String> {
        let path = self.hashes_path(&share.group, &share.file);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let want = piece_count(share.size) as usize;
        if bytes.len() != want * 20 {
            return Err(format!(
                "{} is damaged: {} bytes where {} hashes were expected",
                path.display(),
                bytes.len(),
                want
            ));
        }
        Ok(bytes
            .chunks(20)
            .map(|c| {
                let mut h = [0u8; 20];
                h.copy_from_slice(c);
                h
            })
            .collect())
    }

    /// Remembers a share (replacing one of the same group and file) with its hashes.
    pub fn remember(&self, share: &Share, hashes: &[Hash]) -> Result<(), String> {
        let mut all = self.load().unwrap_or_default();
        let hpath = self.hashes_path(&share.group, &share.file);
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.iter().copied()).collect();
        write_atomic(&hpath, &bytes)?;
        all.retain(|s| !(s.group == share.group && s.file == share.file));
        all.push(share.clone());
        write_atomic(&self.list_path(), &format_list(&all))
    }

    /// Forgets a share; forgetting an unknown one is not an error.
    pub fn forget(&self, group: &str, file: &str) -> Result<(), String> {
        let mut all = self.load().unwrap_or_default();
        let before = all.len();
        all.retain(|s| !(s.group == group && s.file == file));
        if all.len() != before {
            write_atomic(&self.list_path(), &format_list(&all))?;
        }
        let _ = fs::remove_file(self.hashes_path(group, file));
        Ok(())
    }
}

/// Writes `data` to `path` durably (see `store::write_durably`), with an error a person reads.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    write_durably(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn escape_path(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if b == b'\\' || b < 0x20 || b == 0x7f {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

fn unescape_path(b: &[u8]) -> Result<PathBuf, String> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = b
                .get(i + 1..i + 4)
                .filter(|h| h[0] == b'x')
                .and_then(|h| std::str::from_utf8(&h[1..]).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad escape in a path")?;
            out.push(hex);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

fn format_list(shares: &[Share]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    for s in shares {
        out.extend_from_slice(
            format!("{} {} {} {} ", s.group, s.file, s.size, s.mtime_ns).as_bytes(),
        );
        out.extend_from_slice(&escape_path(&s.path));
        out.push(b'\n');
    }
    out
}

fn parse_list(bytes: &[u8]) -> Result<Vec<Share>, String> {
    let mut lines = bytes.split(|&b| b == b'\n');
    if lines.next() != Some(HEADER.as_bytes()) {
        return Err("the first line is not the expected header".to_string());
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i + 2;
        let mut parts = line.splitn(5, |&b| b == b' ');
        let mut word = |what: &str| -> Result<&str, String> {
            parts
                .next()
                .and_then(|w| std::str::from_utf8(w).ok())
                .ok_or_else(|| format!("line {n}: the {what} is missing"))
        };
        let group = word("group")?.to_string();
        let file = word("file name")?.to_string();
        let size = word("size")?
            .parse()
            .map_err(|_| format!("line {n}: the size is not a number"))?;
        let mtime_ns = word("time")?
            .parse()
            .map_err(|_| format!("line {n}: the time is not a number"))?;
        let path = parts
            .next()
            .ok_or_else(|| format!("line {n}: the path is missing"))?;
        let path = unescape_path(path).map_err(|e| format!("line {n}: {e}"))?;
        names::check(NameKind::Group, &group).map_err(|e| format!("line {n}: {e}"))?;
        names::check(NameKind::File, &file).map_err(|e| format!("line {n}: {e}"))?;
        if !path.is_absolute() {
            return Err(format!("line {n}: the path is not absolute"));
        }
        out.push(Share {
            group,
            file,
            size,
            mtime_ns,
            path,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share_of(path: &Path, group: &str, file: &str) -> Share {
        let (size, mtime_ns) = stamp(&fs::metadata(path).unwrap());
        Share {
            group: group.into(),
            file: file.into(),
            size,
            mtime_ns,
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn shares_and_hashes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("my data\\ \n file.bin");
        fs::write(&data, vec![7u8; 600_000]).unwrap();
        let store = ShareStore::new(&dir.path().join("state"), "alice");
        assert_eq!(store.load().unwrap(), vec![]);
        let s = share_of(&data, "g", "f.bin");
        let hashes = vec![[1u8; 20], [2u8; 20]];
        store.remember(&s, &hashes).unwrap();
        let t = share_of(&data, "h", "other");
        store.remember(&t, &hashes).unwrap();
        assert_eq!(store.load().unwrap(), vec![s.clone(), t.clone()]);
        assert_eq!(store.load_hashes(&s).unwrap(), hashes);
        // Remembering again replaces, forgetting removes.
        store.remember(&s, &hashes).unwrap();
        assert_eq!(store.load().unwrap().len(), 2);
        store.forget("h", "other").unwrap();
        assert_eq!(store.load().unwrap(), vec![s.clone()]);
        assert!(store.load_hashes(&t).is_err());
        store.forget("nope", "nothing").unwrap();
    }

    #[test]
    fn a_changed_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a");
        fs::write(&data, b"hello").unwrap();
        let s = share_of(&data, "g", "a");
        assert_eq!(check_file(&s), FileCheck::Unchanged);
        fs::write(&data, b"hello, world").unwrap();
        assert_eq!(check_file(&s), FileCheck::Changed);
        let mut same_size = share_of(&data, "g", "a");
        same_size.mtime_ns -= 1;
        assert_eq!(check_file(&same_size), FileCheck::Changed);
    }

    #[test]
    fn a_missing_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a");
        fs::write(&data, b"x").unwrap();
        let s = share_of(&data, "g", "a");
        fs::remove_file(&data).unwrap();
        assert!(matches!(check_file(&s), FileCheck::Missing(m) if m.contains("no longer exists")));
        fs::create_dir(&data).unwrap();
        assert!(matches!(check_file(&s), FileCheck::Missing(_)));
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShareStore::new(dir.path(), "bob");
        fs::create_dir_all(dir.path().join("bob")).unwrap();
        let list = dir.path().join("bob/shares");
        for bad in [
            &b"garbage"[..],
            b"groupshare-shares 1\ng f notanumber 1 /x\n",
            b"groupshare-shares 1\ng f 1 2\n",
            b"groupshare-shares 1\ng/x f 1 2 /x\n",
            b"groupshare-shares 1\ng f 1 2 relative\n",
            b"groupshare-shares 1\ng f 1 2 /bad\\q\n",
            b"groupshare-shares 1\n\xff\xfe 1 2 /x\n",
        ] {
            fs::write(&list, bad).unwrap();
            let e = store.load().unwrap_err();
            assert!(e.contains("damaged"), "{e}");
        }
        // Hashes of the wrong length are refused too.
        let s = Share {
            group: "g".into(),
            file: "f".into(),
            size: 10,
            mtime_ns: 0,
            path: "/x".into(),
        };
        fs::create_dir_all(dir.path().join("bob/hashes/g")).unwrap();
        fs::write(dir.path().join("bob/hashes/g/f"), [0u8; 19]).unwrap();
        assert!(store.load_hashes(&s).unwrap_err().contains("damaged"));
    }
}
