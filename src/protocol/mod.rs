//! Message formats that cross sockets, pure and fuzzable.
pub mod peer;
pub mod tracker;
