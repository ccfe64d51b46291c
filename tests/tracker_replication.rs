//! The tracker pair: sync in both directions and start orders, kill -9 and catch-up, both
//! killed, concurrent conflicting writes, the authenticated peer link.

mod common;
use common::*;

#[test]
fn writes_at_either_tracker_are_visible_at_both() {
    let cl = Cluster::start(2);
    let mut a = cl.conn(1);
    let mut b = cl.conn(2);
    a.user("alice");
    b.user("bob");
    a.ok(&v::create_group("from1"));
    b.ok(&v::create_group("from2"));
    // Acknowledged means visible at once at the other tracker: no waiting here.
    let ga = a.req(&Verb::ListGroups);
    let gb = b.req(&Verb::ListGroups);
    assert_eq!(ga, gb);
    assert_eq!(ga.len(), 3, "{ga:?}");
    b.ok(&v::join_group("from1"));
    assert_eq!(a.req(&v::list_requests("from1")), vec!["list 1", "bob"]);
    a.ok(&v::accept_request("from1", "bob"));
    assert_eq!(
        b.req(&v::list_files("from1")),
        vec!["list 0"],
        "bob is a member at tracker 2 at once"
    );
    cl.wait_same_digest();
}

#[test]
fn either_start_order_syncs() {
    for first in [1usize, 2] {
        let second = 3 - first;
        let mut cl = Cluster::new(2);
        cl.spawn(first);
        cl.wait_serving(first);
        let mut a = cl.conn(first);
        a.user("early");
        a.ok(&v::create_group("early_group"));
        a.ok(&Verb::Logout);
        cl.spawn(second);
        cl.wait_serving(second);
        cl.wait_paired();
        let mut b = cl.conn(second);
        b.login("early");
        assert_eq!(
            b.req(&Verb::ListGroups).len(),
            2,
            "start order {first} then {second}"
        );
        cl.wait_same_digest();
    }
}

#[test]
fn a_killed_tracker_catches_up_on_restart() {
    for victim in [1usize, 2] {
        let survivor = 3 - victim;
        let mut cl = Cluster::start(2);
        let mut s = cl.conn(survivor);
        s.user("u1");
        s.ok(&v::create_group("before"));
        cl.kill(victim);
        // Writes while the victim is down, at the survivor (which may have to take over).
        s.ok(&v::create_user("u2", "pw-u2"));
        s.ok(&v::create_group("during"));
        s.ok(&Verb::Logout);
        cl.spawn(victim);
        cl.wait_serving(victim);
        cl.wait_paired();
        let mut v = cl.conn(victim);
        v.login("u2");
        let groups = v.req(&Verb::ListGroups);
        assert_eq!(groups.len(), 3, "victim {victim}: {groups:?}");
        cl.wait_same_digest();
        // And writes still flow both ways afterwards.
        v.ok(&v::create_group("after"));
        s.login("u1");
        assert_eq!(s.req(&Verb::ListGroups).len(), 4);
    }
}

#[test]
fn both_killed_recover_from_their_journals() {
    let mut cl = Cluster::start(2);
    let mut a = cl.conn(1);
    a.user("durable");
    for i in 0..20 {
        a.ok(&v::create_group(&format!("dg{i}")));
    }
    let before = cl.wait_same_digest();
    cl.kill(1);
    cl.kill(2);
    cl.spawn(2);
    cl.spawn(1);
    cl.wait_serving(1);
    cl.wait_serving(2);
    let mut a = cl.conn(1);
    a.login("durable");
    assert_eq!(a.req(&Verb::ListGroups).len(), 21);
    let after = cl.wait_same_digest();
    // Restarting adds term and presence entries, but the groups and users are all there.
    assert_ne!(after, "", "{before}");
}

