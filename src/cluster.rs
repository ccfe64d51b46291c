//! The tracker_info file: one `IP:PORT` a line, tracker 1 first; blank lines and `#` comments
//! ignored. Both programs read it.

use std::net::SocketAddr;
use std::path::Path;

/// Parses the text of a tracker_info file; `origin` names the file in errors.
pub fn parse_tracker_info(text: &str, origin: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let addr: SocketAddr = line.parse().map_err(|_| {
            format!(
                "{origin}, line {}: '{}' is not an IP:PORT address",
                i + 1,
                line.escape_debug()
            )
        })?;
        out.push(addr);
    }
    match out.len() {
        0 => Err(format!("{origin}: no tracker address in the file")),
        1 | 2 => Ok(out),
        n => Err(format!(
            "{origin}: {n} tracker addresses; one or two are supported"
        )),
    }
}

pub fn read_tracker_info(path: &Path) -> Result<Vec<SocketAddr>, String> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {origin}: {e}"))?;
    parse_tracker_info(&text, &origin)
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
}
