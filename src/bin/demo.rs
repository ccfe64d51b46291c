//! `make demo`: the whole system on loopback, by itself. Two trackers, three clients driven
//! through their standard input as a person would type, a generated file shared by one client,
//! downloaded by a second from one seeder and by a third from two, the third client's tracker
//! killed with SIGKILL midway and restarted, every copy's SHA-1 checked. Prints what happened;
//! exits 0, or 1 with the reason.
//!
//! This is a driver, not part of the product: it uses threads to read the children's output.

use sha1::{Digest, Sha1};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let mut size_mib: u64 = 256;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--size-mib" => size_mib = args.next().and_then(|v| v.parse().ok()).unwrap_or(size_mib),
            "--help" | "-h" => {
                println!("demo [--size-mib N]: runs the whole system on loopback and checks it");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("demo: unknown argument '{other}'");
                return ExitCode::FAILURE;
            }
        }
    }
    let started = Instant::now();
    match run(size_mib) {
        Ok(()) => {
            say(&format!(
                "demo passed in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(s: &str) {
    println!("• {s}");
}

/// A child process that is killed when dropped.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    err_seen: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Res<Proc> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdin = child.stdin.take();
        let out = lines_of(child.stdout.take().ok_or("no stdout")?);
        let err = lines_of(child.stderr.take().ok_or("no stderr")?);
        Ok(Proc {
            name: name.into(),
            child,
            stdin,
            out,
            err,
            err_seen: Vec::new(),
        })
    }

    fn send(&mut self, line: &str) -> Res<()> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}").map_err(|e| format!("{}: cannot write '{line}': {e}", self.name))
    }

    /// Waits for a stdout line satisfying `want`; an `error:` line on stderr fails at once.
    fn expect_out(
        &mut self,
        what: &str,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Res<String> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(e) = self.err.try_recv() {
                if e.starts_with("error:") {
                    return Err(format!("{}: {e} (while waiting for {what})", self.name));
                }
                self.err_seen.push(e);
            }
            match self.out.recv_timeout(Duration::from_millis(20)) {
                Ok(l) if want(&l) => return Ok(l),
                Ok(_) => {}
                Err(_) if Instant::now() > deadline => {
                    return Err(format!("{}: no {what} within {timeout:?}", self.name))
                }
                Err(_) => {}
            }
        }
    }

    /// Runs a command whose success prints nothing on stdout, and waits until it is done: the
    /// client handles commands strictly in order, so once the `list_groups` sent after it
    /// prints, the command has finished.
    fn cmd(&mut self, line: &str) -> Res<()> {
        self.send(line)?;
        self.send("list_groups")?;
        self.expect_out(
            &format!("'{line}' to finish"),
            Duration::from_secs(30),
            |l| l.starts_with("demo"),
        )?;
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn bin(name: &str) -> Res<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let p = exe
        .parent()
        .ok_or("no directory for the demo binary")?
        .join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} is missing; run `make` first", p.display()))
    }
}

fn tracker(n: usize, dir: &Path) -> Res<Proc> {
    Proc::spawn(
        &format!("tracker {n}"),
        Command::new(bin("tracker")?)
            .arg(dir.join("tracker_info.txt"))
            .arg(n.to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("tracker{n}")))
            .arg("--cluster-key")
            .arg(dir.join("cluster.key"))
            .arg("-q"),
    )
}

fn role(addr: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"1 digest\n").is_err() {
        return String::new();
    }
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line.split_whitespace().nth(4).unwrap_or("").to_string()
}

fn wait_paired(addrs: &[SocketAddr]) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let roles = [role(addrs[0]), role(addrs[1])];
        if roles.iter().any(|r| r == "leader-paired") && roles.iter().any(|r| r == "follower") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("the trackers did not pair within 20 s".into())
}

fn sha1_file(path: &Path) -> Res<String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(groupshare::pieces::to_hex(&h.finalize()))
}

fn make_file(path: &Path, size: u64) -> Res<String> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])
            .map_err(|e| format!("{}: {e}", path.display()))?;
        left -= n as u64;
    }
    f.flush().map_err(|e| format!("{}: {e}", path.display()))?;
    drop(f);
    sha1_file(path)
}

