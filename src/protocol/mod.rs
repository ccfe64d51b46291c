//! Message formats that cross sockets, pure and fuzzable: `tracker` for client ↔ tracker,
//! `peer` for client ↔ client.
pub mod peer;
pub mod tracker;
