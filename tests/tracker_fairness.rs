//! One misbehaving client hurts nobody else: a connection that floods, and one that makes the
//! tracker queue replies it never reads. (Vanished clients: `liveness.rs`.)

mod common;
use common::*;
use groupshare::testkit::conn::secure_connect;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The promise to honest clients while another connection floods.
const ANSWERED_WITHIN: Duration = Duration::from_secs(2);

/// Pipelined requests that exist before and after the login change: `create_user` with bad
/// arguments, `list_groups` without a session, `ping`, garbage; never a reply read.
fn flood_batch() -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..2_000u32 {
        let line = match i % 5 {
            0 => format!("{i} create_user\n"),
            1 => format!("{i} create_user bad/name pw\n"),
            2 => format!("{i} list_groups\n"),
            3 => format!("{i} ping\n"),
            _ => format!("\u{1}\u{2} garbage {i} ~~~\n"),
        };
        b.extend_from_slice(line.as_bytes());
    }
    b.extend_from_slice(b"\xff\xfe not utf-8\n");
    b
}

/// Starts a thread that floods `addr` until `stop`, inside a secure channel as any client
/// speaks; returns the bytes it pushed out to the tracker. With `reading`, it also reads and
/// discards the replies, so the tracker never pauses the connection for its output: only the
/// per-turn budget keeps it from taking every turn.
fn flood(
    addr: std::net::SocketAddr,
    reading: bool,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut s = secure_connect(addr, Duration::from_secs(2)).expect("flood connect");
        s.socket()
            .set_write_timeout(Some(Duration::from_millis(100)))
            .expect("write timeout");
        s.socket()
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("read timeout");
        let batch = flood_batch();
        let mut buf = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        let mut queued = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            // A batch goes into the channel only once the last one left for the tracker, so
            // what is counted reached its socket.
            match s.flush() {
                Ok(()) => {
                    written += queued;
                    if s.write_all(&batch).is_err() {
                        break;
                    }
                    queued = batch.len() as u64;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break, // closed by the tracker
            }
            if reading {
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return written,
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            break
                        }
                        Err(_) => return written,
                    }
                }
            }
        }
        written
    })
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    assert!(
        took <= ANSWERED_WITHIN,
        "{what} took {took:?} while another connection flooded"
    );
    (out, took)
}

