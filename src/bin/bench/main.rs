//! `bench [--quick] [--out PATH]`: the benchmark report behind `make bench`.
//!
//! Starts everything it measures itself on free loopback ports (a tracker pair, Redis if
//! `redis-server` is on PATH, helper processes), stops all of it when it returns — on error too
//! — and writes docs/BENCHMARKS.md: every figure next to a bound measured in the same run.
//!
//! Helper mode (used by the bench itself): `bench --hold-idle <addr> <n> <mode>`.

mod charts;
mod clients;
mod compaction;
mod failover;
mod flash;
mod flood;
mod idle;
mod load;
mod login;
mod procs;
mod redis_pair;
mod report;
mod servers;
mod svg;
mod transfer;

use groupshare::protocol::tracker::{Request, Verb};
use load::{Conns, Plan, Proto, Stats};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Durations and sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub quick: bool,
    pub conns: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub idle_conns: usize,
    pub lat_requests: usize,
    pub transfer_bytes: u64,
    pub hash_bytes: u64,
    pub failover_rounds: usize,
    /// Downloads per seeder count (C1); the median is reported.
    pub transfer_runs: usize,
    /// Client-side failover rounds (C5); the median is reported.
    pub client_failover_rounds: usize,
    /// Single downloads timed for the flash crowd's reference (C6); the median is used.
    pub flash_singles: usize,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                quick,
                conns: 50,
                warmup: Duration::from_millis(200),
                measure: Duration::from_millis(700),
                idle_conns: 1_000,
                lat_requests: 300,
                transfer_bytes: 256 << 20,
                hash_bytes: 256 << 20,
                failover_rounds: 1,
                transfer_runs: 1,
                client_failover_rounds: 3,
                flash_singles: 1,
            }
        } else {
            Settings {
                quick,
                conns: 50,
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(3),
                idle_conns: 10_000,
                lat_requests: 2_000,
                transfer_bytes: 1 << 30,
                hash_bytes: 1 << 30,
                failover_rounds: 3,
                transfer_runs: 3,
                client_failover_rounds: 5,
                flash_singles: 3,
            }
        }
    }

    fn plan(&self, depth: usize) -> Plan {
        Plan {
            depth,
            warmup: self.warmup,
            measure: self.measure,
        }
    }
}

/// One row of part A: a tracker case and its Redis counterpart.
#[derive(Clone, Debug)]
pub struct LoadRow {
    pub name: String,
    pub depth: usize,
    pub write: bool,
    pub tracker: Stats,
    pub redis: Option<Stats>,
}

