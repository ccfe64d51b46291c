//! Salted, iterated password hashes (PBKDF2-HMAC-SHA256), stored as
//! `pbkdf2-sha256$<iterations>$<salt-hex>$<hash-hex>`.
//!
//! The tracker that receives `create_user` hashes the password before proposing the operation,
//! so no plaintext is replicated or journaled; `login` verifies against the stored string.

use crate::pieces::{from_hex, to_hex};
use crate::runtime;
use std::sync::atomic::{AtomicU64, Ordering};

/// Iterations for new hashes. The tracker verifies passwords on its single-threaded loop, so one
/// verify must stay near 1 ms: measured in a release build on the development machine
/// (2026-11-24), 9,000 iterations of HMAC-SHA256 take 0.99–1.01 ms per verify. That is far below
/// what a password store on its own would choose; it is the price of never blocking the loop.
pub const ITERATIONS: u32 = 9_000;

/// Highest iteration count accepted from a stored string: a hostile or corrupt journal could
/// otherwise name billions of iterations and stall the loop on the next login.
pub const MAX_ITERATIONS: u32 = ITERATIONS * 10;

const SCHEME: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// The parts of a well-formed stored string.
struct Stored {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// Hex in the one spelling we write (lowercase), so that a stored string has a canonical form.
fn lower_hex(s: &str, bytes: usize) -> Option<Vec<u8>> {
    if s.len() != bytes * 2 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    from_hex(s)
}

fn parse(stored: &str) -> Option<Stored> {
    let mut parts = stored.split('$');
    if parts.next()? != SCHEME {
        return None;
    }
    let iter_text = parts.next()?;
    // Digits only, no sign or leading zero: one spelling per value.
    if iter_text.is_empty()
        || !iter_text.bytes().all(|c| c.is_ascii_digit())
        || (iter_text.len() > 1 && iter_text.starts_with('0'))
    {
        return None;
    }
    let iterations: u32 = iter_text.parse().ok()?;
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return None;
    }
    let salt = lower_hex(parts.next()?, SALT_LEN)?;
    let hash = lower_hex(parts.next()?, HASH_LEN)?;
    if parts.next().is_some() {
        return None;
    }
    Some(Stored {
        iterations,
        salt,
        hash,
    })
}

fn derive(password: &str, salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, HASH_LEN>(password.as_bytes(), salt, iterations)
}

fn fresh_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    if runtime::random_bytes(&mut salt).is_err() {
        // Without the kernel's source, salts only need to differ between users; random_u64
        // has its own time-and-pid fallback, and the counter separates calls within one
        // process.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        salt[..8].copy_from_slice(&runtime::seed_u64().to_le_bytes());
        salt[8..].copy_from_slice(&n.to_le_bytes());
    }
    salt
}

/// Hashes a password with a fresh random salt and `ITERATIONS`.
pub fn hash_password(password: &str) -> String {
    let salt = fresh_salt();
    let hash = derive(password, &salt, ITERATIONS);
    format!("{SCHEME}${ITERATIONS}${}${}", to_hex(&salt), to_hex(&hash))
}

/// True if `password` matches `stored`; false for a malformed stored string.
pub fn verify_password(stored: &str, password: &str) -> bool {
    let Some(s) = parse(stored) else {
        return false;
    };
    let got = derive(password, &s.salt, s.iterations);
    // Constant time: the difference is accumulated over every byte, never short-circuited.
    let diff = got
        .iter()
        .zip(s.hash.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0 && s.hash.len() == HASH_LEN
}

/// True if `stored` is a hash string this module wrote (or could have): the check applied to
/// `create_user` operations arriving from the peer link or the journal.
pub fn is_well_formed(stored: &str) -> bool {
    parse(stored).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify_accepts_only_the_right_password() {
        let h = hash_password("hunter2");
        assert!(is_well_formed(&h), "{h}");
        assert!(verify_password(&h, "hunter2"));
        assert!(!verify_password(&h, "hunter3"));
        assert!(!verify_password(&h, ""));
    }

    #[test]
    fn salts_differ_between_hashes() {
        assert_ne!(hash_password("same"), hash_password("same"));
    }

    #[test]
    fn stored_format_is_as_documented() {
        let h = hash_password("x");
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "pbkdf2-sha256");
        assert_eq!(parts[1], ITERATIONS.to_string());
        assert_eq!(parts[2].len(), 32);
        assert_eq!(parts[3].len(), 64);
    }

    #[test]
    fn a_known_vector_verifies() {
        // Independent check of the derivation: the widely published PBKDF2-HMAC-SHA256 test
        // vector for ("password", "salt", 1 iteration, 32 bytes).
        let salt_hex = to_hex(b"saltsaltsaltsalt");
        let hash = derive("password", b"saltsaltsaltsalt", 1);
        let stored = format!("pbkdf2-sha256$1${salt_hex}${}", to_hex(&hash));
        assert!(verify_password(&stored, "password"));
        let rfc = derive("password", b"salt", 1);
        assert_eq!(
            to_hex(&rfc),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
    }

    #[test]
    fn malformed_stored_strings_are_refused() {
        let good = hash_password("pw");
        let parts: Vec<&str> = good.split('$').collect();
        let with_iters = |it: &str| format!("{}${it}${}${}", parts[0], parts[2], parts[3]);
        let too_many = (MAX_ITERATIONS + 1).to_string();
        let bad = [
            String::new(),
            "pbkdf2-sha256".to_string(),
            with_iters("0"),
            with_iters(&too_many),
            with_iters("+10"),
            with_iters("010"),
            with_iters("ten"),
            with_iters("99999999999999999999"),
            format!("sha1${}${}${}", parts[1], parts[2], parts[3]),
            format!("{}${}${}${}", parts[0], parts[1], &parts[2][2..], parts[3]),
            format!(
                "{}${}${}${}",
                parts[0],
                parts[1],
                parts[2].to_uppercase(),
                parts[3]
            ),
            format!("{}${}${}${}x", parts[0], parts[1], parts[2], parts[3]),
            format!("{good}$extra"),
        ];
        for b in &bad {
            assert!(!is_well_formed(b), "{b:?} accepted");
            assert!(!verify_password(b, "pw"), "{b:?} verified");
        }
        assert!(is_well_formed(&with_iters(&MAX_ITERATIONS.to_string())));
    }
}
