//! What the user reads: tracker error codes turned into sentences, `show_downloads` lines,
//! sizes and rates for people. Pure.

use super::peers::{DownloadState, DownloadStatus};
use super::shell::Command;
use crate::pieces::PIECE_SIZE;
use crate::protocol::tracker::ErrorCode;

/// Names a command refers to, for error sentences.
#[derive(Debug, Default)]
struct Names<'a> {
    user: Option<&'a str>,
    group: Option<&'a str>,
    file: Option<&'a str>,
}

fn names_of(cmd: &Command) -> Names<'_> {
    use Command::*;
    match cmd {
        CreateUser { user, .. } | Login { user, .. } => Names {
            user: Some(user),
            ..Names::default()
        },
        CreateGroup { group }
        | JoinGroup { group }
        | LeaveGroup { group }
        | ListRequests { group }
        | ListFiles { group } => Names {
            group: Some(group),
            ..Names::default()
        },
        AcceptRequest { group, user } => Names {
            user: Some(user),
            group: Some(group),
            file: None,
        },
        UploadFile { group, .. } => Names {
            group: Some(group),
            ..Names::default()
        },
        DownloadFile { group, file, .. } | StopShare { group, file } => Names {
            group: Some(group),
            file: Some(file),
            user: None,
        },
        _ => Names::default(),
    }
}

