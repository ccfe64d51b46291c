//! The flash crowd (issue: "flash crowds finish together"): one seeder capped at
//! `FLASH_UPLOAD_LIMIT` shares a file; a fresh client downloads it alone (the reference time),
//! then crowds of fresh clients start together. Measured per round: each downloader's finish,
//! the copies the seeder sent (from its own log), the pieces traded between downloaders; and
//! the report's section and table. `bench --only-flash` runs it alone.

use crate::clients::Stream;
use crate::report::{pending_short, size_of};
use crate::transfer::{median, Pending, Swarm, FILE_NAME, GROUP};
use crate::{Results, Settings};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// The flash crowd's seeder cap: slow enough that the seeder is the bottleneck, so what the
/// downloaders trade among themselves shows.
pub const FLASH_UPLOAD_LIMIT: &str = "8M";
/// The flash crowd's file: 96 pieces, six seconds at the seeder's cap.
pub const FLASH_SIZE: u64 = 48 << 20;

/// One flash-crowd round: `downloaders` fresh clients send `download_file` together.
#[derive(Clone, Debug)]
pub struct FlashRound {
    pub downloaders: usize,
    /// Per downloader: first `download_file` sent → its completion note, seconds.
    pub finish_secs: Vec<f64>,
    /// Piece bytes the seeder sent over the round: the sum of its `upload connection closed:
    /// N bytes of pieces sent on it` log lines.
    pub seeder_bytes: u64,
    /// Pieces each downloader's completion note credits to another downloader, summed.
    pub pieces_from_downloaders: u64,
    pub size: u64,
}

impl FlashRound {
    pub fn slowest(&self) -> f64 {
        self.finish_secs.iter().cloned().fold(0.0, f64::max)
    }

    /// Copies of the file that left the seeder.
    pub fn copies(&self) -> f64 {
        self.seeder_bytes as f64 / self.size as f64
    }
}

/// The flash-crowd case: one seeder capped at `FLASH_UPLOAD_LIMIT`, then rounds of 1 (the
/// single-download time), and of each count in `crowds` downloaders starting together.
#[derive(Clone, Debug)]
pub struct FlashCase {
    pub single: Vec<FlashRound>,
    pub crowds: Vec<FlashRound>,
}

impl FlashCase {
    /// The median single-download time, seconds.
    pub fn single_secs(&self) -> f64 {
        median(&self.single.iter().map(|r| r.slowest()).collect::<Vec<_>>())
    }

    /// Slowest finish of a crowd over the single-download time.
    pub fn ratio(&self, round: &FlashRound) -> f64 {
        round.slowest() / self.single_secs()
    }
}

/// Runs the flash-crowd case on a fresh tracker pair and seeder. `singles` single downloads
/// give the reference time (median); each count in `crowds` is one round.
pub fn flash_crowd(
    client_bin: &Path,
    tracker_bin: &Path,
    singles: usize,
    crowds: &[usize],
) -> Result<FlashCase, Pending> {
    let mut swarm = Swarm::start(client_bin, tracker_bin, FLASH_SIZE)?;
    // Info logging: the seeder says what it sent on each upload connection as it closes.
    swarm.seeder_args = ["--upload-limit", FLASH_UPLOAD_LIMIT, "--log-level", "info"]
        .map(String::from)
        .to_vec();
    swarm.add_seeder().map_err(Pending::Failed)?;
    let mut case = FlashCase {
        single: Vec::new(),
        crowds: Vec::new(),
    };
    for _ in 0..singles {
        eprintln!("bench:   flash crowd: one download alone");
        let r = swarm.crowd(1).map_err(Pending::Failed)?;
        eprintln!("bench:     {:.2} s, {:.2} copies", r.slowest(), r.copies());
        case.single.push(r);
    }
    for &n in crowds {
        eprintln!("bench:   flash crowd: {n} downloaders together");
        let r = swarm.crowd(n).map_err(Pending::Failed)?;
        eprintln!(
            "bench:     slowest {:.2} s (ratio {:.2}), {:.2} copies from the seeder, {} pieces between downloaders",
            r.slowest(),
            case_ratio(&case, &r),
            r.copies(),
            r.pieces_from_downloaders
        );
        case.crowds.push(r);
    }
    Ok(case)
}

fn case_ratio(case: &FlashCase, r: &FlashRound) -> f64 {
    if case.single.is_empty() {
        f64::NAN
    } else {
        case.ratio(r)
    }
}

