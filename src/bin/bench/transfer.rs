//! Case C: file transfer and hashing. The *bounds* (what one thread can do with loopback TCP,
//! SHA-1 and the page cache on this machine) are measured here and now; the client's own
//! figures need the client binary and plug in through the functions taking its path.

use crate::clients::{ClientProc, Stream};
use crate::procs::{wait_for, TempDir};
use crate::servers::TrackerPair;
use groupshare::net::identity::Identity;
use groupshare::net::secure::{Conversation, Role};
use groupshare::net::secure_stream::{connect_blocking, SecureStream};
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const PIECE: usize = 512 * 1024;
pub const MIB: f64 = 1024.0 * 1024.0;

/// A measured rate.
#[derive(Clone, Debug)]
pub struct Rate {
    pub bytes: u64,
    pub secs: f64,
}

impl Rate {
    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.secs
    }
}

/// Deterministic pseudo-random bytes (xorshift), so nothing compresses or dedups.
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// C1 bound: a sender thread writes `total` bytes over loopback TCP inside the peers' secure
/// channel (Noise, AES-256-GCM, as a seeder does); this thread receives and decrypts them into
/// 512 KiB piece buffers, SHA-1s each piece and pwrites it into a new file: all a downloader
/// must do for each byte, on one core, and nothing else. Returns the
/// rate, the receiving thread's CPU time (seconds) and leaves the file (now in the page cache)
/// for the hashing reference.
pub fn download_bound(
    dir: &TempDir,
    total: u64,
) -> Result<(Rate, f64, std::path::PathBuf), String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind a loopback port: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    let path = dir.path().join("bound-download");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut data = vec![0u8; 4 << 20];
        fill_random(&mut data, 0x9e37_79b9_7f4a_7c15);
        let id = Identity::generate()?;
        let s = TcpStream::connect(addr).map_err(|e| format!("sender connect: {e}"))?;
        let mut s = connect_blocking(s, &id, None, Conversation::ClientClient)
            .map_err(|e| format!("sender handshake: {e}"))?;
        let mut left = total;
        while left > 0 {
            let k = left.min(data.len() as u64) as usize;
            s.write_all(&data[..k])
                .map_err(|e| format!("sender write: {e}"))?;
            left -= k as u64;
        }
        s.flush().map_err(|e| format!("sender flush: {e}"))
    });
    let (rx, _) = listener
        .accept()
        .map_err(|e| format!("accept the sender: {e}"))?;
    let id = Identity::generate()?;
    let mut rx = SecureStream::new(
        rx,
        Role::Responder,
        &id,
        None,
        Conversation::ClientClient,
        false,
    )
    .map_err(|e| format!("receiver channel: {e}"))?;
    rx.handshake_blocking()
        .map_err(|e| format!("receiver handshake: {e}"))?;
    let t0 = Instant::now();
    let cpu0 = crate::clients::thread_cpu_secs();
    let mut buf = vec![0u8; PIECE];
    let mut off = 0u64;
    let mut digest_xor = [0u8; 20];
    while off < total {
        let want = (total - off).min(PIECE as u64) as usize;
        rx.read_exact(&mut buf[..want])
            .map_err(|e| format!("receiving at offset {off}: {e}"))?;
        let h = Sha1::digest(&buf[..want]);
        for (a, b) in digest_xor.iter_mut().zip(h.iter()) {
            *a ^= b;
        }
        file.write_all_at(&buf[..want], off)
            .map_err(|e| format!("pwrite at {off}: {e}"))?;
        off += want as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = crate::clients::thread_cpu_secs() - cpu0;
    std::hint::black_box(digest_xor);
    sender
        .join()
        .map_err(|_| "the sender thread panicked".to_string())??;
    Ok((Rate { bytes: total, secs }, cpu, path))
}

