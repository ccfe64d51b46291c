//! The client ↔ tracker protocol (PROTOCOL.md §1), every line of it in one place. Pure: bytes
//! in, messages out; never panics on any input.
//!
//! - `request` — `Request`/`Verb`: request lines parsed (arguments validated at the edge) and
//!   encoded from the same variants
//! - `reply`   — `Reply` (`ok` / `list` / `err`) encoded by the tracker and reassembled by the
//!   client's `ReplyReader`; `WriteReply`, what a write answers
//! - `error`   — `ErrorCode`, the codes of `err` replies
//! - `lines`   — the typed data lines of `list_groups`, `list_files`, `peers` and the
//!   `download_file` reply
//!
//! Adding a verb: one `Verb` variant, its entry in `USAGE`, its arm in `parse`, `Verb::name`
//! and `Verb::encode` (and `Verb::is_write` / `needs_session` when they apply) — the compiler
//! points at the rest. The recipe is in docs/ARCHITECTURE.md.

mod error;
mod lines;
mod reply;
mod request;

pub use error::{ErrorCode, ErrorReply};
pub use lines::{DownloadReply, FileLine, GroupLine, PeerLine};
pub use reply::{encode_err, encode_ok, Reply, ReplyReader, WriteReply, MAX_LIST_LINES};
pub use request::{line as request_line, parse, verb_word, ParseError, Request, Verb};

/// The protocol version both sides speak (`hello <instance> <version>`).
/// 2: logins by SCRAM proof (`login_begin`/`login`), verifiers in `create_user`, `attach` with
/// a proof of the session secret.
pub const PROTOCOL_VERSION: u32 = 2;

/// Bytes of a login nonce (`login_begin`'s and the tracker's): 128 bits, sent as 32 hex digits.
pub const NONCE_LEN: usize = 16;

/// Longest password, in bytes, that the client's shell accepts (the password itself never
/// travels; the client derives keys from it). 256 bytes is far beyond any memorable password.
pub const MAX_PASSWORD: usize = 256;

/// Strategies the property tests of the submodules share.
#[cfg(test)]
mod strategy {
    use proptest::prelude::*;
    use std::net::SocketAddr;

    pub fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}".prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    pub fn addr() -> impl Strategy<Value = String> {
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((ip, port)).to_string())
    }
}
