//! Test harness for end-to-end tests over the real binaries: a cluster of trackers on free
//! loopback ports in a temporary directory, and clients driven through their standard input
//! with bounded waits for expected output. Everything spawned is killed on drop, also when a
//! test panics.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen in well under a second: generous
/// for a loaded CI machine with two cores, still bounded so a hang fails instead of stalling.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn tracker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tracker")
}

pub fn client_bin() -> &'static str {
    env!("CARGO_BIN_EXE_client")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// Waits until something accepts connections at `addr`; false after `limit`.
pub fn wait_for_listener(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends a signal to a child (SIGKILL, SIGTERM, SIGINT...).
pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Trackers on loopback, with their info file, key and data directories in a temporary
/// directory that also holds the clients' state.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub info: PathBuf,
    pub key: PathBuf,
    pub addrs: Vec<SocketAddr>,
    trackers: Vec<Option<Child>>,
}

impl Cluster {
    /// Starts `n` (1 or 2) trackers and waits until each accepts connections.
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let info = dir.path().join("tracker_info.txt");
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&info, text).expect("write tracker_info");
        let key = dir.path().join("cluster.key");
        std::fs::write(
            &key,
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        )
        .expect("write cluster key");
        let mut c = Cluster {
            dir,
            info,
            key,
            addrs,
            trackers: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            c.start_tracker(i);
        }
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) tracker `i` (0-based) and waits until it accepts connections.
    pub fn start_tracker(&mut self, i: usize) {
        if let Some(mut old) = self.trackers[i].take() {
            kill_child(&mut old);
        }
        let data = self.dir.path().join(format!("tracker{}", i + 1));
        let child = Command::new(tracker_bin())
            .arg(&self.info)
            .arg((i + 1).to_string())
            .arg("--data-dir")
            .arg(&data)
            .arg("--cluster-key")
            .arg(&self.key)
            .arg("-q")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tracker");
        self.trackers[i] = Some(child);
        assert!(
            wait_for_listener(self.addrs[i], WAIT),
            "tracker {} did not start listening on {}",
            i + 1,
            self.addrs[i]
        );
    }

    /// Kills tracker `i` (0-based) with SIGKILL and reaps it.
    pub fn kill_tracker(&mut self, i: usize) {
        if let Some(mut child) = self.trackers[i].take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Sends a signal to tracker `i` (0-based), e.g. SIGSTOP to freeze it mid-request.
    pub fn signal_tracker(&self, i: usize, sig: libc::c_int) {
        if let Some(child) = &self.trackers[i] {
            signal(child, sig);
        }
    }

    /// A client listening on a free port with its state under this cluster's directory
    /// (`state-<name>`), so restarting a client of the same name finds its shares.
    pub fn client(&self, name: &str) -> Client {
        self.client_with(name, &["127.0.0.1:0"], &[])
    }

    /// A client with a chosen first argument and extra options.
    pub fn client_with(&self, name: &str, first: &[&str], extra: &[&str]) -> Client {
        let state = self.dir.path().join(format!("state-{name}"));
        let mut cmd = Command::new(client_bin());
        cmd.args(first)
            .arg(&self.info)
            .arg("--state-dir")
            .arg(&state)
            .args(extra);
        Client::spawn(name, cmd)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in self.trackers.iter_mut().flatten() {
            kill_child(t);
        }
    }
}

/// A running client: lines go to its standard input; its output is collected by two reader
/// threads and awaited with deadlines.
pub struct Client {
    pub name: String,
    pub child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    /// Every line seen so far, for failure messages and later checks.
    pub out_seen: Vec<String>,
    pub err_seen: Vec<String>,
    /// Lines already matched by an `expect_*`: each expectation consumes one line.
    out_used: usize,
    err_used: usize,
}

fn reader<R: std::io::Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

impl Client {
    pub fn spawn(name: &str, mut cmd: Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let out = reader(child.stdout.take().expect("stdout"));
        let err = reader(child.stderr.take().expect("stderr"));
        Client {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            err,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
            out_used: 0,
            err_used: 0,
        }
    }

    /// Writes one command line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to client");
        stdin.flush().expect("flush client stdin");
    }

    /// Closes standard input (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn drain(&mut self) {
        while let Ok(l) = self.out.try_recv() {
            self.out_seen.push(l);
        }
        while let Ok(l) = self.err.try_recv() {
            self.err_seen.push(l);
        }
    }

    fn describe(&self) -> String {
        format!(
            "client {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.name,
            self.out_seen.join("\n"),
            self.err_seen.join("\n")
        )
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
        let deadline = Instant::now() + limit;
        loop {
            self.drain();
            let (seen, used) = if stdout {
                (&self.out_seen, &mut self.out_used)
            } else {
                (&self.err_seen, &mut self.err_used)
            };
            if let Some(pos) = seen[*used..].iter().position(|l| l.contains(want)) {
                let line = seen[*used + pos].clone();
                *used += pos + 1;
                return line;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "no {} line containing {want:?} within {limit:?}\n{}",
                    if stdout { "stdout" } else { "stderr" },
                    self.describe()
                );
            }
            let rx = if stdout { &self.out } else { &self.err };
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
                Ok(l) => {
                    if stdout {
                        self.out_seen.push(l)
                    } else {
                        self.err_seen.push(l)
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
            }
        }
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
            self.describe()
        );
        l
    }

    /// The stdout lines not matched yet (for listings, which may be empty); call `sync`
    /// first so that they are all in.
    pub fn new_out_lines(&mut self) -> Vec<String> {
        self.drain();
        let lines = self.out_seen[self.out_used..].to_vec();
        self.out_used = self.out_seen.len();
        lines
    }

    /// Runs `help` and waits for its last line: every output of earlier commands has then
    /// been printed (commands run in order). Returns stdout lines printed before help's.
    pub fn sync(&mut self) -> Vec<String> {
        self.drain();
        let start = self.out_used;
        self.send("help");
        self.expect_out("exit");
        let end = self.out_used;
        let lines: Vec<String> = self.out_seen[start..end].to_vec();
        // Drop help's own lines (they start with a command name followed by spaces).
        let keep = lines
            .iter()
            .position(|l| l.starts_with("create_user "))
            .unwrap_or(lines.len());
        lines[..keep].to_vec()
    }

    /// Every error line seen so far.
    pub fn errors(&mut self) -> Vec<String> {
        self.drain();
        self.err_seen
            .iter()
            .filter(|l| l.starts_with("error: "))
            .cloned()
            .collect()
    }

    /// Runs `show_downloads` and returns its lines (every earlier output is in by then).
    pub fn show_downloads(&mut self) -> Vec<String> {
        self.sync();
        self.send("show_downloads");
        self.sync()
    }

    /// Kills the client with SIGKILL (no clean-up of any kind) and reaps it.
    pub fn kill(&mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
        self.drain();
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the client to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.drain();
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stdin = None;
        kill_child(&mut self.child);
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
