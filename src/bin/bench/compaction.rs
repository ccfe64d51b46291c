//! Case D: the longest loop pause while the tracker compacts a state of 1,000,000 users
//! (100,000 with --quick). The state is a synthetic snapshot file written before the tracker
//! starts (a million `create_user` requests would each cost the bench a key derivation and a
//! round trip); a few writes then push the journal past `--compact-bytes`, which forks the
//! snapshot child. Meanwhile one connection sends `ping` back to back: the longest round trip
//! from the first write to the child's end is the pause a client saw, beside the longest in a
//! quiet window before it. Pings that overlapped one of the few triggering writes are left out
//! of the headline (they waited for that write's journal fsync, which every write costs,
//! compacting or not) and reported apart. The tracker's own log gives the time its loop spent
//! in the fork's turn (flush, fork; the new journal segment was created a turn earlier) and the
//! child's run time — about what the loop would have stalled for when the snapshot was written
//! on it.

use crate::procs::{rss_bytes, wait_for, Proc, TempDir};
use crate::servers::LineConn;
use crate::servers::{create_user, hello, login};
use groupshare::protocol::tracker::{Reply, Verb};
use groupshare::testkit::free_ports;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pings alone before the first write: the machine's own noise, for comparison.
const QUIET: Duration = Duration::from_secs(3);

/// The target for the worst pause (issue 10, item 5).
pub const TARGET_MS: f64 = 10.0;

#[derive(Debug, Clone)]
pub struct CompactionResult {
    pub users: usize,
    pub snapshot_bytes: u64,
    pub rss_bytes: u64,
    /// Of which on transparent huge pages (`AnonHugePages`), if readable.
    pub huge_bytes: Option<u64>,
    /// Longest `ping` round trip in the quiet seconds before any write.
    pub quiet_max_ms: f64,
    /// Longest `ping` round trip from the write that started the snapshot to its end.
    pub during_max_ms: f64,
    /// The same, counting also the pings that waited beside a write's journal fsync.
    pub with_writes_max_ms: f64,
    pub during_pings: usize,
    /// 99.9th percentile of the same round trips.
    pub during_p999_ms: f64,
    /// The tracker's own figure for its loop's part (flush, new segment, fork).
    pub loop_us: Option<u64>,
    /// How long the child took: what the loop would have stalled for before.
    pub child_ms: Option<u64>,
}

/// Round trips of back-to-back `ping`s: (when sent, round trip).
type Pings = Vec<(Instant, Duration)>;

pub fn run(tracker_bin: &Path, users: usize) -> Result<CompactionResult, String> {
    let dir = TempDir::new("compaction")?;
    let data = dir.path().join("t1");
    std::fs::create_dir_all(&data).map_err(|e| format!("mkdir {}: {e}", data.display()))?;
    let snapshot_bytes = write_snapshot(&data.join("snapshot"), users)?;
    let port = free_ports(1)?[0];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(dir.path().join("tracker_info"), format!("{addr}\n"))
        .map_err(|e| format!("cannot write tracker_info: {e}"))?;
    let log_path = dir.path().join("t1.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
    let mut tracker = Proc::spawn(
        "tracker (compaction)",
        Command::new(tracker_bin)
            .arg(dir.path().join("tracker_info"))
            .arg("1")
            .arg("--data-dir")
            .arg(&data)
            .args(["--compact-bytes", "1024"])
            // The bench's users have verifiers at the lowest count (see `servers::create_user`).
            .args(["--kdf-iterations", "4096"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log)),
    )?;
    let loaded = Instant::now();
    wait_for(
        "the tracker to load the state",
        Duration::from_secs(300),
        || {
            LineConn::connect(addr)
                .and_then(|mut c| c.req(&hello()))
                .ok()
                .filter(|r| matches!(r, Reply::Ok(_)))
        },
    )?;
    eprintln!(
        "bench:   {users} users loaded in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
    let rss = rss_bytes(tracker.pid())?;
    let huge = huge_bytes(tracker.pid());
    let mut w = LineConn::connect(addr)?;
    w.ok(&hello())?;
    w.ok(&create_user("compactor"))?;
    login(&mut w, "compactor")?;

    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        let mut p = LineConn::connect(addr)?;
        p.ok(&hello())?;
        std::thread::spawn(move || -> Result<Pings, String> {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                p.ok(&Verb::Ping)?;
                out.push((t, t.elapsed()));
            }
            Ok(out)
        })
    };
    std::thread::sleep(QUIET);
    let trigger = Instant::now();
    // A few small writes, 50 ms apart, cross the 1 KiB threshold.
    let mut i = 0;
    // When each write was in flight: a ping beside one waited for the write's journal fsync,
    // which every write costs with or without compaction.
    let mut writes: Vec<(Instant, Instant)> = Vec::new();
    let done = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("written in the background") {
            break Instant::now();
        }
        tracker.check_alive()?;
        if trigger.elapsed() > Duration::from_secs(120) {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("no snapshot within 120 s:\n{log}"));
        }
        // No more writes once the child runs: its window measures compaction alone.
        if i < 40 && !log.contains("started in process") {
            let sent = Instant::now();
            w.ok(&Verb::CreateGroup {
                group: format!("cg{i}"),
            })?;
            writes.push((sent, Instant::now()));
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The child's end is noticed at the next loop turn; pings keep turning it.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let pings = pinger.join().map_err(|_| "the ping thread panicked")??;
    let beside_write = |t: Instant, d: Duration| writes.iter().any(|&(a, b)| t <= b && t + d >= a);
    let max_in = |from: Instant, to: Instant| {
        pings
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .filter(|&&(t, d)| !beside_write(t, d))
            .map(|(_, d)| d.as_secs_f64() * 1e3)
            .fold((0.0f64, 0usize), |(m, n), d| (m.max(d), n + 1))
    };
    let (quiet_max_ms, _) = max_in(trigger - QUIET + Duration::from_millis(100), trigger);
    let (during_max_ms, during_pings) = max_in(trigger, done);
    let with_writes_max_ms = pings
        .iter()
        .filter(|(t, _)| *t >= trigger && *t <= done)
        .map(|(_, d)| d.as_secs_f64() * 1e3)
        .fold(0.0f64, f64::max);
    let mut during: Vec<Duration> = pings
        .iter()
        .filter(|&&(t, d)| t >= trigger && t <= done && !beside_write(t, d))
        .map(|&(_, d)| d)
        .collect();
    during.sort_unstable();
    let during_p999_ms = during
        .get(during.len() * 999 / 1000)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("journal]")) {
        eprintln!("bench:   tracker: {l}");
    }
    Ok(CompactionResult {
        users,
        snapshot_bytes,
        rss_bytes: rss,
        huge_bytes: huge,
        quiet_max_ms,
        during_max_ms,
        with_writes_max_ms,
        during_pings,
        during_p999_ms,
        loop_us: number_before(&log, " us for it"),
        child_ms: number_before(&log, " ms; "),
    })
}

