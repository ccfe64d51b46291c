//! The servers under test, started as real processes on free loopback ports: the tracker pair
//! and Redis instances. Each is a `Guard`, so it dies with the bench.

use crate::procs::{free_ports, wait_for, wait_listening, Guard, TempDir};
use groupshare::protocol::tracker::{Reply, ReplyReader, Request, Verb};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A blocking line connection for set-up and control requests (tracker protocol).
pub struct LineConn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    replies: ReplyReader,
    pub tag: u64,
}

impl LineConn {
    pub fn connect(addr: SocketAddr) -> Result<LineConn, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        let _ = stream.set_nodelay(true);
        let reader = BufReader::new(
            stream
                .try_clone()
                .map_err(|e| format!("cannot clone a socket: {e}"))?,
        );
        Ok(LineConn {
            stream,
            reader,
            replies: ReplyReader::default(),
            tag: 0,
        })
    }

    pub fn read_line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => Err("the server closed the connection".to_string()),
            Ok(_) => Ok(l.trim_end().to_string()),
            Err(e) => Err(format!("reading a reply: {e}")),
        }
    }

    /// Reads one whole tracker reply (a `list` with its data lines).
    pub fn read_reply(&mut self) -> Result<Reply, String> {
        loop {
            let line = self.read_line()?;
            if let Some((_, reply)) = self.replies.feed(&line)? {
                return Ok(reply);
            }
        }
    }

    pub fn send(&mut self, verb: &Verb) -> Result<(), String> {
        self.tag += 1;
        let l = format!("{}\n", Request::new(self.tag, verb.clone()).encode());
        self.stream
            .write_all(l.as_bytes())
            .map_err(|e| format!("sending {}: {e}", verb.name()))
    }

    pub fn req(&mut self, verb: &Verb) -> Result<Reply, String> {
        self.send(verb)?;
        self.read_reply()
    }

    /// A request that must succeed.
    pub fn ok(&mut self, verb: &Verb) -> Result<Reply, String> {
        match self.req(verb)? {
            Reply::Err { code, message } => {
                Err(format!("{} was refused: {code} {message}", verb.name()))
            }
            r => Ok(r),
        }
    }

    /// The std stream, for handing to the load generator; Err if replies are still buffered.
    pub fn into_stream(self) -> Result<TcpStream, String> {
        if !self.reader.buffer().is_empty() {
            return Err("unexpected extra data from the server after set-up".to_string());
        }
        Ok(self.stream)
    }
}

/// A fresh client instance id, as `hello` carries it.
pub fn instance_id() -> u64 {
    groupshare::runtime::random_u64() | 1
}

/// `hello` with a fresh instance id.
pub fn hello() -> Verb {
    Verb::Hello {
        instance: instance_id(),
    }
}

/// `create_user <u> pw-<u>`, the password every bench user gets.
pub fn create_user(u: &str) -> Verb {
    Verb::CreateUser {
        user: u.to_string(),
        password: format!("pw-{u}"),
    }
}

/// `login <u> pw-<u> 127.0.0.1:1`: bench users serve no pieces.
pub fn login(u: &str) -> Verb {
    Verb::Login {
        user: u.to_string(),
        password: format!("pw-{u}"),
        addr: "127.0.0.1:1".to_string(),
    }
}

/// A running tracker pair.
pub struct TrackerPair {
    pub addrs: Vec<SocketAddr>,
    pub procs: Vec<Guard>,
    pub dir: TempDir,
    /// Which tracker (1 or 2) leads; brand-new trackers started together may pick either
    /// (tracker 2 serves alone at once if its first dial is refused, and then its log is longer).
    pub leader: usize,
}

impl TrackerPair {
    pub fn start(tracker_bin: &Path, tag: &str) -> Result<TrackerPair, String> {
        let dir = TempDir::new(tag)?;
        let addrs: Vec<SocketAddr> = free_ports(2)?
            .into_iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let info = dir.path().join("tracker_info");
        let key = dir.path().join("cluster.key");
        std::fs::write(
            &info,
            addrs.iter().map(|a| format!("{a}\n")).collect::<String>(),
        )
        .map_err(|e| format!("cannot write {}: {e}", info.display()))?;
        let mut k = [0u8; 32];
        groupshare::runtime::random_bytes(&mut k).map_err(|e| format!("random: {e}"))?;
        std::fs::write(&key, groupshare::pieces::to_hex(&k))
            .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
        let mut procs = Vec::new();
        for n in 1..=2 {
            procs.push(spawn_tracker(tracker_bin, dir.path(), n)?);
        }
        let mut pair = TrackerPair {
            addrs,
            procs,
            dir,
            leader: 1,
        };
        pair.leader = pair.wait_paired()?;
        Ok(pair)
    }

