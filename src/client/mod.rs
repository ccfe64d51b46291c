//! The terminal client.
//!
//! - `shell`        — the command language: a line in, a checked `Command` out (pure)
//! - `shares`       — remembered shares on disk, resumed at login
//! - `known_trackers` — tracker keys trusted on first use, like ssh's known_hosts
//! - `peers`        — everything that talks to other clients: seeding, downloading, hashing, disk
//! - `term`         — line editing, history, completion and the status line at a terminal
pub mod app;
pub mod console;
pub mod have_batch;
pub mod known_trackers;
pub mod peers;
pub mod report;
pub mod shares;
pub mod shell;
pub mod term;
pub mod tracker_link;
