//! groupshare: peer-to-peer, group-based file sharing with a replicated pair of trackers.
//!
//! The map:
//! - `net`      — line framing and the buffered non-blocking connection both loops drive
//! - `names`    — the naming rules for users, groups and files
//! - `pieces`   — piece size and counts, hash lines, piece sets and range lists
pub mod names;
pub mod net;
pub mod pieces;
