//! The fair anchor for a replicated write: a Redis primary with one replica, `appendfsync
//! always` on both, every `SET` followed by `WAIT 1 0` (answered once the replica has
//! acknowledged the write). It is still weaker than a tracker write, which is answered only
//! once the follower has *fsynced* the entry: Redis' replica acknowledges what it has
//! processed, on its own schedule of fsyncs.
//!
//! Both processes are `servers::Redis` instances (own temp dir, free loopback port, killed on
//! drop, on error too), over TLS when the kit has it (`--tls-replication`); the replica is attached with `REPLICAOF` and the anchor waits until
//! the primary sees it online before any load runs.

use crate::load::{Conns, Plan, Proto, Stats};
use crate::report::{thousands, us, verdict};
use crate::servers::{Redis, RedisKit};
use crate::{Results, Settings};
use std::fmt::Write;
use std::time::Duration;

/// The replica's initial sync of an empty data set takes well under a second; the margin is
/// for a loaded machine.
const LINK_UP_LIMIT: Duration = Duration::from_secs(20);

/// One anchor measurement, run right after the leader's replicated write at the same depth.
#[derive(Clone, Debug)]
pub struct AnchorRow {
    pub depth: usize,
    pub stats: Stats,
}

pub struct RedisPair {
    conns: Conns,
    // Dropped after the connections: both processes die with the anchor.
    _replica: Redis,
    _primary: Redis,
}

impl RedisPair {
    /// With the kit's TLS the replica reaches the primary over TLS too.
    pub fn start(s: &Settings, kit: &RedisKit) -> Result<RedisPair, String> {
        let primary = Redis::start(kit, true)?;
        let replica = Redis::start(kit, true)?;
        for (who, r) in [("primary", &primary), ("replica", &replica)] {
            let cfg = r.command("CONFIG GET appendfsync")?;
            if !cfg.contains("always") {
                return Err(format!(
                    "Redis {who} did not take appendfsync always: {cfg:?}"
                ));
            }
        }
        let port = primary.load_addr().port();
        let answer = replica.command(&format!("REPLICAOF 127.0.0.1 {port}"))?;
        if !answer.starts_with("+OK") {
            return Err(format!("Redis replica refused REPLICAOF: {answer:?}"));
        }
        crate::procs::wait_for(
            "the Redis replica to come online at the primary",
            LINK_UP_LIMIT,
            || {
                let info = primary.command("INFO replication").ok()?;
                replica_online(&info).then_some(())
            },
        )?;
        // One acknowledged write proves the whole path (SET, replication, WAIT) before timing.
        let mut probe = primary.conns(1)?;
        let ack = wait_probe(&mut probe[0])?;
        if ack != ":1" {
            return Err(format!("Redis WAIT 1 0 answered {ack:?}, expected :1"));
        }
        Ok(RedisPair {
            conns: Conns::new(primary.conns(s.conns)?, 1)?,
            _replica: replica,
            _primary: primary,
        })
    }

    pub fn run(&mut self, plan: Plan) -> Result<Stats, String> {
        self.conns.run(Proto::RedisPairs, plan, |c, tag, out| {
            out.extend_from_slice(format!("SET r{c}x{tag} 1\r\nWAIT 1 0\r\n").as_bytes())
        })
    }
}

/// Whether `INFO replication` of the primary lists a replica in state `online`.
fn replica_online(info: &str) -> bool {
    info.lines()
        .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
}

/// `SET` + `WAIT 1 0` on a set-up connection (its 20 s read timeout covers the replica's
/// first acknowledgement); the `WAIT` reply.
fn wait_probe(s: &mut crate::load::SetUp) -> Result<String, String> {
    use std::io::{BufRead, BufReader, Write as _};
    s.write_all(b"SET probe 1\r\nWAIT 1 0\r\n")
        .map_err(|e| format!("Redis probe write: {e}"))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        r.read_line(&mut line)
            .map_err(|e| format!("Redis probe (SET + WAIT 1 0) reply: {e}"))?;
    }
    Ok(line.trim_end().to_string())
}

/// The replicated tracker write rows (leader and follower) at `depth`, with the anchor.
fn replicated_rows(r: &Results, depth: usize) -> impl Iterator<Item = &crate::LoadRow> {
    r.load
        .iter()
        .filter(move |row| row.write && row.depth == depth && !row.name.contains("single tracker"))
}

