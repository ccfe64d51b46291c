//! The tracker: users, groups, files and presence, kept by a pair of replicated trackers.
//!
//! - `op`          — replicated operations and journal entries, their text encoding
//! - `state`       — the state as plain data; `apply(op) -> outcome`, queries, snapshots
//! - `rates`       — per-address token buckets (registrations, failed logins); local, pure
//! - `journal`     — snapshot + fsync'ed journal in the data directory; recovery at start
//! - `link`        — peer-link messages (the link's channel is keyed by the cluster key)
//! - `replay`      — healing a split: the loser's writes proposed again on the winner's log
//! - `server`      — the poll loop: connections, replication roles, commit and replies
//! - `status`      — the operator's `--status`: role, log position and digest over the channel
//!
//! Client request and reply lines are parsed and encoded in `crate::protocol::tracker`; the
//! login proofs are checked with `crate::auth` (the tracker stores SCRAM verifiers only).
pub mod journal;
pub mod link;
pub mod op;
pub mod rates;
pub mod replay;
pub mod server;
pub mod state;
pub mod status;