#[test]
fn a_flood_at_one_tracker_starves_nobody_and_the_pair_stays_one() {
    let cl = Cluster::start(2);
    cl.wait_paired();
    let mut at1 = cl.conn(1);
    at1.user("honest1");
    let mut at2 = cl.conn(2);
    at2.user("honest2");

    // Only what the trackers log from here on counts (a fresh pair may start with tracker 2
    // leading alone for a moment, when its first dial is refused).
    let log_at_start = [log_since(&cl, 1, 0).len(), log_since(&cl, 2, 0).len()];
    let stop = Arc::new(AtomicBool::new(false));
    // The flood (never reads), and one that reads its replies so that it is never
    // paused for its output.
    let flooders = [
        flood(cl.addrs[0], false, stop.clone()),
        flood(cl.addrs[0], true, stop.clone()),
    ];
    // Longer than the link's 5 s silence limit, so a starved link would have been dropped.
    let until = Instant::now() + Duration::from_secs(8);
    let mut worst = Duration::ZERO;
    let mut i = 0;
    while Instant::now() < until && i < 10_000 {
        let (_, a) = timed("list_groups at tracker 1", || at1.req("list_groups"));
        let (r, b) = timed("create_group at tracker 2", || {
            at2.req(&v::create_group(&format!("g2_{i}")))
        });
        assert!(r[0].starts_with("ok"), "{r:?}");
        let (r, c) = timed("create_group at tracker 1", || {
            at1.req(&v::create_group(&format!("g1_{i}")))
        });
        assert!(r[0].starts_with("ok"), "{r:?}");
        if i % 10 == 0 {
            // Accepting does not wait behind the flood either.
            let (_, d) = timed("a new connection's hello at tracker 1", || cl.conn(1));
            worst = worst.max(d);
        }
        worst = worst.max(a).max(b).max(c);
        if a.max(b).max(c) > Duration::from_millis(300) {
            eprintln!("slow round {i}: read@1 {a:?} write@2 {b:?} write@1 {c:?}");
        }
        i += 1;
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let [quiet, loud] = flooders.map(|f| f.join().expect("flood thread"));
    eprintln!(
        "floods wrote {quiet} bytes (not reading) and {loud} (reading); {i} rounds; worst \
         honest reply {worst:?}"
    );
    assert!(
        quiet > 1 << 20 && loud > 1 << 20,
        "each flood should have got a megabyte in, wrote {quiet} and {loud}"
    );

    // The pair stayed one: same roles, nobody led alone, and both logs say so.
    assert!(
        cl.paired_leader().is_some(),
        "roles after the flood: {} / {}",
        cl.role(1),
        cl.role(2)
    );
    let digest = cl.wait_same_digest();
    assert!(!digest.is_empty());
    for n in 1..=2 {
        let log = log_since(&cl, n, log_at_start[n - 1]);
        for bad in [
            "silent for too long",
            "lost tracker",
            "lost the leader",
            "leads alone",
        ] {
            assert!(
                !log.contains(bad),
                "tracker {n} logged '{bad}' during the flood:\n{}",
                cl.log_tail()
            );
        }
    }
}

/// A storm of new connections, each with its first handshake message sent at once: the tracker
/// takes their key agreement a few dozen per turn (`limits::HANDSHAKES_PER_TURN`), so the
/// client already connected is answered meanwhile, and every one of them is served in the end
/// (a connection left waiting is read again from the backlog: its readiness edge is not
/// repeated).
#[test]
fn a_storm_of_handshakes_is_taken_in_turns_and_every_one_completes() {
    use groupshare::net::identity::Identity;
    use groupshare::net::secure::{Conversation, Role};
    use groupshare::net::secure_stream::SecureStream;
    use std::io::{BufRead, BufReader};
    const STORM: usize = 600;
    let cl = Cluster::start(1);
    cl.wait_serving(1);
    let mut honest = cl.conn(1);
    honest.user("honest");
    let id = Identity::generate().expect("a key");
    let mut storm = Vec::with_capacity(STORM);
    for i in 0..STORM {
        let sock = std::net::TcpStream::connect(cl.addrs[0])
            .unwrap_or_else(|e| panic!("storm connection {i}: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        sock.set_nodelay(true).expect("nodelay");
        let mut s = SecureStream::new(
            sock,
            Role::Initiator,
            &id,
            None,
            Conversation::ClientTracker,
            false,
        )
        .expect("an initiator");
        s.flush().expect("the first handshake message");
        storm.push(s);
    }
    let (r, took) = timed("list_groups behind a storm of handshakes", || {
        honest.req("list_groups")
    });
    assert!(r[0].starts_with("list"), "{r:?}");
    eprintln!("list_groups answered in {took:?} with {STORM} handshakes waiting");
    for (i, mut s) in storm.into_iter().enumerate() {
        s.handshake_blocking()
            .unwrap_or_else(|e| panic!("storm connection {i}: handshake: {e}"));
        s.write_all(b"1 ping\n").expect("ping");
        s.flush().expect("ping");
        let mut line = String::new();
        BufReader::new(&mut s)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("storm connection {i}: reply: {e}"));
        assert_eq!(line.trim_end(), "1 ok pong", "storm connection {i}");
    }
    let log = log_since(&cl, 1, 0);
    assert!(
        log.contains("handshakes wait for the next turn"),
        "the storm never met the per-turn handshake budget:\n{}",
        cl.log_tail()
    );
}

/// The tracker's resident set in bytes, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn replies_held_behind_an_uncommitted_write_count_against_the_output_limit() {
    let mut cl = Cluster::start(2);
    let leader = groupshare::testkit::Cluster::wait_paired(&cl).expect("paired");
    let pid = cl.pid(leader);
    let mut a = cl.conn(leader);
    a.user("amp");
    a.ok(&v::create_group("big"));
    // 64 GiB: 131,072 hashes, a `download_file` reply of about 5 MiB.
    let r = a.upload("big", "huge.bin", 64 << 30, 7);
    assert!(r[0].starts_with("ok"), "{r:?}");
    let before = rss(pid);
    assert!(before > 0, "cannot read the tracker's RSS");

    // One write, then thousands of reads behind it, in one burst; never a reply read.
    let mut burst = String::from("900000 create_group other\n");
    for i in 0..4_000 {
        burst.push_str(&format!("{} download_file big huge.bin\n", 900_001 + i));
    }
    a.send_raw(burst.as_bytes());

    let mut honest = cl.conn(leader);
    honest.user("bystander");
    let mut peak = before;
    for _ in 0..30 {
        peak = peak.max(rss(pid));
        let (r, _) = timed("list_groups beside the amplifier", || {
            honest.req("list_groups")
        });
        assert!(r[0].starts_with("list"), "{r:?}");
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "tracker RSS {} MiB before, peak {} MiB with 4,000 five-MiB replies asked for",
        before >> 20,
        peak >> 20
    );
    // Unbounded, 4,000 replies of 5 MiB would be 20 GiB; the limits allow the soft limit, one
    // reply past it and what the kernel buffers.
    assert!(
        peak < before + (200 << 20),
        "RSS grew from {} MiB to {} MiB",
        before >> 20,
        peak >> 20
    );
    groupshare::testkit::Cluster::check_alive(&mut cl).expect("the tracker survived");
}

#[test]
fn a_pair_frozen_together_stays_one_when_it_resumes() {
    // Both trackers stopped at once past the link's 5 s silence limit (a host suspended, a VM
    // paused): on resume each finds the other silent for 7 s, but the silence is its own
    // stall. Each must hear from the other, or fail to, after it resumes.
    let cl = Cluster::start(2);
    cl.wait_paired();
    let mut c = cl.conn(1);
    c.user("before_the_freeze");
    let log_at_start = [log_since(&cl, 1, 0).len(), log_since(&cl, 2, 0).len()];
    cl.signal(1, libc::SIGSTOP);
    cl.signal(2, libc::SIGSTOP);
    thread::sleep(Duration::from_secs(7));
    cl.signal(1, libc::SIGCONT);
    cl.signal(2, libc::SIGCONT);
    // A false "silent for too long" would come in the first turn after the resume; give the
    // trackers several link pings' worth of time.
    thread::sleep(Duration::from_secs(3));
    c.ok(&v::create_group("after_the_freeze"));
    assert!(
        cl.paired_leader().is_some(),
        "roles after the freeze: {} / {}",
        cl.role(1),
        cl.role(2)
    );
    cl.wait_same_digest();
    for n in 1..=2 {
        let log = log_since(&cl, n, log_at_start[n - 1]);
        assert!(
            log.contains("loop stalled"),
            "tracker {n} did not notice its stall:\n{log}"
        );
        for bad in ["silent for too long", "lost tracker", "lost the leader"] {
            assert!(
                !log.contains(bad),
                "tracker {n} logged '{bad}' after the freeze:\n{}",
                cl.log_tail()
            );
        }
    }
}

/// What tracker `n` has logged from byte `from` on (empty if it has logged nothing yet).
fn log_since(cl: &Cluster, n: usize, from: usize) -> String {
    let log = std::fs::read_to_string(cl.log_path(n)).unwrap_or_default();
    log.get(from..).unwrap_or_default().to_string()
}
