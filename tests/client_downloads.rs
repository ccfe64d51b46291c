//! End-to-end downloads with the real binaries: two trackers, several clients in temporary
//! directories. Seeders run with `--upload-limit` so that a download takes a few seconds and
//! the moments in between (half done, a tracker gone, a client killed) can be chosen by
//! watching `show_downloads` instead of by timing.

mod common;

use common::{sources, test_data, Client, Cluster, WAIT};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PIECE: usize = 512 * 1024;

/// The owner of group `g`: a fresh user logged in.
fn owner(c: &Cluster, name: &str, extra: &[&str]) -> Client {
    let mut o = c.client_with(name, &["127.0.0.1:0"], extra);
    o.run(&format!("create_user {name} pw"), "created user");
    o.run(&format!("login {name} pw"), "logged in as");
    o.run("create_group g", "created group g");
    o
}

/// A fresh user admitted to `g` by `owner`; `first` is the client's first argument.
fn member(c: &Cluster, owner: &mut Client, name: &str, first: &str, extra: &[&str]) -> Client {
    let mut m = c.client_with(name, &[first], extra);
    m.run(&format!("create_user {name} pw"), "created user");
    m.run(&format!("login {name} pw"), "logged in as");
    m.run("join_group g", "asked to join");
    owner.run(&format!("accept_request g {name}"), "now a member");
    m
}

/// Writes `data` under `dir/name` in a directory of its own (per user) and shares it in `g`.
fn share(c: &Cluster, who: &mut Client, name: &str, data: &[u8]) -> PathBuf {
    let dir = c.path().join(format!("files-{}", who.name));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    who.run(
        &format!("upload_file {} g", path.display()),
        &format!("to g ({} bytes", data.len()),
    );
    path
}

/// An empty download directory for `who`.
fn downloads_dir(c: &Cluster, who: &str) -> PathBuf {
    let d = c.path().join(format!("down-{who}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_download(d: &mut Client, file: &str, dir: &Path) {
    d.run(
        &format!("download_file g {file} {}", dir.display()),
        &format!("downloading {file} from g"),
    );
}

#[derive(Debug, Clone, PartialEq)]
enum Progress {
    /// `[D]`: pieces done, pieces in all, and the whole line.
    Running(usize, usize, String),
    Complete,
    Other(String),
}

/// The `show_downloads` state of `file`.
fn progress(d: &mut Client, file: &str) -> Progress {
    let lines = d.show_downloads();
    let Some(line) = lines.iter().find(|l| l.contains(&format!("] {file}"))) else {
        return Progress::Other(format!("not listed: {lines:?}"));
    };
    if line.starts_with("[C]") {
        return Progress::Complete;
    }
    if line.starts_with("[D]") {
        let counts = line
            .split_whitespace()
            .find(|w| w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_digit()));
        if let Some((a, b)) = counts.and_then(|w| w.split_once('/')) {
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                return Progress::Running(a, b, line.clone());
            }
        }
    }
    Progress::Other(line.clone())
}

/// Polls `show_downloads` (bounded by `WAIT`) until `file` is running with a share of pieces
/// done in `lo..=hi` percent; returns the pieces done. Panics if it completes first.
fn wait_for_progress(d: &mut Client, file: &str, lo: usize, hi: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        match progress(d, file) {
            Progress::Running(done, total, line) => {
                let pct = done * 100 / total.max(1);
                if (lo..=hi).contains(&pct) && done > 0 {
                    return done;
                }
                assert!(
                    pct <= hi,
                    "{file} went past {hi}% between two polls ({line}); the upload limit should make it slower"
                );
                last = Some(line);
            }
            Progress::Complete => panic!("{file} completed before reaching {lo}..{hi}%"),
            Progress::Other(l) => last = Some(l),
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    panic!("{file} never reached {lo}..{hi}%: last {last:?}");
}

/// Overwrites `len` bytes at `at` in `path` with different bytes, keeping its size and its
/// modification time: corruption nobody would notice by looking at the file's metadata.
fn corrupt_silently(path: &Path, at: u64, len: usize) {
    let before = std::fs::metadata(path).unwrap();
    let mtime = before.modified().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let old = std::fs::read(path).unwrap();
    let flipped: Vec<u8> = old[at as usize..at as usize + len]
        .iter()
        .map(|b| !b)
        .collect();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&flipped).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(after.modified().unwrap(), mtime, "mtime restored");
}