/// Everything measured; `report` renders it.
#[derive(Debug, Default)]
pub struct Results {
    pub redis_version: Option<String>,
    pub load: Vec<LoadRow>,
    /// The replicated-write anchor (Redis primary + replica, `WAIT 1 0`), per depth.
    pub redis_pair: Vec<redis_pair::AnchorRow>,
    /// Flash-crowd completion times, for the chart (empty until that case is measured).
    pub flash_crowd_times: Vec<charts::FlashCrowdTimes>,
    /// The SVG figures written beside the report.
    pub figures: Vec<charts::Figure>,
    pub idle: Vec<(String, Result<idle::IdleResult, String>)>,
    pub download_bound: Option<Result<transfer::Rate, String>>,
    /// CPU time of the bound's receiving thread, seconds.
    pub download_bound_cpu: Option<f64>,
    pub page_cache_sha1: Option<Result<transfer::Rate, String>>,
    pub raw_sha1: Option<transfer::Rate>,
    pub downloads: Vec<(usize, Result<transfer::DownloadCase, transfer::Pending>)>,
    pub client_hashing: Option<Result<Vec<transfer::HashRun>, transfer::Pending>>,
    pub tracker_failover: Option<Result<Vec<f64>, String>>,
    pub client_failover: Option<Result<transfer::ClientFailover, transfer::Pending>>,
    pub flash: Option<Result<flash::FlashCase, transfer::Pending>>,
    pub compaction: Option<Result<compaction::CompactionResult, String>>,
    /// C7: the tracker's CPU per password login.
    pub login: Option<Result<login::LoginCost, String>>,
    /// Part E: honest clients' latency beside a flooding connection.
    pub flood: Option<Result<flood::FloodCase, String>>,
    pub notes: Vec<String>,
    pub elapsed: f64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hold-idle") {
        return match idle::hold_idle(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("error {e}");
                eprintln!("bench --hold-idle: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().map(String::as_str) == Some("--profile-load") {
        return match profile_load(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench --profile-load: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut quick = false;
    let mut only_c = false;
    let mut only_flash = false;
    let mut only_compaction = false;
    let mut only_login = false;
    let mut only_writes = false;
    let mut only_flood = false;
    let mut out = PathBuf::from("docs/BENCHMARKS.md");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only-c" => only_c = true,
            "--only-flash" => only_flash = true,
            "--only-compaction" => only_compaction = true,
            "--only-login" => only_login = true,
            "--only-writes" => only_writes = true,
            "--only-flood" => only_flood = true,
            "--out" => match it.next() {
                Some(p) => out = PathBuf::from(p),
                None => {
                    eprintln!("error: --out needs a path");
                    return ExitCode::FAILURE;
                }
            },
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--only-c] [--only-flash] [--only-writes] [--only-compaction] [--only-login] [--only-flood] [--out PATH]\n\n\
                     Benchmarks the tracker (and Redis, if redis-server is on PATH) on loopback\n\
                     and writes the report (default docs/BENCHMARKS.md).\n  \
                     --quick     short durations and fewer idle connections (smoke test)\n  \
                     --only-c    only part C (transfer, hashing, failover)\n  \
                     --only-flash  only the flash crowd (C6); prints it, writes no report\n  \
                     --only-compaction  only part D (the loop pause while compacting)\n  \
                     --only-login  only the login cost (C7); prints it, writes no report\n  \
                     --only-writes  only the leader's replicated writes against both Redis\n                \
                     anchors; prints them, writes no report\n  \
                     --only-flood  only part E (fairness under a flood); prints it, writes no report\n  \
                     --out PATH  where to write the report"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unknown argument {other:?} (try --help)");
                return ExitCode::FAILURE;
            }
        }
    }
    if only_flood {
        let s = Settings::new(quick);
        let r = Results {
            flood: Some(
                groupshare::testkit::sibling_bin("tracker").and_then(|t| flood::run(&s, &t)),
            ),
            ..Results::default()
        };
        let mut o = String::new();
        flood::section(&mut o, r.flood.as_ref());
        print!("{o}");
        return ExitCode::SUCCESS;
    }
    if only_login {
        return match login::run_alone(&Settings::new(quick)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if only_writes {
        return match run_writes(&Settings::new(quick)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if only_flash {
        return match flash::run_alone(&Settings::new(quick)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(Settings::new(quick), only_c, only_compaction, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    s: Settings,
    only_c: bool,
    only_compaction: bool,
    out: &std::path::Path,
) -> Result<(), String> {
    let t_start = Instant::now();
    let fd_limit = groupshare::runtime::raise_fd_limit();
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let client_bin = groupshare::testkit::sibling_bin("client")?;
    if !tracker_bin.is_file() {
        return Err(format!(
            "{} not found: build it first (cargo build --release --bins, or make bench)",
            tracker_bin.display()
        ));
    }
    let mut r = Results::default();
    let redis_bin = servers::find_redis();
    match &redis_bin {
        Some(b) => r.redis_version = Some(servers::redis_version(b)),
        None => r
            .notes
            .push("redis-server is not on PATH: the Redis columns are skipped.".into()),
    }
    if s.idle_conns + 100 > fd_limit as usize {
        r.notes.push(format!(
            "open-file limit {fd_limit} is below the idle connection count"
        ));
    }

    if !only_c && !only_compaction {
        eprintln!(
            "bench: A. tracker throughput and latency ({} connections)",
            s.conns
        );
        part_a(&s, &tracker_bin, redis_bin.as_deref(), &mut r)?;
        eprintln!("bench: B. {} idle connections", s.idle_conns);
        part_b(&s, &tracker_bin, redis_bin.as_deref(), &mut r)?;
        eprintln!("bench: E. honest clients beside a flooding connection");
        r.flood = Some(flood::run(&s, &tracker_bin));
    }
    if !only_compaction {
        eprintln!("bench: C. transfer and hashing bounds, failover");
        part_c(&s, &tracker_bin, &client_bin, &mut r)?;
    }
    let users = if s.quick { 100_000 } else { 1_000_000 };
    eprintln!("bench: D. loop pause while compacting {users} users");
    r.compaction = Some(compaction::run(&tracker_bin, users));
    r.elapsed = t_start.elapsed().as_secs_f64();

    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    charts::write_all(&s, &mut r, dir)?;
    let text = report::render(&s, &r);
    std::fs::write(out, &text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    print!("{text}");
    eprintln!("bench: wrote {} in {:.0} s", out.display(), r.elapsed);
    Ok(())
}

/// `--only-writes`: the leader's replicated `create_group` at depth 1 and 16 against the Redis
/// primary + replica anchor and the single Redis with `appendfsync always`, for iterating on
/// the write path. The machine is shared and noisy, so each Redis case runs twice right before
/// the tracker case it bounds and the second run is kept (the first warms the machine up to
/// the same state); one line per depth goes to standard output.
fn run_writes(s: &Settings) -> Result<(), String> {
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let redis_bin = servers::find_redis().ok_or("redis-server is not on PATH")?;
    let mut redis = RedisSide::start(s, &redis_bin)?;
    let mut anchor = redis_pair::RedisPair::start(s, &redis_bin)?;
    let mut pair = servers::TrackerPair::start(&tracker_bin, "w")?;
    let lead = pair.leader;
    let mut leader = Conns::new(pair.logged_in(lead, "l", s.conns)?, 4)?;
    println!(
        "| depth | tracker req/s | p50 | p99 | Redis pair req/s | tracker / pair | Redis AOF req/s | tracker / AOF |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for depth in [1, 16] {
        eprintln!("bench:   depth {depth}: Redis pair twice, Redis AOF twice, tracker");
        let _ = anchor.run(s.plan(depth))?;
        let pair_st = anchor.run(s.plan(depth))?;
        let _ = redis.run(s.plan(depth), true)?;
        let aof_st = redis.run(s.plan(depth), true)?;
        let st = leader
            .run(Proto::Tracker, s.plan(depth), |c, tag, out| {
                tracker_write(out, tag, format!("w{depth}c{c}t{tag}"))
            })
            .map_err(|e| format!("{e}\n{}", pair.log_tail()))?;
        pair.check_alive()?;
        if st.errors > 0 {
            return Err(format!(
                "{} error replies, first: {}",
                st.errors,
                st.first_error.unwrap_or_default()
            ));
        }
        println!(
            "| {depth} | {} | {} | {} | {} | {:.2} | {} | {:.2} |",
            report::thousands(st.rate()),
            report::us(st.p50_us),
            report::us(st.p99_us),
            report::thousands(pair_st.rate()),
            st.rate() / pair_st.rate(),
            report::thousands(aof_st.rate()),
            st.rate() / aof_st.rate(),
        );
    }
    Ok(())
}

fn tracker_read(_: usize, tag: u64, out: &mut Vec<u8>) {
    tracker_line(out, Request::new(tag, Verb::ListGroups));
}

/// `create_group <group>` with this tag, the write of the load cases.
fn tracker_write(out: &mut Vec<u8>, tag: u64, group: String) {
    tracker_line(out, Request::new(tag, Verb::CreateGroup { group }));
}

fn tracker_line(out: &mut Vec<u8>, req: Request) {
    out.extend_from_slice(req.encode().as_bytes());
    out.push(b'\n');
}

/// Redis' side of part A: a plain instance for reads, an AOF-always one for writes, with their
/// connections, run right after the matching tracker case so both see the same machine.
struct RedisSide {
    _plain: servers::Redis,
    _aof: servers::Redis,
    reads: Conns,
    writes: Conns,
}

impl RedisSide {
    fn start(s: &Settings, bin: &std::path::Path) -> Result<RedisSide, String> {
        let plain = servers::Redis::start(bin, false)?;
        // One small key, about the size of the tracker's `list_groups` reply.
        plain.command("SET bench bench-1-r0")?;
        let aof = servers::Redis::start(bin, true)?;
        let cfg = aof.command("CONFIG GET appendfsync")?;
        if !cfg.contains("always") {
            return Err(format!("Redis did not take appendfsync always: {cfg:?}"));
        }
        Ok(RedisSide {
            reads: Conns::new(plain.conns(s.conns)?, 1)?,
            writes: Conns::new(aof.conns(s.conns)?, 1)?,
            _plain: plain,
            _aof: aof,
        })
    }

    fn run(&mut self, plan: Plan, write: bool) -> Result<Stats, String> {
        if write {
            self.writes.run(Proto::Redis, plan, |c, tag, out| {
                out.extend_from_slice(format!("SET g{c}x{tag} 1\r\n").as_bytes())
            })
        } else {
            self.reads.run(Proto::Redis, plan, |_, _, out| {
                out.extend_from_slice(b"GET bench\r\n")
            })
        }
    }
}

fn part_a(
    s: &Settings,
    tracker_bin: &std::path::Path,
    redis_bin: Option<&std::path::Path>,
    r: &mut Results,
) -> Result<(), String> {
    let mut redis = match redis_bin {
        Some(bin) => Some(RedisSide::start(s, bin)?),
        None => None,
    };
    let mut anchor = match redis_bin {
        Some(bin) => match redis_pair::RedisPair::start(s, bin) {
            Ok(p) => Some(p),
            Err(e) => {
                r.notes.push(format!(
                    "the Redis primary + replica anchor could not start: {e}"
                ));
                None
            }
        },
        None => None,
    };
    let mut pair = servers::TrackerPair::start(tracker_bin, "a")?;
    part_a_tracker(s, &mut pair, redis.as_mut(), anchor.as_mut(), r)
        .map_err(|e| format!("{e}\n{}", pair.log_tail()))?;
    drop(pair);
    drop(anchor);
    let mut single = servers::TrackerPair::start_single(tracker_bin, "a1")?;
    part_a_single(s, &mut single, redis.as_mut(), r)
        .map_err(|e| format!("{e}\n{}", single.log_tail()))
}

/// Durable writes on one tracker alone: what replication costs (for information, no target).
fn part_a_single(
    s: &Settings,
    single: &mut servers::TrackerPair,
    mut redis: Option<&mut RedisSide>,
    r: &mut Results,
) -> Result<(), String> {
    let mut conns = Conns::new(single.logged_in(1, "s", s.conns)?, servers::FIRST_FREE_TAG)?;
    for depth in [1, 16] {
        let name = "durable write (`create_group`), single tracker (no replication)";
        eprintln!("bench:   {name}, depth {depth}");
        let st = conns.run(Proto::Tracker, s.plan(depth), |c, tag, out| {
            tracker_write(out, tag, format!("s{c}t{tag}"))
        })?;
        single.check_alive()?;
        let red = match redis.as_deref_mut() {
            Some(side) => Some(side.run(s.plan(depth), true)?),
            None => None,
        };
        r.load.push(LoadRow {
            name: name.to_string(),
            depth,
            write: true,
            tracker: st,
            redis: red,
        });
    }
    Ok(())
}

fn part_a_tracker(
    s: &Settings,
    pair: &mut servers::TrackerPair,
    mut redis: Option<&mut RedisSide>,
    mut anchor: Option<&mut redis_pair::RedisPair>,
    r: &mut Results,
) -> Result<(), String> {
    // One group, so list_groups has a one-line answer (comparable to a small GET).
    let (lead, foll) = (pair.leader, 3 - pair.leader);
    r.notes.push(format!(
        "Part A: the freshly started pair chose tracker {lead} as leader (tracker 2 leads when \
         its first dial is refused: it then serves alone at once and its log is longer)."
    ));
    let mut owner = servers::LineConn::connect(pair.addrs[lead - 1])?;
    owner.ok(&servers::hello())?;
    owner.ok(&servers::create_user("owner"))?;
    servers::login(&mut owner, "owner")?;
    owner.ok(&Verb::CreateGroup {
        group: "bench".into(),
    })?;

    let first = servers::FIRST_FREE_TAG;
    let mut leader = Conns::new(pair.logged_in(lead, "l", s.conns)?, first)?;
    // Opened when its first case comes: a logged-in connection silent for 25 s is taken for a
    // vanished client and closed, and the leader's cases take longer than that.
    let mut follower: Option<Conns> = None;
    let cases: [(&str, usize, bool, usize); 6] = [
        ("small read (`list_groups`), leader", 1, false, lead),
        ("small read (`list_groups`), leader", 16, false, lead),
        ("durable write (`create_group`), leader", 1, true, lead),
        ("durable write (`create_group`), leader", 16, true, lead),
        ("durable write (`create_group`), follower", 1, true, foll),
        ("durable write (`create_group`), follower", 16, true, foll),
    ];
    for (i, (name, depth, write, at)) in cases.into_iter().enumerate() {
        eprintln!("bench:   {name}, depth {depth}");
        let conns = if at == lead {
            &mut leader
        } else {
            match &mut follower {
                Some(f) => f,
                None => follower.insert(Conns::new(pair.logged_in(foll, "f", s.conns)?, first)?),
            }
        };
        let st = if write {
            conns.run(Proto::Tracker, s.plan(depth), |c, tag, out| {
                tracker_write(out, tag, format!("g{i}c{c}t{tag}"))
            })?
        } else {
            conns.run(Proto::Tracker, s.plan(depth), tracker_read)?
        };
        pair.check_alive()?;
        if st.errors > 0 {
            r.notes.push(format!(
                "{name}, depth {depth}: {} error replies, first: {}",
                st.errors,
                st.first_error.clone().unwrap_or_default()
            ));
        }
        let red = match redis.as_deref_mut() {
            Some(side) => Some(side.run(s.plan(depth), write)?),
            None => None,
        };
        r.load.push(LoadRow {
            name: name.to_string(),
            depth,
            write,
            tracker: st,
            redis: red,
        });
        if let Some(a) = anchor.as_deref_mut().filter(|_| write && at == lead) {
            eprintln!("bench:   Redis primary + replica, SET + WAIT 1 0, depth {depth}");
            let stats = a.run(s.plan(depth))?;
            r.redis_pair.push(redis_pair::AnchorRow { depth, stats });
        }
    }
    Ok(())
}

/// `bench --profile-load <read|write> <depth> <secs>`: one tracker case for `secs` seconds on
/// a fresh pair, with the trackers' pids on stderr, so `perf record -p` can be attached to it.
fn profile_load(args: &[String]) -> Result<(), String> {
    let [kind, depth, secs] = args else {
        return Err("usage: bench --profile-load <read|write> <depth> <secs>".into());
    };
    let depth: usize = depth.parse().map_err(|e| format!("depth: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("secs: {e}"))?;
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let pair = servers::TrackerPair::start(&tracker_bin, "profile")?;
    let lead = pair.leader;
    let mut owner = servers::LineConn::connect(pair.addrs[lead - 1])?;
    owner.ok(&servers::hello())?;
    owner.ok(&servers::create_user("owner"))?;
    servers::login(&mut owner, "owner")?;
    owner.ok(&Verb::CreateGroup {
        group: "bench".into(),
    })?;
    let mut conns = Conns::new(pair.logged_in(lead, "l", 50)?, servers::FIRST_FREE_TAG)?;
    eprintln!(
        "leader pid {} follower pid {}",
        pair.pid(lead),
        pair.pid(3 - lead)
    );
    let plan = Plan {
        depth,
        warmup: Duration::from_millis(300),
        measure: Duration::from_secs_f64(secs),
    };
    let st = if kind == "write" {
        conns.run(Proto::Tracker, plan, |c, tag, out| {
            tracker_write(out, tag, format!("p{c}t{tag}"))
        })?
    } else {
        conns.run(Proto::Tracker, plan, tracker_read)?
    };
    eprintln!(
        "{kind} depth {depth}: {:.0} req/s p50 {:.0} µs p99 {:.0} µs, {} errors",
        st.rate(),
        st.p50_us,
        st.p99_us,
        st.errors
    );
    Ok(())
}

fn part_b(
    s: &Settings,
    tracker_bin: &std::path::Path,
    redis_bin: Option<&std::path::Path>,
    r: &mut Results,
) -> Result<(), String> {
    use idle::IdleMode;
    for mode in [IdleMode::Silent, IdleMode::TrackerPing] {
        // A fresh pair each time, so earlier load leaves no freed memory to reuse.
        let pair = servers::TrackerPair::start(tracker_bin, "b")?;
        let res = idle::measure(
            pair.pid(pair.leader),
            pair.addrs[pair.leader - 1],
            s.idle_conns,
            mode,
            false,
            s.lat_requests,
        );
        let what = match mode {
            IdleMode::Silent => "tracker (leader), connections that never sent a byte",
            _ => "tracker (leader), connections idle after one `ping`",
        };
        r.idle.push((what.to_string(), res));
    }
    if let Some(bin) = redis_bin {
        for mode in [IdleMode::Silent, IdleMode::RedisPing] {
            let red = servers::Redis::start(bin, false)?;
            let res = idle::measure(
                red.proc.pid(),
                red.addr,
                s.idle_conns,
                mode,
                true,
                s.lat_requests,
            );
            let what = match mode {
                IdleMode::Silent => "Redis, connections that never sent a byte",
                _ => "Redis, connections idle after one `PING`",
            };
            r.idle.push((what.to_string(), res));
        }
    }
    Ok(())
}

fn part_c(
    s: &Settings,
    tracker_bin: &std::path::Path,
    client_bin: &std::path::Path,
    r: &mut Results,
) -> Result<(), String> {
    let dir = procs::TempDir::new("transfer")?;
    match transfer::download_bound(&dir, s.transfer_bytes) {
        Ok((rate, cpu, path)) => {
            r.download_bound = Some(Ok(rate));
            r.download_bound_cpu = Some(cpu);
            r.page_cache_sha1 = Some(transfer::page_cache_sha1(&path));
            let _ = std::fs::remove_file(&path);
        }
        Err(e) => r.download_bound = Some(Err(e)),
    }
    drop(dir);
    r.raw_sha1 = Some(transfer::raw_sha1(s.hash_bytes));
    match transfer::Swarm::start(client_bin, tracker_bin, s.transfer_bytes) {
        Ok(mut swarm) => {
            for seeders in 1..=3 {
                eprintln!(
                    "bench:   download from {seeders} seeder(s), {} run(s)",
                    s.transfer_runs
                );
                let res = transfer::download_from_seeders(&mut swarm, seeders, s.transfer_runs);
                if let Err(transfer::Pending::Failed(e)) = &res {
                    eprintln!("bench:   failed: {e}");
                }
                r.downloads.push((seeders, res));
            }
            eprintln!("bench:   client hashing");
            r.client_hashing = Some(transfer::client_hashing(&mut swarm, 3));
        }
        Err(e) => {
            for seeders in 1..=3 {
                r.downloads.push((seeders, Err(e.clone())));
            }
            r.client_hashing = Some(Err(e));
        }
    }
    r.flash = Some(flash::measure(s, tracker_bin, client_bin));
    eprintln!(
        "bench:   client failover, {} round(s)",
        s.client_failover_rounds
    );
    r.client_failover = Some(transfer::client_failover(
        client_bin,
        tracker_bin,
        s.client_failover_rounds,
    ));
    eprintln!("bench:   login cost");
    r.login = Some(login::cost(s, tracker_bin));
    let mut pair = servers::TrackerPair::start(tracker_bin, "c5")?;
    let res = failover::tracker_failover(&mut pair, s.failover_rounds)
        .map_err(|e| format!("{e}\n{}", pair.log_tail()));
    r.tracker_failover = Some(res);
    Ok(())
}
