//! Long-term identities for the secure channels: an X25519 key pair (the Noise static key), the
//! file that keeps it, and its fingerprint — the short string a person copies into
//! tracker_info.txt or compares by eye.
//!
//! Fingerprint format: `SHA256:` followed by the 64 lowercase hex digits of SHA-256 over the
//! 32-byte public key. Hex rather than ssh's base64 so that one double-click selects the whole
//! token (base64's `/` and `+` break word selection) and so no padding rules can confuse a parse;
//! upper-case hex digits are accepted on input.
//!
//! Key file: the 64 hex digits of the private key and a newline, mode 0600, in a directory
//! created 0700. It is written to a temporary name created with `O_EXCL` and mode 0600 from the
//! start (never readable by others, not even for an instant), synced, then hard-linked into
//! place, so a crash never leaves a half-written key and two processes starting at once both
//! end up with the same key.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Length of an X25519 private or public key.
pub const KEY_LEN: usize = 32;

const FINGERPRINT_PREFIX: &str = "SHA256:";

/// A static key pair. The private half never leaves this process except into its key file.
#[derive(Clone)]
pub struct Identity {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl fmt::Debug for Identity {
    // Never print the private key, even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.fingerprint())
    }
}

impl Identity {
    /// A fresh key pair from the kernel's CSPRNG (the `getrandom` system call). A failure to
    /// get randomness is an error: there is no weaker fallback.
    pub fn generate() -> Result<Identity, String> {
        let mut private = [0u8; KEY_LEN];
        getrandom::fill(&mut private)
            .map_err(|e| format!("cannot get random bytes from the kernel for a key: {e}"))?;
        Ok(Identity::from_private(private))
    }

    /// The key pair whose private half is `private` (X25519 clamps it when used).
    pub fn from_private(private: [u8; KEY_LEN]) -> Identity {
        let public = super::secure::x25519_public(&private);
        Identity { private, public }
    }

    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    pub(crate) fn private(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.public)
    }

    /// Loads the key at `path`, or makes one there if no file exists (the directory too, 0700).
    /// A key file that others can read is refused, as ssh refuses an unprotected private key.
    pub fn load_or_create(path: &Path) -> Result<Identity, String> {
        match Identity::load(path) {
            Ok(id) => Ok(id),
            Err(LoadError::Missing) => Identity::create(path),
            Err(LoadError::Other(e)) => Err(e),
        }
    }

    fn load(path: &Path) -> Result<Identity, LoadError> {
        let shown = path.display();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
            Err(e) => {
                return Err(LoadError::Other(format!(
                    "cannot read key file {shown}: {e}"
                )))
            }
        };
        if meta.mode() & 0o077 != 0 {
            return Err(LoadError::Other(format!(
                "key file {shown} is readable by other users (mode {:o}); run `chmod 600 {shown}`",
                meta.mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::Other(format!("cannot read key file {shown}: {e}")))?;
        let private = parse_hex_key(text.trim()).ok_or_else(|| {
            LoadError::Other(format!(
                "key file {shown} does not hold a key (64 hex digits); move it away to make a new key"
            ))
        })?;
        Ok(Identity::from_private(private))
    }

    fn create(path: &Path) -> Result<Identity, String> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        let id = Identity::generate()?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = Path::new(&tmp_name);
        // Left by a crashed process that had our pid; no live process shares it.
        let _ = std::fs::remove_file(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp)?;
            f.write_all(format!("{}\n", hex(&id.private)).as_bytes())?;
            f.sync_all()
        };
        let written = write();
        // hard_link fails if the key appeared meanwhile; then the other process's key wins.
        let linked = written.and_then(|()| std::fs::hard_link(tmp, path));
        let _ = std::fs::remove_file(tmp);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    // The link is durable only once the directory is synced.
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))?;
                }
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Identity::load(path)
                .map_err(|e| match e {
                    LoadError::Missing => format!("key file {shown} vanished while being made"),
                    LoadError::Other(e) => e,
                }),
            Err(e) => Err(format!("cannot write key file {shown}: {e}")),
        }
    }
}