/// C2 bound: SHA-1 of `total` bytes already in memory, in 512 KiB pieces (a 64 MiB buffer
/// hashed round and round: the bytes stay in RAM, not in cache).
pub fn raw_sha1(total: u64) -> Rate {
    let mut data = vec![0u8; 64 << 20];
    fill_random(&mut data, 0x2545_f491_4f6c_dd1d);
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut acc = 0u8;
    while done < total {
        for piece in data.chunks(PIECE) {
            if done >= total {
                break;
            }
            acc ^= Sha1::digest(piece)[0];
            done += piece.len() as u64;
        }
    }
    std::hint::black_box(acc);
    Rate {
        bytes: done,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// Reference for C2: read a file that is in the page cache in 512 KiB pieces (pread) and SHA-1
/// each, one thread — what the client's hashing should come close to.
pub fn page_cache_sha1(path: &Path) -> Result<Rate, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let mut buf = vec![0u8; PIECE];
    let t0 = Instant::now();
    let mut off = 0u64;
    let mut acc = 0u8;
    while off < len {
        let want = (len - off).min(PIECE as u64) as usize;
        f.read_exact_at(&mut buf[..want], off)
            .map_err(|e| format!("pread at {off}: {e}"))?;
        acc ^= Sha1::digest(&buf[..want])[0];
        off += want as u64;
    }
    std::hint::black_box(acc);
    Ok(Rate {
        bytes: len,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// Whether the client binary exists and is the real thing (its `--help` prints a usage).
pub fn client_works(client_bin: &Path) -> Result<(), String> {
    if !client_bin.is_file() {
        return Err(format!("{} does not exist", client_bin.display()));
    }
    let out = Command::new(client_bin)
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {} --help: {e}", client_bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    if out.status.success() && text.contains("usage") {
        Ok(())
    } else {
        Err(format!(
            "{} --help printed no usage (the client is not finished yet)",
            client_bin.display()
        ))
    }
}

/// Why a client case has no figure.
#[derive(Clone, Debug)]
pub enum Pending {
    /// Not measured (the client binary is missing or not finished); why.
    Pending(String),
    /// Measured, but the run failed; why.
    Failed(String),
}

/// One download by a fresh client process.
#[derive(Clone, Debug)]
pub struct DownloadRun {
    /// `download_file` sent → `note: download of … complete` received.
    pub rate: Rate,
    /// The downloading client's utime + stime over the same interval (10 ms ticks).
    pub cpu_secs: f64,
    /// The downloading client's VmHWM at the end (peak RSS of the whole process life).
    pub peak_rss: u64,
    /// All seeders' utime + stime over the same interval.
    pub seeders_cpu_secs: f64,
    /// `show_downloads` polled after the note said `[C]`.
    pub shown_complete: bool,
}

/// A client ready to download (see `Swarm::downloader`).
pub struct Downloader {
    name: String,
    dest: PathBuf,
    client: ClientProc,
}

/// One case of C1: runs with the same number of seeders.
#[derive(Clone, Debug)]
pub struct DownloadCase {
    pub runs: Vec<DownloadRun>,
    /// The download bound measured right before each run (rate, receiving thread's CPU
    /// seconds), interleaved with the runs so both see the same state of the machine.
    pub bounds: Vec<(Rate, f64)>,
    /// Fraction of the shared file's pages in the page cache just before the first run.
    pub source_resident: f64,
}

impl DownloadCase {
    /// The run with the median rate (its CPU and RSS figures go with it).
    pub fn median(&self) -> &DownloadRun {
        let mut idx: Vec<usize> = (0..self.runs.len()).collect();
        idx.sort_by(|a, b| self.runs[*a].rate.secs.total_cmp(&self.runs[*b].rate.secs));
        &self.runs[idx[idx.len() / 2]]
    }

    /// The bound measurement with the median rate.
    pub fn bound(&self) -> Option<&(Rate, f64)> {
        let mut v: Vec<&(Rate, f64)> = self.bounds.iter().collect();
        v.sort_by(|a, b| a.0.secs.total_cmp(&b.0.secs));
        v.get(v.len() / 2).copied()
    }
}

/// C2: `upload_file` of the shared file by each seeder (a fresh process each time).
#[derive(Clone, Debug)]
pub struct HashRun {
    /// `upload_file` sent → `uploaded …` received.
    pub rate: Rate,
    pub cpu_secs: f64,
    /// Fraction of the file's pages in the page cache just before the upload.
    pub resident: f64,
}

/// C5, client side: seconds from SIGKILL of the client's tracker to the answer of the next
/// command, per round, and whether the client reported the switch.
#[derive(Clone, Debug)]
pub struct ClientFailover {
    pub secs: Vec<f64>,
    pub switched_notes: usize,
}

impl ClientFailover {
    pub fn median(&self) -> f64 {
        median(&self.secs)
    }
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub const FILE_NAME: &str = "data.bin";
pub const GROUP: &str = "bench";

/// The swarm the client cases share: a tracker pair, the generated file and the seeding
/// clients (each a separate process that uploaded the file from its own path — a hard link
/// to the same bytes, so the same content under the same name).
/// Fields drop in order: the seeders are killed before the trackers and the directory go.
pub struct Swarm {
    pub seeders: Vec<ClientProc>,
    client_bin: PathBuf,
    pair: TrackerPair,
    pub dir: TempDir,
    pub file: PathBuf,
    pub size: u64,
    pub hashing: Vec<HashRun>,
    /// Downloads started so far (names fresh members).
    pub downloads: usize,
    /// Extra arguments for seeders started from now on (the flash crowd's upload limit).
    pub seeder_args: Vec<String>,
    /// When the last 1 GiB copy (a download's or a bound's) was deleted: see `wait_cold`.
    freed_at: Instant,
}

/// How long after a large free this VM has handed the freed pages back to its host (free page
/// reporting runs 2 s after a free; measured with `dd`: a 1 GiB write right after deleting a
/// 1 GiB file takes 0.2 s, 2.2 s later 1.0 s, from 2.6 s on 1.1–1.3 s).
const HANDBACK: Duration = Duration::from_millis(3000);

impl Swarm {
    /// Checks the client, starts a tracker pair and generates the file (then reads it once).
    pub fn start(client_bin: &Path, tracker_bin: &Path, size: u64) -> Result<Swarm, Pending> {
        client_works(client_bin).map_err(|why| {
            Pending::Pending(format!("measured by the transfer bench — pending: {why}"))
        })?;
        let fail = Pending::Failed;
        let pair = TrackerPair::start(tracker_bin, "c1").map_err(fail)?;
        let dir = TempDir::new("swarm").map_err(fail)?;
        let src = dir.path().join("seed1");
        std::fs::create_dir_all(&src).map_err(|e| fail(format!("mkdir: {e}")))?;
        let file = src.join(FILE_NAME);
        crate::clients::make_file(&file, size).map_err(fail)?;
        crate::clients::read_through(&file).map_err(fail)?;
        Ok(Swarm {
            client_bin: client_bin.to_path_buf(),
            pair,
            dir,
            file,
            size,
            seeders: Vec::new(),
            hashing: Vec::new(),
            downloads: 0,
            seeder_args: Vec::new(),
            // The caller may have just deleted a copy of its own (part C's first bound run).
            freed_at: Instant::now(),
        })
    }

    fn info(&self) -> PathBuf {
        self.pair.info.clone()
    }

    fn spawn(&self, name: &str, extra: &[&str]) -> Result<ClientProc, String> {
        ClientProc::spawn_with(
            &self.client_bin,
            name,
            "127.0.0.1:0",
            &self.info(),
            &self.dir.path().join(format!("{name}-state")),
            extra,
        )
    }

    /// A new user `name` in a new client process, member of the group.
    pub fn member(&mut self, name: &str) -> Result<ClientProc, String> {
        self.member_with(name, &[])
    }

    fn member_with(&mut self, name: &str, extra: &[&str]) -> Result<ClientProc, String> {
        let mut c = self.spawn(name, extra)?;
        c.cmd(&format!("create_user {name} pw-{name}"), "created user")?;
        c.cmd(&format!("login {name} pw-{name}"), "logged in")?;
        if self.seeders.is_empty() {
            c.cmd(&format!("create_group {GROUP}"), "created group")?;
        } else {
            c.cmd(&format!("join_group {GROUP}"), "asked to join")?;
            self.seeders[0].cmd(
                &format!("accept_request {GROUP} {name}"),
                &format!("{name} is now a member"),
            )?;
        }
        Ok(c)
    }

    /// One more seeder: a new client that uploads the file from its own path (timed: C2).
    pub fn add_seeder(&mut self) -> Result<(), String> {
        let n = self.seeders.len() + 1;
        let name = format!("seed{n}");
        let path = if n == 1 {
            self.file.clone()
        } else {
            let d = self.dir.path().join(&name);
            std::fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
            let p = d.join(FILE_NAME);
            std::fs::hard_link(&self.file, &p)
                .map_err(|e| format!("hard link {}: {e}", p.display()))?;
            p
        };
        let args = self.seeder_args.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = self.member_with(&name, &args)?;
        let resident = crate::clients::resident_fraction(&path)?;
        let cpu0 = crate::clients::cpu_secs(c.pid())?;
        let t0 = c.send(&format!("upload_file \"{}\" {GROUP}", path.display()))?;
        let l = c.expect("the upload result", Duration::from_secs(300), |s, t| {
            s == Stream::Out && t.starts_with("uploaded")
        })?;
        let cpu = crate::clients::cpu_secs(c.pid())? - cpu0;
        self.hashing.push(HashRun {
            rate: Rate {
                bytes: self.size,
                secs: l.at.duration_since(t0).as_secs_f64(),
            },
            cpu_secs: cpu,
            resident,
        });
        self.seeders.push(c);
        Ok(())
    }

    /// A fresh user in a fresh client process, logged in and a member of the group, ready to
    /// `download`: made before the bound run that precedes the download, so that nothing but
    /// the wait for fresh memory lies between the two.
    pub fn downloader(&mut self) -> Result<Downloader, String> {
        self.downloads += 1;
        let name = format!("dl{}", self.downloads);
        let dest = self.dir.path().join(&name);
        std::fs::create_dir_all(&dest).map_err(|e| format!("mkdir {}: {e}", dest.display()))?;
        let client = self.member(&name)?;
        Ok(Downloader { name, dest, client })
    }

    /// One download by a prepared `downloader`, which then exits (logging out, so it is no
    /// source for the next run); its copy stays until `discard_last_copy`.
    pub fn download(&mut self, d: Downloader) -> Result<DownloadRun, String> {
        let Downloader {
            name,
            dest,
            client: mut c,
        } = d;
        let pid = c.pid();
        let seeder_cpu = |s: &Swarm| -> Result<f64, String> {
            s.seeders
                .iter()
                .map(|c| crate::clients::cpu_secs(c.pid()))
                .sum()
        };
        let scpu0 = seeder_cpu(self)?;
        let cpu0 = crate::clients::cpu_secs(pid)?;
        let t0 = c.send(&format!(
            "download_file {GROUP} {FILE_NAME} \"{}\"",
            dest.display()
        ))?;
        let prefix = format!("note: download of {FILE_NAME} complete");
        let done = c.expect(
            "the download's completion",
            Duration::from_secs(600),
            |s, t| {
                (s == Stream::Err && (t.starts_with(&prefix) || t.starts_with("warning: download")))
                    || (s == Stream::Out && t.starts_with("[F]"))
            },
        )?;
        let cpu = crate::clients::cpu_secs(pid)? - cpu0;
        let scpu = seeder_cpu(self)? - scpu0;
        let peak = crate::clients::peak_rss(pid)?;
        if !done.text.starts_with(&prefix) {
            return Err(format!("{name}: {}", done.text));
        }
        c.send("show_downloads")?;
        let shown = c.expect(
            "the show_downloads line",
            Duration::from_secs(30),
            |s, t| s == Stream::Out && t.starts_with('['),
        )?;
        let got = std::fs::metadata(dest.join(FILE_NAME))
            .map(|m| m.len())
            .map_err(|e| format!("{name}: the downloaded file: {e}"))?;
        if got != self.size {
            return Err(format!(
                "{name}: downloaded {got} bytes, expected {}",
                self.size
            ));
        }
        c.exit(Duration::from_secs(20));
        self.free(&dest);
        Ok(DownloadRun {
            rate: Rate {
                bytes: self.size,
                secs: done.at.duration_since(t0).as_secs_f64(),
            },
            cpu_secs: cpu,
            peak_rss: peak,
            seeders_cpu_secs: scpu,
            shown_complete: shown.text.starts_with("[C]"),
        })
    }

    /// Deletes a copy (a file or a download's directory) and notes when.
    fn free(&mut self, path: &Path) {
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        self.freed_at = Instant::now();
    }

    /// Waits until the memory of the last deleted copy has gone back to the host, so that the
    /// next write into the page cache touches fresh memory — as a download on a real machine
    /// does, and as every bound and download run here then does alike.
    fn wait_cold(&self) {
        std::thread::sleep(HANDBACK.saturating_sub(self.freed_at.elapsed()));
    }

    pub fn seeder_count(&self) -> usize {
        self.seeders.len()
    }
}

/// C1: `runs` downloads of the file from `seeders` seeding clients (seeders are added to the
/// swarm as needed), each alternating with a measurement of the download bound (both into
/// fresh memory: `Swarm::wait_cold`), each timed from `download_file` until the client's
/// `note: download of … complete` line (the moment it would show `[C]`).
pub fn download_from_seeders(
    swarm: &mut Swarm,
    seeders: usize,
    runs: usize,
) -> Result<DownloadCase, Pending> {
    while swarm.seeder_count() < seeders {
        swarm.add_seeder().map_err(Pending::Failed)?;
    }
    let source_resident =
        crate::clients::resident_fraction(&swarm.file).map_err(Pending::Failed)?;
    let mut out = Vec::new();
    let mut bounds = Vec::new();
    // Writing 1 GiB into the page cache costs this VM up to 6x more when its pages are fresh
    // than when they were freed a moment ago, and freed pages go back to the host about 2 s
    // after a free — in the middle of whichever run follows. Strict alternation (delete,
    // bound, delete, download) still let that hand-back land in some runs and not others: the
    // bound ran at 540 or 820 MiB/s by phase. So every measured write, bound or download,
    // starts `HANDBACK` after the last delete: both write into fresh memory.
    for _ in 0..runs {
        let downloader = swarm.downloader().map_err(Pending::Failed)?;
        swarm.wait_cold();
        let (rate, cpu, path) = download_bound(&swarm.dir, swarm.size).map_err(Pending::Failed)?;
        swarm.free(&path);
        bounds.push((rate, cpu));
        swarm.wait_cold();
        out.push(swarm.download(downloader).map_err(Pending::Failed)?);
    }
    Ok(DownloadCase {
        runs: out,
        bounds,
        source_resident,
    })
}

/// `--only-downloads`: C1 alone, for iterating on the download engine; each run and the bound
/// measured right before it are printed as they end, and no report is written.
pub fn run_alone(s: &crate::Settings) -> Result<(), String> {
    let tracker_bin = groupshare::testkit::sibling_bin("tracker")?;
    let client_bin = groupshare::testkit::sibling_bin("client")?;
    let mut swarm =
        Swarm::start(&client_bin, &tracker_bin, s.transfer_bytes).map_err(|p| match p {
            Pending::Pending(w) | Pending::Failed(w) => w,
        })?;
    for seeders in 1..=3 {
        let case =
            download_from_seeders(&mut swarm, seeders, s.transfer_runs).map_err(|p| match p {
                Pending::Pending(w) | Pending::Failed(w) => w,
            })?;
        for (run, (bound, bcpu)) in case.runs.iter().zip(&case.bounds) {
            println!(
                "{seeders} seeder(s): {:.0} MiB/s, bound {:.0} MiB/s (CPU {:.2} s), ratio {:.2}, client CPU {:.2} s, seeders CPU {:.2} s",
                run.rate.mib_s(),
                bound.mib_s(),
                bcpu,
                run.rate.mib_s() / bound.mib_s(),
                run.cpu_secs,
                run.seeders_cpu_secs
            );
        }
    }
    Ok(())
}

/// C2: the client's `upload_file` hashing of the file in the page cache — the seeders'
/// uploads (each a fresh process), plus more seeders until there are `runs` of them.
pub fn client_hashing(swarm: &mut Swarm, runs: usize) -> Result<Vec<HashRun>, Pending> {
    while swarm.hashing.len() < runs {
        swarm.add_seeder().map_err(Pending::Failed)?;
    }
    Ok(swarm.hashing.clone())
}

/// C5, client side: a client that names tracker T (the paired leader) as its address, i.e.
/// "prefer T", is logged in there; T is SIGKILLed and `list_groups` sent at once; the time is
/// from the kill to the listing's first line on the client's standard output. T is restarted
/// and the pair re-forms between rounds.
pub fn client_failover(
    client_bin: &Path,
    tracker_bin: &Path,
    rounds: usize,
) -> Result<ClientFailover, Pending> {
    client_works(client_bin).map_err(|why| {
        Pending::Pending(format!("measured by the transfer bench — pending: {why}"))
    })?;
    let mut pair = TrackerPair::start(tracker_bin, "c5c").map_err(Pending::Failed)?;
    let states = TempDir::new("c5c-state").map_err(Pending::Failed)?;
    let mut res = ClientFailover {
        secs: Vec::new(),
        switched_notes: 0,
    };
    for r in 0..rounds {
        let (secs, switched) = failover_round(client_bin, &mut pair, &states, r)
            .map_err(|e| Pending::Failed(format!("round {}: {e}\n{}", r + 1, pair.log_tail())))?;
        res.secs.push(secs);
        res.switched_notes += usize::from(switched);
    }
    Ok(res)
}

fn failover_round(
    client_bin: &Path,
    pair: &mut TrackerPair,
    states: &TempDir,
    r: usize,
) -> Result<(f64, bool), String> {
    let lead = wait_for("a paired leader", Duration::from_secs(30), || {
        pair.paired_leader()
    })?;
    let other = 3 - lead;
    let name = format!("fo{r}");
    let mut c = ClientProc::spawn(
        client_bin,
        &name,
        &pair.addrs[lead - 1].to_string(),
        &pair.info,
        &states.path().join(&name),
    )?;
    c.cmd(&format!("create_user {name} pw-{name}"), "created user")?;
    c.cmd(&format!("login {name} pw-{name}"), "logged in")?;
    c.cmd(&format!("create_group fg{r}"), "created group")?;

    let t0 = Instant::now();
    pair.kill(lead);
    c.send("list_groups")?;
    let answer = c.expect(
        "list_groups after the kill",
        Duration::from_secs(30),
        |s, t| s == Stream::Out && t.starts_with("fg"),
    )?;
    let secs = answer.at.duration_since(t0).as_secs_f64();
    // The switch note normally precedes the answer; give a late one a moment.
    let want = format!("switched to tracker {other}");
    let mut switched = c.seen.iter().any(|l| l.text.contains(&want));
    if !switched {
        switched = c
            .expect("the switch note", Duration::from_millis(300), |_, t| {
                t.contains(&want)
            })
            .is_ok();
    }
    c.exit(Duration::from_secs(10));
    pair.spawn_with(lead, crate::servers::BENCH_LIMITS)?;
    wait_for("the pair to re-form", Duration::from_secs(30), || {
        pair.paired_leader()
    })?;
    Ok((secs, switched))
}