#[test]
fn the_same_user_created_at_both_at_once_succeeds_once() {
    let cl = Cluster::start(2);
    for round in 0..25 {
        let mut a = cl.conn(1);
        let mut b = cl.conn(2);
        let name = format!("race{round}");
        let line_a = format!(
            "{}\n",
            Request::new(1, v::create_user(&name, "pa")).encode()
        );
        let line_b = format!(
            "{}\n",
            Request::new(1, v::create_user(&name, "pb")).encode()
        );
        a.send_raw(line_a.as_bytes());
        b.send_raw(line_b.as_bytes());
        let ra = a.read_line().expect("reply a");
        let rb = b.read_line().expect("reply b");
        let oks = [&ra, &rb].iter().filter(|r| r.starts_with("1 ok")).count();
        assert_eq!(oks, 1, "round {round}: {ra} / {rb}");
        let loser = if ra.starts_with("1 ok") { &rb } else { &ra };
        assert!(loser.starts_with("1 err user_exists"), "{loser}");
        // Whichever password won works at both trackers.
        let pw = if ra.starts_with("1 ok") { "pa" } else { "pb" };
        for n in 1..=2 {
            let mut c = cl.conn(n);
            c.ok(&v::login(&name, pw, "127.0.0.1:1"));
            c.ok(&Verb::Logout);
        }
    }
    cl.wait_same_digest();
}

#[test]
fn peer_link_commands_on_a_client_connection_change_nothing() {
    let cl = Cluster::start(2);
    let before = cl.wait_same_digest();
    let mut x = Conn::connect(cl.addrs[0]).expect("connect");
    x.send_raw(b"op 1 999 - - create_user evil pbkdf2-sha256$1$00$00\n");
    assert!(x.read_line().expect("reply").contains("err bad_request"));
    x.send_raw(b"fwd 1 - create_group x y\ncommit 5\nack 5\nsnapshot-begin 1 1 solo\n");
    for _ in 0..4 {
        assert!(x.read_line().expect("reply").contains("err bad_request"));
    }
    // The old HMAC handshake is no way in: a client channel is never the link.
    let mut y = Conn::connect(cl.addrs[0]).expect("connect");
    y.send_raw(b"peer-hello 2 0123456789abcdef0123456789abcdef\n");
    assert!(y.read_line().expect("reply").contains("err bad_request"));
    // An impostor without the cluster key: the link's handshake (XXpsk0) fails at once.
    let sock = std::net::TcpStream::connect(cl.addrs[0]).expect("connect");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let id = groupshare::net::identity::Identity::generate().expect("key");
    let wrong = [9u8; 32];
    let tried = groupshare::net::secure_stream::connect_blocking(
        sock,
        &id,
        Some(&wrong),
        groupshare::net::secure::Conversation::TrackerTracker,
    );
    assert!(tried.is_err(), "a wrong cluster key never gets a link");
    // A peer-hello after ordinary requests is refused too.
    let mut z = cl.conn(1);
    z.send_raw(b"peer-hello 2 00\n");
    assert!(z.read_line().expect("reply").contains("err bad_request"));
    let mut c = cl.conn(1);
    c.err(&v::login("evil", "x", "127.0.0.1:1"), "bad_credentials");
    assert_eq!(cl.wait_same_digest(), before);
}

#[test]
fn a_session_moves_to_the_other_tracker_without_a_password() {
    for victim in [1usize, 2] {
        let mut cl = Cluster::start(2);
        let mut a = cl.conn(victim);
        a.ok(&v::create_user("mover", "pw"));
        let (token, secret) = a.login_as("mover", "pw", "127.0.0.1:7");
        a.ok(&v::create_group("home"));
        cl.kill(victim);
        let other = 3 - victim;
        cl.wait_serving(other);
        // A stolen token alone attaches nothing: without the secret the proof is wrong.
        let mut thief = cl.conn(other);
        thief.err(
            &v::attach(&token, &"00".repeat(32), "127.0.0.1:6"),
            "no_session",
        );
        thief.err(
            &format!("attach {token} {} 127.0.0.1:6", "ab".repeat(32)),
            "no_session",
        );
        thief.err(&format!("attach {token} 127.0.0.1:6"), "bad_request");
        let mut b = cl.conn(other);
        assert_eq!(b.ok(&v::attach(&token, &secret, "127.0.0.1:8")), "ok mover");
        b.ok(&v::create_group("away"));
        assert_eq!(b.req(&Verb::ListGroups).len(), 3);
        // A forged token is refused.
        let mut c = cl.conn(other);
        c.err(
            &v::attach(&"ab".repeat(16), &secret, "127.0.0.1:9"),
            "no_session",
        );
    }
}

