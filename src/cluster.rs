//! The tracker_info file: one tracker a line, tracker 1 first; blank lines and `#` comments
//! ignored. Both programs read it. A line is `IP:PORT`, optionally followed by the tracker's
//! key fingerprint (`IP:PORT SHA256:<64 hex digits>`), which clients then require the tracker to
//! prove; without one they trust on first use (`client::known_trackers`).

use crate::net::identity::Fingerprint;
use std::net::SocketAddr;
use std::path::Path;

/// One line of the file.
#[derive(Clone, Debug)]
pub struct TrackerEntry {
    pub addr: SocketAddr,
    /// The key this tracker must prove, if the line pins one.
    pub pin: Option<Fingerprint>,
    /// 1-based line number, for messages that send a person to edit it.
    pub line: usize,
}

/// Parses the text of a tracker_info file; `origin` names the file in errors.
pub fn parse_tracker_entries(text: &str, origin: &str) -> Result<Vec<TrackerEntry>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |what: String| format!("{origin}, line {}: {what}", i + 1);
        let mut words = line.split_whitespace();
        let addr_text = words.next().unwrap_or_default();
        let addr: SocketAddr = addr_text.parse().map_err(|_| {
            at(format!(
                "'{}' is not an IP:PORT address",
                addr_text.escape_debug()
            ))
        })?;
        let pin = words
            .next()
            .map(Fingerprint::parse)
            .transpose()
            .map_err(at)?;
        if let Some(extra) = words.next() {
            return Err(at(format!(
                "unexpected '{}' after the address and fingerprint",
                extra.escape_debug()
            )));
        }
        out.push(TrackerEntry {
            addr,
            pin,
            line: i + 1,
        });
    }
    match out.len() {
        0 => Err(format!("{origin}: no tracker address in the file")),
        1 | 2 => Ok(out),
        n => Err(format!(
            "{origin}: {n} tracker addresses; one or two are supported"
        )),
    }
}

/// The addresses alone, for callers that do not check keys.
pub fn parse_tracker_info(text: &str, origin: &str) -> Result<Vec<SocketAddr>, String> {
    Ok(parse_tracker_entries(text, origin)?
        .into_iter()
        .map(|e| e.addr)
        .collect())
}

/// The file's text with `addr`'s line pinned to `key` (replacing any earlier pin), every other
/// line kept byte for byte: how `make run-tracker1/2` record a tracker's fingerprint.
pub fn set_pin(text: &str, addr: SocketAddr, key: &Fingerprint) -> Result<String, String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 80);
    for raw in text.split_inclusive('\n') {
        let body = raw.trim_end_matches(['\n', '\r']);
        let first = body.split_whitespace().next().unwrap_or_default();
        if !body.trim_start().starts_with('#') && first.parse::<SocketAddr>().ok() == Some(addr) {
            found = true;
            out.push_str(&format!("{addr} {key}"));
            out.push_str(&raw[body.len()..]);
        } else {
            out.push_str(raw);
        }
    }
    if found {
        Ok(out)
    } else {
        Err(format!("no line for {addr} to pin"))
    }
}

pub fn read_tracker_entries(path: &Path) -> Result<Vec<TrackerEntry>, String> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {origin}: {e}"))?;
    parse_tracker_entries(&text, &origin)
}

pub fn read_tracker_info(path: &Path) -> Result<Vec<SocketAddr>, String> {
    Ok(read_tracker_entries(path)?
        .into_iter()
        .map(|e| e.addr)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_two_addresses_skipping_comments_and_blanks() {
        let a = parse_tracker_info("# x\n\n127.0.0.1:1\n  127.0.0.1:2  \n", "f").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].port(), 2);
    }

    #[test]
    fn names_file_and_line_of_a_bad_address() {
        let e = parse_tracker_info("127.0.0.1:1\nnope\n", "info.txt").unwrap_err();
        assert!(e.contains("info.txt, line 2") && e.contains("nope"), "{e}");
        assert!(parse_tracker_info("", "f").is_err());
        assert!(parse_tracker_info("1.1.1.1:1\n1.1.1.1:2\n1.1.1.1:3", "f").is_err());
    }

    const FP: &str = "SHA256:66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925";

    #[test]
    fn a_line_may_pin_a_fingerprint_and_plain_lines_still_work() {
        let text = format!("127.0.0.1:1 {FP}\n# comment\n127.0.0.1:2\n");
        let e = parse_tracker_entries(&text, "f").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].pin.unwrap().to_string(), FP);
        assert_eq!((e[0].line, e[1].line), (1, 3));
        assert!(e[1].pin.is_none());
        assert_eq!(parse_tracker_info(&text, "f").unwrap()[1].port(), 2);
        // Any amount of blank space between address and fingerprint.
        let e = parse_tracker_entries(&format!("  127.0.0.1:1 \t {FP}  "), "f").unwrap();
        assert!(e[0].pin.is_some());
    }

    #[test]
    fn set_pin_rewrites_only_the_trackers_line() {
        let fp = Fingerprint::parse(FP).unwrap();
        let text = "# trackers\n127.0.0.1:1\n127.0.0.1:2 SHA256:00\r\n";
        let addr2: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let out = set_pin(text, addr2, &fp).unwrap();
        assert_eq!(
            out,
            format!("# trackers\n127.0.0.1:1\n127.0.0.1:2 {FP}\r\n")
        );
        let e = parse_tracker_entries(&out, "f").unwrap();
        assert!(e[0].pin.is_none() && e[1].pin.unwrap().ct_eq(&fp));
        // Pinning again replaces the pin; a line without a newline keeps none.
        let addr1: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            set_pin("127.0.0.1:1", addr1, &fp).unwrap(),
            format!("127.0.0.1:1 {FP}")
        );
        assert!(set_pin(text, "127.0.0.1:3".parse().unwrap(), &fp).is_err());
    }

    #[test]
    fn a_malformed_fingerprint_names_the_file_and_line() {
        let text = format!("127.0.0.1:1\n127.0.0.1:2 {}\n", &FP[..FP.len() - 2]);
        let e = parse_tracker_entries(&text, "tracker_info.txt").unwrap_err();
        assert!(
            e.contains("tracker_info.txt, line 2") && e.contains("not a key fingerprint"),
            "{e}"
        );
        let e = parse_tracker_entries("127.0.0.1:1 md5:abc", "t").unwrap_err();
        assert!(e.contains("t, line 1") && e.contains("md5:abc"), "{e}");
        let e = parse_tracker_entries(&format!("127.0.0.1:1 {FP} extra"), "t").unwrap_err();
        assert!(e.contains("t, line 1") && e.contains("'extra'"), "{e}");
    }
}
