//! The tracker: users, groups, files and presence, kept by a pair of replicated trackers.
//!
//! - `password`    — salted, iterated password hashes
//! - `op`          — replicated operations and journal entries, their text encoding
//! - `state`       — the state as plain data; `apply(op) -> outcome`, queries, snapshots
pub mod op;
pub mod password;
pub mod state;
