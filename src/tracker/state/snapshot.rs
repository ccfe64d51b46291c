//! The snapshot codec: the whole state as canonical text lines (`snapshot_lines`), read back
//! with every field validated (`from_snapshot_lines`), and the `digest` over those lines that
//! both trackers compare. The lines are the journal's snapshot file and the peer link's state
//! transfer, so loading trusts nothing.

use super::dedup::{DedupEntry, DedupTable};
use super::{File, Group, Limits, Session, State};
use crate::auth::scram::Verifier;
use crate::names::{self, NameKind};
use crate::pieces::{self, PieceSet, HASHES_PER_LINE, MAX_PIECES};
use crate::tracker::op::{self, Origin};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;

/// What becomes part of the state only after the last line: the dedup table is rebuilt from
/// its entries once the clock is known, and the clock line ends the snapshot.
#[derive(Default)]
struct Deferred {
    dedup: BTreeMap<u64, DedupEntry>,
    clock: Option<u64>,
}

impl State {
    /// The canonical text form, one record a line, in a fixed order (maps by key, members and
    /// requests in their own order). Records that can be large are split so that every line
    /// stays well below the peer link's 24 MiB: hashes go `HASHES_PER_LINE` to a line, and a
    /// piece set is at most 128 KiB of hex.
    ///
    /// ```text
    /// limits <key=value ...>             first, only when not the defaults (quota.rs)
    /// user <user> <verifier>
    /// group <group> <owner>
    /// member <group> <user>              in join order
    /// request <group> <user>             in request order
    /// file <group> <file> <size>
    /// hashes <group> <file> <hex>        in piece order, absent for an empty file
    /// share <group> <file> <user> <have>
    /// session <token> <user> <addr> <tracker|-> <secret> <key>
    /// notice <instance|-> <user|-> <text...>   oldest first
    /// dedup <instance> <tag> <written> [reply]
    /// clock <dedup clock>
    /// ```
    pub fn snapshot_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.limits != Limits::default() {
            out.push(format!("limits {}", self.limits.encode()));
        }
        for (u, h) in &self.users {
            out.push(format!("user {u} {h}"));
        }
        for (gname, g) in &self.groups {
            out.push(format!("group {gname} {}", g.owner));
            for m in &g.members {
                out.push(format!("member {gname} {m}"));
            }
            for r in &g.requests {
                out.push(format!("request {gname} {r}"));
            }
            for (fname, f) in &g.files {
                out.push(format!("file {gname} {fname} {}", f.size));
                for line in pieces::hash_lines(&f.hashes) {
                    out.push(format!("hashes {gname} {fname} {line}"));
                }
                for (u, set) in &f.sharers {
                    out.push(format!("share {gname} {fname} {u} {}", set.to_wire()));
                }
            }
        }
        for (t, s) in &self.sessions {
            let tracker = s.tracker.map_or_else(|| "-".to_string(), |n| n.to_string());
            out.push(format!(
                "session {t} {} {} {tracker} {} {}",
                s.user, s.addr, s.secret, s.key
            ));
        }
        for n in &self.notices {
            let instance = n
                .instance
                .map_or_else(|| "-".to_string(), |i| format!("{i:016x}"));
            let user = n.user.as_deref().unwrap_or("-");
            out.push(format!("notice {instance} {user} {}", n.text));
        }
        for (instance, e) in self.dedup.entries() {
            let mut line = format!("dedup {instance:016x} {} {}", e.tag, e.written);
            if !e.reply.is_empty() {
                line.push(' ');
                line.push_str(&e.reply);
            }
            out.push(line);
        }
        out.push(format!("clock {}", self.dedup.clock()));
        out
    }

    /// Rebuilds a state from `snapshot_lines`, validating every field, rebuilding the indexes
    /// and checking the invariants: the lines come from disk or the peer link.
    pub fn from_snapshot_lines<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<State, String> {
        let mut st = State::new();
        let mut deferred = Deferred::default();
        for (i, line) in lines.into_iter().enumerate() {
            st.load_line(line, &mut deferred)
                .map_err(|e| format!("snapshot line {}: {e}", i + 1))?;
        }
        let clock = deferred.clock.ok_or("the snapshot has no clock line")?;
        for (t, s) in &st.sessions {
            if st.user_sessions.insert(s.user.clone(), t.clone()).is_some() {
                return Err(format!("user {} has more than one session", s.user));
            }
        }
        st.dedup = DedupTable::from_entries(deferred.dedup, clock)?;
        st.usage = super::Usage::of(st.groups.values());
        st.check_invariants()?;
        Ok(st)
    }

    fn load_line(&mut self, line: &str, deferred: &mut Deferred) -> Result<(), String> {
        let words: Vec<&str> = line.split(' ').collect();
        let want = |n: usize| -> Result<(), String> {
            if words.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "'{}' record has {} words, not {n}",
                    words[0],
                    words.len()
                ))
            }
        };
        if deferred.clock.is_some() {
            return Err("nothing may follow the clock line".to_string());
        }
        match words[0] {
            "user" => {
                want(3)?;
                names::check(NameKind::User, words[1])?;
                if Verifier::parse(words[2]).is_none() {
                    return Err(format!(
                        "user {}: {}",
                        words[1],
                        op::verifier_problem(words[2])
                    ));
                }
                if self
                    .users
                    .insert(words[1].to_string(), words[2].to_string())
                    .is_some()
                {
                    return Err(format!("user {} appears twice", words[1]));
                }
            }
            "group" => {
                want(3)?;
                names::check(NameKind::Group, words[1])?;
                names::check(NameKind::User, words[2])?;
                let g = Group {
                    owner: words[2].to_string(),
                    members: Vec::new(),
                    requests: Vec::new(),
                    files: BTreeMap::new(),
                };
                if self.groups.insert(words[1].to_string(), g).is_some() {
                    return Err(format!("group {} appears twice", words[1]));
                }
            }
            "member" | "request" => {
                want(3)?;
                names::check(NameKind::User, words[2])?;
                let g = self.loaded_group(words[1])?;
                let list = if words[0] == "member" {
                    &mut g.members
                } else {
                    &mut g.requests
                };
                list.push(words[2].to_string());
            }
            "file" => {
                want(4)?;
                names::check(NameKind::File, words[2])?;
                let size = op::parse_u64(words[3], "file size")?;
                if pieces::piece_count(size) > MAX_PIECES {
                    return Err(format!("file {} is too large", words[2]));
                }
                let f = File {
                    size,
                    hashes: Vec::new(),
                    sharers: BTreeMap::new(),
                };
                let g = self.loaded_group(words[1])?;
                if g.files.insert(words[2].to_string(), f).is_some() {
                    return Err(format!("file {} appears twice", words[2]));
                }
            }
            "hashes" => {
                want(4)?;
                let f = self.loaded_file(words[1], words[2])?;
                let hex = words[3];
                let lower = hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
                let room = pieces::piece_count(f.size) as usize - f.hashes.len();
                // A hash line holds 1..=HASHES_PER_LINE hashes and never more than the file
                // still needs, which bounds memory by the declared size.
                let n = hex.len() / 40;
                if !lower || hex.is_empty() || n > HASHES_PER_LINE || n > room {
                    return Err(format!("bad hash line for file {}", words[2]));
                }
                let hashes = pieces::hashes_from_hex(hex)
                    .ok_or_else(|| format!("bad hash line for file {}", words[2]))?;
                f.hashes.extend(hashes);
            }
            "share" => {
                want(5)?;
                names::check(NameKind::User, words[3])?;
                let f = self.loaded_file(words[1], words[2])?;
                let n = pieces::piece_count(f.size) as usize;
                let set = PieceSet::from_wire(words[4], n)
                    .ok_or_else(|| format!("bad piece set for {} in {}", words[3], words[2]))?;
                if set.to_wire() != words[4] {
                    return Err(format!("piece set of {} is not canonical", words[3]));
                }
                if f.sharers.insert(words[3].to_string(), set).is_some() {
                    return Err(format!("{} shares {} twice", words[3], words[2]));
                }
            }
            "session" => {
                want(7)?;
                if !op::is_secret(words[5]) {
                    return Err("malformed session secret".to_string());
                }
                if !op::is_key(words[6]) {
                    return Err("malformed client key".to_string());
                }
                if !op::is_token(words[1]) {
                    return Err("malformed session token".to_string());
                }
                names::check(NameKind::User, words[2])?;
                op::check_addr(words[3])?;
                let tracker = match words[4] {
                    "-" => None,
                    "1" => Some(1),
                    "2" => Some(2),
                    other => return Err(format!("tracker '{other}' is not 1, 2 or -")),
                };
                let s = Session {
                    user: words[2].to_string(),
                    addr: words[3].to_string(),
                    tracker,
                    secret: words[5].to_string(),
                    key: words[6].to_string(),
                };
                if self.sessions.insert(words[1].to_string(), s).is_some() {
                    return Err("a session token appears twice".to_string());
                }
            }
            "notice" => {
                // The same words as the operation that made it.
                match op::Op::decode(line) {
                    Ok(op::Op::Notice {
                        instance,
                        user,
                        text,
                    }) if self.notices.len() < super::MAX_NOTICES => {
                        self.notices.push(super::Notice {
                            instance,
                            user,
                            text,
                        });
                    }
                    Ok(_) => return Err("too many notices".to_string()),
                    Err(e) => return Err(e),
                }
            }
            "dedup" => {
                if words.len() < 4 {
                    return Err("'dedup' record has the wrong number of words".to_string());
                }
                let Some(Origin { instance, tag }) =
                    Origin::decode(&format!("{}:{}", words[1], words[2]))?
                else {
                    return Err("a dedup record needs an instance".to_string());
                };
                let written = op::parse_u64(words[3], "dedup position")?;
                let reply = words.get(4..).unwrap_or_default().join(" ");
                if words.len() > 4 && words[4..].iter().any(|w| w.is_empty()) {
                    return Err("a dedup record ends in a space".to_string());
                }
                let e = DedupEntry {
                    tag,
                    reply,
                    written,
                };
                if deferred.dedup.insert(instance, e).is_some() {
                    return Err("an instance appears twice in the dedup table".to_string());
                }
            }
            "limits" => {
                self.limits = Limits::decode(&words[1..])?;
            }
            "clock" => {
                want(2)?;
                deferred.clock = Some(op::parse_u64(words[1], "clock")?);
            }
            other => {
                let other: String = other.chars().take(40).collect();
                return Err(format!("unknown record '{}'", other.escape_debug()));
            }
        }
        Ok(())
    }

    fn loaded_group(&mut self, group: &str) -> Result<&mut Group, String> {
        self.groups
            .get_mut(group)
            .ok_or_else(|| format!("group {group} is used before its group line"))
    }

    fn loaded_file(&mut self, group: &str, file: &str) -> Result<&mut File, String> {
        self.loaded_group(group)?
            .files
            .get_mut(file)
            .ok_or_else(|| format!("file {file} is used before its file line"))
    }

    /// SHA-1 hex over the snapshot lines joined with `\n`: equal on both trackers when their
    /// states are.
    pub fn digest(&self) -> String {
        let mut h = Sha1::new();
        for (i, line) in self.snapshot_lines().iter().enumerate() {
            if i > 0 {
                h.update(b"\n");
            }
            h.update(line.as_bytes());
        }
        pieces::to_hex(h.finalize().as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{create_group, have, join, ok, round_trip, tok, upload, world};
    use super::*;
    use crate::pieces::PIECE_SIZE;
    use crate::tracker::op::Op;
    use proptest::prelude::*;

    #[test]
    fn snapshot_round_trip_keeps_state_digest_and_answers() {
        let mut st = world();
        ok(&mut st, upload(1, "g", "f", 1));
        ok(&mut st, have(2, "g", "f", &[1]));
        ok(&mut st, join(3, "g"));
        ok(&mut st, create_group(3, "other"));
        ok(&mut st, Op::Detach { tracker: 2 });
        st.apply(
            Some(Origin {
                instance: 5,
                tag: 9,
            }),
            &create_group(1, "x"),
        )
        .unwrap();
        let back = round_trip(&st);
        assert_eq!(back, st);
        assert_eq!(back.digest(), st.digest());
        assert_eq!(back.list_groups(&tok(1)), st.list_groups(&tok(1)));
        assert_eq!(
            back.list_requests(&tok(1), "g"),
            st.list_requests(&tok(1), "g")
        );
        assert_eq!(
            back.peers(&tok(1), "g", "f", 99),
            st.peers(&tok(1), "g", "f", 99),
            "the same peers and tickets: the secrets survive the snapshot"
        );
        assert_eq!(back.sessions_at(1), st.sessions_at(1));
        assert_eq!(back.snapshot_lines(), st.snapshot_lines());
    }

    #[test]
    fn snapshot_splits_hashes_into_bounded_lines() {
        let mut st = world();
        let n = HASHES_PER_LINE + 3;
        let op = Op::Upload {
            token: tok(1),
            group: "g".into(),
            file: "big".into(),
            size: n as u64 * PIECE_SIZE,
            hashes: (0..n).map(|i| [(i % 251) as u8; 20]).collect(),
        };
        ok(&mut st, op);
        let lines = st.snapshot_lines();
        assert_eq!(lines.iter().filter(|l| l.starts_with("hashes ")).count(), 2);
        assert_eq!(round_trip(&st), st);
    }

    #[test]
    fn digest_changes_when_the_state_changes() {
        let mut st = world();
        let d0 = st.digest();
        assert_eq!(d0.len(), 40);
        ok(&mut st, upload(1, "g", "f", 1));
        let d1 = st.digest();
        assert_ne!(d0, d1);
        ok(&mut st, have(2, "g", "f", &[0]));
        assert_ne!(st.digest(), d1);
        assert_eq!(world().digest(), d0, "deterministic");
    }

    #[test]
    fn broken_snapshots_are_refused() {
        let st = world();
        let lines = st.snapshot_lines();
        let good: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert!(State::from_snapshot_lines(good.clone()).is_ok());
        let without = |prefix: &str| -> Vec<&str> {
            good.iter()
                .copied()
                .filter(|l| !l.starts_with(prefix))
                .collect()
        };
        const SESSION_OF_ALICE_AGAIN: &str = "session 00000000000000000000000000000009 alice \
             127.0.0.1:1 1 0000000000000000000000000000000000000000000000000000000000000009 \
             abababababababababababababababababababababababababababababababab";
        let with = |extra: &'static str| -> Vec<&str> {
            let mut v: Vec<&str> = good[..good.len() - 1].to_vec();
            v.push(extra);
            v.push(good[good.len() - 1]);
            v
        };
        let cases: Vec<Vec<&str>> = vec![
            vec![],
            without("clock"),
            without("user bob"),
            without("member g alice"),
            with("member g alice"),
            with("request g bob"),
            with("request g nobody"),
            with("file g f 1"),
            with("user alice x"),
            with("bogus"),
            with(""),
            with("session 00000000000000000000000000000009 alice 127.0.0.1:1 1"),
            with(
                "session 00000000000000000000000000000009 zed 127.0.0.1:1 1 \
                 0000000000000000000000000000000000000000000000000000000000000009 \
                 abababababababababababababababababababababababababababababababab",
            ),
            with("user zed pbkdf2-sha256$9000$00112233445566778899aabbccddeeff$00"),
            with(SESSION_OF_ALICE_AGAIN),
            with("dedup 0000000000000001 1 99"),
            {
                let mut v = good.clone();
                v.push("user zed x");
                v
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(State::from_snapshot_lines(c.clone()).is_err(), "case {i}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn snapshot_loading_never_panics(lines in prop::collection::vec("\\PC{0,60}", 0..8)) {
            let _ = State::from_snapshot_lines(lines.iter().map(String::as_str));
        }

        #[test]
        fn snapshot_loading_never_panics_on_near_misses(
            picks in prop::collection::vec((0usize..40, 0usize..6, "[a-z0-9:.$ -]{0,6}"), 1..6),
        ) {
            let mut st = world();
            st.apply(None, &upload(1, "g", "f", 1)).unwrap();
            st.apply(None, &have(2, "g", "f", &[1])).unwrap();
            st.apply(Some(Origin { instance: 3, tag: 4 }), &join(3, "g")).unwrap();
            let mut lines = st.snapshot_lines();
            for (li, wi, text) in picks {
                let li = li % lines.len();
                let mut words: Vec<String> =
                    lines[li].split(' ').map(String::from).collect();
                let wi = wi % words.len();
                words[wi] = text;
                lines[li] = words.join(" ");
            }
            let _ = State::from_snapshot_lines(lines.iter().map(String::as_str));
        }
    }
}
