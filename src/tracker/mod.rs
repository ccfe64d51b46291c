//! The tracker: users, groups, files and presence, kept by a pair of replicated trackers.
//!
//! - `password`    — salted, iterated password hashes
//! - `op`          — replicated operations and journal entries, their text encoding
//! - `state`       — the state as plain data; `apply(op) -> outcome`, queries, snapshots
//! - `journal`     — snapshot + fsync'ed journal in the data directory; recovery at start
//! - `link`        — peer-link messages (the link's channel is keyed by the cluster key)
//! - `server`      — the poll loop: connections, replication roles, commit and replies
//! - `status`      — the operator's `--status`: role, log position and digest over the channel
//!
//! Client request and reply lines are parsed and encoded in `crate::protocol::tracker`.
pub mod journal;
pub mod link;
pub mod op;
pub mod password;
pub mod server;
pub mod state;
pub mod status;
