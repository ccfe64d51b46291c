//! Trust on first use for tracker keys, like ssh's known_hosts. When tracker_info.txt pins no
//! key for an address, the first key a tracker proves there is remembered in
//! `<state dir>/known_trackers`; later a different key at that address is refused with a message
//! that names the file and line to delete. A pin in tracker_info.txt always wins.
//!
//! File format: one `IP:PORT SHA256:<hex>` a line; `#` comments and blank lines ignored. The
//! file is mode 0600 and replaced whole (temporary file, fsync, rename, directory fsync), so a
//! crash leaves either the old list or the new one.

use crate::cluster::TrackerEntry;
use crate::net::identity::Fingerprint;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The file's name under the client's state directory.
pub const FILE_NAME: &str = "known_trackers";

/// Entries kept: a client knows a handful of tracker addresses; a file with more was not made
/// by us, and reading it without bound would let it fill memory.
pub const MAX_ENTRIES: usize = 1024;

/// Why a tracker's key was accepted; the caller logs first use so a person can check it.
#[derive(Debug, PartialEq, Eq)]
pub enum Trust {
    /// tracker_info.txt pins this key.
    Pinned,
    /// The key remembered for this address.
    Known,
    /// Nothing pinned or remembered: now remembered.
    FirstUse,
}

/// What the rules say, before any file is touched (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Pinned,
    PinMismatch,
    Known,
    /// A different key is remembered for this address, on this line of the file.
    Changed {
        line: usize,
    },
    FirstUse,
}

/// The decision for a tracker that proved `presented`, given its tracker_info pin and what is
/// remembered for its address (with the line it is on).
pub fn decide(
    pin: Option<&Fingerprint>,
    remembered: Option<(&Fingerprint, usize)>,
    presented: &Fingerprint,
) -> Decision {
    match (pin, remembered) {
        (Some(p), _) if p.ct_eq(presented) => Decision::Pinned,
        (Some(_), _) => Decision::PinMismatch,
        (None, Some((r, _))) if r.ct_eq(presented) => Decision::Known,
        (None, Some((_, line))) => Decision::Changed { line },
        (None, None) => Decision::FirstUse,
    }
}

#[derive(Debug)]
struct Entry {
    addr: SocketAddr,
    key: Fingerprint,
    /// 1-based line in the file as read (0 for entries added since).
    line: usize,
}

/// The remembered keys and the file they live in.
#[derive(Debug)]
pub struct KnownTrackers {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl KnownTrackers {
    /// Reads `<state_dir>/known_trackers`; a missing file is an empty list.
    pub fn load(state_dir: &Path) -> Result<KnownTrackers, String> {
        let path = state_dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let entries = parse(&text, &path.display().to_string())?;
        Ok(KnownTrackers { path, entries })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key remembered for `addr`, and its line.
    pub fn lookup(&self, addr: SocketAddr) -> Option<(&Fingerprint, usize)> {
        self.entries
            .iter()
            .find(|e| e.addr == addr)
            .map(|e| (&e.key, e.line))
    }

    /// Accepts or refuses the key a tracker proved in its handshake. `info_file` names the
    /// tracker_info file `tracker` came from. On first use the key is written to the file
    /// before this returns. The error is the sentence to show the person.
    pub fn verify(
        &mut self,
        tracker: &TrackerEntry,
        info_file: &str,
        presented: &Fingerprint,
    ) -> Result<Trust, String> {
        let addr = tracker.addr;
        match decide(tracker.pin.as_ref(), self.lookup(addr), presented) {
            Decision::Pinned => Ok(Trust::Pinned),
            Decision::Known => Ok(Trust::Known),
            Decision::PinMismatch => Err(format!(
                "refusing tracker {addr}: it proved key {presented}, but {info_file} line {} pins {}. \
                 Someone may be impersonating the tracker; if its key was changed on purpose, \
                 put the new fingerprint on that line.",
                tracker.line,
                tracker.pin.map(|p| p.to_string()).unwrap_or_default(),
            )),
            Decision::Changed { line } => Err(format!(
                "refusing tracker {addr}: it proved key {presented}, but {} line {line} remembers \
                 {} for that address. Someone may be impersonating the tracker; if its key was \
                 changed on purpose (a new data directory), delete line {line} of {} and connect again.",
                self.path.display(),
                self.lookup(addr).map(|(k, _)| k.to_string()).unwrap_or_default(),
                self.path.display(),
            )),
            Decision::FirstUse => {
                self.remember(addr, *presented)?;
                Ok(Trust::FirstUse)
            }
        }
    }

    /// Adds `addr → key` and rewrites the file durably.
    pub fn remember(&mut self, addr: SocketAddr, key: Fingerprint) -> Result<(), String> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(format!(
                "{} already holds {MAX_ENTRIES} trackers; remove some lines",
                self.path.display()
            ));
        }
        self.entries.push(Entry { addr, key, line: 0 });
        let mut text = String::from(
            "# Tracker keys this client trusted on first use (IP:PORT SHA256:fingerprint).\n\
             # Delete a line to accept a tracker's new key.\n",
        );
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.addr, e.key));
        }
        write_private(&self.path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        // Line numbers as now written: two header lines, then one entry a line.
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.line = i + 3;
        }
        Ok(())
    }
}