/// The pieces a completion note (`... (from alice: 260 pieces, bob: 252 pieces)`) credits to
/// users other than `seeder`.
fn pieces_not_from(note: &str, seeder: &str) -> u64 {
    let Some((_, from)) = note.split_once("(from ") else {
        return 0;
    };
    from.trim_end_matches(')')
        .split(", ")
        .filter_map(|part| part.split_once(": "))
        .filter(|(user, _)| *user != seeder)
        .filter_map(|(_, n)| n.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The piece bytes a seeder's `upload connection closed: N bytes of pieces sent on it` log
/// line reports.
fn sent_on_close(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("upload connection closed: ")?;
    rest.strip_suffix(" bytes of pieces sent on it")?
        .parse()
        .ok()
}

impl Swarm {
    /// `n` fresh members send `download_file` one right after the other; each is timed from
    /// the first send to its own completion note. They exit afterwards (logging out, so no
    /// source for the next round) and their copies are deleted.
    fn crowd(&mut self, n: usize) -> Result<FlashRound, String> {
        let round = self.downloads;
        self.downloads += n;
        let mut clients = Vec::new();
        let mut dests = Vec::new();
        for k in 0..n {
            let name = format!("fc{round}x{k}");
            let dest = self.dir.path().join(&name);
            std::fs::create_dir_all(&dest).map_err(|e| format!("mkdir {}: {e}", dest.display()))?;
            clients.push(self.member(&name)?);
            dests.push(dest);
        }
        // Whatever the seeder logged before this round is not this round's.
        self.seeders
            .first_mut()
            .ok_or("no seeder")?
            .drain(Duration::ZERO);
        let mut t0 = None;
        for (c, dest) in clients.iter_mut().zip(&dests) {
            let t = c.send(&format!(
                "download_file {GROUP} {FILE_NAME} \"{}\"",
                dest.display()
            ))?;
            t0.get_or_insert(t);
        }
        let t0 = t0.ok_or("no downloader")?;
        let prefix = format!("note: download of {FILE_NAME} complete");
        let mut finish = Vec::new();
        let mut from_peers = 0;
        for c in clients.iter_mut() {
            let done = c.expect(
                "the download's completion",
                Duration::from_secs(300),
                |s, t| {
                    (s == Stream::Err
                        && (t.starts_with(&prefix) || t.starts_with("warning: download")))
                        || (s == Stream::Out && t.starts_with("[F]"))
                },
            )?;
            if !done.text.starts_with(&prefix) {
                return Err(format!("{}: {}", c.name, done.text));
            }
            finish.push(done.at.duration_since(t0).as_secs_f64());
            from_peers += pieces_not_from(&done.text, "seed1");
        }
        for (c, dest) in clients.iter_mut().zip(&dests) {
            let got = std::fs::metadata(dest.join(FILE_NAME))
                .map(|m| m.len())
                .map_err(|e| format!("{}: the downloaded file: {e}", c.name))?;
            if got != self.size {
                return Err(format!(
                    "{}: downloaded {got} bytes, expected {}",
                    c.name, self.size
                ));
            }
            c.exit(Duration::from_secs(20));
        }
        // Every downloader has exited, so each of its connections to the seeder is closed and
        // logged within moments.
        let seeder = self.seeders.first_mut().ok_or("no seeder")?;
        let lines = seeder.drain(Duration::from_millis(500));
        for l in lines.iter().filter(|l| l.text.contains("super-seeding")) {
            eprintln!("bench:     seeder: {}", l.text);
        }
        let seeder_bytes = lines.iter().filter_map(|l| sent_on_close(&l.text)).sum();
        for dest in dests {
            let _ = std::fs::remove_dir_all(&dest);
        }
        Ok(FlashRound {
            downloaders: n,
            finish_secs: finish,
            seeder_bytes,
            pieces_from_downloaders: from_peers,
            size: self.size,
        })
    }
}

/// `--only-flash`: the flash crowd alone, for iterating on the peer engine; its rows go to
/// standard output in the report's format, and no report is written.
pub fn run_alone(s: &Settings) -> Result<(), String> {
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let client_bin = groupshare::testkit::sibling_bin("client")?;
    let r = Results {
        flash: Some(measure(s, &tracker_bin, &client_bin)),
        ..Results::default()
    };
    print!("{}", rows(&r));
    Ok(())
}

pub fn measure(s: &Settings, tracker_bin: &Path, client_bin: &Path) -> Result<FlashCase, Pending> {
    eprintln!(
        "bench:   flash crowd (seeder capped at {})",
        FLASH_UPLOAD_LIMIT
    );
    let res = flash_crowd(client_bin, tracker_bin, s.flash_singles, &[6, 12]);
    if let Err(Pending::Failed(e)) = &res {
        eprintln!("bench:   failed: {e}");
    }
    res
}

pub fn section(o: &mut String, r: &Results) {
    if r.flash.is_none() {
        return;
    }
    let _ = writeln!(
        o,
        "## Flash crowd\n\n\
         One seeder (`--upload-limit {FLASH_UPLOAD_LIMIT}`) shares a {} file on a fresh tracker \
         pair. A fresh client downloads it alone (the reference time, median of the single \
         runs); then N fresh clients send `download_file` one right after the other. Each is \
         timed from the first `download_file` sent to its own completion note; the ratio is \
         the slowest over the reference. *Copies* is the piece bytes the seeder sent over the \
         round, from its own count (it runs with `--log-level info` and logs the piece bytes \
         sent on each upload connection as it closes), over the file's size; *between \
         downloaders* sums the pieces the completion notes credit to another downloader. \
         After each round the downloaders exit \
         (logging out) and their copies are deleted.\n",
        size_of(Some(FLASH_SIZE))
    );
    o.push_str(&rows(r));
    let _ = writeln!(o, "\n{FLASH_BEFORE}\n");
}

/// What the same case measured before the peer engine learned of crowds (recorded by hand;
/// not regenerated).
const FLASH_BEFORE: &str = "Before super-seeding and `watch`/`has` (commit 2689be0, same \
     machine, `bench --only-flash`): one download alone 5.69–5.98 s; 6 downloaders 11.02 s, \
     ratio 1.85, 12 downloaders 13.19 s, ratio 2.21; the seeder sent at least 1.44 copies in \
     both (138 of 576 and of 1,152 pieces by the completion notes — that version did not count \
     from the seeder's side, so duplicates are not in it). The downloaders learnt of each \
     other's pieces only through the tracker's `have` batches, a 3 s peer refresh and a 2 s \
     `want` poll, and the seeder's queue held seconds of requests chosen independently by \
     each downloader, many of them for the same pieces.";

/// The flash crowd's table (also printed alone by `bench --only-flash`).
pub fn rows(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| downloaders | slowest finish | ratio to one alone | copies sent by the seeder | pieces between downloaders | finishes (s) | target |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |");
    match &r.flash {
        Some(Ok(case)) => {
            let secs = |round: &FlashRound| -> String {
                let mut v: Vec<String> = round
                    .finish_secs
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect();
                v.sort();
                v.join(", ")
            };
            for round in &case.single {
                let _ = writeln!(
                    o,
                    "| 1 (reference) | {:.2} s | – | {:.2} | – | {} | – |",
                    round.slowest(),
                    round.copies(),
                    secs(round)
                );
            }
            for round in &case.crowds {
                let _ = writeln!(
                    o,
                    "| {} | {:.2} s | {:.2} | {:.2} | {} | {} | ratio ≤ 1.3, copies ≤ 1.3 |",
                    round.downloaders,
                    round.slowest(),
                    case.ratio(round),
                    round.copies(),
                    round.pieces_from_downloaders,
                    secs(round)
                );
            }
        }
        Some(Err(p)) => {
            let _ = writeln!(o, "| – | {} | – | – | – | – | – |", pending_short(p));
        }
        None => {}
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_notes_credit_pieces_by_user() {
        let note = "note: download of data.bin complete: /x/data.bin (from fc1x0: 20 pieces, seed1: 70 pieces, fc1x2: 6 pieces)";
        assert_eq!(pieces_not_from(note, "seed1"), 26);
        assert_eq!(
            pieces_not_from(
                "note: download of d complete: /x (from seed1: 96 pieces)",
                "seed1"
            ),
            0
        );
        assert_eq!(pieces_not_from("no source list", "seed1"), 0);
    }

    #[test]
    fn the_seeders_close_lines_give_the_bytes_sent() {
        let l = "2026-11-26T09:00:00Z INFO  [groupshare::client::peers] upload connection closed: 524288 bytes of pieces sent on it";
        assert_eq!(sent_on_close(l), Some(524_288));
        assert_eq!(sent_on_close("upload connection closed: broken pipe"), None);
    }
}