fn client(name: &str, listen: &str, dir: &Path) -> Res<Proc> {
    let state = dir.join(format!("{name}-state"));
    Proc::spawn(
        name,
        Command::new(bin("client")?)
            .arg(listen)
            .arg(dir.join("tracker_info.txt"))
            .arg("--state-dir")
            .arg(state)
            .arg("-q"),
    )
}

/// Polls `show_downloads` until the download line says `[C]` (or fails on `[F]`); calls
/// `on_progress` with the percentage seen.
fn wait_download(
    p: &mut Proc,
    timeout: Duration,
    mut on_progress: impl FnMut(f64) -> Res<()>,
) -> Res<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        p.send("show_downloads")?;
        let line = p.expect_out("a download line", Duration::from_secs(30), |l| {
            l.starts_with('[')
        })?;
        if line.starts_with("[C]") {
            return Ok(());
        }
        if line.starts_with("[F]") {
            return Err(format!("{}: download failed: {line}", p.name));
        }
        let pct = line
            .split_whitespace()
            .find_map(|w| w.strip_suffix('%').and_then(|v| v.parse::<f64>().ok()))
            .unwrap_or(0.0);
        on_progress(pct)?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{}: download did not finish in {timeout:?}",
        p.name
    ))
}

/// The client's `note: download of ... complete: ... (from ...)` line, which names the sources.
fn completion_note(p: &mut Proc) -> Res<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = p.err_seen.iter().find(|l| l.contains("complete:")) {
            return Ok(l.clone());
        }
        match p.err.recv_timeout(Duration::from_millis(20)) {
            Ok(l) => p.err_seen.push(l),
            Err(_) if Instant::now() > deadline => {
                return Err(format!("{}: no completion note on standard error", p.name))
            }
            Err(_) => {}
        }
    }
}

