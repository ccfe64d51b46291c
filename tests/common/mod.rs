//! The end-to-end tests' face of the shared harness (`groupshare::testkit`): the same
//! trackers, clients and raw connections as the bench and the demo use, with this crate's
//! binaries (`CARGO_BIN_EXE_*`), the trackers logging verbosely (`t<n>.log`, printed when a
//! test fails), and every failure a panic that fails the test. Everything spawned is killed on
//! drop, also when a test panics, and with the test's thread if the test binary dies.
//! Requests to a tracker are typed (`Verb`, short constructors in `v`); raw text is kept for
//! tests whose point is a malformed request. Trackers are numbered from 1.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use groupshare::protocol::tracker::{Reply, Request, Verb};
use groupshare::testkit::{self, Stream, TrackerLog};
#[allow(unused_imports)]
pub use groupshare::testkit::{prove, v, RequestText};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use groupshare::testkit::{signal, Conn};

/// How long a test waits for something that should happen in well under a second: generous
/// for a loaded CI machine with two cores, still bounded so a hang fails instead of stalling.
pub const WAIT: Duration = Duration::from_secs(20);

pub const TRACKER: &str = env!("CARGO_BIN_EXE_tracker");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_client");

/// Fails the test with the harness's explanation.
fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Ports that were free a moment ago (the OS picks; we release them for the tracker).
pub fn free_ports(n: usize) -> Vec<u16> {
    must(testkit::free_ports(n))
}

/// Waits until something accepts connections at `addr`; false after `limit`.
pub fn wait_for_listener(addr: SocketAddr, limit: Duration) -> bool {
    testkit::wait_listening(addr, limit).is_ok()
}

/// `testkit::Cluster` with this crate's tracker binary; its fields and its methods that
/// cannot fail are reached through `Deref`.
pub struct Cluster(testkit::Cluster);

impl Deref for Cluster {
    type Target = testkit::Cluster;
    fn deref(&self) -> &testkit::Cluster {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut testkit::Cluster {
        &mut self.0
    }
}

impl Cluster {
    /// Writes the info and key files; starts no tracker.
    pub fn new(n: usize) -> Cluster {
        Cluster(must(testkit::Cluster::new(
            TRACKER.as_ref(),
            n,
            "test",
            TrackerLog::Verbose,
        )))
    }

    /// A cluster with every tracker started and serving.
    pub fn start(n: usize) -> Cluster {
        Cluster(must(testkit::Cluster::start(
            TRACKER.as_ref(),
            n,
            "test",
            TrackerLog::Verbose,
        )))
    }

    /// The role word of tracker `n`'s `digest` reply, empty if it does not answer.
    pub fn role(&self, n: usize) -> String {
        self.0.role(n).unwrap_or_default()
    }

    /// Waits (bounded) until the two trackers are linked: one leads, the other follows.
    pub fn wait_paired(&self) {
        must(self.0.wait_paired());
    }

    pub fn spawn(&mut self, n: usize) {
        must(self.0.spawn(n));
    }

    pub fn spawn_with(&mut self, n: usize, extra: &[&str]) {
        must(self.0.spawn_with(n, extra));
    }

    /// Waits (bounded) until tracker `n` answers `hello` with ok.
    pub fn wait_serving(&self, n: usize) {
        must(self.0.wait_serving(n));
    }

    /// Starts (or restarts) tracker `n` and waits only until it accepts connections (not
    /// until it serves: see `wait_serving`).
    pub fn restart(&mut self, n: usize) {
        must(self.0.restart(n));
    }

    /// A connection to tracker `n` that has said hello as a new client instance.
    pub fn conn(&self, n: usize) -> Conn {
        let mut c = Conn::connect(self.addrs[n - 1]).expect("connect to tracker");
        let r = c.req(&v::hello(rand_u64()));
        assert!(r[0].starts_with("ok"), "hello: {r:?}");
        c
    }

