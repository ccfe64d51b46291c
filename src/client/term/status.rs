//! The status line under the prompt: what transfers are running, redrawn in place at most
//! `REFRESH` apart. Pure: the caller passes the snapshot and the time.

use crate::client::peers::{DownloadState, DownloadStatus};
use crate::client::report;
use std::time::{Duration, Instant};

/// Least time between two redraws: a few a second is enough to read, and keeps a fast
/// download from spending its time on the terminal.
pub const REFRESH: Duration = Duration::from_millis(250);

/// What is running, as the peer side reports it.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub downloads: Vec<DownloadStatus>,
    /// `upload_file` hashing: file name, bytes hashed, bytes in all.
    pub hashing: Vec<(String, u64, u64)>,
}

/// The status line's text, `None` when nothing runs. The first running transfer in full,
/// then how many more there are.
pub fn text(s: &Snapshot) -> Option<String> {
    let mut parts: Vec<String> = s
        .downloads
        .iter()
        .filter(|d| {
            matches!(
                d.state,
                DownloadState::Downloading | DownloadState::Verifying
            )
        })
        .map(|d| {
            let pct = (d.pieces_done * 100)
                .checked_div(d.pieces_total)
                .unwrap_or(100);
            let what = if d.state == DownloadState::Verifying {
                "checking"
            } else {
                "downloading"
            };
            format!(
                "{what} {} {pct}% {} ETA {} {}",
                d.file,
                report::human_rate(d.rate),
                report::eta_text(d),
                report::peers_text(d.peers)
            )
        })
        .collect();
    parts.extend(s.hashing.iter().map(|(file, done, size)| {
        let pct = (done * 100).checked_div(*size).unwrap_or(100);
        format!("hashing {file} {pct}%")
    }));
    let first = parts.first()?.clone();
    Some(match parts.len() {
        1 => first,
        n => format!("{first} (+{} more)", n - 1),
    })
}

/// When the line is due for a redraw.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// True (and the redraw counted) if `REFRESH` has passed since the last one.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < REFRESH => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// When the next redraw is due, while a line is shown.
    pub fn next(&self) -> Option<Instant> {
        self.last.map(|t| t + REFRESH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(file: &str, state: DownloadState) -> DownloadStatus {
        DownloadStatus {
            id: 1,
            group: "g".into(),
            file: file.into(),
            state,
            pieces_done: 1,
            pieces_total: 4,
            rate: 1024.0 * 1024.0,
            peers: 2,
        }
    }

    #[test]
    fn nothing_running_is_no_line() {
        let s = Snapshot {
            downloads: vec![dl("a", DownloadState::Complete)],
            hashing: vec![],
        };
        assert_eq!(text(&s), None);
        assert_eq!(text(&Snapshot::default()), None);
    }

    #[test]
    fn the_line_names_file_percent_rate_eta_and_peers() {
        let s = Snapshot {
            downloads: vec![
                dl("done", DownloadState::Failed("x".into())),
                dl("a.bin", DownloadState::Downloading),
            ],
            hashing: vec![("big.iso".into(), 30, 100)],
        };
        assert_eq!(
            text(&s).as_deref(),
            Some("downloading a.bin 25% 1.0 MiB/s ETA 0:00:02 2 peers (+1 more)")
        );
        let s = Snapshot {
            downloads: vec![],
            hashing: vec![("big.iso".into(), 30, 100)],
        };
        assert_eq!(text(&s).as_deref(), Some("hashing big.iso 30%"));
    }

    #[test]
    fn redraws_are_spaced() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        assert!(t.due(t0));
        assert!(!t.due(t0 + REFRESH / 2));
        assert_eq!(t.next(), Some(t0 + REFRESH));
        assert!(t.due(t0 + REFRESH));
    }
}
