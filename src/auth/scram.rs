//! Password login in the shape of SCRAM-SHA-256 (RFC 5802, RFC 7677): the client does the slow
//! key derivation and proves it knows the password; the tracker stores only verifiers, checks
//! the proof with a few HMACs, and proves in return that it holds the verifier.
//!
//! ```text
//! SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, iterations)
//! ClientKey      = HMAC(SaltedPassword, "Client Key")      never leaves the client
//! StoredKey      = SHA-256(ClientKey)                      stored by the tracker
//! ServerKey      = HMAC(SaltedPassword, "Server Key")      stored by the tracker
//! ClientProof    = ClientKey XOR HMAC(StoredKey, AuthMessage)
//! ServerProof    = HMAC(ServerKey, AuthMessage)
//! ```
//!
//! Neither StoredKey nor ServerKey logs in by itself: a stolen verifier lets an attacker pose
//! as the tracker to this user, not as the user to the tracker. What `AuthMessage` holds (both
//! nonces, the salt and count, and the secure channel's handshake hash so a proof cannot be
//! replayed on another connection) is the protocol's choice; this module takes it as bytes.
//! Pure: randomness comes from the caller.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Salt length for new verifiers (RFC 7677 leaves it open; 16 bytes is PostgreSQL's choice).
pub const SALT_LEN: usize = 16;
/// Output size of SHA-256, and so of every key here.
pub const KEY_LEN: usize = 32;
/// Iterations for new users unless the tracker is told otherwise (`--kdf-iterations`):
/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256. The client pays it once per login.
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Most iterations a client will run for a tracker: a hostile tracker could otherwise name a
/// count that keeps the client busy for hours. 10,000,000 is about 16x the default.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Fewest iterations anything accepts (RFC 7677 requires at least 4096); tests lower the
/// tracker's count to this to keep logins fast.
pub const MIN_ITERATIONS: u32 = 4_096;

const SCHEME: &str = "scram-sha256";

/// What the tracker stores for a user: nothing here logs in by itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: [u8; SALT_LEN],
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs and panic messages.
        write!(f, "Verifier({} iterations)", self.iterations)
    }
}