fn run(size_mib: u64) -> Res<()> {
    let dir = tempfile_dir()?;
    let d = dir.path.clone();
    let addrs: Vec<SocketAddr> = [free_port()?, free_port()?]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    std::fs::write(
        d.join("tracker_info.txt"),
        format!("{}\n{}\n", addrs[0], addrs[1]),
    )
    .map_err(|e| format!("cannot write tracker_info.txt: {e}"))?;
    std::fs::write(d.join("cluster.key"), "demo-cluster-key-0123456789abcdef")
        .map_err(|e| format!("cannot write the key: {e}"))?;
    say(&format!("working in {}", d.display()));

    let t0 = Instant::now();
    let _t1 = tracker(1, &d)?;
    let mut t2 = Some(tracker(2, &d)?);
    wait_paired(&addrs)?;
    say(&format!(
        "trackers up and paired on {} and {} ({} ms)",
        addrs[0],
        addrs[1],
        t0.elapsed().as_millis()
    ));

    let size = size_mib << 20;
    let src_dir = d.join("alice");
    std::fs::create_dir_all(&src_dir).map_err(|e| e.to_string())?;
    let src = src_dir.join("data.bin");
    let t = Instant::now();
    let want = make_file(&src, size)?;
    say(&format!(
        "generated {} ({size_mib} MiB, sha1 {}…) in {:.1} s",
        src.display(),
        &want[..12],
        t.elapsed().as_secs_f64()
    ));

    // Alice and Bob use tracker 1; Carol names tracker 2's address, meaning "prefer it".
    let mut alice = client("alice", "127.0.0.1:0", &d)?;
    let mut bob = client("bob", "127.0.0.1:0", &d)?;
    let mut carol = client("carol", &addrs[1].to_string(), &d)?;
    alice.send("create_user alice pw-a")?;
    alice.send("login alice pw-a")?;
    alice.send("create_group demo")?;
    alice.cmd("list_groups")?;
    for (p, u) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        p.send(&format!("create_user {u} pw-{u}"))?;
        p.send(&format!("login {u} pw-{u}"))?;
        p.cmd("join_group demo")?;
        alice.send(&format!("accept_request demo {u}"))?;
    }
    alice.cmd("list_requests demo")?;
    say("alice, bob and carol registered; alice created group demo and accepted bob and carol");

    let t = Instant::now();
    alice.send(&format!("upload_file \"{}\" demo", src.display()))?;
    let line = alice.expect_out("the upload result", Duration::from_secs(120), |l| {
        l.starts_with("uploaded")
    })?;
    let secs = t.elapsed().as_secs_f64();
    say(&format!(
        "alice: {line} — hashed at {:.0} MiB/s",
        size_mib as f64 / secs
    ));

    let bob_dir = d.join("bob-files");
    std::fs::create_dir_all(&bob_dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    bob.send(&format!(
        "download_file demo data.bin {}",
        bob_dir.display()
    ))?;
    bob.expect_out("the download start", Duration::from_secs(30), |l| {
        l.starts_with("downloading")
    })?;
    wait_download(&mut bob, Duration::from_secs(300), |_| Ok(()))?;
    let secs = t.elapsed().as_secs_f64();
    say(&format!(
        "bob downloaded data.bin from one seeder (alice) in {secs:.2} s: {:.0} MiB/s",
        size_mib as f64 / secs
    ));
    say(&format!("bob was told: {}", completion_note(&mut bob)?));

    let carol_dir = d.join("carol-files");
    std::fs::create_dir_all(&carol_dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    carol.send(&format!(
        "download_file demo data.bin {}",
        carol_dir.display()
    ))?;
    carol.expect_out("the download start", Duration::from_secs(30), |l| {
        l.starts_with("downloading")
    })?;
    // Kill carol's tracker as soon as the download runs (at once for small files).
    let mut killed_at = None;
    let mut kill = |pct: f64| -> Res<()> {
        if killed_at.is_none() && (pct >= 20.0 || size_mib < 64) {
            if let Some(mut p) = t2.take() {
                let _ = p.child.kill();
                let _ = p.child.wait();
                say(&format!(
                    "killed tracker 2 (carol's) with SIGKILL at {pct:.0}% of carol's download"
                ));
                killed_at = Some(Instant::now());
            }
        }
        Ok(())
    };
    kill(0.0)?;
    wait_download(&mut carol, Duration::from_secs(300), &mut kill)?;
    let secs = t.elapsed().as_secs_f64();
    say(&format!(
        "carol downloaded data.bin from two seeders (alice, bob) in {secs:.2} s: {:.0} MiB/s",
        size_mib as f64 / secs
    ));
    say(&format!("carol was told: {}", completion_note(&mut carol)?));
    // Carol's session moved to tracker 1: her next command works without a new login.
    let t = Instant::now();
    carol.send("list_files demo")?;
    let files = carol.expect_out("list_files output", Duration::from_secs(30), |l| {
        l.starts_with("data.bin")
    })?;
    say(&format!(
        "carol, without logging in again: list_files demo → '{files}' ({} ms)",
        t.elapsed().as_millis()
    ));
    if let Some(note) = carol.err_seen.iter().find(|l| l.contains("switched")) {
        say(&format!("carol was told: {note}"));
    }
    let t = Instant::now();
    let _t2 = tracker(2, &d)?;
    wait_paired(&addrs)?;
    say(&format!(
        "restarted tracker 2; it caught up and paired again in {} ms",
        t.elapsed().as_millis()
    ));

    for (who, path) in [
        ("bob", bob_dir.join("data.bin")),
        ("carol", carol_dir.join("data.bin")),
    ] {
        let got = sha1_file(&path)?;
        if got != want {
            return Err(format!("{who}'s copy has sha1 {got}, expected {want}"));
        }
        say(&format!("{who}'s copy verified: sha1 {}…", &got[..12]));
    }
    for p in [&mut alice, &mut bob, &mut carol] {
        p.send("exit")?;
        p.stdin = None;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in [&mut alice, &mut bob, &mut carol] {
        while Instant::now() < deadline {
            if let Ok(Some(st)) = p.child.try_wait() {
                if !st.success() {
                    return Err(format!("{} exited with {st}", p.name));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    say(&format!(
        "clients exited cleanly (pids {}, {}, {})",
        alice.pid(),
        bob.pid(),
        carol.pid()
    ));
    Ok(())
}

/// A temporary directory removed on drop (no tempfile crate outside tests).
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir() -> Res<TempDir> {
    let base = std::env::temp_dir().join(format!(
        "groupshare-demo-{}-{}",
        std::process::id(),
        groupshare::runtime::random_u64() & 0xffff
    ));
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    Ok(TempDir { path: base })
}
