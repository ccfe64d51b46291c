//! The data lines of `list` replies, typed: `list_groups`, `list_files`, peer lines of `peers`
//! and `download_file`, and the whole `download_file` reply (size, hashes, peers).

use super::reply::Reply;
use crate::auth::ticket::Ticket;
use crate::pieces::{self, Hash, PieceSet};
use std::borrow::Cow;
use std::net::SocketAddr;

/// One line of `list_groups`: `<group> <members> <owner>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLine {
    pub group: String,
    pub members: usize,
    pub owner: String,
}

impl GroupLine {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.group, self.members, self.owner)
    }

    pub fn parse(line: &str) -> Option<GroupLine> {
        match line.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
            [group, members, owner] => Some(GroupLine {
                group: group.to_string(),
                members: members.parse().ok()?,
                owner: owner.to_string(),
            }),
            _ => None,
        }
    }
}

/// One line of `list_files`: `<file> <size> <seeders> <copies-online>`, the last with one
/// decimal (`1.6`): the pieces online sessions hold, divided by the file's piece count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLine {
    pub file: String,
    pub size: u64,
    /// Users with the whole file, online or not.
    pub seeders: usize,
    /// Complete copies online, in tenths (rounded down: never more than there are).
    pub copies_tenths: u64,
}

impl FileLine {
    pub fn encode(&self) -> String {
        let (whole, tenth) = (self.copies_tenths / 10, self.copies_tenths % 10);
        format!(
            "{} {} {} {whole}.{tenth}",
            self.file, self.size, self.seeders
        )
    }

    pub fn parse(line: &str) -> Option<FileLine> {
        match line.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
            [file, size, seeders, copies] => Some(FileLine {
                file: file.to_string(),
                size: size.parse().ok()?,
                seeders: seeders.parse().ok()?,
                copies_tenths: parse_tenths(copies)?,
            }),
            _ => None,
        }
    }
}

/// `<digits>.<digit>` as tenths; nothing else.
fn parse_tenths(s: &str) -> Option<u64> {
    let (whole, tenth) = s.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || tenth.len() != 1 || !digits(tenth) {
        return None;
    }
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(10)?
        .checked_add(tenth.parse().ok()?)
}

/// A peer line of `peers` and `download_file`: `p <user> <addr> <have> <key> <expiry> <mac>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLine {
    pub user: String,
    pub addr: SocketAddr,
    /// The tracker's view of the peer's pieces: a hint, the peer's own `have` is the truth.
    pub have: PieceSet,
    /// The peer's static key (64 lowercase hex), as it proved to its tracker: a downloader
    /// talks to that address only if the handshake proves this key.
    pub key: String,
    /// The requester's ticket for this peer (`auth::ticket`): what it shows the peer in `want`
    /// and `watch`. A tracker always issues one; `None` only for a line without the two words.
    pub ticket: Option<Ticket>,
}

impl PeerLine {
    pub fn encode(&self) -> String {
        let mut line = format!(
            "p {} {} {} {}",
            self.user,
            self.addr,
            self.have.to_wire(),
            self.key
        );
        if let Some(t) = &self.ticket {
            line.push(' ');
            line.push_str(&t.encode());
        }
        line
    }

    /// The key as bytes (checked at parse).
    pub fn key_bytes(&self) -> Option<[u8; 32]> {
        crate::pieces::from_hex(&self.key)?.try_into().ok()
    }

    /// `None` if malformed or if the piece set does not fit a file of `npieces` pieces.
    pub fn parse(line: &str, npieces: usize) -> Option<PeerLine> {
        let (user, addr, have, key, ticket) =
            match line.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
                ["p", user, addr, have, key] => (*user, *addr, *have, *key, None),
                ["p", user, addr, have, key, expiry, mac] => {
                    (*user, *addr, *have, *key, Some(Ticket::parse(expiry, mac)?))
                }
                _ => return None,
            };
        if !crate::tracker::op::is_key(key) {
            return None;
        }
        Some(PeerLine {
            user: user.to_string(),
            addr: addr.parse().ok()?,
            have: PieceSet::from_wire(have, npieces)?,
            key: key.to_string(),
            ticket,
        })
    }
}

/// The reply to `download_file`: `list <n> <size> <npieces>`, the hash lines `h <hex>`, then
/// the peer lines. Borrows the hashes when the tracker encodes it (up to 10 MiB of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadReply<'a> {
    pub size: u64,
    pub hashes: Cow<'a, [Hash]>,
    pub peers: Vec<PeerLine>,
}