/// A tracker's refusal of `cmd` as a sentence (without the `error: ` prefix). `file` names the
/// file for commands whose file name is not an argument (upload_file).
pub fn tracker_error(cmd: &Command, file: Option<&str>, code: ErrorCode, message: &str) -> String {
    let n = names_of(cmd);
    let user = n.user.unwrap_or("that user");
    let group = n.group.unwrap_or("?");
    let file = file.or(n.file).unwrap_or("?");
    match code {
        ErrorCode::NotLoggedIn => "you are not logged in (use: login <user_id> <password>)".to_string(),
        // Only this connection's own session can cause it now (another client's is taken over).
        ErrorCode::AlreadyLoggedIn => "this client is already logged in; log out first".to_string(),
        ErrorCode::BadCredentials => "wrong user id or password".to_string(),
        ErrorCode::UserExists => format!("the user id '{user}' is already taken"),
        ErrorCode::GroupExists => format!("a group named '{group}' already exists"),
        ErrorCode::NoSuchGroup => format!("there is no group named '{group}'"),
        ErrorCode::NoSuchUser => format!("there is no user named '{user}'"),
        ErrorCode::NoSuchFile => format!("there is no file named '{file}' in group '{group}'"),
        ErrorCode::NoSuchRequest => format!("{user} has not asked to join group '{group}'"),
        ErrorCode::NotMember => format!("you are not a member of group '{group}'"),
        ErrorCode::NotOwner => format!("only the owner of group '{group}' can do that"),
        ErrorCode::AlreadyMember => format!("you are already a member of group '{group}'"),
        ErrorCode::AlreadyRequested => format!("you have already asked to join group '{group}'"),
        ErrorCode::NotSeeder => format!("you do not share '{file}' in group '{group}'"),
        ErrorCode::ContentMismatch => format!(
            "a different file named '{file}' is already shared in group '{group}' (rename yours to share it)"
        ),
        ErrorCode::Unavailable => "the tracker is catching up with the other tracker; try again in a moment".to_string(),
        ErrorCode::InvalidName | ErrorCode::WriteUndone if !message.is_empty() => {
            message.to_string()
        }
        // The tracker's sentence names the limit and what to do; these are the fallbacks.
        ErrorCode::RateLimited | ErrorCode::QuotaExceeded | ErrorCode::TrackerFull
            if !message.is_empty() =>
        {
            message.to_string()
        }
        ErrorCode::RateLimited => {
            "too many attempts from your address; wait a minute and try again".to_string()
        }
        ErrorCode::QuotaExceeded => "that would exceed a limit of the tracker".to_string(),
        ErrorCode::TrackerFull => {
            "the tracker is full; ask its operator to raise its limits".to_string()
        }
        _ if message.is_empty() => format!("the tracker refused the request ({code})"),
        _ => format!("the tracker refused the request: {message}"),
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `2.0 GiB`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024.0 {
        return format!("{} B", n.max(0.0).round() as u64);
    }
    let mut v = n / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A transfer rate for people: `12.3 MiB/s`.
pub fn human_rate(bytes_per_sec: f64) -> String {
    format!("{}/s", human_bytes(bytes_per_sec))
}

/// One `show_downloads` line.
pub fn download_line(d: &DownloadStatus) -> String {
    match &d.state {
        DownloadState::Complete => format!("[C] [{}] {}", d.group, d.file),
        DownloadState::Failed(reason) => format!("[F] [{}] {} {}", d.group, d.file, reason),
        state => {
            let pct = (d.pieces_done * 100)
                .checked_div(d.pieces_total)
                .unwrap_or(100);
            let mut line = format!(
                "[D] [{}] {}  {}/{} pieces {}% {}",
                d.group,
                d.file,
                d.pieces_done,
                d.pieces_total,
                pct,
                human_rate(d.rate)
            );
            if *state == DownloadState::Verifying {
                line.push_str(" (checking earlier data)");
            } else if d.peers == 0 {
                line.push_str(" (waiting for a source)");
            }
            line.push_str(&format!(" ETA {} {}", eta_text(d), peers_text(d.peers)));
            line
        }
    }
}

/// Time left at the current rate: `h:mm:ss`, or `-` while it cannot be known (no source, no
/// data in the last few seconds, or the resume check still running). The bytes left are
/// counted in whole pieces, so the last, shorter piece makes it err on the long side.
pub fn eta_text(d: &DownloadStatus) -> String {
    let left = d.pieces_total.saturating_sub(d.pieces_done) as f64 * PIECE_SIZE as f64;
    if d.state != DownloadState::Downloading || d.peers == 0 || d.rate < 1.0 {
        return "-".to_string();
    }
    let secs = (left / d.rate).ceil() as u64;
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `1 peer`, `3 peers`: the connections a download is using now.
pub fn peers_text(n: usize) -> String {
    format!("{n} peer{}", if n == 1 { "" } else { "s" })
}

/// Where a completed download's pieces came from, for its `note:` line:
/// ` (from alice: 300 pieces, bob: 212 pieces, earlier: 5 pieces)` — peers by user with at
/// least one piece, then the pieces found valid in a resumed `.part`. Empty when nothing came
/// from anywhere (an empty file).
pub fn sources_note(peers: &[(String, u64)], earlier: u64) -> String {
    let plural = |n: u64| if n == 1 { "piece" } else { "pieces" };
    let mut parts: Vec<String> = peers
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(user, n)| format!("{user}: {n} {}", plural(*n)))
        .collect();
    if earlier > 0 {
        parts.push(format!("earlier: {earlier} {}", plural(earlier)));
    }
    if parts.is_empty() {
        return String::new();
    }
    format!(" (from {})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_every_contributor_and_earlier_data() {
        let peers = vec![
            ("alice".to_string(), 300),
            ("bob".to_string(), 212),
            ("carol".to_string(), 0),
        ];
        assert_eq!(
            sources_note(&peers, 0),
            " (from alice: 300 pieces, bob: 212 pieces)"
        );
        assert_eq!(
            sources_note(&peers[..1], 1),
            " (from alice: 300 pieces, earlier: 1 piece)"
        );
        assert_eq!(sources_note(&[], 7), " (from earlier: 7 pieces)");
        assert_eq!(sources_note(&peers[2..], 0), "");
    }

    fn status(state: DownloadState) -> DownloadStatus {
        DownloadStatus {
            id: 1,
            group: "g".into(),
            file: "f.bin".into(),
            state,
            pieces_done: 5,
            pieces_total: 20,
            rate: 12.3 * 1024.0 * 1024.0,
            peers: 2,
        }
    }

    #[test]
    fn download_lines_follow_the_contract() {
        assert_eq!(
            download_line(&status(DownloadState::Downloading)),
            "[D] [g] f.bin  5/20 pieces 25% 12.3 MiB/s ETA 0:00:01 2 peers"
        );
        assert_eq!(
            download_line(&status(DownloadState::Complete)),
            "[C] [g] f.bin"
        );
        assert_eq!(
            download_line(&status(DownloadState::Failed("disk full".into()))),
            "[F] [g] f.bin disk full"
        );
        let mut waiting = status(DownloadState::Downloading);
        waiting.peers = 0;
        assert!(download_line(&waiting).ends_with("(waiting for a source) ETA - 0 peers"));
    }

    #[test]
    fn eta_is_the_bytes_left_at_the_current_rate() {
        let mut d = status(DownloadState::Downloading);
        d.pieces_done = 0;
        d.pieces_total = 7200;
        d.rate = PIECE_SIZE as f64;
        d.peers = 1;
        assert!(download_line(&d).ends_with(" ETA 2:00:00 1 peer"));
        d.rate = 0.0;
        assert_eq!(eta_text(&d), "-");
        d.rate = 1e9;
        assert_eq!(eta_text(&d), "0:00:04");
        d.state = DownloadState::Verifying;
        assert!(download_line(&d).ends_with("(checking earlier data) ETA - 1 peer"));
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_rate(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB/s");
    }

    #[test]
    fn tracker_errors_become_sentences_with_names() {
        let c = Command::JoinGroup { group: "g1".into() };
        assert_eq!(
            tracker_error(&c, None, ErrorCode::NoSuchGroup, "x"),
            "there is no group named 'g1'"
        );
        let c = Command::StopShare {
            group: "g".into(),
            file: "a.txt".into(),
        };
        assert!(tracker_error(&c, None, ErrorCode::NotSeeder, "").contains("'a.txt'"));
        let e = tracker_error(
            &Command::ListGroups,
            None,
            ErrorCode::Unknown,
            "something odd",
        );
        assert_eq!(e, "the tracker refused the request: something odd");
        // A write undone when a split healed: the tracker's sentence is the whole message.
        let told = "tracker 2 acknowledged your create_group dup, but ... so it was undone";
        let e = tracker_error(&Command::ListGroups, None, ErrorCode::WriteUndone, told);
        assert_eq!(e, told);
    }

    #[test]
    fn limits_show_the_trackers_sentence_or_a_fallback() {
        let c = Command::CreateGroup { group: "g".into() };
        for code in [
            ErrorCode::RateLimited,
            ErrorCode::QuotaExceeded,
            ErrorCode::TrackerFull,
        ] {
            assert_eq!(
                tracker_error(&c, None, code, "you own 3 groups"),
                "you own 3 groups"
            );
            let fallback = tracker_error(&c, None, code, "");
            assert!(
                !fallback.is_empty() && !fallback.contains(code.as_str()),
                "{fallback}"
            );
        }
    }
}
