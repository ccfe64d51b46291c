//! The bytes the login and attach proofs are made over (docs/PROTOCOL.md, "Logging in"), in
//! one place for the client that proves and the tracker that checks. Pure.
//!
//! Both include the secure channel's handshake hash (`cb`), so a proof seen on one connection
//! is worthless on any other; a link without a channel binding yet uses 32 zero bytes.

use crate::auth::scram::{self, KEY_LEN};
use crate::pieces::to_hex;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of a session secret: 256 bits, sent once in the login reply as 64 hex digits.
pub const SECRET_LEN: usize = 32;

/// The channel binding as the proofs use it: the handshake hash, or zeros without one.
pub fn binding_hex(cb: Option<[u8; 32]>) -> String {
    to_hex(&cb.unwrap_or([0u8; 32]))
}

/// `groupshare-login-v2\0<user>\0<cnonce>\0<snonce>\0<salt-hex>\0<iterations>\0<cb-hex>`.
pub fn auth_message(
    user: &str,
    cnonce: &str,
    snonce: &str,
    salt: &[u8; scram::SALT_LEN],
    iterations: u32,
    cb: Option<[u8; 32]>,
) -> Vec<u8> {
    [
        "groupshare-login-v2",
        user,
        cnonce,
        snonce,
        &to_hex(salt),
        &iterations.to_string(),
        &binding_hex(cb),
    ]
    .join("\0")
    .into_bytes()
}

/// `HMAC-SHA256(secret, "groupshare-attach-v2\0<token>\0<cb-hex>")`: what `attach` proves
/// with. The token names the session; only its secret's holder can make this.
pub fn attach_proof(secret: &[u8; SECRET_LEN], token: &str, cb: Option<[u8; 32]>) -> [u8; KEY_LEN] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("groupshare-attach-v2\0{token}\0{}", binding_hex(cb)).as_bytes());
    mac.finalize().into_bytes().into()
}

/// Constant-time check of an `attach` proof (hex as sent) against the session's secret.
pub fn attach_proof_is_valid(
    secret: &[u8; SECRET_LEN],
    token: &str,
    cb: Option<[u8; 32]>,
    proof_hex: &str,
) -> bool {
    match scram::lower_hex::<KEY_LEN>(proof_hex) {
        Some(p) => attach_proof(secret, token, cb).ct_eq(&p).into(),
        None => false,
    }
}

/// `n` bytes from the kernel's CSPRNG as lowercase hex; an error, never a weaker fallback.
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| format!("cannot get random bytes from the kernel: {e}"))?;
    Ok(to_hex(&b))
}

/// Fills an array from the kernel's CSPRNG (salts, secrets).
pub fn random_array<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("cannot get random bytes from the kernel: {e}"))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{ClientKeys, Verifier};

    #[test]
    fn the_auth_message_is_the_documented_bytes() {
        let m = auth_message("al", "c1", "s1", &[0xab; 16], 4096, None);
        let want = format!(
            "groupshare-login-v2\0al\0c1\0s1\0{}\04096\0{}",
            "ab".repeat(16),
            "00".repeat(32)
        );
        assert_eq!(m, want.into_bytes());
    }

    #[test]
    fn a_login_proof_holds_only_for_its_channel_and_nonces() {
        let salt = [7u8; 16];
        let keys = ClientKeys::derive("pw", &salt, 4096);
        let v: Verifier = keys.verifier(salt, 4096);
        let m = auth_message("al", "c", "s", &salt, 4096, Some([1; 32]));
        let proof = keys.proof(&m);
        let tracker_proof = v.check(&m, &proof).expect("right proof");
        assert!(keys.tracker_proof_is_valid(&m, &tracker_proof));
        for other in [
            auth_message("al", "c", "s", &salt, 4096, Some([2; 32])),
            auth_message("al", "c", "t", &salt, 4096, Some([1; 32])),
            auth_message("bo", "c", "s", &salt, 4096, Some([1; 32])),
        ] {
            assert!(v.check(&other, &proof).is_none());
        }
    }

    #[test]
    fn an_attach_proof_needs_the_secret_and_the_channel() {
        let secret = [9u8; SECRET_LEN];
        let token = "ab".repeat(16);
        let p = to_hex(&attach_proof(&secret, &token, Some([3; 32])));
        assert!(attach_proof_is_valid(&secret, &token, Some([3; 32]), &p));
        assert!(!attach_proof_is_valid(&secret, &token, Some([4; 32]), &p));
        assert!(!attach_proof_is_valid(
            &[8u8; SECRET_LEN],
            &token,
            Some([3; 32]),
            &p
        ));
        assert!(!attach_proof_is_valid(
            &secret,
            &"cd".repeat(16),
            Some([3; 32]),
            &p
        ));
        assert!(!attach_proof_is_valid(&secret, &token, Some([3; 32]), "zz"));
    }

    #[test]
    fn random_hex_has_the_asked_length_and_differs() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16).unwrap());
    }
}
