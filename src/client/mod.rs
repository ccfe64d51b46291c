//! The terminal client.
//!
//! - `peers` — everything that talks to other clients: seeding, downloading, hashing, disk
pub mod peers;
