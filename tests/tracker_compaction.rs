//! Compaction under faults, over the real tracker binary: a snapshot that cannot fit on a
//! full disk (a 192 KiB tmpfs) and a tracker killed at random moments while a child process
//! writes its snapshot. In both, every acknowledged write is there after a restart, and no
//! leftover file stops the restart.
//!
//! Mounting needs root (tests run as root here); if the mount is refused, the full-disk test
//! prints why and returns — the kill test does not need it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A 64 MiB file: 128 piece hashes, a 5 KiB journal entry and about as much snapshot.
const FILE_SIZE: u64 = 64 << 20;
const GROUPS: usize = 4;

/// A small tmpfs mounted on a directory; lazily unmounted on drop, whatever happened.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| format!("mkdir {}: {e}", at.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount refused ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(st.success(), "cannot grow the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `upload_file` of a made-up 64 MiB file, with its own `tag` (a repeated tag would be
/// answered from the deduplication record); `Err` once the tracker is gone.
fn try_upload(
    c: &mut Conn,
    tag: usize,
    group: &str,
    file: &str,
    seed: u8,
) -> std::io::Result<Vec<String>> {
    let n = FILE_SIZE.div_ceil(512 * 1024);
    let hashes: String = (0..n)
        .map(|i| format!("{:02x}", (i as u8) ^ seed).repeat(20))
        .collect();
    let text = format!("{tag} upload_file {group} {file} {FILE_SIZE} {n}\n{hashes}\n");
    c.try_send_raw(text.as_bytes())?;
    c.read_reply()
}

/// The files of every group, as `group/file`.
fn files_at(c: &mut Conn, groups: usize) -> Vec<String> {
    let mut out = Vec::new();
    for g in 0..groups {
        let r = c.req(&format!("list_files g{g}"));
        assert!(r[0].starts_with("list"), "list_files g{g} → {r:?}");
        for l in &r[1..] {
            out.push(format!("g{g}/{}", l.split(' ').next().unwrap_or("")));
        }
    }
    out
}

fn log_of(cl: &Cluster) -> String {
    std::fs::read_to_string(cl.path().join("t1.log")).unwrap_or_default()
}