#[test]
fn a_seeder_at_one_tracker_is_offered_to_a_downloader_at_the_other() {
    let cl = Cluster::start(2);
    let mut seeder = cl.conn(1);
    seeder.ok(&v::create_user("s", "pw-s"));
    seeder.ok(&v::login("s", "pw-s", "127.0.0.1:4001"));
    seeder.ok(&v::create_group("share"));
    let mut leecher = cl.conn(2);
    leecher.user("l");
    leecher.ok(&v::join_group("share"));
    seeder.ok(&v::accept_request("share", "l"));
    assert_eq!(seeder.upload("share", "f", 2_000_000, 9)[0], "ok new");
    let d = leecher.req(&v::download_file("share", "f"));
    // With the key the seeder proved to tracker 1, published by tracker 2.
    let line = format!("p s 127.0.0.1:4001 all {}", seeder.client_key());
    assert!(
        // (The ticket for the downloader follows the key.)
        d.iter().any(|l| l.starts_with(&format!("{line} "))),
        "seeder at tracker 1 offered at tracker 2: {d:?}"
    );
    // Offline at once when the seeder's connection drops: no longer offered.
    drop(seeder);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let p = leecher.req(&v::peers("share", "f"));
        if p == vec!["list 0"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still offered: {p:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The file is still listed: its seeder is offline, not gone.
    assert_eq!(leecher.req(&v::list_files("share")).len(), 2);
}

#[test]
fn sigterm_stops_a_tracker_cleanly_with_its_journal_flushed() {
    let mut cl = Cluster::start(1);
    let mut a = cl.conn(1);
    a.user("persist");
    a.ok(&v::create_group("kept"));
    assert!(cl.terminate(1), "SIGTERM exits with status 0");
    cl.spawn(1);
    cl.wait_serving(1);
    let mut b = cl.conn(1);
    b.login("persist");
    assert_eq!(b.req(&Verb::ListGroups).len(), 2);
}

#[test]
fn trackers_with_different_cluster_keys_never_pair() {
    let mut cl = Cluster::new(2);
    cl.spawn(1);
    let key2 = cl.dir.path().join("key2");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key2)
            .expect("key2");
        f.write_all(b"ffeeddccbbaa99887766554433221100")
            .expect("key2");
    }
    let key2 = key2.to_str().expect("utf-8 path");
    cl.spawn_with(2, &["--cluster-key", key2]);
    cl.wait_serving(1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_ne!(cl.role(1), "leader-paired");
    assert_ne!(cl.role(2), "follower");
    for n in [1, 2] {
        let log =
            std::fs::read_to_string(cl.dir.path().join(format!("t{n}.log"))).unwrap_or_default();
        assert!(
            log.contains("failed the cluster-key check"),
            "tracker {n} says why: {log}"
        );
    }
}

/// A forwarding proxy that tracker 2 dials instead of tracker 1; it records every byte, and
/// while `flip` is set it flips the last byte of the next chunk going to tracker 1.
struct LinkProxy {
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    flip: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn pair_through_proxy(cl: &mut Cluster) -> LinkProxy {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let proxy = TcpListener::bind("127.0.0.1:0").expect("proxy");
    let proxy_addr = proxy.local_addr().expect("addr");
    // Tracker 2 reads an info file whose first line is the proxy; tracker 1 the real one.
    let info2 = cl.dir.path().join("info2");
    std::fs::write(&info2, format!("{proxy_addr}\n{}\n", cl.addrs[1])).expect("info2");
    let out = LinkProxy {
        seen: Arc::new(Mutex::new(Vec::new())),
        flip: Arc::new(AtomicBool::new(false)),
        connections: Arc::new(AtomicUsize::new(0)),
    };
    let (seen, flip, count) = (out.seen.clone(), out.flip.clone(), out.connections.clone());
    let t1 = cl.addrs[0];
    std::thread::spawn(move || {
        for inbound in proxy.incoming().take(20) {
            let Ok(inbound) = inbound else { continue };
            let Ok(outbound) = TcpStream::connect(t1) else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            for (mut from, mut to, towards_t1) in [
                (
                    inbound.try_clone().expect("clone"),
                    outbound.try_clone().expect("clone"),
                    true,
                ),
                (outbound, inbound, false),
            ] {
                let (seen, flip) = (seen.clone(), flip.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        seen.lock().expect("lock").extend_from_slice(&buf[..n]);
                        if towards_t1 && flip.swap(false, Ordering::SeqCst) {
                            buf[n - 1] ^= 0x01;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    cl.spawn(1);
    let child = std::process::Command::new(TRACKER)
        .arg(&info2)
        .arg("2")
        .arg("--data-dir")
        .arg(cl.data_dir(2))
        .arg("--cluster-key")
        .arg(cl.dir.path().join("key"))
        .arg("--kdf-iterations")
        .arg("4096")
        .arg("-v")
        .stderr(std::fs::File::create(cl.dir.path().join("t2.log")).expect("t2.log"))
        .spawn()
        .expect("spawn tracker 2");
    cl.procs[1] = Some(child);
    cl.wait_paired();
    out
}

/// The peer link is encrypted: a recording proxy between tracker 2 and tracker 1 sees every
/// byte, and neither the password nor the names of the write cross it readable.
#[test]
fn no_plaintext_password_on_the_peer_link() {
    let mut cl = Cluster::new(2);
    let proxy = pair_through_proxy(&mut cl);
    let mut b = cl.conn(2);
    b.ok(&v::create_user("sniffed", "Pl41nT3xtN0tHere"));
    b.ok(&v::login("sniffed", "Pl41nT3xtN0tHere", "127.0.0.1:1"));
    b.ok(&v::create_group("g"));
    cl.wait_same_digest();
    let bytes = proxy.seen.lock().expect("lock").clone();
    assert!(bytes.len() > 200, "the link carried the writes");
    for clear in [
        &b"Pl41nT3xtN0tHere"[..],
        b"sniffed",
        b"create_user",
        b"state ",
    ] {
        assert!(
            !bytes.windows(clear.len()).any(|w| w == clear),
            "{} crossed the peer link in clear",
            String::from_utf8_lossy(clear)
        );
    }
}

/// A byte changed on the link after its handshake (what an on-path party injecting or
/// altering a message does) fails authentication: tracker 1 drops the link rather than act on
/// it, the pair re-links through a fresh handshake and ends in one state.
#[test]
fn a_message_altered_on_the_peer_link_is_refused() {
    use std::sync::atomic::Ordering;
    let mut cl = Cluster::new(2);
    let proxy = pair_through_proxy(&mut cl);
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
    let mut b = cl.conn(2);
    b.ok(&v::create_user("victim", "pw"));
    cl.wait_same_digest();
    proxy.flip.store(true, Ordering::SeqCst);
    // The next bytes tracker 2 sends are altered: a ping, or this write's forward.
    let _ = b.try_req(&v::create_user("mallory", "pw"));
    let log1 = cl.dir.path().join("t1.log");
    let refused = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::read_to_string(&log1)
            .unwrap_or_default()
            .contains("failed authentication")
    });
    assert!(refused, "tracker 1 says the record failed authentication");
    cl.wait_paired();
    assert!(
        proxy.connections.load(Ordering::SeqCst) >= 2,
        "the link was dropped and made again"
    );
    let digest = cl.wait_same_digest();
    assert!(!digest.is_empty());
}

/// Journals compacted into snapshots many times over (a small threshold), then both trackers
/// killed: everything comes back from snapshot + journal at both.
#[test]
fn compacted_journals_recover_everything() {
    let mut cl = Cluster::new(2);
    for n in 1..=2 {
        cl.spawn_with(n, &["--compact-bytes", "4096"]);
    }
    cl.wait_serving(1);
    cl.wait_serving(2);
    cl.wait_paired();
    let mut a = cl.conn(1);
    a.user("compactor");
    for i in 0..300 {
        a.ok(&v::create_group(&format!("cg{i}")));
    }
    let before = cl.wait_same_digest();
    for n in 1..=2 {
        assert!(
            cl.data_dir(n).join("snapshot").exists(),
            "tracker {n} wrote a snapshot"
        );
        let journal = journal_bytes(&cl.data_dir(n));
        assert!(journal < 64 * 1024, "tracker {n}'s journal was compacted");
    }
    drop(a);
    cl.kill(1);
    cl.kill(2);
    for n in 1..=2 {
        cl.spawn_with(n, &["--compact-bytes", "4096"]);
    }
    cl.wait_serving(1);
    cl.wait_serving(2);
    cl.wait_paired();
    let mut b = cl.conn(2);
    b.login("compactor");
    assert_eq!(b.req(&Verb::ListGroups).len(), 301);
    let after = cl.wait_same_digest();
    assert!(!before.is_empty() && !after.is_empty());
}

/// Bytes in the journal segments (`journal.<n>`) of a data directory.
fn journal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("data directory")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal."))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A 64 GiB file has 131,072 piece hashes: they travel as 128 hash lines from the client, as
/// one entry on the peer link and in the journal, and back as 128 lines from either tracker.
#[test]
fn the_hashes_of_a_64_gib_file_cross_the_pair_intact() {
    let cl = Cluster::start(2);
    let mut a = cl.conn(1);
    a.user("big");
    a.ok(&v::create_group("huge"));
    let size: u64 = 64 << 30;
    assert_eq!(a.upload("huge", "disk.img", size, 5)[0], "ok new");
    let mut b = cl.conn(2);
    b.user("reader");
    b.ok(&v::join_group("huge"));
    a.ok(&v::accept_request("huge", "reader"));
    let d = b.req(&v::download_file("huge", "disk.img"));
    assert_eq!(d[0], format!("list 129 {size} 131072"));
    let hash_lines: Vec<&String> = d.iter().filter(|l| l.starts_with("h ")).collect();
    assert_eq!(hash_lines.len(), 128);
    assert!(hash_lines.iter().all(|l| l.len() == 2 + 1024 * 40));
    // Piece i's made-up hash is the byte (i ^ seed) repeated: spot-check a few.
    for i in [0usize, 1, 1023, 1024, 131_071] {
        let line = hash_lines[i / 1024];
        let at = 2 + (i % 1024) * 40;
        assert_eq!(
            &line[at..at + 40],
            format!("{:02x}", (i as u8) ^ 5).repeat(20)
        );
    }
    assert!(d.last().is_some_and(|l| l.starts_with("p big ")));
    cl.wait_same_digest();
}

/// A forced split: the leader is frozen (SIGSTOP) until the follower gives up on it and
/// leads alone, takes a write there, then the old leader resumes and leads alone too. When
/// they meet again they must end with one state, whichever log wins.
#[test]
fn a_split_brain_heals_to_one_state() {
    let cl = Cluster::start(2);
    let leader = if cl.role(1) == "leader-paired" { 1 } else { 2 };
    let follower = 3 - leader;
    let mut setup = cl.conn(leader);
    setup.ok(&v::create_user("before", "pw"));
    cl.wait_same_digest();
    cl.signal(leader, libc::SIGSTOP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cl.role(follower) != "leader-solo" {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never took over from a frozen leader"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut f = cl.conn(follower);
    f.ok(&v::create_user("during_split", "pw"));
    cl.signal(leader, libc::SIGCONT);
    cl.wait_paired();
    cl.wait_same_digest();
    // Both answer the same, and the write from before the split is everywhere.
    for n in 1..=2 {
        let mut c = cl.conn(n);
        c.ok(&v::login("before", "pw", "127.0.0.1:1"));
        c.ok(&Verb::Logout);
    }
}

/// A login at one tracker takes over the session held at the other: that connection is told
/// and closed, and the decoy answer for an unknown user is the same at both trackers.
#[test]
fn a_login_at_one_tracker_takes_over_the_session_held_at_the_other() {
    let cl = Cluster::start(2);
    let mut setup = cl.conn(1);
    setup.ok(&v::create_user("roamer", "pw"));
    cl.wait_same_digest();
    let mut old = cl.conn(1);
    old.login_as("roamer", "pw", "127.0.0.1:1");
    let mut new = cl.conn(2);
    new.login_as("roamer", "pw", "127.0.0.1:2");
    assert_eq!(
        old.read_line().expect("the takeover notice"),
        "0 err session_taken_over roamer logged in from another client"
    );
    assert!(old.read_line().is_err(), "the old connection is closed");
    new.ok(&v::create_group("roaming"));
    let salt = |n: usize| match cl.conn(n).typed(&v::login_begin("ghost")) {
        Reply::Ok(w) => w[0].clone(),
        r => panic!("login_begin refused: {r:?}"),
    };
    assert_eq!(salt(1), salt(2));
}
