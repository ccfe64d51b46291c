//! Starts real tracker processes on free loopback ports with temporary data directories and
//! speaks the client protocol to them. Everything started is killed on drop, even when a test
//! fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TRACKER: &str = env!("CARGO_BIN_EXE_tracker");

/// Ports that were free a moment ago (the OS picks; we release them for the tracker).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<SocketAddr>,
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
        let info: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(dir.path().join("info"), info).expect("write info");
        std::fs::write(dir.path().join("key"), "00112233445566778899aabbccddeeff").expect("key");
        Cluster {
            dir,
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
        Conn::connect(self.addrs[n - 1])
            .and_then(|mut c| c.try_req("digest"))
            .ok()
            .and_then(|r| r[0].split(' ').nth(3).map(str::to_string))
            .unwrap_or_default()
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
            .arg(self.dir.path().join("info"))
            .arg(n.to_string())
            .arg("--data-dir")
            .arg(self.data_dir(n))
            .args(if extra.contains(&"--cluster-key") {
                vec![]
            } else {
                vec!["--cluster-key".into(), self.dir.path().join("key")]
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
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn terminate(&mut self, n: usize) -> bool {
        if let Some(mut c) = self.procs[n - 1].take() {
            unsafe_kill(c.id(), 15);
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
        let instance = format!("{:016x}", rand_u64());
        let r = c.req(&format!("hello {instance} 1"));
        assert!(r[0].starts_with("ok"), "hello: {r:?}");
        c
    }

    /// Both trackers' digests agree (bounded wait, since the follower applies asynchronously).
    pub fn wait_same_digest(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ds: Vec<String> = (1..=self.addrs.len())
                .map(|n| {
                    let mut c = self.conn(n);
                    c.req("digest")[0].clone()
                })
                .collect();
            let firsts: Vec<&str> = ds
                .iter()
                .map(|d| d.split(' ').nth(1).unwrap_or(""))
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

fn log_file(path: &std::path::Path) -> Stdio {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    }
}

/// Prints the trackers' logs (for a failing test's output).
impl Cluster {
    pub fn dump_logs(&self) {
        for n in 1..=self.addrs.len() {
            let p = self.dir.path().join(format!("t{n}.log"));
            eprintln!(
                "--- tracker {n} log ---\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            );
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
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

/// A raw protocol connection: tags requests and reads whole replies.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
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

    /// Reads one reply: its first line (tag removed) and, for `list`, its data lines.
    pub fn read_reply(&mut self) -> std::io::Result<Vec<String>> {
        let first = self.read_line()?;
        let rest = first.split_once(' ').map(|x| x.1).unwrap_or("").to_string();
        let mut out = vec![rest.clone()];
        if let Some(n) = rest.strip_prefix("list ") {
            let n: usize = n
                .split(' ')
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            for _ in 0..n {
                out.push(self.read_line()?);
            }
        }
        Ok(out)
    }

    pub fn try_req(&mut self, line: &str) -> std::io::Result<Vec<String>> {
        self.tag += 1;
        let l = format!("{} {line}\n", self.tag);
        self.stream.write_all(l.as_bytes())?;
        self.read_reply()
    }

    /// Sends a request and returns the reply: `[first line without tag, data lines...]`.
    pub fn req(&mut self, line: &str) -> Vec<String> {
        self.try_req(line)
            .unwrap_or_else(|e| panic!("request '{line}' failed: {e}"))
    }

    /// Asserts the reply is `ok...` and returns its first line.
    pub fn ok(&mut self, line: &str) -> String {
        let r = self.req(line);
        assert!(r[0].starts_with("ok"), "'{line}' → {r:?}");
        r[0].clone()
    }

    /// Asserts the reply is an error with this code.
    pub fn err(&mut self, line: &str, code: &str) {
        let r = self.req(line);
        assert!(
            r[0].starts_with(&format!("err {code} ")),
            "'{line}' → {r:?}, expected err {code}"
        );
    }

    pub fn login(&mut self, user: &str) {
        self.ok(&format!("login {user} pw-{user} 127.0.0.1:1"));
    }

    pub fn user(&mut self, user: &str) {
        self.ok(&format!("create_user {user} pw-{user}"));
        self.login(user);
    }

    /// `upload_file` with made-up hashes for a file of `size` bytes.
    pub fn upload(&mut self, group: &str, file: &str, size: u64, seed: u8) -> Vec<String> {
        let n = size.div_ceil(512 * 1024);
        self.tag += 1;
        let mut text = format!("{} upload_file {group} {file} {size} {n}\n", self.tag);
        let hashes: String = (0..n)
            .map(|i| format!("{:02x}", (i as u8) ^ seed).repeat(20))
            .collect();
        for chunk in hashes.as_bytes().chunks(40 * 1024) {
            text.push_str(std::str::from_utf8(chunk).expect("hex"));
            text.push('\n');
        }
        self.stream.write_all(text.as_bytes()).expect("send upload");
        self.read_reply().expect("upload reply")
    }
}