/// `AnonHugePages` of a process, in bytes.
fn huge_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("AnonHugePages:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The number that ends right before `marker` in the first log line holding it.
fn number_before(log: &str, marker: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let head = &line[..line.find(marker)?];
    head.rsplit(' ').next()?.parse().ok()
}

/// A snapshot file of `users` users with distinct, well-formed password hashes.
fn write_snapshot(path: &Path, users: usize) -> Result<u64, String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    writeln!(w, "snapshot 1 1 solo 1").map_err(io)?;
    for i in 0..users {
        let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        writeln!(
            w,
            "user u{i:07} scram-sha256$4096${x:016x}{i:016x}${x:016x}{i:016x}{x:016x}{i:016x}${i:016x}{x:016x}{i:016x}{x:016x}"
        )
        .map_err(io)?;
    }
    writeln!(w, "clock 0\nend {}", users + 1).map_err(io)?;
    w.flush().map_err(io)?;
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The report's section.
pub fn render(o: &mut String, r: Option<&Result<CompactionResult, String>>) {
    let Some(r) = r else {
        return;
    };
    let _ = writeln!(o, "## D. Compaction pause\n");
    let c = match r {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(o, "Not measured: {e}\n");
            return;
        }
    };
    let met = c.during_max_ms <= TARGET_MS;
    let _ =
        writeln!(
        o,
        "A tracker holding {} users (snapshot {:.0} MiB, resident {:.0} MiB, {} on transparent \
         huge pages) compacts: it forks a child that writes the snapshot while the loop goes on \
         (`src/tracker/journal/`). One connection sends `ping` back to back throughout. The \
         fork's page-table copy is the loop's cost: small on huge pages, several ms on 4 KiB \
         pages.\n",
        crate::report::thousands(c.users as f64),
        c.snapshot_bytes as f64 / (1 << 20) as f64,
        c.rss_bytes as f64 / (1 << 20) as f64,
        c.huge_bytes
            .map_or("? MiB".to_string(), |b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
    );
    let _ = writeln!(o, "| figure | value |\n| --- | --- |");
    let _ = writeln!(
        o,
        "| longest `ping` round trip while compacting ({} pings; none beside a write) | **{:.2} ms** (target ≤ {TARGET_MS:.0} ms: {}) |",
        c.during_pings,
        c.during_max_ms,
        if met { "met" } else { "not met" }
    );
    let _ = writeln!(
        o,
        "| 99.9th percentile of those round trips | {:.2} ms |",
        c.during_p999_ms
    );
    let _ = writeln!(
        o,
        "| longest, counting pings beside the triggering writes' journal fsyncs | {:.2} ms |",
        c.with_writes_max_ms
    );
    let _ = writeln!(
        o,
        "| longest `ping` round trip in the 3 quiet seconds before (the machine's noise) | {:.2} ms |",
        c.quiet_max_ms
    );
    if let Some(us) = c.loop_us {
        let _ = writeln!(
            o,
            "| the loop's own part in the fork's turn (flush, fork), tracker's log | {:.2} ms |",
            us as f64 / 1e3
        );
    }
    if let Some(ms) = c.child_ms {
        let _ = writeln!(
            o,
            "| the child writing the snapshot (the stall when it was written on the loop) | {ms} ms |"
        );
    }
    let _ = writeln!(o);
}