    /// Both trackers' digests agree (bounded wait, since the follower applies asynchronously).
    pub fn wait_same_digest(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ds: Vec<Reply> = (1..=self.addrs.len())
                .map(|n| self.conn(n).typed(&Verb::Digest))
                .collect();
            let firsts: Vec<&str> = ds
                .iter()
                .map(|d| match d {
                    Reply::Ok(words) => words.first().map_or("", String::as_str),
                    _ => "",
                })
                .collect();
            if firsts.windows(2).all(|w| w[0] == w[1]) {
                return firsts[0].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "trackers did not converge: {ds:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client listening on a free port with its state under this cluster's directory
    /// (`state-<name>`), so restarting a client of the same name finds its shares.
    pub fn client(&self, name: &str) -> Client {
        self.client_with(name, &["127.0.0.1:0"], &[])
    }

    /// A client with a chosen first argument and extra options.
    pub fn client_with(&self, name: &str, first: &[&str], extra: &[&str]) -> Client {
        let cmd = testkit::client_command(
            CLIENT.as_ref(),
            first,
            &self.info,
            &self.state_dir(name),
            extra,
        );
        Client::spawn(name, cmd)
    }
}

pub fn rand_u64() -> u64 {
    groupshare::runtime::seed_u64() | 1
}

/// `testkit::Client` whose waits panic with everything the client printed; its fields and
/// its methods that cannot fail are reached through `Deref`.
pub struct Client(testkit::Client);

impl Deref for Client {
    type Target = testkit::Client;
    fn deref(&self) -> &testkit::Client {
        &self.0
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut testkit::Client {
        &mut self.0
    }
}

impl Client {
    pub fn spawn(name: &str, cmd: Command) -> Client {
        Client(must(testkit::Client::spawn(name, cmd)))
    }

    /// Writes one command line.
    pub fn send(&mut self, line: &str) {
        must(self.0.send(line));
    }

    /// Waits for a new stdout line containing `want`; returns it. Panics with everything
    /// seen after `WAIT`.
    pub fn expect_out(&mut self, want: &str) -> String {
        self.expect(true, want, WAIT)
    }

    /// Waits for a new stderr line containing `want`.
    pub fn expect_err(&mut self, want: &str) -> String {
        self.expect(false, want, WAIT)
    }

    pub fn expect(&mut self, stdout: bool, want: &str, limit: Duration) -> String {
        let stream = if stdout { Stream::Out } else { Stream::Err };
        self.0
            .expect(stream, want, limit)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.0.describe()))
    }

    /// Sends a command and waits for a stdout line containing `want`.
    pub fn run(&mut self, line: &str, want: &str) -> String {
        self.send(line);
        self.expect_out(want)
    }

    /// Sends a command and waits for its `error: ` line, which must contain `want`.
    pub fn run_err(&mut self, line: &str, want: &str) -> String {
        self.send(line);
        let l = self.expect_err("error: ");
        assert!(
            l.contains(want),
            "expected an error containing {want:?}, got {l:?}\n{}",
            self.0.describe()
        );
        l
    }

    /// Runs `help` and waits for its last line: every output of earlier commands has then
    /// been printed (commands run in order). Returns stdout lines printed before help's.
    pub fn sync(&mut self) -> Vec<String> {
        self.0
            .sync(WAIT)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.0.describe()))
    }

    /// Runs `show_downloads` and returns its lines (every earlier output is in by then).
    pub fn show_downloads(&mut self) -> Vec<String> {
        self.sync();
        self.send("show_downloads");
        self.sync()
    }
}

/// Random bytes for test files (not cryptographic; distinct per seed).
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The sources named by a completion note: `... (from alice: 3 pieces, bob: 2 pieces)`.
pub fn sources(note: &str) -> std::collections::BTreeMap<String, u64> {
    let Some(start) = note.rfind("(from ") else {
        return Default::default();
    };
    note[start + 6..]
        .trim_end_matches(')')
        .split(", ")
        .filter_map(|part| {
            let (who, n) = part.split_once(": ")?;
            let n = n.split_whitespace().next()?.parse().ok()?;
            Some((who.to_string(), n))
        })
        .collect()
}
