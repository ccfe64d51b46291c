//! Test harness for end-to-end tests over the real binaries: a cluster of trackers on free
//! loopback ports in a temporary directory (each logging to `t<n>.log` there, printed when a
//! test fails), the tracker protocol (`Conn`, typed requests from `v`, raw bytes for hostile tests), and clients driven through their standard
//! input with bounded waits for expected output. Everything spawned is killed on drop, also
//! when a test panics. Trackers are numbered from 1, as on their command line.
#![allow(dead_code)]

use groupshare::pieces;
use groupshare::protocol::tracker::ReplyReader;
pub use groupshare::protocol::tracker::{Reply, Request, Verb};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen in well under a second: generous
/// for a loaded CI machine with two cores, still bounded so a hang fails instead of stalling.
pub const WAIT: Duration = Duration::from_secs(20);

pub const TRACKER: &str = env!("CARGO_BIN_EXE_tracker");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_client");

/// Ports that were free a moment ago (the OS picks; we release them for the tracker).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
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
    /// The tracker info file every tracker and client reads.
    pub info: PathBuf,
    pub key: PathBuf,
    pub addrs: Vec<SocketAddr>,
    /// Tracker `n`'s process at `procs[n - 1]`.
    pub procs: Vec<Option<Child>>,
}

impl Cluster {
    /// Writes the info and key files; starts no tracker.
    pub fn new(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<SocketAddr> = free_ports(n)
            .into_iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let info = dir.path().join("info");
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&info, text).expect("write info");
        let key = dir.path().join("key");
        std::fs::write(&key, "00112233445566778899aabbccddeeff").expect("key");
        Cluster {
            dir,
            info,
            key,
            addrs,
            procs: (0..n).map(|_| None).collect(),
        }
    }

    /// A cluster with every tracker started and serving.
    pub fn start(n: usize) -> Cluster {
        let mut c = Cluster::new(n);
        for i in 1..=n {
            c.spawn(i);
        }
        for i in 1..=n {
            c.wait_serving(i);
        }
        if n == 2 {
            c.wait_paired();
        }
        c
    }

    /// The role word of tracker `n`'s `digest` reply.
    pub fn role(&self, n: usize) -> String {
        let reply = Conn::connect(self.addrs[n - 1]).and_then(|mut c| c.try_typed(&Verb::Digest));
        match reply {
            Ok(Reply::Ok(words)) => words.get(2).cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// Waits (bounded) until the two trackers are linked: one leads, the other follows.
    pub fn wait_paired(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let roles = [self.role(1), self.role(2)];
            if roles.contains(&"leader-paired".to_string())
                && roles.contains(&"follower".to_string())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "trackers did not pair: {roles:?}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub fn data_dir(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("t{n}"))
    }

    pub fn spawn(&mut self, n: usize) {
        self.spawn_with(n, &[]);
    }

    pub fn spawn_with(&mut self, n: usize, extra: &[&str]) {
        let child = Command::new(TRACKER)
            .arg(&self.info)
            .arg(n.to_string())
            .arg("--data-dir")
            .arg(self.data_dir(n))
            .args(if extra.contains(&"--cluster-key") {
                vec![]
            } else {
                vec!["--cluster-key".into(), self.key.clone()]
            })
            .args(extra)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.path().join(format!("t{n}.log"))))
            .spawn()
            .expect("spawn tracker");
        self.procs[n - 1] = Some(child);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut c) = self.procs[n - 1].take() {
            kill_child(&mut c);
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn terminate(&mut self, n: usize) -> bool {
        if let Some(mut c) = self.procs[n - 1].take() {
            signal(&c, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(st)) = c.try_wait() {
                    return st.success();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        false
    }

    /// Waits (bounded) until tracker `n` answers `hello` with ok.
    pub fn wait_serving(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Conn::connect(self.addrs[n - 1]) {
                if let Ok(r) = c.try_req("hello 0000000000000001 1") {
                    if r[0].starts_with("ok") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "tracker {n} did not start serving within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

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

    /// Prints the trackers' logs (for a failing test's output).
    pub fn dump_logs(&self) {
        for n in 1..=self.addrs.len() {
            let p = self.dir.path().join(format!("t{n}.log"));
            eprintln!(
                "--- tracker {n} log ---\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            );
        }
    }

    /// The temporary directory: trackers' files, clients' state, test files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) tracker `n` and waits only until it accepts connections (not
    /// until it serves: see `wait_serving`).
    pub fn restart(&mut self, n: usize) {
        self.kill(n);
        self.spawn(n);
        assert!(
            wait_for_listener(self.addrs[n - 1], WAIT),
            "tracker {n} did not start listening on {}",
            self.addrs[n - 1]
        );
    }

    /// Sends a signal to tracker `n`, e.g. SIGSTOP to freeze it mid-request.
    pub fn signal(&self, n: usize, sig: libc::c_int) {
        if let Some(child) = &self.procs[n - 1] {
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
        let mut cmd = Command::new(CLIENT);
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
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in 1..=self.procs.len() {
            self.kill(n);
        }
    }
}

fn log_file(path: &Path) -> Stdio {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    }
}

pub fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() | 1
}

/// What a `Conn` sends after the tag: a typed request (`Verb`), or raw text for tests whose
/// point is a malformed or hostile request.
pub trait RequestText {
    fn text(&self) -> String;
}

impl RequestText for str {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl RequestText for String {
    fn text(&self) -> String {
        self.clone()
    }
}

impl RequestText for Verb {
    fn text(&self) -> String {
        self.encode()
    }
}

/// A protocol connection: tags requests and reads whole replies with the protocol's reader.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    replies: ReplyReader,
    tag: u64,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn {
            stream,
            reader,
            replies: ReplyReader::default(),
            tag: 0,
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn read_line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        let n = self.reader.read_line(&mut l)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Reads one whole reply with its tag.
    pub fn read_typed(&mut self) -> std::io::Result<(u64, Reply)> {
        loop {
            let line = self.read_line()?;
            let got = self
                .replies
                .feed(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if let Some(r) = got {
                return Ok(r);
            }
        }
    }

    /// Reads one reply: its first line (tag removed) and, for `list`, its data lines.
    pub fn read_reply(&mut self) -> std::io::Result<Vec<String>> {
        let (tag, reply) = self.read_typed()?;
        let text = reply.encode(tag);
        let mut lines = text.split('\n').map(str::to_string);
        let first = lines.next().unwrap_or_default();
        let first = first.split_once(' ').map(|x| x.1).unwrap_or("").to_string();
        Ok(std::iter::once(first).chain(lines).collect())
    }

    /// Sends a request and returns its typed reply.
    pub fn try_typed<R: RequestText + ?Sized>(&mut self, req: &R) -> std::io::Result<Reply> {
        self.tag += 1;
        let l = format!("{} {}\n", self.tag, req.text());
        self.stream.write_all(l.as_bytes())?;
        Ok(self.read_typed()?.1)
    }

    pub fn typed<R: RequestText + ?Sized>(&mut self, req: &R) -> Reply {
        self.try_typed(req)
            .unwrap_or_else(|e| panic!("request '{}' failed: {e}", req.text()))
    }

    pub fn try_req<R: RequestText + ?Sized>(&mut self, req: &R) -> std::io::Result<Vec<String>> {
        self.tag += 1;
        let l = format!("{} {}\n", self.tag, req.text());
        self.stream.write_all(l.as_bytes())?;
        self.read_reply()
    }

    /// Sends a request and returns the reply: `[first line without tag, data lines...]`.
    pub fn req<R: RequestText + ?Sized>(&mut self, req: &R) -> Vec<String> {
        self.try_req(req)
            .unwrap_or_else(|e| panic!("request '{}' failed: {e}", req.text()))
    }

    /// Asserts the reply is `ok...` and returns its first line.
    pub fn ok<R: RequestText + ?Sized>(&mut self, req: &R) -> String {
        let r = self.req(req);
        assert!(r[0].starts_with("ok"), "'{}' → {r:?}", req.text());
        r[0].clone()
    }

    /// Asserts the reply is an error with this code.
    pub fn err<R: RequestText + ?Sized>(&mut self, req: &R, code: &str) {
        let r = self.req(req);
        assert!(
            r[0].starts_with(&format!("err {code} ")),
            "'{}' → {r:?}, expected err {code}",
            req.text()
        );
    }

    pub fn login(&mut self, user: &str) {
        self.ok(&v::login(user, &format!("pw-{user}"), "127.0.0.1:1"));
    }

    pub fn user(&mut self, user: &str) {
        self.ok(&v::create_user(user, &format!("pw-{user}")));
        self.login(user);
    }

    /// `upload_file` with made-up hashes for a file of `size` bytes.
    pub fn upload(&mut self, group: &str, file: &str, size: u64, seed: u8) -> Vec<String> {
        let npieces = size.div_ceil(512 * 1024);
        self.tag += 1;
        let verb = Verb::UploadFile {
            group: group.to_string(),
            file: file.to_string(),
            size,
            npieces,
        };
        let mut text = format!("{}\n", Request::new(self.tag, verb).encode());
        let hashes: Vec<[u8; 20]> = (0..npieces).map(|i| [(i as u8) ^ seed; 20]).collect();
        for line in pieces::hash_lines(&hashes) {
            text.push_str(&line);
            text.push('\n');
        }
        self.stream.write_all(text.as_bytes()).expect("send upload");
        self.read_reply().expect("upload reply")
    }
}

/// Short constructors of the requests tests send most, so a test reads like the protocol.
pub mod v {
    use groupshare::protocol::tracker::Verb;

    fn s(x: &str) -> String {
        x.to_string()
    }

    pub fn hello(instance: u64) -> Verb {
        Verb::Hello { instance }
    }
    pub fn create_user(user: &str, password: &str) -> Verb {
        Verb::CreateUser {
            user: s(user),
            password: s(password),
        }
    }
    pub fn login(user: &str, password: &str, addr: &str) -> Verb {
        Verb::Login {
            user: s(user),
            password: s(password),
            addr: s(addr),
        }
    }
    pub fn attach(token: &str, addr: &str) -> Verb {
        Verb::Attach {
            token: s(token),
            addr: s(addr),
        }
    }
    pub fn create_group(group: &str) -> Verb {
        Verb::CreateGroup { group: s(group) }
    }
    pub fn join_group(group: &str) -> Verb {
        Verb::JoinGroup { group: s(group) }
    }
    pub fn leave_group(group: &str) -> Verb {
        Verb::LeaveGroup { group: s(group) }
    }
    pub fn list_requests(group: &str) -> Verb {
        Verb::ListRequests { group: s(group) }
    }
    pub fn accept_request(group: &str, user: &str) -> Verb {
        Verb::AcceptRequest {
            group: s(group),
            user: s(user),
        }
    }
    pub fn list_files(group: &str) -> Verb {
        Verb::ListFiles { group: s(group) }
    }
    pub fn download_file(group: &str, file: &str) -> Verb {
        Verb::DownloadFile {
            group: s(group),
            file: s(file),
        }
    }
    pub fn peers(group: &str, file: &str) -> Verb {
        Verb::Peers {
            group: s(group),
            file: s(file),
        }
    }
    pub fn have(group: &str, file: &str, pieces: &[usize]) -> Verb {
        Verb::Have {
            group: s(group),
            file: s(file),
            pieces: pieces.to_vec(),
        }
    }
    pub fn stop_share(group: &str, file: &str) -> Verb {
        Verb::StopShare {
            group: s(group),
            file: s(file),
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
