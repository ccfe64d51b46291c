//! Case B: many idle connections, held by a separate process (this binary in helper mode), and
//! what they cost the server: resident memory per connection and the latency of a small request
//! from a fresh connection while they are open.

use crate::load::percentile;
use crate::procs::{open_fds, piped, rss_bytes, wait_for, Proc};
use crate::servers::LineConn;
use groupshare::protocol::tracker::{Reply, Verb};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What the helper does on each connection before going idle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Connect and never send anything.
    Silent,
    /// One tracker `ping` (its reply read), then idle: buffers used once must be given back.
    TrackerPing,
    /// One Redis `PING`, then idle.
    RedisPing,
}

impl IdleMode {
    pub fn arg(self) -> &'static str {
        match self {
            IdleMode::Silent => "silent",
            IdleMode::TrackerPing => "tracker-ping",
            IdleMode::RedisPing => "redis-ping",
        }
    }
}

/// Helper mode: `bench --hold-idle <addr> <n> <mode>`. Opens the connections, prints
/// `ready <n>`, then holds them until its standard input closes.
pub fn hold_idle(args: &[String]) -> Result<(), String> {
    let (addr, n, mode, ca) =
        match args {
            [addr, n, mode] => (addr, n, mode, None),
            [addr, n, mode, ca] => (addr, n, mode, Some(Path::new(ca))),
            _ => return Err(
                "usage: bench --hold-idle <addr> <n> <silent|tracker-ping|redis-ping> [<TLS CA>]"
                    .into(),
            ),
        };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    let n: usize = n.parse().map_err(|e| format!("bad count {n}: {e}"))?;
    groupshare::runtime::raise_fd_limit();
    if mode == "tracker-ping" {
        return hold_tracker_sessions(addr, n);
    }
    if let (Some(ca), "redis-ping") = (ca, mode.as_str()) {
        return hold_redis_tls(addr, n, ca);
    }
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connection {i} of {n} to {addr}: {e}"))?;
        conns.push(s);
    }
    let (req, want): (&[u8], &[u8]) = match mode.as_str() {
        "silent" => (b"", b""),
        "redis-ping" => (b"PING\r\n", b"+PONG\r\n"),
        m => return Err(format!("unknown idle mode {m}")),
    };
    if !req.is_empty() {
        for s in conns.iter_mut() {
            s.write_all(req).map_err(|e| format!("sending ping: {e}"))?;
        }
        let mut buf = vec![0u8; want.len()];
        for (i, s) in conns.iter_mut().enumerate() {
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .map_err(|e| format!("set_read_timeout: {e}"))?;
            s.read_exact(&mut buf)
                .map_err(|e| format!("reading the ping reply on connection {i}: {e}"))?;
            if buf != want {
                return Err(format!(
                    "connection {i}: unexpected ping reply {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    }
    println!("ready {n}");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    // Hold until the parent closes our stdin (or kills us).
    let mut sink = String::new();
    let _ = BufReader::new(std::io::stdin()).read_line(&mut sink);
    Ok(())
}

/// `tracker-ping`: each connection completes the secure channel's handshake and one `ping`
/// inside it (the tracker refuses anything in clear), then idles.
fn hold_tracker_sessions(addr: SocketAddr, n: usize) -> Result<(), String> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = LineConn::connect(addr).map_err(|e| format!("connection {i} of {n}: {e}"))?;
        match c.req(&Verb::Ping) {
            Ok(Reply::Ok(words)) if words == ["pong"] => {}
            other => return Err(format!("connection {i} of {n}: ping answered {other:?}")),
        }
        conns.push(c);
    }
    println!("ready {n}");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    let mut sink = String::new();
    let _ = BufReader::new(std::io::stdin()).read_line(&mut sink);
    Ok(())
}

/// `redis-ping` over TLS: each connection completes the TLS handshake and one `PING`, then
/// idles.
fn hold_redis_tls(addr: SocketAddr, n: usize, ca: &Path) -> Result<(), String> {
    let config = crate::tls::client_config(ca)?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = crate::tls::connect_with(&config, addr)
            .map_err(|e| format!("connection {i} of {n}: {e}"))?;
        redis_ping(&mut c).map_err(|e| format!("connection {i} of {n}: {e}"))?;
        conns.push(c);
    }
    println!("ready {n}");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    let mut sink = String::new();
    let _ = BufReader::new(std::io::stdin()).read_line(&mut sink);
    Ok(())
}

/// One `PING` and its `+PONG` on a blocking connection.
fn redis_ping(s: &mut (impl Read + Write)) -> Result<(), String> {
    s.write_all(b"PING\r\n")
        .and_then(|()| s.flush())
        .map_err(|e| format!("Redis PING: {e}"))?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)
        .map_err(|e| format!("Redis PING reply: {e}"))?;
    if &buf != b"+PONG\r\n" {
        return Err(format!(
            "Redis PING answered {:?}",
            String::from_utf8_lossy(&buf)
        ));
    }
    Ok(())
}

