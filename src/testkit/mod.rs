//! The process harness shared by the integration tests (`tests/`), the bench (`bin/bench/`) and
//! the demo (`bin/demo.rs`): real trackers and clients started on free loopback ports in
//! temporary directories, their output read line by line on reader threads, the raw tracker
//! protocol spoken by hand, and everything stopped again on drop — on an error return or a
//! panic too — and, through `PR_SET_PDEATHSIG`, when the driving program itself dies.
//!
//! Neither the tracker nor the client uses this module. It lives in the library, not in a
//! crate of its own, because the bench and the demo are binaries of this package: a separate
//! harness crate could not depend on `groupshare` and be depended on by them (docs/ARCHITECTURE.md).
//!
//! Errors are `String`s a person can read, for the bench and the demo to report; the tests'
//! adapter (`tests/common/`) turns them into panics. `Conn` alone is test-flavoured: it panics.

pub mod client;
pub mod cluster;
pub mod conn;
pub mod net;
pub mod process;
pub mod tempdir;
pub mod tickets;

pub use client::{client_command, Client, Stream};
pub use cluster::{Cluster, TrackerLog};
pub use conn::{check_login_reply, prove, v, Conn, LineConn, RequestText};
pub use net::{connect_from, free_addrs, free_ports, wait_for, wait_listening};
pub use process::{forward_lines, lines_of, piped, sibling_bin, signal, spawn_child, Proc};
pub use tempdir::TempDir;
