//! The servers under test, started as real processes on free loopback ports through the
//! shared harness (`groupshare::testkit`), so each dies with the bench: the tracker pair and
//! Redis instances. `LineConn` is the harness's raw tracker-protocol connection.

use crate::load::SetUp;
use crate::procs::{wait_for, wait_listening, Proc, TempDir};
use crate::tls::Tls;
use groupshare::auth::login as proofs;
use groupshare::auth::scram::{self, ClientKeys};
use groupshare::pieces::to_hex;
use groupshare::protocol::tracker::{Reply, Verb};
pub use groupshare::testkit::LineConn;
use groupshare::testkit::{free_ports, Cluster, TrackerLog};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The first tag a connection from `TrackerPair::logged_in` has not used (hello, create_user,
/// login_begin and login took 1 to 4).
pub const FIRST_FREE_TAG: u64 = 5;

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

/// Every bench user's password and salt: one key derivation serves them all, so setting up
/// thousands of sessions costs the bench no PBKDF2 per user (the tracker never runs one).
const PASSWORD: &str = "pw-bench";
const SALT: [u8; scram::SALT_LEN] = *b"groupshare-bench";

fn keys() -> &'static ClientKeys {
    static KEYS: OnceLock<ClientKeys> = OnceLock::new();
    KEYS.get_or_init(|| ClientKeys::derive(PASSWORD, &SALT, scram::MIN_ITERATIONS))
}

/// `create_user <u> <verifier>` with the bench's password, at the test count (4096).
pub fn create_user(u: &str) -> Verb {
    Verb::CreateUser {
        user: u.to_string(),
        verifier: keys().verifier(SALT, scram::MIN_ITERATIONS).encode(),
    }
}

/// `login_begin <u> <fresh nonce>`.
pub fn login_begin(u: &str) -> Result<Verb, String> {
    Ok(Verb::LoginBegin {
        user: u.to_string(),
        cnonce: proofs::random_hex(16)?,
    })
}

/// The `login` answering `begin`'s reply words (`<salt> <iterations> <snonce>`), with the
/// AuthMessage its reply's tracker proof is checked against. Bench users serve no pieces.
pub fn login_for(
    begin: &Verb,
    words: &[String],
    cb: Option<[u8; 32]>,
) -> Result<(Verb, Vec<u8>), String> {
    let (Verb::LoginBegin { user, cnonce }, [_, _, snonce]) = (begin, words) else {
        return Err(format!("login_begin answered {words:?}"));
    };
    let msg = proofs::auth_message(user, cnonce, snonce, &SALT, scram::MIN_ITERATIONS, cb);
    let login = Verb::Login {
        user: user.clone(),
        proof: to_hex(&keys().proof(&msg)),
        addr: "127.0.0.1:1".to_string(),
    };
    Ok((login, msg))
}

/// The whole login of bench user `u` on `c`; returns token and secret (hex).
pub fn login(c: &mut LineConn, u: &str) -> Result<(String, String), String> {
    let begin = login_begin(u)?;
    let words = match c.ok(&begin)? {
        Reply::Ok(w) => w,
        r => return Err(format!("login_begin answered {r:?}")),
    };
    let (login, msg) = login_for(&begin, &words, c.channel_binding())?;
    match c.ok(&login)? {
        Reply::Ok(w) => groupshare::testkit::check_login_reply(keys(), &msg, &w),
        r => Err(format!("login answered {r:?}")),
    }
}