/// Target rows: every replicated `create_group` row against the anchor at its depth.
pub fn target_rows(o: &mut String, r: &Results) {
    for a in &r.redis_pair {
        for row in replicated_rows(r, a.depth) {
            let ratio = row.tracker.rate() / a.stats.rate();
            let _ = writeln!(
                o,
                "| {}, depth {}: ≥ Redis primary + replica (`SET` + `WAIT 1 0`, `appendfsync always` on both) | {} req/s | {} req/s | {ratio:.2} | {} |",
                row.name,
                row.depth,
                thousands(row.tracker.rate()),
                thousands(a.stats.rate()),
                verdict(Some(ratio >= 1.0 && row.tracker.errors == 0 && a.stats.errors == 0))
            );
        }
    }
}

/// Part A's second table: the anchor beside the replicated writes.
pub fn section(o: &mut String, r: &Results) {
    if r.redis_pair.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "### Replicated writes against a replicated Redis\n\n\
         The fair anchor for a replicated write: a Redis primary with one replica (both \
         `appendonly yes`, `appendfsync always`, each in its own temporary directory on a free \
         loopback port, started and stopped by the bench), the same connection count, every \
         request a `SET` of a new key followed by `WAIT 1 0` — answered once the replica has \
         acknowledged it. That is still weaker than a tracker write, which is answered only \
         once the follower has fsynced the entry. Each anchor case runs right after the \
         leader's write case of the same depth. With TLS (see part A) the clients and the \
         replica's link to the primary both speak TLS, as the trackers' link speaks Noise.\n"
    );
    let _ = writeln!(
        o,
        "| case | depth | tracker req/s | p50 | p99 | Redis pair req/s | p50 | p99 | tracker / Redis pair |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for a in &r.redis_pair {
        for row in replicated_rows(r, a.depth) {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                row.name,
                row.depth,
                thousands(row.tracker.rate()),
                us(row.tracker.p50_us),
                us(row.tracker.p99_us),
                thousands(a.stats.rate()),
                us(a.stats.p50_us),
                us(a.stats.p99_us),
                row.tracker.rate() / a.stats.rate()
            );
        }
    }
    let _ = writeln!(o);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write as _};
    use std::net::TcpListener;

    /// A stand-in for Redis on one connection: `+OK` (or `set_reply`) to each `SET`, `:1` to
    /// each `WAIT`, until the client closes. Returns how many `WAIT`s it answered.
    fn fake_redis(set_reply: &'static str) -> (std::net::SocketAddr, std::thread::JoinHandle<u64>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = l.local_addr().expect("local_addr");
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut w = s.try_clone().expect("clone");
            let mut waits = 0;
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                let reply = if line.starts_with("WAIT") {
                    waits += 1;
                    ":1\r\n"
                } else {
                    set_reply
                };
                if w.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
            waits
        });
        (addr, h)
    }

    fn run_against(set_reply: &'static str) -> (Stats, u64) {
        let (addr, server) = fake_redis(set_reply);
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        let mut conns = Conns::new(vec![stream], 1).expect("conns");
        let plan = Plan {
            depth: 4,
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(150),
        };
        let st = conns.run(Proto::RedisPairs, plan, |c, tag, out| {
            out.extend_from_slice(format!("SET r{c}x{tag} 1\r\nWAIT 1 0\r\n").as_bytes())
        });
        drop(conns);
        let waits = server.join().expect("fake server");
        (st.expect("the run"), waits)
    }

    #[test]
    fn a_set_and_its_wait_count_as_one_request() {
        // Counting each reply as a request would pop a second send time that does not exist:
        // the run would fail with "a reply nobody asked for".
        let (st, waits) = run_against("+OK\r\n");
        assert!(st.replies > 0);
        assert!(
            st.replies <= waits,
            "{} replies for {waits} WAITs",
            st.replies
        );
        assert_eq!(st.errors, 0);
    }

    #[test]
    fn an_error_to_the_set_marks_the_pair_as_an_error() {
        let (st, waits) = run_against("-ERR out of memory\r\n");
        assert!(st.errors > 0 && st.errors <= waits);
        assert!(st.first_error.unwrap_or_default().contains("out of memory"));
    }

    #[test]
    fn replica_online_needs_the_online_state() {
        let up = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
                  slave0:ip=127.0.0.1,port=7001,state=online,offset=14,lag=0\r\n";
        let syncing = "role:master\r\nconnected_slaves:1\r\n\
                       slave0:ip=127.0.0.1,port=7001,state=wait_bgsave,offset=0,lag=0\r\n";
        assert!(replica_online(up));
        assert!(!replica_online(syncing));
        assert!(!replica_online("role:master\r\nconnected_slaves:0\r\n"));
    }
}
