//! The servers under test, started as real processes on free loopback ports through the
//! shared harness (`groupshare::testkit`), so each dies with the bench: the tracker pair and
//! Redis instances. `LineConn` is the harness's raw tracker-protocol connection.

use crate::procs::{wait_for, wait_listening, Proc, TempDir};
use groupshare::protocol::tracker::{Reply, Verb};
pub use groupshare::testkit::LineConn;
use groupshare::testkit::{free_ports, Cluster, TrackerLog};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A fresh client instance id, as `hello` carries it.
pub fn instance_id() -> u64 {
    groupshare::runtime::seed_u64() | 1
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

/// A running tracker pair (or a single tracker): the harness's `Cluster`, whose fields and
/// methods are reached through `Deref`, and which tracker led when the pair formed.
pub struct TrackerPair {
    pub cluster: Cluster,
    /// Which tracker (1 or 2) leads; brand-new trackers started together may pick either
    /// (tracker 2 serves alone at once if its first dial is refused, and then its log is longer).
    pub leader: usize,
}

impl Deref for TrackerPair {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DerefMut for TrackerPair {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

impl TrackerPair {
    pub fn start(tracker_bin: &Path, tag: &str) -> Result<TrackerPair, String> {
        let cluster = Cluster::start(tracker_bin, 2, &format!("bench-{tag}"), TrackerLog::Quiet)?;
        let leader = cluster.wait_paired()?;
        Ok(TrackerPair { cluster, leader })
    }

    /// One tracker alone (a one-line tracker_info): the same code without replication, to
    /// show what the second tracker costs a durable write.
    pub fn start_single(tracker_bin: &Path, tag: &str) -> Result<TrackerPair, String> {
        let mut cluster = Cluster::new(tracker_bin, 1, &format!("bench-{tag}"), TrackerLog::Quiet)?;
        cluster.spawn(1)?;
        wait_for(
            "the single tracker to serve",
            Duration::from_secs(20),
            || (cluster.role(1).as_deref() == Some("leader-solo")).then_some(()),
        )?;
        Ok(TrackerPair { cluster, leader: 1 })
    }

    /// `n` connections to tracker `t`, each said hello, created user `<prefix><i>` and logged
    /// in (set-up pipelined per connection). The next free tag of each is 4.
    pub fn logged_in(
        &self,
        t: usize,
        prefix: &str,
        n: usize,
    ) -> Result<Vec<groupshare::testkit::conn::SecureConn>, String> {
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
    pub proc: Proc,
    _dir: TempDir,
}

impl Redis {
    pub fn start(bin: &Path, durable: bool) -> Result<Redis, String> {
        let dir = TempDir::new(if durable {
            "bench-redis-aof"
        } else {
            "bench-redis"
        })?;
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
        let proc = Proc::spawn("redis-server", &mut cmd)?;
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
