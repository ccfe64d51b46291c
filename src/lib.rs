//! groupshare: peer-to-peer, group-based file sharing with a replicated pair of trackers.
//!
//! The map:
//! - `auth`     — the password login (SCRAM-SHA-256): keys, verifiers, proofs
//! - `net`      — line framing, the buffered connection both loops drive, the secure channel
//! - `names`    — the naming rules for users, groups and files
//! - `pieces`   — piece size and counts, hash lines, piece sets and range lists
//! - `cluster`  — the tracker_info file (addresses and pinned tracker keys)
//! - `runtime`  — logging, signals into the poll loop, fd limit, randomness
//! - `protocol` — the client ↔ tracker and client ↔ client protocols (pure, fuzzable); the
//!   tracker ↔ tracker link lives in `tracker`
//! - `tracker`  — the tracker: state, replication, journal, server loop
//! - `client`   — the terminal client: shell, tracker link, seeding, downloads
//! - `testkit`  — the process harness of the tests, the bench and the demo (not used by the programs)
pub mod auth;
pub mod client;
pub mod cluster;
pub mod names;
pub mod net;
pub mod pieces;
pub mod protocol;
pub mod runtime;
pub mod testkit;
pub mod tracker;
