//! The naming rules for users, groups and files (CONTRACT.md): single words of ASCII letters,
//! digits and `._-`. Checked at every edge where a name enters the system.

/// Longest user or group name, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest file name, in bytes (the usual file-system limit for one path component).
pub const MAX_FILE_NAME_LEN: usize = 255;

/// What kind of name is being checked; picks the length limit and the wording of errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    User,
    Group,
    File,
}

impl NameKind {
    pub fn label(self) -> &'static str {
        match self {
            NameKind::User => "user id",
            NameKind::Group => "group id",
            NameKind::File => "file name",
        }
    }

    pub fn max_len(self) -> usize {
        match self {
            NameKind::File => MAX_FILE_NAME_LEN,
            _ => MAX_ID_LEN,
        }
    }
}

/// Checks a name; the error is a sentence a person understands.
pub fn check(kind: NameKind, name: &str) -> Result<(), String> {
    let label = kind.label();
    if name.is_empty() {
        return Err(format!("{label} must not be empty"));
    }
    if name.len() > kind.max_len() {
        return Err(format!(
            "{label} is {} bytes long; at most {} are allowed",
            name.len(),
            kind.max_len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not a valid {label}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{label} '{}' contains {c:?}; only letters, digits and . _ - are allowed",
            name.escape_debug()
        ));
    }
    Ok(())
}

pub fn is_valid(kind: NameKind, name: &str) -> bool {
    check(kind, name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(is_valid(NameKind::User, "alice_01.b-c"));
        assert!(is_valid(NameKind::File, &"f".repeat(255)));
        assert!(is_valid(NameKind::Group, &"g".repeat(64)));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", ".", "..", "a b", "a/b", "é", "a\0", "a\n", "tab\t"] {
            assert!(!is_valid(NameKind::User, bad), "{bad:?} accepted");
        }
        assert!(!is_valid(NameKind::Group, &"g".repeat(65)));
        assert!(!is_valid(NameKind::File, &"f".repeat(256)));
        let err = check(NameKind::Group, "a/b").unwrap_err();
        assert!(err.contains("group id") && err.contains("'/'"), "{err}");
    }
}
