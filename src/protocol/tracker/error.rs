//! The error codes of `<tag> err <code> <message>` (PROTOCOL.md, "Error codes"): one enum for
//! the tracker that sends them and the client that turns them into sentences.

use std::fmt;

/// The error codes of `<tag> err <code> <message>` (PROTOCOL.md, "Error codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    UnknownCommand,
    LineTooLong,
    Unavailable,
    InvalidName,
    NotLoggedIn,
    AlreadyLoggedIn,
    BadCredentials,
    NoSession,
    UserExists,
    GroupExists,
    NoSuchGroup,
    NoSuchUser,
    NoSuchFile,
    NoSuchRequest,
    NotMember,
    NotOwner,
    AlreadyMember,
    AlreadyRequested,
    NotSeeder,
    ContentMismatch,
    TooManyConnections,
    /// Too many registrations or failed logins from the client's address; try again later.
    RateLimited,
    /// A per-user or per-group quota: groups owned, files in a group, pending join requests.
    QuotaExceeded,
    /// The tracker's overall budget (users, groups, files or piece hashes) is spent.
    TrackerFull,
    /// Unsolicited (tag 0): a correct login of this session's user from another client ended
    /// this session; the connection is closed after it.
    SessionTakenOver,
    /// A write of this client was undone when the trackers healed a split; the message says
    /// which and why, and the command it answers was not run.
    WriteUndone,
    /// A code this side does not know (a newer tracker); the reader keeps its text in the
    /// message so a person still sees it. Never sent.
    Unknown,
}

/// Every code with its wire word; `Unknown` has none.
pub(super) const CODES: &[(ErrorCode, &str)] = &[
    (ErrorCode::BadRequest, "bad_request"),
    (ErrorCode::UnknownCommand, "unknown_command"),
    (ErrorCode::LineTooLong, "line_too_long"),
    (ErrorCode::Unavailable, "unavailable"),
    (ErrorCode::InvalidName, "invalid_name"),
    (ErrorCode::NotLoggedIn, "not_logged_in"),
    (ErrorCode::AlreadyLoggedIn, "already_logged_in"),
    (ErrorCode::BadCredentials, "bad_credentials"),
    (ErrorCode::NoSession, "no_session"),
    (ErrorCode::UserExists, "user_exists"),
    (ErrorCode::GroupExists, "group_exists"),
    (ErrorCode::NoSuchGroup, "no_such_group"),
    (ErrorCode::NoSuchUser, "no_such_user"),
    (ErrorCode::NoSuchFile, "no_such_file"),
    (ErrorCode::NoSuchRequest, "no_such_request"),
    (ErrorCode::NotMember, "not_member"),
    (ErrorCode::NotOwner, "not_owner"),
    (ErrorCode::AlreadyMember, "already_member"),
    (ErrorCode::AlreadyRequested, "already_requested"),
    (ErrorCode::NotSeeder, "not_seeder"),
    (ErrorCode::ContentMismatch, "content_mismatch"),
    (ErrorCode::TooManyConnections, "too_many_connections"),
    (ErrorCode::RateLimited, "rate_limited"),
    (ErrorCode::QuotaExceeded, "quota_exceeded"),
    (ErrorCode::TrackerFull, "tracker_full"),
    (ErrorCode::SessionTakenOver, "session_taken_over"),
    (ErrorCode::WriteUndone, "write_undone"),
];

impl ErrorCode {
    /// The wire word (`unknown` for `Unknown`, which is never sent).
    pub fn as_str(self) -> &'static str {
        CODES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("unknown", |(_, w)| w)
    }

    /// `None` for a word that is not a known code.
    pub fn parse(word: &str) -> Option<ErrorCode> {
        CODES.iter().find(|(_, w)| *w == word).map(|(c, _)| *c)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal as it travels: a code and a sentence for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for (code, word) in CODES {
            assert_eq!(ErrorCode::parse(word), Some(*code));
            assert_eq!(code.as_str(), *word);
            assert_eq!(code.to_string(), *word);
        }
        assert_eq!(ErrorCode::parse("unknown"), None);
    }
}