/// The snapshot cannot be written next to the old one on a full disk: the failure removes
/// its temporary file and the journal goes on until the disk refuses the journal itself;
/// then the tracker stops. Nothing acknowledged is missing after a restart, and no file had
/// to be deleted by hand.
#[test]
fn compaction_on_a_full_small_disk_loses_nothing() {
    let mut cl = Cluster::new(1);
    let disk = match Tmpfs::mount(&cl.data_dir(1), "192k") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: cannot mount a small tmpfs: {e}");
            return;
        }
    };
    cl.spawn_with(1, &["--compact-bytes", "16384"]);
    cl.wait_serving(1);
    let mut c = cl.conn(1);
    c.user("filler");
    for g in 0..GROUPS {
        c.ok(&format!("create_group g{g}"));
    }
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stopped = false;
    for i in 0..400 {
        assert!(Instant::now() < deadline, "the disk never filled");
        let (group, file) = (format!("g{}", i % GROUPS), format!("f{i}"));
        match try_upload(&mut c, 1000 + i, &group, &file, i as u8) {
            Ok(r) if r[0].starts_with("ok") => acked.push(format!("{group}/{file}")),
            Ok(r) => panic!("upload {file} → {r:?}"),
            Err(_) => {
                stopped = true;
                break;
            }
        }
    }
    if !stopped {
        cl.dump_logs();
        let _ = Command::new("ls").arg("-la").arg(cl.data_dir(1)).status();
        eprintln!("{} acknowledged", acked.len());
    }
    assert!(stopped, "the tracker never stopped on the full disk");
    let log = log_of(&cl);
    assert!(
        log.contains("cannot write a snapshot")
            || log.contains("snapshot being written is given up"),
        "a snapshot failed on the full disk before the journal did:\n{log}"
    );
    assert!(log.contains("cannot write the journal"), "{log}");
    assert!(
        acked.len() >= 20,
        "only {} writes before the disk was full",
        acked.len()
    );
    assert!(
        !cl.data_dir(1).join("snapshot.tmp").exists(),
        "the failed snapshot left its temporary file behind"
    );
    // Room again (as after an operator frees space), and a plain restart.
    disk.grow("4m");
    cl.kill(1);
    cl.spawn_with(1, &["--compact-bytes", "16384"]);
    cl.wait_serving(1);
    let mut c = cl.conn(1);
    c.login("filler");
    let have = files_at(&mut c, GROUPS);
    let missing: Vec<&String> = acked.iter().filter(|f| !have.contains(f)).collect();
    assert!(missing.is_empty(), "acknowledged, then lost: {missing:?}");
    // And it compacts again now that there is room.
    for i in 0..8 {
        let r = try_upload(&mut c, 1000 + i, "g0", &format!("after{i}"), 7).expect("upload");
        assert!(r[0].starts_with("ok"), "{r:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_of(&cl).contains("written in the background") {
        assert!(
            Instant::now() < deadline,
            "no snapshot after space was freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Synthetic users in a snapshot file, so the child has real work (about 2 MB to write) and
/// a kill lands while it runs often.
fn preload(dir: &Path, users: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    // Well-formed verifiers that match no password: these users are only weight.
    let hash = format!(
        "scram-sha256$4096${}${}${}",
        "00".repeat(16),
        "11".repeat(32),
        "22".repeat(32)
    );
    let mut text = String::from("snapshot 1 1 solo 1\n");
    for i in 0..users {
        text.push_str(&format!("user pre{i:06} {hash}\n"));
    }
    text.push_str(&format!("clock 0\nend {}\n", users + 1));
    std::fs::write(dir.join("snapshot"), text).expect("write snapshot");
}

/// Kill -9 while snapshots are written all the time (a 2 KiB threshold), every other time at a
/// random moment and otherwise while a child is writing its snapshot: each restart finds every
/// write acknowledged before it, whatever the child was doing.
#[test]
fn a_tracker_killed_during_compactions_keeps_every_acknowledged_write() {
    let mut cl = Cluster::new(1);
    preload(&cl.data_dir(1), 20_000);
    let args = ["--compact-bytes", "2048"];
    let mut acked: Vec<String> = Vec::new();
    let mut seed = rand_u64();
    let started = Instant::now();
    // Kills in odd rounds aim at a running snapshot child, which may finish before the
    // kill lands on a loaded machine: keep going (bounded) until enough of them hit.
    let (min_rounds, max_rounds, want_mid) = (8, 16, 3);
    let mut mid_snapshot = 0;
    for round in 0..max_rounds {
        let enough = mid_snapshot >= want_mid || started.elapsed() > Duration::from_secs(60);
        if round >= min_rounds && round % 2 == 0 && enough {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "took too long"
        );
        // A leftover from a crash mid-write, each time: never fatal.
        std::fs::write(
            cl.data_dir(1).join("snapshot.tmp"),
            "snapshot 1 1 solo 1\nuser",
        )
        .expect("tmp");
        cl.spawn_with(1, &args);
        cl.wait_serving(1);
        let mut c = cl.conn(1);
        if round == 0 {
            c.user("k");
            c.ok("logout");
        } else {
            c.login("k");
            // Everything acknowledged in earlier rounds is here.
            let missing = not_listed(&mut c, &acked);
            if !missing.is_empty() {
                cl.dump_logs();
            }
            assert!(missing.is_empty(), "round {round}: lost {missing:?}");
            c.ok("logout");
        }
        // Writes from a thread until its connection dies; the kill comes at a random moment.
        let addr = cl.addrs[0];
        let first = acked.len();
        let writer = std::thread::spawn(move || {
            let mut mine = Vec::new();
            // On a loaded machine this thread may start after the kill: nothing acknowledged.
            let Ok(mut c) = Conn::connect(addr) else {
                return mine;
            };
            if c.try_req(&v::hello(rand_u64())).is_err() || c.try_login("k").is_err() {
                return mine;
            }
            for i in 0..300 {
                let g = format!("r{round}x{}", first + i);
                match c.try_req(&format!("create_group {g}")) {
                    Ok(r) if r[0].starts_with("ok") => mine.push(g),
                    _ => break,
                }
            }
            mine
        });
        if round % 2 == 1 {
            // Exactly while a child writes: as soon as its temporary file shows.
            let tmp = cl.data_dir(1).join("snapshot.tmp");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !tmp.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(500));
            }
            mid_snapshot += tmp.exists() as usize;
        } else {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            std::thread::sleep(Duration::from_millis(50 + (seed >> 33) % 400));
        }
        cl.kill(1);
        let mine = writer.join().expect("writer");
        acked.extend(mine);
    }
    let log = log_of(&cl);
    assert!(
        log.contains("written in the background"),
        "no compaction ran:\n{log}"
    );
    assert!(
        acked.len() >= 50,
        "too few writes to mean much: {}",
        acked.len()
    );
    assert!(
        mid_snapshot >= 2,
        "only {mid_snapshot} kills landed while a snapshot was being written"
    );
    cl.spawn_with(1, &args);
    cl.wait_serving(1);
    let mut c = cl.conn(1);
    c.login("k");
    let missing = not_listed(&mut c, &acked);
    assert!(missing.is_empty(), "lost {missing:?}");
    assert!(c.ok("digest").starts_with("ok"));
    assert!(c.req("list_groups").len() > acked.len());
}

/// The groups in `want` that `list_groups` on `c` does not show.
fn not_listed(c: &mut Conn, want: &[String]) -> Vec<String> {
    let groups = c.req("list_groups");
    want.iter()
        .filter(|g| {
            !groups
                .iter()
                .any(|l| l.split(' ').next() == Some(g.as_str()))
        })
        .cloned()
        .collect()
}