/// A blocking connection to Redis, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Who the idle connections and the latency probe talk to.
#[derive(Clone, Copy)]
pub enum Speaker<'a> {
    Tracker,
    /// Redis, over TLS when its CA is given.
    Redis {
        tls_ca: Option<&'a Path>,
    },
}

/// One idle-connection measurement.
#[derive(Clone, Debug)]
pub struct IdleResult {
    pub n: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    /// Small-request latency from a fresh connection, before and while the idle ones are open.
    pub lat_before: (f64, f64),
    pub lat_during: (f64, f64),
}

impl IdleResult {
    pub fn per_conn(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.n as f64
    }
}

/// Opens `n` idle connections to `addr` from a helper process and measures server `pid`.
pub fn measure(
    pid: u32,
    addr: SocketAddr,
    n: usize,
    mode: IdleMode,
    speaker: Speaker<'_>,
    lat_requests: usize,
) -> Result<IdleResult, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let lat_before = ping_latency(addr, speaker, lat_requests)?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = rss_bytes(pid)?;
    let fds_before = open_fds(pid)?;
    let mut helper = Proc::spawn(
        "idle-connection helper",
        piped(
            Command::new(exe)
                .arg("--hold-idle")
                .arg(addr.to_string())
                .arg(n.to_string())
                .arg(mode.arg())
                .args(match speaker {
                    Speaker::Redis { tls_ca: Some(ca) } => vec![ca.as_os_str()],
                    _ => vec![],
                }),
        ),
    )?;
    let line = helper.read_line()?;
    if line != format!("ready {n}") {
        return Err(format!("idle helper said {line:?}"));
    }
    // Every connection accepted by the server (it holds a descriptor for each).
    wait_for(
        &format!("the server to accept {n} connections"),
        Duration::from_secs(30),
        || (open_fds(pid).ok()? >= fds_before + n).then_some(()),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = rss_bytes(pid)?;
    let lat_during = ping_latency(addr, speaker, lat_requests)?;
    helper.kill();
    Ok(IdleResult {
        n,
        rss_before,
        rss_after,
        lat_before,
        lat_during,
    })
}

/// p50/p99 (µs) of `count` sequential pings from one fresh connection.
pub fn ping_latency(
    addr: SocketAddr,
    speaker: Speaker<'_>,
    count: usize,
) -> Result<(f64, f64), String> {
    let mut samples = Vec::with_capacity(count);
    if let Speaker::Redis { tls_ca } = speaker {
        let mut s: Box<dyn ReadWrite> = match tls_ca {
            Some(ca) => Box::new(crate::tls::connect_with(
                &crate::tls::client_config(ca)?,
                addr,
            )?),
            None => {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| format!("set_read_timeout: {e}"))?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        };
        for _ in 0..count {
            let t0 = Instant::now();
            redis_ping(&mut s)?;
            samples.push(t0.elapsed().as_nanos() as u64);
        }
    } else {
        let mut c = LineConn::connect(addr)?;
        c.ok(&crate::servers::hello())?;
        for _ in 0..count {
            let t0 = Instant::now();
            let r = c.req(&Verb::Ping)?;
            samples.push(t0.elapsed().as_nanos() as u64);
            if r != Reply::Ok(vec!["pong".to_string()]) {
                return Err(format!("ping answered {r:?}"));
            }
        }
    }
    samples.sort_unstable();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}