impl DownloadReply<'_> {
    pub fn to_reply(&self) -> Reply {
        let mut lines: Vec<String> = pieces::hash_lines(&self.hashes)
            .map(|h| format!("h {h}"))
            .collect();
        lines.extend(self.peers.iter().map(PeerLine::encode));
        Reply::List {
            head: vec![self.size.to_string(), self.hashes.len().to_string()],
            lines,
        }
    }

    /// Parses the head words and data lines of the `list` reply. A malformed peer line is
    /// skipped (the download can go on with the others); anything else malformed is an error.
    pub fn parse(head: &[String], lines: &[String]) -> Result<DownloadReply<'static>, String> {
        let (size, npieces): (u64, usize) = match head {
            [s, n] => (
                s.parse().map_err(|_| "bad size")?,
                n.parse().map_err(|_| "bad piece count")?,
            ),
            _ => return Err("bad header".into()),
        };
        if pieces::piece_count(size) != npieces as u64 {
            return Err("piece count does not match the size".into());
        }
        let mut hashes = Vec::with_capacity(npieces);
        let mut peers = Vec::new();
        for l in lines {
            if let Some(hex) = l.strip_prefix("h ") {
                hashes.extend(pieces::hashes_from_hex(hex.trim()).ok_or("bad hash line")?);
            } else if l.starts_with("p ") {
                if let Some(p) = PeerLine::parse(l, npieces) {
                    peers.push(p);
                }
            } else {
                return Err(format!("unexpected line {l:?}"));
            }
        }
        if hashes.len() != npieces {
            return Err(format!("{} hashes for {npieces} pieces", hashes.len()));
        }
        Ok(DownloadReply {
            size,
            hashes: Cow::Owned(hashes),
            peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tracker::strategy::name;
    use proptest::prelude::*;

    #[test]
    fn download_replies_are_parsed() {
        let hashes: Vec<Hash> = vec![[1; 20], [2; 20]];
        let head = vec![(pieces::PIECE_SIZE + 1).to_string(), "2".to_string()];
        let lines = vec![
            format!("h {}", pieces::hashes_to_hex(&hashes)),
            format!(
                "p bob 127.0.0.1:5000 all {} 1800000000 {}",
                "ab".repeat(32),
                "0a".repeat(32)
            ),
            format!("p carol 127.0.0.1:5001 b80 {}", "cd".repeat(32)),
            "p broken".to_string(),
            // Without the key a downloader could not check it reached the peer: not a peer line.
            "p dave 127.0.0.1:5002 all".to_string(),
        ];
        let d = DownloadReply::parse(&head, &lines).unwrap();
        assert_eq!(d.size, pieces::PIECE_SIZE + 1);
        assert_eq!(&d.hashes[..], &hashes[..]);
        assert_eq!(d.peers.len(), 2);
        assert!(d.peers[0].have.is_full());
        assert_eq!(d.peers[0].ticket.map(|t| t.expiry), Some(1_800_000_000));
        assert_eq!(d.peers[1].ticket, None);
        assert_eq!(d.peers[1].have.count(), 1);
        assert!(DownloadReply::parse(&["5".into(), "2".into()], &[]).is_err());
        assert!(DownloadReply::parse(&head, &lines[1..]).is_err());
        assert!(DownloadReply::parse(&head, &["x".into()]).is_err());
    }

    #[test]
    fn file_lines_carry_copies_online_with_one_decimal() {
        let fl = FileLine {
            file: "f".into(),
            size: 9,
            seeders: 2,
            copies_tenths: 16,
        };
        assert_eq!(fl.encode(), "f 9 2 1.6");
        assert_eq!(
            FileLine::parse("f 9 2 0.0").map(|l| l.copies_tenths),
            Some(0)
        );
        for bad in [
            "f 9 2",
            "f 9 2 1",
            "f 9 2 1.66",
            "f 9 2 .6",
            "f 9 2 1.",
            "f 9 2 -1.0",
            "f 9 2 1.6 x",
        ] {
            assert_eq!(FileLine::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn data_lines_round_trip(
            g in name(), f in name(), n: usize, size: u64, owner in name(),
            ip: [u8; 4], port: u16, npieces in 0usize..2000, bits: Vec<bool>, copies: u64,
            ticket: Option<(u64, [u8; 32])>,
        ) {
            let gl = GroupLine { group: g.clone(), members: n, owner };
            prop_assert_eq!(GroupLine::parse(&gl.encode()), Some(gl));
            let fl = FileLine { file: f, size, seeders: n, copies_tenths: copies };
            prop_assert_eq!(FileLine::parse(&fl.encode()), Some(fl));
            let mut have = PieceSet::empty(npieces);
            for (i, b) in bits.iter().enumerate().take(npieces) {
                if *b { have.insert(i); }
            }
            let ticket = ticket.map(|(expiry, mac)| Ticket { expiry, mac });
            let pl = PeerLine { user: g, addr: SocketAddr::from((ip, port)), have, key: "0f".repeat(32), ticket };
            prop_assert_eq!(PeerLine::parse(&pl.encode(), npieces), Some(pl));
        }

        #[test]
        fn download_replies_round_trip(size in 0u64..(3000 * pieces::PIECE_SIZE), seed: u8, users in proptest::collection::btree_set(name(), 0..4)) {
            let n = pieces::piece_count(size) as usize;
            let hashes: Vec<Hash> = (0..n).map(|i| [(i as u8) ^ seed; 20]).collect();
            let peers = users.into_iter().enumerate().map(|(i, user)| PeerLine {
                user,
                addr: SocketAddr::from(([127, 0, 0, 1], i as u16)),
                have: PieceSet::full(n),
                key: "ab".repeat(32),
                ticket: Some(Ticket { expiry: i as u64, mac: [seed; 32] }),
            }).collect();
            let d = DownloadReply { size, hashes: Cow::Owned(hashes), peers };
            let Reply::List { head, lines } = d.to_reply() else { panic!("a list") };
            prop_assert_eq!(DownloadReply::parse(&head, &lines), Ok(d));
        }
    }
}
