//! groupshare: peer-to-peer, group-based file sharing with a replicated pair of trackers.
//!
//! The map:
//! - `net`      — line framing, the buffered connection both loops drive, the secure channel
//! - `names`    — the naming rules for users, groups and files
//! - `pieces`   — piece size and counts, hash lines, piece sets and range lists
//! - `cluster`  — the tracker_info file (addresses and pinned tracker keys)
//! - `runtime`  — logging, signals into the poll loop, fd limit, randomness
//! - `protocol` — the client ↔ client peer protocol (pure, fuzzable); the tracker protocols live in `tracker`
//! - `tracker`  — the tracker: state, replication, journal, server loop
//! - `client`   — the terminal client: shell, tracker link, seeding, downloads
pub mod client;
pub mod cluster;
pub mod names;
pub mod net;
pub mod pieces;
pub mod protocol;
pub mod runtime;
pub mod tracker;