    /// One tracker alone (a one-line tracker_info): the same code without replication, to
    /// show what the second tracker costs a durable write.
    pub fn start_single(tracker_bin: &Path, tag: &str) -> Result<TrackerPair, String> {
        let dir = TempDir::new(tag)?;
        let addrs: Vec<SocketAddr> = free_ports(1)?
            .into_iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let info = dir.path().join("tracker_info");
        std::fs::write(&info, format!("{}\n", addrs[0]))
            .map_err(|e| format!("cannot write {}: {e}", info.display()))?;
        let procs = vec![spawn_tracker(tracker_bin, dir.path(), 1)?];
        let single = TrackerPair {
            addrs,
            procs,
            dir,
            leader: 1,
        };
        wait_for(
            "the single tracker to serve",
            Duration::from_secs(20),
            || (single.role(1).as_deref() == Some("leader-solo")).then_some(()),
        )?;
        Ok(single)
    }

    pub fn pid(&self, n: usize) -> u32 {
        self.procs[n - 1].pid()
    }

    pub fn role(&self, n: usize) -> Option<String> {
        let mut c = LineConn::connect(self.addrs[n - 1]).ok()?;
        match c.req(&Verb::Digest).ok()? {
            Reply::Ok(words) => words.get(2).cloned(),
            _ => None,
        }
    }

    /// Which tracker leads the paired set, once both agree.
    pub fn paired_leader(&self) -> Option<usize> {
        match (self.role(1).as_deref(), self.role(2).as_deref()) {
            (Some("leader-paired"), Some("follower")) => Some(1),
            (Some("follower"), Some("leader-paired")) => Some(2),
            _ => None,
        }
    }

    /// Waits until the two are paired; returns the leader's number.
    pub fn wait_paired(&self) -> Result<usize, String> {
        wait_for(
            "the trackers to pair (leader-paired + follower)",
            Duration::from_secs(20),
            || self.paired_leader(),
        )
        .map_err(|e| format!("{e}; roles now {:?} {:?}", self.role(1), self.role(2)))
    }

    pub fn check_alive(&mut self) -> Result<(), String> {
        for p in self.procs.iter_mut() {
            p.check_alive()?;
        }
        Ok(())
    }

    /// `n` connections to tracker `t`, each said hello, created user `<prefix><i>` and logged
    /// in (set-up pipelined per connection). The next free tag of each is 4.
    pub fn logged_in(&self, t: usize, prefix: &str, n: usize) -> Result<Vec<TcpStream>, String> {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut c = LineConn::connect(self.addrs[t - 1])?;
            let u = format!("{prefix}{i}");
            c.send(&hello())?;
            c.send(&create_user(&u))?;
            c.send(&login(&u))?;
            conns.push(c);
        }
        let mut out = Vec::with_capacity(n);
        for mut c in conns {
            for what in ["hello", "create_user", "login"] {
                let r = c.read_reply()?;
                if !matches!(r, Reply::Ok(_)) {
                    return Err(format!("set-up {what} at tracker {t} refused: {r:?}"));
                }
            }
            out.push(c.into_stream()?);
        }
        Ok(out)
    }

    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        for n in 1..=2 {
            let p = self.dir.path().join(format!("t{n}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(10);
            s.push_str(&format!("--- tracker {n} log (tail) ---\n"));
            for l in &lines[from..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

pub fn spawn_tracker(bin: &Path, dir: &Path, n: usize) -> Result<Guard, String> {
    let log = std::fs::File::create(dir.join(format!("t{n}.log")))
        .map_err(|e| format!("cannot create a log file: {e}"))?;
    Guard::spawn(
        &format!("tracker {n}"),
        Command::new(bin)
            .arg(dir.join("tracker_info"))
            .arg(n.to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("t{n}")))
            .arg("--cluster-key")
            .arg(dir.join("cluster.key"))
            .arg("-q")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log)),
    )
}

/// Where `redis-server` is, if it is on PATH.
pub fn find_redis() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

pub fn redis_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// One Redis instance of our own: loopback, its own temp dir, no snapshots; `durable` turns on
/// the append-only file with an fsync before every reply.
pub struct Redis {
    pub addr: SocketAddr,
    pub proc: Guard,
    _dir: TempDir,
}

impl Redis {
    pub fn start(bin: &Path, durable: bool) -> Result<Redis, String> {
        let dir = TempDir::new(if durable { "redis-aof" } else { "redis" })?;
        let port = free_ports(1)?[0];
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(dir.path())
            .arg("--save")
            .arg("")
            .arg("--maxclients")
            .arg("12000")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(dir.path().join("redis.log"));
        if durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Guard::spawn("redis-server", &mut cmd)?;
        let r = Redis {
            addr,
            proc,
            _dir: dir,
        };
        wait_listening(addr, Duration::from_secs(10))?;
        Ok(r)
    }

    /// A blocking command with a one-line (or bulk) reply, for set-up.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        s.write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("Redis {line:?}: {e}"))?;
        let mut buf = [0u8; 4096];
        let k = s
            .read(&mut buf)
            .map_err(|e| format!("Redis {line:?}: {e}"))?;
        Ok(String::from_utf8_lossy(&buf[..k]).trim_end().to_string())
    }

    pub fn conns(&self, n: usize) -> Result<Vec<TcpStream>, String> {
        (0..n)
            .map(|_| {
                TcpStream::connect_timeout(&self.addr, Duration::from_secs(3))
                    .map_err(|e| format!("cannot connect to Redis: {e}"))
            })
            .collect()
    }
}