#[test]
fn pieces_come_from_both_seeders() {
    let c = Cluster::start(2);
    let data = test_data(12 * PIECE, 11);
    let mut a = owner(&c, "alice", &["--upload-limit", "4M"]);
    let mut b = member(&c, &mut a, "bob", "127.0.0.1:0", &["--upload-limit", "4M"]);
    let mut d = member(&c, &mut a, "dave", "127.0.0.1:0", &[]);
    share(&c, &mut a, "two.bin", &data);
    share(&c, &mut b, "two.bin", &data);
    d.run("list_files g", "2 seeders");

    let dir = downloads_dir(&c, "dave");
    start_download(&mut d, "two.bin", &dir);
    let note = d.expect_err("note: download of two.bin complete");
    let from = sources(&note);
    assert!(
        from.get("alice").is_some_and(|&n| n > 0) && from.get("bob").is_some_and(|&n| n > 0),
        "both seeders should have served pieces: {note}"
    );
    assert_eq!(
        from.values().sum::<u64>(),
        12,
        "every piece counted once: {note}"
    );
    assert_eq!(std::fs::read(dir.join("two.bin")).unwrap(), data);
    assert!(d.errors().is_empty(), "{:?}", d.errors());
}

#[test]
fn a_downloader_serves_verified_pieces_before_it_finishes() {
    let c = Cluster::start(2);
    let data = test_data(16 * PIECE, 12);
    let mut s = owner(&c, "alice", &["--upload-limit", "4M"]);
    let mut d1 = member(&c, &mut s, "bob", "127.0.0.1:0", &[]);
    let mut d2 = member(&c, &mut s, "carol", "127.0.0.1:0", &[]);
    share(&c, &mut s, "grow.bin", &data);

    let dir1 = downloads_dir(&c, "bob");
    start_download(&mut d1, "grow.bin", &dir1);
    wait_for_progress(&mut d1, "grow.bin", 6, 60);
    // Freeze the only seeder: from now on every piece carol gets must come from bob, who is
    // still downloading.
    common::signal(&s.child, libc::SIGSTOP);
    // Bob reports his pieces to the tracker in batches every 500 ms.
    std::thread::sleep(Duration::from_millis(700));
    let bob_has = match progress(&mut d1, "grow.bin") {
        Progress::Running(done, total, _) if done > 0 && done < total => done,
        p => panic!("bob should be part way: {p:?}"),
    };

    let dir2 = downloads_dir(&c, "carol");
    start_download(&mut d2, "grow.bin", &dir2);
    let deadline = Instant::now() + WAIT;
    loop {
        match progress(&mut d2, "grow.bin") {
            Progress::Running(done, _, _) if done == bob_has => break,
            Progress::Running(done, _, line) => {
                assert!(done <= bob_has, "more than bob has: {line}");
            }
            p => panic!("carol cannot be done while the seeder is frozen: {p:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "carol never got bob's {bob_has} pieces"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        matches!(progress(&mut d1, "grow.bin"), Progress::Running(..)),
        "bob is still downloading"
    );

    common::signal(&s.child, libc::SIGCONT);
    let note = d2.expect_err("note: download of grow.bin complete");
    let from = sources(&note);
    assert!(
        from.get("bob").is_some_and(|&n| n >= bob_has as u64),
        "carol's pieces from bob should be counted: {note}"
    );
    d1.expect_err("note: download of grow.bin complete");
    assert_eq!(std::fs::read(dir1.join("grow.bin")).unwrap(), data);
    assert_eq!(std::fs::read(dir2.join("grow.bin")).unwrap(), data);
    assert!(d1.errors().is_empty() && d2.errors().is_empty());
}

#[test]
fn a_silently_corrupted_seeder_never_gets_a_bad_file_into_place() {
    let c = Cluster::start(2);
    let data = test_data(10 * PIECE, 13);
    let mut a = owner(&c, "alice", &[]);
    let mut b = member(&c, &mut a, "bob", "127.0.0.1:0", &[]);
    let mut d = member(&c, &mut a, "dave", "127.0.0.1:0", &[]);
    let path = share(&c, &mut a, "rot.bin", &data);
    // After the upload, two pieces rot on alice's disk; size and mtime stay the same.
    corrupt_silently(&path, 3 * PIECE as u64 + 1000, 64);
    corrupt_silently(&path, 7 * PIECE as u64 + 4096, 1);

    // Alice is the only source: everything but the two bad pieces arrives, the file never
    // appears at the destination, and the client keeps working.
    let dir = downloads_dir(&c, "dave");
    let dest = dir.join("rot.bin");
    start_download(&mut d, "rot.bin", &dir);
    // Until the 8 good pieces are in (bounded by WAIT), then one more second of nothing.
    let start = Instant::now();
    let mut all_good_at = None;
    while all_good_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(1)) {
        assert!(start.elapsed() < WAIT, "the good pieces never all arrived");
        assert!(
            !dest.exists(),
            "a file built from bad pieces was put in place"
        );
        assert!(d.alive(), "the downloader crashed");
        match progress(&mut d, "rot.bin") {
            Progress::Running(done, total, line) => {
                assert!(done <= total - 2, "a corrupt piece was accepted: {line}");
                if done == total - 2 && all_good_at.is_none() {
                    all_good_at = Some(Instant::now());
                }
            }
            p => panic!("with only a corrupt source the download must wait: {p:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!dest.exists());
    d.run("list_files g", "rot.bin");

    // An honest seeder appears: the download completes with exactly the original bytes.
    share(&c, &mut b, "rot.bin", &data);
    let note = d.expect_err("note: download of rot.bin complete");
    let from = sources(&note);
    assert!(from.get("bob").is_some_and(|&n| n >= 2), "{note}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(d.alive());
    assert!(d.errors().is_empty(), "{:?}", d.errors());
}

#[test]
fn a_killed_downloader_resumes_from_its_part_file() {
    let c = Cluster::start(2);
    let data = test_data(16 * PIECE, 14);
    let mut s = owner(&c, "alice", &["--upload-limit", "3M"]);
    let mut d = member(&c, &mut s, "dave", "127.0.0.1:0", &[]);
    share(&c, &mut s, "big.bin", &data);

    let dir = downloads_dir(&c, "dave");
    start_download(&mut d, "big.bin", &dir);
    let had = wait_for_progress(&mut d, "big.bin", 20, 80);
    d.kill();
    assert!(dir.join("big.bin.part").exists(), "the .part stays");
    assert!(!dir.join("big.bin").exists());

    // Same user, same state directory; a killed client's user may log in again at once.
    let mut d = c.client("dave");
    d.run("login dave pw", "logged in as dave");
    start_download(&mut d, "big.bin", &dir);
    let note = d.expect_err("note: download of big.bin complete");
    let from = sources(&note);
    let earlier = from.get("earlier").copied().unwrap_or(0);
    assert!(
        earlier >= had as u64,
        "the {had} pieces verified before the kill count as earlier: {note}"
    );
    assert_eq!(from.values().sum::<u64>(), 16, "{note}");
    assert_eq!(std::fs::read(dir.join("big.bin")).unwrap(), data);
    assert!(!dir.join("big.bin.part").exists());
    assert!(d.errors().is_empty(), "{:?}", d.errors());
}

#[test]
fn the_downloaders_tracker_killed_mid_download() {
    let mut c = Cluster::start(2);
    let data = test_data(16 * PIECE, 15);
    let mut s = owner(&c, "alice", &["--upload-limit", "3M"]);
    // Dave prefers tracker 2; alice is at tracker 1.
    let t2 = c.addrs[1].to_string();
    let mut d = member(&c, &mut s, "dave", &t2, &[]);
    d.expect_err("preferring that tracker");
    share(&c, &mut s, "far.bin", &data);

    let dir = downloads_dir(&c, "dave");
    start_download(&mut d, "far.bin", &dir);
    wait_for_progress(&mut d, "far.bin", 10, 70);
    c.kill(2);

    d.expect_err("note: download of far.bin complete");
    assert_eq!(std::fs::read(dir.join("far.bin")).unwrap(), data);
    // The session moved to tracker 1 by itself: no new login.
    let line = d.run("list_files g", "far.bin");
    assert!(line.contains("2 seeders"), "dave seeds it now: {line}");
    d.sync();
    let switched = d
        .err_seen
        .iter()
        .filter(|l| l.starts_with("note: switched"))
        .count();
    assert!(switched <= 1, "{:?}", d.err_seen);
    assert!(d.errors().is_empty(), "{:?}", d.err_seen);
    assert!(s.errors().is_empty(), "{:?}", s.err_seen);
}
