//! The operator's look at a running tracker (`tracker <info> <n> --status`): connect over the
//! secure channel as a client would, check the tracker's key against its tracker_info pin, ask
//! `digest`, and say role, log position and digest in one line. Replaces `nc`, which cannot speak
//! the channel (and is not installed on a fresh machine anyway).

use crate::cluster::TrackerEntry;
use crate::net::identity::{Fingerprint, Identity};
use crate::net::secure::Conversation;
use crate::net::secure_stream::connect_blocking;
use crate::protocol::tracker::{Reply, ReplyReader, Request, Verb};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What `--status` found.
#[derive(Debug)]
pub struct Status {
    pub key: Fingerprint,
    /// Whether tracker_info pins that key (`false`: no pin for this line).
    pub pinned: bool,
    pub digest: String,
    pub seq: u64,
    pub role: String,
}

impl Status {
    pub fn line(&self, tracker_no: usize, entry: &TrackerEntry) -> String {
        format!(
            "tracker {tracker_no} at {}: role {}, log position {}, digest {}, key {}{}",
            entry.addr,
            self.role,
            self.seq,
            self.digest,
            self.key,
            if self.pinned {
                " (pinned)"
            } else {
                " (not pinned in tracker_info)"
            }
        )
    }
}

/// Asks the tracker at `entry` for its status. A key that differs from the entry's pin is an
/// error before anything is sent.
pub fn query(entry: &TrackerEntry) -> Result<Status, String> {
    let addr = entry.addr;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    let me = Identity::generate()?;
    let mut s = connect_blocking(sock, &me, None, Conversation::ClientTracker)
        .map_err(|e| format!("secure handshake with {addr} failed: {e}"))?;
    let key = s
        .remote_fingerprint()
        .ok_or_else(|| format!("{addr} ended the handshake without a key"))?;
    if let Some(pin) = &entry.pin {
        if !pin.ct_eq(&key) {
            return Err(format!(
                "tracker {addr} proved key {key}, but tracker_info line {} pins {pin}: \
                 not the tracker you configured (or its key was replaced; then edit that line)",
                entry.line
            ));
        }
    }
    let req = Request::new(1, Verb::Digest).encode();
    s.write_all(format!("{req}\n").as_bytes())
        .and_then(|_| s.flush())
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut replies = ReplyReader::default();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(format!("{addr} closed the connection")),
            Ok(_) => {}
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
        let Some((_, reply)) = replies.feed(line.trim_end())? else {
            continue;
        };
        return match reply {
            Reply::Ok(words) => match words.as_slice() {
                [digest, seq, role] => Ok(Status {
                    pinned: entry.pin.is_some(),
                    key,
                    digest: digest.clone(),
                    seq: seq
                        .parse()
                        .map_err(|_| format!("{addr} sent a bad log position '{seq}'"))?,
                    role: role.clone(),
                }),
                _ => Err(format!("{addr} sent an unexpected digest reply: {words:?}")),
            },
            Reply::Err { code, message } => Err(format!("{addr} refused: {code} {message}")),
            Reply::List { .. } => Err(format!("{addr} sent a list to `digest`")),
        };
    }
}