enum LoadError {
    Missing,
    Other(String),
}

/// SHA-256 of a public key; `Display` gives the `SHA256:<hex>` form.
#[derive(Clone, Copy)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(public: &[u8; KEY_LEN]) -> Fingerprint {
        Fingerprint(Sha256::digest(public).into())
    }

    /// Parses `SHA256:<64 hex digits>`; the error says what a fingerprint looks like.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let bad = || {
            format!(
                "'{}' is not a key fingerprint (SHA256: and 64 hex digits)",
                text.escape_debug()
            )
        };
        let digits = text.strip_prefix(FINGERPRINT_PREFIX).ok_or_else(bad)?;
        parse_hex_key(digits).map(Fingerprint).ok_or_else(bad)
    }

    /// Compares in time that does not depend on where the fingerprints differ, so a remote
    /// party cannot learn a pinned value byte by byte from response timing.
    pub fn ct_eq(&self, other: &Fingerprint) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FINGERPRINT_PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fingerprint::parse(s)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits (either case) → 32 bytes.
fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_key_file_in_a_private_directory_and_loads_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/sub/tracker.key");
        let made = Identity::load_or_create(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(made.public(), again.public());
        assert!(made.fingerprint().ct_eq(&again.fingerprint()));
        // No temporary file is left beside the key.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_does_not_block_making_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("k");
        let stale = tmp.path().join(format!("k.tmp{}", std::process::id()));
        std::fs::write(&stale, "half a key").unwrap();
        Identity::load_or_create(&path).unwrap();
        assert!(!stale.exists());
        assert!(Identity::load_or_create(&path).is_ok());
    }

    #[test]
    fn two_generated_keys_differ_and_the_public_key_follows_the_private() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.public(), b.public());
        assert_eq!(Identity::from_private(*a.private()).public(), a.public());
        assert!(!format!("{a:?}").contains(&hex(a.private())));
    }

    #[test]
    fn refuses_a_key_file_others_can_read_and_a_corrupt_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("k");
        Identity::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load_or_create(&path).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        let e = Identity::load_or_create(&path).unwrap_err();
        assert!(e.contains("does not hold a key"), "{e}");
    }

    #[test]
    fn fingerprint_formats_and_parses_back() {
        let id = Identity::generate().unwrap();
        let fp = id.fingerprint();
        let text = fp.to_string();
        assert!(
            text.starts_with("SHA256:") && text.len() == 7 + 64,
            "{text}"
        );
        assert!(Fingerprint::parse(&text).unwrap().ct_eq(&fp));
        // Upper-case hex digits read the same.
        let upper = format!("SHA256:{}", text["SHA256:".len()..].to_uppercase());
        assert!(Fingerprint::parse(&upper).unwrap().ct_eq(&fp));
        let other = Identity::generate().unwrap().fingerprint();
        assert!(!fp.ct_eq(&other));
    }

    #[test]
    fn malformed_fingerprints_are_refused_with_the_expected_form() {
        let good = Identity::generate().unwrap().fingerprint().to_string();
        for bad in [
            "",
            "SHA256:",
            "sha256:00",
            &good[..good.len() - 1],
            &format!("{good}0"),
            &good.replace("SHA256:", "MD5:"),
            &format!("{}g", &good[..good.len() - 1]),
        ] {
            let e = Fingerprint::parse(bad).unwrap_err();
            assert!(e.contains("SHA256: and 64 hex digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn known_fingerprint_of_a_known_key() {
        // SHA-256 of 32 zero bytes, so the format is pinned down independently of the code.
        let fp = Fingerprint::of(&[0u8; 32]);
        assert_eq!(
            fp.to_string(),
            "SHA256:66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }
}
