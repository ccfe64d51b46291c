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
mod throughput;
mod tls;
mod transfer;

use groupshare::protocol::tracker::{Request, Verb};
use load::{Conns, Plan, Proto, Stats};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use throughput::{part_a, profile_load, run_writes};

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
                transfer_runs: 5,
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
    let mut only_downloads = false;
    let mut only_idle = false;
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
            "--only-downloads" => only_downloads = true,
            "--only-idle" => only_idle = true,
            "--out" => match it.next() {
                Some(p) => out = PathBuf::from(p),
                None => {
                    eprintln!("error: --out needs a path");
                    return ExitCode::FAILURE;
                }
            },
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--only-c] [--only-flash] [--only-writes] [--only-compaction] [--only-login] [--only-flood] [--only-downloads] [--only-idle] [--out PATH]\n\n\
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
                     --only-downloads  only the downloads from 1-3 seeders (C1), each run printed as it\n                \
                     ends; writes no report\n  \
                     --only-idle  only part B (idle connections); prints it, writes no report\n  \
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
    if only_idle {
        let s = Settings::new(quick);
        let mut r = Results::default();
        let run = groupshare::testkit::sibling_bin("tracker").and_then(|t| {
            let kit = servers::find_redis().map(servers::RedisKit::new);
            part_b(&s, &t, kit.as_ref(), &mut r)
        });
        if let Err(e) = run {
            eprintln!("bench: error: {e}");
            return ExitCode::FAILURE;
        }
        for (what, res) in &r.idle {
            match res {
                Ok(i) => println!(
                    "{what}: {} connections, {:.0} B each; ping p50/p99 {:.0}/{:.0} µs before, {:.0}/{:.0} µs during",
                    i.n,
                    i.per_conn(),
                    i.lat_before.0,
                    i.lat_before.1,
                    i.lat_during.0,
                    i.lat_during.1
                ),
                Err(e) => println!("{what}: failed: {e}"),
            }
        }
        return ExitCode::SUCCESS;
    }
    if only_downloads {
        return match transfer::run_alone(&Settings::new(quick)) {
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
    let redis = servers::find_redis().map(servers::RedisKit::new);
    match &redis {
        Some(kit) => {
            r.redis_version = Some(format!(
                "{}; its clients connect over {}{}",
                servers::redis_version(&kit.bin),
                kit.transport(),
                kit.plain_why
                    .as_ref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ))
        }
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
        part_a(&s, &tracker_bin, redis.as_ref(), &mut r)?;
        eprintln!("bench: B. {} idle connections", s.idle_conns);
        part_b(&s, &tracker_bin, redis.as_ref(), &mut r)?;
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

fn part_b(
    s: &Settings,
    tracker_bin: &std::path::Path,
    redis: Option<&servers::RedisKit>,
    r: &mut Results,
) -> Result<(), String> {
    use idle::{IdleMode, Speaker};
    for mode in [IdleMode::Silent, IdleMode::TrackerPing] {
        // A fresh pair each time, so earlier load leaves no freed memory to reuse.
        let pair = servers::TrackerPair::start(tracker_bin, "b")?;
        let res = idle::measure(
            pair.pid(pair.leader),
            pair.addrs[pair.leader - 1],
            s.idle_conns,
            mode,
            Speaker::Tracker,
            s.lat_requests,
        );
        let what = match mode {
            IdleMode::Silent => "tracker (leader), connections that never sent a byte",
            _ => "tracker (leader), connections idle after the secure handshake and one `ping`",
        };
        r.idle.push((what.to_string(), res));
    }
    if let Some(kit) = redis {
        let over = kit.transport();
        for mode in [IdleMode::Silent, IdleMode::RedisPing] {
            let red = servers::Redis::start(kit, false)?;
            let res = idle::measure(
                red.proc.pid(),
                red.load_addr(),
                s.idle_conns,
                mode,
                Speaker::Redis {
                    tls_ca: kit.tls.as_ref().map(|t| t.ca.as_path()),
                },
                s.lat_requests,
            );
            let what = match mode {
                IdleMode::Silent => {
                    format!("Redis ({over} port), connections that never sent a byte")
                }
                _ => format!("Redis, connections idle after one `PING` over {over}"),
            };
            r.idle.push((what, res));
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
