//! `make demo`: the whole system on loopback, by itself. Two trackers, three clients driven
//! through their standard input as a person would type, a generated file shared by one client,
//! downloaded by a second from one seeder and by a third from two, the third client's tracker
//! killed with SIGKILL midway and restarted, every copy's SHA-1 checked. Prints what happened;
//! exits 0, or 1 with the reason.
//!
//! This is a driver, not part of the product: it starts and reads the processes through the
//! shared harness (`groupshare::testkit`), whose threads read the children's output.

use groupshare::testkit::{client_command, sibling_bin, Client, Cluster, Stream, TrackerLog};
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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

/// Waits for a stdout line satisfying `want`; an `error:` line on stderr fails at once.
fn expect_out(
    p: &mut Client,
    what: &str,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> Res<String> {
    p.wait_line(Stream::Out, what, timeout, want, |e| {
        e.starts_with("error:")
    })
}

/// Runs a command whose success prints nothing on stdout, and waits until it is done: the
/// client handles commands strictly in order, so once the `list_groups` sent after it
/// prints, the command has finished.
fn cmd(p: &mut Client, line: &str) -> Res<()> {
    p.send(line)?;
    p.send("list_groups")?;
    expect_out(
        p,
        &format!("'{line}' to finish"),
        Duration::from_secs(30),
        |l| l.starts_with("demo"),
    )?;
    Ok(())
}

/// The release binary `name` beside the demo's own.
fn bin(name: &str) -> Res<PathBuf> {
    let p = sibling_bin(name)?;
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} is missing; run `make` first", p.display()))
    }
}

fn client(cluster: &Cluster, client_bin: &Path, name: &str, listen: &str) -> Res<Client> {
    Client::spawn(
        name,
        client_command(
            client_bin,
            &[listen],
            &cluster.info,
            &cluster.state_dir(name),
            &["-q"],
        ),
    )
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

/// Polls `show_downloads` until the download line says `[C]` (or fails on `[F]`); calls
/// `on_progress` with the percentage seen.
fn wait_download(
    p: &mut Client,
    timeout: Duration,
    mut on_progress: impl FnMut(f64) -> Res<()>,
) -> Res<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        p.send("show_downloads")?;
        let line = expect_out(p, "a download line", Duration::from_secs(30), |l| {
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
fn completion_note(p: &mut Client) -> Res<String> {
    p.wait_line(
        Stream::Err,
        "completion note",
        Duration::from_secs(10),
        |l| l.contains("complete:"),
        |_| false,
    )
}

fn run(size_mib: u64) -> Res<()> {
    let tracker_bin = bin("tracker")?;
    let client_bin = bin("client")?;
    let mut cluster = Cluster::new(&tracker_bin, 2, "demo", TrackerLog::Quiet)?;
    let d = cluster.path().to_path_buf();
    let addrs = cluster.addrs.clone();
    say(&format!("working in {}", d.display()));

    let t0 = Instant::now();
    cluster.spawn(1)?;
    cluster.spawn(2)?;
    cluster.wait_paired()?;
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
    let mut alice = client(&cluster, &client_bin, "alice", "127.0.0.1:0")?;
    let mut bob = client(&cluster, &client_bin, "bob", "127.0.0.1:0")?;
    let mut carol = client(&cluster, &client_bin, "carol", &addrs[1].to_string())?;
    alice.send("create_user alice pw-a")?;
    alice.send("login alice pw-a")?;
    alice.send("create_group demo")?;
    cmd(&mut alice, "list_groups")?;
    for (p, u) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        p.send(&format!("create_user {u} pw-{u}"))?;
        p.send(&format!("login {u} pw-{u}"))?;
        cmd(p, "join_group demo")?;
        alice.send(&format!("accept_request demo {u}"))?;
    }
    cmd(&mut alice, "list_requests demo")?;
    say("alice, bob and carol registered; alice created group demo and accepted bob and carol");

    let t = Instant::now();
    alice.send(&format!("upload_file \"{}\" demo", src.display()))?;
    let line = expect_out(
        &mut alice,
        "the upload result",
        Duration::from_secs(120),
        |l| l.starts_with("uploaded"),
    )?;
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
    expect_out(
        &mut bob,
        "the download start",
        Duration::from_secs(30),
        |l| l.starts_with("downloading"),
    )?;
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
    expect_out(
        &mut carol,
        "the download start",
        Duration::from_secs(30),
        |l| l.starts_with("downloading"),
    )?;
    // Kill carol's tracker as soon as the download runs (at once for small files).
    let mut killed_at = None;
    let mut kill = |pct: f64| -> Res<()> {
        if killed_at.is_none() && (pct >= 20.0 || size_mib < 64) {
            cluster.kill(2);
            say(&format!(
                "killed tracker 2 (carol's) with SIGKILL at {pct:.0}% of carol's download"
            ));
            killed_at = Some(Instant::now());
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
    let files = expect_out(
        &mut carol,
        "list_files output",
        Duration::from_secs(30),
        |l| l.starts_with("data.bin"),
    )?;
    say(&format!(
        "carol, without logging in again: list_files demo → '{files}' ({} ms)",
        t.elapsed().as_millis()
    ));
    carol.drain();
    if let Some(note) = carol.err_seen.iter().find(|l| l.contains("switched")) {
        say(&format!("carol was told: {note}"));
    }
    let t = Instant::now();
    cluster.spawn(2)?;
    cluster.wait_paired()?;
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
        p.close_stdin();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in [&mut alice, &mut bob, &mut carol] {
        if let Some(st) = p.wait_exit(deadline.saturating_duration_since(Instant::now())) {
            if !st.success() {
                return Err(format!("{} exited with {st}", p.name));
            }
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