/// Quotas and rates for the load cases: one bench user creates hundreds of thousands of groups
/// and thousands of users come from one address, which the defaults (made for people) refuse.
pub const BENCH_LIMITS: &[&str] = &[
    "--max-groups-per-user",
    "100000000",
    "--max-groups",
    "100000000",
    "--max-users",
    "100000000",
    "--registration-burst",
    "1000000",
    "--registrations-per-minute",
    "1000000",
];

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
        let mut cluster = Cluster::new(tracker_bin, 2, &format!("bench-{tag}"), TrackerLog::Quiet)?;
        for n in 1..=2 {
            cluster.spawn_with(n, BENCH_LIMITS)?;
        }
        for n in 1..=2 {
            cluster.wait_serving(n)?;
        }
        let leader = cluster.wait_paired()?;
        Ok(TrackerPair { cluster, leader })
    }

    /// One tracker alone (a one-line tracker_info): the same code without replication, to
    /// show what the second tracker costs a durable write.
    pub fn start_single(tracker_bin: &Path, tag: &str) -> Result<TrackerPair, String> {
        let mut cluster = Cluster::new(tracker_bin, 1, &format!("bench-{tag}"), TrackerLog::Quiet)?;
        cluster.spawn_with(1, BENCH_LIMITS)?;
        wait_for(
            "the single tracker to serve",
            Duration::from_secs(20),
            || (cluster.role(1).as_deref() == Some("leader-solo")).then_some(()),
        )?;
        Ok(TrackerPair { cluster, leader: 1 })
    }

    /// `n` connections to tracker `t`, each said hello, created user `<prefix><i>` and logged
    /// in (set-up pipelined across connections: hello, create_user and login_begin, then the
    /// logins). The next free tag of each is `FIRST_FREE_TAG`.
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
            let begin = login_begin(&u)?;
            c.send(&hello())?;
            c.send(&create_user(&u))?;
            c.send(&begin)?;
            conns.push((c, begin));
        }
        let mut logging_in = Vec::with_capacity(n);
        for (mut c, begin) in conns {
            for what in ["hello", "create_user"] {
                let r = c.read_reply()?;
                if !matches!(r, Reply::Ok(_)) {
                    return Err(format!("set-up {what} at tracker {t} refused: {r:?}"));
                }
            }
            let words = match c.read_reply()? {
                Reply::Ok(w) => w,
                r => return Err(format!("set-up login_begin at tracker {t} refused: {r:?}")),
            };
            let (login, msg) = login_for(&begin, &words, c.channel_binding())?;
            c.send(&login)?;
            logging_in.push((c, msg));
        }
        let mut out = Vec::with_capacity(n);
        for (mut c, msg) in logging_in {
            match c.read_reply()? {
                Reply::Ok(w) => groupshare::testkit::check_login_reply(keys(), &msg, &w)?,
                r => return Err(format!("set-up login at tracker {t} refused: {r:?}")),
            };
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

/// The Redis side of the bench: the binary, and TLS when it can be had (see `tls`).
pub struct RedisKit {
    pub bin: PathBuf,
    pub tls: Option<Tls>,
    /// Why the anchors are plain, when they are.
    pub plain_why: Option<String>,
}

impl RedisKit {
    /// Makes the TLS certificates and checks that this `redis-server` serves TLS with them;
    /// on any failure the anchors stay plain, with the reason kept for the report.
    pub fn new(bin: PathBuf) -> RedisKit {
        let mut kit = RedisKit {
            bin,
            tls: None,
            plain_why: None,
        };
        match Tls::make() {
            Ok(tls) => {
                kit.tls = Some(tls);
                if let Err(e) = Redis::start(&kit, false).and_then(|r| r.conns(1).map(drop)) {
                    kit.tls = None;
                    kit.plain_why = Some(format!("this redis-server does not serve TLS ({e})"));
                }
            }
            Err(e) => kit.plain_why = Some(format!("no TLS certificates: {e}")),
        }
        kit
    }

    /// How the anchors' connections travel, for the report.
    pub fn transport(&self) -> &'static str {
        if self.tls.is_some() {
            "TLS 1.3"
        } else {
            "plain TCP"
        }
    }
}

/// One Redis instance of our own: loopback, its own temp dir, no snapshots; `durable` turns on
/// the append-only file with an fsync before every reply. With the kit's TLS it also listens on
/// a TLS port, where every load connection goes (and a replica reaches its primary); the plain
/// port serves the bench's own set-up commands.
pub struct Redis {
    pub addr: SocketAddr,
    /// The TLS port's address, with the client configuration that trusts it.
    tls: Option<(SocketAddr, Arc<rustls::ClientConfig>)>,
    pub proc: Proc,
    _dir: TempDir,
}

impl Redis {
    pub fn start(kit: &RedisKit, durable: bool) -> Result<Redis, String> {
        let dir = TempDir::new(if durable {
            "bench-redis-aof"
        } else {
            "bench-redis"
        })?;
        let ports = free_ports(2)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        let mut cmd = Command::new(&kit.bin);
        cmd.arg("--port")
            .arg(ports[0].to_string())
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
        let tls = kit.tls.as_ref().map(|t| {
            cmd.args(t.redis_args(ports[1]));
            (SocketAddr::from(([127, 0, 0, 1], ports[1])), t.config())
        });
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn("redis-server", &mut cmd)?;
        let r = Redis {
            addr,
            tls,
            proc,
            _dir: dir,
        };
        wait_listening(addr, Duration::from_secs(10))?;
        if let Some((tls_addr, _)) = &r.tls {
            wait_listening(*tls_addr, Duration::from_secs(10))?;
        }
        Ok(r)
    }

    /// Where load goes: the TLS port when there is one.
    pub fn load_addr(&self) -> SocketAddr {
        self.tls.as_ref().map_or(self.addr, |(a, _)| *a)
    }

    /// A blocking command with a one-line (or bulk) reply, for set-up (plain port).
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

    /// `n` load connections (through TLS when the kit has it), blocking (20 s read timeout),
    /// set up.
    pub fn conns(&self, n: usize) -> Result<Vec<SetUp>, String> {
        (0..n)
            .map(|_| match &self.tls {
                Some((a, config)) => {
                    crate::tls::connect_with(config, *a).map(|t| SetUp::Tls(Box::new(t)))
                }
                None => {
                    let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(3))
                        .map_err(|e| format!("cannot connect to Redis: {e}"))?;
                    s.set_read_timeout(Some(Duration::from_secs(20)))
                        .map_err(|e| format!("set_read_timeout: {e}"))?;
                    Ok(SetUp::Plain(s))
                }
            })
            .collect()
    }
}
