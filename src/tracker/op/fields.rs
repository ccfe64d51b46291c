//! The words of an operation, each checked as it is decoded: canonical numbers, tokens,
//! verifiers, secrets, keys, names, addresses, piece ranges and hash lines, notice text.

use super::*;

/// Parses a decimal `u64` in its one canonical spelling (no sign, no leading zeros), so that
/// decoding and re-encoding give back the same text.
pub fn parse_u64(s: &str, what: &str) -> Result<u64, String> {
    let canonical = !s.is_empty()
        && s.bytes().all(|c| c.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    if !canonical {
        return Err(format!("{what} '{}' is not a decimal number", clip(s)));
    }
    s.parse()
        .map_err(|_| format!("{what} '{}' is too large", clip(s)))
}

/// Shortens hostile input before quoting it in an error message.
pub(super) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.escape_debug().to_string()
}

pub fn is_token(s: &str) -> bool {
    s.len() == TOKEN_LEN && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

pub(super) fn token(s: &str) -> Result<Token, String> {
    if is_token(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "session token '{}' is not {TOKEN_LEN} lowercase hex digits",
            clip(s)
        ))
    }
}

/// Why a stored password verifier is refused; a hash written before protocol version 2 says
/// so, since such a data directory cannot be used by this version.
pub fn verifier_problem(s: &str) -> String {
    if s.starts_with("pbkdf2-sha256$") {
        "a pbkdf2-sha256 password hash from before SCRAM logins (version 2): this tracker needs \
         a fresh data directory (move the old one away; users register again)"
            .to_string()
    } else {
        "the password verifier is malformed".to_string()
    }
}

/// A session secret as stored: 64 lowercase hex digits.
pub fn is_secret(s: &str) -> bool {
    scram::lower_hex::<32>(s).is_some()
}

pub(super) fn secret(s: &str) -> Result<String, String> {
    if is_secret(s) {
        Ok(s.to_string())
    } else {
        Err("a session secret is 64 lowercase hex digits".to_string())
    }
}

/// A client's static public key: 64 lowercase hex digits.
pub fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

pub(super) fn key(s: &str) -> Result<String, String> {
    if is_key(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "client key '{}' is not 64 lowercase hex digits",
            clip(s)
        ))
    }
}

pub(super) fn name(kind: NameKind, s: &str) -> Result<String, String> {
    names::check(kind, s)?;
    Ok(s.to_string())
}

pub fn check_addr(s: &str) -> Result<(), String> {
    s.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| format!("address '{}' is not IP:PORT", clip(s)))
}

pub(super) fn addr(s: &str) -> Result<String, String> {
    check_addr(s)?;
    Ok(s.to_string())
}

pub fn check_tracker(n: u8) -> Result<(), String> {
    if n == 1 || n == 2 {
        Ok(())
    } else {
        Err(format!("tracker number {n} is not 1 or 2"))
    }
}

pub(super) fn tracker(s: &str) -> Result<u8, String> {
    match s {
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err(format!("tracker number '{}' is not 1 or 2", clip(s))),
    }
}

/// Parses a range list without knowing the file's piece count: the ranges must ascend without
/// overlapping and stay below `MAX_PIECES`, which bounds the work; `State::apply` checks them
/// against the file.
pub fn parse_piece_ranges(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("piece ranges '{}' are malformed", clip(s));
    let limit = MAX_PIECES as usize;
    let mut out = Vec::new();
    let mut next = 0usize;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                parse_u64(a, "piece").map_err(|_| bad())?,
                parse_u64(b, "piece").map_err(|_| bad())?,
            ),
            None => {
                let a = parse_u64(part, "piece").map_err(|_| bad())?;
                (a, a)
            }
        };
        let (a, b) = (
            usize::try_from(a).map_err(|_| bad())?,
            usize::try_from(b).map_err(|_| bad())?,
        );
        if a < next || a > b {
            return Err(format!(
                "piece ranges '{}' must ascend without overlapping",
                clip(s)
            ));
        }
        if b >= limit {
            return Err(format!(
                "piece index {b} is beyond the largest file's {limit} pieces"
            ));
        }
        out.extend(a..=b);
        next = b + 1;
    }
    Ok(out)
}

/// Piece hashes of an `upload`: `-` for an empty file, otherwise exactly `piece_count(size)`
/// hashes as lowercase hex.
pub(super) fn upload_hashes(s: &str, size: u64) -> Result<Vec<Hash>, String> {
    let n = pieces::piece_count(size);
    if n > MAX_PIECES {
        return Err(format!(
            "a file of {size} bytes has {n} pieces; at most {MAX_PIECES} are allowed"
        ));
    }
    if n == 0 {
        return if s == "-" {
            Ok(Vec::new())
        } else {
            Err("an empty file has no piece hashes; expected '-'".to_string())
        };
    }
    // Length first, so a wrong count costs nothing to refuse.
    if s.len() as u64 != n * 40 {
        return Err(format!(
            "a file of {size} bytes needs {n} piece hashes ({} hex digits); got {} digits",
            n * 40,
            s.len()
        ));
    }
    if !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("piece hashes are not lowercase hex".to_string());
    }
    pieces::hashes_from_hex(s).ok_or_else(|| "piece hashes are not lowercase hex".to_string())
}

pub(super) fn solo_word(solo: bool) -> &'static str {
    if solo {
        "solo"
    } else {
        "paired"
    }
}

pub(super) fn encode_instance(instance: &Option<u64>) -> String {
    instance.map_or_else(|| "-".to_string(), |i| format!("{i:016x}"))
}

pub(super) fn decode_instance(s: &str) -> Result<Option<u64>, String> {
    if s == "-" {
        return Ok(None);
    }
    Origin::decode(&format!("{s}:0")).map(|o| o.map(|o| o.instance))
}

pub(super) fn optional_user(s: &str) -> Result<Option<String>, String> {
    if s == "-" {
        Ok(None)
    } else {
        name(NameKind::User, s).map(Some)
    }
}

/// A notice's text: printable ASCII words, bounded, so it fits one reply line as it is.
pub fn check_notice_text(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > MAX_NOTICE_TEXT {
        return Err(format!(
            "a notice text is 1 to {MAX_NOTICE_TEXT} bytes, not {}",
            text.len()
        ));
    }
    if !text.bytes().all(|c| c.is_ascii_graphic() || c == b' ') || text.contains("  ") {
        return Err("a notice text is printable words separated by single spaces".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn have_ranges_decode_without_the_piece_count() {
        assert_eq!(parse_piece_ranges("0-2,5"), Ok(vec![0, 1, 2, 5]));
        let last = MAX_PIECES as usize - 1;
        assert_eq!(parse_piece_ranges(&last.to_string()), Ok(vec![last]));
    }
}