fn parse(text: &str, origin: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |what: String| format!("{origin}, line {}: {what} (delete the line)", i + 1);
        let mut words = line.split_whitespace();
        let (Some(a), Some(k), None) = (words.next(), words.next(), words.next()) else {
            return Err(at("expected 'IP:PORT SHA256:fingerprint'".into()));
        };
        let addr = a
            .parse()
            .map_err(|_| at(format!("'{}' is not an IP:PORT address", a.escape_debug())))?;
        let key = Fingerprint::parse(k).map_err(at)?;
        if out.len() == MAX_ENTRIES {
            return Err(format!("{origin}: more than {MAX_ENTRIES} entries"));
        }
        out.push(Entry {
            addr,
            key,
            line: i + 1,
        });
    }
    Ok(out)
}

/// Writes `bytes` to `path` as a new 0600 file (the directory made 0700 if missing): a
/// temporary file created exclusively with its final mode, synced, renamed over, directory synced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // A temporary file left by a crash of this same pid would block create_new.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = dir {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::identity::Identity;
    use std::os::unix::fs::PermissionsExt;

    fn fp() -> Fingerprint {
        Identity::generate().unwrap().fingerprint()
    }

    fn entry(port: u16, pin: Option<Fingerprint>) -> TrackerEntry {
        TrackerEntry {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pin,
            line: 2,
        }
    }

    #[test]
    fn decide_follows_pin_then_memory_then_first_use() {
        let (a, b) = (fp(), fp());
        assert_eq!(decide(Some(&a), None, &a), Decision::Pinned);
        assert_eq!(decide(Some(&a), Some((&a, 1)), &b), Decision::PinMismatch);
        // A pin wins over a different remembered key.
        assert_eq!(decide(Some(&a), Some((&b, 1)), &a), Decision::Pinned);
        assert_eq!(decide(None, Some((&a, 4)), &a), Decision::Known);
        assert_eq!(
            decide(None, Some((&a, 4)), &b),
            Decision::Changed { line: 4 }
        );
        assert_eq!(decide(None, None, &a), Decision::FirstUse);
    }

    #[test]
    fn first_use_is_remembered_in_a_private_file_and_a_changed_key_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let (k1, k2) = (fp(), fp());
        let t = entry(7000, None);
        let mut known = KnownTrackers::load(&state).unwrap();
        assert_eq!(known.verify(&t, "info.txt", &k1).unwrap(), Trust::FirstUse);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(known.path()), 0o600);
        assert_eq!(mode(&state), 0o700);

        // A new run reads it back.
        let mut known = KnownTrackers::load(&state).unwrap();
        assert_eq!(known.verify(&t, "info.txt", &k1).unwrap(), Trust::Known);
        let e = known.verify(&t, "info.txt", &k2).unwrap_err();
        let file = state.join(FILE_NAME).display().to_string();
        assert!(e.contains(&file) && e.contains("line 3"), "{e}");
        assert!(
            e.contains(&k1.to_string()) && e.contains(&k2.to_string()),
            "{e}"
        );
        // Refusing wrote nothing: the old key is still the one remembered.
        let mut known = KnownTrackers::load(&state).unwrap();
        assert_eq!(known.verify(&t, "info.txt", &k1).unwrap(), Trust::Known);

        // Another address is a separate first use; both survive a reload.
        assert_eq!(
            known.verify(&entry(7001, None), "info.txt", &k2).unwrap(),
            Trust::FirstUse
        );
        let known = KnownTrackers::load(&state).unwrap();
        assert!(known.lookup(t.addr).unwrap().0.ct_eq(&k1));
        assert!(known.lookup(entry(7001, None).addr).unwrap().0.ct_eq(&k2));
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
    }

    #[test]
    fn a_pin_decides_and_a_mismatch_names_the_tracker_info_line() {
        let tmp = tempfile::tempdir().unwrap();
        let (k1, k2) = (fp(), fp());
        let mut known = KnownTrackers::load(tmp.path()).unwrap();
        let t = entry(7000, Some(k1));
        assert_eq!(known.verify(&t, "info.txt", &k1).unwrap(), Trust::Pinned);
        let e = known.verify(&t, "info.txt", &k2).unwrap_err();
        assert!(
            e.contains("info.txt line 2") && e.contains(&k1.to_string()),
            "{e}"
        );
        // Pinned trackers are not written to the file.
        assert!(!tmp.path().join(FILE_NAME).exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(FILE_NAME);
        std::fs::write(&path, "# ok\n127.0.0.1:1 SHA256:zz\n").unwrap();
        let e = KnownTrackers::load(tmp.path()).unwrap_err();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("line 2"),
            "{e}"
        );
        std::fs::write(&path, "127.0.0.1:1\n").unwrap();
        let e = KnownTrackers::load(tmp.path()).unwrap_err();
        assert!(e.contains("line 1") && e.contains("expected"), "{e}");
    }
}