/// The client's side of one password: derived once per login (the slow step).
pub struct ClientKeys {
    client_key: [u8; KEY_LEN],
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; KEY_LEN] {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

impl ClientKeys {
    /// PBKDF2 over the password: `iterations` HMACs, about 0.5 s at the default count.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ClientKeys {
        let salted =
            pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LEN>(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ClientKeys {
            client_key,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// The verifier `create_user` sends: the password itself never leaves the client.
    pub fn verifier(&self, salt: [u8; SALT_LEN], iterations: u32) -> Verifier {
        Verifier {
            iterations,
            salt,
            stored_key: self.stored_key,
            server_key: self.server_key,
        }
    }

    /// The proof that answers the tracker's challenge.
    pub fn proof(&self, auth_message: &[u8]) -> [u8; KEY_LEN] {
        xor(&self.client_key, &hmac(&self.stored_key, auth_message))
    }

    /// True if the tracker's answer shows it holds this user's ServerKey.
    pub fn tracker_proof_is_valid(&self, auth_message: &[u8], proof: &[u8]) -> bool {
        hmac(&self.server_key, auth_message).ct_eq(proof).into()
    }
}

impl Verifier {
    /// Checks a client's proof; on success returns the tracker's proof to send back.
    /// Constant time in the proof's content: a wrong proof teaches nothing byte by byte.
    pub fn check(&self, auth_message: &[u8], proof: &[u8]) -> Option<[u8; KEY_LEN]> {
        let proof: &[u8; KEY_LEN] = proof.try_into().ok()?;
        let client_key = xor(proof, &hmac(&self.stored_key, auth_message));
        let stored: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        if bool::from(stored.ct_eq(&self.stored_key)) {
            Some(hmac(&self.server_key, auth_message))
        } else {
            None
        }
    }

    /// A stand-in for a user that does not exist, so that the challenge looks the same for
    /// every name: the salt is stable per name (derived from a tracker secret) and no proof
    /// matches it (its StoredKey is the hash of nothing any client could send, by construction
    /// from the secret).
    pub fn decoy(secret: &[u8], user: &str, iterations: u32) -> Verifier {
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(
            &hmac(secret, &[b"decoy-salt:", user.as_bytes()].concat())[..SALT_LEN],
        );
        Verifier {
            iterations,
            salt,
            stored_key: hmac(secret, &[b"decoy-stored:", user.as_bytes()].concat()),
            server_key: hmac(secret, &[b"decoy-server:", user.as_bytes()].concat()),
        }
    }

    /// `scram-sha256$<iterations>$<salt-hex>$<stored-key-hex>$<server-key-hex>`: one word, the
    /// form journaled, replicated and snapshotted.
    pub fn encode(&self) -> String {
        format!(
            "{SCHEME}${}${}${}${}",
            self.iterations,
            crate::pieces::to_hex(&self.salt),
            crate::pieces::to_hex(&self.stored_key),
            crate::pieces::to_hex(&self.server_key)
        )
    }

    /// Parses the stored form; `None` unless it is exactly what `encode` writes, with an
    /// iteration count in range.
    pub fn parse(s: &str) -> Option<Verifier> {
        let mut parts = s.split('$');
        if parts.next()? != SCHEME {
            return None;
        }
        let iterations = parse_count(parts.next()?)?;
        let salt = lower_hex(parts.next()?)?;
        let stored_key = lower_hex(parts.next()?)?;
        let server_key = lower_hex(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(Verifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}

/// An iteration count as written on the wire or on disk: digits only, no leading zero, within
/// `MIN_ITERATIONS..=MAX_ITERATIONS`.
pub fn parse_count(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    let n: u32 = s.parse().ok()?;
    (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&n).then_some(n)
}

/// Exactly `N` bytes in lowercase hex (one spelling per value, so stored forms are canonical).
pub fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    crate::pieces::from_hex(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        lower_hex(s).unwrap()
    }

    /// RFC 7677 section 3: user "user", password "pencil".
    const RFC_AUTH_MESSAGE: &[u8] = b"n=user,r=rOprNGfwEbeRWgbNEkqO,\
r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    #[test]
    fn the_rfc_7677_example_gives_its_proofs() {
        let salt: [u8; 16] = hex("5b6d99689d12358eeca04b141236fa81");
        let keys = ClientKeys::derive("pencil", &salt, 4096);
        // p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ= and v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=
        let client_proof: [u8; 32] =
            hex("747cdb65aa56224e2352137e52d7bdcad6a0f738df30782caa69a2cfb0277554");
        let server_proof: [u8; 32] =
            hex("eabae24d1062db75a9451ff0b6ea7e98c8546549ff741e672d3251b2397de46e");
        assert_eq!(keys.proof(RFC_AUTH_MESSAGE), client_proof);
        let verifier = keys.verifier(salt, 4096);
        assert_eq!(
            verifier.check(RFC_AUTH_MESSAGE, &client_proof),
            Some(server_proof)
        );
        assert!(keys.tracker_proof_is_valid(RFC_AUTH_MESSAGE, &server_proof));
    }

    #[test]
    fn a_wrong_password_or_another_message_fails() {
        let salt = [7u8; SALT_LEN];
        let good = ClientKeys::derive("right", &salt, MIN_ITERATIONS);
        let bad = ClientKeys::derive("wrong", &salt, MIN_ITERATIONS);
        let v = good.verifier(salt, MIN_ITERATIONS);
        assert!(v.check(b"m", &good.proof(b"m")).is_some());
        assert!(v.check(b"m", &bad.proof(b"m")).is_none());
        // A proof made for one conversation is worthless in another (replay).
        assert!(v.check(b"other", &good.proof(b"m")).is_none());
        // Wrong length.
        assert!(v.check(b"m", &good.proof(b"m")[..31]).is_none());
        // The verifier itself, sent as a proof, does not log in.
        assert!(v.check(b"m", &v.stored_key).is_none());
        assert!(v.check(b"m", &v.server_key).is_none());
        // A tracker without the ServerKey cannot prove itself.
        assert!(!good.tracker_proof_is_valid(b"m", &[0u8; 32]));
    }

    #[test]
    fn decoys_are_stable_per_name_and_admit_nobody() {
        let a = Verifier::decoy(b"secret", "ghost", 5000);
        assert_eq!(a, Verifier::decoy(b"secret", "ghost", 5000));
        assert_ne!(a.salt, Verifier::decoy(b"secret", "other", 5000).salt);
        assert_ne!(a.salt, Verifier::decoy(b"another", "ghost", 5000).salt);
        let keys = ClientKeys::derive("guess", &a.salt, MIN_ITERATIONS);
        assert!(a.check(b"m", &keys.proof(b"m")).is_none());
    }

    #[test]
    fn stored_form_round_trips_and_rejects_variants() {
        let v = ClientKeys::derive("pw", &[1u8; 16], MIN_ITERATIONS).verifier([1u8; 16], 5000);
        let s = v.encode();
        assert_eq!(Verifier::parse(&s), Some(v.clone()));
        assert!(!format!("{v:?}").contains(&crate::pieces::to_hex(&v.stored_key)));
        for bad in [
            s.replace("scram-sha256", "pbkdf2-sha256"),
            s.replace("$5000$", "$05000$"),
            s.replace("$5000$", "$100$"),
            s.replace("$5000$", "$99999999999$"),
            s.to_uppercase(),
            format!("{s}$00"),
            s[..s.len() - 2].to_string(),
            String::new(),
        ] {
            assert_eq!(Verifier::parse(&bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = Verifier::parse(&s);
        }
    }
}
